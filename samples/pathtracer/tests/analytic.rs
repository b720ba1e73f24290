//! Renders whose answer is known in closed form.

mod common;
use common::*;
use serde_json::json;
use tessera_guest_sdk::Rect;

/// A white furnace: a diffuse white sphere under a uniform white sky. An
/// energy-conserving renderer shows the sphere at (almost) the sky's
/// value: no light is created; only the specular lobe's single-scattering
/// loss (glTF's BRDF has a 4 % dielectric coat) may darken it slightly.
#[test]
fn white_furnace() {
    let mut g = GltfBuilder::default();
    let white = g.material(json!({"pbrMetallicRoughness": {"baseColorFactor": [1, 1, 1, 1], "metallicFactor": 0.0, "roughnessFactor": 1.0}}));
    let (p, n, i) = sphere(1.0, 48, 96);
    let mesh = g.mesh(&p, &n, &i, white);
    g.root(json!({"mesh": mesh}));
    let cam = g.camera(0.5);
    g.root(json!({"camera": cam, "translation": [0, 0, 4]}));
    let extra = r#"{"background": [1, 1, 1], "background_strength": 1.0, "max_bounces": 64}"#;
    let mut job = load(&g.build(), 32, 32, extra).unwrap();
    // The centre 8×8 pixels all see the sphere.
    let t = tile(&mut job, 1, Rect { x: 12, y: 12, width: 8, height: 8 }, 64);
    let m = mean(&t);
    for c in m {
        assert!(c > 0.93 && c < 1.01, "furnace mean {m:?}");
    }
}

/// Looking straight at an emitter fills the frame with exactly its radiance
/// (emissive factor × KHR_materials_emissive_strength).
#[test]
fn emissive_only() {
    let mut g = GltfBuilder::default();
    g.extensions_used.push("KHR_materials_emissive_strength".into());
    let lamp = g.material(json!({
        "pbrMetallicRoughness": {"baseColorFactor": [0, 0, 0, 1], "metallicFactor": 0.0},
        "emissiveFactor": [1.0, 0.5, 0.25],
        "extensions": {"KHR_materials_emissive_strength": {"emissiveStrength": 4.0}}
    }));
    let (p, n, i) = quad(100.0);
    let mesh = g.mesh(&p, &n, &i, lamp);
    g.root(json!({"mesh": mesh}));
    let cam = g.camera(0.6);
    g.root(json!({"camera": cam, "translation": [0, 0, 3]}));
    let mut job = load(&g.build(), 16, 16, r#"{"background": [0, 0, 0]}"#).unwrap();
    let t = tile(&mut job, 1, Rect { x: 0, y: 0, width: 16, height: 16 }, 4);
    for px in 0..256 {
        let w = t.weight[px];
        assert_eq!(w, 4.0);
        let v = [t.color[3 * px] / w, t.color[3 * px + 1] / w, t.color[3 * px + 2] / w];
        for (got, want) in v.iter().zip([4.0, 2.0, 1.0]) {
            assert!((got - want).abs() < 1e-5 * want, "pixel {px}: {v:?}");
        }
    }
}

/// The back of a single-sided emitter: glTF culls it (the camera sees the
/// black background through it); Cycles renders and lights both sides of
/// Blender's faces, so a file Blender exported shows the emission from
/// behind too, unless `shading` asks for glTF's rules.
#[test]
fn blender_files_are_two_sided_as_cycles_renders_them() {
    let mut g = GltfBuilder::default();
    g.extensions_used.push("KHR_materials_emissive_strength".into());
    let lamp = g.material(json!({
        "pbrMetallicRoughness": {"baseColorFactor": [0, 0, 0, 1], "metallicFactor": 0.0},
        "emissiveFactor": [1.0, 1.0, 1.0],
        "extensions": {"KHR_materials_emissive_strength": {"emissiveStrength": 2.0}}
    }));
    let (p, n, i) = quad(100.0);
    let mesh = g.mesh(&p, &n, &i, lamp);
    g.root(json!({"mesh": mesh}));
    let cam = g.camera(0.6);
    // Behind the quad (it faces +Z), looking along +Z at its back.
    g.root(json!({"camera": cam, "translation": [0, 0, -3], "rotation": [0, 1, 0, 0]}));
    let render = |generator: Option<&str>, extra: &str| {
        let mut doc = g.to_json();
        if let Some(gen) = generator {
            doc["asset"]["generator"] = json!(gen);
        }
        let mut job = load(&serde_json::to_vec(&doc).unwrap(), 8, 8, extra).unwrap();
        mean(&tile(&mut job, 1, Rect { x: 0, y: 0, width: 8, height: 8 }, 2))
    };
    let black = r#"{"background": [0, 0, 0]}"#;
    assert_eq!(render(None, black), [0.0; 3]);
    assert_eq!(
        render(Some("Khronos glTF Blender I/O v3.4.50"), r#"{"background": [0, 0, 0], "shading": "gltf"}"#),
        [0.0; 3]
    );
    for gen in ["Khronos glTF Blender I/O v3.4.50", "Khronos glTF Blender I/O v4.2.70"] {
        let m = render(Some(gen), black);
        assert!(m.iter().all(|c| (c - 2.0).abs() < 1e-5), "{gen}: {m:?}");
    }
}

/// A diffuse plane lit by a point light straight above: at the spot under
/// the light, radiance = albedo/π · I/d² (plus the 4 % specular coat's
/// share, which at normal incidence and roughness 1 is small).
#[test]
fn point_light_falloff() {
    // A quarter turn about −X: the plane faces up, the camera looks down.
    const S: f32 = std::f32::consts::FRAC_1_SQRT_2;
    let render = |height: f32| {
        let mut g = GltfBuilder::default();
        let grey = g.material(json!({"pbrMetallicRoughness": {"baseColorFactor": [0.5, 0.5, 0.5, 1], "metallicFactor": 0.0, "roughnessFactor": 1.0}}));
        let (p, n, i) = quad(1000.0);
        let mesh = g.mesh(&p, &n, &i, grey);
        g.root(json!({"mesh": mesh, "rotation": [-S, 0, 0, S]}));
        g.lights.push(json!({"type": "point", "intensity": 683.0 * 10.0}));
        g.root(json!({"extensions": {"KHR_lights_punctual": {"light": 0}}, "translation": [0, height, 0]}));
        let cam = g.camera(0.002); // sees ±5 cm of the plane
        g.root(json!({"camera": cam, "translation": [0, 50, 0], "rotation": [-S, 0, 0, S]}));
        let mut job = load(&g.build(), 4, 4, r#"{"background": [0, 0, 0], "max_bounces": 1}"#).unwrap();
        mean(&tile(&mut job, 1, Rect { x: 0, y: 0, width: 4, height: 4 }, 16))[0]
    };
    let (near, far) = (render(1.0), render(2.0));
    // Intensity 683·10 cd = 10 W/sr; at 1 m, E = 10 W/m². At normal
    // incidence the glTF BRDF is (1 − F)·albedo/π + F·D·V with F = 0.04,
    // D = 1/π and V = 1/4 for roughness 1.
    let pi = std::f32::consts::PI;
    let expected = 10.0 * (0.96 * 0.5 / pi + 0.04 / pi * 0.25);
    assert!((near - expected).abs() < 0.01 * expected, "near {near} vs {expected}");
    // Inverse-square law.
    assert!((near / far - 4.0).abs() < 0.05, "ratio {}", near / far);
}
