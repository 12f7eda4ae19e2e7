//! How a node reaches its Redis: straight at the `--redis` URL, or through
//! Sentinel (`--redis-sentinel HOST:PORT`, repeatable, with
//! `--redis-sentinel-master NAME`): every new connection asks the sentinels
//! which instance is the primary, connects there and checks that it says it
//! is one (`ROLE`), so after a failover the next connection made (the
//! subscriber's, the pool's, the heartbeat's) reaches the new primary.
//!
//! With Sentinel the `--redis` URL, when given, only lends its password,
//! database and TLS settings: its host and port are replaced by the
//! primary's. The sentinels themselves are asked without a password.
//!
//! A primary replaced while connections still reach it (a `SENTINEL
//! FAILOVER`, a partition: the old one takes writes for seconds until the
//! sentinels demote it) is noticed by the heartbeat, which asks
//! [`Connector::another_primary_named`] on every beat (`node.rs`).
//!
//! This module owns making connections; what a broken one means (Redis
//! down, a resubscribe and refill) stays with the pool's callers.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo};

/// Less time than this left for the sentinels: none is asked.
const MIN_ASK: Duration = Duration::from_millis(10);

/// Where connections go.
pub(super) enum Connector {
    /// One Redis at a fixed address.
    Direct(redis::Client),
    /// The primary that the sentinels name for a master.
    Sentinel(Sentinels),
}

/// The sentinels watching one master.
pub(super) struct Sentinels {
    /// `HOST:PORT` of each sentinel.
    addrs: Vec<String>,
    master: String,
    /// Password, database and TLS settings for the primary.
    template: ConnectionInfo,
    /// The sentinel asked first next time: the last whose primary was
    /// connected to, or the one after the last that failed.
    last_good: AtomicUsize,
    /// `HOST:PORT` of the primary the last connection was made to.
    connected: Mutex<Option<String>>,
}

impl Connector {
    /// A connector for `url` alone, or for the primary the `sentinels` name
    /// for `master` (with `url`'s password, database and TLS, if given).
    pub fn new(url: Option<&str>, sentinels: &[String], master: Option<&str>) -> Result<Self, String> {
        if sentinels.is_empty() {
            let url = url.ok_or("--redis: no URL")?;
            return redis::Client::open(url).map(Connector::Direct).map_err(|e| format!("--redis: {e}"));
        }
        let master = master.ok_or("--redis-sentinel needs --redis-sentinel-master")?;
        let template =
            url.unwrap_or("redis://127.0.0.1").into_connection_info().map_err(|e| format!("--redis: {e}"))?;
        for addr in sentinels {
            parse_addr(addr)?;
        }
        Ok(Connector::Sentinel(Sentinels {
            addrs: sentinels.to_vec(),
            master: master.to_owned(),
            template,
            last_good: AtomicUsize::new(0),
            connected: Mutex::new(None),
        }))
    }

    /// With Sentinel, whether the sentinels name another primary than the
    /// one connections were last made to, and it says (`ROLE`) it is one:
    /// the first sentinel that names one is asked, all within `timeout`. A
    /// stale sentinel naming an instance that is not a primary (or does not
    /// answer) does not count. The sentinels and the named instance share
    /// `timeout`: the heartbeat waits for this on every beat.
    ///
    /// A sentinel that does not answer (or knows no primary) gets at most
    /// half of what is left, so the next is asked in the same beat, and is
    /// passed over (asked last from then on, as by `connect`): one frozen
    /// sentinel asked first on every beat would hide a new primary for as
    /// long as it stays frozen, while the old one acks writes it will drop.
    pub fn another_primary_named(&self, timeout: Duration) -> bool {
        let Connector::Sentinel(s) = self else { return false };
        let deadline = Instant::now() + timeout;
        let n = s.addrs.len();
        let first = s.last_good.load(Relaxed) % n;
        for i in (0..n).map(|k| (first + k) % n) {
            let now = Instant::now();
            let left = deadline.saturating_duration_since(now);
            if left / 2 < MIN_ASK {
                break;
            }
            let Ok(Some(info)) = s.primary_from(&s.addrs[i], now + left / 2) else {
                s.pass_over(i);
                continue;
            };
            let at = place(info.addr());
            if s.connected.lock().as_ref().is_none_or(|now| *now == at) {
                return false;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            return left >= MIN_ASK && primary_at(info, left).is_ok();
        }
        false
    }

    /// Whether connections go through Sentinel.
    pub fn is_sentinel(&self) -> bool {
        matches!(self, Connector::Sentinel(_))
    }

    /// A connection to the primary, each step (the sentinels' answers
    /// together, the primary's connect, its `ROLE`) bounded by `timeout`,
    /// with `timeout` set on its reads and writes.
    pub fn connect(&self, timeout: Duration) -> redis::RedisResult<redis::Connection> {
        let conn = match self {
            Connector::Direct(client) => client.get_connection_with_timeout(timeout)?,
            Connector::Sentinel(s) => s.connect(timeout)?,
        };
        conn.set_read_timeout(Some(timeout))?;
        conn.set_write_timeout(Some(timeout))?;
        Ok(conn)
    }
}

impl Sentinels {
    /// A connection to the primary the first sentinel able to name one
    /// names. A sentinel whose named instance cannot be reached or is not a
    /// primary (one that has not seen a failover yet, or is cut off from
    /// the others) is passed over for the next: each is asked in turn.
    ///
    /// The sentinels' answers share one `timeout` (each asked with what is
    /// left of it): each that does not answer used to take its own, so a
    /// call waited 2 s per silent sentinel (32 s with sixteen) before its
    /// connection was made. One that fails is asked last next time.
    fn connect(&self, timeout: Duration) -> redis::RedisResult<redis::Connection> {
        let n = self.addrs.len();
        let first = self.last_good.load(Relaxed) % n;
        let deadline = Instant::now() + timeout;
        let mut last_error = None;
        for i in (0..n).map(|k| (first + k) % n) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left < MIN_ASK {
                break;
            }
            let named = match self.primary_from(&self.addrs[i], deadline) {
                Ok(Some(info)) => info,
                Ok(None) => {
                    self.pass_over(i);
                    continue;
                }
                Err(e) => {
                    self.pass_over(i);
                    last_error = Some(e);
                    continue;
                }
            };
            let at = place(named.addr());
            match primary_at(named, timeout) {
                Ok(conn) => {
                    self.last_good.store(i, Relaxed);
                    *self.connected.lock() = Some(at);
                    return Ok(conn);
                }
                Err(e) => {
                    self.pass_over(i);
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| {
            redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no sentinel knows a primary for master {:?}", self.master),
            ))
        }))
    }

    /// Makes the sentinel after `i` the first asked next time, unless
    /// another one answered meanwhile.
    fn pass_over(&self, i: usize) {
        let _ = self.last_good.compare_exchange(i, (i + 1) % self.addrs.len(), Relaxed, Relaxed);
    }

    /// What one sentinel says the primary is: its connection info, or
    /// `None` when it does not know the master; by `deadline`.
    fn primary_from(&self, addr: &str, deadline: Instant) -> redis::RedisResult<Option<ConnectionInfo>> {
        let (host, port) = parse_addr(addr)
            .map_err(|e| redis::RedisError::from(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?;
        let info = ConnectionAddr::Tcp(host.to_owned(), port).into_connection_info()?;
        let left = || {
            Some(deadline.saturating_duration_since(Instant::now())).filter(|d| *d >= MIN_ASK).ok_or_else(
                || {
                    redis::RedisError::from(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("sentinel {addr}: no answer in time"),
                    ))
                },
            )
        };
        let mut conn = redis::Client::open(info)?.get_connection_with_timeout(left()?)?;
        let left = left()?;
        conn.set_read_timeout(Some(left))?;
        conn.set_write_timeout(Some(left))?;
        let found: Option<(String, u16)> =
            redis::cmd("SENTINEL").arg("get-master-addr-by-name").arg(&self.master).query(&mut conn)?;
        Ok(found.map(|(host, port)| {
            let addr = match self.template.addr() {
                ConnectionAddr::TcpTls { insecure, tls_params, .. } => {
                    ConnectionAddr::TcpTls { host, port, insecure: *insecure, tls_params: tls_params.clone() }
                }
                _ => ConnectionAddr::Tcp(host, port),
            };
            self.template.clone().set_addr(addr)
        }))
    }
}

/// A connection to the instance a sentinel named, checked with `ROLE` to
/// be a primary: between a failover and the sentinels' next look, the one
/// named may be an old primary come back as a replica.
fn primary_at(info: ConnectionInfo, timeout: Duration) -> redis::RedisResult<redis::Connection> {
    let mut conn = redis::Client::open(info)?.get_connection_with_timeout(timeout)?;
    conn.set_read_timeout(Some(timeout))?;
    let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut conn)?;
    match is_primary(&role) {
        true => Ok(conn),
        false => Err(redis::RedisError::from((
            redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly),
            "the instance the sentinels name is not a primary (yet)",
        ))),
    }
}

/// `HOST:PORT` of an address.
fn place(addr: &ConnectionAddr) -> String {
    match addr {
        ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
            format!("{host}:{port}")
        }
        other => other.to_string(),
    }
}

/// Whether a `ROLE` reply is a primary's.
pub(super) fn is_primary(role: &[redis::Value]) -> bool {
    matches!(role.first(), Some(redis::Value::BulkString(r)) if r == b"master")
}

/// `HOST:PORT` (an IPv6 host in brackets) into its parts.
pub(crate) fn parse_addr(addr: &str) -> Result<(&str, u16), String> {
    let bad = || format!("--redis-sentinel {addr:?} is not HOST:PORT");
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() || port == 0 || host.contains(char::is_whitespace) {
        return Err(bad());
    }
    Ok((host, port))
}

/// Whether a Redis error says the connection reaches no primary any more: a
/// READONLY reply (the instance was made a replica in a failover) counts as
/// a broken connection, so the next one asks the sentinels again.
pub(super) fn not_primary(e: &redis::RedisError) -> bool {
    e.code() == Some("READONLY")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_addresses_parse_and_junk_does_not() {
        assert_eq!(parse_addr("127.0.0.1:26379"), Ok(("127.0.0.1", 26379)));
        assert_eq!(parse_addr("[::1]:26379"), Ok(("::1", 26379)));
        assert_eq!(parse_addr("sentinel-a:1"), Ok(("sentinel-a", 1)));
        for bad in ["", "host", ":26379", "host:", "host:0", "host:99999", "a b:1"] {
            assert!(parse_addr(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sentinel_without_a_master_name_is_refused() {
        let sentinels = vec!["127.0.0.1:26379".to_owned()];
        assert!(Connector::new(None, &sentinels, None).is_err());
        assert!(Connector::new(None, &sentinels, Some("m")).is_ok());
        assert!(Connector::new(None, &["nope".to_owned()], Some("m")).is_err());
    }
}
