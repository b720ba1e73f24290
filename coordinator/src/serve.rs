//! `tessera coordinator`, `tessera demo` and `tessera token`: the farm's
//! commands. The work is in the library (`farm`, `http`); this file turns
//! flags, environment and config files into its settings and reports.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use tessera_coordinator::farm::database::{self, Database};
use tessera_coordinator::farm::{Farm, FarmConfig, FarmError, JobRequest};
use tessera_coordinator::http::{app, AppState};
use tessera_store::{Scope, Store, TokenKind};
use tessera_worker::client::{Worker, WorkerConfig};
use tessera_worker::settings::read_config;

#[derive(clap::Args)]
pub struct CoordinatorArgs {
    /// Data directory: SQLite database, blobs, frames, QUIC identity
    /// [default: ~/.local/share/tessera].
    #[arg(long, env = "TESSERA_DATA")]
    data: Option<PathBuf>,
    /// HTTP address (web page and API) [default: 127.0.0.1:7878].
    #[arg(long, env = "TESSERA_HTTP")]
    http: Option<SocketAddr>,
    /// QUIC address workers connect to (UDP) [default: 0.0.0.0:7879].
    #[arg(long, env = "TESSERA_QUIC")]
    quic: Option<SocketAddr>,
    /// Seconds between worker heartbeats [default: 5].
    #[arg(long, env = "TESSERA_HEARTBEAT")]
    heartbeat: Option<u64>,
    /// Seconds of silence after which a worker counts as gone [default: 10].
    #[arg(long, env = "TESSERA_IDLE_TIMEOUT")]
    idle_timeout: Option<u64>,
    /// Largest scene upload over the API, in MiB [default: 512].
    #[arg(long, env = "TESSERA_MAX_UPLOAD_MIB")]
    max_upload_mib: Option<u64>,
    /// Where the farm's records are: `sqlite` (tessera.db in the data
    /// directory) or a PostgreSQL URL, `postgres://USER@HOST/DB`, that
    /// several coordinators share: one leads, the others stand by and take
    /// over when its lease lapses [default: sqlite].
    #[arg(long, env = "TESSERA_STORE", hide_env_values = true)]
    store: Option<String>,
    /// This coordinator's name in the PostgreSQL leader lease [default:
    /// the host name]. Keep it stable: a coordinator restarted under its
    /// name takes its lease back at once.
    #[arg(long, env = "TESSERA_NAME")]
    name: Option<String>,
    /// What makes two workers independent enough to give each other's
    /// tiles a second opinion: `address` (different IP addresses as well as
    /// identities: one machine's workers never confirm each other) or
    /// `identity` (any two workers: for a farm whose workers share an
    /// address, behind NAT or on one host) [default: address].
    #[arg(long, env = "TESSERA_INDEPENDENT")]
    independent: Option<String>,
    /// The address the farm's other coordinators, clients and pages reach
    /// this one's page and API at, announced to them on PostgreSQL
    /// [default: http:// and the --http address].
    #[arg(long, env = "TESSERA_ADVERTISE")]
    advertise: Option<String>,
    /// A config file of `key = value` lines (keys as the long flags above).
    #[arg(long, env = "TESSERA_CONFIG")]
    config: Option<PathBuf>,
}

/// The exit status of a coordinator that lost its lease (EX_TEMPFAIL).
const LEASE_LOST_EXIT: i32 = 75;

/// How long a PostgreSQL leader lease lasts unrenewed (renewed every
/// quarter of it): the longest a dead coordinator holds its farm up.
const LEASE: Duration = Duration::from_secs(4);

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "coordinator".into())
}

fn default_data_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_DATA_HOME")
        .map(|d| PathBuf::from(d).join("tessera"))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share/tessera")))
}

struct Settings {
    data: PathBuf,
    http: SocketAddr,
    quic: SocketAddr,
    heartbeat: Duration,
    idle_timeout: Duration,
    max_upload: usize,
    database: tessera_coordinator::farm::database::Database,
    advertise: Option<String>,
    /// Second opinions only from another address (`--independent address`).
    independent_addresses: bool,
}

impl CoordinatorArgs {
    fn settings(&self) -> Result<Settings> {
        const KEYS: [&str; 10] = [
            "data",
            "http",
            "quic",
            "heartbeat",
            "idle-timeout",
            "max-upload-mib",
            "store",
            "name",
            "advertise",
            "independent",
        ];
        let file = self.config.as_ref().map(|p| read_config(p, &KEYS)).transpose()?.unwrap_or_default();
        let get = |k: &str| file.get(k).cloned();
        let parse_addr = |v: String, k: &str| v.parse::<SocketAddr>().with_context(|| format!("config {k} = {v:?}"));
        let parse_secs = |v: String, k: &str| v.parse::<u64>().with_context(|| format!("config {k} = {v:?}"));
        Ok(Settings {
            data: self
                .data
                .clone()
                .or_else(|| get("data").map(PathBuf::from))
                .or_else(default_data_dir)
                .context("no --data directory and no home directory")?,
            http: match self.http {
                Some(a) => a,
                None => {
                    get("http").map(|v| parse_addr(v, "http")).transpose()?.unwrap_or(([127, 0, 0, 1], 7878).into())
                }
            },
            quic: match self.quic {
                Some(a) => a,
                None => get("quic").map(|v| parse_addr(v, "quic")).transpose()?.unwrap_or(([0, 0, 0, 0], 7879).into()),
            },
            heartbeat: Duration::from_secs(
                match self.heartbeat {
                    Some(s) => s,
                    None => get("heartbeat").map(|v| parse_secs(v, "heartbeat")).transpose()?.unwrap_or(5),
                }
                .max(1),
            ),
            idle_timeout: Duration::from_secs(
                match self.idle_timeout {
                    Some(s) => s,
                    None => get("idle-timeout").map(|v| parse_secs(v, "idle-timeout")).transpose()?.unwrap_or(10),
                }
                .max(1),
            ),
            max_upload: {
                let mib = match self.max_upload_mib {
                    Some(m) => m,
                    None => get("max-upload-mib")
                        .map(|v| parse_secs(v, "max-upload-mib"))
                        .transpose()?
                        .unwrap_or((tessera_coordinator::api::MAX_UPLOAD >> 20) as u64),
                };
                if mib == 0 || mib > 1 << 20 {
                    bail!("--max-upload-mib must be 1 to {}, not {mib}", 1 << 20);
                }
                usize::try_from(mib << 20).context("--max-upload-mib is too large for this machine")?
            },
            database: {
                let store = self.store.clone().or_else(|| get("store")).unwrap_or_default();
                let name = self.name.clone().or_else(|| get("name")).unwrap_or_else(host_name);
                tessera_coordinator::farm::database::Database::parse(&store, &name, LEASE)
                    .map_err(anyhow::Error::msg)?
            },
            advertise: self
                .advertise
                .clone()
                .or_else(|| get("advertise"))
                .map(|a| tessera_client::conn::normalize_url(&a).context("--advertise"))
                .transpose()?,
            independent_addresses: match self.independent.clone().or_else(|| get("independent")).as_deref() {
                None | Some("address") => true,
                Some("identity") => false,
                Some(other) => bail!("--independent must be address or identity, not {other:?}"),
            },
        })
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

/// Binds the HTTP listener, on any free port if `addr`'s is taken and
/// `fallback` allows it.
async fn bind_http(addr: SocketAddr, fallback: bool) -> Result<tokio::net::TcpListener> {
    match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => Ok(l),
        Err(e) if fallback => {
            tracing::info!(%addr, error = %e, "HTTP port taken; using a free one");
            Ok(tokio::net::TcpListener::bind(SocketAddr::new(addr.ip(), 0)).await?)
        }
        Err(e) => Err(e).with_context(|| format!("binding HTTP on {addr}")),
    }
}

async fn start_farm(config: FarmConfig, fallback: bool) -> Result<Farm> {
    match Farm::start(config.clone()).await {
        Err(FarmError::Bind { addr, .. }) if fallback => {
            tracing::info!(%addr, "QUIC port taken; using a free one");
            let mut c = config;
            c.quic = SocketAddr::new(addr.ip(), 0);
            Ok(Farm::start(c).await?)
        }
        other => Ok(other?),
    }
}

fn serve_http(listener: tokio::net::TcpListener, state: AppState) {
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app(state)).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
}

fn local(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::new([127, 0, 0, 1].into(), addr.port())
    } else {
        addr
    }
}

/// `tessera coordinator`.
pub fn coordinator(args: CoordinatorArgs, module: Option<&'static [u8]>) -> Result<()> {
    let s = args.settings()?;
    runtime()?.block_on(async move {
        let mut config = FarmConfig::new(s.data.clone(), s.quic);
        config.heartbeat = s.heartbeat;
        config.idle_timeout = s.idle_timeout;
        config.database = s.database.clone();
        config.verify.independent_addresses = s.independent_addresses;
        let listener = bind_http(s.http, false).await?;
        let http = listener.local_addr()?;
        let mut serve_later = None;
        // On PostgreSQL the HTTP address answers at once: as a standby
        // until this coordinator wins the lease, then as the farm.
        let standby = match &s.database {
            Database::Postgres { url, holder, .. } => {
                let identity = tessera_worker::net::tls::Identity::load_or_create_pinned(&s.data, "tessera-coordinator")
                    .context("the coordinator's QUIC identity")?
                    .0;
                let me = tessera_store_postgres::Member {
                    name: holder.clone(),
                    http_url: s.advertise.clone().unwrap_or_else(|| format!("http://{}", local(http))),
                    quic_addr: local(s.quic).to_string(),
                    fingerprint: identity.fingerprint(),
                    age_ms: 0,
                };
                println!("fingerprint: {}", me.fingerprint);
                println!("web: http://{http} (standing by until this coordinator leads)");
                let url = url.clone();
                let peers = tokio::task::spawn_blocking(move || database::announce(&url, me)).await?;
                let switch = tessera_coordinator::standby::Switch::new(tessera_coordinator::standby::router(peers.clone()));
                let routes = switch.router(peers.clone());
                tokio::spawn(async move {
                    if let Err(e) = axum::serve(listener, routes).await {
                        tracing::error!(error = %e, "HTTP server stopped");
                    }
                });
                Some((switch, peers))
            }
            Database::Sqlite => {
                serve_later = Some(listener);
                None
            }
        };
        let farm = Arc::new(start_farm(config, false).await.context("starting the coordinator")?);
        println!("tessera coordinator: data in {}", s.data.display());
        if let tessera_coordinator::farm::database::Database::Postgres { url, holder, .. } = &s.database {
            println!("store: {} (leading as {holder})", tessera_store_postgres::redacted(url));
        }
        println!("quic: {} (workers connect here)", farm.quic_addr());
        println!("web: http://{http}");
        println!("fingerprint: {}", farm.fingerprint());
        if let Some(token) = farm.first_token() {
            let api = farm.create_token(TokenKind::Api, "first API token").await?;
            println!("worker token: {token}");
            println!("token: {api}");
            println!(
                "join a worker: tessera-worker --coordinator {} --token {token} --pin {}",
                local(farm.quic_addr()),
                farm.fingerprint()
            );
        } else {
            println!("tokens: `tessera token create --data {}` makes more", s.data.display());
        }
        let mut state = AppState::new(farm.clone(), module.map(|m| Arc::new(m.to_vec())));
        state.max_upload = s.max_upload;
        if let Some((switch, peers)) = standby {
            state.peers = Some(peers);
            switch.set(app(state));
        } else if let Some(listener) = serve_later {
            serve_http(listener, state);
        }
        tokio::select! {
            signal = tokio::signal::ctrl_c() => signal?,
            () = farm.lease_lost() => {
                // Nothing is left to flush that the database would take
                // (it refuses this coordinator's writes now), and threads
                // may be blocked on a database that went silent: exit at
                // once, with EX_TEMPFAIL, for a supervisor to restart this
                // coordinator as a standby.
                eprintln!("tessera coordinator: lost the leader lease (taken over, or not renewed in time): stopping; restart it to stand by");
                std::process::exit(LEASE_LOST_EXIT);
            }
        }
        eprintln!("tessera coordinator: shutting down");
        if let Ok(farm) = Arc::try_unwrap(farm) {
            farm.shutdown().await;
        }
        Ok(())
    })
}

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Local workers to start.
    #[arg(long, default_value_t = 2)]
    workers: u32,
    /// Slots per worker [default: this machine's cores divided among the workers].
    #[arg(long)]
    slots: Option<u32>,
    /// Frames to render, e.g. "1-48" [default: the sample's whole animation].
    #[arg(long)]
    frames: Option<String>,
    #[arg(long, default_value_t = 320)]
    width: u32,
    #[arg(long, default_value_t = 16)]
    spp: u32,
    /// HTTP address; a free port is used if it is taken.
    #[arg(long, default_value = "127.0.0.1:7878")]
    http: SocketAddr,
    /// QUIC address; a free port is used if it is taken.
    #[arg(long, default_value = "127.0.0.1:7879")]
    quic: SocketAddr,
    /// Data directory [default: a new one under the system's temp dir].
    #[arg(long)]
    data: Option<PathBuf>,
    /// Exit once the frames are written instead of serving until Ctrl-C.
    #[arg(long)]
    exit: bool,
    /// The GPU the local workers offer: none, auto (a hardware GPU) or part
    /// of an adapter's name (`llvmpipe` for Mesa's software Vulkan).
    #[arg(long, default_value = "none")]
    gpu: tessera_worker::gpu::GpuSelection,
    /// Where the demo job renders: cpu, gpu or auto (see `submit --engine`).
    #[arg(long, default_value = "cpu")]
    engine: tessera_protocol::wire::Engine,
    /// Ship each frame denoised too (`…-0001.denoised.png` beside the raw
    /// frame), as the web page does by default for previews; `--denoise false` to skip.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    denoise: bool,
    /// Render in sample passes, so the page shows each whole frame after
    /// its first pass and refines it (the final frames are the same bit for
    /// bit); `--progressive false` for one pass.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    progressive: bool,
}

/// The sample the demo renders.
pub struct DemoInputs {
    pub scene: &'static [u8],
    pub module: Option<&'static [u8]>,
}

/// `tessera demo`: a coordinator, local workers, the sample animation.
pub fn demo(args: DemoArgs, inputs: DemoInputs) -> Result<()> {
    let module = inputs.module.context(
        "this tessera binary was built without the path tracer embedded (no wasm toolchain at build time): \
         run `cargo xtask demo`, which builds it",
    )?;
    if args.workers == 0 || args.width == 0 || args.spp == 0 {
        bail!("--workers, --width and --spp must be positive");
    }
    let frames = args.frames.as_deref().map(tessera_client::frames::parse_frames).transpose()?;
    let data = match &args.data {
        Some(d) => d.clone(),
        None => tempfile::Builder::new().prefix("tessera-demo-").tempdir()?.keep(),
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let slots = args.slots.unwrap_or((cores / args.workers).max(1));
    runtime()?.block_on(async move {
        // The demo's workers share this machine: independent by identity only.
        let mut config = FarmConfig::new(data.clone(), args.quic);
        config.verify.independent_addresses = false;
        config.verify.replica_wait = Duration::from_secs(5);
        let farm = Arc::new(start_farm(config, true).await?);
        let listener = bind_http(args.http, true).await?;
        let http = listener.local_addr()?;
        let api_token = farm.create_token(TokenKind::Api, "demo").await?;
        let worker_token = match farm.first_token() {
            Some(t) => t.to_string(),
            None => farm.create_token(TokenKind::Worker, "demo workers").await?,
        };
        serve_http(listener, AppState::new(farm.clone(), Some(Arc::new(module.to_vec()))));

        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut workers = Vec::new();
        for i in 0..args.workers {
            let mut c = WorkerConfig::new(
                local(farm.quic_addr()).to_string(),
                worker_token.clone(),
                farm.fingerprint(),
                data.join(format!("worker-{i}")),
            );
            c.slots = slots;
            c.name = format!("local-{i}");
            c.gpu = args.gpu.clone();
            let worker = Worker::new(c)?;
            let rx = stopped.clone();
            workers.push(tokio::spawn(async move { worker.run(rx).await }));
        }

        let mut request = JobRequest::new("turntable.glb");
        request.width = Some(args.width);
        request.frames = frames;
        request.spp = args.spp;
        request.farm_slots = slots * args.workers;
        request.extra = tessera_coordinator::farm::job::RENDER_DEFAULTS.into();
        request.engine = args.engine;
        request.denoise = args.denoise;
        request.progressive = args.progressive;
        // The page's best moment is the tiles arriving: say how to sign in
        // before they do. The token rides in the link's fragment, which a
        // browser never sends to the server, so it reaches no log.
        println!("web: http://{http}");
        println!("token: {api_token}");
        println!("sign in: http://{http}/#token={api_token}");
        let mut events = farm.subscribe();
        let started = std::time::Instant::now();
        let job = farm.submit_scene(request, inputs.scene.to_vec(), module.to_vec()).await?;
        eprintln!(
            "tessera demo: {} workers × {slots} slots rendering the turntable (job {job}); watch it at the sign-in \
             link above",
            args.workers
        );
        let bar = ProgressBar::new(0).with_style(
            ProgressStyle::with_template(
                "{spinner} job {prefix} [{bar:30}] {pos}/{len} tiles, {msg} {elapsed_precise}",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        bar.set_prefix(job.to_string());
        // Submission to the first whole frame on the page (a progressive
        // job's first preview, else its first frame): BENCHMARKS.md.
        let mut first_picture: Option<(f64, String)> = None;
        let status = loop {
            while let Ok(e) = events.try_recv() {
                if first_picture.is_some() || e.job() != Some(job) {
                    continue;
                }
                let what = match e {
                    tessera_client::model::Event::Preview { frame, samples, .. } => {
                        format!("a preview of frame {frame} at {samples} spp")
                    }
                    tessera_client::model::Event::Frame { frame, .. } => format!("frame {frame}"),
                    _ => continue,
                };
                let at = started.elapsed().as_secs_f64();
                bar.println(format!("first whole picture {at:.2} s after submission: {what}"));
                first_picture = Some((at, what));
            }
            let status = farm.status().await?;
            let Some(j) = status.jobs.iter().find(|j| j.id == job) else { bail!("job {job} vanished") };
            bar.set_length(u64::from(j.tiles));
            bar.set_position(u64::from(j.tiles_done));
            bar.set_message(format!("{}/{} frames", j.frames_done, j.frames));
            if j.state.is_finished() {
                break j.clone();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        bar.finish_and_clear();
        if status.state != tessera_store::JobState::Done {
            bail!("the demo job ended {}", status.state.as_str());
        }
        println!(
            "rendered {} frames ({} tiles) on {} local workers in {:.1} s",
            status.frames,
            status.tiles,
            args.workers,
            started.elapsed().as_secs_f64()
        );
        if let Some((at, what)) = &first_picture {
            println!("first whole picture: {what}, {at:.2} s after submission");
        }
        println!("frames: {}", farm.job_dir(job).display());
        println!("sign in: http://{http}/#token={api_token}");
        println!(
            "join another worker: tessera-worker --coordinator {} --token {worker_token} --pin {}",
            local(farm.quic_addr()),
            farm.fingerprint()
        );
        if !args.exit {
            println!("serving until Ctrl-C");
            tokio::signal::ctrl_c().await?;
        }
        let _ = stop.send(true);
        for w in workers {
            let _ = tokio::time::timeout(Duration::from_secs(10), w).await;
        }
        Ok(())
    })
}

#[derive(clap::Subcommand)]
pub enum TokenCommand {
    /// Makes a token and prints it (it is shown only this once).
    Create {
        /// `worker` (join the farm) or `api` (the HTTP API).
        #[arg(long, default_value = "worker")]
        kind: String,
        #[arg(long, default_value = "")]
        label: String,
        /// What an API token may do: `read`, `submit`, `admin`
        /// (comma-separated; `admin` implies the others) [default for api
        /// tokens: read,submit]. Not for worker tokens.
        #[arg(long, value_delimiter = ',')]
        scope: Vec<String>,
    },
    /// Lists tokens (ids, kinds, states, scopes, labels; never the secrets).
    List,
    /// Revokes a token: workers using it are disconnected within seconds.
    Revoke { id: u64 },
}

#[derive(clap::Args)]
pub struct TokenArgs {
    /// The coordinator's data directory [default: ~/.local/share/tessera].
    #[arg(long, env = "TESSERA_DATA", global = true)]
    data: Option<PathBuf>,
    /// The farm's PostgreSQL database, if it runs on one (as `tessera
    /// coordinator --store`).
    #[arg(long, env = "TESSERA_STORE", global = true, hide_env_values = true)]
    store: Option<String>,
    #[command(subcommand)]
    command: TokenCommand,
}

/// `tessera token`: works beside a running coordinator (SQLite WAL, or
/// the farm's PostgreSQL database, writing under the leader's term: an
/// operator's decision, not a stale coordinator's).
pub fn token(args: TokenArgs) -> Result<()> {
    let data = args.data.or_else(default_data_dir).context("no --data directory and no home directory")?;
    let mut store = match args.store.as_deref().map(str::trim).filter(|s| !s.is_empty() && *s != "sqlite") {
        Some(url) => {
            let mut backend = tessera_store_postgres::PgBackend::connect(url)?;
            backend.join_current_term()?;
            Store::with_backend(&data, Box::new(backend))?
        }
        None => {
            if !data.join(tessera_store::DB_FILE).exists() {
                bail!("{} holds no coordinator data: start `tessera coordinator --data {0}` first", data.display());
            }
            Store::open(&data)?
        }
    };
    match args.command {
        TokenCommand::Create { kind, label, scope } => {
            let kind = match kind.as_str() {
                "worker" => TokenKind::Worker,
                "api" => TokenKind::Api,
                other => bail!("--kind is worker or api, not {other:?}"),
            };
            let scopes = match kind {
                TokenKind::Worker if !scope.is_empty() => bail!("--scope is for api tokens; worker tokens only join"),
                TokenKind::Worker => Vec::new(),
                TokenKind::Api if scope.is_empty() => vec![Scope::Read, Scope::Submit],
                TokenKind::Api => scope
                    .iter()
                    .map(|s| {
                        Scope::parse(s.trim())
                            .with_context(|| format!("--scope takes read, submit or admin, not {s:?}"))
                    })
                    .collect::<Result<Vec<_>>>()?,
            };
            let now = tessera_coordinator::farm::writer::unix_ms();
            let (id, secret) = store.create_token_scoped(kind, &label, &scopes, now)?;
            eprintln!("token {id} ({}):", kind.as_str());
            println!("{secret}");
        }
        TokenCommand::List => {
            for t in store.tokens()? {
                let scopes = t.scopes.iter().map(Scope::as_str).collect::<Vec<_>>().join(",");
                println!(
                    "{:>4}  {:<6}  {:<8}  {:<17}  {}",
                    t.id,
                    t.kind.as_str(),
                    if t.revoked { "revoked" } else { "active" },
                    if scopes.is_empty() { "-" } else { &scopes },
                    t.label
                );
            }
        }
        TokenCommand::Revoke { id } => {
            if !store.revoke_token(id)? {
                bail!("no active token {id}");
            }
            println!("token {id} revoked");
        }
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct MigrateArgs {
    /// The farm to copy: `sqlite:DIR`, its data directory.
    #[arg(long, value_name = "sqlite:DIR")]
    from: String,
    /// An empty PostgreSQL database, `postgres://USER@HOST/DB`.
    #[arg(long, value_name = "postgres://…", hide_env_values = true)]
    to: String,
}

/// `tessera migrate`: a stopped farm's records from SQLite into an empty
/// PostgreSQL database, checked table by table, and its blobs, read back.
pub fn migrate(args: MigrateArgs) -> Result<()> {
    let Some(dir) = args.from.strip_prefix("sqlite:") else {
        bail!("--from is sqlite:DIR (the farm's data directory), not {:?}", args.from);
    };
    if !(args.to.starts_with("postgres://") || args.to.starts_with("postgresql://")) {
        bail!("--to is a postgres:// URL");
    }
    let dir = PathBuf::from(dir);
    let mut pg = tessera_store_postgres::PgBackend::connect(&args.to)?;
    let report = tessera_store_postgres::migrate::from_sqlite(&dir, &mut pg)
        .with_context(|| format!("migrating {} to {}", dir.display(), tessera_store_postgres::redacted(&args.to)))?;
    for t in &report.tables {
        println!("✓ {:<9} {:>8} rows, blake3 {}… on both sides", t.table, t.rows, &t.digest[..16]);
    }
    println!(
        "✓ {} blobs ({:.1} MiB) copied from {} and read back whole",
        report.blobs,
        report.blob_bytes as f64 / (1 << 20) as f64,
        dir.display()
    );
    println!(
        "migrated: start the farm with `tessera coordinator --data {} --store {}`",
        dir.display(),
        tessera_store_postgres::redacted(&args.to)
    );
    Ok(())
}
