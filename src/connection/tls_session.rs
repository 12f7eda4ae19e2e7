//! A connection's TLS session (`--tls-cert`/`--tls-key`): the reader's way
//! from ciphertext to plaintext, and the encrypting side of every write.
//!
//! The session lives under the write lock of `outbound.rs` ([`WriteState`]),
//! whose module comment gives the rule that keeps frames in order; here is how
//! each step keeps it with TLS:
//! - the reader reads the socket *without* the lock, then takes it briefly to
//!   hand the ciphertext to the session and take plaintext out
//!   ([`ConnShared::tls_read`]); alerts, key updates and session tickets that
//!   this produces go out under the lock in the same order;
//! - every thread that writes encrypts under the lock and writes the
//!   session's output before letting go of it;
//! - output the session holds but the socket has not taken yet counts like a
//!   `Tail`: no direct send may start while the session has pending output.
//!
//! Decrypted bytes go on to the reader's frame meter and message assembly
//! (`reader.rs`, `assembly.rs`).

use std::io::{self, IoSlice, Read, Write};
use std::sync::atomic::Ordering::*;
use std::time::{Duration, Instant};

use parking_lot::MutexGuard;
use rustls::ServerConnection;

use super::outbound::{Out, Patience, WriteFailed, WriteState};
use super::ConnShared;
use crate::stats::Stats;
use crate::sys::sock;

/// The reader's ciphertext not yet handed to the TLS session.
#[derive(Debug)]
pub(crate) struct TlsIn {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl TlsIn {
    /// Most ciphertext one socket `read` takes.
    pub(crate) fn new() -> Self {
        TlsIn { buf: vec![0; 8 * 1024], start: 0, end: 0 }
    }
}

/// How often a TLS write waiting for room in the socket looks at its deadline.
const TLS_WRITE_TICK: Duration = Duration::from_millis(250);

impl ConnShared {
    /// [`ConnShared::try_send_direct`] on a TLS connection, under the write
    /// lock; `message`: `frame` is a data frame (not a heartbeat), counted.
    pub(super) fn send_direct_tls(
        &self,
        st: &mut WriteState,
        frame: &[u8],
        stats: &Stats,
        message: bool,
    ) -> bool {
        let Some(tls) = st.tls.as_deref_mut() else { return false };
        // Output still pending (records the reader caused): like a Tail.
        if tls.wants_write() {
            return false;
        }
        if tls.writer().write_all(frame).is_err() {
            return false; // the session is closed: the frame could never go
        }
        match flush_tls(&self.stream, tls) {
            Ok((n, true)) => {
                Stats::add(&stats.bytes_out, n as u64);
                if message {
                    Stats::add(&stats.messages_out, 1);
                    Stats::add(&stats.direct_sends, 1);
                }
            }
            // Encrypted but not all written (or the socket failed, which the
            // writer meets and reports): the frame is in the session now, so
            // the writer must finish it before anything else.
            Ok((n, false)) => {
                Stats::add(&stats.bytes_out, n as u64);
                self.queue_tls_tail(st, frame.len(), message);
            }
            Err(_) => self.queue_tls_tail(st, frame.len(), message),
        }
        true
    }

    fn queue_tls_tail(&self, st: &mut WriteState, len: usize, message: bool) {
        st.tls_tail = true;
        self.out.depth.fetch_add(1, AcqRel);
        self.out.bytes.fetch_add(len, AcqRel);
        self.enqueue(Out::Tail { bytes: len, message });
    }

    /// [`ConnShared::write_locked`] on a TLS connection: encrypts `parts` in
    /// order behind whatever the session still holds, then writes it all.
    pub(super) fn write_locked_tls(
        &self,
        mut guard: MutexGuard<'_, WriteState>,
        parts: &[&[u8]],
        close: bool,
        patience: Patience,
        stats: &Stats,
    ) -> Result<(), WriteFailed> {
        guard.tls_tail = false;
        if let Some(tls) = guard.tls.as_deref_mut() {
            // One vectored write: rustls packs the whole batch into as few
            // full-size records as it takes (a write per frame would make a
            // record, an AEAD call and 22 bytes of overhead per frame).
            let mut slices: Vec<IoSlice<'_>> =
                parts.iter().filter(|p| !p.is_empty()).map(|p| IoSlice::new(p)).collect();
            let mut slices = &mut slices[..];
            while !slices.is_empty() {
                match tls.writer().write_vectored(slices) {
                    Ok(0) | Err(_) => return Err(self.write_failed("TLS session closed")),
                    Ok(n) => IoSlice::advance_slices(&mut slices, n),
                }
            }
            if close {
                tls.send_close_notify();
            }
        }
        let mut stalled_since: Option<Instant> = None;
        while let Some(tls) = guard.tls.as_deref_mut() {
            if self.past_close_by() {
                return Err(self.write_failed("close timeout"));
            }
            match flush_tls(&self.stream, tls) {
                Ok((n, done)) => {
                    Stats::add(&stats.bytes_out, n as u64);
                    Stats::add(&stats.write_batches, 1);
                    if done {
                        break;
                    }
                    if n > 0 {
                        stalled_since = None;
                    }
                    let since = *stalled_since.get_or_insert_with(Instant::now);
                    let limit = if self.is_closing() { patience.closing } else { patience.open };
                    if since.elapsed() >= limit {
                        return Err(self.write_failed("peer stopped reading"));
                    }
                    // Let the reader feed the session while the socket is full.
                    let wait = TLS_WRITE_TICK.min(limit);
                    MutexGuard::unlocked(&mut guard, || sock::wait_writable(&self.stream, wait));
                }
                Err(e) => return Err(self.write_failed(&e.to_string())),
            }
        }
        Ok(())
    }

    /// Gives the connection its TLS session, before its handshake. Only the
    /// reader calls this, before any writer can exist.
    pub(crate) fn start_tls(
        &self,
        config: std::sync::Arc<rustls::ServerConfig>,
    ) -> Result<(), rustls::Error> {
        let mut session = ServerConnection::new(config)?;
        // The outbound queue is bounded already (in frames and bytes); the
        // session only holds what one batch or one direct send encrypted.
        session.set_buffer_limit(None);
        self.out.write.lock().tls = Some(Box::new(session));
        self.out.tls.store(true, Release);
        Ok(())
    }

    /// The connection speaks TLS.
    pub(crate) fn is_tls(&self) -> bool {
        self.out.tls.load(Acquire)
    }

    /// Runs the TLS handshake on the reader's thread until it completes, fails,
    /// or `deadline` passes. Ciphertext read past the handshake (the HTTP
    /// request, often) stays in `tls_in` for [`ConnShared::tls_read`].
    pub(crate) fn tls_handshake(&self, tls_in: &mut TlsIn, deadline: Instant) -> io::Result<()> {
        loop {
            {
                let mut st = self.out.write.lock();
                while tls_in.start < tls_in.end && session(&mut st)?.is_handshaking() {
                    let tls = session(&mut st)?;
                    let n = tls.read_tls(&mut &tls_in.buf[tls_in.start..tls_in.end])?;
                    if n == 0 {
                        break;
                    }
                    tls_in.start += n;
                    if let Err(e) = tls.process_new_packets() {
                        let _ = flush_tls(&self.stream, tls); // the alert, if the socket takes it
                        return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                    }
                }
                flush_tls_until(&self.stream, session(&mut st)?, deadline)?;
                if !session(&mut st)?.is_handshaking() {
                    return Ok(());
                }
            }
            let left = deadline
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())
                .ok_or(io::ErrorKind::TimedOut)?;
            self.stream.set_read_timeout(Some(left))?;
            let n = crate::sys::sock::recv(&self.stream, &mut tls_in.buf)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            tls_in.start = 0;
            tls_in.end = n;
        }
    }

    /// The reader's `read` on a TLS connection: plaintext the session already
    /// has, else ciphertext from `tls_in`, else a blocking socket read taken
    /// *without* the write lock (writers go on meanwhile); the lock is held
    /// only to feed the session and take plaintext out. `Ok(0)` at the end.
    /// `arm` runs before every raw read (it bounds how long that read may wait).
    pub(crate) fn tls_read(
        &self,
        tls_in: &mut TlsIn,
        buf: &mut [u8],
        arm: impl Fn() -> io::Result<()>,
    ) -> io::Result<usize> {
        loop {
            {
                let mut st = self.out.write.lock();
                loop {
                    match session(&mut st)?.reader().read(buf) {
                        Ok(n) => return Ok(n),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(e),
                    }
                    if tls_in.start == tls_in.end {
                        break;
                    }
                    let tls = session(&mut st)?;
                    let n = tls.read_tls(&mut &tls_in.buf[tls_in.start..tls_in.end])?;
                    tls_in.start += n;
                    let processed = tls.process_new_packets();
                    if tls.wants_write() {
                        self.flush_for_reader(&mut st);
                    }
                    if let Err(e) = processed {
                        return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                    }
                    if n == 0 {
                        break;
                    }
                }
            }
            arm()?;
            let n = crate::sys::sock::recv(&self.stream, &mut tls_in.buf)?;
            if n == 0 {
                return Ok(0);
            }
            tls_in.start = 0;
            tls_in.end = n;
        }
    }

    /// Records the reader's input caused (alerts, key updates, tickets): out
    /// now if the socket takes them, else a writer flushes them before its
    /// next frame (an empty control frame, queued, starts one if none runs,
    /// and holds a direct send back meanwhile).
    fn flush_for_reader(&self, st: &mut WriteState) {
        let Some(tls) = st.tls.as_deref_mut() else { return };
        if matches!(flush_tls(&self.stream, tls), Ok((_, true))) || st.tls_tail {
            return; // done, or the writer's Out::Tail will flush it anyway
        }
        self.push_control(Vec::new());
    }

    /// Writes bytes that are not WebSocket frames (the HTTP response, the 101)
    /// through the TLS session, on the reader's thread before any writer can
    /// exist. With `close_notify`, TLS says goodbye after them.
    pub(crate) fn write_unframed(
        &self,
        bytes: &[u8],
        close_notify: bool,
        deadline: Instant,
    ) -> io::Result<()> {
        let mut st = self.out.write.lock();
        let tls = session(&mut st)?;
        tls.writer().write_all(bytes)?;
        if close_notify {
            tls.send_close_notify();
        }
        flush_tls_until(&self.stream, tls, deadline)
    }

    /// Whether the reader's side holds input not yet read: ciphertext in
    /// `tls_in` not handed to the session, plaintext the session has (a
    /// record longer than the last read took), or the peer's close_notify
    /// (it came with the last records read; the socket shows nothing after
    /// it, and the next read reports the end). A failed session counts as
    /// holding some: the next read reports it.
    pub(crate) fn tls_holds_input(&self, tls_in: &TlsIn) -> bool {
        if tls_in.start < tls_in.end {
            return true;
        }
        let mut st = self.out.write.lock();
        session(&mut st)
            .ok()
            .and_then(|tls| tls.process_new_packets().ok())
            .is_none_or(|state| state.plaintext_bytes_to_read() > 0 || state.peer_has_closed())
    }

    /// The subject of the client's certificate, when it sent one (TLS with
    /// `tls_client_ca`).
    pub(crate) fn tls_client_subject(&self) -> Option<String> {
        let st = self.out.write.lock();
        let cert = st.tls.as_deref()?.peer_certificates()?.first()?;
        crate::tls::subject_of(cert)
    }
}

/// The TLS session of a connection that has one.
fn session(st: &mut WriteState) -> io::Result<&mut ServerConnection> {
    st.tls.as_deref_mut().ok_or_else(|| io::Error::other("not a TLS connection"))
}

/// Writes what the session has for the socket without blocking: (bytes
/// written, whether all of it went).
pub(crate) fn flush_tls(
    stream: &std::net::TcpStream,
    tls: &mut ServerConnection,
) -> io::Result<(usize, bool)> {
    struct DontWait<'a>(&'a std::net::TcpStream);
    impl Write for DontWait<'_> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            sock::send(self.0, buf, true)
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            sock::send_vectored_dont_wait(self.0, bufs)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut written = 0;
    while tls.wants_write() {
        match tls.write_tls(&mut DontWait(stream)) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok((written, false)),
            Err(e) => return Err(e),
        }
    }
    Ok((written, true))
}

/// Writes everything the session has for the socket, waiting for room until
/// `deadline` (the reader's writes before the writer exists: nobody else
/// wants the lock yet).
fn flush_tls_until(
    stream: &std::net::TcpStream,
    tls: &mut ServerConnection,
    deadline: Instant,
) -> io::Result<()> {
    loop {
        if flush_tls(stream, tls)?.1 {
            return Ok(());
        }
        let left = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero());
        let Some(left) = left else { return Err(io::ErrorKind::TimedOut.into()) };
        sock::wait_writable(stream, left.min(TLS_WRITE_TICK));
    }
}
