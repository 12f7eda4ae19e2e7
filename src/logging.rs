//! Where wshub's log lines go when C links it.
//!
//! Rust programs pick their own logger through the `log` facade, and nothing
//! here runs for them. A C host has no Rust logger, so the C entry points
//! (`wshub_set_log_callback`, `wshub_start*`) install [`HostLogger`]: it sends
//! every record at or above the level set either to the host's sink (the C
//! callback, wrapped by `ffi/log.rs`) or, when none is set, to stderr in the
//! one format the header documents, [`stderr_line`]. The default level is
//! `Warn`; `Off` silences everything. No lock is held while the sink runs.
//!
//! What is logged never includes a token, an API key or a query string: the
//! call sites log addresses, connection ids, paths and reasons only.

use std::cell::Cell;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use log::{Level, LevelFilter, Log, Metadata, Record};
use parking_lot::Mutex;

/// The host's sink: level, target and message of one record.
pub(crate) type Sink = Box<dyn Fn(Level, &str, &str) + Send + Sync>;

/// The level set, as a `LevelFilter` number (`Warn` until the host sets one).
static LEVEL: AtomicUsize = AtomicUsize::new(LevelFilter::Warn as usize);

/// The sink (`None`: stderr). Locked only to read or replace the pointer,
/// never while a sink runs: each call holds its own reference instead.
static SINK: Mutex<Option<Arc<Sink>>> = Mutex::new(None);

thread_local! {
    /// True while this thread runs the host's sink.
    static IN_SINK: Cell<bool> = const { Cell::new(false) };
}

/// The logger installed for C hosts.
struct HostLogger;

static LOGGER: HostLogger = HostLogger;

fn level() -> LevelFilter {
    [LevelFilter::Off, LevelFilter::Error, LevelFilter::Warn, LevelFilter::Info, LevelFilter::Debug]
        .into_iter()
        .find(|l| *l as usize == LEVEL.load(Relaxed))
        .unwrap_or(LevelFilter::Trace)
}

impl Log for HostLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= level()
    }

    fn log(&self, record: &Record<'_>) {
        // What wshub logs from inside the host's own callback (a wshub call
        // made there) is dropped: calling the callback again from inside
        // itself could deadlock on the host's locks.
        if record.level() > level() || in_sink() {
            return;
        }
        let message = record.args().to_string();
        let sink = SINK.lock().clone();
        match sink {
            Some(sink) => {
                IN_SINK.with(|c| c.set(true));
                sink(record.level(), record.target(), &message);
                IN_SINK.with(|c| c.set(false));
            }
            None => {
                let line = stderr_line(SystemTime::now(), record.level(), record.target(), &message);
                // One write per line, so lines of different threads never interleave.
                let _ = std::io::stderr().lock().write_all(line.as_bytes());
            }
        }
    }

    fn flush(&self) {}
}

/// True on a thread that is running the host's sink right now.
pub(crate) fn in_sink() -> bool {
    IN_SINK.with(Cell::get)
}

/// Installs [`HostLogger`] as the process's logger unless one is installed
/// already (a Rust program that also uses the C API keeps its own, and its
/// panic hook). With it comes a panic hook that sends a panic's message to
/// the log like any error, so a C host never finds it on stderr unasked.
pub(crate) fn install_for_host() {
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level());
        std::panic::set_hook(Box::new(|info| log::error!("{info}")));
    }
}

/// Sets the level and the sink (`None`: stderr) of the host logger and
/// installs it. Returns once no call to the previous sink is running: each
/// call holds a reference to it, and this waits for those to go.
pub(crate) fn set_sink(level: LevelFilter, sink: Option<Sink>) {
    LEVEL.store(level as usize, Relaxed);
    let old = std::mem::replace(&mut *SINK.lock(), sink.map(Arc::new));
    install_for_host();
    if std::ptr::addr_eq(log::logger(), &LOGGER) {
        log::set_max_level(level);
    }
    if let Some(old) = old {
        while Arc::strong_count(&old) > 1 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// The stderr format: `2026-12-01T00:41:07.123Z wshub WARN <target>: <message>`,
/// one line (newlines in the message become spaces).
pub(crate) fn stderr_line(now: SystemTime, level: Level, target: &str, message: &str) -> String {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (y, mo, d) = civil_from_days((secs / 86_400) as i64);
    let day = secs % 86_400;
    let message = message.replace(['\n', '\r'], " ");
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z wshub {level} {target}: {message}\n",
        day / 3600,
        day / 60 % 60,
        day % 60,
        since.subsec_millis()
    )
}

/// Year, month, day of the `days`-th day after 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, proleptic Gregorian calendar).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_stderr_line_has_the_documented_format() {
        let t = UNIX_EPOCH + Duration::from_millis(1_796_085_667_123);
        let line = stderr_line(t, Level::Warn, "wshub::connection", "refused\nwith 403");
        assert_eq!(line, "2026-12-01T00:41:07.123Z wshub WARN wshub::connection: refused with 403\n");
    }

    /// With the host logger installed (as by every C entry point), a panic's
    /// message reaches the host's sink and is not printed by itself.
    #[test]
    fn a_panic_goes_to_the_hosts_sink() {
        let seen = Arc::new(Mutex::new(Vec::<String>::new()));
        let seen2 = seen.clone();
        set_sink(
            LevelFilter::Error,
            Some(Box::new(move |_, _, message: &str| seen2.lock().push(message.to_owned()))),
        );
        let _ = std::panic::catch_unwind(|| panic!("a panic for the sink"));
        set_sink(LevelFilter::Warn, None);
        assert!(seen.lock().iter().any(|m| m.contains("a panic for the sink")), "{:?}", seen.lock());
    }

    #[test]
    fn dates_across_leap_years_and_epochs() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(20_513), (2026, 3, 1));
    }
}
