//! Types that cross a boundary between Tessera's processes: content hashes,
//! tile geometry, the canonical byte form of a tile's pixels, and the farm's
//! wire messages ([`wire`]).
//!
//! **Invariant:** this crate does no I/O and reads no clock. Everything here is
//! a pure function of its inputs, so the coordinator, the worker and an
//! offline verifier compute the same bytes and the same hashes.

mod hash;
pub mod proof;
mod tile;
pub mod wire;

pub use hash::ContentHash;
pub use tile::{canonicalize_nans, AovPlane, Rect, SampleRange, TileAccumulators, TileShapeError};
