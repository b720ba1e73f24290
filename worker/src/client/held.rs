//! Renders that outlive their connection.
//!
//! A tile keeps rendering when the connection it came on is lost: its
//! coordinator may have died, and the one that takes over (or the same one,
//! restarted) wants that very tile. Every task is registered here when it
//! arrives and leaves once its result has been delivered (or its lease
//! revoked). What is still here when the worker reconnects was cut off:
//! the worker names those tiles in its [`WorkerOpen::Rejoin`], the
//! coordinator leases back those it still wants, and a task that matches
//! one (everything but the lease number) is answered from the render here.
//!
//! [`WorkerOpen::Rejoin`]: tessera_protocol::wire::WorkerOpen::Rejoin

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tessera_protocol::wire::{HeldTile, TileReply, TileTask};
use tokio::sync::watch;

/// How long a cut-off render is kept: a coordinator's default lease
/// timeout, after which no coordinator honours the lease anyway.
pub const HOLD_FOR: Duration = Duration::from_secs(600);

/// The renders of this worker process, by task.
pub struct Holdings {
    inner: Mutex<Inner>,
    /// Most entries kept (oldest dropped first): what a result costs in
    /// memory is bounded by this many tiles.
    cap: usize,
}

#[derive(Default)]
struct Inner {
    next: u64,
    entries: Vec<Entry>,
}

struct Entry {
    id: u64,
    /// The connection and lease it came under, which acks and revokes name.
    session: u64,
    lease: u64,
    /// The task with its lease number zeroed: what a new lease must match.
    key: TileTask,
    received: Instant,
    outcome: watch::Receiver<Option<TileReply>>,
}

/// A task's registration: publish its outcome here once rendered.
pub struct Registration {
    pub id: u64,
    pub outcome: watch::Sender<Option<TileReply>>,
}

fn key(task: &TileTask) -> TileTask {
    TileTask { lease: 0, ..task.clone() }
}

impl Holdings {
    pub fn new(cap: usize) -> Holdings {
        Holdings { inner: Mutex::default(), cap: cap.max(1) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a task that has just arrived.
    pub fn register(&self, session: u64, task: &TileTask, received: Instant) -> Registration {
        let (tx, rx) = watch::channel(None);
        let mut inner = self.lock();
        inner.next += 1;
        let id = inner.next;
        inner.entries.push(Entry { id, session, lease: task.lease, key: key(task), received, outcome: rx });
        let over = inner.entries.len().saturating_sub(self.cap);
        inner.entries.drain(..over);
        Registration { id, outcome: tx }
    }

    /// Forgets a task that will not be answered (revoked before it
    /// started, its stream reset, its job unpreparable).
    pub fn forget(&self, id: u64) {
        self.lock().entries.retain(|e| e.id != id);
    }

    /// Forgets the task of `lease` on connection `session`: the coordinator
    /// acked its result (durable, or refused) or revoked it.
    pub fn settled(&self, session: u64, lease: u64) {
        self.lock().entries.retain(|e| (e.session, e.lease) != (session, lease));
    }

    /// What to name in a rejoin: every render still here that has not
    /// failed and is not too old. Called before the new connection has
    /// any task of its own, so everything here was cut off.
    pub fn holding(&self, now: Instant) -> Vec<HeldTile> {
        let mut inner = self.lock();
        inner.entries.retain(|e| {
            now.duration_since(e.received) < HOLD_FOR && !matches!(*e.outcome.borrow(), Some(TileReply::Failed { .. }))
        });
        inner
            .entries
            .iter()
            .map(|e| HeldTile {
                job: e.key.job.job,
                tile: e.key.tile,
                age_ms: now.duration_since(e.received).as_millis() as u64,
            })
            .collect()
    }

    /// Takes the render of a task that matches `task` but for its lease,
    /// if one is held: its outcome (now, or once the render finishes).
    pub fn take(&self, task: &TileTask) -> Option<watch::Receiver<Option<TileReply>>> {
        let key = key(task);
        let mut inner = self.lock();
        let pos = inner.entries.iter().position(|e| e.key == key)?;
        Some(inner.entries.remove(pos).outcome)
    }
}

/// The reply to `task` made from a held outcome, or `None` when the held
/// render failed (the task is then rendered afresh). The signature covers
/// the commitment, which names the tile, not the lease: the lease number is
/// only the envelope's.
pub fn answer(task: &TileTask, held: TileReply) -> Option<TileReply> {
    match held {
        TileReply::Done(mut result) if result.tile == task.tile => {
            result.lease = task.lease;
            Some(TileReply::Done(result))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_protocol::wire::{Engine, JobDescriptor, TileResult};
    use tessera_protocol::{ContentHash, Rect, SampleRange, TileAccumulators};

    fn task(lease: u64, tile: u32) -> TileTask {
        TileTask {
            lease,
            job: JobDescriptor {
                job: 3,
                module: ContentHash::of(b"m"),
                scene: ContentHash::of(b"s"),
                width: 8,
                height: 8,
                fps: 24.0,
                extra: "{}".into(),
                fuel_per_tile: 1,
                fuel_per_pixel_sample: 1,
                engine: Engine::Cpu,
                guides: false,
            },
            tile,
            frame: 1,
            rect: Rect { x: 0, y: 0, width: 8, height: 8 },
            samples: SampleRange { start: 0, count: 4 },
            seed: 7,
            gpu: false,
        }
    }

    fn done(t: &TileTask) -> TileReply {
        let rect = t.rect;
        TileReply::Done(TileResult {
            lease: t.lease,
            tile: t.tile,
            accumulators: TileAccumulators { rect, color: vec![0.5; 192], weight: vec![1.0; 64], aovs: vec![] },
            fuel: 10,
            millis: 1,
            commitment: [1; 32],
            signature: vec![2; 64],
            gpu: None,
        })
    }

    #[test]
    fn a_cut_off_render_answers_the_same_tile_under_a_new_lease_once() {
        let h = Holdings::new(16);
        let t0 = Instant::now();
        let (a, b) = (task(5, 0), task(6, 1));
        let ra = h.register(1, &a, t0);
        let rb = h.register(1, &b, t0);
        ra.outcome.send_replace(Some(done(&a)));
        rb.outcome.send_replace(Some(TileReply::Failed { lease: 6, error: "trap".into(), retryable: false }));
        let listed = h.holding(t0 + Duration::from_millis(40));
        assert_eq!(listed, [HeldTile { job: 3, tile: 0, age_ms: 40 }], "a failed render is not offered");
        // Another seed is another task, not this render.
        assert!(h.take(&TileTask { seed: 8, ..task(1, 0) }).is_none());
        let outcome = h.take(&task(1, 0)).expect("held");
        let reply = answer(&task(1, 0), outcome.borrow().clone().expect("finished")).expect("done");
        let TileReply::Done(r) = reply else { panic!() };
        assert_eq!((r.lease, r.tile), (1, 0));
        assert!(h.take(&task(2, 0)).is_none(), "taken once");
    }

    #[test]
    fn old_and_excess_renders_are_dropped_and_settled_ones_forgotten() {
        let h = Holdings::new(3);
        let t0 = Instant::now();
        let _r0 = h.register(1, &task(1, 0), t0);
        let r1 = h.register(1, &task(2, 1), t0 + Duration::from_secs(1));
        let _r2 = h.register(2, &task(2, 2), t0 + Duration::from_secs(2));
        let _r3 = h.register(2, &task(3, 3), t0 + Duration::from_secs(3));
        let tiles = |h: &Holdings, at| h.holding(at).iter().map(|t| t.tile).collect::<Vec<_>>();
        assert_eq!(tiles(&h, t0 + Duration::from_secs(3)), [1, 2, 3], "the oldest went over the cap");
        // An ack names a lease of one connection: lease 2 of the second.
        h.settled(2, 2);
        assert_eq!(tiles(&h, t0 + Duration::from_secs(3)), [1, 3]);
        h.forget(r1.id);
        assert_eq!(tiles(&h, t0 + HOLD_FOR + Duration::from_millis(2500)), [3], "the others' leases expired");
    }
}
