//! The farm on PostgreSQL (`tessera coordinator --store postgres://…`), on
//! a real throw-away cluster: a leader and a hot standby; the leader is
//! SIGKILLed mid-job; the standby takes the lease, resumes from the
//! database and finishes the job. Frames equal `tessera render`'s, each
//! tile is stored once, the ledger's chain holds, and nothing stored before
//! the kill is rendered again.
//!
//! The two coordinators share a data directory here (blob files and the
//! QUIC identity workers pin): blobs in the database and workers with
//! several coordinator addresses are the next steps (ARCHITECTURE.md).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use tessera_store::{JobState, JobStore, TileStore, WorkerStore};
use tessera_store_postgres::PgBackend;
use tessera_test_support::postgres::Cluster;

use crate::farm::{assert_frames_equal, reference_render_spp, scenes};
use crate::farm_kill::{free_port, http_submit, spawn_worker, wait_for, Proc};

const SPP: u32 = 96;

/// A GET over plain HTTP/1.1; the body.
fn http_get(port: u16, path: &str, token: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    response.split("\r\n\r\n").nth(1).unwrap_or("").to_string()
}

fn spawn_coordinator(data: &Path, http: u16, quic: u16, store: &str, name: &str) -> Proc {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
    cmd.arg("coordinator")
        .arg("--data")
        .arg(data)
        .args(["--http", &format!("127.0.0.1:{http}"), "--quic", &format!("127.0.0.1:{quic}")])
        .args(["--heartbeat", "1", "--idle-timeout", "2", "--store", store, "--name", name])
        .env("TESSERA_LOG", "info,quinn=warn");
    Proc::spawn(cmd)
}

#[test]
fn a_standby_coordinator_takes_over_when_the_leader_is_killed() {
    let cluster = Cluster::shared().unwrap_or_else(|e| panic!("no PostgreSQL for the farm's fail-over test: {e}"));
    let url = cluster.fresh_database();
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("reference");
    reference_render_spp(&reference, SPP);
    let data = dir.path().join("coord");
    let (http, quic) = (free_port(), free_port());

    let mut leader = spawn_coordinator(&data, http, quic, &url, "coordinator-a");
    let pin = leader.stdout_value("fingerprint:");
    let worker_token = leader.stdout_value("worker token:");
    let api_token = leader.stdout_value("token:");
    // The standby: same ports and data directory; it waits for the lease
    // before it binds anything.
    let standby = spawn_coordinator(&data, http, quic, &url, "coordinator-b");
    let reader = PgBackend::connect(&url).unwrap();
    wait_for("the standby to stand by", Duration::from_secs(30), || {
        standby.stderr.try_iter().any(|l| l.contains("standing by"))
    });
    assert_eq!(reader.lease_state().unwrap().holder, "coordinator-a");

    let mut worker = spawn_worker(&format!("127.0.0.1:{quic}"), &worker_token, &pin, &dir.path().join("w"));
    let scene = std::fs::read(scenes().join("turntable.glb")).unwrap();
    let settings = format!(r#"{{"frames":"1,12,24","spp":{SPP},"width":48,"height":27,"tile_size":16}}"#);
    let (code, body) = http_submit(http, &api_token, &settings, &scene);
    assert_eq!(code, 201, "{body}");

    wait_for("some tiles to be stored", Duration::from_secs(60), || reader.done_tiles(1).unwrap().len() >= 3);
    leader.kill();
    let killed = Instant::now();
    let before: BTreeSet<u32> = reader.done_tiles(1).unwrap().into_iter().collect();
    let rows_before: Vec<_> = before.iter().map(|t| reader.tile(1, *t).unwrap().unwrap()).collect();
    let tiles = reader.job(1).unwrap().unwrap().tiles as usize;
    assert!(before.len() < tiles, "the job finished before the kill");

    // The standby takes the lease once the leader's lapses, and the farm
    // goes on: the worker reconnects and tiles are stored again (after the
    // second opinion a new worker's tiles wait for: with one worker, the
    // coordinator's own render, `replica_wait`).
    wait_for("the standby to lead", Duration::from_secs(30), || {
        reader.lease_state().unwrap().holder == "coordinator-b"
    });
    let takeover = killed.elapsed();
    wait_for("the standby to store a tile", Duration::from_secs(90), || {
        reader.done_tiles(1).unwrap().len() > before.len()
    });
    eprintln!(
        "fail-over: lease taken {takeover:.2?} after the kill; first tile stored by the standby {:.2?} after it",
        killed.elapsed()
    );
    let lease = reader.lease_state().unwrap();
    assert_eq!((lease.holder.as_str(), lease.term), ("coordinator-b", 2), "{lease:?}");
    wait_for("the job to finish", Duration::from_secs(120), || {
        reader.job(1).unwrap().is_some_and(|j| j.state == JobState::Done)
    });
    assert_frames_equal(&data.join("frames/job-1"), &reference);

    // An API client that followed the job through the leader follows it
    // through the standby at the same address, with the same token; the
    // health check says who leads, under which term.
    let job: serde_json::Value = serde_json::from_str(&http_get(http, "/api/v1/jobs/1", &api_token)).unwrap();
    assert_eq!(job["state"], "done", "{job}");
    let health: serde_json::Value = serde_json::from_str(&http_get(http, "/api/v1/health", "")).unwrap();
    assert_eq!(
        (health["store"].as_str(), health["role"].as_str(), health["term"].as_i64()),
        (Some("postgres"), Some("leader"), Some(2)),
        "{health}"
    );

    // Each tile once, the ledger's chain intact, at most one credit per
    // tile and worker; what was stored before the kill is untouched.
    let done = reader.done_tiles(1).unwrap();
    assert_eq!(done.len(), tiles, "every tile stored once");
    assert_eq!(done.iter().collect::<BTreeSet<_>>().len(), done.len());
    let entries = reader.verify_ledger().unwrap().unwrap_or_else(|seq| panic!("ledger chain broken at {seq}"));
    assert!(entries as usize >= tiles, "{entries} ledger entries for {tiles} tiles");
    let mut credited = BTreeSet::new();
    for e in reader.ledger(None, 0, 1_000_000).unwrap() {
        assert!(credited.insert((e.tile, e.worker.clone())), "tile {} credited twice to {}", e.tile, e.worker);
    }
    for row in rows_before {
        assert_eq!(reader.tile(1, row.index).unwrap().unwrap(), row);
    }
    worker.kill();
    drop(standby);
}
