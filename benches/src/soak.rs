//! `cargo xtask soak`: the coordinator under a bounded, steady load, with
//! its memory and API latency checked against stated bounds.
//!
//! - **The coordinator** runs in this process (QUIC endpoint, scheduler,
//!   SQLite store and writer, frame assembly, the HTTP API), so the memory
//!   measured (VmRSS, sampled every second) is the coordinator's alone.
//! - **Workers**: `--workers` simulated workers (default 1,000) in a child
//!   process (`--sim-workers`, as the farm benchmark uses): real QUIC
//!   connections with hello, heartbeats and signed results of the right
//!   shape, each answering a tile after `--tile-ms`, each with its own key,
//!   at 16 loopback addresses. Three jobs are kept in flight, a new one
//!   submitted as each finishes, so frames are assembled and written
//!   throughout: each is 5 frames of `--job-edge`² 1-px tiles (default 40:
//!   8,000 tiles a job; the suite's short soak uses smaller jobs so that one
//!   finishes in its seconds with verification on).
//! - **Verification** (`--verification off|on|both`, default both, one
//!   soak of `--minutes` after the other on a fresh farm): *off* turns spot
//!   checks and replication off, and the workers send flat-colour tiles of
//!   a placeholder job; *on* is the farm's default (spot checks of every
//!   tile, adaptive replication of new workers' tiles, as `tessera
//!   coordinator` runs), and the workers path-trace each 1-px tile of a
//!   real job (`turntable.glb`, 1 spp) so that the checks pass.
//! - **API clients**: `--clients` (default 200) in another child process
//!   (`--api-clients`), each a thread that polls the farm's status, job
//!   lists and jobs, the worker list and frame downloads with a short
//!   pause, and a tenth of them follow the event stream. Every request's
//!   latency is kept; any error status, other than a 404 for a frame not
//!   yet written, counts as an error.
//!
//! Each stops by itself after `--minutes` (default 10); the soak fails (exit 1)
//! when the coordinator's peak memory is over `--max-rss-mib` (1024), the
//! API's p99 latency over `--max-p99-ms` (500), or any request failed.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use tessera_coordinator::api::AppState;
use tessera_coordinator::farm::Farm;
use tessera_store::{JobState, TokenKind};

use crate::farm::Verification;

/// The soak's knobs, from its command line.
#[derive(Clone, Debug)]
pub struct SoakArgs {
    pub minutes: f64,
    pub workers: u32,
    pub clients: u32,
    pub tile_ms: u64,
    pub max_rss_mib: u64,
    pub max_p99_ms: u64,
    /// The side of each job's frame in 1-px tiles (5 frames a job).
    pub job_edge: u32,
    /// The farm's verification in each soak, run one after the other.
    pub verification: Vec<Verification>,
    /// `--store postgres://…`: the farm's records in PostgreSQL, an empty
    /// database (so one soak: one `--verification` mode); SQLite in a
    /// temporary directory by default.
    pub store: Option<String>,
}

impl SoakArgs {
    pub fn parse(args: &[String]) -> Result<SoakArgs> {
        let mut s = SoakArgs {
            minutes: 10.0,
            workers: 1000,
            clients: 200,
            tile_ms: 500,
            max_rss_mib: 1024,
            max_p99_ms: 500,
            job_edge: 40,
            verification: vec![Verification::Off, Verification::Default],
            store: None,
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--minutes" => s.minutes = value()?.parse()?,
                "--workers" => s.workers = value()?.parse()?,
                "--clients" => s.clients = value()?.parse()?,
                "--tile-ms" => s.tile_ms = value()?.parse()?,
                "--max-rss-mib" => s.max_rss_mib = value()?.parse()?,
                "--max-p99-ms" => s.max_p99_ms = value()?.parse()?,
                "--job-edge" => s.job_edge = value()?.parse()?,
                "--store" => s.store = Some(value()?.clone()),
                "--verification" => {
                    s.verification = match value()?.as_str() {
                        "off" => vec![Verification::Off],
                        "on" => vec![Verification::Default],
                        "both" => vec![Verification::Off, Verification::Default],
                        other => bail!("--verification {other:?}: off, on or both"),
                    }
                }
                other => bail!(
                    "unknown flag {other:?} (--minutes M --workers N --clients N --tile-ms MS --max-rss-mib MIB \
                     --max-p99-ms MS --job-edge N --verification off|on|both --store postgres://…)"
                ),
            }
        }
        if !(s.minutes > 0.0 && s.minutes <= 24.0 * 60.0) || s.workers == 0 || s.clients == 0 {
            bail!("--minutes must be in (0, 1440], --workers and --clients positive");
        }
        if s.store.is_some() && s.verification.len() > 1 {
            bail!("--store runs one soak (it needs an empty database): give --verification off or on");
        }
        if !(1..=1000).contains(&s.job_edge) {
            bail!("--job-edge must be in 1..=1000 (tiles on a frame's side)");
        }
        Ok(s)
    }
}

/// What a soak found.
#[derive(Debug)]
pub struct SoakReport {
    pub seconds: f64,
    pub workers_connected: usize,
    pub jobs_done: u64,
    pub tiles_done: u64,
    pub tiles_failed: u64,
    pub rss_start_mib: f64,
    pub rss_peak_mib: f64,
    pub rss_end_mib: f64,
    pub clients: ClientReport,
    /// The store's group commits of verified tiles, p50 and p99 of the
    /// latest 8,192.
    pub commit_p50_ms: f64,
    pub commit_p99_ms: f64,
}

/// The API clients' tally (printed by the `--api-clients` child as one line).
#[derive(Clone, Debug, Default)]
pub struct ClientReport {
    pub requests: u64,
    pub errors: u64,
    pub events: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// The first few errors, for the report.
    pub first_errors: Vec<String>,
    /// Latency by route, in [`ROUTES`] order: (requests, p50 ms, p99 ms).
    pub routes: Vec<(u64, f64, f64)>,
}

/// The clients' routes by kind, as the report names them: which reads a
/// slow API is slow on.
const ROUTES: [&str; 5] = ["status", "job list", "job", "workers", "frame or health"];

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
}

/// Kills a child process when dropped, so a failed soak leaves none behind.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the soak once per verification mode; prints progress on stderr.
pub fn run(args: &SoakArgs) -> Result<Vec<(Verification, SoakReport)>> {
    let mut reports = Vec::new();
    for &verification in &args.verification {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        reports.push((verification, rt.block_on(soak(args, verification))?));
    }
    Ok(reports)
}

async fn soak(args: &SoakArgs, verification: Verification) -> Result<SoakReport> {
    let dir = tempfile::tempdir()?;
    let mut config = crate::farm::bench_config(dir.path(), verification)?;
    if let Some(url) = &args.store {
        config.database = tessera_coordinator::farm::database::Database::parse(url, "soak", Duration::from_secs(4))
            .map_err(|e| anyhow!(e))?;
    }
    let tiles = verification.tiles();
    let farm = Arc::new(Farm::start(config).await?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let http = listener.local_addr()?;
    let app = tessera_coordinator::http::app(AppState::new(farm.clone(), None));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let api_token = farm.create_token(TokenKind::Api, "soak").await?;
    let worker_token = farm.first_token().context("first token")?.to_string();
    let duration = Duration::from_secs_f64(args.minutes * 60.0);

    // Workers first, all connected before the clock starts.
    let exe = std::env::current_exe()?;
    let mut workers = Reaped(
        Command::new(&exe)
            .args(crate::farm::sim_args(
                &farm,
                &worker_token,
                args.workers,
                1,
                Duration::from_millis(args.tile_ms),
                0,
                tiles,
            ))
            .stdout(Stdio::piped())
            .spawn()?,
    );
    let mut lines = BufReader::new(workers.0.stdout.take().context("workers' stdout")?).lines();
    match tokio::task::spawn_blocking(move || lines.next()).await? {
        Some(Ok(l)) if l == "ready" => {}
        other => bail!("simulated workers did not start: {other:?}"),
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while farm.status().await?.workers.len() < args.workers as usize {
        if Instant::now() > deadline {
            bail!("only {} of {} workers connected", farm.status().await?.workers.len(), args.workers);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "soak, {}: {} workers connected; {} API clients for {:.1} min",
        verification.label(),
        args.workers,
        args.clients,
        args.minutes
    );

    // Jobs: three in flight at all times.
    let stop = Arc::new(AtomicBool::new(false));
    let jobs_done = Arc::new(AtomicU64::new(0));
    let feeder = {
        let (farm, stop, jobs_done) = (farm.clone(), stop.clone(), jobs_done.clone());
        let job_edge = args.job_edge;
        tokio::spawn(async move {
            let mut live = Vec::new();
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                while live.len() < 3 {
                    n += 1;
                    match crate::farm::synthetic_job(&farm, &format!("soak-{n}"), 1, job_edge, 5, tiles).await {
                        Ok((id, _)) => live.push(id),
                        Err(e) => {
                            eprintln!("soak: submitting a job: {e}");
                            break;
                        }
                    }
                }
                let mut still = Vec::new();
                for id in live.drain(..) {
                    let store = farm.store().clone();
                    let state = tokio::task::spawn_blocking(move || {
                        store.lock().unwrap_or_else(|e| e.into_inner()).job(id).ok().flatten().map(|j| j.state)
                    })
                    .await;
                    match state {
                        Ok(Some(s)) if s == JobState::Done => {
                            jobs_done.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => still.push(id),
                    }
                }
                live = still;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };

    // Clients, in their own process.
    let mut clients = Reaped(
        Command::new(&exe)
            .args([
                "--api-clients".to_string(),
                args.clients.to_string(),
                format!("http://{http}"),
                api_token,
                duration.as_secs_f64().to_string(),
            ])
            .stdout(Stdio::piped())
            .spawn()?,
    );
    let started = Instant::now();
    let rss_start = rss_kib();
    let mut rss_peak = rss_start;
    let mut next_report = Duration::from_secs(30);
    while started.elapsed() < duration {
        tokio::time::sleep(Duration::from_secs(1)).await;
        rss_peak = rss_peak.max(rss_kib());
        if started.elapsed() >= next_report {
            let s = farm.status().await?;
            eprintln!(
                "soak, {}: {:>4.0} s, RSS {:.0} MiB (peak {:.0}), {} workers, {} tiles, {} jobs done",
                verification.label(),
                started.elapsed().as_secs_f64(),
                rss_kib() as f64 / 1024.0,
                rss_peak as f64 / 1024.0,
                s.workers.len(),
                s.counters.tiles_done,
                jobs_done.load(Ordering::Relaxed)
            );
            next_report += Duration::from_secs(30);
        }
    }
    let mut out = String::new();
    let mut stdout = clients.0.stdout.take().context("clients' stdout")?;
    let read = tokio::task::spawn_blocking(move || stdout.read_to_string(&mut out).map(|_| out));
    let text = tokio::time::timeout(Duration::from_secs(60), read).await.context("the clients did not stop")???;
    let client_report = parse_client_report(&text)?;
    stop.store(true, Ordering::Relaxed);
    let _ = feeder.await;
    let status = farm.status().await?;
    let report = SoakReport {
        seconds: started.elapsed().as_secs_f64(),
        workers_connected: status.workers.len(),
        jobs_done: jobs_done.load(Ordering::Relaxed),
        tiles_done: status.counters.tiles_done,
        tiles_failed: status.counters.tiles_failed,
        rss_start_mib: rss_start as f64 / 1024.0,
        rss_peak_mib: rss_peak as f64 / 1024.0,
        rss_end_mib: rss_kib() as f64 / 1024.0,
        clients: client_report,
        commit_p50_ms: farm.commit_timings().quantile(0.5).map_or(0.0, |d| d.as_secs_f64() * 1e3),
        commit_p99_ms: farm.commit_timings().quantile(0.99).map_or(0.0, |d| d.as_secs_f64() * 1e3),
    };
    drop(workers);
    drop(clients);
    if let Ok(f) = Arc::try_unwrap(farm) {
        f.shutdown().await;
    }
    Ok(report)
}

fn parse_client_report(text: &str) -> Result<ClientReport> {
    let line = text.lines().rev().find(|l| l.starts_with("clients ")).context("no report from the API clients")?;
    let v: Vec<&str> = line.split_whitespace().collect();
    let num = |i: usize| -> Result<f64> { Ok(v.get(i).context("short report")?.parse()?) };
    Ok(ClientReport {
        requests: num(1)? as u64,
        errors: num(2)? as u64,
        events: num(3)? as u64,
        p50_ms: num(4)?,
        p99_ms: num(5)?,
        max_ms: num(6)?,
        first_errors: text.lines().filter_map(|l| l.strip_prefix("error ")).map(str::to_string).take(5).collect(),
        routes: (0..ROUTES.len())
            .map(|i| {
                let line = text.lines().find(|l| l.starts_with(&format!("route {i} ")));
                let v: Vec<&str> = line.map(|l| l.split_whitespace().collect()).unwrap_or_default();
                let num = |k: usize| v.get(k).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
                (num(2) as u64, num(3), num(4))
            })
            .collect(),
    })
}

/// Prints the reports as a Markdown table (a column per verification
/// mode) and checks the bounds of each.
pub fn check(args: &SoakArgs, reports: &[(Verification, SoakReport)]) -> Result<()> {
    let row = |name: &str, cell: &dyn Fn(&SoakReport) -> String, bound: String| {
        let cells: Vec<String> = reports.iter().map(|(_, r)| cell(r)).collect();
        println!("| {name} | {} | {bound} |", cells.join(" | "));
    };
    let heads: Vec<&str> = reports.iter().map(|(v, _)| v.label()).collect();
    println!("| measurement | {} | bound |", heads.join(" | "));
    println!("| --- |{} --- |", " ---: |".repeat(reports.len()));
    row("duration", &|r| format!("{:.0} s", r.seconds), format!("{:.1} min each", args.minutes));
    row("simulated workers connected at the end", &|r| r.workers_connected.to_string(), args.workers.to_string());
    row("tiles stored", &|r| format!("{} ({:.0}/s)", r.tiles_done, r.tiles_done as f64 / r.seconds), String::new());
    row("tiles failed", &|r| r.tiles_failed.to_string(), String::new());
    let job_tiles = u64::from(args.job_edge).pow(2) * 5;
    row(&format!("jobs completed ({job_tiles} tiles, 5 frames each)"), &|r| r.jobs_done.to_string(), String::new());
    row(
        "API requests",
        &|r| {
            format!(
                "{} ({:.0}/s) from {} clients",
                r.clients.requests,
                r.clients.requests as f64 / r.seconds,
                args.clients
            )
        },
        String::new(),
    );
    row("API errors", &|r| r.clients.errors.to_string(), "0".into());
    row("event-stream messages received", &|r| r.clients.events.to_string(), String::new());
    row(
        "API latency p50 / p99 / max",
        &|r| format!("{:.1} / {:.1} / {:.0} ms", r.clients.p50_ms, r.clients.p99_ms, r.clients.max_ms),
        format!("p99 ≤ {} ms", args.max_p99_ms),
    );
    for (i, name) in ROUTES.iter().enumerate() {
        row(
            &format!("API p50 / p99: {name}"),
            &|r| r.clients.routes.get(i).map_or(String::new(), |(n, p50, p99)| format!("{p50:.1} / {p99:.1} ms ({n})")),
            String::new(),
        );
    }
    row(
        &format!("store commit p50 / p99 ({})", if args.store.is_some() { "PostgreSQL" } else { "SQLite" }),
        &|r| format!("{:.2} / {:.2} ms", r.commit_p50_ms, r.commit_p99_ms),
        String::new(),
    );
    row(
        "coordinator RSS start / peak / end",
        &|r| format!("{:.0} / {:.0} / {:.0} MiB", r.rss_start_mib, r.rss_peak_mib, r.rss_end_mib),
        format!("peak ≤ {} MiB", args.max_rss_mib),
    );
    let mut broken = Vec::new();
    for (v, r) in reports {
        let c = &r.clients;
        for e in &c.first_errors {
            println!("error ({}): {e}", v.label());
        }
        if c.errors > 0 {
            broken.push(format!("{}: {} API requests failed", v.label(), c.errors));
        }
        if c.p99_ms > args.max_p99_ms as f64 {
            broken.push(format!("{}: p99 {:.1} ms is over {} ms", v.label(), c.p99_ms, args.max_p99_ms));
        }
        if r.rss_peak_mib > args.max_rss_mib as f64 {
            broken.push(format!("{}: peak RSS {:.0} MiB is over {} MiB", v.label(), r.rss_peak_mib, args.max_rss_mib));
        }
        if r.workers_connected < args.workers as usize {
            broken.push(format!(
                "{}: only {} of {} workers stayed connected",
                v.label(),
                r.workers_connected,
                args.workers
            ));
        }
        if r.jobs_done == 0 {
            broken.push(format!("{}: no job completed", v.label()));
        }
    }
    if broken.is_empty() {
        Ok(())
    } else {
        Err(anyhow!("the soak broke its bounds: {}", broken.join("; ")))
    }
}

/// `--api-clients N URL TOKEN SECS`: N client threads for SECS seconds;
/// prints `clients REQUESTS ERRORS EVENTS P50_MS P99_MS MAX_MS` and up to
/// five `error …` lines.
pub fn api_clients_main(args: &[String]) -> Result<()> {
    let [n, url, token, secs] = args else { bail!("--api-clients N URL TOKEN SECS") };
    let n: u32 = n.parse()?;
    let until = Instant::now() + Duration::from_secs_f64(secs.parse()?);
    let latencies = Arc::new(Mutex::new(Vec::<(usize, f64)>::new()));
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let events = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for i in 0..n {
        let (url, token) = (url.clone(), token.clone());
        let (latencies, errors, events) = (latencies.clone(), errors.clone(), events.clone());
        threads.push(std::thread::spawn(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(30)))
                .http_status_as_error(false)
                .build()
                .into();
            if i % 10 == 0 {
                follow_events(&agent, &url, &token, until, &events, &errors);
                return;
            }
            let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(i);
            let mut last_job: Option<u64> = None;
            while Instant::now() < until {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let (route, path) = match rng % 20 {
                    0..=8 => (0, "/api/v1/status".to_string()),
                    9..=12 => (1, "/api/v1/jobs?limit=20".to_string()),
                    13..=15 => match last_job {
                        Some(j) => (2, format!("/api/v1/jobs/{j}")),
                        None => (1, "/api/v1/jobs?limit=1".to_string()),
                    },
                    16 => (3, "/api/v1/workers".to_string()),
                    _ => match last_job {
                        Some(j) => (4, format!("/api/v1/jobs/{j}/frames/1.png")),
                        None => (4, "/api/v1/health".to_string()),
                    },
                };
                let t = Instant::now();
                let result =
                    agent.get(format!("{url}{path}")).header("Authorization", format!("Bearer {token}")).call();
                match result {
                    Ok(mut r) => {
                        let status = r.status().as_u16();
                        let body = r.body_mut().read_to_vec().unwrap_or_default();
                        let ms = t.elapsed().as_secs_f64() * 1000.0;
                        let frame_not_yet = status == 404 && path.contains("/frames/");
                        if (200..300).contains(&status) || frame_not_yet {
                            latencies.lock().unwrap_or_else(|e| e.into_inner()).push((route, ms));
                            if path.starts_with("/api/v1/jobs?") {
                                last_job = serde_json::from_slice::<serde_json::Value>(&body)
                                    .ok()
                                    .and_then(|v| v["jobs"][0]["id"].as_u64().or(v[0]["id"].as_u64()))
                                    .or(last_job);
                            }
                        } else {
                            errors.lock().unwrap_or_else(|e| e.into_inner()).push(format!("{path}: {status}"));
                        }
                    }
                    Err(e) => errors.lock().unwrap_or_else(|e| e.into_inner()).push(format!("{path}: {e}")),
                }
                std::thread::sleep(Duration::from_millis(150 + rng % 100));
            }
        }));
    }
    for t in threads {
        let _ = t.join();
    }
    let all = latencies.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let sorted = |route: Option<usize>| {
        let mut v: Vec<f64> = all.iter().filter(|(r, _)| route.is_none_or(|x| x == *r)).map(|(_, ms)| *ms).collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let quantile = |v: &[f64], p: f64| if v.is_empty() { 0.0 } else { v[((v.len() - 1) as f64 * p).round() as usize] };
    for (i, name) in ROUTES.iter().enumerate() {
        let v = sorted(Some(i));
        println!("route {i} {} {:.3} {:.3} {name}", v.len(), quantile(&v, 0.5), quantile(&v, 0.99));
    }
    let lat = sorted(None);
    let pct = |p: f64| quantile(&lat, p);
    let errors = errors.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for e in errors.iter().take(5) {
        println!("error {e}");
    }
    println!(
        "clients {} {} {} {:.3} {:.3} {:.3}",
        lat.len() as u64 + errors.len() as u64,
        errors.len(),
        events.load(Ordering::Relaxed),
        pct(0.5),
        pct(0.99),
        lat.last().copied().unwrap_or(0.0)
    );
    Ok(())
}

/// Follows `/api/v1/events` until `until`, reconnecting when a stream
/// ends, counting `data:` lines.
fn follow_events(
    agent: &ureq::Agent,
    url: &str,
    token: &str,
    until: Instant,
    events: &AtomicU64,
    errors: &Mutex<Vec<String>>,
) {
    while Instant::now() < until {
        let r = agent
            .get(format!("{url}/api/v1/events"))
            .header("Authorization", format!("Bearer {token}"))
            .config()
            .timeout_global(Some(until.saturating_duration_since(Instant::now()) + Duration::from_secs(1)))
            .build()
            .call();
        match r {
            Ok(mut r) if r.status().is_success() => {
                let mut reader = BufReader::new(r.body_mut().as_reader());
                let mut line = String::new();
                while Instant::now() < until {
                    line.clear();
                    match reader.read_line(&mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) if line.starts_with("data:") => {
                            events.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(_) => {}
                    }
                }
            }
            Ok(r) => errors.lock().unwrap_or_else(|e| e.into_inner()).push(format!("events: {}", r.status())),
            Err(e) => {
                if Instant::now() < until {
                    errors.lock().unwrap_or_else(|e| e.into_inner()).push(format!("events: {e}"))
                }
            }
        }
    }
}
