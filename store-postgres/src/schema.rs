//! The PostgreSQL schema and its migrations.
//!
//! The same tables and constraints as the SQLite schema at its version 6
//! (`tessera_store::schema`), in PostgreSQL's types: `BIGINT` for integers
//! (ids from identity columns, which never reuse a value), `BYTEA` for
//! hashes and accumulators, `DOUBLE PRECISION` for credit and reputation,
//! `BOOLEAN` for flags. The version lives in `schema_version`; each entry
//! of [`MIGRATIONS`] takes it from `i` to `i + 1` inside one transaction,
//! under an advisory lock, so two coordinators starting together migrate
//! once. A newer version than [`VERSION`] is refused.
//!
//! **Fencing.** `leader` holds one row: who leads and the term of their
//! lease. Every statement that writes a table of records runs the trigger
//! `tessera_fence`, which reads the row `FOR SHARE` and refuses the write
//! unless the session's `tessera.term` is the current term. A coordinator
//! that lost its lease (cut off, paused, presumed dead) and comes back
//! cannot write what it decided while away: the database refuses it, not
//! its own good behaviour. The share lock orders a write and a change of
//! leader: a takeover waits for writes in flight, and a write waits for a
//! takeover in flight and then sees the new term.

use postgres::Client;
use tessera_store::StoreError;

use crate::pg_err;

/// The schema version this binary writes and understands.
pub const VERSION: i64 = 2;

/// The lock key two coordinators take while migrating (`pg_advisory_xact_lock`).
const MIGRATION_LOCK: i64 = 0x7e55_e7a0_0001;

/// SQLSTATE of a fenced write (user-defined class `TS`).
pub const FENCED: &str = "TS001";

const MIGRATIONS: [&str; VERSION as usize] = [V1, V2];

/// Version 1: everything the SQLite schema has at its version 6, the
/// leader lease and the fencing triggers.
const V1: &str = r#"
CREATE TABLE jobs (
    id          BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        TEXT    NOT NULL,
    spec_json   TEXT    NOT NULL,
    priority    INTEGER NOT NULL,
    tiles       BIGINT  NOT NULL CHECK (tiles >= 0),
    frames_json TEXT    NOT NULL,
    state       TEXT    NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    error       TEXT,
    created_ms  BIGINT  NOT NULL,
    finished_ms BIGINT
);
CREATE INDEX jobs_unfinished ON jobs (state) WHERE state IN ('queued', 'running');

CREATE TABLE tiles (
    job     BIGINT  NOT NULL REFERENCES jobs (id),
    idx     BIGINT  NOT NULL CHECK (idx >= 0),
    frame   INTEGER NOT NULL,
    hash    BYTEA   NOT NULL CHECK (length(hash) = 32),
    data    BYTEA   NOT NULL,
    worker  TEXT    NOT NULL,
    fuel    BIGINT  NOT NULL CHECK (fuel >= 0),
    millis  BIGINT  NOT NULL CHECK (millis >= 0),
    proof   TEXT,
    PRIMARY KEY (job, idx)
);
CREATE INDEX tiles_by_frame ON tiles (job, frame, idx);

CREATE TABLE frames (
    job          BIGINT  NOT NULL REFERENCES jobs (id),
    frame        INTEGER NOT NULL,
    exr          BYTEA   CHECK (exr IS NULL OR length(exr) = 32),
    png          BYTEA   CHECK (png IS NULL OR length(png) = 32),
    thumbnail    BYTEA   NOT NULL CHECK (length(thumbnail) = 32),
    finished_ms  BIGINT  NOT NULL,
    denoised_exr BYTEA   CHECK (denoised_exr IS NULL OR length(denoised_exr) = 32),
    denoised_png BYTEA   CHECK (denoised_png IS NULL OR length(denoised_png) = 32),
    PRIMARY KEY (job, frame)
);

CREATE TABLE workers (
    identity          TEXT    PRIMARY KEY,
    name              TEXT    NOT NULL,
    capabilities_json TEXT    NOT NULL,
    first_seen_ms     BIGINT  NOT NULL,
    last_seen_ms      BIGINT  NOT NULL,
    tiles_done        BIGINT  NOT NULL DEFAULT 0 CHECK (tiles_done >= 0),
    trust             BIGINT  NOT NULL DEFAULT 0 CHECK (trust >= 0),
    reputation        DOUBLE PRECISION NOT NULL DEFAULT 0.5,
    verified_tiles    BIGINT  NOT NULL DEFAULT 0 CHECK (verified_tiles >= 0),
    failed_checks     BIGINT  NOT NULL DEFAULT 0 CHECK (failed_checks >= 0),
    strikes           BIGINT  NOT NULL DEFAULT 0 CHECK (strikes >= 0),
    quarantined       BOOLEAN NOT NULL DEFAULT FALSE,
    credit            DOUBLE PRECISION NOT NULL DEFAULT 0,
    gpu_trust         BIGINT  NOT NULL DEFAULT 0 CHECK (gpu_trust >= 0)
);

CREATE TABLE tokens (
    id          BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind        TEXT    NOT NULL CHECK (kind IN ('worker', 'api')),
    label       TEXT    NOT NULL,
    secret_hash BYTEA   NOT NULL UNIQUE CHECK (length(secret_hash) = 32),
    created_ms  BIGINT  NOT NULL,
    revoked     BOOLEAN NOT NULL DEFAULT FALSE,
    scopes      TEXT    NOT NULL DEFAULT ''
);

CREATE TABLE meta (
    key   TEXT  PRIMARY KEY,
    value BYTEA NOT NULL
);

CREATE TABLE job_log (
    seq     BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job     BIGINT  NOT NULL,
    time_ms BIGINT  NOT NULL,
    level   TEXT    NOT NULL CHECK (level IN ('info', 'warn', 'error')),
    message TEXT    NOT NULL
);
CREATE INDEX job_log_by_job ON job_log (job, seq);

CREATE TABLE ledger (
    seq        BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    worker     TEXT    NOT NULL,
    job        BIGINT  NOT NULL,
    tile       BIGINT  NOT NULL,
    credit     DOUBLE PRECISION NOT NULL,
    commitment BYTEA   NOT NULL CHECK (length(commitment) = 32),
    time_ms    BIGINT  NOT NULL,
    prev       BYTEA   NOT NULL CHECK (length(prev) = 32),
    hash       BYTEA   NOT NULL UNIQUE CHECK (length(hash) = 32)
);
CREATE INDEX ledger_by_worker ON ledger (worker, seq);

CREATE TABLE evidence (
    id      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    worker  TEXT   NOT NULL,
    job     BIGINT NOT NULL,
    tile    BIGINT NOT NULL,
    time_ms BIGINT NOT NULL,
    reason  TEXT   NOT NULL,
    proof   TEXT   NOT NULL
);

CREATE TABLE leader (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    holder     TEXT    NOT NULL,
    term       BIGINT  NOT NULL,
    expires_ms BIGINT  NOT NULL
);
INSERT INTO leader (id, holder, term, expires_ms) VALUES (1, '', 0, 0);

CREATE FUNCTION tessera_fence() RETURNS trigger LANGUAGE plpgsql AS $fence$
DECLARE
    current BIGINT;
    mine    TEXT := current_setting('tessera.term', true);
BEGIN
    SELECT term INTO current FROM leader WHERE id = 1 FOR SHARE;
    IF mine IS NULL OR mine = '' OR mine <> current::text THEN
        RAISE EXCEPTION 'fenced: this connection writes for term %, the lease is at term %',
            coalesce(nullif(mine, ''), 'none'), current
            USING ERRCODE = 'TS001';
    END IF;
    RETURN NULL;
END
$fence$;
"#;

/// Version 2: the farm's blobs, so coordinators need no shared
/// filesystem (`crate::blobs`), and the coordinators' announcements
/// (`crate::lease::Member`). Neither is fenced: see there.
const V2: &str = r#"
CREATE TABLE blobs (
    hash BYTEA  PRIMARY KEY CHECK (length(hash) = 32),
    size BIGINT NOT NULL CHECK (size >= 0)
);
CREATE TABLE blob_chunks (
    hash  BYTEA   NOT NULL REFERENCES blobs (hash) ON DELETE CASCADE,
    seq   INTEGER NOT NULL CHECK (seq >= 0),
    bytes BYTEA   NOT NULL,
    PRIMARY KEY (hash, seq)
);
ALTER TABLE blob_chunks ALTER COLUMN bytes SET STORAGE EXTERNAL;

CREATE TABLE coordinators (
    name        TEXT   PRIMARY KEY,
    http_url    TEXT   NOT NULL,
    quic_addr   TEXT   NOT NULL,
    fingerprint TEXT   NOT NULL,
    seen_ms     BIGINT NOT NULL
);
"#;

/// The tables whose writes are fenced.
const FENCED_TABLES: &[&str] =
    &["jobs", "tiles", "frames", "workers", "tokens", "meta", "job_log", "ledger", "evidence"];

/// Brings the database to [`VERSION`].
pub fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let mut tx = client.transaction().map_err(pg_err)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).map_err(pg_err)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)").map_err(pg_err)?;
    let found: i64 = match tx.query_opt("SELECT version FROM schema_version", &[]).map_err(pg_err)? {
        Some(row) => row.get(0),
        None => {
            // A database with tables of its own is not ours to fill.
            let foreign: i64 = tx
                .query_one(
                    "SELECT count(*) FROM information_schema.tables
                     WHERE table_schema = current_schema() AND table_name <> 'schema_version'",
                    &[],
                )
                .map_err(pg_err)?
                .get(0);
            if foreign > 0 {
                return Err(StoreError::Invalid(
                    "the database has tables but no Tessera schema version: not a Tessera store".into(),
                ));
            }
            tx.execute("INSERT INTO schema_version (version) VALUES (0)", &[]).map_err(pg_err)?;
            0
        }
    };
    if found > VERSION {
        return Err(StoreError::Invalid(format!(
            "schema version {found} is newer than this binary understands ({VERSION}); run a newer tessera"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tx.batch_execute(sql).map_err(pg_err)?;
        if i == 0 {
            for table in FENCED_TABLES {
                tx.batch_execute(&format!(
                    "CREATE TRIGGER fence BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table}
                     FOR EACH STATEMENT EXECUTE FUNCTION tessera_fence()"
                ))
                .map_err(pg_err)?;
            }
        }
    }
    tx.execute("UPDATE schema_version SET version = $1", &[&VERSION]).map_err(pg_err)?;
    tx.commit().map_err(pg_err)?;
    Ok(())
}
