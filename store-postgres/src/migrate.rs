//! `tessera migrate`: a farm's records copied from its SQLite file into an
//! empty PostgreSQL database, row for row, in one transaction, then checked:
//! each table's rows are read back from both databases in key order and
//! their digests compared. Ids keep their values (identity columns are
//! written with `OVERRIDING SYSTEM VALUE`, then their sequences moved past
//! the largest), so manifests, links and the ledger's chain stay valid.
//!
//! Blob files are copied too, into the database's `blobs` tables
//! (`crate::blobs`), so any coordinator of the farm serves them: every file
//! in the data directory's blob store is read (checked against its name),
//! written, and after the rows commit read back from PostgreSQL and hashed
//! again. Every blob a record names must be among them. Blobs go first and
//! idempotently: a copy that fails midway leaves the rows uncopied, and
//! running it again finishes it.

use std::path::Path;

use postgres::types::ToSql;
use rusqlite::types::ValueRef;
use tessera_store::{Result, Store, StoreError};

use crate::{pg_err, PgBackend, PgBlobs};
use tessera_store::SharedBlobs;

/// How a column is stored (SQLite's type, PostgreSQL's in brackets).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// INTEGER (BIGINT).
    Int,
    /// INTEGER that PostgreSQL keeps as INTEGER.
    Int4,
    /// INTEGER 0/1 (BOOLEAN).
    Bool,
    /// REAL (DOUBLE PRECISION).
    Real,
    Text,
    /// BLOB (BYTEA).
    Blob,
}

struct Table {
    name: &'static str,
    key: &'static str,
    /// The identity column, written as it is.
    identity: Option<&'static str>,
    columns: &'static [(&'static str, Kind)],
}

use Kind::*;

/// Every table, parents before children.
const TABLES: &[Table] = &[
    Table {
        name: "jobs",
        key: "id",
        identity: Some("id"),
        columns: &[
            ("id", Int),
            ("name", Text),
            ("spec_json", Text),
            ("priority", Int4),
            ("tiles", Int),
            ("frames_json", Text),
            ("state", Text),
            ("error", Text),
            ("created_ms", Int),
            ("finished_ms", Int),
        ],
    },
    Table {
        name: "tiles",
        key: "job, idx",
        identity: None,
        columns: &[
            ("job", Int),
            ("idx", Int),
            ("frame", Int4),
            ("hash", Blob),
            ("data", Blob),
            ("worker", Text),
            ("fuel", Int),
            ("millis", Int),
            ("proof", Text),
        ],
    },
    Table {
        name: "frames",
        key: "job, frame",
        identity: None,
        columns: &[
            ("job", Int),
            ("frame", Int4),
            ("exr", Blob),
            ("png", Blob),
            ("thumbnail", Blob),
            ("finished_ms", Int),
            ("denoised_exr", Blob),
            ("denoised_png", Blob),
        ],
    },
    Table {
        name: "workers",
        key: "identity",
        identity: None,
        columns: &[
            ("identity", Text),
            ("name", Text),
            ("capabilities_json", Text),
            ("first_seen_ms", Int),
            ("last_seen_ms", Int),
            ("tiles_done", Int),
            ("trust", Int),
            ("reputation", Real),
            ("verified_tiles", Int),
            ("failed_checks", Int),
            ("strikes", Int),
            ("quarantined", Bool),
            ("credit", Real),
            ("gpu_trust", Int),
        ],
    },
    Table {
        name: "tokens",
        key: "id",
        identity: Some("id"),
        columns: &[
            ("id", Int),
            ("kind", Text),
            ("label", Text),
            ("secret_hash", Blob),
            ("created_ms", Int),
            ("revoked", Bool),
            ("scopes", Text),
        ],
    },
    Table { name: "meta", key: "key", identity: None, columns: &[("key", Text), ("value", Blob)] },
    Table {
        name: "job_log",
        key: "seq",
        identity: Some("seq"),
        columns: &[("seq", Int), ("job", Int), ("time_ms", Int), ("level", Text), ("message", Text)],
    },
    Table {
        name: "ledger",
        key: "seq",
        identity: Some("seq"),
        columns: &[
            ("seq", Int),
            ("worker", Text),
            ("job", Int),
            ("tile", Int),
            ("credit", Real),
            ("commitment", Blob),
            ("time_ms", Int),
            ("prev", Blob),
            ("hash", Blob),
        ],
    },
    Table {
        name: "evidence",
        key: "id",
        identity: Some("id"),
        columns: &[
            ("id", Int),
            ("worker", Text),
            ("job", Int),
            ("tile", Int),
            ("time_ms", Int),
            ("reason", Text),
            ("proof", Text),
        ],
    },
];

/// One value as both databases hold it, for copying and comparing.
#[derive(Clone, Debug, PartialEq)]
enum Value {
    Null,
    Int(i64),
    Bool(bool),
    /// Bits, so the comparison is exact.
    Real(u64),
    Text(String),
    Blob(Vec<u8>),
}

/// What was copied and checked, per table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Copied {
    pub table: &'static str,
    pub rows: u64,
    /// blake3 over the table's rows in key order, equal on both sides.
    pub digest: String,
}

/// What `from_sqlite` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub tables: Vec<Copied>,
    /// Blobs copied (every file of the data directory's blob store, which
    /// holds all the records name), read back whole.
    pub blobs: usize,
    /// Their bytes in all.
    pub blob_bytes: u64,
}

fn bad(msg: String) -> StoreError {
    StoreError::Invalid(msg)
}

/// Copies the farm in `data_dir` (its `tessera.db`, brought to this
/// binary's schema first) into `pg`, which must be empty and led by no
/// coordinator, and checks the copy.
pub fn from_sqlite(data_dir: &Path, pg: &mut PgBackend) -> Result<Report> {
    let db = data_dir.join(tessera_store::DB_FILE);
    if !db.is_file() {
        return Err(bad(format!("{} holds no coordinator data ({} is missing)", data_dir.display(), db.display())));
    }
    // Brings the file to the current schema (what the copy expects) and
    // opens the blobs.
    let store = Store::open(data_dir)?;
    let lite = rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let lease = pg.lease_state()?;
    if lease.live() {
        return Err(bad(format!(
            "coordinator {:?} leads on the target database: stop the farm before migrating",
            lease.holder
        )));
    }
    pg.join_current_term()?;
    for t in TABLES {
        let n: i64 = pg.run(|c| c.query_one(&format!("SELECT count(*) FROM {}", t.name), &[])).map_err(pg_err)?.get(0);
        if n > 0 {
            return Err(bad(format!("the target database is not empty: its {} table has {n} rows", t.name)));
        }
    }
    // Every blob a record names is in the data directory, whole; then all
    // of them go to the database.
    let mut named = std::collections::BTreeSet::new();
    for job in store.jobs()? {
        named.extend(tessera_store::support::spec_blobs(&job.spec_json));
        for f in store.frames(job.id)? {
            named.extend(f.blobs());
        }
    }
    let hashes = store.blobs().local_hashes()?;
    if let Some(missing) = named.iter().find(|h| hashes.binary_search(h).is_err()) {
        return Err(StoreError::NotFound(format!(
            "blob {} (a record names it; the data directory lacks it)",
            tessera_store::support::hex_of(missing)
        )));
    }
    let shared = PgBlobs::connect(pg.url())?;
    let mut blob_bytes = 0u64;
    for hash in &hashes {
        let bytes = store.get_blob(hash)?;
        blob_bytes += bytes.len() as u64;
        if !shared.contains(hash)? {
            shared.insert(hash, &bytes)?;
        }
    }
    // Read first (the SQLite connection stays on this thread).
    let source: Vec<Vec<Vec<Value>>> = TABLES.iter().map(|t| sqlite_rows(&lite, t)).collect::<Result<_>>()?;
    drop(lite);
    let mut report = Report { tables: Vec::new(), blobs: hashes.len(), blob_bytes };
    pg.run(|client| -> Result<()> {
        let mut tx = client.transaction().map_err(pg_err)?;
        for t in TABLES {
            let n: i64 = tx.query_one(&format!("SELECT count(*) FROM {}", t.name), &[]).map_err(pg_err)?.get(0);
            if n > 0 {
                return Err(bad(format!("the target database is not empty: its {} table has {n} rows", t.name)));
            }
        }
        for (t, rows) in TABLES.iter().zip(&source) {
            let names: Vec<&str> = t.columns.iter().map(|c| c.0).collect();
            let placeholders: Vec<String> = (1..=names.len()).map(|i| format!("${i}")).collect();
            let overriding = if t.identity.is_some() { " OVERRIDING SYSTEM VALUE" } else { "" };
            let insert = tx
                .prepare(&format!(
                    "INSERT INTO {} ({}){overriding} VALUES ({})",
                    t.name,
                    names.join(", "),
                    placeholders.join(", ")
                ))
                .map_err(pg_err)?;
            for row in rows {
                let params: Vec<Box<dyn ToSql + Sync>> =
                    row.iter().zip(t.columns).map(|(v, (_, kind))| to_pg(v, *kind)).collect();
                let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref()).collect();
                tx.execute(&insert, &refs).map_err(pg_err)?;
            }
            if let Some(id) = t.identity {
                tx.execute(
                    &format!(
                        "SELECT setval(pg_get_serial_sequence('{0}', '{id}'), coalesce(max({id}), 0) + 1, false) FROM {0}",
                        t.name
                    ),
                    &[],
                )
                .map_err(pg_err)?;
            }
        }
        // The check, inside the transaction: what PostgreSQL now holds is
        // what SQLite holds, row for row.
        for (t, source) in TABLES.iter().zip(&source) {
            let target = pg_rows(&mut tx, t)?;
            let (a, b) = (digest(source), digest(&target));
            if a != b || source.len() != target.len() {
                return Err(bad(format!(
                    "table {}: {} rows copied, {} read back, digests {a} and {b} differ: nothing was committed",
                    t.name,
                    source.len(),
                    target.len()
                )));
            }
            report.tables.push(Copied { table: t.name, rows: source.len() as u64, digest: a });
        }
        tx.commit().map_err(pg_err)?;
        Ok(())
    })?;
    // The blobs as PostgreSQL has them: each read back and hashed.
    for hash in &hashes {
        let back = shared.fetch(hash)?.ok_or_else(|| {
            bad(format!("blob {} was written but cannot be read back", tessera_store::support::hex_of(hash)))
        })?;
        if blake3::hash(&back).as_bytes() != hash {
            return Err(bad(format!(
                "blob {} reads back from PostgreSQL with other bytes",
                tessera_store::support::hex_of(hash)
            )));
        }
    }
    Ok(report)
}

fn sqlite_rows(lite: &rusqlite::Connection, t: &Table) -> Result<Vec<Vec<Value>>> {
    let names: Vec<&str> = t.columns.iter().map(|c| c.0).collect();
    let mut stmt = lite.prepare(&format!("SELECT {} FROM {} ORDER BY {}", names.join(", "), t.name, t.key))?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let mut values = Vec::with_capacity(names.len());
        for (i, (name, kind)) in t.columns.iter().enumerate() {
            let v = match (row.get_ref(i)?, kind) {
                (ValueRef::Null, _) => Value::Null,
                (ValueRef::Integer(n), Bool) => Value::Bool(n != 0),
                (ValueRef::Integer(n), Int | Int4) => Value::Int(n),
                (ValueRef::Real(r), Real) => Value::Real(r.to_bits()),
                (ValueRef::Integer(n), Real) => Value::Real((n as f64).to_bits()),
                (ValueRef::Text(s), Text) => Value::Text(String::from_utf8_lossy(s).into_owned()),
                (ValueRef::Blob(b), Blob) => Value::Blob(b.to_vec()),
                (other, kind) => {
                    return Err(bad(format!(
                        "{}.{name}: a {:?} value where {kind:?} belongs",
                        t.name,
                        other.data_type()
                    )))
                }
            };
            values.push(v);
        }
        out.push(values);
    }
    Ok(out)
}

fn pg_rows(tx: &mut postgres::Transaction<'_>, t: &Table) -> Result<Vec<Vec<Value>>> {
    let names: Vec<&str> = t.columns.iter().map(|c| c.0).collect();
    // Text keys in byte order, as SQLite sorts them.
    let key: Vec<String> = t.key.split(", ").map(|k| format!("{k} COLLATE \"C\"")).collect();
    let key =
        if t.columns.iter().any(|(n, k)| t.key.contains(n) && *k == Text) { key.join(", ") } else { t.key.into() };
    let rows = tx.query(&format!("SELECT {} FROM {} ORDER BY {key}", names.join(", "), t.name), &[]).map_err(pg_err)?;
    Ok(rows
        .iter()
        .map(|r| {
            t.columns
                .iter()
                .enumerate()
                .map(|(i, (_, kind))| match kind {
                    Int => r.get::<_, Option<i64>>(i).map_or(Value::Null, Value::Int),
                    Int4 => r.get::<_, Option<i32>>(i).map_or(Value::Null, |n| Value::Int(n.into())),
                    Bool => r.get::<_, Option<bool>>(i).map_or(Value::Null, Value::Bool),
                    Real => r.get::<_, Option<f64>>(i).map_or(Value::Null, |f| Value::Real(f.to_bits())),
                    Text => r.get::<_, Option<String>>(i).map_or(Value::Null, Value::Text),
                    Blob => r.get::<_, Option<Vec<u8>>>(i).map_or(Value::Null, Value::Blob),
                })
                .collect()
        })
        .collect())
}

fn to_pg(v: &Value, kind: Kind) -> Box<dyn ToSql + Sync> {
    match (v, kind) {
        (Value::Null, Int) => Box::new(None::<i64>),
        (Value::Null, Int4) => Box::new(None::<i32>),
        (Value::Null, Bool) => Box::new(None::<bool>),
        (Value::Null, Real) => Box::new(None::<f64>),
        (Value::Null, Text) => Box::new(None::<String>),
        (Value::Null, Blob) => Box::new(None::<Vec<u8>>),
        (Value::Int(n), Int4) => Box::new(i32::try_from(*n).unwrap_or(i32::MAX)),
        (Value::Int(n), _) => Box::new(*n),
        (Value::Bool(b), _) => Box::new(*b),
        (Value::Real(bits), _) => Box::new(f64::from_bits(*bits)),
        (Value::Text(s), _) => Box::new(s.clone()),
        (Value::Blob(b), _) => Box::new(b.clone()),
    }
}

fn digest(rows: &[Vec<Value>]) -> String {
    let mut h = blake3::Hasher::new();
    for row in rows {
        h.update(format!("{row:?}\n").as_bytes());
    }
    h.finalize().to_hex().to_string()
}
