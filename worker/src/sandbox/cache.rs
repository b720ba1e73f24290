//! Compiled components, keyed by blake3(wasm) and the engine's compatibility
//! hash, in memory and (optionally) on disk.
//!
//! Compiling a path tracer takes seconds; a worker sees the same module for
//! every tile of a job and across jobs, so compile once per machine.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tessera_protocol::ContentHash;
use wasmtime::component::Component;
use wasmtime::Engine;

/// Feeds `std::hash::Hash` output into blake3, for a key that is stable
/// across runs (unlike `DefaultHasher`, which makes no such promise).
struct Blake3Hasher(blake3::Hasher);

impl Hasher for Blake3Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    fn finish(&self) -> u64 {
        let h = self.0.finalize();
        u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"))
    }
}

/// 16 hex digits naming the engine's compiled-code format: changes with the
/// wasmtime version and with every setting that changes generated code.
pub(crate) fn engine_key(engine: &Engine) -> String {
    let mut h = Blake3Hasher(blake3::Hasher::new());
    engine.precompile_compatibility_hash().hash(&mut h);
    format!("{:016x}", h.finish())
}

pub(crate) struct ModuleCache {
    engine_key: String,
    dir: Option<PathBuf>,
    memory: Mutex<BTreeMap<ContentHash, Component>>,
}

/// Where a compiled component came from, for logs and benchmarks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheOutcome {
    Memory,
    Disk,
    Compiled,
}

impl ModuleCache {
    pub fn new(engine: &Engine, dir: Option<PathBuf>) -> Self {
        ModuleCache { engine_key: engine_key(engine), dir, memory: Mutex::new(BTreeMap::new()) }
    }

    fn path(&self, hash: &ContentHash) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join(format!("{}-{}.cwasm", hash.to_hex(), self.engine_key)))
    }

    pub fn get_memory(&self, hash: &ContentHash) -> Option<Component> {
        self.memory.lock().unwrap_or_else(|e| e.into_inner()).get(hash).cloned()
    }

    /// Loads a component compiled by an earlier run. A file that does not
    /// load (truncated, another wasmtime) is removed and reported as a miss.
    pub fn get_disk(&self, engine: &Engine, hash: &ContentHash) -> Option<Component> {
        let path = self.path(hash)?;
        if !path.exists() {
            return None;
        }
        // SAFETY: the cache directory is private to this process's user and
        // only ever holds files this module wrote from `Component::serialize`
        // (see `SandboxConfig::cache_dir`); wasmtime checks the header and the
        // engine compatibility itself.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(c) => {
                self.insert_memory(*hash, c.clone());
                Some(c)
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), "discarding unusable compiled module: {e}");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    pub fn insert_memory(&self, hash: ContentHash, component: Component) {
        self.memory.lock().unwrap_or_else(|e| e.into_inner()).insert(hash, component);
    }

    /// Stores a freshly compiled component; a failure to write the disk copy
    /// is logged and otherwise ignored (the cache is an optimisation).
    pub fn insert(&self, hash: ContentHash, component: &Component) {
        self.insert_memory(hash, component.clone());
        let Some(path) = self.path(&hash) else { return };
        let write = || -> Result<(), String> {
            let bytes = component.serialize().map_err(|e| e.to_string())?;
            let dir = path.parent().ok_or("cache path has no parent")?;
            std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
            // Unique per write, not only per process: two threads that
            // compiled the same module at once (a verifier's concurrent spot
            // checks) must not rename each other's temporary away.
            static WRITES: AtomicU64 = AtomicU64::new(0);
            let n = WRITES.fetch_add(1, Ordering::Relaxed);
            let tmp = dir.join(format!(".{}.{}.{n}.tmp", hash.to_hex(), std::process::id()));
            std::fs::write(&tmp, bytes).map_err(|e| e.to_string())?;
            std::fs::rename(&tmp, &path).map_err(|e| e.to_string())
        };
        if let Err(e) = write() {
            tracing::warn!(path = %path.display(), "could not write compiled module to the cache: {e}");
        }
    }
}
