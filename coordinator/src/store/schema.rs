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

use super::StoreError;

/// The schema version this binary writes and understands.
pub const VERSION: i64 = 1;

/// `MIGRATIONS[i]` upgrades a version-`i` database to version `i + 1`.
const MIGRATIONS: [&str; VERSION as usize] = [V1];

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
