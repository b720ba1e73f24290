//! Hostile input at the API (issue 9, RELIABILITY.md "Hostile input"):
//! scenes and settings built to exhaust memory or escape the upload, each
//! refused with a clear 4xx, quickly, with no job stored and without the
//! process's peak memory (VmHWM) jumping.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use base64::Engine as _;
use serde_json::{json, Value};
use tower::ServiceExt;

use tessera_coordinator::farm::{lock, Farm};
use tessera_coordinator::http::{app, AppState};
use tessera_store::{Scope, TokenKind};

use crate::farm::{runtime, scenes, test_config};
use crate::guest;

const BOUNDARY: &str = "tessera-hostile-7d2a";

/// A form part: name, file name, bytes.
type Part = (&'static str, Option<String>, Vec<u8>);

fn multipart(parts: &[Part]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, file, data) in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"").as_bytes());
        if let Some(f) = file {
            body.extend_from_slice(format!("; filename=\"{f}\"\r\nContent-Type: application/octet-stream").as_bytes());
        }
        body.extend_from_slice(b"\r\n\r\n");
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

/// The process's peak resident memory in KiB (Linux), if readable.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn cornell() -> Value {
    serde_json::from_slice(&std::fs::read(scenes().join("cornell.gltf")).unwrap()).unwrap()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A PNG of the given IHDR size with one IDAT of `idat`.
fn png(width: u32, height: u32, idat: &[u8]) -> Vec<u8> {
    tessera_test_support::png::file(&tessera_test_support::png::rgba_header(width, height), &[idat])
}

/// A zlib stream (fixed Huffman) that inflates to `n × 258 + 1` zero bytes:
/// one literal, then back-references of length 258 at distance 1, 13 bits
/// each: about 1:1270.
fn zlib_bomb(n: usize) -> Vec<u8> {
    struct Bits(Vec<u8>, u32, u8);
    impl Bits {
        fn put(&mut self, value: u32, count: u8) {
            for i in 0..count {
                self.1 |= ((value >> i) & 1) << self.2;
                self.2 += 1;
                if self.2 == 8 {
                    self.0.push(self.1 as u8);
                    (self.1, self.2) = (0, 0);
                }
            }
        }
        /// Huffman codes go most significant bit first.
        fn code(&mut self, code: u32, len: u8) {
            let rev = (0..len).fold(0, |r, i| (r << 1) | ((code >> i) & 1));
            self.put(rev, len);
        }
    }
    let mut b = Bits(vec![0x78, 0x01], 0, 0);
    b.put(1, 1); // final block
    b.put(1, 2); // fixed Huffman
    b.code(0x30, 8); // literal 0
    for _ in 0..n {
        b.code(0xC5, 8); // length code 285: 258
        b.code(0, 5); // distance code 0: 1
    }
    b.code(0, 7); // end of block (256)
    if b.2 > 0 {
        b.0.push(b.1 as u8);
    }
    b.0.extend([0, 0, 0, 0]); // Adler-32 (wrong; the decoder must stop first)
    b.0
}

/// A JPEG header (SOF0) claiming `w × h`, and nothing else.
fn jpeg(width: u16, height: u16) -> Vec<u8> {
    let mut out = vec![0xFF, 0xD8, 0xFF, 0xC0, 0, 17, 8];
    out.extend(height.to_be_bytes());
    out.extend(width.to_be_bytes());
    out.extend([3, 1, 0x11, 0, 2, 0x11, 1, 3, 0x11, 1, 0xFF, 0xD9]);
    out
}

/// Cornell with its first material's base colour texture from `image`.
fn textured(image: &[u8], mime: &str) -> Vec<u8> {
    let mut doc = cornell();
    doc["images"] = json!([{"uri": format!("data:{mime};base64,{}", b64(image))}]);
    doc["textures"] = json!([{"source": 0}]);
    doc["materials"][0]["pbrMetallicRoughness"]["baseColorTexture"] = json!({"index": 0});
    serde_json::to_vec(&doc).unwrap()
}

fn edited(edit: impl Fn(&mut Value)) -> Vec<u8> {
    let mut doc = cornell();
    edit(&mut doc);
    serde_json::to_vec(&doc).unwrap()
}

/// Cornell as a `.gltf` naming an external buffer `uri`, with the buffer
/// uploaded as a resource part named `resource`.
fn traversal(uri: &str, resource: &str) -> Vec<Part> {
    let mut doc = cornell();
    let data = doc["buffers"][0]["uri"].as_str().unwrap().to_string();
    let bin = base64::engine::general_purpose::STANDARD.decode(data.split_once(',').unwrap().1).unwrap();
    doc["buffers"][0]["uri"] = json!(uri);
    vec![
        ("scene", Some("cornell.gltf".into()), serde_json::to_vec(&doc).unwrap()),
        ("resource", Some(resource.into()), bin),
    ]
}

fn scene_part(name: &str, bytes: Vec<u8>) -> Part {
    ("scene", Some(name.into()), bytes)
}

fn settings_part(s: &str) -> Part {
    ("settings", None, s.as_bytes().to_vec())
}

#[test]
fn hostile_submissions_are_refused_before_allocating() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let farm = Arc::new(Farm::start(test_config(&dir.path().join("coord"))).await.unwrap());
        let token = {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
            let mut store = lock(farm.store());
            store.create_token_scoped(TokenKind::Api, "hostile", &[Scope::Submit, Scope::Read], now).unwrap().1
        };
        let app: Router = app(AppState::new(farm.clone(), Some(Arc::new(guest("pathtracer").to_vec()))));
        let small = r#"{"width":32,"height":18,"spp":1,"frames":"1"}"#;
        let glb = std::fs::read(scenes().join("turntable.glb")).unwrap();
        let mut glb_lying = glb.clone();
        glb_lying[12..16].copy_from_slice(&u32::MAX.to_le_bytes()); // JSON chunk of 4 GiB
        let huge_list = format!("{{\"frames\":[{}]}}", (0..100_001).map(|i| i.to_string()).collect::<Vec<_>>().join(","));

        let s = StatusCode::UNPROCESSABLE_ENTITY;
        let b = StatusCode::BAD_REQUEST;
        #[rustfmt::skip]
        let cases: Vec<(&str, Vec<Part>, StatusCode, &str)> = vec![
            ("PNG header claiming 65536×65536", vec![settings_part(small), scene_part("c.gltf", textured(&png(65536, 65536, &zlib_bomb(16)), "image/png"))], s, "image 0"),
            ("JPEG header claiming 65535×65535", vec![settings_part(small), scene_part("c.gltf", textured(&jpeg(65535, 65535), "image/jpeg"))], s, "image 0"),
            ("GLB whose JSON chunk claims 4 GiB", vec![settings_part(small), scene_part("t.glb", glb_lying)], s, "glb"),
            ("buffer uri ../cornell.bin", traversal("../cornell.bin", "cornell.bin"), s, "../cornell.bin"),
            ("buffer uri %2e%2e/cornell.bin", traversal("%2e%2e/cornell.bin", "cornell.bin"), s, "%2e%2e"),
            ("buffer uri /etc/passwd", traversal("/etc/passwd", "passwd"), s, "/etc/passwd"),
            ("buffer uri ..\\cornell.bin", traversal("..\\\\cornell.bin", "cornell.bin"), s, "cornell.bin"),
            ("buffer uri file:///etc/passwd", traversal("file:///etc/passwd", "passwd"), s, "file:"),
            ("resource part named ../cornell.bin", traversal("cornell.bin", "../cornell.bin"), b, "without `..`"),
            ("resource part named /etc/cornell.bin", traversal("cornell.bin", "/etc/cornell.bin"), b, "leading `/`"),
            ("resource part named ..\\cornell.bin", traversal("cornell.bin", "..\\cornell.bin"), b, "resource name"),
            ("resource part named C:cornell.bin", traversal("cornell.bin", "C:cornell.bin"), b, "resource name"),
            ("cyclic node graph", vec![settings_part(small), scene_part("c.gltf", edited(|d| d["nodes"][0]["children"] = json!([4])))], s, "cycle"),
            ("node its own child", vec![settings_part(small), scene_part("c.gltf", edited(|d| d["nodes"][0]["children"] = json!([0])))], s, "node"),
            ("accessor count 1e9", vec![settings_part(small), scene_part("c.gltf", edited(|d| d["accessors"][0]["count"] = json!(1_000_000_000u64)))], s, "accessor 0"),
            ("accessor offset past its view", vec![settings_part(small), scene_part("c.gltf", edited(|d| d["accessors"][0]["byteOffset"] = json!(1u64 << 40)))], s, "do not fit"),
            ("accessor index 9999", vec![settings_part(small), scene_part("c.gltf", edited(|d| d["meshes"][0]["primitives"][0]["indices"] = json!(9999)))], s, "9999"),
            ("frames 0-2147483647", vec![settings_part(r#"{"frames":"0-2147483647"}"#), scene_part("t.glb", glb.clone())], s, "frames"),
            ("frames -2147483648-2147483647", vec![settings_part(r#"{"frames":"-2147483648-2147483647"}"#), scene_part("t.glb", glb.clone())], s, "frames"),
            ("frames 1-99999999999", vec![settings_part(r#"{"frames":"1-99999999999"}"#), scene_part("t.glb", glb.clone())], s, "frames"),
            ("a list of 100001 frames", vec![settings_part(&huge_list), scene_part("t.glb", glb.clone())], s, "frames"),
            ("width 65537", vec![settings_part(r#"{"width":65537,"height":18}"#), scene_part("t.glb", glb.clone())], s, "width"),
            ("width 0", vec![settings_part(r#"{"width":0,"height":18}"#), scene_part("t.glb", glb.clone())], s, "width"),
            ("width -1", vec![settings_part(r#"{"width":-1,"height":18}"#), scene_part("t.glb", glb.clone())], b, "settings"),
            ("width 4294967296", vec![settings_part(r#"{"width":4294967296}"#), scene_part("t.glb", glb.clone())], b, "settings"),
            ("spp 2^32", vec![settings_part(r#"{"spp":4294967296}"#), scene_part("t.glb", glb.clone())], b, "settings"),
            ("tile_size 0", vec![settings_part(r#"{"tile_size":0}"#), scene_part("t.glb", glb.clone())], s, "tile_size"),
        ];
        let before = peak_rss_kib();
        let mut report = Vec::new();
        for (what, parts, want, mention) in cases {
            let mut r = Request::builder()
                .method(Method::POST)
                .uri("/api/v1/jobs")
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .header(header::CONTENT_TYPE, format!("multipart/form-data; boundary={BOUNDARY}"))
                .body(Body::from(multipart(&parts)))
                .unwrap();
            r.headers_mut().insert("x-case", "hostile".parse().unwrap());
            let started = Instant::now();
            let response = app.clone().oneshot(r).await.unwrap();
            let status = response.status();
            let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
            let took = started.elapsed();
            let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let message = body["error"].as_str().unwrap_or("").to_string();
            report.push(format!("{what}: {status} in {took:.0?}: {message}"));
            assert_eq!(status, want, "{what}: {body}");
            assert!(message.to_lowercase().contains(&mention.to_lowercase()), "{what}: the error names {mention:?}: {message}");
            assert!(took < Duration::from_secs(20), "{what}: refused only after {took:?}");
        }
        // Nothing stored.
        assert!(lock(farm.store()).jobs().unwrap().is_empty());
        assert!(farm.status().await.unwrap().jobs.is_empty());
        // Nothing large was allocated: the process's peak grew by far less
        // than the smallest bomb here would take (the 4 GiB GLB chunk; the
        // 65536² image is 16 GiB). The bound is loose because the peak is
        // the whole test process's, and other tests run beside this one.
        if let (Some(before), Some(after)) = (before, peak_rss_kib()) {
            report.push(format!("peak RSS {} MiB before, {} MiB after", before / 1024, after / 1024));
            assert!(after.saturating_sub(before) < 1024 * 1024, "peak RSS grew from {before} to {after} KiB");
        }
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "hostile submissions:\n  {}", report.join("\n  "));
    });
}
