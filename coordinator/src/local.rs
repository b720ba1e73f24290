//! Rendering on this machine's cores through the same sandbox the workers
//! use: one job instance per thread, tiles handed out from a shared queue.
//!
//! This is what `tessera demo` (and later `tessera render`) runs, so an
//! artist's local check and the farm render the same pixels.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;

use tessera_protocol::Rect;
use tessera_worker::sandbox::{GuestModule, JobSpec, SandboxError, TileOutput, TileRequest};

use crate::assemble::FrameBuffer;

/// One frame to render.
#[derive(Clone, Debug)]
pub struct FrameJob {
    pub frame: i32,
    pub tile_size: u32,
    pub samples: u32,
    pub seed: u64,
    /// Worker threads; each holds its own instance.
    pub threads: usize,
}

/// Why a local render failed.
#[derive(Debug, thiserror::Error)]
pub enum LocalRenderError {
    #[error("tile at {x},{y}: {source}")]
    Tile { x: u32, y: u32, source: SandboxError },
    #[error("loading the scene: {0}")]
    Load(SandboxError),
    #[error("assembling the frame: {0}")]
    Assemble(#[from] crate::assemble::TileOutsideFrame),
}

/// Totals of a finished frame.
#[derive(Clone, Debug, Default)]
pub struct FrameStats {
    pub tiles: usize,
    pub fuel: u64,
    pub nans: usize,
}

/// Renders one frame with `job.threads` instances of `module`, calling
/// `on_tile` after each tile is added to the frame.
pub fn render_frame(
    module: &GuestModule,
    spec: &JobSpec,
    job: &FrameJob,
    mut on_tile: impl FnMut(&TileOutput, usize, usize),
) -> Result<(FrameBuffer, FrameStats), LocalRenderError> {
    let (width, height) = (spec.settings.width, spec.settings.height);
    let tiles = Rect::tiles(width, height, job.tile_size);
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel::<Result<TileOutput, LocalRenderError>>();
    let mut frame = FrameBuffer::new(width, height);
    let mut stats = FrameStats::default();

    std::thread::scope(|scope| -> Result<(), LocalRenderError> {
        for slot in 0..job.threads.max(1) {
            let (tx, tiles, next, stop) = (tx.clone(), &tiles, &next, &stop);
            let mut spec = spec.clone();
            spec.label = format!("{} slot {slot}", spec.label);
            scope.spawn(move || {
                let mut instance = match module.instantiate(&spec) {
                    Ok(i) => i,
                    Err(e) => {
                        let _ = tx.send(Err(LocalRenderError::Load(e)));
                        return;
                    }
                };
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(rect) = tiles.get(i) else { break };
                    let req = TileRequest::new(job.frame, *rect, 0, job.samples, job.seed);
                    let result = instance.render_tile(&req).map_err(|source| LocalRenderError::Tile {
                        x: rect.x,
                        y: rect.y,
                        source,
                    });
                    let failed = result.is_err();
                    if tx.send(result).is_err() || failed {
                        break;
                    }
                }
            });
        }
        drop(tx);
        let mut done = 0;
        for result in rx {
            let tile = match result {
                Ok(t) => t,
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    return Err(e);
                }
            };
            frame.add_tile(&tile.accumulators)?;
            stats.fuel += tile.fuel_used;
            stats.nans += tile.nans;
            done += 1;
            on_tile(&tile, done, tiles.len());
        }
        stats.tiles = done;
        Ok(())
    })?;
    Ok((frame, stats))
}
