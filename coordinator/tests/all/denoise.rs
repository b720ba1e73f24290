//! Denoised jobs end to end: a real coordinator and a QUIC worker in
//! process render the same frame with and without `denoise`; the raw frame
//! is the same either way, the denoised one comes beside it, the API
//! serves both, and `tessera verify` re-derives the denoised EXR from the
//! raw one offline (and notices when it is not).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::Value;

use tessera_client::manifest::FrameManifest;
use tessera_coordinator::farm::{lock, Farm, FarmError, JobRequest};
use tessera_coordinator::http::{app, AppState};
use tessera_frame::{FrameBuffer, DENOISER};
use tessera_store::{JobState, Scope, TokenKind};
use tessera_worker::client::Worker;

use crate::farm::{runtime, scenes, test_config, worker_config};
use crate::guest;
use crate::manifest::{get, verify};

const FRAME: i32 = 12;

fn request(denoise: bool) -> JobRequest {
    let mut r = JobRequest::new("turntable.glb");
    r.width = Some(48);
    r.height = Some(27);
    r.frames = Some(vec![FRAME]);
    r.spp = 4;
    r.tile_size = Some(16);
    r.extra = tessera_coordinator::farm::job::RENDER_DEFAULTS.into();
    r.denoise = denoise;
    r
}

/// `glb` with `ext` added to its JSON's `extensionsUsed` (a GLB rebuilt
/// around the edited JSON chunk): what Blender writes for a material
/// setting the renderer does not implement.
fn with_extension_used(glb: &[u8], ext: &str) -> Vec<u8> {
    let u32_at = |at: usize| u32::from_le_bytes(glb[at..at + 4].try_into().unwrap()) as usize;
    let json_len = u32_at(12);
    let mut doc: Value = serde_json::from_slice(&glb[20..20 + json_len]).unwrap();
    doc["extensionsUsed"].as_array_mut().map(|a| a.push(ext.into())).unwrap_or_else(|| {
        doc["extensionsUsed"] = serde_json::json!([ext]);
    });
    let mut json = serde_json::to_vec(&doc).unwrap();
    while json.len() % 4 != 0 {
        json.push(b' ');
    }
    let bin = &glb[20 + json_len..];
    let mut out = b"glTF".to_vec();
    out.extend(2u32.to_le_bytes());
    out.extend(((12 + 8 + json.len() + bin.len()) as u32).to_le_bytes());
    out.extend((json.len() as u32).to_le_bytes());
    out.extend(b"JSON");
    out.extend(json);
    out.extend(bin);
    out
}

fn bits(f: &FrameBuffer) -> Vec<u32> {
    f.color.iter().map(|c| c.to_bits()).collect()
}

#[test]
fn a_denoised_job_ships_the_raw_frame_unchanged_and_a_denoised_one_that_verifies_offline() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let (denoised_dir, plain_dir) = rt.block_on(async {
        let farm = Arc::new(Farm::start(test_config(&dir.path().join("coord"))).await.unwrap());
        let token = farm.first_token().unwrap().to_string();
        let mut c = worker_config(&farm, &token, &dir.path().join("w"));
        c.slots = 2;
        let w = Worker::new(c).unwrap();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let worker = tokio::spawn(async move { w.run(stopped).await });

        let scene = std::fs::read(scenes().join("turntable.glb")).unwrap();
        let module = guest("pathtracer").to_vec();
        // A module that returns no guides cannot serve a denoised job: said
        // at submission, no job made.
        let jobs_before = farm.status().await.unwrap().jobs.len();
        let refused = farm.submit_scene(request(true), scene.clone(), guest("spheres").to_vec()).await;
        match refused {
            Err(e @ FarmError::Spec(_)) => assert!(e.to_string().contains("denoiser's guides"), "{e}"),
            other => panic!("a module without guides was accepted for a denoised job: {other:?}"),
        }
        assert_eq!(farm.status().await.unwrap().jobs.len(), jobs_before);

        let denoised = farm.submit_scene(request(true), scene.clone(), module.clone()).await.unwrap();
        // The plain job's scene says it uses an extension the renderer
        // ignores: the job's log says so (its pixels do not change, below).
        let clearcoat = with_extension_used(&scene, "KHR_materials_clearcoat");
        let plain = farm.submit_scene(request(false), clearcoat, module).await.unwrap();
        let log = lock(farm.store()).job_log(plain, 0, 100).unwrap();
        assert!(
            log.iter().any(|l| l.message.contains("KHR_materials_clearcoat") && l.message.contains("ignores")),
            "{log:?}"
        );
        assert!(!lock(farm.store()).job_log(denoised, 0, 100).unwrap().iter().any(|l| l.message.contains("KHR_")));
        for job in [denoised, plain] {
            let status = tokio::time::timeout(Duration::from_secs(180), farm.wait_job(job)).await.unwrap().unwrap();
            assert_eq!(status.state, JobState::Done, "{status:?}");
        }

        // The API lists and serves the denoised files of the denoised job only.
        let read = lock(farm.store()).create_token_scoped(TokenKind::Api, "read", &[Scope::Read], 1).unwrap().1;
        let app = app(AppState::new(farm.clone(), None));
        let (s, body) = get(&app, &format!("/api/v1/jobs/{denoised}/frames"), &read).await;
        assert_eq!(s, StatusCode::OK);
        let list: Value = serde_json::from_slice(&body).unwrap();
        let files = &list["frames"][0]["files"];
        let names: Vec<&String> = files.as_object().unwrap().keys().collect();
        assert_eq!(names, ["denoised.exr", "denoised.png", "exr", "png"], "{list}");
        let url = files["denoised.png"]["url"].as_str().unwrap();
        assert_eq!(url, format!("/api/v1/jobs/{denoised}/frames/{FRAME}.denoised.png"));
        let (s, body) = get(&app, url, &read).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(blake3::hash(&body).to_hex().as_str(), files["denoised.png"]["blake3"].as_str().unwrap());
        let (s, body) = get(&app, &format!("/api/v1/jobs/{plain}/frames/{FRAME}.denoised.png"), &read).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        assert!(String::from_utf8_lossy(&body).contains("was not denoised"));
        let (s, body) = get(&app, &format!("/api/v1/jobs/{denoised}"), &read).await;
        assert_eq!(s, StatusCode::OK);
        let job: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(job["settings"]["denoise"], true, "{job}");
        // The archive carries them too, before the manifest.
        let (s, body) = get(&app, &format!("/api/v1/jobs/{denoised}/archive"), &read).await;
        assert_eq!(s, StatusCode::OK);
        let mut zip = zip::ZipArchive::new(std::io::Cursor::new(body)).unwrap();
        let names: Vec<String> = (0..zip.len()).map(|i| zip.by_index(i).unwrap().name().unwrap().to_string()).collect();
        assert_eq!(
            names,
            [
                "turntable-0012.png",
                "turntable-0012.exr",
                "turntable-0012.denoised.png",
                "turntable-0012.denoised.exr",
                "turntable-0012.manifest.json"
            ]
        );

        let dirs = (farm.job_dir(denoised), farm.job_dir(plain));
        let _ = stop.send(true);
        tokio::time::timeout(Duration::from_secs(30), worker).await.unwrap().unwrap().unwrap();
        drop(app);
        if let Ok(farm) = Arc::try_unwrap(farm) {
            farm.shutdown().await;
        }
        dirs
    });

    let file = |d: &Path, ext: &str| d.join(format!("turntable-{FRAME:04}.{ext}"));
    // The raw frame is the one a job without denoising renders: the same
    // PNG bytes, the same EXR pixels (the EXR gains the guide channels).
    assert!(std::fs::read(file(&denoised_dir, "png")).unwrap() == std::fs::read(file(&plain_dir, "png")).unwrap());
    let raw = FrameBuffer::read_exr(&file(&denoised_dir, "exr")).unwrap();
    let plain = FrameBuffer::read_exr(&file(&plain_dir, "exr")).unwrap();
    assert!(raw.guides.is_some() && plain.guides.is_none());
    assert_eq!(bits(&raw), bits(&plain), "denoising changed the raw frame");
    assert!(!file(&plain_dir, "denoised.png").exists());
    // The denoised EXR is the raw EXR denoised, bit for bit, and is not the raw frame.
    let denoised = FrameBuffer::read_exr(&file(&denoised_dir, "denoised.exr")).unwrap();
    assert_eq!(bits(&raw.denoised().unwrap()), bits(&denoised));
    assert_ne!(bits(&raw), bits(&denoised));

    // The manifest lists the denoised files and the denoiser; verify re-derives them.
    let manifest = denoised_dir.join(format!("turntable-{FRAME:04}.manifest.json"));
    let m: FrameManifest = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    assert_eq!(m.files.keys().collect::<Vec<_>>(), ["denoised.exr", "denoised.png", "exr", "png"]);
    assert_eq!(m.denoiser.as_deref(), Some(DENOISER));
    let (ok, text) = verify(&manifest, &[]);
    assert!(ok, "{text}");
    for want in [
        "✓ the PNG equals its EXR",
        &format!("✓ the denoised EXR is {DENOISER} of the raw EXR's colour, albedo and normal, bit for bit"),
        "✓ the denoised PNG equals its EXR",
        "✓ verified",
    ] {
        assert!(text.contains(want), "{want:?} missing:\n{text}");
    }
    let plain_manifest = plain_dir.join(format!("turntable-{FRAME:04}.manifest.json"));
    let (ok, text) = verify(&plain_manifest, &[]);
    assert!(ok && !text.contains("denoised"), "{text}");

    // A denoised EXR that is not this frame's (here: the plain job's raw
    // EXR, a real image of the right size) fails, saying so.
    let tampered = dir.path().join("tampered");
    std::fs::create_dir_all(&tampered).unwrap();
    for entry in std::fs::read_dir(&denoised_dir).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), tampered.join(entry.file_name())).unwrap();
    }
    std::fs::copy(file(&plain_dir, "exr"), file(&tampered, "denoised.exr")).unwrap();
    let (ok, text) = verify(&tampered.join(format!("turntable-{FRAME:04}.manifest.json")), &[]);
    assert!(!ok, "{text}");
    assert!(text.contains("the file was changed"), "{text}");
    assert!(text.contains("the denoised image is not derived from this frame"), "{text}");
}
