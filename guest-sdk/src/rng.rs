/// A small counter-based random number generator addressed by
/// (seed, frame, pixel, sample, dimension).
///
/// Random numbers are a pure function of their address, never of how many
/// numbers were drawn before in other pixels (DESIGN.md invariant 1), so any
/// pixel or sample can be rendered alone and give the same bits.
#[derive(Clone, Debug)]
pub struct PixelRng {
    key: u64,
    counter: u64,
}

impl PixelRng {
    /// The stream for one sample of one pixel of one frame.
    pub fn new(seed: u64, frame: i32, x: u32, y: u32, sample: u32) -> Self {
        let mut k = mix(seed ^ 0x7e55_e7a0_0000_0001);
        k = mix(k ^ (frame as u32 as u64));
        k = mix(k ^ ((u64::from(x) << 32) | u64::from(y)));
        k = mix(k ^ u64::from(sample));
        PixelRng { key: k, counter: 0 }
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.counter = self.counter.wrapping_add(1);
        mix(self.key.wrapping_add(self.counter.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
    }

    /// A uniform float in [0, 1), with 24 bits of precision.
    #[inline]
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
    }
}

/// splitmix64's finaliser: a bijective 64-bit mix with good avalanche.
#[inline]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_addressed_not_sequenced() {
        let a: Vec<f32> = {
            let mut r = PixelRng::new(7, 1, 3, 4, 0);
            (0..4).map(|_| r.next_f32()).collect()
        };
        let b: Vec<f32> = {
            let mut r = PixelRng::new(7, 1, 3, 4, 0);
            (0..4).map(|_| r.next_f32()).collect()
        };
        let c: Vec<f32> = {
            let mut r = PixelRng::new(7, 1, 4, 3, 0);
            (0..4).map(|_| r.next_f32()).collect()
        };
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.iter().all(|v| (0.0..1.0).contains(v)));
    }

    #[test]
    fn roughly_uniform() {
        let mut r = PixelRng::new(1, 0, 0, 0, 0);
        let mean: f64 = (0..100_000).map(|_| f64::from(r.next_f32())).sum::<f64>() / 100_000.0;
        assert!((mean - 0.5).abs() < 0.01, "{mean}");
    }
}
