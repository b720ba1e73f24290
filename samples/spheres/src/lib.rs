//! A small Monte Carlo path tracer over analytic spheres under a sky.
//!
//! It is the farm's demo job until the glTF path tracer lands, and the
//! compute-heavy float kernel of the sandbox benchmark (the same code runs
//! natively and as wasm). Pixels are pure: each sample draws from a
//! [`PixelRng`] addressed by (seed, frame, pixel, sample), the pixel filter
//! is a box sampled inside the pixel, and samples are summed in index order.
//!
//! Settings (`extra`): `{"bounces": N}` (default 6). The scene bytes are
//! ignored; the frame number orbits the camera.

use tessera_guest_sdk::{export_job, Job, JobError, JobSettings, PixelRng, SceneInfo, TileRequest, TileResult};

#[derive(Clone, Copy, Debug)]
struct V3(f32, f32, f32);

impl V3 {
    fn add(self, o: V3) -> V3 {
        V3(self.0 + o.0, self.1 + o.1, self.2 + o.2)
    }
    fn sub(self, o: V3) -> V3 {
        V3(self.0 - o.0, self.1 - o.1, self.2 - o.2)
    }
    fn mul(self, s: f32) -> V3 {
        V3(self.0 * s, self.1 * s, self.2 * s)
    }
    fn hadamard(self, o: V3) -> V3 {
        V3(self.0 * o.0, self.1 * o.1, self.2 * o.2)
    }
    fn dot(self, o: V3) -> f32 {
        self.0 * o.0 + self.1 * o.1 + self.2 * o.2
    }
    fn cross(self, o: V3) -> V3 {
        V3(self.1 * o.2 - self.2 * o.1, self.2 * o.0 - self.0 * o.2, self.0 * o.1 - self.1 * o.0)
    }
    fn normalize(self) -> V3 {
        self.mul(1.0 / self.dot(self).sqrt())
    }
}

struct Sphere {
    center: V3,
    radius: f32,
    albedo: V3,
    emission: V3,
    /// 0 = diffuse, otherwise a mirror with this much roughness jitter.
    mirror: f32,
}

pub struct Spheres {
    width: u32,
    height: u32,
    bounces: u32,
    spheres: Vec<Sphere>,
    camera: Camera,
}

struct Camera {
    origin: V3,
    forward: V3,
    right: V3,
    up: V3,
}

impl Spheres {
    fn scene() -> Vec<Sphere> {
        let s =
            |c: V3, r: f32, a: V3, e: V3, m: f32| Sphere { center: c, radius: r, albedo: a, emission: e, mirror: m };
        vec![
            s(V3(0.0, -1000.0, 0.0), 1000.0, V3(0.7, 0.7, 0.68), V3(0.0, 0.0, 0.0), 0.0),
            s(V3(0.0, 1.0, 0.0), 1.0, V3(0.8, 0.3, 0.2), V3(0.0, 0.0, 0.0), 0.0),
            s(V3(-2.2, 0.8, 0.6), 0.8, V3(0.9, 0.9, 0.9), V3(0.0, 0.0, 0.0), 0.05),
            s(V3(2.0, 0.6, -0.4), 0.6, V3(0.2, 0.4, 0.8), V3(0.0, 0.0, 0.0), 0.0),
            s(V3(0.9, 0.3, 1.6), 0.3, V3(0.0, 0.0, 0.0), V3(12.0, 9.0, 5.0), 0.0),
        ]
    }

    fn camera_for(frame: i32) -> Camera {
        let angle = frame as f32 * 0.05;
        let origin = V3(6.0 * angle.sin(), 2.5, 6.0 * angle.cos());
        let forward = V3(0.0, 0.8, 0.0).sub(origin).normalize();
        let right = forward.cross(V3(0.0, 1.0, 0.0)).normalize();
        let up = right.cross(forward);
        Camera { origin, forward, right, up }
    }

    fn hit(&self, o: V3, d: V3) -> Option<(f32, usize)> {
        let mut best: Option<(f32, usize)> = None;
        for (i, s) in self.spheres.iter().enumerate() {
            let oc = o.sub(s.center);
            let b = oc.dot(d);
            let c = oc.dot(oc) - s.radius * s.radius;
            let disc = b * b - c;
            if disc < 0.0 {
                continue;
            }
            let sq = disc.sqrt();
            let t = if -b - sq > 1e-3 { -b - sq } else { -b + sq };
            if t > 1e-3 && best.is_none_or(|(bt, _)| t < bt) {
                best = Some((t, i));
            }
        }
        best
    }

    fn sky(d: V3) -> V3 {
        let t = 0.5 * (d.1 + 1.0);
        V3(1.0, 1.0, 1.0).mul(1.0 - t).add(V3(0.45, 0.65, 1.0).mul(t)).mul(0.8)
    }

    fn radiance(&self, mut o: V3, mut d: V3, rng: &mut PixelRng) -> V3 {
        let mut throughput = V3(1.0, 1.0, 1.0);
        let mut l = V3(0.0, 0.0, 0.0);
        for _ in 0..self.bounces {
            let Some((t, i)) = self.hit(o, d) else {
                return l.add(throughput.hadamard(Self::sky(d)));
            };
            let s = &self.spheres[i];
            l = l.add(throughput.hadamard(s.emission));
            let p = o.add(d.mul(t));
            let n = p.sub(s.center).mul(1.0 / s.radius);
            let n = if n.dot(d) > 0.0 { n.mul(-1.0) } else { n };
            throughput = throughput.hadamard(s.albedo);
            o = p;
            d = if s.mirror > 0.0 {
                let r = d.sub(n.mul(2.0 * d.dot(n)));
                r.add(random_unit(rng).mul(s.mirror)).normalize()
            } else {
                // Cosine-weighted hemisphere sample: the Lambert BRDF's pdf cancels.
                n.add(random_unit(rng)).normalize()
            };
        }
        l
    }
}

fn random_unit(rng: &mut PixelRng) -> V3 {
    let z = 2.0 * rng.next_f32() - 1.0;
    let a = core::f32::consts::TAU * rng.next_f32();
    let r = (1.0 - z * z).max(0.0).sqrt();
    V3(r * a.cos(), r * a.sin(), z)
}

impl Job for Spheres {
    fn load(_scene: &[u8], settings: &JobSettings) -> Result<(Self, SceneInfo), JobError> {
        if settings.width == 0 || settings.height == 0 {
            return Err(JobError::InvalidSettings("width and height must be positive".into()));
        }
        let bounces = parse_bounces(&settings.extra)?;
        let job = Spheres {
            width: settings.width,
            height: settings.height,
            bounces,
            spheres: Self::scene(),
            camera: Self::camera_for(1),
        };
        let info = SceneInfo { frame_start: 1, frame_end: 48, width: 640, height: 360, cameras: vec!["orbit".into()] };
        Ok((job, info))
    }

    fn prepare_frame(&mut self, frame: i32) -> Result<(), JobError> {
        self.camera = Self::camera_for(frame);
        Ok(())
    }

    fn render_tile(&mut self, req: &TileRequest) -> Result<TileResult, JobError> {
        let mut out = TileResult::for_request(req);
        let aspect = self.width as f32 / self.height as f32;
        let fov = 0.6f32;
        let cam = &self.camera;
        for row in 0..req.rect.height {
            for col in 0..req.rect.width {
                let (x, y) = (req.rect.x + col, req.rect.y + row);
                let i = (row * req.rect.width + col) as usize;
                for s in req.samples.start..req.samples.start + req.samples.count {
                    let mut rng = PixelRng::new(req.seed, req.frame, x, y, s);
                    let u = ((x as f32 + rng.next_f32()) / self.width as f32 * 2.0 - 1.0) * aspect * fov;
                    let v = (1.0 - (y as f32 + rng.next_f32()) / self.height as f32 * 2.0) * fov;
                    let d = cam.forward.add(cam.right.mul(u)).add(cam.up.mul(v)).normalize();
                    let c = self.radiance(cam.origin, d, &mut rng);
                    // A renderer drops non-finite samples rather than poison a pixel.
                    if c.0.is_finite() && c.1.is_finite() && c.2.is_finite() {
                        out.add_sample(i, [c.0, c.1, c.2], 1.0);
                    }
                }
            }
        }
        Ok(out)
    }
}

fn parse_bounces(extra: &str) -> Result<u32, JobError> {
    // A tiny reader for {"bounces": N}: a JSON parser would double the module.
    let Some(pos) = extra.find("\"bounces\"") else { return Ok(6) };
    let rest = extra[pos + 9..].trim_start().trim_start_matches(':').trim_start();
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    match digits.parse::<u32>() {
        Ok(n @ 1..=64) => Ok(n),
        _ => Err(JobError::InvalidSettings(format!(
            "bounces must be 1..=64, got {:?}",
            rest.chars().take(10).collect::<String>()
        ))),
    }
}

export_job!(Spheres);

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_guest_sdk::{AovSet, Rect, SampleRange};

    fn settings(w: u32, h: u32) -> JobSettings {
        JobSettings { width: w, height: h, fps: 24.0, extra: "{}".into() }
    }

    fn req(rect: Rect, start: u32, count: u32) -> TileRequest {
        TileRequest { frame: 1, rect, samples: SampleRange { start, count }, seed: 42, aovs: AovSet::empty() }
    }

    #[test]
    fn a_tile_equals_the_same_region_of_the_full_frame() {
        let (mut job, _) = Spheres::load(&[], &settings(32, 16)).unwrap();
        let full = job.render_tile(&req(Rect { x: 0, y: 0, width: 32, height: 16 }, 0, 4)).unwrap();
        let tile = job.render_tile(&req(Rect { x: 8, y: 4, width: 8, height: 8 }, 0, 4)).unwrap();
        for row in 0..8 {
            for col in 0..8 {
                let f = ((4 + row) * 32 + 8 + col) as usize;
                let t = (row * 8 + col) as usize;
                assert_eq!(full.color[3 * f..3 * f + 3], tile.color[3 * t..3 * t + 3]);
                assert_eq!(full.weight[f], tile.weight[t]);
            }
        }
    }

    #[test]
    fn the_image_is_lit_and_bounded() {
        let (mut job, _) = Spheres::load(&[], &settings(16, 8)).unwrap();
        let r = job.render_tile(&req(Rect { x: 0, y: 0, width: 16, height: 8 }, 0, 8)).unwrap();
        let mean = r.color.iter().sum::<f32>() / r.weight.iter().sum::<f32>() / 3.0;
        assert!(mean > 0.05 && mean < 5.0, "mean radiance {mean}");
        assert!(r.weight.iter().all(|w| *w > 0.0));
    }

    #[test]
    fn settings_are_checked() {
        assert!(matches!(Spheres::load(&[], &settings(0, 8)), Err(JobError::InvalidSettings(_))));
        let mut s = settings(8, 8);
        s.extra = r#"{"bounces": 500}"#.into();
        assert!(matches!(Spheres::load(&[], &s), Err(JobError::InvalidSettings(_))));
        s.extra = r#"{"bounces": 3}"#.into();
        assert_eq!(Spheres::load(&[], &s).unwrap().0.bounces, 3);
    }
}
