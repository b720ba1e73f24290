//! Sandbox costs: compile (cold, memory cache, disk cache), instantiate,
//! per-call overhead, and a compute-heavy float guest (`samples/spheres`)
//! against the same code compiled natively, under each engine
//! configuration: plain, fuel, epoch, fuel+epoch (the default) and
//! strict-NaN.

use std::time::Duration;

use anyhow::Result;
use tessera_guest_sdk::{
    AovSet, Job, JobSettings as SdkSettings, Rect as SdkRect, SampleRange as SdkRange, TileRequest as SdkRequest,
};
use tessera_worker::sandbox::*;

use crate::{fmt_duration, median_per_iter, Effort, Row};

const TILE: u32 = 64;

pub fn run(effort: Effort) -> Result<Vec<Row>> {
    let wasm = tessera_guest_build::guest("spheres")?;
    let tiny = tessera_guest_build::guest("gradient")?;
    let (rounds, spp) = match effort {
        Effort::Quick => (1, 1),
        Effort::Full => (11, 32),
    };
    let mut rows = Vec::new();

    // Compilation.
    let cold = median_per_iter(rounds.min(3), 1, || {
        let s = Sandbox::new(SandboxConfig::default()).expect("sandbox");
        s.load(&wasm).expect("load");
    });
    rows.push(row(
        "compile spheres.wasm, cold",
        fmt_duration(cold),
        format!("{} KiB component, Cranelift, all cores", wasm.len() / 1024),
    ));
    let s = Sandbox::new(SandboxConfig::default())?;
    s.load(&wasm)?;
    let mem = median_per_iter(rounds, 20, || {
        s.load(&wasm).expect("load");
    });
    rows.push(row(
        "load, in-memory cache hit",
        fmt_duration(mem),
        "blake3 of the bytes + contract check + instance-pre".into(),
    ));
    let dir = tempfile::tempdir()?;
    let cached = SandboxConfig { cache_dir: Some(dir.path().to_path_buf()), ..SandboxConfig::default() };
    Sandbox::new(cached.clone())?.load(&wasm)?;
    let disk = median_per_iter(rounds, 5, || {
        let s = Sandbox::new(cached.clone()).expect("sandbox");
        let (_, outcome) = s.load_with_outcome(&wasm).expect("load");
        assert_eq!(outcome, CacheOutcome::Disk);
    });
    rows.push(row(
        "load, disk cache hit (new process)",
        fmt_duration(disk),
        format!("{:.0}× faster than cold", ratio(cold, disk)),
    ));

    // Instantiation and call overhead, on the tiny guest.
    let module = s.load(&tiny)?;
    let spec = JobSpec::new(Vec::new(), JobSettings::new(64, 64));
    let inst_time = median_per_iter(rounds, 100, || {
        module.instantiate(&spec).expect("instantiate");
    });
    rows.push(row(
        "instantiate + load-scene (gradient)",
        fmt_duration(inst_time),
        "once per (job, worker slot)".into(),
    ));
    let mut inst = module.instantiate(&spec)?;
    let empty = TileRequest::new(1, Rect { x: 0, y: 0, width: 1, height: 1 }, 0, 0, 1);
    let call = median_per_iter(rounds, 5000, || {
        inst.render_tile(&empty).expect("call");
    });
    rows.push(row(
        "render-tile call overhead (1 px, 0 samples)",
        fmt_duration(call),
        "fuel + epoch set, lift/lower, shape check".into(),
    ));

    // The compute-heavy guest: native vs each engine configuration.
    let pixels = f64::from(TILE * TILE);
    let native = {
        let settings = SdkSettings { width: 256, height: 256, fps: 24.0, extra: "{}".into() };
        let (mut job, _) = spheres::Spheres::load(&[], &settings).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        job.prepare_frame(1).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let req = SdkRequest {
            frame: 1,
            rect: SdkRect { x: 96, y: 96, width: TILE, height: TILE },
            samples: SdkRange { start: 0, count: spp },
            seed: 1,
            aovs: AovSet::empty(),
        };
        median_per_iter(rounds, 1, || {
            std::hint::black_box(job.render_tile(&req).expect("native tile"));
        })
    };
    rows.push(row(
        &format!("spheres {TILE}×{TILE} px × {spp} spp, native"),
        fmt_duration(native),
        format!("{:.2} Msamples/s, 1 thread", pixels * f64::from(spp) / native.as_secs_f64() / 1e6),
    ));
    let configs = [
        ("plain (no fuel, no epoch)", false, false, Determinism::Default),
        ("fuel", true, false, Determinism::Default),
        ("epoch", false, true, Determinism::Default),
        ("fuel + epoch (default)", true, true, Determinism::Default),
        ("strict-NaN + fuel + epoch", true, true, Determinism::StrictNan),
    ];
    for (name, fuel, epoch, determinism) in configs {
        let config = SandboxConfig { fuel, epoch_backstop: epoch, determinism, ..SandboxConfig::default() };
        let s = Sandbox::new(config)?;
        let module = s.load(&wasm)?;
        let mut inst = module.instantiate(&JobSpec::new(Vec::new(), JobSettings::new(256, 256)))?;
        let req = TileRequest::new(1, Rect { x: 96, y: 96, width: TILE, height: TILE }, 0, spp, 1);
        inst.render_tile(&req)?; // warm up
        let t = median_per_iter(rounds, 1, || {
            std::hint::black_box(inst.render_tile(&req).expect("wasm tile"));
        });
        rows.push(row(&format!("spheres wasm, {name}"), fmt_duration(t), format!("{:.2}× native", ratio(t, native))));
    }
    Ok(rows)
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-12)
}

fn row(name: &str, value: String, note: String) -> Row {
    Row { name: name.to_string(), value, note }
}
