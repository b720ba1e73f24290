//! The render-ready scene: what the glTF file said, decoded once per
//! instance in `load-scene`, with no per-frame state.
//!
//! Parsing (`gltf_load`) is apart from animation (`anim`) and from the
//! per-frame world (`crate::frame`), as in pbrt's parser → scene split.

pub mod anim;
pub mod gltf_load;
pub mod tangents;
pub mod texture;

use glam::{Mat4, Quat, Vec2, Vec3, Vec4};

pub use texture::{Texture, TextureRef, UvTransform, Wrap};

/// One glTF primitive: triangles with one material.
#[derive(Debug, Default)]
pub struct Mesh {
    pub positions: Vec<Vec3>,
    pub normals: Vec<Vec3>,
    /// xyz tangent, w handedness (glTF `TANGENT`); empty when absent.
    pub tangents: Vec<Vec4>,
    pub uv0: Vec<Vec2>,
    pub uv1: Vec<Vec2>,
    /// Triangle vertex indices, 3 per triangle.
    pub indices: Vec<u32>,
    pub material: usize,
    /// Skinning: 4 joint indices and weights per vertex (empty if unskinned).
    pub joints: Vec<[u16; 4]>,
    pub weights: Vec<[f32; 4]>,
    /// Morph targets: position and normal deltas per vertex.
    pub targets: Vec<MorphTarget>,
}

#[derive(Debug, Default)]
pub struct MorphTarget {
    pub positions: Vec<Vec3>,
    pub normals: Vec<Vec3>,
}

impl Mesh {
    pub fn triangle_count(&self) -> usize {
        self.indices.len() / 3
    }

    pub fn is_deformable(&self) -> bool {
        !self.joints.is_empty() || !self.targets.is_empty()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlphaMode {
    Opaque,
    /// Discard where base-colour alpha < `Material::alpha_cutoff`.
    Mask,
    /// Rendered as opaque: a path tracer has no draw order to blend in.
    Blend,
}

/// A glTF metallic-roughness material.
#[derive(Clone, Debug)]
pub struct Material {
    pub base_color: Vec4,
    pub base_color_tex: Option<TextureRef>,
    pub metallic: f32,
    pub roughness: f32,
    /// glTF: G = roughness, B = metallic.
    pub metallic_roughness_tex: Option<TextureRef>,
    pub normal_tex: Option<TextureRef>,
    pub normal_scale: f32,
    /// Linear emitted radiance factor: `emissiveFactor × emissive_strength`.
    pub emissive: Vec3,
    pub emissive_tex: Option<TextureRef>,
    pub alpha: AlphaMode,
    pub alpha_cutoff: f32,
    pub double_sided: bool,
    /// `KHR_materials_ior` (default 1.5).
    pub ior: f32,
    /// `KHR_materials_specular`'s factors, if the material has the
    /// extension (Blender 3's exporter writes it for a `Specular` other
    /// than 0.5 or a `Specular Tint`).
    pub specular: Option<SpecularExt>,
}

/// `KHR_materials_specular`: the strength (also F90) and colour of a
/// dielectric's reflection.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SpecularExt {
    pub factor: f32,
    pub color: Vec3,
}

impl SpecularExt {
    /// Within what glTF allows: the factor in [0, 1]; the colour is not
    /// bounded (F0 is clamped to 1 after the IOR scales it).
    pub fn clamped(self) -> SpecularExt {
        SpecularExt { factor: self.factor.clamp(0.0, 1.0), color: self.color }
    }
}

impl Default for Material {
    /// The material glTF prescribes for primitives without one: white,
    /// metallic 1, roughness 1.
    fn default() -> Self {
        Material {
            base_color: Vec4::ONE,
            base_color_tex: None,
            metallic: 1.0,
            roughness: 1.0,
            metallic_roughness_tex: None,
            normal_tex: None,
            normal_scale: 1.0,
            emissive: Vec3::ZERO,
            emissive_tex: None,
            alpha: AlphaMode::Opaque,
            alpha_cutoff: 0.5,
            double_sided: false,
            ior: 1.5,
            specular: None,
        }
    }
}

impl Material {
    pub fn is_emissive(&self) -> bool {
        self.emissive.max_element() > 0.0
    }
}

/// Local transform of a node, as translation-rotation-scale.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Trs {
    pub translation: Vec3,
    pub rotation: Quat,
    pub scale: Vec3,
}

impl Trs {
    pub fn matrix(&self) -> Mat4 {
        Mat4::from_scale_rotation_translation(self.scale, self.rotation, self.translation)
    }
}

#[derive(Clone, Debug)]
pub struct Node {
    pub name: String,
    pub rest: Trs,
    pub children: Vec<usize>,
    /// Indices into `Scene::meshes` (the glTF mesh's primitives).
    pub mesh: Option<usize>,
    pub camera: Option<usize>,
    pub light: Option<usize>,
    pub skin: Option<usize>,
    /// Default morph weights (node's, else the mesh's).
    pub weights: Vec<f32>,
}

/// A glTF mesh: its primitives, as indices into `Scene::meshes`.
#[derive(Clone, Debug, Default)]
pub struct MeshGroup {
    pub primitives: Vec<usize>,
    pub weights: Vec<f32>,
}

#[derive(Clone, Debug)]
pub struct Skin {
    pub joints: Vec<usize>,
    pub inverse_bind: Vec<Mat4>,
}

#[derive(Clone, Debug)]
pub struct CameraDef {
    pub name: String,
    /// Vertical field of view (perspective cameras).
    pub yfov: f32,
    pub aspect: Option<f32>,
    /// Half the view's height in scene units (glTF `ymag`), for an
    /// orthographic camera; `None` for a perspective one.
    pub ortho_half_height: Option<f32>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LightKind {
    /// Intensity in W/sr (glTF candela / 683).
    Point,
    Spot {
        cos_inner: f32,
        cos_outer: f32,
    },
    /// Irradiance in W/m² (glTF lux / 683).
    Directional,
}

#[derive(Clone, Debug)]
pub struct LightDef {
    pub kind: LightKind,
    /// Colour × intensity, converted from photometric glTF units to
    /// radiometric ones the way Blender's importer does (÷ 683 lm/W).
    pub power: Vec3,
    pub range: Option<f32>,
}

/// Which BRDF (and spot-light falloff) the scene's materials mean: the one
/// of the renderer that made the file, so that a frame looks like what its
/// author saw (docs/fidelity.md). See `bsdf` for the two models.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ShadingModel {
    /// glTF 2.0's reference BRDF and spot falloff (and Blender 4's
    /// Principled BSDF, which follows it).
    #[default]
    Gltf,
    /// Blender 2.8–3.6's Principled BSDF and spot lights, as Cycles
    /// renders them.
    PrincipledV1,
}

impl ShadingModel {
    /// The model a file's `asset.generator` implies: Blender's exporter
    /// names itself "Khronos glTF Blender I/O vX.Y.Z", its major version
    /// Blender's own since 3.0 (1.x shipped with Blender 2.8x–2.9x), and
    /// Blender before 4.0 renders Principled v1.
    /// Whether Blender's glTF exporter (any version) wrote the file.
    pub fn is_blender(generator: Option<&str>) -> bool {
        generator.is_some_and(|g| g.starts_with("Khronos glTF Blender I/O"))
    }

    pub fn of_generator(generator: Option<&str>) -> ShadingModel {
        let version = generator.and_then(|g| g.strip_prefix("Khronos glTF Blender I/O v"));
        let major = version.and_then(|v| v.split('.').next()).and_then(|m| m.parse::<u32>().ok());
        match major {
            Some(m) if m < 4 => ShadingModel::PrincipledV1,
            _ => ShadingModel::Gltf,
        }
    }
}

/// A spot light's cone: how its intensity falls off with the angle from
/// its axis, in the scene's shading model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SpotCone {
    /// cos of the outer half-angle: no light beyond it.
    pub cos_outer: f32,
    /// Width of the soft edge in cosine, from `cos_outer` inwards.
    pub width: f32,
    /// Cycles' falloff (a smoothstep over the edge, times the cosine to
    /// the axis) rather than glTF's (the square of a linear ramp).
    pub cycles: bool,
}

impl SpotCone {
    pub fn new(cos_inner: f32, cos_outer: f32, model: ShadingModel) -> SpotCone {
        match model {
            ShadingModel::Gltf => SpotCone { cos_outer, width: (cos_inner - cos_outer).max(1e-3), cycles: false },
            ShadingModel::PrincipledV1 => {
                // Blender's exporter writes outer = size/2 and inner =
                // outer·(1 − blend); Cycles blends over (1 − cos outer)·blend.
                let (outer, inner) = (cos_outer.clamp(-1.0, 1.0).acos(), cos_inner.clamp(-1.0, 1.0).acos());
                let blend = if outer > 0.0 { (1.0 - inner / outer).clamp(0.0, 1.0) } else { 0.0 };
                SpotCone { cos_outer, width: (1.0 - cos_outer) * blend, cycles: true }
            }
        }
    }

    /// The fraction of the light's intensity sent at cosine `cd` to its axis.
    pub fn falloff(&self, cd: f32) -> f32 {
        if self.cycles {
            if cd <= self.cos_outer {
                return 0.0;
            }
            let t = cd - self.cos_outer;
            if t < self.width && self.width != 0.0 {
                let x = t / self.width;
                cd * (x * x * (3.0 - 2.0 * x))
            } else {
                cd
            }
        } else {
            let a = ((cd - self.cos_outer) * (1.0 / self.width)).clamp(0.0, 1.0);
            a * a
        }
    }
}

/// The whole scene, read-only after load.
#[derive(Debug, Default)]
pub struct Scene {
    pub meshes: Vec<Mesh>,
    pub groups: Vec<MeshGroup>,
    pub materials: Vec<Material>,
    pub textures: Vec<Texture>,
    pub nodes: Vec<Node>,
    /// Root nodes of the rendered glTF scene.
    pub roots: Vec<usize>,
    pub cameras: Vec<CameraDef>,
    pub lights: Vec<LightDef>,
    pub skins: Vec<Skin>,
    pub animations: Vec<anim::Animation>,
    /// The file's `asset.generator`.
    pub generator: Option<String>,
    /// What the materials mean: from the generator, or the job's
    /// `shading` setting.
    pub shading: ShadingModel,
}

impl Scene {
    /// (start, end) of all animations in seconds; (0, 0) when static.
    pub fn time_range(&self) -> (f32, f32) {
        let mut range: Option<(f32, f32)> = None;
        for a in &self.animations {
            for c in &a.channels {
                if let (Some(first), Some(last)) = (c.times.first(), c.times.last()) {
                    range = Some(match range {
                        Some((s, e)) => (s.min(*first), e.max(*last)),
                        None => (*first, *last),
                    });
                }
            }
        }
        range.unwrap_or((0.0, 0.0))
    }

    /// Camera nodes in depth-first scene order, with the camera's name
    /// (the node's name if the camera has none).
    pub fn camera_nodes(&self) -> Vec<(usize, String)> {
        let mut out = Vec::new();
        let mut stack: Vec<usize> = self.roots.iter().rev().copied().collect();
        while let Some(n) = stack.pop() {
            let node = &self.nodes[n];
            if let Some(c) = node.camera {
                let name = if node.name.is_empty() { self.cameras[c].name.clone() } else { node.name.clone() };
                out.push((n, name));
            }
            stack.extend(node.children.iter().rev().copied());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specular_and_ior_give_the_reflectance_each_model_expects() {
        let f0 = |ior: f32| ((ior - 1.0) / (ior + 1.0)).powi(2);
        // Blender 3.4's exporter for Specular 0.25 (IOR socket 1.45):
        // specularColorFactor = 0.08·0.25 / F0(1.45), and the IOR beside it.
        let blender = Material {
            ior: 1.45,
            specular: Some(SpecularExt { factor: 1.0, color: Vec3::splat(0.08 * 0.25 / f0(1.45)) }),
            ..Material::default()
        };
        for model in [ShadingModel::PrincipledV1, ShadingModel::Gltf] {
            let s = crate::bsdf::Specular::of_material(&blender, model);
            assert!((s.f0 - Vec3::splat(0.02)).abs().max_element() < 1e-6, "{model:?}: {s:?}");
            assert_eq!(s.f90, 1.0);
        }
        // Principled v1's Fresnel curve starts at that F0: IOR 1.33…
        let (v1_f0, v1_ior) = crate::bsdf::Specular::of_material(&blender, ShadingModel::PrincipledV1).v1_fresnel();
        assert!((v1_f0 - 0.02).abs() < 1e-6 && (f0(v1_ior) - 0.02).abs() < 1e-6, "{v1_f0} {v1_ior}");
        // IOR alone: glTF reads it; Blender 3 ignores it outside transmission.
        let water = Material { ior: 1.33, ..Material::default() };
        assert!((crate::bsdf::Specular::of_material(&water, ShadingModel::Gltf).f0.x - f0(1.33)).abs() < 1e-7);
        assert_eq!(
            crate::bsdf::Specular::of_material(&water, ShadingModel::PrincipledV1),
            crate::bsdf::Specular::DEFAULT
        );
        // glTF's specularFactor scales F0 and sets F90.
        let dim = Material { specular: Some(SpecularExt { factor: 0.5, color: Vec3::ONE }), ..Material::default() };
        let s = crate::bsdf::Specular::of_material(&dim, ShadingModel::Gltf);
        assert!((s.f0.x - 0.02).abs() < 1e-6 && s.f90 == 0.5, "{s:?}");
        // The defaults are exactly the constants the BSDF had before.
        assert_eq!(
            crate::bsdf::Specular::of_material(&Material::default(), ShadingModel::Gltf),
            crate::bsdf::Specular::DEFAULT
        );
    }

    #[test]
    fn blender_before_4_means_principled_v1() {
        for (generator, model) in [
            (Some("Khronos glTF Blender I/O v3.4.50"), ShadingModel::PrincipledV1),
            (Some("Khronos glTF Blender I/O v1.8.19"), ShadingModel::PrincipledV1),
            (Some("Khronos glTF Blender I/O v4.2.70"), ShadingModel::Gltf),
            (Some("Tessera samples/scenes/generate.py"), ShadingModel::Gltf),
            (Some("Khronos glTF Blender I/O vX"), ShadingModel::Gltf),
            (None, ShadingModel::Gltf),
        ] {
            assert_eq!(ShadingModel::of_generator(generator), model, "{generator:?}");
        }
    }

    #[test]
    fn spot_cones_fall_off_as_their_renderer_does() {
        // Blender: spot size 60°, blend 0.4 → glTF outer 30°, inner 18°.
        let (outer, inner) = (30f32.to_radians(), 18f32.to_radians());
        let gltf = SpotCone::new(inner.cos(), outer.cos(), ShadingModel::Gltf);
        let cycles = SpotCone::new(inner.cos(), outer.cos(), ShadingModel::PrincipledV1);
        // Cycles' soft edge: (1 − cos 30°)·0.4 wide in cosine, from outside in.
        assert!((cycles.width - (1.0 - outer.cos()) * 0.4).abs() < 1e-5, "{cycles:?}");
        for cone in [gltf, cycles] {
            assert_eq!(cone.falloff(31f32.to_radians().cos()), 0.0);
            assert!(cone.falloff(30.01f32.to_radians().cos()) < 0.01);
        }
        // On the axis: glTF's full intensity; Cycles' too (cos 0 = 1).
        assert_eq!(gltf.falloff(1.0), 1.0);
        assert_eq!(cycles.falloff(1.0), 1.0);
        // Inside the edge Cycles keeps its cosine to the axis.
        let c = 5f32.to_radians().cos();
        assert!((cycles.falloff(c) - c).abs() < 1e-6);
        // Halfway through Cycles' edge: the smoothstep's ½, times the cosine.
        let mid = outer.cos() + cycles.width / 2.0;
        assert!((cycles.falloff(mid) - 0.5 * mid).abs() < 1e-5);
    }
}
