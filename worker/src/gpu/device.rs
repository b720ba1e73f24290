//! One wgpu device on its own thread. Requests arrive over a channel and
//! each gets one reply; the caller waits with a timeout, so a hung driver
//! costs this thread, never the caller. After a timeout or a reported
//! loss the thread is marked lost and leaks its device (dropping a hung
//! device can block); [`super::Gpu`] starts a new one.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use super::{AdapterDescription, GpuError, GpuSelection};

pub(super) enum Request {
    CreateBuffer { size: u64 },
    Write { id: u64, offset: u64, data: Vec<u8> },
    Read { id: u64, offset: u64, len: u64 },
    Destroy { id: u64 },
    Dispatch { shader: String, entry_point: String, bindings: Vec<(u32, u64)>, groups: [u32; 3] },
}

pub(super) enum Reply {
    Done,
    Buffer(u64),
    Bytes(Vec<u8>),
}

/// Workgroups per second of each pipeline's latest timed dispatch on one
/// device, by [`pipeline_key`]: written by the device thread, read by
/// sessions without a round trip (which could wait behind another slot's
/// dispatch). A first dispatch, which may include the driver's compile, is
/// not timed.
pub(super) type Speeds = Arc<std::sync::Mutex<BTreeMap<[u8; 32], f64>>>;

/// How long the device thread waits for the device.
#[derive(Clone, Copy, Debug)]
pub(super) struct Timeouts {
    /// A dispatch or read-back.
    pub dispatch: Duration,
    /// Added to the first dispatch of each pipeline: drivers may compile
    /// the shader then rather than when the pipeline is created (lavapipe
    /// does: 12 s for the path tracer's on 2 cores, on every dispatch's
    /// clock but the first one's without this).
    pub compile: Duration,
}

/// The pipeline cache's key for `entry_point` of `shader`.
pub(super) fn pipeline_key(shader: &str, entry_point: &str) -> [u8; 32] {
    *blake3::Hasher::new()
        .update(&(entry_point.len() as u64).to_le_bytes())
        .update(entry_point.as_bytes())
        .update(shader.as_bytes())
        .finalize()
        .as_bytes()
}

type Message = (Request, Option<mpsc::SyncSender<Result<Reply, GpuError>>>);

pub(super) struct DeviceThread {
    /// `None` only while dropping.
    tx: Option<mpsc::Sender<Message>>,
    lost: Arc<AtomicBool>,
    /// Signalled once the thread has dropped its device.
    released: std::sync::Mutex<mpsc::Receiver<()>>,
    speeds: Speeds,
}

/// Longest wait on drop for the thread to destroy its device.
const RELEASE_WAIT: Duration = Duration::from_secs(5);

impl Drop for DeviceThread {
    /// Waits (a bounded time) for the thread to destroy its device: a
    /// process that exits while a driver thread is still tearing a device
    /// down can crash in the driver's exit handlers (lavapipe did, after
    /// every test had passed). A lost device is leaked, not waited for.
    fn drop(&mut self) {
        self.tx = None;
        if !self.is_lost() {
            let released = self.released.get_mut().unwrap_or_else(|e| e.into_inner());
            let _ = released.recv_timeout(RELEASE_WAIT);
        }
    }
}

fn instance() -> wgpu::Instance {
    wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: wgpu::Backends::VULKAN,
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    })
}

fn describe(adapter: &wgpu::Adapter) -> AdapterDescription {
    let info = adapter.get_info();
    AdapterDescription {
        name: info.name,
        vendor: info.vendor,
        device: info.device,
        driver: [info.driver, info.driver_info].into_iter().filter(|s| !s.is_empty()).collect::<Vec<_>>().join(" "),
        backend: format!("{:?}", info.backend),
        software: info.device_type == wgpu::DeviceType::Cpu,
    }
}

pub(super) fn enumerate() -> Vec<(wgpu::Adapter, AdapterDescription)> {
    let adapters = pollster::block_on(instance().enumerate_adapters(wgpu::Backends::VULKAN));
    adapters
        .into_iter()
        .map(|a| {
            let d = describe(&a);
            (a, d)
        })
        .collect()
}

/// The adapter `selection` names, if any.
pub(super) fn choose(selection: &GpuSelection) -> Result<Option<(wgpu::Adapter, AdapterDescription)>, GpuError> {
    let all = enumerate();
    let rank = |a: &wgpu::Adapter| match a.get_info().device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu | wgpu::DeviceType::Other | wgpu::DeviceType::Cpu => 2,
    };
    match selection {
        GpuSelection::None => Ok(None),
        GpuSelection::Auto => {
            let mut hardware: Vec<_> = all.into_iter().filter(|(_, d)| !d.software).collect();
            hardware.sort_by_key(|(a, _)| rank(a));
            Ok(hardware.into_iter().next())
        }
        GpuSelection::Named(name) => {
            let wanted = name.to_lowercase();
            let names: Vec<String> = all.iter().map(|(_, d)| d.name.clone()).collect();
            all.into_iter().find(|(_, d)| d.name.to_lowercase().contains(&wanted)).map(Some).ok_or_else(|| {
                GpuError::InvalidArgument(format!(
                    "--gpu {name:?} matches no adapter; this machine has: {}",
                    if names.is_empty() { "none (is a Vulkan driver installed?)".into() } else { names.join(", ") }
                ))
            })
        }
    }
}

/// WebGPU's default limits where the adapter has them (every real GPU),
/// else the downlevel ones: never the adapter's own maxima.
fn limits(adapter: &wgpu::Adapter) -> wgpu::Limits {
    let offered = adapter.limits();
    let defaults = wgpu::Limits::defaults();
    if defaults.check_limits(&offered) {
        defaults
    } else {
        wgpu::Limits::downlevel_defaults()
    }
}

impl DeviceThread {
    pub(super) fn start(adapter: wgpu::Adapter, timeout: Timeouts) -> Result<DeviceThread, GpuError> {
        let descriptor = wgpu::DeviceDescriptor {
            label: Some("tessera"),
            required_features: wgpu::Features::empty(),
            required_limits: limits(&adapter),
            ..Default::default()
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&descriptor))
            .map_err(|e| GpuError::InvalidArgument(format!("opening the GPU: {e}")))?;
        let lost = Arc::new(AtomicBool::new(false));
        let flag = lost.clone();
        device.set_device_lost_callback(move |reason, message| {
            tracing::error!(?reason, %message, "GPU device lost");
            flag.store(true, Ordering::SeqCst);
        });
        // wgpu panics on errors nobody captured; every call here captures
        // its own, so anything else is logged, not fatal.
        device.on_uncaptured_error(Arc::new(|e| tracing::error!(error = %e, "uncaptured GPU error")));
        let (tx, rx) = mpsc::channel::<Message>();
        let (released_tx, released) = mpsc::channel::<()>();
        let state_lost = lost.clone();
        let speeds = Speeds::default();
        let thread_speeds = speeds.clone();
        std::thread::Builder::new()
            .name("tessera-gpu".into())
            .spawn(move || {
                let mut state = State {
                    device,
                    queue,
                    buffers: BTreeMap::new(),
                    next: 1,
                    pipelines: Pipelines::default(),
                    timeout,
                    speeds: thread_speeds,
                };
                for (request, reply) in rx {
                    let result = state.handle(request);
                    let fatal = matches!(result, Err(GpuError::DeviceLost(_)));
                    if fatal {
                        state_lost.store(true, Ordering::SeqCst);
                    }
                    if let Some(reply) = reply {
                        let _ = reply.send(result);
                    }
                    if fatal {
                        // Leak: dropping a device that may still be running
                        // a hung dispatch can block forever.
                        std::mem::forget(state);
                        return;
                    }
                }
                // Let the device go, wait for the queue to drain, then say so.
                let State { device, queue, buffers, pipelines, .. } = state;
                drop((buffers, pipelines));
                let _ = device.poll(wgpu::PollType::Wait { submission_index: None, timeout: Some(RELEASE_WAIT) });
                drop((queue, device));
                let _ = released_tx.send(());
            })
            .map_err(|e| GpuError::InvalidArgument(format!("starting the GPU thread: {e}")))?;
        Ok(DeviceThread { tx: Some(tx), lost, released: std::sync::Mutex::new(released), speeds })
    }

    /// Workgroups per second of the pipeline `key`'s latest timed dispatch.
    pub(super) fn speed(&self, key: &[u8; 32]) -> Option<f64> {
        self.speeds.lock().unwrap_or_else(|e| e.into_inner()).get(key).copied()
    }

    pub(super) fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// Sends a request that needs no answer (freeing a buffer).
    pub(super) fn send(&self, request: Request) {
        if let (false, Some(tx)) = (self.is_lost(), &self.tx) {
            let _ = tx.send((request, None));
        }
    }

    /// Sends a request and waits for its answer, at most `timeout` (plus a
    /// margin: the thread enforces the timeout itself; this one catches a
    /// thread stuck outside a poll).
    pub(super) fn call(&self, request: Request, timeout: Duration) -> Result<Reply, GpuError> {
        if self.is_lost() {
            return Err(GpuError::DeviceLost("the device was lost; it is being recreated".into()));
        }
        let (reply_tx, reply_rx) = mpsc::sync_channel(1);
        self.tx
            .as_ref()
            .ok_or_else(|| GpuError::DeviceLost("the GPU thread has stopped".into()))?
            .send((request, Some(reply_tx)))
            .map_err(|_| GpuError::DeviceLost("the GPU thread has stopped".into()))?;
        match reply_rx.recv_timeout(timeout + Duration::from_secs(5)) {
            Ok(result) => result,
            Err(_) => {
                self.lost.store(true, Ordering::SeqCst);
                Err(GpuError::DeviceLost(format!("the GPU did not answer within {timeout:?}")))
            }
        }
    }
}

/// Compiled pipelines by blake3 of (entry point, shader), the oldest
/// evicted past [`Pipelines::CAPACITY`].
#[derive(Default)]
struct Pipelines {
    by_key: BTreeMap<[u8; 32], Compiled>,
    order: VecDeque<[u8; 32]>,
}

/// A pipeline and how it ran on this device.
struct Compiled {
    pipeline: wgpu::ComputePipeline,
    /// Whether it was dispatched (its compile, if the driver defers it,
    /// is then behind it).
    ran: bool,
}

impl Pipelines {
    const CAPACITY: usize = 32;
}

struct State {
    device: wgpu::Device,
    queue: wgpu::Queue,
    buffers: BTreeMap<u64, wgpu::Buffer>,
    next: u64,
    pipelines: Pipelines,
    timeout: Timeouts,
    speeds: Speeds,
}

impl State {
    fn handle(&mut self, request: Request) -> Result<Reply, GpuError> {
        match request {
            Request::CreateBuffer { size } => {
                let scope = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
                let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: None,
                    size,
                    usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                if let Some(e) = pollster::block_on(scope.pop()) {
                    return Err(GpuError::OverBudget(format!("the GPU could not allocate {size} bytes: {e}")));
                }
                let id = self.next;
                self.next += 1;
                self.buffers.insert(id, buffer);
                Ok(Reply::Buffer(id))
            }
            Request::Write { id, offset, data } => {
                let buffer = self.buffer(id)?;
                self.queue.write_buffer(buffer, offset, &data);
                Ok(Reply::Done)
            }
            Request::Read { id, offset, len } => self.read(id, offset, len).map(Reply::Bytes),
            Request::Destroy { id } => {
                if let Some(b) = self.buffers.remove(&id) {
                    b.destroy();
                }
                Ok(Reply::Done)
            }
            Request::Dispatch { shader, entry_point, bindings, groups } => {
                self.dispatch(&shader, &entry_point, &bindings, groups).map(|_| Reply::Done)
            }
        }
    }

    fn buffer(&self, id: u64) -> Result<&wgpu::Buffer, GpuError> {
        self.buffers.get(&id).ok_or_else(|| GpuError::InvalidArgument(format!("no GPU buffer {id}")))
    }

    fn wait(&self, submission: wgpu::SubmissionIndex, what: &str, timeout: Duration) -> Result<(), GpuError> {
        let poll = wgpu::PollType::Wait { submission_index: Some(submission), timeout: Some(timeout) };
        match self.device.poll(poll) {
            Ok(_) => Ok(()),
            Err(wgpu::PollError::Timeout) => {
                Err(GpuError::DeviceLost(format!("{what} did not finish within {timeout:?}")))
            }
            Err(e) => Err(GpuError::DeviceLost(format!("{what}: {e}"))),
        }
    }

    /// The compiled pipeline and its key, compiling it on first use.
    fn pipeline(&mut self, shader: &str, entry_point: &str) -> Result<([u8; 32], wgpu::ComputePipeline), GpuError> {
        let key = pipeline_key(shader, entry_point);
        if let Some(p) = self.pipelines.by_key.get(&key) {
            return Ok((key, p.pipeline.clone()));
        }
        // naga parses and validates here; its message names the line.
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("job shader"),
            source: wgpu::ShaderSource::Wgsl(shader.into()),
        });
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some("job pipeline"),
            layout: None,
            module: &module,
            entry_point: Some(entry_point),
            compilation_options: Default::default(),
            cache: None,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(GpuError::InvalidShader(error_text(&e)));
        }
        if self.pipelines.order.len() == Pipelines::CAPACITY {
            if let Some(old) = self.pipelines.order.pop_front() {
                self.pipelines.by_key.remove(&old);
                self.speeds.lock().unwrap_or_else(|e| e.into_inner()).remove(&old);
            }
        }
        self.pipelines.order.push_back(key);
        self.pipelines.by_key.insert(key, Compiled { pipeline: pipeline.clone(), ran: false });
        Ok((key, pipeline))
    }

    fn dispatch(
        &mut self,
        shader: &str,
        entry_point: &str,
        bindings: &[(u32, u64)],
        groups: [u32; 3],
    ) -> Result<(), GpuError> {
        let per_dimension = self.device.limits().max_compute_workgroups_per_dimension;
        if groups.iter().any(|&g| g > per_dimension) {
            return Err(GpuError::InvalidArgument(format!(
                "{groups:?} workgroups: at most {per_dimension} in each dimension"
            )));
        }
        let (key, pipeline) = self.pipeline(shader, entry_point)?;
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let layout = pipeline.get_bind_group_layout(0);
        let mut entries = Vec::with_capacity(bindings.len());
        for &(binding, id) in bindings {
            entries.push(wgpu::BindGroupEntry { binding, resource: self.buffer(id)?.as_entire_binding() });
        }
        let group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("job bindings"),
            layout: &layout,
            entries: &entries,
        });
        let mut encoder = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &group, &[]);
            pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
        }
        let commands = encoder.finish();
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(GpuError::InvalidArgument(format!("the bindings do not fit the shader: {}", error_text(&e))));
        }
        let first = self.pipelines.by_key.get(&key).is_some_and(|p| !p.ran);
        let limit = if first { self.timeout.dispatch + self.timeout.compile } else { self.timeout.dispatch };
        let submission = self.queue.submit([commands]);
        let started = std::time::Instant::now();
        self.wait(submission, if first { "the pipeline's first dispatch" } else { "the dispatch" }, limit)?;
        let took = started.elapsed();
        tracing::debug!(ms = took.as_secs_f64() * 1e3, ?groups, first, "GPU dispatch");
        if first {
            if let Some(p) = self.pipelines.by_key.get_mut(&key) {
                p.ran = true;
            }
        } else {
            let total = groups.iter().map(|&g| g as f64).product::<f64>();
            let per_second = total / took.as_secs_f64().max(1e-6);
            self.speeds.lock().unwrap_or_else(|e| e.into_inner()).insert(key, per_second);
        }
        Ok(())
    }

    fn read(&mut self, id: u64, offset: u64, len: u64) -> Result<Vec<u8>, GpuError> {
        let source = self.buffer(id)?;
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("read-back"),
            size: len,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        encoder.copy_buffer_to_buffer(source, offset, &staging, 0, len);
        let submission = self.queue.submit([encoder.finish()]);
        let (tx, rx) = mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.wait(submission, "the read-back", self.timeout.dispatch)?;
        match rx.try_recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(GpuError::DeviceLost(format!("mapping the read-back: {e}"))),
            Err(_) => return Err(GpuError::DeviceLost("the read-back was never mapped".into())),
        }
        let bytes = staging
            .get_mapped_range(..)
            .map_err(|e| GpuError::DeviceLost(format!("reading the mapped buffer: {e}")))?
            .to_vec();
        staging.unmap();
        Ok(bytes)
    }
}

/// A wgpu error with its sources (naga's message is in the chain).
fn error_text(e: &wgpu::Error) -> String {
    use std::error::Error as _;
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let line = s.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = s.source();
    }
    text
}
