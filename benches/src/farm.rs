//! The farm over real QUIC on loopback:
//!
//! - **dispatch**: simulated workers (in a child process, so the
//!   coordinator's memory is measured alone, each with its own key, at 16
//!   loopback addresses, as workers on separate machines) answer every
//!   1-pixel tile; tiles/s through the whole coordinator (connection
//!   tasks, core loop, scheduler, SQLite group commit, acks) against a bare
//!   quinn loop of 64-byte request/response streams measured in the same
//!   run, and ack latency p50/p99 at half the measured load. Three ways, in
//!   the same run: flat-colour results of a placeholder job with
//!   verification off (pure dispatch); path-traced results of a real job
//!   with verification off; the same with the farm's default verification
//!   (spot checks and adaptive replication, as `tessera coordinator` runs);
//! - **memory** per connected worker (coordinator RSS);
//! - **bytes on the wire** per 64×64 tile against its raw float bytes;
//! - **efficiency**: the demo job on N local workers against `tessera
//!   render`'s renderer in one process on the same cores.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use tessera_coordinator::farm::database::Database;
use tessera_coordinator::farm::{Farm, FarmConfig, JobRequest, JobSpec};
use tessera_coordinator::local::{FrameJob, LocalRenderer};
use tessera_protocol::proof::SigningKey;
use tessera_protocol::wire::{
    Capabilities, CoordinatorMsg, Hello, TileAck, TileReply, TileTask, WorkerMsg, WorkerOpen, MAX_CONTROL_MESSAGE,
    PROTOCOL_VERSION,
};
use tessera_protocol::TileAccumulators;
use tessera_worker::client::{sandbox_job, tile_request, Worker, WorkerConfig};
use tessera_worker::net::{read_last, read_msg, tls, transport, write_msg};
use tessera_worker::sandbox::{JobSettings, JobSpec as SandboxJob, Sandbox, SandboxConfig};

use crate::{Effort, Row};

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Round trips/s of a bare quinn loop: `connections` client connections
/// with `per_connection` tasks each, every task opening one bidirectional
/// stream per 64-byte request and reading the 64-byte reply.
async fn bare_quinn(connections: usize, per_connection: usize, duration: Duration) -> Result<f64> {
    let server_id = tls::Identity::generate("bench")?;
    let server = quinn::Endpoint::server(
        tls::server_config(&server_id, transport(Duration::from_secs(10), 4096))?,
        "127.0.0.1:0".parse()?,
    )?;
    let addr = server.local_addr()?;
    tokio::spawn(async move {
        while let Some(inc) = server.accept().await {
            tokio::spawn(async move {
                let Ok(conn) = inc.await else { return };
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    tokio::spawn(async move {
                        let mut buf = [0u8; 64];
                        if recv.read_exact(&mut buf).await.is_ok() {
                            let _ = send.write_all(&buf).await;
                            let _ = send.finish();
                        }
                    });
                }
            });
        }
    });
    let client_id = tls::Identity::generate("bench-client")?;
    let mut client = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    client.set_default_client_config(tls::client_config(
        &client_id,
        &server_id.fingerprint(),
        transport(Duration::from_secs(10), 4096),
    )?);
    let mut conns = Vec::new();
    for _ in 0..connections {
        conns.push(client.connect(addr, "bench")?.await?);
    }
    let count = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::new();
    for i in 0..connections * per_connection {
        let (conn, count) = (conns[i % connections].clone(), count.clone());
        tasks.push(tokio::spawn(async move {
            let mut buf = [7u8; 64];
            while Instant::now() < deadline {
                let Ok((mut send, mut recv)) = conn.open_bi().await else { return };
                if send.write_all(&buf).await.is_err() {
                    return;
                }
                let _ = send.finish();
                if recv.read_exact(&mut buf).await.is_err() {
                    return;
                }
                count.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let started = Instant::now();
    for t in tasks {
        let _ = t.await;
    }
    Ok(count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

/// What the simulated workers send back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SimTiles {
    /// A flat-colour result of the right shape, at once: a placeholder job
    /// (spot checks, which would re-render and refuse it, must be off).
    Flat,
    /// The tile as the path tracer guest renders it (in the workers'
    /// process, on a pool of threads), so that the coordinator's spot
    /// checks and second opinions pass, as for a real, honest worker.
    Rendered,
}

impl SimTiles {
    fn as_str(self) -> &'static str {
        match self {
            SimTiles::Flat => "flat",
            SimTiles::Rendered => "rendered",
        }
    }

    fn parse(s: &str) -> Result<SimTiles> {
        match s {
            "flat" => Ok(SimTiles::Flat),
            "rendered" => Ok(SimTiles::Rendered),
            other => Err(anyhow!("tiles {other:?}: flat or rendered")),
        }
    }
}

/// How the farm under test verifies results.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verification {
    /// Spot checks and replication off (signatures are still checked).
    Off,
    /// The farm's defaults, as `tessera coordinator` runs them: spot checks
    /// of k pixels per tile, adaptive replication of untrusted workers'
    /// tiles on an independent worker (another key and IP address).
    Default,
}

impl Verification {
    pub fn label(self) -> &'static str {
        match self {
            Verification::Off => "verification off",
            Verification::Default => "verification on",
        }
    }

    pub fn apply(self, config: &mut FarmConfig) {
        if self == Verification::Off {
            config.verify.spot_checks = false;
            config.verify.replication = false;
        }
    }

    /// The tiles simulated workers must send for this farm.
    pub fn tiles(self) -> SimTiles {
        match self {
            Verification::Off => SimTiles::Flat,
            Verification::Default => SimTiles::Rendered,
        }
    }
}

/// What simulated workers measure.
#[derive(Default)]
struct SimStats {
    /// Distinct tiles accepted (a replicated tile is acked to both workers).
    tiles: AtomicU64,
    /// Accepted and rejected acks, all leases.
    accepted: AtomicU64,
    rejected: AtomicU64,
    done: std::sync::Mutex<std::collections::HashSet<(u64, u32)>>,
    latencies: std::sync::Mutex<Vec<Duration>>,
    /// When the first task arrived.
    first: std::sync::Mutex<Option<Instant>>,
    /// Results sent and not yet acknowledged, by lease: when, and which
    /// tile (job, index).
    sent: std::sync::Mutex<std::collections::BTreeMap<u64, (Instant, (u64, u32))>>,
}

/// The path tracer for simulated workers: the guest on a few threads, one
/// instance per thread and job, as a worker's slots hold them.
pub(crate) struct SimRenderer {
    tx: std::sync::Mutex<std::sync::mpsc::Sender<RenderRequest>>,
    module_hash: tessera_protocol::ContentHash,
    scene_hash: tessera_protocol::ContentHash,
    _sandbox: Sandbox,
}

type RenderRequest = (TileTask, tokio::sync::oneshot::Sender<Result<(TileAccumulators, u64), String>>);

/// The scene real-pixel jobs render.
fn bench_scene() -> Result<Vec<u8>> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/scenes/turntable.glb");
    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
}

/// Where simulated workers keep compiled modules between processes.
fn sim_module_cache() -> std::path::PathBuf {
    std::env::temp_dir().join("tessera-bench-sim-modules")
}

impl SimRenderer {
    pub(crate) fn start(threads: usize) -> Result<Arc<SimRenderer>> {
        let wasm = tessera_guest_build::guest("pathtracer")?;
        let scene: Arc<[u8]> = bench_scene()?.into();
        let sandbox = Sandbox::new(SandboxConfig { cache_dir: Some(sim_module_cache()), ..Default::default() })?;
        let module = sandbox.load(&wasm)?;
        let (tx, rx) = std::sync::mpsc::channel::<RenderRequest>();
        let rx = Arc::new(std::sync::Mutex::new(rx));
        for slot in 0..threads.max(1) {
            let (rx, module, scene) = (rx.clone(), module.clone(), scene.clone());
            std::thread::spawn(move || {
                let mut current: Option<(u64, tessera_worker::sandbox::JobInstance)> = None;
                loop {
                    let next = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    let Ok((task, reply)) = next else { return };
                    let out = render_sim_tile(slot, &module, &scene, &mut current, &task).map_err(|e| e.to_string());
                    let _ = reply.send(out);
                }
            });
        }
        Ok(Arc::new(SimRenderer {
            tx: std::sync::Mutex::new(tx),
            module_hash: tessera_protocol::ContentHash::of(&wasm),
            scene_hash: tessera_protocol::ContentHash::of(&scene),
            _sandbox: sandbox,
        }))
    }

    async fn render(&self, task: TileTask) -> Result<(TileAccumulators, u64)> {
        if task.job.module != self.module_hash || task.job.scene != self.scene_hash {
            return Err(anyhow!("job {} is not the benchmark's path tracer job", task.job.job));
        }
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).send((task, reply)).map_err(|_| anyhow!("renderer gone"))?;
        rx.await.map_err(|_| anyhow!("renderer gone"))?.map_err(|e| anyhow!(e))
    }
}

/// Renders a task as a worker's slot does (`worker/src/client/slots.rs`).
fn render_sim_tile(
    slot: usize,
    module: &tessera_worker::sandbox::GuestModule,
    scene: &Arc<[u8]>,
    current: &mut Option<(u64, tessera_worker::sandbox::JobInstance)>,
    task: &TileTask,
) -> Result<(TileAccumulators, u64)> {
    let job = &task.job;
    if current.as_ref().is_none_or(|(id, inst)| *id != job.job || inst.is_poisoned()) {
        *current = None;
        let spec = sandbox_job(job, scene.clone(), format!("sim job {} slot {slot}", job.job));
        *current = Some((job.job, module.instantiate(&spec)?));
    }
    let Some((_, instance)) = current.as_mut() else { unreachable!("set above") };
    let mut out = instance.render_tile(&tile_request(task))?;
    out.accumulators.canonicalize_nans();
    Ok((out.accumulators, out.fuel_used))
}

/// The loopback address of simulated worker `i`: 127.1.0.1, 127.1.0.2, …
/// (all of 127/8 reaches the loopback interface), so that the farm sees
/// each at its own IP address, as workers on separate machines.
pub(crate) fn sim_ip(i: u32) -> std::net::IpAddr {
    let (a, b, c) = (1 + i / 62_500, (i / 250) % 250, i % 250 + 1);
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, a as u8, b as u8, c as u8))
}

/// A simulated worker: joins, then answers each tile after `delay` with a
/// result of the right shape (rendered by `renderer` when there is one),
/// and records result→ack latency.
async fn sim_worker(
    (endpoint, config, key): (quinn::Endpoint, quinn::ClientConfig, Arc<SigningKey>),
    addr: SocketAddr,
    token: String,
    slots: u32,
    delay: Duration,
    stats: Arc<SimStats>,
    renderer: Option<Arc<SimRenderer>>,
) -> Result<quinn::Connection> {
    let conn = endpoint.connect_with(config, addr, "tessera")?.await?;
    let (mut tx, mut rx) = conn.open_bi().await?;
    let hello = Hello {
        version: PROTOCOL_VERSION,
        token,
        name: "sim".into(),
        capabilities: Capabilities {
            slots,
            cores: slots,
            memory_bytes: 0,
            gpu: None,
            agent: "bench".into(),
            gpu_class: None,
        },
    };
    write_msg(&mut tx, &WorkerOpen::Control(hello)).await?;
    match read_msg::<CoordinatorMsg>(&mut rx, MAX_CONTROL_MESSAGE).await? {
        CoordinatorMsg::Welcome { .. } => {}
        other => return Err(anyhow!("not welcomed: {other:?}")),
    }
    // Read (and ignore) revokes: a worker that stops reading its control
    // stream is disconnected.
    let acks = stats.clone();
    tokio::spawn(async move {
        while let Ok(msg) = read_msg::<CoordinatorMsg>(&mut rx, MAX_CONTROL_MESSAGE).await {
            if let CoordinatorMsg::Acks(list) = msg {
                let now = Instant::now();
                let mut sent = acks.sent.lock().unwrap_or_else(|e| e.into_inner());
                let mut lat = acks.latencies.lock().unwrap_or_else(|e| e.into_inner());
                let mut done = acks.done.lock().unwrap_or_else(|e| e.into_inner());
                for (lease, ack) in list {
                    let Some((t, tile)) = sent.remove(&lease) else { continue };
                    match ack {
                        TileAck::Accepted => {
                            lat.push(now - t);
                            acks.accepted.fetch_add(1, Ordering::Relaxed);
                            if done.insert(tile) {
                                acks.tiles.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        TileAck::Rejected { reason } => {
                            // Leases that lost a race (a tile leased twice
                            // near a job's end) and second opinions the farm
                            // no longer needed are rejected; a failed check
                            // would be a bug in the benchmark: say so.
                            let raced = reason.contains("lost a race");
                            if acks.rejected.fetch_add(1, Ordering::Relaxed) < 3 && !raced {
                                eprintln!("sim: tile {tile:?} rejected: {reason}");
                            }
                        }
                    }
                }
            }
        }
    });
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if write_msg(&mut tx, &WorkerMsg::Heartbeat).await.is_err() {
                return;
            }
        }
    });
    let c = conn.clone();
    tokio::spawn(async move {
        while let Ok((mut send, mut recv)) = c.accept_bi().await {
            let stats = stats.clone();
            let key = key.clone();
            let renderer = renderer.clone();
            tokio::spawn(async move {
                let Ok(task) = read_last::<TileTask>(&mut recv, MAX_CONTROL_MESSAGE, Duration::from_millis(100)).await
                else {
                    return;
                };
                stats.first.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert_with(Instant::now);
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                let (accumulators, fuel) = match &renderer {
                    None => {
                        let n = task.rect.pixel_count() as usize;
                        let flat = TileAccumulators {
                            rect: task.rect,
                            color: vec![0.25; 3 * n],
                            weight: vec![1.0; n],
                            aovs: vec![],
                        };
                        (flat, 1)
                    }
                    Some(r) => match r.render(task.clone()).await {
                        Ok(out) => out,
                        Err(e) => {
                            eprintln!("sim: rendering failed: {e:#}");
                            let reply =
                                TileReply::Failed { lease: task.lease, error: format!("{e:#}"), retryable: true };
                            let _ = write_msg(&mut send, &reply).await;
                            let _ = send.finish();
                            return;
                        }
                    },
                };
                let reply = TileReply::Done(task.seal(accumulators, fuel, 0, None, &key));
                stats
                    .sent
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(task.lease, (Instant::now(), (task.job.job, task.tile)));
                let _ = write_msg(&mut send, &reply).await;
                let _ = send.finish();
            });
        }
    });
    Ok(conn)
}

/// A farm for the benchmarks, verifying as `verification` says.
pub(crate) fn bench_config(dir: &std::path::Path, verification: Verification) -> Result<FarmConfig> {
    let mut config = FarmConfig::new(dir.to_path_buf(), "127.0.0.1:0".parse()?);
    verification.apply(&mut config);
    Ok(config)
}

/// How many loopback addresses (as machines) the simulated workers of one
/// process share: worker `i` connects from address `i % SIM_ADDRESSES`
/// through that address's endpoint (one UDP socket), with a key of its
/// own. One socket per worker would cost the workers' process more than
/// the coordinator it measures on two cores; fewer addresses than workers
/// still gives the farm's replication independent workers (another key
/// and another address) for every tile.
///
/// `TESSERA_BENCH_SIM_LEGACY=1` gives every worker of a process one key
/// and one address, as the benchmark did before 2026-12-02: its dispatch
/// figures are comparable with the old ones, but no worker is then
/// independent of another, and every replicated tile waits the farm's
/// `replica_wait` (30 s) for the coordinator's render.
const SIM_ADDRESSES: u32 = 16;

/// One simulated worker's connection settings: the endpoint of its
/// loopback address, its own TLS identity, and the key it signs tiles with.
fn sim_identity(
    endpoint: &quinn::Endpoint,
    pin: &str,
) -> Result<(quinn::Endpoint, quinn::ClientConfig, Arc<SigningKey>)> {
    let id = tls::Identity::generate("sim")?;
    let key = Arc::new(SigningKey::from_pkcs8(&id.key_der)?);
    let config = tls::client_config(&id, pin, transport(Duration::from_secs(30), 4096))?;
    Ok((endpoint.clone(), config, key))
}

/// A job of `tiles_x`² tiles of `edge`×`edge` px a frame. With
/// [`SimTiles::Flat`] its module and scene are placeholders (simulated
/// workers never fetch them); with [`SimTiles::Rendered`] they are the path
/// tracer and `turntable.glb` at 1 sample per pixel, which the farm's
/// spot checks re-render.
pub(crate) async fn synthetic_job(
    farm: &Farm,
    name: &str,
    edge: u32,
    tiles_x: u32,
    frames: u32,
    tiles: SimTiles,
) -> Result<(u64, u32)> {
    let (module, scene, extra) = match tiles {
        SimTiles::Flat => (
            farm.put_blob(b"placeholder module".to_vec()).await?,
            farm.put_blob(b"placeholder scene".to_vec()).await?,
            "{}".to_string(),
        ),
        SimTiles::Rendered => (
            farm.put_blob(tessera_guest_build::guest("pathtracer")?.to_vec()).await?,
            farm.put_blob(bench_scene()?).await?,
            tessera_coordinator::farm::job::RENDER_DEFAULTS.to_string(),
        ),
    };
    let (fuel_per_tile, fuel_per_pixel_sample) = JobSpec::default_fuel();
    let spec = JobSpec {
        name: name.into(),
        module: module.to_hex(),
        scene: scene.to_hex(),
        width: edge * tiles_x,
        height: edge * tiles_x,
        fps: 24.0,
        extra,
        spp: 1,
        seed: 0,
        tile_size: edge,
        frames: (1..=frames as i32).collect(),
        priority: 0,
        view: "standard".into(),
        exposure: 0.0,
        fuel_per_tile,
        fuel_per_pixel_sample,
        formats: tessera_coordinator::farm::job::Format::all(),
        submitted_by: None,
        engine: Default::default(),
        denoise: false,
        progressive: false,
    };
    let tiles = tiles_x * tiles_x * frames;
    Ok((farm.submit(spec).await?, tiles))
}

pub(crate) struct DispatchRun {
    pub(crate) tiles_per_sec: f64,
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
    /// Accepted results per tile: 1 plus the share replicated.
    results_per_tile: f64,
}

/// Starts the simulated workers in a child process (so they do not share
/// the coordinator's runtime, as real workers would not) and returns it
/// once they are all connected.
fn spawn_sim(
    farm: &Farm,
    token: &str,
    workers: u32,
    slots: u32,
    delay: Duration,
    expect: u32,
    tiles: SimTiles,
) -> Result<(std::process::Child, std::io::Lines<std::io::BufReader<std::process::ChildStdout>>)> {
    use std::io::BufRead;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args(sim_args(farm, token, workers, slots, delay, expect, tiles))
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let mut lines = std::io::BufReader::new(child.stdout.take().context("child stdout")?).lines();
    match lines.next() {
        Some(Ok(l)) if l == "ready" => Ok((child, lines)),
        other => {
            let _ = child.kill();
            let _ = child.wait();
            Err(anyhow!("simulated workers did not start: {other:?}"))
        }
    }
}

/// The command line of the `--sim-workers` child.
pub(crate) fn sim_args(
    farm: &Farm,
    token: &str,
    workers: u32,
    slots: u32,
    delay: Duration,
    expect: u32,
    tiles: SimTiles,
) -> Vec<String> {
    vec![
        "--sim-workers".to_string(),
        workers.to_string(),
        slots.to_string(),
        delay.as_micros().to_string(),
        expect.to_string(),
        farm.quic_addr().to_string(),
        token.to_string(),
        farm.fingerprint().to_string(),
        tiles.as_str().to_string(),
    ]
}

/// Runs one job of `tiles_x`² × `frames` 1-px tiles through `workers`
/// simulated workers of `slots` slots on a fresh farm.
///
/// With verification on, a small job runs first on other simulated
/// workers, so that the coordinator has compiled the module (once per
/// coordinator, 1.5 s here, see the proof table) before the clock starts;
/// the measured job's workers are new to the farm, so their first tiles
/// are replicated until they have earned trust, as on a real farm.
async fn dispatch_run(
    verification: Verification,
    tiles: SimTiles,
    workers: u32,
    slots: u32,
    delay: Duration,
    tiles_x: u32,
    frames: u32,
) -> Result<DispatchRun> {
    dispatch_run_on(Database::Sqlite, verification, tiles, workers, slots, delay, tiles_x, frames).await
}

/// [`dispatch_run`] with the farm's records in `database`.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn dispatch_run_on(
    database: Database,
    verification: Verification,
    tiles: SimTiles,
    workers: u32,
    slots: u32,
    delay: Duration,
    tiles_x: u32,
    frames: u32,
) -> Result<DispatchRun> {
    let dir = tempfile::tempdir()?;
    let mut config = bench_config(dir.path(), verification)?;
    config.database = database;
    let farm = Farm::start(config).await?;
    let token = farm.first_token().context("first token")?.to_string();
    if verification == Verification::Default {
        let (mut child, _lines) = spawn_sim(&farm, &token, 2, 1, Duration::ZERO, 0, tiles)?;
        let (warm, _) = synthetic_job(&farm, "warm-up", 1, 2, 1, tiles).await?;
        let waited = tokio::time::timeout(Duration::from_secs(120), farm.wait_job(warm)).await;
        let _ = child.kill();
        let _ = child.wait();
        waited.context("the warm-up job did not finish in 2 minutes")??;
    }
    let n = tiles_x * tiles_x * frames;
    let (mut child, mut lines) = spawn_sim(&farm, &token, workers, slots, delay, n, tiles)?;
    let (job, _) = synthetic_job(&farm, "dispatch", 1, tiles_x, frames, tiles).await?;
    // A tile the farm refuses is sent again and again: give up rather
    // than wait for ever.
    let report =
        tokio::time::timeout(Duration::from_secs(600), tokio::task::spawn_blocking(move || lines.next())).await;
    let _ = child.kill();
    let _ = child.wait();
    let report = report.map_err(|_| anyhow!("the dispatch run did not finish in 10 minutes"))??;
    let _ = farm.wait_job(job).await;
    let failed = farm.status().await?.counters.tiles_failed;
    farm.shutdown().await;
    if failed > 0 {
        return Err(anyhow!("{failed} results were refused or failed ({}, {tiles:?} tiles)", verification.label()));
    }
    let report = report.context("no report from the simulated workers")??;
    let v: Vec<f64> = report.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    let [secs, p50, p99, accepted, _rejected] = v[..] else { return Err(anyhow!("bad report {report:?}")) };
    Ok(DispatchRun {
        tiles_per_sec: f64::from(n) / secs,
        p50: Duration::from_secs_f64(p50),
        p99: Duration::from_secs_f64(p99),
        results_per_tile: accepted / f64::from(n),
    })
}

/// Coordinator memory per connected (idle) worker: workers connect from a
/// child process (`--sim-workers`), so only the coordinator is in this RSS.
async fn memory_per_worker(workers: u32) -> Result<f64> {
    let dir = tempfile::tempdir()?;
    let farm = Farm::start(bench_config(dir.path(), Verification::Off)?).await?;
    let token = farm.first_token().context("first token")?.to_string();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss_bytes();
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args(sim_args(&farm, &token, workers, 8, Duration::ZERO, 0, SimTiles::Flat))
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let n = farm.status().await?.workers.len() as u32;
        if n >= workers {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err(anyhow!("only {n} of {workers} simulated workers connected"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_bytes();
    let _ = child.kill();
    let _ = child.wait();
    farm.shutdown().await;
    Ok(after.saturating_sub(before) as f64 / f64::from(workers))
}

/// `--memory-probe N`: [`memory_per_worker`] in a fresh process (earlier
/// benchmarks leave freed memory that new allocations would reuse),
/// printing bytes per worker.
pub fn memory_probe_main(args: &[String]) -> Result<()> {
    let n: u32 = args.first().context("--memory-probe N")?.parse()?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let per = rt.block_on(memory_per_worker(n))?;
    println!("{per}");
    Ok(())
}

/// `--sim-workers N SLOTS DELAY_US EXPECT ADDR TOKEN PIN flat|rendered`:
/// the child side of the dispatch runs, [`memory_per_worker`] and the
/// soak. Connects `n` workers (each its own key, at 16 loopback addresses),
/// prints `ready`, then, if `expect` is not 0, waits for `expect` distinct
/// tiles to be accepted and prints `SECS P50 P99 ACCEPTED REJECTED`
/// (seconds from the first task to the last ack, ack latencies in
/// seconds, acks of all leases); it keeps the workers alive until killed.
pub fn sim_workers_main(args: &[String]) -> Result<()> {
    let [n, slots, delay_us, expect, addr, token, pin, tiles] = args else {
        return Err(anyhow!("--sim-workers N SLOTS DELAY_US EXPECT ADDR TOKEN PIN flat|rendered"));
    };
    let tiles = SimTiles::parse(tiles)?;
    let (n, slots): (u32, u32) = (n.parse()?, slots.parse()?);
    let delay = Duration::from_micros(delay_us.parse()?);
    let expect: u64 = expect.parse()?;
    let addr: SocketAddr = addr.parse()?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let renderer = match tiles {
            SimTiles::Flat => None,
            SimTiles::Rendered => {
                let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
                Some(tokio::task::spawn_blocking(move || SimRenderer::start(threads)).await??)
            }
        };
        let stats = Arc::new(SimStats::default());
        let mut conns = Vec::new();
        let mut endpoints = Vec::new();
        for i in 0..n.min(SIM_ADDRESSES) {
            endpoints.push(quinn::Endpoint::client(SocketAddr::new(sim_ip(i), 0))?);
        }
        let legacy = std::env::var_os("TESSERA_BENCH_SIM_LEGACY").is_some();
        let shared = sim_identity(&endpoints[0], pin)?;
        for i in 0..n {
            let endpoint =
                if legacy { shared.clone() } else { sim_identity(&endpoints[(i % SIM_ADDRESSES) as usize], pin)? };
            conns.push(sim_worker(endpoint, addr, token.clone(), slots, delay, stats.clone(), renderer.clone()).await?);
        }
        println!("ready");
        if expect == 0 {
            std::future::pending::<()>().await;
        }
        // Timed from the first result sent to the last ack received.
        let started = loop {
            if let Some(t) = stats.first.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                break *t;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        };
        while stats.tiles.load(Ordering::Relaxed) < expect {
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        let secs = started.elapsed().as_secs_f64();
        let mut lat = stats.latencies.lock().unwrap_or_else(|e| e.into_inner()).clone();
        lat.sort();
        println!(
            "{secs} {} {} {} {}",
            percentile(&lat, 0.5).as_secs_f64(),
            percentile(&lat, 0.99).as_secs_f64(),
            stats.accepted.load(Ordering::Relaxed),
            stats.rejected.load(Ordering::Relaxed)
        );
        Ok(())
    })
}

/// Bytes on the wire per 64×64 tile, both directions, measured on the
/// simulated worker's connection.
async fn wire_bytes_per_tile() -> Result<(f64, f64)> {
    let dir = tempfile::tempdir()?;
    let farm = Farm::start(bench_config(dir.path(), Verification::Off)?).await?;
    let token = farm.first_token().context("first token")?.to_string();
    let stats = Arc::new(SimStats::default());
    let endpoint = sim_identity(&quinn::Endpoint::client(SocketAddr::new(sim_ip(0), 0))?, farm.fingerprint())?;
    let conn = sim_worker(endpoint, farm.quic_addr(), token, 4, Duration::ZERO, stats.clone(), None).await?;
    let before = conn.stats();
    let (job, tiles) = synthetic_job(&farm, "wire", 64, 8, 4, SimTiles::Flat).await?;
    farm.wait_job(job).await?;
    let after = conn.stats();
    let bytes = (after.udp_tx.bytes + after.udp_rx.bytes) - (before.udp_tx.bytes + before.udp_rx.bytes);
    conn.close(0u32.into(), b"done");
    farm.shutdown().await;
    let raw = 64.0 * 64.0 * 16.0;
    Ok((bytes as f64 / f64::from(tiles), raw))
}

/// Frames/s of the demo job on `workers` local workers (1 slot each) over
/// QUIC, against the same job rendered by `tessera render`'s renderer with
/// as many threads in one process. Both include loading the scene into
/// each instance; the workers' module cache is warmed first, as `tessera
/// render`'s is from earlier runs.
async fn efficiency(effort: Effort) -> Result<(f64, f64, String)> {
    let (frames, width, spp): (Vec<i32>, u32, u32) = match effort {
        Effort::Quick => (vec![1, 2], 96, 2),
        Effort::Full => ((1..=12).collect(), 320, 16),
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let wasm = tessera_guest_build::guest("pathtracer")?.to_vec();
    let scene =
        std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/scenes/turntable.glb"))?;
    let extra = tessera_coordinator::farm::job::RENDER_DEFAULTS;

    // In one process, as `tessera render` does.
    let local_secs = {
        let (wasm, scene) = (wasm.clone(), scene.clone());
        let frames = frames.clone();
        tokio::task::spawn_blocking(move || -> Result<f64> {
            let sandbox = Sandbox::new(SandboxConfig::default())?;
            let module = sandbox.load(&wasm)?;
            let probe = SandboxJob::new(scene.clone(), JobSettings { extra: extra.into(), ..JobSettings::new(16, 16) });
            let info = module.instantiate(&probe)?.scene_info().clone();
            let (w, h) = tessera_coordinator::farm::job::resolve_size(Some(width), None, &info);
            let spec = SandboxJob::new(scene, JobSettings { width: w, height: h, fps: 24.0, extra: extra.into() });
            let tile_size = tessera_coordinator::farm::job::tile_size_for(w, h, spp, 2000, 450_000.0, threads as u32);
            let started = Instant::now();
            let mut renderer = LocalRenderer::new(&module, &spec, threads)?;
            for &frame in &frames {
                let job = FrameJob { frame, tile_size, samples: spp, seed: 0, threads };
                renderer.render(&module, &spec, &job, |_, _, _| {})?;
            }
            Ok(started.elapsed().as_secs_f64())
        })
        .await??
    };

    let dir = tempfile::tempdir()?;
    // Spot checks on; no replication: this measures the farm's overhead
    // with trusted workers. (These real workers all connect from
    // 127.0.0.1, so under the default replication none is independent of
    // another, and every replicated tile would wait `replica_wait`, 30 s,
    // for the coordinator's render; the dispatch rows measure replication
    // with workers at separate addresses.)
    let mut config = FarmConfig::new(dir.path().to_path_buf(), "127.0.0.1:0".parse()?);
    config.verify.replication = false;
    let farm = Farm::start(config).await?;
    let token = farm.first_token().context("first token")?.to_string();
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    for i in 0..threads {
        let mut c = WorkerConfig::new(
            farm.quic_addr().to_string(),
            token.clone(),
            farm.fingerprint(),
            dir.path().join(format!("w{i}")),
        );
        c.slots = 1;
        let w = Worker::new(c)?;
        let rx = stopped.clone();
        tokio::spawn(async move { w.run(rx).await });
    }
    let request = |frames: Vec<i32>| {
        let mut r = JobRequest::new("turntable.glb");
        r.width = Some(width);
        r.frames = Some(frames);
        r.spp = spp;
        r.extra = extra.into();
        r.farm_slots = threads as u32;
        r
    };
    // Warm-up: workers compile the module and cache it.
    let warm = farm.submit_scene(request(vec![1]), scene.clone(), wasm.clone()).await?;
    farm.wait_job(warm).await?;
    let started = Instant::now();
    let job = farm.submit_scene(request(frames.clone()), scene, wasm).await?;
    farm.wait_job(job).await?;
    let farm_secs = started.elapsed().as_secs_f64();
    farm.shutdown().await;
    let n = frames.len() as f64;
    Ok((
        n / farm_secs,
        n / local_secs,
        format!("{} frames {width} px wide, {spp} spp, {threads} workers × 1 slot vs {threads} threads", frames.len()),
    ))
}

pub fn run(effort: Effort) -> Result<Vec<Row>> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let mut rows = Vec::new();
        let (secs, tiles_x, frames, workers) = match effort {
            Effort::Quick => (Duration::from_millis(500), 30, 2, 10),
            Effort::Full => (Duration::from_secs(3), 100, 10, 100),
        };
        eprintln!("farm: bare quinn loop");
        let bare_one = bare_quinn(1, 64, secs).await?;
        rows.push(Row {
            name: "bare quinn loop, 64 B request/response, a stream each, 1 connection".into(),
            value: format!("{bare_one:.0} round trips/s"),
            note: "64 concurrent requesters on one connection, same TLS config".into(),
        });
        let bare = bare_quinn(workers as usize, 8, secs).await?;
        rows.push(Row {
            name: format!("bare quinn loop, the farm's shape: {workers} connections × 8 in flight"),
            value: format!("{bare:.0} round trips/s"),
            note: "the baseline for the farm's dispatch ratio".into(),
        });
        // The same dispatch three ways (see the module's doc): what the
        // verification on/off rows compare is the last two.
        let modes = [
            (Verification::Off, SimTiles::Flat),
            (Verification::Off, SimTiles::Rendered),
            (Verification::Default, SimTiles::Rendered),
        ];
        let what = |tiles: SimTiles| match tiles {
            SimTiles::Flat => "flat tiles of a placeholder job",
            SimTiles::Rendered => "path-traced tiles (turntable.glb, 1 spp)",
        };
        let n = tiles_x * tiles_x * frames;
        let mut full = Vec::new();
        for (verification, tiles) in modes {
            eprintln!("farm: dispatch at full load, {}, {}", verification.label(), what(tiles));
            full.push(dispatch_run(verification, tiles, workers, 4, Duration::ZERO, tiles_x, frames).await?);
        }
        if std::env::var_os("TESSERA_BENCH_DISPATCH_ONLY").is_some() {
            for ((v, t), r) in modes.iter().zip(&full) {
                eprintln!(
                    "{}, {}: {:.0} tiles/s, p50 {:?} p99 {:?}, {:.3} results/tile",
                    v.label(),
                    what(*t),
                    r.tiles_per_sec,
                    r.p50,
                    r.p99,
                    r.results_per_tile
                );
            }
            return Ok(rows);
        }
        let defaults = FarmConfig::new(std::env::temp_dir(), "127.0.0.1:0".parse()?).verify;
        let k = tessera_protocol::proof::pixels_to_check(1, defaults.faked_fraction, defaults.target);
        let off_rendered = full[1].tiles_per_sec;
        for ((verification, tiles), r) in modes.iter().zip(&full) {
            let mut note = format!(
                "{:.2}× the bare loop (goal ≥ 0.8); each tile: task out, result in, SQLite group commit, ack; ack p50 {:.2} ms, p99 {:.2} ms at full load",
                r.tiles_per_sec / bare,
                r.p50.as_secs_f64() * 1e3,
                r.p99.as_secs_f64() * 1e3
            );
            if *verification == Verification::Default {
                note.push_str(&format!(
                    "; {:.2}× the same tiles with verification off: the coordinator re-renders {k} of each tile's 1 px (spot check), and {:.1} % of the tiles went to a second worker (replication of workers new to the farm, trust threshold {})",
                    r.tiles_per_sec / off_rendered,
                    (r.results_per_tile - 1.0).max(0.0) * 100.0,
                    defaults.trust_threshold
                ));
            }
            rows.push(Row {
                name: format!(
                    "farm dispatch, **{}**, {}, {workers} simulated workers × 4 slots, {n} 1-px tiles",
                    verification.label(),
                    what(*tiles)
                ),
                value: format!("{:.0} tiles/s", r.tiles_per_sec),
                note,
            });
        }
        // Half load: each simulated slot waits so the offered rate is half
        // the measured maximum of the same mode.
        let in_flight = f64::from(workers * 4 * 2);
        for ((verification, tiles), r) in modes.iter().zip(&full) {
            let delay = Duration::from_secs_f64(in_flight / (r.tiles_per_sec / 2.0));
            eprintln!("farm: dispatch at half load, {}, {}", verification.label(), what(*tiles));
            let half = dispatch_run(*verification, *tiles, workers, 4, delay, tiles_x / 2, frames).await?;
            let mut note =
                format!("result sent → durable ack received, at {:.0} tiles/s (goal p99 < 5 ms)", half.tiles_per_sec);
            if *verification == Verification::Default {
                note.push_str("; a replicated tile's first result is acked once its second opinion has agreed");
            }
            rows.push(Row {
                name: format!("farm ack latency at half load, **{}**, {}", verification.label(), what(*tiles)),
                value: format!("p50 {:.2} ms, p99 {:.2} ms", half.p50.as_secs_f64() * 1e3, half.p99.as_secs_f64() * 1e3),
                note,
            });
        }
        let n = match effort {
            Effort::Quick => 50,
            Effort::Full => 1000,
        };
        eprintln!("farm: memory per worker");
        let out = std::process::Command::new(std::env::current_exe()?).args(["--memory-probe", &n.to_string()]).output()?;
        let per: f64 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .with_context(|| format!("memory probe: {}", String::from_utf8_lossy(&out.stderr)))?;
        rows.push(Row {
            name: format!("coordinator memory per connected worker ({n} workers, idle)"),
            value: format!("{:.1} KiB", per / 1024.0),
            note: "RSS growth of the coordinator; workers in another process".into(),
        });
        eprintln!("farm: bytes per tile");
        let (wire, raw) = wire_bytes_per_tile().await?;
        rows.push(Row {
            name: "bytes on the wire per 64×64 tile, verification off".into(),
            value: format!("{:.0} B", wire),
            note: format!("{:.3}× its {raw:.0} raw float bytes (RGB sums + weight), both directions, QUIC + TLS included", wire / raw),
        });
        eprintln!("farm: efficiency");
        let (farm_fps, local_fps, what) = efficiency(effort).await?;
        rows.push(Row {
            name: "farm efficiency, demo job on local workers, **spot checks on, replication off**".into(),
            value: format!("{:.3}×", farm_fps / local_fps),
            note: format!("{farm_fps:.2} frames/s on the farm vs {local_fps:.2} in one process (goal ≥ 0.95); {what}"),
        });
        Ok(rows)
    })
}
