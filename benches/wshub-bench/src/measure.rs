//! Clocks, a latency histogram, and what /proc and getrusage say about the
//! server and the generator.

use std::fs;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the generator's own epoch (its first call). The generator
/// is one process, so send and receive stamps share this monotonic clock.
pub fn now_ns() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Log-linear histogram of nanosecond values: exact below 256 ns, then 128
/// buckets per power of two (under 0.8 % error).
pub struct Hist {
    counts: Vec<u64>,
    n: u64,
    max: u64,
    sum: u128,
}

const SUB_BITS: u32 = 7;

fn bucket(v: u64) -> usize {
    if v < (2 << SUB_BITS) {
        v as usize
    } else {
        let e = 63 - v.leading_zeros();
        let shift = e - SUB_BITS;
        ((shift as usize) << SUB_BITS) + (v >> shift) as usize
    }
}

fn bucket_mid(i: usize) -> u64 {
    if i < (2 << SUB_BITS) {
        i as u64
    } else {
        let shift = (i >> SUB_BITS) as u32 - 1;
        let mant = (i - ((shift as usize) << SUB_BITS)) as u64;
        (mant << shift) + ((1u64 << shift) >> 1)
    }
}

impl Default for Hist {
    fn default() -> Self {
        Hist { counts: vec![0; bucket(u64::MAX) + 1], n: 0, max: 0, sum: 0 }
    }
}

impl Hist {
    pub fn record(&mut self, ns: u64) {
        self.counts[bucket(ns)] += 1;
        self.n += 1;
        self.max = self.max.max(ns);
        self.sum += ns as u128;
    }

    pub fn count(&self) -> u64 {
        self.n
    }

    /// The q-quantile in ns (0 when empty).
    pub fn quantile(&self, q: f64) -> u64 {
        if self.n == 0 {
            return 0;
        }
        let target = ((q * self.n as f64).ceil() as u64).clamp(1, self.n);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= target {
                return bucket_mid(i).min(self.max);
            }
        }
        self.max
    }

    pub fn mean(&self) -> u64 {
        if self.n == 0 {
            0
        } else {
            (self.sum / self.n as u128) as u64
        }
    }

    /// `p50_us`, `p90_us`, `p99_us`, `max_us`, `mean_us` (µs, one decimal).
    pub fn json_fields(&self) -> Vec<(&'static str, Value)> {
        let us = |ns: u64| json!((ns as f64 / 100.0).round() / 10.0);
        vec![
            ("p50_us", us(self.quantile(0.50))),
            ("p90_us", us(self.quantile(0.90))),
            ("p99_us", us(self.quantile(0.99))),
            ("max_us", us(self.max)),
            ("mean_us", us(self.mean())),
        ]
    }

    pub fn summary(&self) -> String {
        let us = |ns: u64| ns as f64 / 1000.0;
        format!(
            "p50 {:.1} µs, p90 {:.1} µs, p99 {:.1} µs, max {:.1} µs, mean {:.1} µs ({} samples)",
            us(self.quantile(0.5)),
            us(self.quantile(0.9)),
            us(self.quantile(0.99)),
            us(self.max),
            us(self.mean()),
            self.n
        )
    }
}

/// The server's footprint as /proc shows it.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcStats {
    pub rss_kb: u64,
    pub threads: u64,
    pub fds: u64,
}

impl ProcStats {
    pub fn read(pid: u32) -> Result<ProcStats, String> {
        let status = fs::read_to_string(format!("/proc/{pid}/status"))
            .map_err(|e| format!("cannot read /proc/{pid}/status (is --pid the server's pid?): {e}"))?;
        let rss_kb = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("/proc/{pid}/status has no VmRSS"))?;
        let count = |dir: &str| -> Result<u64, String> {
            fs::read_dir(format!("/proc/{pid}/{dir}"))
                .map(|d| d.count() as u64)
                .map_err(|e| format!("cannot list /proc/{pid}/{dir}: {e}"))
        };
        Ok(ProcStats { rss_kb, threads: count("task")?, fds: count("fd")? })
    }

    pub fn json(&self) -> Value {
        json!({"rss_kb": self.rss_kb, "threads": self.threads, "fds": self.fds})
    }
}

/// The machine-wide count of TcpExt ListenOverflows (accept queue full: the
/// SYN or the final ACK is dropped and the client retransmits after ~1 s).
pub fn listen_overflows() -> Option<u64> {
    let text = fs::read_to_string("/proc/net/netstat").ok()?;
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (lines.next()?, lines.next()?);
    let i = names.split_whitespace().position(|n| n == "ListenOverflows")?;
    values.split_whitespace().nth(i)?.parse().ok()
}

impl std::fmt::Display for ProcStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RSS {} KiB, {} threads, {} fds", self.rss_kb, self.threads, self.fds)
    }
}

/// An optional CPU % for the summary.
pub fn pct(p: Option<f64>) -> String {
    p.map_or("n/a (no --pid)".to_string(), |p| format!("{p:.1} %"))
}

/// utime + stime of a process from /proc/PID/stat.
fn proc_cpu(pid: u32) -> Option<Duration> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state); utime and stime are fields 14 and 15.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as u64 } else { 100 };
    Some(Duration::from_nanos(ticks * 1_000_000_000 / hz))
}

fn rusage_self() -> libc::rusage {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    ru
}

fn self_cpu() -> Duration {
    let ru = rusage_self();
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// The generator's peak RSS in KiB.
pub fn gen_maxrss_kb() -> u64 {
    rusage_self().ru_maxrss as u64
}

/// CPU of the generator and the server from a starting point.
pub struct CpuMark {
    wall: Instant,
    gen: Duration,
    server: Option<(u32, Duration)>,
}

/// CPU use over a phase, in % of one core (200 = both cores of a 2-core machine).
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuUse {
    pub gen_pct: f64,
    pub server_pct: Option<f64>,
    /// The server's CPU time over the phase (utime + stime), in seconds.
    pub server_secs: Option<f64>,
}

impl CpuUse {
    /// The server's CPU time per unit of work, in µs (two decimals); None
    /// without --pid or without work.
    pub fn server_us_per(&self, units: u64) -> Option<f64> {
        let secs = self.server_secs?;
        (units > 0).then(|| (secs * 1e6 / units as f64 * 100.0).round() / 100.0)
    }
}

impl CpuMark {
    pub fn start(pid: Option<u32>) -> CpuMark {
        CpuMark {
            wall: Instant::now(),
            gen: self_cpu(),
            server: pid.and_then(|p| proc_cpu(p).map(|c| (p, c))),
        }
    }

    pub fn stop(&self) -> CpuUse {
        let wall = self.wall.elapsed().as_secs_f64().max(1e-9);
        let pct = |d: Duration| (d.as_secs_f64() / wall * 1000.0).round() / 10.0;
        let server = self.server.and_then(|(p, before)| proc_cpu(p).map(|now| now.saturating_sub(before)));
        CpuUse {
            gen_pct: pct(self_cpu().saturating_sub(self.gen)),
            server_pct: server.map(pct),
            server_secs: server.map(|d| d.as_secs_f64()),
        }
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the new soft limit.
pub fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_close() {
        let mut last = 0;
        for v in [0u64, 1, 255, 256, 257, 511, 512, 1000, 123_456, 10_000_000, u64::MAX / 3] {
            let b = bucket(v);
            assert!(b >= last);
            last = b;
            let mid = bucket_mid(b);
            let err = (mid as f64 - v as f64).abs() / (v.max(1) as f64);
            assert!(err < 0.01, "{v} -> {b} -> {mid}");
        }
        assert_eq!(bucket(255) + 1, bucket(256));
        assert_eq!(bucket(511) + 1, bucket(512));
    }

    #[test]
    fn quantiles() {
        let mut h = Hist::default();
        for v in 1..=1000u64 {
            h.record(v * 1000);
        }
        let p50 = h.quantile(0.5) as f64;
        assert!((p50 - 500_000.0).abs() < 5000.0, "{p50}");
        assert_eq!(h.quantile(1.0), 1_000_000);
    }
}
