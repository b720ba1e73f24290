//! Which database the farm keeps its records in, and, on PostgreSQL, the
//! leader lease it must hold to write (`tessera_store_postgres::lease`).
//!
//! SQLite is the embedded default: one coordinator owns the file. On
//! PostgreSQL several coordinators may share the database; each waits for
//! the lease before it starts (a hot standby), renews it while it runs,
//! and is told when it lost it ([`LeaseKeeper::lost`]): then it must stop,
//! and until it does the database refuses its writes anyway.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_store::{Store, StoreError};
use tessera_store_postgres::{redacted, PgBackend};
use tokio::sync::watch;

/// Where the farm's records live.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Database {
    /// `tessera.db` in the data directory.
    #[default]
    Sqlite,
    /// A PostgreSQL database shared by the farm's coordinators.
    Postgres {
        url: String,
        /// This coordinator's name in the lease (stable across restarts,
        /// so a restarted coordinator takes its own lease back at once).
        holder: String,
        /// How long a lease lasts unrenewed: the longest a dead leader
        /// holds the farm up.
        lease: Duration,
    },
}

impl Database {
    /// `sqlite` (or empty), or a `postgres://` / `postgresql://` URL.
    pub fn parse(text: &str, holder: &str, lease: Duration) -> Result<Database, String> {
        let t = text.trim();
        if t.is_empty() || t == "sqlite" {
            return Ok(Database::Sqlite);
        }
        if t.starts_with("postgres://") || t.starts_with("postgresql://") {
            return Ok(Database::Postgres { url: t.to_owned(), holder: holder.to_owned(), lease });
        }
        Err(format!("--store must be sqlite or a postgres:// URL, not {:?}", redacted(t)))
    }
}

/// Keeps a lease renewed on a thread of its own.
pub struct LeaseKeeper {
    lost: watch::Receiver<bool>,
    stop: Arc<AtomicBool>,
    term: i64,
}

impl LeaseKeeper {
    /// The lease's term: the fencing token this coordinator writes under.
    pub fn term(&self) -> i64 {
        self.term
    }

    /// Resolves once the lease is lost (taken over, or not renewed in time).
    pub async fn lost(&self) {
        let mut lost = self.lost.clone();
        let _ = lost.wait_for(|l| *l).await;
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Opens the store on `db`, blobs in `data`. On PostgreSQL this waits
/// until the lease is this coordinator's (logging who holds it meanwhile)
/// and starts renewing it.
pub fn open(db: &Database, data: &Path) -> Result<(Store, Option<LeaseKeeper>), StoreError> {
    let Database::Postgres { url, holder, lease } = db else {
        return Ok((Store::open(data)?, None));
    };
    let ttl = lease.as_millis() as i64;
    let mut backend = PgBackend::connect(url)?;
    let mut said = None;
    let lease_now = loop {
        if let Some(l) = backend.lead(holder, ttl)? {
            break l;
        }
        let state = backend.lease_state()?;
        if said.as_ref() != Some(&state.holder) {
            tracing::warn!(leader = %state.holder, term = state.term, "another coordinator leads; standing by for its lease");
            said = Some(state.holder.clone());
        }
        std::thread::sleep(*lease / 4);
    };
    tracing::info!(holder = %holder, term = lease_now.term, database = %redacted(url), "leading the farm");
    let mut renewer = PgBackend::connect(url)?;
    renewer.write_as(lease_now.term)?;
    let (tx, rx) = watch::channel(false);
    let stop = Arc::new(AtomicBool::new(false));
    let (stop2, holder, period, url) = (stop.clone(), holder.clone(), *lease / 4, url.clone());
    std::thread::Builder::new()
        .name("lease-keeper".into())
        .spawn(move || {
            let mut renewed = Instant::now();
            while !stop2.load(Ordering::Relaxed) {
                std::thread::sleep(period);
                match renewer.renew(&holder, ttl) {
                    Ok(true) => renewed = Instant::now(),
                    Ok(false) => {
                        tracing::error!(holder = %holder, "another coordinator took the lease; this one must stop");
                        let _ = tx.send(true);
                        return;
                    }
                    Err(e) if renewed.elapsed().as_millis() as i64 >= ttl => {
                        tracing::error!(error = %e, "the lease could not be renewed before it expired; stopping");
                        let _ = tx.send(true);
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "renewing the lease failed; retrying");
                        if let Ok(b) = PgBackend::connect(&url).and_then(|mut b| {
                            b.write_as(lease_now.term)?;
                            Ok(b)
                        }) {
                            renewer = b;
                        }
                    }
                }
            }
        })
        .map_err(|e| StoreError::Invalid(format!("starting the lease keeper: {e}")))?;
    Ok((Store::with_backend(data, Box::new(backend))?, Some(LeaseKeeper { lost: rx, stop, term: lease_now.term })))
}
