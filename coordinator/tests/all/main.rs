//! The coordinator's integration tests, on real guests built from source.

mod api;
mod blender;
mod browser;
mod cli;
mod client_cli;
mod farm;
mod farm_kill;
mod farm_wire;
mod local;
mod manifest;
mod render;
mod sim;
mod store;
mod web;

use std::sync::Arc;

/// The component bytes of a guest crate, built from source on first use.
pub fn guest(name: &str) -> Arc<Vec<u8>> {
    tessera_guest_build::guest(name).unwrap_or_else(|e| panic!("building guest {name}: {e}"))
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
