use std::path::PathBuf;
use std::time::Duration;

/// How the sandbox is set up. One per [`Sandbox`](super::Sandbox).
#[derive(Clone, Debug)]
pub struct SandboxConfig {
    pub limits: Limits,
    pub determinism: Determinism,
    /// Where compiled modules are kept between runs. `None` keeps them in
    /// memory only. Whoever can write this directory can run native code as
    /// this process: it must be private to the worker.
    pub cache_dir: Option<PathBuf>,
    /// Also enforce the epoch (wall-clock) deadline. On by default as the
    /// backstop behind fuel; the benchmark turns it off to measure its cost.
    pub epoch_backstop: bool,
    /// Count fuel. On by default: fuel is what makes a runaway guest fail the
    /// same way on every machine.
    pub fuel: bool,
    /// The GPU guests may use through the `gpu` import; `None` (the
    /// default) answers `unavailable` to every call.
    pub gpu: Option<crate::gpu::Gpu>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            limits: Limits::default(),
            determinism: Determinism::Default,
            cache_dir: None,
            epoch_backstop: true,
            fuel: true,
            gpu: None,
        }
    }
}

/// How hard the engine works to make float results host-independent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Determinism {
    /// IEEE arithmetic is exact in wasm; only NaN payloads vary, and the host
    /// canonicalises those in the output. Same `.wasm` → same output bytes.
    #[default]
    Default,
    /// Also canonicalise every NaN the guest produces internally (wasmtime's
    /// `cranelift_nan_canonicalization`). Only needed for guests that inspect
    /// NaN bits; measured several times slower.
    StrictNan,
}

/// Every bound the sandbox puts on a guest.
///
/// Breaking any of them fails the call with a [`SandboxError`](super::SandboxError)
/// naming the limit, and the instance is discarded. Host-side allocations
/// (the lifted tile result) are bounded indirectly: they cannot exceed the
/// guest's linear memory.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest component accepted, in bytes. Default 64 MiB.
    pub max_module_bytes: usize,
    /// Longest a compilation may take before the load fails. Default 60 s.
    /// Cranelift cannot be interrupted: a timed-out compile finishes on its
    /// own thread and is discarded.
    pub compile_timeout: Duration,
    /// Linear memory per instance (all memories together). Default 1 GiB.
    pub max_memory_bytes: usize,
    /// Table elements per table. Default 100 000.
    pub max_table_elements: usize,
    /// Core instances, tables and memories per store: a component of ours
    /// needs a handful. Default 32 / 32 / 4.
    pub max_instances: usize,
    pub max_tables: usize,
    pub max_memories: usize,
    /// Native stack for wasm frames. Default 1 MiB; calls must run on a
    /// thread with a larger stack than this (Rust's default 2 MiB is fine).
    pub max_wasm_stack: usize,
    /// Largest tile result (all planes) in bytes. Default 256 MiB.
    pub max_output_bytes: usize,
    /// Wall-clock backstop for `load-scene` and `prepare-frame`. Default 120 s.
    pub load_timeout: Duration,
    /// Wall-clock backstop per tile, behind the fuel budget. Default 300 s.
    pub tile_timeout: Duration,
    /// Log lines kept per call; more are counted and dropped. Default 256.
    pub max_log_lines_per_call: usize,
    /// Longest log line; longer ones are cut. Default 4 KiB.
    pub max_log_line_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_module_bytes: 64 << 20,
            compile_timeout: Duration::from_secs(60),
            max_memory_bytes: 1 << 30,
            max_table_elements: 100_000,
            max_instances: 32,
            max_tables: 32,
            max_memories: 4,
            max_wasm_stack: 1 << 20,
            max_output_bytes: 256 << 20,
            load_timeout: Duration::from_secs(120),
            tile_timeout: Duration::from_secs(300),
            max_log_lines_per_call: 256,
            max_log_line_bytes: 4096,
        }
    }
}

/// The deterministic CPU budget of a job, in wasmtime fuel (about one unit
/// per wasm instruction).
///
/// A tile gets `per_tile + per_pixel_sample × pixels × samples`. Because fuel
/// is counted, not timed, the same calls on a fresh instance use the same
/// fuel on every machine, so "this tile is too expensive" is a verdict about
/// the job, not about the worker's CPU. (A reused instance's cost can differ
/// by a few units with its allocator's state, so budgets are meant to be far
/// above real costs: running out means a runaway guest.) The defaults are
/// generous (a path tracer sample costs 10⁴–10⁶ units); a job can tighten them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FuelBudget {
    /// For `load-scene` (parsing, BVH build). Default 2·10¹¹.
    pub load: u64,
    /// For each `prepare-frame`. Default 10¹¹.
    pub prepare_frame: u64,
    /// Fixed part of each tile's budget. Default 10⁹.
    pub per_tile: u64,
    /// Per pixel-sample part of each tile's budget. Default 5·10⁶.
    pub per_pixel_sample: u64,
}

impl Default for FuelBudget {
    fn default() -> Self {
        FuelBudget {
            load: 200_000_000_000,
            prepare_frame: 100_000_000_000,
            per_tile: 1_000_000_000,
            per_pixel_sample: 5_000_000,
        }
    }
}

impl FuelBudget {
    /// The budget of a tile of `pixels` pixels and `samples` samples each.
    pub fn for_tile(&self, pixels: u64, samples: u32) -> u64 {
        self.per_tile.saturating_add(self.per_pixel_sample.saturating_mul(pixels).saturating_mul(u64::from(samples)))
    }
}
