//! The job's settings (`job-settings.extra`, JSON), all optional.

use glam::Vec3;
use serde::Deserialize;

use crate::scene::ShadingModel;

/// Path tracer settings. Unknown keys are refused, so a typo does not go
/// unnoticed through a long render.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Camera node (or camera) name; default: the scene's first camera.
    pub camera: Option<String>,
    /// glTF scene name; default: the file's default scene.
    pub scene: Option<String>,
    /// Longest path, in bounces after the first hit, as Cycles counts
    /// them (Blender's Max Bounces, which the add-on sends): 0 is direct
    /// light only. Default 8.
    pub max_bounces: u32,
    /// World colour (linear RGB) and strength: glTF has no world, so it is
    /// a setting. Default: Blender's default world, grey 0.0508 × 1.
    pub background: [f32; 3],
    pub background_strength: f32,
    /// Ignored by the renderer; read by the host's image writer.
    pub exposure: f32,
    pub view_transform: Option<String>,
    /// Where paths are traced: `"cpu"`, `"gpu"` or `"auto"` (the default:
    /// the GPU when the worker offers one for this job, else the CPU).
    pub engine: Engine,
    /// Which BRDF the materials mean (`scene::ShadingModel`): `"auto"` (the
    /// default: Blender 3's Principled v1 for files Blender 2.8–3.6
    /// exported, glTF's reference BRDF otherwise), `"blender3"` or `"gltf"`.
    pub shading: Shading,
}

/// The `shading` setting.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Shading {
    /// From the file's generator.
    #[default]
    Auto,
    Blender3,
    Gltf,
}

impl Shading {
    /// The model in effect for a scene whose generator implies `implied`.
    pub fn resolve(self, implied: ShadingModel) -> ShadingModel {
        match self {
            Shading::Auto => implied,
            Shading::Blender3 => ShadingModel::PrincipledV1,
            Shading::Gltf => ShadingModel::Gltf,
        }
    }
}

/// The render engine. Both trace the same paths with the same random
/// numbers; GPU tiles differ from CPU tiles by float rounding only, and the
/// farm verifies CPU tiles bit for bit, so a job can pin `"cpu"`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// Always the CPU (inside wasm).
    Cpu,
    /// Always the GPU; a worker without one fails the tile with an error.
    Gpu,
    /// The GPU when `gpu::adapter()` names one, else the CPU.
    #[default]
    Auto,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            camera: None,
            scene: None,
            max_bounces: 8,
            background: [0.0508, 0.0508, 0.0508],
            background_strength: 1.0,
            exposure: 0.0,
            view_transform: None,
            engine: Engine::Auto,
            shading: Shading::Auto,
        }
    }
}

impl Settings {
    pub fn parse(extra: &str) -> Result<Settings, String> {
        let extra = extra.trim();
        let s: Settings = if extra.is_empty() {
            Settings::default()
        } else {
            serde_json::from_str(extra).map_err(|e| e.to_string())?
        };
        if s.max_bounces > 1024 {
            return Err(format!("max_bounces must be at most 1024, got {}", s.max_bounces));
        }
        if s.background.iter().chain([&s.background_strength]).any(|v| !v.is_finite() || *v < 0.0) {
            return Err("background and background_strength must be finite and non-negative".into());
        }
        Ok(s)
    }

    pub fn background(&self) -> Vec3 {
        Vec3::from(self.background) * self.background_strength
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_errors() {
        assert_eq!(Settings::parse("").unwrap(), Settings::default());
        assert_eq!(Settings::parse("{}").unwrap(), Settings::default());
        let s = Settings::parse(r#"{"max_bounces": 3, "background": [1, 0, 0], "camera": "Closeup"}"#).unwrap();
        assert_eq!((s.max_bounces, s.camera.as_deref()), (3, Some("Closeup")));
        assert!(Settings::parse(r#"{"max_bounce": 3}"#).unwrap_err().contains("unknown field"));
        assert!(Settings::parse(r#"{"background_strength": -1}"#).is_err());
        assert!(Settings::parse("[").is_err());
        assert_eq!(Settings::default().engine, Engine::Auto);
        for (text, engine) in [("cpu", Engine::Cpu), ("gpu", Engine::Gpu), ("auto", Engine::Auto)] {
            assert_eq!(Settings::parse(&format!(r#"{{"engine": "{text}"}}"#)).unwrap().engine, engine);
        }
        assert!(Settings::parse(r#"{"engine": "GPU"}"#).unwrap_err().contains("unknown variant"));
        let s = Settings::parse(r#"{"shading": "gltf"}"#).unwrap();
        assert_eq!(s.shading.resolve(ShadingModel::PrincipledV1), ShadingModel::Gltf);
        assert_eq!(Shading::Auto.resolve(ShadingModel::PrincipledV1), ShadingModel::PrincipledV1);
        assert!(Settings::parse(r#"{"shading": "cycles"}"#).unwrap_err().contains("unknown variant"));
    }
}
