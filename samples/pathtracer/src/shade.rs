//! From a hit to a shading point: interpolated attributes, textures,
//! normal mapping, and the material's parameters there.

use glam::{Vec2, Vec3, Vec4};

use crate::frame::{Frame, Hit};
use crate::scene::{Material, Mesh, Scene, ShadingModel, TextureRef};

/// Everything the integrator needs at a surface point.
#[derive(Clone, Copy, Debug)]
pub struct SurfacePoint {
    pub position: Vec3,
    /// Geometric normal, facing the incoming ray.
    pub ng: Vec3,
    /// Shading normal (interpolated, normal-mapped), same side as `ng`.
    pub n: Vec3,
    pub base_color: Vec3,
    pub metallic: f32,
    pub roughness: f32,
    /// The dielectric reflectance (IOR, `KHR_materials_specular`).
    pub specular: crate::bsdf::Specular,
    /// Emitted radiance (towards the viewer) at this point.
    pub emission: Vec3,
    /// Whether the ray hit the side the triangle's winding calls front.
    pub front: bool,
    pub double_sided: bool,
}

fn bary<T>(a: T, b: T, c: T, u: f32, v: f32) -> T
where
    T: std::ops::Mul<f32, Output = T> + std::ops::Add<Output = T>,
{
    a * (1.0 - u - v) + b * u + c * v
}

fn uv(mesh: &Mesh, set: u32, i: [usize; 3], u: f32, v: f32) -> Vec2 {
    let uvs = if set == 1 { &mesh.uv1 } else { &mesh.uv0 };
    if uvs.is_empty() {
        return Vec2::ZERO;
    }
    bary(uvs[i[0]], uvs[i[1]], uvs[i[2]], u, v)
}

fn tex(scene: &Scene, r: Option<TextureRef>, mesh: &Mesh, i: [usize; 3], u: f32, v: f32, srgb: bool) -> Option<Vec4> {
    let r = r?;
    let t = scene.textures.get(r.texture)?;
    let cycles = scene.shading == ShadingModel::PrincipledV1;
    Some(t.sample(r.map(uv(mesh, r.tex_coord, i, u, v)), srgb, cycles, crate::srgb_lut()))
}

fn tri_indices(mesh: &Mesh, tri: u32) -> [usize; 3] {
    let k = 3 * tri as usize;
    [mesh.indices[k] as usize, mesh.indices[k + 1] as usize, mesh.indices[k + 2] as usize]
}

/// Base-colour alpha at a point (for alpha masks, during traversal).
pub fn alpha(scene: &Scene, mesh: &Mesh, material: &Material, tri: u32, u: f32, v: f32) -> f32 {
    let i = tri_indices(mesh, tri);
    let a = material.base_color.w;
    match tex(scene, material.base_color_tex, mesh, i, u, v, true) {
        Some(t) => a * t.w,
        None => a,
    }
}

/// Emitted radiance of a material at a point of a triangle.
pub fn emission(scene: &Scene, mesh: &Mesh, material: &Material, tri: u32, u: f32, v: f32) -> Vec3 {
    if !material.is_emissive() {
        return Vec3::ZERO;
    }
    let i = tri_indices(mesh, tri);
    match tex(scene, material.emissive_tex, mesh, i, u, v, true) {
        Some(t) => material.emissive * t.truncate(),
        None => material.emissive,
    }
}

/// Builds the shading point of `hit` seen along `dir`.
pub fn surface(scene: &Scene, frame: &Frame, hit: &Hit, origin: Vec3, dir: Vec3) -> SurfacePoint {
    let inst = &frame.instances[hit.instance as usize];
    let mesh = &scene.meshes[inst.mesh];
    let material = &scene.materials[mesh.material];
    let i = tri_indices(mesh, hit.tri);
    let (u, v) = (hit.u, hit.v);
    let [p0, p1, p2] = crate::frame::world_triangle(scene, inst, hit.tri);

    let mut ng = (p1 - p0).cross(p2 - p0).normalize_or(Vec3::Y);
    let front = ng.dot(dir) < 0.0;
    let mut n = match (&inst.deformed, mesh.normals.is_empty()) {
        (_, true) => ng,
        (Some(d), false) if !d.normals.is_empty() => bary(d.normals[i[0]], d.normals[i[1]], d.normals[i[2]], u, v),
        _ => inst.normal_to_world * bary(mesh.normals[i[0]], mesh.normals[i[1]], mesh.normals[i[2]], u, v),
    }
    .normalize_or(ng);

    // Normal map (tangent space, glTF: +Y up in the texture).
    if let Some(t) = tex(scene, material.normal_tex, mesh, i, u, v, false) {
        if !mesh.tangents.is_empty() {
            let tw = bary(mesh.tangents[i[0]], mesh.tangents[i[1]], mesh.tangents[i[2]], u, v);
            let tangent = match &inst.deformed {
                Some(_) => tw.truncate(),
                None => inst.to_world.transform_vector3(tw.truncate()),
            };
            let tangent = (tangent - n * n.dot(tangent)).normalize_or_zero();
            if tangent != Vec3::ZERO {
                let bitangent = n.cross(tangent) * if tw.w < 0.0 { -1.0 } else { 1.0 };
                let m = (t.truncate() * 2.0 - Vec3::ONE) * Vec3::new(material.normal_scale, material.normal_scale, 1.0);
                n = (tangent * m.x + bitangent * m.y + n * m.z).normalize_or(n);
            }
        }
    }

    // Face the incoming ray with both normals, keeping them on one side.
    if ng.dot(dir) > 0.0 {
        ng = -ng;
    }
    if n.dot(ng) < 0.0 {
        n = -n;
    }

    let mut base = material.base_color;
    if let Some(t) = tex(scene, material.base_color_tex, mesh, i, u, v, true) {
        base *= t;
    }
    let (mut metallic, mut roughness) = (material.metallic, material.roughness);
    if let Some(t) = tex(scene, material.metallic_roughness_tex, mesh, i, u, v, false) {
        roughness *= t.y;
        metallic *= t.z;
    }
    let emission =
        if front || material.double_sided { emission(scene, mesh, material, hit.tri, u, v) } else { Vec3::ZERO };
    SurfacePoint {
        position: origin + dir * hit.t,
        ng,
        n,
        base_color: base.truncate().clamp(Vec3::ZERO, Vec3::ONE),
        metallic: metallic.clamp(0.0, 1.0),
        roughness: roughness.clamp(0.0, 1.0),
        specular: material.dielectric_specular(scene.shading),
        emission,
        front,
        double_sided: material.double_sided,
    }
}
