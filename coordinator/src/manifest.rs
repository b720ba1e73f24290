//! Frame manifests: the last part of proof-of-render (DESIGN.md: "every
//! finished frame has a manifest of its tiles' commitments and checks that
//! anyone can verify offline").
//!
//! When a frame is written (`farm/writer.rs`), the coordinator makes a
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
//! checks one offline (`src/verify_cmd.rs`).
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
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tessera_protocol::proof::{self, SigningKey, TileClaim};
use tessera_protocol::{ContentHash, Rect, SampleRange, TileAccumulators};

use crate::assemble::FrameBuffer;
use crate::farm::job::JobSpec;
use crate::farm::verify::{hex, Confirmation, TileProof};

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

/// Hex to bytes (either case); `None` if it is not hex.
pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| s.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok())).collect()
}

/// The raw ed25519 key of a certificate (DER), if it is one.
pub fn certificate_key(cert_der: &[u8]) -> Option<[u8; 32]> {
    tessera_worker::net::tls::ed25519_key_of_cert(cert_der).ok()
}

/// A tile as `farm/writer.rs` has it when it writes the frame.
pub struct TileInput<'a> {
    pub index: u32,
    pub rect: Rect,
    /// The stored accumulators: canonical bytes and their blake3.
    pub data: &'a [u8],
    pub hash: [u8; 32],
    /// The stored proof record (JSON), if any.
    pub proof: Option<&'a str>,
    /// [`pixels_blake3`] of [`tile_pixels`].
    pub pixels_blake3: String,
}

/// The worker name under which the farm stores a tile the coordinator
/// rendered itself (`farm/writer.rs`'s `COORDINATOR`: a disagreement
/// between workers settled by its own render); such a tile has no worker
/// signature, so the coordinator commits to it and signs it itself.
pub const COORDINATOR_WORKER: &str = "coordinator";

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

impl ManifestSigner {
    /// Builds and signs a frame's manifest from the stored tiles.
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        &self,
        job: u64,
        spec: &JobSpec,
        frame: i32,
        stem: &str,
        files: BTreeMap<String, ManifestFile>,
        tiles: &[TileInput<'_>],
        default_samples: SampleRange,
    ) -> FrameManifest {
        let hash_of = |h: &str| h.parse::<ContentHash>().unwrap_or(ContentHash([0; 32]));
        let (module, scene) = (hash_of(&spec.module), hash_of(&spec.scene));
        let mut out: Vec<ManifestTile> = tiles
            .iter()
            .map(|t| {
                let proof: Option<TileProof> = t.proof.and_then(|p| serde_json::from_str(p).ok());
                let gpu = proof.as_ref().and_then(|p| p.gpu.clone());
                let confirmed_by = proof.as_ref().and_then(|p| p.confirmed_by.clone());
                let (worker, public_key, commitment, signature, samples, checks) = match proof {
                    // Rendered by the coordinator itself: it commits and signs.
                    Some(p) if p.worker == COORDINATOR_WORKER && p.signature.is_empty() => {
                        let samples = SampleRange { start: p.sample_start, count: p.sample_count };
                        let claim = TileClaim { job, frame, tile: t.index, samples, module, scene };
                        let c = proof::commitment(&claim, t.data);
                        let key = self.key.public_key();
                        (
                            identity_of_key(&key),
                            hex(&key),
                            hex(&c),
                            hex(&self.key.sign(&c)),
                            samples,
                            TileChecks { signature: SIGNATURE_COORDINATOR.into(), spot_check: None },
                        )
                    }
                    Some(p) => (
                        p.worker,
                        p.public_key,
                        p.commitment,
                        p.signature,
                        SampleRange { start: p.sample_start, count: p.sample_count },
                        TileChecks {
                            signature: if p.signature_checked { SIGNATURE_VERIFIED } else { "not checked" }.into(),
                            spot_check: p.spot_check.map(|s| SpotCheckOutcome {
                                epoch: s.epoch,
                                pixels: s.pixels,
                                passed: s.passed(),
                            }),
                        },
                    ),
                    None => (
                        String::new(),
                        String::new(),
                        String::new(),
                        String::new(),
                        default_samples,
                        TileChecks { signature: "not recorded".into(), spot_check: None },
                    ),
                };
                ManifestTile {
                    index: t.index,
                    rect: t.rect,
                    samples,
                    worker,
                    public_key,
                    commitment,
                    signature,
                    accumulators_blake3: hex(&t.hash),
                    pixels_blake3: t.pixels_blake3.clone(),
                    checks,
                    gpu,
                    confirmed_by,
                }
            })
            .collect();
        out.sort_by_key(|t| t.index);
        let mut m = FrameManifest {
            schema: SCHEMA.into(),
            version: VERSION,
            job: ManifestJob { id: job, name: spec.name.clone() },
            frame,
            width: spec.width,
            height: spec.height,
            fps: spec.fps,
            spp: spec.spp,
            seed: spec.seed,
            extra: spec.extra.clone(),
            module: module.to_hex(),
            scene: scene.to_hex(),
            fuel_per_tile: spec.fuel_per_tile,
            fuel_per_pixel_sample: spec.fuel_per_pixel_sample,
            view: spec.view.clone(),
            exposure: f64::from(spec.exposure),
            stem: stem.into(),
            files,
            denoiser: spec.denoise.then(|| crate::assemble::DENOISER.to_string()),
            tiles: out,
            coordinator: self.coordinator(),
            signature: String::new(),
        };
        self.sign(&mut m);
        m
    }
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

/// The coordinator's signing identity: its QUIC key and certificate.
pub struct ManifestSigner {
    key: SigningKey,
    cert_der: Vec<u8>,
}

impl std::fmt::Debug for ManifestSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ManifestSigner({})", blake3::hash(&self.cert_der).to_hex())
    }
}

impl ManifestSigner {
    /// From a PKCS#8 ed25519 key and its certificate (DER).
    pub fn new(key_der: &[u8], cert_der: Vec<u8>) -> Result<ManifestSigner, String> {
        let key = SigningKey::from_pkcs8(key_der).map_err(|e| e.to_string())?;
        match certificate_key(&cert_der) {
            Some(k) if k == key.public_key() => Ok(ManifestSigner { key, cert_der }),
            Some(_) => Err("the certificate is not for the key".into()),
            None => Err("the certificate does not hold an ed25519 key".into()),
        }
    }

    /// The coordinator's identity as `Identity::load_or_create_pinned` keeps
    /// it in the data directory (`coordinator.key`, `coordinator.crt`).
    pub fn load(data_dir: &Path) -> Result<ManifestSigner, String> {
        let read = |name: &str| {
            let p = data_dir.join(name);
            std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))
        };
        ManifestSigner::new(&read("coordinator.key")?, read("coordinator.crt")?)
            .map_err(|e| format!("the coordinator's identity in {}: {e}", data_dir.display()))
    }

    /// The `coordinator` member of manifests it signs.
    pub fn coordinator(&self) -> ManifestCoordinator {
        ManifestCoordinator {
            public_key: hex(&self.key.public_key()),
            fingerprint: blake3::hash(&self.cert_der).to_hex().to_string(),
            certificate: hex(&self.cert_der),
        }
    }

    /// Sets `manifest.coordinator` to this signer and signs it.
    pub fn sign(&self, manifest: &mut FrameManifest) {
        manifest.coordinator = self.coordinator();
        manifest.signature = String::new();
        // The canonical form is computed from the JSON as a verifier parses
        // it, so signer and verifier cannot disagree on a number's digits.
        let value = serde_json::to_vec(&*manifest)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
            .unwrap_or(Value::Null);
        manifest.signature = hex(&self.key.sign(&signed_digest(&canonical_bytes(&value))));
    }
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

    /// A 2×1 tile at column `x` of a small frame, with the same sums each time.
    fn sample_tile(x: u32) -> TileAccumulators {
        TileAccumulators {
            rect: Rect { x, y: 0, width: 2, height: 1 },
            color: vec![1.0; 6],
            weight: vec![2.0; 2],
            aovs: vec![],
        }
    }

    /// The claim of tile 0 of job 9, frame 5, that the tests' workers sign.
    fn sample_claim(samples: SampleRange) -> TileClaim {
        TileClaim {
            job: 9,
            frame: 5,
            tile: 0,
            samples,
            module: ContentHash([0x11; 32]),
            scene: ContentHash([0x22; 32]),
        }
    }

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

    fn spec() -> JobSpec {
        JobSpec {
            name: "shot.glb".into(),
            module: "11".repeat(32),
            scene: "22".repeat(32),
            width: 4,
            height: 1,
            fps: 24.0,
            extra: "{}".into(),
            spp: 8,
            seed: 3,
            tile_size: 2,
            frames: vec![5],
            priority: 0,
            view: "agx".into(),
            exposure: 0.3,
            fuel_per_tile: 1,
            fuel_per_pixel_sample: 1,
            formats: crate::farm::job::Format::all(),
            submitted_by: None,
            engine: Default::default(),
            denoise: false,
            progressive: false,
        }
    }

    #[test]
    fn manifests_sign_worker_and_coordinator_tiles_and_verify() {
        let worker =
            SigningKey::from_pkcs8(&tessera_worker::net::tls::Identity::generate("w").unwrap().key_der).unwrap();
        let id = tessera_worker::net::tls::Identity::generate("coordinator").unwrap();
        let signer = ManifestSigner::new(&id.key_der, id.cert_der.clone()).unwrap();
        let samples = SampleRange { start: 0, count: 8 };
        let tiles: Vec<(Rect, Vec<u8>)> = (0..2)
            .map(|i| {
                let acc = sample_tile(2 * i);
                (acc.rect, acc.to_bytes())
            })
            .collect();
        let claim = sample_claim(samples);
        let c = proof::commitment(&claim, &tiles[0].1);
        let worker_proof = serde_json::to_string(&TileProof {
            worker: identity_of_key(&worker.public_key()),
            public_key: hex(&worker.public_key()),
            commitment: hex(&c),
            signature: hex(&worker.sign(&c)),
            sample_start: 0,
            sample_count: 8,
            signature_checked: true,
            spot_check: None,
            gpu: None,
            confirmed_by: None,
        })
        .unwrap();
        let own_proof = serde_json::to_string(&TileProof {
            worker: COORDINATOR_WORKER.into(),
            public_key: String::new(),
            commitment: String::new(),
            signature: String::new(),
            sample_start: 0,
            sample_count: 8,
            signature_checked: false,
            spot_check: None,
            gpu: None,
            confirmed_by: None,
        })
        .unwrap();
        let inputs: Vec<TileInput<'_>> = tiles
            .iter()
            .zip([worker_proof.as_str(), own_proof.as_str()])
            .enumerate()
            .map(|(i, ((rect, data), proof))| TileInput {
                index: i as u32,
                rect: *rect,
                data,
                hash: *blake3::hash(data).as_bytes(),
                proof: Some(proof),
                pixels_blake3: String::new(),
            })
            .collect();
        let m = signer.build(9, &spec(), 5, "shot", BTreeMap::new(), &inputs, samples);
        assert_eq!(m.tiles[1].checks.signature, SIGNATURE_COORDINATOR);
        assert_eq!(m.tiles[1].public_key, m.coordinator.public_key);
        for t in &m.tiles {
            assert!(tile_signature_problems(t, &m.coordinator.public_key).is_empty(), "{t:?}");
        }
        // The coordinator's tile commits to its bytes under the tile's claim.
        let own = proof::commitment(&TileClaim { tile: 1, ..claim }, &tiles[1].1);
        assert_eq!(m.tiles[1].commitment, hex(&own));

        let value: Value = serde_json::from_slice(&m.to_file_bytes()).unwrap();
        let signed = verify_signature(&value).unwrap();
        assert_eq!(signed.fingerprint, id.fingerprint());
        // exposure 0.3f32 is written as its exact f64 and round-trips.
        assert_eq!(value["exposure"].as_f64(), Some(f64::from(0.3f32)));
        let mut edited = value.clone();
        edited["tiles"][0]["pixels_blake3"] = Value::String("00".into());
        assert_eq!(verify_signature(&edited), Err(SignatureError::Bad));
        // A tile marked as the coordinator's but signed by a worker.
        let mut t = m.tiles[0].clone();
        t.checks.signature = SIGNATURE_COORDINATOR.into();
        assert_eq!(tile_signature_problems(&t, &m.coordinator.public_key).len(), 1);
    }

    /// A GPU tile outside the tolerance, kept after a second opinion: the
    /// manifest keeps the spot check's own outcome and says who confirmed
    /// it; proofs stored with the bare word before still read.
    #[test]
    fn confirmed_gpu_tiles_keep_their_check_outcome() {
        use crate::farm::gpu_check::GpuComparison;
        use crate::farm::verify::SpotCheck;
        let id = tessera_worker::net::tls::Identity::generate("coordinator").unwrap();
        let signer = ManifestSigner::new(&id.key_der, id.cert_der.clone()).unwrap();
        let worker =
            SigningKey::from_pkcs8(&tessera_worker::net::tls::Identity::generate("w").unwrap().key_der).unwrap();
        let replica =
            SigningKey::from_pkcs8(&tessera_worker::net::tls::Identity::generate("r").unwrap().key_der).unwrap();
        let samples = SampleRange { start: 0, count: 8 };
        let acc = sample_tile(0);
        let data = acc.to_bytes();
        let claim = sample_claim(samples);
        let c = proof::commitment(&claim, &data);
        let outside = GpuComparison { pixels: 2, outliers: 2, allowed: 0, worst: 3.0, worst_at: Some((1, 0)) };
        let proof_of = |confirmed_by| TileProof {
            worker: identity_of_key(&worker.public_key()),
            public_key: hex(&worker.public_key()),
            commitment: hex(&c),
            signature: hex(&worker.sign(&c)),
            sample_start: 0,
            sample_count: 8,
            signature_checked: true,
            spot_check: Some(SpotCheck {
                epoch: 3,
                pixels: 2,
                mismatch: Some((1, 0)),
                expected: None,
                got: None,
                fuel: 10,
                gpu: Some(outside.clone()),
            }),
            gpu: Some(tessera_protocol::wire::GpuClass { vendor: 1, device: 2, driver: "d".into(), name: "n".into() }),
            confirmed_by,
        };
        let by_replica = Confirmation::Replica {
            worker: identity_of_key(&replica.public_key()),
            public_key: hex(&replica.public_key()),
            signature: hex(&replica.sign(&c)),
        };
        let stored = serde_json::to_string(&proof_of(Some(by_replica.clone()))).unwrap();
        let input = TileInput {
            index: 0,
            rect: acc.rect,
            data: &data,
            hash: *blake3::hash(&data).as_bytes(),
            proof: Some(&stored),
            pixels_blake3: String::new(),
        };
        let m = signer.build(9, &spec(), 5, "shot", BTreeMap::new(), &[input], samples);
        let t = &m.tiles[0];
        assert!(!t.checks.spot_check.as_ref().unwrap().passed, "the check's own outcome: {t:?}");
        assert_eq!(t.confirmed_by.as_ref(), Some(&by_replica));
        assert!(tile_signature_problems(t, &m.coordinator.public_key).is_empty(), "{t:?}");
        // The replica's signature must be of this commitment.
        let mut forged = t.clone();
        forged.confirmed_by = Some(Confirmation::Replica {
            worker: identity_of_key(&replica.public_key()),
            public_key: hex(&replica.public_key()),
            signature: hex(&replica.sign(&[7; 32])),
        });
        let problems = tile_signature_problems(&forged, &m.coordinator.public_key);
        assert!(problems.len() == 1 && problems[0].contains("confirming replica"), "{problems:?}");

        // The bare words of earlier proofs.
        let mut v: Value = serde_json::from_str(&stored).unwrap();
        v["confirmed_by"] = Value::String("coordinator".into());
        let p: TileProof = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(p.confirmed_by, Some(Confirmation::Coordinator));
        v["confirmed_by"] = Value::String("replica".into());
        let p: TileProof = serde_json::from_value(v.clone()).unwrap();
        assert!(matches!(p.confirmed_by, Some(Confirmation::Replica { ref signature, .. }) if signature.is_empty()));
        v.as_object_mut().unwrap().remove("confirmed_by");
        assert_eq!(serde_json::from_value::<TileProof>(v.clone()).unwrap().confirmed_by, None);
        v["confirmed_by"] = Value::String("somebody".into());
        assert!(serde_json::from_value::<TileProof>(v).is_err());
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(from_hex("00ffA0"), Some(vec![0, 255, 160]));
        assert_eq!(from_hex("0"), None);
        assert_eq!(from_hex("zz"), None);
        assert_eq!(from_hex("é0"), None);
    }
}
