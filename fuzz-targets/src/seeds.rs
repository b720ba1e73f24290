//! Seed inputs, generated: small valid inputs of each target, so mutations
//! start from something that gets past the first checks. The committed
//! corpus (`fuzz-targets/corpus/<target>/`) holds these same seeds (written
//! by `cargo test -p tessera-fuzz-targets --test fuzz -- --ignored
//! write_corpus`); cargo-fuzz grows its own copy under `fuzz/corpus/`.

use base64::Engine as _;
use serde_json::json;
use tessera_protocol::wire::{
    self, BlobHeader, Capabilities, CoordinatorMsg, Engine, GpuClass, Hello, JobDescriptor, TileAck, TileReply,
    TileResult, TileTask, WorkerMsg, WorkerOpen,
};
use tessera_protocol::{ContentHash, Rect, SampleRange};

use crate::{upload_input, Target};

/// Named seeds of one target.
pub fn seeds(target: Target) -> Vec<(String, Vec<u8>)> {
    match target {
        Target::SceneImport => scenes(),
        Target::WireDecode => messages(),
        Target::Upload => uploads(),
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A 2×2 RGBA PNG, stored (no compression needed at this size).
pub fn tiny_png() -> Vec<u8> {
    // Hand-built so the crate needs no image encoder: signature, IHDR,
    // one IDAT with a stored zlib block, IEND.
    let mut raw = Vec::new();
    for _ in 0..2 {
        raw.push(0); // filter: none
        raw.extend([255, 0, 0, 255, 0, 255, 0, 255]);
    }
    let mut zlib = vec![0x78, 0x01, 0x01];
    zlib.extend((raw.len() as u16).to_le_bytes());
    zlib.extend((!(raw.len() as u16)).to_le_bytes());
    zlib.extend(&raw);
    zlib.extend(adler32(&raw).to_be_bytes());
    tessera_test_support::png::file(&tessera_test_support::png::rgba_header(2, 2), &[&zlib])
}

pub fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &x in data {
        a = (a + u32::from(x)) % 65521;
        b = (b + a) % 65521;
    }
    (b << 16) | a
}

/// One triangle with normals, UVs, indices, a textured material, a camera,
/// a light, a parent node and a two-key animation: a small document that
/// reaches most of the loader. Returned as the JSON value and its buffer.
pub fn triangle_doc(texture: bool) -> (serde_json::Value, Vec<u8>) {
    let mut bin = Vec::new();
    for v in [[0f32, 0., 0.], [1., 0., 0.], [0., 1., 0.]] {
        v.iter().for_each(|f| bin.extend(f.to_le_bytes()));
    }
    for _ in 0..3 {
        [0f32, 0., 1.].iter().for_each(|f| bin.extend(f.to_le_bytes()));
    }
    for uv in [[0f32, 0.], [1., 0.], [0., 1.]] {
        uv.iter().for_each(|f| bin.extend(f.to_le_bytes()));
    }
    for i in [0u16, 1, 2, 0] {
        bin.extend(i.to_le_bytes()); // 4 indices: 2-byte padding to 4
    }
    for t in [0f32, 1.] {
        bin.extend(t.to_le_bytes());
    }
    for v in [[0f32, 0., 0.], [0., 1., 0.]] {
        v.iter().for_each(|f| bin.extend(f.to_le_bytes()));
    }
    let mut doc = json!({
        "asset": {"version": "2.0"},
        "scene": 0,
        "scenes": [{"nodes": [0, 3]}],
        "nodes": [
            {"children": [1, 2], "translation": [0, 0, -3]},
            {"mesh": 0},
            {"extensions": {"KHR_lights_punctual": {"light": 0}}, "translation": [0, 2, 0]},
            {"camera": 0, "translation": [0, 0, 2]},
        ],
        "cameras": [{"type": "perspective", "perspective": {"yfov": 0.8, "znear": 0.1, "aspectRatio": 1.0}}],
        "extensionsUsed": ["KHR_lights_punctual"],
        "extensions": {"KHR_lights_punctual": {"lights": [{"type": "point", "intensity": 1000}]}},
        "meshes": [{"primitives": [{
            "attributes": {"POSITION": 0, "NORMAL": 1, "TEXCOORD_0": 2},
            "indices": 3, "material": 0
        }]}],
        "materials": [{"pbrMetallicRoughness": {"baseColorFactor": [1, 1, 1, 1]}, "emissiveFactor": [0.1, 0.1, 0.1]}],
        "buffers": [{"byteLength": bin.len()}],
        "bufferViews": [
            {"buffer": 0, "byteOffset": 0, "byteLength": 36},
            {"buffer": 0, "byteOffset": 36, "byteLength": 36},
            {"buffer": 0, "byteOffset": 72, "byteLength": 24},
            {"buffer": 0, "byteOffset": 96, "byteLength": 6},
            {"buffer": 0, "byteOffset": 104, "byteLength": 8},
            {"buffer": 0, "byteOffset": 112, "byteLength": 24},
        ],
        "accessors": [
            {"bufferView": 0, "componentType": 5126, "count": 3, "type": "VEC3", "min": [0, 0, 0], "max": [1, 1, 0]},
            {"bufferView": 1, "componentType": 5126, "count": 3, "type": "VEC3"},
            {"bufferView": 2, "componentType": 5126, "count": 3, "type": "VEC2"},
            {"bufferView": 3, "componentType": 5123, "count": 3, "type": "SCALAR"},
            {"bufferView": 4, "componentType": 5126, "count": 2, "type": "SCALAR", "min": [0], "max": [1]},
            {"bufferView": 5, "componentType": 5126, "count": 2, "type": "VEC3"},
        ],
        "animations": [{
            "channels": [{"sampler": 0, "target": {"node": 1, "path": "translation"}}],
            "samplers": [{"input": 4, "output": 5}]
        }],
    });
    if texture {
        doc["images"] = json!([{"uri": format!("data:image/png;base64,{}", b64(&tiny_png()))}]);
        doc["textures"] = json!([{"source": 0, "sampler": 0}]);
        doc["samplers"] = json!([{"wrapS": 33071}]);
        doc["materials"][0]["pbrMetallicRoughness"]["baseColorTexture"] = json!({"index": 0});
    }
    (doc, bin)
}

/// The document with its buffer as a data URI: a `.gltf` file.
pub fn gltf_file(mut doc: serde_json::Value, bin: &[u8]) -> Vec<u8> {
    doc["buffers"][0]["uri"] = json!(format!("data:application/octet-stream;base64,{}", b64(bin)));
    serde_json::to_vec(&doc).unwrap_or_default()
}

/// The document and its buffer as a GLB (JSON chunk, BIN chunk).
pub fn glb_file(doc: &serde_json::Value, bin: &[u8]) -> Vec<u8> {
    let mut json = serde_json::to_vec(doc).unwrap_or_default();
    while json.len() % 4 != 0 {
        json.push(b' ');
    }
    let mut bin = bin.to_vec();
    while bin.len() % 4 != 0 {
        bin.push(0);
    }
    let total = 12 + 8 + json.len() + 8 + bin.len();
    let mut out = b"glTF".to_vec();
    out.extend(2u32.to_le_bytes());
    out.extend((total as u32).to_le_bytes());
    out.extend((json.len() as u32).to_le_bytes());
    out.extend(b"JSON");
    out.extend(&json);
    out.extend((bin.len() as u32).to_le_bytes());
    out.extend(b"BIN\0");
    out.extend(&bin);
    out
}

fn scenes() -> Vec<(String, Vec<u8>)> {
    let (doc, bin) = triangle_doc(false);
    let (tex_doc, tex_bin) = triangle_doc(true);
    vec![
        ("triangle.gltf".into(), gltf_file(doc.clone(), &bin)),
        ("triangle.glb".into(), glb_file(&doc, &bin)),
        ("textured.gltf".into(), gltf_file(tex_doc.clone(), &tex_bin)),
        ("textured.glb".into(), glb_file(&tex_doc, &tex_bin)),
    ]
}

fn task() -> TileTask {
    TileTask {
        lease: 7,
        job: JobDescriptor {
            job: 1,
            module: ContentHash::of(b"m"),
            scene: ContentHash::of(b"s"),
            width: 64,
            height: 48,
            fps: 24.0,
            extra: r#"{"max_bounces":8}"#.into(),
            fuel_per_tile: 1000,
            fuel_per_pixel_sample: 10,
            engine: Engine::Auto,
            guides: false,
        },
        tile: 3,
        frame: -2,
        rect: Rect { x: 16, y: 8, width: 4, height: 2 },
        samples: SampleRange { start: 0, count: 16 },
        seed: 9,
        gpu: false,
    }
}

fn messages() -> Vec<(String, Vec<u8>)> {
    let hello = Hello {
        version: wire::PROTOCOL_VERSION,
        token: "tsr_join_abc".into(),
        name: "box".into(),
        capabilities: Capabilities {
            slots: 2,
            cores: 2,
            memory_bytes: 1 << 33,
            gpu: Some("llvmpipe".into()),
            agent: "tessera-worker 0.1.0".into(),
            gpu_class: None,
        },
    };
    let task = task();
    let accumulators = tessera_protocol::TileAccumulators {
        rect: Rect { x: 16, y: 8, width: 2, height: 1 },
        color: vec![1.5, 0.25, 0.0, 0.0, 1.0, f32::NAN],
        weight: vec![1.0, 2.0],
        aovs: vec![tessera_protocol::AovPlane { name: "albedo".into(), channels: 1, data: vec![0.5, 0.5] }],
    };
    let done = TileReply::Done(TileResult {
        lease: 7,
        tile: 3,
        accumulators,
        fuel: 123,
        millis: 4,
        commitment: [7; 32],
        signature: vec![1; 64],
        gpu: Some(GpuClass { vendor: 0x10005, device: 0, driver: "mesa 25".into(), name: "llvmpipe".into() }),
    });
    let mut out: Vec<(String, Vec<u8>)> = vec![
        ("open-control".into(), wire::encode(&WorkerOpen::Control(hello.clone()))),
        ("open-blob".into(), wire::encode(&WorkerOpen::Blob { hash: ContentHash::of(b"x") })),
        ("hello".into(), wire::encode(&hello)),
        ("welcome".into(), wire::encode(&CoordinatorMsg::Welcome { identity: "ab12".into(), heartbeat_ms: 5000 })),
        (
            "acks".into(),
            wire::encode(&CoordinatorMsg::Acks(vec![
                (1, TileAck::Accepted),
                (2, TileAck::Rejected { reason: "late".into() }),
            ])),
        ),
        ("revoke".into(), wire::encode(&CoordinatorMsg::Revoke { lease: 4 })),
        ("heartbeat".into(), wire::encode(&WorkerMsg::Heartbeat)),
        ("task".into(), wire::encode(&task)),
        ("failed".into(), wire::encode(&TileReply::Failed { lease: 7, error: "trap".into(), retryable: true })),
        ("blob-found".into(), wire::encode(&BlobHeader::Found { size: 1 << 20 })),
    ];
    out.push(("done".into(), wire::encode(&done)));
    // Unframed bodies too: `decode` sees what follows the length header.
    let bodies: Vec<(String, Vec<u8>)> =
        out.iter().map(|(n, b)| (format!("{n}-body"), b[wire::HEADER_LEN..].to_vec())).collect();
    out.extend(bodies);
    out
}

fn uploads() -> Vec<(String, Vec<u8>)> {
    let (doc, bin) = triangle_doc(true);
    let mut separate = doc.clone();
    separate["buffers"][0]["uri"] = json!("scene.bin");
    separate["images"] = json!([{"uri": "textures/wood%20grain.png"}]);
    let separate = serde_json::to_vec(&separate).unwrap_or_default();
    let png = tiny_png();
    let settings = r#"{"name":"shot 1","frames":"1-3,7","width":64,"height":48,"spp":4,"tile_size":16,"fps":24,"view_transform":"agx","exposure":0.5,"formats":["png","exr"],"engine":"auto","bounces":4,"background":[0.1,0.1,0.1],"camera":"Cam"}"#;
    vec![
        (
            "separate".into(),
            upload_input(
                settings,
                "1-48",
                "scene.gltf",
                &separate,
                &[("scene.bin", &bin), ("textures/wood grain.png", &png)],
            ),
        ),
        ("glb".into(), upload_input(r#"{"frames":[1,5,9]}"#, "-5--1,3", "shot.glb", &glb_file(&doc, &bin), &[])),
        ("embedded".into(), upload_input("", "7", "scene.gltf", &gltf_file(doc, &bin), &[])),
    ]
}
