//! Tessera's coordinator and the `tessera` command line.
//!
//! - [`farm`]: the coordinator at run time: QUIC endpoint, core loop over
//!   the [`scheduler`], store writer and frame assembly;
//! - [`store`]: SQLite and content-addressed blobs, behind one module;
//! - [`http`]: the HTTP routes (axum): the [`web`] page and the [`api`];
//! - [`assemble`]: tiles into frames, EXR and PNG output;
//! - [`local`]: rendering on this machine's cores through the worker's
//!   sandbox (`tessera render`);
//! - [`frames`], [`pack`]: frame lists and `.gltf` packing;
//! - [`manifest`]: signed frame manifests (proof-of-render, offline checks).
//!
//! See ARCHITECTURE.md for how they fit.

pub mod api;
pub mod assemble;
pub mod farm;
pub mod frames;
pub mod http;
pub mod local;
pub mod manifest;
pub mod pack;
/// The scheduler, a crate of its own (`scheduler/`) so that it builds and
/// tests without the I/O around it; re-exported where it used to live.
pub use tessera_scheduler as scheduler;
pub mod store;
pub mod web;
