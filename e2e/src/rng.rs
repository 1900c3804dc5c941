//! A small seedable random generator, for schedules and garbage that a failing test can replay.
//!
//! Uses no crate at all, so relay-server's own tests compile this file too (see the crate docs).

use std::time::Duration;

/// xorshift64: small, seedable, good enough to pick pauses and victims.
pub struct Rng(u64);

impl Rng {
    /// A generator for stream `stream` of `seed` (splitmix64 of both, never zero).
    pub fn new(seed: u64, stream: u64) -> Rng {
        let mut z = seed ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.below(to - from + 1))
    }
}
