//! The GPU host (`tessera_worker::gpu`) on whatever adapter
//! `TESSERA_BENCH_GPU` names (default `llvmpipe`, Mesa's lavapipe, which is
//! what CI and this machine have):
//!
//! - **round trip**: write 4 KiB, dispatch one workgroup, read 4 KiB back:
//!   the fixed cost a guest pays per GPU step, thread hops included;
//! - **read-back**: 64 MiB from a storage buffer to the guest's side;
//! - **compute**: 2²⁰ invocations of a 256-step multiply-add loop, as
//!   invocations per second;
//! - **through the sandbox**: a 64×64 tile of the hostile guest's
//!   `gpu-tile` mode (buffer, dispatch, read-back through the `gpu`
//!   import) against the same guest's CPU tile, per tile.
//!
//! - **path tracer**: the same 64×64 tile of `turntable.glb` (frame 12 of
//!   384×216, 16 spp) through the sandbox with `engine: "gpu"` and
//!   `engine: "cpu"`, as paths (camera samples) per second. The GPU figure
//!   includes the read-back and the CPU-side sums; the frame's upload is
//!   done once, before timing, as a farm instance does it once per frame.

use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use tessera_worker::gpu::{Binding, Gpu, GpuConfig, GpuSelection};
use tessera_worker::sandbox::{JobSettings, JobSpec, Sandbox, SandboxConfig, TileRequest};

use crate::{fmt_duration, median_per_iter, Effort, Row};

const COPY: &str = r#"
@group(0) @binding(0) var<storage, read_write> a: array<u32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if (id.x < arrayLength(&a)) { a[id.x] = a[id.x] + 1u; }
}
"#;

const FMA: &str = r#"
@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    var x = f32(id.x) * 1e-6;
    for (var i = 0u; i < 256u; i = i + 1u) {
        x = x * 0.999 + 0.001;
    }
    out[id.x % 1024u] = x;
}
"#;

pub fn run(effort: Effort) -> Result<Vec<Row>> {
    let name = std::env::var("TESSERA_BENCH_GPU").unwrap_or_else(|_| "llvmpipe".into());
    let gpu = Gpu::open(GpuConfig { selection: GpuSelection::Named(name.clone()), ..GpuConfig::default() })
        .map_err(|e| anyhow!("{e}"))?
        .ok_or_else(|| anyhow!("no GPU adapter named like {name}"))?;
    let adapter = gpu.adapter().name.clone();
    let (rounds, iters) = if effort == Effort::Quick { (3, 5) } else { (7, 40) };
    let mut rows = Vec::new();

    let mut s = gpu.session();
    let small = s.create_buffer(4096).map_err(|e| anyhow!("{e}"))?;
    let data = vec![1u8; 4096];
    let round_trip = median_per_iter(rounds, iters, || {
        s.begin_tile();
        s.write_buffer(small, 0, &data).expect("write");
        s.dispatch(COPY, "main", &[Binding { binding: 0, buffer: small }], [16, 1, 1]).expect("dispatch");
        s.read_buffer(small, 0, 4096).expect("read");
    });
    rows.push(Row {
        name: "GPU round trip (write 4 KiB, dispatch, read 4 KiB)".into(),
        value: fmt_duration(round_trip),
        note: format!("{adapter}; median of {rounds}×{iters}"),
    });

    let big = s.create_buffer(64 << 20).map_err(|e| anyhow!("{e}"))?;
    let read = median_per_iter(rounds, 2, || {
        s.read_buffer(big, 0, 64 << 20).expect("read");
    });
    rows.push(Row {
        name: "GPU read-back, 64 MiB".into(),
        value: format!("{:.2} GB/s", (64 << 20) as f64 / read.as_secs_f64() / 1e9),
        note: format!("{adapter}; {} per read", fmt_duration(read)),
    });

    let out = s.create_buffer(4096).map_err(|e| anyhow!("{e}"))?;
    let compute = median_per_iter(rounds, 2, || {
        s.begin_tile();
        s.dispatch(FMA, "main", &[Binding { binding: 0, buffer: out }], [16384, 1, 1]).expect("dispatch");
    });
    rows.push(Row {
        name: "GPU compute, 2²⁰ invocations × 256 multiply-adds".into(),
        value: format!("{:.1} M invocations/s", (1u64 << 20) as f64 / compute.as_secs_f64() / 1e6),
        note: format!("{adapter}; {} per dispatch", fmt_duration(compute)),
    });

    // Through the sandbox: the `gpu` import's cost per tile.
    let wasm = tessera_guest_build::guest("hostile").map_err(|e| anyhow!("building the hostile guest: {e}"))?;
    let tile = |sandbox: &Sandbox, mode: &str| -> Result<Duration> {
        let module = sandbox.load(&wasm)?;
        let mut spec = JobSpec::new(Vec::new(), JobSettings { extra: mode.into(), ..JobSettings::new(64, 64) });
        spec.label = format!("bench {mode}");
        let mut inst = module.instantiate(&spec)?;
        let request = TileRequest::new(1, tessera_protocol::Rect { x: 0, y: 0, width: 64, height: 64 }, 0, 1, 1);
        inst.render_tile(&request)?;
        let started = Instant::now();
        let n = if effort == Effort::Quick { 5 } else { 50 };
        for _ in 0..n {
            inst.render_tile(&request)?;
        }
        Ok(started.elapsed() / n)
    };
    let with_gpu = Sandbox::new(SandboxConfig { gpu: Some(gpu.clone()), ..SandboxConfig::default() })?;
    let gpu_tile = tile(&with_gpu, "gpu-tile")?;
    let cpu_tile = tile(&Sandbox::new(SandboxConfig::default())?, "well-behaved")?;
    rows.push(Row {
        name: "64×64 tile through the `gpu` import".into(),
        value: fmt_duration(gpu_tile),
        note: format!("{adapter}; the same guest's CPU tile: {}", fmt_duration(cpu_tile)),
    });

    // The path tracer, GPU engine against CPU engine, on one tile.
    let wasm = tessera_guest_build::guest("pathtracer").map_err(|e| anyhow!("building the path tracer: {e}"))?;
    let scene =
        std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/scenes/turntable.glb"))?;
    let (size, spp) = if effort == Effort::Quick { (32u32, 4u32) } else { (64, 16) };
    let paths = f64::from(size * size * spp);
    let trace = |sandbox: &Sandbox, engine: &str| -> Result<Duration> {
        let module = sandbox.load(&wasm)?;
        let settings = JobSettings { extra: format!(r#"{{"engine": "{engine}"}}"#), ..JobSettings::new(384, 216) };
        let mut spec = JobSpec::new(scene.clone(), settings);
        spec.label = format!("bench pathtracer {engine}");
        let mut inst = module.instantiate(&spec)?;
        let rect = tessera_protocol::Rect { x: 192 - size / 2, y: 108 - size / 2, width: size, height: size };
        let request = TileRequest::new(12, rect, 0, spp, 1);
        inst.render_tile(&request)?; // prepares the frame (and uploads it)
        let mut failed = None;
        let t = median_per_iter(rounds, 1, || {
            if let Err(e) = inst.render_tile(&request) {
                failed = Some(e);
            }
        });
        match failed {
            Some(e) => Err(anyhow!("{engine} tile: {e}")),
            None => Ok(t),
        }
    };
    let on_gpu = trace(&with_gpu, "gpu")?;
    let on_cpu = trace(&Sandbox::new(SandboxConfig::default())?, "cpu")?;
    let tile_note = format!("turntable.glb frame 12, {size}×{size} px × {spp} spp tile through the sandbox");
    rows.push(Row {
        name: format!("path tracer paths/s, GPU ({adapter})"),
        value: format!("{:.0} paths/s", paths / on_gpu.as_secs_f64()),
        note: format!(
            "{tile_note}; {} per tile, {:.2}× the CPU",
            fmt_duration(on_gpu),
            on_cpu.as_secs_f64() / on_gpu.as_secs_f64()
        ),
    });
    rows.push(Row {
        name: "path tracer paths/s, CPU wasm (one thread)".into(),
        value: format!("{:.0} paths/s", paths / on_cpu.as_secs_f64()),
        note: format!("{tile_note}; {} per tile", fmt_duration(on_cpu)),
    });
    Ok(rows)
}
