//! Test support shared by the kappa-rs crates (not published).
//!
//! - [`js`]: finds the pinned JS harness in `interop/` and runs its scripts. Without
//!   `interop/setup.sh` having run, interop tests skip with a loud message, except
//!   under CI (`CI` set), where they fail: a missing harness never passes silently.
//! - [`content_digest`]: the harness's content digest of a feed, computed in Rust.
//! - [`postgres`]: throwaway PostgreSQL servers; tests skip loudly without one,
//!   except under CI, where they fail.
//! - [`pair`]: two protocols on a simulated wire (seeded chunking, delays and
//!   clock), each optionally driven by the layer above it.
//! - [`mux5`]: a model of multifeed 5's feed exchange (mux.js), to run against
//!   ours on a [`pair::Pair`].
//! - [`netns`]: test LANs in network namespaces (veth pairs on a bridge, multicast
//!   on), deleted on drop; skipped loudly without root, failing under CI.
//! - [`lines`]: a child process whose output lines a test waits for.
//! - [`chaos`]: a loopback TCP relay that splits and delays the byte stream at
//!   random (seeded), for interop tests with real JS peers.
//! - [`trace`]: capturing the libraries' tracing output in a test.
//! - [`store`]: a view store whose commits go through a hook (faults, held
//!   commits) and whose reads can be watched.

use std::path::{Path, PathBuf};
use std::process::Command;

use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest};
use kappa_log::Feed;
use serde_json::Value;

pub mod chaos;
pub mod feeds;
pub mod generations;
pub mod lines;
pub mod mux5;
pub mod netns;

/// One `#[test]` per wire generation for each scenario: `scenario => kc6_name,
/// kc7_name;` defines `fn kc6_name()` calling `scenario(Generation::KappaCore6)`
/// and `fn kc7_name()` calling it with `Generation::KappaCore7` (the interop
/// suites write each scenario once; see [`js::harness_for`]).
#[macro_export]
macro_rules! both_generations {
    ($($scenario:ident => $kc6:ident, $kc7:ident;)*) => {$(
        #[test]
        fn $kc6() {
            $scenario($crate::Generation::KappaCore6);
        }
        #[test]
        fn $kc7() {
            $scenario($crate::Generation::KappaCore7);
        }
    )*};
}

#[doc(hidden)]
pub use kappa_protocol::Generation;
pub mod pair;
pub mod postgres;
pub mod stall;
pub mod store;
pub mod trace;

/// Running the JS harness.
pub mod js {
    use super::*;

    /// The `interop/` directory if its packages are installed; `None` (after a loud
    /// message) when they are not and we are not in CI.
    ///
    /// # Panics
    /// Under CI when the packages are missing.
    pub fn harness() -> Option<PathBuf> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../interop");
        if dir.join("node_modules/hypercore").is_dir() && dir.join("node_modules/multifeed").is_dir() {
            return Some(dir);
        }
        if std::env::var_os("CI").is_some() {
            panic!("interop/node_modules is missing: run interop/setup.sh (cargo xtask ci does)");
        }
        eprintln!("\n*** SKIPPING JS interop test: interop/node_modules missing; run interop/setup.sh ***\n");
        None
    }

    /// The hyperswarm 2 harness, `interop/swarm/`, if every path of `needs`
    /// (relative to `interop/`, e.g. `swarm/node_modules/@hyperswarm/dht`) is
    /// installed; `None` (after a loud message naming `test`) when one is not
    /// and we are not in CI.
    ///
    /// # Panics
    /// Under CI when one is missing.
    pub fn swarm(test: &str, needs: &[&str]) -> Option<PathBuf> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../interop");
        if needs.iter().all(|n| dir.join(n).is_dir()) {
            return Some(dir.join("swarm"));
        }
        if std::env::var_os("CI").is_some() {
            panic!("{test}: interop/swarm is not installed (run interop/setup.sh)");
        }
        eprintln!("\n*** SKIPPED {test}: interop/swarm is not installed (run interop/setup.sh) ***\n");
        None
    }

    /// The kappa-core 7 harness, `interop/kc7/` (hypercore 9, hypercore-protocol
    /// 8), if its packages are installed; like [`harness`] otherwise. Its
    /// scripts take the same arguments as the kappa-core 6 ones.
    ///
    /// # Panics
    /// Under CI when the packages are missing.
    pub fn harness_kc7() -> Option<PathBuf> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../interop/kc7");
        if dir.join("node_modules/hypercore").is_dir() && dir.join("node_modules/multifeed").is_dir() {
            return Some(dir);
        }
        if std::env::var_os("CI").is_some() {
            panic!("interop/kc7/node_modules is missing: run interop/setup.sh (cargo xtask ci does)");
        }
        eprintln!(
            "\n*** SKIPPING JS interop test: interop/kc7/node_modules missing; run interop/setup.sh ***\n"
        );
        None
    }

    /// The harness of a wire generation: [`harness`] for kappa-core 6,
    /// [`harness_kc7`] for kappa-core 7 (an interop scenario written once runs
    /// against both; see [`both_generations!`](crate::both_generations)).
    ///
    /// # Panics
    /// Under CI when the packages are missing.
    pub fn harness_for(generation: kappa_protocol::Generation) -> Option<PathBuf> {
        match generation {
            kappa_protocol::Generation::KappaCore6 => harness(),
            kappa_protocol::Generation::KappaCore7 => harness_kc7(),
        }
    }

    /// The signature form a JS writer of `generation` signs in: hypercore 8's
    /// 32-byte form, hypercore 9's 40-byte one.
    pub fn signature_form_of(generation: kappa_protocol::Generation) -> kappa_log::SignatureForm {
        match generation {
            kappa_protocol::Generation::KappaCore6 => kappa_log::SignatureForm::TreeHash,
            kappa_protocol::Generation::KappaCore7 => kappa_log::SignatureForm::TreeHashAndLength,
        }
    }

    /// The Noise role a JS peer takes on its connections.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Role {
        /// `--initiator`: it writes the first handshake message.
        Initiator,
        /// `--responder`: it answers.
        Responder,
    }

    /// A long-running JS peer (`interop/<script>`), whose stdout is one JSON event
    /// per line (`{"event": ...}`).
    pub struct Peer {
        child: std::process::Child,
        lines: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
        listening: Option<Value>,
    }

    impl Peer {
        /// Starts `node interop/<script> <args>`.
        ///
        /// # Panics
        /// If node cannot start.
        pub fn spawn(harness: &Path, script: &str, args: &[&str]) -> Peer {
            use std::io::BufRead;
            let mut child = Command::new("node")
                .arg(harness.join(script))
                .args(args)
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run node: {e}"));
            let out = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
            Peer { child, lines: std::io::BufReader::new(out).lines(), listening: None }
        }

        /// The next event.
        ///
        /// # Panics
        /// If the peer exited or printed something that is not JSON.
        pub fn next_event(&mut self) -> Value {
            let line = match self.lines.next() {
                Some(Ok(l)) => l,
                _ => panic!("JS peer exited without output"),
            };
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad line {line:?}: {e}"))
        }

        /// Events until the one called `name`, which is returned.
        ///
        /// # Panics
        /// On an `error` or `timeout` event first.
        pub fn until(&mut self, name: &str) -> Value {
            loop {
                let v = self.next_event();
                match v["event"].as_str() {
                    Some(e) if e == name => return v,
                    Some("error") | Some("timeout") => panic!("JS peer: {v}"),
                    _ => {}
                }
            }
        }

        /// Starts `node interop/<script> --dir DIR --listen 0 ROLE EXTRA…` (the
        /// arguments every JS peer script takes), waits for its `listening` event
        /// (kept: [`Peer::listened`]), and returns the peer with the route to its
        /// port: through the seeded chaos relay when `KAPPA_CHAOS_SEED` is set
        /// (keep the route alive while connecting through it).
        ///
        /// # Panics
        /// If node cannot start or the peer fails before it listens.
        pub fn listening(
            harness: &Path,
            script: &str,
            dir: &Path,
            role: Role,
            extra: &[&str],
        ) -> (Peer, crate::chaos::Route) {
            let dir = dir.to_str().unwrap_or_else(|| panic!("not UTF-8: {}", dir.display()));
            let role = match role {
                Role::Initiator => "--initiator",
                Role::Responder => "--responder",
            };
            let args = [&["--dir", dir, "--listen", "0", role][..], extra].concat();
            let mut peer = Peer::spawn(harness, script, &args);
            let listening = peer.until("listening");
            let port = listening["port"]
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or_else(|| panic!("JS peer listened on no port: {listening}"));
            peer.listening = Some(listening);
            (peer, crate::chaos::route_to_port(port))
        }

        /// The `listening` event of a peer started by [`Peer::listening`]
        /// (`Value::Null` for others).
        pub fn listened(&self) -> &Value {
            self.listening.as_ref().unwrap_or(&Value::Null)
        }

        /// Waits for the peer to exit.
        ///
        /// # Panics
        /// If waiting fails.
        pub fn finish(mut self) -> std::process::ExitStatus {
            self.child.wait().unwrap_or_else(|e| panic!("wait: {e}"))
        }
    }

    /// Runs `node interop/<script> <args>`, expecting success, and parses each line
    /// of its output as JSON.
    ///
    /// # Panics
    /// If node cannot run or the script fails.
    pub fn run(harness: &Path, script: &str, args: &[&str]) -> Vec<Value> {
        let out = Command::new("node")
            .arg(harness.join(script))
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run node: {e}"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{script} {args:?} failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{script}: bad JSON {l:?}: {e}")))
            .collect()
    }
}

/// The harness's content digest: hex BLAKE2b-256 over `u32be(len) ‖ bytes` for every
/// block in order.
///
/// # Panics
/// If a block is missing or unreadable.
pub fn content_digest(feed: &mut Feed) -> String {
    let mut h = Blake2b::<U32>::new();
    for i in 0..feed.len() {
        let v = feed.try_get(i).unwrap_or_else(|e| panic!("block {i}: {e}"));
        h.update((v.len() as u32).to_be_bytes());
        h.update(&v);
    }
    hex::encode(h.finalize())
}

/// Replays the committed cargo-fuzz corpus `fuzz/corpus/<target>/` through `run`,
/// the same entry point the fuzz target calls.
///
/// # Panics
/// If the corpus is missing or empty, or an input panics (the message names the
/// input file).
pub fn replay_fuzz_corpus(target: &str, run: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus").join(target);
    let mut n = 0;
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for path in entries {
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let result = std::panic::catch_unwind(|| run(&data));
        assert!(result.is_ok(), "fuzz input {} panics", path.display());
        n += 1;
    }
    assert!(n > 0, "no corpus for {target} in {}", dir.display());
    eprintln!("{target}: replayed {n} inputs");
}

/// `"open_files": N, "peak_rss_mb": M` for this process, from `/proc/self`
/// (0 where there is none): for the JSON lines benchmark examples print.
pub fn process_figures() -> String {
    let open_files = std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0);
    let peak_kb: u64 = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0);
    format!("\"open_files\": {open_files}, \"peak_rss_mb\": {:.1}", peak_kb as f64 / 1024.0)
}
