use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_protocol::ContentHash;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, OptLevel};

use super::bindings::RenderJobPre;
use super::cache::{CacheOutcome, ModuleCache};
use super::config::{Determinism, SandboxConfig};
use super::contract;
use super::error::SandboxError;
use super::host::HostState;
use super::version::ContractVersion;

/// How often the epoch ticker advances wasmtime's epoch. Wall-clock limits
/// are enforced to within one tick.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The per-process sandbox: engine, compiled-module cache, epoch ticker.
///
/// Cheap to clone (an `Arc`). The epoch thread stops when the last clone and
/// every module and instance made from it are dropped.
#[derive(Clone)]
pub struct Sandbox {
    inner: Arc<SandboxInner>,
}

pub(crate) struct SandboxInner {
    pub engine: Engine,
    pub config: SandboxConfig,
    cache: ModuleCache,
    linker: Linker<HostState>,
}

impl Sandbox {
    /// Builds the engine with the deterministic configuration and starts the
    /// epoch ticker.
    pub fn new(config: SandboxConfig) -> Result<Self, SandboxError> {
        let mut wasm = Config::new();
        wasm.wasm_component_model(true)
            // Determinism (DESIGN.md invariant 2): no relaxed SIMD (its results
            // differ between CPUs). Threads are off too: wasmtime is built
            // without its `threads` feature, so no shared memory, no races.
            .wasm_relaxed_simd(false)
            .cranelift_nan_canonicalization(config.determinism == Determinism::StrictNan)
            .cranelift_opt_level(OptLevel::Speed)
            .consume_fuel(config.fuel)
            .epoch_interruption(config.epoch_backstop)
            .max_wasm_stack(config.limits.max_wasm_stack);
        let engine = Engine::new(&wasm).map_err(|e| SandboxError::Host(format!("creating the wasm engine: {e}")))?;

        let mut linker = Linker::new(&engine);
        super::bindings::RenderJob::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(|e| SandboxError::Host(format!("linking host functions: {e}")))?;

        if config.epoch_backstop {
            let weak = engine.weak();
            std::thread::Builder::new()
                .name("tessera-epoch".into())
                .spawn(move || loop {
                    std::thread::sleep(EPOCH_TICK);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                })
                .map_err(|e| SandboxError::Host(format!("starting the epoch thread: {e}")))?;
        }

        let cache = ModuleCache::new(&engine, config.cache_dir.clone());
        Ok(Sandbox { inner: Arc::new(SandboxInner { engine, config, cache, linker }) })
    }

    /// The configuration this sandbox was built with.
    pub fn config(&self) -> &SandboxConfig {
        &self.inner.config
    }

    /// Validates, compiles (or fetches from the cache) and checks a component
    /// against the contract. Blocks the calling thread for the compilation:
    /// call it from a blocking-capable thread, not an async executor.
    pub fn load(&self, wasm: &[u8]) -> Result<GuestModule, SandboxError> {
        self.load_with_outcome(wasm).map(|(m, _)| m)
    }

    /// Like [`Self::load`], also saying whether the compiled code came from
    /// memory, disk or a fresh compilation.
    pub fn load_with_outcome(&self, wasm: &[u8]) -> Result<(GuestModule, CacheOutcome), SandboxError> {
        let limits = &self.inner.config.limits;
        if wasm.len() > limits.max_module_bytes {
            return Err(SandboxError::ModuleTooLarge { size: wasm.len(), limit: limits.max_module_bytes });
        }
        check_header(wasm)?;
        let hash = ContentHash::of(wasm);
        let engine = &self.inner.engine;

        let (component, outcome) = if let Some(c) = self.inner.cache.get_memory(&hash) {
            (c, CacheOutcome::Memory)
        } else if let Some(c) = self.inner.cache.get_disk(engine, &hash) {
            (c, CacheOutcome::Disk)
        } else {
            let c = compile_with_timeout(engine, wasm.to_vec(), limits.compile_timeout)?;
            (c, CacheOutcome::Compiled)
        };
        let version = contract::check(engine, &component)?;
        if outcome == CacheOutcome::Compiled {
            // Only cache what passed the contract check.
            self.inner.cache.insert(hash, &component);
        }
        let pre = self
            .inner
            .linker
            .instantiate_pre(&component)
            .map_err(|e| SandboxError::Invalid { detail: format!("{e:#}") })?;
        let pre = RenderJobPre::new(pre).map_err(|e| SandboxError::NotAJob { detail: format!("{e:#}") })?;
        tracing::debug!(module = %hash.short(), ?outcome, %version, "guest module ready");
        Ok((GuestModule { inner: Arc::new(ModuleInner { hash, version, pre, sandbox: self.inner.clone() }) }, outcome))
    }
}

/// Rejects bytes that are not a wasm component before they reach the
/// compiler, with a message that says what they are instead.
fn check_header(wasm: &[u8]) -> Result<(), SandboxError> {
    if wasm.len() < 8 || &wasm[..4] != b"\0asm" {
        let detail = if wasm.is_empty() {
            "the file is empty".to_string()
        } else {
            format!("it does not start with the wasm magic bytes (starts with {:02x?})", &wasm[..wasm.len().min(8)])
        };
        return Err(SandboxError::NotWasm { detail });
    }
    match &wasm[4..8] {
        [1, 0, 0, 0] => Err(SandboxError::CoreModule),
        [_, _, 1, 0] => Ok(()),
        other => Err(SandboxError::NotWasm { detail: format!("unknown wasm version/layer {other:02x?}") }),
    }
}

/// Compiles on a dedicated thread so a slow or hostile module cannot hold
/// the caller past `timeout`. Cranelift cannot be cancelled: on timeout the
/// thread finishes in the background and its result is dropped.
fn compile_with_timeout(engine: &Engine, wasm: Vec<u8>, timeout: Duration) -> Result<Component, SandboxError> {
    let (tx, rx) = mpsc::sync_channel(1);
    let engine = engine.clone();
    let started = Instant::now();
    std::thread::Builder::new()
        .name("tessera-compile".into())
        .spawn(move || {
            let _ = tx.send(Component::new(&engine, &wasm));
        })
        .map_err(|e| SandboxError::Host(format!("starting the compile thread: {e}")))?;
    match rx.recv_timeout(timeout) {
        Ok(Ok(c)) => {
            tracing::debug!(elapsed = ?started.elapsed(), "compiled guest module");
            Ok(c)
        }
        Ok(Err(e)) => Err(SandboxError::Invalid { detail: format!("{e:#}") }),
        Err(mpsc::RecvTimeoutError::Timeout) => Err(SandboxError::CompileTimeout(timeout)),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(SandboxError::Host("the compile thread died".into())),
    }
}

/// A compiled component that implements the render contract. Cheap to clone.
#[derive(Clone)]
pub struct GuestModule {
    pub(crate) inner: Arc<ModuleInner>,
}

pub(crate) struct ModuleInner {
    pub hash: ContentHash,
    pub version: ContractVersion,
    pub pre: RenderJobPre<HostState>,
    pub sandbox: Arc<SandboxInner>,
}

impl GuestModule {
    /// blake3 of the component's bytes: the module's name everywhere.
    pub fn hash(&self) -> ContentHash {
        self.inner.hash
    }

    /// The contract version the guest was built against.
    pub fn contract_version(&self) -> ContractVersion {
        self.inner.version
    }
}
