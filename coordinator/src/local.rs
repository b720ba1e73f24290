//! Rendering on this machine's cores through the same sandbox the workers
//! use: one job instance per thread, kept across frames, tiles handed out
//! from a shared counter.
//!
//! This is what `tessera render` and `tessera demo` run, so an artist's
//! local check and the farm render the same pixels.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;

use tessera_protocol::Rect;
use tessera_worker::sandbox::{GuestModule, JobInstance, JobSpec, SandboxError, SceneInfo, TileOutput, TileRequest};

use tessera_frame::FrameBuffer;

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
    #[error("frame {frame}, tile at {x},{y}: {source}")]
    Tile { frame: i32, x: u32, y: u32, source: SandboxError },
    #[error("loading the scene: {0}")]
    Load(SandboxError),
    #[error("assembling the frame: {0}")]
    Assemble(#[from] tessera_frame::TileOutsideFrame),
}

/// Totals of a finished frame.
#[derive(Clone, Debug, Default)]
pub struct FrameStats {
    pub tiles: usize,
    pub fuel: u64,
    pub nans: usize,
}

/// A job loaded into one sandbox instance per thread.
pub struct LocalRenderer {
    instances: Vec<JobInstance>,
    width: u32,
    height: u32,
    /// Ask for the denoiser's guides (albedo and normal AOVs) with every tile.
    guides: bool,
}

impl LocalRenderer {
    /// Instantiates `threads` instances of the job (in parallel: each parses
    /// the scene).
    pub fn new(module: &GuestModule, spec: &JobSpec, threads: usize) -> Result<LocalRenderer, LocalRenderError> {
        let instances = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads.max(1))
                .map(|slot| {
                    let mut spec = spec.clone();
                    spec.label = format!("{} slot {slot}", spec.label);
                    scope.spawn(move || module.instantiate(&spec))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| Err(SandboxError::Host("an instantiation thread panicked".into())))
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(LocalRenderError::Load)?;
        Ok(LocalRenderer { instances, width: spec.settings.width, height: spec.settings.height, guides: false })
    }

    /// Renders the denoiser's guides too ([`FrameBuffer::guides`]). They
    /// never change the colour: a pixel's samples are the same either way.
    pub fn with_guides(mut self, guides: bool) -> Self {
        self.guides = guides;
        self
    }

    /// What the job reported about the scene.
    pub fn scene_info(&self) -> &SceneInfo {
        self.instances[0].scene_info()
    }

    /// Renders one frame, calling `on_tile(tile, done, total)` as tiles land.
    /// An instance that fails is replaced by nothing: the render stops with
    /// the first error.
    pub fn render(
        &mut self,
        module: &GuestModule,
        spec: &JobSpec,
        job: &FrameJob,
        mut on_tile: impl FnMut(&TileOutput, usize, usize),
    ) -> Result<(FrameBuffer, FrameStats), LocalRenderError> {
        let tiles = Rect::tiles(self.width, self.height, job.tile_size);
        let next = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let (tx, rx) = mpsc::channel::<Result<TileOutput, LocalRenderError>>();
        let mut frame = if self.guides {
            FrameBuffer::with_guides(self.width, self.height)
        } else {
            FrameBuffer::new(self.width, self.height)
        };
        let guides = self.guides;
        let mut stats = FrameStats::default();

        // A poisoned instance (a trap on an earlier frame) is remade first.
        for (slot, inst) in self.instances.iter_mut().enumerate() {
            if inst.is_poisoned() {
                let mut spec = spec.clone();
                spec.label = format!("{} slot {slot}", spec.label);
                *inst = module.instantiate(&spec).map_err(LocalRenderError::Load)?;
            }
        }

        std::thread::scope(|scope| -> Result<(), LocalRenderError> {
            for instance in self.instances.iter_mut() {
                let (tx, tiles, next, stop) = (tx.clone(), &tiles, &next, &stop);
                scope.spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(rect) = tiles.get(i) else { break };
                        let req = TileRequest::new(job.frame, *rect, 0, job.samples, job.seed).with_guides(guides);
                        let result = instance.render_tile(&req).map_err(|source| LocalRenderError::Tile {
                            frame: job.frame,
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
}

/// Renders one frame with `job.threads` fresh instances of `module`.
pub fn render_frame(
    module: &GuestModule,
    spec: &JobSpec,
    job: &FrameJob,
    on_tile: impl FnMut(&TileOutput, usize, usize),
) -> Result<(FrameBuffer, FrameStats), LocalRenderError> {
    LocalRenderer::new(module, spec, job.threads)?.render(module, spec, job, on_tile)
}
