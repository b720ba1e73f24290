//! Faults over whole jobs (RELIABILITY.md, "Faults" and "Stragglers"):
//! processes killed at random moments many times, a worker cut off the
//! network without its connection being closed, full disks on both sides,
//! and a worker 20× slower than the others.
//!
//! Every test renders the turntable and compares the farm's frames with
//! `tessera render`'s, byte for byte.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tessera_coordinator::farm::{Farm, JobRequest};
use tessera_protocol::wire::{Capabilities, TileReply, TileTask, WorkerMsg, MAX_CONTROL_MESSAGE};
use tessera_store::{JobState, Store, DB_FILE};
use tessera_worker::client::Worker;
use tessera_worker::net::{read_msg, tls, write_msg};

use crate::farm::{
    assert_frames_equal, reference_render_spp, request_with_spp, runtime, scenes, shared_reference, test_config,
    worker_config,
};
use crate::farm_kill::{free_port, spawn_worker, wait_for, Proc};
use crate::guest;

/// The seed of the random schedules here: `TESSERA_SEED` replays one.
fn seed() -> u64 {
    let seed = std::env::var("TESSERA_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x7e55_e7a9);
    println!("seed {seed} (TESSERA_SEED={seed} replays this schedule)");
    seed
}

// Kill schedules draw from the simulation's splitmix64.
use tessera_test_support::Rng;

/// Checks what a finished job left in the store, read after the
/// coordinator is gone: every tile stored once, the ledger's chain intact,
/// at most two credits per tile (the stored result and one confirming
/// replica) and at most one per (tile, worker), and an intact database.
/// Returns (tiles, ledger entries).
fn assert_store_sound(data: &Path, job: u64) -> (usize, u64) {
    let store = Store::open(data).unwrap();
    let record = store.job(job).unwrap().unwrap();
    assert_eq!(record.state, JobState::Done, "{record:?}");
    let done = store.done_tiles(job).unwrap();
    assert_eq!(done.len(), record.tiles as usize, "tiles stored");
    let mut distinct = done.clone();
    distinct.dedup();
    assert_eq!(distinct.len(), done.len(), "a tile stored twice");
    let entries = store.verify_ledger().unwrap().unwrap_or_else(|seq| panic!("ledger chain broken at {seq}"));
    let mut per_tile: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for e in store.ledger(None, 0, 1_000_000).unwrap().into_iter().filter(|e| e.job == job) {
        per_tile.entry(e.tile).or_default().push(e.worker);
    }
    for (tile, workers) in &per_tile {
        assert!(workers.len() <= 2, "tile {tile} credited {} times: {workers:?}", workers.len());
        let mut w = workers.clone();
        w.sort();
        w.dedup();
        assert_eq!(w.len(), workers.len(), "tile {tile} credited twice to one worker: {workers:?}");
    }
    assert_integrity(data);
    (done.len(), entries)
}

/// SQLite's own check of the database file.
fn assert_integrity(data: &Path) {
    let conn = rusqlite::Connection::open(data.join(DB_FILE)).unwrap();
    let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(check, "ok", "the database is corrupt");
}

// ---- 1. chaos over a long job ----

/// Samples per pixel and tile size of the chaos job: 72 tiles of 8×8 px.
/// The job must outlast the 15 kills (about 22 s of chaos): at 2,560 spp a
/// quiet 2-core machine finished it first, so it is three times that.
pub const CHAOS_SPP: u32 = 7680;

fn chaos_request() -> JobRequest {
    let mut r = request_with_spp(CHAOS_SPP);
    r.tile_size = Some(8);
    r
}

/// The chaos test's coordinator: this test binary run again as a child
/// process (a `Farm` with the tests' settings: quick heartbeats, replicas
/// between workers of one machine). Does nothing unless that test set its
/// variables.
#[test]
#[ignore = "a child process of chaos_kills_workers_and_the_coordinator_many_times"]
fn chaos_coordinator_child() {
    let Ok(data) = std::env::var("TESSERA_FAULTS_DATA") else { return };
    let port: u16 = std::env::var("TESSERA_FAULTS_QUIC").unwrap().parse().unwrap();
    let rt = runtime();
    rt.block_on(async {
        let mut config = test_config(Path::new(&data));
        config.quic = SocketAddr::from(([127, 0, 0, 1], port));
        let farm = Farm::start(config).await.unwrap();
        // On a line of its own (libtest has begun one: "test … ... ").
        println!("\nfingerprint: {}", farm.fingerprint());
        if let Some(token) = farm.first_token() {
            println!("worker token: {token}");
            let scene = std::fs::read(scenes().join("turntable.glb")).unwrap();
            let job = farm.submit_scene(chaos_request(), scene, guest("pathtracer").to_vec()).await.unwrap();
            println!("job: {job}");
        }
        println!("ready: yes");
        loop {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    });
}

fn spawn_child_coordinator(data: &Path, quic: u16) -> Proc {
    // /proc/self/exe runs this very binary even if a rebuild has replaced
    // its file meanwhile (a shared target dir).
    let exe = Path::new("/proc/self/exe");
    let exe = if exe.exists() { exe.to_path_buf() } else { std::env::current_exe().unwrap() };
    let mut cmd = Command::new(exe);
    cmd.args(["faults::chaos_coordinator_child", "--exact", "--ignored", "--nocapture", "--test-threads", "1"])
        .env("TESSERA_FAULTS_DATA", data)
        .env("TESSERA_FAULTS_QUIC", quic.to_string())
        .env("RUST_LOG", "warn,quinn=error");
    Proc::spawn(cmd)
}

#[test]
fn chaos_kills_workers_and_the_coordinator_many_times() {
    let seed = seed();
    let dir = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let reference = shared_reference(CHAOS_SPP);
    println!("chaos: tessera render took {:.1} s", t.elapsed().as_secs_f64());
    let data = dir.path().join("coord");
    let quic = free_port();
    let addr = format!("127.0.0.1:{quic}");

    let mut coordinator = spawn_child_coordinator(&data, quic);
    let pin = coordinator.stdout_value("fingerprint:");
    let token = coordinator.stdout_value("worker token:");
    let job: u64 = coordinator.stdout_value("job:").parse().unwrap();
    let worker_dir = |i: usize| dir.path().join(format!("w{i}"));
    let mut workers: Vec<Proc> = (0..2).map(|i| spawn_worker(&addr, &token, &pin, &worker_dir(i))).collect();
    let store = Store::open(&data).unwrap();
    let job_done = || store.job(job).unwrap().is_some_and(|j| j.state == JobState::Done);

    // The chaos starts once work flows (both workers have compiled the
    // module and tiles are durable), so kills land on verified work.
    wait_for("tiles to be stored", Duration::from_secs(120), || store.done_tiles(job).unwrap().len() >= 3);
    let mut rng = Rng(seed);
    let started = Instant::now();
    // What the store held at each coordinator kill: it must hold the same at the end.
    let mut snapshots: Vec<BTreeMap<u32, ([u8; 32], String)>> = Vec::new();
    let (mut worker_kills, mut coordinator_kills) = (0u32, 0u32);
    const WORKER_KILLS: u32 = 12;
    const COORDINATOR_KILLS: u32 = 3;
    let mut schedule = Vec::new();
    'chaos: while worker_kills < WORKER_KILLS || coordinator_kills < COORDINATOR_KILLS {
        // A random moment: 0.5 to 1.3 s after the last restart.
        let until = Instant::now() + Duration::from_millis(rng.range(500, 1300));
        while Instant::now() < until {
            if job_done() {
                break 'chaos;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let kill_coordinator =
            coordinator_kills < COORDINATOR_KILLS && (worker_kills >= WORKER_KILLS || rng.range(0, 4) == 0);
        let at = started.elapsed().as_secs_f64();
        let down = Duration::from_millis(rng.range(0, 1000));
        let stored = store.done_tiles(job).unwrap().len();
        if kill_coordinator {
            coordinator.kill();
            coordinator_kills += 1;
            let tiles = store.done_tiles(job).unwrap();
            snapshots.push(
                tiles
                    .iter()
                    .map(|&i| {
                        let t = store.tile(job, i).unwrap().unwrap();
                        (i, (t.hash, t.worker))
                    })
                    .collect(),
            );
            std::thread::sleep(down);
            coordinator = spawn_child_coordinator(&data, quic);
            schedule.push(format!("{at:.1}s coordinator (down {} ms, {stored} tiles stored)", down.as_millis()));
        } else {
            let i = rng.range(0, 2) as usize;
            workers[i].kill();
            worker_kills += 1;
            std::thread::sleep(down);
            workers[i] = spawn_worker(&addr, &token, &pin, &worker_dir(i));
            schedule.push(format!("{at:.1}s worker {i} (down {} ms, {stored} tiles stored)", down.as_millis()));
        }
    }
    let chaos_ended = started.elapsed();
    let stored_at_end_of_chaos = store.done_tiles(job).unwrap().len();
    wait_for("the job to finish after the chaos", Duration::from_secs(240), job_done);
    let elapsed = started.elapsed();
    coordinator.kill();
    for w in &mut workers {
        w.kill();
    }
    // No tile stored before a coordinator kill was lost or replaced.
    for snapshot in &snapshots {
        for (i, (hash, worker)) in snapshot {
            let t = store.tile(job, *i).unwrap().unwrap_or_else(|| panic!("tile {i} was lost"));
            assert_eq!((&t.hash, &t.worker), (hash, worker), "tile {i} changed after a coordinator kill");
        }
    }
    drop(store);
    println!("chaos: kill schedule: {}", schedule.join(", "));
    println!(
        "chaos: {worker_kills} worker kills, {coordinator_kills} coordinator kills (each restarted) in {:.1} s; \
         {stored_at_end_of_chaos} tiles stored by then; job done after {:.1} s",
        chaos_ended.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    assert!(
        worker_kills >= WORKER_KILLS && coordinator_kills >= COORDINATOR_KILLS,
        "the job finished before the chaos did ({worker_kills} worker kills, {coordinator_kills} coordinator kills): \
         make it longer"
    );
    let (tiles, entries) = assert_store_sound(&data, job);
    assert_frames_equal(&data.join(format!("frames/job-{job}")), &reference);
    println!("chaos: {tiles} tiles stored once each, {entries} ledger entries, frames equal tessera render's");
}

// ---- 2. a worker cut off the network without its connection closing ----

const PASS: u8 = 0;
const DROP: u8 = 1;
const DELAY: u8 = 2;

/// A UDP relay between one worker and the coordinator's QUIC port that
/// forwards datagrams both ways, drops them all, or delays each.
struct Relay {
    addr: SocketAddr,
    mode: Arc<AtomicU8>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

const RELAY_DELAY: Duration = Duration::from_millis(200);

impl Relay {
    async fn start(upstream: SocketAddr) -> Relay {
        let front = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let back = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
        back.connect(upstream).await.unwrap();
        let mode = Arc::new(AtomicU8::new(PASS));
        let client: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let forward = |mode: Arc<AtomicU8>, bytes: Vec<u8>, send: Box<dyn Fn(Vec<u8>) + Send>| match mode
            .load(Ordering::SeqCst)
        {
            DROP => {}
            DELAY => {
                tokio::spawn(async move {
                    tokio::time::sleep(RELAY_DELAY).await;
                    send(bytes);
                });
            }
            _ => send(bytes),
        };
        let up = {
            let (front, back, mode, client) = (front.clone(), back.clone(), mode.clone(), client.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                loop {
                    let Ok((n, from)) = front.recv_from(&mut buf).await else { continue };
                    *client.lock().unwrap() = Some(from);
                    let back = back.clone();
                    forward(
                        mode.clone(),
                        buf[..n].to_vec(),
                        Box::new(move |b| {
                            let _ = back.try_send(&b);
                        }),
                    );
                }
            })
        };
        let down = {
            let (front, back, mode, client) = (front.clone(), back.clone(), mode.clone(), client.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                loop {
                    let Ok(n) = back.recv(&mut buf).await else { continue };
                    let Some(to) = *client.lock().unwrap() else { continue };
                    let front = front.clone();
                    forward(
                        mode.clone(),
                        buf[..n].to_vec(),
                        Box::new(move |b| {
                            let _ = front.try_send_to(&b, to);
                        }),
                    );
                }
            })
        };
        Relay { addr: front.local_addr().unwrap(), mode, tasks: vec![up, down] }
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Tiles of about half a second (16×16 px), so a cut lands while the
/// relayed worker holds some.
const NET_SPP: u32 = 384;

#[test]
fn a_worker_cut_off_the_network_is_noticed_and_its_tiles_rendered_elsewhere() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("reference");
    reference_render_spp(&reference, NET_SPP);
    rt.block_on(async {
        let data = dir.path().join("coord");
        let farm = Farm::start(test_config(&data)).await.unwrap();
        let token = farm.first_token().unwrap().to_string();
        let relay = Relay::start(farm.quic_addr()).await;
        let (_stop, stopped) = tokio::sync::watch::channel(false);
        // The cut worker goes through the relay (the pin stays the
        // coordinator's); the other connects directly.
        let mut cut_config = worker_config(&farm, &token, &dir.path().join("cut"));
        cut_config.coordinator = relay.addr.to_string();
        let cut = Worker::new(cut_config).unwrap();
        let cut_identity = cut.identity().unwrap();
        tokio::spawn({
            let rx = stopped.clone();
            async move { cut.run(rx).await }
        });
        let scene = std::fs::read(scenes().join("turntable.glb")).unwrap();
        let job =
            farm.submit_scene(request_with_spp(NET_SPP), scene.clone(), guest("pathtracer").to_vec()).await.unwrap();
        let direct = Worker::new(worker_config(&farm, &token, &dir.path().join("direct"))).unwrap();
        tokio::spawn({
            let rx = stopped.clone();
            async move { direct.run(rx).await }
        });
        // Cut it once work flows (tiles durable) and it holds leases.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let s = farm.status().await.unwrap();
            let holding = s.workers.iter().any(|w| w.identity == cut_identity && w.leases > 0);
            if holding && s.workers.len() == 2 && s.jobs[0].tiles_done >= 2 {
                break;
            }
            assert!(Instant::now() < deadline, "the relayed worker never got going: {s:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Blackhole: nothing closes the connection; only silence tells.
        let held =
            farm.status().await.unwrap().workers.iter().find(|w| w.identity == cut_identity).map_or(0, |w| w.leases);
        relay.set(DROP);
        let cut_at = Instant::now();
        let deadline = cut_at + Duration::from_secs(30);
        loop {
            let s = farm.status().await.unwrap();
            if !s.workers.iter().any(|w| w.identity == cut_identity) {
                break;
            }
            assert!(Instant::now() < deadline, "the coordinator never noticed the cut worker: {s:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let noticed = cut_at.elapsed();
        // Back at once, before either side's idle timeout closed the
        // connection: whatever the cut worker still sends arrives late.
        relay.set(PASS);
        let status = tokio::time::timeout(Duration::from_secs(180), farm.wait_job(job)).await.unwrap().unwrap();
        assert_eq!(status.state, JobState::Done, "{status:?}");
        let job_done_after_cut = cut_at.elapsed();
        assert_frames_equal(&farm.job_dir(job), &reference);
        println!(
            "net cut: noticed after {:.2} s (heartbeat 0.5 s, timeout 3 beats), job done {:.1} s after the cut; \
             the worker held up to {held} leases",
            noticed.as_secs_f64(),
            job_done_after_cut.as_secs_f64()
        );

        // The cut worker comes back through the relay; then 200 ms each way.
        let deadline = Instant::now() + Duration::from_secs(60);
        while farm.status().await.unwrap().workers.len() < 2 {
            assert!(Instant::now() < deadline, "the cut worker never came back");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        relay.set(DELAY);
        let t = Instant::now();
        let job2 = farm.submit_scene(request_with_spp(NET_SPP), scene, guest("pathtracer").to_vec()).await.unwrap();
        let status = tokio::time::timeout(Duration::from_secs(180), farm.wait_job(job2)).await.unwrap().unwrap();
        assert_eq!(status.state, JobState::Done, "{status:?}");
        let delayed_job = t.elapsed();
        assert_frames_equal(&farm.job_dir(job2), &reference);
        let delayed_credits = {
            let store = farm.store().lock().unwrap();
            store.ledger(Some(&cut_identity), 0, 100_000).unwrap().iter().filter(|e| e.job == job2).count()
        };
        assert!(delayed_credits > 0, "the delayed worker earned nothing in the second job");
        println!(
            "net delay: job with +{} ms each way on one worker done in {:.1} s; that worker credited for \
             {delayed_credits} tiles",
            RELAY_DELAY.as_millis(),
            delayed_job.as_secs_f64()
        );
        farm.shutdown().await;
        drop(relay);
        for job in [job, job2] {
            assert_store_sound(&data, job);
        }
    });
}

// ---- 3. full disks ----
//
// These need root (they mount a small tmpfs), so they are `#[ignore]`d for
// a plain `cargo test`, which then lists them as ignored rather than
// passing them unrun; `cargo xtask test` runs them as root with
// `--ignored` (xtask/src/main.rs: ROOT_TESTS) and fails where it cannot.

/// Why the full-disk tests are ignored by default.
const NEEDS_ROOT: &str = "mounts a tmpfs: needs root; `cargo xtask test` runs it as root";

/// A tmpfs mounted on a directory, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Panics where this process may not mount: a test that asked for a
    /// full disk and did not get one has not run.
    fn mount(dir: &Path, kib: u64) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs"])
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cannot mount a tmpfs on {} ({}): this test needs root ({NEEDS_ROOT})",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system under `dir` with one file; returns its path.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0xa5u8; 4096];
    while f.write_all(&chunk).and_then(|()| f.sync_all()).is_ok() {}
    path
}

/// Waits until `f` holds (polling every 20 ms) or panics after `limit`.
async fn until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
#[ignore = "mounts a tmpfs: needs root; `cargo xtask test` runs it as root"]
fn a_full_coordinator_disk_fails_the_job_clearly_and_retry_completes_it() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("reference");
    reference_render_spp(&reference, 4);
    let data = dir.path().join("coord");
    let _data_mount = Tmpfs::mount(&data, 16 * 1024);
    rt.block_on(async {
        let farm = Farm::start(test_config(&data)).await.unwrap();
        let token = farm.first_token().unwrap().to_string();
        let scene = std::fs::read(scenes().join("turntable.glb")).unwrap();
        let (_stop, stopped) = tokio::sync::watch::channel(false);
        let w = Worker::new(worker_config(&farm, &token, &dir.path().join("w"))).unwrap();
        tokio::spawn(async move { w.run(stopped).await });

        // (a) The whole data directory full: tiles cannot be stored.
        let job = farm.submit_scene(request_with_spp(4), scene.clone(), guest("pathtracer").to_vec()).await.unwrap();
        let filler = fill(&data);
        let status = tokio::time::timeout(Duration::from_secs(120), farm.wait_job(job)).await.unwrap().unwrap();
        assert_eq!(status.state, JobState::Failed, "{status:?}");
        assert_integrity(&data);
        // Space returns: the store learns why the job failed, and a retry completes it.
        std::fs::remove_file(&filler).unwrap();
        let store = farm.store().clone();
        until("the store to record the failure", Duration::from_secs(30), || {
            store.lock().unwrap().job(job).unwrap().is_some_and(|j| j.state == JobState::Failed)
        })
        .await;
        let error = store.lock().unwrap().job(job).unwrap().unwrap().error.unwrap_or_default();
        println!("disk full (data dir): job failed with {error:?}");
        assert!(error.contains("full") || error.contains("No space left"), "{error}");
        farm.retry(job).await.unwrap();
        let status = tokio::time::timeout(Duration::from_secs(120), farm.wait_job(job)).await.unwrap().unwrap();
        assert_eq!(status.state, JobState::Done, "{status:?}");
        assert_frames_equal(&farm.job_dir(job), &reference);

        // (b) Only the frames directory full: the tiles are stored, the
        // frame files cannot be written.
        let frames = farm.frames_dir().to_path_buf();
        let frames_mount = Tmpfs::mount(&frames, 512);
        let filler = fill(&frames);
        let job2 = farm.submit_scene(request_with_spp(4), scene, guest("pathtracer").to_vec()).await.unwrap();
        let status = tokio::time::timeout(Duration::from_secs(120), farm.wait_job(job2)).await.unwrap().unwrap();
        assert_eq!(status.state, JobState::Failed, "{status:?}");
        until("the store to record the failure", Duration::from_secs(30), || {
            store.lock().unwrap().job(job2).unwrap().is_some_and(|j| j.state == JobState::Failed)
        })
        .await;
        let error = store.lock().unwrap().job(job2).unwrap().unwrap().error.unwrap_or_default();
        println!("disk full (frames dir): job failed with {error:?}");
        assert!(error.contains("No space left on device"), "{error}");
        // The first frame's tiles were stored before its file could not be written.
        let stored = store.lock().unwrap().done_tiles(job2).unwrap().len();
        assert!(stored >= 6, "{stored} tiles stored");
        assert_integrity(&data);
        std::fs::remove_file(&filler).unwrap();
        farm.retry(job2).await.unwrap();
        let status = tokio::time::timeout(Duration::from_secs(120), farm.wait_job(job2)).await.unwrap().unwrap();
        assert_eq!(status.state, JobState::Done, "{status:?}");
        assert_frames_equal(&farm.job_dir(job2), &reference);
        farm.shutdown().await;
        drop(frames_mount);
    });
    for job in [1, 2] {
        assert_store_sound(&data, job);
    }
}

#[test]
#[ignore = "mounts a tmpfs: needs root; `cargo xtask test` runs it as root"]
fn a_worker_with_a_full_cache_fails_tiles_retryably_and_recovers() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("reference");
    reference_render_spp(&reference, 4);
    let full_dir = dir.path().join("full");
    let _mount = Tmpfs::mount(&full_dir, 32 * 1024);
    rt.block_on(async {
        let mut config = test_config(&dir.path().join("coord"));
        config.verify.replication = false;
        let farm = Farm::start(config).await.unwrap();
        let token = farm.first_token().unwrap().to_string();
        // The worker's whole data directory on a small disk, filled once
        // its key is written.
        let full = Worker::new(worker_config(&farm, &token, &full_dir)).unwrap();
        let filler = fill(&full_dir);
        let (stop_full, stopped) = tokio::sync::watch::channel(false);
        let full_task = tokio::spawn(async move { full.run(stopped).await });
        let scene = std::fs::read(scenes().join("turntable.glb")).unwrap();
        let job = farm.submit_scene(request_with_spp(4), scene.clone(), guest("pathtracer").to_vec()).await.unwrap();
        let store = farm.store().clone();
        let log_has = |job: u64, text: &str| {
            store.lock().unwrap().job_log(job, 0, 10_000).unwrap().iter().any(|l| l.message.contains(text))
        };
        until("the worker's error in the job's log", Duration::from_secs(60), || {
            log_has(job, "No space left on device")
        })
        .await;
        let line =
            store.lock().unwrap().job_log(job, 0, 10_000).unwrap().into_iter().find(|l| l.message.contains("No space"));
        println!("full worker cache: {}", line.unwrap().message);
        let s = farm.status().await.unwrap();
        assert_eq!(s.jobs[0].state, JobState::Running, "a worker's full disk failed the job: {s:?}");
        assert_eq!(s.jobs[0].tiles_done, 0);

        // Another worker finishes the job.
        let (stop_other, other_stopped) = tokio::sync::watch::channel(false);
        let other = Worker::new(worker_config(&farm, &token, &dir.path().join("other"))).unwrap();
        let other_task = tokio::spawn(async move { other.run(other_stopped).await });
        let status = tokio::time::timeout(Duration::from_secs(120), farm.wait_job(job)).await.unwrap().unwrap();
        assert_eq!(status.state, JobState::Done, "{status:?}");
        assert_frames_equal(&farm.job_dir(job), &reference);
        let _ = stop_other.send(true);
        tokio::time::timeout(Duration::from_secs(30), other_task).await.unwrap().unwrap().unwrap();

        // Space returns: the same worker, alone, renders the next job.
        std::fs::remove_file(&filler).unwrap();
        let job2 = farm.submit_scene(request_with_spp(4), scene, guest("pathtracer").to_vec()).await.unwrap();
        let status = tokio::time::timeout(Duration::from_secs(120), farm.wait_job(job2)).await.unwrap().unwrap();
        assert_eq!(status.state, JobState::Done, "{status:?}");
        assert_frames_equal(&farm.job_dir(job2), &reference);
        let _ = stop_full.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(30), full_task).await;
        farm.shutdown().await;
    });
}

// ---- 4. a straggler ----

/// Tiles of about a second each (16×16 px).
const STRAGGLER_SPP: u32 = 2048;
/// The straggler answers after this many times its render time.
const SLOWDOWN: u32 = 20;

/// A hand-driven worker that renders each tile honestly through the
/// sandbox, one at a time, then waits (SLOWDOWN − 1)× its render time
/// before replying, with heartbeats all along.
async fn spawn_straggler(farm: &Farm, token: &str, scene: Vec<u8>) -> (String, tokio::task::JoinHandle<usize>) {
    let caps =
        Capabilities { slots: 1, cores: 1, memory_bytes: 0, gpu: None, agent: "straggler".into(), gpu_class: None };
    let raw = crate::farm_wire::raw_hello_with(farm, token, tls::Identity::generate("straggler").unwrap(), caps)
        .await
        .unwrap_or_else(|r| panic!("not welcomed: {r:?}"));
    let identity = tls::identity_of(&raw.identity.cert_der).unwrap();
    let task = tokio::spawn(async move {
        // Own the whole worker: its endpoint must live as long as the connection.
        let raw = raw;
        let (mut control_tx, mut control_rx) = raw.control;
        let (conn, key) = (raw.conn.clone(), &raw.key);
        let beat = tokio::spawn(async move {
            loop {
                if write_msg(&mut control_tx, &WorkerMsg::Heartbeat).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        // Acks and revokes: read and ignored.
        let drain = tokio::spawn(async move {
            while read_msg::<tessera_protocol::wire::CoordinatorMsg>(&mut control_rx, MAX_CONTROL_MESSAGE).await.is_ok()
            {
            }
        });
        // Tiles arrive while one renders (prefetch): queue them.
        let (queue_tx, mut queue) = tokio::sync::mpsc::unbounded_channel();
        let accept = {
            let conn = conn.clone();
            tokio::spawn(async move {
                while let Ok((send, mut recv)) = conn.accept_bi().await {
                    if let Ok(task) = read_msg::<TileTask>(&mut recv, MAX_CONTROL_MESSAGE).await {
                        let _ = queue_tx.send((send, task));
                    }
                }
            })
        };
        // One render thread keeps its instance across tiles.
        let (work_tx, work_rx) = std::sync::mpsc::channel::<(TileTask, tokio::sync::oneshot::Sender<_>)>();
        std::thread::spawn(move || {
            use tessera_worker::sandbox::{FuelBudget, JobSettings, JobSpec, Sandbox, SandboxConfig, TileRequest};
            let sandbox = Sandbox::new(SandboxConfig::default()).unwrap();
            let module = sandbox.load(&guest("pathtracer")).unwrap();
            let mut instance = None;
            for (task, reply) in work_rx {
                let job = &task.job;
                let instance = instance.get_or_insert_with(|| {
                    let spec = JobSpec {
                        scene: scene.clone().into(),
                        settings: JobSettings {
                            width: job.width,
                            height: job.height,
                            fps: job.fps,
                            extra: job.extra.clone(),
                        },
                        fuel: FuelBudget {
                            per_tile: job.fuel_per_tile,
                            per_pixel_sample: job.fuel_per_pixel_sample,
                            ..FuelBudget::default()
                        },
                        label: "straggler".into(),
                    };
                    module.instantiate(&spec).unwrap()
                });
                let request =
                    TileRequest::new(task.frame, task.rect, task.samples.start, task.samples.count, task.seed);
                let t = Instant::now();
                let out = instance.render_tile(&request).unwrap();
                let _ = reply.send((out.accumulators, out.fuel_used, t.elapsed()));
            }
        });
        let mut answered = 0;
        while let Some((mut send, task)) = queue.recv().await {
            let (tx, rx) = tokio::sync::oneshot::channel();
            work_tx.send((task.clone(), tx)).unwrap();
            let (acc, fuel, took) = rx.await.unwrap();
            tokio::time::sleep(took * (SLOWDOWN - 1)).await;
            let reply = TileReply::Done(task.seal(acc, fuel, (took * SLOWDOWN).as_millis() as u64, None, key));
            if write_msg(&mut send, &reply).await.is_ok() {
                answered += 1;
            }
        }
        beat.abort();
        drain.abort();
        accept.abort();
        answered
    });
    (identity, task)
}

#[test]
fn a_worker_20x_slower_delays_the_end_by_about_one_tile() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        // Results count once checked: second opinions would make the
        // straggler's tiles wait on the others, which is not this test's subject.
        let mut config = test_config(&dir.path().join("coord"));
        config.verify.replication = false;
        let farm = Farm::start(config).await.unwrap();
        let token = farm.first_token().unwrap().to_string();
        let (_stop, stopped) = tokio::sync::watch::channel(false);
        for i in 0..2 {
            let w = Worker::new(worker_config(&farm, &token, &dir.path().join(format!("w{i}")))).unwrap();
            let rx = stopped.clone();
            tokio::spawn(async move { w.run(rx).await });
        }
        let scene = std::fs::read(scenes().join("turntable.glb")).unwrap();
        let run = |r: JobRequest| {
            let (farm, scene) = (&farm, scene.clone());
            async move {
                let t = Instant::now();
                let job = farm.submit_scene(r, scene, guest("pathtracer").to_vec()).await.unwrap();
                let status = tokio::time::timeout(Duration::from_secs(300), farm.wait_job(job)).await.unwrap().unwrap();
                assert_eq!(status.state, JobState::Done, "{status:?}");
                (job, t.elapsed())
            }
        };
        // Warm up (the workers compile the module), then the job alone.
        run(request_with_spp(1)).await;
        let (alone, alone_took) = run(request_with_spp(STRAGGLER_SPP)).await;
        let mut millis: Vec<u64> = {
            let store = farm.store().lock().unwrap();
            store.done_tiles(alone).unwrap().iter().map(|&i| store.tile(alone, i).unwrap().unwrap().millis).collect()
        };
        millis.sort_unstable();
        let median = Duration::from_millis(millis[millis.len() / 2]);

        // The same job with a straggler among the workers.
        let (straggler_identity, straggler) = spawn_straggler(&farm, &token, scene.clone()).await;
        let (slow, slow_took) = run(request_with_spp(STRAGGLER_SPP)).await;
        // The same pixels either way (the chaos and network tests compare
        // with `tessera render`; here the two farm runs are compared).
        for frame in [1, 12, 24] {
            for ext in ["png", "exr"] {
                let name = format!("turntable-{frame:04}.{ext}");
                let a = std::fs::read(farm.job_dir(alone).join(&name)).unwrap();
                assert!(a == std::fs::read(farm.job_dir(slow).join(&name)).unwrap(), "{name} differs");
            }
        }
        let from_straggler = {
            let store = farm.store().lock().unwrap();
            store
                .done_tiles(slow)
                .unwrap()
                .iter()
                .filter(|&&i| store.tile(slow, i).unwrap().unwrap().worker == straggler_identity)
                .count()
        };
        let delay = slow_took.saturating_sub(alone_took);
        // One tile's time for the speculative copy, one for the CPU the
        // straggler itself takes from the others on two cores (it renders
        // before it sleeps), one for the scheduler's detection (a lease is
        // late after 3× the median lease time, which the prefetched tile
        // already counts), and 2 s for a loaded machine. Without copies the
        // end would wait for the straggler: 20 tile times.
        let bound = median * 3 + Duration::from_secs(2);
        println!(
            "straggler: median tile {} ms; job alone {:.2} s, with a {SLOWDOWN}× straggler {:.2} s: delay {:.2} s \
             (bound {:.2} s; a straggler tile takes {:.1} s); {from_straggler} tiles from the straggler",
            median.as_millis(),
            alone_took.as_secs_f64(),
            slow_took.as_secs_f64(),
            delay.as_secs_f64(),
            bound.as_secs_f64(),
            (median * SLOWDOWN).as_secs_f64()
        );
        assert!(delay <= bound, "the straggler held the end back {delay:?} (bound {bound:?})");
        farm.shutdown().await;
        straggler.abort();
    });
}
