//! The wasm sandbox: compiles render-job components and runs their tiles
//! under explicit limits.
//!
//! # Core concepts
//!
//! - [`Sandbox`]: one per process. Owns the wasmtime `Engine` (configured for
//!   determinism), the compiled-module cache and the epoch ticker thread.
//! - [`GuestModule`]: a validated, compiled component that implements a
//!   compatible version of the `tessera:render` contract. Cheap to clone.
//! - [`JobInstance`]: one instance of a module with a loaded scene, made once
//!   per (job, worker slot) and reused for every tile that slot renders.
//!
//! ```no_run
//! # use tessera_worker::sandbox::*;
//! # fn main() -> Result<(), SandboxError> {
//! # let wasm: Vec<u8> = vec![];
//! let sandbox = Sandbox::new(SandboxConfig::default())?;
//! let module = sandbox.load(&wasm)?;
//! let job = JobSpec::new(b"scene bytes".to_vec(), JobSettings::new(640, 360));
//! let mut instance = module.instantiate(&job)?;
//! let tile = instance.render_tile(&TileRequest::new(1, Rect { x: 0, y: 0, width: 64, height: 64 }, 0, 16, 7))?;
//! println!("{} floats, {} fuel", tile.accumulators.color.len(), tile.fuel_used);
//! # Ok(()) }
//! ```
//!
//! # Limits
//!
//! Every resource a guest can consume is bounded; see [`Limits`] for each
//! default and what exceeding it does. Breaking a limit fails the call with a
//! [`SandboxError`] and poisons the instance (wasm state after a trap is not
//! trusted), never the process.
//!
//! # Determinism
//!
//! The engine runs with relaxed SIMD and threads off, and the world imports
//! nothing nondeterministic. NaN bit patterns are the one thing that varies
//! between hosts, so the host rewrites every NaN in a tile's output to the
//! canonical NaN before anyone hashes it. [`Determinism::StrictNan`] also
//! canonicalises NaNs inside the guest (wasmtime's option); it is off by
//! default because it costs several times the run time (see BENCHMARKS.md).

mod bindings;
mod cache;
mod config;
mod contract;
mod error;
mod host;
mod instance;
mod module;
mod version;

pub use cache::CacheOutcome;
pub use config::{Determinism, FuelBudget, Limits, SandboxConfig};
pub use contract::HOST_CONTRACT;
pub use error::{GuestJobError, LimitKind, SandboxError};
pub use host::{GuestLog, LogLevel};
pub use instance::{JobInstance, JobSettings, JobSpec, SceneInfo, TileOutput, TileRequest};
pub use module::{GuestModule, Sandbox};
pub use tessera_protocol::{Rect, SampleRange};
pub use version::ContractVersion;
