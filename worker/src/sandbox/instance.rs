use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_protocol::{AovPlane, Rect, SampleRange, TileAccumulators};
use wasmtime::{Store, Trap};

use super::bindings::exports::tessera::render::renderer;
use super::bindings::tessera::render::types as wit;
use super::bindings::RenderJob;
use super::config::FuelBudget;
use super::error::{GuestJobError, SandboxError};
use super::host::{GuestLog, HostState, LimitHit};
use super::module::{GuestModule, EPOCH_TICK};

/// Settings every job has (the WIT `job-settings`).
#[derive(Clone, Debug, PartialEq)]
pub struct JobSettings {
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    /// Job-type specific settings, a JSON object.
    pub extra: String,
}

impl JobSettings {
    /// A `width` × `height` job at 24 fps with no extra settings.
    pub fn new(width: u32, height: u32) -> Self {
        JobSettings { width, height, fps: 24.0, extra: "{}".into() }
    }
}

/// Everything an instance needs to load a job: the scene, the settings and
/// the job's fuel budget. Shared by every instance of the job.
#[derive(Clone, Debug)]
pub struct JobSpec {
    pub scene: Arc<[u8]>,
    pub settings: JobSettings,
    pub fuel: FuelBudget,
    /// Names this instance in logs, e.g. `job 12 slot 3`.
    pub label: String,
}

impl JobSpec {
    pub fn new(scene: Vec<u8>, settings: JobSettings) -> Self {
        JobSpec { scene: scene.into(), settings, fuel: FuelBudget::default(), label: "local".into() }
    }
}

/// What `load-scene` reported about the scene.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SceneInfo {
    pub frame_start: i32,
    pub frame_end: i32,
    pub width: u32,
    pub height: u32,
    pub cameras: Vec<String>,
}

/// One tile to render.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TileRequest {
    pub frame: i32,
    pub rect: Rect,
    pub samples: SampleRange,
    pub seed: u64,
    /// Ask for the albedo, normal and depth AOVs.
    pub albedo: bool,
    pub normal: bool,
    pub depth: bool,
    /// The guest may use the instance's GPU (if it has one) for this tile.
    pub gpu: bool,
}

impl TileRequest {
    /// Samples `start .. start + count` of `rect` in `frame`, no AOVs.
    pub fn new(frame: i32, rect: Rect, start: u32, count: u32, seed: u64) -> Self {
        TileRequest {
            frame,
            rect,
            samples: SampleRange { start, count },
            seed,
            albedo: false,
            normal: false,
            depth: false,
            gpu: true,
        }
    }

    /// The same tile on the CPU only, even where the instance has a GPU.
    pub fn cpu_only(self) -> Self {
        TileRequest { gpu: false, ..self }
    }

    /// Asks for the denoiser's guides (`wire::GUIDE_AOVS`: the albedo and
    /// normal AOVs) or none: what a tile of a job with or without
    /// `JobDescriptor::guides` must carry. Depth is never asked for here.
    pub fn with_guides(self, guides: bool) -> Self {
        TileRequest { albedo: guides, normal: guides, depth: false, ..self }
    }
}

/// A rendered tile and what it cost.
#[derive(Clone, Debug)]
pub struct TileOutput {
    /// The accumulators, shape-checked and with NaNs made canonical.
    pub accumulators: TileAccumulators,
    /// Fuel the call used: deterministic, so usable for pricing and credit.
    pub fuel_used: u64,
    /// NaNs the host replaced by the canonical NaN (a well-behaved renderer
    /// drops NaN samples, so this is usually 0).
    pub nans: usize,
    pub elapsed: Duration,
    /// The GPU the guest dispatched work to for this tile, if it did.
    pub gpu: Option<crate::gpu::AdapterDescription>,
}

/// An instance of a job's module with its scene loaded. Reused across tiles;
/// discarded after any error for which
/// [`SandboxError::poisons_instance`] is true.
pub struct JobInstance {
    store: Store<HostState>,
    bindings: RenderJob,
    module: GuestModule,
    spec: JobSpec,
    scene_info: SceneInfo,
    poisoned: bool,
}

impl GuestModule {
    /// Instantiates the module and calls `load-scene` with the job's scene.
    /// The instance may use the sandbox's GPU, if it has one.
    pub fn instantiate(&self, spec: &JobSpec) -> Result<JobInstance, SandboxError> {
        self.instantiate_with_gpu(spec, true)
    }

    /// [`Self::instantiate`], with the sandbox's GPU offered to the job only
    /// when `gpu` is true (a job that did not ask for the GPU never sees it).
    pub fn instantiate_with_gpu(&self, spec: &JobSpec, gpu: bool) -> Result<JobInstance, SandboxError> {
        let sandbox = &self.inner.sandbox;
        let config = &sandbox.config;
        let gpu = config.gpu.as_ref().filter(|_| gpu).map(|g| g.session());
        let mut store = Store::new(&sandbox.engine, HostState::new(config.limits.clone(), spec.label.clone(), gpu));
        store.limiter(|s| s);
        if config.epoch_backstop {
            store.epoch_deadline_trap();
        }
        set_budget(
            &mut store,
            config.fuel.then_some(spec.fuel.load),
            config.epoch_backstop.then_some(config.limits.load_timeout),
        )?;
        let bindings = self
            .inner
            .pre
            .instantiate(&mut store)
            .map_err(|e| classify(&store, e, "instantiation", spec.fuel.load, config.limits.load_timeout))?;

        let mut instance = JobInstance {
            store,
            bindings,
            module: self.clone(),
            spec: spec.clone(),
            scene_info: SceneInfo { frame_start: 0, frame_end: 0, width: 0, height: 0, cameras: vec![] },
            poisoned: false,
        };
        let settings = wit::JobSettings {
            width: spec.settings.width,
            height: spec.settings.height,
            fps: spec.settings.fps,
            extra: spec.settings.extra.clone(),
        };
        let scene = spec.scene.clone();
        let info = instance.call("load-scene", spec.fuel.load, config.limits.load_timeout, |store, b| {
            b.tessera_render_renderer().call_load_scene(store, &scene, &settings)
        })?;
        instance.scene_info = SceneInfo {
            frame_start: info.frame_start,
            frame_end: info.frame_end,
            width: info.width,
            height: info.height,
            cameras: info.cameras,
        };
        Ok(instance)
    }
}

impl JobInstance {
    /// What the guest reported about the scene when it loaded it.
    pub fn scene_info(&self) -> &SceneInfo {
        &self.scene_info
    }

    /// The module this instance runs.
    pub fn module(&self) -> &GuestModule {
        &self.module
    }

    /// Whether an earlier error left the instance unusable.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// Log lines the guest wrote since the last call to this.
    pub fn take_logs(&mut self) -> Vec<GuestLog> {
        self.store.data_mut().take_logs()
    }

    /// Builds per-frame state in the guest. Optional: `render_tile` prepares
    /// a frame it has not seen.
    pub fn prepare_frame(&mut self, frame: i32) -> Result<(), SandboxError> {
        let budget = self.spec.fuel.prepare_frame;
        let timeout = self.module.inner.sandbox.config.limits.load_timeout;
        self.call("prepare-frame", budget, timeout, |store, b| {
            b.tessera_render_renderer().call_prepare_frame(store, frame)
        })
    }

    /// Renders one tile under the job's fuel budget and the tile timeout,
    /// checks the result's shape and size, and makes its NaNs canonical.
    pub fn render_tile(&mut self, req: &TileRequest) -> Result<TileOutput, SandboxError> {
        let limits = self.module.inner.sandbox.config.limits.clone();
        let budget = self.spec.fuel.for_tile(req.rect.pixel_count(), req.samples.count);
        let mut aovs = wit::AovSet::empty();
        for (wanted, flag) in
            [(req.albedo, wit::AovSet::ALBEDO), (req.normal, wit::AovSet::NORMAL), (req.depth, wit::AovSet::DEPTH)]
        {
            if wanted {
                aovs |= flag;
            }
        }
        let request = wit::TileRequest {
            frame: req.frame,
            rect: wit::Rect { x: req.rect.x, y: req.rect.y, width: req.rect.width, height: req.rect.height },
            samples: wit::SampleRange { start: req.samples.start, count: req.samples.count },
            seed: req.seed,
            aovs,
        };
        let state = self.store.data_mut();
        state.gpu_allowed = req.gpu;
        if let Some(gpu) = state.gpu.as_mut() {
            gpu.begin_tile();
        }
        let started = Instant::now();
        let fuel_before = budget;
        let result = self.call("render-tile", budget, limits.tile_timeout, |store, b| {
            b.tessera_render_renderer().call_render_tile(store, request)
        })?;
        let fuel_used = fuel_before - self.store.get_fuel().unwrap_or(fuel_before);

        let bytes = 4
            * (result.color.len() as u64
                + result.weight.len() as u64
                + result.aovs.iter().map(|a| a.data.len() as u64 + a.name.len() as u64 / 4 + 1).sum::<u64>());
        if bytes > limits.max_output_bytes as u64 {
            return Err(SandboxError::OutputTooLarge { bytes, limit: limits.max_output_bytes as u64 });
        }
        let mut accumulators = TileAccumulators {
            rect: req.rect,
            color: result.color,
            weight: result.weight,
            aovs: result
                .aovs
                .into_iter()
                .map(|a| AovPlane { name: a.name, channels: a.channels, data: a.data })
                .collect(),
        };
        accumulators.check_shape()?;
        let nans = accumulators.canonicalize_nans();
        if nans > 0 {
            tracing::debug!(instance = %self.spec.label, nans, "canonicalised NaNs in tile output");
        }
        let gpu = self.store.data().gpu.as_ref().filter(|g| g.dispatches_this_tile() > 0).map(|g| g.adapter().clone());
        Ok(TileOutput { accumulators, fuel_used, nans, elapsed: started.elapsed(), gpu })
    }

    /// Runs one export under a fuel budget and a wall-clock deadline and
    /// turns every way it can fail into a [`SandboxError`].
    fn call<R>(
        &mut self,
        name: &'static str,
        fuel: u64,
        timeout: Duration,
        f: impl FnOnce(&mut Store<HostState>, &RenderJob) -> wasmtime::Result<Result<R, wit::JobError>>,
    ) -> Result<R, SandboxError> {
        if self.poisoned {
            return Err(SandboxError::Poisoned);
        }
        let config = &self.module.inner.sandbox.config;
        set_budget(&mut self.store, config.fuel.then_some(fuel), config.epoch_backstop.then_some(timeout))?;
        self.store.data_mut().begin_call();
        let result = f(&mut self.store, &self.bindings);
        self.store.data_mut().end_call();
        match result {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(SandboxError::Job(guest_error(e))),
            Err(e) => {
                self.poisoned = true;
                Err(classify(&self.store, e, name, fuel, timeout))
            }
        }
    }
}

fn set_budget(store: &mut Store<HostState>, fuel: Option<u64>, timeout: Option<Duration>) -> Result<(), SandboxError> {
    if let Some(fuel) = fuel {
        store.set_fuel(fuel).map_err(|e| SandboxError::Host(format!("setting fuel: {e}")))?;
    }
    if let Some(timeout) = timeout {
        let ticks = timeout.as_nanos().div_ceil(EPOCH_TICK.as_nanos()).max(1);
        store.set_epoch_deadline(u64::try_from(ticks).unwrap_or(u64::MAX));
    }
    Ok(())
}

/// Names the reason a call into the guest failed.
fn classify(
    store: &Store<HostState>,
    e: wasmtime::Error,
    call: &'static str,
    budget: u64,
    timeout: Duration,
) -> SandboxError {
    if let Some(hit) = e.downcast_ref::<LimitHit>() {
        return SandboxError::Limit { call, kind: hit.kind, limit: hit.limit };
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => SandboxError::FuelExhausted { call, budget },
        Some(Trap::Interrupt) => SandboxError::Timeout { call, limit: timeout },
        Some(Trap::StackOverflow) => SandboxError::StackOverflow { call },
        Some(trap) => {
            SandboxError::Trap { call, reason: trap.to_string(), guest_message: store.data().last_panic.clone() }
        }
        None => SandboxError::Trap { call, reason: format!("{e:#}"), guest_message: store.data().last_panic.clone() },
    }
}

fn guest_error(e: renderer::JobError) -> GuestJobError {
    match e {
        wit::JobError::InvalidScene(m) => GuestJobError::InvalidScene(m),
        wit::JobError::InvalidSettings(m) => GuestJobError::InvalidSettings(m),
        wit::JobError::Unsupported(m) => GuestJobError::Unsupported(m),
        wit::JobError::NotLoaded => GuestJobError::NotLoaded,
        wit::JobError::Failed(m) => GuestJobError::Failed(m),
    }
}
