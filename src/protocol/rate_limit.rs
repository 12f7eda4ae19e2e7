//! The per-connection rate limiter: two token buckets, one for the advertised
//! rate (excess messages get `rate_limited`), one at ten times the rate (a client
//! that empties it is abusing the server and is closed with 1008).
//!
//! Pure arithmetic on the caller's clock; it owns no connection and no timer.

use std::time::Instant;

/// What to do with one incoming message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Within the rate: handle it.
    Allow,
    /// Over the rate: answer `error rate_limited`.
    Limited,
    /// Over ten times the rate for longer than the buckets absorb: close 1008.
    Abuse,
}

/// Token buckets for one connection.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    rate: f64,
    burst: f64,
    tokens: f64,
    abuse_cap: f64,
    abuse_tokens: f64,
    last: Instant,
}

/// How many times the rate counts as abuse.
const ABUSE_FACTOR: f64 = 10.0;

impl RateLimiter {
    /// `rate` messages per second with a bucket of `burst`; `rate == 0` allows everything.
    pub(crate) fn new(rate: u32, burst: u32, now: Instant) -> Self {
        let rate = f64::from(rate);
        let burst = f64::from(burst.max(1));
        // The abuse bucket holds one second at ten times the rate on top of the burst.
        let abuse_cap = rate * ABUSE_FACTOR + burst;
        RateLimiter { rate, burst, tokens: burst, abuse_cap, abuse_tokens: abuse_cap, last: now }
    }

    /// Counts one message (every message counts, errors included).
    pub(crate) fn check(&mut self, now: Instant) -> Verdict {
        if self.rate == 0.0 {
            return Verdict::Allow;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.abuse_tokens = (self.abuse_tokens + elapsed * self.rate * ABUSE_FACTOR).min(self.abuse_cap);
        self.abuse_tokens -= 1.0;
        if self.abuse_tokens < 0.0 {
            return Verdict::Abuse;
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Verdict::Allow
        } else {
            Verdict::Limited
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_limited_then_refilled() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(10, 3, t0);
        assert_eq!([r.check(t0), r.check(t0), r.check(t0)], [Verdict::Allow; 3]);
        assert_eq!(r.check(t0), Verdict::Limited);
        assert_eq!(r.check(t0 + Duration::from_millis(100)), Verdict::Allow);
    }

    #[test]
    fn a_flood_at_ten_times_the_rate_is_abuse() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(10, 5, t0);
        let verdicts: Vec<_> = (0..200).map(|_| r.check(t0)).collect();
        let first_abuse = verdicts.iter().position(|v| *v == Verdict::Abuse);
        assert_eq!(first_abuse, Some(105));
    }

    #[test]
    fn the_advertised_rate_is_never_abuse() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(100, 1, t0);
        for i in 0..10_000u64 {
            assert_eq!(r.check(t0 + Duration::from_millis(10 * i)), Verdict::Allow);
        }
    }

    #[test]
    fn zero_rate_is_off() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(0, 0, t0);
        assert!((0..10_000).all(|_| r.check(t0) == Verdict::Allow));
    }
}
