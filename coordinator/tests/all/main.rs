//! The coordinator's integration tests, on real guests built from source.

mod cli;
mod local;
mod render;
mod sim;
mod store;

use std::sync::Arc;

/// The component bytes of a guest crate, built from source on first use.
pub fn guest(name: &str) -> Arc<Vec<u8>> {
    tessera_guest_build::guest(name).unwrap_or_else(|e| panic!("building guest {name}: {e}"))
}
