//! The farm over real QUIC on loopback:
//!
//! - **dispatch**: simulated workers (in a child process, so the
//!   coordinator's memory is measured alone) answer every tile at once with
//!   a 1-pixel result; tiles/s through the whole coordinator (connection
//!   tasks, core loop, scheduler, SQLite group commit, acks) against a bare
//!   quinn loop of 64-byte request/response streams measured in the same
//!   run, and ack latency p50/p99 at half the measured load;
//! - **memory** per connected worker (coordinator RSS);
//! - **bytes on the wire** per 64×64 tile against its raw float bytes;
//! - **efficiency**: the demo job on N local workers against `tessera
//!   render`'s renderer in one process on the same cores.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use tessera_coordinator::farm::{Farm, FarmConfig, JobRequest, JobSpec};
use tessera_coordinator::local::{FrameJob, LocalRenderer};
use tessera_protocol::proof::SigningKey;
use tessera_protocol::wire::{
    Capabilities, CoordinatorMsg, Hello, TileAck, TileReply, TileTask, WorkerMsg, WorkerOpen, MAX_CONTROL_MESSAGE,
    PROTOCOL_VERSION,
};
use tessera_protocol::TileAccumulators;
use tessera_worker::client::{Worker, WorkerConfig};
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

/// What a simulated worker measures.
#[derive(Default)]
struct SimStats {
    tiles: AtomicU64,
    latencies: std::sync::Mutex<Vec<Duration>>,
    /// When the first task arrived.
    first: std::sync::Mutex<Option<Instant>>,
    /// Results sent and not yet acknowledged, by lease.
    sent: std::sync::Mutex<std::collections::BTreeMap<u64, Instant>>,
}

/// A simulated worker: joins, then answers each tile after `delay` with a
/// result of the right shape, and records result→ack latency.
async fn sim_worker(
    (endpoint, key): (quinn::Endpoint, Arc<SigningKey>),
    addr: SocketAddr,
    token: String,
    slots: u32,
    delay: Duration,
    stats: Arc<SimStats>,
) -> Result<quinn::Connection> {
    let conn = endpoint.connect(addr, "tessera")?.await?;
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
                for (lease, ack) in list {
                    if let (Some(t), TileAck::Accepted) = (sent.remove(&lease), ack) {
                        lat.push(now - t);
                        acks.tiles.fetch_add(1, Ordering::Relaxed);
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
            tokio::spawn(async move {
                let Ok(task) = read_last::<TileTask>(&mut recv, MAX_CONTROL_MESSAGE, Duration::from_millis(100)).await
                else {
                    return;
                };
                stats.first.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert_with(Instant::now);
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                let n = task.rect.pixel_count() as usize;
                let accumulators =
                    TileAccumulators { rect: task.rect, color: vec![0.25; 3 * n], weight: vec![1.0; n], aovs: vec![] };
                let reply = TileReply::Done(task.seal(accumulators, 1, 0, None, &key));
                stats.sent.lock().unwrap_or_else(|e| e.into_inner()).insert(task.lease, Instant::now());
                let _ = write_msg(&mut send, &reply).await;
                let _ = send.finish();
            });
        }
    });
    Ok(conn)
}

/// A farm for simulated workers, whose tiles are flat colour: spot checks
/// (which would re-render and refuse them) are off; these runs measure
/// dispatch, not verification.
fn sim_config(dir: &std::path::Path) -> Result<FarmConfig> {
    let mut config = FarmConfig::new(dir.to_path_buf(), "127.0.0.1:0".parse()?);
    config.verify.spot_checks = false;
    Ok(config)
}

/// A client endpoint for simulated workers and the key they sign tiles with.
fn sim_endpoint(pin: &str) -> Result<(quinn::Endpoint, Arc<SigningKey>)> {
    let id = tls::Identity::generate("sim")?;
    let key = Arc::new(SigningKey::from_pkcs8(&id.key_der)?);
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    ep.set_default_client_config(tls::client_config(&id, pin, transport(Duration::from_secs(30), 4096))?);
    Ok((ep, key))
}

/// A job of `tiles` tiles of `edge`×`edge` px whose module and scene are
/// placeholders (simulated workers never fetch them).
pub(crate) async fn synthetic_job(farm: &Farm, name: &str, edge: u32, tiles_x: u32, frames: u32) -> Result<(u64, u32)> {
    let module = farm.put_blob(b"placeholder module".to_vec()).await?;
    let scene = farm.put_blob(b"placeholder scene".to_vec()).await?;
    let (fuel_per_tile, fuel_per_pixel_sample) = JobSpec::default_fuel();
    let spec = JobSpec {
        name: name.into(),
        module: module.to_hex(),
        scene: scene.to_hex(),
        width: edge * tiles_x,
        height: edge * tiles_x,
        fps: 24.0,
        extra: "{}".into(),
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
    };
    let tiles = tiles_x * tiles_x * frames;
    Ok((farm.submit(spec).await?, tiles))
}

struct DispatchRun {
    tiles_per_sec: f64,
    p50: Duration,
    p99: Duration,
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
) -> Result<(std::process::Child, std::io::Lines<std::io::BufReader<std::process::ChildStdout>>)> {
    use std::io::BufRead;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args([
            "--sim-workers".to_string(),
            workers.to_string(),
            slots.to_string(),
            delay.as_micros().to_string(),
            expect.to_string(),
            farm.quic_addr().to_string(),
            token.to_string(),
            farm.fingerprint().to_string(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let mut lines = std::io::BufReader::new(child.stdout.take().context("child stdout")?).lines();
    match lines.next() {
        Some(Ok(l)) if l == "ready" => Ok((child, lines)),
        other => {
            let _ = child.kill();
            Err(anyhow!("simulated workers did not start: {other:?}"))
        }
    }
}

async fn dispatch_run(workers: u32, slots: u32, delay: Duration, tiles_x: u32, frames: u32) -> Result<DispatchRun> {
    let dir = tempfile::tempdir()?;
    let farm = Farm::start(sim_config(dir.path())?).await?;
    let token = farm.first_token().context("first token")?.to_string();
    let tiles = tiles_x * tiles_x * frames;
    let (mut child, mut lines) = spawn_sim(&farm, &token, workers, slots, delay, tiles)?;
    let (job, _) = synthetic_job(&farm, "dispatch", 1, tiles_x, frames).await?;
    let report = tokio::task::spawn_blocking(move || lines.next()).await?;
    let _ = child.kill();
    let _ = child.wait();
    let _ = farm.wait_job(job).await;
    farm.shutdown().await;
    let report = report.context("no report from the simulated workers")??;
    let v: Vec<f64> = report.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    let [secs, p50, p99] = v[..] else { return Err(anyhow!("bad report {report:?}")) };
    Ok(DispatchRun {
        tiles_per_sec: f64::from(tiles) / secs,
        p50: Duration::from_secs_f64(p50),
        p99: Duration::from_secs_f64(p99),
    })
}

/// Coordinator memory per connected (idle) worker: workers connect from a
/// child process (`--sim-workers`), so only the coordinator is in this RSS.
async fn memory_per_worker(workers: u32) -> Result<f64> {
    let dir = tempfile::tempdir()?;
    let farm = Farm::start(sim_config(dir.path())?).await?;
    let token = farm.first_token().context("first token")?.to_string();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss_bytes();
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args([
            "--sim-workers",
            &workers.to_string(),
            "8",
            "0",
            "0",
            &farm.quic_addr().to_string(),
            &token,
            farm.fingerprint(),
        ])
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

/// The child side of [`memory_per_worker`]: connect `n` idle workers and
/// keep them alive until killed.
pub fn sim_workers_main(args: &[String]) -> Result<()> {
    let [n, slots, delay_us, expect, addr, token, pin] = args else {
        return Err(anyhow!("--sim-workers N SLOTS DELAY_US EXPECT ADDR TOKEN PIN"));
    };
    let (n, slots): (u32, u32) = (n.parse()?, slots.parse()?);
    let delay = Duration::from_micros(delay_us.parse()?);
    let expect: u64 = expect.parse()?;
    let addr: SocketAddr = addr.parse()?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let endpoint = sim_endpoint(pin)?;
        let stats = Arc::new(SimStats::default());
        let mut conns = Vec::new();
        for _ in 0..n {
            conns.push(sim_worker(endpoint.clone(), addr, token.clone(), slots, delay, stats.clone()).await?);
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
        println!("{secs} {} {}", percentile(&lat, 0.5).as_secs_f64(), percentile(&lat, 0.99).as_secs_f64());
        Ok(())
    })
}

/// Bytes on the wire per 64×64 tile, both directions, measured on the
/// simulated worker's connection.
async fn wire_bytes_per_tile() -> Result<(f64, f64)> {
    let dir = tempfile::tempdir()?;
    let farm = Farm::start(sim_config(dir.path())?).await?;
    let token = farm.first_token().context("first token")?.to_string();
    let stats = Arc::new(SimStats::default());
    let conn = sim_worker(sim_endpoint(farm.fingerprint())?, farm.quic_addr(), token, 4, Duration::ZERO, stats.clone())
        .await?;
    let before = conn.stats();
    let (job, tiles) = synthetic_job(&farm, "wire", 64, 8, 4).await?;
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
    // with trusted workers (a new worker's tiles are rendered twice by
    // design, which BENCHMARKS.md reports separately).
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
        eprintln!("farm: dispatch at full load");
        let full = dispatch_run(workers, 4, Duration::ZERO, tiles_x, frames).await?;
        if std::env::var_os("TESSERA_BENCH_DISPATCH_ONLY").is_some() {
            eprintln!("{:.0} tiles/s, p50 {:?} p99 {:?}", full.tiles_per_sec, full.p50, full.p99);
            return Ok(rows);
        }
        rows.push(Row {
            name: format!("farm dispatch, {workers} simulated workers × 4 slots, {} 1-px tiles", tiles_x * tiles_x * frames),
            value: format!("{:.0} tiles/s", full.tiles_per_sec),
            note: format!(
                "{:.2}× the bare loop (goal ≥ 0.8); each tile: task out, result in, SQLite group commit, ack; ack p50 {:.2} ms, p99 {:.2} ms at full load",
                full.tiles_per_sec / bare,
                full.p50.as_secs_f64() * 1e3,
                full.p99.as_secs_f64() * 1e3
            ),
        });
        // Half load: each simulated slot waits so the offered rate is half
        // the measured maximum.
        let in_flight = f64::from(workers * 4 * 2);
        let delay = Duration::from_secs_f64(in_flight / (full.tiles_per_sec / 2.0));
        eprintln!("farm: dispatch at half load");
        let half = dispatch_run(workers, 4, delay, tiles_x / 2, frames).await?;
        rows.push(Row {
            name: "farm ack latency at half load".into(),
            value: format!("p50 {:.2} ms, p99 {:.2} ms", half.p50.as_secs_f64() * 1e3, half.p99.as_secs_f64() * 1e3),
            note: format!("result sent → durable ack received, at {:.0} tiles/s (goal p99 < 5 ms)", half.tiles_per_sec),
        });
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
            name: format!("coordinator memory per connected worker ({n} workers)"),
            value: format!("{:.1} KiB", per / 1024.0),
            note: "RSS growth of the coordinator; workers in another process".into(),
        });
        eprintln!("farm: bytes per tile");
        let (wire, raw) = wire_bytes_per_tile().await?;
        rows.push(Row {
            name: "bytes on the wire per 64×64 tile".into(),
            value: format!("{:.0} B", wire),
            note: format!("{:.3}× its {raw:.0} raw float bytes (RGB sums + weight), both directions, QUIC + TLS included", wire / raw),
        });
        eprintln!("farm: efficiency");
        let (farm_fps, local_fps, what) = efficiency(effort).await?;
        rows.push(Row {
            name: "farm efficiency, demo job on local workers".into(),
            value: format!("{:.3}×", farm_fps / local_fps),
            note: format!("{farm_fps:.2} frames/s on the farm vs {local_fps:.2} in one process (goal ≥ 0.95); {what}"),
        });
        Ok(rows)
    })
}
