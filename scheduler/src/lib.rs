//! The scheduler: which worker renders which tile, as a pure state machine.
//!
//! **Architecture Invariant:** no sockets, no clock, no threads, no
//! `HashMap` iteration (DESIGN.md invariant 4). Time comes in with every
//! call (`now`, milliseconds on any monotonic clock); decisions go out as
//! [`Action`]s the caller performs. The same events in the same order give
//! the same actions, so the scheduler can be simulated with thousands of
//! fake workers in one process (`tests/all/sim.rs`).
//!
//! Method taxonomy, as in quinn-proto's `Connection`:
//! - `handle(now, Event)`: something happened (a worker joined, a tile
//!   came back, a job was submitted...).
//! - `handle_timeout(now)`: call when the deadline of `poll_timeout` passes.
//! - `poll_action() -> Option<Action>`: drain after each call.
//! - `poll_timeout() -> Option<u64>`: the next deadline to wake up for.
//!
//! Dispatch is **push**: a worker advertises `slots`, and the scheduler
//! keeps up to `slots × (1 + prefetch)` tiles leased to it, so a slot that
//! finishes has its next tile already on the worker.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// A job, as the store numbers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId(pub u64);

/// A connected worker (a connection, not an identity: a reconnect is a new id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkerId(pub u64);

/// One grant of one tile to one worker. A tile may have two leases at once
/// when a straggler is re-dispatched speculatively.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaseId(pub u64);

/// A tile of a job: `index` counts tiles across all of the job's frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TileRef {
    pub job: JobId,
    pub index: u32,
}

/// A GPU class (vendor, device, driver), numbered by the caller: GPU
/// results are compared by hash only within one class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GpuClassId(pub u32);

/// A tile a rejoining worker holds from a lease it had before its
/// connection was lost (in [`Event::WorkerJoined`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    pub tile: TileRef,
    /// How long ago the worker was given the lost lease: one older than
    /// [`Config::lease_timeout_ms`] has expired and is not honoured.
    pub age_ms: u64,
}

/// Tunables, each with the default it has and why.
#[derive(Clone, Debug)]
pub struct Config {
    /// Extra tiles leased per slot beyond the one rendering. Default 1: a
    /// slot never waits a round trip for its next tile.
    pub prefetch: u32,
    /// A worker silent for this long is gone; its leases return to the
    /// queue. Default 15 s (heartbeats come every 5 s).
    pub heartbeat_timeout_ms: u64,
    /// A lease not finished by then is re-queued (the worker keeps living).
    /// Default 10 min.
    pub lease_timeout_ms: u64,
    /// Failures of one tile before the job fails. Default 3.
    pub max_tile_failures: u32,
    /// Failures on one job after which a worker gets no more of its tiles.
    /// Default 2.
    pub blocklist_after: u32,
    /// Near the end of a job, a tile running longer than this many times
    /// the job's median tile time is also given to an idle worker; the
    /// first result wins. Default 3.
    pub straggler_factor: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            prefetch: 1,
            heartbeat_timeout_ms: 15_000,
            lease_timeout_ms: 600_000,
            max_tile_failures: 3,
            blocklist_after: 2,
            straggler_factor: 3,
        }
    }
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    WorkerJoined {
        worker: WorkerId,
        slots: u32,
        /// The GPU class it renders GPU tiles on, if it offers a GPU.
        gpu: Option<GpuClassId>,
        /// Tiles it was rendering (or rendered) under leases of a
        /// connection that was lost, typically to a coordinator that died:
        /// they are leased back to it first, so a fail-over costs no work.
        holding: Vec<Held>,
    },
    /// The worker closed its connection or was dropped.
    WorkerLeft {
        worker: WorkerId,
    },
    Heartbeat {
        worker: WorkerId,
    },
    /// A job of `tiles` tiles; higher `priority` first, then submission order.
    JobSubmitted {
        job: JobId,
        tiles: u32,
        priority: i32,
        /// Only workers with a GPU may render it (`--engine gpu`).
        needs_gpu: bool,
    },
    /// Tiles already done (from the store, after a restart): not dispatched.
    TilesAlreadyDone {
        job: JobId,
        tiles: Vec<u32>,
    },
    JobCancelled {
        job: JobId,
    },
    /// The worker's result for `lease` passed verification.
    TileDone {
        worker: WorkerId,
        lease: LeaseId,
    },
    /// The worker reported failure, or its result failed verification.
    TileFailed {
        worker: WorkerId,
        lease: LeaseId,
    },
    /// The worker's result for `lease` waits for a second opinion (adaptive
    /// replication): the tile goes back to the front of the queue for a
    /// worker that has not rendered it yet. Not a failure.
    Replicate {
        worker: WorkerId,
        lease: LeaseId,
        /// A GPU tile's second opinion must come from the same GPU class
        /// (results are bit-identical only there); `None`: any worker.
        class: Option<GpuClassId>,
    },
    /// A tile confirmed outside any lease (the coordinator rendered the
    /// second opinion itself): done, with `TileCompleted` for `worker`.
    TileConfirmed {
        tile: TileRef,
        worker: WorkerId,
    },
}

/// What the caller must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send the tile to the worker.
    Dispatch {
        worker: WorkerId,
        lease: LeaseId,
        tile: TileRef,
    },
    /// Tell the worker to drop the lease (cancelled job, lost race, timeout).
    Revoke {
        worker: WorkerId,
        lease: LeaseId,
    },
    /// The tile is done: persist it before acknowledging (invariant 6).
    TileCompleted {
        tile: TileRef,
        worker: WorkerId,
    },
    JobCompleted {
        job: JobId,
    },
    JobFailed {
        job: JobId,
        tile: u32,
    },
    /// Close the worker's connection: it missed its heartbeats.
    DisconnectWorker {
        worker: WorkerId,
    },
}

#[derive(Debug)]
struct Worker {
    slots: u32,
    gpu: Option<GpuClassId>,
    last_seen: u64,
    leases: BTreeSet<LeaseId>,
}

#[derive(Debug)]
struct Lease {
    tile: TileRef,
    worker: WorkerId,
    started: u64,
}

#[derive(Debug)]
struct Job {
    priority: i32,
    seq: u64,
    /// Tiles waiting for a worker, in order.
    queue: VecDeque<u32>,
    done: BTreeSet<u32>,
    total: u32,
    /// Live leases per tile (two during speculation).
    running: BTreeMap<u32, Vec<LeaseId>>,
    failures: BTreeMap<u32, u32>,
    worker_failures: BTreeMap<WorkerId, u32>,
    /// Durations of the last finished tiles (a ring of `RECENT`), for the
    /// straggler rule.
    durations: Vec<u64>,
    next_duration: usize,
    /// Live leases by start time: the oldest are the straggler candidates.
    by_start: BTreeSet<(u64, LeaseId)>,
    /// Tiles waiting for a second opinion, and the workers that rendered
    /// them already (none of whom may render them again).
    replicas: BTreeMap<u32, BTreeSet<WorkerId>>,
    /// Of those, the ones whose second opinion must come from one GPU class.
    replica_class: BTreeMap<u32, GpuClassId>,
    needs_gpu: bool,
}

/// Finished-tile durations kept per job for the median.
const RECENT: usize = 255;

impl Job {
    fn median_duration(&self) -> Option<u64> {
        if self.durations.len() < 3 {
            return None;
        }
        let mut d = self.durations.clone();
        let mid = d.len() / 2;
        Some(*d.select_nth_unstable(mid).1)
    }

    fn record_duration(&mut self, d: u64) {
        if self.durations.len() < RECENT {
            self.durations.push(d);
        } else {
            self.durations[self.next_duration] = d;
            self.next_duration = (self.next_duration + 1) % RECENT;
        }
    }

    fn blocked(&self, worker: WorkerId, config: &Config) -> bool {
        self.worker_failures.get(&worker).is_some_and(|n| *n >= config.blocklist_after)
    }

    /// Whether `worker` already rendered `index` (awaiting a second opinion).
    fn rendered_by(&self, index: u32, worker: WorkerId) -> bool {
        self.replicas.get(&index).is_some_and(|ws| ws.contains(&worker))
    }

    /// Whether a worker with `gpu` may render `index`: a GPU-only job needs
    /// a GPU, and a GPU tile's second opinion needs its class.
    fn fits(&self, index: u32, gpu: Option<GpuClassId>) -> bool {
        (!self.needs_gpu || gpu.is_some()) && self.replica_class.get(&index).is_none_or(|c| Some(*c) == gpu)
    }

    fn forget_replica(&mut self, index: u32) {
        self.replicas.remove(&index);
        self.replica_class.remove(&index);
    }
}

/// A deadline the scheduler waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Heartbeat(WorkerId),
    Lease(LeaseId),
}

/// The scheduler's state. See the module docs.
#[derive(Debug, Default)]
pub struct Scheduler {
    config: Config,
    workers: BTreeMap<WorkerId, Worker>,
    jobs: BTreeMap<JobId, Job>,
    leases: BTreeMap<LeaseId, Lease>,
    actions: VecDeque<Action>,
    /// Workers holding fewer leases than their capacity: only these are
    /// visited when tiles are handed out, so an event costs O(log n), not O(n).
    hungry: BTreeSet<WorkerId>,
    /// Every deadline, ordered: heartbeats and leases.
    timers: BTreeSet<(u64, Timer)>,
    /// Tiles waiting in all queues.
    queued: usize,
    next_lease: u64,
    next_seq: u64,
}

impl Scheduler {
    pub fn new(config: Config) -> Scheduler {
        Scheduler { config, ..Scheduler::default() }
    }

    /// Feeds one event; then drain [`Self::poll_action`].
    pub fn handle(&mut self, now: u64, event: Event) {
        match event {
            Event::WorkerJoined { worker, slots, gpu, holding } => {
                if self.workers.contains_key(&worker) {
                    return;
                }
                self.workers
                    .insert(worker, Worker { slots: slots.max(1), gpu, last_seen: now, leases: BTreeSet::new() });
                self.timers.insert((now + self.config.heartbeat_timeout_ms, Timer::Heartbeat(worker)));
                self.hungry.insert(worker);
                self.adopt(now, worker, &holding);
            }
            Event::WorkerLeft { worker } => self.remove_worker(worker, false),
            Event::Heartbeat { worker } => {
                if let Some(w) = self.workers.get_mut(&worker) {
                    let timeout = self.config.heartbeat_timeout_ms;
                    self.timers.remove(&(w.last_seen + timeout, Timer::Heartbeat(worker)));
                    w.last_seen = w.last_seen.max(now);
                    self.timers.insert((w.last_seen + timeout, Timer::Heartbeat(worker)));
                }
            }
            Event::JobSubmitted { job, tiles, priority, needs_gpu } => {
                if self.jobs.contains_key(&job) {
                    return;
                }
                self.next_seq += 1;
                self.jobs.insert(
                    job,
                    Job {
                        priority,
                        seq: self.next_seq,
                        queue: (0..tiles).collect(),
                        done: BTreeSet::new(),
                        total: tiles,
                        running: BTreeMap::new(),
                        failures: BTreeMap::new(),
                        worker_failures: BTreeMap::new(),
                        durations: Vec::new(),
                        next_duration: 0,
                        by_start: BTreeSet::new(),
                        replicas: BTreeMap::new(),
                        replica_class: BTreeMap::new(),
                        needs_gpu,
                    },
                );
                self.queued += tiles as usize;
                if tiles == 0 {
                    self.finish_job(job);
                }
            }
            Event::TilesAlreadyDone { job, tiles } => {
                if let Some(j) = self.jobs.get_mut(&job) {
                    for t in tiles.into_iter().filter(|t| *t < j.total) {
                        j.done.insert(t);
                    }
                    let done = &j.done;
                    let before = j.queue.len();
                    j.queue.retain(|t| !done.contains(t));
                    self.queued -= before - j.queue.len();
                    if j.done.len() as u32 == j.total && j.running.is_empty() {
                        self.finish_job(job);
                    }
                }
            }
            Event::JobCancelled { job } => self.remove_job(job),
            Event::TileDone { worker, lease } => self.tile_done(now, worker, lease),
            Event::TileFailed { worker, lease } => self.tile_failed(worker, lease),
            Event::Replicate { worker, lease, class } => self.replicate(worker, lease, class),
            Event::TileConfirmed { tile, worker } => self.tile_confirmed(tile, worker),
        }
        self.dispatch(now);
    }

    /// Handles every deadline up to `now`: silent workers, expired leases.
    pub fn handle_timeout(&mut self, now: u64) {
        while let Some(&(deadline, timer)) = self.timers.first() {
            if deadline > now {
                break;
            }
            self.timers.pop_first();
            match timer {
                Timer::Heartbeat(worker) => self.remove_worker(worker, true),
                Timer::Lease(lease) => {
                    if let Some(l) = self.leases.get(&lease) {
                        let tile = l.tile;
                        self.drop_lease(lease, true);
                        self.requeue_if_orphaned(tile);
                    }
                }
            }
        }
        self.dispatch(now);
    }

    /// The next action to perform, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When `handle_timeout` must next be called.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.timers.first().map(|(t, _)| *t)
    }

    /// Live leases (for tests and metrics).
    pub fn lease_count(&self) -> usize {
        self.leases.len()
    }

    /// Tiles of `job` done so far, if the job is still known.
    pub fn done_count(&self, job: JobId) -> Option<usize> {
        self.jobs.get(&job).map(|j| j.done.len())
    }

    /// Leases held by a worker (for tests and metrics).
    pub fn worker_leases(&self, worker: WorkerId) -> usize {
        self.workers.get(&worker).map_or(0, |w| w.leases.len())
    }

    fn remove_worker(&mut self, worker: WorkerId, disconnect: bool) {
        let Some(w) = self.workers.remove(&worker) else { return };
        self.hungry.remove(&worker);
        self.timers.remove(&(w.last_seen + self.config.heartbeat_timeout_ms, Timer::Heartbeat(worker)));
        if disconnect {
            self.actions.push_back(Action::DisconnectWorker { worker });
        }
        for lease in w.leases {
            if let Some(l) = self.leases.get(&lease) {
                let tile = l.tile;
                self.drop_lease(lease, false);
                self.requeue_if_orphaned(tile);
            }
        }
    }

    /// Forgets a lease everywhere; with `revoke`, tells its worker.
    fn drop_lease(&mut self, lease: LeaseId, revoke: bool) {
        let Some(l) = self.leases.remove(&lease) else { return };
        self.timers.remove(&(l.started + self.config.lease_timeout_ms, Timer::Lease(lease)));
        if let Some(w) = self.workers.get_mut(&l.worker) {
            w.leases.remove(&lease);
            self.hungry.insert(l.worker);
            if revoke {
                self.actions.push_back(Action::Revoke { worker: l.worker, lease });
            }
        }
        if let Some(j) = self.jobs.get_mut(&l.tile.job) {
            j.by_start.remove(&(l.started, lease));
            if let Some(list) = j.running.get_mut(&l.tile.index) {
                list.retain(|x| *x != lease);
                if list.is_empty() {
                    j.running.remove(&l.tile.index);
                }
            }
        }
    }

    /// Puts a tile back at the front of its queue if nothing renders it.
    fn requeue_if_orphaned(&mut self, tile: TileRef) {
        if let Some(j) = self.jobs.get_mut(&tile.job) {
            if !j.done.contains(&tile.index) && !j.running.contains_key(&tile.index) && !j.queue.contains(&tile.index) {
                j.queue.push_front(tile.index);
                self.queued += 1;
            }
        }
    }

    /// Leases back to a rejoining `worker` the tiles it still holds from a
    /// lost connection, before anything else is dispatched to it. A tile is
    /// adopted when its job still wants it: not done, not waiting for a
    /// second opinion (a worker must not pick who checks whom), allowed to
    /// this worker, and its lost lease not expired. A tile queued is taken
    /// from the queue; one already leased to another worker gets this one
    /// as a twin, and the first result wins as with a straggler (the
    /// holder's is usually finished already).
    ///
    /// The hold is only a claim: the result that comes back is verified
    /// like any other, so a worker that lies gains nothing but the tile.
    fn adopt(&mut self, now: u64, worker: WorkerId, holding: &[Held]) {
        let gpu = self.workers.get(&worker).and_then(|w| w.gpu);
        for held in holding {
            if held.age_ms >= self.config.lease_timeout_ms {
                continue;
            }
            let (tile, index) = (held.tile, held.tile.index);
            let Some(j) = self.jobs.get_mut(&tile.job) else { continue };
            if index >= j.total
                || j.done.contains(&index)
                || j.replicas.contains_key(&index)
                || j.blocked(worker, &self.config)
                || !j.fits(index, gpu)
            {
                continue;
            }
            match j.running.get(&index).map(Vec::as_slice) {
                None => {
                    let Some(pos) = j.queue.iter().position(|t| *t == index) else { continue };
                    j.queue.remove(pos);
                    self.queued -= 1;
                }
                Some([other]) if self.leases.get(other).is_some_and(|l| l.worker != worker) => {}
                // Already this worker's, or already twinned.
                Some(_) => continue,
            }
            self.grant(now, worker, tile);
        }
    }

    fn tile_done(&mut self, now: u64, worker: WorkerId, lease: LeaseId) {
        // A result for a lease this worker does not hold is ignored: the
        // lease was revoked, timed out, or never given to it.
        let Some(l) = self.leases.get(&lease).filter(|l| l.worker == worker) else { return };
        let (tile, started) = (l.tile, l.started);
        self.drop_lease(lease, false);
        let Some(j) = self.jobs.get_mut(&tile.job) else { return };
        if !j.done.insert(tile.index) {
            return;
        }
        j.forget_replica(tile.index);
        j.record_duration(now.saturating_sub(started));
        // The speculative twin, if any, lost the race.
        let twins = j.running.remove(&tile.index).unwrap_or_default();
        for twin in twins {
            self.drop_lease(twin, true);
        }
        self.actions.push_back(Action::TileCompleted { tile, worker });
        if let Some(j) = self.jobs.get(&tile.job) {
            if j.done.len() as u32 == j.total {
                self.finish_job(tile.job);
            }
        }
    }

    fn tile_failed(&mut self, worker: WorkerId, lease: LeaseId) {
        let Some(l) = self.leases.get(&lease).filter(|l| l.worker == worker) else { return };
        let tile = l.tile;
        self.drop_lease(lease, false);
        let max_failures = self.config.max_tile_failures;
        let Some(j) = self.jobs.get_mut(&tile.job) else { return };
        *j.worker_failures.entry(worker).or_default() += 1;
        let failures = j.failures.entry(tile.index).or_default();
        *failures += 1;
        if *failures >= max_failures {
            self.remove_job(tile.job);
            self.actions.push_back(Action::JobFailed { job: tile.job, tile: tile.index });
            return;
        }
        self.requeue_if_orphaned(tile);
    }

    fn replicate(&mut self, worker: WorkerId, lease: LeaseId, class: Option<GpuClassId>) {
        let Some(l) = self.leases.get(&lease).filter(|l| l.worker == worker) else { return };
        let tile = l.tile;
        self.drop_lease(lease, false);
        let Some(j) = self.jobs.get_mut(&tile.job) else { return };
        if j.done.contains(&tile.index) {
            return;
        }
        j.replicas.entry(tile.index).or_default().insert(worker);
        match class {
            Some(c) => j.replica_class.insert(tile.index, c),
            None => j.replica_class.remove(&tile.index),
        };
        self.requeue_if_orphaned(tile);
    }

    fn tile_confirmed(&mut self, tile: TileRef, worker: WorkerId) {
        let Some(j) = self.jobs.get_mut(&tile.job) else { return };
        if tile.index >= j.total || !j.done.insert(tile.index) {
            return;
        }
        j.forget_replica(tile.index);
        if let Some(pos) = j.queue.iter().position(|t| *t == tile.index) {
            j.queue.remove(pos);
            self.queued -= 1;
        }
        let running = j.running.remove(&tile.index).unwrap_or_default();
        for lease in running {
            self.drop_lease(lease, true);
        }
        self.actions.push_back(Action::TileCompleted { tile, worker });
        if let Some(j) = self.jobs.get(&tile.job) {
            if j.done.len() as u32 == j.total {
                self.finish_job(tile.job);
            }
        }
    }

    /// Whether any worker holds a lease on `tile` now.
    pub fn is_leased(&self, tile: TileRef) -> bool {
        self.jobs.get(&tile.job).is_some_and(|j| j.running.contains_key(&tile.index))
    }

    fn finish_job(&mut self, job: JobId) {
        self.remove_job(job);
        self.actions.push_back(Action::JobCompleted { job });
    }

    /// Forgets a job: its queue and, revoking them, its leases.
    fn remove_job(&mut self, job: JobId) {
        if let Some(j) = self.jobs.remove(&job) {
            self.queued -= j.queue.len();
            for lease in j.running.values().flatten() {
                self.drop_lease(*lease, true);
            }
        }
    }

    /// Fills every worker up to its capacity: queued tiles first (highest
    /// priority, then oldest job), then speculative copies of stragglers.
    fn dispatch(&mut self, now: u64) {
        if self.hungry.is_empty() {
            return;
        }
        let order: Vec<JobId> = {
            let mut jobs: Vec<(&JobId, &Job)> = self.jobs.iter().collect();
            jobs.sort_by_key(|(_, j)| (std::cmp::Reverse(j.priority), j.seq));
            jobs.into_iter().map(|(id, _)| *id).collect()
        };
        // Round-robin one tile per hungry worker per pass, so a big worker
        // does not take a whole queue that others could share.
        while self.queued > 0 {
            let hungry: Vec<WorkerId> = self.hungry.iter().copied().collect();
            let mut progressed = false;
            for w in hungry {
                if self.queued == 0 {
                    break;
                }
                if let Some(tile) = self.next_tile_for(w, &order) {
                    self.grant(now, w, tile);
                    progressed = true;
                }
            }
            if !progressed {
                break;
            }
        }
        self.speculate(now, &order);
    }

    fn next_tile_for(&mut self, worker: WorkerId, order: &[JobId]) -> Option<TileRef> {
        let gpu = self.workers.get(&worker).and_then(|w| w.gpu);
        for &job in order {
            let Some(j) = self.jobs.get_mut(&job) else { continue };
            if j.blocked(worker, &self.config) || (j.needs_gpu && gpu.is_none()) {
                continue;
            }
            // Tiles awaiting a second opinion sit at the front; one this
            // worker rendered already is skipped, not handed back to it,
            // and so is a GPU tile's when the worker is of another class.
            let pos = if j.replicas.is_empty() {
                (!j.queue.is_empty()).then_some(0)
            } else {
                j.queue.iter().position(|t| !j.rendered_by(*t, worker) && j.fits(*t, gpu))
            };
            if let Some(index) = pos.and_then(|p| j.queue.remove(p)) {
                self.queued -= 1;
                return Some(TileRef { job, index });
            }
        }
        None
    }

    fn grant(&mut self, now: u64, worker: WorkerId, tile: TileRef) {
        self.next_lease += 1;
        let lease = LeaseId(self.next_lease);
        self.leases.insert(lease, Lease { tile, worker, started: now });
        self.timers.insert((now + self.config.lease_timeout_ms, Timer::Lease(lease)));
        if let Some(w) = self.workers.get_mut(&worker) {
            w.leases.insert(lease);
            if w.leases.len() as u32 >= w.slots * (1 + self.config.prefetch) {
                self.hungry.remove(&worker);
            }
        }
        if let Some(j) = self.jobs.get_mut(&tile.job) {
            j.running.entry(tile.index).or_default().push(lease);
            j.by_start.insert((now, lease));
        }
        self.actions.push_back(Action::Dispatch { worker, lease, tile });
    }

    /// With nothing queued, an idle worker takes a copy of a tile that has
    /// run far longer than its job's median: a slow worker then delays the
    /// end of a job by at most about one tile's time.
    fn speculate(&mut self, now: u64, order: &[JobId]) {
        let idle: Vec<WorkerId> =
            self.hungry.iter().copied().filter(|w| self.workers.get(w).is_some_and(|w| w.leases.is_empty())).collect();
        if idle.is_empty() {
            return;
        }
        // Stragglers, oldest first within job priority order: walk each
        // job's leases by start time and stop at the first that is not late,
        // or once there are as many as idle workers.
        let mut stragglers: Vec<(TileRef, WorkerId)> = Vec::new();
        for &job in order {
            let Some(j) = self.jobs.get(&job) else { continue };
            if !j.queue.is_empty() {
                continue;
            }
            let Some(median) = j.median_duration() else { continue };
            let limit = median.saturating_mul(u64::from(self.config.straggler_factor)).max(1);
            for &(started, lease) in &j.by_start {
                if now.saturating_sub(started) <= limit || stragglers.len() >= idle.len() {
                    break;
                }
                let l = &self.leases[&lease];
                if j.running.get(&l.tile.index).is_some_and(|ls| ls.len() == 1) {
                    stragglers.push((l.tile, l.worker));
                }
            }
        }
        let mut idle = idle.into_iter();
        for (tile, holder) in stragglers {
            let Some(w) = idle.by_ref().find(|w| {
                let job = &self.jobs[&tile.job];
                *w != holder
                    && !job.blocked(*w, &self.config)
                    && !job.rendered_by(tile.index, *w)
                    && job.fits(tile.index, self.workers.get(w).and_then(|w| w.gpu))
            }) else {
                break;
            };
            self.grant(now, w, tile);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(s: &mut Scheduler) -> Vec<Action> {
        std::iter::from_fn(|| s.poll_action()).collect()
    }

    fn dispatches(actions: &[Action]) -> Vec<(WorkerId, LeaseId, TileRef)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Dispatch { worker, lease, tile } => Some((*worker, *lease, *tile)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_gpu_job_waits_for_a_gpu_worker() {
        let mut s = Scheduler::new(Config { prefetch: 0, ..Config::default() });
        s.handle(0, Event::JobSubmitted { job: JobId(1), tiles: 2, priority: 5, needs_gpu: true });
        s.handle(0, Event::JobSubmitted { job: JobId(2), tiles: 1, priority: 0, needs_gpu: false });
        s.handle(0, Event::WorkerJoined { worker: WorkerId(1), slots: 1, gpu: None, holding: vec![] });
        // The CPU worker skips the GPU job, though it runs first.
        let d = dispatches(&drain(&mut s));
        assert_eq!(d.iter().map(|d| d.2.job).collect::<Vec<_>>(), vec![JobId(2)]);
        s.handle(1, Event::WorkerJoined { worker: WorkerId(2), slots: 2, gpu: Some(GpuClassId(0)), holding: vec![] });
        let d = dispatches(&drain(&mut s));
        assert_eq!(d.len(), 2);
        assert!(d.iter().all(|(w, _, t)| *w == WorkerId(2) && t.job == JobId(1)), "{d:?}");
    }

    #[test]
    fn a_gpu_tiles_second_opinion_comes_from_its_class_and_a_cpu_tiles_from_anyone() {
        let mut s = Scheduler::new(Config { prefetch: 0, ..Config::default() });
        s.handle(0, Event::JobSubmitted { job: JobId(1), tiles: 2, priority: 0, needs_gpu: false });
        s.handle(0, Event::WorkerJoined { worker: WorkerId(1), slots: 1, gpu: Some(GpuClassId(0)), holding: vec![] });
        s.handle(0, Event::WorkerJoined { worker: WorkerId(2), slots: 1, gpu: None, holding: vec![] });
        let d = dispatches(&drain(&mut s));
        let (gpu_lease, gpu_tile) = d.iter().find(|d| d.0 == WorkerId(1)).map(|d| (d.1, d.2)).unwrap();
        let (cpu_lease, cpu_tile) = d.iter().find(|d| d.0 == WorkerId(2)).map(|d| (d.1, d.2)).unwrap();
        s.handle(1, Event::Replicate { worker: WorkerId(1), lease: gpu_lease, class: Some(GpuClassId(0)) });
        s.handle(1, Event::Replicate { worker: WorkerId(2), lease: cpu_lease, class: None });
        // Worker 1 (GPU class 0) may give the CPU tile's opinion; worker 2
        // (no GPU) may not give the GPU tile's.
        let d = dispatches(&drain(&mut s));
        assert_eq!(d.iter().map(|d| (d.0, d.2)).collect::<Vec<_>>(), vec![(WorkerId(1), cpu_tile)]);
        // Another class does not fit either; the same class does.
        s.handle(2, Event::WorkerJoined { worker: WorkerId(3), slots: 1, gpu: Some(GpuClassId(1)), holding: vec![] });
        assert!(dispatches(&drain(&mut s)).is_empty());
        s.handle(3, Event::WorkerJoined { worker: WorkerId(4), slots: 1, gpu: Some(GpuClassId(0)), holding: vec![] });
        let d = dispatches(&drain(&mut s));
        assert_eq!(d.iter().map(|d| (d.0, d.2)).collect::<Vec<_>>(), vec![(WorkerId(4), gpu_tile)]);
        s.handle(4, Event::TileDone { worker: WorkerId(4), lease: d[0].1 });
        assert!(drain(&mut s).contains(&Action::TileCompleted { tile: gpu_tile, worker: WorkerId(4) }));
    }

    #[test]
    fn a_tile_awaiting_a_second_opinion_goes_to_another_worker() {
        let mut s = Scheduler::new(Config { prefetch: 0, ..Config::default() });
        s.handle(0, Event::JobSubmitted { job: JobId(1), tiles: 2, priority: 0, needs_gpu: false });
        s.handle(0, Event::WorkerJoined { worker: WorkerId(1), slots: 1, gpu: None, holding: vec![] });
        let d = dispatches(&drain(&mut s));
        assert_eq!(d.len(), 1);
        let (_, lease, tile) = d[0];
        s.handle(1, Event::Replicate { worker: WorkerId(1), lease, class: None });
        // Worker 1 gets the other tile, not its own back.
        let d = dispatches(&drain(&mut s));
        assert_eq!(d.len(), 1);
        assert_ne!(d[0].2, tile);
        s.handle(2, Event::WorkerJoined { worker: WorkerId(2), slots: 1, gpu: None, holding: vec![] });
        let d = dispatches(&drain(&mut s));
        assert_eq!(d, vec![(WorkerId(2), d[0].1, tile)]);
        s.handle(3, Event::TileDone { worker: WorkerId(2), lease: d[0].1 });
        assert!(drain(&mut s).contains(&Action::TileCompleted { tile, worker: WorkerId(2) }));
    }

    #[test]
    fn a_tile_confirmed_outside_a_lease_completes_it() {
        let mut s = Scheduler::new(Config { prefetch: 0, ..Config::default() });
        s.handle(0, Event::JobSubmitted { job: JobId(1), tiles: 1, priority: 0, needs_gpu: false });
        s.handle(0, Event::WorkerJoined { worker: WorkerId(1), slots: 1, gpu: None, holding: vec![] });
        let (_, lease, tile) = dispatches(&drain(&mut s))[0];
        s.handle(1, Event::Replicate { worker: WorkerId(1), lease, class: None });
        // Nobody else can give the second opinion: the tile waits.
        assert!(dispatches(&drain(&mut s)).is_empty());
        assert!(!s.is_leased(tile));
        s.handle(2, Event::TileConfirmed { tile, worker: WorkerId(1) });
        let actions = drain(&mut s);
        assert!(actions.contains(&Action::TileCompleted { tile, worker: WorkerId(1) }));
        assert!(actions.contains(&Action::JobCompleted { job: JobId(1) }));
    }

    #[test]
    fn push_dispatch_fills_slots_plus_prefetch() {
        let mut s = Scheduler::new(Config::default());
        s.handle(0, Event::JobSubmitted { job: JobId(1), tiles: 100, priority: 0, needs_gpu: false });
        s.handle(0, Event::WorkerJoined { worker: WorkerId(1), slots: 2, gpu: None, holding: vec![] });
        let d = dispatches(&drain(&mut s));
        assert_eq!(d.len(), 4, "2 slots × (1 running + 1 prefetched)");
        assert_eq!(d.iter().map(|x| x.2.index).collect::<Vec<_>>(), [0, 1, 2, 3]);
        // Each result frees a slot, which is refilled at once.
        s.handle(10, Event::TileDone { worker: WorkerId(1), lease: d[0].1 });
        let a = drain(&mut s);
        assert!(a.contains(&Action::TileCompleted { tile: d[0].2, worker: WorkerId(1) }));
        assert_eq!(dispatches(&a).len(), 1);
    }

    #[test]
    fn priorities_then_submission_order() {
        let mut s = Scheduler::new(Config { prefetch: 0, ..Config::default() });
        s.handle(0, Event::JobSubmitted { job: JobId(1), tiles: 5, priority: 0, needs_gpu: false });
        s.handle(0, Event::JobSubmitted { job: JobId(2), tiles: 5, priority: 10, needs_gpu: false });
        s.handle(0, Event::JobSubmitted { job: JobId(3), tiles: 5, priority: 10, needs_gpu: false });
        s.handle(0, Event::WorkerJoined { worker: WorkerId(1), slots: 1, gpu: None, holding: vec![] });
        let d = dispatches(&drain(&mut s));
        assert_eq!(d[0].2.job, JobId(2));
    }

    #[test]
    fn a_silent_worker_loses_its_tiles_to_others() {
        let mut s = Scheduler::new(Config { prefetch: 0, ..Config::default() });
        s.handle(0, Event::JobSubmitted { job: JobId(1), tiles: 2, priority: 0, needs_gpu: false });
        s.handle(0, Event::WorkerJoined { worker: WorkerId(1), slots: 2, gpu: None, holding: vec![] });
        drain(&mut s);
        s.handle(0, Event::WorkerJoined { worker: WorkerId(2), slots: 2, gpu: None, holding: vec![] });
        assert!(dispatches(&drain(&mut s)).is_empty());
        s.handle(10_000, Event::Heartbeat { worker: WorkerId(2) });
        assert_eq!(s.poll_timeout(), Some(15_000));
        s.handle_timeout(15_000);
        let a = drain(&mut s);
        assert!(a.contains(&Action::DisconnectWorker { worker: WorkerId(1) }));
        let d = dispatches(&a);
        assert_eq!(d.len(), 2);
        assert!(d.iter().all(|x| x.0 == WorkerId(2)));
        assert_eq!(s.lease_count(), 2);
    }

    #[test]
    fn failures_blocklist_the_worker_then_fail_the_job() {
        let mut s = Scheduler::new(Config { prefetch: 0, ..Config::default() });
        s.handle(0, Event::JobSubmitted { job: JobId(1), tiles: 1, priority: 0, needs_gpu: false });
        s.handle(0, Event::WorkerJoined { worker: WorkerId(1), slots: 1, gpu: None, holding: vec![] });
        s.handle(0, Event::WorkerJoined { worker: WorkerId(2), slots: 1, gpu: None, holding: vec![] });
        let mut failed_by = Vec::new();
        for _ in 0..3 {
            let d = dispatches(&drain(&mut s));
            let (w, l, _) = d[0];
            failed_by.push(w);
            s.handle(1, Event::TileFailed { worker: w, lease: l });
        }
        // Worker 1 failed twice and was blocklisted; the third try went to 2.
        assert_eq!(failed_by, [WorkerId(1), WorkerId(1), WorkerId(2)]);
        assert!(drain(&mut s).contains(&Action::JobFailed { job: JobId(1), tile: 0 }));
        assert_eq!(s.lease_count(), 0);
    }

    #[test]
    fn results_for_leases_not_held_are_ignored() {
        let mut s = Scheduler::new(Config::default());
        s.handle(0, Event::JobSubmitted { job: JobId(1), tiles: 1, priority: 0, needs_gpu: false });
        s.handle(0, Event::WorkerJoined { worker: WorkerId(1), slots: 1, gpu: None, holding: vec![] });
        let d = dispatches(&drain(&mut s));
        s.handle(1, Event::TileDone { worker: WorkerId(9), lease: d[0].1 });
        s.handle(1, Event::TileDone { worker: WorkerId(1), lease: LeaseId(999) });
        assert!(!drain(&mut s).iter().any(|a| matches!(a, Action::TileCompleted { .. })));
        s.handle(2, Event::TileDone { worker: WorkerId(1), lease: d[0].1 });
        let a = drain(&mut s);
        assert!(a.contains(&Action::JobCompleted { job: JobId(1) }));
    }

    #[test]
    fn stragglers_are_copied_and_the_loser_revoked() {
        let mut s = Scheduler::new(Config { prefetch: 0, ..Config::default() });
        s.handle(0, Event::JobSubmitted { job: JobId(1), tiles: 5, priority: 0, needs_gpu: false });
        s.handle(0, Event::WorkerJoined { worker: WorkerId(1), slots: 4, gpu: None, holding: vec![] });
        s.handle(0, Event::WorkerJoined { worker: WorkerId(2), slots: 1, gpu: None, holding: vec![] });
        let d = dispatches(&drain(&mut s));
        let slow = d.iter().find(|x| x.0 == WorkerId(2)).copied().unwrap();
        // Worker 1 finishes its four tiles in 10 ms each.
        for &(w, l, _) in d.iter().filter(|x| x.0 == WorkerId(1)) {
            s.handle(10, Event::TileDone { worker: w, lease: l });
        }
        drain(&mut s);
        s.handle(100, Event::Heartbeat { worker: WorkerId(1) });
        let copy = dispatches(&drain(&mut s));
        assert_eq!(copy.len(), 1, "the idle worker takes a copy of the straggler");
        assert_eq!((copy[0].0, copy[0].2), (WorkerId(1), slow.2));
        s.handle(110, Event::TileDone { worker: WorkerId(1), lease: copy[0].1 });
        let a = drain(&mut s);
        assert!(a.contains(&Action::Revoke { worker: WorkerId(2), lease: slow.1 }));
        assert!(a.contains(&Action::JobCompleted { job: JobId(1) }));
        // The slow worker's late result changes nothing.
        s.handle(500, Event::TileDone { worker: WorkerId(2), lease: slow.1 });
        assert!(drain(&mut s).is_empty());
    }

    #[test]
    fn a_restart_skips_tiles_already_done() {
        let mut s = Scheduler::new(Config::default());
        s.handle(0, Event::JobSubmitted { job: JobId(1), tiles: 4, priority: 0, needs_gpu: false });
        s.handle(0, Event::TilesAlreadyDone { job: JobId(1), tiles: vec![0, 2] });
        s.handle(0, Event::WorkerJoined { worker: WorkerId(1), slots: 4, gpu: None, holding: vec![] });
        let d = dispatches(&drain(&mut s));
        assert_eq!(d.iter().map(|x| x.2.index).collect::<Vec<_>>(), [1, 3]);
    }

    #[test]
    fn cancel_revokes_everything() {
        let mut s = Scheduler::new(Config::default());
        s.handle(0, Event::JobSubmitted { job: JobId(1), tiles: 10, priority: 0, needs_gpu: false });
        s.handle(0, Event::WorkerJoined { worker: WorkerId(1), slots: 2, gpu: None, holding: vec![] });
        drain(&mut s);
        s.handle(1, Event::JobCancelled { job: JobId(1) });
        let a = drain(&mut s);
        assert_eq!(a.iter().filter(|x| matches!(x, Action::Revoke { .. })).count(), 4);
        assert_eq!(s.lease_count(), 0);
        assert_eq!(s.worker_leases(WorkerId(1)), 0);
    }

    #[test]
    fn a_rejoining_worker_gets_back_the_tiles_it_holds_first() {
        let mut s = Scheduler::new(Config { prefetch: 0, lease_timeout_ms: 10_000, ..Config::default() });
        let job = JobId(1);
        let held = |index, age_ms| Held { tile: TileRef { job, index }, age_ms };
        s.handle(0, Event::JobSubmitted { job, tiles: 6, priority: 0, needs_gpu: false });
        // Another worker reconnected first and took tile 0.
        s.handle(0, Event::WorkerJoined { worker: WorkerId(1), slots: 1, gpu: None, holding: vec![] });
        let first = dispatches(&drain(&mut s));
        assert_eq!(first.iter().map(|d| d.2.index).collect::<Vec<_>>(), [0]);
        // Tile 5 waits for a second opinion: not the holder's to pick.
        s.handle(0, Event::WorkerJoined { worker: WorkerId(9), slots: 6, gpu: None, holding: vec![] });
        let nine = dispatches(&drain(&mut s));
        for d in &nine {
            if d.2.index == 5 {
                s.handle(1, Event::Replicate { worker: WorkerId(9), lease: d.1, class: None });
            } else {
                s.handle(1, Event::TileFailed { worker: WorkerId(9), lease: d.1 });
            }
        }
        s.handle(1, Event::WorkerLeft { worker: WorkerId(9) });
        drain(&mut s);
        // The rejoining worker holds 0 (leased to worker 1 now), 3
        // (queued), 4 (its lease expired), 5 (awaiting a second opinion)
        // and 40 (no such tile), with one slot.
        let holding = vec![held(0, 500), held(3, 500), held(4, 10_000), held(5, 500), held(40, 500)];
        s.handle(2, Event::WorkerJoined { worker: WorkerId(2), slots: 1, gpu: None, holding });
        let back = dispatches(&drain(&mut s));
        let tiles: Vec<u32> = back.iter().filter(|d| d.0 == WorkerId(2)).map(|d| d.2.index).collect();
        assert_eq!(tiles, [0, 3], "the held tiles come first, even over its one slot");
        // Its finished render of 0 wins the twin race; worker 1's is revoked.
        let twin = back.iter().find(|d| d.2.index == 0).expect("a twin of tile 0");
        s.handle(3, Event::TileDone { worker: WorkerId(2), lease: twin.1 });
        let a = drain(&mut s);
        assert!(a.contains(&Action::Revoke { worker: WorkerId(1), lease: first[0].1 }), "{a:?}");
        assert!(a.contains(&Action::TileCompleted { tile: TileRef { job, index: 0 }, worker: WorkerId(2) }));
        // Holding a tile twice, or one it already has, leases nothing more.
        s.handle(
            4,
            Event::WorkerJoined { worker: WorkerId(3), slots: 1, gpu: None, holding: vec![held(3, 1), held(3, 1)] },
        );
        let three = dispatches(&drain(&mut s));
        assert_eq!(three.iter().filter(|d| d.2.index == 3).count(), 1, "{three:?}");
    }
}
