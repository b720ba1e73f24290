//! What a database backend of the store must do, in five parts by
//! purpose; [`Backend`] is all of them plus housekeeping. Every method is
//! one transaction: a write is durable when it returns `Ok`.

use crate::records::*;
use crate::Result;

/// A database the store can run on: SQLite ([`crate::sqlite`]), or PostgreSQL
/// (the `tessera-store-postgres` crate).
pub trait Backend: JobStore + TileStore + WorkerStore + TokenStore + MetaStore + Send + std::fmt::Debug {
    /// Another connection to the same database, for another thread.
    fn reconnect(&self) -> Result<Box<dyn Backend>>;

    /// Another connection for reads only (the API's): on a fenced backend,
    /// one that writes under no term. By default, [`Backend::reconnect`].
    fn reconnect_reader(&self) -> Result<Box<dyn Backend>> {
        self.reconnect()
    }

    /// Stops housekeeping from running inside commits, because the caller
    /// runs [`Backend::housekeeping`] on another connection (SQLite: no
    /// automatic WAL checkpoints, so copying the log back never stalls a
    /// commit that workers are waiting on).
    fn defer_housekeeping(&self) -> Result<()>;

    /// Housekeeping that does not wait for, or block, the writer (SQLite: a
    /// passive WAL checkpoint).
    fn housekeeping(&self) -> Result<()>;

    /// The farm's blobs in a tier every coordinator reaches, when the
    /// backend is shared between coordinators (PostgreSQL); `None` when the
    /// data directory's files are all there is (SQLite). A connection of
    /// its own, usable from any thread.
    fn shared_blobs(&self) -> Result<Option<std::sync::Arc<dyn crate::SharedBlobs>>> {
        Ok(None)
    }
}

/// Jobs and their logs.
pub trait JobStore {
    /// Records a newly accepted job as [`JobState::Queued`], created at
    /// `now_ms`, and returns its id (ids increase and are never reused).
    fn insert_job(&mut self, job: &NewJob, now_ms: u64) -> Result<u64>;

    /// The job `id`, if it exists.
    fn job(&self, id: u64) -> Result<Option<JobRecord>>;

    /// Every job, newest first: the order people look at a job list in.
    fn jobs(&self) -> Result<Vec<JobRecord>>;

    /// Every job's id and state, newest first: what counting jobs by state
    /// needs, without their specs (the status route asks it on every call).
    fn job_states(&self) -> Result<Vec<(u64, JobState)>> {
        Ok(self.jobs()?.into_iter().map(|j| (j.id, j.state)).collect())
    }

    /// Jobs that are queued or running, oldest first: what a restarted
    /// coordinator resumes.
    fn unfinished_jobs(&self) -> Result<Vec<JobRecord>>;

    /// Moves job `id` to `state` with `error` (replacing any earlier error).
    ///
    /// Entering a finished state sets `finished_ms` to `now_ms`; an unfinished
    /// state clears it. The store does not police transitions; the scheduler
    /// does. An unknown job is [`StoreError::NotFound`].
    fn set_job_state(&mut self, id: u64, state: JobState, error: Option<&str>, now_ms: u64) -> Result<()>;

    /// Puts a failed or cancelled job `id` back in the queue for a retry:
    /// state `queued`, no error, not finished. Returns whether it did; a job
    /// in any other state (or none) is left alone, so a retry that races a
    /// job finishing or starting cannot resurrect or restart it.
    ///
    /// Its recorded tiles and frames stay: a retry renders only what is
    /// missing. `_now_ms` is not recorded yet (the schema has no retry time);
    /// it keeps the signature time-aware like the other state changes.
    fn reset_job(&mut self, id: u64, _now_ms: u64) -> Result<bool>;

    /// Deletes job `id`'s rows (the job, its tiles, frames and log) in one
    /// transaction and returns the blobs nothing left refers to (the
    /// deleted frames' outputs, the job's scene and module, unless another
    /// frame or job names them), for the caller to remove; `None` if there
    /// is no such job. [`crate::Store::delete_job`] is the whole deletion.
    fn delete_job_rows(&mut self, id: u64) -> Result<Option<Vec<[u8; 32]>>>;

    /// Appends log lines `(job, time_ms, level, message)` in one transaction
    /// (one fsync for the batch). Each gets the next `seq`.
    ///
    /// Lines of a job that does not exist (deleted while its lines were on
    /// their way) are dropped: they could never be read, and `delete_job`
    /// could not clean them up.
    fn append_job_log(&mut self, entries: &[(u64, u64, LogLevel, String)]) -> Result<()>;

    /// Up to `limit` lines of job `job`'s log with `seq > after_seq`, oldest
    /// first. A reader passes the last `seq` it saw to get only newer lines.
    fn job_log(&self, job: u64, after_seq: u64, limit: usize) -> Result<Vec<LogEntry>>;
}

/// Verified tiles and finished frames.
pub trait TileStore {
    /// Records verified tiles in one transaction (one fsync for the batch)
    /// and returns how many were new.
    ///
    /// A tile already recorded under `(job, index)` is skipped, within the
    /// batch as across batches: a speculative twin's late result is harmless
    /// and the first recorded result stays. Each new tile adds one to its
    /// worker's `tiles_done` if that worker is known. A tile of an unknown
    /// job fails the whole batch (nothing is recorded).
    fn record_tiles(&mut self, tiles: &[TileRecord]) -> Result<usize>;

    /// Indices of job `job`'s recorded tiles, ascending.
    fn done_tiles(&self, job: u64) -> Result<Vec<u32>>;

    /// How many tiles of job `job` are recorded.
    fn tile_count(&self, job: u64) -> Result<u32>;

    /// The recorded tiles of one frame of a job, by index: what assembly reads.
    fn frame_tiles(&self, job: u64, frame: i32) -> Result<Vec<TileRecord>>;

    /// The recorded tiles of a job (of one frame when `frame` is given),
    /// by index, without their pixels: `(index, frame, worker, millis)`.
    fn tile_index(&self, job: u64, frame: Option<i32>) -> Result<Vec<(u32, i32, String, u64)>>;

    /// The recorded tile `(job, index)`, if any.
    fn tile(&self, job: u64, index: u32) -> Result<Option<TileRecord>>;

    /// Records an assembled frame, replacing an earlier record of the same
    /// `(job, frame)` (a re-assembly).
    fn record_frame(&mut self, f: &FrameRecord) -> Result<()>;

    /// The assembled frames of job `job`, by frame number.
    fn frames(&self, job: u64) -> Result<Vec<FrameRecord>>;

    /// Frame `frame` of job `job`, if it is assembled.
    fn frame(&self, job: u64, frame: i32) -> Result<Option<FrameRecord>>;
}

/// Workers, their standing (trust, reputation, quarantine) and the credit ledger.
pub trait WorkerStore {
    /// Records that worker `identity` was seen at `now_ms` with this name and
    /// capabilities. A new worker is first seen now; a known one keeps its
    /// first sighting and tile count, and `last_seen_ms` never goes back.
    fn upsert_worker(&mut self, identity: &str, name: &str, capabilities_json: &str, now_ms: u64) -> Result<()>;

    /// Every known worker, by identity.
    fn workers(&self) -> Result<Vec<WorkerRecord>>;

    /// Records a failed check: the evidence, trust back to zero, reputation
    /// halved, a strike. Returns whether the worker is now quarantined.
    fn record_failed_check(
        &mut self,
        worker: &str,
        job: u64,
        tile: u32,
        reason: &str,
        proof_json: &str,
        now_ms: u64,
    ) -> Result<bool>;

    /// Lifts a quarantine and forgets the strikes (an admin's decision;
    /// trust stays at zero and is earned again). Returns whether the worker exists.
    fn clear_worker(&mut self, worker: &str) -> Result<bool>;

    /// A worker's standing, if it is known.
    fn standing(&self, worker: &str) -> Result<Option<Standing>>;

    /// Every known worker with its standing, by identity: what a listing
    /// reads. One query where the backend is across a network (PostgreSQL:
    /// a farm of 1,000 workers asked one by one held an API connection for
    /// a second per listing); the default asks worker by worker.
    fn workers_with_standing(&self) -> Result<Vec<(WorkerRecord, Option<Standing>)>> {
        let mut out = Vec::new();
        for r in self.workers()? {
            let standing = self.standing(&r.identity)?;
            out.push((r, standing));
        }
        Ok(out)
    }

    /// Ledger entries after `after_seq` (ascending), optionally one worker's.
    fn ledger(&self, worker: Option<&str>, after_seq: u64, limit: usize) -> Result<Vec<LedgerEntry>>;

    /// Checks the whole chain: each entry's `prev` is the hash before it
    /// and its `hash` recomputes. Returns the number of entries, or the
    /// first bad `seq`.
    fn verify_ledger(&self) -> Result<std::result::Result<u64, u64>> {
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

/// Worker and API tokens.
pub trait TokenStore {
    /// Creates a token of `kind` and returns its id and its secret: an API
    /// token gets [`Scope::Admin`] (what the first token printed on a new
    /// data directory needs), a worker token no scopes. See
    /// `create_token_scoped`.
    fn create_token(&mut self, kind: TokenKind, label: &str, now_ms: u64) -> Result<(u64, String)> {
        let scopes: &[Scope] = match kind {
            TokenKind::Api => &[Scope::Admin],
            TokenKind::Worker => &[],
        };
        self.create_token_scoped(kind, label, scopes, now_ms)
    }

    /// Creates a token of `kind` granting `scopes` and returns its id and its
    /// secret. Scopes are kept sorted and without duplicates; only API tokens
    /// have any ([`StoreError::Invalid`] for a worker token with scopes,
    /// rather than storing rights nothing checks).
    ///
    /// The secret is the kind's prefix and 64 lowercase hex digits (32 bytes
    /// from the OS's generator). Only its blake3 hash is stored, so the
    /// secret is shown this once and a leaked database grants nothing.
    fn create_token_scoped(
        &mut self,
        kind: TokenKind,
        label: &str,
        scopes: &[Scope],
        now_ms: u64,
    ) -> Result<(u64, String)>;

    /// The live (not revoked) API token whose secret is `secret`, with its
    /// scopes; `None` for an unknown, revoked or worker token. Looked up by
    /// the secret's hash, as `check_token` does.
    fn api_token(&self, secret: &str) -> Result<Option<TokenRecord>>;

    /// The id of the live token of `kind` whose secret is `secret`, or `None`
    /// (unknown, other kind, or revoked).
    ///
    /// Looks the token up by the secret's hash, never by the secret. The
    /// lookup's timing can reveal something about the stored *hashes*, which
    /// does not help anyone find a secret whose hash matches.
    fn check_token(&self, kind: TokenKind, secret: &str) -> Result<Option<u64>>;

    /// Revokes token `id`. Returns whether this call revoked it (`false` if
    /// there is no such token or it was already revoked).
    fn revoke_token(&mut self, id: u64) -> Result<bool>;

    /// Every token (revoked ones too), by id.
    fn tokens(&self) -> Result<Vec<TokenRecord>>;
}

/// Small values by key: the coordinator's identity, manifests' hashes, previews.
pub trait MetaStore {
    /// The metadata value under `key`, if set.
    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>>;

    /// Removes every metadata entry whose key starts with `prefix`; returns them.
    fn take_meta_prefix(&mut self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>>;

    /// Every metadata entry whose key starts with `prefix`, by key.
    fn meta_with_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>>;

    /// Sets the metadata value under `key` (e.g. the coordinator's
    /// certificate and key, made on first start and kept across restarts).
    fn set_meta(&mut self, key: &str, value: &[u8]) -> Result<()>;
}
