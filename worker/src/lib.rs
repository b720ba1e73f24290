//! Tessera's worker: runs render jobs' WebAssembly in a sandbox.
//!
//! - [`sandbox`]: the wasmtime host that runs a job's guest;
//! - [`client`]: the farm client (QUIC, join, pushed tiles, slots) that the
//!   `tessera-worker` binary runs;
//! - [`blobs`]: the disk cache of scenes and modules, checked by hash;
//! - [`net`]: TLS with pinned certificates and framed messages, shared with
//!   the coordinator.
//!
//! The GPU host joins with issue 8. The
//! coordinator depends on this crate too, to re-render pixels when it checks
//! a worker's result.

pub mod blobs;
pub mod client;
pub mod net;
pub mod sandbox;
pub mod settings;
