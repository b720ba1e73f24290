//! The embedded backend: one SQLite file in the data directory, in WAL mode
//! with `synchronous=FULL`, so a commit survives a killed process and a
//! power cut. The schema and its migrations are in [`schema`].

mod jobs;
mod meta;
pub mod schema;
mod tiles;
mod tokens;
mod workers;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, Params, Row};

use crate::blobs::sync_dir;
use crate::records::*;
use crate::support::parse_scopes;
use crate::{Backend, Result, StoreError};

/// The database file's name inside the data directory.
pub const DB_FILE: &str = "tessera.db";

/// How long a statement waits for another connection's lock (an operator's
/// `sqlite3` shell, a backup) before failing with "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const JOB_COLUMNS: &str = "id, name, spec_json, priority, tiles, frames_json, state, error, created_ms, finished_ms";
const TILE_COLUMNS: &str = "job, idx, frame, hash, data, worker, fuel, millis, proof";
const FRAME_COLUMNS: &str = "job, frame, exr, png, thumbnail, finished_ms, denoised_exr, denoised_png";
const TOKEN_COLUMNS: &str = "id, kind, label, created_ms, revoked, scopes";

/// The store's records in SQLite: one connection.
#[derive(Debug)]
pub struct SqliteBackend {
    path: PathBuf,
    conn: Connection,
}

impl SqliteBackend {
    /// Opens (creating as needed) the database in `dir`, and migrates its
    /// schema to this binary's.
    pub fn open(dir: &Path) -> Result<SqliteBackend> {
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
        Ok(SqliteBackend { path: db_path, conn })
    }

    /// SQLite's journal mode as it is now (`"wal"` unless SQLite refused it);
    /// for diagnostics and tests.
    pub fn journal_mode(&self) -> Result<String> {
        Ok(self.conn.pragma_query_value(None, "journal_mode", |row| row.get(0))?)
    }
}

impl Backend for SqliteBackend {
    fn reconnect(&self) -> Result<Box<dyn Backend>> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        Ok(Box::new(SqliteBackend::open(dir)?))
    }

    fn defer_housekeeping(&self) -> Result<()> {
        self.conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        Ok(())
    }

    fn housekeeping(&self) -> Result<()> {
        self.conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
        Ok(())
    }
}

/// A `u64` as SQLite's `i64`; larger values are refused, not wrapped.
pub(crate) fn to_sql(value: u64, what: &'static str) -> Result<i64> {
    i64::try_from(value).map_err(|_| StoreError::OutOfRange { what, value })
}

/// An id SQLite generated, as `u64` (always positive for AUTOINCREMENT).
pub(crate) fn from_sql(value: i64) -> Result<u64> {
    u64::try_from(value).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(0, value).into())
}

/// Column `idx` as a `u64`; a negative stored value is an error, not a wrap.
pub(crate) fn get_u64(row: &Row<'_>, idx: usize) -> rusqlite::Result<u64> {
    let value: i64 = row.get(idx)?;
    u64::try_from(value).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(idx, value))
}

pub(crate) fn get_opt_u64(row: &Row<'_>, idx: usize) -> rusqlite::Result<Option<u64>> {
    let value: Option<i64> = row.get(idx)?;
    value.map(|v| u64::try_from(v).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(idx, v))).transpose()
}

/// A text column that does not decode to what it should hold.
pub(crate) fn bad_text(idx: usize, what: &str, value: &str) -> rusqlite::Error {
    let msg = format!("unknown {what} {value:?}");
    rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, msg.into())
}

/// Runs a (cached) query and collects its rows, failing on the first row
/// that does not decode.
pub(crate) fn query_vec<T>(
    conn: &Connection,
    sql: &str,
    params: impl Params,
    f: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(params, f)?;
    Ok(rows.collect::<rusqlite::Result<Vec<T>>>()?)
}

pub(crate) fn job_from_row(row: &Row<'_>) -> rusqlite::Result<JobRecord> {
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

pub(crate) fn tile_from_row(row: &Row<'_>) -> rusqlite::Result<TileRecord> {
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

pub(crate) fn token_from_row(row: &Row<'_>) -> rusqlite::Result<TokenRecord> {
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

pub(crate) fn frame_from_row(row: &Row<'_>) -> rusqlite::Result<FrameRecord> {
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
        let store = SqliteBackend::open(dir.path()).unwrap();
        let pragma = |name: &str| -> i64 { store.conn.pragma_query_value(None, name, |row| row.get(0)).unwrap() };
        assert_eq!(pragma("synchronous"), 2, "synchronous=FULL");
        assert_eq!(pragma("foreign_keys"), 1);
        assert_eq!(pragma("busy_timeout"), 5_000);
    }
}
