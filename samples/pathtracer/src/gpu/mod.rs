//! The GPU engine: the same path tracer in WGSL (`trace.wgsl`), run through
//! the worker's GPU (the SDK's `gpu` module).
//!
//! - **Data.** Once per prepared frame the frame is flattened into two
//!   storage buffers of 32-bit words: `scene` (BVH nodes of the instance
//!   BVH and every mesh BVH in one pool, leaf-ordered triangles, instances,
//!   meshes' vertex attributes, materials, texture headers, emitters and
//!   their pmf/CDF, punctual lights, the pixel filter's table and the sRGB
//!   table) and `texels` (every image once, RGBA8 in one word). A small
//!   `params` buffer holds where each section starts, the camera and the
//!   tile. They are freed when another frame is prepared.
//! - **Work.** One invocation per (pixel, sample), never a loop over a
//!   pixel's samples in the shader: lavapipe cuts a shader's loops off
//!   after 65,535 iterations per invocation, and one invocation per sample
//!   keeps every invocation's work that of one path. Each writes its
//!   sample's radiance (and AOVs when asked) to `out`. A tile's paths go
//!   out in chunks of at most what the host advises for this device
//!   (`gpu::advised_workgroups`: small on lavapipe, large on a fast GPU),
//!   so a slow device gets many short dispatches rather than one that runs
//!   past the host's time limit; a path's value does not depend on its
//!   chunk, so neither do the pixels.
//! - **Sums.** The CPU reads the samples back and sums them per pixel in
//!   sample-index order through the same `TileSums::add` as the CPU engine
//!   (NaN dropping included), so only the per-sample values can differ:
//!   they are the same paths with the same random numbers (the shader
//!   ports `sampler.rs` and the SDK's `PixelRng`, 64-bit arithmetic as u32
//!   pairs), and differ by float rounding (GPU `sin`/`cos`/`sqrt`, fused
//!   multiply-adds), which can also send a path down another branch.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use glam::{Mat3, Mat4, Vec3};
use tessera_guest_sdk::gpu::{self as host, Buffer, GpuError};
use tessera_guest_sdk::{JobError, TileRequest};

use crate::bvh::Bvh;
use crate::camera::FilterTable;
use crate::frame::{Blas, Frame};
use crate::integrator::PathResult;
use crate::scene::{AlphaMode, LightKind, Scene, ShadingModel, SpotCone, TextureRef, Wrap};
use crate::settings::Settings;
use crate::TileSums;

/// The shader's body; `shader()` puts the layout constants in front.
const TRACE_WGSL: &str = include_str!("trace.wgsl");

/// Invocations per workgroup (the WGSL's `@workgroup_size`).
const WORKGROUP: u64 = 64;

/// Samples per dispatch at most: what keeps one output buffer under
/// WebGPU's 128 MiB storage binding and one dimension of workgroups.
const MAX_BINDING: u64 = 128 << 20;
const MAX_GROUPS: u64 = 65_535;

/// Dispatches one tile may use: under the host's default 256, leaving room.
/// Each chunk of paths takes two (trace, then sum).
const MAX_DISPATCHES: u64 = 240;
const MAX_CHUNKS: u64 = MAX_DISPATCHES / 2;

/// Floats per pixel in `acc` for each of its totals and its current
/// block's sums: colour (3), weight, albedo (3), normal (3), depth.
const ACC_WORDS: usize = 11;

/// Most samples of a pixel one `reduce` invocation may add: lavapipe cuts
/// a loop off after 65,535 iterations. A tile with more samples per pixel
/// is summed on the CPU from the samples read back.
const MAX_DEVICE_SPP: u64 = 65_000;

/// Words of `params`, by index. The shader sees each as a `const`.
mod p {
    pub const WIDTH: usize = 0;
    pub const HEIGHT: usize = 1;
    pub const RECT_X: usize = 2;
    pub const RECT_Y: usize = 3;
    pub const RECT_W: usize = 4;
    pub const SAMPLE0: usize = 5;
    pub const SPP: usize = 6;
    pub const SEED_LO: usize = 7;
    pub const SEED_HI: usize = 8;
    pub const FRAME: usize = 9;
    pub const MAX_BOUNCES: usize = 10;
    pub const CHUNK: usize = 11;
    pub const TOTAL: usize = 12;
    pub const STRIDE: usize = 13;
    /// Paths in the chunk just traced (`reduce`).
    pub const CHUNK_LEN: usize = 15;
    /// +∞ as data: WGSL has no infinity literal.
    pub const INF: usize = 14;
    pub const CAM_O: usize = 16;
    pub const TAN_HALF_FOV: usize = 19;
    pub const CAM_R: usize = 20;
    pub const CAM_U: usize = 24;
    pub const CAM_F: usize = 28;
    pub const BACKGROUND: usize = 32;
    pub const NODES: usize = 36;
    pub const TRIS: usize = 37;
    pub const TRI_IDS: usize = 38;
    pub const TLAS_ORDER: usize = 39;
    pub const INSTANCES: usize = 40;
    pub const N_INSTANCES: usize = 41;
    pub const MESHES: usize = 42;
    pub const MATERIALS: usize = 43;
    pub const TEXTURES: usize = 44;
    pub const EMITTERS: usize = 45;
    pub const N_EMITTERS: usize = 46;
    pub const PMF: usize = 47;
    pub const CDF: usize = 48;
    pub const LIGHTS: usize = 49;
    pub const N_LIGHTS: usize = 50;
    pub const FILTER: usize = 51;
    pub const SRGB: usize = 52;
    /// `scene::ShadingModel`: 0 glTF, 1 Principled v1.
    pub const MODEL: usize = 53;
    /// `Camera::ortho_half_height` (0: perspective).
    pub const ORTHO: usize = 54;
    pub const WORDS: usize = 64;
}

/// Record sizes in words, and field offsets, of the `scene` sections.
mod rec {
    pub const NODE: u32 = 8;
    pub const TRI: u32 = 9;
    pub const INSTANCE: u32 = 48;
    pub const MESH: u32 = 16;
    pub const MATERIAL: u32 = 56;
    pub const TEXTURE: u32 = 8;
    pub const LIGHT: u32 = 16;
    /// Words per sample in `out` without and with AOVs.
    pub const OUT_PLAIN: u32 = 3;
    pub const OUT_AOVS: u32 = 10;
}

/// "No such thing" in an index field.
const NONE: u32 = u32::MAX;

/// The WGSL: layout constants, then the body.
fn shader() -> &'static str {
    static SHADER: OnceLock<String> = OnceLock::new();
    SHADER.get_or_init(|| {
        let consts = [
            ("P_WIDTH", p::WIDTH as u32),
            ("P_HEIGHT", p::HEIGHT as u32),
            ("P_RECT_X", p::RECT_X as u32),
            ("P_RECT_Y", p::RECT_Y as u32),
            ("P_RECT_W", p::RECT_W as u32),
            ("P_SAMPLE0", p::SAMPLE0 as u32),
            ("P_SPP", p::SPP as u32),
            ("P_SEED_LO", p::SEED_LO as u32),
            ("P_SEED_HI", p::SEED_HI as u32),
            ("P_FRAME", p::FRAME as u32),
            ("P_MAX_BOUNCES", p::MAX_BOUNCES as u32),
            ("P_CHUNK", p::CHUNK as u32),
            ("P_TOTAL", p::TOTAL as u32),
            ("P_STRIDE", p::STRIDE as u32),
            ("P_CHUNK_LEN", p::CHUNK_LEN as u32),
            ("ACC_WORDS", ACC_WORDS as u32),
            ("P_INF", p::INF as u32),
            ("P_CAM_O", p::CAM_O as u32),
            ("P_TAN_HALF_FOV", p::TAN_HALF_FOV as u32),
            ("P_CAM_R", p::CAM_R as u32),
            ("P_CAM_U", p::CAM_U as u32),
            ("P_CAM_F", p::CAM_F as u32),
            ("P_BACKGROUND", p::BACKGROUND as u32),
            ("P_NODES", p::NODES as u32),
            ("P_TRIS", p::TRIS as u32),
            ("P_TRI_IDS", p::TRI_IDS as u32),
            ("P_TLAS_ORDER", p::TLAS_ORDER as u32),
            ("P_INSTANCES", p::INSTANCES as u32),
            ("P_N_INSTANCES", p::N_INSTANCES as u32),
            ("P_MESHES", p::MESHES as u32),
            ("P_MATERIALS", p::MATERIALS as u32),
            ("P_TEXTURES", p::TEXTURES as u32),
            ("P_EMITTERS", p::EMITTERS as u32),
            ("P_N_EMITTERS", p::N_EMITTERS as u32),
            ("P_PMF", p::PMF as u32),
            ("P_CDF", p::CDF as u32),
            ("P_LIGHTS", p::LIGHTS as u32),
            ("P_N_LIGHTS", p::N_LIGHTS as u32),
            ("P_FILTER", p::FILTER as u32),
            ("P_SRGB", p::SRGB as u32),
            ("P_MODEL", p::MODEL as u32),
            ("P_ORTHO", p::ORTHO as u32),
            ("R_NODE", rec::NODE),
            ("R_TRI", rec::TRI),
            ("R_INSTANCE", rec::INSTANCE),
            ("R_MESH", rec::MESH),
            ("R_MATERIAL", rec::MATERIAL),
            ("R_TEXTURE", rec::TEXTURE),
            ("R_LIGHT", rec::LIGHT),
            ("FILTER_TABLE", crate::camera::FILTER_TABLE_SIZE as u32),
        ];
        let mut s = String::from("// Generated by samples/pathtracer/src/gpu/mod.rs: the data layout.\n");
        for (name, value) in consts {
            s.push_str(&format!("const {name}: u32 = {value}u;\n"));
        }
        s.push_str(&format!("const NONE: u32 = {NONE}u;\nconst WORKGROUP: u32 = {WORKGROUP}u;\n"));
        s.push_str(TRACE_WGSL);
        s
    })
}

/// What the engine needs of the job to render a tile.
pub struct Context<'a> {
    pub scene: &'a Scene,
    pub frame: &'a Frame,
    pub settings: &'a Settings,
    pub filter: &'a FilterTable,
    pub width: u32,
    pub height: u32,
}

/// The GPU buffers of one prepared frame.
struct FrameBuffers {
    frame: i32,
    /// The frame's part of `params` (the tile's part is filled per tile).
    params: Vec<u32>,
    params_buf: Buffer,
    scene: Buffer,
    texels: Buffer,
}

/// The engine's state in a `PathTracer`: buffers kept across tiles.
#[derive(Default)]
pub struct GpuEngine {
    frame: Option<FrameBuffers>,
    /// The per-sample output buffer and its size in bytes, reused while
    /// large enough.
    out: Option<(u64, Buffer)>,
    /// The per-pixel sums (`reduce`), likewise.
    acc: Option<(u64, Buffer)>,
    /// Whether the log already says the instance traces on the GPU.
    logged: bool,
}

/// A GPU error as a job error, named with what the engine was doing.
fn job_error(what: &str, e: GpuError) -> JobError {
    JobError::Failed(format!("GPU engine, {what}: {}", host::describe(&e)))
}

impl GpuEngine {
    /// Frees the frame's buffers unless they are `frame`'s.
    pub fn forget_unless(&mut self, frame: i32) {
        if self.frame.as_ref().is_some_and(|f| f.frame != frame) {
            self.frame = None;
        }
    }

    /// Renders `req` (already checked against the frame) into `sums`.
    pub(crate) fn render(&mut self, ctx: &Context, req: &TileRequest, sums: &mut TileSums) -> Result<(), JobError> {
        let result = self.try_render(ctx, req, sums);
        if result.is_err() {
            // After a lost device the buffers are gone with it: the next
            // tile starts from a fresh upload.
            self.frame = None;
            self.out = None;
            self.acc = None;
        }
        result
    }

    fn try_render(&mut self, ctx: &Context, req: &TileRequest, sums: &mut TileSums) -> Result<(), JobError> {
        if !self.logged {
            self.logged = true;
            let name = host::adapter().map_or_else(|| "no adapter".into(), |a| a.name);
            tessera_guest_sdk::log(tessera_guest_sdk::Level::Info, &format!("path tracer: GPU engine on {name}"));
        }
        self.forget_unless(req.frame);
        if self.frame.is_none() {
            self.frame = Some(upload(ctx, req.frame)?);
        }
        let Some(fb) = &self.frame else { return Err(JobError::NotLoaded) };

        let r = req.rect;
        let spp = u64::from(req.samples.start.saturating_add(req.samples.count) - req.samples.start);
        let pixels = u64::from(r.width) * u64::from(r.height);
        let total = pixels * spp;
        if total == 0 {
            return Ok(());
        }
        if total > u64::from(u32::MAX) {
            return Err(JobError::InvalidSettings(format!(
                "GPU engine: a tile of {pixels} pixels × {spp} samples is over 2³² paths; split it"
            )));
        }
        let stride = u64::from(if sums.wants_aovs() { rec::OUT_AOVS } else { rec::OUT_PLAIN });
        let max_chunk = (MAX_BINDING / (4 * stride)).min(MAX_GROUPS * WORKGROUP) / WORKGROUP * WORKGROUP;
        // The host's advice (0 only without a GPU, which cannot happen here),
        // raised where the tile would otherwise need too many dispatches.
        let advised = host::advised_workgroups(shader(), "main").max(1).saturating_mul(WORKGROUP);
        let chunk = advised.max(total.div_ceil(MAX_CHUNKS).next_multiple_of(WORKGROUP)).min(max_chunk);
        if total.div_ceil(chunk) > MAX_CHUNKS {
            return Err(JobError::InvalidSettings(format!(
                "GPU engine: a tile of {pixels} pixels × {spp} samples needs more than {MAX_CHUNKS} chunks of paths; \
                 split it"
            )));
        }
        let on_device = spp <= MAX_DEVICE_SPP;

        let mut params = fb.params.clone();
        params[p::RECT_X] = r.x;
        params[p::RECT_Y] = r.y;
        params[p::RECT_W] = r.width;
        params[p::SAMPLE0] = req.samples.start;
        params[p::SPP] = spp as u32;
        params[p::SEED_LO] = req.seed as u32;
        params[p::SEED_HI] = (req.seed >> 32) as u32;
        params[p::FRAME] = req.frame as u32;
        params[p::TOTAL] = total as u32;
        params[p::STRIDE] = stride as u32;
        fb.params_buf.write(0, &words_to_bytes(&params)).map_err(|e| job_error("writing the tile's parameters", e))?;

        let out_bytes = chunk.min(total) * stride * 4;
        if self.out.as_ref().is_none_or(|(size, _)| *size < out_bytes) {
            self.out = None; // free the old one first: it counts against the budget
            let b = Buffer::new(out_bytes).map_err(|e| job_error("allocating the output buffer", e))?;
            self.out = Some((out_bytes, b));
        }
        let acc_bytes = pixels * 2 * ACC_WORDS as u64 * 4;
        if on_device {
            if self.acc.as_ref().is_none_or(|(size, _)| *size < acc_bytes) {
                self.acc = None;
                let b = Buffer::new(acc_bytes).map_err(|e| job_error("allocating the sums buffer", e))?;
                self.acc = Some((acc_bytes, b));
            }
        }
        let Some((_, out)) = &self.out else { return Err(JobError::NotLoaded) };
        let bindings = [fb.params_buf.bind(0), fb.scene.bind(1), fb.texels.bind(2), out.bind(3)];
        let acc = match (&self.acc, on_device) {
            (Some((_, acc)), true) => {
                acc.write(0, &vec![0u8; acc_bytes as usize]).map_err(|e| job_error("clearing the sums", e))?;
                Some(acc)
            }
            _ => None,
        };

        let spp = spp as usize;
        let mut start = 0u64;
        while start < total {
            let n = chunk.min(total - start);
            fb.params_buf
                .write((p::CHUNK * 4) as u64, &(start as u32).to_le_bytes())
                .map_err(|e| job_error("writing the chunk offset", e))?;
            let groups = n.div_ceil(WORKGROUP) as u32;
            host::dispatch(shader(), "main", &bindings, [groups, 1, 1]).map_err(|e| job_error("tracing paths", e))?;
            if let Some(acc) = acc {
                // Sum on the device: no per-sample read-back.
                fb.params_buf
                    .write((p::CHUNK_LEN * 4) as u64, &(n as u32).to_le_bytes())
                    .map_err(|e| job_error("writing the chunk length", e))?;
                let touched = (start + n - 1) / spp as u64 - start / spp as u64 + 1;
                let sum = [fb.params_buf.bind(0), out.bind(3), acc.bind(4)];
                host::dispatch(shader(), "reduce", &sum, [touched.div_ceil(WORKGROUP) as u32, 1, 1])
                    .map_err(|e| job_error("summing samples", e))?;
                start += n;
                continue;
            }
            let bytes = out.read(0, n * stride * 4).map_err(|e| job_error("reading the samples back", e))?;
            // Samples arrive pixel-major, each pixel's in index order: the
            // order the CPU engine adds them in.
            for (k, rec) in bytes.chunks_exact(stride as usize * 4).enumerate() {
                let g = start as usize + k;
                let f = |j: usize| f32::from_le_bytes([rec[4 * j], rec[4 * j + 1], rec[4 * j + 2], rec[4 * j + 3]]);
                let mut path = PathResult { radiance: Vec3::new(f(0), f(1), f(2)), ..PathResult::default() };
                if stride == u64::from(rec::OUT_AOVS) {
                    path.albedo = Vec3::new(f(3), f(4), f(5));
                    path.normal = Vec3::new(f(6), f(7), f(8));
                    path.depth = f(9);
                }
                sums.add(g / spp, req.samples.start + (g % spp) as u32, &path);
            }
            start += n;
        }
        if let Some(acc) = acc {
            let bytes = acc.read(0, acc_bytes).map_err(|e| job_error("reading the sums back", e))?;
            let floats: Vec<f32> =
                bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            for (i, px) in floats.chunks_exact(2 * ACC_WORDS).enumerate() {
                sums.set_pixel(i, &px[..ACC_WORDS], &px[ACC_WORDS..]);
            }
        }
        Ok(())
    }
}

fn words_to_bytes(words: &[u32]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// The `scene` words being built.
#[derive(Default)]
struct Words(Vec<u32>);

impl Words {
    fn at(&self) -> u32 {
        self.0.len() as u32
    }
    fn u(&mut self, v: u32) {
        self.0.push(v);
    }
    fn f(&mut self, v: f32) {
        self.0.push(v.to_bits());
    }
    fn v3(&mut self, v: Vec3) {
        self.f(v.x);
        self.f(v.y);
        self.f(v.z);
    }
    /// The x, y, z of each column of an affine matrix (its 4th row is not
    /// used: `transform_point3` ignores it too).
    fn affine(&mut self, m: &Mat4) {
        for c in [m.x_axis, m.y_axis, m.z_axis, m.w_axis] {
            self.v3(c.truncate());
        }
    }
    fn mat3(&mut self, m: &Mat3) {
        for c in [m.x_axis, m.y_axis, m.z_axis] {
            self.v3(c);
        }
    }
    /// Pads the current record to `len` words from `start`.
    fn pad_to(&mut self, start: u32, len: u32) {
        debug_assert!(self.at() <= start + len);
        self.0.resize((start + len) as usize, 0);
    }
    fn bvh_nodes(&mut self, bvh: &Bvh) {
        for n in &bvh.nodes {
            self.v3(n.bounds.min);
            self.v3(n.bounds.max);
            self.u(n.first);
            self.u(n.count);
        }
    }
}

fn texref(scene: &Scene, r: Option<TextureRef>) -> (u32, u32) {
    match r {
        // `shade::tex` ignores a reference to a texture that is not there.
        Some(r) if r.texture < scene.textures.len() => (r.texture as u32, r.tex_coord),
        _ => (NONE, 0),
    }
}

/// Flattens the frame and uploads it.
fn upload(ctx: &Context, frame_number: i32) -> Result<FrameBuffers, JobError> {
    let (scene, frame) = (ctx.scene, ctx.frame);
    let mut w = Words::default();
    let mut params = vec![0u32; p::WORDS];
    params[p::WIDTH] = ctx.width;
    params[p::HEIGHT] = ctx.height;
    // The last path vertex's depth (`integrator::trace`'s `last`).
    params[p::MAX_BOUNCES] = ctx.settings.max_bounces + 1;
    params[p::MODEL] = match scene.shading {
        ShadingModel::Gltf => 0,
        ShadingModel::PrincipledV1 => 1,
    };
    params[p::INF] = f32::INFINITY.to_bits();
    let cam = &frame.camera;
    for (at, v) in [(p::CAM_O, cam.origin), (p::CAM_R, cam.right), (p::CAM_U, cam.up), (p::CAM_F, cam.forward)]
        .into_iter()
        .chain([(p::BACKGROUND, ctx.settings.background())])
    {
        params[at..at + 3].copy_from_slice(&[v.x.to_bits(), v.y.to_bits(), v.z.to_bits()]);
    }
    params[p::TAN_HALF_FOV] = cam.tan_half_fov.to_bits();
    params[p::ORTHO] = cam.ortho_half_height.to_bits();

    // BVH nodes: the instance BVH first (node 0), then each mesh BVH once.
    // Triangles and their ids: each mesh BVH's, once.
    params[p::NODES] = w.at();
    w.bvh_nodes(&frame.tlas);
    let mut blas_at: HashMap<*const Blas, (u32, u32)> = HashMap::new();
    let mut node_count = frame.tlas.nodes.len() as u32;
    let mut blas_list: Vec<(&Arc<Blas>, u32, u32)> = Vec::new();
    let mut tri_count = 0u32;
    for inst in &frame.instances {
        let key = Arc::as_ptr(&inst.blas);
        if let std::collections::hash_map::Entry::Vacant(e) = blas_at.entry(key) {
            e.insert((node_count, tri_count));
            blas_list.push((&inst.blas, node_count, tri_count));
            node_count += inst.blas.bvh.nodes.len() as u32;
            tri_count += inst.blas.tris.len() as u32;
        }
    }
    for (blas, _, _) in &blas_list {
        w.bvh_nodes(&blas.bvh);
    }
    params[p::TRIS] = w.at();
    for (blas, _, _) in &blas_list {
        for t in &blas.tris {
            for v in t {
                w.v3(*v);
            }
        }
    }
    params[p::TRI_IDS] = w.at();
    for (blas, _, _) in &blas_list {
        w.0.extend_from_slice(&blas.tri_ids);
    }
    params[p::TLAS_ORDER] = w.at();
    w.0.extend_from_slice(&frame.tlas.order);

    // Vertex data: each mesh's, and each deformed instance's.
    struct MeshAt {
        indices: u32,
        positions: u32,
        normals: u32,
        tangents: u32,
        uv0: u32,
        uv1: u32,
    }
    let mut mesh_at = Vec::with_capacity(scene.meshes.len());
    for m in &scene.meshes {
        let indices = w.at();
        w.0.extend_from_slice(&m.indices);
        let positions = w.at();
        m.positions.iter().for_each(|v| w.v3(*v));
        let normals = w.at();
        m.normals.iter().for_each(|v| w.v3(*v));
        let tangents = w.at();
        for t in &m.tangents {
            w.v3(t.truncate());
            w.f(t.w);
        }
        let uv0 = w.at();
        m.uv0.iter().for_each(|v| {
            w.f(v.x);
            w.f(v.y)
        });
        let uv1 = w.at();
        m.uv1.iter().for_each(|v| {
            w.f(v.x);
            w.f(v.y)
        });
        mesh_at.push(MeshAt { indices, positions, normals, tangents, uv0, uv1 });
    }
    let mut deformed_at = Vec::with_capacity(frame.instances.len());
    for inst in &frame.instances {
        deformed_at.push(inst.deformed.as_ref().map(|d| {
            let positions = w.at();
            d.positions.iter().for_each(|v| w.v3(*v));
            let normals = w.at();
            d.normals.iter().for_each(|v| w.v3(*v));
            (positions, normals, !d.normals.is_empty())
        }));
    }

    params[p::INSTANCES] = w.at();
    params[p::N_INSTANCES] = frame.instances.len() as u32;
    for (ii, inst) in frame.instances.iter().enumerate() {
        let start = w.at();
        w.affine(&inst.to_object); // 0..12
        w.affine(&inst.to_world); // 12..24
        w.mat3(&inst.normal_to_world); // 24..33
        let (nodes, tris) = blas_at[&Arc::as_ptr(&inst.blas)];
        w.u(inst.mesh as u32); // 33
        w.u(nodes); // 34
        w.u(tris); // 35
        w.u(inst.first_emitter.unwrap_or(NONE)); // 36
        let d = deformed_at[ii];
        let flags = u32::from(inst.mirrored)
            | u32::from(inst.identity) << 1
            | u32::from(d.is_some()) << 2
            | u32::from(d.is_some_and(|d| d.2)) << 3;
        w.u(flags); // 37
        let (dp, dn, _) = d.unwrap_or((0, 0, false));
        w.u(dp); // 38
        w.u(dn); // 39
        w.pad_to(start, rec::INSTANCE);
    }

    params[p::MESHES] = w.at();
    for (m, at) in scene.meshes.iter().zip(&mesh_at) {
        let start = w.at();
        for v in [
            at.indices,
            at.positions,
            at.normals,
            u32::from(!m.normals.is_empty()),
            at.tangents,
            u32::from(!m.tangents.is_empty()),
            at.uv0,
            u32::from(!m.uv0.is_empty()),
            at.uv1,
            u32::from(!m.uv1.is_empty()),
            m.material as u32,
        ] {
            w.u(v);
        }
        w.pad_to(start, rec::MESH);
    }

    params[p::MATERIALS] = w.at();
    for m in &scene.materials {
        let start = w.at();
        for c in m.base_color.to_array() {
            w.f(c); // 0..4
        }
        let (t, c) = texref(scene, m.base_color_tex);
        w.u(t); // 4
        w.u(c); // 5
        w.f(m.metallic); // 6
        w.f(m.roughness); // 7
        let (t, c) = texref(scene, m.metallic_roughness_tex);
        w.u(t); // 8
        w.u(c); // 9
        let (t, c) = texref(scene, m.normal_tex);
        w.u(t); // 10
        w.u(c); // 11
        w.f(m.normal_scale); // 12
        w.v3(m.emissive); // 13..16
        let (t, c) = texref(scene, m.emissive_tex);
        w.u(t); // 16
        w.u(c); // 17
        w.u(match m.alpha {
            AlphaMode::Opaque => 0,
            AlphaMode::Mask => 1,
            AlphaMode::Blend => 2,
        }); // 18
        w.f(m.alpha_cutoff); // 19
        w.u(u32::from(m.double_sided)); // 20
        let spec = crate::bsdf::Specular::of_material(m, scene.shading);
        w.v3(spec.f0); // 21..24
        w.f(spec.f90); // 24
        let (v1_f0, v1_ior) = spec.v1_fresnel();
        w.f(v1_f0); // 25
        w.f(v1_ior); // 26
                     // KHR_texture_transform of the base colour, metallic-roughness,
                     // normal and emissive references, in that order (the identity
                     // where there is none).
        for r in [m.base_color_tex, m.metallic_roughness_tex, m.normal_tex, m.emissive_tex] {
            let t = r.and_then(|r| r.transform).map_or([1.0, 0.0, 0.0, 0.0, 1.0, 0.0], |t| t.0);
            t.iter().for_each(|v| w.f(*v)); // 27.., 6 each
        }
        w.pad_to(start, rec::MATERIAL);
    }

    // Texels: each image once (textures share decoded images).
    let mut texels: Vec<u32> = Vec::new();
    let mut image_at: HashMap<*const Vec<[u8; 4]>, u32> = HashMap::new();
    params[p::TEXTURES] = w.at();
    for t in &scene.textures {
        let start = w.at();
        let at = *image_at.entry(Arc::as_ptr(&t.texels)).or_insert_with(|| {
            let at = texels.len() as u32;
            texels.extend(t.texels.iter().map(|px| u32::from_le_bytes(*px)));
            at
        });
        let wrap = |m: Wrap| match m {
            Wrap::Repeat => 0,
            Wrap::Clamp => 1,
            Wrap::Mirror => 2,
        };
        for v in [t.width, t.height, wrap(t.wrap_s), wrap(t.wrap_t), u32::from(t.linear), at] {
            w.u(v);
        }
        w.pad_to(start, rec::TEXTURE);
    }
    if texels.is_empty() {
        texels.push(0); // a binding needs a buffer of at least 4 bytes
    }

    params[p::EMITTERS] = w.at();
    params[p::N_EMITTERS] = frame.emitters.len() as u32;
    for e in &frame.emitters {
        w.u(e.instance);
        w.u(e.tri);
    }
    params[p::PMF] = w.at();
    frame.emitter_pmf.iter().for_each(|v| w.f(*v));
    params[p::CDF] = w.at();
    frame.emitter_cdf.iter().for_each(|v| w.f(*v));

    params[p::LIGHTS] = w.at();
    params[p::N_LIGHTS] = frame.lights.len() as u32;
    for l in &frame.lights {
        let start = w.at();
        let kind = match l.kind {
            LightKind::Point => 0,
            LightKind::Spot { .. } => 1,
            LightKind::Directional => 2,
        };
        let cone = l.cone.unwrap_or(SpotCone { cos_outer: 0.0, width: 1.0, cycles: false });
        w.u(kind); // 0
        w.v3(l.position); // 1..4
        w.v3(l.direction); // 4..7
        w.v3(l.power); // 7..10
                       // `integrator` uses the range only when positive.
        w.f(l.range.filter(|r| *r > 0.0).unwrap_or(0.0)); // 10
        w.f(cone.cos_outer); // 11
        w.f(cone.width); // 12
        w.u(u32::from(cone.cycles)); // 13
        w.pad_to(start, rec::LIGHT);
    }

    params[p::FILTER] = w.at();
    ctx.filter.table().iter().for_each(|v| w.f(*v));
    params[p::SRGB] = w.at();
    crate::srgb_lut().iter().for_each(|v| w.f(*v));

    let scene_bytes = words_to_bytes(&w.0);
    let texel_bytes = words_to_bytes(&texels);
    for (what, len) in [("scene data", scene_bytes.len()), ("textures", texel_bytes.len())] {
        if len as u64 > MAX_BINDING {
            return Err(JobError::Unsupported(format!(
                "GPU engine: the frame's {what} take {} MiB, over the GPU's {} MiB per buffer; render with \
                 \"engine\": \"cpu\"",
                len >> 20,
                MAX_BINDING >> 20
            )));
        }
    }
    let buffer = |what: &str, bytes: &[u8]| -> Result<Buffer, JobError> {
        let b = Buffer::new(bytes.len() as u64).map_err(|e| job_error(&format!("allocating the {what}"), e))?;
        b.write(0, bytes).map_err(|e| job_error(&format!("uploading the {what}"), e))?;
        Ok(b)
    };
    Ok(FrameBuffers {
        frame: frame_number,
        params_buf: buffer("parameters", &words_to_bytes(&params))?,
        params,
        scene: buffer("scene data", &scene_bytes)?,
        texels: buffer("textures", &texel_bytes)?,
    })
}
