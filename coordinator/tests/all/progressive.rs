//! Progressive jobs end to end: a real coordinator and a QUIC worker in
//! process render the same denoised frame in sample passes and in one; the
//! passes' previews come as events and through the API while the frame
//! renders, and the final files are the plain job's bit for bit; the
//! manifest lists every pass's tiles and `tessera verify` (re-rendering
//! pixels too) accepts it.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::Value;

use tessera_client::manifest::FrameManifest;
use tessera_client::model::Event;
use tessera_coordinator::farm::{lock, Farm, JobRequest};
use tessera_coordinator::http::{app, AppState};
use tessera_frame::FrameBuffer;
use tessera_store::{JobState, Scope, TokenKind};
use tessera_worker::client::Worker;

use crate::farm::{runtime, scenes, test_config, worker_config};
use crate::guest;
use crate::manifest::{get, verify};

const FRAME: i32 = 12;
/// Passes of 1, 3, 12 and 4 samples.
const SPP: u32 = 20;

fn request(progressive: bool) -> JobRequest {
    let mut r = JobRequest::new("turntable.glb");
    r.width = Some(48);
    r.height = Some(27);
    r.frames = Some(vec![FRAME]);
    r.spp = SPP;
    r.tile_size = Some(16);
    r.extra = tessera_coordinator::farm::job::RENDER_DEFAULTS.into();
    r.denoise = true;
    r.progressive = progressive;
    r
}

fn bits(f: &FrameBuffer) -> Vec<u32> {
    f.color.iter().map(|c| c.to_bits()).collect()
}

#[test]
fn a_progressive_job_previews_each_pass_and_ends_with_the_plain_jobs_frame() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let (progressive_dir, plain_dir, events) = rt.block_on(async {
        let farm = Arc::new(Farm::start(test_config(&dir.path().join("coord"))).await.unwrap());
        let token = farm.first_token().unwrap().to_string();
        let mut c = worker_config(&farm, &token, &dir.path().join("w"));
        c.slots = 1;
        let w = Worker::new(c).unwrap();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let worker = tokio::spawn(async move { w.run(stopped).await });

        let scene = std::fs::read(scenes().join("turntable.glb")).unwrap();
        let module = guest("pathtracer").to_vec();
        let mut events = farm.subscribe();
        let progressive = farm.submit_scene(request(true), scene.clone(), module.clone()).await.unwrap();
        let plain = farm.submit_scene(request(false), scene, module).await.unwrap();
        for job in [progressive, plain] {
            let status = tokio::time::timeout(Duration::from_secs(300), farm.wait_job(job)).await.unwrap().unwrap();
            assert_eq!(status.state, JobState::Done, "{status:?}");
        }
        let mut seen = Vec::new();
        while let Ok(e) = events.try_recv() {
            if e.job() == Some(progressive) {
                seen.push(e);
            }
        }

        let read = lock(farm.store()).create_token_scoped(TokenKind::Api, "read", &[Scope::Read], 1).unwrap().1;
        let app = app(AppState::new(farm.clone(), None));
        let (s, body) = get(&app, &format!("/api/v1/jobs/{progressive}"), &read).await;
        assert_eq!(s, StatusCode::OK);
        let job: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            (job["settings"]["progressive"].as_bool(), job["progress"]["tiles"].as_u64()),
            (Some(true), Some(24))
        );
        // The latest preview, denoised, the frame's size; the plain job
        // has none.
        let preview = format!("/api/v1/jobs/{progressive}/frames/{FRAME}.preview.png");
        let (s, body) = get(&app, &preview, &read).await;
        assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        let img = image::load_from_memory(&body).unwrap();
        assert_eq!((img.width(), img.height()), (48, 27));
        let (s, _) = get(&app, &format!("/api/v1/jobs/{plain}/frames/{FRAME}.preview.png"), &read).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        // A last-pass tile's preview shows all its rectangle's samples: the
        // frame PNG's pixels there.
        let (s, body) = get(&app, &format!("/api/v1/jobs/{progressive}/tiles/23"), &read).await;
        assert_eq!(s, StatusCode::OK);
        let tile: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(tile["samples"], serde_json::json!({"start": 16, "count": 4}), "{tile}");
        let (x, y) = (tile["rect"]["x"].as_u64().unwrap() as u32, tile["rect"]["y"].as_u64().unwrap() as u32);
        let (s, body) = get(&app, &format!("/api/v1/jobs/{progressive}/tiles/23/preview.png"), &read).await;
        assert_eq!(s, StatusCode::OK);
        let tile_png = image::load_from_memory(&body).unwrap().to_rgb8();
        let (s, body) = get(&app, &format!("/api/v1/jobs/{progressive}/frames/{FRAME}.png"), &read).await;
        assert_eq!(s, StatusCode::OK);
        let frame_png = image::load_from_memory(&body).unwrap().to_rgb8();
        for (tx, ty, p) in tile_png.enumerate_pixels() {
            assert_eq!(p, frame_png.get_pixel(x + tx, y + ty), "tile 23 pixel ({tx}, {ty})");
        }

        let dirs = (farm.job_dir(progressive), farm.job_dir(plain));
        let _ = stop.send(true);
        tokio::time::timeout(Duration::from_secs(30), worker).await.unwrap().unwrap().unwrap();
        drop(app);
        if let Ok(farm) = Arc::try_unwrap(farm) {
            farm.shutdown().await;
        }
        (dirs.0, dirs.1, seen)
    });

    // Previews come pass after pass, before the frame. A pass that
    // completes together with a later one (a straggler of pass 1 lands
    // after pass 2's tiles) is previewed once, through the later one; the
    // last pass is the frame itself.
    let previews: Vec<(usize, u32, u32)> = events
        .iter()
        .enumerate()
        .filter_map(|(at, e)| match e {
            Event::Preview { frame, pass, samples, .. } if *frame == FRAME => Some((at, *pass, *samples)),
            _ => None,
        })
        .collect();
    let frame_written = events.iter().position(|e| matches!(e, Event::Frame { .. })).unwrap();
    for pair in previews.windows(2) {
        assert!(pair[0].1 < pair[1].1, "{previews:?}");
    }
    for &(at, pass, samples) in &previews {
        assert!(pass < 3 && samples == [1, 4, 16][pass as usize] && at < frame_written, "{events:?}");
    }
    // The first preview is asked for the moment the first pass (tiles
    // 0..6) is durable, through every pass complete then.
    let mut done = std::collections::BTreeSet::new();
    let first_pass_done = events
        .iter()
        .position(|e| {
            if let Event::Tile { tile, .. } = e {
                done.insert(*tile);
            }
            (0..6).all(|t| done.contains(&t))
        })
        .unwrap();
    let complete = (0..4).take_while(|p| (6 * p..6 * p + 6).all(|t| done.contains(&t))).count() as u32;
    if complete < 4 {
        let (at, pass, _) = previews[0];
        assert!(at > first_pass_done && pass == complete - 1, "{events:?}");
    } else {
        // A first-pass straggler that lands last completes the frame at once.
        assert!(previews.is_empty(), "{events:?}");
    }

    // The files are the plain job's, bit for bit: PNG bytes, EXR pixels,
    // the denoised EXR.
    let file = |d: &std::path::Path, ext: &str| d.join(format!("turntable-{FRAME:04}.{ext}"));
    for ext in ["png", "denoised.png"] {
        assert!(
            std::fs::read(file(&progressive_dir, ext)).unwrap() == std::fs::read(file(&plain_dir, ext)).unwrap(),
            "{ext} differs"
        );
    }
    for ext in ["exr", "denoised.exr"] {
        let a = FrameBuffer::read_exr(&file(&progressive_dir, ext)).unwrap();
        let b = FrameBuffer::read_exr(&file(&plain_dir, ext)).unwrap();
        assert_eq!(bits(&a), bits(&b), "{ext} differs");
    }

    // The manifest lists all 24 tiles with their passes' samples, and
    // verifies offline, re-rendered pixels included.
    let manifest = file(&progressive_dir, "manifest.json");
    let m: FrameManifest = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    assert_eq!(m.tiles.len(), 24);
    let mut ranges: Vec<(u32, u32)> = m.tiles.iter().map(|t| (t.samples.start, t.samples.count)).collect();
    ranges.dedup();
    assert_eq!(ranges, [(0, 1), (1, 3), (4, 12), (16, 4)]);
    let scene = scenes().join("turntable.glb");
    let (ok, text) = verify(&manifest, &["--recheck", "6", "--scene", scene.to_str().unwrap()]);
    assert!(ok, "{text}");
    for want in [
        "✓ the tiles cover the 48x27 frame in 4 sample passes, all 20 samples at every pixel",
        "✓ EXR pixels match the 6 last-pass tiles' (of 24) pixel hashes",
        "✓ 6 pixels re-rendered",
        "✓ verified",
    ] {
        assert!(text.contains(want), "{want:?} missing:\n{text}");
    }
}
