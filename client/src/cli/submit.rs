//! `tessera submit`: the scene packed, the flags given sent as settings,
//! then (`--wait`) the job followed and (`--download`) its frames fetched.

use super::download::download_frames;
use super::*;

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

/// The settings part of `submit`: exactly the flags that were given.
pub(super) fn submit_settings(args: &SubmitArgs) -> Result<SubmitSettings> {
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
