//! Edge cases through the public API: black, flat, NaN, tiny frames,
//! shapes and settings, determinism, and small synthetic scenes.

use tessera_denoise::{denoise, DenoiseError, Frame, Settings, ALGORITHM};

/// A deterministic uniform number in [0, 1) (splitmix64).
fn rng(state: &mut u64) -> f32 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32
}

fn frame(w: usize, h: usize, color: &[f32]) -> Frame<'_> {
    Frame { width: w, height: h, color, albedo: None, normal: None, variance: None }
}

fn run(f: &Frame<'_>) -> Vec<f32> {
    denoise(f, &Settings::default()).expect("valid frame")
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// A synthetic "render": a lit floor (a horizontal ramp) under a 4×4-pixel
/// albedo checkerboard, with a wall of another normal on the right third,
/// plus noise. Returns (noisy colour, clean colour, albedo, normal).
fn synthetic(w: usize, h: usize, noise: f32, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut s = seed;
    let (mut noisy, mut clean, mut albedo, mut normal) = (vec![], vec![], vec![], vec![]);
    for y in 0..h {
        for x in 0..w {
            let wall = x >= 2 * w / 3;
            let a = if (x / 4 + y / 4) % 2 == 0 { [0.8, 0.7, 0.6] } else { [0.2, 0.3, 0.4] };
            let light = if wall { 0.3 } else { 0.5 + 0.5 * x as f32 / w as f32 };
            let n = if wall { [-1.0, 0.0, 0.0] } else { [0.0, 1.0, 0.0] };
            for c in 0..3 {
                let v = a[c] * light;
                clean.push(v);
                // Zero-mean, multiplicative noise, like a path tracer's.
                noisy.push(v * (1.0 + noise * (2.0 * rng(&mut s) - 1.0) * 1.732));
                albedo.push(a[c]);
                normal.push(n[c]);
            }
        }
    }
    (noisy, clean, albedo, normal)
}

fn mse(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum::<f64>() / a.len() as f64
}

#[test]
fn algorithm_names_a_version() {
    let (name, version) = ALGORITHM.split_once('/').expect("name/version");
    assert!(!name.is_empty() && version.parse::<u32>().is_ok());
}

#[test]
fn black_stays_exactly_black() {
    let (w, h) = (17, 9);
    let black = vec![0.0f32; 3 * w * h];
    assert_eq!(bits(&run(&frame(w, h, &black))), bits(&black));
    let albedo = vec![0.0f32; 3 * w * h];
    let normal = vec![0.0f32; 3 * w * h];
    let f = Frame { albedo: Some(&albedo), normal: Some(&normal), ..frame(w, h, &black) };
    assert_eq!(bits(&run(&f)), bits(&black));
}

#[test]
fn flat_stays_flat_bit_for_bit() {
    let (w, h) = (23, 16);
    let color: Vec<f32> = (0..w * h).flat_map(|_| [0.3f32, 1.7, 1e-3]).collect();
    assert_eq!(bits(&run(&frame(w, h, &color))), bits(&color));
    let albedo: Vec<f32> = (0..w * h).flat_map(|_| [0.5f32, 0.25, 0.9]).collect();
    let normal: Vec<f32> = (0..w * h).flat_map(|_| [0.0f32, 0.6, 0.8]).collect();
    let variance = vec![0.01f32; w * h];
    let f = Frame { albedo: Some(&albedo), normal: Some(&normal), variance: Some(&variance), ..frame(w, h, &color) };
    assert_eq!(bits(&run(&f)), bits(&color));
    // Every setting keeps it flat.
    for s in [
        Settings { iterations: 0, ..Settings::default() },
        Settings { iterations: Settings::MAX_ITERATIONS, ..Settings::default() },
        Settings { firefly_k: None, variance_radius: 0, ..Settings::default() },
    ] {
        assert_eq!(bits(&denoise(&f, &s).unwrap()), bits(&color));
    }
}

#[test]
fn nan_and_inf_are_treated_as_missing() {
    let (w, h) = (12, 10);
    let mut color: Vec<f32> = (0..w * h).flat_map(|_| [0.5f32, 0.5, 0.5]).collect();
    color[3 * 14] = f32::NAN;
    color[3 * 40 + 1] = f32::INFINITY;
    color[3 * 41 + 2] = f32::NEG_INFINITY;
    color[3 * 77] = 1e30; // Absurd: treated as missing too.
    let out = run(&frame(w, h, &color));
    assert!(out.iter().all(|v| v.is_finite()));
    // Holes fill from their neighbours: here exactly the flat value, or
    // within rounding of it.
    for p in [14, 40, 41, 77] {
        for c in 0..3 {
            assert!((out[3 * p + c] - 0.5).abs() < 1e-6, "pixel {p}: {}", out[3 * p + c]);
        }
    }
    // A NaN albedo or normal is a missing guide, not a missing pixel.
    let mut albedo = vec![0.5f32; 3 * w * h];
    albedo[5] = f32::NAN;
    let mut normal: Vec<f32> = (0..w * h).flat_map(|_| [0.0f32, 0.0, 1.0]).collect();
    normal[30] = f32::INFINITY;
    let mut variance = vec![0.0f32; w * h];
    variance[3] = f32::NAN;
    variance[4] = -1.0;
    let f = Frame { albedo: Some(&albedo), normal: Some(&normal), variance: Some(&variance), ..frame(w, h, &color) };
    assert!(run(&f).iter().all(|v| v.is_finite() && *v >= 0.0));
}

#[test]
fn all_missing_gives_black() {
    let color = vec![f32::NAN; 3 * 6];
    assert_eq!(run(&frame(3, 2, &color)), vec![0.0; 18]);
}

#[test]
fn black_albedo_does_not_blow_up() {
    // Background and emitter pixels have albedo 0; a lit surface beside.
    let (w, h) = (16, 8);
    let mut s = 7u64;
    let mut color = vec![];
    let mut albedo = vec![];
    for _y in 0..h {
        for x in 0..w {
            let emitter = x < 5;
            for _ in 0..3 {
                color.push(if emitter { 17.0 } else { 0.1 * (0.5 + rng(&mut s)) });
                albedo.push(if emitter { 0.0 } else { 0.7 });
            }
        }
    }
    let f = Frame { albedo: Some(&albedo), ..frame(w, h, &color) };
    let out = run(&f);
    assert!(out.iter().all(|v| v.is_finite()));
    for y in 0..h {
        for x in 0..w {
            let p = y * w + x;
            if x < 5 {
                // The emitter is flat: unchanged.
                assert_eq!(out[3 * p], 17.0);
            } else if x > 6 {
                // The surface does not pick up the emitter's light.
                assert!(out[3 * p] < 0.2, "({x},{y}): {}", out[3 * p]);
            }
        }
    }
}

#[test]
fn tiny_frames() {
    // 0 pixels: nothing to do.
    assert_eq!(run(&frame(0, 0, &[])), Vec::<f32>::new());
    assert_eq!(run(&frame(0, 7, &[])), Vec::<f32>::new());
    // 1×1: nothing to average with.
    assert_eq!(run(&frame(1, 1, &[0.25, 0.5, 4.0])), vec![0.25, 0.5, 4.0]);
    // 1×N and N×1 with noise: finite, non-negative, and closer to the mean.
    let mut s = 3u64;
    let line: Vec<f32> = (0..3 * 40).map(|_| 0.5 + 0.2 * (rng(&mut s) - 0.5)).collect();
    for (w, h) in [(1, 40), (40, 1), (2, 20)] {
        let out = run(&frame(w, h, &line));
        assert_eq!(out.len(), line.len());
        assert!(out.iter().all(|v| v.is_finite() && *v >= 0.0));
        let flat = vec![0.5f32; line.len()];
        assert!(mse(&out, &flat) < mse(&line, &flat), "{w}×{h}");
    }
}

#[test]
fn negative_input_is_clamped() {
    let color = [-1.0f32, 0.5, -0.0, 0.2, 0.2, 0.2];
    let out = run(&frame(2, 1, &color));
    assert!(out.iter().all(|v| *v >= 0.0 && v.to_bits() != (-0.0f32).to_bits()));
}

#[test]
fn shape_errors() {
    let c = vec![0.0f32; 3 * 4];
    let e = denoise(&frame(2, 3, &c), &Settings::default()).unwrap_err();
    assert!(matches!(e, DenoiseError::PlaneSize { plane: "color", got: 12, expected: 18, .. }), "{e}");
    let short = vec![0.0f32; 5];
    for f in [
        Frame { albedo: Some(&short), ..frame(2, 2, &c) },
        Frame { normal: Some(&short), ..frame(2, 2, &c) },
        Frame { variance: Some(&short), ..frame(2, 2, &c) },
    ] {
        let e = denoise(&f, &Settings::default()).unwrap_err();
        assert!(matches!(e, DenoiseError::PlaneSize { got: 5, .. }), "{e}");
        assert!(e.to_string().contains("expected"), "{e}");
    }
    let e = denoise(&frame(usize::MAX, 2, &c), &Settings::default()).unwrap_err();
    assert!(matches!(e, DenoiseError::TooLarge { .. }), "{e}");
}

#[test]
fn invalid_settings() {
    let c = vec![0.0f32; 3 * 4];
    let f = frame(2, 2, &c);
    for s in [
        Settings { iterations: Settings::MAX_ITERATIONS + 1, ..Settings::default() },
        Settings { variance_radius: Settings::MAX_VARIANCE_RADIUS + 1, ..Settings::default() },
        Settings { sigma_luminance: 0.0, ..Settings::default() },
        Settings { sigma_luminance: f32::NAN, ..Settings::default() },
        Settings { sigma_albedo: -1.0, ..Settings::default() },
        Settings { sigma_albedo: f32::INFINITY, ..Settings::default() },
        Settings { firefly_k: Some(f32::NAN), ..Settings::default() },
        Settings { firefly_k: Some(-2.0), ..Settings::default() },
    ] {
        assert!(matches!(denoise(&f, &s), Err(DenoiseError::InvalidSettings(_))), "{s:?}");
    }
}

#[test]
fn deterministic_bit_for_bit() {
    let (w, h) = (48, 32);
    let (noisy, _, albedo, normal) = synthetic(w, h, 0.5, 11);
    let f = Frame { albedo: Some(&albedo), normal: Some(&normal), ..frame(w, h, &noisy) };
    let a = run(&f);
    let b = run(&f);
    assert_eq!(bits(&a), bits(&b));
    // Also through a copy of the inputs (no dependence on addresses).
    let (n2, a2, m2) = (noisy.clone(), albedo.clone(), normal.clone());
    let g = Frame { albedo: Some(&a2), normal: Some(&m2), ..frame(w, h, &n2) };
    assert_eq!(bits(&run(&g)), bits(&a));
}

#[test]
fn threads_change_no_bit() {
    // 320×240 with an odd split (3 threads), against one thread.
    let (w, h) = (320, 240);
    let (color, _, albedo, normal) = synthetic(w, h, 0.3, 5);
    let f = Frame { width: w, height: h, color: &color, albedo: Some(&albedo), normal: Some(&normal), variance: None };
    let one = denoise(&f, &Settings { threads: 1, ..Settings::default() }).unwrap();
    for threads in [0, 3, 8] {
        let many = denoise(&f, &Settings { threads, ..Settings::default() }).unwrap();
        assert_eq!(bits(&one), bits(&many), "{threads} threads");
    }
}

#[test]
fn removes_noise_and_keeps_texture() {
    let (w, h) = (64, 48);
    let (noisy, clean, albedo, normal) = synthetic(w, h, 0.3, 5);
    let f = Frame { albedo: Some(&albedo), normal: Some(&normal), ..frame(w, h, &noisy) };
    let out = run(&f);
    let (before, after) = (mse(&noisy, &clean), mse(&out, &clean));
    eprintln!("synthetic: MSE noisy {before:.3e}, denoised {after:.3e}");
    assert!(after < before / 8.0, "MSE {before:.3e} -> {after:.3e}");
    // The checkerboard's contrast survives: the mean of light and dark
    // squares stays apart as in the clean image.
    let mut sums = [[0.0f64; 2]; 2];
    for y in 0..h {
        for x in 0..2 * w / 3 {
            let light = usize::from((x / 4 + y / 4) % 2 != 0);
            sums[light][0] += f64::from(out[3 * (y * w + x)]);
            sums[light][1] += f64::from(clean[3 * (y * w + x)]);
        }
    }
    let ratio_out = sums[0][0] / sums[1][0];
    let ratio_clean = sums[0][1] / sums[1][1];
    assert!((ratio_out / ratio_clean - 1.0).abs() < 0.02, "contrast {ratio_out} vs {ratio_clean}");
}

#[test]
fn without_guides_still_denoises() {
    let (w, h) = (40, 40);
    let mut s = 9u64;
    let clean: Vec<f32> = (0..3 * w * h).map(|i| 0.2 + 0.6 * ((i / 3) % w) as f32 / w as f32).collect();
    let noisy: Vec<f32> = clean.iter().map(|v| v * (1.0 + 0.6 * (rng(&mut s) - 0.5))).collect();
    let out = run(&frame(w, h, &noisy));
    assert!(mse(&out, &clean) < mse(&noisy, &clean) / 4.0);
}

#[test]
fn a_lone_firefly_is_clamped() {
    let (w, h) = (15, 15);
    let mut s = 1u64;
    let mut color: Vec<f32> = (0..3 * w * h).map(|_| 0.5 + 0.05 * (rng(&mut s) - 0.5)).collect();
    let p = 7 * w + 7;
    color[3 * p..3 * p + 3].copy_from_slice(&[500.0, 500.0, 500.0]);
    let out = run(&frame(w, h, &color));
    assert!(out.iter().all(|v| *v < 1.0), "max {}", out.iter().cloned().fold(0.0, f32::max));
    // Without the clamp the filter has to keep it (it is far outside the
    // noise), so the clamp is what removed it.
    let s = Settings { firefly_k: None, ..Settings::default() };
    let kept = denoise(&frame(w, h, &color), &s).unwrap();
    assert!(kept[3 * p] > 100.0);
}

#[test]
fn variance_plane_is_used() {
    // The same noisy frame, told it has no noise, is left alone; told it is
    // very noisy, is smoothed.
    let (w, h) = (32, 32);
    let mut s = 2u64;
    let noisy: Vec<f32> = (0..3 * w * h).map(|_| 0.5 + 0.2 * (rng(&mut s) - 0.5)).collect();
    let quiet = vec![0.0f32; w * h];
    let loud = vec![1.0f32; w * h];
    let none = Settings { firefly_k: None, ..Settings::default() };
    let f = |v| Frame { variance: Some(v), ..frame(w, h, &noisy) };
    let flat = vec![0.5f32; noisy.len()];
    let kept = denoise(&f(&quiet), &none).unwrap();
    let smoothed = denoise(&f(&loud), &none).unwrap();
    assert!(mse(&kept, &noisy) < 1e-6 * mse(&noisy, &flat));
    assert!(mse(&smoothed, &flat) < mse(&noisy, &flat) / 20.0);
}
