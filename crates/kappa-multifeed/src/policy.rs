//! The feed policy of a set: the feeds it blocks and the feeds it hides.
//!
//! - A **blocked** feed is never offered to a peer, never requested or
//!   accepted when a peer offers it, never indexed; its files are removed
//!   (all but `key`, so that the folders after it still load in JS multifeed,
//!   which stops at the first folder without a key) and a `kappa-blocked`
//!   marker is left in its folder. Its key stays in the policy, so it stays
//!   blocked however often peers offer it.
//! - A **hidden** feed is kept and replicated as any other; views leave it out
//!   ([`crate::Multifeed::visible_feeds`]).
//!
//! The policy is stored in `<root>/kappa-policy`, replaced whole and
//! atomically on every change ([`kappa_storage::Provider::replace`]): a crash
//! leaves the policy before or after the change. Its format is ours (JS
//! multifeed does not read it):
//!
//! ```text
//! kappa-policy 1
//! blocked <64 hex>
//! hidden <64 hex>
//! end <32 hex: the first 16 bytes of a BLAKE2b-256 leaf hash of the lines above>
//! ```
//!
//! Anything else (an unknown line, a missing `end`, a wrong checksum) is a
//! [`PolicyError::Damaged`]: the set does not open rather than guess, since a
//! policy read as empty would silently accept every blocked feed again.

use std::collections::BTreeMap;

use kappa_log::PublicKey;

/// The policy's file in the storage root.
pub const POLICY_FILE: &str = "kappa-policy";

/// The marker file left in a blocked feed's folder (its content is the
/// feed's key in hex). JS multifeed ignores it.
pub const BLOCKED_MARKER: &str = "kappa-blocked";

const HEADER: &str = "kappa-policy 1";

/// What the policy says of one feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FeedPolicy {
    /// Kept and replicated, left out of views.
    Hidden,
    /// Never offered, accepted nor indexed; its data is removed.
    Blocked,
}

impl FeedPolicy {
    /// The policy's name, as the file and the CLI spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            FeedPolicy::Hidden => "hidden",
            FeedPolicy::Blocked => "blocked",
        }
    }
}

impl std::fmt::Display for FeedPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a feed policy operation can fail with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The policy file cannot be read as a policy. It is never guessed at.
    #[error(
        "the feed policy file {POLICY_FILE} is damaged ({reason}); nothing is guessed (an empty policy would \
         accept every blocked feed again): restore it from a backup, or delete it to accept every feed again \
         (then also delete the {BLOCKED_MARKER} file in each blocked feed's folder)"
    )]
    Damaged {
        /// What is wrong with it.
        reason: String,
    },
    /// The policy file is gone, but feed folders are marked blocked.
    #[error(
        "the feed policy file {POLICY_FILE} is missing, but feed folder(s) {} are marked blocked \
         ({BLOCKED_MARKER}); nothing is guessed: restore the file, or delete those markers to accept \
         those feeds again",
        dirs.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
    )]
    Missing {
        /// The folders with a marker.
        dirs: Vec<u64>,
    },
    /// Blocking a feed this database writes: its files (and its secret key)
    /// would be destroyed.
    #[error("feed {key} is a local writer of this database: blocking it would destroy it (hide it instead)")]
    LocalWriter {
        /// The feed's key (hex).
        key: String,
    },
    /// An operation that needs a feed that is not blocked.
    #[error("feed {key} is blocked here: unblock it first")]
    Blocked {
        /// The feed's key (hex).
        key: String,
    },
    /// An operation on a feed the set does not hold.
    #[error("feed {key} is not in this database")]
    UnknownFeed {
        /// The feed's key (hex).
        key: String,
    },
}

/// The policy of a feed set: blocked and hidden feeds by key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    feeds: BTreeMap<PublicKey, FeedPolicy>,
}

impl Policy {
    /// What the policy says of `key` (`None`: an ordinary feed).
    pub fn get(&self, key: &PublicKey) -> Option<FeedPolicy> {
        self.feeds.get(key).copied()
    }

    /// Whether `key` is blocked.
    pub fn is_blocked(&self, key: &PublicKey) -> bool {
        self.get(key) == Some(FeedPolicy::Blocked)
    }

    /// Whether `key` is left out of views (blocked or hidden).
    pub fn is_excluded(&self, key: &PublicKey) -> bool {
        self.get(key).is_some()
    }

    /// Every feed with a policy, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&PublicKey, FeedPolicy)> + '_ {
        self.feeds.iter().map(|(k, p)| (k, *p))
    }

    /// The blocked feeds, in key order.
    pub fn blocked(&self) -> Vec<PublicKey> {
        self.iter().filter(|(_, p)| *p == FeedPolicy::Blocked).map(|(k, _)| *k).collect()
    }

    /// The hidden feeds, in key order.
    pub fn hidden(&self) -> Vec<PublicKey> {
        self.iter().filter(|(_, p)| *p == FeedPolicy::Hidden).map(|(k, _)| *k).collect()
    }

    /// Whether no feed has a policy.
    pub fn is_empty(&self) -> bool {
        self.feeds.is_empty()
    }

    pub(crate) fn set(&mut self, key: PublicKey, policy: Option<FeedPolicy>) {
        match policy {
            Some(p) => self.feeds.insert(key, p),
            None => self.feeds.remove(&key),
        };
    }

    /// The file's bytes.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut body = format!("{HEADER}\n");
        for (k, p) in &self.feeds {
            body.push_str(&format!("{p} {}\n", k.to_hex()));
        }
        let sum = checksum(body.as_bytes());
        body.push_str(&format!("end {sum}\n"));
        body.into_bytes()
    }

    /// Reads the file's bytes.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Policy, PolicyError> {
        let damaged = |reason: String| PolicyError::Damaged { reason };
        let text = std::str::from_utf8(bytes).map_err(|_| damaged("it is not text".into()))?;
        let Some(body_len) = text.rfind("end ") else {
            return Err(damaged("it has no end line (cut short?)".into()));
        };
        let (body, end) = text.split_at(body_len);
        let sum = end.strip_prefix("end ").and_then(|s| s.strip_suffix('\n')).unwrap_or("");
        if sum != checksum(body.as_bytes()) {
            return Err(damaged("its checksum does not match".into()));
        }
        let mut lines = body.lines();
        if lines.next() != Some(HEADER) {
            return Err(damaged(format!("it does not start with {HEADER:?}")));
        }
        let mut policy = Policy::default();
        for (i, line) in lines.enumerate() {
            let bad = || damaged(format!("line {} is not a policy line", i + 2));
            let (word, key) = line.split_once(' ').ok_or_else(bad)?;
            let p = match word {
                "blocked" => FeedPolicy::Blocked,
                "hidden" => FeedPolicy::Hidden,
                _ => return Err(bad()),
            };
            let key = PublicKey::from_hex(key).map_err(|_| bad())?;
            if policy.feeds.insert(key, p).is_some() {
                return Err(damaged(format!("line {} names a feed twice", i + 2)));
            }
        }
        Ok(policy)
    }
}

fn checksum(body: &[u8]) -> String {
    hex::encode(&kappa_log::leaf_hash(body)[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> PublicKey {
        PublicKey::from_bytes([b; 32])
    }

    #[test]
    fn a_policy_reads_back_and_any_damage_is_an_error() {
        let mut p = Policy::default();
        assert_eq!(Policy::decode(&p.encode()).unwrap(), p);
        p.set(key(1), Some(FeedPolicy::Blocked));
        p.set(key(2), Some(FeedPolicy::Hidden));
        let bytes = p.encode();
        assert_eq!(Policy::decode(&bytes).unwrap(), p);
        // Every cut and every flipped byte is an error, never a smaller policy.
        for n in 0..bytes.len() {
            assert!(matches!(Policy::decode(&bytes[..n]), Err(PolicyError::Damaged { .. })), "cut at {n}");
            let mut flipped = bytes.clone();
            flipped[n] ^= 0x20;
            assert!(Policy::decode(&flipped).is_err(), "byte {n} flipped");
        }
        assert!(Policy::decode(&[0xff, 0xfe]).is_err());
        assert!(Policy::decode(b"").is_err());
    }
}
