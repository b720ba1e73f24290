//! Scenes and settings the path tracer must refuse, each with a message
//! that tells the artist what is wrong — and never a panic.

mod common;
use common::*;
use serde_json::{json, Value};
use tessera_guest_sdk::JobError;

fn cornell_json() -> Value {
    serde_json::from_slice(&scene("cornell.gltf")).unwrap()
}

fn refuse(bytes: &[u8], extra: &str) -> JobError {
    match load(bytes, 32, 32, extra) {
        Ok(_) => panic!("the scene was accepted"),
        Err(e) => e,
    }
}

fn scene_error(e: JobError) -> String {
    match e {
        JobError::InvalidScene(m) => m,
        other => panic!("expected invalid-scene, got {other:?}"),
    }
}

#[test]
fn an_unsupported_required_extension_is_named() {
    match refuse(&scene("turntable-draco.gltf"), "{}") {
        JobError::Unsupported(m) => assert!(m.contains("KHR_draco_mesh_compression"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn not_a_gltf() {
    let m = scene_error(refuse(b"PK\x03\x04 a zip file", "{}"));
    assert!(m.contains("not a glTF"), "{m}");
    let m = scene_error(refuse(b"", "{}"));
    assert!(m.contains("not a glTF"), "{m}");
}

#[test]
fn truncated_and_corrupt_files() {
    let glb = scene("turntable.glb");
    let m = scene_error(refuse(&glb[..glb.len() / 2], "{}"));
    assert!(m.contains(".glb"), "{m}");
    let json = scene("cornell.gltf");
    let m = scene_error(refuse(&json[..json.len() - 10], "{}"));
    assert!(m.contains("glTF JSON"), "{m}");
}

#[test]
fn out_of_range_accessors_are_refused() {
    let mut doc = cornell_json();
    doc["accessors"][0]["count"] = json!(1_000_000_000u64);
    let m = scene_error(refuse(&serde_json::to_vec(&doc).unwrap(), "{}"));
    assert!(!m.is_empty());
    let mut doc = cornell_json();
    doc["meshes"][0]["primitives"][0]["indices"] = json!(9999);
    scene_error(refuse(&serde_json::to_vec(&doc).unwrap(), "{}"));
}

#[test]
fn indices_past_the_vertex_count_are_refused() {
    let mut g = GltfBuilder::default();
    let m = g.material(json!({}));
    let mesh = g.mesh(&[[0.0; 3], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], &[], &[0, 1, 7], m);
    g.root(json!({"mesh": mesh}));
    let msg = scene_error(refuse(&g.build(), "{}"));
    assert!(msg.contains("index 7") && msg.contains("3 vertices"), "{msg}");
}

#[test]
fn cyclic_node_graphs_are_refused() {
    let mut doc = cornell_json();
    // CornellBox (4) → Room (0) → CornellBox.
    doc["nodes"][0]["children"] = json!([4]);
    let m = scene_error(refuse(&serde_json::to_vec(&doc).unwrap(), "{}"));
    assert!(m.contains("cycle") || m.contains("parent"), "{m}");
}

#[test]
fn an_image_header_claiming_65536_squared_is_refused_before_decoding() {
    // A PNG signature and IHDR chunk for 65536×65536 RGBA, and nothing else.
    // A tiny IDAT (an empty zlib stream) and IEND, as a hostile file would
    // have: the header alone must be enough to refuse it.
    use tessera_test_support::png;
    let png = png::file(&png::rgba_header(65536, 65536), &[b"\x78\x9c\x03\x00\x00\x00\x00\x01"]);
    use base64::Engine as _;
    let mut doc = cornell_json();
    doc["images"] =
        json!([{"uri": format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(&png))}]);
    doc["textures"] = json!([{"source": 0}]);
    doc["materials"][0]["pbrMetallicRoughness"]["baseColorTexture"] = json!({"index": 0});
    let m = scene_error(refuse(&serde_json::to_vec(&doc).unwrap(), "{}"));
    assert!(m.contains("65536"), "{m}");
}

#[test]
fn external_files_must_be_packed() {
    let mut doc = cornell_json();
    doc["buffers"][0]["uri"] = json!("cornell.bin");
    let m = scene_error(refuse(&serde_json::to_vec(&doc).unwrap(), "{}"));
    assert!(m.contains("cornell.bin") && m.contains("pack"), "{m}");
}

#[test]
fn bad_settings() {
    let cornell = scene("cornell.gltf");
    for (extra, want) in [
        (r#"{"camera": "Nope"}"#, "Nope"),
        (r#"{"max_bounces": 100000}"#, "max_bounces"),
        (r#"{"backgrund": [1, 1, 1]}"#, "unknown field"),
        ("{not json", "key must be a string"),
    ] {
        match refuse(&cornell, extra) {
            JobError::InvalidSettings(m) => assert!(m.contains(want), "{extra}: {m}"),
            other => panic!("{extra}: {other:?}"),
        }
    }
    assert!(matches!(load(&cornell, 0, 10, "{}"), Err(JobError::InvalidSettings(_))));
}

/// Regression tests for what fuzzing found (RELIABILITY.md): each of these
/// panicked inside the glTF crate or the BVH before the loader checked it.
#[test]
fn fuzz_findings_are_refused_not_panics() {
    let cases: Vec<(&str, Box<dyn Fn(&mut Value)>)> = vec![
        (
            "accessor 9999 does not exist",
            Box::new(|d| d["meshes"][0]["primitives"][0]["attributes"]["POSITION"] = json!(9999)),
        ),
        (
            "not a glTF property",
            Box::new(
                |d| d["animations"] = json!([{"channels": [{"sampler": 0, "target": {"node": 0, "path": "trAnslation"}}], "samplers": [{"input": 0, "output": 0}]}]),
            ),
        ),
        (
            "targets no node",
            Box::new(
                |d| d["animations"] = json!([{"channels": [{"sampler": 0, "target": {"node": 999, "path": "translation"}}], "samplers": [{"input": 0, "output": 0}]}]),
            ),
        ),
        ("needs a uri, or a bufferView and a mimeType", Box::new(|d| d["images"] = json!([{"bufferView": 0}]))),
        ("count of 0", Box::new(|d| d["accessors"][0]["count"] = json!(0))),
        ("do not fit buffer view", Box::new(|d| d["accessors"][0]["byteOffset"] = json!(u64::MAX - 3))),
        ("shorter than its", Box::new(|d| d["bufferViews"][0]["byteStride"] = json!(4))),
        ("expected VEC3", Box::new(|d| d["accessors"][0]["type"] = json!("SCALAR"))),
    ];
    for (want, edit) in cases {
        let mut doc = cornell_json();
        edit(&mut doc);
        let m = scene_error(refuse(&serde_json::to_vec(&doc).unwrap(), "{}"));
        assert!(m.contains(want), "{want}: {m}");
    }
    // A GLB whose header declares fewer bytes than the header itself.
    let mut glb = scene("turntable.glb");
    glb[8..12].copy_from_slice(&4u32.to_le_bytes());
    let m = scene_error(refuse(&glb, "{}"));
    assert!(m.contains(".glb") && m.contains("declares 4 bytes"), "{m}");
}

/// A primitive with no whole triangle builds an empty BVH, which rendering
/// used to walk as an interior node (index out of bounds).
#[test]
fn a_mesh_without_a_whole_triangle_renders() {
    let mut g = GltfBuilder::default();
    let m = g.material(json!({}));
    let mesh = g.mesh(&[[0.0; 3], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], &[], &[0, 1], m);
    g.root(json!({"mesh": mesh}));
    let mut job = load(&g.build(), 4, 4, "{}").expect("an empty mesh is a valid scene");
    tile(&mut job, 1, tessera_guest_sdk::Rect { x: 0, y: 0, width: 2, height: 2 }, 1);
}
