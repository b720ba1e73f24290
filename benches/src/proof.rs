//! Proof-of-render (DESIGN.md; `tessera_protocol::proof`,
//! `coordinator/src/farm/verify.rs`, `coordinator/src/farm/manifest.rs`):
//!
//! - **detection**: how often spot checks catch a tile with 1, 5 or 10 % of
//!   its pixels faked, measured over random fake sets, commitments and
//!   epoch secrets through the real [`proof::spot_pixels`], beside
//!   [`proof::detection_probability`]; and per 24-frame job, simulated tile
//!   by tile, beside `1 − (1 − p_tile)^tiles`;
//! - **verification cost**: CPU time of [`Verifier::check`] on real tiles of
//!   the turntable scene rendered through the sandbox, over the CPU time of
//!   rendering them (goal ≤ 3 %), for 32, 64 and 128 px tiles;
//! - **manifest size**: a signed frame manifest of a 640×360 frame of
//!   64×64 tiles (60 tiles), as exported, and per tile.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use tessera_client::manifest::{self, ManifestFile};
use tessera_coordinator::farm::job::{JobSpec as FarmJobSpec, RENDER_DEFAULTS};
use tessera_coordinator::farm::manifest::{ManifestSigner, TileInput};
use tessera_coordinator::farm::verify::{Verifier, VerifyConfig};
use tessera_protocol::hex;
use tessera_protocol::proof::{self, SigningKey, TileClaim};
use tessera_protocol::wire::{JobDescriptor, TileTask};
use tessera_protocol::{ContentHash, Rect, SampleRange};
use tessera_store::Store;
use tessera_worker::net::tls;
use tessera_worker::sandbox::{FuelBudget, JobSettings, JobSpec as SandboxJob, Sandbox, SandboxConfig, TileRequest};

use crate::{fmt_duration, Effort, Row};

use tessera_test_support::Rng;

/// The tile the detection trials use: 64×64, somewhere in a frame.
const TILE: Rect = Rect { x: 192, y: 128, width: 64, height: 64 };

/// One faked tile, checked as the farm checks it: `bad` of its pixels
/// faked (a random set), a random commitment (the worker's pixels are
/// whatever it sent), a random epoch secret, the real pixel choice.
/// Returns whether a faked pixel is among those re-rendered.
struct Trial {
    rect: Rect,
    k: u32,
    faked: Vec<bool>,
    order: Vec<u32>,
}

impl Trial {
    fn new(rect: Rect, k: u32) -> Trial {
        let n = rect.pixel_count() as usize;
        Trial { rect, k, faked: vec![false; n], order: (0..n as u32).collect() }
    }

    fn caught(&mut self, rng: &mut Rng, bad: u64) -> bool {
        let n = self.order.len();
        // Partial Fisher–Yates: the first `bad` of `order` are the fakes.
        for i in 0..bad as usize {
            let j = i + rng.below((n - i) as u64) as usize;
            self.order.swap(i, j);
            self.faked[self.order[i] as usize] = true;
        }
        let (secret, c) = (rng.bytes32(), rng.bytes32());
        let pixels = proof::spot_pixels(&secret, &c, self.rect, self.k);
        let caught =
            pixels.iter().any(|&(x, y)| self.faked[((y - self.rect.y) * self.rect.width + (x - self.rect.x)) as usize]);
        for &i in &self.order[..bad as usize] {
            self.faked[i as usize] = false;
        }
        caught
    }
}

/// A detection probability given its miss probability as `log10(miss)`,
/// readably: `1 − 10^-535` rather than a rounded `1.0000`.
fn fmt_detect(miss_log10: f64) -> String {
    if miss_log10 < -4.0 {
        format!("1 − 10^{:.0}", miss_log10)
    } else {
        format!("{:.4}", 1.0 - 10f64.powf(miss_log10))
    }
}

/// `log10` of the chance that `n` independent checks, each catching with
/// probability `p`, all miss: `n · log10(1 − p)`.
fn miss_log10(p: f64, n: f64) -> f64 {
    n * (1.0 - p).log10()
}

/// 95 % half-width of a measured proportion.
fn ci95(p: f64, n: f64) -> f64 {
    1.96 * (p * (1.0 - p) / n).sqrt()
}

fn detection(effort: Effort) -> Vec<Row> {
    let (trials, jobs) = match effort {
        Effort::Quick => (2_000u32, 20u32),
        Effort::Full => (20_000, 200),
    };
    let n = TILE.pixel_count();
    let config = VerifyConfig::default();
    let k = proof::pixels_to_check(n, config.faked_fraction, config.target);
    let mut rng = Rng(0x7e55_e4a0_2026_1122);
    let mut trial = Trial::new(TILE, k);
    let mut rows = Vec::new();
    let mut p_tile = BTreeMap::new();
    for pct in [1u32, 5, 10] {
        let bad = ((n as f64) * f64::from(pct) / 100.0).ceil() as u64;
        let caught = (0..trials).filter(|_| trial.caught(&mut rng, bad)).count();
        let measured = caught as f64 / f64::from(trials);
        let formula = proof::detection_probability(n, bad, u64::from(k));
        p_tile.insert(pct, (bad, formula));
        rows.push(Row {
            name: format!("spot check catches a 64×64 tile with {pct} % faked ({bad} px)"),
            value: format!("{measured:.4}"),
            note: format!(
                "formula {formula:.4}; {trials} random tiles (fake set, commitment, secret), ±{:.4} (95 %); k = {k} of {n} px",
                ci95(measured, f64::from(trials))
            ),
        });
    }

    // Jobs: 24 frames of 640×320 in 64×64 tiles (10 × 5 = 50 a frame).
    let (per_frame, frames) = (50u32, 24u32);
    let tiles = per_frame * frames;
    // (pixels faked %, share of the worker's tiles faked %)
    for (pct, share) in [(1u32, 100u32), (5, 100), (10, 100), (5, 10), (1, 1)] {
        let (bad, p) = p_tile[&pct];
        let faked_tiles = (tiles * share).div_ceil(100);
        let formula = fmt_detect(miss_log10(p, f64::from(faked_tiles)));
        let mut caught_jobs = 0u32;
        let mut until = Vec::new();
        let mut positions: Vec<u32> = (0..tiles).collect();
        for _ in 0..jobs {
            // Which of the job's tiles are faked, in render order. Honest
            // tiles pass every check (bit for bit), so only the faked ones
            // are drawn.
            for i in 0..faked_tiles as usize {
                let j = i + rng.below(u64::from(tiles) - i as u64) as usize;
                positions.swap(i, j);
            }
            let mut fakes = positions[..faked_tiles as usize].to_vec();
            fakes.sort_unstable();
            if let Some(&at) = fakes.iter().find(|_| trial.caught(&mut rng, bad)) {
                caught_jobs += 1;
                until.push(f64::from(at + 1));
            }
        }
        let measured = f64::from(caught_jobs) / f64::from(jobs);
        let mean_until = if until.is_empty() { f64::NAN } else { until.iter().sum::<f64>() / until.len() as f64 };
        let who = if share == 100 { "every tile".to_string() } else { format!("{share} % of its tiles") };
        rows.push(Row {
            name: format!("24-frame job ({tiles} tiles) caught, worker fakes {pct} % of the pixels of {who}"),
            value: format!("{caught_jobs}/{jobs} jobs"),
            note: format!(
                "formula 1 − (1 − {p:.4})^{faked_tiles} = {formula}; measured {measured:.3}; caught on average at the job's tile {mean_until:.1}"
            ),
        });
    }
    rows
}

/// This thread's CPU time (`clock_gettime(CLOCK_THREAD_CPUTIME_ID)`, ns
/// resolution; `/proc/thread-self/schedstat` only moves at scheduler
/// ticks), where the platform has it.
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
fn thread_cpu() -> Option<Duration> {
    #[repr(C)]
    struct Timespec {
        tv_sec: i64,
        tv_nsec: i64,
    }
    extern "C" {
        // From the C library std already links.
        fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut ts = Timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec (64-bit Linux layout).
    let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (rc == 0).then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
fn thread_cpu() -> Option<Duration> {
    None
}

/// Times `f` on this thread: CPU time where the kernel reports it, else wall.
fn timed<T>(f: impl FnOnce() -> T) -> (Duration, T) {
    let (c0, w0) = (thread_cpu(), Instant::now());
    let out = f();
    let wall = w0.elapsed();
    let cpu = match (c0, thread_cpu()) {
        (Some(a), Some(b)) if b >= a => b - a,
        _ => wall,
    };
    (cpu, out)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// The turntable scene's frame size for the verification runs.
const FRAME: (u32, u32) = (640, 360);
const FRAME_NO: i32 = 12;

fn descriptor(job: u64, module: ContentHash, scene: ContentHash) -> JobDescriptor {
    let (fuel_per_tile, fuel_per_pixel_sample) = FarmJobSpec::default_fuel();
    JobDescriptor {
        job,
        module,
        scene,
        width: FRAME.0,
        height: FRAME.1,
        fps: 24.0,
        extra: RENDER_DEFAULTS.into(),
        fuel_per_tile,
        fuel_per_pixel_sample,
        engine: Default::default(),
        guides: false,
    }
}

/// A rendered, sealed tile.
struct Rendered {
    task: TileTask,
    accumulators: tessera_protocol::TileAccumulators,
    commitment: proof::Commitment,
    render: Duration,
}

fn verification(effort: Effort) -> Result<Vec<Row>> {
    let (spps, rounds, render_rounds): (&[u32], usize, usize) = match effort {
        Effort::Quick => (&[16], 2, 1),
        Effort::Full => (&[16, 64], 5, 3),
    };
    let wasm = tessera_guest_build::guest("pathtracer")?;
    let scene = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/scenes/turntable.glb"))?;
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path()).map_err(|e| anyhow!("store: {e}"))?;
    let module_hash = ContentHash(store.put_blob(&wasm).map_err(|e| anyhow!("{e}"))?);
    let scene_hash = ContentHash(store.put_blob(&scene).map_err(|e| anyhow!("{e}"))?);
    let store = Arc::new(Mutex::new(store));
    let verifier = Verifier::new(VerifyConfig::default(), store).map_err(|e| anyhow!("verifier: {e}"))?;

    // The worker's side: the sandbox as a worker configures it, one
    // instance per job (as a worker slot keeps it).
    let module = Sandbox::new(SandboxConfig::default())?.load(&wasm)?;
    let job = descriptor(1, module_hash, scene_hash);
    let spec = SandboxJob {
        scene: scene.clone().into(),
        settings: JobSettings { width: job.width, height: job.height, fps: job.fps, extra: job.extra.clone() },
        fuel: FuelBudget {
            per_tile: job.fuel_per_tile,
            per_pixel_sample: job.fuel_per_pixel_sample,
            ..FuelBudget::default()
        },
        label: "bench worker".into(),
    };
    let mut instance = module.instantiate(&spec)?;
    let id = tls::Identity::generate("bench-worker")?;
    let key = SigningKey::from_pkcs8(&id.key_der)?;
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64;

    // The same 128×128 block in the middle of the frame, cut into tiles of
    // each size: the render work is the same for every size, only k over
    // the tile's pixels changes.
    let block = 128u32;
    let (bx, by) = (FRAME.0 / 2 - block / 2, FRAME.1 / 2 - block / 2);
    let mut rows = Vec::new();
    let mut lease = 0u64;
    let mut render_tiles = |edge: u32, spp: u32, job: &JobDescriptor| -> Result<Vec<Rendered>> {
        let mut out = Vec::new();
        for ty in 0..block / edge {
            for tx in 0..block / edge {
                lease += 1;
                let rect = Rect { x: bx + tx * edge, y: by + ty * edge, width: edge, height: edge };
                let task = TileTask {
                    lease,
                    job: job.clone(),
                    tile: lease as u32,
                    frame: FRAME_NO,
                    rect,
                    samples: SampleRange { start: 0, count: spp },
                    seed: 0,
                    gpu: false,
                };
                let request = TileRequest::new(task.frame, rect, 0, spp, task.seed);
                let mut times = Vec::new();
                let mut last = None;
                for _ in 0..render_rounds {
                    let (t, o) = timed(|| instance.render_tile(&request));
                    times.push(t);
                    last = Some(o?);
                }
                let o = last.context("no render")?;
                let result = task.seal(o.accumulators, o.fuel_used, 0, None, &key);
                out.push(Rendered {
                    task,
                    accumulators: result.accumulators,
                    commitment: result.commitment,
                    render: median(times),
                });
            }
        }
        Ok(out)
    };
    let check = |r: &Rendered| -> Result<Duration> {
        let (t, c) = timed(|| verifier.check(&r.task, &r.accumulators, &r.commitment, None, now_ms));
        let c = c.map_err(|e| anyhow!("check: {e}"))?;
        if !c.passed() {
            return Err(anyhow!("an honest tile failed its spot check at {:?}", c.mismatch));
        }
        Ok(t)
    };

    // Cold: the first check of a job compiles the module (first job on this
    // coordinator) and loads the scene into a new instance; the next job's
    // first check only instantiates and loads the scene.
    let first = render_tiles(64, 16, &job)?;
    let w0 = Instant::now();
    let cold = check(&first[0])?;
    let cold_wall = w0.elapsed();
    let warm1 = check(&first[0])?;
    let job2 = descriptor(2, module_hash, scene_hash);
    let second = render_tiles(64, 16, &job2)?;
    let new_job = check(&second[0])?;
    rows.push(Row {
        name: "first spot check on a new coordinator (module compile + instantiate + scene load)".into(),
        value: fmt_duration(cold_wall),
        note: format!(
            "wall time (compilation uses all cores); {} CPU on the calling thread; steady state for the same tile {}",
            fmt_duration(cold),
            fmt_duration(warm1)
        ),
    });
    rows.push(Row {
        name: "first spot check of a further job (instantiate + scene load, module in memory)".into(),
        value: fmt_duration(new_job),
        note: format!(
            "CPU; once per job while it stays among the {} jobs kept warm; turntable.glb, {}×{}",
            4, FRAME.0, FRAME.1
        ),
    });

    for &spp in spps {
        for edge in [32u32, 64, 128] {
            let tiles = render_tiles(edge, spp, &job)?;
            // Steady state: the job's instance is warm (its first check,
            // which loads the scene, is above).
            let mut check_total = Duration::ZERO;
            for r in &tiles {
                let t: Result<Vec<Duration>> = (0..rounds).map(|_| check(r)).collect();
                check_total += median(t?);
            }
            let render_total: Duration = tiles.iter().map(|r| r.render).sum();
            let n = u64::from(edge * edge);
            let k = verifier.pixels_for(tiles[0].task.rect);
            let ratio = check_total.as_secs_f64() / render_total.as_secs_f64();
            let per_tile = |d: Duration| d / tiles.len() as u32;
            rows.push(Row {
                name: format!("spot check ÷ render CPU time, {edge}×{edge} tiles, {spp} spp"),
                value: format!("{:.2} %", ratio * 100.0),
                note: format!(
                    "{} goal ≤ 3 %; k = {k} of {n} px ({:.2} %); per tile: render {}, check {} (steady state, warm instance); per pixel: {:.1} µs in the tile, {:.1} µs re-rendered alone; {} tile(s) of the same 128×128 block",
                    if ratio <= 0.03 { "meets the" } else { "misses the" },
                    f64::from(k) / n as f64 * 100.0,
                    fmt_duration(per_tile(render_total)),
                    fmt_duration(per_tile(check_total)),
                    per_tile(render_total).as_secs_f64() * 1e6 / n as f64,
                    per_tile(check_total).as_secs_f64() * 1e6 / f64::from(k),
                    tiles.len()
                ),
            });
        }
    }
    Ok(rows)
}

/// Bytes of JSON text outside strings that are whitespace (the pretty
/// layout), so the compact size is known without re-serialising.
fn layout_bytes(json: &[u8]) -> usize {
    let (mut in_string, mut escaped, mut n) = (false, false, 0);
    for &b in json {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
        } else if b == b'"' {
            in_string = true;
        } else if b.is_ascii_whitespace() {
            n += 1;
        }
    }
    n
}

/// A signed manifest of frame 12 of a 24-frame 640×360 job in 64×64 tiles
/// (60 a frame), with `tiles` of them listed: realistic keys, commitments,
/// signatures and hashes (all real, over synthetic pixels).
fn manifest_bytes(tiles: u32) -> Result<Vec<u8>> {
    let (width, height, edge, spp) = (640u32, 360u32, 64u32, 64u32);
    let (cols, rows) = (width.div_ceil(edge), height.div_ceil(edge));
    let (fuel_per_tile, fuel_per_pixel_sample) = FarmJobSpec::default_fuel();
    let spec = FarmJobSpec {
        name: "turntable.glb".into(),
        module: hex(&blake3_like(1)),
        scene: hex(&blake3_like(2)),
        width,
        height,
        fps: 24.0,
        extra: RENDER_DEFAULTS.into(),
        spp,
        seed: 0,
        tile_size: edge,
        frames: (1..=24).collect(),
        priority: 0,
        view: "standard".into(),
        exposure: 0.0,
        fuel_per_tile,
        fuel_per_pixel_sample,
        formats: tessera_coordinator::farm::job::Format::all(),
        submitted_by: None,
        engine: Default::default(),
        denoise: false,
        progressive: false,
    };
    let coordinator = tls::Identity::generate("tessera")?;
    let signer = ManifestSigner::new(&coordinator.key_der, coordinator.cert_der.clone()).map_err(|e| anyhow!(e))?;
    let worker = tls::Identity::generate("worker")?;
    let wkey = SigningKey::from_pkcs8(&worker.key_der)?;
    let pk = wkey.public_key();
    let frame = 12;
    let slot = 11u32;
    let epoch = 494_123u64;
    let mut proofs = Vec::new();
    let mut inputs_data = Vec::new();
    for i in 0..tiles {
        let (tx, ty) = (i % cols, i / cols);
        let rect = Rect {
            x: tx * edge,
            y: ty * edge,
            width: edge.min(width - tx * edge),
            height: edge.min(height - ty * edge),
        };
        let index = slot * cols * rows + i;
        let n = rect.pixel_count() as usize;
        let accumulators = tessera_protocol::TileAccumulators {
            rect,
            color: (0..3 * n).map(|p| (p % 97) as f32 * 0.37 + i as f32).collect(),
            weight: vec![spp as f32; n],
            aovs: vec![],
        };
        let data = accumulators.to_bytes();
        let claim = TileClaim {
            job: 7,
            frame,
            tile: index,
            samples: SampleRange { start: 0, count: spp },
            module: ContentHash(blake3_like(1)),
            scene: ContentHash(blake3_like(2)),
        };
        let c = proof::commitment(&claim, &data);
        let k = proof::pixels_to_check(rect.pixel_count(), 0.10, 0.99);
        proofs.push(format!(
            r#"{{"worker":"{}","public_key":"{}","commitment":"{}","signature":"{}","sample_start":0,"sample_count":{spp},"signature_checked":true,"spot_check":{{"epoch":{epoch},"pixels":{k},"mismatch":null,"fuel":{}}}}}"#,
            manifest::identity_of_key(&pk),
            hex(&pk),
            hex(&c),
            hex(&wkey.sign(&c)),
            987_654_321u64 + u64::from(i) * 7919,
        ));
        let px = manifest::pixels_blake3(&manifest::tile_pixels(&accumulators));
        inputs_data.push((index, rect, ContentHash::of(&data).0, px, data));
    }
    let inputs: Vec<TileInput<'_>> = inputs_data
        .iter()
        .zip(&proofs)
        .map(|((index, rect, hash, px, data), proof)| TileInput {
            index: *index,
            rect: *rect,
            data,
            hash: *hash,
            proof: Some(proof.as_str()),
            pixels_blake3: px.clone(),
        })
        .collect();
    let stem = "turntable";
    let files: BTreeMap<String, ManifestFile> = [("png", 412_345u64), ("exr", 2_765_432u64)]
        .into_iter()
        .enumerate()
        .map(|(i, (ext, bytes))| {
            (
                ext.to_string(),
                ManifestFile {
                    name: format!("{stem}-{frame:04}.{ext}"),
                    blake3: hex(&blake3_like(50 + i as u64)),
                    bytes,
                },
            )
        })
        .collect();
    // Builds and signs (`ManifestSigner::build`, as `farm/writer.rs` does).
    let m = signer.build(7, &spec, frame, stem, files, &inputs, SampleRange { start: 0, count: spp });
    if m.tiles.iter().any(|t| t.commitment.is_empty() || t.checks.spot_check.is_none()) {
        return Err(anyhow!("the manifest builder did not read the tile proofs"));
    }
    Ok(m.to_file_bytes())
}

/// 32 pseudo-random bytes (stand-ins for hashes).
fn blake3_like(seed: u64) -> [u8; 32] {
    Rng(seed.wrapping_mul(0x2545_f491_4f6c_dd1d)).bytes32()
}

fn manifest_size() -> Result<Vec<Row>> {
    let full = manifest_bytes(60)?;
    let empty = manifest_bytes(0)?;
    let compact = full.len() - layout_bytes(&full);
    let compact_empty = empty.len() - layout_bytes(&empty);
    let per_tile = (full.len() - empty.len()) as f64 / 60.0;
    let per_tile_compact = (compact - compact_empty) as f64 / 60.0;
    let hd = (1920u32.div_ceil(64) * 1080u32.div_ceil(64)) as f64;
    Ok(vec![
        Row {
            name: "frame manifest, 640×360 frame, 60 tiles of 64×64".into(),
            value: format!("{:.1} KiB", full.len() as f64 / 1024.0),
            note: format!(
                "{} B as exported (`*.manifest.json`, pretty JSON), {} B compact; signed by the coordinator, certificate included",
                full.len(),
                compact
            ),
        },
        Row {
            name: "frame manifest, per tile".into(),
            value: format!("{per_tile:.0} B"),
            note: format!(
                "{per_tile_compact:.0} B compact; the rest of the manifest (job, files, certificate, signature) {} B; a 1920×1080 frame of 64×64 tiles ({hd:.0}) ≈ {:.0} KiB",
                empty.len(),
                (empty.len() as f64 + hd * per_tile) / 1024.0
            ),
        },
    ])
}

pub fn run(effort: Effort) -> Result<Vec<Row>> {
    eprintln!("proof: detection");
    let mut rows = detection(effort);
    eprintln!("proof: verification cost");
    rows.extend(verification(effort)?);
    eprintln!("proof: manifest size");
    rows.extend(manifest_size()?);
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measured_detection_follows_the_formula() {
        let k = proof::pixels_to_check(4096, 0.10, 0.99);
        let mut trial = Trial::new(TILE, k);
        let mut rng = Rng(1);
        let trials = 3000;
        let caught = (0..trials).filter(|_| trial.caught(&mut rng, 205)).count() as f64 / f64::from(trials);
        let formula = proof::detection_probability(4096, 205, u64::from(k));
        assert!((caught - formula).abs() < 4.0 * ci95(formula, f64::from(trials)), "{caught} vs {formula}");
    }

    #[test]
    fn layout_bytes_skips_strings() {
        assert_eq!(layout_bytes(b"{\n  \"a b\": \"\\\" x\"\n}\n"), 6);
    }

    #[test]
    fn detection_formatting_keeps_the_tail() {
        assert_eq!(fmt_detect(miss_log10(0.5, 2.0)), "0.7500");
        assert_eq!(fmt_detect(miss_log10(0.9, 1200.0)), "1 − 10^-1200");
    }
}
