//! The API's resources as JSON: one set of types, serialised by the server,
//! read back by the client, and described in the OpenAPI document (utoipa's
//! `ToSchema`, with the `openapi` feature the coordinator turns on), so the
//! three cannot disagree. See docs/api.md.

use serde::{Deserialize, Serialize};

/// The path tracer's `shading` values (samples/pathtracer/src/settings.rs),
/// which the API accepts in [`SubmitSettings::shading`].
pub const SHADING: &[&str] = &["auto", "blender3", "gltf"];

/// Every error: a message for a person and a code for a program.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: String,
    /// e.g. `unauthorized`, `forbidden`, `not_found`, `bad_request`,
    /// `conflict`, `payload_too_large`, `unprocessable`, `internal`.
    pub code: String,
}

/// A frame list as a person types it (`"1-48"`, `"1,5,9-12"`) or as a list.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum FrameSelection {
    Text(String),
    List(Vec<i32>),
}

/// The `settings` part of a submission. Every key is optional; unknown keys
/// are refused so a typo is not silently ignored.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SubmitSettings {
    /// Default: the scene part's file name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Default: the scene's animation range (a still scene: frame 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frames: Option<FrameSelection>,
    /// Default: 1920, or from the camera's aspect ratio when only the height is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// Samples per pixel (default 64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spp: Option<u32>,
    /// Tile edge in pixels; default: sized so a tile takes about `target_tile_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tile_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_tile_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Frames per second: frame N shows the scene at time N / fps (default 24).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fps: Option<f64>,
    /// Camera node to render through; default: the scene's first camera.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub camera: Option<String>,
    /// World colour as linear RGB; default: Blender's grey.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub background: Option<[f32; 3]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub background_strength: Option<f32>,
    /// Longest light path: bounces after the first hit, as Blender's Max
    /// Bounces counts them (0 is direct light only; default 8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bounces: Option<u32>,
    /// What the materials mean (docs/fidelity.md): `auto` (the default:
    /// Cycles' Principled BSDF of Blender 2.8–3.6 for files those Blenders
    /// exported, glTF's reference BRDF otherwise), `blender3` or `gltf`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shading: Option<String>,
    /// `agx` (default), `filmic` or `standard`; PNG only (EXR is linear).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub view_transform: Option<String>,
    /// Stops, before the view transform (PNG only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposure: Option<f32>,
    /// Which files each frame gets: `png`, `exr` (default both).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub formats: Option<Vec<String>>,
    /// Higher runs first (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// `cpu` (default: every tile checked bit for bit), `gpu` (GPU workers
    /// only) or `auto` (the GPU where a worker offers one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    /// Also ship each frame denoised (`N.denoised.png` / `.exr` beside the
    /// raw files, which stay as rendered); default false. Tiles then carry
    /// the denoiser's albedo and normal guides, and the raw EXR keeps them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denoise: Option<bool>,
    /// Render in sample passes (1, 4, 16, 64, … samples in all) so each
    /// frame's whole image appears after its first pass and refines
    /// (`preview` events); the final frame equals a plain render's bit for
    /// bit. Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progressive: Option<bool>,
}

/// A job's settings as resolved when it was accepted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobSettingsView {
    pub width: u32,
    pub height: u32,
    pub spp: u32,
    pub frames: Vec<i32>,
    pub tile_size: u32,
    pub seed: u64,
    pub fps: f64,
    pub priority: i32,
    pub view_transform: String,
    pub exposure: f32,
    pub formats: Vec<String>,
    pub camera: Option<String>,
    pub background: Option<[f32; 3]>,
    pub background_strength: f32,
    pub bounces: u32,
    /// `auto`, `blender3` or `gltf`.
    pub shading: String,
    /// `cpu`, `gpu` or `auto`.
    pub engine: String,
    /// Whether each frame also ships denoised.
    pub denoise: bool,
    /// Whether the job renders in sample passes with previews.
    pub progressive: bool,
}

/// How far a job is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Progress {
    pub tiles: u32,
    pub tiles_done: u32,
    pub frames: usize,
    pub frames_done: usize,
    /// tiles_done / tiles.
    pub fraction: f64,
    /// Seconds left at the rate measured since the coordinator loaded the
    /// job; null before there is a rate and once the job is finished.
    pub eta_s: Option<f64>,
}

/// A job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Job {
    pub id: u64,
    pub name: String,
    /// `queued`, `running`, `done`, `failed` or `cancelled`.
    pub state: String,
    pub error: Option<String>,
    pub created_ms: u64,
    pub finished_ms: Option<u64>,
    /// The label of the token that submitted it (absent for jobs from
    /// `tessera demo` or submitted before this was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted_by: Option<String>,
    pub settings: JobSettingsView,
    pub progress: Progress,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobList {
    pub jobs: Vec<Job>,
}

/// One file of a frame.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FileInfo {
    /// Path of the file on this API (`/api/v1/jobs/7/frames/12.png`).
    pub url: String,
    /// blake3 of the file, hex (also its `ETag`).
    pub blake3: String,
    pub bytes: u64,
}

/// A finished frame and its files, keyed by format (`png`, `exr`, and a
/// denoised job's `denoised.png`, `denoised.exr`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Frame {
    pub frame: i32,
    pub finished_ms: u64,
    pub files: std::collections::BTreeMap<String, FileInfo>,
    /// The frame's signed manifest (`/api/v1/jobs/7/frames/12.manifest.json`):
    /// its tiles' proofs and its files' blake3, checked offline by
    /// `tessera verify`. Absent for frames written before manifests existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<FileInfo>,
    /// A 256-pixel-wide PNG preview (`/api/v1/jobs/7/frames/12.thumb.png`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbnail: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FrameList {
    /// The job's stem for file names: `<stem>-NNNN.<ext>`, as `tessera render` names frames.
    pub stem: String,
    pub frames: Vec<Frame>,
}

/// One line of a job's log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogEntry {
    /// Increasing; pass the last one seen as `after` to read only newer lines.
    pub seq: u64,
    pub time_ms: u64,
    /// `info`, `warn` or `error`.
    pub level: String,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogPage {
    pub entries: Vec<LogEntry>,
}

/// What a worker said it has.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkerCapabilities {
    pub slots: u32,
    pub cores: u32,
    pub memory_bytes: u64,
    pub gpu: Option<String>,
    pub agent: String,
}

/// A worker the farm knows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Worker {
    /// blake3 of the worker's public key, hex: stable across restarts.
    pub identity: String,
    pub name: String,
    /// `busy`, `idle` or `offline`.
    pub state: String,
    pub capabilities: Option<WorkerCapabilities>,
    /// Tiles it holds now.
    pub leases: usize,
    /// Tiles it rendered that the farm kept, over its life.
    pub tiles_done: u64,
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    /// 0 to 1: each verified tile moves it 2 % of the way to 1, each
    /// failed check halves it (new workers start at 0.5).
    pub reputation: Option<f64>,
    /// Credit for verified work (1 = 10⁹ units of wasm fuel).
    pub credit: Option<f64>,
    /// Consecutive verified results (any failed check resets it).
    #[serde(default)]
    pub trust: u64,
    /// Consecutive verified GPU tiles, counted apart: GPU tiles are
    /// checked within a tolerance, CPU tiles bit for bit.
    #[serde(default)]
    pub gpu_trust: u64,
    /// `new` until `trust` reaches the farm's threshold, then `trusted`;
    /// `quarantined` after repeated failed checks until an admin clears it.
    #[serde(default)]
    pub trust_level: String,
    #[serde(default)]
    pub verified_tiles: u64,
    #[serde(default)]
    pub failed_checks: u64,
}

/// One entry of the credit ledger: hash-chained to the one before.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LedgerEntryView {
    pub seq: u64,
    pub worker: String,
    pub job: u64,
    pub tile: u32,
    pub credit: f64,
    pub commitment: String,
    pub time_ms: u64,
    /// The previous entry's `hash` (64 zeros for the first).
    pub prev: String,
    /// blake3 (derive-key context "tessera 2026-11 credit ledger entry v1") of
    /// prev ‖ len(worker) u64 LE ‖ worker ‖ job u64 LE ‖ tile u32 LE ‖
    /// credit f64 bits LE ‖ commitment.
    pub hash: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Ledger {
    pub entries: Vec<LedgerEntryView>,
}

/// Spot-check secrets of epochs that are over, for audits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EpochSecrets {
    /// Epoch length in seconds; epoch N covers [N·len, (N+1)·len) Unix time.
    pub epoch_seconds: u64,
    /// Epoch number → secret (hex).
    pub secrets: std::collections::BTreeMap<u64, String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkerList {
    pub workers: Vec<Worker>,
}

/// `GET /api/v1/health`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Health {
    /// `ok`.
    pub status: String,
    pub version: String,
    pub uptime_s: u64,
    pub workers: usize,
    pub jobs_active: usize,
    /// Where the farm's records are: `sqlite` or `postgres`.
    #[serde(default)]
    pub store: String,
    /// This coordinator's part: `leader` (it holds the PostgreSQL lease and
    /// runs the farm), `standby` (another leads; this one answers health
    /// checks, forwards the page and the API to the leader, and takes over
    /// when the lease lapses) or
    /// `only` (SQLite: one coordinator owns the file).
    #[serde(default)]
    pub role: String,
    /// The PostgreSQL lease's term this coordinator writes under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<i64>,
    /// How long the health check's query of the store took, in milliseconds.
    #[serde(default)]
    pub store_latency_ms: f64,
    /// The coordinator that leads now (PostgreSQL), by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// The farm's coordinators that announced themselves in the last few
    /// seconds (PostgreSQL): where a client or page goes when this one is
    /// gone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub coordinators: Vec<FarmCoordinator>,
}

/// One coordinator of a farm on PostgreSQL, as `/api/v1/health` lists it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FarmCoordinator {
    pub name: String,
    /// Its page and API, `http://host:port`.
    pub url: String,
    /// `leader` or `standby`.
    pub role: String,
}

/// `GET /api/v1/status`: the farm at a glance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FarmSummary {
    /// Jobs by state (`queued`, `running`, `done`, `failed`, `cancelled`).
    pub jobs: std::collections::BTreeMap<String, u64>,
    pub workers: usize,
    pub slots: u32,
    pub leases: usize,
}

/// What the server-sent event streams carry (the SSE event name is the
/// variant's `type`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    Job {
        job: u64,
        state: String,
        error: Option<String>,
    },
    /// A tile verified and stored; `rect` is where it lies in the frame
    /// (its pixels: `/api/v1/jobs/{job}/tiles/{tile}/preview.png`).
    Tile {
        job: u64,
        frame: i32,
        tile: u32,
        worker: String,
        rect: TileRect,
    },
    Frame {
        job: u64,
        frame: i32,
    },
    /// A progressive job's frame has finished `pass` (0 is the first):
    /// its whole image at `samples` per pixel, denoised if the job is, is
    /// at `/api/v1/jobs/{job}/frames/{frame}/preview.png`.
    Preview {
        job: u64,
        frame: i32,
        pass: u32,
        samples: u32,
    },
    Worker {
        identity: String,
        name: String,
        state: String,
    },
    Lagged {
        missed: u64,
    },
}

impl Event {
    /// The SSE event name.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Job { .. } => "job",
            Event::Tile { .. } => "tile",
            Event::Frame { .. } => "frame",
            Event::Preview { .. } => "preview",
            Event::Worker { .. } => "worker",
            Event::Lagged { .. } => "lagged",
        }
    }

    /// The job it is about, if any.
    pub fn job(&self) -> Option<u64> {
        match self {
            Event::Job { job, .. }
            | Event::Tile { job, .. }
            | Event::Frame { job, .. }
            | Event::Preview { job, .. } => Some(*job),
            Event::Worker { .. } | Event::Lagged { .. } => None,
        }
    }
}

/// Where a tile lies in its frame, in pixels from the top left.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TileRect {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

/// A stored (verified) tile.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TileSummary {
    /// The tile's index in the job (tiles are numbered across frames).
    pub tile: u32,
    pub frame: i32,
    pub rect: TileRect,
    /// Identity of the worker whose result was stored.
    pub worker: String,
    /// Its name, when the coordinator knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_name: Option<String>,
    pub millis: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TileList {
    pub tiles: Vec<TileSummary>,
}

/// A stored tile and its proof of render: what the worker signed and what
/// the coordinator checked before accepting it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TileDetail {
    #[serde(flatten)]
    pub summary: TileSummary,
    /// blake3 of the tile's accumulators, hex.
    pub blake3: String,
    /// Wasm fuel the worker reported.
    pub fuel: u64,
    pub samples: SampleSpan,
    /// The proof record: `worker`, `public_key`, `commitment`, `signature`,
    /// `signature_checked`, `spot_check` (pixels re-rendered and whether
    /// they matched). Null for tiles stored before proofs existed.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub proof: Option<serde_json::Value>,
    pub preview: String,
}

/// Samples `start .. start + count` of every pixel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SampleSpan {
    pub start: u32,
    pub count: u32,
}

/// What a scene offers, read through the job's sandboxed module, and the
/// settings a submission gets when it says nothing: what a submission form
/// pre-fills.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SceneSummary {
    /// The default job name (the scene's file name).
    pub name: String,
    /// Bytes of the scene as it would be stored (external files inlined).
    pub bytes: u64,
    /// The scene's animation range (inclusive).
    pub frame_start: i32,
    pub frame_end: i32,
    /// Default resolution: the scene's own, else 1920 wide at the camera's aspect.
    pub width: u32,
    pub height: u32,
    /// Camera names in the scene's order; the first is the default.
    pub cameras: Vec<String>,
    /// What the renderer will ignore or render differently, in its words
    /// (e.g. a glTF extension it does not implement); also written to the
    /// log of a job submitted with this scene.
    pub warnings: Vec<String>,
    pub defaults: SceneDefaults,
}

/// Defaults of the settings the scene does not decide.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SceneDefaults {
    pub spp: u32,
    pub fps: f64,
    pub bounces: u32,
    pub view_transform: String,
    pub view_transforms: Vec<String>,
    pub exposure: f32,
    pub formats: Vec<String>,
    pub priority: i32,
    /// Whether a job is denoised unless it says (false: the API ships what
    /// was rendered; the web page and the Blender add-on ask for it).
    pub denoise: bool,
}

/// Asks for a signed download link.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LinkRequest {
    /// A frame file or archive path of this API
    /// (`/api/v1/jobs/7/frames/12.png`, `/api/v1/jobs/7/archive`).
    pub path: String,
}

/// A link that downloads without an `Authorization` header (for a
/// browser's plain download), valid for one path until it expires and
/// while the token that asked for it is not revoked.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Link {
    /// The path with its `link` query parameter.
    pub url: String,
    pub expires_ms: u64,
}
