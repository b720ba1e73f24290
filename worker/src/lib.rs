//! Tessera's worker: runs render jobs' WebAssembly in a sandbox.
//!
//! For now this crate is the sandbox library ([`sandbox`]); the QUIC client,
//! the GPU host and the blob cache join it as the farm is built. The
//! coordinator depends on this crate too, to re-render pixels when it checks
//! a worker's result.

pub mod sandbox;
