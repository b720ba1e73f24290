//! `tessera render`: a scene rendered on this machine through the same wasm
//! path tracer and sandbox the farm uses, one file per frame.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use tessera_client::frames::{format_frames, parse_frames};
use tessera_client::pack::pack_scene;
use tessera_coordinator::local::{FrameJob, LocalRenderer};
use tessera_frame::{OutputOptions, ViewTransform};
use tessera_worker::sandbox::{JobSettings, JobSpec, Sandbox, SandboxConfig};

pub use tessera_client::cli::Format;

/// `tessera submit` mirrors these scene flags (`tessera_client::cli::SubmitArgs`).
#[derive(clap::Args)]
pub struct RenderArgs {
    /// The scene: a .glb, or a .gltf (its external files are packed in).
    scene: PathBuf,
    /// Frames to render, e.g. "1-48" or "1,5,9-12"; default: the scene's
    /// animation range (a still scene renders frame 1).
    #[arg(long)]
    frames: Option<String>,
    /// Samples per pixel.
    #[arg(long, default_value_t = 64, env = "TESSERA_SPP")]
    spp: u32,
    /// Image width; default: 1920, or the scene camera's aspect-derived size.
    #[arg(long)]
    width: Option<u32>,
    /// Image height; default: from the camera's aspect ratio, else 1080.
    #[arg(long)]
    height: Option<u32>,
    /// Camera node to render through; default: the scene's first camera.
    #[arg(long)]
    camera: Option<String>,
    /// Directory for the frames.
    #[arg(long, default_value = "tessera-out")]
    out: PathBuf,
    /// Output formats, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "png")]
    format: Vec<Format>,
    /// View transform for PNG: standard, filmic or agx (Blender 4's default).
    #[arg(long, default_value = "agx")]
    view: ViewTransform,
    /// Exposure in stops, applied before the view transform (PNG only).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    exposure: f32,
    /// World colour as linear R,G,B (glTF has no world); default: Blender's grey.
    // Not `num_args = 3`: clap counts "0.1,0.2,0.3" as one value before
    // splitting it; the count is checked in `guest_settings`.
    #[arg(long, value_name = "R,G,B", value_delimiter = ',', allow_negative_numbers = true)]
    background: Option<Vec<f32>>,
    /// World strength.
    #[arg(long, default_value_t = 1.0)]
    background_strength: f32,
    /// Longest light path, in bounces after the first hit as Blender counts
    /// them (0: direct light only).
    #[arg(long, default_value_t = 8)]
    bounces: u32,
    /// What the materials mean: auto (Blender 2.8–3.6's Principled BSDF for
    /// files those Blenders exported, glTF's BRDF otherwise), blender3 or
    /// gltf (docs/fidelity.md).
    #[arg(long, default_value = "auto", value_parser = clap::builder::PossibleValuesParser::new(tessera_client::model::SHADING))]
    shading: String,
    /// Frames per second: frame N shows the scene at time N / fps.
    #[arg(long, default_value_t = 24.0)]
    fps: f64,
    /// Tile edge in pixels.
    #[arg(long, default_value_t = 64)]
    tile_size: u32,
    /// Threads (one sandbox instance each); default: all cores.
    #[arg(long, env = "TESSERA_THREADS")]
    threads: Option<usize>,
    /// Seed of the sample streams (same seed, same pixels).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The path tracer component; default: the one built into this binary.
    #[arg(long)]
    module: Option<PathBuf>,
    /// Where to render: cpu (bit for bit what the farm's CPU workers
    /// render), gpu (a GPU, or an error if there is none) or auto (a GPU if
    /// there is one, else the CPU). GPU pixels match the CPU's within a
    /// tolerance, not bit for bit.
    #[arg(long, default_value = "cpu")]
    engine: tessera_protocol::wire::Engine,
    /// Which GPU, for --engine gpu or auto: auto (the best hardware GPU;
    /// never a software rasteriser) or part of an adapter's name (e.g.
    /// llvmpipe for Mesa's lavapipe).
    #[arg(long, default_value = "auto")]
    gpu: tessera_worker::gpu::GpuSelection,
    /// Also write each frame denoised (`NAME-0001.denoised.png`/`.exr`,
    /// beside the raw frame, whose pixels stay as they are). Renders the
    /// albedo and normal guides with the frame and keeps them in the raw EXR
    /// (`albedo.R`… `normal.Z`); the denoiser is deterministic, so the same
    /// render gives the same denoised bytes anywhere.
    #[arg(long)]
    denoise: bool,
}

fn guest_settings(args: &RenderArgs) -> Result<String> {
    let mut s = serde_json::json!({ "max_bounces": args.bounces, "background_strength": args.background_strength });
    if let Some(c) = &args.camera {
        s["camera"] = c.clone().into();
    }
    if let Some(bg) = &args.background {
        if bg.len() != 3 {
            bail!("--background takes three linear values R,G,B, not {}", bg.len());
        }
        s["background"] = serde_json::json!(bg);
    }
    // Only when asked: the default leaves the settings as the farm's are.
    if args.shading != "auto" {
        s["shading"] = args.shading.clone().into();
    }
    Ok(s.to_string())
}

/// The GPU `--engine` asks for, if any.
fn open_gpu(args: &RenderArgs) -> Result<Option<tessera_worker::gpu::Gpu>> {
    use tessera_protocol::wire::Engine;
    use tessera_worker::gpu::{Gpu, GpuConfig};
    if args.engine == Engine::Cpu {
        return Ok(None);
    }
    let gpu = Gpu::open(GpuConfig { selection: args.gpu.clone(), ..GpuConfig::default() })
        .with_context(|| format!("opening the GPU (--gpu {})", args.gpu))?;
    match (&gpu, args.engine) {
        (Some(g), _) => eprintln!("tessera: rendering on {}", g.adapter()),
        (None, Engine::Gpu) => bail!(
            "--engine gpu: no GPU adapter here (--gpu {} found none; `--gpu llvmpipe` picks Mesa's software \
             Vulkan, or use --engine cpu)",
            args.gpu
        ),
        (None, _) => eprintln!("tessera: no GPU adapter; rendering on the CPU"),
    }
    Ok(gpu)
}

/// Where compiled job modules are kept between runs, so a render does not
/// start with a compile: `TESSERA_CACHE_DIR`, else `$XDG_CACHE_HOME/tessera`,
/// else `~/.cache/tessera` (`modules/` below it). None if there is no home.
fn module_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("TESSERA_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("tessera")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/tessera")))?;
    Some(base.join("modules"))
}

pub fn run(args: RenderArgs) -> Result<()> {
    if args.spp == 0 || args.tile_size == 0 {
        bail!("--spp and --tile-size must be positive");
    }
    // Check what needs no scene first, so a typo fails at once.
    let requested_frames = args.frames.as_deref().map(parse_frames).transpose()?;
    let scene = pack_scene(&args.scene).with_context(|| format!("reading the scene {}", args.scene.display()))?;
    let wasm = crate::module_bytes(args.module.as_ref(), crate::embedded::PATHTRACER, "pathtracer")?;
    let threads = args.threads.unwrap_or_else(crate::default_threads).max(1);
    let started = Instant::now();

    let gpu = open_gpu(&args)?;
    let sandbox = Sandbox::new(SandboxConfig { cache_dir: module_cache_dir(), gpu, ..SandboxConfig::default() })?;
    let module = sandbox.load(&wasm).context("loading the path tracer module")?;
    let extra = args.engine.set_in(&guest_settings(&args)?);

    // Load once to learn the scene's range, cameras and aspect; the final
    // instances are made at the chosen resolution.
    let probe =
        JobSpec::new(scene.clone(), JobSettings { fps: args.fps, extra: extra.clone(), ..JobSettings::new(16, 16) });
    let info = module.instantiate(&probe).context("loading the scene")?.scene_info().clone();
    let (width, height) = tessera_coordinator::farm::job::resolve_size(args.width, args.height, &info);
    // The frame buffer holds 16 bytes a pixel: the farm's limit.
    use tessera_coordinator::farm::job::MAX_PIXELS;
    if width == 0 || height == 0 || u64::from(width) * u64::from(height) > MAX_PIXELS {
        bail!("{width}x{height} is out of range: frames may have 1 to {MAX_PIXELS} pixels");
    }
    let frames = requested_frames.unwrap_or_else(|| (info.frame_start..=info.frame_end).collect());
    if frames.is_empty() {
        bail!("the scene reports an empty frame range ({}..={}); pass --frames", info.frame_start, info.frame_end);
    }
    let spec = JobSpec {
        label: args.scene.file_name().map_or("scene".into(), |n| n.to_string_lossy().into_owned()),
        ..JobSpec::new(scene, JobSettings { width, height, fps: args.fps, extra })
    };
    let mut renderer = LocalRenderer::new(&module, &spec, threads)?.with_guides(args.denoise);
    eprintln!(
        "tessera: {} — {}x{}, {} spp, frames {}, {} threads (cameras: {})",
        args.scene.display(),
        width,
        height,
        args.spp,
        format_frames(&frames),
        threads,
        if info.cameras.is_empty() { "none, using a default framing".to_string() } else { info.cameras.join(", ") },
    );

    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let stem = args.scene.file_stem().map_or("frame".into(), |s| s.to_string_lossy().into_owned());
    let tiles_per_frame = tessera_protocol::Rect::tiles(width, height, args.tile_size).len() as u64;
    let bar = ProgressBar::new(tiles_per_frame * frames.len() as u64).with_style(
        ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {percent}% {elapsed_precise} ETA {eta}")
            .expect("static template")
            .progress_chars("=> "),
    );
    let options = OutputOptions { view: args.view, exposure: args.exposure };
    let mut written = Vec::new();
    let render_started = Instant::now();
    let mut denoise_secs = 0.0f64;
    for (k, &frame_no) in frames.iter().enumerate() {
        bar.set_message(format!("frame {frame_no} ({}/{})", k + 1, frames.len()));
        let job = FrameJob { frame: frame_no, tile_size: args.tile_size, samples: args.spp, seed: args.seed, threads };
        let base = k as u64 * tiles_per_frame;
        let (frame, _) = renderer.render(&module, &spec, &job, |_, done, _| bar.set_position(base + done as u64))?;
        let denoised = if args.denoise {
            let t = Instant::now();
            let d = frame.denoised().with_context(|| format!("denoising frame {frame_no}"))?;
            denoise_secs += t.elapsed().as_secs_f64();
            Some(d)
        } else {
            None
        };
        for (frame, suffix) in [(Some(&frame), ""), (denoised.as_ref(), ".denoised")] {
            let Some(frame) = frame else { continue };
            for format in &args.format {
                let ext = match format {
                    Format::Png => "png",
                    Format::Exr => "exr",
                };
                let path = args.out.join(format!("{stem}-{frame_no:04}{suffix}.{ext}"));
                match format {
                    Format::Png => frame.write_png_with(&path, &options)?,
                    Format::Exr => frame.write_exr(&path)?,
                }
                written.push(path);
            }
        }
    }
    bar.finish_and_clear();
    // Sampling alone: the denoiser's time is reported apart.
    let secs = render_started.elapsed().as_secs_f64() - denoise_secs;
    let paths = u64::from(width) * u64::from(height) * u64::from(args.spp) * frames.len() as u64;
    println!(
        "rendered {} frame{} of {}x{} at {} spp in {:.3} s ({:.2} Mpaths/s on {threads} threads; {:.1} s in all)",
        frames.len(),
        if frames.len() == 1 { "" } else { "s" },
        width,
        height,
        args.spp,
        secs,
        paths as f64 / secs / 1e6,
        started.elapsed().as_secs_f64(),
    );
    if args.denoise {
        let mpix = f64::from(width) * f64::from(height) * frames.len() as f64 / 1e6;
        println!(
            "denoised with {} in {denoise_secs:.3} s ({:.3} s per megapixel)",
            tessera_frame::DENOISER,
            denoise_secs / mpix
        );
    }
    let dir = args.out.canonicalize().unwrap_or(args.out.clone());
    println!("frames written to {} ({} files, first {})", dir.display(), written.len(), written[0].display());
    Ok(())
}
