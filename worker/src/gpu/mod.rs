//! The GPU host: what a job's wasm may do on the worker's GPU, and nothing
//! more. The guest sees numbered storage buffers and WGSL compute dispatches
//! ([`GpuSession`]); every wgpu object lives on one dedicated thread per
//! device ([`device`]), so a driver that hangs stalls that thread, never the
//! worker's QUIC connection or its CPU slots.
//!
//! What keeps a hostile job in check:
//!
//! - **Conservative limits.** The device is created with WebGPU's default
//!   limits (128 MiB per storage binding, 8 storage buffers per stage,
//!   65,535 workgroups per dimension). It does not use the adapter's maxima,
//!   so a job that runs on one GPU runs on every GPU.
//! - **Validation.** Every shader goes through naga (wgpu's
//!   `create_shader_module`, never the unchecked variant). Runtime bounds
//!   checks and loop bounding stay on. An invalid shader is an
//!   [`GpuError::InvalidShader`] carrying the compiler's message.
//! - **Budgets per instance** ([`GpuBudget`]): buffer bytes and count,
//!   dispatches per tile, workgroups per dispatch, and shader size. They are
//!   checked before anything reaches the device, each with a clear error.
//! - **Time.** A dispatch or read that does not finish within
//!   `dispatch_timeout` (a pipeline's first dispatch: plus
//!   `compile_timeout`, since drivers may compile the shader then) fails
//!   with [`GpuError::DeviceLost`]. The device
//!   thread is then abandoned (its device is leaked, never dropped, since
//!   dropping a hung device can block) and the next request gets a fresh
//!   device. The same happens when the driver reports the device lost.
//!   Buffers of the old device answer `DeviceLost` from then on. So that
//!   a slow device is not taken for a hung one, guests ask
//!   [`GpuSession::advised_workgroups`] how large a dispatch should be: the
//!   host times each pipeline's dispatches and advises what runs in an
//!   eighth of the limit.
//!
//! Adapters ([`GpuSelection`]): `auto` takes a hardware adapter (discrete
//! first) and ignores software rasterisers; a name picks the first adapter
//! whose name contains it, software ones included (CI uses `llvmpipe`,
//! Mesa's lavapipe); `none` turns the GPU off.

mod device;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use self::device::{DeviceThread, Reply, Request, Timeouts};

/// Which adapter a worker uses (`tessera-worker --gpu none|auto|NAME`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GpuSelection {
    None,
    Auto,
    /// The first adapter whose name contains this (case-insensitive).
    Named(String),
}

impl FromStr for GpuSelection {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.trim() {
            "" | "none" | "off" => GpuSelection::None,
            "auto" => GpuSelection::Auto,
            name => GpuSelection::Named(name.to_string()),
        })
    }
}

impl fmt::Display for GpuSelection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GpuSelection::None => f.write_str("none"),
            GpuSelection::Auto => f.write_str("auto"),
            GpuSelection::Named(n) => f.write_str(n),
        }
    }
}

/// What one guest instance may use. Defaults suit a path tracer's scene
/// data and tile outputs with room to spare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GpuBudget {
    /// Bytes of all live buffers together.
    pub buffer_bytes: u64,
    /// Live buffers.
    pub buffers: u32,
    /// Dispatches between two [`GpuSession::begin_tile`] calls.
    pub dispatches_per_tile: u32,
    /// `x × y × z` workgroups of one dispatch.
    pub workgroups_per_dispatch: u64,
    /// Bytes of WGSL source in one dispatch.
    pub shader_bytes: usize,
}

impl Default for GpuBudget {
    fn default() -> Self {
        GpuBudget {
            buffer_bytes: 512 << 20,
            buffers: 64,
            dispatches_per_tile: 256,
            workgroups_per_dispatch: 1 << 20,
            shader_bytes: 1 << 20,
        }
    }
}

#[derive(Clone, Debug)]
pub struct GpuConfig {
    pub selection: GpuSelection,
    pub budget: GpuBudget,
    /// Longest a dispatch or read-back may take before the device counts as hung.
    pub dispatch_timeout: Duration,
    /// Added to each pipeline's first dispatch on a device, which may
    /// include the driver's compile of the shader.
    pub compile_timeout: Duration,
}

impl GpuConfig {
    fn timeouts(&self) -> Timeouts {
        Timeouts { dispatch: self.dispatch_timeout, compile: self.compile_timeout }
    }
}

/// Workgroups advised for a pipeline that has not been timed on a device
/// yet: small enough for any device to run in its time limit, and only one
/// or two dispatches long.
pub const PROBE_WORKGROUPS: u64 = 64;

impl Default for GpuConfig {
    fn default() -> Self {
        GpuConfig {
            selection: GpuSelection::Auto,
            budget: GpuBudget::default(),
            dispatch_timeout: Duration::from_secs(20),
            compile_timeout: Duration::from_secs(120),
        }
    }
}

/// Why a GPU call failed: the guest's fault, or the device's. A guest may
/// fall back to its CPU path on any of them.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GpuError {
    #[error("no GPU on this worker")]
    Unavailable,
    #[error("invalid shader: {0}")]
    InvalidShader(String),
    #[error("over the GPU budget: {0}")]
    OverBudget(String),
    #[error("invalid GPU call: {0}")]
    InvalidArgument(String),
    #[error("GPU device lost: {0}")]
    DeviceLost(String),
}

/// The adapter a worker uses, as its startup line and the proof's GPU class
/// name it (vendor, device and driver identify the class whose results are
/// compared bit for bit).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdapterDescription {
    pub name: String,
    pub vendor: u32,
    pub device: u32,
    pub driver: String,
    pub backend: String,
    /// A software rasteriser (lavapipe, SwiftShader).
    pub software: bool,
}

impl AdapterDescription {
    /// The class the farm groups this adapter's results by: the same
    /// vendor, device and driver give the same bits.
    pub fn class(&self) -> tessera_protocol::wire::GpuClass {
        let clip = |s: &str| {
            let max = tessera_protocol::wire::MAX_GPU_CLASS_TEXT;
            let mut end = s.len().min(max);
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s[..end].to_string()
        };
        tessera_protocol::wire::GpuClass {
            vendor: self.vendor,
            device: self.device,
            driver: clip(&self.driver),
            name: clip(&self.name),
        }
    }
}

impl fmt::Display for AdapterDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}, {:04x}:{:04x}", self.name, self.backend, self.vendor, self.device)?;
        if !self.driver.is_empty() {
            write!(f, ", {}", self.driver)?;
        }
        if self.software {
            write!(f, ", software")?;
        }
        write!(f, ")")
    }
}

/// One binding of a dispatch: `@group(0) @binding(binding)` is `buffer`.
/// Whether it is read-only is the shader's declaration (`var<storage, read>`):
/// the layout is derived from the shader, and wgpu checks usage against it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Binding {
    pub binding: u32,
    pub buffer: u32,
}

/// The worker's GPU. Cheap to clone; shared by every slot.
#[derive(Clone)]
pub struct Gpu {
    inner: Arc<GpuShared>,
}

struct GpuShared {
    config: GpuConfig,
    adapter: AdapterDescription,
    /// The live device thread; replaced after a loss.
    thread: Mutex<Arc<DeviceThread>>,
}

impl fmt::Debug for Gpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gpu").field("adapter", &self.inner.adapter).finish()
    }
}

/// The adapters this machine offers (Vulkan), for `--gpu` error messages.
pub fn adapters() -> Vec<AdapterDescription> {
    device::enumerate().into_iter().map(|(_, d)| d).collect()
}

impl Gpu {
    /// Opens the selected adapter. `Ok(None)`: no GPU (`none`, or `auto`
    /// on a machine without a hardware adapter). A name that matches no
    /// adapter is an error listing the ones there are.
    pub fn open(config: GpuConfig) -> Result<Option<Gpu>, GpuError> {
        if config.selection == GpuSelection::None {
            return Ok(None);
        }
        let Some((adapter, description)) = device::choose(&config.selection)? else { return Ok(None) };
        let thread = DeviceThread::start(adapter, config.timeouts())?;
        tracing::info!(adapter = %description, "GPU ready");
        Ok(Some(Gpu {
            inner: Arc::new(GpuShared { config, adapter: description, thread: Mutex::new(Arc::new(thread)) }),
        }))
    }

    pub fn adapter(&self) -> &AdapterDescription {
        &self.inner.adapter
    }

    pub fn budget(&self) -> GpuBudget {
        self.inner.config.budget
    }

    /// A session for one guest instance: its own buffers and budget.
    pub fn session(&self) -> GpuSession {
        GpuSession { gpu: self.clone(), buffers: BTreeMap::new(), next: 1, bytes: 0, dispatches: 0 }
    }

    /// The current device thread, starting a fresh one if the last was lost.
    fn thread(&self) -> Result<Arc<DeviceThread>, GpuError> {
        let mut current = self.inner.thread.lock().unwrap_or_else(|e| e.into_inner());
        if current.is_lost() {
            let (adapter, _) = device::choose(&self.inner.config.selection)?
                .ok_or_else(|| GpuError::DeviceLost("the adapter is gone".into()))?;
            *current = Arc::new(DeviceThread::start(adapter, self.inner.config.timeouts())?);
            tracing::warn!(adapter = %self.inner.adapter, "GPU device recreated after a loss");
        }
        Ok(current.clone())
    }

    /// `request` on `thread`, waiting at most what the thread allows a
    /// pipeline's first dispatch (the thread holds each request to its own
    /// limit; this wait is for a thread stuck elsewhere).
    fn call(&self, thread: &DeviceThread, request: Request) -> Result<Reply, GpuError> {
        let t = self.inner.config.timeouts();
        thread.call(request, t.dispatch + t.compile)
    }
}

struct BufferEntry {
    /// The device thread that holds it (a lost one answers `DeviceLost`).
    thread: Arc<DeviceThread>,
    id: u64,
    size: u64,
}

/// One guest instance's view of the GPU: buffers by handle, budgets.
/// Dropping it frees its buffers.
pub struct GpuSession {
    gpu: Gpu,
    buffers: BTreeMap<u32, BufferEntry>,
    next: u32,
    bytes: u64,
    dispatches: u32,
}

/// WebGPU's copy alignment: buffer sizes, offsets and copy lengths are
/// multiples of it.
const ALIGN: u64 = 4;

impl GpuSession {
    pub fn adapter(&self) -> &AdapterDescription {
        self.gpu.adapter()
    }

    /// Starts a new tile: the per-tile dispatch count starts again.
    pub fn begin_tile(&mut self) {
        self.dispatches = 0;
    }

    /// Dispatches since [`Self::begin_tile`]: a tile with none was not
    /// rendered on the GPU, whatever the guest did with buffers.
    pub fn dispatches_this_tile(&self) -> u32 {
        self.dispatches
    }

    /// A zero-filled storage buffer of `size` bytes (a multiple of 4).
    pub fn create_buffer(&mut self, size: u64) -> Result<u32, GpuError> {
        let budget = self.gpu.budget();
        if size == 0 || !size.is_multiple_of(ALIGN) {
            return Err(GpuError::InvalidArgument(format!("buffer size {size} is not a positive multiple of 4")));
        }
        if self.buffers.len() as u32 >= budget.buffers {
            return Err(GpuError::OverBudget(format!("at most {} buffers per instance", budget.buffers)));
        }
        if self.bytes.saturating_add(size) > budget.buffer_bytes {
            return Err(GpuError::OverBudget(format!(
                "a {size}-byte buffer would bring this instance to {} bytes; the budget is {}",
                self.bytes.saturating_add(size),
                budget.buffer_bytes
            )));
        }
        let thread = self.gpu.thread()?;
        let Reply::Buffer(id) = self.gpu.call(&thread, Request::CreateBuffer { size })? else {
            return Err(GpuError::DeviceLost("unexpected reply".into()));
        };
        let handle = self.next;
        self.next = self.next.checked_add(1).ok_or_else(|| GpuError::OverBudget("buffer handles exhausted".into()))?;
        self.bytes += size;
        self.buffers.insert(handle, BufferEntry { thread, id, size });
        Ok(handle)
    }

    fn entry(&self, handle: u32) -> Result<&BufferEntry, GpuError> {
        let entry =
            self.buffers.get(&handle).ok_or_else(|| GpuError::InvalidArgument(format!("no buffer {handle}")))?;
        if entry.thread.is_lost() {
            return Err(GpuError::DeviceLost(format!("buffer {handle} belonged to a device that was lost")));
        }
        Ok(entry)
    }

    fn range(entry: &BufferEntry, handle: u32, offset: u64, len: u64) -> Result<(), GpuError> {
        if !offset.is_multiple_of(ALIGN) || !len.is_multiple_of(ALIGN) {
            return Err(GpuError::InvalidArgument(format!("offset {offset} and length {len} must be multiples of 4")));
        }
        if offset.checked_add(len).is_none_or(|end| end > entry.size) {
            return Err(GpuError::InvalidArgument(format!(
                "{len} bytes at {offset} do not fit buffer {handle} of {} bytes",
                entry.size
            )));
        }
        Ok(())
    }

    pub fn write_buffer(&mut self, handle: u32, offset: u64, data: &[u8]) -> Result<(), GpuError> {
        let entry = self.entry(handle)?;
        Self::range(entry, handle, offset, data.len() as u64)?;
        let request = Request::Write { id: entry.id, offset, data: data.to_vec() };
        self.gpu.call(&entry.thread, request).map(|_| ())
    }

    pub fn read_buffer(&mut self, handle: u32, offset: u64, len: u64) -> Result<Vec<u8>, GpuError> {
        let entry = self.entry(handle)?;
        Self::range(entry, handle, offset, len)?;
        match self.gpu.call(&entry.thread, Request::Read { id: entry.id, offset, len })? {
            Reply::Bytes(bytes) => Ok(bytes),
            _ => Err(GpuError::DeviceLost("unexpected reply".into())),
        }
    }

    pub fn destroy_buffer(&mut self, handle: u32) {
        if let Some(entry) = self.buffers.remove(&handle) {
            self.bytes -= entry.size;
            entry.thread.send(Request::Destroy { id: entry.id });
        }
    }

    /// The most workgroups one dispatch of `entry_point` of `shader` should
    /// hold here: what its latest timed dispatch on this device ran in an
    /// eighth of `dispatch_timeout`, within the budget; [`PROBE_WORKGROUPS`]
    /// before one. Timing is the host's: the guest learns a size, never a
    /// time, and must split its work so that the size does not change its
    /// results.
    pub fn advised_workgroups(&mut self, shader: &str, entry_point: &str) -> Result<u64, GpuError> {
        let cap = self.gpu.budget().workgroups_per_dispatch.max(1);
        let speed = self.gpu.thread()?.speed(&device::pipeline_key(shader, entry_point));
        let target = self.gpu.inner.config.dispatch_timeout.as_secs_f64() / 8.0;
        Ok(match speed {
            None => PROBE_WORKGROUPS.min(cap),
            Some(per_second) => ((per_second * target) as u64).clamp(1, cap),
        })
    }

    /// Runs `entry_point` of `shader` (WGSL) over `groups` workgroups with
    /// `bindings` as `@group(0)`, and waits for it.
    pub fn dispatch(
        &mut self,
        shader: &str,
        entry_point: &str,
        bindings: &[Binding],
        groups: [u32; 3],
    ) -> Result<(), GpuError> {
        let budget = self.gpu.budget();
        if shader.len() > budget.shader_bytes {
            return Err(GpuError::OverBudget(format!(
                "a {}-byte shader; at most {} bytes",
                shader.len(),
                budget.shader_bytes
            )));
        }
        if self.dispatches >= budget.dispatches_per_tile {
            return Err(GpuError::OverBudget(format!("at most {} dispatches per tile", budget.dispatches_per_tile)));
        }
        let total = groups.iter().map(|&g| u64::from(g)).product::<u64>();
        if total == 0 {
            return Err(GpuError::InvalidArgument(format!("{groups:?} workgroups: none would run")));
        }
        if total > budget.workgroups_per_dispatch {
            return Err(GpuError::OverBudget(format!(
                "{groups:?} is {total} workgroups; at most {} per dispatch",
                budget.workgroups_per_dispatch
            )));
        }
        let mut bound = Vec::with_capacity(bindings.len());
        let mut thread: Option<Arc<DeviceThread>> = None;
        for b in bindings {
            if bindings.iter().filter(|o| o.binding == b.binding).count() > 1 {
                return Err(GpuError::InvalidArgument(format!("binding {} is given twice", b.binding)));
            }
            let entry = self.entry(b.buffer)?;
            if thread.as_ref().is_some_and(|t| !Arc::ptr_eq(t, &entry.thread)) {
                return Err(GpuError::DeviceLost("buffers of a lost device were bound".into()));
            }
            thread = Some(entry.thread.clone());
            bound.push((b.binding, entry.id));
        }
        let thread = match thread {
            Some(t) => t,
            None => self.gpu.thread()?,
        };
        self.dispatches += 1;
        let request = Request::Dispatch {
            shader: shader.to_string(),
            entry_point: entry_point.to_string(),
            bindings: bound,
            groups,
        };
        self.gpu.call(&thread, request).map(|_| ())
    }
}

impl Drop for GpuSession {
    fn drop(&mut self) {
        for (_, entry) in std::mem::take(&mut self.buffers) {
            entry.thread.send(Request::Destroy { id: entry.id });
        }
    }
}
