//! The store on SQLite and on PostgreSQL, side by side in one run (issue
//! 19): the latency of one durable write as the farm makes them (a group
//! commit of verified tiles), and the farm's dispatch with each backend
//! under it. PostgreSQL is a throw-away cluster of Debian's PostgreSQL on
//! this machine (`tessera_test_support::postgres`), `synchronous_commit`
//! on, over loopback TCP; SQLite is `synchronous=FULL` in WAL mode.

use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use tessera_coordinator::farm::database::Database;
use tessera_store::{NewJob, Store, TileRecord};
use tessera_store_postgres::PgBackend;
use tessera_test_support::postgres::Cluster;

use crate::farm::{dispatch_run_on, SimTiles, Verification};
use crate::{Effort, Row};

/// Tiles per commit, as the writer batches them under load.
const BATCH: u32 = 8;
/// Bytes of accumulator per tile (a 16×16 tile's sums and weights).
const TILE_BYTES: usize = 16 * 16 * 16;

pub fn run(effort: Effort) -> Result<Vec<Row>> {
    let cluster = Cluster::shared().map_err(|e| anyhow!("no PostgreSQL for the store benchmark: {e}"))?;
    let commits = match effort {
        Effort::Quick => 200,
        Effort::Full => 2000,
    };
    let mut rows = Vec::new();
    let dir = tempfile::tempdir()?;
    let sqlite = write_latency(Store::open(&dir.path().join("sqlite"))?, commits)?;
    let url = cluster.fresh_database();
    let mut backend = PgBackend::connect(&url)?;
    backend.lead("bench", 600_000)?.context("a fresh database has no leader")?;
    let postgres = write_latency(Store::with_backend(&dir.path().join("pg"), Box::new(backend))?, commits)?;
    for (name, (p50, p99)) in [("SQLite", sqlite), ("PostgreSQL", postgres)] {
        rows.push(Row {
            name: format!(
                "store write latency, {name}: a commit of {BATCH} verified tiles of {} KiB",
                TILE_BYTES / 1024
            ),
            value: format!("p50 {:.2} ms, p99 {:.2} ms", ms(p50), ms(p99)),
            note: format!("{commits} commits one after another, durable on return"),
        });
    }

    let (tiles_x, frames, workers) = match effort {
        Effort::Quick => (30, 2, 10),
        Effort::Full => (60, 4, 50),
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let runs = rt.block_on(async {
        let lite = dispatch_run_on(
            Database::Sqlite,
            Verification::Off,
            SimTiles::Flat,
            workers,
            4,
            Duration::ZERO,
            tiles_x,
            frames,
        )
        .await?;
        let pg =
            Database::Postgres { url: cluster.fresh_database(), holder: "bench".into(), lease: Duration::from_secs(4) };
        let pg =
            dispatch_run_on(pg, Verification::Off, SimTiles::Flat, workers, 4, Duration::ZERO, tiles_x, frames).await?;
        anyhow::Ok([lite, pg])
    })?;
    let n = tiles_x * tiles_x * frames;
    for (name, r) in ["SQLite", "PostgreSQL"].iter().zip(&runs) {
        rows.push(Row {
            name: format!("farm dispatch on {name}, verification off, flat tiles, {workers} simulated workers × 4 slots, {n} 1-px tiles"),
            value: format!("{:.0} tiles/s", r.tiles_per_sec),
            note: format!(
                "ack p50 {:.2} ms, p99 {:.2} ms at full load; {:.2}× SQLite's rate",
                ms(r.p50),
                ms(r.p99),
                r.tiles_per_sec / runs[0].tiles_per_sec
            ),
        });
    }
    Ok(rows)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// p50 and p99 of `commits` group commits of [`BATCH`] tiles each.
fn write_latency(mut store: Store, commits: u32) -> Result<(Duration, Duration)> {
    let job = store.insert_job(
        &NewJob { name: "bench".into(), spec_json: "{}".into(), priority: 0, tiles: commits * BATCH, frames: vec![1] },
        0,
    )?;
    let mut times = Vec::with_capacity(commits as usize);
    for c in 0..commits {
        let tiles: Vec<TileRecord> = (0..BATCH)
            .map(|i| {
                let index = c * BATCH + i;
                TileRecord {
                    job,
                    index,
                    frame: 1,
                    hash: *blake3::hash(&index.to_le_bytes()).as_bytes(),
                    data: vec![(index % 251) as u8; TILE_BYTES],
                    worker: "bench-worker".into(),
                    fuel: 1,
                    millis: 1,
                    proof: None,
                    credit: None,
                    also_credit: None,
                }
            })
            .collect();
        let t = Instant::now();
        store.record_tiles(&tiles)?;
        times.push(t.elapsed());
    }
    times.sort();
    let at = |q: f64| times[((times.len() as f64 - 1.0) * q).round() as usize];
    Ok((at(0.5), at(0.99)))
}
