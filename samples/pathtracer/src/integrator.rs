//! Unidirectional path tracing with next-event estimation (emissive
//! triangles and punctual lights), multiple importance sampling (power
//! heuristic) between light and BSDF sampling, and Russian roulette.

use glam::Vec3;

use crate::bsdf::Bsdf;
use crate::bvh::Ray;
use crate::frame::{world_triangle, Frame};
use crate::sampler::Sampler;
use crate::scene::{LightKind, Scene};
use crate::settings::Settings;
use crate::shade;

/// What a camera path returns: radiance and the first hit's AOVs.
#[derive(Clone, Copy, Debug, Default)]
pub struct PathResult {
    pub radiance: Vec3,
    pub albedo: Vec3,
    pub normal: Vec3,
    pub depth: f32,
}

fn power_heuristic(a: f32, b: f32) -> f32 {
    let (a2, b2) = (a * a, b * b);
    if a2 + b2 > 0.0 {
        a2 / (a2 + b2)
    } else {
        0.0
    }
}

/// Moves a ray origin off the surface along the geometric normal, towards
/// the side `dir` leaves on, by an amount that scales with the coordinates.
fn offset(p: glam::Vec3, ng: Vec3, dir: Vec3) -> Vec3 {
    let eps = 1e-4 * p.abs().max_element().max(1.0);
    if dir.dot(ng) >= 0.0 {
        p + ng * eps
    } else {
        p - ng * eps
    }
}

/// Traces one camera path.
pub fn trace(scene: &Scene, frame: &Frame, settings: &Settings, mut ray: Ray, rng: &mut Sampler) -> PathResult {
    let mut out = PathResult::default();
    let mut beta = Vec3::ONE;
    let mut prev_bsdf_pdf = 0.0f32;
    let mut prev_origin = ray.origin;
    let background = settings.background();

    // Cycles' count: `max_bounces` scatterings after the camera ray's hit,
    // so the last vertex (depth `max_bounces + 1`) only gathers emission.
    let last = settings.max_bounces + 1;
    for depth in 0..=last {
        let Some(hit) = frame.intersect(scene, &ray, f32::INFINITY) else {
            out.radiance += beta * background;
            if depth == 0 {
                out.albedo = background;
                out.depth = f32::INFINITY;
            }
            break;
        };
        let sp = shade::surface(scene, frame, &hit, ray.origin, ray.dir);
        if depth == 0 {
            out.albedo = sp.base_color;
            out.normal = sp.n;
            out.depth = hit.t;
        }

        // Light the path found by itself, weighted against light sampling.
        if sp.emission.max_element() > 0.0 {
            let inst = &frame.instances[hit.instance as usize];
            let weight = match inst.first_emitter {
                Some(first) if depth > 0 => {
                    let [a, b, c] = world_triangle(scene, inst, hit.tri);
                    let area = 0.5 * (b - a).cross(c - a).length();
                    let cos_l = sp.ng.dot(-ray.dir).abs();
                    let pmf = frame.emitter_pmf[(first + hit.tri) as usize];
                    let dist2 = (sp.position - prev_origin).length_squared();
                    let light_pdf = if area > 0.0 && cos_l > 0.0 { pmf * dist2 / (cos_l * area) } else { 0.0 };
                    power_heuristic(prev_bsdf_pdf, light_pdf)
                }
                _ => 1.0,
            };
            out.radiance += beta * sp.emission * weight;
        }
        if depth == last {
            break;
        }

        let wo = -ray.dir;
        let bsdf = Bsdf::new(sp.n, sp.base_color, sp.metallic, sp.roughness, scene.shading).with_specular(sp.specular);

        // Next-event estimation: one emissive triangle, chosen by power.
        if let Some(e) = frame.pick_emitter(rng.next_1d()) {
            let emitter = frame.emitters[e];
            let inst = &frame.instances[emitter.instance as usize];
            let [a, b, c] = world_triangle(scene, inst, emitter.tri);
            let (mut s, mut t) = rng.next_2d();
            if s + t > 1.0 {
                (s, t) = (1.0 - s, 1.0 - t);
            }
            let q = a + (b - a) * s + (c - a) * t;
            let cross = (b - a).cross(c - a);
            let area = 0.5 * cross.length();
            let nl = cross.normalize_or_zero();
            let to_light = q - sp.position;
            let dist2 = to_light.length_squared();
            let wi = to_light / dist2.sqrt();
            let cos_l = nl.dot(-wi);
            let mesh = &scene.meshes[inst.mesh];
            let material = &scene.materials[mesh.material];
            let facing = if inst.mirrored { cos_l < 0.0 } else { cos_l > 0.0 };
            if area > 0.0 && cos_l != 0.0 && (facing || material.double_sided) && wi.dot(sp.ng) > 0.0 {
                let (f, bsdf_pdf) = bsdf.eval(wo, wi);
                if f.max_element() > 0.0 {
                    let le = crate::texturing::emission(scene, mesh, material, emitter.tri, s, t);
                    let light_pdf = frame.emitter_pmf[e] * dist2 / (cos_l.abs() * area);
                    let origin = offset(sp.position, sp.ng, wi);
                    let shadow = Ray::new(origin, wi);
                    if !frame.occluded(scene, &shadow, dist2.sqrt() * (1.0 - 1e-3)) {
                        out.radiance += beta * f * le * power_heuristic(light_pdf, bsdf_pdf) / light_pdf;
                    }
                }
            }
        }

        // Next-event estimation: punctual lights (delta: no MIS).
        for light in &frame.lights {
            let (wi, dist, intensity) = match light.kind {
                LightKind::Directional => (-light.direction, f32::INFINITY, light.power),
                LightKind::Point | LightKind::Spot { .. } => {
                    let d = light.position - sp.position;
                    let dist2 = d.length_squared();
                    if dist2 <= 0.0 {
                        continue;
                    }
                    let dist = dist2.sqrt();
                    let wi = d / dist;
                    let mut i = light.power / dist2;
                    if let Some(range) = light.range.filter(|r| *r > 0.0) {
                        // glTF's recommended windowing of inverse-square falloff.
                        let x = (dist / range).powi(4);
                        i *= (1.0 - x).clamp(0.0, 1.0).powi(2);
                    }
                    if let Some(cone) = &light.cone {
                        i *= cone.falloff(light.direction.dot(-wi));
                    }
                    (wi, dist, i)
                }
            };
            if intensity.max_element() <= 0.0 || wi.dot(sp.ng) <= 0.0 {
                continue;
            }
            let (f, _) = bsdf.eval(wo, wi);
            if f.max_element() <= 0.0 {
                continue;
            }
            let shadow = Ray::new(offset(sp.position, sp.ng, wi), wi);
            let t_max = if dist.is_finite() { dist * (1.0 - 1e-3) } else { f32::INFINITY };
            if !frame.occluded(scene, &shadow, t_max) {
                out.radiance += beta * f * intensity;
            }
        }

        // Continue the path by sampling the BSDF.
        let lobe = rng.next_1d();
        let (u1, u2) = rng.next_2d();
        let Some(s) = bsdf.sample(wo, lobe, u1, u2) else { break };
        if s.wi.dot(sp.ng) <= 0.0 {
            break;
        }
        beta *= s.weight;
        prev_bsdf_pdf = s.pdf;
        prev_origin = sp.position;
        if depth >= 3 {
            let q = beta.max_element().clamp(0.05, 0.95);
            if rng.next_1d() >= q {
                break;
            }
            beta /= q;
        }
        ray = Ray::new(offset(sp.position, sp.ng, s.wi), s.wi);
    }
    out
}
