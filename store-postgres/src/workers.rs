//! Workers and proof-of-render bookkeeping in PostgreSQL: trust,
//! reputation and quarantine, the hash-chained credit ledger, the evidence
//! of failed checks.

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
        rows.iter()
            .map(|r| {
                Ok(WorkerRecord {
                    identity: r.get(0),
                    name: r.get(1),
                    capabilities_json: r.get(2),
                    first_seen_ms: to_u64(r.get(3), "first_seen_ms")?,
                    last_seen_ms: to_u64(r.get(4), "last_seen_ms")?,
                    tiles_done: to_u64(r.get(5), "tiles_done")?,
                })
            })
            .collect()
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
        row.map(|r| {
            Ok(Standing {
                trust: to_u64(r.get(0), "trust")?,
                reputation: r.get(1),
                verified_tiles: to_u64(r.get(2), "verified_tiles")?,
                failed_checks: to_u64(r.get(3), "failed_checks")?,
                strikes: to_u64(r.get(4), "strikes")?,
                quarantined: r.get(5),
                credit: r.get(6),
                gpu_trust: to_u64(r.get(7), "gpu_trust")?,
            })
        })
        .transpose()
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
/// count and credit, and appends its ledger entry, in order.
pub(crate) fn credit_tiles(tx: &mut Transaction<'_>, credits: &[(&str, u64, u32, &TileCredit)]) -> Result<()> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LEDGER_LOCK]).map_err(pg_err)?;
    let mut prev: [u8; 32] =
        match tx.query_opt("SELECT hash FROM ledger ORDER BY seq DESC LIMIT 1", &[]).map_err(pg_err)? {
            Some(r) => hash32(r.get(0), "ledger hash")?,
            None => [0; 32],
        };
    for (worker, job, tile, credit) in credits {
        tx.execute(
            "UPDATE workers SET trust = trust + (1 - $3::bigint), gpu_trust = gpu_trust + $3::bigint,
                 verified_tiles = verified_tiles + 1,
                 reputation = reputation + (1.0 - reputation) * 0.02, credit = credit + $2
             WHERE identity = $1",
            &[worker, &credit.credit, &i64::from(credit.gpu)],
        )
        .map_err(pg_err)?;
        let hash = ledger_hash(&prev, worker, *job, *tile, credit.credit, &credit.commitment);
        tx.execute(
            "INSERT INTO ledger (worker, job, tile, credit, commitment, time_ms, prev, hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                worker,
                &to_i64(*job, "ledger job")?,
                &i64::from(*tile),
                &credit.credit,
                &&credit.commitment[..],
                &to_i64(credit.time_ms, "ledger time")?,
                &&prev[..],
                &&hash[..],
            ],
        )
        .map_err(pg_err)?;
        prev = hash;
    }
    Ok(())
}
