//! `tessera`: the command line of Tessera's coordinator.

mod render;
mod serve;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use tessera_client::cli::{self as client_cli, module_bytes, verify::VerifyArgs};
use tessera_coordinator::local::{render_frame, FrameJob};
use tessera_worker::sandbox::{JobSettings, JobSpec, Sandbox, SandboxConfig};

#[derive(Parser)]
#[command(name = "tessera", version, about = "Tessera: a render farm whose jobs run as sandboxed WebAssembly")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Renders a glTF scene on this machine through the same wasm path
    /// tracer the farm runs: check a scene before submitting it.
    Render(render::RenderArgs),
    /// Starts a coordinator: QUIC endpoint for workers, HTTP for the web
    /// page and the API, jobs kept in SQLite under --data.
    Coordinator(serve::CoordinatorArgs),
    /// Starts a coordinator and local workers, renders the sample
    /// animation on the farm, and serves it until Ctrl-C.
    Demo(serve::DemoArgs),
    /// Makes, lists and revokes worker and API tokens.
    Token(serve::TokenArgs),
    /// Copies a stopped farm's records from SQLite into an empty
    /// PostgreSQL database and checks the copy (`--from sqlite:DIR --to postgres://…`).
    Migrate(serve::MigrateArgs),
    /// Renders the spheres sample on this machine's cores through the wasm
    /// sandbox (no farm): a quick check that the sandbox works here.
    LocalDemo(DemoArgs),
    /// Submits a scene to a farm through its HTTP API (flags as `render`'s);
    /// prints the job's id. --wait follows it, --download DIR fetches its frames.
    Submit(client_cli::SubmitArgs),
    /// Lists a farm's jobs, or shows one.
    Status(client_cli::StatusArgs),
    /// Prints a job's log; --follow keeps printing until it is finished.
    Logs(client_cli::LogsArgs),
    /// Downloads a job's finished frames, verified, named as `render` names them.
    Download(client_cli::DownloadArgs),
    /// Cancels a job.
    Cancel(client_cli::JobArgs),
    /// Retries a failed or cancelled job, keeping the tiles already rendered.
    Retry(client_cli::JobArgs),
    /// Deletes a finished job with its frames and log.
    Delete(client_cli::JobArgs),
    /// Lists a farm's workers.
    Workers(client_cli::WorkersArgs),
    /// Verifies a downloaded frame offline against its signed manifest:
    /// signatures, files, pixels; --recheck N re-renders N pixels.
    Verify(VerifyArgs),
}

#[derive(clap::Args)]
struct DemoArgs {
    /// The job's component; default: the spheres sample built into this binary.
    #[arg(long)]
    module: Option<PathBuf>,
    /// Where frames are written.
    #[arg(long, default_value = "tessera-out/demo")]
    out: PathBuf,
    #[arg(long, default_value_t = 640)]
    width: u32,
    #[arg(long, default_value_t = 360)]
    height: u32,
    /// Samples per pixel.
    #[arg(long, default_value_t = 128)]
    spp: u32,
    #[arg(long, default_value_t = 1)]
    frame: i32,
    #[arg(long, default_value_t = 64)]
    tile_size: u32,
    /// Threads (one sandbox instance each); default: all cores.
    #[arg(long)]
    threads: Option<usize>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Job modules built into this binary by build.rs, when a wasm toolchain
/// was available.
pub mod embedded {
    /// The demo's scene (77 KB).
    pub const TURNTABLE: &[u8] = include_bytes!("../../samples/scenes/turntable.glb");
    #[cfg(tessera_embedded)]
    pub const PATHTRACER: Option<&[u8]> = Some(include_bytes!(env!("TESSERA_PATHTRACER_WASM")));
    #[cfg(tessera_embedded)]
    pub const SPHERES: Option<&[u8]> = Some(include_bytes!(env!("TESSERA_SPHERES_WASM")));
    #[cfg(not(tessera_embedded))]
    pub const PATHTRACER: Option<&[u8]> = None;
    #[cfg(not(tessera_embedded))]
    pub const SPHERES: Option<&[u8]> = None;
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("TESSERA_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match Cli::parse().command {
        Command::Render(args) => render::run(args),
        Command::Coordinator(args) => serve::coordinator(args, embedded::PATHTRACER),
        Command::Demo(args) => {
            serve::demo(args, serve::DemoInputs { scene: embedded::TURNTABLE, module: embedded::PATHTRACER })
        }
        Command::Token(args) => serve::token(args),
        Command::Migrate(args) => serve::migrate(args),
        Command::LocalDemo(args) => demo(args),
        Command::Submit(args) => client_cli::submit(args),
        Command::Status(args) => client_cli::status(args),
        Command::Logs(args) => client_cli::logs(args),
        Command::Download(args) => client_cli::download(args),
        Command::Cancel(args) => client_cli::cancel(args),
        Command::Retry(args) => client_cli::retry(args),
        Command::Delete(args) => client_cli::delete(args),
        Command::Workers(args) => client_cli::workers(args),
        Command::Verify(args) => client_cli::verify::run(args, embedded::PATHTRACER),
    }
}

fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn demo(args: DemoArgs) -> Result<()> {
    if args.width == 0 || args.height == 0 || args.spp == 0 || args.tile_size == 0 {
        bail!("--width, --height, --spp and --tile-size must be positive");
    }
    let wasm = module_bytes(args.module.as_ref(), embedded::SPHERES, "spheres")?;
    let threads = args.threads.unwrap_or_else(default_threads);

    let started = Instant::now();
    let sandbox = Sandbox::new(SandboxConfig::default())?;
    let module = sandbox.load(&wasm).context("loading the job module")?;
    let compiled = started.elapsed();

    let spec = JobSpec::new(Vec::new(), JobSettings::new(args.width, args.height));
    let job = FrameJob { frame: args.frame, tile_size: args.tile_size, samples: args.spp, seed: args.seed, threads };
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template(
            "{spinner} frame {prefix} [{bar:30}] {pos}/{len} tiles {elapsed_precise} ETA {eta}",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    bar.set_prefix(args.frame.to_string());
    let render_started = Instant::now();
    let (frame, stats) = render_frame(&module, &spec, &job, |_, done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    let render_time = render_started.elapsed();

    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let path = args.out.join(format!("frame-{:04}.png", args.frame));
    frame.write_png(&path)?;
    let path = path.canonicalize().unwrap_or(path);
    let samples = u64::from(args.width) * u64::from(args.height) * u64::from(args.spp);
    println!(
        "rendered {}x{} at {} spp on {threads} sandboxed instances: {} tiles in {:.2?} ({:.1} Msamples/s; module {} ready in {:.2?})",
        args.width,
        args.height,
        args.spp,
        stats.tiles,
        render_time,
        samples as f64 / render_time.as_secs_f64() / 1e6,
        module.hash().short(),
        compiled,
    );
    println!("frame written to {}", path.display());
    Ok(())
}
