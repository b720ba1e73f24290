//! The PostgreSQL backend of `tessera-store`: the same records, the same
//! semantics as SQLite (a write is one transaction, durable when it
//! returns: PostgreSQL commits with `synchronous_commit` on, its default),
//! so the same suite passes on both (`store/tests/suite.rs`).
//!
//! What PostgreSQL adds is several coordinators on one database. One of
//! them leads: it holds the lease in the `leader` row ([`lease`]) and
//! writes with that lease's term, and the database's fencing triggers
//! refuse any write made under an older term ([`schema`]). A connection
//! that holds no term can read everything and write nothing.
//!
//! The client is synchronous (`postgres`), as the store's traits are; the
//! connection sits in a `RefCell` because the traits read through `&self`
//! and a PostgreSQL client needs `&mut` for every query. A backend is used
//! by one thread at a time (`Send`, not `Sync`), like SQLite's.

pub mod blobs;
mod jobs;
pub mod lease;
mod meta;
pub mod migrate;
pub mod schema;
mod tiles;
mod tokens;
mod workers;

use std::cell::{RefCell, RefMut};

use postgres::types::ToSql;
use postgres::{Client, NoTls, Row};
use tessera_store::records::*;
use tessera_store::support::parse_scopes;
use tessera_store::{Backend, Result, StoreError};

pub use blobs::PgBlobs;
pub use lease::{Lease, LeaseState, Member};

/// The store's records in PostgreSQL: one connection, and the lease term
/// it writes under.
pub struct PgBackend {
    url: String,
    /// `None` only while dropping.
    client: RefCell<Option<Client>>,
    /// The term this connection writes under (`SET tessera.term`), if any.
    term: Option<i64>,
}

impl std::fmt::Debug for PgBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgBackend").field("url", &redacted(&self.url)).field("term", &self.term).finish()
    }
}

impl PgBackend {
    /// Connects to the database at `url` (`postgres://user@host:port/db`)
    /// and brings its schema to this binary's. The connection holds no
    /// term: it reads, and writes only after [`PgBackend::lead`] or
    /// [`PgBackend::write_as`].
    pub fn connect(url: &str) -> Result<PgBackend> {
        let client = off_runtime(|| -> Result<Client> {
            let mut client = connect_client(url)?;
            schema::migrate(&mut client)?;
            Ok(client)
        })?;
        Ok(PgBackend { url: url.to_owned(), client: RefCell::new(Some(client)), term: None })
    }

    /// The database this connection is to (with its password, if any:
    /// show [`redacted`] instead).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Writes under the lease's current term, whoever holds it: for an
    /// operator's tools (`tessera token`), whose writes are a person's
    /// decision, not a coordinator's that may be stale.
    pub fn join_current_term(&mut self) -> Result<()> {
        let term = self.lease_state()?.term;
        self.write_as(term)
    }

    /// The term this connection writes under.
    pub fn term(&self) -> Option<i64> {
        self.term
    }

    /// Writes from now on under `term` (a lease this coordinator holds, as
    /// [`lease::acquire`] returned it). Writes under a term that is not the
    /// lease's are refused by the database.
    pub fn write_as(&mut self, term: i64) -> Result<()> {
        self.db().execute("SELECT set_config('tessera.term', $1, false)", &[&term.to_string()]).map_err(pg_err)?;
        self.term = Some(term);
        Ok(())
    }

    /// Takes the lease for `holder` if it is free or expired (or already
    /// `holder`'s), then writes under its new term. Returns the lease, or
    /// `None` while someone else holds a live one.
    pub fn lead(&mut self, holder: &str, ttl_ms: i64) -> Result<Option<Lease>> {
        let lease = self.run(|db| lease::acquire(db, holder, ttl_ms))?;
        if let Some(l) = &lease {
            self.write_as(l.term)?;
        }
        Ok(lease)
    }

    /// Extends this connection's lease by `ttl_ms` from now; `false` if it
    /// is no longer this connection's (another coordinator took over).
    pub fn renew(&mut self, holder: &str, ttl_ms: i64) -> Result<bool> {
        let Some(term) = self.term else { return Ok(false) };
        self.run(|db| lease::renew(db, holder, term, ttl_ms))
    }

    /// The lease as the database has it now.
    pub fn lease_state(&self) -> Result<LeaseState> {
        self.run(lease::state)
    }

    /// Announces (refreshes) this coordinator in the farm's list.
    pub fn announce(&self, member: &Member) -> Result<()> {
        self.run(|db| lease::announce(db, member))
    }

    /// The coordinators that announced themselves within `within_ms`.
    pub fn members(&self, within_ms: i64) -> Result<Vec<Member>> {
        self.run(|db| lease::members(db, within_ms))
    }

    /// The connection, for one query ([`Db`]).
    fn db(&self) -> Db<'_> {
        Db(RefMut::map(self.client.borrow_mut(), |c| c.as_mut().expect("connected until dropped")))
    }

    /// Runs `f` on the connection, off any async runtime ([`off_runtime`]):
    /// for a transaction's several statements.
    pub(crate) fn run<R: Send>(&self, f: impl FnOnce(&mut Client) -> R + Send) -> R {
        let mut guard = self.client.borrow_mut();
        let client: &mut Client = guard.as_mut().expect("connected until dropped");
        off_runtime(|| f(client))
    }
}

impl Drop for PgBackend {
    /// The synchronous client's drop blocks on its own runtime, which
    /// panics on an async runtime's thread (a store dropped by the last
    /// task holding it at shutdown): drop it off the runtime.
    fn drop(&mut self) {
        if let Some(client) = self.client.get_mut().take() {
            off_runtime(move || drop(client));
        }
    }
}

impl Backend for PgBackend {
    fn reconnect(&self) -> Result<Box<dyn Backend>> {
        let mut other = PgBackend::connect(&self.url)?;
        if let Some(term) = self.term {
            other.write_as(term)?;
        }
        Ok(Box::new(other))
    }

    fn reconnect_reader(&self) -> Result<Box<dyn Backend>> {
        Ok(Box::new(PgBackend::connect(&self.url)?))
    }

    fn defer_housekeeping(&self) -> Result<()> {
        // Autovacuum runs in the server, never inside a commit.
        Ok(())
    }

    fn housekeeping(&self) -> Result<()> {
        Ok(())
    }

    fn shared_blobs(&self) -> Result<Option<std::sync::Arc<dyn tessera_store::SharedBlobs>>> {
        Ok(Some(std::sync::Arc::new(PgBlobs::connect(&self.url)?)))
    }
}

/// A connection to `url`, with TCP keepalives and a user timeout, so that
/// a connection whose network was cut fails within seconds instead of
/// blocking its caller for the kernel's default of many minutes.
pub(crate) fn connect_client(url: &str) -> Result<Client> {
    let fail =
        |e: postgres::Error| StoreError::Database(format!("connecting to PostgreSQL at {}: {e}", redacted(url)).into());
    let mut config: postgres::Config = url.parse().map_err(fail)?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(NETWORK_TIMEOUT);
    }
    config
        .keepalives(true)
        .keepalives_idle(std::time::Duration::from_secs(2))
        .keepalives_interval(std::time::Duration::from_secs(1))
        .keepalives_retries(3)
        .tcp_user_timeout(NETWORK_TIMEOUT);
    config.connect(NoTls).map_err(fail)
}

/// How long a connection waits on a silent network before it gives up.
pub const NETWORK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The connection for one statement, run off any async runtime.
pub(crate) struct Db<'a>(RefMut<'a, Client>);

type Params<'p> = &'p [&'p (dyn ToSql + Sync)];

impl Db<'_> {
    pub(crate) fn query(&mut self, sql: &str, params: Params<'_>) -> Result<Vec<Row>, postgres::Error> {
        let client = &mut *self.0;
        off_runtime(|| client.query(sql, params))
    }

    pub(crate) fn query_one(&mut self, sql: &str, params: Params<'_>) -> Result<Row, postgres::Error> {
        let client = &mut *self.0;
        off_runtime(|| client.query_one(sql, params))
    }

    pub(crate) fn query_opt(&mut self, sql: &str, params: Params<'_>) -> Result<Option<Row>, postgres::Error> {
        let client = &mut *self.0;
        off_runtime(|| client.query_opt(sql, params))
    }

    pub(crate) fn execute(&mut self, sql: &str, params: Params<'_>) -> Result<u64, postgres::Error> {
        let client = &mut *self.0;
        off_runtime(|| client.execute(sql, params))
    }
}

/// Runs `f` where the synchronous client can block: it drives its own
/// small runtime, which cannot start on a thread that is inside another
/// (the coordinator's tokio threads, and its blocking pool's). There, `f`
/// runs on a scoped thread of its own while this one waits.
pub(crate) fn off_runtime<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    std::thread::scope(|s| match s.spawn(f).join() {
        Ok(r) => r,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

/// A PostgreSQL error as a store error: a fenced write as
/// [`StoreError::Fenced`], the rest as [`StoreError::Database`].
pub(crate) fn pg_err(e: postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(db) if db.code().code() == schema::FENCED => StoreError::Fenced(db.message().to_owned()),
        // The server's own words (and what they are about), not just "db error".
        Some(db) => StoreError::Database(
            match db.detail() {
                Some(detail) => format!("PostgreSQL: {} ({detail})", db.message()),
                None => format!("PostgreSQL: {}", db.message()),
            }
            .into(),
        ),
        None => StoreError::Database(Box::new(e)),
    }
}

/// A value that does not fit the store's signed 64-bit integers.
pub(crate) fn to_i64(value: u64, what: &'static str) -> Result<i64> {
    i64::try_from(value).map_err(|_| StoreError::OutOfRange { what, value })
}

/// A stored integer that must not be negative.
pub(crate) fn to_u64(value: i64, what: &str) -> Result<u64> {
    u64::try_from(value).map_err(|_| bad(format!("{what} = {value} is negative")))
}

pub(crate) fn to_u32(value: i64, what: &str) -> Result<u32> {
    u32::try_from(value).map_err(|_| bad(format!("{what} = {value} is out of range")))
}

/// A stored value that does not decode to what it should hold.
pub(crate) fn bad(msg: String) -> StoreError {
    StoreError::Database(msg.into())
}

/// A 32-byte hash column.
pub(crate) fn hash32(bytes: Vec<u8>, what: &str) -> Result<[u8; 32]> {
    bytes.try_into().map_err(|_| bad(format!("{what} is not 32 bytes")))
}

pub(crate) fn opt_hash32(bytes: Option<Vec<u8>>, what: &str) -> Result<Option<[u8; 32]>> {
    bytes.map(|b| hash32(b, what)).transpose()
}

/// `url` without its password, for messages and logs.
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let user = &url[s + 3..at];
            match user.split_once(':') {
                Some((name, _)) => format!("{}{name}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

pub(crate) const JOB_COLUMNS: &str =
    "id, name, spec_json, priority, tiles, frames_json, state, error, created_ms, finished_ms";
pub(crate) const TILE_COLUMNS: &str = "job, idx, frame, hash, data, worker, fuel, millis, proof";
pub(crate) const FRAME_COLUMNS: &str = "job, frame, exr, png, thumbnail, finished_ms, denoised_exr, denoised_png";
pub(crate) const TOKEN_COLUMNS: &str = "id, kind, label, created_ms, revoked, scopes";

pub(crate) fn job_from_row(row: &Row) -> Result<JobRecord> {
    let frames: String = row.get(5);
    let state: String = row.get(6);
    Ok(JobRecord {
        id: to_u64(row.get(0), "job id")?,
        name: row.get(1),
        spec_json: row.get(2),
        priority: row.get(3),
        tiles: to_u32(row.get(4), "job tiles")?,
        frames: serde_json::from_str(&frames).map_err(|e| bad(format!("job frames: {e}")))?,
        state: JobState::parse(&state).ok_or_else(|| bad(format!("unknown job state {state:?}")))?,
        error: row.get(7),
        created_ms: to_u64(row.get(8), "created_ms")?,
        finished_ms: row.get::<_, Option<i64>>(9).map(|v| to_u64(v, "finished_ms")).transpose()?,
    })
}

pub(crate) fn tile_from_row(row: &Row) -> Result<TileRecord> {
    Ok(TileRecord {
        job: to_u64(row.get(0), "tile job")?,
        index: to_u32(row.get(1), "tile index")?,
        frame: row.get(2),
        hash: hash32(row.get(3), "tile hash")?,
        data: row.get(4),
        worker: row.get(5),
        fuel: to_u64(row.get(6), "tile fuel")?,
        millis: to_u64(row.get(7), "tile millis")?,
        proof: row.get(8),
        credit: None,
        also_credit: None,
    })
}

pub(crate) fn frame_from_row(row: &Row) -> Result<FrameRecord> {
    Ok(FrameRecord {
        job: to_u64(row.get(0), "frame job")?,
        frame: row.get(1),
        exr: opt_hash32(row.get(2), "frame exr")?,
        png: opt_hash32(row.get(3), "frame png")?,
        thumbnail: hash32(row.get(4), "frame thumbnail")?,
        finished_ms: to_u64(row.get(5), "frame finished_ms")?,
        denoised_exr: opt_hash32(row.get(6), "frame denoised_exr")?,
        denoised_png: opt_hash32(row.get(7), "frame denoised_png")?,
    })
}

pub(crate) fn token_from_row(row: &Row) -> Result<TokenRecord> {
    let kind: String = row.get(1);
    let scopes: String = row.get(5);
    Ok(TokenRecord {
        id: to_u64(row.get(0), "token id")?,
        kind: TokenKind::parse(&kind).ok_or_else(|| bad(format!("unknown token kind {kind:?}")))?,
        label: row.get(2),
        created_ms: to_u64(row.get(3), "token created_ms")?,
        revoked: row.get(4),
        scopes: parse_scopes(&scopes).ok_or_else(|| bad(format!("unknown token scopes {scopes:?}")))?,
    })
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(redacted("postgres://farm:s3cret@db:5432/tessera"), "postgres://farm:***@db:5432/tessera");
        assert_eq!(redacted("postgres://farm@db/tessera"), "postgres://farm@db/tessera");
        assert_eq!(redacted("host=db user=farm"), "host=db user=farm");
    }
}
