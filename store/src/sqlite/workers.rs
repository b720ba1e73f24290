//! Workers and proof-of-render bookkeeping in SQLite: trust, reputation and
//! quarantine, the hash-chained credit ledger, the evidence of failed checks.

use rusqlite::{params, OptionalExtension, Transaction};

use super::*;
use crate::*;

impl WorkerStore for SqliteBackend {
    fn upsert_worker(&mut self, identity: &str, name: &str, capabilities_json: &str, now_ms: u64) -> Result<()> {
        self.conn.execute(
            "INSERT INTO workers (identity, name, capabilities_json, first_seen_ms, last_seen_ms)
             VALUES (?1, ?2, ?3, ?4, ?4)
             ON CONFLICT (identity) DO UPDATE SET
                 name = excluded.name, capabilities_json = excluded.capabilities_json,
                 last_seen_ms = max(workers.last_seen_ms, excluded.last_seen_ms)",
            params![identity, name, capabilities_json, to_sql(now_ms, "last_seen_ms")?],
        )?;
        Ok(())
    }

    fn workers(&self) -> Result<Vec<WorkerRecord>> {
        let sql = "SELECT identity, name, capabilities_json, first_seen_ms, last_seen_ms, tiles_done
                   FROM workers ORDER BY identity";
        query_vec(&self.conn, sql, [], |row| {
            Ok(WorkerRecord {
                identity: row.get(0)?,
                name: row.get(1)?,
                capabilities_json: row.get(2)?,
                first_seen_ms: get_u64(row, 3)?,
                last_seen_ms: get_u64(row, 4)?,
                tiles_done: get_u64(row, 5)?,
            })
        })
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
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO evidence (worker, job, tile, time_ms, reason, proof) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![worker, to_sql(job, "evidence job")?, tile, to_sql(now_ms, "evidence time")?, reason, proof_json],
        )?;
        tx.execute(
            "UPDATE workers SET trust = 0, gpu_trust = 0, reputation = reputation * 0.5, failed_checks = failed_checks + 1,
                 strikes = strikes + 1, quarantined = CASE WHEN strikes + 1 >= ?2 THEN 1 ELSE quarantined END
             WHERE identity = ?1",
            params![worker, to_sql(QUARANTINE_AFTER, "strikes")?],
        )?;
        let quarantined: bool = tx
            .query_row("SELECT quarantined FROM workers WHERE identity = ?1", [worker], |row| row.get(0))
            .optional()?
            .unwrap_or(false);
        tx.commit()?;
        Ok(quarantined)
    }

    fn clear_worker(&mut self, worker: &str) -> Result<bool> {
        Ok(self.conn.execute("UPDATE workers SET quarantined = 0, strikes = 0 WHERE identity = ?1", [worker])? != 0)
    }

    fn standing(&self, worker: &str) -> Result<Option<Standing>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT trust, reputation, verified_tiles, failed_checks, strikes, quarantined, credit, gpu_trust
                 FROM workers WHERE identity = ?1",
            )?
            .query_row([worker], |row| {
                Ok(Standing {
                    trust: get_u64(row, 0)?,
                    reputation: row.get(1)?,
                    verified_tiles: get_u64(row, 2)?,
                    failed_checks: get_u64(row, 3)?,
                    strikes: get_u64(row, 4)?,
                    quarantined: row.get(5)?,
                    credit: row.get(6)?,
                    gpu_trust: get_u64(row, 7)?,
                })
            })
            .optional()?)
    }

    fn ledger(&self, worker: Option<&str>, after_seq: u64, limit: usize) -> Result<Vec<LedgerEntry>> {
        let sql = "SELECT seq, worker, job, tile, credit, commitment, time_ms, prev, hash FROM ledger
                   WHERE seq > ?1 AND (?2 IS NULL OR worker = ?2) ORDER BY seq LIMIT ?3";
        query_vec(
            &self.conn,
            sql,
            params![to_sql(after_seq, "after")?, worker, i64::try_from(limit).unwrap_or(i64::MAX)],
            |row| {
                Ok(LedgerEntry {
                    seq: get_u64(row, 0)?,
                    worker: row.get(1)?,
                    job: get_u64(row, 2)?,
                    tile: row.get(3)?,
                    credit: row.get(4)?,
                    commitment: row.get(5)?,
                    time_ms: get_u64(row, 6)?,
                    prev: row.get(7)?,
                    hash: row.get(8)?,
                })
            },
        )
    }
}

/// In `tx`: a verified tile raises the worker's trust, reputation, count
/// and credit, and appends its ledger entry.
pub(super) fn credit_tile(tx: &Transaction<'_>, worker: &str, job: u64, tile: u32, credit: &TileCredit) -> Result<()> {
    tx.prepare_cached(
        "UPDATE workers SET trust = trust + (1 - ?3), gpu_trust = gpu_trust + ?3,
             verified_tiles = verified_tiles + 1,
             reputation = reputation + (1.0 - reputation) * 0.02, credit = credit + ?2
         WHERE identity = ?1",
    )?
    .execute(params![worker, credit.credit, i64::from(credit.gpu)])?;
    let prev: [u8; 32] = tx
        .prepare_cached("SELECT hash FROM ledger ORDER BY seq DESC LIMIT 1")?
        .query_row([], |row| row.get(0))
        .optional()?
        .unwrap_or([0; 32]);
    let hash = ledger_hash(&prev, worker, job, tile, credit.credit, &credit.commitment);
    tx.prepare_cached(
        "INSERT INTO ledger (worker, job, tile, credit, commitment, time_ms, prev, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        worker,
        to_sql(job, "ledger job")?,
        tile,
        credit.credit,
        credit.commitment,
        to_sql(credit.time_ms, "ledger time")?,
        prev,
        hash
    ])?;
    Ok(())
}
