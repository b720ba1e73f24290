//! The coordinator's durable state: jobs, verified tiles, frames, workers,
//! access tokens and metadata in a database, and content-addressed blob
//! files.
//!
//! Why it exists: DESIGN.md invariant 6, *nothing verified is ever lost*. A
//! fact (job accepted, tile verified) is acknowledged only after a method here
//! returned `Ok`, and by then it is on disk. Each commit costs an fsync;
//! callers amortize it by batching (see [`TileStore::record_tiles`]), not by
//! weakening durability.
//!
//! **Backends:** what the database must do is the [`Backend`] trait (its
//! parts: [`JobStore`], [`TileStore`], [`WorkerStore`], [`TokenStore`],
//! [`MetaStore`]), in plain Rust types ([`records`]); all SQL stays inside a
//! backend. [`sqlite`] is the embedded default (WAL, `synchronous=FULL`); a
//! second backend (PostgreSQL) implements the same traits and passes the
//! same tests. A [`Store`] is a backend plus the blob directory, and
//! dereferences to its backend, so `store.insert_job(..)` is the backend's.
//!
//! **Threading:** a [`Store`] is `Send` but not `Sync` (a backend owns one
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

mod backend;
mod blobs;
pub mod records;
pub mod sqlite;
pub mod support;

use std::fs;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};

pub use backend::{Backend, JobStore, MetaStore, TileStore, TokenStore, WorkerStore};
use blobs::io_err;
pub use blobs::{Blobs, SharedBlobs};
pub use records::{
    grants, ledger_hash, FrameRecord, JobRecord, JobState, LedgerEntry, LogEntry, LogLevel, NewJob, Scope, Standing,
    TileCredit, TileRecord, TokenKind, TokenRecord, WorkerRecord, QUARANTINE_AFTER,
};
pub use sqlite::{schema, DB_FILE};

/// The blob directory's name inside the data directory.
pub const BLOB_DIR: &str = "blobs";

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
    /// A database backend other than SQLite failed (PostgreSQL), or a value
    /// it returned did not decode.
    #[error("database: {0}")]
    Database(Box<dyn std::error::Error + Send + Sync>),
    /// This connection's coordinator lost its lease: another one leads now,
    /// and the database refused the write.
    #[error("{0}")]
    Fenced(String),
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

/// Lowercase hex of a hash.
pub(crate) fn hex(bytes: &[u8; 32]) -> String {
    blake3::Hash::from_bytes(*bytes).to_hex().to_string()
}

/// The coordinator's store: a database [`Backend`] and the blob directory
/// in the data directory.
///
/// Methods that take `&mut self` write; each is one transaction, durable
/// when it returns `Ok`.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    backend: Box<dyn Backend>,
    blobs: Blobs,
}

impl Store {
    /// Opens the store in `dir` on the embedded SQLite backend, creating the
    /// directory, the database and the schema as needed.
    ///
    /// Refuses a database written by a newer binary
    /// ([`StoreError::SchemaTooNew`]) and an SQLite file that is not a
    /// Tessera store. Removes blob temporaries left by a crash.
    pub fn open(dir: &Path) -> Result<Store> {
        fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let backend = sqlite::SqliteBackend::open(dir)?;
        Store::with_backend(dir, Box::new(backend))
    }

    /// A store of `backend`'s records and the blobs in `dir`, in front of
    /// the backend's shared blob tier if it has one
    /// ([`Backend::shared_blobs`]).
    pub fn with_backend(dir: &Path, backend: Box<dyn Backend>) -> Result<Store> {
        fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let blobs = Blobs::with_shared(&dir.join(BLOB_DIR), backend.shared_blobs()?)?;
        Ok(Store { dir: dir.to_owned(), backend, blobs })
    }

    /// Another connection to the same store, for a thread of its own (the
    /// farm's checkpointer).
    pub fn reopen(&self) -> Result<Store> {
        Ok(Store { dir: self.dir.clone(), backend: self.backend.reconnect()?, blobs: self.blobs.clone() })
    }

    /// Another connection to the same store for reads only: on a fenced
    /// backend it writes under no term, so a write through it is refused.
    pub fn reopen_reader(&self) -> Result<Store> {
        Ok(Store { dir: self.dir.clone(), backend: self.backend.reconnect_reader()?, blobs: self.blobs.clone() })
    }

    /// The data directory this store was opened on.
    pub fn data_dir(&self) -> &Path {
        &self.dir
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
        let Some(unreferenced) = self.backend.delete_job_rows(id)? else { return Ok(false) };
        for hash in unreferenced {
            if let Err(e) = self.blobs.remove(&hash) {
                tracing::warn!(job = id, blob = %hex(&hash), error = %e, "could not remove a blob file");
            }
        }
        Ok(true)
    }

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

    /// Where the blob named `hash` lives in the local directory (whether
    /// or not it is there; [`Blobs::local_path`] fetches it first).
    pub fn blob_path(&self, hash: &[u8; 32]) -> PathBuf {
        self.blobs.path(hash)
    }

    /// The blob's length, if it is stored. See [`Blobs::len`].
    pub fn blob_len(&self, hash: &[u8; 32]) -> Result<Option<u64>> {
        self.blobs.len(hash)
    }
}

/// The store's records are its backend's: `store.insert_job(..)`,
/// `store.record_tiles(..)` are [`Backend`] methods. (Blobs and the data
/// directory are the [`Store`]'s own.)
impl Deref for Store {
    type Target = dyn Backend;

    fn deref(&self) -> &Self::Target {
        &*self.backend
    }
}

impl DerefMut for Store {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut *self.backend
    }
}
