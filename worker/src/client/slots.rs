//! The worker's render slots: one OS thread per slot, each keeping the
//! sandbox instance of the job it last rendered, fed from one shared queue.
//!
//! The queue holds the tiles the coordinator pushed ahead (prefetch), so a
//! slot that finishes takes its next tile without a network round trip.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tessera_protocol::wire::{JobDescriptor, TileReply, TileResult, TileTask};
use tokio::sync::oneshot;

use crate::sandbox::{FuelBudget, GuestModule, JobInstance, JobSettings, JobSpec, SandboxError, TileRequest};

/// What a slot needs for a job besides the tile: the compiled module and
/// the scene, both fetched and checked before the tile is queued.
pub struct JobContext {
    pub module: GuestModule,
    pub scene: Arc<[u8]>,
    /// Signs each tile's commitment (the worker's identity key).
    pub signer: Arc<tessera_protocol::proof::SigningKey>,
}

/// A tile waiting for a slot.
pub struct SlotTask {
    /// The connection the task came on (revocations name its leases).
    pub session: u64,
    pub task: TileTask,
    pub context: Arc<JobContext>,
    pub reply: oneshot::Sender<TileReply>,
}

/// The pool. Dropping it ends the threads once the queue is drained.
pub struct Slots {
    tx: Option<std::sync::mpsc::Sender<SlotTask>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// Leases the coordinator revoked, by connection: skipped if not yet
    /// started.
    revoked: Arc<Mutex<BTreeSet<(u64, u64)>>>,
}

impl Slots {
    pub fn new(count: u32) -> Slots {
        let (tx, rx) = std::sync::mpsc::channel::<SlotTask>();
        let rx = Arc::new(Mutex::new(rx));
        let revoked = Arc::new(Mutex::new(BTreeSet::new()));
        let threads = (0..count.max(1))
            .map(|slot| {
                let (rx, revoked) = (rx.clone(), revoked.clone());
                std::thread::Builder::new()
                    .name(format!("slot-{slot}"))
                    .spawn(move || slot_loop(slot, &rx, &revoked))
                    .expect("spawning a slot thread")
            })
            .collect();
        Slots { tx: Some(tx), threads, revoked }
    }

    /// Queues a tile; the reply arrives on `task.reply`.
    pub fn submit(&self, task: SlotTask) {
        if let Some(tx) = &self.tx {
            // The threads live as long as `self`, so this cannot fail.
            let _ = tx.send(task);
        }
    }

    /// Marks a lease of connection `session` revoked: a slot that has not
    /// started it drops it.
    pub fn revoke(&self, session: u64, lease: u64) {
        self.revoked.lock().unwrap_or_else(|e| e.into_inner()).insert((session, lease));
    }
}

impl Drop for Slots {
    fn drop(&mut self) {
        self.tx = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn slot_loop(slot: u32, rx: &Mutex<std::sync::mpsc::Receiver<SlotTask>>, revoked: &Mutex<BTreeSet<(u64, u64)>>) {
    let mut current: Option<(u64, JobInstance)> = None;
    loop {
        let next = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok(SlotTask { session, task, context, reply }) = next else { return };
        if revoked.lock().unwrap_or_else(|e| e.into_inner()).remove(&(session, task.lease)) {
            continue; // dropping `reply` tells the stream's task
        }
        if reply.is_closed() {
            continue; // the coordinator gave up on this stream
        }
        let result = render(slot, &mut current, &task, &context);
        let _ = reply.send(match result {
            Ok(r) => {
                tracing::debug!(
                    job = task.job.job,
                    tile = task.tile,
                    lease = task.lease,
                    millis = r.millis,
                    "tile rendered"
                );
                TileReply::Done(r)
            }
            Err(e) => {
                tracing::warn!(lease = task.lease, job = task.job.job, tile = task.tile, error = %e, "tile failed");
                TileReply::Failed { lease: task.lease, retryable: is_retryable(&e), error: e.to_string() }
            }
        });
    }
}

/// A trap or a limit hit by deterministic wasm fails the same way anywhere;
/// a host problem (out of memory here, a compile timeout) might not.
fn is_retryable(e: &SandboxError) -> bool {
    matches!(e, SandboxError::Host(_) | SandboxError::CompileTimeout(_) | SandboxError::Timeout { .. })
}

fn render(
    slot: u32,
    current: &mut Option<(u64, JobInstance)>,
    task: &TileTask,
    context: &JobContext,
) -> Result<TileResult, SandboxError> {
    let job = &task.job;
    let fresh = match current {
        Some((id, inst)) => *id != job.job || inst.is_poisoned(),
        None => true,
    };
    if fresh {
        *current = None; // free the old instance's memory first
        let spec = sandbox_job(job, context.scene.clone(), format!("job {} slot {slot}", job.job));
        *current = Some((job.job, context.module.instantiate_with_gpu(&spec, job.engine.allows_gpu())?));
    }
    let Some((_, instance)) = current.as_mut() else { unreachable!("set above") };
    let started = Instant::now();
    let out = instance.render_tile(&tile_request(task))?;
    let millis = started.elapsed().as_millis() as u64;
    let gpu = out.gpu.as_ref().map(|a| a.class());
    Ok(task.seal(out.accumulators, out.fuel_used, millis, gpu, &context.signer))
}

/// The sandbox job a leased job stands for: its scene, the guest's settings
/// and the job's fuel budget. What a worker's slot instantiates, and what
/// anything rendering "as a worker would" (the benchmarks' simulated
/// workers, the tests' honest hand-driven ones) should build too.
pub fn sandbox_job(job: &JobDescriptor, scene: Arc<[u8]>, label: String) -> JobSpec {
    JobSpec {
        scene,
        settings: JobSettings { width: job.width, height: job.height, fps: job.fps, extra: job.extra.clone() },
        fuel: FuelBudget {
            per_tile: job.fuel_per_tile,
            per_pixel_sample: job.fuel_per_pixel_sample,
            ..FuelBudget::default()
        },
        label,
    }
}

/// The tile a task asks for: its rectangle, samples and seed, the
/// denoiser's guides when the job wants them, the GPU where it is allowed.
pub fn tile_request(task: &TileTask) -> TileRequest {
    let mut request = TileRequest::new(task.frame, task.rect, task.samples.start, task.samples.count, task.seed)
        .with_guides(task.job.guides);
    request.gpu = task.gpu;
    request
}
