//! Types that cross a boundary between Tessera's processes: content hashes,
//! tile geometry, the canonical byte form of a tile's pixels, the farm's
//! wire messages ([`wire`]), tile commitments and signatures ([`proof`]),
//! the tolerance a GPU tile is judged by ([`gpu_check`]) and the config-file
//! format every binary reads ([`settings`]).
//!
//! **Invariant:** this crate does no I/O and reads no clock. Everything here is
//! a pure function of its inputs, so the coordinator, the worker and an
//! offline verifier compute the same bytes and the same hashes.

pub mod gpu_check;
mod hash;
pub mod proof;
pub mod settings;
mod tile;
pub mod wire;

pub use hash::{from_hex, hex, ContentHash};
pub use tile::{canonicalize_nans, resolve, AovPlane, Rect, SampleRange, TileAccumulators, TileShapeError};
