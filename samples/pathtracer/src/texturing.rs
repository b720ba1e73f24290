//! What a triangle's material gives at a point (u, v) of it: vertex
//! attributes interpolated, textures sampled, and from them the alpha that
//! traversal tests and the emission that light sampling weighs. Shared by
//! the frame's setup (`frame`) and shading (`shade`).

use glam::{Vec2, Vec3, Vec4};

use crate::scene::{Material, Mesh, Scene, ShadingModel, TextureRef};

pub(crate) fn bary<T>(a: T, b: T, c: T, u: f32, v: f32) -> T
where
    T: std::ops::Mul<f32, Output = T> + std::ops::Add<Output = T>,
{
    a * (1.0 - u - v) + b * u + c * v
}

pub(crate) fn uv(mesh: &Mesh, set: u32, i: [usize; 3], u: f32, v: f32) -> Vec2 {
    let uvs = if set == 1 { &mesh.uv1 } else { &mesh.uv0 };
    if uvs.is_empty() {
        return Vec2::ZERO;
    }
    bary(uvs[i[0]], uvs[i[1]], uvs[i[2]], u, v)
}

pub(crate) fn tex(
    scene: &Scene,
    r: Option<TextureRef>,
    mesh: &Mesh,
    i: [usize; 3],
    u: f32,
    v: f32,
    srgb: bool,
) -> Option<Vec4> {
    let r = r?;
    let t = scene.textures.get(r.texture)?;
    let cycles = scene.shading == ShadingModel::PrincipledV1;
    Some(t.sample(r.map(uv(mesh, r.tex_coord, i, u, v)), srgb, cycles, crate::srgb_lut()))
}

pub(crate) fn tri_indices(mesh: &Mesh, tri: u32) -> [usize; 3] {
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
