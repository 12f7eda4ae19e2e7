//! What each peer address holds before and after its upgrade: sockets in
//! their handshake, connections, and its connect-rate bucket. The acceptor
//! asks [`IpTable::admit`] for every accepted socket; the connection's reader
//! gives back what it took. Only counts and connection ids live here: no
//! socket, no response.
//!
//! An address is a key ([`key`]): IPv4 as is, IPv6 by its /64 (one host
//! usually holds a whole /64, so a bound per IPv6 address would bind nothing).
//!
//! Behind a trusted proxy (`Config::trusted_proxies`) the peer is the proxy:
//! its sockets skip the per-address bounds when accepted, and once the
//! request head names the client ([`crate::trusted_proxy::forwarded_client`]) the socket's counts
//! move to the client's address ([`IpTable::rekey`]), which must be within
//! its bounds like any peer's.
//!
//! When every handshake slot is taken, a socket from an address holding fewer
//! slots than the biggest holder takes that holder's oldest slot
//! ([`Admitted::Took`]; the caller closes that socket), so no set of
//! addresses can hold every slot against a new one.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::config::Config;
use crate::types::ConnId;

/// Read through here by the engine, which asks this table about peers.
pub(crate) use crate::trusted_proxy::{forwarded_client, Cidr};

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
    /// The `Retry-After` seconds its answer carries.
    pub(crate) fn retry_after(self) -> &'static str {
        match self {
            Refusal::ConnectRate => "1",
            _ => "5",
        }
    }

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

/// A socket that got a handshake slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admitted {
    /// A free slot.
    Free,
    /// The oldest slot of the biggest holder, the socket of this connection,
    /// which the caller must close.
    Took(ConnId),
}

#[derive(Debug)]
struct Entry {
    /// Sockets from this address in their handshake, oldest first.
    slots: VecDeque<ConnId>,
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
    /// The size at which the next sweep runs: twice what the last one kept
    /// (at least [`SWEEP_AT`]), so that many addresses holding connections
    /// do not make every new address pay a sweep of them all.
    sweep_at: usize,
    /// Sweeps so far (for the tests).
    sweeps: usize,
}

/// The key every per-address bound counts under: an IPv4-mapped IPv6
/// address as its IPv4 form, any other IPv6 address as its /64.
pub(crate) fn key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(v6.to_bits() & !u128::from(u64::MAX))),
        v4 => v4,
    }
}

impl IpTable {
    /// Takes a handshake slot and a connection for `ip`, for the connection
    /// `id`, or says why not; the bool is true when this refusal should be
    /// logged (once per address per [`WARN_INTERVAL`]).
    /// A `trusted` peer (a proxy) is held to the total only: its clients'
    /// bounds are checked once they are known ([`IpTable::rekey`]).
    pub(crate) fn admit(
        &self,
        ip: IpAddr,
        id: ConnId,
        trusted: bool,
        config: &Config,
        now: Instant,
    ) -> Result<Admitted, (Refusal, bool)> {
        let ip = key(ip);
        let mut inner = self.inner.lock();
        inner.sweep_before_adding(ip, config, now);
        let full = inner.handshakes >= config.max_handshakes;
        let rate = f64::from(config.connect_rate_per_ip);
        let entry = inner.by_ip.entry(ip).or_insert(Entry {
            slots: VecDeque::new(),
            conns: 0,
            tokens: rate,
            refilled: now,
            warned: None,
        });
        let refusal = if trusted { None } else { entry.over_a_bound(config, now) };
        let mine = entry.slots.len();
        let admitted = match refusal {
            Some(refusal) => Err(refusal),
            None if !full => Ok(Admitted::Free),
            None => inner.take_oldest_of_biggest(mine).map(Admitted::Took).ok_or(Refusal::Handshakes),
        };
        let Some(entry) = inner.by_ip.get_mut(&ip) else { return Err((Refusal::Handshakes, false)) };
        let admitted = match admitted {
            Ok(admitted) => admitted,
            Err(refusal) => {
                let log = entry.warned.is_none_or(|at| now.duration_since(at) >= WARN_INTERVAL);
                if log {
                    entry.warned = Some(now);
                }
                return Err((refusal, log));
            }
        };
        if rate > 0.0 && !trusted {
            entry.tokens -= 1.0;
        }
        entry.slots.push_back(id);
        entry.conns += 1;
        if admitted == Admitted::Free {
            inner.handshakes += 1;
        }
        Ok(admitted)
    }

    /// Moves connection `id`'s counts (its connection, its handshake slot
    /// unless another socket took it) from `from` (a trusted proxy) to
    /// `to` (the client it forwards), when `to` is within its bounds.
    pub(crate) fn rekey(
        &self,
        from: IpAddr,
        to: IpAddr,
        id: ConnId,
        config: &Config,
        now: Instant,
    ) -> Result<(), Refusal> {
        let (from, to) = (key(from), key(to));
        if from == to {
            return Ok(());
        }
        let mut inner = self.inner.lock();
        // Behind a proxy every accepted socket is the proxy's (an address
        // the table holds), so the sweep must run here too, or each client
        // address ever forwarded would stay for good.
        inner.sweep_before_adding(to, config, now);
        let rate = f64::from(config.connect_rate_per_ip);
        let entry = inner.by_ip.entry(to).or_insert(Entry {
            slots: VecDeque::new(),
            conns: 0,
            tokens: rate,
            refilled: now,
            warned: None,
        });
        if let Some(refusal) = entry.over_a_bound(config, now) {
            return Err(refusal);
        }
        let held = inner.by_ip.get_mut(&from).map(|e| {
            e.conns = e.conns.saturating_sub(1);
            e.slots.iter().position(|&slot| slot == id).map(|at| e.slots.remove(at)).is_some()
        });
        let Some(entry) = inner.by_ip.get_mut(&to) else { return Ok(()) };
        if rate > 0.0 {
            entry.tokens -= 1.0;
        }
        entry.conns += 1;
        if held == Some(true) {
            entry.slots.push_back(id);
        }
        Ok(())
    }

    /// The socket's handshake ended (upgraded, answered or gone); nothing
    /// when its slot was taken by another socket meanwhile.
    pub(crate) fn handshake_done(&self, ip: IpAddr, id: ConnId) {
        let mut inner = self.inner.lock();
        let Some(e) = inner.by_ip.get_mut(&key(ip)) else { return };
        let Some(at) = e.slots.iter().position(|&slot| slot == id) else { return };
        e.slots.remove(at);
        inner.handshakes = inner.handshakes.saturating_sub(1);
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

impl Entry {
    /// The first per-address bound one more socket from this address would
    /// cross (refilling its connect-rate bucket first), if any.
    fn over_a_bound(&mut self, config: &Config, now: Instant) -> Option<Refusal> {
        let rate = f64::from(config.connect_rate_per_ip);
        if rate > 0.0 {
            self.tokens = (self.tokens + now.duration_since(self.refilled).as_secs_f64() * rate).min(rate);
            self.refilled = now;
            if self.tokens < 1.0 {
                return Some(Refusal::ConnectRate);
            }
        }
        if config.max_connections_per_ip > 0 && self.conns >= config.max_connections_per_ip {
            Some(Refusal::ConnectionsPerIp)
        } else if self.slots.len() >= config.max_handshakes_per_ip {
            Some(Refusal::HandshakesPerIp)
        } else {
            None
        }
    }
}

impl Inner {
    /// Before `ip` gets an entry: once the table holds `sweep_at` (at least
    /// [`SWEEP_AT`]) addresses, drops those that hold nothing (no socket, a
    /// full connect-rate bucket).
    fn sweep_before_adding(&mut self, ip: IpAddr, config: &Config, now: Instant) {
        if self.by_ip.len() >= self.sweep_at.max(SWEEP_AT) && !self.by_ip.contains_key(&ip) {
            let rate = f64::from(config.connect_rate_per_ip);
            self.by_ip.retain(|_, e| {
                e.conns > 0
                    || (rate > 0.0 && e.tokens + now.duration_since(e.refilled).as_secs_f64() * rate < rate)
            });
            self.sweep_at = 2 * self.by_ip.len();
            self.sweeps += 1;
        }
    }

    /// Gives up the oldest slot of the address holding the most (of those
    /// holding as many, the one with the oldest slot), if it holds more than
    /// `mine`: the connection that held it.
    fn take_oldest_of_biggest(&mut self, mine: usize) -> Option<ConnId> {
        let biggest = self
            .by_ip
            .values_mut()
            .max_by_key(|e| (e.slots.len(), std::cmp::Reverse(e.slots.front().copied())))?;
        if biggest.slots.len() <= mine {
            return None;
        }
        biggest.slots.pop_front()
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
        assert!(table.admit(a, 1, false, &config, now).is_ok());
        assert!(table.admit(a, 2, false, &config, now).is_ok());
        assert_eq!(table.admit(a, 3, false, &config, now), Err((Refusal::HandshakesPerIp, true)));
        assert_eq!(
            table.admit(a, 4, false, &config, now),
            Err((Refusal::HandshakesPerIp, false)),
            "logged once"
        );
        assert!(table.admit(b, 5, false, &config, now).is_ok(), "another address is not affected");
        table.handshake_done(a, 1);
        assert!(table.admit(a, 6, false, &config, now).is_ok());
        table.handshake_done(a, 2);
        table.handshake_done(a, 6);
        assert_eq!(table.admit(a, 7, false, &config, now).unwrap_err().0, Refusal::ConnectionsPerIp);
        table.connection_done(a);
        assert!(table.admit(a, 8, false, &config, now).is_ok());
        assert_eq!(table.inner.lock().handshakes, 2);

        let rated = Config::default().connect_rate_per_ip(2);
        let c: IpAddr = "::ffff:127.0.0.3".parse().unwrap();
        assert!(table.admit(c, 9, false, &rated, now).is_ok());
        assert!(
            table.admit("127.0.0.3".parse().unwrap(), 10, false, &rated, now).is_ok(),
            "mapped = same key"
        );
        assert_eq!(table.admit(c, 11, false, &rated, now).unwrap_err().0, Refusal::ConnectRate);
        assert!(table.admit(c, 12, false, &rated, now + Duration::from_millis(600)).is_ok(), "refilled");
    }

    #[test]
    fn ipv6_addresses_count_by_their_64() {
        let table = IpTable::default();
        let config = Config::default().max_handshakes_per_ip(2);
        let now = Instant::now();
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8:1:2:ffff:ffff:ffff:ffff".parse().unwrap();
        let other_64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(table.admit(one, 1, false, &config, now).is_ok());
        assert!(table.admit(same_64, 2, false, &config, now).is_ok());
        assert_eq!(table.admit(same_64, 3, false, &config, now).unwrap_err().0, Refusal::HandshakesPerIp);
        assert!(table.admit(other_64, 4, false, &config, now).is_ok());
        table.handshake_done(same_64, 1);
        assert!(table.admit(one, 5, false, &config, now).is_ok(), "the /64 gave its slot back");
    }

    #[test]
    fn a_newcomer_takes_the_oldest_slot_of_the_biggest_holder() {
        let table = IpTable::default();
        let config = Config::default().max_handshakes(5).max_handshakes_per_ip(3);
        let now = Instant::now();
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        for id in 1..=3 {
            assert_eq!(table.admit(ip("10.0.0.1"), id, false, &config, now), Ok(Admitted::Free));
        }
        for id in 4..=5 {
            assert_eq!(table.admit(ip("10.0.0.2"), id, false, &config, now), Ok(Admitted::Free));
        }
        // Full: the newcomer (0 slots) takes 10.0.0.1's oldest.
        assert_eq!(table.admit(ip("10.0.0.9"), 6, false, &config, now), Ok(Admitted::Took(1)));
        assert_eq!(table.inner.lock().handshakes, 5, "a slot changed hands");
        table.handshake_done(ip("10.0.0.1"), 1); // the taken one's reader ends: nothing to give back
        assert_eq!(table.inner.lock().handshakes, 5);
        // Now 2, 2, 1: a holder of 2 cannot take from another holder of 2.
        assert_eq!(table.admit(ip("10.0.0.2"), 7, false, &config, now).unwrap_err().0, Refusal::Handshakes);
        // The holder of 1 takes from one of the holders of 2.
        assert!(matches!(table.admit(ip("10.0.0.9"), 8, false, &config, now), Ok(Admitted::Took(2 | 4))));
        // Of the holders of 2, the one with the oldest slot gives it up.
        let taken = table.admit(ip("10.0.0.3"), 9, false, &config, now);
        assert!(matches!(taken, Ok(Admitted::Took(id)) if id != 6 && id != 8), "{taken:?}");
    }

    #[test]
    fn addresses_a_proxy_forwarded_do_not_pile_up() {
        let table = IpTable::default();
        let config = Config::default();
        let now = Instant::now();
        let proxy: IpAddr = "127.0.0.1".parse().unwrap();
        // Short requests (under a second), each from another client address.
        for id in 0..3 * SWEEP_AT as u64 {
            let client = IpAddr::V6(Ipv6Addr::from((0x2001_0db8_u128 << 96) | (u128::from(id) << 64)));
            assert!(table.admit(proxy, id, true, &config, now).is_ok());
            assert_eq!(table.rekey(proxy, client, id, &config, now), Ok(()));
            table.handshake_done(client, id);
            table.connection_done(client);
        }
        let held = table.inner.lock().by_ip.len();
        assert!(held <= SWEEP_AT + 1, "{held} addresses held for nothing");
    }

    #[test]
    fn many_connected_addresses_do_not_make_each_new_one_sweep_them_all() {
        let table = IpTable::default();
        let config = Config::default().max_handshakes(usize::MAX);
        let now = Instant::now();
        // Connections from 4 * SWEEP_AT addresses, all still open.
        for id in 0..4 * SWEEP_AT as u64 {
            let ip = IpAddr::V6(Ipv6Addr::from((0x2001_0db8_u128 << 96) | (u128::from(id) << 64)));
            assert!(table.admit(ip, id, false, &config, now).is_ok());
            table.handshake_done(ip, id);
        }
        let inner = table.inner.lock();
        assert_eq!(inner.by_ip.len(), 4 * SWEEP_AT, "open connections are kept");
        assert!(inner.sweeps <= 3, "{} sweeps of every address for {} admits", inner.sweeps, 4 * SWEEP_AT);
    }

    #[test]
    fn a_proxys_socket_moves_to_its_client() {
        let table = IpTable::default();
        let config = Config::default().max_connections_per_ip(1);
        let now = Instant::now();
        let (proxy, a, b): (IpAddr, IpAddr, IpAddr) =
            ("127.0.0.1".parse().unwrap(), "10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        assert!(table.admit(proxy, 1, true, &config, now).is_ok());
        assert!(table.admit(proxy, 2, true, &config, now).is_ok(), "a proxy skips the per-address caps");
        assert_eq!(table.rekey(proxy, a, 1, &config, now), Ok(()));
        assert_eq!(table.rekey(proxy, a, 2, &config, now), Err(Refusal::ConnectionsPerIp));
        assert_eq!(table.rekey(proxy, b, 2, &config, now), Ok(()));
        assert_eq!(table.inner.lock().by_ip[&proxy].conns, 0);
        table.handshake_done(a, 1);
        table.handshake_done(b, 2);
        assert_eq!(table.inner.lock().handshakes, 0);
        assert!(table.admit(a, 3, false, &config, now).is_err(), "a still holds its connection");
    }
}
