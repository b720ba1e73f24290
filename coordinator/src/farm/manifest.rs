//! Building and signing frame manifests: the coordinator's half of the
//! manifest format that `tessera_client::manifest` defines and checks.
//!
//! When `farm/writer.rs` writes a frame it hands [`ManifestSigner::build`]
//! the stored tiles ([`TileInput`]) with their proof records; the signer
//! lists each tile's worker, commitment, signature and checks, commits to and
//! signs the tiles the coordinator rendered itself, and signs the whole
//! manifest with its QUIC identity key (the key of the certificate workers
//! pin).

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;
use tessera_client::manifest::{
    canonical_bytes, certificate_key, identity_of_key, signed_digest, FrameManifest, ManifestCoordinator, ManifestFile,
    ManifestJob, ManifestTile, SpotCheckOutcome, TileChecks, SCHEMA, SIGNATURE_COORDINATOR, SIGNATURE_VERIFIED,
    VERSION,
};
use tessera_protocol::proof::{self, SigningKey, TileClaim};
use tessera_protocol::{hex, ContentHash, Rect, SampleRange};

use crate::farm::job::JobSpec;
use crate::farm::msg::COORDINATOR;
use crate::farm::verify::TileProof;

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
                    Some(p) if p.worker == COORDINATOR && p.signature.is_empty() => {
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
            denoiser: spec.denoise.then(|| tessera_frame::DENOISER.to_string()),
            tiles: out,
            coordinator: self.coordinator(),
            signature: String::new(),
        };
        self.sign(&mut m);
        m
    }
}

#[cfg(test)]
mod tests {
    use tessera_client::manifest::{tile_signature_problems, verify_signature, Confirmation, SignatureError};
    use tessera_protocol::TileAccumulators;

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
            worker: COORDINATOR.into(),
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
        use crate::farm::verify::SpotCheck;
        use tessera_protocol::gpu_check::GpuComparison;
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
}
