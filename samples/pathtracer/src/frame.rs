//! The world at one instant: animated transforms applied, skinned and
//! morphed meshes deformed, the instance-level BVH built, lights placed.
//! Made by `prepare-frame`; read-only while tiles render.

use std::sync::Arc;

use glam::{Mat3, Mat4, Vec3};

use crate::bvh::{self, Aabb, Bvh, Ray};
use crate::camera::Camera;
use crate::scene::{anim, AlphaMode, LightKind, Scene, SpotCone};

/// Triangles of one mesh with their BVH, in object space (or world space
/// for deformed meshes), stored in leaf order for cache-friendly tests.
#[derive(Debug)]
pub struct Blas {
    pub bvh: Bvh,
    pub tris: Vec<[Vec3; 3]>,
    /// Original triangle index of each entry of `tris`.
    pub tri_ids: Vec<u32>,
}

impl Blas {
    pub fn build(positions: &[Vec3], indices: &[u32]) -> Blas {
        let tri = |t: usize| {
            let i = &indices[3 * t..3 * t + 3];
            [positions[i[0] as usize], positions[i[1] as usize], positions[i[2] as usize]]
        };
        let n = indices.len() / 3;
        let boxes: Vec<Aabb> = (0..n)
            .map(|t| {
                let mut b = Aabb::EMPTY;
                for p in tri(t) {
                    b.grow(p);
                }
                b
            })
            .collect();
        let bvh = Bvh::build(&boxes);
        let tris = bvh.order.iter().map(|&t| tri(t as usize)).collect();
        let tri_ids = bvh.order.clone();
        Blas { bvh, tris, tri_ids }
    }
}

/// Vertex data of a mesh deformed for this frame, in world space.
#[derive(Debug)]
pub struct Deformed {
    pub positions: Vec<Vec3>,
    pub normals: Vec<Vec3>,
}

#[derive(Debug)]
pub struct Instance {
    /// The glTF node this instance of a mesh belongs to.
    pub node: usize,
    /// Index into `Scene::meshes`.
    pub mesh: usize,
    pub blas: Arc<Blas>,
    pub to_world: Mat4,
    pub to_object: Mat4,
    pub normal_to_world: Mat3,
    pub deformed: Option<Deformed>,
    /// Index of this instance's first triangle in `Frame::emitters`.
    pub first_emitter: Option<u32>,
    /// The transform flips handedness, so winding (and front faces) flip.
    pub mirrored: bool,
    /// The transform is the identity: rays need no transforming.
    pub identity: bool,
}

/// A light with no area, in world space.
#[derive(Clone, Debug)]
pub struct PunctualLight {
    pub kind: LightKind,
    pub position: Vec3,
    /// Direction the light points (spot, directional): its node's −Z.
    pub direction: Vec3,
    pub power: Vec3,
    pub range: Option<f32>,
    /// A spot light's cone in the scene's shading model.
    pub cone: Option<SpotCone>,
}

/// An emissive triangle, for next-event estimation.
#[derive(Clone, Copy, Debug)]
pub struct Emitter {
    pub instance: u32,
    pub tri: u32,
}

pub struct Frame {
    pub time: f32,
    pub instances: Vec<Instance>,
    pub tlas: Bvh,
    pub camera: Camera,
    pub lights: Vec<PunctualLight>,
    pub emitters: Vec<Emitter>,
    /// Selection probability of each emitter (∝ emitted power), and its CDF.
    pub emitter_pmf: Vec<f32>,
    pub emitter_cdf: Vec<f32>,
}

/// Which camera to look through.
#[derive(Clone, Debug, Default)]
pub enum CameraChoice {
    /// The first camera in the scene's node order, else a default framing.
    #[default]
    Active,
    Named(String),
}

impl Frame {
    /// Builds the world at time `t`. `static_blas` holds the BVH of every
    /// mesh in its rest pose, built once at load.
    pub fn build(scene: &Scene, static_blas: &[Arc<Blas>], t: f32, camera: &CameraChoice) -> Result<Frame, String> {
        let (pose, weights) = anim::pose_at(scene, t);
        let world = world_matrices(scene, &pose);

        let mut instances = Vec::new();
        // Light nodes met on the way: only lights in the rendered scene shine.
        let mut light_nodes = Vec::new();
        let mut stack: Vec<usize> = scene.roots.iter().rev().copied().collect();
        while let Some(n) = stack.pop() {
            let node = &scene.nodes[n];
            stack.extend(node.children.iter().rev().copied());
            if node.light.is_some() {
                light_nodes.push(n);
            }
            let Some(group) = node.mesh else { continue };
            for &m in &scene.groups[group].primitives {
                let mesh = &scene.meshes[m];
                if mesh.indices.is_empty() {
                    continue;
                }
                let skin = node.skin.filter(|_| !mesh.joints.is_empty()).map(|s| &scene.skins[s]);
                if mesh.is_deformable() && (skin.is_some() || weights[n].iter().any(|w| *w != 0.0)) {
                    let d = deform(scene, m, &world, world[n], skin, &weights[n]);
                    let blas = Arc::new(Blas::build(&d.positions, &mesh.indices));
                    instances.push(Instance::new(n, m, blas, Mat4::IDENTITY, Some(d)));
                } else {
                    instances.push(Instance::new(n, m, static_blas[m].clone(), world[n], None));
                }
            }
        }

        let boxes: Vec<Aabb> = instances.iter().map(|i| i.blas.bvh.bounds().transformed(&i.to_world)).collect();
        let tlas = Bvh::build(&boxes);
        let scene_bounds = boxes.iter().fold(Aabb::EMPTY, |a, b| a.union(b));

        let camera = match camera {
            CameraChoice::Named(name) => {
                let (node, _) = scene.camera_nodes().into_iter().find(|(_, n)| n == name).ok_or_else(|| {
                    let names: Vec<String> = scene.camera_nodes().into_iter().map(|(_, n)| n).collect();
                    format!(
                        "no camera named {name:?} (the scene has: {})",
                        if names.is_empty() { "none".into() } else { names.join(", ") }
                    )
                })?;
                let def = &scene.cameras[scene.nodes[node].camera.expect("camera node")];
                Camera::from_matrix(&world[node], def)
            }
            CameraChoice::Active => match scene.camera_nodes().first() {
                Some(&(node, _)) => {
                    let def = &scene.cameras[scene.nodes[node].camera.expect("camera node")];
                    Camera::from_matrix(&world[node], def)
                }
                None => default_camera(&scene_bounds),
            },
        };

        // In node order, so light contributions are summed in a fixed order.
        light_nodes.sort_unstable();
        let mut lights = Vec::new();
        for n in light_nodes {
            let Some(def) = scene.nodes[n].light.and_then(|l| scene.lights.get(l)) else { continue };
            lights.push(PunctualLight {
                kind: def.kind,
                position: world[n].transform_point3(Vec3::ZERO),
                direction: world[n].transform_vector3(-Vec3::Z).normalize_or(-Vec3::Z),
                power: def.power,
                range: def.range,
                cone: match def.kind {
                    LightKind::Spot { cos_inner, cos_outer } => {
                        Some(SpotCone::new(cos_inner, cos_outer, scene.shading))
                    }
                    _ => None,
                },
            });
        }

        let mut frame = Frame {
            time: t,
            instances,
            tlas,
            camera,
            lights,
            emitters: vec![],
            emitter_pmf: vec![],
            emitter_cdf: vec![],
        };
        frame.collect_emitters(scene);
        Ok(frame)
    }

    /// Emitters are chosen in proportion to their power (area × emitted
    /// luminance); an emissive texture's share is estimated from a few
    /// points of each triangle, with a floor so no part of an emitter the
    /// estimate misses is left to BSDF sampling alone. Any choice
    /// probabilities give the same expectation (NEE and MIS use the same
    /// pmf): these only decide where the samples go.
    fn collect_emitters(&mut self, scene: &Scene) {
        let mut power = Vec::new();
        for (ii, inst) in self.instances.iter_mut().enumerate() {
            let mesh = &scene.meshes[inst.mesh];
            let material = &scene.materials[mesh.material];
            if !material.is_emissive() {
                continue;
            }
            inst.first_emitter = Some(self.emitters.len() as u32);
            let lum = luminance(material.emissive);
            for t in 0..mesh.triangle_count() as u32 {
                let [a, b, c] = world_triangle(scene, inst, t);
                let area = 0.5 * (b - a).cross(c - a).length();
                self.emitters.push(Emitter { instance: ii as u32, tri: t });
                let radiance = match material.emissive_tex {
                    Some(_) => textured_emission(scene, mesh, material, t).max(0.01 * lum),
                    None => lum,
                };
                power.push(radiance * area);
            }
        }
        let total: f64 = power.iter().map(|p| f64::from(*p)).sum();
        if total <= 0.0 {
            self.emitters.clear();
            for inst in &mut self.instances {
                inst.first_emitter = None;
            }
            return;
        }
        let mut acc = 0.0f64;
        self.emitter_cdf.push(0.0);
        for p in &power {
            self.emitter_pmf.push((f64::from(*p) / total) as f32);
            acc += f64::from(*p) / total;
            self.emitter_cdf.push(acc as f32);
        }
    }

    /// Index of the emitter chosen by `u` in [0, 1).
    pub fn pick_emitter(&self, u: f32) -> Option<usize> {
        if self.emitters.is_empty() {
            return None;
        }
        let i = self.emitter_cdf.partition_point(|&c| c <= u).saturating_sub(1);
        // Skip zero-probability entries the search may land on.
        let mut i = i.min(self.emitters.len() - 1);
        while self.emitter_pmf[i] == 0.0 && i + 1 < self.emitters.len() {
            i += 1;
        }
        (self.emitter_pmf[i] > 0.0).then_some(i)
    }

    /// The nearest hit along `ray` before `t_max`: (t, instance, triangle, u, v).
    pub fn intersect(&self, scene: &Scene, ray: &Ray, t_max: f32) -> Option<Hit> {
        let mut best: Option<Hit> = None;
        bvh::traverse(&self.tlas, ray, t_max, |first, count, mut t_max| {
            for k in first..first + count {
                let ii = self.tlas.order[k as usize] as usize;
                if let Some(h) = self.intersect_instance(scene, ii, ray, t_max, false) {
                    t_max = h.t;
                    best = Some(h);
                }
            }
            t_max
        });
        best
    }

    /// Whether anything blocks `ray` before `t_max`.
    pub fn occluded(&self, scene: &Scene, ray: &Ray, t_max: f32) -> bool {
        let mut hit = false;
        bvh::traverse(&self.tlas, ray, t_max, |first, count, t_max| {
            for k in first..first + count {
                let ii = self.tlas.order[k as usize] as usize;
                if self.intersect_instance(scene, ii, ray, t_max, true).is_some() {
                    hit = true;
                    return -1.0;
                }
            }
            t_max
        });
        hit
    }

    fn intersect_instance(&self, scene: &Scene, ii: usize, ray: &Ray, t_max: f32, any: bool) -> Option<Hit> {
        let inst = &self.instances[ii];
        // Transform the ray, not the triangles; the direction is left
        // unnormalised so `t` stays a world-space distance.
        let local = if inst.identity {
            *ray
        } else {
            Ray::new(inst.to_object.transform_point3(ray.origin), inst.to_object.transform_vector3(ray.dir))
        };
        let mesh = &scene.meshes[inst.mesh];
        let material = &scene.materials[mesh.material];
        let mut best: Option<Hit> = None;
        bvh::traverse(&inst.blas.bvh, &local, t_max, |first, count, mut t_max| {
            for k in first as usize..(first + count) as usize {
                let Some((t, u, v, back)) = bvh::hit_triangle(&local, &inst.blas.tris[k], t_max) else { continue };
                let tri = inst.blas.tri_ids[k];
                if back != inst.mirrored && !material.double_sided {
                    continue;
                }
                if material.alpha == AlphaMode::Mask
                    && crate::texturing::alpha(scene, mesh, material, tri, u, v) < material.alpha_cutoff
                {
                    continue;
                }
                t_max = t;
                best = Some(Hit { t, instance: ii as u32, tri, u, v });
                if any {
                    return -1.0;
                }
            }
            t_max
        });
        best
    }
}

/// A ray–triangle hit.
#[derive(Clone, Copy, Debug)]
pub struct Hit {
    pub t: f32,
    pub instance: u32,
    pub tri: u32,
    /// Barycentrics of vertices 1 and 2.
    pub u: f32,
    pub v: f32,
}

impl Instance {
    /// World-space bounds of the instance this frame.
    pub fn world_bounds(&self) -> Aabb {
        self.blas.bvh.bounds().transformed(&self.to_world)
    }

    fn new(node: usize, mesh: usize, blas: Arc<Blas>, to_world: Mat4, deformed: Option<Deformed>) -> Instance {
        let to_object = to_world.inverse();
        let normal_to_world = Mat3::from_mat4(to_object).transpose();
        let mirrored = to_world.determinant() < 0.0;
        let identity = to_world == Mat4::IDENTITY;
        Instance {
            node,
            mesh,
            blas,
            to_world,
            to_object,
            normal_to_world,
            deformed,
            first_emitter: None,
            mirrored,
            identity,
        }
    }
}

/// World-space vertices of triangle `t` of an instance.
pub fn world_triangle(scene: &Scene, inst: &Instance, t: u32) -> [Vec3; 3] {
    let mesh = &scene.meshes[inst.mesh];
    let i = &mesh.indices[3 * t as usize..3 * t as usize + 3];
    match &inst.deformed {
        Some(d) => [d.positions[i[0] as usize], d.positions[i[1] as usize], d.positions[i[2] as usize]],
        None => [0, 1, 2].map(|k| inst.to_world.transform_point3(mesh.positions[i[k] as usize])),
    }
}

pub fn luminance(c: Vec3) -> f32 {
    0.2126 * c.x + 0.7152 * c.y + 0.0722 * c.z
}

fn world_matrices(scene: &Scene, pose: &[crate::scene::Trs]) -> Vec<Mat4> {
    let mut world = vec![Mat4::IDENTITY; scene.nodes.len()];
    // Also place nodes outside the scene's roots (skin joints may be).
    let mut has_parent = vec![false; scene.nodes.len()];
    for n in &scene.nodes {
        for &c in &n.children {
            has_parent[c] = true;
        }
    }
    let mut stack: Vec<(usize, Mat4)> =
        (0..scene.nodes.len()).filter(|&n| !has_parent[n]).rev().map(|n| (n, Mat4::IDENTITY)).collect();
    while let Some((n, parent)) = stack.pop() {
        world[n] = parent * pose[n].matrix();
        for &c in scene.nodes[n].children.iter().rev() {
            stack.push((c, world[n]));
        }
    }
    world
}

/// Applies morph weights, then skinning (or the node transform), giving
/// world-space vertices.
fn deform(
    scene: &Scene,
    m: usize,
    world: &[Mat4],
    node_world: Mat4,
    skin: Option<&crate::scene::Skin>,
    weights: &[f32],
) -> Deformed {
    let mesh = &scene.meshes[m];
    let mut positions = mesh.positions.clone();
    let mut normals = if mesh.normals.is_empty() { vec![Vec3::ZERO; positions.len()] } else { mesh.normals.clone() };
    for (target, &w) in mesh.targets.iter().zip(weights) {
        if w == 0.0 {
            continue;
        }
        for (p, d) in positions.iter_mut().zip(&target.positions) {
            *p += *d * w;
        }
        for (n, d) in normals.iter_mut().zip(&target.normals) {
            *n += *d * w;
        }
    }
    match skin {
        Some(skin) => {
            let joint_mats: Vec<Mat4> =
                skin.joints.iter().zip(&skin.inverse_bind).map(|(&j, ibm)| world[j] * *ibm).collect();
            for (v, (p, n)) in positions.iter_mut().zip(normals.iter_mut()).enumerate() {
                let (js, ws) = (mesh.joints[v], mesh.weights[v]);
                let mut m = Mat4::ZERO;
                for k in 0..4 {
                    if ws[k] != 0.0 {
                        m += joint_mats[usize::from(js[k]).min(joint_mats.len() - 1)] * ws[k];
                    }
                }
                *p = m.transform_point3(*p);
                *n = Mat3::from_mat4(m).inverse().transpose().mul_vec3(*n).normalize_or_zero();
            }
        }
        None => {
            let nm = Mat3::from_mat4(node_world.inverse()).transpose();
            for (p, n) in positions.iter_mut().zip(normals.iter_mut()) {
                *p = node_world.transform_point3(*p);
                *n = (nm * *n).normalize_or_zero();
            }
        }
    }
    if mesh.normals.is_empty() {
        normals.clear();
    }
    Deformed { positions, normals }
}

/// A framing of the whole scene for files without a camera: from the front
/// (+Z), slightly above, with Blender's default 50 mm lens.
fn default_camera(bounds: &Aabb) -> Camera {
    let yfov = 0.6911; // 50 mm on a 36 mm sensor, vertical for 16:9
    if bounds.is_empty() {
        return Camera::look_at(Vec3::new(0.0, 0.0, 5.0), Vec3::ZERO, yfov);
    }
    let centre = (bounds.min + bounds.max) * 0.5;
    let radius = ((bounds.max - bounds.min).length() * 0.5).max(1e-3);
    let distance = radius / (yfov * 0.5).sin() * 1.1;
    let dir = Vec3::new(0.0, 0.35, 1.0).normalize();
    Camera::look_at(centre + dir * distance, centre, yfov)
}

/// The mean emitted luminance of a textured emitter's triangle, from
/// seven points spread over it (centroid, three inner points, three edge
/// midpoints).
fn textured_emission(scene: &Scene, mesh: &crate::scene::Mesh, material: &crate::scene::Material, tri: u32) -> f32 {
    const POINTS: [(f32, f32); 7] = [
        (1.0 / 3.0, 1.0 / 3.0),
        (2.0 / 3.0, 1.0 / 6.0),
        (1.0 / 6.0, 2.0 / 3.0),
        (1.0 / 6.0, 1.0 / 6.0),
        (0.5, 0.0),
        (0.0, 0.5),
        (0.5, 0.5),
    ];
    let sum: f32 =
        POINTS.iter().map(|&(u, v)| luminance(crate::texturing::emission(scene, mesh, material, tri, u, v))).sum();
    sum / POINTS.len() as f32
}
