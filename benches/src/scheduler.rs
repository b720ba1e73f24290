//! The scheduler alone, without sockets: decisions per second when many
//! workers stream results in and get their next tiles back.

use std::time::Instant;

use anyhow::Result;
use tessera_coordinator::scheduler::*;

use crate::{Effort, Row};

pub fn run(effort: Effort) -> Result<Vec<Row>> {
    let (workers, tiles) = match effort {
        Effort::Quick => (100u64, 20_000u32),
        Effort::Full => (1_000, 1_000_000),
    };
    let mut s = Scheduler::new(Config::default());
    s.handle(0, Event::JobSubmitted { job: JobId(1), tiles, priority: 0, needs_gpu: false });
    let mut outstanding: Vec<(WorkerId, LeaseId)> = Vec::new();
    for w in 0..workers {
        s.handle(0, Event::WorkerJoined { worker: WorkerId(w), slots: 8, gpu: None, holding: vec![] });
    }
    let mut decisions = 0u64;
    let drain = |s: &mut Scheduler, out: &mut Vec<(WorkerId, LeaseId)>, decisions: &mut u64| {
        while let Some(a) = s.poll_action() {
            *decisions += 1;
            if let Action::Dispatch { worker, lease, .. } = a {
                out.push((worker, lease));
            }
        }
    };
    drain(&mut s, &mut outstanding, &mut decisions);
    let started = Instant::now();
    let mut now = 0u64;
    let mut events = 0u64;
    // Results come back in dispatch order; each frees a slot that is refilled.
    let mut i = 0;
    while i < outstanding.len() {
        let (worker, lease) = outstanding[i];
        i += 1;
        now += 1;
        s.handle(now, Event::TileDone { worker, lease });
        events += 1;
        drain(&mut s, &mut outstanding, &mut decisions);
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(vec![Row {
        name: format!("scheduler alone, {workers} workers × 8 slots, {tiles} tiles"),
        value: format!("{:.0} events/s", events as f64 / secs),
        note: format!("{:.0} actions/s (a result in, a completion and a dispatch out)", decisions as f64 / secs),
    }])
}
