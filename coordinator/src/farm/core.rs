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

use tessera_protocol::wire::{Engine, GpuClass, TileAck, TileResult, TileTask};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::job::{JobPlan, JobSpec};
use super::msg::{ConnCmd, CoreMsg, PendingTile, Replica, WriterMsg, COORDINATOR};
use super::status::{Counters, FarmStatus, JobStatus, WorkerStatus};
use super::verify::Confirmation;
use crate::scheduler::{Action, Event, GpuClassId, Held, JobId, LeaseId, Scheduler, TileRef, WorkerId};
use tessera_client::model::{Event as ApiEvent, TileRect};
use tessera_store::{JobState, LogLevel};

/// How many events a slow subscriber may fall behind before it is told it
/// lagged (and misses some).
pub const EVENT_BUFFER: usize = 4096;

struct LiveWorker {
    identity: String,
    name: String,
    addr: std::net::IpAddr,
    gpu: Option<GpuClassId>,
    slots: u32,
    tx: mpsc::UnboundedSender<ConnCmd>,
    tiles_done: u64,
    /// Tiles it rejoined holding, until their results come (for the count
    /// of adopted tiles).
    holding: std::collections::BTreeSet<(u64, u32)>,
}

struct LiveJob {
    spec: Arc<JobSpec>,
    plan: JobPlan,
    descriptor: tessera_protocol::wire::JobDescriptor,
    /// Tiles durable in the store, per frame slot.
    persisted: Vec<u32>,
    /// Of those, per frame slot and pass (progressive jobs' previews).
    pass_persisted: Vec<Vec<u32>>,
    /// The last pass each frame's preview was asked for.
    previewed: Vec<Option<usize>>,
    /// Frames written (or being written).
    frame_started: Vec<bool>,
    frames_written: usize,
    state: JobState,
    /// The last tile failure, to say why if the job fails.
    last_error: Option<String>,
    /// When the core loaded the job and how many tiles were durable then:
    /// the ETA is measured from this session's rate only.
    loaded_ms: u64,
    done_at_load: u32,
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
    events: tokio::sync::broadcast::Sender<ApiEvent>,
    counters: Counters,
    /// Results waiting for a second opinion (adaptive replication).
    pending: BTreeMap<(u64, u32), super::replicate::Pending>,
    replication: super::replicate::Replication,
    /// To hand the coordinator's own renders back to this loop.
    me: mpsc::UnboundedSender<CoreMsg>,
    /// GPU classes seen, numbered for the scheduler by position.
    gpu_classes: Vec<GpuClass>,
}

impl Core {
    pub fn new(
        config: crate::scheduler::Config,
        writer: std::sync::mpsc::Sender<WriterMsg>,
        events: tokio::sync::broadcast::Sender<ApiEvent>,
        replication: super::replicate::Replication,
        me: mpsc::UnboundedSender<CoreMsg>,
    ) -> Core {
        Core {
            pending: BTreeMap::new(),
            replication,
            me,
            events,
            counters: Counters::default(),
            scheduler: Scheduler::new(config),
            started: Instant::now(),
            workers: BTreeMap::new(),
            jobs: BTreeMap::new(),
            leases: BTreeMap::new(),
            writer,
            gpu_classes: Vec::new(),
        }
    }

    /// The scheduler's number for a GPU class.
    fn class_id(&mut self, class: &GpuClass) -> GpuClassId {
        let index = match self.gpu_classes.iter().position(|c| c == class) {
            Some(i) => i,
            None => {
                self.gpu_classes.push(class.clone());
                self.gpu_classes.len() - 1
            }
        };
        GpuClassId(index as u32)
    }

    fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Publishes an event to API subscribers (none listening is fine).
    fn emit(&self, event: ApiEvent) {
        let _ = self.events.send(event);
    }

    /// Appends a line to a job's log (kept in the store, read by `tessera logs`).
    fn log(&self, job: u64, level: LogLevel, message: String) {
        let _ = self.writer.send(WriterMsg::Log { job, level, message });
    }

    /// Records a job's new state: store, log and subscribers.
    fn set_state(&self, job: u64, state: JobState, error: Option<String>) {
        let level = if state == JobState::Failed { LogLevel::Error } else { LogLevel::Info };
        let message = match &error {
            Some(e) => format!("job {}: {e}", state.as_str()),
            None => format!("job {}", state.as_str()),
        };
        if state != JobState::Running {
            self.log(job, level, message);
        }
        self.emit(ApiEvent::Job { job, state: state.as_str().into(), error: error.clone() });
        let _ = self.writer.send(WriterMsg::JobState { job, state, error });
    }

    /// Runs until every sender of `rx` is gone.
    pub async fn run(mut self, mut rx: mpsc::UnboundedReceiver<CoreMsg>) {
        loop {
            let now = self.now();
            let pending = self.check_pending(now);
            self.apply(None);
            let next = match (self.scheduler.poll_timeout(), pending) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let deadline = next.map(|t| self.started + std::time::Duration::from_millis(t));
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
            CoreMsg::Joined { worker, identity, name, slots, addr, tx, gpu, holding } => {
                tracing::info!(worker = worker.0, %identity, %name, slots, gpu = ?gpu.as_ref().map(|g| g.to_string()), held = holding.len(), "worker joined");
                self.emit(ApiEvent::Worker { identity: identity.clone(), name: name.clone(), state: "joined".into() });
                let gpu = gpu.map(|g| self.class_id(&g));
                let held: Vec<Held> = holding
                    .iter()
                    .map(|h| Held { tile: TileRef { job: JobId(h.job), index: h.tile }, age_ms: h.age_ms })
                    .collect();
                let holding = holding.iter().map(|h| (h.job, h.tile)).collect();
                self.workers
                    .insert(worker, LiveWorker { identity, name, addr, gpu, slots, tx, tiles_done: 0, holding });
                self.scheduler.handle(now, Event::WorkerJoined { worker, slots, gpu, holding: held });
            }
            CoreMsg::Left { worker } => {
                if let Some(w) = self.workers.remove(&worker) {
                    tracing::info!(worker = worker.0, "worker left");
                    self.emit(ApiEvent::Worker { identity: w.identity, name: w.name, state: "left".into() });
                }
                self.scheduler.handle(now, Event::WorkerLeft { worker });
            }
            CoreMsg::Heartbeat { worker } => self.scheduler.handle(now, Event::Heartbeat { worker }),
            CoreMsg::TileDone { worker, lease, result, proof, replicate } => {
                let lease = LeaseId(lease);
                match self.leases.get(&lease) {
                    Some((w, tile)) if *w == worker => {
                        let tile = *tile;
                        if self.workers.get_mut(&worker).is_some_and(|w| w.holding.remove(&(tile.job.0, tile.index))) {
                            self.counters.tiles_adopted += 1;
                        }
                        if self.tile_result(now, worker, lease, tile, result, proof, replicate) {
                            return;
                        }
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
                    self.counters.tiles_failed += 1;
                    let who = self.workers.get(&worker).map_or("a worker".to_string(), |w| w.name.clone());
                    self.log(tile.job.0, LogLevel::Warn, format!("tile {} failed on {who}: {error}", tile.index));
                    if let Some(j) = self.jobs.get_mut(&tile.job.0) {
                        j.last_error = Some(error);
                    }
                    self.scheduler.handle(now, Event::TileFailed { worker, lease });
                }
            }
            CoreMsg::Reject { worker, lease, reason } => {
                tracing::warn!(worker = worker.0, lease, %reason, "result refused");
                self.ack(worker, lease, TileAck::Rejected { reason: reason.clone() });
                if let Some((_, tile)) = self.leases.get(&LeaseId(lease)).filter(|(w, _)| *w == worker) {
                    self.counters.tiles_failed += 1;
                    let who = self.workers.get(&worker).map_or("a worker".to_string(), |w| w.name.clone());
                    self.log(tile.job.0, LogLevel::Warn, format!("tile {} from {who} refused: {reason}", tile.index));
                    self.scheduler.handle(now, Event::TileFailed { worker, lease: LeaseId(lease) });
                }
            }
            CoreMsg::Load { id, spec, done, frames_written } => self.load(now, id, spec, done, frames_written),
            CoreMsg::Cancel { job } => {
                if let Some(j) = self.jobs.get_mut(&job) {
                    if !j.state.is_finished() {
                        j.state = JobState::Cancelled;
                        self.set_state(job, JobState::Cancelled, None);
                    }
                }
                self.scheduler.handle(now, Event::JobCancelled { job: JobId(job) });
            }
            CoreMsg::Persisted { tiles } => {
                for (job, index, worker) in tiles {
                    self.persisted(job, index, worker);
                }
            }
            CoreMsg::FrameWritten { job, frame_slot, error } => self.frame_written(job, frame_slot, error),
            CoreMsg::PreviewWritten { job, frame_slot, pass } => self.preview_written(job, frame_slot, pass),
            CoreMsg::TileLost { job, error } => self.fail_job(job, format!("storing a tile: {error}")),
            CoreMsg::Status { reply } => {
                let _ = reply.send(self.status());
            }
            CoreMsg::CoordinatorRendered { job, tile, result } => self.coordinator_rendered(now, job, tile, result),
            CoreMsg::Quarantined { identity } => {
                for w in self.workers.values().filter(|w| w.identity == identity) {
                    let _ = w.tx.send(ConnCmd::Disconnect);
                }
            }
            CoreMsg::Barrier { reply } => {
                let _ = self.writer.send(WriterMsg::Barrier(reply));
            }
            CoreMsg::Forget { job, reply } => {
                let finished = self.jobs.get(&job).is_none_or(|j| j.state.is_finished());
                if finished {
                    self.jobs.remove(&job);
                    self.scheduler.handle(now, Event::JobCancelled { job: JobId(job) });
                }
                let _ = reply.send(finished);
            }
        }
        self.apply(None);
    }

    fn load(&mut self, now: u64, id: u64, spec: JobSpec, done: Vec<u32>, frames_written: Vec<i32>) {
        let plan = match spec.plan() {
            Ok(p) => p,
            Err(e) => {
                self.set_state(id, JobState::Failed, Some(e.to_string()));
                return;
            }
        };
        let frames = plan.frames.len();
        let mut job = LiveJob {
            descriptor: spec.descriptor(id),
            spec: Arc::new(spec),
            persisted: vec![0; frames],
            pass_persisted: vec![vec![0; plan.passes.len()]; frames],
            previewed: vec![None; frames],
            frame_started: vec![false; frames],
            frames_written: 0,
            state: JobState::Running,
            last_error: None,
            plan,
            loaded_ms: now,
            done_at_load: 0,
        };
        for &t in &done {
            if let Some(p) = job.plan.place(t) {
                job.persisted[p.frame_slot] += 1;
                job.pass_persisted[p.frame_slot][p.pass] += 1;
            }
        }
        for (slot, f) in job.plan.frames.iter().enumerate() {
            if frames_written.contains(f) && job.persisted[slot] == job.plan.tiles_per_frame() {
                job.frame_started[slot] = true;
                job.frames_written += 1;
            }
        }
        job.done_at_load = job.persisted_total();
        let total = job.plan.total_tiles();
        let priority = job.spec.priority;
        self.counters.jobs_submitted += 1;
        let plan_line = format!(
            "job loaded: {}x{}, {} spp, {} frame(s), {} tiles of {} px; {} already rendered",
            job.spec.width,
            job.spec.height,
            job.spec.spp,
            job.plan.frames.len(),
            total,
            job.spec.tile_size,
            job.done_at_load
        );
        self.log(id, LogLevel::Info, plan_line);
        tracing::info!(job = id, name = %job.spec.name, tiles = total, done = done.len(), "job loaded");
        self.jobs.insert(id, job);
        let needs_gpu = self.jobs.get(&id).is_some_and(|j| j.spec.engine == Engine::Gpu);
        self.scheduler.handle(now, Event::JobSubmitted { job: JobId(id), tiles: total, priority, needs_gpu });
        if !done.is_empty() {
            self.scheduler.handle(now, Event::TilesAlreadyDone { job: JobId(id), tiles: done });
        }
        // Frames whose tiles were all durable but whose files were not
        // written when the coordinator stopped.
        self.set_state(id, JobState::Running, None);
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

    fn apply(&mut self, mut result: Option<super::replicate::Finished>) {
        while let Some(action) = self.scheduler.poll_action() {
            match action {
                Action::Dispatch { worker, lease, tile } => {
                    let (Some(w), Some(job)) = (self.workers.get(&worker), self.jobs.get(&tile.job.0)) else {
                        continue;
                    };
                    let Some(place) = job.plan.place(tile.index) else { continue };
                    self.leases.insert(lease, (worker, tile));
                    // The GPU where the job allows it and the worker has
                    // one, unless this is the second opinion on a CPU
                    // tile: that must match it bit for bit.
                    let cpu_replica =
                        self.pending.get(&(tile.job.0, tile.index)).is_some_and(|p| p.result.gpu.is_none());
                    let gpu = job.spec.engine.allows_gpu() && w.gpu.is_some() && !cpu_replica;
                    let task = TileTask {
                        gpu,
                        lease: lease.0,
                        job: job.descriptor.clone(),
                        tile: tile.index,
                        frame: place.frame,
                        rect: place.rect,
                        samples: place.samples,
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
                    let Some(done) = result.take() else {
                        tracing::error!(job = tile.job.0, tile = tile.index, "completed tile without a result");
                        continue;
                    };
                    self.leases.remove(&LeaseId(done.result.lease));
                    if let Some(w) = self.workers.get_mut(&worker) {
                        w.tiles_done += 1;
                    }
                    let Some(job) = self.jobs.get(&tile.job.0) else { continue };
                    let Some(place) = job.plan.place(tile.index) else { continue };
                    let _ = self.writer.send(WriterMsg::Tile(PendingTile {
                        job: tile.job.0,
                        index: tile.index,
                        frame: place.frame,
                        worker: done.identity,
                        result: done.result,
                        proof: done.proof,
                        acks: done.acks,
                        replica: done.replica,
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
                    self.set_state(job.0, JobState::Failed, Some(error));
                }
                Action::DisconnectWorker { worker } => {
                    if let Some(w) = self.workers.remove(&worker) {
                        tracing::warn!(worker = worker.0, "worker missed its heartbeats; disconnecting");
                        let _ = w.tx.send(ConnCmd::Disconnect);
                    }
                }
            }
        }
        if let Some(done) = result {
            if let Some(acks) = done.acks {
                let reason = "the tile was already done".into();
                let _ = acks.send(ConnCmd::Ack(done.result.lease, TileAck::Rejected { reason }));
            }
        }
    }

    /// A verified result for a live lease. Returns true when it went to
    /// `apply` (the caller must not apply again).
    #[allow(clippy::too_many_arguments)]
    fn tile_result(
        &mut self,
        now: u64,
        worker: WorkerId,
        lease: LeaseId,
        tile: TileRef,
        result: TileResult,
        proof: super::verify::TileProof,
        replicate: bool,
    ) -> bool {
        use super::replicate::{Finished, Opinion, Pending};
        let Some(w) = self.workers.get(&worker) else { return false };
        let (identity, addr, tx) = (w.identity.clone(), w.addr, w.tx.clone());
        let key = (tile.job.0, tile.index);
        let pending_class = self.pending.get(&key).and_then(|p| p.result.gpu.clone()).map(|c| self.class_id(&c));
        if let Some(p) = self.pending.get_mut(&key) {
            self.leases.remove(&lease);
            // A second opinion counts from an independent worker that
            // rendered where the first did: on the CPU for a CPU tile, on
            // the same GPU class for a GPU tile (bits agree only there).
            if p.rendering
                || p.second.is_some()
                || !self.replication.independent(p, &identity, addr)
                || p.result.gpu != result.gpu
            {
                // Not an opinion that counts: the tile goes to someone else
                // (or waits for the coordinator's render).
                self.scheduler.handle(now, Event::Replicate { worker, lease, class: pending_class });
                let reason = "a second opinion must come from an independent worker".to_string();
                let _ = tx.send(ConnCmd::Ack(lease.0, TileAck::Rejected { reason }));
                return false;
            }
            if p.result.accumulators.to_bytes() == result.accumulators.to_bytes() {
                let p = self.pending.remove(&key).expect("found above");
                tracing::debug!(job = key.0, tile = key.1, "second opinion agrees");
                self.log(key.0, LogLevel::Info, format!("tile {} confirmed by a second worker", key.1));
                let by = proof.as_replica();
                let replica =
                    Replica { identity, proof, lease: lease.0, commitment: result.commitment, acks: Some(tx) };
                // The scheduler completes the tile under the second lease;
                // the first result is stored, both workers are acked and credited.
                self.scheduler.handle(now, Event::TileDone { worker, lease });
                self.apply(Some(Finished {
                    identity: p.identity,
                    result: p.result,
                    proof: confirmed(p.proof, by),
                    acks: Some(p.acks),
                    replica: Some(replica),
                }));
                return true;
            }
            // They disagree: the coordinator's render settles it; the tile
            // stays out of the queue meanwhile (the second lease is held).
            tracing::warn!(job = key.0, tile = key.1, "two workers disagree; the coordinator renders the tile");
            p.second = Some(Opinion { worker, identity, result, proof, acks: tx });
            self.log(
                key.0,
                LogLevel::Warn,
                format!("tile {}: two workers disagree; the coordinator settles it", key.1),
            );
            self.start_coordinator_render(key);
            return false;
        }
        if replicate && self.replication.enabled {
            let class = result.gpu.clone().map(|c| self.class_id(&c));
            self.leases.remove(&lease);
            self.pending.insert(
                key,
                Pending { worker, identity, addr, result, proof, acks: tx, since: now, second: None, rendering: false },
            );
            self.scheduler.handle(now, Event::Replicate { worker, lease, class });
            return false;
        }
        self.scheduler.handle(now, Event::TileDone { worker, lease });
        self.apply(Some(Finished { identity, result, proof, acks: Some(tx), replica: None }));
        true
    }

    /// Renders a pending tile on the coordinator, off the loop.
    fn start_coordinator_render(&mut self, key: (u64, u32)) {
        let Some(p) = self.pending.get_mut(&key) else { return };
        if p.rendering {
            return;
        }
        let (Some(verifier), Some(job)) = (self.replication.verifier.clone(), self.jobs.get(&key.0)) else {
            return;
        };
        let Some(place) = job.plan.place(key.1) else { return };
        p.rendering = true;
        let task = TileTask {
            gpu: false,
            lease: 0,
            job: job.descriptor.clone(),
            tile: key.1,
            frame: place.frame,
            rect: place.rect,
            samples: place.samples,
            seed: job.spec.seed,
        };
        let me = self.me.clone();
        tokio::task::spawn_blocking(move || {
            let result = verifier.render(&task).map_err(|e| e.to_string());
            let _ = me.send(CoreMsg::CoordinatorRendered { job: key.0, tile: key.1, result });
        });
    }

    /// Pending tiles nobody independent took in time: the coordinator
    /// renders the second opinion itself. Returns the next such deadline.
    fn check_pending(&mut self, now: u64) -> Option<u64> {
        let wait = self.replication.wait.as_millis() as u64;
        let mut next = None;
        let keys: Vec<(u64, u32)> = self.pending.keys().copied().collect();
        for key in keys {
            let Some(p) = self.pending.get(&key) else { continue };
            if p.rendering {
                continue;
            }
            let due = p.since + wait;
            let tile = TileRef { job: JobId(key.0), index: key.1 };
            if due <= now && !self.scheduler.is_leased(tile) {
                self.start_coordinator_render(key);
            } else {
                next = Some(next.map_or(due.max(now + 1), |n: u64| n.min(due.max(now + 1))));
            }
        }
        next
    }

    /// The coordinator's render of a pending tile: whoever agrees with it
    /// counts, whoever does not gets a failed check.
    fn coordinator_rendered(
        &mut self,
        now: u64,
        job: u64,
        index: u32,
        rendered: Result<tessera_protocol::TileAccumulators, String>,
    ) {
        use super::replicate::Finished;
        let key = (job, index);
        let Some(mut p) = self.pending.remove(&key) else { return };
        let rendered = match rendered {
            Ok(r) => r,
            Err(e) => {
                // Not the workers' fault: try again later.
                tracing::error!(job, tile = index, error = %e, "the coordinator could not render a tile");
                p.rendering = false;
                p.since = now;
                self.pending.insert(key, p);
                return;
            }
        };
        let truth = rendered.to_bytes();
        // A CPU tile must equal the coordinator's render; a GPU tile must be
        // within the tolerance of it. Statistics alone never count against
        // a worker: a GPU result outside the tolerance is a failed check
        // only when a second worker of its class disagreed with it by hash.
        let gpu_tile = p.result.gpu.is_some();
        let tolerance = self.replication.verifier.as_ref().map(|v| v.config().gpu_tolerance).unwrap_or_default();
        let agrees = |acc: &tessera_protocol::TileAccumulators| {
            if gpu_tile {
                tessera_protocol::gpu_check::compare_tiles(&rendered, acc, tolerance).within()
            } else {
                acc.to_bytes() == truth
            }
        };
        let strikes = !gpu_tile || p.second.is_some();
        let tile = TileRef { job: JobId(job), index };
        let mut winner: Option<Finished> = None;
        let mut losers = Vec::new();
        if agrees(&p.result.accumulators) {
            winner = Some(Finished {
                identity: p.identity.clone(),
                result: p.result.clone(),
                proof: confirmed(p.proof.clone(), Confirmation::Coordinator),
                acks: Some(p.acks.clone()),
                replica: None,
            });
        } else {
            // Told now, whoever wins: its result is not the one kept.
            let _ = p.acks.send(ConnCmd::Ack(
                p.result.lease,
                TileAck::Rejected { reason: "the tile differs from the coordinator's render".into() },
            ));
            losers.push((p.identity.clone(), p.proof.clone()));
        }
        if let Some(second) = p.second.take() {
            let second_agrees = agrees(&second.result.accumulators);
            if second_agrees && winner.is_none() {
                winner = Some(Finished {
                    identity: second.identity,
                    result: second.result,
                    proof: confirmed(second.proof, Confirmation::Coordinator),
                    acks: Some(second.acks),
                    replica: None,
                });
            } else if !second_agrees {
                losers.push((second.identity, second.proof));
                let reason = "it disagreed with the coordinator's render of the tile".into();
                let _ = second.acks.send(ConnCmd::Ack(second.result.lease, TileAck::Rejected { reason }));
            }
        }
        if !strikes {
            for (identity, _) in losers.drain(..) {
                self.log(
                    job,
                    LogLevel::Warn,
                    format!(
                        "tile {index}: the GPU result from {identity} is outside the tolerance of the coordinator's \
                         render and no worker of its GPU class gave a second opinion; the coordinator's render is kept"
                    ),
                );
            }
        }
        for (identity, proof) in losers {
            self.counters.tiles_failed += 1;
            let reason = "the tile differs from the coordinator's own render of it".to_string();
            self.log(job, LogLevel::Warn, format!("tile {index}: a result from {identity} failed: {reason}"));
            let evidence = serde_json::json!({ "job": job, "tile": index, "proof": proof }).to_string();
            let _ = self.writer.send(WriterMsg::FailedCheck { identity, job, tile: index, reason, evidence });
        }
        let done = winner.unwrap_or_else(|| {
            let mut result = p.result.clone();
            result.accumulators = rendered;
            result.commitment = [0; 32];
            result.signature = Vec::new();
            Finished {
                identity: COORDINATOR.into(),
                result,
                proof: super::verify::TileProof {
                    worker: COORDINATOR.into(),
                    public_key: String::new(),
                    commitment: String::new(),
                    signature: String::new(),
                    sample_start: p.proof.sample_start,
                    sample_count: p.proof.sample_count,
                    signature_checked: false,
                    spot_check: None,
                    gpu: None,
                    confirmed_by: None,
                },
                acks: None,
                replica: None,
            }
        });
        self.scheduler.handle(now, Event::TileConfirmed { tile, worker: p.worker });
        self.apply(Some(done));
    }

    fn persisted(&mut self, job: u64, index: u32, worker: String) {
        let Some(j) = self.jobs.get_mut(&job) else { return };
        let Some(place) = j.plan.place(index) else { return };
        j.persisted[place.frame_slot] += 1;
        j.pass_persisted[place.frame_slot][place.pass] += 1;
        self.counters.tiles_done += 1;
        let r = place.rect;
        let rect = TileRect { x: r.x, y: r.y, width: r.width, height: r.height };
        self.emit(ApiEvent::Tile { job, frame: place.frame, tile: index, worker, rect });
        self.maybe_preview(job, place.frame_slot);
        self.maybe_write_frame(job, place.frame_slot);
    }

    /// A progressive frame whose passes are all durable up to one that has
    /// no preview yet (and is not the last: that one is the frame itself)
    /// gets a preview through it.
    fn maybe_preview(&mut self, job: u64, slot: usize) {
        let Some(j) = self.jobs.get_mut(&job) else { return };
        if !j.plan.is_progressive() || j.frame_started[slot] || j.state.is_finished() {
            return;
        }
        let per_pass = j.plan.tiles_per_pass();
        let complete = j.pass_persisted[slot].iter().take_while(|n| **n >= per_pass).count();
        let Some(through) = complete.checked_sub(1) else { return };
        if through + 1 >= j.plan.passes.len() || j.previewed[slot].is_some_and(|p| p >= through) {
            return;
        }
        j.previewed[slot] = Some(through);
        let _ = self.writer.send(WriterMsg::Preview { job, frame_slot: slot, through, spec: j.spec.clone() });
    }

    fn preview_written(&mut self, job: u64, slot: usize, pass: usize) {
        let Some(j) = self.jobs.get(&job) else { return };
        let frame = j.plan.frames[slot];
        let samples = j.plan.samples_through(pass);
        self.emit(ApiEvent::Preview { job, frame, pass: pass as u32, samples });
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
        let frame = j.plan.frames[slot];
        self.counters.frames_done += 1;
        self.log(job, LogLevel::Info, format!("frame {frame} written"));
        self.emit(ApiEvent::Frame { job, frame });
        self.maybe_finish(job);
    }

    fn fail_job(&mut self, job: u64, error: String) {
        let Some(j) = self.jobs.get_mut(&job) else { return };
        if j.state.is_finished() {
            return;
        }
        j.state = JobState::Failed;
        tracing::error!(job, %error, "job failed");
        self.set_state(job, JobState::Failed, Some(error));
        let now = self.now();
        self.scheduler.handle(now, Event::JobCancelled { job: JobId(job) });
    }

    fn maybe_finish(&mut self, job: u64) {
        let Some(j) = self.jobs.get_mut(&job) else { return };
        if j.frames_written == j.plan.frames.len() && !j.state.is_finished() {
            j.state = JobState::Done;
            tracing::info!(job, frames = j.frames_written, "job done");
            self.set_state(job, JobState::Done, None);
        }
    }

    fn status(&self) -> FarmStatus {
        let now = self.now();
        FarmStatus {
            counters: self.counters,
            leases: self.scheduler.lease_count(),
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
                    eta_s: eta(j, now),
                })
                .collect(),
        }
    }
}

/// Remaining tiles over this session's rate, once a few tiles have given one.
fn eta(j: &LiveJob, now: u64) -> Option<f64> {
    if j.state.is_finished() {
        return None;
    }
    let done = j.persisted_total();
    let gained = done.saturating_sub(j.done_at_load);
    let elapsed_s = now.saturating_sub(j.loaded_ms) as f64 / 1000.0;
    if gained == 0 || elapsed_s <= 0.0 {
        return None;
    }
    let rate = f64::from(gained) / elapsed_s;
    Some(f64::from(j.plan.total_tiles().saturating_sub(done)) / rate)
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// `proof`, marked as confirmed whole by a second opinion (`by`).
fn confirmed(mut proof: super::verify::TileProof, by: Confirmation) -> super::verify::TileProof {
    proof.confirmed_by = Some(by);
    proof
}
