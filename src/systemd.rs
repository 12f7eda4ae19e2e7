//! Running under systemd, without linking libsystemd: socket activation
//! (`LISTEN_FDS`/`LISTEN_PID`: the listening socket arrives as fd 3) and
//! `sd_notify` (`READY=1`, `STOPPING=1`, `WATCHDOG=1` as datagrams to the
//! Unix socket named by `NOTIFY_SOCKET`). Both protocols are documented
//! in sd_listen_fds(3) and sd_notify(3) and stable; outside systemd every
//! function here does nothing.

use std::net::TcpListener;
use std::os::unix::net::UnixDatagram;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

/// The first fd passed by socket activation.
const SD_LISTEN_FDS_START: i32 = 3;

/// The listening socket systemd passed, when `LISTEN_PID` is this process
/// and `LISTEN_FDS` is at least 1 (the first one is served; more are an
/// error, as wshub serves one port). The variables are removed from the
/// environment, so that programs this one starts do not take them as theirs.
pub fn listener_from_env() -> Result<Option<TcpListener>, String> {
    let (Ok(pid), Ok(fds)) = (std::env::var("LISTEN_PID"), std::env::var("LISTEN_FDS")) else {
        return Ok(None);
    };
    if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
        return Ok(None); // meant for another process (our parent, say)
    }
    for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(var);
    }
    let count: i32 = fds.trim().parse().map_err(|_| format!("LISTEN_FDS={fds:?} is not a number"))?;
    match count {
        0 => Ok(None),
        1 => crate::sys::fd::take_tcp_listener(SD_LISTEN_FDS_START)
            .map(Some)
            .map_err(|e| format!("socket activation: {e}")),
        n => Err(format!("socket activation passed {n} sockets; wshub serves one (one ListenStream=)")),
    }
}

/// Sends `state` (e.g. `"READY=1"`) to the service manager; false when not
/// run by one (no `NOTIFY_SOCKET`) or the datagram could not be sent (logged).
pub fn notify(state: &str) -> bool {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return false };
    let sent = UnixDatagram::unbound().and_then(|sock| {
        let bytes = path.as_encoded_bytes();
        match bytes.strip_prefix(b"@") {
            // An abstract socket (Linux): "@name".
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                sock.send_to_addr(state.as_bytes(), &addr)
            }
            None => sock.send_to(state.as_bytes(), &path),
        }
    });
    match sent {
        Ok(_) => true,
        Err(e) => {
            log::warn!("sd_notify {state:?} to {}: {e}", path.to_string_lossy());
            false
        }
    }
}

/// The watchdog interval systemd expects pings within (`WATCHDOG_USEC`,
/// for this process when `WATCHDOG_PID` is set).
fn watchdog_interval() -> Option<Duration> {
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// The thread that sends `WATCHDOG=1` at half the interval systemd asked
/// for, each time `healthy` says so; stops when dropped.
#[derive(Debug)]
pub struct Watchdog {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    /// Starts pinging when `WATCHDOG_USEC` is set (systemd's `WatchdogSec=`);
    /// otherwise a no-op value. `healthy` is asked before each ping (the
    /// binary asks the hub thread for its room count: a hub that no longer
    /// answers misses its pings, and systemd restarts the service).
    pub fn start(healthy: impl Fn() -> bool + Send + 'static) -> Watchdog {
        let none = Watchdog { stop: None, thread: None };
        let Some(interval) = watchdog_interval() else { return none };
        let (tx, rx): (Sender<()>, Receiver<()>) = std::sync::mpsc::channel();
        let every = interval / 2;
        let builder = std::thread::Builder::new().name("wshub-watchdog".into());
        let thread = crate::sys::signals::spawn(builder, move || {
            while let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(every) {
                if healthy() {
                    notify("WATCHDOG=1");
                }
            }
        });
        match thread {
            Ok(t) => {
                notify("WATCHDOG=1");
                Watchdog { stop: Some(tx), thread: Some(t) }
            }
            Err(e) => {
                log::error!("cannot start the watchdog thread: {e}");
                none
            }
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
