//! What each peer address holds before and after its upgrade: sockets in
//! their handshake, connections, and its connect-rate bucket. The acceptor
//! asks [`IpTable::admit`] for every accepted socket; the connection's reader
//! gives back what it took. Only counts live here: no socket, no response.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::config::Config;

/// How often, at most, one address's refusals are logged (at warn level).
const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// Entries are swept of idle addresses once the table has this many.
const SWEEP_AT: usize = 4096;

/// Why an accepted socket gets no reader thread of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Over `connect_rate_per_ip`: 429.
    ConnectRate,
    /// Over `max_connections_per_ip`: 503.
    ConnectionsPerIp,
    /// Over `max_handshakes_per_ip`: 503.
    HandshakesPerIp,
    /// Over `max_handshakes`: 503.
    Handshakes,
}

impl Refusal {
    /// The HTTP status an upgrade gets.
    pub(crate) fn status(self) -> u16 {
        match self {
            Refusal::ConnectRate => 429,
            _ => 503,
        }
    }

    /// The `reason` label in `/metrics`.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Refusal::ConnectRate => "connect_rate_per_ip",
            Refusal::ConnectionsPerIp => "connections_per_ip",
            Refusal::HandshakesPerIp => "handshakes_per_ip",
            Refusal::Handshakes => "handshakes",
        }
    }

    pub(crate) const ALL: [Refusal; 4] =
        [Refusal::ConnectRate, Refusal::ConnectionsPerIp, Refusal::HandshakesPerIp, Refusal::Handshakes];
}

#[derive(Debug)]
struct Entry {
    /// Sockets from this address in their handshake.
    handshakes: usize,
    /// Sockets from this address with a reader thread (handshake or open).
    conns: usize,
    /// Connect-rate tokens, and when they were last refilled.
    tokens: f64,
    refilled: Instant,
    /// When a refusal of this address was last logged.
    warned: Option<Instant>,
}

/// Per-address counts, and the total of sockets in their handshake.
#[derive(Debug, Default)]
pub(crate) struct IpTable {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    by_ip: HashMap<IpAddr, Entry>,
    handshakes: usize,
}

/// Folds an IPv4-mapped IPv6 address into its IPv4 form, so one peer is one key.
pub(crate) fn key(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

impl IpTable {
    /// Takes a handshake slot and a connection for `ip`, or says why not; the
    /// bool is true when this refusal should be logged (once per address per
    /// [`WARN_INTERVAL`]).
    pub(crate) fn admit(&self, ip: IpAddr, config: &Config, now: Instant) -> Result<(), (Refusal, bool)> {
        let ip = key(ip);
        let mut inner = self.inner.lock();
        if inner.by_ip.len() >= SWEEP_AT && !inner.by_ip.contains_key(&ip) {
            let rate = f64::from(config.connect_rate_per_ip);
            inner.by_ip.retain(|_, e| {
                e.conns > 0
                    || (rate > 0.0 && e.tokens + now.duration_since(e.refilled).as_secs_f64() * rate < rate)
            });
        }
        let total = inner.handshakes;
        let rate = f64::from(config.connect_rate_per_ip);
        let entry = inner.by_ip.entry(ip).or_insert(Entry {
            handshakes: 0,
            conns: 0,
            tokens: rate,
            refilled: now,
            warned: None,
        });
        let refusal = if rate > 0.0 && {
            entry.tokens = (entry.tokens + now.duration_since(entry.refilled).as_secs_f64() * rate).min(rate);
            entry.refilled = now;
            entry.tokens < 1.0
        } {
            Some(Refusal::ConnectRate)
        } else if config.max_connections_per_ip > 0 && entry.conns >= config.max_connections_per_ip {
            Some(Refusal::ConnectionsPerIp)
        } else if entry.handshakes >= config.max_handshakes_per_ip {
            Some(Refusal::HandshakesPerIp)
        } else if total >= config.max_handshakes {
            Some(Refusal::Handshakes)
        } else {
            None
        };
        if let Some(refusal) = refusal {
            let log = entry.warned.is_none_or(|at| now.duration_since(at) >= WARN_INTERVAL);
            if log {
                entry.warned = Some(now);
            }
            return Err((refusal, log));
        }
        if rate > 0.0 {
            entry.tokens -= 1.0;
        }
        entry.handshakes += 1;
        entry.conns += 1;
        inner.handshakes += 1;
        Ok(())
    }

    /// The socket's handshake ended (upgraded, answered or gone).
    pub(crate) fn handshake_done(&self, ip: IpAddr) {
        let mut inner = self.inner.lock();
        inner.handshakes = inner.handshakes.saturating_sub(1);
        if let Some(e) = inner.by_ip.get_mut(&key(ip)) {
            e.handshakes = e.handshakes.saturating_sub(1);
        }
    }

    /// The socket's reader thread is done with it.
    pub(crate) fn connection_done(&self, ip: IpAddr) {
        let mut inner = self.inner.lock();
        let ip = key(ip);
        if let Some(e) = inner.by_ip.get_mut(&ip) {
            e.conns = e.conns.saturating_sub(1);
            if e.conns == 0 && e.warned.is_none() && e.refilled.elapsed().as_secs() >= 1 {
                inner.by_ip.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_bounds_and_the_rate_bucket() {
        let table = IpTable::default();
        let config = Config::default().max_handshakes_per_ip(2).max_connections_per_ip(3);
        let (a, b) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
        let now = Instant::now();
        assert!(table.admit(a, &config, now).is_ok());
        assert!(table.admit(a, &config, now).is_ok());
        assert_eq!(table.admit(a, &config, now), Err((Refusal::HandshakesPerIp, true)));
        assert_eq!(table.admit(a, &config, now), Err((Refusal::HandshakesPerIp, false)), "logged once");
        assert!(table.admit(b, &config, now).is_ok(), "another address is not affected");
        table.handshake_done(a);
        assert!(table.admit(a, &config, now).is_ok());
        table.handshake_done(a);
        table.handshake_done(a);
        assert_eq!(table.admit(a, &config, now).unwrap_err().0, Refusal::ConnectionsPerIp);
        table.connection_done(a);
        assert!(table.admit(a, &config, now).is_ok());
        assert_eq!(table.inner.lock().handshakes, 2);

        let rated = Config::default().connect_rate_per_ip(2);
        let c: IpAddr = "::ffff:127.0.0.3".parse().unwrap();
        assert!(table.admit(c, &rated, now).is_ok());
        assert!(table.admit("127.0.0.3".parse().unwrap(), &rated, now).is_ok(), "mapped = same key");
        assert_eq!(table.admit(c, &rated, now).unwrap_err().0, Refusal::ConnectRate);
        assert!(table.admit(c, &rated, now + Duration::from_millis(600)).is_ok(), "refilled");
    }
}
