//! The sandbox's integration tests: real components built from the guest
//! crates in `samples/`, run by the real engine.

mod cache;
mod contract;
mod determinism;
mod gpu;
mod gpu_pathtracer;
mod hostile;

use std::sync::Arc;
use std::time::Duration;

use tessera_worker::sandbox::*;

/// The component bytes of a guest crate, built from source on first use.
pub fn guest(name: &str) -> Arc<Vec<u8>> {
    tessera_guest_build::guest(name).unwrap_or_else(|e| panic!("building guest {name}: {e}"))
}

/// A sandbox with small, fast-to-hit limits.
pub fn sandbox(limits: Limits) -> Sandbox {
    Sandbox::new(SandboxConfig { limits, ..SandboxConfig::default() }).expect("sandbox")
}

pub fn test_limits() -> Limits {
    Limits {
        max_memory_bytes: 64 << 20,
        tile_timeout: Duration::from_secs(20),
        load_timeout: Duration::from_secs(20),
        ..Limits::default()
    }
}

pub fn rect(x: u32, y: u32, width: u32, height: u32) -> Rect {
    Rect { x, y, width, height }
}

/// A job for the hostile guest with behaviour `mode` and a small fuel budget.
pub fn hostile_spec(mode: &str) -> JobSpec {
    let mut spec = JobSpec::new(Vec::new(), JobSettings { extra: mode.to_string(), ..JobSettings::new(16, 16) });
    spec.fuel = FuelBudget {
        load: 2_000_000_000,
        prepare_frame: 1_000_000_000,
        per_tile: 1_000_000_000,
        per_pixel_sample: 1_000_000,
    };
    spec.label = format!("hostile {mode}");
    spec
}

/// Renders a well-behaved tile with a fresh instance of the hostile guest,
/// proving the sandbox still serves after whatever happened before.
pub fn still_serves(sandbox: &Sandbox) {
    let module = sandbox.load(&guest("hostile")).expect("load");
    let mut inst = module.instantiate(&hostile_spec("well-behaved")).expect("instantiate");
    let out = inst.render_tile(&TileRequest::new(1, rect(0, 0, 4, 4), 0, 2, 1)).expect("a good tile");
    assert_eq!(out.accumulators.weight, vec![2.0; 16]);
}
