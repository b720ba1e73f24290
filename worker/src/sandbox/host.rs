//! What the host gives a guest: the `log` import and the resource limiter.
//! Both treat every value from the guest as hostile.

use std::collections::VecDeque;

use wasmtime::ResourceLimiter;

use super::bindings::tessera::render::gpu;
use super::bindings::tessera::render::log::{self, Level};
use super::config::Limits;
use super::error::LimitKind;

/// Severity of a guest's log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// One line a guest logged, kept for the job's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestLog {
    pub level: LogLevel,
    pub message: String,
}

/// Lines kept per instance for [`JobInstance::take_logs`](super::JobInstance::take_logs).
const KEPT_LOG_LINES: usize = 1000;

/// A limit the guest hit, carried inside the trap's error so the instance
/// can report which one.
#[derive(Debug, thiserror::Error)]
#[error("{kind} limit {limit} exceeded")]
pub(crate) struct LimitHit {
    pub kind: LimitKind,
    pub limit: u64,
}

/// The `T` of each `Store<T>`: per-instance host state.
pub(crate) struct HostState {
    limits: Limits,
    /// Lines logged during the current call, against the per-call cap.
    lines_this_call: usize,
    dropped_this_call: usize,
    logs: VecDeque<GuestLog>,
    /// The last panic message the SDK logged, to name in a trap error.
    pub last_panic: Option<String>,
    /// Prefix for this instance's tracing events (job and slot).
    pub label: String,
    /// The instance's GPU buffers and budget, when the sandbox has a GPU
    /// and the job may use it.
    pub gpu: Option<crate::gpu::GpuSession>,
    /// Whether the current tile may use the GPU: off, the guest sees no
    /// adapter and every call answers `unavailable`, so it renders on the
    /// CPU (a second opinion on a CPU tile must match it bit for bit).
    pub gpu_allowed: bool,
}

impl HostState {
    pub fn new(limits: Limits, label: String, gpu: Option<crate::gpu::GpuSession>) -> Self {
        HostState {
            limits,
            lines_this_call: 0,
            dropped_this_call: 0,
            logs: VecDeque::new(),
            last_panic: None,
            label,
            gpu,
            gpu_allowed: true,
        }
    }

    /// Resets the per-call log budget; reports what the last call dropped.
    pub fn begin_call(&mut self) {
        self.end_call();
        self.lines_this_call = 0;
        self.last_panic = None;
    }

    pub fn end_call(&mut self) {
        if self.dropped_this_call > 0 {
            let message = format!(
                "{} more log lines dropped (limit {} per call)",
                self.dropped_this_call, self.limits.max_log_lines_per_call
            );
            tracing::warn!(target: "tessera::guest", instance = %self.label, "{message}");
            self.keep(GuestLog { level: LogLevel::Warn, message });
            self.dropped_this_call = 0;
        }
    }

    pub fn take_logs(&mut self) -> Vec<GuestLog> {
        self.logs.drain(..).collect()
    }

    fn keep(&mut self, line: GuestLog) {
        if self.logs.len() == KEPT_LOG_LINES {
            self.logs.pop_front();
        }
        self.logs.push_back(line);
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary.
fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

impl log::Host for HostState {
    fn log(&mut self, level: Level, message: String) {
        if self.lines_this_call >= self.limits.max_log_lines_per_call {
            self.dropped_this_call += 1;
            return;
        }
        self.lines_this_call += 1;
        let message = truncate(message, self.limits.max_log_line_bytes);
        let level = match level {
            Level::Trace => LogLevel::Trace,
            Level::Debug => LogLevel::Debug,
            Level::Info => LogLevel::Info,
            Level::Warn => LogLevel::Warn,
            Level::Error => LogLevel::Error,
        };
        let label = &self.label;
        match level {
            LogLevel::Trace => tracing::trace!(target: "tessera::guest", instance = %label, "{message}"),
            LogLevel::Debug => tracing::debug!(target: "tessera::guest", instance = %label, "{message}"),
            LogLevel::Info => tracing::info!(target: "tessera::guest", instance = %label, "{message}"),
            LogLevel::Warn => tracing::warn!(target: "tessera::guest", instance = %label, "{message}"),
            LogLevel::Error => tracing::error!(target: "tessera::guest", instance = %label, "{message}"),
        }
        if level == LogLevel::Error && message.starts_with("guest panicked") {
            self.last_panic = Some(message.clone());
        }
        self.keep(GuestLog { level, message });
    }
}

impl super::bindings::tessera::render::types::Host for HostState {}

impl From<crate::gpu::GpuError> for gpu::GpuError {
    fn from(e: crate::gpu::GpuError) -> Self {
        use crate::gpu::GpuError as E;
        match e {
            E::Unavailable => gpu::GpuError::Unavailable,
            E::InvalidShader(m) => gpu::GpuError::InvalidShader(m),
            E::OverBudget(m) => gpu::GpuError::OverBudget(m),
            E::InvalidArgument(m) => gpu::GpuError::InvalidArgument(m),
            E::DeviceLost(m) => gpu::GpuError::DeviceLost(m),
        }
    }
}

impl HostState {
    fn gpu(&mut self) -> Result<&mut crate::gpu::GpuSession, gpu::GpuError> {
        self.gpu.as_mut().filter(|_| self.gpu_allowed).ok_or(gpu::GpuError::Unavailable)
    }
}

/// The `gpu` import: each call goes to [`crate::gpu::GpuSession`], which
/// checks the budgets and talks to the device thread. Errors are the
/// guest's to handle (fall back to the CPU); none traps.
impl gpu::Host for HostState {
    fn adapter(&mut self) -> Option<gpu::AdapterInfo> {
        let a = self.gpu.as_ref().filter(|_| self.gpu_allowed)?.adapter().clone();
        Some(gpu::AdapterInfo {
            name: a.name,
            vendor: a.vendor,
            device: a.device,
            driver: a.driver,
            backend: a.backend,
            software: a.software,
        })
    }

    fn create_buffer(&mut self, size: u64) -> Result<u32, gpu::GpuError> {
        Ok(self.gpu()?.create_buffer(size)?)
    }

    fn write_buffer(&mut self, buffer: u32, offset: u64, data: Vec<u8>) -> Result<(), gpu::GpuError> {
        Ok(self.gpu()?.write_buffer(buffer, offset, &data)?)
    }

    fn read_buffer(&mut self, buffer: u32, offset: u64, size: u64) -> Result<Vec<u8>, gpu::GpuError> {
        Ok(self.gpu()?.read_buffer(buffer, offset, size)?)
    }

    fn destroy_buffer(&mut self, buffer: u32) {
        if let Some(g) = self.gpu.as_mut() {
            g.destroy_buffer(buffer);
        }
    }

    fn dispatch(
        &mut self,
        shader: String,
        entry_point: String,
        bindings: Vec<gpu::Binding>,
        x: u32,
        y: u32,
        z: u32,
    ) -> Result<(), gpu::GpuError> {
        let bindings: Vec<crate::gpu::Binding> =
            bindings.iter().map(|b| crate::gpu::Binding { binding: b.binding, buffer: b.buffer }).collect();
        Ok(self.gpu()?.dispatch(&shader, &entry_point, &bindings, [x, y, z])?)
    }

    fn advised_workgroups(&mut self, shader: String, entry_point: String) -> u64 {
        // Without a GPU (or on a lost device) there is nothing to advise.
        self.gpu().ok().and_then(|g| g.advised_workgroups(&shader, &entry_point).ok()).unwrap_or(0)
    }
}

impl ResourceLimiter for HostState {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.limits.max_memory_bytes {
            // An error (not `Ok(false)`) traps at once with a cause we can
            // name, instead of letting the guest's allocator abort vaguely.
            return Err(wasmtime::Error::new(LimitHit {
                kind: LimitKind::Memory,
                limit: self.limits.max_memory_bytes as u64,
            }));
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.limits.max_table_elements {
            return Err(wasmtime::Error::new(LimitHit {
                kind: LimitKind::TableElements,
                limit: self.limits.max_table_elements as u64,
            }));
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        self.limits.max_instances
    }

    fn tables(&self) -> usize {
        self.limits.max_tables
    }

    fn memories(&self) -> usize {
        self.limits.max_memories
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncate("héllo".into(), 2), "h…");
        assert_eq!(truncate("abc".into(), 3), "abc");
    }

    #[test]
    fn log_lines_are_capped_per_call() {
        let limits = Limits { max_log_lines_per_call: 3, ..Limits::default() };
        let mut h = HostState::new(limits, "t".into(), None);
        h.begin_call();
        for i in 0..10 {
            log::Host::log(&mut h, Level::Info, format!("{i}"));
        }
        h.end_call();
        let logs = h.take_logs();
        assert_eq!(logs.len(), 4);
        assert!(logs[3].message.starts_with("7 more log lines dropped"));
    }
}
