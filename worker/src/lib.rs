//! Tessera's worker: runs render jobs' WebAssembly in a sandbox.
//!
//! - [`sandbox`]: the wasmtime host that runs a job's guest;
//! - [`client`]: the farm client (QUIC, join, pushed tiles, slots) that the
//!   `tessera-worker` binary runs;
//! - [`blobs`]: the disk cache of scenes and modules, checked by hash;
//! - [`net`]: TLS with pinned certificates and framed messages, shared with
//!   the coordinator;
//! - [`gpu`]: the GPU host (wgpu on its own thread): storage buffers and
//!   validated WGSL compute dispatches under budgets.
//!
//! The coordinator depends on this crate too, to re-render pixels when it
//! checks a worker's result.

pub mod blobs;
pub mod client;
pub mod gpu;
pub mod net;
pub mod sandbox;
pub mod settings;
