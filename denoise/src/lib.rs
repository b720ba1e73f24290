//! A deterministic CPU denoiser for path-traced frames.
//!
//! The coordinator runs it on assembled frames and `tessera render` on its
//! output; both must give the same pixels, and a frame manifest names the
//! algorithm that made them ([`ALGORITHM`]). So the filter is plain `f32`
//! arithmetic in a fixed order per pixel, with no platform `exp`/`powf`
//! (see `math.rs`): the same inputs give the same output bits on every
//! x86-64 and aarch64 host. Each à-trous pass computes every pixel from
//! the previous pass alone, so its rows are split between threads (frames
//! of 65,536 pixels or more) without changing a bit.
//!
//! # Algorithm
//!
//! SVGF's spatial filter (Schied et al., *Spatiotemporal Variance-Guided
//! Filtering*, HPG 2017) without its temporal part, which is the
//! edge-avoiding à-trous wavelet transform of Dammertz et al.
//! (*Edge-Avoiding À-Trous Wavelet Transform for fast Global Illumination
//! Filtering*, HPG 2010) with a variance-driven luminance weight:
//!
//! 1. **Demodulate** (`guides.rs`): colour ÷ first-hit albedo per channel
//!    (albedo floored at [`ALBEDO_FLOOR`]), so textures are not blurred:
//!    they are multiplied back at the end. NaN/∞ pixels become missing.
//! 2. **Clamp fireflies** (`variance.rs`): a pixel's luminance is limited
//!    to the brightest of its 3×3 neighbours on the same surface, so lone
//!    peaks go and lines, edges and wider highlights stay.
//! 3. **Variance** (`variance.rs`): the caller's plane, or a robust
//!    estimate from the image (the median of high-pass residuals in a 7×7
//!    window, after Donoho & Johnstone), which, unlike SVGF's plain spatial
//!    variance, does not mistake edges for noise.
//! 4. **À-trous** (`atrous.rs`): 5 passes of a 5×5 B3-spline kernel with
//!    holes (steps 1…16), each tap weighted by normals (`(n·n')^128`),
//!    demodulated albedo (Gaussian in the relative difference) and
//!    luminance difference against `σl·√Var` (SVGF); the variance is
//!    filtered along.
//! 5. **Remodulate**: `out = colour + albedo·(filtered − demodulated)`, so
//!    a pixel the filter did not change comes out bit for bit as it went in.
//!
//! Guides are optional: without albedo nothing is demodulated, without
//! normals the normal weight is 1. Missing (non-finite) pixels are filled
//! from their valid neighbours; a flat or black image stays exactly flat
//! or black, and so does any pixel whose neighbourhood is flat.
//!
//! # Limits
//!
//! A spatial filter cannot tell noise from detail smaller than the noise:
//! one-pixel highlights are flattened by the firefly clamp, and lighting
//! that differs by a few per cent between neighbouring pixels of the same
//! albedo is averaged. On the sample scenes at 16 spp (`tests/quality.rs`)
//! it beats the raw 128-spp frame on the Cornell box, but on the turntable
//! (already nearly converged at 16 spp) it only improves the raw frame
//! slightly. Cost: about 5 s per megapixel on one core (release build).
//!
//! ```
//! use tessera_denoise::{denoise, Frame, Settings};
//! let color = vec![0.5f32; 3 * 4 * 2];
//! let frame = Frame { width: 4, height: 2, color: &color, albedo: None, normal: None, variance: None };
//! let out = denoise(&frame, &Settings::default()).unwrap();
//! assert_eq!(out, color); // flat in, flat out
//! ```

mod atrous;
mod guides;
mod math;
mod variance;

pub use guides::{ALBEDO_FLOOR, MAX_RADIANCE};

/// The algorithm and its version, for frame manifests. Bump the version
/// whenever the output bits for some input change.
pub const ALGORITHM: &str = "tessera-atrous-svgf/1";

/// A frame to denoise: planes are row-major, `width × height` pixels.
#[derive(Clone, Copy, Debug)]
pub struct Frame<'a> {
    pub width: usize,
    pub height: usize,
    /// Linear RGB radiance (the pixel's sample mean), 3 floats per pixel.
    pub color: &'a [f32],
    /// First-hit albedo (base colour) averaged over the pixel's samples, 3
    /// floats per pixel. Enables demodulation: textures stay sharp.
    pub albedo: Option<&'a [f32]>,
    /// First-hit world normal averaged over the samples, 3 floats per pixel
    /// (any length; zero where nothing was hit). Stops the filter at
    /// creases and silhouettes.
    pub normal: Option<&'a [f32]>,
    /// Variance of each pixel's *mean* luminance (Rec. 709 weights), 1
    /// float per pixel. Estimated from the image when absent or where an
    /// entry is negative or not finite.
    pub variance: Option<&'a [f32]>,
}

/// Filter parameters. The defaults are SVGF's (σl = 4, σn = 128, five
/// iterations) plus this crate's albedo and firefly terms, tuned on the
/// sample scenes at 16 spp (`tests/quality.rs`).
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// À-trous passes; the footprint radius is `2^(iterations+1) − 2`
    /// pixels. 0 only clamps fireflies (missing pixels then come out 0).
    /// Default 5;
    /// at most [`Settings::MAX_ITERATIONS`].
    pub iterations: u32,
    /// Luminance edge-stopping, in noise standard deviations: larger blurs
    /// more. Default 4.
    pub sigma_luminance: f32,
    /// Exponent of the normal weight `max(0, n·n')^e`: larger keeps
    /// creases sharper. An integer so the power is exact. Default 128.
    pub normal_exponent: u32,
    /// Albedo edge-stopping scale for the relative albedo difference
    /// (0…1): smaller keeps material edges sharper. Default 0.05.
    pub sigma_albedo: f32,
    /// Firefly clamp: a pixel may be at most `k` times as bright as the
    /// brightest of its 3×3 neighbours on the same surface; `None` for no
    /// clamp. Default `Some(1.0)`.
    pub firefly_k: Option<f32>,
    /// Radius of the variance estimate's window. Default 3 (7×7).
    pub variance_radius: u32,
    /// Threads each pass splits its rows between; 0 (the default): the
    /// machine's cores, up to 8, for frames of 65,536 pixels or more. The
    /// output is the same bits whatever the number.
    pub threads: usize,
}

impl Settings {
    /// Beyond this the taps are further apart than any frame is wide.
    pub const MAX_ITERATIONS: u32 = 12;
    /// Bounds the estimate's cost (`(2r+1)²` taps per pixel).
    pub const MAX_VARIANCE_RADIUS: u32 = 8;
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            iterations: 5,
            sigma_luminance: 4.0,
            normal_exponent: 128,
            sigma_albedo: 0.05,
            firefly_k: Some(1.0),
            variance_radius: 3,
            threads: 0,
        }
    }
}

/// Why a frame could not be denoised: the caller's shapes or settings.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DenoiseError {
    #[error("{plane} has {got} floats, expected {expected} ({width}×{height} pixels × {channels})")]
    PlaneSize { plane: &'static str, got: usize, expected: usize, width: usize, height: usize, channels: usize },
    #[error("a {width}×{height} frame is too large to address")]
    TooLarge { width: usize, height: usize },
    #[error("invalid denoise setting: {0}")]
    InvalidSettings(String),
}

/// Denoises `frame`; returns linear RGB, 3 floats per pixel, never NaN,
/// infinite or negative.
pub fn denoise(frame: &Frame<'_>, settings: &Settings) -> Result<Vec<f32>, DenoiseError> {
    check(frame, settings)?;
    let n = frame.width * frame.height;
    if n == 0 {
        return Ok(Vec::new());
    }
    let g = guides::Guides::new(frame, settings);
    let (demod, valid) = guides::demodulate(frame.color, &g);
    let mut irr = demod.clone();
    if let Some(k) = settings.firefly_k {
        variance::clamp_fireflies(&g, &mut irr, &valid, k);
    }
    let plane_ok = |v: &[f32]| v.iter().all(|x| x.is_finite() && *x >= 0.0);
    let estimate = match frame.variance {
        Some(v) if plane_ok(v) => Vec::new(),
        _ => variance::estimate(&g, &irr, &valid, settings.variance_radius),
    };
    let var = match frame.variance {
        Some(v) => variance::from_plane(&g, v, &estimate),
        None => estimate,
    };
    let out = atrous::filter(
        &g,
        atrous::Signal { irr, var, valid: valid.clone() },
        settings.iterations,
        settings.sigma_luminance,
        settings.threads,
    );

    let mut rgb = vec![0.0f32; 3 * n];
    for p in 0..n {
        for c in 0..3 {
            let f = out.irr[p][c];
            rgb[3 * p + c] = if !out.valid[p] {
                0.0
            } else if !valid[p] {
                guides::clamp0(f * g.factor[p][c])
            } else if f == demod[p][c] {
                guides::clamp0(frame.color[3 * p + c])
            } else {
                guides::clamp0(frame.color[3 * p + c] + g.factor[p][c] * (f - demod[p][c]))
            };
        }
    }
    Ok(rgb)
}

fn check(frame: &Frame<'_>, settings: &Settings) -> Result<(), DenoiseError> {
    let (width, height) = (frame.width, frame.height);
    let too_large = DenoiseError::TooLarge { width, height };
    let n = width.checked_mul(height).ok_or(too_large.clone())?;
    // Pixel coordinates are handled as isize.
    if n.checked_mul(3).is_none() || isize::try_from(3 * n).is_err() {
        return Err(too_large);
    }
    let planes = [
        ("color", Some(frame.color), 3),
        ("albedo", frame.albedo, 3),
        ("normal", frame.normal, 3),
        ("variance", frame.variance, 1),
    ];
    for (plane, data, channels) in planes {
        if let Some(data) = data {
            if data.len() != n * channels {
                return Err(DenoiseError::PlaneSize {
                    plane,
                    got: data.len(),
                    expected: n * channels,
                    width,
                    height,
                    channels,
                });
            }
        }
    }
    let s = settings;
    let bad = |m: String| Err(DenoiseError::InvalidSettings(m));
    if s.iterations > Settings::MAX_ITERATIONS {
        return bad(format!("iterations {} is above {}", s.iterations, Settings::MAX_ITERATIONS));
    }
    if s.variance_radius > Settings::MAX_VARIANCE_RADIUS {
        return bad(format!("variance_radius {} is above {}", s.variance_radius, Settings::MAX_VARIANCE_RADIUS));
    }
    if !(s.sigma_luminance.is_finite() && s.sigma_luminance > 0.0) {
        return bad(format!("sigma_luminance must be positive and finite, got {}", s.sigma_luminance));
    }
    if !(s.sigma_albedo.is_finite() && s.sigma_albedo > 0.0) {
        return bad(format!("sigma_albedo must be positive and finite, got {}", s.sigma_albedo));
    }
    if let Some(k) = s.firefly_k {
        if !(k.is_finite() && k >= 0.0) {
            return bad(format!("firefly_k must be non-negative and finite, got {k}"));
        }
    }
    Ok(())
}
