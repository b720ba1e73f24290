//! Frame manifests: the last part of proof-of-render (DESIGN.md: "every
//! finished frame has a manifest of its tiles' commitments and checks that
//! anyone can verify offline").
//!
//! When a frame is written (`coordinator/src/farm/writer.rs`), the coordinator makes a
//! [`FrameManifest`]: for each tile, who rendered it (worker identity and
//! raw ed25519 public key), what they signed (the commitment `C` and its
//! signature, `tessera_protocol::proof`), the sample range, the blake3 of
//! the stored accumulators, the blake3 of the tile's final pixels (see
//! below) and the checks the coordinator ran with their outcome; the blake3
//! and size of each file of the frame (PNG, EXR); what is needed to render
//! any pixel again (size, fps, samples, seed, the guest's settings, module
//! and scene hashes, fuel); and the coordinator's certificate. The
//! coordinator signs it with its QUIC identity key (`coordinator.key`, the
//! key of the certificate workers pin), so the fingerprint a studio pins
//! for its farm is also what it checks manifests against.
//!
//! The manifest is stored as a blob, its hash kept in the store's metadata
//! under `manifest/<job>/<frame>` ([`meta_key`]), exported beside the frame
//! as `<stem>-NNNN.manifest.json` ([`file_name`]) and served as
//! `GET /api/v1/jobs/{id}/frames/{n}.manifest.json`. `tessera verify`
//! checks one offline ([`crate::verify`]); the coordinator builds and signs
//! them (`coordinator/src/farm/manifest.rs`).
//!
//! # Pixel hashes
//!
//! `pixels_blake3` of a tile is plain blake3 over the tile's pixels as the
//! EXR holds them: for each pixel of the tile's rectangle, row by row, left
//! to right, the three `f32` of linear RGB (`color / weight`, black where
//! the weight is 0, exactly as `FrameBuffer::pixel` computes it), each as 4
//! little-endian bytes. The coordinator computes it from the accumulators
//! the worker committed to; a verifier recomputes it from the EXR file. It
//! binds the EXR's pixels to the worker's commitment through the
//! coordinator's signature (the accumulators themselves are not in the
//! manifest; their blake3 is: `accumulators_blake3`, the hash the store
//! keeps for the tile's canonical bytes, the same bytes `C` covers).
//!
//! A progressive frame has a tile per rectangle per sample pass, each with
//! its pass's sample range; its `pixels_blake3` is of the frame's pixels in
//! its rectangle with the samples through its pass (the tiles of earlier
//! passes added), so the last pass's tiles bind the EXR's pixels and the
//! earlier ones what the previews showed.
//!
//! # Canonical form and signature
//!
//! The signature is ed25519 (RFC 8032) by the key in
//! `coordinator.certificate` over the 32 bytes
//! `blake3::derive_key(SIGNATURE_CONTEXT, canonical)`, where `canonical` is
//! the manifest's JSON with the top-level member `signature` removed,
//! written as:
//!
//! - objects with their members sorted by key (byte order of the UTF-8
//!   key), arrays in order, no whitespace anywhere;
//! - strings as JSON strings with only `"`, `\` and control characters
//!   escaped (`\b \f \n \r \t`, the rest as `\u00XX`, lowercase hex),
//!   everything else as raw UTF-8;
//! - integers in decimal; other numbers (`fps`, `exposure`) as the
//!   shortest decimal that reads back as the same `f64`, with `.0` when it
//!   has no fraction (`24.0`).
//!
//! Every member takes part, including any a newer coordinator adds, so the
//! form is computed from the parsed JSON, not from a struct. In Python:
//! `m = json.load(f); sig = m.pop("signature");
//! canonical = json.dumps(m, sort_keys=True, separators=(",", ":"),
//! ensure_ascii=False).encode()` (both agree on the numbers the manifest
//! holds); then blake3 `derive_key` with [`SIGNATURE_CONTEXT`] and an
//! ed25519 check. The key must match the certificate (`certificate` is its
//! DER, hex; `fingerprint` is blake3 of that DER, the pin workers use).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tessera_protocol::proof;
use tessera_protocol::{Rect, SampleRange, TileAccumulators};

use tessera_frame::FrameBuffer;
pub use tessera_protocol::{from_hex, hex};

/// The `schema` member of every manifest.
pub const SCHEMA: &str = "tessera-frame-manifest";
/// The `version` member this coordinator writes; verifiers refuse newer ones.
pub const VERSION: u32 = 1;
/// blake3 key-derivation context of the signed digest (domain separation:
/// a manifest signature can never pass for a tile commitment's, which the
/// same kind of key signs under another context).
pub const SIGNATURE_CONTEXT: &str = "tessera 2026-11 frame manifest signature v1";
/// What `checks.signature` says of a tile whose signature the coordinator
/// checked when the result arrived.
pub const SIGNATURE_VERIFIED: &str = "verified";
/// What it says of a tile the coordinator rendered itself (settling a
/// disagreement between workers): the coordinator committed to it and
/// signed the commitment with its own key, which `public_key` then is.
pub const SIGNATURE_COORDINATOR: &str = "coordinator-rendered";

/// A frame's manifest, as JSON (see the module documentation).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FrameManifest {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// [`VERSION`].
    pub version: u32,
    pub job: ManifestJob,
    pub frame: i32,
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    /// Samples per pixel.
    pub spp: u32,
    pub seed: u64,
    /// The guest's own settings (a JSON object, as a string): what it was
    /// given as `extra`, needed to render a pixel again.
    pub extra: String,
    /// blake3 of the guest module (a wasm component), hex.
    pub module: String,
    /// blake3 of the packed scene, hex.
    pub scene: String,
    pub fuel_per_tile: u64,
    pub fuel_per_pixel_sample: u64,
    /// The PNG's view transform and exposure (stops); the EXR is linear.
    pub view: String,
    pub exposure: f64,
    /// Frame files are `<stem>-NNNN.<ext>`; the manifest `<stem>-NNNN.manifest.json`.
    pub stem: String,
    /// By format (`png`, `exr`): the job's formats; a denoised job's frame
    /// also lists `denoised.png` / `denoised.exr`.
    pub files: BTreeMap<String, ManifestFile>,
    /// The denoiser that made the `denoised.*` files from the raw EXR's
    /// colour and guides (`tessera-atrous …`), for a denoised job only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denoiser: Option<String>,
    /// By tile index.
    pub tiles: Vec<ManifestTile>,
    pub coordinator: ManifestCoordinator,
    /// ed25519 by the coordinator, hex (see the module documentation).
    pub signature: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ManifestJob {
    pub id: u64,
    pub name: String,
}

/// One file of the frame.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// The file's name (no directory): `<stem>-NNNN.<ext>`.
    pub name: String,
    /// blake3 of the file, hex.
    pub blake3: String,
    pub bytes: u64,
}

/// One tile: who rendered it, what they signed, what was checked.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ManifestTile {
    /// The tile's index in the job.
    pub index: u32,
    pub rect: Rect,
    pub samples: SampleRange,
    /// The worker's identity: blake3 of its ed25519 SubjectPublicKeyInfo, hex.
    pub worker: String,
    /// The worker's raw ed25519 public key, hex.
    pub public_key: String,
    /// `C` (tessera_protocol::proof::commitment), hex.
    pub commitment: String,
    /// The worker's ed25519 signature of `C`, hex.
    pub signature: String,
    /// blake3 of the tile's canonical accumulator bytes (what `C` covers), hex.
    pub accumulators_blake3: String,
    /// blake3 of the tile's final pixels (see the module documentation), hex.
    pub pixels_blake3: String,
    pub checks: TileChecks,
    /// The GPU the worker rendered the tile on, which `C` also binds
    /// (`proof::commitment_on`); absent for a CPU tile. A GPU tile equals a
    /// CPU re-render within a tolerance, not bit for bit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<tessera_protocol::wire::GpuClass>,
    /// The second opinion that confirmed the whole tile, if one was asked
    /// for (adaptive replication, or a GPU tile outside the tolerance):
    /// an independent worker whose signature of the same commitment is
    /// here, or the coordinator's own render. Apart from `checks`, which
    /// keep their own outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmed_by: Option<Confirmation>,
}

/// The second opinion that confirmed a whole tile, as proofs and frame
/// manifests record it: a verifier can check a replica's signature offline,
/// since an equal result from the same claim has the same commitment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "lowercase")]
pub enum Confirmation {
    /// Another, independent worker returned the same canonical bytes and
    /// signed the same commitment.
    Replica {
        /// Its identity (blake3 of its public key, hex).
        worker: String,
        /// Its raw ed25519 public key, hex.
        public_key: String,
        /// Its signature of the tile's commitment, hex. Empty for a tile
        /// confirmed before proofs kept it (then it cannot be checked).
        signature: String,
    },
    /// The coordinator rendered the tile itself and the result agreed with
    /// it: bit for bit for a CPU tile, within the GPU tolerance for a GPU
    /// tile. The coordinator's signature of the manifest vouches for it.
    Coordinator,
}

/// What a denoised frame's file names and manifest keys add before the
/// extension: `NAME-0001.denoised.png`, manifest files `denoised.png`.
pub const DENOISED: &str = "denoised.";

/// The checks the coordinator ran on a tile when it arrived.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TileChecks {
    /// [`SIGNATURE_VERIFIED`]; [`SIGNATURE_COORDINATOR`] for a tile the
    /// coordinator rendered itself; `"not recorded"` for a tile stored
    /// before proofs existed (a verifier fails it).
    pub signature: String,
    /// `null` when the farm ran with spot checks off.
    pub spot_check: Option<SpotCheckOutcome>,
}

/// A spot check's outcome (`farm/verify.rs`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpotCheckOutcome {
    /// The epoch whose secret chose the pixels (revealed once it is over).
    pub epoch: u64,
    /// Pixels re-rendered and compared: bit for bit, or within the GPU
    /// tolerance for a GPU tile.
    pub pixels: u32,
    /// The check's own outcome. A GPU tile outside the tolerance is not
    /// refused but replicated; it is in a frame only with `confirmed_by`.
    pub passed: bool,
}

/// Who signed the manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ManifestCoordinator {
    /// Raw ed25519 public key, hex.
    pub public_key: String,
    /// blake3 of the certificate's DER, hex: what workers pin and
    /// `tessera verify --pin` compares.
    pub fingerprint: String,
    /// The coordinator's certificate, DER, hex.
    pub certificate: String,
}

/// The store metadata key holding the blob hash of a frame's manifest.
pub fn meta_key(job: u64, frame: i32) -> String {
    format!("manifest/{job}/{frame}")
}

/// The metadata key prefix of a job's manifests.
pub fn meta_prefix(job: u64) -> String {
    format!("manifest/{job}/")
}

/// A frame's manifest file name: `<stem>-NNNN.manifest.json`.
pub fn file_name(stem: &str, frame: i32) -> String {
    format!("{stem}-{frame:04}.manifest.json")
}

/// The linear RGB pixels of one tile, row-major, as the frame assembly
/// computes them from its accumulators (`FrameBuffer::pixel`).
pub fn tile_pixels(acc: &TileAccumulators) -> Vec<[f32; 3]> {
    let r = acc.rect;
    let mut fb = FrameBuffer::new(r.width, r.height);
    let mut local = acc.clone();
    local.rect.x = 0;
    local.rect.y = 0;
    if fb.add_tile(&local).is_err() || acc.weight.len() != fb.weight.len() {
        return Vec::new();
    }
    (0..fb.weight.len()).map(|i| fb.pixel(i)).collect()
}

/// blake3 of pixels as `pixels_blake3` defines it, hex.
pub fn pixels_blake3<'a>(pixels: impl IntoIterator<Item = &'a [f32; 3]>) -> String {
    let mut h = blake3::Hasher::new();
    for p in pixels {
        for c in p {
            h.update(&c.to_le_bytes());
        }
    }
    h.finalize().to_hex().to_string()
}

/// The worker identity of a raw ed25519 key: blake3 of its RFC 8410
/// SubjectPublicKeyInfo (as `tls::identity_of` names workers), hex.
pub fn identity_of_key(key: &[u8; 32]) -> String {
    const PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];
    let mut h = blake3::Hasher::new();
    h.update(&PREFIX);
    h.update(key);
    h.finalize().to_hex().to_string()
}

/// The raw ed25519 key of a certificate (DER), if it is one.
pub fn certificate_key(cert_der: &[u8]) -> Option<[u8; 32]> {
    let der = rustls_pki_types::CertificateDer::from(cert_der);
    let cert = webpki::EndEntityCert::try_from(&der).ok()?;
    proof::ed25519_key_of_spki(cert.subject_public_key_info().as_ref())
}

/// Checks one tile's signature: the key, commitment and signature parse,
/// the signature verifies over the commitment, the worker identity is its
/// key's, and a tile marked [`SIGNATURE_COORDINATOR`] is signed by
/// `coordinator_key` (hex). Returns what is wrong, if anything.
pub fn tile_signature_problems(t: &ManifestTile, coordinator_key: &str) -> Vec<String> {
    let name = format!("tile {}", t.index);
    let key: Option<[u8; 32]> = from_hex(&t.public_key).and_then(|k| k.try_into().ok());
    let c: Option<[u8; 32]> = from_hex(&t.commitment).and_then(|k| k.try_into().ok());
    let (Some(key), Some(c)) = (key, c) else {
        return vec![format!("{name}: no valid worker key or commitment in the manifest")];
    };
    let Some(signature) = from_hex(&t.signature) else {
        return vec![format!("{name}: the worker signature is not hex")];
    };
    let short = |s: &str| s.chars().take(16).filter(|c| c.is_ascii_hexdigit()).collect::<String>();
    let mut problems = Vec::new();
    if proof::verify(&key, &c, &signature).is_err() {
        problems.push(format!(
            "{name}: the worker signature does not verify over its commitment under worker {}…'s key \
             (the commitment or the signature was changed)",
            short(&t.worker)
        ));
    }
    if !identity_of_key(&key).eq_ignore_ascii_case(&t.worker) {
        problems.push(format!("{name}: worker identity {}… is not its public key's", short(&t.worker)));
    }
    if t.checks.signature == SIGNATURE_COORDINATOR && !t.public_key.eq_ignore_ascii_case(coordinator_key) {
        problems.push(format!("{name}: marked as the coordinator's own render, but not signed by the coordinator"));
    }
    if let Some(Confirmation::Replica { worker, public_key, signature }) = &t.confirmed_by {
        problems.extend(replica_problems(&name, &c, &t.worker, worker, public_key, signature));
    }
    problems
}

/// What is wrong with a replica's confirmation of a tile whose commitment
/// is `c`: the replica must be another identity than the tile's worker,
/// hold the key it names, and have signed the same commitment. A
/// confirmation recorded without its signature (before proofs kept it)
/// cannot be checked and is not reported here ([`Confirmation::Replica`]).
fn replica_problems(name: &str, c: &[u8; 32], tile_worker: &str, worker: &str, key: &str, sig: &str) -> Vec<String> {
    if sig.is_empty() && key.is_empty() {
        return Vec::new();
    }
    let short = |s: &str| s.chars().take(16).filter(|c| c.is_ascii_hexdigit()).collect::<String>();
    let key: Option<[u8; 32]> = from_hex(key).and_then(|k| k.try_into().ok());
    let (Some(key), Some(sig)) = (key, from_hex(sig)) else {
        return vec![format!("{name}: the confirming replica's key or signature is not valid hex")];
    };
    let mut problems = Vec::new();
    if proof::verify(&key, c, &sig).is_err() {
        problems.push(format!(
            "{name}: the confirming replica {}…'s signature does not verify over the tile's commitment",
            short(worker)
        ));
    }
    if !identity_of_key(&key).eq_ignore_ascii_case(worker) {
        problems.push(format!("{name}: confirming replica identity {}… is not its public key's", short(worker)));
    }
    if worker.eq_ignore_ascii_case(tile_worker) {
        problems.push(format!("{name}: confirmed by a replica from the same worker that rendered it"));
    }
    problems
}

/// The canonical bytes of a manifest (parsed JSON): the top-level
/// `signature` left out, keys sorted, no whitespace (module documentation).
pub fn canonical_bytes(manifest: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    match manifest {
        Value::Object(map) => {
            let mut map = map.clone();
            map.remove("signature");
            write_canonical(&Value::Object(map), &mut out);
        }
        other => write_canonical(other, &mut out),
    }
    out
}

fn write_canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                // Strings and scalars: serde_json's compact form is the canonical one.
                let _ = serde_json::to_writer(&mut *out, k);
                out.push(b':');
                write_canonical(&map[k], out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        scalar => {
            let _ = serde_json::to_writer(&mut *out, scalar);
        }
    }
}

/// The 32 bytes the coordinator signs: `derive_key(SIGNATURE_CONTEXT, canonical)`.
pub fn signed_digest(canonical: &[u8]) -> [u8; 32] {
    blake3::derive_key(SIGNATURE_CONTEXT, canonical)
}

/// Why a manifest's coordinator signature does not hold.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("the manifest is not a JSON object with a `{0}` string")]
    Missing(&'static str),
    #[error("`{0}` is not hex")]
    NotHex(&'static str),
    #[error("the certificate's blake3 is {actual}, not the fingerprint {listed} the manifest states")]
    Fingerprint { listed: String, actual: String },
    #[error("the certificate does not hold an ed25519 key")]
    CertificateKey,
    #[error("the public key {listed} is not the certificate's key {actual}")]
    KeyMismatch { listed: String, actual: String },
    #[error("the signature does not verify under the coordinator's key: the manifest was changed after it was signed, or signed by another key")]
    Bad,
}

/// What a good coordinator signature establishes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signer {
    pub public_key: [u8; 32],
    /// blake3 of the certificate, hex (lowercase).
    pub fingerprint: String,
}

/// Checks a manifest's coordinator signature: its certificate hashes to its
/// fingerprint, holds its public key, and that key signed the canonical form.
pub fn verify_signature(manifest: &Value) -> Result<Signer, SignatureError> {
    fn s<'a>(field: &'static str, v: Option<&'a Value>) -> Result<&'a str, SignatureError> {
        v.and_then(Value::as_str).ok_or(SignatureError::Missing(field))
    }
    let coordinator = manifest.get("coordinator");
    let key_hex = s("coordinator.public_key", coordinator.and_then(|c| c.get("public_key")))?;
    let fingerprint = s("coordinator.fingerprint", coordinator.and_then(|c| c.get("fingerprint")))?;
    let cert_hex = s("coordinator.certificate", coordinator.and_then(|c| c.get("certificate")))?;
    let signature = s("signature", manifest.get("signature"))?;
    let cert = from_hex(cert_hex).ok_or(SignatureError::NotHex("coordinator.certificate"))?;
    let key = from_hex(key_hex).ok_or(SignatureError::NotHex("coordinator.public_key"))?;
    let signature = from_hex(signature).ok_or(SignatureError::NotHex("signature"))?;
    let actual = blake3::hash(&cert).to_hex().to_string();
    if !actual.eq_ignore_ascii_case(fingerprint) {
        return Err(SignatureError::Fingerprint { listed: fingerprint.into(), actual });
    }
    let cert_key = certificate_key(&cert).ok_or(SignatureError::CertificateKey)?;
    if key != cert_key {
        return Err(SignatureError::KeyMismatch { listed: key_hex.into(), actual: hex(&cert_key) });
    }
    let digest = signed_digest(&canonical_bytes(manifest));
    proof::verify(&cert_key, &digest, &signature).map_err(|_| SignatureError::Bad)?;
    Ok(Signer { public_key: cert_key, fingerprint: actual })
}

impl FrameManifest {
    /// The file's bytes: pretty JSON and a newline (the canonical form does
    /// not depend on the layout).
    pub fn to_file_bytes(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).unwrap_or_default();
        out.push(b'\n');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_form_sorts_keys_drops_the_signature_and_keeps_numbers() {
        let v: Value = serde_json::from_str(
            r#"{ "b": [1, {"z": 2.5, "a": "x\ny\u0001é"}], "signature": "ff", "a": 24.0, "c": null, "d": 18446744073709551615 }"#,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(canonical_bytes(&v)).unwrap(),
            r#"{"a":24.0,"b":[1,{"a":"x\ny\u0001é","z":2.5}],"c":null,"d":18446744073709551615}"#
        );
    }

    #[test]
    fn pixel_hashes_follow_the_frame_buffer() {
        let acc = TileAccumulators {
            rect: Rect { x: 5, y: 7, width: 2, height: 1 },
            color: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            weight: vec![2.0, 0.0],
            aovs: vec![],
        };
        let px = tile_pixels(&acc);
        assert_eq!(px, vec![[0.5, 1.0, 1.5], [0.0; 3]]);
        let mut bytes = Vec::new();
        for c in [0.5f32, 1.0, 1.5, 0.0, 0.0, 0.0] {
            bytes.extend(c.to_le_bytes());
        }
        assert_eq!(pixels_blake3(&px), blake3::hash(&bytes).to_hex().to_string());
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(from_hex("00ffA0"), Some(vec![0, 255, 160]));
        assert_eq!(from_hex("0"), None);
        assert_eq!(from_hex("zz"), None);
        assert_eq!(from_hex("é0"), None);
    }
}
