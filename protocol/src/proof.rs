//! Proof-of-render (DESIGN.md): what a worker commits to and signs, and how
//! the coordinator picks the pixels it re-renders. No I/O, no clock: the
//! same inputs give the same commitment, signature check and pixel choice
//! on every machine, so anyone can replay an audit offline.
//!
//! - The **commitment** `C = blake3(job ‖ frame ‖ tile ‖ sample range ‖
//!   module hash ‖ scene hash ‖ pixel bytes)`, in blake3's key-derivation
//!   mode under a fixed context string (domain separation: a commitment can
//!   never be mistaken for any other blake3 in the system), fixed-width
//!   little-endian fields and a length prefix before the pixel bytes. The
//!   pixel bytes are the tile's canonical encoding ([`TileAccumulators::to_bytes`]),
//!   the same bytes the store keeps and hashes.
//! - The worker signs `C` with its ed25519 identity key (the key of its
//!   QUIC certificate, so the identity the farm knows it by is the one that
//!   signed).
//! - **Spot checks**: `k` pixel positions come from blake3 keyed with a
//!   secret only the coordinator holds (per epoch, revealed once the epoch
//!   is over), over `C`. A worker cannot know which pixels will be checked
//!   before it has committed to all of them.

use serde::{Deserialize, Serialize};

use crate::{ContentHash, Rect, SampleRange, TileAccumulators};

/// blake3 key-derivation context of commitments.
const COMMITMENT_CONTEXT: &str = "tessera 2026-11 proof-of-render tile commitment v1";

/// What a tile claims to be: everything but its pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TileClaim {
    pub job: u64,
    pub frame: i32,
    pub tile: u32,
    pub samples: SampleRange,
    pub module: ContentHash,
    pub scene: ContentHash,
}

/// A tile commitment (blake3, 32 bytes).
pub type Commitment = [u8; 32];

/// `C` for `claim` over `pixel_bytes` (the tile's canonical encoding), for
/// a tile rendered on the CPU.
pub fn commitment(claim: &TileClaim, pixel_bytes: &[u8]) -> Commitment {
    commitment_on(claim, None, pixel_bytes)
}

/// `C` for a tile rendered on `gpu` (or on the CPU, `None`). A GPU tile's
/// commitment also binds the GPU class (after the scene hash: the byte
/// `1`, then vendor and device as `u32`, then driver and name, each
/// length-prefixed); a CPU tile's has nothing there, so CPU commitments
/// are the same as before GPUs existed.
pub fn commitment_on(claim: &TileClaim, gpu: Option<&crate::gpu_check::GpuClass>, pixel_bytes: &[u8]) -> Commitment {
    let mut h = blake3::Hasher::new_derive_key(COMMITMENT_CONTEXT);
    h.update(&claim.job.to_le_bytes());
    h.update(&claim.frame.to_le_bytes());
    h.update(&claim.tile.to_le_bytes());
    h.update(&claim.samples.start.to_le_bytes());
    h.update(&claim.samples.count.to_le_bytes());
    h.update(&claim.module.0);
    h.update(&claim.scene.0);
    if let Some(g) = gpu {
        h.update(&[1]);
        h.update(&g.vendor.to_le_bytes());
        h.update(&g.device.to_le_bytes());
        for text in [&g.driver, &g.name] {
            h.update(&(text.len() as u64).to_le_bytes());
            h.update(text.as_bytes());
        }
    }
    h.update(&(pixel_bytes.len() as u64).to_le_bytes());
    h.update(pixel_bytes);
    *h.finalize().as_bytes()
}

/// Why a signature could not be made or does not hold.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProofError {
    #[error("the signing key is not an ed25519 PKCS#8 key")]
    BadKey,
    #[error("an ed25519 public key has 32 bytes, not {0}")]
    BadPublicKey(usize),
    #[error("the signature does not verify under the worker's key")]
    BadSignature,
}

/// A worker's signing key (ed25519, from the PKCS#8 DER its identity keeps).
pub struct SigningKey(ring::signature::Ed25519KeyPair);

impl SigningKey {
    pub fn from_pkcs8(der: &[u8]) -> Result<SigningKey, ProofError> {
        ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).map(SigningKey).map_err(|_| ProofError::BadKey)
    }

    /// The raw 32-byte public key.
    pub fn public_key(&self) -> [u8; 32] {
        use ring::signature::KeyPair;
        let mut out = [0u8; 32];
        out.copy_from_slice(self.0.public_key().as_ref());
        out
    }

    /// The 64-byte ed25519 signature of `c`.
    pub fn sign(&self, c: &Commitment) -> Vec<u8> {
        self.0.sign(c).as_ref().to_vec()
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(ed25519)")
    }
}

/// Checks `signature` over `c` under the raw ed25519 `public_key`.
pub fn verify(public_key: &[u8], c: &Commitment, signature: &[u8]) -> Result<(), ProofError> {
    if public_key.len() != 32 {
        return Err(ProofError::BadPublicKey(public_key.len()));
    }
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, public_key)
        .verify(c, signature)
        .map_err(|_| ProofError::BadSignature)
}

/// The raw ed25519 key inside an ed25519 SubjectPublicKeyInfo (RFC 8410:
/// a fixed 12-byte prefix, then the 32 key bytes).
pub fn ed25519_key_of_spki(spki: &[u8]) -> Option<[u8; 32]> {
    const PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];
    if spki.len() != 44 || spki[..12] != PREFIX {
        return None;
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(&spki[12..]);
    Some(out)
}

/// The `k` distinct pixels of `rect` (as positions in the frame) that a
/// spot check re-renders: drawn from blake3 keyed with the epoch's
/// `secret` over the commitment, so they are unpredictable to the worker
/// and replayable by anyone who later learns the secret. All pixels when
/// `k` is at least the tile's pixel count.
pub fn spot_pixels(secret: &[u8; 32], c: &Commitment, rect: Rect, k: u32) -> Vec<(u32, u32)> {
    let n = rect.pixel_count();
    if u64::from(k) >= n {
        return (0..rect.height).flat_map(|y| (0..rect.width).map(move |x| (rect.x + x, rect.y + y))).collect();
    }
    let mut xof = blake3::Hasher::new_keyed(secret).update(c).finalize_xof();
    let mut chosen = std::collections::BTreeSet::new();
    let mut out = Vec::with_capacity(k as usize);
    let mut word = [0u8; 8];
    while out.len() < k as usize {
        xof.fill(&mut word);
        // 64 random bits reduced mod n (n ≤ 2^32): bias below 2^-32.
        let i = u64::from_le_bytes(word) % n;
        if chosen.insert(i) {
            let (x, y) = ((i % u64::from(rect.width)) as u32, (i / u64::from(rect.width)) as u32);
            out.push((rect.x + x, rect.y + y));
        }
    }
    out
}

/// The probability that `k` pixels drawn without replacement from a tile
/// of `n` pixels, of which `bad` are faked, include at least one faked
/// pixel: `1 − C(n−bad, k) / C(n, k)`.
pub fn detection_probability(n: u64, bad: u64, k: u64) -> f64 {
    if bad == 0 {
        return 0.0;
    }
    if k + bad > n {
        return 1.0;
    }
    // C(n−bad, k)/C(n, k) = Π_{i<k} (n−bad−i)/(n−i)
    let mut miss = 1.0f64;
    for i in 0..k {
        miss *= (n - bad - i) as f64 / (n - i) as f64;
    }
    1.0 - miss
}

/// The smallest `k` that catches a tile with a `fraction` of its `n`
/// pixels faked with at least `target` probability (capped at `n`).
/// With replacement it is `⌈ln(1 − target) / ln(1 − fraction)⌉`; drawing
/// without replacement needs at most that many.
pub fn pixels_to_check(n: u64, fraction: f64, target: f64) -> u32 {
    let bad = ((n as f64) * fraction).ceil().max(1.0) as u64;
    let mut k = 1u64;
    while k < n && detection_probability(n, bad, k) < target {
        k += 1;
    }
    k.min(n).min(u64::from(u32::MAX)) as u32
}

impl TileAccumulators {
    /// The canonical bytes of a tile: what commitments cover and the
    /// store keeps (postcard; NaNs are canonicalised before, by the host).
    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Pixel `(x, y)` (frame coordinates) as RGB sums and weight, bit for bit.
    pub fn pixel_at(&self, x: u32, y: u32) -> Option<([f32; 3], f32)> {
        let r = self.rect;
        if x < r.x || y < r.y || x >= r.x + r.width || y >= r.y + r.height {
            return None;
        }
        let i = ((y - r.y) * r.width + (x - r.x)) as usize;
        let c = self.color.get(3 * i..3 * i + 3)?;
        Some(([c[0], c[1], c[2]], *self.weight.get(i)?))
    }

    /// The AOV values of pixel `(x, y)` in frame coordinates, plane after
    /// plane in the tile's order (`channels` values each): what a spot check
    /// compares besides the colour, so a worker cannot ship honest colour
    /// with made-up denoiser guides. Empty outside the rectangle; a plane
    /// too short for the pixel gives what it has (shape checks come first).
    pub fn aovs_at(&self, x: u32, y: u32) -> Vec<f32> {
        let r = self.rect;
        if x < r.x || y < r.y || x >= r.x + r.width || y >= r.y + r.height {
            return Vec::new();
        }
        let i = ((y - r.y) * r.width + (x - r.x)) as usize;
        let mut out = Vec::new();
        for aov in &self.aovs {
            let c = usize::from(aov.channels);
            out.extend(aov.data.get(c * i..c * i + c).unwrap_or_default());
        }
        out
    }
}

/// A pin that is not a certificate fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the pin {0:?} is not a certificate fingerprint (64 hex digits, as the coordinator prints)")]
pub struct NotAFingerprint(pub String);

/// A certificate fingerprint as a person gives it (`blake3:` prefix
/// optional, either case) in the form pins are compared: 64 lowercase hex
/// digits.
pub fn parse_fingerprint(pin: &str) -> Result<String, NotAFingerprint> {
    let p = pin.trim().trim_start_matches("blake3:").to_ascii_lowercase();
    if p.len() == 64 && p.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(p)
    } else {
        Err(NotAFingerprint(pin.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim() -> TileClaim {
        TileClaim {
            job: 7,
            frame: 12,
            tile: 3,
            samples: SampleRange { start: 0, count: 64 },
            module: ContentHash([1; 32]),
            scene: ContentHash([2; 32]),
        }
    }

    #[test]
    fn commitments_bind_every_field_and_the_pixels() {
        let c = commitment(&claim(), b"pixels");
        for other in [
            TileClaim { job: 8, ..claim() },
            TileClaim { frame: 13, ..claim() },
            TileClaim { tile: 4, ..claim() },
            TileClaim { samples: SampleRange { start: 0, count: 63 }, ..claim() },
            TileClaim { module: ContentHash([3; 32]), ..claim() },
            TileClaim { scene: ContentHash([3; 32]), ..claim() },
        ] {
            assert_ne!(commitment(&other, b"pixels"), c);
        }
        assert_ne!(commitment(&claim(), b"pixelz"), c);
        assert_eq!(commitment(&claim(), b"pixels"), c);
        // A GPU tile's commitment binds its class, every field of it.
        let gpu =
            crate::gpu_check::GpuClass { vendor: 0x10de, device: 0x2335, driver: "550.1".into(), name: "H200".into() };
        let on_gpu = commitment_on(&claim(), Some(&gpu), b"pixels");
        assert_ne!(on_gpu, c);
        assert_eq!(commitment_on(&claim(), None, b"pixels"), c);
        for other in [
            crate::gpu_check::GpuClass { vendor: 1, ..gpu.clone() },
            crate::gpu_check::GpuClass { device: 1, ..gpu.clone() },
            crate::gpu_check::GpuClass { driver: "550.2".into(), ..gpu.clone() },
            crate::gpu_check::GpuClass { name: "H100".into(), ..gpu.clone() },
        ] {
            assert_ne!(commitment_on(&claim(), Some(&other), b"pixels"), on_gpu);
        }
    }

    #[test]
    fn spot_pixels_are_distinct_inside_the_tile_and_keyed() {
        let rect = Rect { x: 64, y: 32, width: 64, height: 48 };
        let c = commitment(&claim(), b"p");
        let a = spot_pixels(&[9; 32], &c, rect, 40);
        assert_eq!(a.len(), 40);
        assert!(a.iter().all(|&(x, y)| (64..128).contains(&x) && (32..80).contains(&y)));
        assert_eq!(a.iter().collect::<std::collections::BTreeSet<_>>().len(), 40);
        assert_eq!(a, spot_pixels(&[9; 32], &c, rect, 40));
        assert_ne!(a, spot_pixels(&[8; 32], &c, rect, 40));
        assert_eq!(spot_pixels(&[9; 32], &c, Rect { x: 0, y: 0, width: 3, height: 2 }, 40).len(), 6);
    }

    #[test]
    fn k_follows_the_formula() {
        // With replacement: ln(0.01)/ln(0.9) = 43.7 → 44; without, a little fewer.
        let k = pixels_to_check(4096, 0.10, 0.99);
        assert!((40..=44).contains(&k), "{k}");
        assert!(detection_probability(4096, 410, u64::from(k)) >= 0.99);
        assert_eq!(pixels_to_check(10, 0.5, 0.999999), 6);
    }

    #[test]
    fn a_pixels_aovs_come_plane_after_plane_in_frame_coordinates() {
        use crate::AovPlane;
        let rect = Rect { x: 10, y: 20, width: 2, height: 1 };
        let tile = TileAccumulators {
            rect,
            color: vec![0.0; 6],
            weight: vec![1.0; 2],
            aovs: vec![
                AovPlane { name: "albedo".into(), channels: 3, data: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0] },
                AovPlane { name: "depth".into(), channels: 1, data: vec![7.0, 8.0] },
            ],
        };
        assert_eq!(tile.aovs_at(11, 20), [4.0, 5.0, 6.0, 8.0]);
        assert_eq!(tile.aovs_at(10, 20), [1.0, 2.0, 3.0, 7.0]);
        assert!(tile.aovs_at(12, 20).is_empty() && tile.aovs_at(0, 0).is_empty());
    }
}
