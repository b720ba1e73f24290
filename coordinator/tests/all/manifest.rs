//! Frame manifests end to end: a job rendered on a farm (QUIC worker in
//! process), a frame and its signed manifest downloaded through the API,
//! then `tessera verify` run as a process with no coordinator: it passes
//! (with a re-render of random pixels through the guest), and fails, saying
//! why, for every kind of tampering.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use serde_json::Value;
use tower::ServiceExt;

use tessera_client::manifest::FrameManifest;
use tessera_coordinator::farm::manifest::ManifestSigner;
use tessera_coordinator::farm::{lock, Farm, JobRequest};
use tessera_coordinator::http::{app, AppState};
use tessera_frame::FrameBuffer;
use tessera_store::{JobState, Scope, TokenKind};
use tessera_worker::client::{Worker, WorkerConfig};

use crate::farm::{runtime, scenes, test_config};
use crate::guest;

const FRAME: i32 = 12;
const PNG: &str = "turntable-0012.png";
const EXR: &str = "turntable-0012.exr";
const MANIFEST: &str = "turntable-0012.manifest.json";

/// `tessera verify` with `args`: whether it succeeded, and what it printed.
pub fn verify(manifest: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .arg("verify")
        .arg(manifest)
        .args(args)
        // No farm anywhere: nothing to reach.
        .env_remove("TESSERA_URL")
        .env_remove("TESSERA_TOKEN")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[track_caller]
fn fails_with(manifest: &Path, args: &[&str], wanted: &[&str]) -> String {
    let (ok, text) = verify(manifest, args);
    assert!(!ok, "verify passed, but should not have:\n{text}");
    assert!(text.contains("✗ FAILED"), "{text}");
    for w in wanted {
        assert!(text.contains(w), "the report does not say {w:?}:\n{text}");
    }
    text
}

/// A copy of the downloaded frame in a directory of its own.
fn copy_of(from: &Path, to: &Path) -> PathBuf {
    std::fs::create_dir_all(to).unwrap();
    for name in [PNG, EXR, MANIFEST] {
        std::fs::copy(from.join(name), to.join(name)).unwrap();
    }
    to.join(MANIFEST)
}

fn edit_json(path: &Path, edit: impl FnOnce(&mut Value)) {
    let mut v: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

/// Flips the last hex digit of a string member.
fn flip_hex(v: &mut Value) {
    let s = v.as_str().unwrap().to_string();
    let last = s.chars().last().unwrap();
    let flipped = if last == '0' { '1' } else { '0' };
    *v = Value::String(format!("{}{flipped}", &s[..s.len() - 1]));
}

fn read_exr(path: &Path) -> (usize, usize, Vec<[f32; 3]>) {
    use exr::prelude::Vec2;
    let image = exr::prelude::read_first_rgba_layer_from_file(
        path,
        |size, _| (size, vec![[0.0f32; 3]; size.width() * size.height()]),
        |(size, px): &mut (Vec2<usize>, Vec<[f32; 3]>), pos: Vec2<usize>, (r, g, b, _a): (f32, f32, f32, f32)| {
            px[pos.y() * size.width() + pos.x()] = [r, g, b];
        },
    )
    .unwrap();
    let (size, px) = image.layer_data.channel_data.pixels;
    (size.width(), size.height(), px)
}

/// GET `uri` from `app` with a bearer token: status and body.
pub async fn get(app: &axum::Router, uri: &str, token: &str) -> (StatusCode, Vec<u8>) {
    let req = Request::get(uri).header(header::AUTHORIZATION, format!("Bearer {token}")).body(Body::empty()).unwrap();
    let r = app.clone().oneshot(req).await.unwrap();
    let status = r.status();
    (status, axum::body::to_bytes(r.into_body(), usize::MAX).await.unwrap().to_vec())
}

#[test]
fn manifests_verify_offline_and_every_tamper_fails() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let download = dir.path().join("download");
    std::fs::create_dir_all(&download).unwrap();
    let (fingerprint, exported) = rt.block_on(async {
        let farm = Arc::new(Farm::start(test_config(&dir.path().join("coord"))).await.unwrap());
        let token = farm.first_token().unwrap().to_string();
        let mut c = WorkerConfig::new(farm.quic_addr().to_string(), token, farm.fingerprint(), dir.path().join("w"));
        c.idle_timeout = Duration::from_secs(2);
        c.max_backoff = Duration::from_millis(500);
        let w = Worker::new(c).unwrap();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let worker = tokio::spawn(async move { w.run(stopped).await });

        let mut r = JobRequest::new("turntable.glb");
        r.width = Some(48);
        r.height = Some(27);
        r.frames = Some(vec![FRAME]);
        r.spp = 4;
        r.tile_size = Some(16);
        r.extra = r#"{"background_strength":1.0,"max_bounces":8}"#.into();
        let scene = std::fs::read(scenes().join("turntable.glb")).unwrap();
        let job = farm.submit_scene(r, scene, guest("pathtracer").to_vec()).await.unwrap();
        let status = tokio::time::timeout(Duration::from_secs(120), farm.wait_job(job)).await.unwrap().unwrap();
        assert_eq!(status.state, JobState::Done, "{status:?}");

        // Through the API: the listing names the manifest; it, the PNG and the EXR download.
        let read = lock(farm.store()).create_token_scoped(TokenKind::Api, "read", &[Scope::Read], 1).unwrap().1;
        let app = app(AppState::new(farm.clone(), None));
        let (s, body) = get(&app, &format!("/api/v1/jobs/{job}/frames"), &read).await;
        assert_eq!(s, StatusCode::OK);
        let list: Value = serde_json::from_slice(&body).unwrap();
        let frame = &list["frames"][0];
        let listed = &frame["manifest"];
        assert_eq!(listed["url"], format!("/api/v1/jobs/{job}/frames/{FRAME}.manifest.json"), "{list}");
        for (url, name, hash) in [
            (listed["url"].as_str().unwrap(), MANIFEST, listed["blake3"].as_str().unwrap()),
            (frame["files"]["png"]["url"].as_str().unwrap(), PNG, frame["files"]["png"]["blake3"].as_str().unwrap()),
            (frame["files"]["exr"]["url"].as_str().unwrap(), EXR, frame["files"]["exr"]["blake3"].as_str().unwrap()),
        ] {
            let (s, body) = get(&app, url, &read).await;
            assert_eq!(s, StatusCode::OK, "{url}");
            assert_eq!(blake3::hash(&body).to_hex().as_str(), hash, "{url}");
            std::fs::write(download.join(name), body).unwrap();
        }
        let (s, _) = get(&app, &format!("/api/v1/jobs/{job}/frames/99.manifest.json"), &read).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        // The archive holds the manifest after the frame's files.
        let (s, body) = get(&app, &format!("/api/v1/jobs/{job}/archive"), &read).await;
        assert_eq!(s, StatusCode::OK);
        let mut zip = zip::ZipArchive::new(std::io::Cursor::new(body)).unwrap();
        let names: Vec<String> = (0..zip.len()).map(|i| zip.by_index(i).unwrap().name().unwrap().to_string()).collect();
        assert_eq!(names, [PNG, EXR, MANIFEST]);
        let mut in_zip = Vec::new();
        std::io::Read::read_to_end(&mut zip.by_name(MANIFEST).unwrap(), &mut in_zip).unwrap();
        assert_eq!(in_zip, std::fs::read(download.join(MANIFEST)).unwrap());

        let fingerprint = farm.fingerprint().to_string();
        let exported = farm.job_dir(job);
        let _ = stop.send(true);
        tokio::time::timeout(Duration::from_secs(30), worker).await.unwrap().unwrap().unwrap();
        drop(app);
        if let Ok(farm) = Arc::try_unwrap(farm) {
            farm.shutdown().await;
        }
        (fingerprint, exported)
    });
    let manifest = download.join(MANIFEST);

    // The manifest is what the coordinator exported beside the frame.
    assert_eq!(std::fs::read(exported.join(MANIFEST)).unwrap(), std::fs::read(&manifest).unwrap());
    let m: FrameManifest = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    assert_eq!((m.frame, m.width, m.height, m.spp, m.tiles.len()), (FRAME, 48, 27, 4, 6));
    assert_eq!(m.coordinator.fingerprint, fingerprint);
    assert!(m.tiles.iter().all(|t| t.checks.signature == "verified"
        && t.checks.spot_check.as_ref().is_some_and(|s| s.passed && s.pixels > 0)
        && t.confirmed_by == Some(tessera_coordinator::farm::verify::Confirmation::Coordinator)));
    assert_eq!(m.files.keys().collect::<Vec<_>>(), ["exr", "png"]);

    // Untouched: it verifies, with the pin and a re-render of 5 pixels
    // through the path tracer built into the binary; in the export too.
    let scene = scenes().join("turntable.glb");
    let scene = scene.to_str().unwrap();
    let (ok, text) = verify(&manifest, &["--pin", &fingerprint, "--recheck", "5", "--scene", scene]);
    assert!(ok, "{text}");
    assert!(!text.contains('✗'), "{text}");
    for want in [
        "✓ coordinator signature",
        "✓ the coordinator is the pinned one",
        "✓ 6 tile signatures verify",
        "exactly once",
        "✓ EXR pixels match all 6 tiles",
        "✓ the PNG equals its EXR",
        "✓ 5 pixels re-rendered through the guest",
        "✓ verified",
    ] {
        assert!(text.contains(want), "{want:?} missing:\n{text}");
    }
    let (ok, text) = verify(&exported.join(MANIFEST), &[]);
    assert!(ok && text.contains("- no --pin"), "{text}");

    // A byte of the PNG changed.
    let m1 = copy_of(&download, &dir.path().join("png"));
    let png = m1.with_file_name(PNG);
    let mut bytes = std::fs::read(&png).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&png, bytes).unwrap();
    fails_with(&m1, &[], &[PNG, "the file was changed"]);

    // One EXR pixel changed, the file re-encoded: the tile holding it no
    // longer hashes to what the manifest says, and a re-render of the
    // pixel disagrees.
    let m2 = copy_of(&download, &dir.path().join("exr"));
    let exr = m2.with_file_name(EXR);
    let (w, h, mut px) = read_exr(&exr);
    let (x, y) = (20usize, 5usize); // tile 1: 16..32 × 0..16
    px[y * w + x][1] += 0.25;
    let mut fb = FrameBuffer::new(w as u32, h as u32);
    for (i, p) in px.iter().enumerate() {
        fb.color[3 * i..3 * i + 3].copy_from_slice(p);
        fb.weight[i] = 1.0;
    }
    fb.write_exr(&exr).unwrap();
    let text = fails_with(
        &m2,
        &[],
        &[EXR, "the file was changed", "tile 1 (16,0 16x16)", "not the ones the worker committed to"],
    );
    assert_eq!(text.matches("committed to").count(), 1, "only the one tile: {text}");

    // Forged with the coordinator's own key (a dishonest coordinator): every
    // EXR pixel brightened, the PNG dropped, hashes and signature made
    // consistent. Everything checks out but the pixels themselves: only
    // re-rendering them tells.
    let m9 = copy_of(&download, &dir.path().join("forged"));
    std::fs::remove_file(m9.with_file_name(PNG)).unwrap();
    let exr = m9.with_file_name(EXR);
    let (w, h, px) = read_exr(&exr);
    let mut fb = FrameBuffer::new(w as u32, h as u32);
    for (i, p) in px.iter().enumerate() {
        fb.color[3 * i..3 * i + 3].copy_from_slice(&p.map(|c| c + 0.001));
        fb.weight[i] = 1.0;
    }
    fb.write_exr(&exr).unwrap();
    let mut forged: FrameManifest = serde_json::from_slice(&std::fs::read(&m9).unwrap()).unwrap();
    forged.files.remove("png");
    let bytes = std::fs::read(&exr).unwrap();
    let file = forged.files.get_mut("exr").unwrap();
    (file.blake3, file.bytes) = (blake3::hash(&bytes).to_hex().to_string(), bytes.len() as u64);
    for t in &mut forged.tiles {
        let r = t.rect;
        let region: Vec<[f32; 3]> = (r.y..r.y + r.height)
            .flat_map(|y| (r.x..r.x + r.width).map(move |x| (x, y)))
            .map(|(x, y)| fb.pixel(y as usize * w + x as usize))
            .collect();
        t.pixels_blake3 = tessera_client::manifest::pixels_blake3(&region);
    }
    ManifestSigner::load(&dir.path().join("coord")).unwrap().sign(&mut forged);
    std::fs::write(&m9, forged.to_file_bytes()).unwrap();
    let (ok, text) = verify(&m9, &["--pin", &fingerprint]);
    assert!(ok, "{text}");
    fails_with(&m9, &["--pin", &fingerprint, "--recheck", "3", "--scene", scene], &["re-renders as", "the EXR holds"]);

    // A tile's worker signature, or its commitment, edited.
    for field in ["signature", "commitment"] {
        let m3 = copy_of(&download, &dir.path().join(format!("tile-{field}")));
        edit_json(&m3, |v| flip_hex(&mut v["tiles"][2][field]));
        fails_with(
            &m3,
            &[],
            &["✗ tile 2: the worker signature does not verify over its commitment", "✗ coordinator signature"],
        );
    }

    // The coordinator's signature edited.
    let m4 = copy_of(&download, &dir.path().join("coord-signature"));
    edit_json(&m4, |v| flip_hex(&mut v["signature"]));
    let text = fails_with(&m4, &[], &["✗ coordinator signature: the signature does not verify"]);
    assert!(text.contains("✓ 6 tile signatures verify"), "{text}");

    // Anything else in the manifest edited: the coordinator's signature fails.
    let m5 = copy_of(&download, &dir.path().join("seed"));
    edit_json(&m5, |v| v["seed"] = Value::from(1u64));
    fails_with(&m5, &[], &["✗ coordinator signature"]);

    // A listed file missing.
    let m6 = copy_of(&download, &dir.path().join("missing"));
    std::fs::remove_file(m6.with_file_name(EXR)).unwrap();
    fails_with(&m6, &[], &[EXR, "missing"]);

    // Another format of the frame beside it, not listed.
    let m7 = copy_of(&download, &dir.path().join("unlisted"));
    std::fs::copy(m7.with_file_name(PNG), m7.with_file_name("turntable-0012.jpg")).unwrap();
    fails_with(&m7, &[], &["turntable-0012.jpg", "not listed"]);

    // A wrong pin.
    let wrong = "ab".repeat(32);
    fails_with(&manifest, &["--pin", &wrong], &["✗ pin:", &fingerprint, &wrong]);

    // Re-signed by another coordinator: the signature holds, only the pin
    // tells it is not the studio's farm.
    let m8 = copy_of(&download, &dir.path().join("resigned"));
    let other = tessera_worker::net::tls::Identity::generate("mallory").unwrap();
    let signer = ManifestSigner::new(&other.key_der, other.cert_der.clone()).unwrap();
    let mut forged: FrameManifest = serde_json::from_slice(&std::fs::read(&m8).unwrap()).unwrap();
    signer.sign(&mut forged);
    std::fs::write(&m8, forged.to_file_bytes()).unwrap();
    let (ok, text) = verify(&m8, &[]);
    assert!(ok, "{text}");
    fails_with(&m8, &["--pin", &fingerprint], &["✗ pin:", &other.fingerprint()]);

    gpu_tiles_confirmed_after_a_failed_check(&download, dir.path(), &fingerprint);
}

/// A GPU tile whose spot check was outside the tolerance and that a second
/// opinion then confirmed: the manifest keeps the check's own outcome
/// (failed) and says who confirmed it; `tessera verify` prints both, checks
/// the replica's signature, and fails a failed check that nobody confirmed.
/// The manifests are made as the farm makes them (the farm's key signs)
/// from the downloaded frame, since a real GPU outside the tolerance cannot
/// be had on lavapipe.
fn gpu_tiles_confirmed_after_a_failed_check(download: &Path, dir: &Path, fingerprint: &str) {
    use tessera_client::manifest::identity_of_key;
    use tessera_coordinator::farm::verify::Confirmation;
    use tessera_protocol::proof::SigningKey;

    let signer = ManifestSigner::load(&dir.join("coord")).unwrap();
    let replica_id = tessera_worker::net::tls::Identity::generate("replica").unwrap();
    let replica = SigningKey::from_pkcs8(&replica_id.key_der).unwrap();
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let class = tessera_protocol::wire::GpuClass {
        vendor: 0x10de,
        device: 0x2335,
        driver: "NVIDIA 580.1".into(),
        name: "NVIDIA H200".into(),
    };
    // Tiles 2 and 4 rendered on a GPU, outside the tolerance: 2 confirmed by
    // a replica that signed the same commitment, 4 by the coordinator.
    let make = |name: &str, edit: &dyn Fn(&mut FrameManifest)| -> PathBuf {
        let path = copy_of(download, &dir.join(name));
        let mut m: FrameManifest = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        for i in [2, 4] {
            let t = &mut m.tiles[i];
            t.gpu = Some(class.clone());
            t.checks.spot_check.as_mut().unwrap().passed = false;
        }
        let c: [u8; 32] = (0..32)
            .map(|i| u8::from_str_radix(&m.tiles[2].commitment[2 * i..2 * i + 2], 16).unwrap())
            .collect::<Vec<u8>>()
            .try_into()
            .unwrap();
        m.tiles[2].confirmed_by = Some(Confirmation::Replica {
            worker: identity_of_key(&replica.public_key()),
            public_key: hex(&replica.public_key()),
            signature: hex(&replica.sign(&c)),
        });
        m.tiles[4].confirmed_by = Some(Confirmation::Coordinator);
        edit(&mut m);
        signer.sign(&mut m);
        std::fs::write(&path, m.to_file_bytes()).unwrap();
        path
    };

    let confirmed = make("gpu-confirmed", &|_| {});
    let v: Value = serde_json::from_slice(&std::fs::read(&confirmed).unwrap()).unwrap();
    assert_eq!(v["tiles"][2]["checks"]["spot_check"]["passed"], Value::Bool(false));
    assert_eq!(v["tiles"][2]["confirmed_by"]["by"], "replica");
    assert_eq!(v["tiles"][4]["confirmed_by"], serde_json::json!({"by": "coordinator"}));
    // The farm's lone new worker earned no trust yet: the coordinator
    // confirmed each of its tiles itself.
    assert_eq!(v["tiles"][0]["confirmed_by"], serde_json::json!({"by": "coordinator"}));
    let (ok, text) = verify(&confirmed, &["--pin", fingerprint]);
    assert!(ok, "{text}");
    for want in [
        "✓ 6 tile signatures verify",
        "4 of 6 spot checks passed and 2 GPU tiles outside the tolerance were kept after a second opinion",
        "- second opinions: 6 tiles confirmed whole, 1 by an independent replica's equal result (its signature \
         verifies), 5 by the coordinator's own render",
        "- tile 2 (GPU): its spot check was outside the tolerance of the coordinator's CPU render",
        "kept after an equal result from replica worker",
        "- tile 4 (GPU): its spot check was outside the tolerance",
        "kept after the coordinator's own render of the whole tile",
    ] {
        assert!(text.contains(want), "{want:?} missing:\n{text}");
    }

    // The replica's signature is not of this tile's commitment.
    let forged = make("gpu-replica-forged", &|m| {
        if let Some(Confirmation::Replica { signature, .. }) = &mut m.tiles[2].confirmed_by {
            let mut v = Value::String(signature.clone());
            flip_hex(&mut v);
            *signature = v.as_str().unwrap().to_string();
        }
    });
    fails_with(&forged, &[], &["✗ tile 2: the confirming replica", "does not verify over the tile's commitment"]);

    // A "replica" that is the tile's own worker is no second opinion.
    let own = make("gpu-replica-self", &|m| {
        let t = &mut m.tiles[2];
        let (worker, public_key, signature) = (t.worker.clone(), t.public_key.clone(), t.signature.clone());
        t.confirmed_by = Some(Confirmation::Replica { worker, public_key, signature });
    });
    fails_with(&own, &[], &["✗ tile 2: confirmed by a replica from the same worker that rendered it"]);

    // Outside the tolerance and confirmed by nobody: a failed check.
    let unconfirmed = make("gpu-unconfirmed", &|m| m.tiles[4].confirmed_by = None);
    fails_with(&unconfirmed, &[], &["✗ tile 4: its spot check failed"]);
}
