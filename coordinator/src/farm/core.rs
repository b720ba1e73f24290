//! The farm's core loop: one task that owns the scheduler and the live jobs,
//! fed by a closed set of messages ([`CoreMsg`]) from connections, the
//! store writer and the API, as rust-analyzer's main loop is.
//!
//! It turns the scheduler's actions into I/O requests (send a tile to a
//! connection, persist a result, assemble a frame) and never blocks on the
//! store: persistence runs on the writer thread ([`super::writer`]), which
//! acknowledges a tile to its worker only after the transaction that holds
//! it has committed (DESIGN.md invariant 6).

use std::collections::BTreeMap;
use std::sync::Arc;

use tessera_protocol::wire::{TileAck, TileResult, TileTask};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::job::{JobPlan, JobSpec};
use super::writer::{PendingTile, WriterMsg};
use crate::scheduler::{Action, Event, JobId, LeaseId, Scheduler, TileRef, WorkerId};
use crate::store::JobState;

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
        tx: mpsc::UnboundedSender<ConnCmd>,
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
    /// The writer committed these tiles.
    Persisted {
        tiles: Vec<(u64, u32)>,
    },
    /// The writer wrote (or failed to write) a frame.
    FrameWritten {
        job: u64,
        frame_slot: usize,
        error: Option<String>,
    },
    /// The writer could not store a tile the scheduler counts as done.
    TileLost {
        job: u64,
        error: String,
    },
    Status {
        reply: oneshot::Sender<FarmStatus>,
    },
}

/// A snapshot for pages, the API and tests.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FarmStatus {
    pub workers: Vec<WorkerStatus>,
    pub jobs: Vec<JobStatus>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct WorkerStatus {
    pub id: u64,
    pub identity: String,
    pub name: String,
    pub slots: u32,
    pub leases: usize,
    pub tiles_done: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct JobStatus {
    pub id: u64,
    pub name: String,
    pub tiles: u32,
    pub tiles_done: u32,
    pub frames: usize,
    pub frames_done: usize,
    pub state: JobState,
}

struct LiveWorker {
    identity: String,
    name: String,
    slots: u32,
    tx: mpsc::UnboundedSender<ConnCmd>,
    tiles_done: u64,
}

struct LiveJob {
    spec: Arc<JobSpec>,
    plan: JobPlan,
    descriptor: tessera_protocol::wire::JobDescriptor,
    /// Tiles durable in the store, per frame slot.
    persisted: Vec<u32>,
    /// Frames written (or being written).
    frame_started: Vec<bool>,
    frames_written: usize,
    state: JobState,
    /// The last tile failure, to say why if the job fails.
    last_error: Option<String>,
}

impl LiveJob {
    fn persisted_total(&self) -> u32 {
        self.persisted.iter().sum()
    }
}

/// The core's state. Run with [`Core::run`].
pub struct Core {
    scheduler: Scheduler,
    started: Instant,
    workers: BTreeMap<WorkerId, LiveWorker>,
    jobs: BTreeMap<u64, LiveJob>,
    /// Which tile each live lease is for, to check results against.
    leases: BTreeMap<LeaseId, (WorkerId, TileRef)>,
    writer: std::sync::mpsc::Sender<WriterMsg>,
}

impl Core {
    pub fn new(config: crate::scheduler::Config, writer: std::sync::mpsc::Sender<WriterMsg>) -> Core {
        Core {
            scheduler: Scheduler::new(config),
            started: Instant::now(),
            workers: BTreeMap::new(),
            jobs: BTreeMap::new(),
            leases: BTreeMap::new(),
            writer,
        }
    }

    fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Runs until every sender of `rx` is gone.
    pub async fn run(mut self, mut rx: mpsc::UnboundedReceiver<CoreMsg>) {
        loop {
            let deadline = self.scheduler.poll_timeout().map(|t| self.started + std::time::Duration::from_millis(t));
            tokio::select! {
                msg = rx.recv() => {
                    let Some(msg) = msg else { return };
                    self.handle(msg);
                    // Take what else is waiting before acting: results that
                    // arrive together are persisted in one transaction.
                    for _ in 0..1024 {
                        match rx.try_recv() {
                            Ok(msg) => self.handle(msg),
                            Err(_) => break,
                        }
                    }
                }
                _ = sleep_until(deadline), if deadline.is_some() => {
                    let now = self.now();
                    self.scheduler.handle_timeout(now);
                    self.apply(None);
                }
            }
        }
    }

    fn handle(&mut self, msg: CoreMsg) {
        let now = self.now();
        match msg {
            CoreMsg::Joined { worker, identity, name, slots, tx } => {
                tracing::info!(worker = worker.0, %identity, %name, slots, "worker joined");
                self.workers.insert(worker, LiveWorker { identity, name, slots, tx, tiles_done: 0 });
                self.scheduler.handle(now, Event::WorkerJoined { worker, slots });
            }
            CoreMsg::Left { worker } => {
                if self.workers.remove(&worker).is_some() {
                    tracing::info!(worker = worker.0, "worker left");
                }
                self.scheduler.handle(now, Event::WorkerLeft { worker });
            }
            CoreMsg::Heartbeat { worker } => self.scheduler.handle(now, Event::Heartbeat { worker }),
            CoreMsg::TileDone { worker, lease, result } => {
                let lease = LeaseId(lease);
                match self.leases.get(&lease) {
                    Some((w, _)) if *w == worker => {
                        self.scheduler.handle(now, Event::TileDone { worker, lease });
                        self.apply(Some((worker, result)));
                        return;
                    }
                    _ => self.ack(
                        worker,
                        lease.0,
                        TileAck::Rejected { reason: "the lease was revoked or lost a race".into() },
                    ),
                }
            }
            CoreMsg::TileFailed { worker, lease, error } => {
                let lease = LeaseId(lease);
                if let Some((_, tile)) = self.leases.get(&lease).filter(|(w, _)| *w == worker) {
                    tracing::warn!(worker = worker.0, job = tile.job.0, tile = tile.index, %error, "tile failed");
                    if let Some(j) = self.jobs.get_mut(&tile.job.0) {
                        j.last_error = Some(error);
                    }
                    self.scheduler.handle(now, Event::TileFailed { worker, lease });
                }
            }
            CoreMsg::Reject { worker, lease, reason } => {
                tracing::warn!(worker = worker.0, lease, %reason, "result refused");
                self.ack(worker, lease, TileAck::Rejected { reason: reason.clone() });
                if self.leases.get(&LeaseId(lease)).is_some_and(|(w, _)| *w == worker) {
                    self.scheduler.handle(now, Event::TileFailed { worker, lease: LeaseId(lease) });
                }
            }
            CoreMsg::Load { id, spec, done, frames_written } => self.load(now, id, spec, done, frames_written),
            CoreMsg::Cancel { job } => {
                if let Some(j) = self.jobs.get_mut(&job) {
                    if !j.state.is_finished() {
                        j.state = JobState::Cancelled;
                        let _ = self.writer.send(WriterMsg::JobState { job, state: JobState::Cancelled, error: None });
                    }
                }
                self.scheduler.handle(now, Event::JobCancelled { job: JobId(job) });
            }
            CoreMsg::Persisted { tiles } => {
                for (job, index) in tiles {
                    self.persisted(job, index);
                }
            }
            CoreMsg::FrameWritten { job, frame_slot, error } => self.frame_written(job, frame_slot, error),
            CoreMsg::TileLost { job, error } => self.fail_job(job, format!("storing a tile: {error}")),
            CoreMsg::Status { reply } => {
                let _ = reply.send(self.status());
            }
        }
        self.apply(None);
    }

    fn load(&mut self, now: u64, id: u64, spec: JobSpec, done: Vec<u32>, frames_written: Vec<i32>) {
        let plan = match spec.plan() {
            Ok(p) => p,
            Err(e) => {
                let _ = self.writer.send(WriterMsg::JobState {
                    job: id,
                    state: JobState::Failed,
                    error: Some(e.to_string()),
                });
                return;
            }
        };
        let frames = plan.frames.len();
        let mut job = LiveJob {
            descriptor: spec.descriptor(id),
            spec: Arc::new(spec),
            persisted: vec![0; frames],
            frame_started: vec![false; frames],
            frames_written: 0,
            state: JobState::Running,
            last_error: None,
            plan,
        };
        for &t in &done {
            if let Some(p) = job.plan.place(t) {
                job.persisted[p.frame_slot] += 1;
            }
        }
        for (slot, f) in job.plan.frames.iter().enumerate() {
            if frames_written.contains(f) && job.persisted[slot] == job.plan.tiles_per_frame() {
                job.frame_started[slot] = true;
                job.frames_written += 1;
            }
        }
        let total = job.plan.total_tiles();
        let priority = job.spec.priority;
        tracing::info!(job = id, name = %job.spec.name, tiles = total, done = done.len(), "job loaded");
        self.jobs.insert(id, job);
        self.scheduler.handle(now, Event::JobSubmitted { job: JobId(id), tiles: total, priority });
        if !done.is_empty() {
            self.scheduler.handle(now, Event::TilesAlreadyDone { job: JobId(id), tiles: done });
        }
        // Frames whose tiles were all durable but whose files were not
        // written when the coordinator stopped.
        let _ = self.writer.send(WriterMsg::JobState { job: id, state: JobState::Running, error: None });
        for slot in 0..frames {
            self.maybe_write_frame(id, slot);
        }
        self.maybe_finish(id);
    }

    /// Performs the scheduler's actions. `result` is the tile result whose
    /// `TileDone` was just handled: a `TileCompleted` for it persists it.
    fn ack(&self, worker: WorkerId, lease: u64, ack: TileAck) {
        if let Some(w) = self.workers.get(&worker) {
            let _ = w.tx.send(ConnCmd::Ack(lease, ack));
        }
    }

    fn apply(&mut self, mut result: Option<(WorkerId, TileResult)>) {
        while let Some(action) = self.scheduler.poll_action() {
            match action {
                Action::Dispatch { worker, lease, tile } => {
                    let (Some(w), Some(job)) = (self.workers.get(&worker), self.jobs.get(&tile.job.0)) else {
                        continue;
                    };
                    let Some(place) = job.plan.place(tile.index) else { continue };
                    self.leases.insert(lease, (worker, tile));
                    let task = TileTask {
                        lease: lease.0,
                        job: job.descriptor.clone(),
                        tile: tile.index,
                        frame: place.frame,
                        rect: place.rect,
                        samples: job.plan.samples(&job.spec),
                        seed: job.spec.seed,
                    };
                    let _ = w.tx.send(ConnCmd::Dispatch(task));
                }
                Action::Revoke { worker, lease } => {
                    self.leases.remove(&lease);
                    if let Some(w) = self.workers.get(&worker) {
                        let _ = w.tx.send(ConnCmd::Revoke(lease.0));
                    }
                }
                Action::TileCompleted { tile, worker } => {
                    let Some((_, result)) = result.take() else {
                        tracing::error!(job = tile.job.0, tile = tile.index, "completed tile without a result");
                        continue;
                    };
                    self.leases.remove(&LeaseId(result.lease));
                    let Some(w) = self.workers.get_mut(&worker) else { continue };
                    w.tiles_done += 1;
                    let (identity, acks) = (w.identity.clone(), w.tx.clone());
                    let Some(job) = self.jobs.get(&tile.job.0) else { continue };
                    let Some(place) = job.plan.place(tile.index) else { continue };
                    let _ = self.writer.send(WriterMsg::Tile(PendingTile {
                        job: tile.job.0,
                        index: tile.index,
                        frame: place.frame,
                        worker: identity,
                        result,
                        acks,
                    }));
                }
                Action::JobCompleted { job } => {
                    tracing::info!(job = job.0, "all tiles rendered");
                }
                Action::JobFailed { job, tile } => {
                    let mut error = format!("tile {tile} failed on every attempt");
                    if let Some(j) = self.jobs.get_mut(&job.0) {
                        j.state = JobState::Failed;
                        if let Some(last) = &j.last_error {
                            error += &format!("; last error: {last}");
                        }
                    }
                    tracing::error!(job = job.0, %error, "job failed");
                    let _ = self.writer.send(WriterMsg::JobState {
                        job: job.0,
                        state: JobState::Failed,
                        error: Some(error),
                    });
                }
                Action::DisconnectWorker { worker } => {
                    if let Some(w) = self.workers.remove(&worker) {
                        tracing::warn!(worker = worker.0, "worker missed its heartbeats; disconnecting");
                        let _ = w.tx.send(ConnCmd::Disconnect);
                    }
                }
            }
        }
        if let Some((worker, result)) = result {
            self.ack(worker, result.lease, TileAck::Rejected { reason: "the tile was already done".into() });
        }
    }

    fn persisted(&mut self, job: u64, index: u32) {
        let Some(j) = self.jobs.get_mut(&job) else { return };
        let Some(place) = j.plan.place(index) else { return };
        j.persisted[place.frame_slot] += 1;
        self.maybe_write_frame(job, place.frame_slot);
    }

    fn maybe_write_frame(&mut self, job: u64, slot: usize) {
        let Some(j) = self.jobs.get_mut(&job) else { return };
        if j.frame_started[slot] || j.persisted[slot] < j.plan.tiles_per_frame() || j.state.is_finished() {
            return;
        }
        j.frame_started[slot] = true;
        let _ = self.writer.send(WriterMsg::Frame { job, frame_slot: slot, spec: j.spec.clone() });
    }

    fn frame_written(&mut self, job: u64, slot: usize, error: Option<String>) {
        let Some(j) = self.jobs.get_mut(&job) else { return };
        if let Some(error) = error {
            let error = format!("writing frame {}: {error}", j.plan.frames[slot]);
            self.fail_job(job, error);
            return;
        }
        j.frames_written += 1;
        self.maybe_finish(job);
    }

    fn fail_job(&mut self, job: u64, error: String) {
        let Some(j) = self.jobs.get_mut(&job) else { return };
        if j.state.is_finished() {
            return;
        }
        j.state = JobState::Failed;
        tracing::error!(job, %error, "job failed");
        let _ = self.writer.send(WriterMsg::JobState { job, state: JobState::Failed, error: Some(error) });
        let now = self.now();
        self.scheduler.handle(now, Event::JobCancelled { job: JobId(job) });
    }

    fn maybe_finish(&mut self, job: u64) {
        let Some(j) = self.jobs.get_mut(&job) else { return };
        if j.frames_written == j.plan.frames.len() && !j.state.is_finished() {
            j.state = JobState::Done;
            tracing::info!(job, frames = j.frames_written, "job done");
            let _ = self.writer.send(WriterMsg::JobState { job, state: JobState::Done, error: None });
        }
    }

    fn status(&self) -> FarmStatus {
        FarmStatus {
            workers: self
                .workers
                .iter()
                .map(|(id, w)| WorkerStatus {
                    id: id.0,
                    identity: w.identity.clone(),
                    name: w.name.clone(),
                    slots: w.slots,
                    leases: self.scheduler.worker_leases(*id),
                    tiles_done: w.tiles_done,
                })
                .collect(),
            jobs: self
                .jobs
                .iter()
                .map(|(id, j)| JobStatus {
                    id: *id,
                    name: j.spec.name.clone(),
                    tiles: j.plan.total_tiles(),
                    tiles_done: j.persisted_total(),
                    frames: j.plan.frames.len(),
                    frames_done: j.frames_written,
                    state: j.state,
                })
                .collect(),
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
