//! Which database the farm keeps its records in, and, on PostgreSQL, the
//! leader lease it must hold to write (`tessera_store_postgres::lease`).
//!
//! SQLite is the embedded default: one coordinator owns the file. On
//! PostgreSQL several coordinators may share the database; each waits for
//! the lease before it starts (a hot standby), renews it while it runs,
//! and is told when it lost it ([`LeaseKeeper::lost`]): then it must stop,
//! and until it does the database refuses its writes anyway.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_store::{Store, StoreError};
use tessera_store_postgres::{redacted, Member, PgBackend};
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
    /// When the last renewal that succeeded was sent (ms after `epoch`):
    /// the lease holds at least `ttl` from then, by the database's clock.
    renewed_ms: Arc<AtomicU64>,
    epoch: Instant,
    ttl: Duration,
}

impl LeaseKeeper {
    /// The lease's term: the fencing token this coordinator writes under.
    pub fn term(&self) -> i64 {
        self.term
    }

    /// Resolves once the lease is lost: taken over, or not renewed within
    /// its time to live. The second is judged here, by this machine's
    /// clock, not by the keeper's renewals returning: on a network that
    /// went silent a renewal can block far longer than the lease lasts, and
    /// by then another coordinator leads.
    pub async fn lost(&self) {
        let mut lost = self.lost.clone();
        let check = (self.ttl / 8).max(Duration::from_millis(50));
        loop {
            let since =
                self.epoch.elapsed().saturating_sub(Duration::from_millis(self.renewed_ms.load(Ordering::Acquire)));
            if since >= self.ttl {
                tracing::error!(
                    unrenewed_ms = since.as_millis() as u64,
                    "the lease was not renewed within its time to live; another coordinator may lead: stopping"
                );
                return;
            }
            tokio::select! {
                changed = lost.wait_for(|l| *l) => {
                    let _ = changed;
                    return;
                }
                () = tokio::time::sleep(check) => {}
            }
        }
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
    // The lease was taken just now: it holds `ttl` from (at least) here.
    let (epoch, renewed_ms) = (Instant::now(), Arc::new(AtomicU64::new(0)));
    let (stop2, holder, period, url, renewed_at) =
        (stop.clone(), holder.clone(), *lease / 4, url.clone(), renewed_ms.clone());
    std::thread::Builder::new()
        .name("lease-keeper".into())
        .spawn(move || {
            let mut renewed = Instant::now();
            while !stop2.load(Ordering::Relaxed) {
                std::thread::sleep(period);
                let sent = Instant::now();
                match renewer.renew(&holder, ttl) {
                    Ok(true) => {
                        renewed = sent;
                        renewed_at.store(sent.duration_since(epoch).as_millis() as u64, Ordering::Release);
                    }
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
    let keeper = LeaseKeeper { lost: rx, stop, term: lease_now.term, renewed_ms, epoch, ttl: *lease };
    Ok((Store::with_backend(data, Box::new(backend))?, Some(keeper)))
}

/// The farm's coordinators as this one last read them: who announced
/// themselves (and where), and who leads. Refreshed every second by
/// [`announce`]'s thread; read by the health check, the standby's answers
/// and the API's cross-origin rule.
#[derive(Clone, Debug, Default)]
pub struct Peers {
    view: Arc<std::sync::RwLock<PeersView>>,
    /// This coordinator's name.
    pub me: String,
}

/// One reading of [`Peers`].
#[derive(Clone, Debug, Default)]
pub struct PeersView {
    /// Coordinators that announced themselves in the last
    /// [`MEMBER_FRESH`], by name.
    pub members: Vec<Member>,
    /// The page origins of every coordinator that ever announced itself:
    /// a page one served keeps its access to the others after it died.
    pub origins: Vec<String>,
    /// The lease, if it could be read.
    pub lease: Option<tessera_store_postgres::LeaseState>,
}

/// How recently a coordinator must have announced itself to be listed.
pub const MEMBER_FRESH: Duration = Duration::from_secs(5);

impl PeersView {
    /// Who holds a live lease, by name.
    pub fn leading(&self) -> Option<&str> {
        self.lease.as_ref().filter(|l| l.live()).map(|l| l.holder.as_str())
    }
}

impl Peers {
    /// The latest reading.
    pub fn view(&self) -> PeersView {
        self.view.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The leader's announcement, if it leads under a live lease and has
    /// announced itself.
    pub fn leader(&self) -> Option<Member> {
        let view = self.view();
        let leader = view.leading()?;
        view.members.iter().find(|m| m.name == leader).cloned()
    }

    /// Whether `origin` (a page's `Origin` header) is one of the farm's
    /// coordinators: a page served by one may call another's API.
    pub fn is_member_origin(&self, origin: &str) -> bool {
        let origin = origin.trim_end_matches('/');
        self.view().origins.iter().any(|o| o.trim_end_matches('/').eq_ignore_ascii_case(origin))
    }
}

/// Announces `me` in the database every second, on a thread of its own,
/// and keeps the returned [`Peers`] up to date; a failed round is logged
/// and retried on a new connection.
pub fn announce(url: &str, me: Member) -> Peers {
    let peers = Peers { view: Default::default(), me: me.name.clone() };
    let (view, url) = (peers.view.clone(), url.to_owned());
    let spawned = std::thread::Builder::new().name("announce".into()).spawn(move || {
        let mut db: Option<PgBackend> = None;
        let mut failing = false;
        loop {
            let round = (|| -> Result<PeersView, StoreError> {
                if db.is_none() {
                    db = Some(PgBackend::connect(&url)?);
                }
                let conn = db.as_ref().expect("connected above");
                conn.announce(&me)?;
                let all = conn.members(i64::MAX / 4)?;
                let fresh = MEMBER_FRESH.as_millis() as i64;
                Ok(PeersView {
                    origins: all.iter().map(|m| m.http_url.clone()).collect(),
                    members: all.into_iter().filter(|m| m.age_ms <= fresh).collect(),
                    lease: Some(conn.lease_state()?),
                })
            })();
            match round {
                Ok(fresh) => {
                    *view.write().unwrap_or_else(|p| p.into_inner()) = fresh;
                    failing = false;
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "announcing this coordinator to the farm failed; retrying");
                    }
                    failing = true;
                    db = None;
                }
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "could not start the announcing thread: other coordinators will not list this one");
    }
    peers
}
