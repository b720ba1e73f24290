//! Tangents for normal maps when the file has none.
//!
//! Blender's glTF exporter writes no `TANGENT` attribute unless asked, yet
//! its normal maps are baked in MikkTSpace, which glTF also names as the
//! tangent space to assume (spec 3.7.2.1). Without tangents a normal map
//! would be ignored and its surface shaded flat, so they are generated here
//! with the reference algorithm (the `mikktspace` crate), as Blender and
//! Cycles do.

use glam::{Vec2, Vec4};

use super::Mesh;

struct Geometry<'a> {
    mesh: &'a Mesh,
    uv: &'a [Vec2],
    tangents: Vec<Vec4>,
}

impl Geometry<'_> {
    fn index(&self, face: usize, vert: usize) -> usize {
        self.mesh.indices[face * 3 + vert] as usize
    }
}

impl mikktspace::Geometry for Geometry<'_> {
    fn num_faces(&self) -> usize {
        self.mesh.indices.len() / 3
    }

    fn num_vertices_of_face(&self, _face: usize) -> usize {
        3
    }

    fn position(&self, face: usize, vert: usize) -> [f32; 3] {
        self.mesh.positions[self.index(face, vert)].to_array()
    }

    fn normal(&self, face: usize, vert: usize) -> [f32; 3] {
        self.mesh.normals[self.index(face, vert)].to_array()
    }

    fn tex_coord(&self, face: usize, vert: usize) -> [f32; 2] {
        // glTF's v runs down the image, while normal maps' +Y (green) points
        // up it: MikkTSpace on (u, 1 − v), the UVs Blender baked and
        // computed its tangents in, gives a bitangent towards +Y and the
        // very tangents Blender's exporter writes when asked to.
        let uv = self.uv[self.index(face, vert)];
        [uv.x, 1.0 - uv.y]
    }

    fn set_tangent_encoded(&mut self, tangent: [f32; 4], face: usize, vert: usize) {
        // Indexed meshes share a vertex between faces; MikkTSpace gives
        // corners that share position, normal and UV the same tangent, so
        // keeping one per vertex loses only splits at UV seams.
        let i = self.index(face, vert);
        self.tangents[i] = Vec4::from_array(tangent);
    }
}

/// Generates per-vertex tangents (glTF layout: xyz, w handedness) from the
/// normals and UV set `set`; `None` when the mesh lacks either, or the
/// algorithm fails on degenerate input.
pub fn generate(mesh: &Mesh, set: u32) -> Option<Vec<Vec4>> {
    let uv = if set == 1 { &mesh.uv1 } else { &mesh.uv0 };
    let n = mesh.positions.len();
    if mesh.normals.len() != n || uv.len() != n || mesh.indices.is_empty() {
        return None;
    }
    let mut g = Geometry { mesh, uv, tangents: vec![Vec4::new(1.0, 0.0, 0.0, 1.0); n] };
    if !mikktspace::generate_tangents(&mut g) {
        return None;
    }
    // A vertex no face used keeps the placeholder; a NaN from degenerate
    // UVs becomes the placeholder too, so shading never reads a NaN.
    for t in &mut g.tangents {
        if !t.is_finite() || t.truncate().length_squared() == 0.0 {
            *t = Vec4::new(1.0, 0.0, 0.0, 1.0);
        }
    }
    Some(g.tangents)
}

#[cfg(test)]
mod tests {
    use glam::Vec3;

    use super::*;

    /// A unit quad in the XY plane facing +Z, with glTF UVs: u along +X,
    /// v down the image, so along −Y.
    fn quad() -> Mesh {
        Mesh {
            positions: vec![
                Vec3::new(0.0, 0.0, 0.0),
                Vec3::new(1.0, 0.0, 0.0),
                Vec3::new(1.0, 1.0, 0.0),
                Vec3::new(0.0, 1.0, 0.0),
            ],
            normals: vec![Vec3::Z; 4],
            uv0: vec![Vec2::new(0.0, 1.0), Vec2::new(1.0, 1.0), Vec2::new(1.0, 0.0), Vec2::new(0.0, 0.0)],
            indices: vec![0, 1, 2, 0, 2, 3],
            ..Mesh::default()
        }
    }

    #[test]
    fn tangents_follow_u_and_bitangents_point_up_the_image() {
        let t = generate(&quad(), 0).expect("tangents");
        for t in t {
            assert!((t.truncate() - Vec3::X).length() < 1e-5, "{t}");
            // glTF: bitangent = cross(normal, tangent)·w, here +Y: the
            // direction of decreasing v, where a normal map's green points.
            let bitangent = Vec3::Z.cross(t.truncate()) * t.w;
            assert!((bitangent - Vec3::Y).length() < 1e-5, "{bitangent}");
        }
    }

    #[test]
    fn no_tangents_without_normals_or_uvs() {
        let mut m = quad();
        m.uv0.clear();
        assert!(generate(&m, 0).is_none());
        assert!(generate(&quad(), 1).is_none());
        let mut m = quad();
        m.normals.clear();
        assert!(generate(&m, 0).is_none());
    }
}
