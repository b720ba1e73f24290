//! Scaffolds that Tessera's tests share, so each is written once: a small
//! seeded generator ([`Rng`]), hand-built PNG files ([`png`]) for tests
//! that need malformed or hostile images no encoder would write, and a
//! throw-away PostgreSQL cluster ([`postgres`]) for the store's and the
//! farm's tests on a real database, and a TCP relay a test can cut
//! ([`relay`]) to partition a coordinator from it.
//!
//! Depends on no crate: any crate's tests can use it, including the
//! guests' (which build for wasm32 too) and the pure crates'. (The cluster
//! is driven through PostgreSQL's own programs.)

pub mod png;
pub mod postgres;
pub mod relay;

/// splitmix64: a tiny, seedable generator. Tests need independent,
/// repeatable draws (a failing seed replays), not cryptographic ones.
#[derive(Clone, Debug)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi` (`hi > lo`).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo)
    }

    /// Uniform in `0..n`; 0 when `n` is 0.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in `0..n`, for indexing; 0 when `n` is 0.
    pub fn index(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    /// 32 random bytes (a hash, a key).
    pub fn bytes32(&mut self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for chunk in out.chunks_mut(8) {
            chunk.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generator_is_seeded_and_draws_in_range() {
        let (mut a, mut b) = (Rng(7), Rng(7));
        let draws: Vec<u64> = (0..100).map(|_| a.range(10, 20)).collect();
        assert!(draws.iter().all(|d| (10..20).contains(d)));
        assert_eq!(draws, (0..100).map(|_| b.range(10, 20)).collect::<Vec<_>>());
        assert_eq!(Rng(1).below(0), 0);
        assert_ne!(Rng(1).bytes32(), Rng(2).bytes32());
    }
}
