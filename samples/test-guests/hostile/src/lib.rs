//! A guest that misbehaves on request, so the sandbox's tests can check that
//! each kind of misbehaviour is stopped with a clear error.
//!
//! The job's `extra` setting names the behaviour of `render-tile`:
//! `loop`, `load-loop` (in `load-scene`), `grow` (allocate without end),
//! `recurse`, `recurse-shadow`, `panic`, `trap`
//! (`unreachable`), `big-output` (more floats than the tile has pixels),
//! `huge-output` (a result bigger than the host's output limit), `nan`
//! (NaN accumulators with odd payloads), `log-flood`, the GPU modes
//! (`gpu-tile`: a correct tile computed on the GPU, `gpu-invalid-shader`,
//! `gpu-oob`, `gpu-huge-dispatch`, `gpu-over-budget`; each reports the
//! host's GPU error as a job error), or anything else for a well-behaved
//! flat grey tile.

use tessera_guest_sdk::gpu::{self, Buffer, GpuError};
use tessera_guest_sdk::{export_job, log, Job, JobError, JobSettings, Level, SceneInfo, TileRequest, TileResult};

pub struct Hostile {
    mode: String,
    hoard: Vec<Vec<u8>>,
}

impl Job for Hostile {
    fn load(_scene: &[u8], settings: &JobSettings) -> Result<(Self, SceneInfo), JobError> {
        let mode = settings.extra.trim().trim_matches('"').to_string();
        if mode == "load-loop" {
            spin();
        }
        Ok((Hostile { mode, hoard: Vec::new() }, SceneInfo::default()))
    }

    fn render_tile(&mut self, req: &TileRequest) -> Result<TileResult, JobError> {
        let mut out = TileResult::for_request(req);
        match self.mode.as_str() {
            "loop" => spin(),
            "grow" => loop {
                self.hoard.push(vec![1u8; 1 << 20]);
            },
            "recurse" => {
                let depth = recurse(std::hint::black_box(1));
                out.color[0] = depth as f32;
            }
            "recurse-shadow" => {
                let depth = recurse_shadow(std::hint::black_box(1));
                out.color[0] = depth as f32;
            }
            "panic" => panic!("the hostile guest panics on purpose"),
            "trap" => trap(),
            "big-output" => out.color.extend(std::iter::repeat_n(0.5, 4096)),
            "huge-output" => out.aovs.push(tessera_guest_sdk::AovPlane {
                name: "huge".into(),
                channels: 4,
                data: vec![1.0; 8 << 20],
            }),
            "nan" => {
                for (i, c) in out.color.iter_mut().enumerate() {
                    *c = f32::from_bits(0x7fc0_0000 | (i as u32 & 0xff) | (0x8000_0000 * (i as u32 & 1)));
                }
                out.weight.iter_mut().for_each(|w| *w = 1.0);
            }
            mode if mode.starts_with("gpu-") => gpu_tile(mode, req, &mut out)?,
            "log-flood" => {
                for i in 0..2000 {
                    log(Level::Info, &format!("line {i} {}", "x".repeat(1000)));
                }
            }
            _ => {
                for i in 0..out.weight.len() {
                    out.add_sample(i, [0.5, 0.5, 0.5], req.samples.count as f32);
                }
            }
        }
        Ok(out)
    }
}

#[inline(never)]
fn spin() -> ! {
    let mut x = 0u64;
    loop {
        x = std::hint::black_box(x.wrapping_add(1));
    }
}

fn trap() -> ! {
    #[cfg(target_arch = "wasm32")]
    core::arch::wasm32::unreachable();
    #[cfg(not(target_arch = "wasm32"))]
    std::process::abort();
}

/// Recursion on the wasm call stack only (no frame in linear memory).
#[inline(never)]
#[allow(unconditional_recursion)]
fn recurse(n: u64) -> u64 {
    std::hint::black_box(recurse(std::hint::black_box(n + 1))) ^ n
}

/// Recursion whose frames also live on the shadow stack in linear memory.
#[inline(never)]
#[allow(unconditional_recursion)]
fn recurse_shadow(n: u64) -> u64 {
    let pad = [n; 16];
    let pad = std::hint::black_box(&pad);
    recurse_shadow(std::hint::black_box(n + 1)) + pad[n as usize % 16]
}

export_job!(Hostile);

/// Grey by pixel index, computed by a shader: `value[i] = (i % 7) / 8`.
const GREY: &str = r#"
@group(0) @binding(0) var<storage, read_write> value: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if (id.x < arrayLength(&value)) {
        value[id.x] = f32(id.x % 7u) / 8.0;
    }
}
"#;

fn gpu_failed(what: &str, e: GpuError) -> JobError {
    JobError::Failed(format!("{what}: {}", gpu::describe(&e)))
}

fn gpu_tile(mode: &str, req: &TileRequest, out: &mut TileResult) -> Result<(), JobError> {
    let n = out.weight.len() as u64;
    match mode {
        "gpu-tile" => {
            let values = Buffer::new(4 * n).map_err(|e| gpu_failed("create-buffer", e))?;
            gpu::dispatch(GREY, "main", &[values.bind(0)], [n.div_ceil(64) as u32, 1, 1])
                .map_err(|e| gpu_failed("dispatch", e))?;
            let bytes = values.read(0, 4 * n).map_err(|e| gpu_failed("read-buffer", e))?;
            for (i, c) in bytes.chunks_exact(4).enumerate() {
                let v = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                out.add_sample(i, [v, v, v], req.samples.count as f32);
            }
            if let Some(a) = gpu::adapter() {
                log(Level::Info, &format!("rendered on {}", a.name));
            }
            Ok(())
        }
        "gpu-invalid-shader" => {
            gpu::dispatch("fn main( {", "main", &[], [1, 1, 1]).map_err(|e| gpu_failed("dispatch", e))
        }
        "gpu-oob" => {
            let small = Buffer::new(16).map_err(|e| gpu_failed("create-buffer", e))?;
            let shader = "@group(0) @binding(0) var<storage, read_write> a: array<u32>;\n\
                          @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) id: vec3<u32>) { a[id.x * 1000000u] = 7u; }";
            gpu::dispatch(shader, "main", &[small.bind(0)], [64, 1, 1]).map_err(|e| gpu_failed("dispatch", e))?;
            // Bounds checks kept the writes inside `small`: fill the tile as usual.
            for i in 0..out.weight.len() {
                out.add_sample(i, [0.5, 0.5, 0.5], req.samples.count as f32);
            }
            Ok(())
        }
        "gpu-huge-dispatch" => {
            let values = Buffer::new(4 * n).map_err(|e| gpu_failed("create-buffer", e))?;
            gpu::dispatch(GREY, "main", &[values.bind(0)], [65535, 65535, 65535]).map_err(|e| gpu_failed("dispatch", e))
        }
        "gpu-over-budget" => Buffer::new(1 << 40).map(|_| ()).map_err(|e| gpu_failed("create-buffer", e)),
        other => Err(JobError::InvalidSettings(format!("unknown GPU mode {other}"))),
    }
}
