//! Adaptive replication (BOINC): a result from a worker that has not yet
//! earned trust waits for a second, independent opinion before it counts.
//!
//! - The connection decides from the worker's standing: below the trust
//!   threshold every tile is replicated; above it, a tile is replicated
//!   with probability `max(1 / consecutive valid results, 2 %)`.
//! - The core keeps the first result ([`Pending`]) and asks the scheduler
//!   (`Event::Replicate`) to give the tile to a worker that has not rendered
//!   it; "independent" means another identity and, unless turned off for
//!   a farm on one machine, another IP address.
//! - Equal canonical bytes: the tile counts, both workers are credited.
//!   Different bytes: the coordinator renders the tile itself and settles
//!   it; whoever differs from its render gets a failed check.
//! - Nobody independent within [`Replication::wait`]: the coordinator
//!   renders the second opinion itself, so a farm with one new worker
//!   still finishes its jobs (at the cost of coordinator CPU).
//!
//! Each result was already spot-checked on arrival; replication adds a
//! whole-tile comparison, which catches what sampling can miss (a few
//! faked pixels) as long as the two workers do not collude.

use std::sync::Arc;
use std::time::Duration;

use tessera_protocol::wire::TileResult;
use tokio::sync::mpsc;

use super::msg::{ConnCmd, Replica};
use super::verify::{TileProof, Verifier};
use crate::scheduler::WorkerId;

/// How results are replicated.
#[derive(Clone)]
pub struct Replication {
    pub enabled: bool,
    /// Two workers at one IP address are not independent (off for a farm
    /// whose workers share a machine, such as `tessera demo`).
    pub independent_addresses: bool,
    /// How long a tile waits for an independent worker before the
    /// coordinator renders the second opinion itself.
    pub wait: Duration,
    /// Renders the coordinator's own opinions (`None`: spot checks and
    /// replication are off).
    pub verifier: Option<Arc<Verifier>>,
}

/// A worker's verified result, on its way to the store.
pub struct Finished {
    /// Identity of the worker whose result is stored (`coordinator` when
    /// the coordinator's own render is).
    pub identity: String,
    pub result: TileResult,
    pub proof: TileProof,
    /// Its connection, told once the tile is durable.
    pub acks: Option<mpsc::UnboundedSender<ConnCmd>>,
    /// The worker whose equal result confirmed it, credited too.
    pub replica: Option<Replica>,
}

/// A result waiting for its second opinion.
pub struct Pending {
    pub worker: WorkerId,
    pub identity: String,
    pub addr: std::net::IpAddr,
    pub result: TileResult,
    pub proof: TileProof,
    pub acks: mpsc::UnboundedSender<ConnCmd>,
    /// Core milliseconds when it started waiting.
    pub since: u64,
    /// A second result that disagreed, kept until the coordinator's render settles it.
    pub second: Option<Opinion>,
    /// The coordinator is rendering the tile.
    pub rendering: bool,
}

/// Another worker's result for a pending tile.
pub struct Opinion {
    pub worker: WorkerId,
    pub identity: String,
    pub result: TileResult,
    pub proof: TileProof,
    pub acks: mpsc::UnboundedSender<ConnCmd>,
}

impl Replication {
    /// Whether a result from (`identity`, `addr`) is an independent second
    /// opinion on `p`.
    pub fn independent(&self, p: &Pending, identity: &str, addr: std::net::IpAddr) -> bool {
        identity != p.identity && (!self.independent_addresses || addr != p.addr)
    }
}
