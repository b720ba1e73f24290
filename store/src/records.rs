//! The records the store keeps, as plain Rust: what every backend reads
//! and writes, whatever its SQL.

use std::fmt;

/// Where a job is in its life. Stored as lowercase text (`"queued"`, …).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobState {
    Queued,
    Running,
    Done,
    Failed,
    Cancelled,
}

impl JobState {
    /// Whether the job will never run again (done, failed or cancelled).
    pub fn is_finished(&self) -> bool {
        matches!(self, JobState::Done | JobState::Failed | JobState::Cancelled)
    }

    /// The lowercase name, as stored and as the API shows it.
    pub fn as_str(&self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    /// The state stored as `s`.
    pub fn parse(s: &str) -> Option<JobState> {
        Some(match s {
            "queued" => JobState::Queued,
            "running" => JobState::Running,
            "done" => JobState::Done,
            "failed" => JobState::Failed,
            "cancelled" => JobState::Cancelled,
            _ => return None,
        })
    }
}

/// A job as submitted, before the store gives it an id.
#[derive(Clone, Debug, PartialEq)]
pub struct NewJob {
    pub name: String,
    /// The job's settings (scene and module hashes, sizes, samples) as JSON;
    /// opaque to the store.
    pub spec_json: String,
    pub priority: i32,
    /// Tiles per frame.
    pub tiles: u32,
    pub frames: Vec<i32>,
}

/// A stored job.
#[derive(Clone, Debug, PartialEq)]
pub struct JobRecord {
    pub id: u64,
    pub name: String,
    pub spec_json: String,
    pub priority: i32,
    pub tiles: u32,
    pub frames: Vec<i32>,
    pub state: JobState,
    /// Why the job failed, when it did.
    pub error: Option<String>,
    pub created_ms: u64,
    /// When the job reached a finished state; `None` while it is not finished.
    pub finished_ms: Option<u64>,
}

/// A verified tile result. Identified by `(job, index)`: a job's tile indices
/// run over all its frames.
#[derive(Clone, Debug, PartialEq)]
pub struct TileRecord {
    pub job: u64,
    pub index: u32,
    pub frame: i32,
    /// The hash the tile was verified under. The store keeps it as given and
    /// does not recompute it from `data`.
    pub hash: [u8; 32],
    /// The tile's encoded float accumulators (a few KiB to about 1 MiB).
    pub data: Vec<u8>,
    /// Identity of the worker whose result was accepted.
    pub worker: String,
    pub fuel: u64,
    pub millis: u64,
    /// The proof-of-render record (JSON: commitment, signature, checks);
    /// `None` for tiles stored before proofs existed.
    pub proof: Option<String>,
    /// Credit the worker earns for it (written to the ledger with the
    /// tile); not read back.
    pub credit: Option<TileCredit>,
    /// Another worker credited for it (its equal result confirmed this one).
    pub also_credit: Option<(String, TileCredit)>,
}

/// An assembled frame: blob hashes of its outputs.
#[derive(Clone, Debug, PartialEq)]
pub struct FrameRecord {
    pub job: u64,
    pub frame: i32,
    /// The EXR file; `None` when the job did not ask for EXR.
    pub exr: Option<[u8; 32]>,
    /// The PNG file; `None` when the job did not ask for PNG.
    pub png: Option<[u8; 32]>,
    /// Always made: the web page and the API's frame listings show it
    /// (from the denoised image when there is one).
    pub thumbnail: [u8; 32],
    pub finished_ms: u64,
    /// The denoised EXR and PNG of a denoised job (`JobSpec::denoise`), in
    /// the formats the job asked for; `None` otherwise.
    pub denoised_exr: Option<[u8; 32]>,
    pub denoised_png: Option<[u8; 32]>,
}

impl FrameRecord {
    /// Every blob the frame refers to.
    pub fn blobs(&self) -> impl Iterator<Item = [u8; 32]> {
        [self.exr, self.png, Some(self.thumbnail), self.denoised_exr, self.denoised_png].into_iter().flatten()
    }
}

/// A worker the coordinator has seen, keyed by its identity (its key's
/// fingerprint).
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerRecord {
    pub identity: String,
    pub name: String,
    pub capabilities_json: String,
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    /// Tiles of this worker's that were recorded first (its twins' don't count).
    pub tiles_done: u64,
}

/// What a token grants: joining as a worker, or using the HTTP API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    Worker,
    Api,
}

impl TokenKind {
    /// The lowercase name, as stored.
    pub fn as_str(&self) -> &'static str {
        match self {
            TokenKind::Worker => "worker",
            TokenKind::Api => "api",
        }
    }

    /// The secret's prefix (`tw_`, `ta_`): tells a person which kind a
    /// secret is, and lets secret scanners recognise leaked ones.
    pub fn prefix(&self) -> &'static str {
        match self {
            TokenKind::Worker => "tw_",
            TokenKind::Api => "ta_",
        }
    }

    /// The kind stored as `s`.
    pub fn parse(s: &str) -> Option<TokenKind> {
        match s {
            "worker" => Some(TokenKind::Worker),
            "api" => Some(TokenKind::Api),
            _ => None,
        }
    }
}

/// What an API token may do. Ordered `Read < Submit < Admin`, the order a
/// token's scopes are kept and shown in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Every `GET`: jobs, frames, logs, workers, status.
    Read,
    /// Submitting, cancelling and retrying jobs. Does not imply `Read`, so a
    /// render button can hold an upload-only token.
    Submit,
    /// Everything, including deleting jobs.
    Admin,
}

impl Scope {
    /// Every scope, in order.
    pub const ALL: [Scope; 3] = [Scope::Read, Scope::Submit, Scope::Admin];

    /// The lowercase name, as stored, typed on the command line and shown.
    pub fn as_str(&self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Submit => "submit",
            Scope::Admin => "admin",
        }
    }

    /// The scope named `s` (lowercase, as [`Scope::as_str`] writes it).
    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|scope| scope.as_str() == s)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a token holding `scopes` may do what needs `needed`: `Admin`
/// grants everything, any other scope only itself (`Submit` does not imply
/// `Read`).
pub fn grants(scopes: &[Scope], needed: Scope) -> bool {
    scopes.iter().any(|&s| s == Scope::Admin || s == needed)
}

/// A token's public facts. The secret itself is never stored.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenRecord {
    pub id: u64,
    pub kind: TokenKind,
    pub label: String,
    pub created_ms: u64,
    pub revoked: bool,
    /// What the token may do on the API, sorted and without duplicates;
    /// empty for worker tokens.
    pub scopes: Vec<Scope>,
}

/// How bad a job log line is. Stored as lowercase text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    Info,
    Warn,
    Error,
}

impl LogLevel {
    /// The lowercase name, as stored and as the API shows it.
    pub fn as_str(&self) -> &'static str {
        match self {
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }

    /// The level named `s` (lowercase, as [`LogLevel::as_str`] writes it).
    pub fn parse(s: &str) -> Option<LogLevel> {
        Some(match s {
            "info" => LogLevel::Info,
            "warn" => LogLevel::Warn,
            "error" => LogLevel::Error,
            _ => return None,
        })
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of a job's log.
#[derive(Clone, Debug, PartialEq)]
pub struct LogEntry {
    /// Increases over the whole store and is never reused: a reader's cursor
    /// (`after`).
    pub seq: u64,
    pub job: u64,
    pub time_ms: u64,
    pub level: LogLevel,
    pub message: String,
}

/// Failed checks (since last cleared) that quarantine a worker.
pub const QUARANTINE_AFTER: u64 = 3;

/// Credit for one verified tile, written with the tile.
#[derive(Clone, Debug, PartialEq)]
pub struct TileCredit {
    pub credit: f64,
    /// A GPU tile: it raises the worker's GPU trust, not its CPU trust.
    pub gpu: bool,
    pub commitment: [u8; 32],
    pub time_ms: u64,
}

/// A worker's standing.
#[derive(Clone, Debug, PartialEq)]
pub struct Standing {
    pub trust: u64,
    /// Consecutive verified GPU tiles (GPU work is trusted apart).
    pub gpu_trust: u64,
    pub reputation: f64,
    pub verified_tiles: u64,
    pub failed_checks: u64,
    pub strikes: u64,
    pub quarantined: bool,
    pub credit: f64,
}

/// One ledger entry.
#[derive(Clone, Debug, PartialEq)]
pub struct LedgerEntry {
    pub seq: u64,
    pub worker: String,
    pub job: u64,
    pub tile: u32,
    pub credit: f64,
    pub commitment: [u8; 32],
    pub time_ms: u64,
    pub prev: [u8; 32],
    pub hash: [u8; 32],
}

/// The hash of a ledger entry: blake3 (key-derivation mode, its own
/// context) of the previous hash, the worker, job, tile, the credit's bits
/// and the commitment, fixed-width and length-prefixed.
pub fn ledger_hash(prev: &[u8; 32], worker: &str, job: u64, tile: u32, credit: f64, commitment: &[u8; 32]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key("tessera 2026-11 credit ledger entry v1");
    h.update(prev);
    h.update(&(worker.len() as u64).to_le_bytes());
    h.update(worker.as_bytes());
    h.update(&job.to_le_bytes());
    h.update(&tile.to_le_bytes());
    h.update(&credit.to_bits().to_le_bytes());
    h.update(commitment);
    *h.finalize().as_bytes()
}
