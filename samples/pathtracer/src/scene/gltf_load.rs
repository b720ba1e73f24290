//! glTF 2.0 (`.glb`, or `.gltf` with data URIs) → [`Scene`].
//!
//! Everything read is untrusted: indices are range-checked, images are
//! decoded under size limits read from their headers, node graphs are
//! checked for cycles, and a required extension we do not implement is
//! refused by name rather than rendered wrongly.

use std::collections::BTreeSet;
use std::io::Cursor;

use base64::Engine as _;
use glam::{Mat4, Quat, Vec2, Vec3, Vec4};
use gltf::animation::util::ReadOutputs;
use gltf::khr_lights_punctual::Kind;

use super::anim::{Animation, Channel, Interpolation, Property};
use super::texture::{Texture, TextureRef, UvTransform, Wrap};
use super::*;

/// Extensions this renderer implements; any other *required* one is
/// refused, any other used one is named in a warning.
pub const SUPPORTED_REQUIRED: &[&str] = &[
    "KHR_lights_punctual",
    "KHR_materials_emissive_strength",
    "KHR_materials_ior",
    "KHR_materials_specular",
    "KHR_texture_transform",
];

/// What a frame loses when its file uses an extension the renderer
/// ignores (those Blender's exporter writes, by name).
fn ignored_effect(ext: &str) -> &'static str {
    match ext {
        "KHR_materials_transmission" => "transmissive materials (glass, water) render opaque",
        "KHR_materials_volume" => "volume absorption (thickness, attenuation colour) is not applied",
        "KHR_materials_clearcoat" => "the clearcoat layer is not rendered",
        "KHR_materials_sheen" => "the sheen layer is not rendered",
        "KHR_materials_unlit" => "unlit materials are shaded as lit ones",
        "KHR_materials_variants" => "each primitive renders its default material",
        "KHR_materials_anisotropy" => "anisotropic highlights render isotropic",
        "KHR_materials_iridescence" => "iridescence is not rendered",
        _ => "the render may differ",
    }
}

/// Refuse images larger than this on either side (from the header, before
/// any pixel is allocated).
pub const MAX_IMAGE_SIDE: u32 = 16384;
/// Total decoded texture memory for one scene.
pub const MAX_TEXTURE_BYTES: u64 = 1 << 30;
/// Total triangles in one scene.
pub const MAX_TRIANGLES: usize = 50_000_000;
/// Deepest node hierarchy accepted.
pub const MAX_NODE_DEPTH: usize = 256;

/// Why a scene could not be loaded; maps onto the WIT `job-error`.
#[derive(Debug, PartialEq)]
pub enum LoadError {
    Invalid(String),
    Unsupported(String),
}

type Result<T> = std::result::Result<T, LoadError>;

fn invalid(msg: impl Into<String>) -> LoadError {
    LoadError::Invalid(msg.into())
}

/// Parses a glTF document and all its data into a [`Scene`]. `scene_name`
/// picks a glTF scene by name (default: the document's default scene, else
/// the first).
pub fn load(bytes: &[u8], scene_name: Option<&str>) -> Result<Scene> {
    // What the glTF crate itself panics on (its validation skips them, or
    // its readers assume them) is checked first, so a hostile file is
    // refused with a message, never a trap: the GLB framing before anything
    // reads the GLB.
    check_glb_framing(bytes)?;
    // Required extensions next: the glTF crate's validation reports an
    // unknown one as a generic error, and the artist needs its name.
    check_required_extensions(bytes)?;
    precheck(bytes)?;
    let gltf = gltf::Gltf::from_slice(bytes).map_err(|e| invalid(describe_gltf_error(bytes, e)))?;
    let buffers = load_buffers(&gltf.document, gltf.blob.as_deref())?;
    load_document(&gltf.document, buffers, scene_name)
}

/// Refuses a file whose `extensionsRequired` names one we do not implement.
/// Reads only the JSON (the GLB's JSON chunk); malformed input is left for
/// the full parse to report.
fn check_required_extensions(bytes: &[u8]) -> Result<()> {
    let json: &[u8] = if bytes.starts_with(b"glTF") {
        match gltf::Glb::from_slice(bytes) {
            Ok(glb) => return check_required_in(&glb.json),
            Err(_) => return Ok(()),
        }
    } else {
        bytes
    };
    check_required_in(json)
}

fn check_required_in(json: &[u8]) -> Result<()> {
    #[derive(serde::Deserialize)]
    struct Root {
        #[serde(default, rename = "extensionsRequired")]
        required: Vec<String>,
        #[serde(default, rename = "extensionsUsed")]
        used: Vec<String>,
    }
    let Ok(root) = serde_json::from_slice::<Root>(json) else { return Ok(()) };
    for ext in root.used.iter().filter(|e| !SUPPORTED_REQUIRED.contains(&e.as_str()) && !root.required.contains(e)) {
        tessera_guest_sdk::log(
            tessera_guest_sdk::Level::Warn,
            &format!("the scene uses the glTF extension {ext}, which this renderer ignores: {}", ignored_effect(ext)),
        );
    }
    let unsupported: Vec<&str> =
        root.required.iter().map(String::as_str).filter(|e| !SUPPORTED_REQUIRED.contains(e)).collect();
    if !unsupported.is_empty() {
        return Err(LoadError::Unsupported(format!(
            "the scene requires the glTF extension{} {} which this renderer does not support (supported: {}); \
             export without it (e.g. untick Draco compression in Blender's glTF exporter)",
            if unsupported.len() > 1 { "s" } else { "" },
            unsupported.join(", "),
            SUPPORTED_REQUIRED.join(", ")
        )));
    }
    Ok(())
}

/// Loads the document's data; see [`load`].
fn load_document(doc: &gltf::Document, buffers: Vec<Vec<u8>>, scene_name: Option<&str>) -> Result<Scene> {
    let mut scene = Scene::default();
    scene.generator = doc.as_json().asset.generator.clone();
    scene.shading = ShadingModel::of_generator(scene.generator.as_deref());
    scene.textures = load_textures(doc, &buffers)?;
    scene.materials = doc.materials().map(|m| material(&m, &scene.textures)).collect::<Result<_>>()?;
    let default_material = scene.materials.len();
    scene.materials.push(Material::default());

    let mut triangles = 0usize;
    for mesh in doc.meshes() {
        let mut group =
            MeshGroup { primitives: Vec::new(), weights: mesh.weights().map(<[f32]>::to_vec).unwrap_or_default() };
        for prim in mesh.primitives() {
            let Some(mut m) = primitive(&prim, &buffers, default_material, mesh.index())? else { continue };
            if let Some(normal_tex) = scene.materials.get(m.material).and_then(|mat| mat.normal_tex) {
                if m.tangents.is_empty() {
                    match tangents::generate(&m, normal_tex.tex_coord) {
                        Some(t) => m.tangents = t,
                        None => tessera_guest_sdk::log(
                            tessera_guest_sdk::Level::Warn,
                            &format!(
                                "mesh {} primitive {} has a normal map but no normals or TEXCOORD_{} to build its \
                             tangents from: the normal map is ignored",
                                mesh.index(),
                                prim.index(),
                                normal_tex.tex_coord
                            ),
                        ),
                    }
                }
            }
            triangles += m.triangle_count();
            if triangles > MAX_TRIANGLES {
                return Err(LoadError::Unsupported(format!("the scene has more than {MAX_TRIANGLES} triangles")));
            }
            group.primitives.push(scene.meshes.len());
            scene.meshes.push(m);
        }
        scene.groups.push(group);
    }

    scene.cameras = doc
        .cameras()
        .map(|c| match c.projection() {
            gltf::camera::Projection::Perspective(p) => CameraDef {
                name: c.name().unwrap_or("").to_string(),
                yfov: p.yfov(),
                aspect: p.aspect_ratio(),
                ortho_half_height: None,
            },
            // Blender exports xmag/ymag as half its view's width and height
            // at the scene's resolution: the view keeps ymag, the width
            // follows the image's aspect (as yfov does for perspective).
            gltf::camera::Projection::Orthographic(o) => {
                let (x, y) = (o.xmag().abs(), o.ymag().abs());
                let finite = x.is_finite() && y.is_finite() && x > 0.0 && y > 0.0;
                CameraDef {
                    name: c.name().unwrap_or("").to_string(),
                    yfov: 0.69,
                    aspect: finite.then(|| x / y),
                    ortho_half_height: Some(if finite { y } else { 1.0 }),
                }
            }
        })
        .collect();
    scene.lights = doc.lights().map(|ls| ls.map(light).collect()).unwrap_or_default();

    scene.nodes = doc
        .nodes()
        .map(|n| {
            let (t, r, s) = n.transform().decomposed();
            let rest =
                Trs { translation: Vec3::from(t), rotation: Quat::from_array(r).normalize(), scale: Vec3::from(s) };
            let weights = n
                .weights()
                .map(<[f32]>::to_vec)
                .or_else(|| n.mesh().and_then(|m| m.weights().map(<[f32]>::to_vec)))
                .unwrap_or_default();
            Node {
                name: n.name().unwrap_or("").to_string(),
                rest,
                children: n.children().map(|c| c.index()).collect(),
                mesh: n.mesh().map(|m| m.index()),
                camera: n.camera().map(|c| c.index()),
                light: n.light().map(|l| l.index()),
                skin: n.skin().map(|s| s.index()),
                weights,
            }
        })
        .collect();

    scene.skins = doc
        .skins()
        .map(|skin| {
            let joints: Vec<usize> = skin.joints().map(|j| j.index()).collect();
            let reader = skin.reader(|b| buffers.get(b.index()).map(Vec::as_slice));
            let inverse_bind: Vec<Mat4> = match reader.read_inverse_bind_matrices() {
                Some(m) => m.map(|m| Mat4::from_cols_array_2d(&m)).collect(),
                None => vec![Mat4::IDENTITY; joints.len()],
            };
            if inverse_bind.len() < joints.len() {
                return Err(invalid(format!("skin {} has fewer inverse bind matrices than joints", skin.index())));
            }
            Ok(Skin { joints, inverse_bind })
        })
        .collect::<Result<_>>()?;

    scene.animations = doc.animations().map(|a| animation(&a, &buffers)).collect::<Result<_>>()?;

    let gltf_scene = match scene_name {
        Some(name) => doc
            .scenes()
            .find(|s| s.name() == Some(name))
            .ok_or_else(|| invalid(format!("no glTF scene named {name:?}")))?,
        None => doc.default_scene().or_else(|| doc.scenes().next()).ok_or_else(|| invalid("the file has no scene"))?,
    };
    scene.roots = gltf_scene.nodes().map(|n| n.index()).collect();
    check_hierarchy(&scene)?;
    check_skins(&scene)?;
    Ok(scene)
}

fn describe_gltf_error(bytes: &[u8], e: gltf::Error) -> String {
    let kind = if bytes.starts_with(b"glTF") {
        "binary glTF (.glb)"
    } else if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
        "glTF JSON"
    } else {
        return "not a glTF file (neither .glb nor glTF JSON)".to_string();
    };
    format!("invalid {kind}: {e}")
}

fn load_buffers(doc: &gltf::Document, blob: Option<&[u8]>) -> Result<Vec<Vec<u8>>> {
    doc.buffers()
        .map(|b| {
            let data = match b.source() {
                gltf::buffer::Source::Bin => {
                    blob.ok_or_else(|| invalid("buffer 0 refers to a GLB BIN chunk but there is none"))?.to_vec()
                }
                gltf::buffer::Source::Uri(uri) => {
                    decode_data_uri(uri).map_err(|e| invalid(format!("buffer {}: {e}", b.index())))?
                }
            };
            if data.len() < b.length() {
                return Err(invalid(format!(
                    "buffer {} has {} bytes but declares {}",
                    b.index(),
                    data.len(),
                    b.length()
                )));
            }
            Ok(data)
        })
        .collect()
}

/// Decodes a `data:` URI. External files must have been packed into the
/// scene by the host (the `tessera` CLI does this).
pub fn decode_data_uri(uri: &str) -> std::result::Result<Vec<u8>, String> {
    let Some(rest) = uri.strip_prefix("data:") else {
        return Err(format!(
            "refers to the external file {:?}; pack external files into the scene first \
             (`tessera render` and `tessera submit` do this for .gltf files)",
            uri.chars().take(200).collect::<String>()
        ));
    };
    let (meta, data) = rest.split_once(',').ok_or("malformed data URI (no comma)")?;
    if meta.ends_with(";base64") {
        base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|e| format!("bad base64 in data URI: {e}"))
    } else {
        Ok(data.as_bytes().to_vec())
    }
}

/// Width, height and RGBA texels of an image, shared by its textures.
type DecodedImage = (u32, u32, std::sync::Arc<Vec<[u8; 4]>>);

fn load_textures(doc: &gltf::Document, buffers: &[Vec<u8>]) -> Result<Vec<Texture>> {
    let mut budget = MAX_TEXTURE_BYTES;
    let mut images: Vec<Option<DecodedImage>> = vec![None; doc.images().len()];
    let mut out = Vec::new();
    for tex in doc.textures() {
        let img = tex.source();
        let slot = img.index();
        if images[slot].is_none() {
            let bytes = match img.source() {
                gltf::image::Source::View { view, .. } => {
                    let buf =
                        buffers.get(view.buffer().index()).ok_or_else(|| invalid("image view's buffer is missing"))?;
                    let end = view.offset().checked_add(view.length()).filter(|e| *e <= buf.len());
                    let end = end.ok_or_else(|| invalid(format!("image {slot}'s buffer view is out of range")))?;
                    buf[view.offset()..end].to_vec()
                }
                gltf::image::Source::Uri { uri, .. } => {
                    decode_data_uri(uri).map_err(|e| invalid(format!("image {slot}: {e}")))?
                }
            };
            let (w, h, px) = decode_image(&bytes, &mut budget).map_err(|e| {
                let name = img.name().map(|n| format!(" ({n})")).unwrap_or_default();
                invalid(format!("image {slot}{name}: {e}"))
            })?;
            images[slot] = Some((w, h, std::sync::Arc::new(px)));
        }
        let (width, height, texels) = images[slot].clone().expect("decoded above");
        let sampler = tex.sampler();
        let wrap = |m: gltf::texture::WrappingMode| match m {
            gltf::texture::WrappingMode::Repeat => Wrap::Repeat,
            gltf::texture::WrappingMode::ClampToEdge => Wrap::Clamp,
            gltf::texture::WrappingMode::MirroredRepeat => Wrap::Mirror,
        };
        out.push(Texture {
            width,
            height,
            texels,
            wrap_s: wrap(sampler.wrap_s()),
            wrap_t: wrap(sampler.wrap_t()),
            linear: sampler.mag_filter() != Some(gltf::texture::MagFilter::Nearest),
        });
    }
    Ok(out)
}

/// Decodes a PNG or JPEG, refusing from the header alone anything larger
/// than [`MAX_IMAGE_SIDE`] or than what is left of the scene's budget.
fn decode_image(bytes: &[u8], budget: &mut u64) -> std::result::Result<(u32, u32, Vec<[u8; 4]>), String> {
    let reader = image::ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| e.to_string())?;
    match reader.format() {
        Some(image::ImageFormat::Png | image::ImageFormat::Jpeg) => {}
        Some(f) => return Err(format!("{f:?} images are not supported (glTF allows PNG and JPEG)")),
        None => return Err("not a PNG or JPEG image".into()),
    }
    // Only the header is read here, so the decoder's default allocation
    // limit would only replace our message (which names the size) with
    // "Memory limit exceeded"; the pixels are decoded under limits below.
    let mut reader = reader;
    reader.no_limits();
    let (w, h) = reader.into_dimensions().map_err(|e| e.to_string())?;
    if w == 0 || h == 0 || w > MAX_IMAGE_SIDE || h > MAX_IMAGE_SIDE {
        return Err(format!(
            "its header claims {w}×{h} pixels; at most {MAX_IMAGE_SIDE}×{MAX_IMAGE_SIDE} are accepted"
        ));
    }
    let need = u64::from(w) * u64::from(h) * 4;
    if need > *budget {
        return Err(format!("decoding it would exceed the scene's {MAX_TEXTURE_BYTES}-byte texture budget"));
    }
    let mut reader = image::ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| e.to_string())?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    // Decoders allocate a few times the output; the header check above
    // already bounds the output itself.
    limits.max_alloc = Some(need.saturating_mul(4).max(1 << 20));
    reader.limits(limits);
    let rgba = reader.decode().map_err(|e| e.to_string())?.into_rgba8();
    *budget -= need;
    let px = rgba.pixels().map(|p| p.0).collect();
    Ok((w, h, px))
}

fn tex_ref(info: Option<gltf::texture::Info<'_>>, textures: &[Texture]) -> Result<Option<TextureRef>> {
    let Some(info) = info else { return Ok(None) };
    let texture = info.texture().index();
    if texture >= textures.len() {
        return Err(invalid(format!("texture {texture} is out of range")));
    }
    let (transform, tex_coord) = match info.texture_transform() {
        Some(t) => uv_transform(t.offset(), t.rotation(), t.scale(), t.tex_coord().unwrap_or(info.tex_coord()))?,
        None => (None, info.tex_coord()),
    };
    if tex_coord > 1 {
        return Err(LoadError::Unsupported(format!(
            "texture coordinate set {tex_coord} (only TEXCOORD_0 and _1 are read)"
        )));
    }
    Ok(Some(TextureRef { texture, tex_coord, transform }))
}

/// A `KHR_texture_transform` as a matrix (`None` for the identity, so an
/// untransformed texture samples exactly as before), and the UV set it
/// names.
fn uv_transform(
    offset: [f32; 2],
    rotation: f32,
    scale: [f32; 2],
    tex_coord: u32,
) -> Result<(Option<UvTransform>, u32)> {
    if !(offset.iter().chain(&scale).all(|v| v.is_finite()) && rotation.is_finite()) {
        return Err(invalid("a KHR_texture_transform has a non-finite offset, rotation or scale"));
    }
    let identity = offset == [0.0, 0.0] && rotation == 0.0 && scale == [1.0, 1.0];
    Ok(((!identity).then(|| UvTransform::new(offset, rotation, scale)), tex_coord))
}

/// The normal texture's reference: the glTF crate does not type its
/// `KHR_texture_transform`, so it is read from the extension's JSON.
fn normal_ref(n: &gltf::material::NormalTexture<'_>, textures: &[Texture]) -> Result<Option<TextureRef>> {
    let texture = n.texture().index();
    let (transform, tex_coord) = match n.extension_value("KHR_texture_transform") {
        Some(v) => {
            let t: gltf::json::extensions::texture::TextureTransform = serde_json::from_value(v.clone())
                .map_err(|e| invalid(format!("the normal texture's KHR_texture_transform: {e}")))?;
            uv_transform(t.offset.0, t.rotation.0, t.scale.0, t.tex_coord.unwrap_or(n.tex_coord()))?
        }
        None => (None, n.tex_coord()),
    };
    // As before: a normal map the renderer cannot read is left out, not refused.
    Ok((texture < textures.len() && tex_coord <= 1).then_some(TextureRef { texture, tex_coord, transform }))
}

/// `KHR_materials_ior`: 1.5 without it; 0 (the extension's "no
/// Fresnel", F0 = 1) and values from 1 up are what glTF allows.
fn ior(m: &gltf::Material<'_>) -> Result<f32> {
    let ior = m.ior().unwrap_or(1.5);
    if !(ior.is_finite() && (ior == 0.0 || ior >= 1.0)) {
        return Err(invalid(format!(
            "material {:?} has IOR {ior}: glTF allows 0 or 1 and above",
            m.name().unwrap_or("")
        )));
    }
    Ok(ior)
}

/// `KHR_materials_specular`'s factors. Its textures are not read: named
/// in a warning (Blender's exporter writes one only when the `Specular`
/// or `Specular Tint` input is driven by an image).
fn specular(m: &gltf::Material<'_>) -> Result<Option<SpecularExt>> {
    let Some(s) = m.specular() else { return Ok(None) };
    let ext = SpecularExt { factor: s.specular_factor(), color: Vec3::from(s.specular_color_factor()) };
    if !(ext.factor.is_finite() && ext.color.is_finite()) || ext.factor < 0.0 || ext.color.min_element() < 0.0 {
        return Err(invalid(format!(
            "material {:?} has a negative or non-finite KHR_materials_specular factor",
            m.name().unwrap_or("")
        )));
    }
    if s.specular_texture().is_some() || s.specular_color_texture().is_some() {
        tessera_guest_sdk::log(
            tessera_guest_sdk::Level::Warn,
            &format!(
                "material {:?}: KHR_materials_specular textures are ignored (their factors are used): \
                 the specular level does not vary across the surface",
                m.name().unwrap_or("")
            ),
        );
    }
    Ok(Some(ext.clamped()))
}

fn material(m: &gltf::Material<'_>, textures: &[Texture]) -> Result<Material> {
    let pbr = m.pbr_metallic_roughness();
    let normal = m.normal_texture();
    let normal_tex = match &normal {
        Some(n) => normal_ref(n, textures)?,
        None => None,
    };
    let emissive_tex = tex_ref(m.emissive_texture(), textures)?;
    let strength = m.emissive_strength().unwrap_or(1.0);
    let (alpha, cutoff) = match m.alpha_mode() {
        gltf::material::AlphaMode::Opaque => (AlphaMode::Opaque, 0.5),
        gltf::material::AlphaMode::Mask => {
            let c = m.alpha_cutoff().unwrap_or(0.5);
            (AlphaMode::Mask, c)
        }
        gltf::material::AlphaMode::Blend => (AlphaMode::Blend, 0.5),
    };
    let emissive = Vec3::from(m.emissive_factor()) * strength;
    if !emissive.is_finite() || emissive.min_element() < 0.0 {
        return Err(invalid(format!("material {:?} has a negative or non-finite emission", m.name().unwrap_or(""))));
    }
    Ok(Material {
        base_color: Vec4::from(pbr.base_color_factor()),
        base_color_tex: tex_ref(pbr.base_color_texture(), textures)?,
        metallic: pbr.metallic_factor().clamp(0.0, 1.0),
        roughness: pbr.roughness_factor().clamp(0.0, 1.0),
        metallic_roughness_tex: tex_ref(pbr.metallic_roughness_texture(), textures)?,
        normal_tex,
        normal_scale: normal.as_ref().map_or(1.0, |n| n.scale()),
        emissive,
        emissive_tex,
        alpha,
        alpha_cutoff: cutoff,
        double_sided: m.double_sided(),
        ior: ior(m)?,
        specular: specular(m)?,
    })
}

fn primitive(
    prim: &gltf::Primitive<'_>,
    buffers: &[Vec<u8>],
    default_material: usize,
    mesh_index: usize,
) -> Result<Option<Mesh>> {
    let where_ = || format!("mesh {mesh_index} primitive {}", prim.index());
    let reader = prim.reader(|b| buffers.get(b.index()).map(Vec::as_slice));
    let positions: Vec<Vec3> = reader
        .read_positions()
        .ok_or_else(|| invalid(format!("{} has no POSITION", where_())))?
        .map(Vec3::from)
        .collect();
    let n = positions.len();
    if positions.iter().any(|p| !p.is_finite()) {
        return Err(invalid(format!("{} has non-finite positions", where_())));
    }
    let mut indices: Vec<u32> = match reader.read_indices() {
        Some(i) => i.into_u32().collect(),
        None => (0..n as u32).collect(),
    };
    if let Some(bad) = indices.iter().find(|i| **i as usize >= n) {
        return Err(invalid(format!("{} has index {bad} but only {n} vertices", where_())));
    }
    use gltf::mesh::Mode;
    indices = match prim.mode() {
        Mode::Triangles => indices,
        Mode::TriangleStrip => {
            let mut out = Vec::new();
            for i in 2..indices.len() {
                let (a, b, c) = (indices[i - 2], indices[i - 1], indices[i]);
                if i % 2 == 0 {
                    out.extend([a, b, c])
                } else {
                    out.extend([b, a, c])
                }
            }
            out
        }
        Mode::TriangleFan => {
            let mut out = Vec::new();
            for i in 2..indices.len() {
                out.extend([indices[i - 1], indices[i], indices[0]]);
            }
            out
        }
        // Points and lines have no surface to hit.
        _ => return Ok(None),
    };
    indices.truncate(indices.len() / 3 * 3);

    let vec_or_empty = |v: Vec<Vec3>, what: &str| -> Result<Vec<Vec3>> {
        if !v.is_empty() && v.len() != n {
            return Err(invalid(format!("{} has {} {what} for {n} vertices", where_(), v.len())));
        }
        Ok(v)
    };
    let normals =
        vec_or_empty(reader.read_normals().map(|i| i.map(Vec3::from).collect()).unwrap_or_default(), "normals")?;
    let tangents: Vec<Vec4> = reader.read_tangents().map(|i| i.map(Vec4::from).collect()).unwrap_or_default();
    let uv = |set| -> Vec<Vec2> {
        reader.read_tex_coords(set).map(|t| t.into_f32().map(Vec2::from).collect()).unwrap_or_default()
    };
    let (uv0, uv1) = (uv(0), uv(1));
    for (what, len) in [("tangents", tangents.len()), ("TEXCOORD_0", uv0.len()), ("TEXCOORD_1", uv1.len())] {
        if len != 0 && len != n {
            return Err(invalid(format!("{} has {len} {what} for {n} vertices", where_())));
        }
    }
    let joints: Vec<[u16; 4]> = reader.read_joints(0).map(|j| j.into_u16().collect()).unwrap_or_default();
    let weights: Vec<[f32; 4]> = reader.read_weights(0).map(|w| w.into_f32().collect()).unwrap_or_default();
    if joints.len() != weights.len() || (!joints.is_empty() && joints.len() != n) {
        return Err(invalid(format!("{} has mismatched JOINTS_0/WEIGHTS_0", where_())));
    }
    let mut targets = Vec::new();
    for (p, nrm, _) in reader.read_morph_targets() {
        let positions = vec_or_empty(p.map(|i| i.map(Vec3::from).collect()).unwrap_or_default(), "morph positions")?;
        let normals = vec_or_empty(nrm.map(|i| i.map(Vec3::from).collect()).unwrap_or_default(), "morph normals")?;
        targets.push(MorphTarget { positions, normals });
    }
    let material = prim.material().index().unwrap_or(default_material);
    Ok(Some(Mesh { positions, normals, tangents, uv0, uv1, indices, material, joints, weights, targets }))
}

fn light(l: gltf::khr_lights_punctual::Light<'_>) -> LightDef {
    // glTF gives candela (point, spot) and lux (directional); Blender's
    // importer divides by 683 lm/W to get its watts-based units, in which
    // Cycles renders. Doing the same keeps Blender scenes' brightness.
    let power = Vec3::from(l.color()) * l.intensity().max(0.0) / 683.0;
    let kind = match l.kind() {
        Kind::Directional => LightKind::Directional,
        Kind::Point => LightKind::Point,
        Kind::Spot { inner_cone_angle, outer_cone_angle } => {
            LightKind::Spot { cos_inner: inner_cone_angle.cos(), cos_outer: outer_cone_angle.cos() }
        }
    };
    LightDef { kind, power, range: l.range() }
}

fn animation(a: &gltf::Animation<'_>, buffers: &[Vec<u8>]) -> Result<Animation> {
    let mut channels = Vec::new();
    for ch in a.channels() {
        let reader = ch.reader(|b| buffers.get(b.index()).map(Vec::as_slice));
        let times: Vec<f32> =
            reader.read_inputs().ok_or_else(|| invalid("animation channel without inputs"))?.collect();
        if times.iter().any(|t| !t.is_finite()) || times.windows(2).any(|w| w[0] > w[1]) {
            return Err(invalid(format!("animation {} has keyframe times that are not increasing", a.index())));
        }
        let (property, values): (Property, Vec<f32>) = match reader.read_outputs() {
            Some(ReadOutputs::Translations(t)) => (Property::Translation, t.flatten().collect()),
            Some(ReadOutputs::Rotations(r)) => (Property::Rotation, r.into_f32().flatten().collect()),
            Some(ReadOutputs::Scales(s)) => (Property::Scale, s.flatten().collect()),
            Some(ReadOutputs::MorphTargetWeights(w)) => (Property::Weights, w.into_f32().collect()),
            None => return Err(invalid("animation channel without outputs")),
        };
        let interpolation = match ch.sampler().interpolation() {
            gltf::animation::Interpolation::Linear => Interpolation::Linear,
            gltf::animation::Interpolation::Step => Interpolation::Step,
            gltf::animation::Interpolation::CubicSpline => Interpolation::CubicSpline,
        };
        let channel = Channel { node: ch.target().node().index(), property, interpolation, times, values };
        channel.check().map_err(invalid)?;
        channels.push(channel);
    }
    Ok(Animation { name: a.name().unwrap_or("").to_string(), channels })
}

/// Refuses cycles, nodes with two parents and absurd depth: a hostile file
/// must not make the per-frame traversal loop or explode.
fn check_hierarchy(scene: &Scene) -> Result<()> {
    let mut parent: Vec<Option<usize>> = vec![None; scene.nodes.len()];
    for (i, n) in scene.nodes.iter().enumerate() {
        for &c in &n.children {
            if c >= scene.nodes.len() {
                return Err(invalid(format!("node {i} has a child {c} that does not exist")));
            }
            if parent[c].replace(i).is_some() {
                return Err(invalid(format!("node {c} has more than one parent")));
            }
        }
    }
    let mut seen = BTreeSet::new();
    let mut stack: Vec<(usize, usize)> = scene.roots.iter().map(|&r| (r, 0)).collect();
    while let Some((n, depth)) = stack.pop() {
        if depth > MAX_NODE_DEPTH {
            return Err(LoadError::Unsupported(format!("the node hierarchy is deeper than {MAX_NODE_DEPTH}")));
        }
        if !seen.insert(n) {
            return Err(invalid(format!("the node graph has a cycle through node {n}")));
        }
        stack.extend(scene.nodes[n].children.iter().map(|&c| (c, depth + 1)));
    }
    // A cycle not reachable from a root still means a broken file.
    for start in 0..scene.nodes.len() {
        let mut n = start;
        for _ in 0..=scene.nodes.len() {
            match parent[n] {
                Some(p) if p == start => {
                    return Err(invalid(format!("the node graph has a cycle through node {start}")))
                }
                Some(p) => n = p,
                None => break,
            }
        }
    }
    Ok(())
}

fn check_skins(scene: &Scene) -> Result<()> {
    for (i, n) in scene.nodes.iter().enumerate() {
        let (Some(skin), Some(mesh)) = (n.skin, n.mesh) else { continue };
        let joints = scene.skins[skin].joints.len();
        for &p in &scene.groups[mesh].primitives {
            if let Some(bad) = scene.meshes[p].joints.iter().flatten().find(|j| usize::from(**j) >= joints) {
                return Err(invalid(format!("node {i}'s mesh uses joint {bad} but its skin has {joints}")));
            }
        }
    }
    Ok(())
}

/// Checks a GLB's header and chunk lengths before the glTF crate reads them:
/// it subtracts the header size from the declared length without checking
/// (an overflow, a panic with debug assertions; fuzzing found it).
fn check_glb_framing(bytes: &[u8]) -> Result<()> {
    if !bytes.starts_with(b"glTF") {
        return Ok(());
    }
    let bad = |why: String| Err(invalid(format!("invalid binary glTF (.glb): {why}")));
    let word = |at: usize| -> Option<u32> {
        bytes.get(at..at.checked_add(4)?).and_then(|w| <[u8; 4]>::try_from(w).ok()).map(u32::from_le_bytes)
    };
    let (Some(_version), Some(length)) = (word(4), word(8)) else {
        return bad(format!("the file is {} bytes, shorter than the 12-byte header", bytes.len()));
    };
    let length = length as usize;
    if length < 12 || length > bytes.len() {
        return bad(format!("the header declares {length} bytes but the file has {}", bytes.len()));
    }
    let mut at = 12usize;
    while at < length {
        let Some(chunk) = word(at) else { return bad(format!("a chunk header at byte {at} is cut off")) };
        let end = at.checked_add(8).and_then(|a| a.checked_add(chunk as usize));
        match end {
            Some(end) if end <= length => at = end,
            _ => return bad(format!("a chunk of {chunk} bytes at byte {at} runs past the file's {length} bytes")),
        }
    }
    Ok(())
}

/// The JSON of a `.gltf`, or of a GLB's JSON chunk; `None` when it cannot be
/// read (the full parse then reports why).
fn document_json(bytes: &[u8]) -> Option<serde_json::Value> {
    let json: std::borrow::Cow<'_, [u8]> =
        if bytes.starts_with(b"glTF") { gltf::Glb::from_slice(bytes).ok()?.json } else { bytes.into() };
    // Lossily: the glTF crate skips the strings of fields it ignores without
    // checking their UTF-8, so a strict parse here would miss documents it
    // accepts.
    serde_json::from_str(&String::from_utf8_lossy(&json)).ok()
}

/// Component count and byte size of an accessor's element; `None` for a
/// type or component type the glTF crate's validation refuses anyway.
fn element(acc: &serde_json::Value) -> Option<(&str, u64, u64)> {
    let ty = acc.get("type")?.as_str()?;
    let comps = match ty {
        "SCALAR" => 1,
        "VEC2" => 2,
        "VEC3" => 3,
        "VEC4" | "MAT2" => 4,
        "MAT3" => 9,
        "MAT4" => 16,
        _ => return None,
    };
    let size = match acc.get("componentType")?.as_u64()? {
        5120 | 5121 => 1,
        5122 | 5123 => 2,
        5125 | 5126 => 4,
        _ => return None,
    };
    Some((ty, acc.get("componentType")?.as_u64()?, comps * size))
}

/// Refuses what the glTF crate (1.4) does not validate but then indexes,
/// unwraps or computes with unchecked arithmetic — each a panic on a
/// hostile file, found by fuzzing (RELIABILITY.md):
///
/// - a primitive's attribute or morph target accessor index out of range
///   (its validation indexes `accessors[POSITION]` directly);
/// - an animation channel whose target node is out of range or whose path
///   is not one of glTF's four (never validated, unwrapped when read);
/// - accessors whose data does not fit their buffer view, with a count of
///   0, a stride shorter than an element (`count - 1` and the end offset
///   are computed unchecked), or, where this renderer reads them, a type or
///   component type other than the one the reader assumes (a debug
///   assertion in the crate, garbage in release).
fn precheck(bytes: &[u8]) -> Result<()> {
    use serde_json::Value;
    let Some(doc) = document_json(bytes) else { return Ok(()) };
    let list = |key: &str| doc.get(key).and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let (accessors, views, buffers) = (list("accessors"), list("bufferViews"), list("buffers"));
    let index = |v: &Value| v.as_u64().and_then(|i| usize::try_from(i).ok());
    let u = |v: &Value, key: &str, default: u64| v.get(key).map_or(Some(default), Value::as_u64);

    // Every accessor's extent, with checked arithmetic.
    let view_fits = |view: usize, offset: u64, stride: Option<u64>, elem: u64, count: u64, what: &str| -> Result<()> {
        let Some(v) = views.get(view) else {
            return Err(invalid(format!("{what}: buffer view {view} does not exist")));
        };
        let view_len = u(v, "byteLength", 0).unwrap_or(0);
        let view_off = u(v, "byteOffset", 0).unwrap_or(u64::MAX);
        let buffer = v.get("buffer").and_then(index).and_then(|b| buffers.get(b));
        let buffer_len = buffer.and_then(|b| u(b, "byteLength", 0)).unwrap_or(0);
        if view_off.checked_add(view_len).is_none_or(|end| end > buffer_len) {
            return Err(invalid(format!("{what}: buffer view {view} runs past its buffer")));
        }
        let stride = match stride.or_else(|| v.get("byteStride").and_then(Value::as_u64)) {
            Some(s) if s < elem => {
                return Err(invalid(format!("{what}: a stride of {s} bytes is shorter than its {elem}-byte elements")))
            }
            Some(s) => s,
            None => elem,
        };
        if count == 0 {
            return Err(invalid(format!("{what} has a count of 0")));
        }
        let end = (count - 1).checked_mul(stride).and_then(|e| e.checked_add(offset)).and_then(|e| e.checked_add(elem));
        if end.is_none_or(|end| end > view_len) {
            return Err(invalid(format!(
                "{what}: {count} elements from byte {offset} do not fit buffer view {view} ({view_len} bytes)"
            )));
        }
        Ok(())
    };
    for (i, acc) in accessors.iter().enumerate() {
        let what = format!("accessor {i}");
        let Some((_, _, elem)) = element(acc) else { continue };
        let Some(count) = u(acc, "count", 0) else { continue };
        if count == 0 {
            return Err(invalid(format!("{what} has a count of 0")));
        }
        if let Some(view) = acc.get("bufferView") {
            let view = index(view).ok_or_else(|| invalid(format!("{what}: bad bufferView")))?;
            view_fits(view, u(acc, "byteOffset", 0).unwrap_or(u64::MAX), None, elem, count, &what)?;
        }
        if let Some(sparse) = acc.get("sparse") {
            let n = u(sparse, "count", 0).unwrap_or(0);
            let idx = sparse.get("indices").unwrap_or(&Value::Null);
            let size = match u(idx, "componentType", 0) {
                Some(5121) => 1,
                Some(5123) => 2,
                Some(5125) => 4,
                _ => return Err(invalid(format!("{what}: sparse indices of an unknown component type"))),
            };
            for (part, elem) in [(idx, size), (sparse.get("values").unwrap_or(&Value::Null), elem)] {
                let view = part.get("bufferView").and_then(index).unwrap_or(usize::MAX);
                // Sparse views are read tightly packed.
                view_fits(
                    view,
                    u(part, "byteOffset", 0).unwrap_or(u64::MAX),
                    Some(elem),
                    elem,
                    n,
                    &format!("{what} sparse"),
                )?;
            }
        }
    }

    // Accessors where this renderer reads them: index in range, and the
    // element layout the glTF crate's reader assumes.
    let use_as = |value: &Value, what: &str, types: &[&str], components: &[u64]| -> Result<()> {
        let acc = index(value).and_then(|i| accessors.get(i));
        let acc = acc.ok_or_else(|| invalid(format!("{what}: accessor {value} does not exist")))?;
        if let Some((ty, comp, _)) = element(acc) {
            if !types.contains(&ty) || !components.contains(&comp) {
                return Err(invalid(format!(
                    "{what}: accessor {value} is {ty} of component type {comp}; expected {} of {components:?}",
                    types.join(" or ")
                )));
            }
        }
        Ok(())
    };
    const FLOAT: &[u64] = &[5126];
    const NORM: &[u64] = &[5126, 5121, 5123];
    const ANY: &[u64] = &[5126, 5120, 5121, 5122, 5123];
    let attribute = |name: &str, value: &Value, what: &str| -> Result<()> {
        let what = format!("{what} {name}");
        match name {
            "POSITION" | "NORMAL" => use_as(value, &what, &["VEC3"], FLOAT),
            "TANGENT" => use_as(value, &what, &["VEC4"], FLOAT),
            n if n.starts_with("TEXCOORD_") => use_as(value, &what, &["VEC2"], NORM),
            n if n.starts_with("COLOR_") => use_as(value, &what, &["VEC3", "VEC4"], NORM),
            n if n.starts_with("JOINTS_") => use_as(value, &what, &["VEC4"], &[5121, 5123]),
            n if n.starts_with("WEIGHTS_") => use_as(value, &what, &["VEC4"], NORM),
            _ => use_as(value, &what, &["SCALAR", "VEC2", "VEC3", "VEC4", "MAT2", "MAT3", "MAT4"], ANY),
        }
    };
    for (m, mesh) in list("meshes").iter().enumerate() {
        let prims = mesh.get("primitives").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        for (p, prim) in prims.iter().enumerate() {
            let what = format!("mesh {m} primitive {p}");
            if let Some(attrs) = prim.get("attributes").and_then(Value::as_object) {
                for (name, value) in attrs {
                    attribute(name, value, &what)?;
                }
            }
            if let Some(indices) = prim.get("indices") {
                use_as(indices, &format!("{what} indices"), &["SCALAR"], &[5121, 5123, 5125])?;
            }
            let targets = prim.get("targets").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
            for target in targets {
                for (name, value) in target.as_object().into_iter().flatten() {
                    attribute(if name == "TANGENT" { "NORMAL" } else { name }, value, &format!("{what} morph target"))?;
                }
            }
        }
    }
    for (s, skin) in list("skins").iter().enumerate() {
        if let Some(ibm) = skin.get("inverseBindMatrices") {
            use_as(ibm, &format!("skin {s} inverseBindMatrices"), &["MAT4"], FLOAT)?;
        }
    }
    // The crate unwraps an image's mimeType when it has a bufferView, and
    // its uri when it has none.
    for (i, image) in list("images").iter().enumerate() {
        let (uri, view, mime) = (image.get("uri"), image.get("bufferView"), image.get("mimeType"));
        if uri.is_none() && (view.is_none() || mime.is_none()) {
            return Err(invalid(format!("image {i} needs a uri, or a bufferView and a mimeType")));
        }
    }
    let nodes = list("nodes").len();
    for (a, anim) in list("animations").iter().enumerate() {
        let samplers = anim.get("samplers").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        let channels = anim.get("channels").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        for (c, ch) in channels.iter().enumerate() {
            let what = format!("animation {a} channel {c}");
            let target = ch.get("target").unwrap_or(&Value::Null);
            match target.get("node") {
                Some(n) if index(n).is_some_and(|n| n < nodes) => {}
                // No node: glTF allows it (an extension animates something
                // else); the crate then panics too, so refuse it here.
                _ => return Err(invalid(format!("{what} targets no node of the scene"))),
            }
            let path = target.get("path").and_then(Value::as_str).unwrap_or("");
            let output = match path {
                "translation" | "scale" => (&["VEC3"][..], FLOAT),
                "rotation" => (&["VEC4"][..], ANY),
                "weights" => (&["SCALAR"][..], ANY),
                other => return Err(invalid(format!("{what} animates {other:?}, not a glTF property"))),
            };
            let sampler = ch.get("sampler").and_then(index).and_then(|i| samplers.get(i));
            let Some(sampler) = sampler else { continue }; // validated by the crate
            use_as(sampler.get("input").unwrap_or(&Value::Null), &format!("{what} input"), &["SCALAR"], FLOAT)?;
            use_as(sampler.get("output").unwrap_or(&Value::Null), &format!("{what} output"), output.0, output.1)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// One triangle with UVs, a 2×1 PNG and `material`, as a .gltf with
    /// data URIs.
    fn triangle_with(material: serde_json::Value, required: &[&str]) -> Vec<u8> {
        let mut bin = Vec::new();
        for f in [0.0f32, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0] {
            bin.extend_from_slice(&f.to_le_bytes());
        }
        for f in [0.0f32, 0.0, 1.0, 0.0, 0.0, 1.0] {
            bin.extend_from_slice(&f.to_le_bytes());
        }
        let mut png = Vec::new();
        image::RgbaImage::from_raw(2, 1, vec![0, 0, 0, 255, 255, 255, 255, 255])
            .unwrap()
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        serde_json::to_vec(&json!({
            "asset": {"version": "2.0"},
            "extensionsUsed": ["KHR_texture_transform", "KHR_materials_ior", "KHR_materials_specular"],
            "extensionsRequired": required,
            "scenes": [{"nodes": [0]}],
            "nodes": [{"mesh": 0}],
            "meshes": [{"primitives": [{"attributes": {"POSITION": 0, "TEXCOORD_0": 1}, "material": 0}]}],
            "materials": [material],
            "textures": [{"source": 0}],
            "images": [{"uri": format!("data:image/png;base64,{}", b64(&png))}],
            "accessors": [
                {"bufferView": 0, "componentType": 5126, "count": 3, "type": "VEC3",
                 "min": [0.0, 0.0, 0.0], "max": [1.0, 1.0, 0.0]},
                {"bufferView": 1, "componentType": 5126, "count": 3, "type": "VEC2"}
            ],
            "bufferViews": [{"buffer": 0, "byteLength": 36}, {"buffer": 0, "byteOffset": 36, "byteLength": 24}],
            "buffers": [{"byteLength": 60, "uri": format!("data:application/octet-stream;base64,{}", b64(&bin))}]
        }))
        .unwrap()
    }

    #[test]
    fn texture_transforms_ior_and_specular_are_read() {
        let transform = json!({"KHR_texture_transform": {"offset": [0.5, 0.0], "rotation": 0.0, "scale": [2.0, 1.0]}});
        let file = triangle_with(
            json!({
                "pbrMetallicRoughness": {"baseColorTexture": {"index": 0, "extensions": transform}},
                "normalTexture": {"index": 0, "extensions": {"KHR_texture_transform": {"scale": [4.0, 4.0], "texCoord": 0}}},
                "extensions": {
                    "KHR_materials_ior": {"ior": 1.45},
                    "KHR_materials_specular": {"specularFactor": 0.5, "specularColorFactor": [1.0, 0.5, 0.25]}
                }
            }),
            // Implemented, so a file may require them.
            &["KHR_texture_transform"],
        );
        let scene = load(&file, None).unwrap();
        let m = &scene.materials[0];
        let base = m.base_color_tex.unwrap();
        assert_eq!(base.map(Vec2::new(0.25, 0.5)), Vec2::new(1.0, 0.5));
        assert_eq!(m.normal_tex.unwrap().map(Vec2::new(0.25, 0.5)), Vec2::new(1.0, 2.0));
        assert_eq!(m.ior, 1.45);
        assert_eq!(m.specular, Some(SpecularExt { factor: 0.5, color: Vec3::new(1.0, 0.5, 0.25) }));

        // Without the extensions: the defaults, and no transform at all.
        let plain =
            load(&triangle_with(json!({"pbrMetallicRoughness": {"baseColorTexture": {"index": 0}}}), &[]), None)
                .unwrap();
        let m = &plain.materials[0];
        assert_eq!((m.ior, m.specular, m.base_color_tex.unwrap().transform), (1.5, None, None));
    }

    #[test]
    fn impossible_transforms_and_iors_are_refused_by_name() {
        let nan_scale = triangle_with(
            json!({"pbrMetallicRoughness": {"baseColorTexture": {"index": 0,
                "extensions": {"KHR_texture_transform": {"scale": [1e39, 1.0]}}}}}),
            &[],
        );
        let err = load(&nan_scale, None).map(|_| ()).unwrap_err();
        assert!(format!("{err:?}").contains("KHR_texture_transform"), "{err:?}");
        let bad_ior = triangle_with(json!({"extensions": {"KHR_materials_ior": {"ior": 0.5}}}), &[]);
        let err = load(&bad_ior, None).map(|_| ()).unwrap_err();
        assert!(format!("{err:?}").contains("IOR 0.5"), "{err:?}");
        // A texture set past TEXCOORD_1, named by a transform's override.
        let set2 = triangle_with(
            json!({"pbrMetallicRoughness": {"baseColorTexture": {"index": 0,
                "extensions": {"KHR_texture_transform": {"texCoord": 2}}}}}),
            &[],
        );
        let err = load(&set2, None).map(|_| ()).unwrap_err();
        assert!(format!("{err:?}").contains("texture coordinate set 2"), "{err:?}");
    }
}
