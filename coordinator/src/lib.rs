//! Tessera's coordinator and the `tessera` command line.
//!
//! Today this crate holds the parts of the coordinator that exist so far:
//! frame assembly ([`assemble`]) and rendering on this machine's cores
//! through the worker's sandbox ([`local`]), which `tessera demo` uses. The
//! farm (QUIC endpoint, scheduler, store, HTTP API) joins it issue by issue;
//! see ARCHITECTURE.md.

pub mod assemble;
pub mod farm;
pub mod frames;
pub mod http;
pub mod local;
pub mod pack;
pub mod scheduler;
pub mod store;
