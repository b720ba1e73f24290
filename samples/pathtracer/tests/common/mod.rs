//! Native rendering helpers for the path tracer's tests.

#![allow(dead_code)]

use pathtracer::PathTracer;
use tessera_guest_sdk::{AovSet, Job, JobError, JobSettings, Rect, SampleRange, TileRequest, TileResult};

pub fn scene_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenes").join(name)
}

pub fn scene(name: &str) -> Vec<u8> {
    std::fs::read(scene_path(name)).unwrap()
}

pub fn settings(w: u32, h: u32, extra: &str) -> JobSettings {
    JobSettings { width: w, height: h, fps: 24.0, extra: extra.into() }
}

pub fn load(bytes: &[u8], w: u32, h: u32, extra: &str) -> Result<PathTracer, JobError> {
    PathTracer::load(bytes, &settings(w, h, extra)).map(|(j, _)| j)
}

pub fn tile(job: &mut PathTracer, frame: i32, rect: Rect, spp: u32) -> TileResult {
    let req =
        TileRequest { frame, rect, samples: SampleRange { start: 0, count: spp }, seed: 7, aovs: AovSet::empty() };
    job.render_tile(&req).unwrap()
}

/// Mean pixel value (colour / weight) over a tile.
pub fn mean(t: &TileResult) -> [f32; 3] {
    let n = t.weight.len();
    let mut m = [0.0f64; 3];
    for i in 0..n {
        for (c, acc) in m.iter_mut().enumerate() {
            *acc += f64::from(t.color[3 * i + c] / t.weight[i]);
        }
    }
    m.map(|v| (v / n as f64) as f32)
}

/// Writes a tile as an 8-bit sRGB PNG (for looking at test renders).
pub fn save_png(t: &TileResult, w: u32, h: u32, path: &std::path::Path) {
    let mut px = Vec::with_capacity((w * h * 3) as usize);
    for i in 0..(w * h) as usize {
        for c in 0..3 {
            let v = (t.color[3 * i + c] / t.weight[i]).clamp(0.0, 1.0);
            let s = if v <= 0.0031308 { 12.92 * v } else { 1.055 * v.powf(1.0 / 2.4) - 0.055 };
            px.push((s * 255.0 + 0.5) as u8);
        }
    }
    image::save_buffer(path, &px, w, h, image::ExtendedColorType::Rgb8).unwrap();
}

/// Builds small glTF files (JSON with a data-URI buffer) for tests.
#[derive(Default)]
pub struct GltfBuilder {
    pub materials: Vec<serde_json::Value>,
    pub meshes: Vec<serde_json::Value>,
    pub nodes: Vec<serde_json::Value>,
    pub cameras: Vec<serde_json::Value>,
    pub accessors: Vec<serde_json::Value>,
    pub views: Vec<serde_json::Value>,
    pub roots: Vec<usize>,
    pub extensions_used: Vec<String>,
    pub extensions_required: Vec<String>,
    pub lights: Vec<serde_json::Value>,
    pub bin: Vec<u8>,
}

impl GltfBuilder {
    fn push_floats(&mut self, data: &[f32], kind: &str, comps: usize) -> usize {
        let offset = self.bin.len();
        for f in data {
            self.bin.extend_from_slice(&f.to_le_bytes());
        }
        self.views.push(serde_json::json!({"buffer": 0, "byteOffset": offset, "byteLength": data.len() * 4}));
        let mut acc = serde_json::json!({"bufferView": self.views.len() - 1, "componentType": 5126, "count": data.len() / comps, "type": kind});
        if kind == "VEC3" {
            let mut min = [f32::INFINITY; 3];
            let mut max = [f32::NEG_INFINITY; 3];
            for v in data.chunks(3) {
                for c in 0..3 {
                    min[c] = min[c].min(v[c]);
                    max[c] = max[c].max(v[c]);
                }
            }
            acc["min"] = serde_json::json!(min);
            acc["max"] = serde_json::json!(max);
        }
        self.accessors.push(acc);
        self.accessors.len() - 1
    }

    pub fn material(&mut self, m: serde_json::Value) -> usize {
        self.materials.push(m);
        self.materials.len() - 1
    }

    /// A mesh of one indexed primitive.
    pub fn mesh(&mut self, positions: &[[f32; 3]], normals: &[[f32; 3]], indices: &[u32], material: usize) -> usize {
        let p = self.push_floats(&positions.concat(), "VEC3", 3);
        let mut attributes = serde_json::json!({"POSITION": p});
        if !normals.is_empty() {
            attributes["NORMAL"] = serde_json::json!(self.push_floats(&normals.concat(), "VEC3", 3));
        }
        let offset = self.bin.len();
        for i in indices {
            self.bin.extend_from_slice(&i.to_le_bytes());
        }
        self.views.push(serde_json::json!({"buffer": 0, "byteOffset": offset, "byteLength": indices.len() * 4}));
        self.accessors.push(serde_json::json!({"bufferView": self.views.len() - 1, "componentType": 5125, "count": indices.len(), "type": "SCALAR"}));
        let idx = self.accessors.len() - 1;
        self.meshes.push(
            serde_json::json!({"primitives": [{"attributes": attributes, "indices": idx, "material": material}]}),
        );
        self.meshes.len() - 1
    }

    pub fn node(&mut self, n: serde_json::Value) -> usize {
        self.nodes.push(n);
        self.nodes.len() - 1
    }

    pub fn root(&mut self, n: serde_json::Value) -> usize {
        let i = self.node(n);
        self.roots.push(i);
        i
    }

    pub fn camera(&mut self, yfov: f32) -> usize {
        self.cameras.push(serde_json::json!({"type": "perspective", "perspective": {"yfov": yfov, "znear": 0.01}}));
        self.cameras.len() - 1
    }

    pub fn to_json(&self) -> serde_json::Value {
        use base64::Engine as _;
        let uri = format!(
            "data:application/octet-stream;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(&self.bin)
        );
        let mut doc = serde_json::json!({
            "asset": {"version": "2.0"},
            "scene": 0,
            "scenes": [{"nodes": self.roots}],
            "nodes": self.nodes,
            "meshes": self.meshes,
            "materials": self.materials,
            "accessors": self.accessors,
            "bufferViews": self.views,
            "buffers": [{"byteLength": self.bin.len(), "uri": uri}],
        });
        if !self.cameras.is_empty() {
            doc["cameras"] = serde_json::json!(self.cameras);
        }
        if !self.lights.is_empty() {
            doc["extensions"] = serde_json::json!({"KHR_lights_punctual": {"lights": self.lights}});
        }
        let mut used = self.extensions_used.clone();
        if !self.lights.is_empty() && !used.contains(&"KHR_lights_punctual".to_string()) {
            used.push("KHR_lights_punctual".into());
        }
        if !used.is_empty() {
            doc["extensionsUsed"] = serde_json::json!(used);
        }
        if !self.extensions_required.is_empty() {
            doc["extensionsRequired"] = serde_json::json!(self.extensions_required);
        }
        doc
    }

    pub fn build(&self) -> Vec<u8> {
        serde_json::to_vec(&self.to_json()).unwrap()
    }
}

/// A UV sphere: positions, normals, indices.
pub fn sphere(radius: f32, rings: u32, segments: u32) -> (Vec<[f32; 3]>, Vec<[f32; 3]>, Vec<u32>) {
    let (mut p, mut n, mut idx) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..=rings {
        let theta = std::f32::consts::PI * r as f32 / rings as f32;
        for s in 0..=segments {
            let phi = std::f32::consts::TAU * s as f32 / segments as f32;
            let d = [theta.sin() * phi.cos(), theta.cos(), theta.sin() * phi.sin()];
            n.push(d);
            p.push([d[0] * radius, d[1] * radius, d[2] * radius]);
        }
    }
    for r in 0..rings {
        for s in 0..segments {
            let a = r * (segments + 1) + s;
            let b = a + segments + 1;
            idx.extend([a, a + 1, b, a + 1, b + 1, b]);
        }
    }
    (p, n, idx)
}

/// A quad in the z = 0 plane facing +Z, `size` wide, centred at the origin.
pub fn quad(size: f32) -> (Vec<[f32; 3]>, Vec<[f32; 3]>, Vec<u32>) {
    let h = size / 2.0;
    (vec![[-h, -h, 0.0], [h, -h, 0.0], [h, h, 0.0], [-h, h, 0.0]], vec![[0.0, 0.0, 1.0]; 4], vec![0, 1, 2, 0, 2, 3])
}
