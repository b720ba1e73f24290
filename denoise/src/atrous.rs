//! The edge-avoiding à-trous wavelet filter (Dammertz et al. 2010) with
//! SVGF's variance-guided luminance weight (Schied et al. 2017, §4.3).
//!
//! Iteration `i` convolves with the 5×5 B3-spline kernel
//! `h = [1/16, 1/4, 3/8, 1/4, 1/16]` whose taps are `2^i` pixels apart
//! ("with holes"), so five iterations reach 62 pixels for 25 taps each.
//! Each tap `q` of pixel `p` is weighted by
//!
//! ```text
//! w = h(dx)·h(dy) · max(0, n_p·n_q)^σn · exp(−|l_p − l_q| / (σl·√g(Var_p) + ε) − Δalbedo / σa)
//! ```
//!
//! where `l` is the demodulated luminance, `g(Var)` the variance blurred by
//! a 3×3 Gaussian (SVGF: it makes the weight less noisy) and `Δalbedo` the
//! relative distance of the demodulation factors. The variance is carried
//! through the iterations as the filter changes it:
//! `Var'_p = Σ w² Var_q / (Σ w)²`, so later, wider passes see the noise
//! that is left, not the input's.
//!
//! The weighted mean is written as `c_p + Σ w (c_q − c_p) / Σ w`: for a
//! flat neighbourhood every difference is exactly 0, so a constant image
//! comes out bit for bit unchanged (`Σ w c_q / Σ w` would round).
//!
//! A pixel whose value is missing (NaN on input) takes the guide-weighted
//! mean of its valid taps and is valid from then on, so holes fill from
//! their own surface.

use crate::guides::Guides;
use crate::math::{exp_neg, luminance};
use crate::variance::window;

const KERNEL: [f32; 5] = [1.0 / 16.0, 1.0 / 4.0, 3.0 / 8.0, 1.0 / 4.0, 1.0 / 16.0];

/// Keeps the luminance weight's denominator positive where the variance is 0.
const EPSILON: f32 = 1e-10;

/// The signal the iterations pass along.
pub(crate) struct Signal {
    /// Demodulated RGB per pixel.
    pub irr: Vec<[f32; 3]>,
    /// Variance of each pixel's demodulated luminance.
    pub var: Vec<f32>,
    /// Whether the pixel has a value (see the module docs on missing pixels).
    pub valid: Vec<bool>,
}

/// Runs `iterations` passes (step 1, 2, 4, …).
pub(crate) fn filter(g: &Guides, mut s: Signal, iterations: u32, sigma_luminance: f32, threads: usize) -> Signal {
    let n = s.irr.len();
    let threads = match threads {
        0 if n < PARALLEL_FROM => 1,
        0 => std::thread::available_parallelism().map_or(1, |t| t.get()).min(8),
        t => t,
    };
    for i in 0..iterations {
        s = pass(g, &s, 1usize << i, sigma_luminance, threads);
    }
    s
}

/// The 3×3 Gaussian of the variance over valid pixels, times the guide
/// weights so that a noisier surface next to this one does not count.
fn blur_variance(g: &Guides, s: &Signal) -> Vec<f32> {
    const G: [f32; 3] = [0.25, 0.5, 0.25];
    (0..s.var.len())
        .map(|p| {
            if !s.valid[p] {
                return 0.0;
            }
            let (px, py) = (p % g.width, p / g.width);
            let (mut sw, mut sv) = (0.0f32, 0.0f32);
            window(g, p, 1, |q| {
                if s.valid[q] {
                    let (qx, qy) = (q % g.width, q / g.width);
                    let w = G[qx + 1 - px] * G[qy + 1 - py] * if q == p { 1.0 } else { g.geometric_weight(p, q) };
                    sw += w;
                    sv += w * s.var[q];
                }
            });
            sv / sw
        })
        .collect()
}

fn pass(g: &Guides, s: &Signal, step: usize, sigma_luminance: f32, threads: usize) -> Signal {
    let lum: Vec<f32> = s.irr.iter().map(|&c| luminance(c)).collect();
    let gvar = blur_variance(g, s);
    let mut out = Signal { irr: s.irr.clone(), var: s.var.clone(), valid: s.valid.clone() };
    let tap = Tap { g, s, lum: &lum, gvar: &gvar, step: step as isize, sigma_luminance };
    // Each pixel of the pass reads only the previous pass: rows split
    // between threads give the same bits as one thread.
    let chunk = s.irr.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|scope| {
        let parts = out.irr.chunks_mut(chunk).zip(out.var.chunks_mut(chunk)).zip(out.valid.chunks_mut(chunk));
        for (k, ((irr, var), valid)) in parts.enumerate() {
            let tap = &tap;
            scope.spawn(move || {
                for (i, ((irr, var), valid)) in irr.iter_mut().zip(var).zip(valid).enumerate() {
                    if let Some((c, v)) = tap.pixel(k * chunk + i) {
                        (*irr, *var, *valid) = (c, v, true);
                    }
                }
            });
        }
    });
    out
}

/// Frames smaller than this many pixels are filtered on one thread unless
/// the settings name a number.
const PARALLEL_FROM: usize = 1 << 16;

/// What one pass reads.
struct Tap<'a> {
    g: &'a Guides,
    s: &'a Signal,
    lum: &'a [f32],
    gvar: &'a [f32],
    step: isize,
    sigma_luminance: f32,
}

impl Tap<'_> {
    /// Pixel `p` after the pass (colour and variance), or `None` for a
    /// missing pixel with no valid tap: it stays missing for a wider pass
    /// to fill.
    fn pixel(&self, p: usize) -> Option<([f32; 3], f32)> {
        let (g, s, lum, step) = (self.g, self.s, self.lum, self.step);
        let (w, h) = (g.width as isize, g.height as isize);
        let (px, py) = ((p % g.width) as isize, (p / g.width) as isize);
        let centre_valid = s.valid[p];
        let cp = s.irr[p];
        let inv_scale = 1.0 / (self.sigma_luminance * self.gvar[p].sqrt() + EPSILON);
        let (mut sw, mut sv) = (0.0f32, 0.0f32);
        let mut acc = [0.0f32; 3];
        for (ky, hy) in KERNEL.iter().enumerate() {
            let qy = py + (ky as isize - 2) * step;
            if qy < 0 || qy >= h {
                continue;
            }
            for (kx, hx) in KERNEL.iter().enumerate() {
                let qx = px + (kx as isize - 2) * step;
                if qx < 0 || qx >= w {
                    continue;
                }
                let q = (qy * w + qx) as usize;
                if !s.valid[q] {
                    continue;
                }
                let hk = hx * hy;
                let wq = if q == p {
                    hk
                } else {
                    let wn = g.normal_weight(p, q);
                    if wn == 0.0 {
                        continue;
                    }
                    let lum_term = if centre_valid { (lum[p] - lum[q]).abs() * inv_scale } else { 0.0 };
                    hk * wn * exp_neg(lum_term + g.albedo_term(p, q))
                };
                if wq <= 0.0 {
                    continue;
                }
                let cq = s.irr[q];
                if centre_valid {
                    acc = [acc[0] + wq * (cq[0] - cp[0]), acc[1] + wq * (cq[1] - cp[1]), acc[2] + wq * (cq[2] - cp[2])];
                } else {
                    acc = [acc[0] + wq * cq[0], acc[1] + wq * cq[1], acc[2] + wq * cq[2]];
                }
                sw += wq;
                sv += wq * wq * s.var[q];
            }
        }
        if sw <= 0.0 {
            return None;
        }
        let inv = 1.0 / sw;
        let c = if centre_valid {
            [cp[0] + acc[0] * inv, cp[1] + acc[1] * inv, cp[2] + acc[2] * inv]
        } else {
            [acc[0] * inv, acc[1] * inv, acc[2] * inv]
        };
        Some((c, sv * inv * inv))
    }
}
