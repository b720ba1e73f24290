//! Workers and proof-of-render bookkeeping in PostgreSQL: trust,
//! reputation and quarantine, the hash-chained credit ledger, the evidence
//! of failed checks.

use std::collections::BTreeMap;

use postgres::Transaction;
use tessera_store::records::*;
use tessera_store::{Result, WorkerStore};

use crate::*;

/// Appends to the ledger one transaction at a time, so its hash chain has
/// no fork even with several connections writing (`pg_advisory_xact_lock`).
const LEDGER_LOCK: i64 = 0x7e55_e7a0_0002;

impl WorkerStore for PgBackend {
    fn upsert_worker(&mut self, identity: &str, name: &str, capabilities_json: &str, now_ms: u64) -> Result<()> {
        self.db()
            .execute(
                "INSERT INTO workers (identity, name, capabilities_json, first_seen_ms, last_seen_ms)
                 VALUES ($1, $2, $3, $4, $4)
                 ON CONFLICT (identity) DO UPDATE SET
                     name = excluded.name, capabilities_json = excluded.capabilities_json,
                     last_seen_ms = greatest(workers.last_seen_ms, excluded.last_seen_ms)",
                &[&identity, &name, &capabilities_json, &to_i64(now_ms, "last_seen_ms")?],
            )
            .map_err(pg_err)?;
        Ok(())
    }

    fn workers(&self) -> Result<Vec<WorkerRecord>> {
        let rows = self
            .db()
            .query(
                "SELECT identity, name, capabilities_json, first_seen_ms, last_seen_ms, tiles_done
                 FROM workers ORDER BY identity COLLATE \"C\"",
                &[],
            )
            .map_err(pg_err)?;
        rows.iter().map(record_at).collect()
    }

    fn record_failed_check(
        &mut self,
        worker: &str,
        job: u64,
        tile: u32,
        reason: &str,
        proof_json: &str,
        now_ms: u64,
    ) -> Result<bool> {
        self.run(|db| {
            let mut tx = db.transaction().map_err(pg_err)?;
            tx.execute(
                "INSERT INTO evidence (worker, job, tile, time_ms, reason, proof) VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    &worker,
                    &to_i64(job, "evidence job")?,
                    &i64::from(tile),
                    &to_i64(now_ms, "evidence time")?,
                    &reason,
                    &proof_json,
                ],
            )
            .map_err(pg_err)?;
            let quarantined = tx
                .query_opt(
                    "UPDATE workers SET trust = 0, gpu_trust = 0, reputation = reputation * 0.5,
                     failed_checks = failed_checks + 1, strikes = strikes + 1,
                     quarantined = quarantined OR strikes + 1 >= $2
                 WHERE identity = $1 RETURNING quarantined",
                    &[&worker, &to_i64(QUARANTINE_AFTER, "strikes")?],
                )
                .map_err(pg_err)?
                .is_some_and(|r| r.get::<_, bool>(0));
            tx.commit().map_err(pg_err)?;
            Ok(quarantined)
        })
    }

    fn clear_worker(&mut self, worker: &str) -> Result<bool> {
        let n = self
            .db()
            .execute("UPDATE workers SET quarantined = FALSE, strikes = 0 WHERE identity = $1", &[&worker])
            .map_err(pg_err)?;
        Ok(n != 0)
    }

    fn standing(&self, worker: &str) -> Result<Option<Standing>> {
        let row = self
            .db()
            .query_opt(
                "SELECT trust, reputation, verified_tiles, failed_checks, strikes, quarantined, credit, gpu_trust
                 FROM workers WHERE identity = $1",
                &[&worker],
            )
            .map_err(pg_err)?;
        row.map(|r| standing_at(&r, 0)).transpose()
    }

    fn workers_with_standing(&self) -> Result<Vec<(WorkerRecord, Option<Standing>)>> {
        let rows = self
            .db()
            .query(
                "SELECT identity, name, capabilities_json, first_seen_ms, last_seen_ms, tiles_done,
                        trust, reputation, verified_tiles, failed_checks, strikes, quarantined, credit, gpu_trust
                 FROM workers ORDER BY identity COLLATE \"C\"",
                &[],
            )
            .map_err(pg_err)?;
        rows.iter().map(|r| Ok((record_at(r)?, Some(standing_at(r, 6)?)))).collect()
    }

    fn ledger(&self, worker: Option<&str>, after_seq: u64, limit: usize) -> Result<Vec<LedgerEntry>> {
        let rows = self
            .db()
            .query(
                "SELECT seq, worker, job, tile, credit, commitment, time_ms, prev, hash FROM ledger
                 WHERE seq > $1 AND ($2::text IS NULL OR worker = $2) ORDER BY seq LIMIT $3",
                &[&to_i64(after_seq, "after")?, &worker, &i64::try_from(limit).unwrap_or(i64::MAX)],
            )
            .map_err(pg_err)?;
        rows.iter()
            .map(|r| {
                Ok(LedgerEntry {
                    seq: to_u64(r.get(0), "ledger seq")?,
                    worker: r.get(1),
                    job: to_u64(r.get(2), "ledger job")?,
                    tile: to_u32(r.get(3), "ledger tile")?,
                    credit: r.get(4),
                    commitment: hash32(r.get(5), "ledger commitment")?,
                    time_ms: to_u64(r.get(6), "ledger time")?,
                    prev: hash32(r.get(7), "ledger prev")?,
                    hash: hash32(r.get(8), "ledger hash")?,
                })
            })
            .collect()
    }
}

/// In `tx`: each verified tile raises its worker's trust, reputation,
/// count and credit, and appends its ledger entry, in order, and each
/// worker's `tiles_done` grows by `done`'s count.
///
/// A handful of statements whatever the batch's size (a group commit of a
/// busy farm holds hundreds of tiles): the workers' rows are read and
/// locked once, their new reputation and credit computed here one tile at
/// a time exactly as SQLite's per-tile `UPDATE`s compute them (the same
/// floating-point operations in the same order, so both backends hold the
/// same bits), written back in one `UPDATE … FROM unnest(…)`, and the
/// ledger's entries, chained here, inserted in one statement.
pub(crate) fn credit_tiles(
    tx: &mut Transaction<'_>,
    credits: &[(&str, u64, u32, &TileCredit)],
    done: &BTreeMap<&str, i64>,
) -> Result<()> {
    #[derive(Default)]
    struct Change {
        cpu: i64,
        gpu: i64,
        verified: i64,
        done: i64,
        reputation: f64,
        credit: f64,
    }
    let names: Vec<&str> = credits.iter().map(|c| c.0).chain(done.keys().copied()).collect();
    let mut changes: BTreeMap<String, Change> = BTreeMap::new();
    for row in tx
        .query("SELECT identity, reputation, credit FROM workers WHERE identity = ANY($1) FOR UPDATE", &[&names])
        .map_err(pg_err)?
    {
        changes.insert(row.get(0), Change { reputation: row.get(1), credit: row.get(2), ..Change::default() });
    }
    for (worker, _, _, credit) in credits {
        if let Some(c) = changes.get_mut(*worker) {
            if credit.gpu {
                c.gpu += 1;
            } else {
                c.cpu += 1;
            }
            c.verified += 1;
            c.reputation += (1.0 - c.reputation) * 0.02;
            c.credit += credit.credit;
        }
    }
    for (worker, n) in done {
        if let Some(c) = changes.get_mut(*worker) {
            c.done += n;
        }
    }
    if !changes.is_empty() {
        let ids: Vec<&str> = changes.keys().map(String::as_str).collect();
        let col = |f: fn(&Change) -> i64| changes.values().map(f).collect::<Vec<i64>>();
        let (cpu, gpu, verified, tiles_done) = (col(|c| c.cpu), col(|c| c.gpu), col(|c| c.verified), col(|c| c.done));
        let reputation: Vec<f64> = changes.values().map(|c| c.reputation).collect();
        let credit: Vec<f64> = changes.values().map(|c| c.credit).collect();
        tx.execute(
            "UPDATE workers AS w SET trust = w.trust + v.cpu, gpu_trust = w.gpu_trust + v.gpu,
                 verified_tiles = w.verified_tiles + v.verified, tiles_done = w.tiles_done + v.done,
                 reputation = v.reputation, credit = v.credit
             FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[],
                         $6::double precision[], $7::double precision[])
                  AS v(identity, cpu, gpu, verified, done, reputation, credit)
             WHERE w.identity = v.identity",
            &[&ids, &cpu, &gpu, &verified, &tiles_done, &reputation, &credit],
        )
        .map_err(pg_err)?;
    }
    if credits.is_empty() {
        return Ok(());
    }
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LEDGER_LOCK]).map_err(pg_err)?;
    let mut prev: [u8; 32] =
        match tx.query_opt("SELECT hash FROM ledger ORDER BY seq DESC LIMIT 1", &[]).map_err(pg_err)? {
            Some(r) => hash32(r.get(0), "ledger hash")?,
            None => [0; 32],
        };
    let n = credits.len();
    let (mut workers, mut jobs, mut tiles, mut amounts) =
        (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut commitments, mut times, mut prevs, mut hashes) =
        (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    for (worker, job, tile, credit) in credits {
        let hash = ledger_hash(&prev, worker, *job, *tile, credit.credit, &credit.commitment);
        workers.push(*worker);
        jobs.push(to_i64(*job, "ledger job")?);
        tiles.push(i64::from(*tile));
        amounts.push(credit.credit);
        commitments.push(credit.commitment.to_vec());
        times.push(to_i64(credit.time_ms, "ledger time")?);
        prevs.push(prev.to_vec());
        hashes.push(hash.to_vec());
        prev = hash;
    }
    tx.execute(
        "INSERT INTO ledger (worker, job, tile, credit, commitment, time_ms, prev, hash)
         SELECT worker, job, tile, credit, commitment, time_ms, prev, hash
         FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::double precision[], $5::bytea[], $6::bigint[],
                     $7::bytea[], $8::bytea[]) WITH ORDINALITY
              AS e(worker, job, tile, credit, commitment, time_ms, prev, hash, ord)
         ORDER BY ord",
        &[&workers, &jobs, &tiles, &amounts, &commitments, &times, &prevs, &hashes],
    )
    .map_err(pg_err)?;
    Ok(())
}

/// The worker in columns 0..6 of `r`: identity, name, capabilities_json,
/// first_seen_ms, last_seen_ms, tiles_done.
fn record_at(r: &postgres::Row) -> Result<WorkerRecord> {
    Ok(WorkerRecord {
        identity: r.get(0),
        name: r.get(1),
        capabilities_json: r.get(2),
        first_seen_ms: to_u64(r.get(3), "first_seen_ms")?,
        last_seen_ms: to_u64(r.get(4), "last_seen_ms")?,
        tiles_done: to_u64(r.get(5), "tiles_done")?,
    })
}

/// The standing in columns `at..at + 8` of `r`: trust, reputation,
/// verified_tiles, failed_checks, strikes, quarantined, credit, gpu_trust.
fn standing_at(r: &postgres::Row, at: usize) -> Result<Standing> {
    Ok(Standing {
        trust: to_u64(r.get(at), "trust")?,
        reputation: r.get(at + 1),
        verified_tiles: to_u64(r.get(at + 2), "verified_tiles")?,
        failed_checks: to_u64(r.get(at + 3), "failed_checks")?,
        strikes: to_u64(r.get(at + 4), "strikes")?,
        quarantined: r.get(at + 5),
        credit: r.get(at + 6),
        gpu_trust: to_u64(r.get(at + 7), "gpu_trust")?,
    })
}
