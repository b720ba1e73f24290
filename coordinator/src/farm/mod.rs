//! The farm: the coordinator's QUIC endpoint, its core loop and its store,
//! started together by [`Farm::start`].
//!
//! ```text
//!  QUIC connections ──CoreMsg──► core (scheduler) ──WriterMsg──► writer ──► SQLite
//!        ▲   (conn.rs)               (core.rs)                  (writer.rs)   │
//!        └────────── ConnCmd: dispatch, revoke ◄──── Persisted ◄──────────────┘
//! ```
//!
//! Workers authenticate with TLS keys and join tokens (`conn.rs`); the
//! scheduler decides (`crate::scheduler`, no I/O); results become durable
//! before their ack (`writer.rs`); complete frames are assembled from the
//! stored tiles with the same code `tessera render` uses.

pub mod conn;
pub mod core;
pub mod database;
pub mod job;
pub mod manifest;
pub mod msg;
pub mod replicate;
pub mod status;
pub mod verify;
pub mod writer;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tessera_protocol::ContentHash;
use tessera_worker::net::tls::Identity;
use tessera_worker::net::{self, NetError};
use tessera_worker::sandbox::{
    JobSettings, JobSpec as SandboxJob, LogLevel as GuestLogLevel, Sandbox, SandboxConfig, SandboxError, SceneInfo,
    TileRequest,
};
use tokio::sync::{mpsc, oneshot};

pub use self::status::{Counters, FarmStatus, JobStatus, WorkerStatus};
pub use job::JobSpec;
use tessera_store::{NewJob, Store, StoreError, TokenKind};

/// How a farm is set up.
#[derive(Clone, Debug)]
pub struct FarmConfig {
    /// SQLite database, blobs, frames, the QUIC identity.
    pub data_dir: PathBuf,
    /// Where workers connect (UDP).
    pub quic: SocketAddr,
    /// How often workers send heartbeats (the scheduler drops a worker
    /// after three missed).
    pub heartbeat: Duration,
    /// A silent connection (a killed worker) is closed after this.
    pub idle_timeout: Duration,
    pub scheduler: crate::scheduler::Config,
    /// Proof-of-render checks.
    pub verify: verify::VerifyConfig,
    /// Where the records are: SQLite in `data_dir` (the default), or a
    /// PostgreSQL database the farm's coordinators share.
    pub database: database::Database,
}

impl FarmConfig {
    pub fn new(data_dir: PathBuf, quic: SocketAddr) -> FarmConfig {
        FarmConfig {
            data_dir,
            quic,
            heartbeat: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(10),
            scheduler: crate::scheduler::Config::default(),
            verify: verify::VerifyConfig::default(),
            database: database::Database::Sqlite,
        }
    }
}

/// Why the farm could not start or do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum FarmError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Net(#[from] NetError),
    #[error("binding the QUIC endpoint on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("{0}")]
    Spec(#[from] job::SpecError),
    #[error("the job's module or scene: {0}")]
    Sandbox(#[from] SandboxError),
    #[error("the farm is shutting down")]
    Stopped,
    #[error("the verifier: {0}")]
    Verify(#[from] verify::VerifyError),
    #[error("no job {0}")]
    NoSuchJob(u64),
    /// The request does not fit the job's state (retrying a running job).
    #[error("{0}")]
    Conflict(String),
}

/// A running farm. Dropping it stops accepting connections; call
/// [`Farm::shutdown`] to also close them cleanly.
pub struct Farm {
    core: mpsc::UnboundedSender<CoreMsg>,
    store: Arc<Mutex<Store>>,
    endpoint: quinn::Endpoint,
    fingerprint: String,
    frames_dir: PathBuf,
    first_token: Option<String>,
    sandbox: Mutex<Option<Sandbox>>,
    events: tokio::sync::broadcast::Sender<tessera_client::model::Event>,
    started: std::time::Instant,
    /// Held from storing a job's blobs until its row exists, and while a
    /// deletion decides which blobs nothing uses: a submission of the same
    /// scene cannot lose its blob to a deletion running beside it.
    blob_gc: tokio::sync::Mutex<()>,
    verifier: Option<Arc<verify::Verifier>>,
    trust_threshold: u64,
    /// The PostgreSQL leader lease this coordinator holds, if it runs on one.
    lease: Option<database::LeaseKeeper>,
    /// Connections for the API's reads ([`Farm::reader`]); empty on SQLite.
    readers: Vec<Arc<Mutex<Store>>>,
    next_reader: std::sync::atomic::AtomicUsize,
    /// How long the store's group commits take.
    commit_timings: Arc<status::CommitTimings>,
}

use self::core::Core;
use self::msg::CoreMsg;

/// Connections a coordinator on PostgreSQL keeps for the API's reads.
pub const READERS: usize = 4;

impl Farm {
    /// Opens the store in `config.data_dir` (making the QUIC identity and a
    /// first worker join token on first start), binds the endpoint, and
    /// resumes every unfinished job: tiles already stored are not rendered
    /// again.
    pub async fn start(config: FarmConfig) -> Result<Farm, FarmError> {
        // The endpoint is bound before the store is opened, which on
        // PostgreSQL waits for the leader lease: a standby refuses workers
        // at once (they try the next coordinator within a quarter second)
        // instead of leaving their handshakes to time out.
        let data = config.data_dir.clone();
        let identity =
            tokio::task::spawn_blocking(move || Identity::load_or_create_pinned(&data, "tessera-coordinator"))
                .await
                .map_err(|_| FarmError::Stopped)??
                .0;
        let server = net::tls::server_config(&identity, net::transport(config.idle_timeout, 16))?;
        let endpoint = quinn::Endpoint::server(server, config.quic)
            .map_err(|source| FarmError::Bind { addr: config.quic, source })?;
        // Until the farm is ready (its connection context set, once the
        // unfinished jobs are loaded) every handshake is refused: a worker
        // rejoining with tiles of a lost connection (after a restart or a
        // fail-over) names tiles of those jobs, and the scheduler must know
        // them to lease them back.
        let (ready_tx, ready) = tokio::sync::watch::channel(None::<Arc<conn::ConnContext>>);
        let accept = endpoint.clone();
        tokio::spawn(async move {
            while let Some(incoming) = accept.accept().await {
                let ctx = ready.borrow().clone();
                match ctx {
                    Some(ctx) => drop(tokio::spawn(conn::serve(incoming, ctx))),
                    // The farm failed to start: let the address go.
                    None if ready.has_changed().is_err() => return,
                    None => incoming.refuse(),
                }
            }
        });

        let (data, db) = (config.data_dir.clone(), config.database.clone());
        let (store, lease, first_token, readers) = tokio::task::spawn_blocking(move || -> Result<_, FarmError> {
            let (mut store, lease) = database::open(&db, &data)?;
            // A store without a single token (a new farm) gets its first
            // worker token. (The identity was made before the lease was
            // won, so a new identity does not say a new farm.)
            let first_token = if store.tokens()?.is_empty() {
                Some(store.create_token(TokenKind::Worker, "first worker token", writer::unix_ms())?.1)
            } else {
                None
            };
            // Readers write nothing, so they carry no term: a write through
            // one would be refused by the fence.
            let readers = match db {
                database::Database::Postgres { .. } => (0..READERS)
                    .map(|_| store.reopen_reader().map(|r| Arc::new(Mutex::new(r))))
                    .collect::<Result<_, _>>()?,
                database::Database::Sqlite => Vec::new(),
            };
            Ok((store, lease, first_token, readers))
        })
        .await
        .map_err(|_| FarmError::Stopped)??;
        let store = Arc::new(Mutex::new(store));
        let blobs = lock(&store).blobs().clone();

        let (core_tx, core_rx) = mpsc::unbounded_channel();
        let (events, _) = tokio::sync::broadcast::channel(self::core::EVENT_BUFFER);
        let frames_dir = config.data_dir.join("frames");
        let commit_timings = Arc::new(status::CommitTimings::default());
        let (writer_tx, _threads) =
            writer::spawn(store.clone(), core_tx.clone(), frames_dir.clone(), commit_timings.clone());
        let mut scheduler_config = config.scheduler.clone();
        scheduler_config.heartbeat_timeout_ms = (config.heartbeat * 3).as_millis() as u64;

        let verifier = if config.verify.spot_checks {
            let (store, cfg) = (store.clone(), config.verify.clone());
            Some(Arc::new(
                tokio::task::spawn_blocking(move || verify::Verifier::new(cfg, store))
                    .await
                    .map_err(|_| FarmError::Stopped)??,
            ))
        } else {
            None
        };
        let replication = replicate::Replication {
            enabled: config.verify.replication && verifier.is_some(),
            independent_addresses: config.verify.independent_addresses,
            wait: config.verify.replica_wait,
            verifier: verifier.clone(),
        };
        tokio::spawn(Core::new(scheduler_config, writer_tx, events.clone(), replication, core_tx.clone()).run(core_rx));
        let ctx = Arc::new(conn::ConnContext {
            core: core_tx.clone(),
            store: store.clone(),
            blobs,
            heartbeat: config.heartbeat,
            lease_timeout: Duration::from_millis(config.scheduler.lease_timeout_ms),
            next_worker: AtomicU64::new(1),
            verifier: verifier.clone(),
            checks: Arc::new(tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get()))),
            replication: config.verify.replication && verifier.is_some(),
            trust_threshold: config.verify.trust_threshold,
        });
        let verifier_handle = verifier;

        let farm = Farm {
            core: core_tx,
            store,
            endpoint,
            fingerprint: identity.fingerprint(),
            frames_dir,
            first_token,
            sandbox: Mutex::new(None),
            events,
            started: std::time::Instant::now(),
            blob_gc: tokio::sync::Mutex::new(()),
            verifier: verifier_handle,
            trust_threshold: config.verify.trust_threshold,
            lease,
            readers,
            next_reader: std::sync::atomic::AtomicUsize::new(0),
            commit_timings,
        };
        farm.resume().await?;
        ready_tx.send_replace(Some(ctx));
        Ok(farm)
    }

    /// Has the verifier compile a job's module in the background, so its
    /// first results' checks do not wait for the compiler (on a fail-over,
    /// while the workers reconnect).
    fn warm(&self, module: &str) {
        let (Some(verifier), Ok(hash)) = (self.verifier.clone(), module.parse::<ContentHash>()) else { return };
        tokio::task::spawn_blocking(move || verifier.warm(&hash));
    }

    async fn resume(&self) -> Result<(), FarmError> {
        let store = self.store.clone();
        let jobs = tokio::task::spawn_blocking(move || -> Result<_, FarmError> {
            let store = lock(&store);
            let mut out = Vec::new();
            for record in store.unfinished_jobs()? {
                let done = store.done_tiles(record.id)?;
                let frames: Vec<i32> = store.frames(record.id)?.iter().map(|f| f.frame).collect();
                out.push((record, done, frames));
            }
            Ok(out)
        })
        .await
        .map_err(|_| FarmError::Stopped)??;
        for (record, done, frames_written) in jobs {
            let spec: JobSpec = match serde_json::from_str(&record.spec_json) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(job = record.id, error = %e, "unreadable job spec; failing the job");
                    let _ = lock(&self.store).set_job_state(
                        record.id,
                        tessera_store::JobState::Failed,
                        Some(&format!("unreadable spec: {e}")),
                        writer::unix_ms(),
                    );
                    continue;
                }
            };
            tracing::info!(job = record.id, done = done.len(), tiles = record.tiles, "resuming job");
            self.warm(&spec.module);
            self.send(CoreMsg::Load { id: record.id, spec, done, frames_written })?;
        }
        Ok(())
    }

    fn send(&self, msg: CoreMsg) -> Result<(), FarmError> {
        self.core.send(msg).map_err(|_| FarmError::Stopped)
    }

    /// Tile, frame, job and worker events as they happen (the API's
    /// server-sent events). A receiver that falls more than
    /// [`core::EVENT_BUFFER`] events behind misses some and is told so.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<tessera_client::model::Event> {
        self.events.subscribe()
    }

    /// Consecutive verified results after which a worker counts as trusted.
    pub fn trust_threshold(&self) -> u64 {
        self.trust_threshold
    }

    /// The epoch length (seconds) and the spot-check secrets of epochs that
    /// are over (none when spot checks are off).
    pub fn revealed_secrets(&self) -> Result<(u64, std::collections::BTreeMap<u64, [u8; 32]>), FarmError> {
        match &self.verifier {
            Some(v) => Ok((v.config().epoch.as_secs(), v.revealed_secrets(writer::unix_ms())?)),
            None => Ok((0, Default::default())),
        }
    }

    /// How long this farm has run.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// The certificate fingerprint workers pin.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Where workers connect (the bound port, if 0 was asked).
    pub fn quic_addr(&self) -> SocketAddr {
        self.endpoint.local_addr().unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// The worker join token made on the data directory's first start
    /// (only then: the store keeps tokens' hashes, not the tokens).
    pub fn first_token(&self) -> Option<&str> {
        self.first_token.as_deref()
    }

    /// Where finished frames are exported, per job (`job-N/`).
    pub fn frames_dir(&self) -> &Path {
        &self.frames_dir
    }

    pub fn job_dir(&self, job: u64) -> PathBuf {
        writer::job_dir(&self.frames_dir, job)
    }

    /// The store, for the API's writes and the CLI.
    pub fn store(&self) -> &Arc<Mutex<Store>> {
        &self.store
    }

    /// A store connection for the API's reads. On PostgreSQL, one of
    /// [`READERS`] connections of their own, a free one first: a read then
    /// waits neither for the writer's group commits nor for other reads
    /// behind the store's lock (under the soak's 200 API clients, sharing
    /// the writer's one connection made the API's p99 12 s and cut
    /// dispatch to a seventh). On SQLite the store itself.
    pub fn reader(&self) -> &Arc<Mutex<Store>> {
        if self.readers.is_empty() {
            return &self.store;
        }
        // The next one in turn that is free, so a read never waits behind
        // a long one while another connection idles; all busy: in turn.
        let n = self.readers.len();
        let start = self.next_reader.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        (0..n)
            .map(|k| &self.readers[(start + k) % n])
            .find(|r| r.try_lock().is_ok())
            .unwrap_or(&self.readers[start % n])
    }

    /// How long the store's group commits of verified tiles take: the
    /// durable half of every ack (`/metrics`, the soak).
    pub fn commit_timings(&self) -> &status::CommitTimings {
        &self.commit_timings
    }

    /// The blobs, for use without the store's lock (reading a frame's
    /// file may first fetch it from the farm's shared tier).
    pub fn blobs(&self) -> tessera_store::Blobs {
        lock(&self.store).blobs().clone()
    }

    /// Makes a token (`tw_…` for workers, `ta_…` for the API). An API token
    /// made here is `admin` (see `Store::create_token`): it is the one printed
    /// on a data directory's first start and by `tessera demo`.
    pub async fn create_token(&self, kind: TokenKind, label: &str) -> Result<String, FarmError> {
        let (store, label) = (self.store.clone(), label.to_string());
        let (_, secret) =
            tokio::task::spawn_blocking(move || lock(&store).create_token(kind, &label, writer::unix_ms()))
                .await
                .map_err(|_| FarmError::Stopped)??;
        Ok(secret)
    }

    /// Stores a blob (a scene, a module) and returns its hash.
    pub async fn put_blob(&self, bytes: Vec<u8>) -> Result<ContentHash, FarmError> {
        let blobs = lock(&self.store).blobs().clone();
        let hash = tokio::task::spawn_blocking(move || blobs.put(&bytes)).await.map_err(|_| FarmError::Stopped)??;
        Ok(ContentHash(hash))
    }

    /// Submits a job whose module and scene are already stored: durable
    /// (in the store) before this returns its id.
    pub async fn submit(&self, spec: JobSpec) -> Result<u64, FarmError> {
        let plan = spec.plan()?;
        let store = self.store.clone();
        let record = NewJob {
            name: spec.name.clone(),
            spec_json: serde_json::to_string(&spec).map_err(|e| job::SpecError::Invalid(e.to_string()))?,
            priority: spec.priority,
            tiles: plan.total_tiles(),
            frames: spec.frames.clone(),
        };
        let (module, scene) = (spec.module.clone(), spec.scene.clone());
        let id = tokio::task::spawn_blocking(move || -> Result<u64, FarmError> {
            let mut store = lock(&store);
            for h in [&module, &scene] {
                let hash: ContentHash = h.parse().map_err(|_| job::SpecError::Invalid(format!("bad hash {h}")))?;
                if !store.has_blob(&hash.0)? {
                    return Err(job::SpecError::Invalid(format!("blob {h} is not stored: upload it first")).into());
                }
            }
            Ok(store.insert_job(&record, writer::unix_ms())?)
        })
        .await
        .map_err(|_| FarmError::Stopped)??;
        self.warm(&spec.module);
        self.send(CoreMsg::Load { id, spec, done: Vec::new(), frames_written: Vec::new() })?;
        Ok(id)
    }

    /// Reads a scene through `module` in the sandbox (as a job would): its
    /// animation range, resolution and cameras, or why it cannot be used.
    pub async fn inspect_scene(
        &self,
        scene: Vec<u8>,
        module: Vec<u8>,
        fps: f64,
        extra: String,
    ) -> Result<SceneInfo, FarmError> {
        Ok(self.inspect(scene, module, fps, extra, false).await?.info)
    }

    /// [`Farm::inspect_scene`] with the warnings the module logged while it
    /// read the scene: what it will ignore or render differently (a glTF
    /// extension it does not implement, say), for the artist to see before
    /// the frames do.
    pub async fn inspect_scene_with_warnings(
        &self,
        scene: Vec<u8>,
        module: Vec<u8>,
        fps: f64,
        extra: String,
    ) -> Result<SceneInspection, FarmError> {
        self.inspect(scene, module, fps, extra, false).await
    }

    /// [`Farm::inspect_scene`], and with `guides` also one pixel rendered
    /// with the denoiser's guides: a module that does not return them
    /// (`wire::guides_problem`) cannot serve a denoised job, which is
    /// better said at submission than by every tile being refused.
    async fn inspect(
        &self,
        scene: Vec<u8>,
        module: Vec<u8>,
        fps: f64,
        extra: String,
        guides: bool,
    ) -> Result<SceneInspection, FarmError> {
        let sandbox = {
            let mut s = self.sandbox.lock().unwrap_or_else(|e| e.into_inner());
            match &*s {
                Some(sb) => sb.clone(),
                None => {
                    let sb = Sandbox::new(SandboxConfig::default())?;
                    *s = Some(sb.clone());
                    sb
                }
            }
        };
        let info = tokio::task::spawn_blocking(move || -> Result<_, SandboxError> {
            let m = sandbox.load(&module)?;
            let probe = SandboxJob::new(scene, JobSettings { fps, extra, ..JobSettings::new(16, 16) });
            let mut instance = m.instantiate(&probe)?;
            let info = instance.scene_info().clone();
            let warnings = instance
                .take_logs()
                .into_iter()
                .filter(|l| matches!(l.level, GuestLogLevel::Warn | GuestLogLevel::Error))
                .map(|l| l.message)
                .collect();
            let info = SceneInspection { info, warnings };
            if !guides {
                return Ok(Ok(info));
            }
            let rect = tessera_protocol::Rect { x: 0, y: 0, width: 1, height: 1 };
            let request = TileRequest::new(info.info.frame_start, rect, 0, 1, 0).with_guides(true).cpu_only();
            let tile = instance.render_tile(&request)?;
            Ok(match tessera_protocol::wire::guides_problem(&tile.accumulators, true) {
                None => Ok(info),
                Some(problem) => Err(job::SpecError::Invalid(format!(
                    "denoise: the job's module does not return the denoiser's guides ({problem})"
                ))),
            })
        })
        .await
        .map_err(|_| FarmError::Stopped)???;
        Ok(info)
    }

    /// Submits `scene` rendered by `module`: the scene is read in the
    /// sandbox first ([`Farm::inspect_scene`]), so a bad one is an error
    /// and no job; what `request` leaves open comes from the scene.
    pub async fn submit_scene(&self, request: JobRequest, scene: Vec<u8>, module: Vec<u8>) -> Result<u64, FarmError> {
        let SceneInspection { info, warnings } =
            self.inspect(scene.clone(), module.clone(), request.fps, request.extra.clone(), request.denoise).await?;
        let (width, height) = job::resolve_size(request.width, request.height, &info);
        let frames = request.frames.clone().unwrap_or_else(|| (info.frame_start..=info.frame_end).collect());
        let _gc = self.blob_gc.lock().await;
        let scene_hash = self.put_blob(scene).await?;
        let module_hash = self.put_blob(module).await?;
        let (fuel_per_tile, fuel_per_pixel_sample) = JobSpec::default_fuel();
        let tile_size = request.tile_size.unwrap_or_else(|| {
            job::tile_size_for(width, height, request.spp, request.target_tile_ms, 450_000.0, request.farm_slots)
        });
        let job = self
            .submit(JobSpec {
                name: request.name,
                module: module_hash.to_hex(),
                scene: scene_hash.to_hex(),
                width,
                height,
                fps: request.fps,
                extra: request.engine.set_in(&request.extra),
                spp: request.spp,
                seed: request.seed,
                tile_size,
                frames,
                priority: request.priority,
                view: request.view,
                exposure: request.exposure,
                fuel_per_tile,
                fuel_per_pixel_sample,
                formats: request.formats,
                submitted_by: request.submitted_by,
                engine: request.engine,
                denoise: request.denoise,
                progressive: request.progressive,
            })
            .await?;
        // What the module said it will ignore, where the artist reads the
        // job's story (`tessera logs`, the web page's log).
        if !warnings.is_empty() {
            let now = writer::unix_ms();
            let lines: Vec<_> = warnings.into_iter().map(|w| (job, now, tessera_store::LogLevel::Warn, w)).collect();
            if let Err(e) = lock(&self.store).append_job_log(&lines) {
                tracing::warn!(job, error = %e, "could not log the scene's warnings");
            }
        }
        Ok(job)
    }

    /// Runs a failed or cancelled job again: tiles already stored are kept,
    /// the rest are queued. [`FarmError::Conflict`] for any other state.
    pub async fn retry(&self, job: u64) -> Result<(), FarmError> {
        // A cancel the API has already answered may still be on its way to
        // the store: let it land before reading the job's state there.
        self.settle().await?;
        let store = self.store.clone();
        let loaded = tokio::task::spawn_blocking(move || -> Result<_, FarmError> {
            let mut store = lock(&store);
            let Some(record) = store.job(job)? else { return Ok(None) };
            if !store.reset_job(job, writer::unix_ms())? {
                return Err(FarmError::Conflict(format!(
                    "job {job} is {}: only failed or cancelled jobs can be retried",
                    record.state.as_str()
                )));
            }
            let done = store.done_tiles(job)?;
            let frames: Vec<i32> = store.frames(job)?.iter().map(|f| f.frame).collect();
            Ok(Some((record, done, frames)))
        })
        .await
        .map_err(|_| FarmError::Stopped)??;
        let Some((record, done, frames_written)) = loaded else { return Err(FarmError::NoSuchJob(job)) };
        let spec: JobSpec = serde_json::from_str(&record.spec_json)
            .map_err(|e| job::SpecError::Invalid(format!("job {job}'s stored spec: {e}")))?;
        self.send(CoreMsg::Load { id: job, spec, done, frames_written })
    }

    /// Waits until the store holds every change the core made so far.
    async fn settle(&self) -> Result<(), FarmError> {
        let (tx, rx) = oneshot::channel();
        self.send(CoreMsg::Barrier { reply: tx })?;
        rx.await.map_err(|_| FarmError::Stopped)
    }

    /// Deletes a finished job: its tiles, frames, log, exported files and
    /// the blobs no other job uses. [`FarmError::Conflict`] while it runs.
    pub async fn delete(&self, job: u64) -> Result<(), FarmError> {
        let (tx, rx) = oneshot::channel();
        self.send(CoreMsg::Forget { job, reply: tx })?;
        if !rx.await.map_err(|_| FarmError::Stopped)? {
            return Err(FarmError::Conflict(format!("job {job} is still running: cancel it first")));
        }
        // The job's last state and log lines reach the store before its rows go.
        self.settle().await?;
        let store = self.store.clone();
        let _gc = self.blob_gc.lock().await;
        let deleted = tokio::task::spawn_blocking(move || -> Result<bool, StoreError> {
            let mut store = lock(&store);
            let deleted = store.delete_job(job)?;
            // The frames' manifests (blobs named in the metadata, one per frame).
            for (_, hash) in store.take_meta_prefix(&tessera_client::manifest::meta_prefix(job))? {
                if let Ok(hash) = <[u8; 32]>::try_from(hash.as_slice()) {
                    let _ = store.blobs().remove(&hash);
                }
            }
            // Progressive frames' previews live in the metadata itself.
            store.take_meta_prefix(&writer::preview_prefix(job))?;
            Ok(deleted)
        })
        .await
        .map_err(|_| FarmError::Stopped)??;
        if !deleted {
            return Err(FarmError::NoSuchJob(job));
        }
        let dir = self.job_dir(job);
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(job, dir = %dir.display(), error = %e, "could not remove the job's exported frames");
            }
        }
        Ok(())
    }

    /// Cancels a job: its leases are revoked, nothing more is rendered.
    pub fn cancel(&self, job: u64) -> Result<(), FarmError> {
        self.send(CoreMsg::Cancel { job })
    }

    /// Workers and jobs as the core sees them now.
    pub async fn status(&self) -> Result<FarmStatus, FarmError> {
        let (tx, rx) = oneshot::channel();
        self.send(CoreMsg::Status { reply: tx })?;
        rx.await.map_err(|_| FarmError::Stopped)
    }

    /// Waits until `job` is finished (done, failed or cancelled) and returns
    /// its final status.
    pub async fn wait_job(&self, job: u64) -> Result<JobStatus, FarmError> {
        loop {
            let status = self.status().await?;
            if let Some(j) = status.jobs.iter().find(|j| j.id == job) {
                if j.state.is_finished() {
                    return Ok(j.clone());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The PostgreSQL lease term this coordinator leads under; `None` on SQLite.
    pub fn lease_term(&self) -> Option<i64> {
        self.lease.as_ref().map(database::LeaseKeeper::term)
    }

    /// Resolves if this coordinator loses its leader lease (PostgreSQL: a
    /// standby took over); never on SQLite. The coordinator must stop then:
    /// the database already refuses its writes.
    pub async fn lease_lost(&self) {
        match &self.lease {
            Some(lease) => lease.lost().await,
            None => std::future::pending().await,
        }
    }

    /// Closes every connection and the endpoint.
    pub async fn shutdown(self) {
        self.endpoint.close(conn::close::SHUTDOWN.into(), b"coordinator shutting down");
        self.endpoint.wait_idle().await;
    }
}

/// A scene as the job's module read it: what it holds, and what the module
/// warned about while reading it (guest log lines of level warn or error).
#[derive(Clone, Debug)]
pub struct SceneInspection {
    pub info: SceneInfo,
    pub warnings: Vec<String>,
}

/// A job as a person asks for it: what `tessera render` takes.
#[derive(Clone, Debug)]
pub struct JobRequest {
    pub name: String,
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// Default: the scene's animation range.
    pub frames: Option<Vec<i32>>,
    pub spp: u32,
    pub seed: u64,
    pub fps: f64,
    pub extra: String,
    /// Default: from `target_tile_ms` and `farm_slots` ([`job::tile_size_for`]).
    pub tile_size: Option<u32>,
    pub target_tile_ms: u64,
    pub farm_slots: u32,
    pub priority: i32,
    pub view: String,
    pub exposure: f32,
    pub formats: Vec<job::Format>,
    /// The submitting token's label ([`JobSpec::submitted_by`]).
    pub submitted_by: Option<String>,
    pub engine: tessera_protocol::wire::Engine,
    /// Ship each frame denoised as well ([`JobSpec::denoise`]).
    pub denoise: bool,
    /// Render in sample passes with previews ([`JobSpec::progressive`]).
    pub progressive: bool,
}

impl JobRequest {
    pub fn new(name: impl Into<String>) -> JobRequest {
        JobRequest {
            name: name.into(),
            width: None,
            height: None,
            frames: None,
            spp: 64,
            seed: 0,
            fps: 24.0,
            extra: "{}".into(),
            tile_size: None,
            target_tile_ms: 2000,
            farm_slots: 8,
            priority: 0,
            view: "agx".into(),
            exposure: 0.0,
            formats: job::Format::all(),
            submitted_by: None,
            engine: Default::default(),
            denoise: false,
            progressive: false,
        }
    }
}

/// Locks the shared store. A panic while it was held leaves SQLite's own
/// state consistent (the transaction rolls back), so the store stays usable.
pub fn lock(store: &Mutex<Store>) -> std::sync::MutexGuard<'_, Store> {
    store.lock().unwrap_or_else(|e| e.into_inner())
}
