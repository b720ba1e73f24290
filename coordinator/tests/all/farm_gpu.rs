//! GPU tiles on the farm, on Mesa's lavapipe (real Vulkan, `llvmpipe`):
//! jobs that ask for the GPU are rendered on GPU workers, checked within a
//! tolerance of the coordinator's CPU re-render, replicated within their
//! GPU class, and a worker that lies about GPU pixels is caught by a
//! worker of its class without honest GPU workers ever being blamed.

use std::path::Path;
use std::time::Duration;

use tessera_coordinator::farm::verify::TileProof;
use tessera_coordinator::farm::{Farm, JobRequest};
use tessera_protocol::wire::{Capabilities, Engine, GpuClass, TileAck, TileReply};
use tessera_store::JobState;
use tessera_worker::client::{Worker, WorkerConfig};
use tessera_worker::gpu::{Gpu, GpuConfig, GpuSelection};
use tessera_worker::net::{tls, write_msg};

use crate::farm::{request_with_spp, runtime, scenes, test_config};
use crate::farm_wire::{ack, raw_hello_with, raw_worker_config, RawWorker};
use crate::guest;

/// lavapipe's class, as a worker with `--gpu llvmpipe` declares it.
fn lavapipe_class() -> GpuClass {
    let gpu = Gpu::open(GpuConfig { selection: GpuSelection::Named("llvmpipe".into()), ..GpuConfig::default() })
        .unwrap_or_else(|e| panic!("{e} (install mesa-vulkan-drivers: cargo xtask test does)"))
        .expect("lavapipe");
    gpu.adapter().class()
}

fn worker(farm: &Farm, token: &str, data: &Path, gpu: GpuSelection) -> Worker {
    let mut c = WorkerConfig::new(farm.quic_addr().to_string(), token, farm.fingerprint(), data.to_path_buf());
    c.slots = 1;
    c.idle_timeout = Duration::from_secs(2);
    c.max_backoff = Duration::from_millis(500);
    c.gpu = gpu;
    Worker::new(c).unwrap()
}

fn gpu_request(engine: Engine) -> JobRequest {
    let mut r = request_with_spp(4);
    r.engine = engine;
    r
}

/// The tiles of `job` with their proofs.
fn proofs(farm: &Farm, job: u64, frames: &[i32]) -> Vec<(String, TileProof)> {
    let store = farm.store().lock().unwrap();
    let mut out = Vec::new();
    for &f in frames {
        for t in store.frame_tiles(job, f).unwrap() {
            out.push((t.worker.clone(), serde_json::from_str(t.proof.as_deref().unwrap()).unwrap()));
        }
    }
    out
}

/// Per-channel differences between two PNGs of one size: (share of
/// channels off by more than `max_step` levels, largest step).
fn png_difference(a: &Path, b: &Path, max_step: u8) -> (f64, u8) {
    let a = image::open(a).unwrap().to_rgb8();
    let b = image::open(b).unwrap().to_rgb8();
    assert_eq!(a.dimensions(), b.dimensions());
    let mut off = 0usize;
    let mut worst = 0u8;
    for (x, y) in a.as_raw().iter().zip(b.as_raw()) {
        let d = x.abs_diff(*y);
        worst = worst.max(d);
        if d > max_step {
            off += 1;
        }
    }
    (off as f64 / a.as_raw().len() as f64, worst)
}

#[test]
fn an_auto_job_renders_on_gpu_and_cpu_workers_and_gpu_tiles_are_verified_within_tolerance() {
    let _heavy = crate::cpu_heavy();
    let class = lavapipe_class();
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("reference");
    crate::farm::reference_render(&reference);
    rt.block_on(async {
        let farm = Farm::start(test_config(&dir.path().join("coord"))).await.unwrap();
        let token = farm.first_token().unwrap().to_string();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        // Two GPU workers of one class (their tiles confirm each other's)
        // and one CPU worker.
        let gpus =
            ["g0", "g1"].map(|n| worker(&farm, &token, &dir.path().join(n), GpuSelection::Named("llvmpipe".into())));
        let cpu = worker(&farm, &token, &dir.path().join("c0"), GpuSelection::None);
        for w in gpus.into_iter().chain([cpu]) {
            let rx = stopped.clone();
            tokio::spawn(async move { w.run(rx).await });
        }
        let scene = std::fs::read(scenes().join("turntable.glb")).unwrap();
        let job = farm.submit_scene(gpu_request(Engine::Auto), scene, guest("pathtracer").to_vec()).await.unwrap();
        let status = tokio::time::timeout(Duration::from_secs(300), farm.wait_job(job)).await.unwrap().unwrap();
        assert_eq!(status.state, JobState::Done, "{status:?}");
        let s = farm.status().await.unwrap();
        assert_eq!(s.counters.tiles_failed, 0, "honest workers are never blamed: {s:?}");

        let tiles = proofs(&farm, job, &[1, 12, 24]);
        assert_eq!(tiles.len(), 18, "every tile stored once");
        let on_gpu: Vec<&TileProof> = tiles.iter().map(|(_, p)| p).filter(|p| p.gpu.is_some()).collect();
        assert!(!on_gpu.is_empty(), "no tile was rendered on the GPU");
        for p in &on_gpu {
            assert_eq!(p.gpu.as_ref(), Some(&class), "{p:?}");
            let check = p.spot_check.as_ref().expect("GPU tiles are spot-checked");
            let cmp = check.gpu.as_ref().expect("…within the tolerance");
            assert!(cmp.pixels > 0, "{cmp:?}");
            eprintln!(
                "GPU tile: {} pixels checked, {} outside the tolerance (allowed {}), worst {:.3}",
                cmp.pixels, cmp.outliers, cmp.allowed, cmp.worst
            );
        }
        // CPU tiles are still checked bit for bit.
        for (_, p) in tiles.iter().filter(|(_, p)| p.gpu.is_none() && p.worker != "coordinator") {
            let check = p.spot_check.as_ref().unwrap();
            assert!(check.gpu.is_none() && check.mismatch.is_none(), "{check:?}");
        }

        // GPU trust is earned apart from CPU trust.
        {
            let store = farm.store().lock().unwrap();
            let standings: Vec<_> = store
                .workers()
                .unwrap()
                .iter()
                .map(|w| (w.name.clone(), store.standing(&w.identity).unwrap().unwrap()))
                .collect();
            assert!(standings.iter().any(|(_, s)| s.gpu_trust > 0), "{standings:?}");
            assert!(standings.iter().all(|(_, s)| s.failed_checks == 0), "{standings:?}");
        }

        // The frames are the CPU render's within the tolerance: through the
        // view transform, almost every 8-bit channel is within one level.
        let out = farm.job_dir(job);
        for frame in [1, 12, 24] {
            let name = format!("turntable-{frame:04}.png");
            let (off, worst) = png_difference(&out.join(&name), &reference.join(&name), 1);
            eprintln!(
                "{name}: {:.3} % of channels more than one level from the CPU render, worst {worst}",
                off * 100.0
            );
            assert!(off < 0.02, "{name}: {:.3} % of channels differ by more than one level", off * 100.0);
        }
        // `tessera verify` re-renders pixels of GPU tiles on the CPU and
        // judges them within the tolerance, as the farm did.
        let manifest = out.join("turntable-0012.manifest.json");
        let text = std::fs::read_to_string(&manifest).unwrap();
        let has_gpu_tiles = serde_json::from_str::<serde_json::Value>(&text).unwrap()["tiles"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t.get("gpu").is_some());
        let run = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
            .arg("verify")
            .arg(&manifest)
            .args(["--recheck", "48", "--scene"])
            .arg(scenes().join("turntable.glb"))
            .arg("--module")
            .arg(tessera_guest_build::components_dir().join("pathtracer.wasm"))
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&run.stdout);
        assert!(run.status.success(), "{report}{}", String::from_utf8_lossy(&run.stderr));
        if has_gpu_tiles {
            assert!(report.contains("in GPU tiles, within the GPU tolerance"), "{report}");
        }
        let _ = stop.send(true);
        farm.shutdown().await;
    });
}

#[test]
fn a_gpu_worker_that_fakes_pixels_is_caught_by_a_worker_of_its_class_and_breaches_are_refused() {
    let _heavy = crate::cpu_heavy();
    let class = lavapipe_class();
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        // The raw worker's breaches must not end the job.
        let mut config = raw_worker_config(&dir.path().join("coord"));
        // Long enough for the honest workers to start and compile the job.
        config.verify.replica_wait = Duration::from_secs(20);
        let farm = Farm::start(config).await.unwrap();
        let token = farm.first_token().unwrap().to_string();
        let caps = Capabilities {
            slots: 1,
            cores: 1,
            memory_bytes: 0,
            gpu: Some(class.name.clone()),
            agent: "faker".into(),
            gpu_class: Some(class.clone()),
        };
        let mut raw: RawWorker = raw_hello_with(&farm, &token, tls::Identity::generate("faker").unwrap(), caps)
            .await
            .unwrap_or_else(|m| panic!("not welcomed: {m:?}"));
        let faker = raw.identity.identity().unwrap();
        let scene = std::fs::read(scenes().join("turntable.glb")).unwrap();

        // A CPU job: its tiles are leased for the CPU, so a GPU result is a breach.
        let cpu_job =
            farm.submit_scene(gpu_request(Engine::Cpu), scene.clone(), guest("pathtracer").to_vec()).await.unwrap();
        let (mut send, _recv, task) = raw.next_task().await;
        assert!(!task.gpu && task.job.engine == Engine::Cpu);
        let n = task.rect.pixel_count() as usize;
        let flat = |task: &tessera_protocol::wire::TileTask| tessera_protocol::TileAccumulators {
            rect: task.rect,
            color: vec![0.5 * task.samples.count as f32; 3 * n],
            weight: vec![task.samples.count as f32; n],
            aovs: vec![],
        };
        let sealed = task.seal(flat(&task), 1, 1, Some(class.clone()), &raw.key);
        write_msg(&mut send, &TileReply::Done(sealed)).await.unwrap();
        match ack(&mut raw.control.1, task.lease).await {
            TileAck::Rejected { reason } => assert!(reason.contains("leased for the CPU"), "{reason}"),
            other => panic!("{other:?}"),
        }
        farm.cancel(cpu_job).unwrap();

        // An auto job: its tiles are leased for the GPU.
        let job = farm.submit_scene(gpu_request(Engine::Auto), scene, guest("pathtracer").to_vec()).await.unwrap();
        let (mut send, _recv, task) = loop {
            let t = raw.next_task().await;
            if t.2.job.job == job {
                break t;
            }
        };
        assert!(task.gpu);
        // Claiming another GPU than the one declared is a breach too.
        let other = GpuClass { device: class.device ^ 1, ..class.clone() };
        let sealed = task.seal(flat(&task), 1, 1, Some(other), &raw.key);
        write_msg(&mut send, &TileReply::Done(sealed)).await.unwrap();
        match ack(&mut raw.control.1, task.lease).await {
            TileAck::Rejected { reason } => assert!(reason.contains("not the GPU this worker declared"), "{reason}"),
            other => panic!("{other:?}"),
        }

        // Faked GPU pixels with the right sample count: outside the
        // tolerance, which alone blames nobody; the tile waits for a worker
        // of the faker's class.
        let (mut send, _recv, task) = loop {
            let t = raw.next_task().await;
            if t.2.job.job == job {
                break t;
            }
        };
        let faked_tile = task.tile;
        let sealed = task.seal(flat(&task), 1, 1, Some(class.clone()), &raw.key);
        write_msg(&mut send, &TileReply::Done(sealed)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        {
            let store = farm.store().lock().unwrap();
            let standing = store.standing(&faker).unwrap().unwrap();
            assert_eq!(standing.failed_checks, 0, "a statistical check alone blamed the worker: {standing:?}");
        }
        // An honest lavapipe worker gives the second opinion; the hashes
        // differ, the coordinator's CPU render settles it.
        // Two, so that they also confirm each other's tiles.
        let (stop, stopped) = tokio::sync::watch::channel(false);
        for name in ["honest-0", "honest-1"] {
            let honest = worker(&farm, &token, &dir.path().join(name), GpuSelection::Named("llvmpipe".into()));
            let rx = stopped.clone();
            tokio::spawn(async move { honest.run(rx).await });
        }
        match ack(&mut raw.control.1, task.lease).await {
            TileAck::Rejected { reason } => assert!(reason.contains("coordinator"), "{reason}"),
            other => panic!("faked GPU pixels were accepted: {other:?}"),
        }
        // The failed check is written by the store writer, just after the ack.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let standing = farm.store().lock().unwrap().standing(&faker).unwrap().unwrap();
            if standing.failed_checks == 1 {
                assert_eq!(standing.gpu_trust, 0, "{standing:?}");
                break;
            }
            assert!(std::time::Instant::now() < deadline, "no failed check recorded: {standing:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The raw worker stops taking tiles: the honest one finishes the job,
        // and no tile of the faker's is in it.
        raw.conn.close(0u32.into(), b"done");
        let status = tokio::time::timeout(Duration::from_secs(300), farm.wait_job(job)).await.unwrap().unwrap();
        assert_eq!(status.state, JobState::Done, "{status:?}");
        let tiles = proofs(&farm, job, &[1, 12, 24]);
        assert!(tiles.iter().all(|(w, _)| *w != faker), "a faked tile was kept");
        let (_, p) = tiles
            .iter()
            .find(|(_, p)| farm_tile_index(&farm, job, p) == Some(faked_tile))
            .expect("the faked tile was rendered again");
        assert!(p.gpu.is_some() || p.worker == "coordinator", "{p:?}");
        let _ = stop.send(true);
        farm.shutdown().await;
    });
}

/// The index of the stored tile whose proof is `p`.
fn farm_tile_index(farm: &Farm, job: u64, p: &TileProof) -> Option<u32> {
    let store = farm.store().lock().unwrap();
    for f in [1, 12, 24] {
        for t in store.frame_tiles(job, f).unwrap() {
            if t.proof.as_deref().and_then(|s| serde_json::from_str::<TileProof>(s).ok()).as_ref() == Some(p) {
                return Some(t.index);
            }
        }
    }
    None
}
