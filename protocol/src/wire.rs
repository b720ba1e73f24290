//! The farm's wire messages and their framing. No I/O: the QUIC shells in
//! the coordinator and the worker move these bytes.
//!
//! **Format.** Each message is a little-endian `u32` length, then the
//! message encoded with `postcard` (serde, varint integers, no field names):
//! a 64×64 tile's result is its float bytes plus a few dozen. The reader
//! checks the length against a limit chosen by what it expects *before*
//! reading the body, so a peer cannot make it allocate more.
//!
//! **Versioning.** The QUIC ALPN names the major version (`tessera/1`);
//! `Hello::version` carries [`PROTOCOL_VERSION`]. Within a major version,
//! new enum variants and new messages are added at the end only, and a
//! peer that receives an unknown variant rejects that one message.
//!
//! **Streams.** The worker opens a control stream (first message
//! [`WorkerOpen::Control`]) and one stream per blob it fetches
//! ([`WorkerOpen::Blob`]). The coordinator opens one bidirectional stream
//! per tile: [`TileTask`] one way, [`TileReply`] back. Acknowledgements come
//! on the control stream, several per message ([`CoordinatorMsg::Acks`]),
//! once the results they acknowledge are durable: one store commit covers
//! many tiles, and one ack message answers them all.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{ContentHash, Rect, SampleRange, TileAccumulators};

/// The protocol version a worker announces in its [`Hello`]. Version 5
/// added [`WorkerOpen::Rejoin`].
pub const PROTOCOL_VERSION: u32 = 5;

/// The oldest version a coordinator still accepts: a version-4 worker
/// never rejoins with tiles, and everything else it says is unchanged.
/// (Coordinators are upgraded before workers.)
pub const OLDEST_PROTOCOL_VERSION: u32 = 4;

/// Most tiles a [`WorkerOpen::Rejoin`] may name: more than a worker's
/// leases could be, and well inside [`MAX_CONTROL_MESSAGE`].
pub const MAX_HELD_TILES: usize = 2048;

/// The QUIC ALPN protocol id: the major version is part of the handshake.
pub const ALPN: &[u8] = b"tessera/1";

/// Largest control-plane message (hello, heartbeats, revokes, tasks).
pub const MAX_CONTROL_MESSAGE: usize = 64 * 1024;

/// Length of the frame header.
pub const HEADER_LEN: usize = 4;

/// The first message on a stream the worker opens: what the stream is for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum WorkerOpen {
    /// The control stream, opened once per connection.
    Control(Hello),
    /// Fetch a content-addressed blob (a scene or a guest module). The
    /// reply is a [`BlobHeader`] and then the raw bytes.
    Blob { hash: ContentHash },
    /// The control stream of a worker whose last connection was lost with
    /// leases on it (its coordinator died, or the network did): the tiles
    /// it rendered or is still rendering for them. The coordinator leases
    /// those it still wants back to this worker first, and the worker
    /// answers them from what it holds. Version 5.
    Rejoin { hello: Hello, holding: Vec<HeldTile> },
}

/// A tile a worker holds from a lost connection's lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldTile {
    pub job: u64,
    pub tile: u32,
    /// Milliseconds since the worker received the lost lease: the
    /// coordinator honours only leases that would not have expired.
    pub age_ms: u64,
}

/// A worker introducing itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub version: u32,
    /// The join token the farm's operator gave the worker's owner.
    pub token: String,
    /// A name for people (host name by default); identity comes from the
    /// worker's TLS key, not from this.
    pub name: String,
    pub capabilities: Capabilities,
}

/// What a worker offers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Tiles it renders at once (default: its cores).
    pub slots: u32,
    pub cores: u32,
    pub memory_bytes: u64,
    /// The GPU adapter wgpu would use, if any (`"llvmpipe"` on lavapipe).
    pub gpu: Option<String>,
    /// The worker build (`tessera-worker 0.1.0`).
    pub agent: String,
    /// The class of the GPU it offers to jobs (`--gpu`), if any: its GPU
    /// tiles must say this class, and their second opinions come from it.
    pub gpu_class: Option<GpuClass>,
}

/// Coordinator → worker on the control stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum CoordinatorMsg {
    /// The hello was accepted.
    Welcome {
        /// The worker's identity as the coordinator sees it (its key's fingerprint).
        identity: String,
        /// Send a heartbeat at least this often.
        heartbeat_ms: u64,
    },
    /// The hello was refused; the connection closes after this.
    Refused { reason: String },
    /// Drop this lease: don't start it, and drop its result if started.
    Revoke { lease: u64 },
    /// Verdicts on results, by lease: accepted ones are durable.
    Acks(Vec<(u64, TileAck)>),
}

/// Worker → coordinator on the control stream, after the hello.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum WorkerMsg {
    Heartbeat,
    /// The worker is going: it has sent every result it will send, and the
    /// leases it still holds go back to the queue.
    Leaving,
}

/// What a worker needs to instantiate a job: everything is addressed by
/// hash, so a worker that has the blobs cached fetches nothing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobDescriptor {
    pub job: u64,
    pub module: ContentHash,
    pub scene: ContentHash,
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    /// Job-type specific settings (JSON), passed to the guest as they are.
    pub extra: String,
    /// Fuel per tile (fixed part) and per pixel-sample: the job's budget.
    pub fuel_per_tile: u64,
    pub fuel_per_pixel_sample: u64,
    /// Where the job may render. A worker gives its GPU to the job's
    /// instances only when this is not [`Engine::Cpu`] (and then only for
    /// tiles whose [`TileTask::gpu`] says so).
    pub engine: Engine,
    /// Whether every tile carries the denoiser's guides ([`GUIDE_AOVS`]):
    /// the job asked for a denoised frame. Version 4.
    pub guides: bool,
}

/// The AOV planes a tile of a job with [`JobDescriptor::guides`] must
/// carry, 3 floats a pixel each, summed with the same sample weights as
/// the colour: the first hit's albedo and its shading normal.
pub const GUIDE_AOVS: [&str; 2] = ["albedo", "normal"];

/// Why a tile's AOV planes are not what its job asked for, or `None`
/// when they are: with `guides`, exactly the [`GUIDE_AOVS`], in order, of
/// 3 channels and one value per channel and pixel; without, none. The
/// coordinator refuses a tile that fails this before it checks anything
/// else, so a frame never holds a tile without guides the denoiser needs.
pub fn guides_problem(tile: &TileAccumulators, guides: bool) -> Option<String> {
    let pixels = tile.rect.pixel_count();
    if !guides {
        return (!tile.aovs.is_empty())
            .then(|| format!("{} AOV planes for a job that asked for none", tile.aovs.len()));
    }
    let names: Vec<&str> = tile.aovs.iter().map(|a| a.name.as_str()).collect();
    if names != GUIDE_AOVS {
        return Some(format!("AOV planes {names:?} where the job asked for {GUIDE_AOVS:?}"));
    }
    tile.aovs.iter().find_map(|a| {
        (a.channels != 3 || a.data.len() as u64 != 3 * pixels).then(|| {
            format!(
                "AOV {:?} has {} channels and {} values for {pixels} pixels (3 a pixel)",
                a.name,
                a.channels,
                a.data.len()
            )
        })
    })
}

/// Where a job renders: its owner's choice (`--engine`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// The CPU only: every tile is checked bit for bit. The default.
    #[default]
    Cpu,
    /// GPU workers only: the job waits for one.
    Gpu,
    /// The GPU where a worker offers one, the CPU elsewhere.
    Auto,
}

impl Engine {
    /// The guest settings `extra` (a JSON object) with this engine set: the
    /// path tracer reads `engine` (`cpu`, `gpu`, `auto`). A CPU job's
    /// settings are left exactly as they were, so its pixels and manifests
    /// do not change; settings that are not an object are left alone.
    pub fn set_in(self, extra: &str) -> String {
        let mut value: serde_json::Value = match serde_json::from_str(extra) {
            Ok(v @ serde_json::Value::Object(_)) => v,
            _ => return extra.to_string(),
        };
        if self == Engine::Cpu && value.get("engine").is_none() {
            return extra.to_string();
        }
        value["engine"] = self.as_str().into();
        value.to_string()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Cpu => "cpu",
            Engine::Gpu => "gpu",
            Engine::Auto => "auto",
        }
    }

    /// Whether a worker's GPU may serve the job.
    pub fn allows_gpu(self) -> bool {
        self != Engine::Cpu
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Engine {
    type Err = String;

    fn from_str(s: &str) -> Result<Engine, String> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" => Ok(Engine::Cpu),
            "gpu" => Ok(Engine::Gpu),
            "auto" => Ok(Engine::Auto),
            _ => Err(format!("unknown engine {s:?} (cpu, gpu or auto)")),
        }
    }
}

pub use crate::gpu_check::{GpuClass, MAX_GPU_CLASS_TEXT};

/// One tile leased to a worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TileTask {
    pub lease: u64,
    pub job: JobDescriptor,
    /// The tile's number within the job (all frames counted).
    pub tile: u32,
    pub frame: i32,
    pub rect: Rect,
    pub samples: SampleRange,
    pub seed: u64,
    /// Whether this tile may be rendered on the worker's GPU. False for
    /// CPU jobs, and for the second opinion on a tile first rendered on a
    /// CPU (it must match bit for bit).
    pub gpu: bool,
}

/// The worker's answer on a tile stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum TileReply {
    Done(TileResult),
    /// Rendering failed (a trap, a limit, a refused scene). `retryable` is
    /// false when the same input would fail anywhere (a deterministic trap).
    Failed {
        lease: u64,
        error: String,
        retryable: bool,
    },
}

/// A rendered tile.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TileResult {
    pub lease: u64,
    pub tile: u32,
    pub accumulators: TileAccumulators,
    /// Fuel the guest used: deterministic, the basis for credit.
    pub fuel: u64,
    /// Wall time on the worker.
    pub millis: u64,
    /// [`crate::proof::commitment`] of the task's claim over the
    /// accumulators' canonical bytes.
    pub commitment: crate::proof::Commitment,
    /// The worker's ed25519 signature of `commitment` (64 bytes), by the
    /// key of its QUIC certificate.
    pub signature: Vec<u8>,
    /// The GPU the guest used for this tile (the host saw it dispatch
    /// work), or `None` for a tile rendered on the CPU alone. Part of the
    /// commitment: a worker signs which kind of result it claims.
    pub gpu: Option<GpuClass>,
}

impl TileTask {
    /// What a result for this task claims (everything but its pixels).
    pub fn claim(&self) -> crate::proof::TileClaim {
        crate::proof::TileClaim {
            job: self.job.job,
            frame: self.frame,
            tile: self.tile,
            samples: self.samples,
            module: self.job.module,
            scene: self.job.scene,
        }
    }

    /// The result for this task: the accumulators committed to and
    /// signed, with the GPU class it was rendered on (if any).
    pub fn seal(
        &self,
        accumulators: crate::TileAccumulators,
        fuel: u64,
        millis: u64,
        gpu: Option<GpuClass>,
        key: &crate::proof::SigningKey,
    ) -> TileResult {
        let commitment = crate::proof::commitment_on(&self.claim(), gpu.as_ref(), &accumulators.to_bytes());
        TileResult {
            lease: self.lease,
            tile: self.tile,
            accumulators,
            fuel,
            millis,
            commitment,
            signature: key.sign(&commitment),
            gpu,
        }
    }
}

/// The coordinator's verdict on a result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum TileAck {
    /// Stored durably: credit will count it.
    Accepted,
    /// Not counted (revoked, lost a race, or failed a check).
    Rejected { reason: String },
}

/// Reply to [`WorkerOpen::Blob`]; `Found` is followed by exactly `size` bytes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum BlobHeader {
    Found { size: u64 },
    NotFound,
}

/// A message that could not be framed or decoded.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum WireError {
    #[error("message of {len} bytes is over the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("message truncated: {got} of {expected} bytes")]
    Truncated { got: usize, expected: usize },
    #[error("malformed message: {0}")]
    Malformed(String),
}

/// The largest [`TileReply`] for a tile of `pixels` pixels: its colour and
/// weight accumulators, room for AOV planes (albedo, normal, depth: 7 more
/// floats a pixel), and a little framing.
pub fn max_tile_reply(pixels: u64) -> usize {
    let floats = pixels.saturating_mul(4 + 7);
    usize::try_from(floats.saturating_mul(5).saturating_add(4096)).unwrap_or(usize::MAX)
}

/// Encodes `msg` with its length header.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    let mut out = vec![0; HEADER_LEN];
    // Writing to a Vec cannot fail; a type serde cannot encode is a bug here.
    out = postcard::to_extend(msg, out).expect("wire types always encode");
    let len = (out.len() - HEADER_LEN) as u32;
    out[..HEADER_LEN].copy_from_slice(&len.to_le_bytes());
    out
}

/// Reads a frame header: the body's length, checked against `max`.
pub fn body_len(header: [u8; HEADER_LEN], max: usize) -> Result<usize, WireError> {
    let len = u32::from_le_bytes(header) as usize;
    if len > max {
        return Err(WireError::TooLarge { len, max });
    }
    Ok(len)
}

/// Decodes a message body (without its header). Trailing bytes are an error:
/// a frame holds exactly one message.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, WireError> {
    let (msg, rest) = postcard::take_from_bytes(body).map_err(|e| WireError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(WireError::Malformed(format!("{} bytes after the message", rest.len())));
    }
    Ok(msg)
}

/// Decodes one whole frame (header and body) from `bytes`.
pub fn decode_frame<T: DeserializeOwned>(bytes: &[u8], max: usize) -> Result<T, WireError> {
    let header: [u8; HEADER_LEN] = bytes
        .get(..HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or(WireError::Truncated { got: bytes.len(), expected: HEADER_LEN })?;
    let len = body_len(header, max)?;
    let body = &bytes[HEADER_LEN..];
    if body.len() < len {
        return Err(WireError::Truncated { got: body.len(), expected: len });
    }
    decode(&body[..len])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> TileTask {
        TileTask {
            lease: 7,
            job: JobDescriptor {
                job: 1,
                module: ContentHash::of(b"m"),
                scene: ContentHash::of(b"s"),
                width: 640,
                height: 360,
                fps: 24.0,
                extra: "{}".into(),
                fuel_per_tile: 1_000_000_000,
                fuel_per_pixel_sample: 5_000_000,
                engine: Engine::Auto,
                guides: true,
            },
            tile: 3,
            frame: 2,
            rect: Rect { x: 64, y: 0, width: 64, height: 64 },
            samples: SampleRange { start: 0, count: 16 },
            seed: 9,
            gpu: true,
        }
    }

    #[test]
    fn round_trip() {
        let t = task();
        let bytes = encode(&t);
        assert_eq!(decode_frame::<TileTask>(&bytes, MAX_CONTROL_MESSAGE).unwrap(), t);
    }

    #[test]
    fn a_tile_costs_its_floats_and_a_little() {
        let rect = Rect { x: 0, y: 0, width: 64, height: 64 };
        let n = rect.pixel_count() as usize;
        let reply = TileReply::Done(TileResult {
            lease: 1,
            tile: 0,
            accumulators: TileAccumulators { rect, color: vec![0.5; n * 3], weight: vec![1.0; n], aovs: vec![] },
            fuel: 123_456_789,
            millis: 40,
            commitment: [7; 32],
            signature: vec![9; 64],
            gpu: None,
        });
        let bytes = encode(&reply);
        assert!(bytes.len() >= n * 16);
        // The floats, a commitment and a signature, and a few bytes more.
        assert!(bytes.len() < n * 16 + 32 + 64 + 64, "{} bytes", bytes.len());
        assert!(bytes.len() <= max_tile_reply(n as u64));
        // The largest GPU class a coordinator accepts still fits.
        let TileReply::Done(mut result) = reply else { unreachable!() };
        let long = "x".repeat(MAX_GPU_CLASS_TEXT);
        result.gpu = Some(GpuClass { vendor: u32::MAX, device: u32::MAX, driver: long.clone(), name: long });
        assert!(result.gpu.as_ref().unwrap().check().is_ok());
        let bytes = encode(&TileReply::Done(result.clone()));
        assert!(bytes.len() <= max_tile_reply(n as u64));
        assert_eq!(decode_frame::<TileReply>(&bytes, max_tile_reply(n as u64)).unwrap(), TileReply::Done(result));
    }

    #[test]
    fn a_tile_carries_the_guides_its_job_asked_for_and_no_others() {
        use crate::AovPlane;
        let rect = Rect { x: 0, y: 0, width: 2, height: 2 };
        let plane = |name: &str, channels: u8, n: usize| AovPlane { name: name.into(), channels, data: vec![0.5; n] };
        let mut tile = TileAccumulators { rect, color: vec![0.5; 12], weight: vec![1.0; 4], aovs: vec![] };
        assert_eq!(guides_problem(&tile, false), None);
        assert!(guides_problem(&tile, true).unwrap().contains("where the job asked for"));
        tile.aovs = vec![plane("albedo", 3, 12), plane("normal", 3, 12)];
        assert_eq!(guides_problem(&tile, true), None);
        assert!(guides_problem(&tile, false).unwrap().contains("asked for none"));
        tile.aovs.reverse();
        assert!(guides_problem(&tile, true).is_some(), "the order is part of the contract");
        tile.aovs = vec![plane("albedo", 3, 12), plane("normal", 3, 9)];
        assert!(guides_problem(&tile, true).unwrap().contains("9 values for 4 pixels"));
        tile.aovs = vec![plane("albedo", 1, 4), plane("normal", 3, 12)];
        assert!(guides_problem(&tile, true).unwrap().contains("1 channels"));
    }

    #[test]
    fn the_largest_rejoin_fits_a_control_message() {
        let capabilities = Capabilities {
            slots: u32::MAX,
            cores: u32::MAX,
            memory_bytes: u64::MAX,
            gpu: Some("g".repeat(256)),
            agent: "a".repeat(64),
            gpu_class: None,
        };
        let hello = Hello { version: PROTOCOL_VERSION, token: "t".repeat(64), name: "n".repeat(256), capabilities };
        let held = HeldTile { job: u64::MAX, tile: u32::MAX, age_ms: u64::MAX };
        let open = WorkerOpen::Rejoin { hello, holding: vec![held; MAX_HELD_TILES] };
        let bytes = encode(&open);
        assert!(bytes.len() - HEADER_LEN <= MAX_CONTROL_MESSAGE, "{} bytes", bytes.len());
        assert_eq!(decode_frame::<WorkerOpen>(&bytes, MAX_CONTROL_MESSAGE).unwrap(), open);
    }

    #[test]
    fn engines_parse_and_print() {
        for e in [Engine::Cpu, Engine::Gpu, Engine::Auto] {
            assert_eq!(e.to_string().parse::<Engine>(), Ok(e));
        }
        assert_eq!("GPU".parse::<Engine>(), Ok(Engine::Gpu));
        assert!("cuda".parse::<Engine>().unwrap_err().contains("cpu, gpu or auto"));
        assert!(!Engine::Cpu.allows_gpu() && Engine::Gpu.allows_gpu() && Engine::Auto.allows_gpu());
        let class = GpuClass {
            vendor: 0x10de,
            device: 0x2335,
            driver: "d".repeat(MAX_GPU_CLASS_TEXT + 1),
            name: "H200".into(),
        };
        assert!(class.check().is_err());
    }

    #[test]
    fn refusals() {
        let bytes = encode(&task());
        assert_eq!(
            decode_frame::<TileTask>(&bytes, 10),
            Err(WireError::TooLarge { len: bytes.len() - HEADER_LEN, max: 10 })
        );
        assert!(matches!(
            decode_frame::<TileTask>(&bytes[..bytes.len() - 1], MAX_CONTROL_MESSAGE),
            Err(WireError::Truncated { .. })
        ));
        assert!(matches!(decode::<TileTask>(&bytes[HEADER_LEN..bytes.len() - 1]), Err(WireError::Malformed(_))));
        let mut extra = bytes[HEADER_LEN..].to_vec();
        extra.push(0);
        assert!(matches!(decode::<TileTask>(&extra), Err(WireError::Malformed(_))));
        assert!(matches!(decode::<WorkerOpen>(&[200, 1, 2]), Err(WireError::Malformed(_))));
    }
}
