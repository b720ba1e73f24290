//! `tessera-worker`: lend this machine to a Tessera farm.
//!
//! ```text
//! tessera-worker --coordinator HOST:PORT --token T --pin FINGERPRINT
//! ```
//!
//! Settings come from flags, then `TESSERA_*` environment variables, then a
//! config file (`--config`, `key = "value"` lines with the flags' long
//! names), then defaults. Ctrl-C finishes the tiles being rendered, hands
//! the rest back and leaves; a second Ctrl-C quits at once.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use tessera_worker::client::{default_slots, Worker, WorkerConfig};
use tessera_worker::gpu::GpuSelection;
use tessera_worker::settings::read_config;

#[derive(Parser, Debug)]
#[command(name = "tessera-worker", version, about = "Render tiles for a Tessera farm.")]
struct Args {
    /// The coordinator's QUIC address, HOST:PORT; a farm of several
    /// coordinators: all of them, comma-separated (a lost one makes the
    /// worker try the next).
    #[arg(long, env = "TESSERA_COORDINATOR")]
    coordinator: Option<String>,
    /// The join token the farm's operator gave you.
    #[arg(long, env = "TESSERA_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The coordinator certificate's fingerprint, as it printed it at start;
    /// for several coordinators, each one's, comma-separated.
    #[arg(long, env = "TESSERA_PIN")]
    pin: Option<String>,
    /// Where the worker keeps its key and caches [default: ~/.local/share/tessera-worker].
    #[arg(long, env = "TESSERA_WORKER_DATA")]
    data: Option<PathBuf>,
    /// Tiles rendered at once [default: this machine's cores].
    #[arg(long, env = "TESSERA_SLOTS")]
    slots: Option<u32>,
    /// A name for this worker in the farm's pages [default: the host name].
    #[arg(long, env = "TESSERA_WORKER_NAME")]
    name: Option<String>,
    /// Disk cap for cached scenes and modules, in MiB [default: 4096].
    #[arg(long, env = "TESSERA_CACHE_MIB")]
    cache_mib: Option<u64>,
    /// Seconds of silence after which the coordinator counts as gone [default: 10].
    #[arg(long, env = "TESSERA_IDLE_TIMEOUT")]
    idle_timeout: Option<u64>,
    /// The GPU jobs may use: `none`, `auto` (the best hardware adapter; none
    /// if there is only a software one) or a name to match (`RTX`,
    /// `llvmpipe`) [default: auto]. Only jobs that ask for the GPU
    /// (`--engine gpu|auto`) see it.
    #[arg(long, env = "TESSERA_GPU")]
    gpu: Option<String>,
    /// A config file of `key = "value"` lines (keys as the long flags above).
    #[arg(long, env = "TESSERA_WORKER_CONFIG")]
    config: Option<PathBuf>,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,quinn=warn,wasmtime=warn,cranelift=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    const KEYS: [&str; 9] =
        ["coordinator", "token", "pin", "data", "slots", "name", "cache-mib", "idle-timeout", "gpu"];
    let file = args.config.as_ref().map(|p| read_config(p, &KEYS)).transpose()?.unwrap_or_default();
    let pick = |flag: &Option<String>, key: &str| flag.clone().or_else(|| file.get(key).cloned());
    let number = |flag: Option<u64>, key: &str| -> Result<Option<u64>> {
        match flag {
            Some(v) => Ok(Some(v)),
            None => file.get(key).map(|v| v.parse().with_context(|| format!("config {key} = {v:?}"))).transpose(),
        }
    };
    let coordinator = pick(&args.coordinator, "coordinator").context("--coordinator HOST:PORT is required")?;
    let token = pick(&args.token, "token").context("--token is required (the farm's operator gives it)")?;
    let pin = pick(&args.pin, "pin").context("--pin is required (the coordinator prints it at start)")?;
    let data = args
        .data
        .clone()
        .or_else(|| file.get("data").map(PathBuf::from))
        .or_else(|| std::env::var_os("XDG_DATA_HOME").map(|d| PathBuf::from(d).join("tessera-worker")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share/tessera-worker")))
        .context("no --data directory and no home directory")?;
    let mut config = WorkerConfig::new(coordinator, token, pin, data);
    config.slots = number(args.slots.map(u64::from), "slots")?.map_or(default_slots(), |s| s.max(1) as u32);
    if let Some(name) = pick(&args.name, "name") {
        config.name = name;
    }
    if let Some(mib) = number(args.cache_mib, "cache-mib")? {
        config.cache_bytes = mib << 20;
    }
    if let Some(secs) = number(args.idle_timeout, "idle-timeout")? {
        config.idle_timeout = Duration::from_secs(secs.max(1));
    }
    // The GPU is offered by default: jobs opt in (`engine`), and their GPU
    // tiles are checked within a tolerance and replicated within a class.
    config.gpu = GpuSelection::Auto;
    if let Some(gpu) = pick(&args.gpu, "gpu") {
        let Ok(selection) = gpu.parse::<GpuSelection>();
        config.gpu = selection;
    }

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async move {
        let worker = Worker::new(config.clone()).context("starting the worker")?;
        let gpu = match (worker.gpu(), &config.gpu) {
            (Some(adapter), _) => format!("GPU {adapter}"),
            (None, GpuSelection::None) => "no GPU (--gpu auto to offer one)".to_string(),
            (None, _) => "no GPU: no hardware adapter found (--gpu NAME picks any, software ones too)".to_string(),
        };
        eprintln!(
            "tessera-worker {}: identity {}, {} slots, {gpu}, coordinator {}",
            env!("CARGO_PKG_VERSION"),
            worker.identity()?,
            config.slots,
            config.coordinator
        );
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("tessera-worker: finishing tiles in flight, then leaving (Ctrl-C again to quit now)");
                let _ = tx.send(true);
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(130);
                }
            }
        });
        worker.run(rx).await.context("worker stopped")
    })
}
