//! Tessera's coordinator and the `tessera` command line.
//!
//! - [`farm`]: the coordinator at run time: QUIC endpoint, core loop over
//!   the [`scheduler`], store writer and frame assembly;
//! - [`http`]: the HTTP routes (axum): the [`web`] page and the [`api`];
//! - [`local`]: rendering on this machine's cores through the worker's
//!   sandbox (`tessera render`);
//! - [`manifest`]: signed frame manifests (proof-of-render, offline checks).
//!
//! See ARCHITECTURE.md for how they fit.

pub mod api;
pub mod farm;
pub mod http;
pub mod local;
pub mod manifest;
/// The scheduler, a crate of its own (`scheduler/`) so that it builds and
/// tests without the I/O around it; re-exported where it used to live.
pub use tessera_scheduler as scheduler;
pub mod web;
