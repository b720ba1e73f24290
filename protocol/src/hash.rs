use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The blake3 hash that names a blob (scene, guest module, tile, frame).
///
/// Everything in Tessera is content-addressed (DESIGN.md invariant 3): two
/// parties that hold the same `ContentHash` hold the same bytes, so caches
/// never need invalidation and a received blob is checked by rehashing it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ContentHash(pub [u8; 32]);

impl ContentHash {
    /// Hashes `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }

    /// The hash as 64 lowercase hex digits, the form used in file names and URLs.
    pub fn to_hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }

    /// The first 12 hex digits: enough to tell blobs apart in logs.
    pub fn short(&self) -> String {
        let mut s = self.to_hex();
        s.truncate(12);
        s
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentHash({})", self.short())
    }
}

/// A string that is not 64 hex digits.
#[derive(Debug, thiserror::Error)]
#[error("not a blake3 hash (want 64 hex digits): {0:?}")]
pub struct ParseHashError(String);

impl FromStr for ContentHash {
    type Err = ParseHashError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        blake3::Hash::from_hex(s).map(|h| Self(*h.as_bytes())).map_err(|_| ParseHashError(s.chars().take(80).collect()))
    }
}

/// Bytes as lowercase hex: how keys, commitments and signatures appear in
/// proofs and manifests.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex (either case) to bytes; `None` if it is not hex.
pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| s.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let h = ContentHash::of(b"tessera");
        let parsed: ContentHash = h.to_hex().parse().unwrap();
        assert_eq!(parsed, h);
        assert_eq!(h.short().len(), 12);
        assert!("nothex".parse::<ContentHash>().is_err());
    }
}
