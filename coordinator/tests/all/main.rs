//! The coordinator's integration tests, on real guests built from source.

mod api;
mod blender;
mod browser;
mod cli;
mod client_cli;
mod denoise;
mod farm;
mod farm_gpu;
mod farm_kill;
mod farm_wire;
mod faults;
mod fidelity;
mod hostile;
mod local;
mod manifest;
mod postgres;
mod progressive;
mod render;
mod web;

use std::sync::Arc;

/// The component bytes of a guest crate, built from source on first use.
pub fn guest(name: &str) -> Arc<Vec<u8>> {
    tessera_guest_build::guest(name).unwrap_or_else(|e| panic!("building guest {name}: {e}"))
}

/// Held by tests that keep every core busy for long (Cycles renders) and by
/// those whose lavapipe dispatches have the GPU host's 20 s watchdog: side
/// by side on CI's two cores, the watchdog fired and the GPU tests failed
/// with "device lost". Other tests still run beside either.
pub fn cpu_heavy() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Logs to the test's captured output, filtered by `RUST_LOG` (default: warnings).
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn,quinn=error".into()),
        )
        .with_test_writer()
        .try_init();
}

/// The sample turntable as `.gltf` JSON naming an external `turntable.bin`,
/// and that file: what Blender's "glTF Separate" export gives.
pub fn turntable_separate() -> (Vec<u8>, Vec<u8>) {
    let glb = std::fs::read(farm::scenes().join("turntable.glb")).unwrap();
    let u32_at = |at: usize| u32::from_le_bytes(glb[at..at + 4].try_into().unwrap()) as usize;
    let json_len = u32_at(12);
    let mut doc: serde_json::Value = serde_json::from_slice(&glb[20..20 + json_len]).unwrap();
    let bin_at = 20 + json_len;
    let bin = glb[bin_at + 8..bin_at + 8 + u32_at(bin_at)].to_vec();
    doc["buffers"][0]["uri"] = serde_json::json!("turntable.bin");
    (serde_json::to_vec(&doc).unwrap(), bin)
}
