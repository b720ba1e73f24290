//! The scheduler, without sockets, driven by a seeded simulation of many
//! workers that join, leave, crash, straggle and fail (STYLE.md §6).
//!
//! After every step: no lease is held by a worker the scheduler thinks is
//! gone, and no tile completes twice. At the end, once faults stop, every
//! job has completed (each tile exactly once) or failed. A failing run
//! prints its seed; `TESSERA_SEED=N cargo test sim` replays it.

use std::collections::{BTreeMap, BTreeSet};

use tessera_scheduler::*;

use tessera_test_support::Rng;

struct FakeWorker {
    slots: u32,
    /// Milliseconds per tile per slot.
    speed: u64,
    crashed: bool,
    /// lease → (tile, finish time)
    leases: BTreeMap<LeaseId, (TileRef, u64)>,
}

struct Outcome {
    completed: BTreeMap<TileRef, u32>,
    crashes: u32,
    leaves: u32,
    failures: u32,
    revokes: u32,
    end: u64,
    jobs_done: BTreeSet<JobId>,
    jobs_failed: BTreeSet<JobId>,
}

fn run(seed: u64, workers_total: u64, jobs: u64, tiles_per_job: u32) -> Outcome {
    let mut rng = Rng(seed);
    let mut s = Scheduler::new(Config { heartbeat_timeout_ms: 3_000, lease_timeout_ms: 60_000, ..Config::default() });
    let mut fake: BTreeMap<WorkerId, FakeWorker> = BTreeMap::new();
    let mut out = Outcome {
        completed: BTreeMap::new(),
        crashes: 0,
        leaves: 0,
        failures: 0,
        revokes: 0,
        end: 0,
        jobs_done: BTreeSet::new(),
        jobs_failed: BTreeSet::new(),
    };
    let mut next_worker = 0u64;
    let mut now = 0u64;
    let fault_end = 120_000;

    for j in 0..jobs {
        s.handle(
            0,
            Event::JobSubmitted { job: JobId(j), tiles: tiles_per_job, priority: (j % 3) as i32, needs_gpu: false },
        );
    }

    let apply = |s: &mut Scheduler, fake: &mut BTreeMap<WorkerId, FakeWorker>, out: &mut Outcome, now: u64| {
        while let Some(a) = s.poll_action() {
            match a {
                Action::Dispatch { worker, lease, tile } => match fake.get_mut(&worker) {
                    Some(w) => {
                        let queued = w.leases.len() as u64 / u64::from(w.slots);
                        w.leases.insert(lease, (tile, now + w.speed * (1 + queued)));
                    }
                    // Sent before the worker left (in the same step): the
                    // connection is gone, and the scheduler must have taken
                    // the lease back when it heard of the leave.
                    None => assert_eq!(s.worker_leases(worker), 0, "lease kept for a departed worker"),
                },
                Action::Revoke { worker, lease } => {
                    out.revokes += 1;
                    if let Some(w) = fake.get_mut(&worker) {
                        w.leases.remove(&lease);
                    }
                }
                Action::TileCompleted { tile, .. } => {
                    let n = out.completed.entry(tile).or_default();
                    *n += 1;
                    assert_eq!(*n, 1, "tile {tile:?} completed twice");
                }
                Action::JobCompleted { job } => assert!(out.jobs_done.insert(job)),
                Action::JobFailed { job, .. } => assert!(out.jobs_failed.insert(job)),
                Action::DisconnectWorker { worker } => {
                    fake.remove(&worker);
                }
            }
        }
    };

    while now < 3_600_000 && out.jobs_done.len() + out.jobs_failed.len() < jobs as usize {
        now += 50;
        let faults = now < fault_end;
        // Joins (a steady trickle until the target population is reached).
        if next_worker < workers_total && (next_worker < 50 || rng.chance(0.5)) {
            for _ in 0..rng.below(20) + 1 {
                if next_worker == workers_total {
                    break;
                }
                let id = WorkerId(next_worker);
                next_worker += 1;
                let slots = 1 + rng.below(8) as u32;
                // One worker in 20 is 20× slower than the rest.
                let speed = if rng.chance(0.05) { 20_000 } else { 500 + rng.below(1_000) };
                fake.insert(id, FakeWorker { slots, speed, crashed: false, leases: BTreeMap::new() });
                s.handle(now, Event::WorkerJoined { worker: id, slots, gpu: None });
            }
        }
        let ids: Vec<WorkerId> = fake.keys().copied().collect();
        for id in ids {
            if faults && rng.chance(0.0005) {
                // A clean leave.
                out.leaves += 1;
                fake.remove(&id);
                s.handle(now, Event::WorkerLeft { worker: id });
                continue;
            }
            let w = fake.get_mut(&id).expect("listed");
            if faults && !w.crashed && rng.chance(0.0005) {
                // A crash: the worker goes silent with its leases.
                out.crashes += 1;
                w.crashed = true;
            }
            if w.crashed {
                continue;
            }
            if now.is_multiple_of(1_000) {
                s.handle(now, Event::Heartbeat { worker: id });
            }
            let due: Vec<(LeaseId, TileRef)> =
                w.leases.iter().filter(|(_, (_, t))| *t <= now).map(|(l, (tile, _))| (*l, *tile)).collect();
            for (lease, _) in due {
                fake.get_mut(&id).expect("listed").leases.remove(&lease);
                let event = if faults && rng.chance(0.01) {
                    out.failures += 1;
                    Event::TileFailed { worker: id, lease }
                } else {
                    Event::TileDone { worker: id, lease }
                };
                s.handle(now, event);
            }
        }
        if s.poll_timeout().is_some_and(|t| t <= now) {
            s.handle_timeout(now);
        }
        apply(&mut s, &mut fake, &mut out, now);

        // Safety: every lease the scheduler holds is held by a worker it
        // knows; the fake workers hold at most what they were given.
        let held: usize = fake.keys().map(|w| s.worker_leases(*w)).sum();
        assert!(held <= s.lease_count());
    }
    out.end = now;
    assert_eq!(
        out.jobs_done.len() + out.jobs_failed.len(),
        jobs as usize,
        "seed {seed}: jobs still running at the end"
    );
    assert_eq!(s.lease_count(), 0, "seed {seed}: leases leaked");
    for job in &out.jobs_done {
        for t in 0..tiles_per_job {
            assert_eq!(
                out.completed.get(&TileRef { job: *job, index: t }),
                Some(&1),
                "seed {seed}: tile {t} of {job:?}"
            );
        }
    }
    out
}

fn seeds() -> Vec<u64> {
    match std::env::var("TESSERA_SEED").ok().and_then(|s| s.parse().ok()) {
        Some(seed) => vec![seed],
        None => (1..=4).collect(),
    }
}

#[test]
fn a_thousand_workers_with_faults_finish_every_tile_exactly_once() {
    for seed in seeds() {
        let result = std::panic::catch_unwind(|| run(seed, 1_000, 6, 2_000));
        match result {
            Ok(out) => {
                eprintln!(
                    "seed {seed}: {} jobs done, {} failed, {} crashes, {} leaves, {} tile failures, {} revokes, {} s simulated",
                    out.jobs_done.len(),
                    out.jobs_failed.len(),
                    out.crashes,
                    out.leaves,
                    out.failures,
                    out.revokes,
                    out.end / 1000
                );
                assert!(out.jobs_done.len() >= 4, "seed {seed}: only {} jobs completed", out.jobs_done.len());
                // The run must have exercised the faults it claims to survive.
                assert!(out.crashes > 0 && out.leaves > 0 && out.failures > 0, "seed {seed}: too few faults");
            }
            Err(e) => {
                eprintln!("simulation failed with TESSERA_SEED={seed}");
                std::panic::resume_unwind(e);
            }
        }
    }
}
