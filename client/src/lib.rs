//! The client side of a Tessera farm, as a library: what a studio's own
//! tool needs to drive a farm and check what it sends back, without the
//! coordinator, SQLite, axum or (by default) wasmtime.
//!
//! - [`model`]: the HTTP API's JSON types (the server serialises the same
//!   types, and with the `openapi` feature they describe themselves);
//! - [`http`]: a blocking API client; [`conn`]: where the farm is and the
//!   token (flags, environment, `client.conf`);
//! - [`pack`]: a `.gltf` and its files packed into one self-contained scene,
//!   as the farm stores it; [`frames`]: frame lists (`"1-48"`);
//! - [`manifest`]: the signed frame manifest's format and its signature and
//!   tile checks; [`verify`]: a downloaded frame checked offline against its
//!   manifest (`tessera verify`), with the `recheck` feature also by
//!   re-rendering pixels in the wasm sandbox;
//! - `cli` (the `cli` feature): the `tessera` binary's client commands.
//!
//! The coordinator depends on this crate for the formats both sides must
//! agree on (API JSON, manifests, packing); nothing here depends on the
//! coordinator.

#[cfg(feature = "cli")]
pub mod cli;
pub mod conn;
pub mod frames;
pub mod http;
pub mod manifest;
pub mod model;
pub mod pack;
pub mod verify;

/// Server text made safe for one line of a terminal: control characters
/// (escape sequences, newlines) become `?`.
pub fn clean(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}
