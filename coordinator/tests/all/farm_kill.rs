//! Processes killed with SIGKILL in the middle of a job: a worker, then the
//! coordinator. The job completes, every frame equals `tessera render`'s,
//! and tiles stored before the coordinator died are not rendered again.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tessera_coordinator::farm::Farm;
use tessera_store::{JobState, Store};

use crate::farm::{assert_frames_equal, reference_render_spp, request_with_spp, runtime, scenes, test_config};
use crate::guest;

/// Samples per pixel in these tests: tiles of 16×16 px take tens of
/// milliseconds, so a kill lands in the middle of one.
const SPP: u32 = 96;

/// The `tessera-worker` binary, built beside `tessera` (cargo builds every
/// binary of the workspace for `cargo test --workspace`; alone, it is
/// built here).
pub fn worker_binary() -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_tessera")).parent().unwrap().to_path_buf();
    let bin = dir.join("tessera-worker");
    if !bin.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--package", "tessera-worker", "--bin", "tessera-worker"])
            .status()
            .unwrap();
        assert!(status.success());
    }
    bin
}

/// A child process killed when dropped (a failing test leaves no orphans).
pub struct Proc {
    pub child: Child,
    /// Lines of its stderr, as they come.
    pub stderr: mpsc::Receiver<String>,
    pub stdout: mpsc::Receiver<String>,
}

impl Proc {
    pub fn spawn(mut cmd: Command) -> Proc {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let lines = |r: Box<dyn Read + Send>| {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                // Drain even when nobody listens: a closed pipe would kill
                // the child on its next line.
                for line in BufReader::new(r).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
            rx
        };
        let stderr = lines(Box::new(child.stderr.take().unwrap()));
        let stdout = lines(Box::new(child.stdout.take().unwrap()));
        Proc { child, stderr, stdout }
    }

    /// SIGKILL: no goodbye, no flush.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The first stdout line starting with `prefix`, without it.
    pub fn stdout_value(&self, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(line) = self.stdout.recv_timeout(Duration::from_millis(100)) {
                if let Some(v) = line.strip_prefix(prefix) {
                    return v.trim().to_string();
                }
            }
        }
        panic!("no {prefix:?} line on stdout");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn spawn_worker(addr: &str, token: &str, pin: &str, data: &Path) -> Proc {
    let mut cmd = Command::new(worker_binary());
    cmd.args(["--coordinator", addr, "--token", token, "--pin", pin, "--slots", "1", "--idle-timeout", "2"])
        .arg("--data")
        .arg(data)
        .env("RUST_LOG", "info,tessera_worker::client=debug,quinn=warn");
    Proc::spawn(cmd)
}

pub fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_worker_killed_mid_tile_loses_nothing() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("reference");
    reference_render_spp(&reference, SPP);
    rt.block_on(async {
        // One worker, whose results count at once: this test is about a
        // vanished worker, not about second opinions.
        let mut config = test_config(&dir.path().join("coord"));
        config.verify.replication = false;
        let farm = Farm::start(config).await.unwrap();
        let token = farm.first_token().unwrap().to_string();
        let addr = farm.quic_addr().to_string();
        let mut victim = spawn_worker(&addr, &token, farm.fingerprint(), &dir.path().join("w1"));
        let scene = std::fs::read(scenes().join("turntable.glb")).unwrap();
        let job = farm.submit_scene(request_with_spp(SPP), scene, guest("pathtracer").to_vec()).await.unwrap();
        // Kill it once it has finished a tile and holds more (one rendering,
        // one prefetched).
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s = farm.status().await.unwrap();
            let holding = s.workers.first().is_some_and(|w| w.leases > 0);
            if s.jobs[0].tiles_done >= 1 && holding {
                break;
            }
            assert!(Instant::now() < deadline, "the worker never started: {s:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        victim.kill();
        let rendered_before = farm.status().await.unwrap().jobs[0].tiles_done;
        assert!(rendered_before < 18, "the job finished before the kill");
        let _survivor = spawn_worker(&addr, &token, farm.fingerprint(), &dir.path().join("w2"));
        let status = tokio::time::timeout(Duration::from_secs(120), farm.wait_job(job)).await.unwrap().unwrap();
        assert_eq!(status.state, JobState::Done, "{status:?}");
        assert_frames_equal(&farm.job_dir(job), &reference);
        farm.shutdown().await;
    });
}

/// A free port on loopback for both TCP and UDP (bound, then released).
pub fn free_port() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn spawn_coordinator(data: &Path, http: u16, quic: u16) -> Proc {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
    cmd.arg("coordinator")
        .arg("--data")
        .arg(data)
        .args(["--http", &format!("127.0.0.1:{http}"), "--quic", &format!("127.0.0.1:{quic}")])
        .args(["--heartbeat", "1", "--idle-timeout", "2"])
        .env("TESSERA_LOG", "info,quinn=warn");
    Proc::spawn(cmd)
}

/// A GET over plain HTTP/1.1: the status and the body.
pub fn http_get(port: u16, path: &str, token: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let status = response.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, response.split("\r\n\r\n").nth(1).unwrap_or("").to_string())
}

/// A counter's value in a coordinator's `/metrics` (0 when absent).
pub fn metric(port: u16, name: &str) -> f64 {
    let (_, text) = http_get(port, "/metrics", "");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.split_whitespace().last()?.parse().ok())
        .unwrap_or(0.0)
}

/// Submits `scene` with `settings` (JSON) as the API's multipart form, over
/// a plain socket; returns the status code and body.
pub fn http_submit(port: u16, token: &str, settings: &str, scene: &[u8]) -> (u16, String) {
    let boundary = "tessera-test-boundary-7d1c";
    let mut body = Vec::new();
    write!(
        body,
        "--{boundary}\r\nContent-Disposition: form-data; name=\"settings\"\r\n\r\n{settings}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"scene\"; filename=\"turntable.glb\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
    .unwrap();
    body.extend_from_slice(scene);
    write!(body, "\r\n--{boundary}--\r\n").unwrap();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "POST /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: multipart/form-data; boundary={boundary}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(&body).unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let code = response.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (code, body)
}

/// The tiles the worker rendered after it reconnected, and every tile it
/// rendered more than once over its whole life.
fn tiles_rendered_after_reconnect(worker_log: &[String]) -> (BTreeSet<u32>, Vec<u32>) {
    let joins: Vec<usize> =
        worker_log.iter().enumerate().filter(|(_, l)| l.contains("joined the farm")).map(|(i, _)| i).collect();
    assert!(joins.len() >= 2, "the worker did not reconnect:\n{}", worker_log.join("\n"));
    let rendered = |lines: &[String]| -> Vec<u32> {
        lines
            .iter()
            .filter(|l| l.contains("tile rendered"))
            .filter_map(|l| l.split("tile=").nth(1)?.split_whitespace().next()?.parse().ok())
            .collect()
    };
    let mut all = rendered(worker_log);
    all.sort_unstable();
    let twice: Vec<u32> = all.windows(2).filter(|w| w[0] == w[1]).map(|w| w[0]).collect();
    (rendered(&worker_log[joins[1]..]).into_iter().collect(), twice)
}

/// SIGKILL the coordinator mid-job and start it again on its data: tiles
/// stored before are not rendered again, and the tiles the worker was
/// rendering (or had sent, not yet durable) are leased back to it and
/// answered from those renders: no tile is rendered twice.
#[test]
fn a_coordinator_killed_mid_job_restarts_and_finishes_without_rerendering() {
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("reference");
    reference_render_spp(&reference, SPP);
    let data = dir.path().join("coord");
    let (http, quic) = (free_port(), free_port());

    let mut coordinator = spawn_coordinator(&data, http, quic);
    let pin = coordinator.stdout_value("fingerprint:");
    let worker_token = coordinator.stdout_value("worker token:");
    let api_token = coordinator.stdout_value("token:");
    let mut worker = spawn_worker(&format!("127.0.0.1:{quic}"), &worker_token, &pin, &dir.path().join("w"));
    let scene = std::fs::read(scenes().join("turntable.glb")).unwrap();
    let settings = format!(r#"{{"frames":"1,12,24","spp":{SPP},"width":48,"height":27,"tile_size":16}}"#);
    let (code, body) = http_submit(http, &api_token, &settings, &scene);
    assert_eq!(code, 201, "{body}");

    let store = Store::open(&data).unwrap();
    wait_for("some tiles to be stored", Duration::from_secs(60), || store.done_tiles(1).unwrap().len() >= 3);
    coordinator.kill();
    let before: BTreeSet<u32> = store.done_tiles(1).unwrap().into_iter().collect();
    let rows_before: Vec<_> = before.iter().map(|t| store.tile(1, *t).unwrap().unwrap()).collect();
    assert!(before.len() < 18, "the job finished before the kill");

    let _coordinator = spawn_coordinator(&data, http, quic);
    wait_for("the job to finish", Duration::from_secs(120), || {
        store.job(1).unwrap().is_some_and(|j| j.state == JobState::Done)
    });
    // The tiles the worker was rendering when the coordinator died were
    // leased back to it, and it answered them from those renders.
    let adopted = metric(http, "tessera_tiles_adopted_total");
    assert_frames_equal(&data.join("frames/job-1"), &reference);
    // Stored tiles are untouched, and the worker rendered none of them again.
    for row in rows_before {
        assert_eq!(store.tile(1, row.index).unwrap().unwrap(), row);
    }
    std::thread::sleep(Duration::from_millis(200));
    worker.kill();
    let log: Vec<String> = worker.stderr.try_iter().collect();
    let (again, twice) = tiles_rendered_after_reconnect(&log);
    let overlap: Vec<_> = again.intersection(&before).collect();
    assert!(overlap.is_empty(), "tiles {overlap:?} were stored before the kill and rendered again");
    assert!(log.iter().any(|l| l.contains("rejoining with tiles")), "no rejoin:\n{}", log.join("\n"));
    assert!(adopted >= 1.0, "no tile was adopted:\n{}", log.join("\n"));
    let answered = log.iter().filter(|l| l.contains("answered from a render of a lost connection")).count();
    assert_eq!(answered as f64, adopted, "{}", log.join("\n"));
    assert!(twice.is_empty(), "tiles {twice:?} were rendered twice:\n{}", log.join("\n"));
}

#[test]
fn a_worker_interrupted_with_ctrl_c_finishes_its_tiles_and_leaves() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let mut config = test_config(&dir.path().join("coord"));
        // A worker that vanished would take this long to be noticed.
        config.idle_timeout = Duration::from_secs(30);
        config.verify.replication = false;
        let farm = Farm::start(config).await.unwrap();
        let token = farm.first_token().unwrap().to_string();
        let mut worker = spawn_worker(&farm.quic_addr().to_string(), &token, farm.fingerprint(), &dir.path().join("w"));
        let scene = std::fs::read(scenes().join("turntable.glb")).unwrap();
        let job = farm.submit_scene(request_with_spp(SPP), scene, guest("pathtracer").to_vec()).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s = farm.status().await.unwrap();
            if s.jobs[0].tiles_done >= 1 && s.workers.first().is_some_and(|w| w.leases > 0) {
                break;
            }
            assert!(Instant::now() < deadline, "the worker never started: {s:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let status = Command::new("kill").args(["-INT", &worker.child.id().to_string()]).status().unwrap();
        assert!(status.success());
        let exited = tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Some(s) = worker.child.try_wait().unwrap() {
                    return (s, worker);
                }
                assert!(Instant::now() < deadline, "the worker did not leave after Ctrl-C");
                std::thread::sleep(Duration::from_millis(20));
            }
        })
        .await
        .unwrap();
        assert!(exited.0.success(), "exit status {:?}", exited.0);
        // Gone at once (not after the 30 s idle timeout), its tiles handed back.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let s = farm.status().await.unwrap();
        assert!(s.workers.is_empty(), "{s:?}");
        let log: Vec<String> = exited.1.stderr.try_iter().collect();
        assert!(log.iter().any(|l| l.contains("leaving")), "{}", log.join("\n"));
        // Another worker finishes the job.
        let _w2 = spawn_worker(&farm.quic_addr().to_string(), &token, farm.fingerprint(), &dir.path().join("w2"));
        let status = tokio::time::timeout(Duration::from_secs(120), farm.wait_job(job)).await.unwrap().unwrap();
        assert_eq!(status.state, JobState::Done);
        farm.shutdown().await;
    });
}

#[test]
fn a_worker_given_several_coordinators_works_for_the_one_that_answers() {
    // The first address answers nobody (a coordinator that is down), the
    // second is the farm: the worker moves on to it and renders the job;
    // each coordinator is pinned by its own fingerprint.
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("reference");
    reference_render_spp(&reference, SPP);
    let data = dir.path().join("coord");
    let (http, quic, down) = (free_port(), free_port(), free_port());
    let coordinator = spawn_coordinator(&data, http, quic);
    let pin = coordinator.stdout_value("fingerprint:");
    let worker_token = coordinator.stdout_value("worker token:");
    let api_token = coordinator.stdout_value("token:");
    let other_pin = "ab".repeat(32);
    let mut worker = spawn_worker(
        &format!("127.0.0.1:{down},127.0.0.1:{quic}"),
        &worker_token,
        &format!("{other_pin},{pin}"),
        &dir.path().join("w"),
    );
    let scene = std::fs::read(scenes().join("turntable.glb")).unwrap();
    let settings = format!(r#"{{"frames":"1,12,24","spp":{SPP},"width":48,"height":27,"tile_size":16}}"#);
    let (code, body) = http_submit(http, &api_token, &settings, &scene);
    assert_eq!(code, 201, "{body}");
    let store = Store::open(&data).unwrap();
    wait_for("the job to finish", Duration::from_secs(180), || {
        store.job(1).unwrap().is_some_and(|j| j.state == JobState::Done)
    });
    assert_frames_equal(&data.join("frames/job-1"), &reference);
    worker.kill();
    let log: Vec<String> = worker.stderr.try_iter().collect();
    assert!(
        log.iter().any(|l| l.contains("cannot reach the coordinator") && l.contains(&format!("127.0.0.1:{down}"))),
        "the worker did not try the first address:\n{}",
        log.join("\n")
    );
}
