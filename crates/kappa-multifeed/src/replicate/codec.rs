//! The extension messages' JSON: feed key lists and the root channel's key.

use super::*;

pub(super) fn keys_json(keys: &[PublicKey]) -> Vec<Value> {
    keys.iter().map(|k| Value::String(k.to_hex())).collect()
}

/// multifeed keeps keys of length 64 that start with a hex digit; we also
/// require valid hex.
pub(super) fn parse_keys(v: Option<&Value>) -> Vec<PublicKey> {
    let Some(list) = v.and_then(Value::as_array) else { return Vec::new() };
    list.iter()
        .filter_map(Value::as_str)
        .filter(|s| s.len() == 64)
        .filter_map(|s| PublicKey::from_hex(s).ok())
        .collect()
}

/// The root channel's key for a shared key (`None`: [`DEFAULT_SHARED_KEY`]).
pub(super) fn root_key(shared_key: Option<[u8; 32]>) -> PublicKey {
    PublicKey::from_bytes(shared_key.unwrap_or(DEFAULT_SHARED_KEY))
}
