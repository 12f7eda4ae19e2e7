//! The reconnect delay: full-jitter exponential backoff, as a pure function of
//! the attempt number and one random draw, so its bounds can be tested without
//! clocks. `docs/clients.md` states the policy; `client.js` computes the same.

use std::time::Duration;

/// Bounds of the reconnect delay (`docs/clients.md`, "Backoff").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The cap of the first attempt's delay, doubled for each further attempt.
    pub min: Duration,
    /// The largest cap: no delay is ever longer.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { min: Duration::from_secs(1), max: Duration::from_secs(30) }
    }
}

impl Backoff {
    /// The cap of attempt `attempt` (1 for the first reconnect):
    /// `min(max, min · 2^(attempt-1))`.
    pub fn cap(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(30);
        self.min.saturating_mul(1u32 << doublings).min(self.max)
    }

    /// The delay before attempt `attempt`: `draw · cap(attempt)` ("full jitter"),
    /// where `draw` is uniform in `[0, 1)` (values outside are clamped).
    pub fn delay(&self, attempt: u32, draw: f64) -> Duration {
        let draw = if draw.is_finite() { draw.clamp(0.0, 1.0) } else { 0.0 };
        self.cap(attempt).mul_f64(draw)
    }
}

/// A small xorshift generator for the jitter draws: no cryptographic use, only
/// spreading clients apart. Seeded per client from the clock and its address.
#[derive(Debug, Clone)]
pub(crate) struct Jitter(u64);

impl Jitter {
    pub(crate) fn seeded(extra: u64) -> Jitter {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        // splitmix64 of the seed so nearby seeds give unrelated streams.
        let mut z = nanos ^ extra.rotate_left(32) ^ 0x9e37_79b9_7f4a_7c15;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Jitter((z ^ (z >> 31)) | 1)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn draw(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_double_from_min_up_to_max() {
        let b = Backoff::default();
        let caps: Vec<u64> = (1..=7).map(|a| b.cap(a).as_millis() as u64).collect();
        assert_eq!(caps, [1000, 2000, 4000, 8000, 16000, 30000, 30000]);
        assert_eq!(b.cap(0), Duration::from_secs(1));
        assert_eq!(b.cap(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn delays_stay_within_zero_and_the_cap() {
        let b = Backoff { min: Duration::from_millis(100), max: Duration::from_secs(5) };
        for attempt in 1..40 {
            for draw in [0.0, 1e-9, 0.25, 0.5, 0.999_999, 1.0, 7.0, -1.0, f64::NAN] {
                let d = b.delay(attempt, draw);
                assert!(d <= b.cap(attempt), "attempt {attempt} draw {draw}: {d:?}");
            }
        }
        assert_eq!(b.delay(3, 0.5), Duration::from_millis(200));
        assert_eq!(b.delay(3, 0.0), Duration::ZERO);
    }

    #[test]
    fn draws_are_in_the_unit_interval_and_spread() {
        let mut j = Jitter::seeded(7);
        let mut buckets = [0u32; 10];
        for _ in 0..10_000 {
            let d = j.draw();
            assert!((0.0..1.0).contains(&d));
            buckets[(d * 10.0) as usize] += 1;
        }
        assert!(buckets.iter().all(|&n| n > 800), "{buckets:?}");
    }
}
