//! The glTF 2.0 reference BRDF (spec Appendix B): Lambert diffuse and a GGX
//! microfacet specular lobe with Smith height-correlated visibility and
//! Schlick Fresnel, mixed by `metallic`.

use std::f32::consts::{FRAC_1_PI, PI, TAU};

use glam::Vec3;

/// Smallest GGX α: below it the lobe is a near-mirror whose pdf overflows.
const MIN_ALPHA: f32 = 1e-3;

/// The BRDF at a shading point, in a local frame where the normal is +Z.
#[derive(Clone, Copy, Debug)]
pub struct Bsdf {
    base: Vec3,
    metallic: f32,
    alpha: f32,
    t: Vec3,
    b: Vec3,
    n: Vec3,
}

/// A sampled direction with `f·cos/pdf` and the pdf (solid angle).
#[derive(Clone, Copy, Debug)]
pub struct BsdfSample {
    pub wi: Vec3,
    pub weight: Vec3,
    pub pdf: f32,
}

impl Bsdf {
    pub fn new(n: Vec3, base: Vec3, metallic: f32, roughness: f32) -> Bsdf {
        let (t, b) = n.any_orthonormal_pair();
        Bsdf { base, metallic, alpha: (roughness * roughness).max(MIN_ALPHA), t, b, n }
    }

    fn local(&self, v: Vec3) -> Vec3 {
        Vec3::new(v.dot(self.t), v.dot(self.b), v.dot(self.n))
    }

    fn world(&self, v: Vec3) -> Vec3 {
        self.t * v.x + self.b * v.y + self.n * v.z
    }

    fn d(&self, cos_h: f32) -> f32 {
        let a2 = self.alpha * self.alpha;
        let k = cos_h * cos_h * (a2 - 1.0) + 1.0;
        a2 / (PI * k * k)
    }

    fn visibility(&self, nl: f32, nv: f32) -> f32 {
        let a2 = self.alpha * self.alpha;
        let gv = nl * (nv * nv * (1.0 - a2) + a2).sqrt();
        let gl = nv * (nl * nl * (1.0 - a2) + a2).sqrt();
        let s = gv + gl;
        if s > 0.0 {
            0.5 / s
        } else {
            0.0
        }
    }

    fn g1(&self, c: f32) -> f32 {
        let a2 = self.alpha * self.alpha;
        2.0 * c / (c + (a2 + (1.0 - a2) * c * c).sqrt())
    }

    /// Probability of sampling the specular lobe, from an estimate of how
    /// much each lobe reflects towards `wo`.
    fn spec_prob(&self, nv: f32) -> f32 {
        let f = (1.0 - nv.clamp(0.0, 1.0)).powi(5);
        let spec = self.metallic + (1.0 - self.metallic) * (0.04 + 0.96 * f);
        let diffuse = (1.0 - self.metallic) * (1.0 - f) * crate::frame::luminance(self.base).max(0.0);
        (spec / (spec + diffuse).max(1e-6)).clamp(0.05, 1.0)
    }

    /// `f(wo, wi)·cos θi` and the pdf of sampling `wi` (world directions,
    /// both pointing away from the surface).
    pub fn eval(&self, wo: Vec3, wi: Vec3) -> (Vec3, f32) {
        let (o, i) = (self.local(wo), self.local(wi));
        if o.z <= 0.0 || i.z <= 0.0 {
            return (Vec3::ZERO, 0.0);
        }
        let h = (o + i).normalize_or_zero();
        if h == Vec3::ZERO {
            return (Vec3::ZERO, 0.0);
        }
        let vh = o.dot(h).max(0.0);
        let schlick = (1.0 - vh).powi(5);
        let dv = self.d(h.z) * self.visibility(i.z, o.z);
        let f_dielectric = 0.04 + 0.96 * schlick;
        let f_metal = self.base + (Vec3::ONE - self.base) * schlick;
        let dielectric = self.base * FRAC_1_PI * (1.0 - f_dielectric) + Vec3::splat(f_dielectric * dv);
        let metal = f_metal * dv;
        let f = dielectric * (1.0 - self.metallic) + metal * self.metallic;

        let ps = self.spec_prob(o.z);
        let pdf_spec = self.g1(o.z) * self.d(h.z) / (4.0 * o.z);
        let pdf = ps * pdf_spec + (1.0 - ps) * i.z * FRAC_1_PI;
        (f * i.z, pdf)
    }

    /// Samples an incoming direction for outgoing `wo` with three uniforms.
    pub fn sample(&self, wo: Vec3, u0: f32, u1: f32, u2: f32) -> Option<BsdfSample> {
        let o = self.local(wo);
        if o.z <= 0.0 {
            return None;
        }
        let i = if u0 < self.spec_prob(o.z) {
            let h = sample_vndf(o, self.alpha, u1, u2);
            let i = 2.0 * o.dot(h) * h - o;
            if i.z <= 0.0 {
                return None;
            }
            i
        } else {
            cosine_hemisphere(u1, u2)
        };
        let wi = self.world(i).normalize();
        let (f, pdf) = self.eval(wo, wi);
        (pdf > 0.0 && f.max_element() > 0.0).then(|| BsdfSample { wi, weight: f / pdf, pdf })
    }
}

pub fn cosine_hemisphere(u1: f32, u2: f32) -> Vec3 {
    let r = u1.sqrt();
    let phi = TAU * u2;
    Vec3::new(r * phi.cos(), r * phi.sin(), (1.0 - u1).max(0.0).sqrt())
}

/// Heitz 2018, "Sampling the GGX Distribution of Visible Normals".
fn sample_vndf(o: Vec3, alpha: f32, u1: f32, u2: f32) -> Vec3 {
    let vh = Vec3::new(alpha * o.x, alpha * o.y, o.z).normalize();
    let lensq = vh.x * vh.x + vh.y * vh.y;
    let t1 = if lensq > 0.0 { Vec3::new(-vh.y, vh.x, 0.0) / lensq.sqrt() } else { Vec3::X };
    let t2 = vh.cross(t1);
    let r = u1.sqrt();
    let phi = TAU * u2;
    let p1 = r * phi.cos();
    let s = 0.5 * (1.0 + vh.z);
    let p2 = (1.0 - s) * (1.0 - p1 * p1).max(0.0).sqrt() + s * r * phi.sin();
    let nh = t1 * p1 + t2 * p2 + vh * (1.0 - p1 * p1 - p2 * p2).max(0.0).sqrt();
    Vec3::new(alpha * nh.x, alpha * nh.y, nh.z.max(0.0)).normalize()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_guest_sdk::PixelRng;

    /// Monte Carlo estimate of the directional albedo ∫ f cos dωi for `wo`,
    /// by sampling the BSDF.
    fn albedo(bsdf: &Bsdf, wo: Vec3, n: u32) -> Vec3 {
        let mut rng = PixelRng::new(1, 0, 0, 0, 0);
        let mut sum = Vec3::ZERO;
        for _ in 0..n {
            if let Some(s) = bsdf.sample(wo, rng.next_f32(), rng.next_f32(), rng.next_f32()) {
                sum += s.weight;
            }
        }
        sum / n as f32
    }

    #[test]
    fn white_lambert_conserves_energy() {
        let b = Bsdf::new(Vec3::Z, Vec3::ONE, 0.0, 1.0);
        let a = albedo(&b, Vec3::new(0.3, 0.0, 0.95).normalize(), 200_000);
        // Diffuse (1 − F) plus a rough specular F: close to, and not above, 1.
        assert!(a.x > 0.9 && a.x < 1.01, "{a}");
    }

    #[test]
    fn a_white_metal_never_gains_energy_and_matches_the_analytic_albedo() {
        let wo = Vec3::new(0.2, 0.1, 0.9).normalize();
        for roughness in [0.05, 0.3, 0.7, 1.0] {
            let b = Bsdf::new(Vec3::Z, Vec3::ONE, 1.0, roughness);
            let a = albedo(&b, wo, 200_000);
            assert!(a.x < 1.02, "roughness {roughness}: {a}");
            if roughness <= 0.3 {
                assert!(a.x > 0.9, "roughness {roughness}: {a}");
            }
        }
        // At α = 1, D = 1/π and V = 1/(2(cos θi + cos θo)), so the albedo is
        // ∫₀¹ μ/(μ + μo) dμ = 1 − μo·ln((1 + μo)/μo): single-scattering GGX
        // loses most of the energy of a very rough metal.
        let mu = wo.z;
        let exact = 1.0 - mu * ((1.0 + mu) / mu).ln();
        let a = albedo(&Bsdf::new(Vec3::Z, Vec3::ONE, 1.0, 1.0), wo, 400_000).x;
        assert!((a - exact).abs() < 0.02 * exact, "{a} vs {exact}");
    }

    #[test]
    fn sampling_pdf_matches_eval() {
        let b = Bsdf::new(Vec3::Z, Vec3::new(0.5, 0.4, 0.3), 0.3, 0.4);
        let wo = Vec3::new(0.5, 0.0, 0.8).normalize();
        let mut rng = PixelRng::new(3, 0, 0, 0, 0);
        for _ in 0..1000 {
            if let Some(s) = b.sample(wo, rng.next_f32(), rng.next_f32(), rng.next_f32()) {
                let (f, pdf) = b.eval(wo, s.wi);
                assert!((pdf - s.pdf).abs() <= 1e-4 * pdf.max(1.0));
                assert!(((f / pdf) - s.weight).abs().max_element() < 1e-3);
            }
        }
    }

    #[test]
    fn pdf_integrates_to_one() {
        // ∫ pdf dω over the hemisphere by uniform sampling.
        let b = Bsdf::new(Vec3::Z, Vec3::splat(0.6), 0.5, 0.5);
        let wo = Vec3::new(0.3, 0.2, 0.93).normalize();
        let mut rng = PixelRng::new(9, 0, 0, 0, 0);
        let n = 400_000;
        let mut sum = 0.0f64;
        for _ in 0..n {
            let z = rng.next_f32();
            let phi = TAU * rng.next_f32();
            let r = (1.0 - z * z).max(0.0).sqrt();
            let wi = Vec3::new(r * phi.cos(), r * phi.sin(), z);
            sum += f64::from(b.eval(wo, wi).1) * TAU as f64;
        }
        let integral = sum / n as f64;
        // Below 1 by the specular lobe's mass that reflects under the horizon
        // (those samples are rejected), never above.
        assert!(integral > 0.9 && integral < 1.02, "{integral}");
    }
}
