//! The messages between the farm's tasks and threads, in one place that
//! each of them imports (so data flows one way: connections and the API
//! send to the core, the core to connections and the writer, the writer
//! back to the core): what the core loop hears ([`CoreMsg`]), what it tells
//! a connection ([`ConnCmd`]), and the writer's work ([`WriterMsg`]).

use std::sync::Arc;

use tessera_protocol::wire::{GpuClass, HeldTile, TileAck, TileResult, TileTask};
use tessera_store::{JobState, LogLevel};
use tokio::sync::{mpsc, oneshot};

use super::job::JobSpec;
use super::status::FarmStatus;
use super::verify::TileProof;
use crate::scheduler::WorkerId;

/// What a connection is told to do.
#[derive(Debug)]
pub enum ConnCmd {
    Dispatch(TileTask),
    Revoke(u64),
    /// A verdict on a result (sent once it is durable, if accepted).
    Ack(u64, TileAck),
    Disconnect,
}

/// Everything the core loop reacts to.
#[derive(Debug)]
pub enum CoreMsg {
    Joined {
        worker: WorkerId,
        identity: String,
        name: String,
        slots: u32,
        /// Where it connects from: two workers at one address are not
        /// independent opinions.
        addr: std::net::IpAddr,
        tx: mpsc::UnboundedSender<ConnCmd>,
        /// The GPU class it offers jobs, if any.
        gpu: Option<GpuClass>,
        /// Tiles it holds from leases of a lost connection.
        holding: Vec<HeldTile>,
    },
    Left {
        worker: WorkerId,
    },
    Heartbeat {
        worker: WorkerId,
    },
    /// A result that passed the connection's checks (its lease, tile and
    /// rectangle match what was sent; its shape is sound).
    TileDone {
        worker: WorkerId,
        lease: u64,
        result: TileResult,
        /// The proof-of-render record kept with the tile.
        proof: TileProof,
        /// The worker is not trusted enough: the tile needs a second,
        /// independent opinion before it counts.
        replicate: bool,
    },
    /// The coordinator's own render of a tile (a second opinion nobody
    /// else could give, or the arbiter between two that disagree).
    CoordinatorRendered {
        job: u64,
        tile: u32,
        result: Result<tessera_protocol::TileAccumulators, String>,
    },
    /// The writer quarantined this worker: close its connections.
    Quarantined {
        identity: String,
    },
    TileFailed {
        worker: WorkerId,
        lease: u64,
        error: String,
    },
    /// A job already in the store (submitted, or unfinished at start-up).
    Load {
        id: u64,
        spec: JobSpec,
        done: Vec<u32>,
        frames_written: Vec<i32>,
    },
    Cancel {
        job: u64,
    },
    /// A result the connection refused (wrong lease or tile, too large,
    /// malformed): the worker is told why, and the lease counts as failed.
    Reject {
        worker: WorkerId,
        lease: u64,
        reason: String,
    },
    /// The writer committed these tiles (job, tile, worker identity).
    Persisted {
        tiles: Vec<(u64, u32, String)>,
    },
    /// The writer wrote (or failed to write) a frame.
    FrameWritten {
        job: u64,
        frame_slot: usize,
        error: Option<String>,
    },
    /// The writer stored the preview of a progressive frame through `pass`.
    PreviewWritten {
        job: u64,
        frame_slot: usize,
        pass: usize,
    },
    /// The writer could not store a tile the scheduler counts as done.
    TileLost {
        job: u64,
        error: String,
    },
    Status {
        reply: oneshot::Sender<FarmStatus>,
    },
    /// Forget a finished job (it is being deleted); replies whether the
    /// job was finished (or unknown) and so could be forgotten.
    Forget {
        job: u64,
        reply: oneshot::Sender<bool>,
    },
    /// Replies once everything the core has sent the store writer so far is
    /// committed: after it, the store agrees with the core about every
    /// state change made before.
    Barrier {
        reply: oneshot::Sender<()>,
    },
}

/// A verified result waiting to be made durable.
#[derive(Debug)]
pub struct PendingTile {
    pub job: u64,
    pub index: u32,
    pub frame: i32,
    pub worker: String,
    pub result: TileResult,
    /// The proof-of-render record.
    pub proof: TileProof,
    /// The worker's connection, told once the tile is durable (none for
    /// the coordinator's own render).
    pub acks: Option<mpsc::UnboundedSender<ConnCmd>>,
    /// The worker whose equal result confirmed this one (credited too).
    pub replica: Option<Replica>,
}

/// Work for the writer.
#[derive(Debug)]
pub enum WriterMsg {
    Tile(PendingTile),
    JobState {
        job: u64,
        state: JobState,
        error: Option<String>,
    },
    Frame {
        job: u64,
        frame_slot: usize,
        spec: Arc<JobSpec>,
    },
    /// A progressive frame's preview through pass `through`.
    Preview {
        job: u64,
        frame_slot: usize,
        through: usize,
        spec: Arc<JobSpec>,
    },
    /// A line for the job's log; written with the next batch.
    Log {
        job: u64,
        level: LogLevel,
        message: String,
    },
    /// A result that failed a check found by the core (a disagreement the
    /// coordinator's render settled): evidence, trust and reputation.
    FailedCheck {
        identity: String,
        job: u64,
        tile: u32,
        reason: String,
        evidence: String,
    },
    /// Answered once everything before it is committed ([`CoreMsg::Barrier`]).
    Barrier(tokio::sync::oneshot::Sender<()>),
}

/// The second opinion that confirmed a tile.
#[derive(Debug)]
pub struct Replica {
    pub identity: String,
    pub proof: TileProof,
    pub lease: u64,
    pub commitment: [u8; 32],
    pub acks: Option<mpsc::UnboundedSender<ConnCmd>>,
}

/// The identity a tile the coordinator rendered itself is stored under (a
/// disagreement between workers settled by its own render). Such a tile has
/// no worker signature: its manifest entry is committed to and signed by the
/// coordinator (`super::manifest`).
pub const COORDINATOR: &str = "coordinator";
