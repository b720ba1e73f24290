//! The `tessera` binary's client commands (the `cli` feature): `submit`,
//! `status`, `logs`, `download`, `cancel`, `retry`, `delete`, `workers`
//! and `verify`, with their flags (clap) and progress bars (indicatif).
//! They use only the HTTP API (docs/api.md), so they drive any farm;
//! [`crate::conn`] says where it is. Binary code: errors are `anyhow`.
//!
//! `submit` takes `tessera render`'s flags with their meanings and value
//! parsing, but sends only what was given, so the farm's defaults (equal to
//! render's) apply to the rest; frames land under the names render gives
//! them (`<stem>-NNNN.<ext>`).

pub mod verify;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use tessera_frame::ViewTransform;

use crate::conn::ConnArgs;
use crate::frames::{format_frames, parse_frames};
use crate::http::{Client, ClientError};
use crate::model::{FileInfo, FrameList, FrameSelection, Job, JobList, LogPage, SubmitSettings, WorkerList};
use crate::pack::pack_scene;
use crate::{clean, manifest};

/// How often `submit --wait` asks how a job is doing.
const POLL: Duration = Duration::from_millis(500);
/// How long `--wait` keeps asking while the coordinator does not answer
/// (a restart, say) before giving up.
const UNREACHABLE_GRACE: Duration = Duration::from_secs(60);

/// `tessera render`'s scene flags, mirrored on purpose (same names, help
/// and parsing), but each optional: only what is given is sent.
#[derive(clap::Args)]
pub struct SubmitArgs {
    /// The scene: a .glb, or a .gltf (its external files are packed in).
    scene: PathBuf,
    /// The job's name [default: the scene's file name].
    #[arg(long)]
    name: Option<String>,
    /// Frames to render, e.g. "1-48" or "1,5,9-12"; default: the scene's
    /// animation range (a still scene renders frame 1).
    #[arg(long)]
    frames: Option<String>,
    /// Samples per pixel [farm default: 64].
    #[arg(long, env = "TESSERA_SPP")]
    spp: Option<u32>,
    /// Image width; default: 1920, or the scene camera's aspect-derived size.
    #[arg(long)]
    width: Option<u32>,
    /// Image height; default: from the camera's aspect ratio, else 1080.
    #[arg(long)]
    height: Option<u32>,
    /// Camera node to render through; default: the scene's first camera.
    #[arg(long)]
    camera: Option<String>,
    /// Output formats, comma-separated [farm default: png,exr].
    #[arg(long, value_enum, value_delimiter = ',')]
    format: Vec<Format>,
    /// View transform for PNG: standard, filmic or agx [farm default: agx].
    #[arg(long)]
    view: Option<ViewTransform>,
    /// Exposure in stops, applied before the view transform (PNG only) [farm default: 0].
    #[arg(long, allow_negative_numbers = true)]
    exposure: Option<f32>,
    /// World colour as linear R,G,B (glTF has no world); default: Blender's grey.
    // Not `num_args = 3` (as render has): clap counts "0.1,0.2,0.3" as one
    // value before splitting it and refuses it; the count is checked below.
    #[arg(long, value_name = "R,G,B", value_delimiter = ',')]
    background: Option<Vec<f32>>,
    /// World strength [farm default: 1].
    #[arg(long)]
    background_strength: Option<f32>,
    /// Longest light path, in bounces after the first hit as Blender counts
    /// them (0: direct light only) [farm default: 8].
    #[arg(long)]
    bounces: Option<u32>,
    /// What the materials mean: auto (Blender 2.8–3.6's Principled BSDF for
    /// files those Blenders exported, glTF's BRDF otherwise), blender3 or
    /// gltf (docs/fidelity.md) [farm default: auto].
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(crate::model::SHADING))]
    shading: Option<String>,
    /// Frames per second: frame N shows the scene at time N / fps [farm default: 24].
    #[arg(long)]
    fps: Option<f64>,
    /// Tile edge in pixels [default: the farm sizes tiles to take about 2 s].
    #[arg(long)]
    tile_size: Option<u32>,
    /// Seed of the sample streams (same seed, same pixels) [farm default: 0].
    #[arg(long)]
    seed: Option<u64>,
    /// Higher runs first [farm default: 0].
    #[arg(long, allow_negative_numbers = true)]
    priority: Option<i32>,
    /// Where tiles render: cpu (every tile checked bit for bit), gpu (GPU
    /// workers only) or auto (the GPU where a worker offers one) [farm default: cpu].
    #[arg(long)]
    engine: Option<tessera_protocol::wire::Engine>,
    /// Also ship each frame denoised (`NAME-0001.denoised.png`/`.exr`
    /// beside the raw files, which stay as rendered) [farm default: off].
    #[arg(long)]
    denoise: bool,
    /// Render in sample passes (1, 4, 16, 64, … samples in all): each
    /// frame's whole image is previewed after its first pass and refines
    /// (the web page shows it); the final frames are the same bit for bit
    /// [farm default: off].
    #[arg(long)]
    progressive: bool,
    /// Wait for the job to finish, showing its progress; fail if it fails.
    #[arg(long)]
    wait: bool,
    /// Wait, then download the frames into this directory (as `tessera download`).
    #[arg(long, value_name = "DIR")]
    download: Option<PathBuf>,
    /// Print the job as JSON (after waiting, with --wait) instead of its id.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: ConnArgs,
}

#[derive(clap::Args)]
pub struct StatusArgs {
    /// One job's details; default: a table of every job.
    job: Option<u64>,
    /// Print the API's JSON instead.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: ConnArgs,
}

#[derive(clap::Args)]
pub struct LogsArgs {
    job: u64,
    /// Keep printing new lines until the job is finished.
    #[arg(long, short)]
    follow: bool,
    #[command(flatten)]
    conn: ConnArgs,
}

#[derive(clap::Args)]
pub struct DownloadArgs {
    job: u64,
    /// Directory for the frames, named `<stem>-NNNN.<ext>` as `tessera render` names them,
    /// each with its signed manifest `<stem>-NNNN.manifest.json` (see `tessera verify`).
    dir: PathBuf,
    /// Formats to fetch, comma-separated [default: all the job has].
    #[arg(long, value_enum, value_delimiter = ',')]
    format: Vec<Format>,
    #[command(flatten)]
    conn: ConnArgs,
}

#[derive(clap::Args)]
pub struct JobArgs {
    job: u64,
    #[command(flatten)]
    conn: ConnArgs,
}

#[derive(clap::Args)]
pub struct WorkersArgs {
    /// Print the API's JSON instead.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: ConnArgs,
}

/// An output file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// 8-bit sRGB after the view transform and exposure.
    Png,
    /// Linear 32-bit float, no view transform.
    Exr,
}

/// The bytes of a job module: `--module`, else the one built into the binary.
pub fn module_bytes(path: Option<&PathBuf>, embedded: Option<&'static [u8]>, name: &str) -> Result<Vec<u8>> {
    match (path, embedded) {
        (Some(p), _) => std::fs::read(p).with_context(|| {
            format!("reading the job module {} (build it with `cargo xtask build-guests`)", p.display())
        }),
        (None, Some(bytes)) => Ok(bytes.to_vec()),
        (None, None) => bail!(
            "this tessera binary was built without the {name} job embedded (no wasm toolchain at build time): \
             pass --module PATH (build it with `cargo xtask build-guests {name}`)"
        ),
    }
}

fn format_name(f: Format) -> &'static str {
    match f {
        Format::Png => "png",
        Format::Exr => "exr",
    }
}

fn job_path(id: u64) -> String {
    format!("/api/v1/jobs/{id}")
}

fn is_finished(state: &str) -> bool {
    matches!(state, "done" | "failed" | "cancelled")
}

fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// The settings part of `submit`: exactly the flags that were given.
fn submit_settings(args: &SubmitArgs) -> Result<SubmitSettings> {
    for (value, flag) in
        [(args.spp, "--spp"), (args.tile_size, "--tile-size"), (args.width, "--width"), (args.height, "--height")]
    {
        if value == Some(0) {
            bail!("{flag} must be positive");
        }
    }
    if let Some(f) = &args.frames {
        parse_frames(f).with_context(|| format!("--frames {f:?}"))?;
    }
    let background = match &args.background {
        None => None,
        Some(v) => Some(
            <[f32; 3]>::try_from(v.as_slice())
                .map_err(|_| anyhow::anyhow!("--background takes three numbers, R,G,B (linear), not {}", v.len()))?,
        ),
    };
    Ok(SubmitSettings {
        name: args.name.clone(),
        frames: args.frames.clone().map(FrameSelection::Text),
        width: args.width,
        height: args.height,
        spp: args.spp,
        tile_size: args.tile_size,
        target_tile_ms: None,
        seed: args.seed,
        fps: args.fps,
        camera: args.camera.clone(),
        background,
        background_strength: args.background_strength,
        bounces: args.bounces,
        shading: args.shading.clone(),
        view_transform: args.view.map(|v| v.name().to_owned()),
        exposure: args.exposure,
        formats: (!args.format.is_empty()).then(|| args.format.iter().map(|f| format_name(*f).to_owned()).collect()),
        priority: args.priority,
        engine: args.engine.map(|e| e.to_string()),
        denoise: args.denoise.then_some(true),
        progressive: args.progressive.then_some(true),
    })
}

/// `tessera submit`.
pub fn submit(args: SubmitArgs) -> Result<()> {
    // Everything that needs no farm first, so a typo fails before the upload.
    let settings = submit_settings(&args)?;
    let conn = args.conn.resolve()?;
    if let Some(dir) = &args.download {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let scene = pack_scene(&args.scene).with_context(|| format!("reading the scene {}", args.scene.display()))?;
    let file_name = args.scene.file_name().map_or("scene.glb".into(), |n| n.to_string_lossy().into_owned());
    let client = Client::new(&conn);
    let started = Instant::now();
    let job = client.submit(&scene, &file_name, &settings)?;
    let s = &job.settings;
    eprintln!(
        "tessera: job {} submitted to {}: {} — {}x{}, {} spp, frames {}",
        job.id,
        client.base(),
        clean(&job.name),
        s.width,
        s.height,
        s.spp,
        format_frames(&s.frames)
    );
    // What the renderer said it will ignore in the scene (the job's log
    // has it from submission): said before the wait, not after the frames.
    match client.get_json::<LogPage>(&format!("{}/log", job_path(job.id))) {
        Ok(page) => {
            for e in page.entries.iter().filter(|e| e.level == "warn") {
                eprintln!("tessera: warning: {}", clean_text(&e.message));
            }
        }
        Err(e) => tracing::debug!(error = %e, "could not read the job's log for warnings"),
    }
    if !args.json {
        println!("{}", job.id);
    }
    if !args.wait && args.download.is_none() {
        if args.json {
            print_json(&job)?;
        }
        return Ok(());
    }
    let job = wait_for(&client, job)?;
    if args.json {
        print_json(&job)?;
    }
    match job.state.as_str() {
        "done" => eprintln!(
            "tessera: job {} done: {} frame{} in {:.1} s",
            job.id,
            job.progress.frames,
            if job.progress.frames == 1 { "" } else { "s" },
            started.elapsed().as_secs_f64()
        ),
        state => bail!("job {} {state}: {}", job.id, clean(job.error.as_deref().unwrap_or("no reason given"))),
    }
    if let Some(dir) = &args.download {
        download_frames(&client, job.id, dir, &[], !args.json)?;
    }
    Ok(())
}

/// Polls the job until it is finished, with a progress bar on stderr.
fn wait_for(client: &Client, mut job: Job) -> Result<Job> {
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{spinner} job {prefix} [{bar:30}] {pos}/{len} tiles, {msg} {elapsed_precise}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_prefix(job.id.to_string());
    let path = job_path(job.id);
    let mut unreachable_since: Option<Instant> = None;
    loop {
        let p = &job.progress;
        bar.set_length(u64::from(p.tiles));
        bar.set_position(u64::from(p.tiles_done));
        let eta = match p.eta_s {
            Some(s) if s.is_finite() && s >= 0.0 => format!("ETA {}", human_secs(s)),
            _ => "ETA -".to_owned(),
        };
        bar.set_message(format!("{}/{} frames, {}, {eta}", p.frames_done, p.frames, clean(&job.state)));
        if is_finished(&job.state) {
            break;
        }
        std::thread::sleep(POLL);
        match client.get_json::<Job>(&path) {
            Ok(j) => {
                job = j;
                unreachable_since = None;
            }
            Err(e @ ClientError::Unreachable { .. }) => {
                let since = *unreachable_since.get_or_insert_with(Instant::now);
                if since.elapsed() > UNREACHABLE_GRACE {
                    bar.abandon();
                    return Err(anyhow::Error::new(e).context(format!("waiting for job {}", job.id)));
                }
                bar.set_message("the coordinator does not answer; retrying");
            }
            Err(e) => {
                bar.abandon();
                return Err(anyhow::Error::new(e).context(format!("waiting for job {}", job.id)));
            }
        }
    }
    bar.finish_and_clear();
    Ok(job)
}

fn human_secs(s: f64) -> String {
    let s = s.round() as u64;
    match s {
        0..=99 => format!("{s} s"),
        100..=5999 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s / 60 % 60),
    }
}

/// `tessera status`.
pub fn status(args: StatusArgs) -> Result<()> {
    let client = Client::new(&args.conn.resolve()?);
    if let Some(id) = args.job {
        let job: Job = client.get_json(&job_path(id))?;
        if args.json {
            return print_json(&job);
        }
        print!("{}", job_details(&job));
        return Ok(());
    }
    let list: JobList = client.get_json("/api/v1/jobs")?;
    if args.json {
        return print_json(&list);
    }
    if list.jobs.is_empty() {
        println!("no jobs");
        return Ok(());
    }
    let rows = list
        .jobs
        .iter()
        .map(|j| {
            vec![
                j.id.to_string(),
                clean(&j.state),
                percent(j.progress.fraction),
                format!("{}/{}", j.progress.frames_done, j.progress.frames),
                clean(&j.name),
            ]
        })
        .collect::<Vec<_>>();
    print!("{}", table(&["ID", "STATE", "PROGRESS", "FRAMES", "NAME"], &rows, &[true, false, true, true, false]));
    Ok(())
}

fn percent(fraction: f64) -> String {
    let f = if fraction.is_finite() { fraction.clamp(0.0, 1.0) } else { 0.0 };
    format!("{:.0}%", (f * 100.0).floor())
}

fn job_details(j: &Job) -> String {
    let s = &j.settings;
    let p = &j.progress;
    let mut out = format!("job {}: {}\n", j.id, clean(&j.name));
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<10}{v}\n"));
    let eta = p.eta_s.filter(|s| s.is_finite() && *s >= 0.0).map(|s| format!(", ETA {}", human_secs(s)));
    line(
        "state:",
        format!(
            "{} ({}: {}/{} tiles, {}/{} frames{})",
            clean(&j.state),
            percent(p.fraction),
            p.tiles_done,
            p.tiles,
            p.frames_done,
            p.frames,
            eta.unwrap_or_default()
        ),
    );
    if let Some(e) = &j.error {
        line("error:", clean(e));
    }
    line("created:", utc(j.created_ms));
    if let Some(f) = j.finished_ms {
        line("finished:", utc(f));
    }
    line("frames:", format!("{} at {} fps", format_frames(&s.frames), s.fps));
    line(
        "image:",
        format!(
            "{}x{}, {} spp, {} bounces, {} px tiles, seed {}",
            s.width, s.height, s.spp, s.bounces, s.tile_size, s.seed
        ),
    );
    line(
        "output:",
        format!("{} ({}, exposure {})", clean(&s.formats.join(", ")), clean(&s.view_transform), s.exposure),
    );
    if s.denoise {
        line("denoise:", format!("yes: each frame also as {} (the raw frame is kept)", tessera_frame::DENOISER));
    }
    if s.progressive {
        line("passes:", "progressive: a preview of each frame after each sample pass".to_owned());
    }
    line("camera:", s.camera.as_deref().map_or("the scene's first".to_owned(), clean));
    let bg = s.background.map_or("Blender's grey".to_owned(), |[r, g, b]| format!("{r},{g},{b}"));
    line("world:", format!("{bg}, strength {}", s.background_strength));
    line("priority:", s.priority.to_string());
    out
}

/// `tessera logs`.
pub fn logs(args: LogsArgs) -> Result<()> {
    let client = Client::new(&args.conn.resolve()?);
    let base = format!("{}/log", job_path(args.job));
    let mut after: Option<u64> = None;
    loop {
        // The state is read before the log: once it says finished, the log
        // read after it holds the job's last lines.
        let finished = args.follow && is_finished(&client.get_json::<Job>(&job_path(args.job))?.state);
        let path = match after {
            Some(seq) => format!("{base}?after={seq}"),
            None => base.clone(),
        };
        let page: LogPage = client.get_json(&path)?;
        for e in &page.entries {
            println!("{}  {:<5}  {}", utc(e.time_ms), clean(&e.level), clean_text(&e.message));
            after = Some(after.map_or(e.seq, |a| a.max(e.seq)));
        }
        if !args.follow || finished {
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// `tessera download`.
pub fn download(args: DownloadArgs) -> Result<()> {
    let client = Client::new(&args.conn.resolve()?);
    let formats: Vec<&str> = args.format.iter().map(|f| format_name(*f)).collect();
    download_frames(&client, args.job, &args.dir, &formats, true)
}

/// `<stem>-NNNN.<ext>`, as `tessera render` names frames.
pub fn frame_file_name(stem: &str, frame: i32, ext: &str) -> String {
    format!("{stem}-{frame:04}.{ext}")
}

/// Refuses a stem or extension from the server that would make a file name
/// reach outside the download directory or not be one plain name: empty,
/// path separators, control characters, or nothing but dots (`..`). A `..`
/// inside a name (`v1..2`) stays, as the farm allows it: without a
/// separator it cannot climb out.
fn check_name_part(what: &str, s: &str) -> Result<()> {
    if s.is_empty() || s.contains(['/', '\\', ':']) || s.chars().all(|c| c == '.') || s.chars().any(char::is_control) {
        bail!("the coordinator names the frames' {what} {s:?}, which is not a plain file name part; refusing it");
    }
    Ok(())
}

/// One file to fetch.
struct Planned<'a> {
    path: PathBuf,
    info: &'a FileInfo,
    hash: blake3::Hash,
}

/// Downloads the finished frames of job `id` into `dir` (`formats`: all the
/// job has if empty) with each frame's manifest (`<stem>-NNNN.manifest.json`),
/// skipping files already there with the listed blake3 and verifying each
/// downloaded one.
fn download_frames(client: &Client, id: u64, dir: &Path, formats: &[&str], summary_to_stdout: bool) -> Result<()> {
    let job: Job = client.get_json(&job_path(id))?;
    for f in formats {
        if !job.settings.formats.iter().any(|j| j == f) {
            bail!("job {id} has no {f} files (its formats: {})", clean(&job.settings.formats.join(", ")));
        }
    }
    let list: FrameList = client.get_json(&format!("{}/frames", job_path(id)))?;
    check_name_part("stem", &list.stem)?;
    let mut plan = Vec::new();
    for frame in &list.frames {
        for (ext, info) in &frame.files {
            // `--format png` also fetches a denoised job's `denoised.png`.
            let format = ext.strip_prefix(manifest::DENOISED).unwrap_or(ext);
            if !formats.is_empty() && !formats.contains(&format) {
                continue;
            }
            check_name_part("extension", ext)?;
            let hash = blake3::Hash::from_hex(&info.blake3).map_err(|e| {
                anyhow::anyhow!(
                    "frame {} {ext}: the listed blake3 {:?} is not one: {e}",
                    frame.frame,
                    clean(&info.blake3)
                )
            })?;
            plan.push(Planned { path: dir.join(frame_file_name(&list.stem, frame.frame, ext)), info, hash });
        }
        // The frame's signed manifest, beside it, whatever formats were
        // asked for: `tessera verify` checks the frame with it offline.
        if let Some(info) = &frame.manifest {
            let hash = blake3::Hash::from_hex(&info.blake3).map_err(|e| {
                anyhow::anyhow!(
                    "frame {} manifest: the listed blake3 {:?} is not one: {e}",
                    frame.frame,
                    clean(&info.blake3)
                )
            })?;
            plan.push(Planned { path: dir.join(manifest::file_name(&list.stem, frame.frame)), info, hash });
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut fetch = Vec::new();
    let mut present = 0usize;
    for p in plan {
        if p.path.is_file() && file_hash(&p.path).is_ok_and(|h| h == p.hash) {
            present += 1;
        } else {
            fetch.push(p);
        }
    }
    let total: u64 = fetch.iter().map(|p| p.info.bytes).sum();
    let bar = ProgressBar::new(total).with_style(
        ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}")
            .expect("static template")
            .progress_chars("=> "),
    );
    let mut bytes = 0u64;
    for (k, p) in fetch.iter().enumerate() {
        let name = p.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        bar.set_message(format!("{name} ({}/{})", k + 1, fetch.len()));
        let got = client.download(&p.info.url, &p.path, Some((p.info.bytes, p.hash)), &mut |n| bar.inc(n));
        match got {
            Ok((n, _)) => bytes += n,
            Err(e) => {
                bar.abandon();
                return Err(e.into());
            }
        }
    }
    bar.finish_and_clear();
    let shown = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
    let summary = format!(
        "downloaded {} file{} ({}) of job {id} to {}{}",
        fetch.len(),
        if fetch.len() == 1 { "" } else { "s" },
        human_bytes(bytes),
        shown.display(),
        if present > 0 { format!("; {present} already there") } else { String::new() },
    );
    if summary_to_stdout {
        println!("{summary}");
    } else {
        eprintln!("tessera: {summary}");
    }
    if job.state != "done" {
        eprintln!(
            "tessera: job {id} is {}: {} of {} frames finished; run this again later for the rest",
            clean(&job.state),
            list.frames.len(),
            job.settings.frames.len()
        );
    }
    Ok(())
}

fn file_hash(path: &Path) -> std::io::Result<blake3::Hash> {
    let mut h = blake3::Hasher::new();
    h.update_reader(std::fs::File::open(path)?)?;
    Ok(h.finalize())
}

fn human_bytes(b: u64) -> String {
    match b {
        0..=9_999 => format!("{b} B"),
        10_000..=9_999_999 => format!("{:.1} KB", b as f64 / 1e3),
        _ => format!("{:.1} MB", b as f64 / 1e6),
    }
}

/// `tessera cancel`.
pub fn cancel(args: JobArgs) -> Result<()> {
    let client = Client::new(&args.conn.resolve()?);
    let job: Job = client.post_json(&format!("{}/cancel", job_path(args.job)), None)?;
    println!("job {}: {}", job.id, clean(&job.state));
    Ok(())
}

/// `tessera retry`.
pub fn retry(args: JobArgs) -> Result<()> {
    let client = Client::new(&args.conn.resolve()?);
    let job: Job = client.post_json(&format!("{}/retry", job_path(args.job)), None)?;
    println!("job {}: {}", job.id, clean(&job.state));
    Ok(())
}

/// `tessera delete`.
pub fn delete(args: JobArgs) -> Result<()> {
    let client = Client::new(&args.conn.resolve()?);
    client.delete(&job_path(args.job))?;
    println!("job {}: deleted", args.job);
    Ok(())
}

/// `tessera workers`.
pub fn workers(args: WorkersArgs) -> Result<()> {
    let client = Client::new(&args.conn.resolve()?);
    let list: WorkerList = client.get_json("/api/v1/workers")?;
    if args.json {
        return print_json(&list);
    }
    if list.workers.is_empty() {
        println!("no workers");
        return Ok(());
    }
    let rows = list
        .workers
        .iter()
        .map(|w| {
            let caps = w.capabilities.as_ref();
            vec![
                clean(&w.name),
                clean(&w.state),
                caps.map_or("-".into(), |c| c.slots.to_string()),
                w.leases.to_string(),
                w.tiles_done.to_string(),
                caps.and_then(|c| c.gpu.as_deref()).map_or("-".into(), clean),
                clean(&w.identity.chars().take(12).collect::<String>()),
            ]
        })
        .collect::<Vec<_>>();
    let header = ["NAME", "STATE", "SLOTS", "LEASES", "TILES", "GPU", "IDENTITY"];
    print!("{}", table(&header, &rows, &[false, false, true, true, true, false, false]));
    Ok(())
}

/// Columns padded to their widest cell; `right[i]` right-aligns column i.
fn table(header: &[&str], rows: &[Vec<String>], right: &[bool]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, cell) in cells.into_iter().enumerate() {
            let w = widths.get(i).copied().unwrap_or(0);
            let pad = " ".repeat(w.saturating_sub(cell.chars().count()));
            if i > 0 {
                s.push_str("  ");
            }
            if right.get(i).copied().unwrap_or(false) {
                s.push_str(&pad);
                s.push_str(cell);
            } else {
                s.push_str(cell);
                s.push_str(&pad);
            }
        }
        s.truncate(s.trim_end().len());
        s.push('\n');
        s
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// As [`clean`], keeping newlines and tabs (log messages).
fn clean_text(s: &str) -> String {
    s.chars().map(|c| if c.is_control() && c != '\n' && c != '\t' { '?' } else { c }).collect()
}

/// `YYYY-MM-DD HH:MM:SSZ` of Unix milliseconds, in UTC.
fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let t = secs % 86_400;
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z", t / 3600, t / 60 % 60, t % 60)
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        submit: SubmitArgs,
    }

    fn parse(args: &[&str]) -> Result<SubmitSettings> {
        let cli = Cli::try_parse_from(std::iter::once("submit").chain(args.iter().copied()))?;
        submit_settings(&cli.submit)
    }

    #[test]
    fn frame_files_are_named_as_render_names_them() {
        assert_eq!(frame_file_name("turntable", 1, "png"), "turntable-0001.png");
        assert_eq!(frame_file_name("shot", 12345, "exr"), "shot-12345.exr");
        assert_eq!(frame_file_name("shot", -5, "png"), "shot--005.png");
        assert_eq!(frame_file_name("shot", -5, "png"), format!("{}-{:04}.{}", "shot", -5, "png"));
    }

    #[test]
    fn stems_that_leave_the_directory_are_refused() {
        for bad in ["", "../x", "..", ".", "...", "a/b", "a\\b", "c:x", "a\nb", "/abs", "\0"] {
            assert!(check_name_part("stem", bad).is_err(), "{bad:?}");
        }
        for good in ["turntable", "shot 010", "café", ".hidden", "a.b", "v1..2"] {
            assert!(check_name_part("stem", good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn submit_sends_only_what_was_given() {
        // Nothing given: nothing sent (not even render's defaults), so the farm's apply.
        let s = parse(&["scene.glb"]).unwrap();
        assert_eq!(serde_json::to_string(&s).unwrap(), "{}");
        let s = parse(&[
            "scene.glb",
            "--frames",
            "1-3,7",
            "--spp",
            "4",
            "--width",
            "64",
            "--format",
            "png,exr",
            "--view",
            "Filmic",
            "--exposure",
            "-1.5",
            "--background",
            "0.1,0.2,0.3",
            "--background-strength",
            "2",
            "--tile-size",
            "32",
            "--priority",
            "-2",
            "--name",
            "shot",
        ])
        .unwrap();
        assert_eq!(s.frames, Some(FrameSelection::Text("1-3,7".into())));
        assert_eq!((s.spp, s.width, s.height, s.tile_size), (Some(4), Some(64), None, Some(32)));
        assert_eq!(s.formats, Some(vec!["png".into(), "exr".into()]));
        assert_eq!(s.view_transform.as_deref(), Some("filmic"));
        assert_eq!((s.exposure, s.background, s.background_strength), (Some(-1.5), Some([0.1, 0.2, 0.3]), Some(2.0)));
        assert_eq!((s.priority, s.name.as_deref(), s.bounces, s.seed), (Some(-2), Some("shot"), None, None));
    }

    #[test]
    fn submit_refuses_typos_before_uploading() {
        let err = parse(&["scene.glb", "--frames", "1-x"]).unwrap_err().to_string();
        assert!(err.contains("--frames"), "{err}");
        assert!(parse(&["scene.glb", "--spp", "0"]).unwrap_err().to_string().contains("--spp"));
        assert!(parse(&["scene.glb", "--format", "jpg"]).is_err());
        assert!(parse(&["scene.glb", "--view", "aces"]).is_err());
        assert!(parse(&["scene.glb", "--background", "0.1,0.2"]).unwrap_err().to_string().contains("R,G,B"));
        assert!(parse(&["scene.glb", "--background", "0.1,0.2,0.3,0.4"]).is_err());
        assert!(parse(&["scene.glb", "--background", "red"]).is_err());
    }

    #[test]
    fn tables_align_and_server_text_is_cleaned() {
        let rows =
            vec![vec!["7".into(), "running".into(), clean("a\x1b[2Jb")], vec!["12".into(), "done".into(), "x".into()]];
        let t = table(&["ID", "STATE", "NAME"], &rows, &[true, false, false]);
        assert_eq!(t, "ID  STATE    NAME\n 7  running  a?[2Jb\n12  done     x\n");
        assert_eq!(clean_text("a\nb\tc\x07"), "a\nb\tc?");
        assert_eq!(percent(0.333), "33%");
        assert_eq!(percent(f64::NAN), "0%");
        assert_eq!(percent(1.5), "100%");
    }

    #[test]
    fn times_are_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00Z");
        assert_eq!(utc(1_764_480_000_000), "2025-11-30 05:20:00Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00Z");
        assert_eq!(human_secs(42.4), "42 s");
        assert_eq!(human_secs(125.0), "2m05s");
        assert_eq!(human_secs(7300.0), "2h01m");
    }
}
