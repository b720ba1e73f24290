//! The farm on PostgreSQL (`tessera coordinator --store postgres://…`), on
//! a real throw-away cluster, with two coordinators that share nothing but
//! the database (each its own data directory, QUIC identity and ports):
//!
//! - the leader is SIGKILLed mid-job; the standby takes the lease, resumes
//!   from the database and finishes the job with three workers that were
//!   given both coordinators; an API client given both follows the job
//!   through the second; the frames, fetched from the second (blobs the
//!   first stored come from the database), equal `tessera render`'s bit for
//!   bit; each tile is stored once, the ledger's chain holds, nothing is
//!   credited twice and nothing stored before the kill changed; an
//!   artist's page that the first served follows the job to its end
//!   through the second;
//! - the leader's network to the database is cut (a relay that holds every
//!   byte): it stops leading within its lease, the other takes over and
//!   finishes the job, and once the network heals the first rejoins as a
//!   standby.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use tessera_client::conn::Conn;
use tessera_client::http::Client;
use tessera_store::{JobState, JobStore, TileStore, WorkerStore};
use tessera_store_postgres::PgBackend;
use tessera_test_support::postgres::Cluster;
use tessera_test_support::relay::Relay;

use crate::browser::{artifacts_dir, Browser};
use crate::farm::{assert_frames_equal, reference_render_spp, scenes};
use crate::farm_kill::{free_port, http_get, spawn_worker, wait_for, Proc};

const SPP: u32 = 96;

fn health(port: u16) -> serde_json::Value {
    serde_json::from_str(&http_get(port, "/api/v1/health", "").1).unwrap_or_default()
}

/// One coordinator of the farm: its process, ports and pin.
struct Coordinator {
    proc: Proc,
    http: u16,
    quic: u16,
    pin: String,
}

fn spawn_coordinator(data: &Path, http: u16, quic: u16, store: &str, name: &str) -> Coordinator {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
    cmd.arg("coordinator")
        .arg("--data")
        .arg(data)
        .args(["--http", &format!("127.0.0.1:{http}"), "--quic", &format!("127.0.0.1:{quic}")])
        .args(["--heartbeat", "1", "--idle-timeout", "2", "--store", store, "--name", name])
        // The workers share this machine's address: independent by identity.
        .args(["--independent", "identity"])
        .env("TESSERA_LOG", "info,quinn=warn");
    let proc = Proc::spawn(cmd);
    // Printed before it waits for the lease, so workers can pin a standby.
    let pin = proc.stdout_value("fingerprint:");
    Coordinator { proc, http, quic, pin }
}

/// Two coordinators of one farm on `leader_url` / `standby_url` (the same
/// database, perhaps by different roads), the first leading; three workers
/// given both; the job submitted through a client given both.
struct TwoCoordinators {
    a: Coordinator,
    b: Coordinator,
    workers: Vec<Proc>,
    client: Client,
    api_token: String,
}

fn two_coordinators(dir: &Path, leader_url: &str, standby_url: &str) -> TwoCoordinators {
    let a = spawn_coordinator(&dir.join("a"), free_port(), free_port(), leader_url, "coordinator-a");
    let worker_token = a.proc.stdout_value("worker token:");
    let api_token = a.proc.stdout_value("token:");
    let b = spawn_coordinator(&dir.join("b"), free_port(), free_port(), standby_url, "coordinator-b");
    wait_for("the standby to stand by", Duration::from_secs(30), || {
        b.proc.stderr.try_iter().any(|l| l.contains("standing by"))
    });
    let addrs = format!("127.0.0.1:{},127.0.0.1:{}", a.quic, b.quic);
    let pins = format!("{},{}", a.pin, b.pin);
    let workers = (0..3).map(|i| spawn_worker(&addrs, &worker_token, &pins, &dir.join(format!("w{i}")))).collect();
    let client = Client::new(&Conn {
        url: format!("http://127.0.0.1:{},http://127.0.0.1:{}", a.http, b.http),
        token: api_token.clone(),
    });
    let scene = std::fs::read(scenes().join("turntable.glb")).unwrap();
    let settings =
        serde_json::from_str(&format!(r#"{{"frames":"1,12,24","spp":{SPP},"width":48,"height":27,"tile_size":16}}"#))
            .unwrap();
    let job = client.submit(&scene, "turntable.glb", &settings).unwrap();
    assert_eq!(job.id, 1);
    TwoCoordinators { a, b, workers, client, api_token }
}

/// `tessera download` of job 1 through both coordinators' addresses.
fn download(client: &Client, token: &str, out: &Path) {
    let status = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["download", "1"])
        .arg(out)
        .args(["--url", &client.bases().join(","), "--token", token])
        .status()
        .unwrap();
    assert!(status.success(), "tessera download failed");
}

/// Job `job` in the database: each tile stored once, the ledger's chain
/// intact, at least one credit per tile and at most two (the stored result
/// and one confirming replica), never two to one worker.
fn assert_stored_once(reader: &PgBackend, job: u64) {
    let tiles = reader.job(job).unwrap().unwrap().tiles as usize;
    let done = reader.done_tiles(job).unwrap();
    assert_eq!(done.len(), tiles, "every tile stored once");
    assert_eq!(done.iter().collect::<BTreeSet<_>>().len(), done.len(), "a tile stored twice");
    let entries = reader.verify_ledger().unwrap().unwrap_or_else(|seq| panic!("ledger chain broken at {seq}"));
    assert!(entries as usize >= tiles, "{entries} ledger entries for {tiles} tiles");
    let mut per_tile: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for e in reader.ledger(None, 0, 1_000_000).unwrap().into_iter().filter(|e| e.job == job) {
        per_tile.entry(e.tile).or_default().push(e.worker);
    }
    for (tile, credited) in per_tile {
        assert!(credited.len() <= 2, "tile {tile} credited {} times", credited.len());
        let distinct: BTreeSet<&String> = credited.iter().collect();
        assert_eq!(distinct.len(), credited.len(), "tile {tile} credited twice to one worker: {credited:?}");
    }
}

#[test]
fn a_standby_coordinator_takes_over_when_the_leader_is_killed() {
    let cluster = Cluster::shared().unwrap_or_else(|e| panic!("no PostgreSQL for the farm's fail-over test: {e}"));
    let url = cluster.fresh_database();
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("reference");
    reference_render_spp(&reference, SPP);
    let reader = PgBackend::connect(&url).unwrap();
    let TwoCoordinators { a: mut leader, b: standby, workers, client, api_token } =
        two_coordinators(dir.path(), &url, &url);
    assert_eq!(reader.lease_state().unwrap().holder, "coordinator-a");

    // The standby answers at once: its health check says who leads and
    // lists both; the API and the page through it are the leader's,
    // forwarded.
    wait_for("the standby to list both coordinators", Duration::from_secs(10), || {
        let h = health(standby.http);
        h["role"] == "standby"
            && h["leader"] == "coordinator-a"
            && h["coordinators"].as_array().is_some_and(|c| c.len() == 2)
    });
    let (status, body) = http_get(standby.http, "/api/v1/jobs/1", &api_token);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"turntable.glb\""), "{body}");
    let (status, body) = http_get(standby.http, "/api/v1/jobs/1", "ta_wrong");
    assert_eq!(status, 401, "the leader's answer, forwarded: {body}");
    let (status, page) = http_get(standby.http, "/", "");
    assert!(status == 200 && page.contains("<script type=\"module\""), "{status}: {page}");
    let h = health(leader.http);
    assert_eq!((h["role"].as_str(), h["leader"].as_str()), (Some("leader"), Some("coordinator-a")), "{h}");

    // An artist's page, served by A, follows the job.
    let downloads = tempfile::tempdir().unwrap();
    let browser = Browser::start(downloads.path(), 1024, 768).unwrap_or_else(|e| panic!("{e}"));
    let page = format!("http://127.0.0.1:{}/", leader.http);
    browser.goto(&format!("{page}#token={api_token}"));
    browser.wait_for("#jobs tbody tr", Duration::from_secs(30));
    browser.goto(&format!("{page}#/jobs/1"));
    browser.wait_for("#job-state", Duration::from_secs(30));

    wait_for("some tiles to be stored", Duration::from_secs(60), || reader.done_tiles(1).unwrap().len() >= 3);
    let seen: serde_json::Value = client.get_json("/api/v1/jobs/1").unwrap();
    assert_eq!(client.base(), format!("http://127.0.0.1:{}", leader.http), "the client follows through A first");
    leader.proc.kill();
    let killed = Instant::now();
    let before: BTreeSet<u32> = reader.done_tiles(1).unwrap().into_iter().collect();
    let rows_before: Vec<_> = before.iter().map(|t| reader.tile(1, *t).unwrap().unwrap()).collect();
    let tiles = reader.job(1).unwrap().unwrap().tiles as usize;
    assert!(before.len() < tiles, "the job finished before the kill: {seen}");

    // The standby takes the lease once the leader's lapses and the farm
    // goes on: the workers reconnect to it and tiles are stored again.
    wait_for("the standby to lead", Duration::from_secs(30), || {
        reader.lease_state().unwrap().holder == "coordinator-b"
    });
    let takeover = killed.elapsed();
    wait_for("the standby to store a tile", Duration::from_secs(90), || {
        reader.done_tiles(1).unwrap().len() > before.len()
    });
    let first_tile = killed.elapsed();
    // The client that followed the job through A follows it through B.
    let mut followed = None;
    wait_for("the job to finish, followed through the client", Duration::from_secs(120), || {
        match client.get_json::<serde_json::Value>("/api/v1/jobs/1") {
            Ok(job) if job["state"] == "done" => {
                followed = Some(job);
                true
            }
            _ => false,
        }
    });
    eprintln!(
        "fail-over: lease taken {takeover:.2?} after the kill; first tile stored by the new leader {first_tile:.2?} after it"
    );
    assert_eq!(client.base(), format!("http://127.0.0.1:{}", standby.http), "the client moved to B");
    // The page A served follows the job to its end through B (its API,
    // which allows A's origin), and shows B's thumbnails of every frame.
    browser.wait_until("return document.querySelector('#job-state').textContent === 'done';", Duration::from_secs(60));
    browser.wait_until(
        "return document.querySelectorAll('#frames .thumb.done img').length === 3;",
        Duration::from_secs(60),
    );
    browser.screenshot(&artifacts_dir().join("failover-page.png"));
    let lease = reader.lease_state().unwrap();
    assert_eq!((lease.holder.as_str(), lease.term), ("coordinator-b", 2), "{lease:?}");

    // The frames through B, which has none of A's files: the blobs A
    // stored come from the database.
    let out = dir.path().join("downloaded");
    download(&client, &api_token, &out);
    assert_frames_equal(&out, &reference);
    let h = health(standby.http);
    assert_eq!(
        (h["store"].as_str(), h["role"].as_str(), h["term"].as_i64(), h["leader"].as_str()),
        (Some("postgres"), Some("leader"), Some(2), Some("coordinator-b")),
        "{h}"
    );

    // What the workers were rendering for A was leased back to them by B.
    let adopted = crate::farm_kill::metric(standby.http, "tessera_tiles_adopted_total");
    eprintln!("fail-over: {adopted} tiles rendered for A were adopted by B");
    assert!(adopted >= 1.0, "B adopted none of the tiles the workers held");

    assert_stored_once(&reader, 1);
    for row in rows_before {
        assert_eq!(reader.tile(1, row.index).unwrap().unwrap(), row, "a tile stored before the kill changed");
    }
    drop(workers);
    drop(standby);
}

#[test]
fn a_leader_cut_off_from_the_database_stops_and_rejoins_as_a_standby() {
    let cluster = Cluster::shared().unwrap_or_else(|e| panic!("no PostgreSQL for the farm's partition test: {e}"));
    let url = cluster.fresh_database();
    let relay = Relay::start(([127, 0, 0, 1], cluster.port).into()).unwrap();
    let cut_url = relay.postgres_url(&url, cluster.port);
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("reference");
    reference_render_spp(&reference, SPP);
    let reader = PgBackend::connect(&url).unwrap();
    // A reaches the database through the relay; B directly.
    let TwoCoordinators { a: mut cut_off, b: other, workers, client, api_token } =
        two_coordinators(dir.path(), &cut_url, &url);

    wait_for("some tiles to be stored", Duration::from_secs(60), || reader.done_tiles(1).unwrap().len() >= 3);
    relay.cut();
    let cut = Instant::now();
    // A cannot renew: it stops on its own clock within its lease.
    wait_for("the cut-off leader to stop", Duration::from_secs(20), || {
        cut_off.proc.child.try_wait().unwrap().is_some()
    });
    let stopped = cut.elapsed();
    assert_eq!(cut_off.proc.child.try_wait().unwrap().and_then(|s| s.code()), Some(75), "EX_TEMPFAIL: restart me");
    wait_for("the other coordinator to lead", Duration::from_secs(30), || {
        reader.lease_state().unwrap().holder == "coordinator-b"
    });
    let takeover = cut.elapsed();
    eprintln!("partition: the cut-off leader stopped {stopped:.2?} after the cut; B led {takeover:.2?} after it");
    assert_eq!(reader.lease_state().unwrap().term, 2);

    wait_for("the job to finish on B", Duration::from_secs(120), || {
        reader.job(1).unwrap().is_some_and(|j| j.state == JobState::Done)
    });
    let out = dir.path().join("downloaded");
    download(&client, &api_token, &out);
    assert_frames_equal(&out, &reference);
    assert_stored_once(&reader, 1);

    // The network heals; whatever A had sent into the cut arrives late and
    // is refused (the lease's term moved on). Restarted, A stands by.
    relay.heal();
    let rejoined = spawn_coordinator(&dir.path().join("a"), cut_off.http, cut_off.quic, &cut_url, "coordinator-a");
    assert_eq!(rejoined.pin, cut_off.pin, "the same identity");
    wait_for("A to stand by behind B", Duration::from_secs(30), || {
        let h = health(rejoined.http);
        h["role"] == "standby" && h["leader"] == "coordinator-b"
    });
    let lease = reader.lease_state().unwrap();
    assert_eq!((lease.holder.as_str(), lease.term), ("coordinator-b", 2), "A did not take the lease back: {lease:?}");
    assert_stored_once(&reader, 1);
    drop((workers, other, rejoined));
}

/// The chaos test of `faults.rs` on a farm of two coordinators on
/// PostgreSQL: workers and coordinators (the leader mostly, the standby
/// too) SIGKILLed at random moments and restarted; no tile stored before a
/// kill is lost or changed, and the frames equal `tessera render`'s.
#[test]
fn chaos_on_postgres_kills_workers_and_coordinators() {
    use tessera_test_support::Rng;
    let seed = std::env::var("TESSERA_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x7e55_e7b0u64);
    println!("seed {seed} (TESSERA_SEED={seed} replays this schedule)");
    // The SQLite chaos job's samples (and so its shared reference render).
    // Half of them was too few once leases survived a fail-over: the farm
    // lost so little to each kill that, on an idle machine, the job ended
    // before the chaos did.
    let spp = crate::faults::CHAOS_SPP;
    let reference = crate::farm::shared_reference(spp);
    let cluster = Cluster::shared().unwrap_or_else(|e| panic!("no PostgreSQL for the chaos test: {e}"));
    let url = cluster.fresh_database();
    let dir = tempfile::tempdir().unwrap();
    let reader = PgBackend::connect(&url).unwrap();

    let names = ["coordinator-a", "coordinator-b"];
    let spawn =
        |i: usize, http: u16, quic: u16| spawn_coordinator(&dir.path().join(names[i]), http, quic, &url, names[i]);
    let mut coordinators = vec![spawn(0, free_port(), free_port())];
    let worker_token = coordinators[0].proc.stdout_value("worker token:");
    let api_token = coordinators[0].proc.stdout_value("token:");
    coordinators.push(spawn(1, free_port(), free_port()));
    let addrs = format!("127.0.0.1:{},127.0.0.1:{}", coordinators[0].quic, coordinators[1].quic);
    let pins = format!("{},{}", coordinators[0].pin, coordinators[1].pin);
    let worker_dir = |i: usize| dir.path().join(format!("w{i}"));
    let mut workers: Vec<Proc> = (0..3).map(|i| spawn_worker(&addrs, &worker_token, &pins, &worker_dir(i))).collect();
    let client = Client::new(&Conn {
        url: format!("http://127.0.0.1:{},http://127.0.0.1:{}", coordinators[0].http, coordinators[1].http),
        token: api_token.clone(),
    });
    let scene = std::fs::read(scenes().join("turntable.glb")).unwrap();
    let settings =
        serde_json::from_str(&format!(r#"{{"frames":"1,12,24","spp":{spp},"width":48,"height":27,"tile_size":8}}"#))
            .unwrap();
    let job = client.submit(&scene, "turntable.glb", &settings).unwrap().id;
    let job_done = || reader.job(job).unwrap().is_some_and(|j| j.state == JobState::Done);
    wait_for("tiles to be stored", Duration::from_secs(120), || reader.done_tiles(job).unwrap().len() >= 3);

    const WORKER_KILLS: u32 = 6;
    const LEADER_KILLS: u32 = 2;
    let mut rng = Rng(seed);
    let started = Instant::now();
    let mut snapshots: Vec<BTreeMap<u32, ([u8; 32], String)>> = Vec::new();
    let (mut worker_kills, mut leader_kills, mut standby_kills) = (0u32, 0u32, 0u32);
    let mut schedule = Vec::new();
    'chaos: while worker_kills < WORKER_KILLS || leader_kills < LEADER_KILLS {
        let until = Instant::now() + Duration::from_millis(rng.range(500, 1300));
        while Instant::now() < until {
            if job_done() {
                break 'chaos;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let at = started.elapsed().as_secs_f64();
        let down = Duration::from_millis(rng.range(0, 1000));
        let stored = reader.done_tiles(job).unwrap().len();
        let kill_coordinator = leader_kills < LEADER_KILLS && (worker_kills >= WORKER_KILLS || rng.range(0, 3) == 0);
        if kill_coordinator {
            // The leader, mostly; sometimes the standby.
            let leader = reader.lease_state().unwrap().holder;
            let leading = names.iter().position(|n| *n == leader).unwrap_or(0);
            let i = if rng.range(0, 4) == 0 { 1 - leading } else { leading };
            let (http, quic) = (coordinators[i].http, coordinators[i].quic);
            coordinators[i].proc.kill();
            if i == leading {
                leader_kills += 1;
            } else {
                standby_kills += 1;
            }
            snapshots.push(
                reader
                    .done_tiles(job)
                    .unwrap()
                    .iter()
                    .map(|&t| {
                        let r = reader.tile(job, t).unwrap().unwrap();
                        (t, (r.hash, r.worker))
                    })
                    .collect(),
            );
            // A leader down longer than its lease (4 s) hands the farm to
            // the standby; a shorter absence, and it takes its lease back.
            let down = if i == leading { Duration::from_millis(rng.range(0, 6000)) } else { down };
            std::thread::sleep(down);
            coordinators[i] = spawn(i, http, quic);
            let role = if i == leading { "leader" } else { "standby" };
            schedule.push(format!("{at:.1}s {} ({role}, down {} ms, {stored} tiles)", names[i], down.as_millis()));
        } else {
            let i = rng.range(0, 3) as usize;
            workers[i].kill();
            worker_kills += 1;
            std::thread::sleep(down);
            workers[i] = spawn_worker(&addrs, &worker_token, &pins, &worker_dir(i));
            schedule.push(format!("{at:.1}s worker {i} (down {} ms, {stored} tiles)", down.as_millis()));
        }
    }
    let chaos = started.elapsed();
    wait_for("the job to finish after the chaos", Duration::from_secs(240), job_done);
    println!("chaos on PostgreSQL: kill schedule: {}", schedule.join(", "));
    println!(
        "chaos on PostgreSQL: {worker_kills} worker kills, {leader_kills} leader and {standby_kills} standby kills \
         in {:.1} s; job done after {:.1} s; lease term {}",
        chaos.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        reader.lease_state().unwrap().term
    );
    assert!(
        leader_kills >= LEADER_KILLS && worker_kills >= WORKER_KILLS,
        "the job finished before the chaos did ({worker_kills} worker, {leader_kills} leader kills): make it longer"
    );
    for snapshot in &snapshots {
        for (i, (hash, worker)) in snapshot {
            let t = reader.tile(job, *i).unwrap().unwrap_or_else(|| panic!("tile {i} was lost"));
            assert_eq!((&t.hash, &t.worker), (hash, worker), "tile {i} changed after a coordinator kill");
        }
    }
    assert_stored_once(&reader, job);
    let out = dir.path().join("downloaded");
    download(&client, &api_token, &out);
    assert_frames_equal(&out, &reference);
    drop((workers, coordinators));
}
