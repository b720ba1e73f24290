//! Spot checks, the second half of proof-of-render (DESIGN.md): after a
//! tile's signed commitment `C` has been checked, `k` of its pixels, chosen
//! by blake3 keyed with this epoch's secret over `C`, are rendered again
//! here through the same sandbox and compared bit for bit (CPU tiles).
//!
//! **Choosing k.** Drawing `k` of a tile's `n` pixels without replacement
//! catches a tile with `b` faked pixels with probability
//! `P = 1 − C(n−b, k) / C(n, k)` (≥ `1 − (1 − b/n)^k`). The farm picks the
//! smallest `k` with `P ≥ target` for a tile with `faked_fraction` of its
//! pixels faked ([`tessera_protocol::proof::pixels_to_check`]). Default: 10 %
//! faked caught with 99 % per tile, which is `k = 44` on a 64×64 tile (1.1 %
//! of its pixels); the same `k` catches 5 % faked with 90 % and 1 % with
//! 35 % per tile, and so a worker that fakes 1 % of every tile of a
//! 24-frame job of 100 tiles a frame is caught with probability
//! `1 − 0.65^2400` (certainty, for practical purposes) long before the job ends.
//!
//! **Epoch secrets.** The key is made per epoch (an hour by default), kept
//! in the store's metadata so a restarted coordinator checks with the same
//! key, and revealed once the epoch is over ([`Verifier::revealed_secrets`]),
//! so anyone can replay which pixels were checked. A worker learns the
//! key only after every tile it could have rendered under it is committed.
//!
//! Instances are kept warm per job (the scene is loaded once), at most a
//! few jobs at a time, and checks run on blocking threads, never on the
//! core loop.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use tessera_client::manifest::Confirmation;
use tessera_protocol::proof::{self, Commitment};
use tessera_protocol::wire::TileTask;
use tessera_protocol::{ContentHash, Rect, TileAccumulators};
use tessera_worker::sandbox::{
    FuelBudget, GuestModule, JobInstance, JobSettings, JobSpec as SandboxJob, Sandbox, SandboxError, TileRequest,
};

use super::lock;
use tessera_protocol::gpu_check::{self, GpuComparison, GpuTolerance, SceneScale};
use tessera_store::{Blobs, Store, StoreError};

/// How tiles are checked.
#[derive(Clone, Debug, PartialEq)]
pub struct VerifyConfig {
    /// Spot checks on (the default). A private farm of one's own machines
    /// may turn them off; signatures are checked regardless.
    pub spot_checks: bool,
    /// The share of faked pixels a tile must be caught with…
    pub faked_fraction: f64,
    /// …with at least this probability.
    pub target: f64,
    /// How long one secret key is used before it is revealed.
    pub epoch: Duration,
    /// Consecutive verified results after which a worker is trusted
    /// (BOINC's adaptive replication; shown in the API).
    pub trust_threshold: u64,
    /// Adaptive replication on (the default): results of workers below
    /// the threshold wait for a second, independent opinion.
    pub replication: bool,
    /// Workers at one IP address are not independent of each other
    /// (turn off for a farm on one machine, e.g. `tessera demo`).
    pub independent_addresses: bool,
    /// How long a tile waits for an independent worker before the
    /// coordinator renders the second opinion itself.
    pub replica_wait: Duration,
    /// How far a GPU tile's pixels may be from the CPU's (`gpu_check.rs`).
    pub gpu_tolerance: GpuTolerance,
}

impl Default for VerifyConfig {
    fn default() -> Self {
        VerifyConfig {
            spot_checks: true,
            faked_fraction: 0.10,
            target: 0.99,
            epoch: Duration::from_secs(3600),
            trust_threshold: 10,
            replication: true,
            independent_addresses: true,
            replica_wait: Duration::from_secs(30),
            gpu_tolerance: GpuTolerance::default(),
        }
    }
}

/// What a spot check found.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SpotCheck {
    /// The epoch whose secret chose the pixels.
    pub epoch: u64,
    /// Pixels re-rendered.
    pub pixels: u32,
    /// The first pixel that differed (frame coordinates), if any.
    pub mismatch: Option<(u32, u32)>,
    /// That pixel as re-rendered here and as the worker sent it: RGB sums
    /// and weight (the evidence).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<[f32; 4]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub got: Option<[f32; 4]>,
    /// Fuel the re-rendered pixels took: the job's measured cost, on which
    /// credit is based.
    #[serde(default)]
    pub fuel: u64,
    /// For a GPU tile: how its pixels compare with the CPU's, within the
    /// tolerance. `mismatch` is then the worst pixel when it is outside.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<GpuComparison>,
}

impl SpotCheck {
    /// Whether the tile passed: bit for bit (CPU tiles) or within the
    /// tolerance (GPU tiles). A GPU tile that did not pass is replicated,
    /// not counted as a failed check (`gpu_check.rs`).
    pub fn passed(&self) -> bool {
        match &self.gpu {
            Some(c) => c.within(),
            None => self.mismatch.is_none(),
        }
    }
}

/// Why a check could not be run (not a verdict on the tile).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("re-rendering: {0}")]
    Sandbox(#[from] SandboxError),
    #[error("entropy for an epoch secret: {0}")]
    Entropy(String),
}

/// Jobs whose instances are kept warm.
const WARM_JOBS: usize = 4;

/// Re-renders chosen pixels and compares them. Shared by all connections.
pub struct Verifier {
    config: VerifyConfig,
    sandbox: Sandbox,
    blobs: Blobs,
    store: Arc<Mutex<Store>>,
    modules: Mutex<BTreeMap<ContentHash, GuestModule>>,
    /// Held while a module compiles: the checks of a job's first tiles, which
    /// arrive together from every worker, wait for one compilation instead
    /// of each compiling the module (60 workers once made 60 concurrent
    /// compilations that held the farm's CPUs and 1 GiB for minutes).
    loading: Mutex<()>,
    /// Idle instances per job, most recently used job last.
    instances: Mutex<Vec<(u64, Vec<JobInstance>)>>,
    secrets: Mutex<BTreeMap<u64, [u8; 32]>>,
    /// Per job, the brightness of its re-rendered pixels: the GPU
    /// tolerance's floor is calibrated to the scene with it.
    scales: Mutex<BTreeMap<u64, SceneScale>>,
}

/// Jobs whose scene scale is remembered.
const SCALED_JOBS: usize = 64;

impl Verifier {
    pub fn new(config: VerifyConfig, store: Arc<Mutex<Store>>) -> Result<Verifier, VerifyError> {
        let blobs = lock(&store).blobs().clone();
        let cache_dir = lock(&store).data_dir().join("modules");
        let sandbox =
            Sandbox::new(tessera_worker::sandbox::SandboxConfig { cache_dir: Some(cache_dir), ..Default::default() })?;
        Ok(Verifier {
            config,
            sandbox,
            blobs,
            store,
            modules: Mutex::default(),
            loading: Mutex::default(),
            instances: Mutex::default(),
            secrets: Mutex::default(),
            scales: Mutex::default(),
        })
    }

    pub fn config(&self) -> &VerifyConfig {
        &self.config
    }

    /// Pixels checked for a tile of `rect`.
    pub fn pixels_for(&self, rect: Rect) -> u32 {
        proof::pixels_to_check(rect.pixel_count(), self.config.faked_fraction, self.config.target)
    }

    fn epoch_of(&self, unix_ms: u64) -> u64 {
        unix_ms / (self.config.epoch.as_millis().max(1) as u64)
    }

    /// The secret of `epoch`, made and stored on first use.
    fn secret(&self, epoch: u64) -> Result<[u8; 32], VerifyError> {
        let mut secrets = self.secrets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = secrets.get(&epoch) {
            return Ok(*s);
        }
        let key = format!("proof-epoch-{epoch}");
        let mut store = lock(&self.store);
        let secret = match store.meta(&key)? {
            Some(bytes) if bytes.len() == 32 => {
                let mut s = [0u8; 32];
                s.copy_from_slice(&bytes);
                s
            }
            _ => {
                let mut s = [0u8; 32];
                getrandom::fill(&mut s).map_err(|e| VerifyError::Entropy(e.to_string()))?;
                store.set_meta(&key, &s)?;
                s
            }
        };
        secrets.insert(epoch, secret);
        Ok(secret)
    }

    /// Secrets of epochs that are over, by epoch (for audits).
    pub fn revealed_secrets(&self, now_ms: u64) -> Result<BTreeMap<u64, [u8; 32]>, VerifyError> {
        let current = self.epoch_of(now_ms);
        let store = lock(&self.store);
        let mut out = BTreeMap::new();
        for (key, value) in store.meta_with_prefix("proof-epoch-")? {
            let Ok(epoch) = key.trim_start_matches("proof-epoch-").parse::<u64>() else { continue };
            if epoch < current && value.len() == 32 {
                let mut s = [0u8; 32];
                s.copy_from_slice(&value);
                out.insert(epoch, s);
            }
        }
        Ok(out)
    }

    /// Re-renders the pixels the epoch's secret picks from `commitment` and
    /// compares them with `tile`'s: bit for bit for a CPU tile, within the
    /// scene's tolerance for a tile rendered on `gpu`.
    pub fn check(
        &self,
        task: &TileTask,
        tile: &TileAccumulators,
        commitment: &Commitment,
        gpu: Option<&tessera_protocol::wire::GpuClass>,
        now_ms: u64,
    ) -> Result<SpotCheck, VerifyError> {
        let epoch = self.epoch_of(now_ms);
        let secret = self.secret(epoch)?;
        let k = self.pixels_for(task.rect);
        let pixels = proof::spot_pixels(&secret, commitment, task.rect, k);
        let mut instance = self.instance(task)?;
        let mut rendered = Vec::with_capacity(pixels.len());
        let mut fuel = 0u64;
        let mut outcome = Ok(());
        for &(x, y) in &pixels {
            let rect = Rect { x, y, width: 1, height: 1 };
            let request = TileRequest::new(task.frame, rect, task.samples.start, task.samples.count, task.seed)
                .with_guides(task.job.guides);
            match instance.render_tile(&request) {
                Ok(mut out) => {
                    out.accumulators.canonicalize_nans();
                    fuel += out.fuel_used;
                    rendered.push(out.accumulators);
                }
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            }
        }
        self.give_back(task.job.job, instance);
        outcome?;
        let as_array = |p: Option<([f32; 3], f32)>| p.map(|(c, w)| [c[0], c[1], c[2], w]);
        let scale = {
            let mut scales = self.scales.lock().unwrap_or_else(|e| e.into_inner());
            let entry = scales.entry(task.job.job).or_default();
            for (acc, &(x, y)) in rendered.iter().zip(&pixels) {
                if let Some((c, w)) = acc.pixel_at(x, y).filter(|(_, w)| *w > 0.0) {
                    entry.add([c[0] / w, c[1] / w, c[2] / w]);
                }
            }
            let value = entry.value();
            while scales.len() > SCALED_JOBS {
                scales.pop_first();
            }
            value
        };
        let mut check = SpotCheck {
            epoch,
            pixels: k.min(pixels.len() as u32),
            mismatch: None,
            expected: None,
            got: None,
            fuel,
            gpu: None,
        };
        if gpu.is_some() {
            let cmp = gpu_check::compare(
                pixels.iter().zip(&rendered).map(|(&(x, y), acc)| (x, y, acc)),
                tile,
                self.config.gpu_tolerance,
                scale,
            );
            if !cmp.within() {
                check.mismatch = cmp.worst_at;
            }
            if let Some((x, y)) = cmp.worst_at {
                let i = pixels.iter().position(|p| *p == (x, y)).unwrap_or(0);
                check.expected = rendered.get(i).and_then(|a| as_array(a.pixel_at(x, y)));
                check.got = as_array(tile.pixel_at(x, y));
            }
            check.gpu = Some(cmp);
            return Ok(check);
        }
        for (acc, &(x, y)) in rendered.iter().zip(&pixels) {
            let (expected, got) = (acc.pixel_at(x, y), tile.pixel_at(x, y));
            let same = match (expected, got) {
                (Some((ec, ew)), Some((gc, gw))) => {
                    ec.iter().zip(gc.iter()).all(|(a, b)| a.to_bits() == b.to_bits()) && ew.to_bits() == gw.to_bits()
                }
                _ => false,
            };
            // A denoised job's guides are pixels too: bit for bit on the CPU.
            let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
            let same = same && bits(acc.aovs_at(x, y)) == bits(tile.aovs_at(x, y));
            if !same {
                check.mismatch = Some((x, y));
                check.expected = as_array(expected);
                check.got = as_array(got);
                break;
            }
        }
        Ok(check)
    }

    /// Renders a whole tile here (a second opinion no worker could give,
    /// or the arbiter between two that disagree).
    pub fn render(&self, task: &TileTask) -> Result<TileAccumulators, VerifyError> {
        let mut instance = self.instance(task)?;
        let request = TileRequest::new(task.frame, task.rect, task.samples.start, task.samples.count, task.seed)
            .with_guides(task.job.guides);
        let out = instance.render_tile(&request);
        self.give_back(task.job.job, instance);
        let mut acc = out?.accumulators;
        acc.canonicalize_nans();
        Ok(acc)
    }

    /// A warm instance of the task's job, or a new one.
    fn instance(&self, task: &TileTask) -> Result<JobInstance, VerifyError> {
        {
            let mut warm = self.instances.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(pos) = warm.iter().position(|(job, _)| *job == task.job.job) {
                let (job, mut idle) = warm.remove(pos);
                let found = idle.pop();
                warm.push((job, idle));
                if let Some(i) = found.filter(|i| !i.is_poisoned()) {
                    return Ok(i);
                }
            }
        }
        let job = &task.job;
        let module = self.module(&job.module)?;
        let spec = SandboxJob {
            scene: self.blobs.get(&job.scene.0)?.into(),
            // The coordinator's opinion is always the CPU's.
            settings: JobSettings {
                width: job.width,
                height: job.height,
                fps: job.fps,
                extra: tessera_protocol::wire::Engine::Cpu.set_in(&job.extra),
            },
            fuel: FuelBudget {
                per_tile: job.fuel_per_tile,
                per_pixel_sample: job.fuel_per_pixel_sample,
                ..FuelBudget::default()
            },
            label: format!("verifier job {}", job.job),
        };
        Ok(module.instantiate(&spec)?)
    }

    /// The compiled module `hash`, compiled (once, however many checks
    /// ask together) if it is not warm.
    fn module(&self, hash: &ContentHash) -> Result<GuestModule, VerifyError> {
        let cached = |v: &Verifier| v.modules.lock().unwrap_or_else(|e| e.into_inner()).get(hash).cloned();
        if let Some(m) = cached(self) {
            return Ok(m);
        }
        let _loading = self.loading.lock().unwrap_or_else(|e| e.into_inner());
        // Another check may have loaded it while this one waited.
        if let Some(m) = cached(self) {
            return Ok(m);
        }
        let m = self.sandbox.load(&self.blobs.get(&hash.0)?)?;
        let mut modules = self.modules.lock().unwrap_or_else(|e| e.into_inner());
        while modules.len() >= WARM_JOBS {
            modules.pop_first();
        }
        modules.insert(*hash, m.clone());
        Ok(m)
    }

    /// Compiles module `hash` ahead of the first check that needs it: a
    /// coordinator resuming jobs (a restart, a fail-over) does it while its
    /// workers reconnect, instead of making the first results wait.
    pub fn warm(&self, hash: &ContentHash) {
        if let Err(e) = self.module(hash) {
            tracing::warn!(module = %hash, error = %e, "could not compile a job's module ahead of its checks");
        }
    }

    fn give_back(&self, job: u64, instance: JobInstance) {
        if instance.is_poisoned() {
            return;
        }
        let mut warm = self.instances.lock().unwrap_or_else(|e| e.into_inner());
        match warm.iter_mut().find(|(j, _)| *j == job) {
            Some((_, idle)) => idle.push(instance),
            None => warm.push((job, vec![instance])),
        }
        while warm.len() > WARM_JOBS {
            warm.remove(0);
        }
    }
}

/// What the store keeps with each tile, and frame manifests list: who
/// rendered it, what they signed, and what the coordinator checked.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TileProof {
    /// The worker's identity (blake3 of its public key, hex).
    pub worker: String,
    /// Its raw ed25519 public key, hex: enough to check the signature offline.
    pub public_key: String,
    pub commitment: String,
    pub signature: String,
    pub sample_start: u32,
    pub sample_count: u32,
    /// The signature was checked against the connection's key (always true
    /// for a stored tile: others are refused).
    pub signature_checked: bool,
    /// `None` when spot checks are off.
    pub spot_check: Option<SpotCheck>,
    /// The GPU class the worker rendered on (signed in the commitment);
    /// `None` for a CPU tile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<tessera_protocol::wire::GpuClass>,
    /// Who confirmed the whole tile after its spot check (replication),
    /// apart from the spot check's own outcome. A GPU tile outside the
    /// tolerance is kept only when confirmed.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "confirmation_or_legacy")]
    pub confirmed_by: Option<Confirmation>,
}

/// Reads `confirmed_by` as written now, or as the bare word (`"replica"`,
/// `"coordinator"`) proofs stored before the replica's signature was kept.
fn confirmation_or_legacy<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Confirmation>, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Stored {
        Word(String),
        Full(Confirmation),
    }
    Ok(match <Option<Stored> as serde::Deserialize>::deserialize(d)? {
        None => None,
        Some(Stored::Full(c)) => Some(c),
        Some(Stored::Word(w)) if w == "coordinator" => Some(Confirmation::Coordinator),
        Some(Stored::Word(w)) if w == "replica" => {
            Some(Confirmation::Replica { worker: String::new(), public_key: String::new(), signature: String::new() })
        }
        Some(Stored::Word(w)) => {
            return Err(serde::de::Error::custom(format!("unknown confirmation {w:?}")));
        }
    })
}

impl TileProof {
    /// The confirmation this proof gives another worker's tile: this
    /// worker's, as a replica.
    pub fn as_replica(&self) -> Confirmation {
        Confirmation::Replica {
            worker: self.worker.clone(),
            public_key: self.public_key.clone(),
            signature: self.signature.clone(),
        }
    }

    /// The credit a verified tile earns: 1 credit is 10⁹ units of wasm fuel
    /// of verified work. The cost comes from the coordinator's own
    /// re-render of the checked pixels (fuel is deterministic), scaled to
    /// the tile's pixel count: samples × pixels, normalised by the job's
    /// cost per sample. Without spot checks (a private farm), the worker's
    /// reported fuel is used.
    pub fn credit(&self, pixels: u64, reported_fuel: u64) -> f64 {
        match &self.spot_check {
            Some(c) if c.pixels > 0 => c.fuel as f64 / f64::from(c.pixels) * pixels as f64 / 1e9,
            _ => reported_fuel as f64 / 1e9,
        }
    }
}
