//! Small deterministic float helpers.
//!
//! Only IEEE-exact operations are used (`+ - * /`, `sqrt`, comparisons,
//! bit construction); Rust never contracts `a * b + c` into a fused
//! multiply-add on its own, so each helper gives the same bits on every
//! host. The platform's `exp`/`powf` are avoided because libm results
//! differ between platforms.

/// Rec. 709 luminance weights (linear RGB).
pub const LUMA: [f32; 3] = [0.2126, 0.7152, 0.0722];

/// Luminance of a linear RGB triple, summed in a fixed order.
#[inline]
pub fn luminance(c: [f32; 3]) -> f32 {
    LUMA[0] * c[0] + LUMA[1] * c[1] + LUMA[2] * c[2]
}

/// `e^(-x)` for `x >= 0`, to about 5e-7 relative; 0 for large `x`, 1 for
/// `x <= 0`, and 0 for NaN (a NaN weight would otherwise spread).
///
/// Range reduction `e^(-x) = 2^(-k) · e^(-r)`, `r = x − k·ln 2 ∈ [0, ln 2)`,
/// then a degree-8 Taylor polynomial in Horner form. The result only
/// weights filter taps, so this accuracy is far more than needed; what
/// matters is that it is the same on every machine.
#[inline]
pub fn exp_neg(x: f32) -> f32 {
    if x <= 0.0 {
        return 1.0;
    }
    if x.is_nan() || x >= 80.0 {
        return 0.0;
    }
    // ln 2 split in two (Cody & Waite): `k · LN2_HI` is exact for the
    // k here, so the reduction keeps full precision.
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // x < 80 so k <= 115: 2^-k stays a normal float.
    let k = (x * LOG2E) as i32;
    let kf = k as f32;
    let r = (x - kf * LN2_HI) - kf * LN2_LO;
    // r may fall just outside [0, ln 2) by rounding; the polynomial is
    // accurate there too.
    let r = -r;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0 + r * (1.0 / 40320.0))))))));
    let scale = f32::from_bits(((127 - k) as u32) << 23);
    p * scale
}

/// `x^n` for `x >= 0` by repeated squaring, in a fixed order.
#[inline]
pub fn powi(mut x: f32, n: u32) -> f32 {
    // The common case (the default normal exponent 128): squarings only,
    // the same products `square_and_multiply` would form.
    if n.is_power_of_two() {
        for _ in 0..n.trailing_zeros() {
            x *= x;
        }
        return x;
    }
    square_and_multiply(x, n)
}

/// The general case of [`powi`]: binary exponentiation, low bit first.
fn square_and_multiply(mut x: f32, mut n: u32) -> f32 {
    let mut acc = 1.0f32;
    while n > 0 {
        if n & 1 == 1 {
            acc *= x;
        }
        n >>= 1;
        if n > 0 {
            x *= x;
        }
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_neg_matches_std_closely() {
        let mut x = 0.0f32;
        while x < 60.0 {
            let want = (-f64::from(x)).exp();
            let got = f64::from(exp_neg(x));
            assert!((got - want).abs() <= 1e-6 * want + 1e-30, "x={x}: {got} vs {want}");
            x += 0.0137;
        }
        assert_eq!(exp_neg(0.0), 1.0);
        assert_eq!(exp_neg(-3.0), 1.0);
        assert_eq!(exp_neg(f32::NAN), 0.0);
        assert_eq!(exp_neg(f32::INFINITY), 0.0);
        assert_eq!(exp_neg(1e30), 0.0);
    }

    #[test]
    fn powi_is_exact_for_small_cases() {
        assert_eq!(powi(0.5, 3), 0.125);
        assert_eq!(powi(2.0, 10), 1024.0);
        assert_eq!(powi(0.7, 0), 1.0);
        assert_eq!(powi(0.0, 5), 0.0);
        // The power-of-two path agrees with the general one.
        let general = square_and_multiply;
        for x in [0.1f32, 0.5, 0.93, 0.999, 1.0] {
            for n in [1, 2, 64, 128, 256] {
                assert_eq!(powi(x, n).to_bits(), general(x, n).to_bits());
            }
        }
    }
}
