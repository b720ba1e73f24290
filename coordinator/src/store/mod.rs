//! The coordinator's durable state: jobs, verified tiles, frames, workers,
//! access tokens and metadata in SQLite, and content-addressed blob files.
//!
//! Why it exists: DESIGN.md invariant 6, *nothing verified is ever lost*. A
//! fact (job accepted, tile verified) is acknowledged only after a method here
//! returned `Ok`, and by then it is on disk: the database runs in WAL mode
//! with `synchronous=FULL`, so a commit survives a killed process and a power
//! cut. Each commit costs an fsync; callers amortize it by batching (see
//! [`Store::record_tiles`]), not by weakening the setting.
//!
//! **API Boundary:** all SQL stays inside this module, and its types are
//! plain Rust, so a PostgreSQL backend can be put behind the same methods.
//!
//! **Threading:** a [`Store`] is `Send` but not `Sync` (it owns one SQLite
//! connection); the coordinator gives it to one thread and sends it work.
//! Blob files are the exception: [`Blobs`] (from [`Store::blobs`]) is
//! `Clone + Send + Sync` and can be used from any thread.
//!
//! **Time:** every timestamp is Unix milliseconds chosen by the caller
//! (`now_ms` arguments and record fields). The store never reads the clock,
//! so tests and the simulation control time, and a record's times are those
//! of the event, not of the write.
//!
//! Layout of the data directory:
//!
//! ```text
//! <dir>/tessera.db          SQLite database (plus -wal and -shm files)
//! <dir>/blobs/ab/abcd…      blobs, named by 64 hex digits of blake3
//! ```

mod blobs;
mod proofs;
pub mod schema;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Params, Row, TransactionBehavior};

pub use blobs::Blobs;
use blobs::{io_err, sync_dir};
pub use proofs::{ledger_hash, LedgerEntry, Standing, TileCredit, QUARANTINE_AFTER};

/// The database file's name inside the data directory.
pub const DB_FILE: &str = "tessera.db";

/// The blob directory's name inside the data directory.
pub const BLOB_DIR: &str = "blobs";

/// How long a statement waits for another connection's lock (an operator's
/// `sqlite3` shell, a backup) before failing with "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite refused or failed a statement, or a stored value did not decode.
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A file or directory of the store could not be read or written.
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// A blob file's bytes no longer hash to its name: it was altered on disk.
    #[error("blob {hash} is corrupt: {} hashes to {actual}", path.display())]
    Corrupt { hash: String, actual: String, path: PathBuf },
    /// The named thing (blob, job) does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The database was written by a newer Tessera; migrating it down or
    /// guessing at its meaning could lose data, so it is refused.
    #[error(
        "{}: schema version {found} is newer than this binary understands ({supported}); \
         run a newer tessera on this data directory",
        path.display()
    )]
    SchemaTooNew { path: PathBuf, found: i64, supported: i64 },
    /// The file is an SQLite database, but not one Tessera created.
    #[error("{}: not a Tessera database (it has tables, but no Tessera schema version)", path.display())]
    NotAStore { path: PathBuf },
    /// A number does not fit the store's signed 64-bit integers.
    #[error("{what} = {value} is out of range (at most {})", i64::MAX)]
    OutOfRange { what: &'static str, value: u64 },
    /// The operating system had no randomness to make a token from.
    #[error("no randomness for a token: {0}")]
    Entropy(getrandom::Error),
    /// The caller asked for something the store refuses to record (scopes on
    /// a worker token).
    #[error("{0}")]
    Invalid(String),
}

/// Shorthand for this module's results.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Where a job is in its life. Stored as lowercase text (`"queued"`, …).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobState {
    Queued,
    Running,
    Done,
    Failed,
    Cancelled,
}

impl JobState {
    /// Whether the job will never run again (done, failed or cancelled).
    pub fn is_finished(&self) -> bool {
        matches!(self, JobState::Done | JobState::Failed | JobState::Cancelled)
    }

    /// The lowercase name, as stored and as the API shows it.
    pub fn as_str(&self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    fn parse(s: &str) -> Option<JobState> {
        Some(match s {
            "queued" => JobState::Queued,
            "running" => JobState::Running,
            "done" => JobState::Done,
            "failed" => JobState::Failed,
            "cancelled" => JobState::Cancelled,
            _ => return None,
        })
    }
}

/// A job as submitted, before the store gives it an id.
#[derive(Clone, Debug, PartialEq)]
pub struct NewJob {
    pub name: String,
    /// The job's settings (scene and module hashes, sizes, samples) as JSON;
    /// opaque to the store.
    pub spec_json: String,
    pub priority: i32,
    /// Tiles per frame.
    pub tiles: u32,
    pub frames: Vec<i32>,
}

/// A stored job.
#[derive(Clone, Debug, PartialEq)]
pub struct JobRecord {
    pub id: u64,
    pub name: String,
    pub spec_json: String,
    pub priority: i32,
    pub tiles: u32,
    pub frames: Vec<i32>,
    pub state: JobState,
    /// Why the job failed, when it did.
    pub error: Option<String>,
    pub created_ms: u64,
    /// When the job reached a finished state; `None` while it is not finished.
    pub finished_ms: Option<u64>,
}

/// A verified tile result. Identified by `(job, index)`: a job's tile indices
/// run over all its frames.
#[derive(Clone, Debug, PartialEq)]
pub struct TileRecord {
    pub job: u64,
    pub index: u32,
    pub frame: i32,
    /// The hash the tile was verified under. The store keeps it as given and
    /// does not recompute it from `data`.
    pub hash: [u8; 32],
    /// The tile's encoded float accumulators (a few KiB to about 1 MiB).
    pub data: Vec<u8>,
    /// Identity of the worker whose result was accepted.
    pub worker: String,
    pub fuel: u64,
    pub millis: u64,
    /// The proof-of-render record (JSON: commitment, signature, checks);
    /// `None` for tiles stored before proofs existed.
    pub proof: Option<String>,
    /// Credit the worker earns for it (written to the ledger with the
    /// tile); not read back.
    pub credit: Option<TileCredit>,
    /// Another worker credited for it (its equal result confirmed this one).
    pub also_credit: Option<(String, TileCredit)>,
}

/// An assembled frame: blob hashes of its outputs.
#[derive(Clone, Debug, PartialEq)]
pub struct FrameRecord {
    pub job: u64,
    pub frame: i32,
    /// The EXR file; `None` when the job did not ask for EXR.
    pub exr: Option<[u8; 32]>,
    /// The PNG file; `None` when the job did not ask for PNG.
    pub png: Option<[u8; 32]>,
    /// Always made: the web page and the API's frame listings show it
    /// (from the denoised image when there is one).
    pub thumbnail: [u8; 32],
    pub finished_ms: u64,
    /// The denoised EXR and PNG of a denoised job (`JobSpec::denoise`), in
    /// the formats the job asked for; `None` otherwise.
    pub denoised_exr: Option<[u8; 32]>,
    pub denoised_png: Option<[u8; 32]>,
}

impl FrameRecord {
    /// Every blob the frame refers to.
    pub fn blobs(&self) -> impl Iterator<Item = [u8; 32]> {
        [self.exr, self.png, Some(self.thumbnail), self.denoised_exr, self.denoised_png].into_iter().flatten()
    }
}

/// A worker the coordinator has seen, keyed by its identity (its key's
/// fingerprint).
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerRecord {
    pub identity: String,
    pub name: String,
    pub capabilities_json: String,
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    /// Tiles of this worker's that were recorded first (its twins' don't count).
    pub tiles_done: u64,
}

/// What a token grants: joining as a worker, or using the HTTP API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    Worker,
    Api,
}

impl TokenKind {
    /// The lowercase name, as stored.
    pub fn as_str(&self) -> &'static str {
        match self {
            TokenKind::Worker => "worker",
            TokenKind::Api => "api",
        }
    }

    /// The secret's prefix (`tw_`, `ta_`): tells a person which kind a
    /// secret is, and lets secret scanners recognise leaked ones.
    pub fn prefix(&self) -> &'static str {
        match self {
            TokenKind::Worker => "tw_",
            TokenKind::Api => "ta_",
        }
    }

    fn parse(s: &str) -> Option<TokenKind> {
        match s {
            "worker" => Some(TokenKind::Worker),
            "api" => Some(TokenKind::Api),
            _ => None,
        }
    }
}

/// What an API token may do. Ordered `Read < Submit < Admin`, the order a
/// token's scopes are kept and shown in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Every `GET`: jobs, frames, logs, workers, status.
    Read,
    /// Submitting, cancelling and retrying jobs. Does not imply `Read`, so a
    /// render button can hold an upload-only token.
    Submit,
    /// Everything, including deleting jobs.
    Admin,
}

impl Scope {
    /// Every scope, in order.
    pub const ALL: [Scope; 3] = [Scope::Read, Scope::Submit, Scope::Admin];

    /// The lowercase name, as stored, typed on the command line and shown.
    pub fn as_str(&self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Submit => "submit",
            Scope::Admin => "admin",
        }
    }

    /// The scope named `s` (lowercase, as [`Scope::as_str`] writes it).
    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|scope| scope.as_str() == s)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a token holding `scopes` may do what needs `needed`: `Admin`
/// grants everything, any other scope only itself (`Submit` does not imply
/// `Read`).
pub fn grants(scopes: &[Scope], needed: Scope) -> bool {
    scopes.iter().any(|&s| s == Scope::Admin || s == needed)
}

/// A token's public facts. The secret itself is never stored.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenRecord {
    pub id: u64,
    pub kind: TokenKind,
    pub label: String,
    pub created_ms: u64,
    pub revoked: bool,
    /// What the token may do on the API, sorted and without duplicates;
    /// empty for worker tokens.
    pub scopes: Vec<Scope>,
}

/// How bad a job log line is. Stored as lowercase text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    Info,
    Warn,
    Error,
}

impl LogLevel {
    /// The lowercase name, as stored and as the API shows it.
    pub fn as_str(&self) -> &'static str {
        match self {
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }

    /// The level named `s` (lowercase, as [`LogLevel::as_str`] writes it).
    pub fn parse(s: &str) -> Option<LogLevel> {
        Some(match s {
            "info" => LogLevel::Info,
            "warn" => LogLevel::Warn,
            "error" => LogLevel::Error,
            _ => return None,
        })
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of a job's log.
#[derive(Clone, Debug, PartialEq)]
pub struct LogEntry {
    /// Increases over the whole store and is never reused: a reader's cursor
    /// (`after`).
    pub seq: u64,
    pub job: u64,
    pub time_ms: u64,
    pub level: LogLevel,
    pub message: String,
}

/// The coordinator's store: one SQLite connection and the blob directory.
///
/// Methods that take `&mut self` write; each is one transaction, durable
/// when it returns `Ok`.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    conn: Connection,
    blobs: Blobs,
}

const JOB_COLUMNS: &str = "id, name, spec_json, priority, tiles, frames_json, state, error, created_ms, finished_ms";
const TILE_COLUMNS: &str = "job, idx, frame, hash, data, worker, fuel, millis, proof";
const FRAME_COLUMNS: &str = "job, frame, exr, png, thumbnail, finished_ms, denoised_exr, denoised_png";
const TOKEN_COLUMNS: &str = "id, kind, label, created_ms, revoked, scopes";

impl Store {
    /// Opens the store in `dir`, creating the directory, the database and
    /// the schema as needed.
    ///
    /// Refuses a database written by a newer binary
    /// ([`StoreError::SchemaTooNew`]) and an SQLite file that is not a
    /// Tessera store. Removes blob temporaries left by a crash.
    pub fn open(dir: &Path) -> Result<Store> {
        fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let db_path = dir.join(DB_FILE);
        let mut conn = Connection::open(&db_path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // WAL: a commit appends to the log instead of rewriting pages through
        // a rollback journal, so it costs one fsync, and readers never block.
        let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            // Still durable (synchronous=FULL holds in any mode), only slower.
            tracing::warn!(path = %db_path.display(), mode, "SQLite refused WAL mode; using its journal mode");
        }
        // FULL: fsync the WAL on every commit, so an acknowledged fact survives
        // power loss too (NORMAL would only survive a killed process).
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        schema::migrate(&mut conn, &db_path)?;
        // The database (and WAL) files' directory entries must be durable too.
        sync_dir(dir)?;
        let blobs = Blobs::open(&dir.join(BLOB_DIR))?;
        Ok(Store { dir: dir.to_owned(), conn, blobs })
    }

    /// The data directory this store was opened on.
    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    /// Turns off SQLite's automatic WAL checkpoints on this connection. The
    /// farm's writer does this and runs [`Store::checkpoint`] on another
    /// connection instead, so copying the log back into the database (and
    /// its fsync) never stalls a commit that workers are waiting on.
    pub fn disable_autocheckpoint(&self) -> Result<()> {
        self.conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        Ok(())
    }

    /// A passive WAL checkpoint: copies what it can without waiting for, or
    /// blocking, the writer. Returns (log frames, frames checkpointed).
    pub fn checkpoint(&self) -> Result<(i64, i64)> {
        Ok(self.conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| Ok((row.get(1)?, row.get(2)?)))?)
    }

    /// SQLite's journal mode as it is now (`"wal"` unless SQLite refused it);
    /// for diagnostics and tests.
    pub fn journal_mode(&self) -> Result<String> {
        Ok(self.conn.pragma_query_value(None, "journal_mode", |row| row.get(0))?)
    }

    // ---- jobs ----

    /// Records a newly accepted job as [`JobState::Queued`], created at
    /// `now_ms`, and returns its id (ids increase and are never reused).
    pub fn insert_job(&mut self, job: &NewJob, now_ms: u64) -> Result<u64> {
        let frames =
            serde_json::to_string(&job.frames).map_err(|e| rusqlite::Error::ToSqlConversionFailure(e.into()))?;
        self.conn.execute(
            "INSERT INTO jobs (name, spec_json, priority, tiles, frames_json, state, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                job.name,
                job.spec_json,
                job.priority,
                job.tiles,
                frames,
                JobState::Queued.as_str(),
                to_sql(now_ms, "created_ms")?
            ],
        )?;
        from_sql(self.conn.last_insert_rowid())
    }

    /// The job `id`, if it exists.
    pub fn job(&self, id: u64) -> Result<Option<JobRecord>> {
        let Ok(id) = i64::try_from(id) else { return Ok(None) };
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1");
        Ok(self.conn.prepare_cached(&sql)?.query_row([id], job_from_row).optional()?)
    }

    /// Every job, newest first: the order people look at a job list in.
    pub fn jobs(&self) -> Result<Vec<JobRecord>> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs ORDER BY id DESC");
        query_vec(&self.conn, &sql, [], job_from_row)
    }

    /// Jobs that are queued or running, oldest first: what a restarted
    /// coordinator resumes.
    pub fn unfinished_jobs(&self) -> Result<Vec<JobRecord>> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE state IN ('queued', 'running') ORDER BY id");
        query_vec(&self.conn, &sql, [], job_from_row)
    }

    /// Moves job `id` to `state` with `error` (replacing any earlier error).
    ///
    /// Entering a finished state sets `finished_ms` to `now_ms`; an unfinished
    /// state clears it. The store does not police transitions; the scheduler
    /// does. An unknown job is [`StoreError::NotFound`].
    pub fn set_job_state(&mut self, id: u64, state: JobState, error: Option<&str>, now_ms: u64) -> Result<()> {
        let finished = if state.is_finished() { Some(to_sql(now_ms, "finished_ms")?) } else { None };
        let changed = match i64::try_from(id) {
            Ok(key) => self.conn.execute(
                "UPDATE jobs SET state = ?2, error = ?3, finished_ms = ?4 WHERE id = ?1",
                params![key, state.as_str(), error, finished],
            )?,
            Err(_) => 0,
        };
        if changed == 0 {
            return Err(StoreError::NotFound(format!("job {id}")));
        }
        Ok(())
    }

    /// Puts a failed or cancelled job `id` back in the queue for a retry:
    /// state `queued`, no error, not finished. Returns whether it did; a job
    /// in any other state (or none) is left alone, so a retry that races a
    /// job finishing or starting cannot resurrect or restart it.
    ///
    /// Its recorded tiles and frames stay: a retry renders only what is
    /// missing. `_now_ms` is not recorded yet (the schema has no retry time);
    /// it keeps the signature time-aware like the other state changes.
    pub fn reset_job(&mut self, id: u64, _now_ms: u64) -> Result<bool> {
        let Ok(id) = i64::try_from(id) else { return Ok(false) };
        let changed = self.conn.execute(
            "UPDATE jobs SET state = 'queued', error = NULL, finished_ms = NULL
             WHERE id = ?1 AND state IN ('failed', 'cancelled')",
            [id],
        )?;
        Ok(changed != 0)
    }

    /// Deletes job `id` with its tiles, frames and log, and then the blob
    /// files nothing else refers to. Returns `false` if there is no such job.
    ///
    /// The rows go in one transaction. The blobs considered are the deleted
    /// frames' outputs and the job's scene and module (the `"scene"` and
    /// `"module"` hex strings of its spec); one is removed only if no
    /// remaining frame names it and no remaining job's spec contains its hex
    /// (content addressing makes blobs shared: two jobs of one scene, two
    /// identical frames). The check runs inside the transaction, on the state
    /// being committed; the files are removed after the commit.
    ///
    /// A crash between the commit and the removals leaves orphan blob files.
    /// That is harmless: a blob is content-addressed and only ever served
    /// through a row naming it, and a later upload of the same bytes reuses
    /// it. A file that cannot be removed is likewise only logged, since the
    /// job is gone either way.
    ///
    /// The store does not police states: the caller refuses to delete a job
    /// that may still run (its tiles would be recorded against a missing job
    /// and fail). Blobs are written outside the store's lock, so a blob being
    /// uploaded for a new job at this very moment can lose its file; callers
    /// that care serialise submissions and deletions.
    pub fn delete_job(&mut self, id: u64) -> Result<bool> {
        let Ok(key) = i64::try_from(id) else { return Ok(false) };
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let spec: Option<String> = tx
            .prepare_cached("SELECT spec_json FROM jobs WHERE id = ?1")?
            .query_row([key], |row| row.get(0))
            .optional()?;
        let Some(spec) = spec else { return Ok(false) };
        let mut candidates: BTreeSet<[u8; 32]> = BTreeSet::new();
        {
            let sql = format!("SELECT {FRAME_COLUMNS} FROM frames WHERE job = ?1");
            let mut stmt = tx.prepare_cached(&sql)?;
            let mut rows = stmt.query([key])?;
            while let Some(row) = rows.next()? {
                candidates.extend(frame_from_row(row)?.blobs());
            }
        }
        candidates.extend(spec_blobs(&spec));
        tx.execute("DELETE FROM tiles WHERE job = ?1", [key])?;
        tx.execute("DELETE FROM frames WHERE job = ?1", [key])?;
        tx.execute("DELETE FROM job_log WHERE job = ?1", [key])?;
        tx.execute("DELETE FROM jobs WHERE id = ?1", [key])?;
        let mut unreferenced = Vec::new();
        {
            let mut in_frames = tx.prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM frames WHERE exr = ?1 OR png = ?1 OR thumbnail = ?1
                     OR denoised_exr = ?1 OR denoised_png = ?1)",
            )?;
            // lower(): a spec written by hand may spell a hash in capitals.
            let mut in_jobs =
                tx.prepare_cached("SELECT EXISTS (SELECT 1 FROM jobs WHERE instr(lower(spec_json), ?1) > 0)")?;
            for hash in candidates {
                let framed: bool = in_frames.query_row([&hash], |row| row.get(0))?;
                if !framed && !in_jobs.query_row([hex(&hash)], |row| row.get::<_, bool>(0))? {
                    unreferenced.push(hash);
                }
            }
        }
        tx.commit()?;
        for hash in unreferenced {
            if let Err(e) = self.blobs.remove(&hash) {
                tracing::warn!(job = id, blob = %hex(&hash), error = %e, "could not remove a blob file");
            }
        }
        Ok(true)
    }

    // ---- tiles ----

    /// Records verified tiles in one transaction (one fsync for the batch)
    /// and returns how many were new.
    ///
    /// A tile already recorded under `(job, index)` is skipped, within the
    /// batch as across batches: a speculative twin's late result is harmless
    /// and the first recorded result stays. Each new tile adds one to its
    /// worker's `tiles_done` if that worker is known. A tile of an unknown
    /// job fails the whole batch (nothing is recorded).
    pub fn record_tiles(&mut self, tiles: &[TileRecord]) -> Result<usize> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut new = 0;
        let mut credit: BTreeMap<&str, i64> = BTreeMap::new();
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO tiles (job, idx, frame, hash, data, worker, fuel, millis, proof)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (job, idx) DO NOTHING",
            )?;
            for t in tiles {
                let inserted = insert.execute(params![
                    to_sql(t.job, "tile job")?,
                    t.index,
                    t.frame,
                    t.hash,
                    t.data,
                    t.worker,
                    to_sql(t.fuel, "tile fuel")?,
                    to_sql(t.millis, "tile millis")?,
                    t.proof,
                ])?;
                if inserted != 0 {
                    new += 1;
                    *credit.entry(t.worker.as_str()).or_default() += 1;
                    if let Some(c) = &t.credit {
                        proofs::credit_tile(&tx, &t.worker, t.job, t.index, c)?;
                    }
                    if let Some((worker, c)) = &t.also_credit {
                        proofs::credit_tile(&tx, worker, t.job, t.index, c)?;
                    }
                }
            }
            let mut bump = tx.prepare_cached("UPDATE workers SET tiles_done = tiles_done + ?2 WHERE identity = ?1")?;
            for (worker, n) in &credit {
                bump.execute(params![worker, n])?;
            }
        }
        tx.commit()?;
        Ok(new)
    }

    /// Indices of job `job`'s recorded tiles, ascending.
    pub fn done_tiles(&self, job: u64) -> Result<Vec<u32>> {
        let Ok(job) = i64::try_from(job) else { return Ok(Vec::new()) };
        query_vec(&self.conn, "SELECT idx FROM tiles WHERE job = ?1 ORDER BY idx", [job], |row| row.get(0))
    }

    /// How many tiles of job `job` are recorded.
    pub fn tile_count(&self, job: u64) -> Result<u32> {
        let Ok(job) = i64::try_from(job) else { return Ok(0) };
        Ok(self.conn.prepare_cached("SELECT count(*) FROM tiles WHERE job = ?1")?.query_row([job], |row| row.get(0))?)
    }

    /// The recorded tiles of one frame of a job, by index: what assembly reads.
    pub fn frame_tiles(&self, job: u64, frame: i32) -> Result<Vec<TileRecord>> {
        let Ok(job) = i64::try_from(job) else { return Ok(Vec::new()) };
        let sql = format!("SELECT {TILE_COLUMNS} FROM tiles WHERE job = ?1 AND frame = ?2 ORDER BY idx");
        query_vec(&self.conn, &sql, params![job, frame], tile_from_row)
    }

    /// The recorded tiles of a job (of one frame when `frame` is given),
    /// by index, without their pixels: `(index, frame, worker, millis)`.
    pub fn tile_index(&self, job: u64, frame: Option<i32>) -> Result<Vec<(u32, i32, String, u64)>> {
        let Ok(job) = i64::try_from(job) else { return Ok(Vec::new()) };
        let sql = "SELECT idx, frame, worker, millis FROM tiles
                   WHERE job = ?1 AND (?2 IS NULL OR frame = ?2) ORDER BY idx";
        query_vec(&self.conn, sql, params![job, frame], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, get_u64(row, 3)?))
        })
    }

    /// The recorded tile `(job, index)`, if any.
    pub fn tile(&self, job: u64, index: u32) -> Result<Option<TileRecord>> {
        let Ok(job) = i64::try_from(job) else { return Ok(None) };
        let sql = format!("SELECT {TILE_COLUMNS} FROM tiles WHERE job = ?1 AND idx = ?2");
        Ok(self.conn.prepare_cached(&sql)?.query_row(params![job, index], tile_from_row).optional()?)
    }

    // ---- frames ----

    /// Records an assembled frame, replacing an earlier record of the same
    /// `(job, frame)` (a re-assembly).
    pub fn record_frame(&mut self, f: &FrameRecord) -> Result<()> {
        self.conn.execute(
            "INSERT INTO frames (job, frame, exr, png, thumbnail, finished_ms, denoised_exr, denoised_png)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (job, frame) DO UPDATE SET
                 exr = excluded.exr, png = excluded.png, thumbnail = excluded.thumbnail,
                 finished_ms = excluded.finished_ms,
                 denoised_exr = excluded.denoised_exr, denoised_png = excluded.denoised_png",
            params![
                to_sql(f.job, "frame job")?,
                f.frame,
                f.exr,
                f.png,
                f.thumbnail,
                to_sql(f.finished_ms, "frame finished_ms")?,
                f.denoised_exr,
                f.denoised_png,
            ],
        )?;
        Ok(())
    }

    /// The assembled frames of job `job`, by frame number.
    pub fn frames(&self, job: u64) -> Result<Vec<FrameRecord>> {
        let Ok(job) = i64::try_from(job) else { return Ok(Vec::new()) };
        let sql = format!("SELECT {FRAME_COLUMNS} FROM frames WHERE job = ?1 ORDER BY frame");
        query_vec(&self.conn, &sql, [job], frame_from_row)
    }

    /// Frame `frame` of job `job`, if it is assembled.
    pub fn frame(&self, job: u64, frame: i32) -> Result<Option<FrameRecord>> {
        let Ok(job) = i64::try_from(job) else { return Ok(None) };
        let sql = format!("SELECT {FRAME_COLUMNS} FROM frames WHERE job = ?1 AND frame = ?2");
        Ok(self.conn.prepare_cached(&sql)?.query_row(params![job, frame], frame_from_row).optional()?)
    }

    // ---- job logs ----

    /// Appends log lines `(job, time_ms, level, message)` in one transaction
    /// (one fsync for the batch). Each gets the next `seq`.
    ///
    /// Lines of a job that does not exist (deleted while its lines were on
    /// their way) are dropped: they could never be read, and `delete_job`
    /// could not clean them up.
    pub fn append_job_log(&mut self, entries: &[(u64, u64, LogLevel, String)]) -> Result<()> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO job_log (job, time_ms, level, message)
                 SELECT ?1, ?2, ?3, ?4 WHERE EXISTS (SELECT 1 FROM jobs WHERE id = ?1)",
            )?;
            for (job, time_ms, level, message) in entries {
                // An id past i64 cannot name a stored job.
                let Ok(job) = i64::try_from(*job) else { continue };
                insert.execute(params![job, to_sql(*time_ms, "log time_ms")?, level.as_str(), message])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Up to `limit` lines of job `job`'s log with `seq > after_seq`, oldest
    /// first. A reader passes the last `seq` it saw to get only newer lines.
    pub fn job_log(&self, job: u64, after_seq: u64, limit: usize) -> Result<Vec<LogEntry>> {
        let (Ok(job), Ok(after)) = (i64::try_from(job), i64::try_from(after_seq)) else { return Ok(Vec::new()) };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        query_vec(
            &self.conn,
            "SELECT seq, job, time_ms, level, message FROM job_log
             WHERE job = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
            params![job, after, limit],
            |row| {
                let level: String = row.get(3)?;
                Ok(LogEntry {
                    seq: get_u64(row, 0)?,
                    job: get_u64(row, 1)?,
                    time_ms: get_u64(row, 2)?,
                    level: LogLevel::parse(&level).ok_or_else(|| bad_text(3, "log level", &level))?,
                    message: row.get(4)?,
                })
            },
        )
    }

    // ---- workers ----

    /// Records that worker `identity` was seen at `now_ms` with this name and
    /// capabilities. A new worker is first seen now; a known one keeps its
    /// first sighting and tile count, and `last_seen_ms` never goes back.
    pub fn upsert_worker(&mut self, identity: &str, name: &str, capabilities_json: &str, now_ms: u64) -> Result<()> {
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

    /// Every known worker, by identity.
    pub fn workers(&self) -> Result<Vec<WorkerRecord>> {
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

    // ---- tokens ----

    /// Creates a token of `kind` and returns its id and its secret: an API
    /// token gets [`Scope::Admin`] (what the first token printed on a new
    /// data directory needs), a worker token no scopes. See
    /// [`Store::create_token_scoped`].
    pub fn create_token(&mut self, kind: TokenKind, label: &str, now_ms: u64) -> Result<(u64, String)> {
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
    pub fn create_token_scoped(
        &mut self,
        kind: TokenKind,
        label: &str,
        scopes: &[Scope],
        now_ms: u64,
    ) -> Result<(u64, String)> {
        if kind == TokenKind::Worker && !scopes.is_empty() {
            return Err(StoreError::Invalid("worker tokens have no API scopes".into()));
        }
        let mut random = [0u8; 32];
        getrandom::fill(&mut random).map_err(StoreError::Entropy)?;
        let secret = format!("{}{}", kind.prefix(), hex(&random));
        self.conn.execute(
            "INSERT INTO tokens (kind, label, secret_hash, created_ms, scopes) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![kind.as_str(), label, secret_hash(&secret), to_sql(now_ms, "created_ms")?, scopes_text(scopes)],
        )?;
        Ok((from_sql(self.conn.last_insert_rowid())?, secret))
    }

    /// The live (not revoked) API token whose secret is `secret`, with its
    /// scopes; `None` for an unknown, revoked or worker token. Looked up by
    /// the secret's hash, as [`Store::check_token`] does.
    pub fn api_token(&self, secret: &str) -> Result<Option<TokenRecord>> {
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE secret_hash = ?1 AND kind = 'api' AND revoked = 0");
        Ok(self.conn.prepare_cached(&sql)?.query_row([secret_hash(secret)], token_from_row).optional()?)
    }

    /// The id of the live token of `kind` whose secret is `secret`, or `None`
    /// (unknown, other kind, or revoked).
    ///
    /// Looks the token up by the secret's hash, never by the secret. The
    /// lookup's timing can reveal something about the stored *hashes*, which
    /// does not help anyone find a secret whose hash matches.
    pub fn check_token(&self, kind: TokenKind, secret: &str) -> Result<Option<u64>> {
        let mut stmt =
            self.conn.prepare_cached("SELECT id FROM tokens WHERE secret_hash = ?1 AND kind = ?2 AND revoked = 0")?;
        let id = stmt.query_row(params![secret_hash(secret), kind.as_str()], |row| get_u64(row, 0)).optional()?;
        Ok(id)
    }

    /// Revokes token `id`. Returns whether this call revoked it (`false` if
    /// there is no such token or it was already revoked).
    pub fn revoke_token(&mut self, id: u64) -> Result<bool> {
        let Ok(id) = i64::try_from(id) else { return Ok(false) };
        let changed = self.conn.execute("UPDATE tokens SET revoked = 1 WHERE id = ?1 AND revoked = 0", [id])?;
        Ok(changed != 0)
    }

    /// Every token (revoked ones too), by id.
    pub fn tokens(&self) -> Result<Vec<TokenRecord>> {
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY id");
        query_vec(&self.conn, &sql, [], token_from_row)
    }

    // ---- metadata ----

    /// The metadata value under `key`, if set.
    pub fn meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let mut stmt = self.conn.prepare_cached("SELECT value FROM meta WHERE key = ?1")?;
        Ok(stmt.query_row([key], |row| row.get(0)).optional()?)
    }

    /// Removes every metadata entry whose key starts with `prefix`; returns them.
    pub fn take_meta_prefix(&mut self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let entries = self.meta_with_prefix(prefix)?;
        self.conn.execute("DELETE FROM meta WHERE substr(key, 1, length(?1)) = ?1", [prefix])?;
        Ok(entries)
    }

    /// Every metadata entry whose key starts with `prefix`, by key.
    pub fn meta_with_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let sql = "SELECT key, value FROM meta WHERE substr(key, 1, length(?1)) = ?1 ORDER BY key";
        query_vec(&self.conn, sql, [prefix], |row| Ok((row.get(0)?, row.get(1)?)))
    }

    /// Sets the metadata value under `key` (e.g. the coordinator's
    /// certificate and key, made on first start and kept across restarts).
    pub fn set_meta(&mut self, key: &str, value: &[u8]) -> Result<()> {
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    // ---- blobs ----

    /// The blob directory, for use from other threads.
    pub fn blobs(&self) -> &Blobs {
        &self.blobs
    }

    /// Stores `bytes` as a blob (durably) and returns their blake3 hash.
    /// See [`Blobs::put`].
    pub fn put_blob(&self, bytes: &[u8]) -> Result<[u8; 32]> {
        self.blobs.put(bytes)
    }

    /// Reads the blob named `hash`, verified. See [`Blobs::get`].
    pub fn get_blob(&self, hash: &[u8; 32]) -> Result<Vec<u8>> {
        self.blobs.get(hash)
    }

    /// Whether the blob named `hash` is stored.
    pub fn has_blob(&self, hash: &[u8; 32]) -> Result<bool> {
        self.blobs.has(hash)
    }

    /// Where the blob named `hash` lives (whether or not it exists).
    pub fn blob_path(&self, hash: &[u8; 32]) -> PathBuf {
        self.blobs.path(hash)
    }
}

/// blake3 of a token secret: what the tokens table keys on.
fn secret_hash(secret: &str) -> [u8; 32] {
    *blake3::hash(secret.as_bytes()).as_bytes()
}

/// Scopes as stored: sorted, deduplicated names joined by commas (`""` for
/// none).
fn scopes_text(scopes: &[Scope]) -> String {
    let set: BTreeSet<Scope> = scopes.iter().copied().collect();
    set.iter().map(Scope::as_str).collect::<Vec<_>>().join(",")
}

/// The scopes stored as `text`, sorted and deduplicated; `None` if a name is
/// unknown.
fn parse_scopes(text: &str) -> Option<Vec<Scope>> {
    let mut scopes = Vec::new();
    for name in text.split(',').filter(|n| !n.is_empty()) {
        scopes.push(Scope::parse(name)?);
    }
    scopes.sort();
    scopes.dedup();
    Some(scopes)
}

/// The blob hashes a job's spec names: its `"scene"` and `"module"` hex
/// strings. A spec that is not JSON or lacks them names none (the store
/// treats specs as opaque; such a job's blobs are simply kept).
fn spec_blobs(spec_json: &str) -> Vec<[u8; 32]> {
    let Ok(spec) = serde_json::from_str::<serde_json::Value>(spec_json) else { return Vec::new() };
    ["scene", "module"]
        .into_iter()
        .filter_map(|field| spec.get(field)?.as_str())
        .filter_map(|h| blake3::Hash::from_hex(h).ok())
        .map(|h| *h.as_bytes())
        .collect()
}

/// Lowercase hex of a hash.
fn hex(bytes: &[u8; 32]) -> String {
    blake3::Hash::from_bytes(*bytes).to_hex().to_string()
}

/// A `u64` as SQLite's `i64`; larger values are refused, not wrapped.
fn to_sql(value: u64, what: &'static str) -> Result<i64> {
    i64::try_from(value).map_err(|_| StoreError::OutOfRange { what, value })
}

/// An id SQLite generated, as `u64` (always positive for AUTOINCREMENT).
fn from_sql(value: i64) -> Result<u64> {
    u64::try_from(value).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(0, value).into())
}

/// Column `idx` as a `u64`; a negative stored value is an error, not a wrap.
fn get_u64(row: &Row<'_>, idx: usize) -> rusqlite::Result<u64> {
    let value: i64 = row.get(idx)?;
    u64::try_from(value).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(idx, value))
}

fn get_opt_u64(row: &Row<'_>, idx: usize) -> rusqlite::Result<Option<u64>> {
    let value: Option<i64> = row.get(idx)?;
    value.map(|v| u64::try_from(v).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(idx, v))).transpose()
}

/// A text column that does not decode to what it should hold.
fn bad_text(idx: usize, what: &str, value: &str) -> rusqlite::Error {
    let msg = format!("unknown {what} {value:?}");
    rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, msg.into())
}

/// Runs a (cached) query and collects its rows, failing on the first row
/// that does not decode.
fn query_vec<T>(
    conn: &Connection,
    sql: &str,
    params: impl Params,
    f: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(params, f)?;
    Ok(rows.collect::<rusqlite::Result<Vec<T>>>()?)
}

fn job_from_row(row: &Row<'_>) -> rusqlite::Result<JobRecord> {
    let frames: String = row.get(5)?;
    let state: String = row.get(6)?;
    Ok(JobRecord {
        id: get_u64(row, 0)?,
        name: row.get(1)?,
        spec_json: row.get(2)?,
        priority: row.get(3)?,
        tiles: row.get(4)?,
        frames: serde_json::from_str(&frames)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(5, rusqlite::types::Type::Text, Box::new(e)))?,
        state: JobState::parse(&state).ok_or_else(|| bad_text(6, "job state", &state))?,
        error: row.get(7)?,
        created_ms: get_u64(row, 8)?,
        finished_ms: get_opt_u64(row, 9)?,
    })
}

fn tile_from_row(row: &Row<'_>) -> rusqlite::Result<TileRecord> {
    Ok(TileRecord {
        job: get_u64(row, 0)?,
        index: row.get(1)?,
        frame: row.get(2)?,
        hash: row.get(3)?,
        data: row.get(4)?,
        worker: row.get(5)?,
        fuel: get_u64(row, 6)?,
        millis: get_u64(row, 7)?,
        proof: row.get(8)?,
        credit: None,
        also_credit: None,
    })
}

fn token_from_row(row: &Row<'_>) -> rusqlite::Result<TokenRecord> {
    let kind: String = row.get(1)?;
    let scopes: String = row.get(5)?;
    Ok(TokenRecord {
        id: get_u64(row, 0)?,
        kind: TokenKind::parse(&kind).ok_or_else(|| bad_text(1, "token kind", &kind))?,
        label: row.get(2)?,
        created_ms: get_u64(row, 3)?,
        revoked: row.get(4)?,
        scopes: parse_scopes(&scopes).ok_or_else(|| bad_text(5, "token scopes", &scopes))?,
    })
}

fn frame_from_row(row: &Row<'_>) -> rusqlite::Result<FrameRecord> {
    Ok(FrameRecord {
        job: get_u64(row, 0)?,
        frame: row.get(1)?,
        exr: row.get(2)?,
        png: row.get(3)?,
        thumbnail: row.get(4)?,
        finished_ms: get_u64(row, 5)?,
        denoised_exr: row.get(6)?,
        denoised_png: row.get(7)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Per-connection settings, invisible to a second connection: checked here.
    #[test]
    fn connection_is_durable_and_checks_foreign_keys() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let pragma = |name: &str| -> i64 { store.conn.pragma_query_value(None, name, |row| row.get(0)).unwrap() };
        assert_eq!(pragma("synchronous"), 2, "synchronous=FULL");
        assert_eq!(pragma("foreign_keys"), 1);
        assert_eq!(pragma("busy_timeout"), 5_000);
    }
}
