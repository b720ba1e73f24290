//! The database schema and its migrations.
//!
//! The schema's version lives in SQLite's `PRAGMA user_version` (0 for a
//! database this code has never touched). Each entry of [`MIGRATIONS`] takes
//! the schema from version `i` to `i + 1`; they run in one transaction
//! together with the version bump, so a crash mid-migration leaves the old
//! version intact. A database whose version is newer than [`VERSION`] was
//! written by a newer binary and is refused rather than guessed at.
//!
//! Tables are `STRICT`, so a value of the wrong type is refused at write time
//! instead of being read back as something else. Column names avoid SQL
//! keywords (`idx`, not `index`) so the same statements port to PostgreSQL.

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use crate::StoreError;

/// The schema version this binary writes and understands.
pub const VERSION: i64 = 6;

/// `MIGRATIONS[i]` upgrades a version-`i` database to version `i + 1`.
const MIGRATIONS: [&str; VERSION as usize] = [V1, V2, V3, V4, V5, V6];

/// Version 1: jobs, tiles, frames, workers, tokens, key/value metadata.
const V1: &str = "
CREATE TABLE jobs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT    NOT NULL,
    spec_json   TEXT    NOT NULL,
    priority    INTEGER NOT NULL,
    tiles       INTEGER NOT NULL CHECK (tiles >= 0),
    -- The job's frame numbers as a JSON array of integers, in the job's order.
    frames_json TEXT    NOT NULL,
    state       TEXT    NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    error       TEXT,
    created_ms  INTEGER NOT NULL,
    finished_ms INTEGER
) STRICT;

CREATE INDEX jobs_unfinished ON jobs (state) WHERE state IN ('queued', 'running');

-- A rowid table (not WITHOUT ROWID): rows carry blobs up to about 1 MiB,
-- which SQLite keeps better outside the primary-key b-tree.
CREATE TABLE tiles (
    job     INTEGER NOT NULL REFERENCES jobs (id),
    idx     INTEGER NOT NULL CHECK (idx >= 0),
    frame   INTEGER NOT NULL,
    hash    BLOB    NOT NULL CHECK (length(hash) = 32),
    data    BLOB    NOT NULL,
    worker  TEXT    NOT NULL,
    fuel    INTEGER NOT NULL CHECK (fuel >= 0),
    millis  INTEGER NOT NULL CHECK (millis >= 0),
    PRIMARY KEY (job, idx)
) STRICT;

CREATE INDEX tiles_by_frame ON tiles (job, frame, idx);

CREATE TABLE frames (
    job         INTEGER NOT NULL REFERENCES jobs (id),
    frame       INTEGER NOT NULL,
    exr         BLOB    NOT NULL CHECK (length(exr) = 32),
    png         BLOB    NOT NULL CHECK (length(png) = 32),
    thumbnail   BLOB    NOT NULL CHECK (length(thumbnail) = 32),
    finished_ms INTEGER NOT NULL,
    PRIMARY KEY (job, frame)
) STRICT, WITHOUT ROWID;

CREATE TABLE workers (
    identity          TEXT    PRIMARY KEY NOT NULL,
    name              TEXT    NOT NULL,
    capabilities_json TEXT    NOT NULL,
    first_seen_ms     INTEGER NOT NULL,
    last_seen_ms      INTEGER NOT NULL,
    tiles_done        INTEGER NOT NULL DEFAULT 0 CHECK (tiles_done >= 0)
) STRICT;

-- Only blake3(secret) is kept: a copy of the database grants nothing.
CREATE TABLE tokens (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    kind        TEXT    NOT NULL CHECK (kind IN ('worker', 'api')),
    label       TEXT    NOT NULL,
    secret_hash BLOB    NOT NULL UNIQUE CHECK (length(secret_hash) = 32),
    created_ms  INTEGER NOT NULL,
    revoked     INTEGER NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1))
) STRICT;

CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value BLOB NOT NULL
) STRICT, WITHOUT ROWID;
";

/// Version 2: API token scopes, frames with only some formats, job logs.
///
/// - `tokens.scopes`: the API token's scopes as sorted, comma-separated names
///   (`read,submit`), empty for worker tokens. API tokens made before scopes
///   existed could do everything, so they become `admin` rather than lose
///   rights their holders rely on.
/// - `frames.exr` / `frames.png` become nullable: a job may ask for only one
///   of the formats. SQLite cannot drop a NOT NULL constraint in place, so the
///   table is rebuilt (copy, drop, rename); nothing references `frames`, and
///   the migration's transaction makes the swap atomic. The thumbnail is
///   always made (the web page shows it), so it stays NOT NULL.
/// - `job_log`: what happened to a job, for `GET /api/v1/jobs/{id}/log`.
///   `seq` is AUTOINCREMENT so a reader's `after=SEQ` cursor never sees a
///   number reused after a delete. No foreign key on `job`: the store drops
///   lines of unknown jobs instead (see `Store::append_job_log`), so a late
///   line for a deleted job neither fails its batch nor lingers.
const V2: &str = "
ALTER TABLE tokens ADD COLUMN scopes TEXT NOT NULL DEFAULT '';
UPDATE tokens SET scopes = 'admin' WHERE kind = 'api';

CREATE TABLE frames_v2 (
    job         INTEGER NOT NULL REFERENCES jobs (id),
    frame       INTEGER NOT NULL,
    exr         BLOB    CHECK (exr IS NULL OR length(exr) = 32),
    png         BLOB    CHECK (png IS NULL OR length(png) = 32),
    thumbnail   BLOB    NOT NULL CHECK (length(thumbnail) = 32),
    finished_ms INTEGER NOT NULL,
    PRIMARY KEY (job, frame)
) STRICT, WITHOUT ROWID;

INSERT INTO frames_v2 (job, frame, exr, png, thumbnail, finished_ms)
    SELECT job, frame, exr, png, thumbnail, finished_ms FROM frames;
DROP TABLE frames;
ALTER TABLE frames_v2 RENAME TO frames;

CREATE TABLE job_log (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    job     INTEGER NOT NULL,
    time_ms INTEGER NOT NULL,
    level   TEXT    NOT NULL CHECK (level IN ('info', 'warn', 'error')),
    message TEXT    NOT NULL
) STRICT;

CREATE INDEX job_log_by_job ON job_log (job, seq);
";

/// Version 3: each tile's proof-of-render record (the signed commitment,
/// and the spot check the coordinator ran), as JSON for the frame
/// manifests. NULL for tiles stored before proofs existed.
const V3: &str = "
ALTER TABLE tiles ADD COLUMN proof TEXT;
";

/// Version 4: proof-of-render bookkeeping.
/// - `workers`: trust (consecutive verified results, reset by any failed
///   check: BOINC's adaptive replication), reputation in [0, 1], verified
///   tiles, failed checks, strikes since an admin last cleared the worker,
///   quarantine, credit.
/// - `ledger`: credit entries, append-only, each hash-chained to the one
///   before (`prev` is the previous entry's `hash`, 32 zero bytes first).
/// - `evidence`: what a failed check found (the signed commitment and the
///   re-rendered pixel), kept for disputes.
const V4: &str = "
ALTER TABLE workers ADD COLUMN trust INTEGER NOT NULL DEFAULT 0 CHECK (trust >= 0);
ALTER TABLE workers ADD COLUMN reputation REAL NOT NULL DEFAULT 0.5;
ALTER TABLE workers ADD COLUMN verified_tiles INTEGER NOT NULL DEFAULT 0 CHECK (verified_tiles >= 0);
ALTER TABLE workers ADD COLUMN failed_checks INTEGER NOT NULL DEFAULT 0 CHECK (failed_checks >= 0);
ALTER TABLE workers ADD COLUMN strikes INTEGER NOT NULL DEFAULT 0 CHECK (strikes >= 0);
ALTER TABLE workers ADD COLUMN quarantined INTEGER NOT NULL DEFAULT 0 CHECK (quarantined IN (0, 1));
ALTER TABLE workers ADD COLUMN credit REAL NOT NULL DEFAULT 0;

CREATE TABLE ledger (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    worker     TEXT    NOT NULL,
    job        INTEGER NOT NULL,
    tile       INTEGER NOT NULL,
    credit     REAL    NOT NULL,
    commitment BLOB    NOT NULL CHECK (length(commitment) = 32),
    time_ms    INTEGER NOT NULL,
    prev       BLOB    NOT NULL CHECK (length(prev) = 32),
    hash       BLOB    NOT NULL UNIQUE CHECK (length(hash) = 32)
) STRICT;

CREATE INDEX ledger_by_worker ON ledger (worker, seq);

CREATE TABLE evidence (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    worker  TEXT    NOT NULL,
    job     INTEGER NOT NULL,
    tile    INTEGER NOT NULL,
    time_ms INTEGER NOT NULL,
    reason  TEXT    NOT NULL,
    proof   TEXT    NOT NULL
) STRICT;
";

/// Version 5: trust earned on the GPU is counted apart (`gpu_trust`):
/// GPU tiles are checked within a tolerance, so a worker's record on the
/// CPU, checked bit for bit, says nothing about its GPU results.
const V5: &str = "
ALTER TABLE workers ADD COLUMN gpu_trust INTEGER NOT NULL DEFAULT 0 CHECK (gpu_trust >= 0);
";

/// Version 6: a denoised job's frames keep their denoised files beside the
/// raw ones (`denoised_exr`, `denoised_png`; NULL for a frame that was not
/// denoised, as every frame stored before this version).
const V6: &str = "
ALTER TABLE frames ADD COLUMN denoised_exr BLOB CHECK (denoised_exr IS NULL OR length(denoised_exr) = 32);
ALTER TABLE frames ADD COLUMN denoised_png BLOB CHECK (denoised_png IS NULL OR length(denoised_png) = 32);
";

/// Brings the database at `path` (open on `conn`) to [`VERSION`].
///
/// Runs in one immediate transaction, so a second process opening the same
/// file waits instead of migrating twice.
pub fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found: i64 = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if found > VERSION {
        return Err(StoreError::SchemaTooNew { path: path.to_owned(), found, supported: VERSION });
    }
    let start = match usize::try_from(found) {
        Ok(v) => v,
        // A negative user_version was not written by Tessera.
        Err(_) => return Err(StoreError::NotAStore { path: path.to_owned() }),
    };
    if start == 0 {
        let objects: i64 = tx.query_row("SELECT count(*) FROM sqlite_schema", [], |row| row.get(0))?;
        if objects != 0 {
            return Err(StoreError::NotAStore { path: path.to_owned() });
        }
    }
    for migration in &MIGRATIONS[start..] {
        tx.execute_batch(migration)?;
    }
    if start < MIGRATIONS.len() {
        tx.pragma_update(None, "user_version", VERSION)?;
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::*;
    use crate::{grants, FrameRecord, JobState, Scope, Store, TokenKind, DB_FILE};
    use crate::{JobStore, TileStore, TokenStore};

    /// A database exactly as a version-1 binary left it, with rows in it,
    /// opens as version 2 with its data intact.
    #[test]
    fn v1_database_migrates_keeping_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let api_hash = *blake3::hash(b"ta_old").as_bytes();
        let worker_hash = *blake3::hash(b"tw_old").as_bytes();
        {
            let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
            conn.execute_batch(V1).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.execute(
                "INSERT INTO jobs (name, spec_json, priority, tiles, frames_json, state, created_ms)
                 VALUES ('shot', '{}', 0, 4, '[1,2]', 'done', 10)",
                [],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO frames VALUES (1, 1, ?1, ?2, ?3, 20)",
                rusqlite::params![[1u8; 32], [2u8; 32], [3u8; 32]],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO tokens (kind, label, secret_hash, created_ms) VALUES ('api', 'old api', ?1, 5)",
                [api_hash],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO tokens (kind, label, secret_hash, created_ms) VALUES ('worker', 'old worker', ?1, 6)",
                [worker_hash],
            )
            .unwrap();
        }

        let mut store = crate::sqlite::SqliteBackend::open(dir.path()).unwrap();
        let version: i64 = store.conn.pragma_query_value(None, "user_version", |row| row.get(0)).unwrap();
        assert_eq!(version, VERSION);
        let job = store.job(1).unwrap().unwrap();
        assert_eq!((job.name.as_str(), job.state, job.frames), ("shot", JobState::Done, vec![1, 2]));
        assert_eq!(
            store.frame(1, 1).unwrap(),
            Some(FrameRecord {
                job: 1,
                frame: 1,
                exr: Some([1; 32]),
                png: Some([2; 32]),
                thumbnail: [3; 32],
                finished_ms: 20,
                denoised_exr: None,
                denoised_png: None,
            })
        );
        let api = store.api_token("ta_old").unwrap().unwrap();
        assert_eq!((api.id, api.label.as_str(), api.scopes.as_slice()), (1, "old api", &[Scope::Admin][..]));
        assert!(grants(&api.scopes, Scope::Read));
        let tokens = store.tokens().unwrap();
        assert_eq!(tokens[1].scopes, vec![]);
        assert_eq!(store.check_token(TokenKind::Worker, "tw_old").unwrap(), Some(2));

        // The rebuilt frames table takes a PNG-only frame and still refuses a
        // malformed hash and a missing thumbnail.
        let png_only = FrameRecord {
            job: 1,
            frame: 2,
            exr: None,
            png: Some([4; 32]),
            thumbnail: [5; 32],
            finished_ms: 30,
            denoised_exr: None,
            denoised_png: Some([7; 32]),
        };
        store.record_frame(&png_only).unwrap();
        assert_eq!(store.frame(1, 2).unwrap(), Some(png_only));
        let insert = "INSERT INTO frames (job, frame, exr, png, thumbnail, finished_ms, denoised_png) VALUES";
        let ok = store.conn.execute(&format!("{insert} (1, 3, NULL, ?1, ?1, 0, NULL)"), [[6u8; 32]]);
        assert_eq!(ok.unwrap(), 1, "the statement below differs from this one only where it is wrong");
        store.conn.execute("DELETE FROM frames WHERE frame = 3", []).unwrap();
        let bad = store.conn.execute(&format!("{insert} (1, 3, x'00', NULL, ?1, 0, NULL)"), [[6u8; 32]]);
        assert!(bad.is_err());
        let bad = store.conn.execute(&format!("{insert} (1, 3, NULL, NULL, NULL, 0, NULL)"), []);
        assert!(bad.is_err());
        let bad = store.conn.execute(&format!("{insert} (1, 3, NULL, NULL, ?1, 0, x'00')"), [[6u8; 32]]);
        assert!(bad.is_err(), "a denoised file's hash is checked too");
        // The frames table still checks its job.
        let orphan = FrameRecord { job: 99, ..store.frame(1, 1).unwrap().unwrap() };
        assert!(store.record_frame(&orphan).is_err());

        // Opening again migrates nothing twice.
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.frames(1).unwrap().len(), 2);
    }
}
