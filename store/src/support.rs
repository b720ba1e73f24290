//! What every backend does the same way, whatever its SQL: how token
//! secrets are made and keyed, how scopes are written as text, which blobs
//! a job's spec names. A second backend uses these, so both store the same
//! bytes and `tessera migrate` can copy rows as they are.

use std::collections::BTreeSet;

use crate::records::{Scope, TokenKind};
use crate::{hex, Result, StoreError};

/// Refuses scopes on a worker token (rather than storing rights nothing
/// checks); only API tokens have any.
pub fn check_scopes(kind: TokenKind, scopes: &[Scope]) -> Result<()> {
    if kind == TokenKind::Worker && !scopes.is_empty() {
        return Err(StoreError::Invalid("worker tokens have no API scopes".into()));
    }
    Ok(())
}

/// A new token secret of `kind`: its prefix and 64 lowercase hex digits
/// (32 bytes from the operating system's generator).
pub fn new_secret(kind: TokenKind) -> Result<String> {
    let mut random = [0u8; 32];
    getrandom::fill(&mut random).map_err(StoreError::Entropy)?;
    Ok(format!("{}{}", kind.prefix(), hex(&random)))
}

/// blake3 of a token secret: what the tokens table keys on.
pub fn secret_hash(secret: &str) -> [u8; 32] {
    *blake3::hash(secret.as_bytes()).as_bytes()
}

/// Scopes as stored: sorted, deduplicated names joined by commas (`""` for
/// none).
pub fn scopes_text(scopes: &[Scope]) -> String {
    let set: BTreeSet<Scope> = scopes.iter().copied().collect();
    set.iter().map(Scope::as_str).collect::<Vec<_>>().join(",")
}

/// The scopes stored as `text`, sorted and deduplicated; `None` if a name is
/// unknown.
pub fn parse_scopes(text: &str) -> Option<Vec<Scope>> {
    let mut scopes = Vec::new();
    for name in text.split(',').filter(|n| !n.is_empty()) {
        scopes.push(Scope::parse(name)?);
    }
    scopes.sort();
    scopes.dedup();
    Some(scopes)
}

/// The blob hashes a job's spec names: its `"scene"` and `"module"` hex
/// strings. A spec that is not JSON or lacks them names none (the store
/// treats specs as opaque; such a job's blobs are simply kept).
pub fn spec_blobs(spec_json: &str) -> Vec<[u8; 32]> {
    let Ok(spec) = serde_json::from_str::<serde_json::Value>(spec_json) else { return Vec::new() };
    ["scene", "module"]
        .into_iter()
        .filter_map(|field| spec.get(field)?.as_str())
        .filter_map(|h| blake3::Hash::from_hex(h).ok())
        .map(|h| *h.as_bytes())
        .collect()
}

/// Lowercase hex of a hash, as specs and logs spell it.
pub fn hex_of(hash: &[u8; 32]) -> String {
    crate::hex(hash)
}

/// The hash a 64-digit lowercase hex name spells (a blob file's name).
pub fn parse_hash(name: &str) -> Option<[u8; 32]> {
    if name.len() != 64 || !name.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    blake3::Hash::from_hex(name).ok().map(|h| *h.as_bytes())
}
