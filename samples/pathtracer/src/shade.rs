//! From a hit to a shading point: interpolated attributes, textures,
//! normal mapping, and the material's parameters there.

use glam::Vec3;

use crate::frame::{Frame, Hit};
use crate::scene::Scene;
use crate::texturing::{bary, emission, tex, tri_indices};

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
        specular: crate::bsdf::Specular::of_material(material, scene.shading),
        emission,
        front,
        double_sided: material.double_sided,
    }
}
