//! Tessera's coordinator, the server side of a farm, and the `tessera`
//! command line over it.
//!
//! - [`farm`]: the coordinator at run time: QUIC endpoint, core loop over
//!   the [`scheduler`], verification, store writer, frame assembly and
//!   signed manifests;
//! - [`http`]: the HTTP routes (axum): the [`web`] page and the [`api`];
//! - [`local`]: rendering on this machine's cores through the worker's
//!   sandbox (`tessera render`).
//!
//! Its neighbours, each a crate of its own: the durable state
//! (`tessera-store`), frames and their files (`tessera-frame`), the formats
//! it shares with clients (`tessera-client`: API types, packing, the
//! manifest format) and the scheduler. See ARCHITECTURE.md's crate map.

pub mod api;
pub mod farm;
pub mod http;
pub mod local;
pub mod standby;
/// The scheduler, a crate of its own (`scheduler/`) so that it builds and
/// tests without the I/O around it; re-exported where it used to live.
pub use tessera_scheduler as scheduler;
pub mod web;
