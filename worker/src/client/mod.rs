//! The worker's side of the farm: connect to a coordinator over QUIC, join
//! with a token, accept pushed tiles, render them in the sandbox, send the
//! results back; reconnect with backoff when the connection drops.
//!
//! One connection carries everything: the control stream the worker opens
//! (hello, heartbeats, revokes), one stream per tile the coordinator opens,
//! and one stream per blob the worker fetches. Scenes and modules come by
//! hash and are checked and cached on disk ([`crate::blobs`]).

mod held;
mod slots;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tessera_protocol::wire::{
    BlobHeader, Capabilities, CoordinatorMsg, Hello, JobDescriptor, TileAck, TileReply, TileTask, WorkerMsg,
    WorkerOpen, MAX_CONTROL_MESSAGE, MAX_HELD_TILES, PROTOCOL_VERSION,
};
use tessera_protocol::ContentHash;
use tokio::sync::{watch, OnceCell};

use crate::blobs::{BlobCache, BlobError};
use crate::net::tls::{self, Identity};
use crate::net::{read_last, read_msg, within, write_msg, NetError};
use crate::sandbox::{Sandbox, SandboxConfig, SandboxError};
pub use slots::{sandbox_job, tile_request, JobContext};
use slots::{SlotTask, Slots};

/// How a worker is set up.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// `host:port` of the coordinator's QUIC endpoint.
    pub coordinator: String,
    pub token: String,
    /// The coordinator certificate's fingerprint, as it printed it.
    pub pin: String,
    /// Where the worker keeps its key, its blob cache and compiled modules.
    pub data_dir: PathBuf,
    /// Tiles rendered at once; default: the machine's cores.
    pub slots: u32,
    pub name: String,
    /// Cap on cached scenes and modules, in bytes.
    pub cache_bytes: u64,
    /// How long a silent coordinator takes to be declared gone.
    pub idle_timeout: Duration,
    /// Longest wait between reconnection attempts.
    pub max_backoff: Duration,
    /// The GPU jobs may use (`--gpu`; the binary's default is `auto`, this
    /// library's `None`, so embedded workers such as `tessera demo`'s use
    /// none unless told). Only jobs whose engine allows it see it, and only
    /// for tiles leased for the GPU.
    pub gpu: crate::gpu::GpuSelection,
}

impl WorkerConfig {
    pub fn new(
        coordinator: impl Into<String>,
        token: impl Into<String>,
        pin: impl Into<String>,
        data_dir: PathBuf,
    ) -> Self {
        WorkerConfig {
            coordinator: coordinator.into(),
            token: token.into(),
            pin: pin.into(),
            data_dir,
            slots: default_slots(),
            name: host_name(),
            cache_bytes: 4 << 30,
            idle_timeout: Duration::from_secs(10),
            max_backoff: Duration::from_secs(30),
            gpu: crate::gpu::GpuSelection::None,
        }
    }
}

/// The machine's cores.
pub fn default_slots() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "worker".into())
}

fn memory_bytes() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Why the worker stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("the coordinator refused this worker: {0}")]
    Refused(String),
    #[error("the coordinator's certificate does not match the pin: {0}")]
    PinMismatch(String),
    #[error("{0}")]
    Net(#[from] NetError),
    #[error("sandbox: {0}")]
    Sandbox(#[from] SandboxError),
    #[error("blob cache: {0}")]
    Blobs(#[from] BlobError),
    #[error(transparent)]
    Gpu(#[from] crate::gpu::GpuError),
}

/// Shared by every session of one worker process.
struct Shared {
    config: WorkerConfig,
    identity: Identity,
    /// The identity's key, for signing tile commitments.
    signer: Arc<tessera_protocol::proof::SigningKey>,
    sandbox: Sandbox,
    blobs: BlobCache,
    /// Compiled modules and scenes by hash, for the jobs in flight.
    jobs: Mutex<BTreeMap<u64, Arc<OnceCell<Arc<JobContext>>>>>,
    /// Every tile task until its result is delivered: what a lost
    /// connection leaves here is offered to the next one.
    holdings: held::Holdings,
    /// Numbers this process's connections, so a lease number of a lost
    /// connection is never taken for the same number on the next.
    sessions: std::sync::atomic::AtomicU64,
}

/// A worker process: its identity, sandbox and caches.
pub struct Worker {
    shared: Arc<Shared>,
}

/// How one connection ended.
enum SessionEnd {
    /// Asked to stop: left cleanly.
    Shutdown,
    /// Lost: try again.
    Lost(NetError),
}

impl Worker {
    /// Loads (or makes) the worker's key, opens its caches and its sandbox.
    pub fn new(config: WorkerConfig) -> Result<Worker, WorkerError> {
        tls::parse_pins(&config.pin)?;
        let identity = Identity::load_or_create(&config.data_dir.join("worker.key"), &config.name)?;
        let gpu = crate::gpu::Gpu::open(crate::gpu::GpuConfig {
            selection: config.gpu.clone(),
            ..crate::gpu::GpuConfig::default()
        })?;
        let sandbox = Sandbox::new(SandboxConfig {
            cache_dir: Some(config.data_dir.join("modules")),
            gpu,
            ..SandboxConfig::default()
        })?;
        let blobs = BlobCache::open(&config.data_dir.join("blobs"), config.cache_bytes)?;
        let signer = Arc::new(
            tessera_protocol::proof::SigningKey::from_pkcs8(&identity.key_der)
                .map_err(|e| NetError::Tls(e.to_string()))?,
        );
        // Room for every lease of two connections (slots × (1 + prefetch)
        // each, with a margin for prefetch settings).
        let holdings = held::Holdings::new(8 * config.slots as usize + 64);
        Ok(Worker {
            shared: Arc::new(Shared {
                config,
                identity,
                signer,
                sandbox,
                blobs,
                jobs: Mutex::default(),
                holdings,
                sessions: std::sync::atomic::AtomicU64::new(0),
            }),
        })
    }

    /// This worker's identity as coordinators name it.
    pub fn identity(&self) -> Result<String, NetError> {
        self.shared.identity.identity()
    }

    /// The GPU jobs on this worker may use, if any.
    pub fn gpu(&self) -> Option<&crate::gpu::AdapterDescription> {
        self.shared.sandbox.config().gpu.as_ref().map(|g| g.adapter())
    }

    /// Serves the coordinator until `shutdown` turns true, reconnecting
    /// with exponential backoff (0.25 s doubling to `max_backoff` after
    /// each round through the coordinators' addresses, with jitter so a
    /// farm's workers do not return in lockstep). A refused
    /// token or a certificate that does not match the pin ends it: retrying
    /// cannot fix either.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) -> Result<(), WorkerError> {
        let slots = Arc::new(Slots::new(self.shared.config.slots));
        let mut endpoint = quinn::Endpoint::client(SocketAddr::from(([0, 0, 0, 0], 0)))
            .map_err(|e| NetError::io(std::path::Path::new("udp socket"), e))?;
        endpoint.set_default_client_config(tls::client_config(
            &self.shared.identity,
            &self.shared.config.pin,
            crate::net::transport(self.shared.config.idle_timeout, 4096),
        )?);
        // Several coordinators of one farm (`a:7879,b:7879`): a lost or
        // unreachable one makes the worker try the next.
        let addrs: Vec<String> = self
            .shared
            .config
            .coordinator
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect();
        let mut which = 0usize;
        let mut backoff = FIRST_BACKOFF;
        // Failed tries in the current round through the addresses: the
        // backoff grows per round, not per address, so the coordinator that
        // takes over is tried again within a second or two of the last one
        // dying, however many addresses are in the list.
        let mut failed_in_round = 0usize;
        loop {
            if *shutdown.borrow() {
                return Ok(());
            }
            let addr = addrs.get(which % addrs.len().max(1)).map_or("", String::as_str);
            match self.session(addr, &endpoint, &slots, &mut shutdown).await {
                Ok(SessionEnd::Shutdown) => {
                    endpoint.wait_idle().await;
                    return Ok(());
                }
                Ok(SessionEnd::Lost(e)) => {
                    tracing::warn!(coordinator = addr, error = %e, "connection to the coordinator lost; reconnecting");
                    backoff = FIRST_BACKOFF;
                    failed_in_round = 0;
                    which += 1;
                }
                Err(WorkerError::Net(e)) => {
                    tracing::warn!(coordinator = addr, error = %e, retry_in = ?backoff, "cannot reach the coordinator");
                    failed_in_round += 1;
                    which += 1;
                }
                Err(e) => return Err(e),
            }
            // Within a round, the next address after a short pause; after
            // a whole round failed, the backoff, doubled for the next.
            let round_over = failed_in_round == 0 || failed_in_round >= addrs.len();
            let pause = if round_over { backoff } else { FIRST_BACKOFF };
            let jitter = Duration::from_millis(u64::from(std::process::id() % 97) * pause.as_millis() as u64 / 400);
            tokio::select! {
                _ = tokio::time::sleep(pause + jitter) => {}
                // A dropped sender can never ask again: take it as the
                // request (else `changed` returns at once and this spins).
                changed = shutdown.changed() => if changed.is_err() { return Ok(()) },
            }
            if round_over && failed_in_round > 0 {
                backoff = (backoff * 2).min(self.shared.config.max_backoff);
                failed_in_round = 0;
            }
        }
    }

    async fn session(
        &self,
        coordinator: &str,
        endpoint: &quinn::Endpoint,
        slots: &Arc<Slots>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<SessionEnd, WorkerError> {
        let config = &self.shared.config;
        let addr = tokio::net::lookup_host(coordinator)
            .await
            .map_err(|e| NetError::io(std::path::Path::new(coordinator), e))?
            .next()
            .ok_or_else(|| NetError::Protocol(format!("{coordinator} resolves to no address")))?;
        let connecting = endpoint.connect(addr, "tessera-coordinator").map_err(NetError::from)?;
        // A coordinator that is down answers nothing: give up on it after a
        // handshake's worth of time, not the idle timeout, so the worker
        // reaches the one that took over within seconds.
        let limit = config.idle_timeout.min(CONNECT_TIMEOUT);
        let Ok(connected) = tokio::time::timeout(limit, connecting).await else {
            return Err(NetError::Timeout(limit).into());
        };
        let conn = match connected {
            Ok(c) => c,
            Err(quinn::ConnectionError::TransportError(e)) if e.reason.contains("does not match the pinned") => {
                return Err(WorkerError::PinMismatch(e.reason));
            }
            Err(e) => return Err(NetError::from(e).into()),
        };
        let (mut control_tx, mut control_rx) = conn.open_bi().await.map_err(NetError::from)?;
        let hello = Hello {
            version: PROTOCOL_VERSION,
            token: config.token.clone(),
            name: config.name.clone(),
            capabilities: Capabilities {
                slots: config.slots,
                cores: default_slots(),
                memory_bytes: memory_bytes(),
                gpu: self.gpu().map(|a| a.to_string()),
                agent: concat!("tessera-worker ", env!("CARGO_PKG_VERSION")).into(),
                gpu_class: self.gpu().map(|a| a.class()),
            },
        };
        // Renders a lost connection left behind: the coordinator may lease
        // them back. Named before this connection has a task of its own.
        let mut holding = self.shared.holdings.holding(std::time::Instant::now());
        // The newest, as many as a coordinator reads.
        holding.drain(..holding.len().saturating_sub(MAX_HELD_TILES));
        let open = if holding.is_empty() {
            WorkerOpen::Control(hello)
        } else {
            tracing::info!(tiles = holding.len(), "rejoining with tiles rendered for a lost connection");
            WorkerOpen::Rejoin { hello, holding }
        };
        write_msg(&mut control_tx, &open).await?;
        let session = self.shared.sessions.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let heartbeat = match within(Duration::from_secs(10), read_msg(&mut control_rx, MAX_CONTROL_MESSAGE)).await {
            Ok(CoordinatorMsg::Welcome { identity, heartbeat_ms }) => {
                tracing::info!(coordinator = %addr, %identity, slots = config.slots, "joined the farm");
                Duration::from_millis(heartbeat_ms.max(100))
            }
            Ok(CoordinatorMsg::Refused { reason }) => return Err(WorkerError::Refused(reason)),
            Ok(other) => return Err(NetError::Protocol(format!("expected a welcome, got {other:?}")).into()),
            // A refusal closes the connection with the reason.
            Err(NetError::Closed | NetError::Read(_) | NetError::Connection(_)) => {
                if let Some(quinn::ConnectionError::ApplicationClosed(close)) = conn.close_reason() {
                    return Err(WorkerError::Refused(String::from_utf8_lossy(&close.reason).into_owned()));
                }
                return Err(NetError::Closed.into());
            }
            Err(e) => return Err(e.into()),
        };

        // Tiles in flight on this connection: Ctrl-C waits for them.
        let mut tiles = tokio::task::JoinSet::new();
        let mut ticker = tokio::time::interval(heartbeat);
        let mut control = crate::net::spawn_reader::<CoordinatorMsg>(control_rx, MAX_CONTROL_MESSAGE);
        let end = loop {
            tokio::select! {
                _ = ticker.tick() => {
                    if let Err(e) = write_msg(&mut control_tx, &WorkerMsg::Heartbeat).await {
                        break SessionEnd::Lost(e);
                    }
                }
                msg = control.recv() => match msg.unwrap_or(Err(NetError::Closed)) {
                    Ok(CoordinatorMsg::Revoke { lease }) => {
                        slots.revoke(session, lease);
                        self.shared.holdings.settled(session, lease);
                    }
                    Ok(CoordinatorMsg::Acks(acks)) => {
                        for (lease, ack) in acks {
                            self.shared.holdings.settled(session, lease);
                            if let TileAck::Rejected { reason } = ack {
                                tracing::warn!(lease, %reason, "result rejected");
                            }
                        }
                    }
                    Ok(other) => tracing::debug!(?other, "ignoring control message"),
                    Err(e) => break SessionEnd::Lost(e),
                },
                stream = conn.accept_bi() => match stream {
                    Ok((send, recv)) => {
                        let (shared, slots, conn) = (self.shared.clone(), slots.clone(), conn.clone());
                        tiles.spawn(async move {
                            if let Err(e) = serve_tile(&shared, &slots, session, &conn, send, recv).await {
                                tracing::debug!(error = %e, "tile stream ended");
                            }
                        });
                    }
                    Err(e) => break SessionEnd::Lost(e.into()),
                },
                Some(_) = tiles.join_next(), if !tiles.is_empty() => {}
                _ = shutdown.changed() => {
                    if *shutdown.borrow() {
                        break SessionEnd::Shutdown;
                    }
                }
            }
        };
        if let SessionEnd::Lost(_) = end {
            // The tiles rendering go on: their results are held for
            // whoever leases them next (see `held`).
            tiles.detach_all();
        }
        if let SessionEnd::Shutdown = end {
            // Finish the tiles that are rendering (their results go out),
            // then say goodbye: the coordinator re-queues what is left.
            tracing::info!(tiles = tiles.len(), "leaving: finishing tiles in flight");
            let _ = within(config.idle_timeout * 6, async {
                while tiles.join_next().await.is_some() {}
                Ok(())
            })
            .await;
            let _ = write_msg(&mut control_tx, &WorkerMsg::Leaving).await;
            let _ = control_tx.finish();
            let _ = within(Duration::from_secs(2), async {
                let _ = control_tx.stopped().await;
                Ok(())
            })
            .await;
            conn.close(0u32.into(), b"worker leaving");
        }
        Ok(end)
    }
}

/// One tile: read the task, make sure the job's blobs are here, render in a
/// slot (or take the render a lost connection left), send the reply.
async fn serve_tile(
    shared: &Arc<Shared>,
    slots: &Slots,
    session: u64,
    conn: &quinn::Connection,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) -> Result<(), WorkerError> {
    let task: TileTask = read_last(&mut recv, MAX_CONTROL_MESSAGE, Duration::from_millis(100)).await?;
    let received = std::time::Instant::now();
    let lease = task.lease;
    // The same tile rendered (or rendering) for a connection that was lost.
    let adopted = match shared.holdings.take(&task) {
        Some(mut outcome) => {
            let finished = tokio::select! {
                o = outcome.wait_for(Option::is_some) => o.ok().and_then(|o| o.clone()),
                _ = send.stopped() => return Ok(()),
            };
            finished.and_then(|o| held::answer(&task, o))
        }
        None => None,
    };
    let holding = shared.holdings.register(session, &task, received);
    let reply = match adopted {
        Some(reply) => {
            tracing::info!(job = task.job.job, tile = task.tile, lease, "answered from a render of a lost connection");
            reply
        }
        None => {
            let context = match job_context(shared, conn, &task.job).await {
                Ok(c) => c,
                Err(e) => {
                    shared.holdings.forget(holding.id);
                    let reply = TileReply::Failed { lease, error: format!("preparing the job: {e}"), retryable: true };
                    write_msg(&mut send, &reply).await?;
                    let _ = send.finish();
                    return Err(e);
                }
            };
            let (tx, mut rx) = tokio::sync::oneshot::channel();
            slots.submit(SlotTask { session, task, context, reply: tx });
            tokio::select! {
                r = &mut rx => match r {
                    Ok(r) => r,
                    Err(_) => {
                        shared.holdings.forget(holding.id); // revoked before it started
                        return Ok(());
                    }
                },
                stopped = send.stopped() => {
                    match stopped {
                        // The connection is lost: render on, for whoever
                        // leases this tile next.
                        Err(_) => match rx.await {
                            Ok(r) => {
                                holding.outcome.send_replace(Some(r));
                            }
                            Err(_) => shared.holdings.forget(holding.id),
                        },
                        // The coordinator reset the stream (revoked, or it gave up).
                        Ok(_) => shared.holdings.forget(holding.id),
                    }
                    return Ok(());
                }
            }
        }
    };
    // Held until the verdict comes on the control stream, once the result
    // is durable: a coordinator that dies before that may have read it and
    // lost it.
    holding.outcome.send_replace(Some(reply.clone()));
    write_msg(&mut send, &reply).await?;
    let _ = send.finish();
    let _ = send.stopped().await;
    Ok(())
}

/// The compiled module and scene for a job, fetched once per job however
/// many tiles arrive together.
async fn job_context(
    shared: &Arc<Shared>,
    conn: &quinn::Connection,
    job: &JobDescriptor,
) -> Result<Arc<JobContext>, WorkerError> {
    let cell = {
        let mut jobs = shared.jobs.lock().unwrap_or_else(|e| e.into_inner());
        // Keep the last few jobs: a farm interleaves at most a handful.
        while jobs.len() > 8 {
            jobs.pop_first();
        }
        jobs.entry(job.job).or_default().clone()
    };
    let context = cell
        .get_or_try_init(|| async {
            let module_bytes = fetch_blob(shared, conn, job.module).await?;
            let scene = fetch_blob(shared, conn, job.scene).await?;
            let sandbox = shared.sandbox.clone();
            let module = tokio::task::spawn_blocking(move || sandbox.load(&module_bytes))
                .await
                .map_err(|e| SandboxError::Host(format!("compile task: {e}")))??;
            Ok::<_, WorkerError>(Arc::new(JobContext { module, scene: scene.into(), signer: shared.signer.clone() }))
        })
        .await?;
    Ok(context.clone())
}

/// Largest blob a worker accepts (a scene or a module).
const MAX_BLOB: u64 = 2 << 30;

/// Longest wait for a coordinator's handshake (a LAN's takes a
/// millisecond, a far one's a few hundred).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The first reconnect pause, and the pause between addresses in a round.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);

async fn fetch_blob(shared: &Arc<Shared>, conn: &quinn::Connection, hash: ContentHash) -> Result<Vec<u8>, WorkerError> {
    let cached = {
        let shared = shared.clone();
        tokio::task::spawn_blocking(move || shared.blobs.get(&hash)).await.ok().flatten()
    };
    if let Some(bytes) = cached {
        return Ok(bytes);
    }
    let (mut send, mut recv) = conn.open_bi().await.map_err(NetError::from)?;
    write_msg(&mut send, &WorkerOpen::Blob { hash }).await?;
    let _ = send.finish();
    let size = match read_msg::<BlobHeader>(&mut recv, MAX_CONTROL_MESSAGE).await? {
        BlobHeader::Found { size } if size <= MAX_BLOB.min(shared.config.cache_bytes) => size,
        BlobHeader::Found { size } => {
            return Err(NetError::Protocol(format!("blob {hash} is {size} bytes, over this worker's limit")).into())
        }
        BlobHeader::NotFound => return Err(NetError::Protocol(format!("the coordinator has no blob {hash}")).into()),
    };
    let mut bytes = vec![0; size as usize];
    recv.read_exact(&mut bytes).await.map_err(NetError::from)?;
    let shared = shared.clone();
    let bytes = tokio::task::spawn_blocking(move || shared.blobs.put(&hash, &bytes).map(|()| bytes))
        .await
        .map_err(|e| SandboxError::Host(format!("cache task: {e}")))??;
    tracing::debug!(%hash, size, "fetched blob");
    Ok(bytes)
}
