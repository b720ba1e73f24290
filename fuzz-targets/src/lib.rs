//! The bodies of Tessera's fuzz targets, in one small library so that the
//! same code runs under two drivers:
//!
//! - `fuzz/` (cargo-fuzz, libFuzzer with coverage guidance, nightly): the
//!   long runs, `cargo xtask fuzz [TARGET] [--secs N]`;
//! - [`bounded`] (a fixed-seed mutational fuzzer on stable): the short run
//!   the test suite does on every CI build (`tests/fuzz.rs`), and the
//!   fallback of `cargo xtask fuzz` where nightly or cargo-fuzz is missing.
//!
//! Each target takes arbitrary bytes and must never panic: every input is
//! either accepted or refused with an error. A panic is a bug in the product
//! (fix it there and add a regression test), not in the target.
//!
//! The targets are the three ways outside bytes get into the farm:
//!
//! - [`scene_import`]: a scene as the path tracer reads it (glTF JSON or
//!   GLB, [`pathtracer::scene::gltf_load`] through the job's `load`, then one
//!   tiny tile rendered when it loads), and as the coordinator packs it
//!   ([`tessera_client::pack::pack_scene_bytes`]);
//! - [`wire_decode`]: every message type a peer can send over QUIC, framed
//!   and unframed ([`tessera_protocol::wire`]);
//! - [`upload`]: the pure pieces of `POST /api/v1/jobs`: the settings JSON
//!   and its checks, frame lists, and packing a scene with its resource parts.

use std::collections::BTreeMap;

use pathtracer::PathTracer;
use tessera_client::frames::{format_frames, parse_frames};
use tessera_client::model::SubmitSettings;
use tessera_client::pack::pack_scene_bytes;
use tessera_coordinator::api::submission::request_from;
use tessera_guest_sdk::{AovSet, Job, JobSettings, Rect, SampleRange, TileRequest};
use tessera_protocol::wire::{
    self, BlobHeader, CoordinatorMsg, Hello, TileReply, TileTask, WorkerMsg, WorkerOpen, MAX_CONTROL_MESSAGE,
};

pub mod bounded;
pub mod seeds;

/// The fuzz targets, by the names cargo-fuzz and `cargo xtask fuzz` use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    SceneImport,
    WireDecode,
    Upload,
}

impl Target {
    pub const ALL: [Target; 3] = [Target::SceneImport, Target::WireDecode, Target::Upload];

    pub fn name(self) -> &'static str {
        match self {
            Target::SceneImport => "scene_import",
            Target::WireDecode => "wire_decode",
            Target::Upload => "upload",
        }
    }

    pub fn from_name(name: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Runs the target on `data` and returns a short description of what
    /// happened (which error, or success): the bounded fuzzer keeps an input
    /// that produced an outcome it had not seen, a poor man's coverage.
    pub fn run(self, data: &[u8]) -> String {
        match self {
            Target::SceneImport => scene_import_outcome(data),
            Target::WireDecode => wire_decode_outcome(data),
            Target::Upload => upload_outcome(data),
        }
    }
}

/// Limit on what packing may read in the targets: small, so a mutated
/// length cannot make a run slow, and large enough for every seed.
const PACK_LIMIT: u64 = 1 << 22;

/// Fuzz target: scene import. Never panics.
pub fn scene_import(data: &[u8]) {
    let _ = scene_import_outcome(data);
}

/// Fuzz target: wire decoding of every message type. Never panics.
pub fn wire_decode(data: &[u8]) {
    let _ = wire_decode_outcome(data);
}

/// Fuzz target: the upload path's pure pieces. Never panics. The input is
/// split at [`UPLOAD_SEPARATOR`] into: settings JSON, frame list, scene file
/// name, scene bytes, then (resource path, resource bytes) pairs.
pub fn upload(data: &[u8]) {
    let _ = upload_outcome(data);
}

/// Separates the parts of an [`upload`] input.
pub const UPLOAD_SEPARATOR: &[u8] = b"\n\x00--part--\x00\n";

/// A short, number-free class of an error message, so that "index 7" and
/// "index 8" count as one outcome.
fn class(prefix: &str, message: &str) -> String {
    let s: String = message.chars().filter(|c| !c.is_ascii_digit()).take(60).collect();
    format!("{prefix}: {s}")
}

fn scene_import_outcome(data: &[u8]) -> String {
    let settings = JobSettings { width: 4, height: 4, fps: 24.0, extra: "{}".into() };
    let mut outcome = match PathTracer::load(data, &settings) {
        Err(e) => class("load", &format!("{e:?}")),
        Ok((mut job, info)) => {
            // One 2×2 tile at 1 sample: what a worker does next with a scene
            // that loaded, cheap enough for every execution.
            let request = TileRequest {
                frame: info.frame_start,
                rect: Rect { x: 0, y: 0, width: 2, height: 2 },
                samples: SampleRange { start: 0, count: 1 },
                seed: 1,
                aovs: AovSet::empty(),
            };
            match job.render_tile(&request) {
                Ok(_) => "load+render ok".to_string(),
                Err(e) => class("render", &format!("{e:?}")),
            }
        }
    };
    let packed = pack_scene_bytes("scene.gltf", data.to_vec(), BTreeMap::new(), PACK_LIMIT);
    outcome.push_str(&match packed {
        Ok(_) => " / pack ok".to_string(),
        Err(e) => class(" / pack", &e.to_string()),
    });
    outcome
}

/// Decodes `body` as `T`; a message that decodes must encode and decode
/// again (what a relay or a test harness relies on).
fn decode_one<T>(name: &str, body: &[u8], outcomes: &mut String)
where
    T: serde::de::DeserializeOwned + serde::Serialize,
{
    match wire::decode::<T>(body) {
        Ok(msg) => {
            let again = wire::encode(&msg);
            if let Err(e) = wire::decode_frame::<T>(&again, usize::MAX) {
                panic!("{name} decoded, but its re-encoding does not decode: {e}");
            }
            outcomes.push_str(name);
            outcomes.push(' ');
        }
        Err(_) => {
            if let Ok(msg) = wire::decode_frame::<T>(body, MAX_CONTROL_MESSAGE) {
                let _ = wire::encode(&msg);
                outcomes.push_str(name);
                outcomes.push_str("(framed) ");
            }
        }
    }
}

fn wire_decode_outcome(data: &[u8]) -> String {
    let mut ok = String::from("decoded: ");
    decode_one::<WorkerOpen>("WorkerOpen", data, &mut ok);
    decode_one::<Hello>("Hello", data, &mut ok);
    decode_one::<CoordinatorMsg>("CoordinatorMsg", data, &mut ok);
    decode_one::<WorkerMsg>("WorkerMsg", data, &mut ok);
    decode_one::<TileTask>("TileTask", data, &mut ok);
    decode_one::<TileReply>("TileReply", data, &mut ok);
    decode_one::<BlobHeader>("BlobHeader", data, &mut ok);
    if let Some(header) = data.get(..wire::HEADER_LEN).and_then(|h| <[u8; wire::HEADER_LEN]>::try_from(h).ok()) {
        match wire::body_len(header, MAX_CONTROL_MESSAGE) {
            Ok(_) => ok.push_str("| len ok"),
            Err(e) => ok.push_str(&class("| len", &e.to_string())),
        }
    }
    ok
}

fn split<'a>(mut data: &'a [u8], sep: &[u8]) -> Vec<&'a [u8]> {
    let mut parts = Vec::new();
    while let Some(i) = data.windows(sep.len()).position(|w| w == sep) {
        parts.push(&data[..i]);
        data = &data[i + sep.len()..];
    }
    parts.push(data);
    parts
}

fn upload_outcome(data: &[u8]) -> String {
    let parts = split(data, UPLOAD_SEPARATOR);
    let part = |i: usize| parts.get(i).copied().unwrap_or_default();
    let mut outcome = String::new();

    // The settings part, read as `read_form` reads it, then checked.
    let text = String::from_utf8_lossy(part(0));
    let settings: Result<SubmitSettings, String> = if text.trim().is_empty() {
        Ok(SubmitSettings::default())
    } else if !text.trim_start().starts_with('{') {
        Err("not an object".into())
    } else {
        serde_json::from_str(&text).map_err(|e| e.to_string())
    };
    outcome.push_str(&match settings {
        Ok(s) => match request_from(&s, "scene.glb") {
            Ok(_) => "settings ok".into(),
            Err(e) => class("settings refused", &format!("{e:?}")),
        },
        Err(e) => class("settings malformed", &e),
    });

    // A frame list, as a person types it: what parses must print and parse
    // back to the same frames.
    let frames = String::from_utf8_lossy(part(1));
    match parse_frames(&frames) {
        Ok(list) => {
            let again = parse_frames(&format_frames(&list));
            assert_eq!(again.as_ref(), Ok(&list), "frames {frames:?} do not survive format_frames");
            outcome.push_str(" / frames ok");
        }
        Err(e) => outcome.push_str(&class(" / frames", &e.to_string())),
    }

    // The scene with its resource parts, packed as the coordinator packs an
    // upload.
    let name = String::from_utf8_lossy(part(2)).into_owned();
    let name = if name.trim().is_empty() { "scene.gltf".to_string() } else { name };
    let mut resources = BTreeMap::new();
    for pair in parts.get(4..).unwrap_or_default().chunks(2) {
        let path = String::from_utf8_lossy(pair[0]).into_owned();
        resources.insert(path, pair.get(1).copied().unwrap_or_default().to_vec());
    }
    outcome.push_str(&match pack_scene_bytes(&name, part(3).to_vec(), resources, PACK_LIMIT) {
        Ok(packed) => {
            // Packing is idempotent in effect: what it produced references
            // nothing outside itself, so it packs again with no files.
            if let Err(e) = pack_scene_bytes(&name, packed, BTreeMap::new(), PACK_LIMIT.saturating_mul(2)) {
                panic!("a packed scene does not pack again: {e}");
            }
            " / pack ok".into()
        }
        Err(e) => class(" / pack", &e.to_string()),
    });
    outcome
}

/// Builds an [`upload`] input from its parts.
pub fn upload_input(settings: &str, frames: &str, name: &str, scene: &[u8], resources: &[(&str, &[u8])]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = vec![settings.as_bytes(), frames.as_bytes(), name.as_bytes(), scene];
    for (path, bytes) in resources {
        parts.push(path.as_bytes());
        parts.push(bytes);
    }
    parts.join(UPLOAD_SEPARATOR)
}
