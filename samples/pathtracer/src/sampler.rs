//! The per-sample random numbers: Owen-scrambled Sobol points for the
//! dimensions that matter most (film position, the first bounces' BSDF and
//! light samples), hashed random numbers for the rest.
//!
//! Every number is a pure function of (seed, frame, pixel, sample index,
//! dimension): Burley 2020, "Practical Hash-based Owen Scrambling", with the
//! sample index shuffled per pixel and per dimension pair (padding), so
//! pixels are decorrelated and any sample of any pixel can be drawn alone.
//! Sample indices are global to the pixel, so sample ranges split across
//! tiles still form one well-stratified sequence.

use tessera_guest_sdk::PixelRng;

/// Dimension pairs drawn from the Sobol sequence; later ones use the hash.
const SOBOL_PAIRS: u32 = 12;

pub struct Sampler {
    index: u32,
    pixel_seed: u32,
    pair: u32,
    rng: PixelRng,
}

#[inline]
fn hash(mut x: u32) -> u32 {
    // A 32-bit integer hash (Wellons' "lowbias32").
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x
}

#[inline]
fn laine_karras(mut x: u32, seed: u32) -> u32 {
    x = x.wrapping_add(seed);
    x ^= x.wrapping_mul(0x6c50_b47c);
    x ^= x.wrapping_mul(0xb82f_1e52);
    x ^= x.wrapping_mul(0xc7af_e638);
    x ^= x.wrapping_mul(0x8d22_f6e6);
    x
}

/// Owen scrambling of a 32-bit fixed-point value (or an index).
#[inline]
fn nested_uniform_scramble(x: u32, seed: u32) -> u32 {
    laine_karras(x.reverse_bits(), seed).reverse_bits()
}

/// The first two dimensions of the Sobol sequence, as 32-bit fractions.
#[inline]
fn sobol01(index: u32) -> (u32, u32) {
    let x = index.reverse_bits();
    let (mut y, mut v, mut i) = (0u32, 1u32 << 31, index);
    while i != 0 {
        if i & 1 != 0 {
            y ^= v;
        }
        i >>= 1;
        v ^= v >> 1;
    }
    (x, y)
}

#[inline]
fn to_unit(x: u32) -> f32 {
    // 24 bits: every value is exactly representable and below 1.
    (x >> 8) as f32 * (1.0 / (1u32 << 24) as f32)
}

impl Sampler {
    pub fn new(seed: u64, frame: i32, x: u32, y: u32, sample: u32) -> Sampler {
        let s = hash((seed as u32) ^ hash((seed >> 32) as u32 ^ hash(frame as u32 ^ hash(x ^ hash(y)))));
        Sampler { index: sample, pixel_seed: s, pair: 0, rng: PixelRng::new(seed, frame, x, y, sample) }
    }

    /// The next 2D point of this sample.
    #[inline]
    pub fn next_2d(&mut self) -> (f32, f32) {
        let pair = self.pair;
        self.pair += 1;
        if pair >= SOBOL_PAIRS {
            return (self.rng.next_f32(), self.rng.next_f32());
        }
        let seed = hash(self.pixel_seed ^ hash(pair.wrapping_mul(0x9e37_79b9)));
        let index = nested_uniform_scramble(self.index, seed);
        let (x, y) = sobol01(index);
        (to_unit(nested_uniform_scramble(x, hash(seed ^ 1))), to_unit(nested_uniform_scramble(y, hash(seed ^ 2))))
    }

    /// A 1D number for choices (lobe, light, roulette): hashed.
    #[inline]
    pub fn next_1d(&mut self) -> f32 {
        self.rng.next_f32()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sobol_is_a_0_2_sequence() {
        // Every aligned block of 4 points of the first two dimensions puts
        // one point in each quadrant.
        for block in 0..8u32 {
            let mut quadrants = [0; 4];
            for i in 0..4 {
                let (x, y) = sobol01(block * 4 + i);
                quadrants[((x >> 31) * 2 + (y >> 31)) as usize] += 1;
            }
            assert_eq!(quadrants, [1; 4], "block {block}");
        }
    }

    #[test]
    fn scrambled_points_stay_stratified_and_differ_between_pixels() {
        let points = |px: u32| -> Vec<(f32, f32)> { (0..16).map(|s| Sampler::new(3, 1, px, 0, s).next_2d()).collect() };
        let a = points(0);
        let mut cells = [0; 16];
        for (x, y) in &a {
            assert!((0.0..1.0).contains(x) && (0.0..1.0).contains(y));
            cells[(x * 4.0) as usize * 4 + (y * 4.0) as usize] += 1;
        }
        assert_eq!(cells, [1; 16], "16 Owen-scrambled Sobol points fill a 4×4 grid");
        assert_ne!(a, points(1));
        assert_eq!(a, points(0));
    }

    #[test]
    fn mean_is_a_half() {
        let mut sum = 0.0f64;
        for s in 0..4096 {
            let mut sampler = Sampler::new(9, 0, 5, 5, s);
            for _ in 0..4 {
                let (x, y) = sampler.next_2d();
                sum += f64::from(x + y);
            }
        }
        assert!((sum / (4096.0 * 8.0) - 0.5).abs() < 1e-3);
    }
}
