//! `--recheck`: pixels of the frame rendered again through the job's guest
//! in the worker's wasm sandbox, as 1×1 tiles over all their samples, and
//! compared with the frame's files: bit for bit for CPU tiles, within the
//! farm's GPU tolerance for GPU tiles.

use std::collections::BTreeSet;

use tessera_protocol::wire::Engine;
use tessera_protocol::Rect;
use tessera_worker::sandbox::{FuelBudget, JobSettings, JobSpec, Sandbox, SandboxConfig, TileRequest};

use super::{bits, display8, short, Decoded, Pixels, VerifyOptions};
use crate::manifest::{self, FrameManifest, ManifestTile};
use crate::pack::pack_scene;

/// blake3 key-derivation context of the pixels `--recheck` picks.
const RECHECK_CONTEXT: &str = "tessera 2026-11 verify recheck pixels v1";
/// The `n` distinct pixels `--recheck` renders, from the seed or the signature.
fn recheck_pixels(m: &FrameManifest, seed: Option<u64>, n: u32) -> Vec<(u32, u32)> {
    let total = u64::from(m.width) * u64::from(m.height);
    let mut h = blake3::Hasher::new_derive_key(RECHECK_CONTEXT);
    match seed {
        Some(s) => h.update(b"seed").update(&s.to_le_bytes()),
        None => h.update(b"signature").update(m.signature.as_bytes()),
    };
    let mut xof = h.finalize_xof();
    let mut chosen = BTreeSet::new();
    let mut out = Vec::new();
    let mut word = [0u8; 8];
    while (out.len() as u64) < u64::from(n).min(total) {
        xof.fill(&mut word);
        let i = u64::from_le_bytes(word) % total;
        if chosen.insert(i) {
            out.push(((i % u64::from(m.width)) as u32, (i / u64::from(m.width)) as u32));
        }
    }
    out
}

/// `Err`: the recheck could not run; `Ok(Err)`: pixels differ.
pub(super) fn recheck(
    m: &FrameManifest,
    options: &VerifyOptions,
    n: u32,
    frame: &Decoded<'_>,
) -> Result<Result<String, Vec<String>>, String> {
    let (exr, png) = (frame.exr, frame.png);
    let Some(scene_path) = &options.scene else { return Err("needs the job's scene: --scene S".into()) };
    if exr.is_none() && png.is_none() {
        return Err("no decoded frame file (EXR or PNG) to compare with".into());
    }
    let module = options.module.as_ref().map_err(Clone::clone)?;
    let module_hash = blake3::hash(&module.bytes).to_hex().to_string();
    if !module_hash.eq_ignore_ascii_case(&m.module) {
        return Err(format!(
            "the module {} has blake3 {}…, the job's is {}…: pass the job's module with --module M",
            module.origin,
            short(&module_hash),
            short(&m.module)
        ));
    }
    // The farm keeps the scene as it was uploaded: `submit` packs a .gltf;
    // a .glb may have been sent as it is.
    let raw = std::fs::read(scene_path).map_err(|e| format!("reading {}: {e}", scene_path.display()))?;
    let scene = if blake3::hash(&raw).to_hex().eq_ignore_ascii_case(&m.scene) {
        raw
    } else {
        let packed = pack_scene(scene_path).map_err(|e| format!("packing {}: {e}", scene_path.display()))?;
        if !blake3::hash(&packed).to_hex().eq_ignore_ascii_case(&m.scene) {
            return Err(format!(
                "the scene {} (blake3 {}…, packed {}…) is not the job's ({}…)",
                scene_path.display(),
                short(blake3::hash(&raw).to_hex().as_str()),
                short(blake3::hash(&packed).to_hex().as_str()),
                short(&m.scene)
            ));
        }
        packed
    };
    let sandbox = Sandbox::new(SandboxConfig::default()).map_err(|e| e.to_string())?;
    let guest = sandbox.load(&module.bytes).map_err(|e| format!("loading the module: {e}"))?;
    let spec = JobSpec {
        scene: scene.into(),
        // Always the CPU engine: the reference GPU tiles are judged against.
        settings: JobSettings { width: m.width, height: m.height, fps: m.fps, extra: Engine::Cpu.set_in(&m.extra) },
        fuel: FuelBudget {
            per_tile: m.fuel_per_tile,
            per_pixel_sample: m.fuel_per_pixel_sample,
            ..FuelBudget::default()
        },
        label: "tessera verify".into(),
    };
    let mut instance = guest.instantiate(&spec).map_err(|e| format!("loading the scene in the guest: {e}"))?;
    // The tiles over a pixel: one, or one per pass of a progressive frame
    // (whose sample ranges the coverage check found consecutive).
    let tiles_at = |x: u32, y: u32| -> Vec<&ManifestTile> {
        m.tiles
            .iter()
            .filter(|t| x >= t.rect.x && y >= t.rect.y && x - t.rect.x < t.rect.width && y - t.rect.y < t.rect.height)
            .collect()
    };
    let pixels = recheck_pixels(m, options.seed, n);
    let mut problems = Vec::new();
    // GPU tiles: judged within the farm's tolerance, as the farm judged
    // them (GPU floating point is not the CPU's), over all their rechecked
    // pixels together.
    let tolerance = tessera_protocol::gpu_check::GpuTolerance::default();
    struct GpuPixel {
        at: (u32, u32),
        tile: u32,
        cpu: [f32; 3],
        stored: [f32; 3],
    }
    let mut gpu_pixels: Vec<GpuPixel> = Vec::new();
    for &(x, y) in &pixels {
        let over = tiles_at(x, y);
        let Some(&tile) = over.iter().max_by_key(|t| t.samples.start) else {
            problems.push(format!("pixel ({x}, {y}) is in no tile"));
            continue;
        };
        let start = over.iter().map(|t| t.samples.start).min().unwrap_or(0);
        let count = over.iter().map(|t| t.samples.count).sum();
        // A pixel with any GPU pass is judged within the GPU tolerance.
        let tile = over.iter().find(|t| t.gpu.is_some()).copied().unwrap_or(tile);
        let rect = Rect { x, y, width: 1, height: 1 };
        // All its samples at once: sums by sample block add up exactly as
        // the passes did (`SampleRange::passes`).
        let request = TileRequest::new(m.frame, rect, start, count, m.seed);
        let mut out = instance.render_tile(&request).map_err(|e| format!("rendering pixel ({x}, {y}): {e}"))?;
        out.accumulators.canonicalize_nans();
        let Some(&rendered) = manifest::tile_pixels(&out.accumulators).first() else {
            return Err(format!("the guest returned no pixel for ({x}, {y})"));
        };
        match (exr, png) {
            (Some(exr), _) if tile.gpu.is_some() => {
                gpu_pixels.push(GpuPixel { at: (x, y), tile: tile.index, cpu: rendered, stored: exr.at(x, y) })
            }
            (Some(exr), _) => {
                let stored = exr.at(x, y);
                if bits(stored) != bits(rendered) {
                    problems.push(format!(
                        "pixel ({x}, {y}) of tile {} re-renders as {rendered:?}, the EXR holds {stored:?}",
                        tile.index
                    ));
                }
            }
            (None, Some(png)) => {
                let one = Pixels { width: 1, height: 1, data: vec![rendered] };
                let shown = display8(&one, frame.output)[0];
                if shown != png.at(x, y) {
                    problems.push(format!(
                        "pixel ({x}, {y}) of tile {} re-renders as {shown:?} in the PNG's view, the PNG holds {:?}",
                        tile.index,
                        png.at(x, y)
                    ));
                }
            }
            (None, None) => unreachable!("checked above"),
        }
    }
    if !gpu_pixels.is_empty() {
        use tessera_protocol::gpu_check::{colour_error, SceneScale};
        let mut scale = SceneScale::default();
        for p in &gpu_pixels {
            scale.add(p.cpu);
        }
        let errors: Vec<f32> =
            gpu_pixels.iter().map(|p| colour_error(p.cpu, p.stored, tolerance, scale.value())).collect();
        let outliers = errors.iter().filter(|e| **e > 1.0).count();
        let allowed = (tolerance.outliers * gpu_pixels.len() as f64).floor() as usize;
        if outliers > allowed {
            for (p, e) in gpu_pixels.iter().zip(&errors).filter(|(_, e)| **e > 1.0) {
                let ((x, y), index, cpu, gpu) = (p.at, p.tile, p.cpu, p.stored);
                problems.push(format!(
                    "pixel ({x}, {y}) of GPU tile {index} re-renders on the CPU as {cpu:?}, the EXR holds {gpu:?} \
                     ({e:.1}× the tolerance; {outliers} of {} GPU pixels outside it, {allowed} allowed)",
                    gpu_pixels.len()
                ));
            }
        }
    }
    if problems.is_empty() {
        let gpu = if gpu_pixels.is_empty() {
            String::new()
        } else {
            format!(" ({} of them in GPU tiles, within the GPU tolerance)", gpu_pixels.len())
        };
        Ok(Ok(format!(
            "{} pixels re-rendered through the guest ({}…) bit for bit as the {} holds them{gpu}",
            pixels.len(),
            short(&m.module),
            if exr.is_some() { "EXR" } else { "PNG" }
        )))
    } else {
        Ok(Err(problems))
    }
}
