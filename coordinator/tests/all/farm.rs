//! The farm end to end on loopback: a real coordinator (QUIC endpoint,
//! SQLite store, writer) and real workers (QUIC client, sandbox, blob
//! cache), in this process or as separate processes that the tests kill.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tessera_coordinator::farm::{Farm, FarmConfig, JobRequest};
use tessera_store::{JobState, Store, TokenKind};
use tessera_worker::client::{Worker, WorkerConfig, WorkerError};

use crate::guest;

pub fn scenes() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/scenes")
}

pub fn runtime() -> tokio::runtime::Runtime {
    crate::init_logs();
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// A farm config for tests: any free port, quick to notice a dead peer.
pub fn test_config(data: &Path) -> FarmConfig {
    let mut c = FarmConfig::new(data.to_path_buf(), "127.0.0.1:0".parse().unwrap());
    c.heartbeat = Duration::from_millis(500);
    c.idle_timeout = Duration::from_secs(2);
    // Every test worker runs on this machine: same address, other identities.
    c.verify.independent_addresses = false;
    c.verify.replica_wait = Duration::from_secs(3);
    c
}

pub fn worker_config(farm: &Farm, token: &str, data: &Path) -> WorkerConfig {
    let mut c = WorkerConfig::new(farm.quic_addr().to_string(), token, farm.fingerprint(), data.to_path_buf());
    c.slots = 1;
    c.idle_timeout = Duration::from_secs(2);
    c.max_backoff = Duration::from_millis(500);
    c
}

/// The settings `tessera render` sends the path tracer by default.
const RENDER_EXTRA: &str = r#"{"background_strength":1.0,"max_bounces":8}"#;

/// What the farm tests render: 3 frames of the turntable, small and quick.
pub fn small_request() -> JobRequest {
    request_with_spp(4)
}

/// The same at `spp` samples (more makes tiles long enough to kill a
/// process in the middle of one).
pub fn request_with_spp(spp: u32) -> JobRequest {
    let mut r = JobRequest::new("turntable.glb");
    r.width = Some(48);
    r.height = Some(27);
    r.frames = Some(vec![1, 12, 24]);
    r.spp = spp;
    r.tile_size = Some(16);
    r.extra = RENDER_EXTRA.into();
    r
}

/// `tessera render` of the same job, for comparison.
pub fn reference_render(out: &Path) {
    reference_render_spp(out, 4)
}

/// `tessera render` at `spp` samples, with the job module built into the binary.
/// `tessera render` of the job at `spp`, made once per test process and
/// shared by the tests that compare with it (the chaos tests' long one).
pub fn shared_reference(spp: u32) -> PathBuf {
    static MADE: std::sync::Mutex<BTreeMap<u32, PathBuf>> = std::sync::Mutex::new(BTreeMap::new());
    let mut made = MADE.lock().unwrap_or_else(|p| p.into_inner());
    made.entry(spp)
        .or_insert_with(|| {
            let dir = tempfile::Builder::new().prefix("tessera-reference-").tempdir().unwrap().keep();
            reference_render_spp(&dir, spp);
            dir
        })
        .clone()
}

pub fn reference_render_spp(out: &Path, spp: u32) {
    let status = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .arg("render")
        .arg(scenes().join("turntable.glb"))
        .args(["--frames", "1,12,24", "--spp", &spp.to_string(), "--width", "48", "--height", "27"])
        .args(["--format", "png,exr", "--tile-size", "32", "--threads", "2"])
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
}

/// Every frame file the farm wrote equals `tessera render`'s, byte for byte.
pub fn assert_frames_equal(farm_dir: &Path, reference: &Path) {
    let mut compared = 0;
    for frame in [1, 12, 24] {
        for ext in ["png", "exr"] {
            let name = format!("turntable-{frame:04}.{ext}");
            let a = std::fs::read(farm_dir.join(&name)).unwrap_or_else(|e| panic!("farm {name}: {e}"));
            let b = std::fs::read(reference.join(&name)).unwrap();
            assert!(a == b, "{name} differs between the farm and tessera render");
            compared += 1;
        }
    }
    assert_eq!(compared, 6);
}

#[test]
fn a_job_on_two_workers_equals_tessera_render_bit_for_bit() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("reference");
    reference_render(&reference);
    rt.block_on(async {
        let farm = Farm::start(test_config(&dir.path().join("coord"))).await.unwrap();
        let token = farm.first_token().expect("a first token on a new data dir").to_string();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut workers = Vec::new();
        for i in 0..2 {
            let w = Worker::new(worker_config(&farm, &token, &dir.path().join(format!("w{i}")))).unwrap();
            let rx = stopped.clone();
            workers.push(tokio::spawn(async move { w.run(rx).await }));
        }
        let scene = std::fs::read(scenes().join("turntable.glb")).unwrap();
        let job = farm.submit_scene(small_request(), scene, guest("pathtracer").to_vec()).await.unwrap();
        let status = tokio::time::timeout(Duration::from_secs(120), farm.wait_job(job)).await.unwrap().unwrap();
        assert_eq!(status.state, JobState::Done, "{status:?}");
        assert_eq!(status.tiles_done, status.tiles);
        let farm_status = farm.status().await.unwrap();
        // Both joined; which one rendered what is the scheduler's business
        // (a worker still compiling the module may lose its tiles to an
        // idle one near the end: speculative re-dispatch).
        assert_eq!(farm_status.workers.len(), 2);
        assert_eq!(farm_status.workers.iter().map(|w| w.tiles_done).sum::<u64>(), 18, "{farm_status:?}");
        assert_frames_equal(&farm.job_dir(job), &reference);
        let _ = stop.send(true);
        for w in workers {
            tokio::time::timeout(Duration::from_secs(30), w).await.unwrap().unwrap().unwrap();
        }
        // Leaving cleanly is seen by the coordinator at once.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(farm.status().await.unwrap().workers.is_empty());
        let store = farm.store().clone();
        let frames = store.lock().unwrap().frames(job).unwrap();
        assert_eq!(frames.len(), 3);
        farm.shutdown().await;
    });
}

#[test]
fn refusals_bad_token_revoked_token_and_wrong_pin() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let farm = Farm::start(test_config(&dir.path().join("coord"))).await.unwrap();
        let (_stop, stopped) = tokio::sync::watch::channel(false);

        let w = Worker::new(worker_config(&farm, "tw_not-a-token", &dir.path().join("w1"))).unwrap();
        let err = tokio::time::timeout(Duration::from_secs(10), w.run(stopped.clone())).await.unwrap().unwrap_err();
        assert!(matches!(&err, WorkerError::Refused(r) if r.contains("unknown or revoked")), "{err}");

        let token = farm.create_token(TokenKind::Worker, "to revoke").await.unwrap();
        let id = {
            let store = farm.store().lock().unwrap();
            store.check_token(TokenKind::Worker, &token).unwrap().unwrap()
        };
        farm.store().lock().unwrap().revoke_token(id).unwrap();
        let w = Worker::new(worker_config(&farm, &token, &dir.path().join("w2"))).unwrap();
        let err = tokio::time::timeout(Duration::from_secs(10), w.run(stopped.clone())).await.unwrap().unwrap_err();
        assert!(matches!(&err, WorkerError::Refused(_)), "{err}");

        // An API token is not a join token.
        let api = farm.create_token(TokenKind::Api, "api").await.unwrap();
        let w = Worker::new(worker_config(&farm, &api, &dir.path().join("w3"))).unwrap();
        let err = tokio::time::timeout(Duration::from_secs(10), w.run(stopped.clone())).await.unwrap().unwrap_err();
        assert!(matches!(&err, WorkerError::Refused(_)), "{err}");

        // A coordinator with another certificate than the pinned one.
        let good = farm.first_token().unwrap().to_string();
        let mut config = worker_config(&farm, &good, &dir.path().join("w4"));
        config.pin = "0".repeat(64);
        let w = Worker::new(config).unwrap();
        let err = tokio::time::timeout(Duration::from_secs(10), w.run(stopped.clone())).await.unwrap().unwrap_err();
        assert!(matches!(&err, WorkerError::PinMismatch(_)), "{err}");
        assert!(farm.status().await.unwrap().workers.is_empty());
        farm.shutdown().await;
    });
}

#[test]
fn a_restarted_coordinator_keeps_its_fingerprint_and_its_jobs() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("coord");
    rt.block_on(async {
        let farm = Farm::start(test_config(&data)).await.unwrap();
        let fingerprint = farm.fingerprint().to_string();
        let scene = std::fs::read(scenes().join("turntable.glb")).unwrap();
        // No workers: the job waits.
        let job = farm.submit_scene(small_request(), scene, guest("pathtracer").to_vec()).await.unwrap();
        farm.shutdown().await;

        let farm = Farm::start(test_config(&data)).await.unwrap();
        assert_eq!(farm.fingerprint(), fingerprint);
        assert!(farm.first_token().is_none(), "the first token is made once");
        let status = farm.status().await.unwrap();
        assert_eq!(status.jobs.len(), 1);
        assert_eq!(status.jobs[0].id, job);
        assert_eq!(status.jobs[0].state, JobState::Running);
        farm.shutdown().await;
    });
    let store = Store::open(&data).unwrap();
    assert_eq!(store.unfinished_jobs().unwrap().len(), 1);
}

#[test]
fn a_guest_that_panics_fails_its_job_with_the_reason_and_the_farm_goes_on() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let farm = Farm::start(test_config(&dir.path().join("coord"))).await.unwrap();
        let token = farm.first_token().unwrap().to_string();
        let (_stop, stopped) = tokio::sync::watch::channel(false);
        for i in 0..2 {
            let w = Worker::new(worker_config(&farm, &token, &dir.path().join(format!("w{i}")))).unwrap();
            let rx = stopped.clone();
            tokio::spawn(async move { w.run(rx).await });
        }
        let hostile = guest("hostile").to_vec();
        let request = |mode: &str| {
            let mut r = JobRequest::new(format!("{mode}.glb"));
            r.width = Some(32);
            r.height = Some(16);
            r.frames = Some(vec![1]);
            r.spp = 1;
            r.tile_size = Some(16);
            r.extra = format!("\"{mode}\"");
            r
        };
        let bad = farm.submit_scene(request("panic"), b"any scene".to_vec(), hostile.clone()).await.unwrap();
        let status = tokio::time::timeout(Duration::from_secs(60), farm.wait_job(bad)).await.unwrap().unwrap();
        assert_eq!(status.state, JobState::Failed, "{status:?}");
        // The core knows at once; the store writer records it a moment later.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let record = loop {
            let record = farm.store().lock().unwrap().job(bad).unwrap().unwrap();
            if record.state == JobState::Failed || std::time::Instant::now() > deadline {
                break record;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(record.state, JobState::Failed);
        let error = record.error.unwrap_or_default();
        assert!(error.contains("failed on every attempt") && error.contains("panic"), "{error}");
        // Same workers, same module, a well-behaved mode: done.
        let good = farm.submit_scene(request("grey"), b"any scene".to_vec(), hostile).await.unwrap();
        let status = tokio::time::timeout(Duration::from_secs(60), farm.wait_job(good)).await.unwrap().unwrap();
        assert_eq!(status.state, JobState::Done, "{status:?}");
        assert_eq!(farm.status().await.unwrap().workers.len(), 2);
        farm.shutdown().await;
    });
}

#[test]
fn honest_workers_are_never_rejected_and_earn_trust_over_many_jobs() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let farm = Farm::start(test_config(&dir.path().join("coord"))).await.unwrap();
        let token = farm.first_token().unwrap().to_string();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        for i in 0..2 {
            let w = Worker::new(worker_config(&farm, &token, &dir.path().join(format!("w{i}")))).unwrap();
            let rx = stopped.clone();
            tokio::spawn(async move { w.run(rx).await });
        }
        let scene = std::fs::read(scenes().join("turntable.glb")).unwrap();
        for seed in 0..4 {
            let mut r = request_with_spp(2);
            r.seed = seed;
            let job = farm.submit_scene(r, scene.clone(), guest("pathtracer").to_vec()).await.unwrap();
            let status = tokio::time::timeout(Duration::from_secs(120), farm.wait_job(job)).await.unwrap().unwrap();
            assert_eq!(status.state, JobState::Done, "{status:?}");
        }
        let s = farm.status().await.unwrap();
        assert_eq!(s.counters.tiles_failed, 0, "{s:?}");
        let store = farm.store().lock().unwrap();
        let workers = store.workers().unwrap();
        assert_eq!(workers.len(), 2);
        for w in &workers {
            let standing = store.standing(&w.identity).unwrap().unwrap();
            assert_eq!(standing.failed_checks, 0, "{standing:?}");
            assert!(standing.verified_tiles > 0 && standing.credit > 0.0, "{standing:?}");
            assert!(standing.reputation > 0.5, "{standing:?}");
        }
        // 4 jobs of 18 tiles: replication makes both workers confirm most
        // of each other's tiles, so together they verified at least 72.
        let verified: u64 = workers.iter().map(|w| store.standing(&w.identity).unwrap().unwrap().verified_tiles).sum();
        assert!(verified >= 72, "{verified}");
        assert!(store.verify_ledger().unwrap().is_ok());
        drop(store);
        let _ = stop.send(true);
        farm.shutdown().await;
    });
}
