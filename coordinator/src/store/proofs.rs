//! Proof-of-render bookkeeping: workers' trust, reputation and quarantine,
//! the hash-chained credit ledger, and the evidence of failed checks.
//!
//! Trust is BOINC's adaptive-replication count: consecutive verified
//! results, back to zero on any failed check. Reputation is slower: each
//! verified tile moves it 2 % of the way to 1, each failed check halves it.
//! A worker with [`QUARANTINE_AFTER`] failed checks since an admin last
//! cleared it is quarantined: it may not join until cleared.

use rusqlite::{params, OptionalExtension, Transaction};

use super::{get_u64, query_vec, to_sql, Result, Store};

/// Failed checks (since last cleared) that quarantine a worker.
pub const QUARANTINE_AFTER: u64 = 3;

/// Credit for one verified tile, written with the tile.
#[derive(Clone, Debug, PartialEq)]
pub struct TileCredit {
    pub credit: f64,
    /// A GPU tile: it raises the worker's GPU trust, not its CPU trust.
    pub gpu: bool,
    pub commitment: [u8; 32],
    pub time_ms: u64,
}

/// A worker's standing.
#[derive(Clone, Debug, PartialEq)]
pub struct Standing {
    pub trust: u64,
    /// Consecutive verified GPU tiles (GPU work is trusted apart).
    pub gpu_trust: u64,
    pub reputation: f64,
    pub verified_tiles: u64,
    pub failed_checks: u64,
    pub strikes: u64,
    pub quarantined: bool,
    pub credit: f64,
}

/// One ledger entry.
#[derive(Clone, Debug, PartialEq)]
pub struct LedgerEntry {
    pub seq: u64,
    pub worker: String,
    pub job: u64,
    pub tile: u32,
    pub credit: f64,
    pub commitment: [u8; 32],
    pub time_ms: u64,
    pub prev: [u8; 32],
    pub hash: [u8; 32],
}

/// The hash of a ledger entry: blake3 (key-derivation mode, its own
/// context) of the previous hash, the worker, job, tile, the credit's bits
/// and the commitment, fixed-width and length-prefixed.
pub fn ledger_hash(prev: &[u8; 32], worker: &str, job: u64, tile: u32, credit: f64, commitment: &[u8; 32]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key("tessera 2026-11 credit ledger entry v1");
    h.update(prev);
    h.update(&(worker.len() as u64).to_le_bytes());
    h.update(worker.as_bytes());
    h.update(&job.to_le_bytes());
    h.update(&tile.to_le_bytes());
    h.update(&credit.to_bits().to_le_bytes());
    h.update(commitment);
    *h.finalize().as_bytes()
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

impl Store {
    /// Records a failed check: the evidence, trust back to zero, reputation
    /// halved, a strike. Returns whether the worker is now quarantined.
    pub fn record_failed_check(
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

    /// Lifts a quarantine and forgets the strikes (an admin's decision;
    /// trust stays at zero and is earned again). Returns whether the worker exists.
    pub fn clear_worker(&mut self, worker: &str) -> Result<bool> {
        Ok(self.conn.execute("UPDATE workers SET quarantined = 0, strikes = 0 WHERE identity = ?1", [worker])? != 0)
    }

    /// A worker's standing, if it is known.
    pub fn standing(&self, worker: &str) -> Result<Option<Standing>> {
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

    /// Ledger entries after `after_seq` (ascending), optionally one worker's.
    pub fn ledger(&self, worker: Option<&str>, after_seq: u64, limit: usize) -> Result<Vec<LedgerEntry>> {
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

    /// Checks the whole chain: each entry's `prev` is the hash before it
    /// and its `hash` recomputes. Returns the number of entries, or the
    /// first bad `seq`.
    pub fn verify_ledger(&self) -> Result<std::result::Result<u64, u64>> {
        let mut prev = [0u8; 32];
        let mut count = 0;
        let mut after = 0;
        loop {
            let page = self.ledger(None, after, 10_000)?;
            if page.is_empty() {
                return Ok(Ok(count));
            }
            for e in &page {
                let hash = ledger_hash(&e.prev, &e.worker, e.job, e.tile, e.credit, &e.commitment);
                if e.prev != prev || e.hash != hash {
                    return Ok(Err(e.seq));
                }
                prev = e.hash;
                count += 1;
                after = e.seq;
            }
        }
    }
}
