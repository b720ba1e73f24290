//! The Rust SDK for Tessera render jobs.
//!
//! A job is a WebAssembly component that implements the `tessera:render`
//! world in `guest-sdk/wit/render.wit`. This crate hides the bindings: you
//! implement [`Job`], export it with [`export_job!`], and build the crate
//! with `cargo xtask build-guests` (which compiles it for
//! `wasm32-unknown-unknown` and encodes the component).
//!
//! ```ignore
//! use tessera_guest_sdk::{export_job, Job, JobError, JobSettings, SceneInfo, TileRequest, TileResult};
//!
//! struct Flat { rgb: [f32; 3] }
//!
//! impl Job for Flat {
//!     fn load(_scene: &[u8], _settings: &JobSettings) -> Result<(Self, SceneInfo), JobError> {
//!         Ok((Flat { rgb: [0.5, 0.5, 0.5] }, SceneInfo::default()))
//!     }
//!     fn render_tile(&mut self, req: &TileRequest) -> Result<TileResult, JobError> {
//!         let mut out = TileResult::for_request(req);
//!         for i in 0..out.weight.len() {
//!             out.add_sample(i, self.rgb, req.samples.count as f32);
//!         }
//!         Ok(out)
//!     }
//! }
//!
//! export_job!(Flat);
//! ```
//!
//! # What a guest may not do
//!
//! The world imports only logging and, since 1.1, the worker's GPU
//! ([`gpu`]): no clock, no randomness, no files, no threads. Draw random
//! numbers from [`PixelRng`], which is seeded from the job's seed and the
//! pixel, so that every pixel can be re-rendered alone and a tile equals the
//! same region of a full-frame render bit for bit.
//!
//! # Panics
//!
//! A panic aborts the instance (the host sees a trap). The SDK logs the panic
//! message first, so the host's error names it.

mod rng;

pub use rng::PixelRng;

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "render-job",
        pub_export_macro: true,
        export_macro_name: "__export_render_job",
        default_bindings_module: "tessera_guest_sdk::bindings",
    });
}

use bindings::exports::tessera::render::renderer;
pub use bindings::tessera::render::log::Level;
pub use bindings::tessera::render::types::{
    AovPlane, AovSet, JobError, JobSettings, Rect, SampleRange, SceneInfo, TileRequest, TileResult,
};

/// The version of the contract this SDK builds guests for.
pub const CONTRACT_VERSION: &str = "1.2.0";

/// A render job. One value lives per sandbox instance: `load` runs once, then
/// the host asks for frames and tiles.
pub trait Job: Sized + 'static {
    /// Parses the scene bytes and settings; returns the job's state and what
    /// it learned about the scene.
    fn load(scene: &[u8], settings: &JobSettings) -> Result<(Self, SceneInfo), JobError>;

    /// Builds per-frame state before tiles of `frame` are rendered. The SDK
    /// calls it itself when a tile arrives for a frame that was not prepared.
    fn prepare_frame(&mut self, frame: i32) -> Result<(), JobError> {
        let _ = frame;
        Ok(())
    }

    /// Renders the tile. Must return exactly one accumulator per pixel of
    /// `request.rect` (3 floats of colour, 1 of weight).
    fn render_tile(&mut self, request: &TileRequest) -> Result<TileResult, JobError>;
}

impl Default for SceneInfo {
    fn default() -> Self {
        SceneInfo { frame_start: 1, frame_end: 1, width: 0, height: 0, cameras: Vec::new() }
    }
}

impl TileResult {
    /// Zeroed accumulators of the right size for `request`, without AOVs.
    pub fn for_request(request: &TileRequest) -> Self {
        let n = request.rect.width as usize * request.rect.height as usize;
        TileResult { color: vec![0.0; 3 * n], weight: vec![0.0; n], aovs: Vec::new() }
    }

    /// Adds a sample of radiance `rgb` with filter weight `weight` to pixel `i`
    /// (row-major within the tile).
    #[inline]
    pub fn add_sample(&mut self, i: usize, rgb: [f32; 3], weight: f32) {
        self.color[3 * i] += rgb[0] * weight;
        self.color[3 * i + 1] += rgb[1] * weight;
        self.color[3 * i + 2] += rgb[2] * weight;
        self.weight[i] += weight;
    }
}

/// Whether sample index `s` starts a *sample block* (1, 4, 16, 64, …: the
/// powers of 4). Sum each pixel's samples block by block and add the block
/// sums in order: then a range cut at block starts, its parts added in
/// order by the host, equals the whole range bit for bit, which is what a
/// progressive job's passes (`SampleRange::passes` in tessera-protocol,
/// the same rule) promise.
pub fn starts_sample_block(s: u32) -> bool {
    s.is_power_of_two() && s.trailing_zeros() % 2 == 0
}

/// Writes a message to the host's log for this job.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    bindings::tessera::render::log::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    {
        // Natively (tests, benchmarks) there is no host: print warnings and errors.
        if matches!(level, Level::Warn | Level::Error) {
            eprintln!("[guest {level:?}] {message}");
        }
    }
}

/// The worker's GPU (contract 1.1): storage buffers and WGSL compute
/// dispatches, owned, validated and budgeted by the host. Every call may
/// answer [`GpuError::Unavailable`] (no GPU, or the host does not offer it
/// for this job): keep a CPU path and fall back to it. Natively (tests)
/// there is no GPU.
///
/// ```ignore
/// use tessera_guest_sdk::gpu::{self, Buffer, Binding};
/// let input = Buffer::new(1024)?;
/// input.write(0, &bytes)?;
/// let output = Buffer::new(1024)?;
/// gpu::dispatch(SHADER, "main", &[input.bind(0), output.bind(1)], [4, 1, 1])?;
/// let result = output.read(0, 1024)?;
/// ```
pub mod gpu {
    pub use crate::bindings::tessera::render::gpu::{AdapterInfo, Binding, GpuError};

    #[cfg(target_arch = "wasm32")]
    use crate::bindings::tessera::render::gpu as host;

    /// A sentence for a log line or a job error (the generated `Display`
    /// prints the variant's debug form).
    pub fn describe(e: &GpuError) -> String {
        match e {
            GpuError::Unavailable => "no GPU".into(),
            GpuError::InvalidShader(m) => format!("invalid shader: {m}"),
            GpuError::OverBudget(m) => format!("over the GPU budget: {m}"),
            GpuError::InvalidArgument(m) => format!("invalid GPU call: {m}"),
            GpuError::DeviceLost(m) => format!("GPU device lost: {m}"),
        }
    }

    /// The host's adapter, if it offers a GPU.
    pub fn adapter() -> Option<AdapterInfo> {
        #[cfg(target_arch = "wasm32")]
        return host::adapter();
        #[cfg(not(target_arch = "wasm32"))]
        None
    }

    /// Runs `entry_point` of `shader` over `groups` workgroups with
    /// `bindings` as `@group(0)`, and waits for it.
    pub fn dispatch(shader: &str, entry_point: &str, bindings: &[Binding], groups: [u32; 3]) -> Result<(), GpuError> {
        #[cfg(target_arch = "wasm32")]
        return host::dispatch(shader, entry_point, bindings, groups[0], groups[1], groups[2]);
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = (shader, entry_point, bindings, groups);
            Err(GpuError::Unavailable)
        }
    }

    /// The most workgroups of `entry_point` of `shader` one dispatch should
    /// hold on this device (0 without a GPU): split work into dispatches of
    /// at most this many, in a way that does not change the results (the
    /// advice depends on the device's speed and load).
    pub fn advised_workgroups(shader: &str, entry_point: &str) -> u64 {
        #[cfg(target_arch = "wasm32")]
        return host::advised_workgroups(shader, entry_point);
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = (shader, entry_point);
            0
        }
    }

    /// A storage buffer on the host's GPU, freed when dropped.
    pub struct Buffer {
        handle: u32,
    }

    impl Buffer {
        /// A zero-filled buffer of `size` bytes (a positive multiple of 4).
        pub fn new(size: u64) -> Result<Buffer, GpuError> {
            #[cfg(target_arch = "wasm32")]
            return host::create_buffer(size).map(|handle| Buffer { handle });
            #[cfg(not(target_arch = "wasm32"))]
            {
                let _ = size;
                Err(GpuError::Unavailable)
            }
        }

        pub fn write(&self, offset: u64, data: &[u8]) -> Result<(), GpuError> {
            #[cfg(target_arch = "wasm32")]
            return host::write_buffer(self.handle, offset, data);
            #[cfg(not(target_arch = "wasm32"))]
            {
                let _ = (offset, data);
                Err(GpuError::Unavailable)
            }
        }

        pub fn read(&self, offset: u64, size: u64) -> Result<Vec<u8>, GpuError> {
            #[cfg(target_arch = "wasm32")]
            return host::read_buffer(self.handle, offset, size);
            #[cfg(not(target_arch = "wasm32"))]
            {
                let _ = (offset, size);
                Err(GpuError::Unavailable)
            }
        }

        /// This buffer as `@group(0) @binding(binding)`.
        pub fn bind(&self, binding: u32) -> Binding {
            Binding { binding, buffer: self.handle }
        }
    }

    impl Drop for Buffer {
        fn drop(&mut self) {
            #[cfg(target_arch = "wasm32")]
            host::destroy_buffer(self.handle);
        }
    }
}

#[doc(hidden)]
pub mod __private {
    //! Glue used by [`export_job!`](crate::export_job); not part of the API.
    use super::*;
    use std::any::Any;
    use std::cell::RefCell;
    use std::marker::PhantomData;

    struct State {
        job: Box<dyn Any>,
        prepared: Option<i32>,
    }

    thread_local! {
        // A component instance is single-threaded: this is the instance's state.
        static STATE: RefCell<Option<State>> = const { RefCell::new(None) };
    }

    fn install_panic_hook() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            std::panic::set_hook(Box::new(|info| {
                log(Level::Error, &format!("guest panicked: {info}"));
            }))
        });
    }

    /// Adapts a [`Job`] to the generated `renderer::Guest` trait.
    pub struct Adapter<J>(PhantomData<J>);

    fn with_job<J: Job, R>(f: impl FnOnce(&mut J, &mut Option<i32>) -> Result<R, JobError>) -> Result<R, JobError> {
        install_panic_hook();
        STATE.with(|s| {
            let mut s = s.borrow_mut();
            let state = s.as_mut().ok_or(JobError::NotLoaded)?;
            let job = state.job.downcast_mut::<J>().ok_or(JobError::NotLoaded)?;
            f(job, &mut state.prepared)
        })
    }

    impl<J: Job> renderer::Guest for Adapter<J> {
        fn load_scene(scene: Vec<u8>, settings: JobSettings) -> Result<SceneInfo, JobError> {
            install_panic_hook();
            let (job, info) = J::load(&scene, &settings)?;
            STATE.with(|s| *s.borrow_mut() = Some(State { job: Box::new(job), prepared: None }));
            Ok(info)
        }

        fn prepare_frame(frame: i32) -> Result<(), JobError> {
            with_job::<J, _>(|job, prepared| {
                job.prepare_frame(frame)?;
                *prepared = Some(frame);
                Ok(())
            })
        }

        fn render_tile(request: TileRequest) -> Result<TileResult, JobError> {
            with_job::<J, _>(|job, prepared| {
                if *prepared != Some(request.frame) {
                    job.prepare_frame(request.frame)?;
                    *prepared = Some(request.frame);
                }
                job.render_tile(&request)
            })
        }
    }
}

/// Exports a [`Job`] type as the component's `renderer` interface.
///
/// Use it once, at the crate root of a `cdylib` crate. On non-wasm targets it
/// expands to nothing, so the same crate also builds natively for tests and
/// benchmarks.
#[macro_export]
macro_rules! export_job {
    ($job:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            type __TesseraJob = $crate::__private::Adapter<$job>;
    $crate::bindings::__export_render_job!(__TesseraJob with_types_in $crate::bindings);
        };
    };
}
