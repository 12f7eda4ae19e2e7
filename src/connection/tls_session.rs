//! A connection's TLS session (`--tls-cert`/`--tls-key`): the reader's way
//! from ciphertext to plaintext, and the encrypting side of every write.
//!
//! The session lives under the write lock of `outbound.rs` ([`WriteState`]),
//! whose module comment gives the rule that keeps frames in order; here is how
//! each step keeps it with TLS:
//! - the reader waits for bytes *without* the lock, then takes it briefly to
//!   read what the socket has into the session (reads that never wait, at
//!   most [`READS_PER_LOCK`] at a time) and take plaintext out
//!   ([`ConnShared::tls_read`]); alerts, key updates and
//!   session tickets that this produces go out under the lock in the same
//!   order;
//! - a round of the hub hands a member all its frames at once, and they go
//!   into the session together, up to [`TLS_CORK`] bytes at a time: as few
//!   records as they fit in, one `send`, stopping where the socket is full;
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

/// What the reader knows of its socket between reads on a TLS connection.
/// It holds no buffer of its own while idle: ciphertext goes from the socket
/// straight into the session's buffer, under the write lock but with reads
/// that never wait, and the reader waits for bytes without the lock, reading
/// the first of them into its caller's plaintext buffer
/// ([`ConnShared::tls_read`]), so an idle connection keeps only the session.
#[derive(Debug)]
pub(crate) struct TlsIn {
    /// The last read took everything the socket had: wait before the next.
    drained: bool,
    /// Ciphertext of a blocking read that the session had no room for: it
    /// takes at most what completes the record it holds (less than 4 KiB
    /// when it holds most of a 16 KiB one), and the rest must wait until
    /// its plaintext is taken out (rustls refuses ciphertext past 16 KiB of
    /// plaintext). Fed before the socket; empty, with nothing allocated,
    /// but for that moment.
    left: Vec<u8>,
}

impl TlsIn {
    pub(crate) fn new() -> Self {
        TlsIn { drained: true, left: Vec::new() }
    }
}

/// The most the session reads from the socket at once when its buffer holds
/// no partial record (rustls's read size): a read that took less left the
/// socket empty, most likely.
const SESSION_READ: usize = 4096;

/// The most reads into the session the reader makes under one hold of the
/// write lock: a peer sending records without plaintext (a key update and an
/// empty record, over and over; rustls bounds each kind alone, not the two
/// interleaved) would otherwise keep it for as long as it sends, and this
/// connection's writer with it.
const READS_PER_LOCK: usize = 16;

/// The socket as the session's source of ciphertext: reads that never wait.
struct SockIn<'a>(&'a std::net::TcpStream);

impl Read for SockIn<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        sock::recv_dont_wait(self.0, buf)
    }
}

/// The most frame bytes one direct send puts into a TLS session at once: a
/// round of small frames shares records and one `send`, and a member whose
/// socket is full holds at most this (or one frame) beyond it.
const TLS_CORK: usize = 64 * 1024;

/// How often a TLS write waiting for room in the socket looks at its deadline.
const TLS_WRITE_TICK: Duration = Duration::from_millis(250);

impl ConnShared {
    /// [`ConnShared::try_send_direct`] (and `try_send_direct_many`) on a TLS
    /// connection, under the write lock: `frames` go into the session
    /// together, so a round's frames for this member share records and one
    /// `send`. True when all of them are taken care of (sent, or encrypted
    /// with the rest left to the writer), false when none is. `message`:
    /// they are data frames (not a heartbeat), counted.
    pub(super) fn send_direct_tls(
        &self,
        st: &mut WriteState,
        frames: &[&[u8]],
        stats: &Stats,
        message: bool,
    ) -> bool {
        let Some(tls) = st.tls.as_deref_mut() else { return false };
        // Output still pending (records the reader caused): like a Tail.
        if tls.wants_write() {
            return false;
        }
        if encrypt(tls, frames).is_err() {
            return false; // the session is closed: the frames could never go
        }
        let done = match flush_tls(&self.stream, tls) {
            Ok((n, done)) => {
                Stats::add(&stats.bytes_out, n as u64);
                done
            }
            Err(_) => false,
        };
        if done {
            if message {
                Stats::add(&stats.messages_out, frames.len() as u64);
                Stats::add(&stats.direct_sends, frames.len() as u64);
            }
            return true;
        }
        // Encrypted but not all written (or the socket failed, which the
        // writer meets and reports): the frames are in the session now, so
        // the writer must finish them before anything else.
        for frame in frames {
            self.queue_tls_tail(st, frame.len(), message);
        }
        true
    }

    /// `try_send_direct_many` on a TLS connection, under the write lock:
    /// the frames go into the session up to [`TLS_CORK`] bytes at a time (as
    /// few records as they fit in, one `send`), and it stops at the first
    /// batch the socket does not take whole. Like a partial `writev`, what is
    /// left to the writer is then one batch, not the whole round (up to 64
    /// frames of up to the message size limit): the caller queues the rest
    /// under the queue's bounds. How many of `frames`, from the first, are
    /// taken care of.
    pub(super) fn send_direct_many_tls(
        &self,
        st: &mut WriteState,
        frames: &[&crate::frame::SharedFrame],
        stats: &Stats,
    ) -> usize {
        let mut taken = 0;
        while taken < frames.len() && !st.tls_tail {
            let mut end = taken + 1;
            let mut bytes = frames[taken].len();
            while end < frames.len() && bytes + frames[end].len() <= TLS_CORK {
                bytes += frames[end].len();
                end += 1;
            }
            let batch: Vec<&[u8]> = frames[taken..end].iter().map(|f| &f[..]).collect();
            if !self.send_direct_tls(st, &batch, stats, true) {
                break;
            }
            frames[taken..end].iter().for_each(|f| super::outbound::count_compressed(f, stats));
            taken = end;
        }
        taken
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
            if encrypt(tls, parts).is_err() {
                return Err(self.write_failed("TLS session closed"));
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
    /// or `deadline` passes. Whatever the client sent past the handshake (the
    /// HTTP request, often) stays in the session or the socket for
    /// [`ConnShared::tls_read`].
    pub(crate) fn tls_handshake(&self, tls_in: &mut TlsIn, deadline: Instant) -> io::Result<()> {
        loop {
            {
                let mut st = self.out.write.lock();
                let tls = session(&mut st)?;
                while tls.is_handshaking() {
                    match tls.read_tls(&mut SockIn(&self.stream)) {
                        Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                    if let Err(e) = tls.process_new_packets() {
                        let _ = flush_tls(&self.stream, tls); // the alert, if the socket takes it
                        return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                    }
                }
                flush_tls_until(&self.stream, tls, deadline)?;
                if !tls.is_handshaking() {
                    tls_in.drained = false;
                    return Ok(());
                }
            }
            let left = deadline
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())
                .ok_or(io::ErrorKind::TimedOut)?;
            self.stream.set_read_timeout(Some(left))?;
            // Nothing read here: the loop's top takes what came, or ends at
            // the deadline.
            sock::wait_readable(&self.stream, left);
        }
    }

    /// The reader's `read` on a TLS connection: plaintext the session already
    /// has, else what the socket has, read into the session without waiting;
    /// when the socket is empty, a blocking read of the next bytes into
    /// `buf` (the session copies them out before plaintext goes in), taken
    /// *without* the write lock (writers go on meanwhile). The lock is held
    /// only to feed the session and take plaintext out. `Ok(0)` at the end.
    /// `arm` runs before every blocking read (it bounds how long that read
    /// may wait, and fails once the deadline has come), and after every
    /// [`READS_PER_LOCK`] reads that never wait, for records that neither
    /// run out nor make plaintext.
    pub(crate) fn tls_read(
        &self,
        tls_in: &mut TlsIn,
        buf: &mut [u8],
        arm: impl Fn() -> io::Result<()>,
    ) -> io::Result<usize> {
        loop {
            {
                let mut st = self.out.write.lock();
                let mut reads = 0;
                loop {
                    match session(&mut st)?.reader().read(buf) {
                        Ok(n) => return Ok(n),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(e),
                    }
                    if !tls_in.left.is_empty() {
                        // Ok(0): a close_notify came, the rest is ignored.
                        let took = self.take_in(&mut st, &mut &tls_in.left[..])?;
                        if took == 0 || took == tls_in.left.len() {
                            tls_in.left = Vec::new();
                        } else {
                            tls_in.left.drain(..took);
                        }
                        continue;
                    }
                    if tls_in.drained || reads == READS_PER_LOCK {
                        break;
                    }
                    reads += 1;
                    match self.take_in(&mut st, &mut SockIn(&self.stream)) {
                        Ok(0) => return Ok(0),
                        Ok(n) => tls_in.drained = n < SESSION_READ,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => tls_in.drained = true,
                        Err(e) => return Err(e),
                    }
                }
                if !tls_in.drained {
                    // Records that make no plaintext (key updates, empty
                    // ones) keep coming: a writer waiting for the lock
                    // gets it before the reader goes on, and the deadline
                    // still holds (the handshake's, the session's end).
                    MutexGuard::unlock_fair(st);
                    arm()?;
                    continue;
                }
            }
            // The caller's plaintext buffer holds the ciphertext until the
            // session has taken it: no buffer of our own. No more than the
            // session reads at once, so the plaintext it makes fits in the
            // session (rustls refuses ciphertext past 16 KiB of plaintext
            // not yet taken out) unless the session held most of a record
            // already and takes only what completes it: the rest waits in
            // `left` for the plaintext to be taken out.
            arm()?;
            let first = buf.len().min(SESSION_READ);
            let n = sock::recv(&self.stream, &mut buf[..first])?;
            if n == 0 {
                return Ok(0);
            }
            let mut st = self.out.write.lock();
            let mut fed = &buf[..n];
            // Ok(0) with bytes left: a close_notify came, the rest is ignored.
            if self.take_in(&mut st, &mut fed)? > 0 && !fed.is_empty() {
                tls_in.left = fed.to_vec();
            }
            tls_in.drained = n < first;
        }
    }

    /// Under the write lock: one read of ciphertext from `from` into the
    /// session, which decrypts what it completes; what that makes the session
    /// send (alerts, key updates) goes out or is handed to the writer. The
    /// bytes read; `WouldBlock` when `from` has none now.
    fn take_in(&self, st: &mut WriteState, from: &mut dyn Read) -> io::Result<usize> {
        let tls = session(st)?;
        let n = tls.read_tls(from)?;
        let processed = tls.process_new_packets();
        if tls.wants_write() {
            self.flush_for_reader(st);
        }
        match processed {
            Ok(_) => Ok(n),
            Err(e) => Err(io::Error::new(io::ErrorKind::InvalidData, e)),
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

    /// Whether the reader's side holds input not yet read: ciphertext of a
    /// blocking read the session has not taken yet (`TlsIn::left`),
    /// plaintext the session has (a record longer than the last read took),
    /// or the peer's close_notify (it came with the last records read; the
    /// socket shows nothing after it, and the next read reports the end).
    /// Other ciphertext is in the socket (its poll sees it) or in the
    /// session's own buffer, a partial record that waits for the socket's
    /// next bytes either way. A failed session counts as holding some: the
    /// next read reports it.
    pub(crate) fn tls_holds_input(&self, tls_in: &TlsIn) -> bool {
        if !tls_in.left.is_empty() {
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

/// Encrypts `parts` in order in one vectored write: rustls packs them into as
/// few full-size records as they fit in (a write per frame would make a
/// record, an AEAD call, an allocation and 22 bytes of overhead per frame).
/// An error: the session takes no more (it has sent its close_notify).
fn encrypt(tls: &mut ServerConnection, parts: &[&[u8]]) -> io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> =
        parts.iter().filter(|p| !p.is_empty()).map(|p| IoSlice::new(p)).collect();
    let mut slices = &mut slices[..];
    while !slices.is_empty() {
        match tls.writer().write_vectored(slices)? {
            0 => return Err(io::ErrorKind::WriteZero.into()),
            n => IoSlice::advance_slices(&mut slices, n),
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::path::PathBuf;
    use std::sync::Arc;

    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    use super::*;
    use crate::connection::test_support::loopback_conn;
    use crate::frame::{self, SharedFrame};
    use crate::tls::{PemSource, Tls, TlsSources};

    /// A CA and a server certificate for localhost, made by the `openssl` CLI.
    pub(super) struct Pki(PathBuf);

    impl Pki {
        pub(super) fn make(tag: &str) -> Pki {
            let dir = std::env::temp_dir().join(format!("wshub-tls-unit-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
            let run = |args: &[&str]| {
                let out = std::process::Command::new("openssl").current_dir(&dir).args(args).output();
                let out = out.expect("the openssl CLI is needed");
                assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            };
            std::fs::write(dir.join("san.ext"), "subjectAltName=DNS:localhost\n").unwrap();
            let mut ca = vec!["req", "-x509"];
            ca.extend(ec);
            ca.extend(["-days", "2", "-subj", "/CN=unit CA", "-keyout", "ca.key", "-out", "ca.pem"]);
            run(&ca);
            let mut csr = vec!["req"];
            csr.extend(ec);
            csr.extend(["-subj", "/CN=localhost", "-keyout", "key.pem", "-out", "server.csr"]);
            run(&csr);
            run(&[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "san.ext",
                "-out",
                "cert.pem",
            ]);
            Pki(dir)
        }

        pub(super) fn path(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for Pki {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A connection over loopback with its TLS handshake done: the server
    /// side, and a rustls client on the peer's end.
    pub(super) fn tls_conn(pki: &Pki) -> (Arc<ConnShared>, rustls::ClientConnection, TcpStream) {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_file(pki.path("ca.pem")).unwrap()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client_config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls_conn_with(pki, client_config)
    }

    /// [`tls_conn`] with the client's own config.
    pub(super) fn tls_conn_with(
        pki: &Pki,
        client_config: rustls::ClientConfig,
    ) -> (Arc<ConnShared>, rustls::ClientConnection, TcpStream) {
        let sources = TlsSources {
            cert: PemSource::File(pki.path("cert.pem")),
            key: PemSource::File(pki.path("key.pem")),
            client_ca: None,
        };
        let config = Tls::load(sources).unwrap().current();
        let (conn, mut peer) = loopback_conn(1);
        conn.start_tls(config).unwrap();
        let server = {
            let conn = conn.clone();
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(10);
                conn.tls_handshake(&mut TlsIn::new(), deadline)
            })
        };
        let name = "localhost".try_into().unwrap();
        let mut client = rustls::ClientConnection::new(Arc::new(client_config), name).unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        while client.is_handshaking() {
            client.complete_io(&mut peer).unwrap();
        }
        server.join().unwrap().unwrap();
        (conn, client, peer)
    }

    /// Reads until `want` bytes of plaintext have come: (the plaintext, how
    /// many application-data records carried it, counting any the
    /// handshake's end left behind, such as session tickets).
    fn read_plaintext(
        client: &mut rustls::ClientConnection,
        peer: &mut TcpStream,
        want: usize,
    ) -> (Vec<u8>, usize) {
        let (mut plain, mut raw, mut records) = (Vec::new(), Vec::new(), 0);
        let mut parsed = 0;
        let mut buf = vec![0u8; 64 * 1024];
        while plain.len() < want {
            let n = peer.read(&mut buf).expect("ciphertext before the timeout");
            assert!(n > 0, "the server closed after {} of {want} bytes", plain.len());
            raw.extend_from_slice(&buf[..n]);
            // Record headers: type, version (2), length (2).
            while raw.len() >= parsed + 5 {
                let len = usize::from(u16::from_be_bytes([raw[parsed + 3], raw[parsed + 4]]));
                if raw.len() < parsed + 5 + len {
                    break;
                }
                if raw[parsed] == 23 {
                    records += 1;
                }
                parsed += 5 + len;
            }
            let mut fed = &buf[..n];
            while !fed.is_empty() {
                client.read_tls(&mut fed).unwrap();
                client.process_new_packets().unwrap();
                let _ = client.reader().read_to_end(&mut plain);
            }
        }
        (plain, records)
    }

    fn numbered(i: u8, len: usize) -> SharedFrame {
        frame::shared(frame::encode(frame::OP_BINARY, &vec![i; len]))
    }

    #[test]
    fn a_rounds_frames_for_a_tls_member_share_records_and_arrive_whole_in_order() {
        let pki = Pki::make("cork");
        let (conn, mut client, mut peer) = tls_conn(&pki);
        let stats = Stats::default();
        // Small frames with one larger than a TLS record (16 KiB) among them.
        let frames: Vec<SharedFrame> =
            (0..50u8).map(|i| numbered(i, if i == 25 { 40_000 } else { 100 })).collect();
        assert_eq!(conn.try_send_direct_many(&frames, &stats), frames.len());
        let want: Vec<u8> = frames.iter().flat_map(|f| f.to_vec()).collect();
        let (plain, records) = read_plaintext(&mut client, &mut peer, want.len());
        assert_eq!(plain, want, "every frame whole and in order");
        // 40 KiB of frames take three full records, and the handshake's end
        // may leave a few session tickets: not a record per frame.
        assert!(records <= 8, "{records} records for {} frames", frames.len());
        assert_eq!(stats.direct_sends.load(Relaxed), frames.len() as u64);
        assert_eq!(stats.messages_out.load(Relaxed), frames.len() as u64);
    }

    #[test]
    fn a_tls_member_whose_socket_fills_takes_no_more_of_a_round_than_the_plain_path() {
        let pki = Pki::make("cork-bound");
        let (conn, _client, peer) = tls_conn(&pki);
        // The peer reads nothing; the round holds 16 MiB, twice the default
        // outbound_max_bytes, far more than the socket takes.
        let frames: Vec<SharedFrame> = (0..64u8).map(|i| numbered(i, 256 * 1024)).collect();
        let stats = Stats::default();
        let sent = conn.try_send_direct_many(&frames, &stats);
        assert!(sent < frames.len(), "the whole round went into the session");
        // What waits for the writer is the frame the socket took in part (a
        // batch of at most TLS_CORK bytes), as with a partial writev; the
        // caller queues the rest under the queue's bounds.
        let held = conn.out.bytes.load(Relaxed);
        assert!(held <= 256 * 1024 + TLS_CORK, "{held} bytes held beyond the socket for {sent} frames");
        assert_eq!(conn.out.depth.load(Relaxed), 1, "one Out::Tail");
        drop(peer);
    }

    #[test]
    fn the_tls_reader_keeps_no_buffer_and_waits_without_the_write_lock() {
        // Nothing allocated between reads: an idle connection keeps no
        // ciphertext buffer of its own.
        assert_eq!(TlsIn::new().left.capacity(), 0);
        let pki = Pki::make("reader");
        let (conn, mut client, mut peer) = tls_conn(&pki);
        let mut sent = Vec::new();
        sent.push(vec![7u8]);
        sent.push((0..40_000).map(|k| k as u8).collect()); // several records
        sent.extend((0..20u8).map(|i| vec![i; 300]));
        let want: usize = sent.iter().map(Vec::len).sum();
        let (started_tx, started) = crossbeam_channel::bounded(1);
        let reader = {
            let conn = conn.clone();
            std::thread::spawn(move || {
                let mut tls_in = TlsIn::new();
                let (mut got, mut buf) = (Vec::new(), vec![0u8; 1024]);
                let _ = started_tx.send(());
                while got.len() < want {
                    let n = conn.tls_read(&mut tls_in, &mut buf, || Ok(())).unwrap();
                    assert!(n > 0, "the end after {} bytes", got.len());
                    got.extend_from_slice(&buf[..n]);
                }
                got
            })
        };
        started.recv().unwrap();
        // The reader waits for bytes: a direct send still goes out, and the
        // client gets it whole.
        let stats = Stats::default();
        let frames: Vec<SharedFrame> = (0..5u8).map(|i| numbered(i, 50)).collect();
        for f in &frames {
            assert!(conn.try_send_direct(f, &stats));
        }
        let expected: Vec<u8> = frames.iter().flat_map(|f| f.to_vec()).collect();
        assert_eq!(read_plaintext(&mut client, &mut peer, expected.len()).0, expected);
        for part in &sent {
            client.writer().write_all(part).unwrap();
            while client.wants_write() {
                client.write_tls(&mut peer).unwrap();
            }
        }
        assert_eq!(reader.join().unwrap(), sent.concat(), "every byte, in order");
    }

    #[test]
    fn a_large_read_buffer_takes_many_records_waiting_in_the_socket() {
        let pki = Pki::make("large");
        let (conn, mut client, mut peer) = tls_conn(&pki);
        // Everything is in the server's socket before the reader reads: its
        // first read could take more ciphertext than the session holds
        // plaintext for.
        let sent: Vec<u8> = (0..60_000).map(|k| (k % 251) as u8).collect();
        client.writer().write_all(&sent).unwrap();
        while client.wants_write() {
            client.write_tls(&mut peer).unwrap();
        }
        let (mut tls_in, mut got, mut buf) = (TlsIn::new(), Vec::new(), vec![0u8; 128 * 1024]);
        while got.len() < sent.len() {
            let n = conn.tls_read(&mut tls_in, &mut buf, || Ok(())).unwrap();
            assert!(n > 0, "the end after {} bytes", got.len());
            got.extend_from_slice(&buf[..n]);
        }
        assert!(got == sent, "every byte, in order");
    }
}

#[cfg(test)]
mod split_record_tests {
    //! A blocking read that takes more ciphertext than the session has room
    //! for: the session holds most of a 16 KiB record when the rest arrives
    //! with more behind it, so one `read_tls` takes only part of the read.

    use std::io::Write;
    use std::sync::{mpsc, Arc};

    use super::tests::{tls_conn, Pki};
    use super::*;

    /// The client's ciphertext for `parts`, one `write` (so one record, for a
    /// part up to 16 KiB) each: the records, in order.
    fn records(client: &mut rustls::ClientConnection, parts: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for part in parts {
            client.writer().write_all(part).unwrap();
            let mut wire = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut wire).unwrap();
            }
            let mut at = 0;
            while at < wire.len() {
                let len = usize::from(u16::from_be_bytes([wire[at + 3], wire[at + 4]]));
                out.push(wire[at..at + 5 + len].to_vec());
                at += 5 + len;
            }
        }
        out
    }

    /// Reads on a thread with a large buffer until the end or an error:
    /// every plaintext byte is reported as it comes, then how it ended.
    fn reader(conn: Arc<ConnShared>) -> mpsc::Receiver<io::Result<Vec<u8>>> {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let (mut tls_in, mut buf) = (TlsIn::new(), vec![0u8; 64 * 1024]);
            loop {
                match conn.tls_read(&mut tls_in, &mut buf, || Ok(())) {
                    Ok(0) => return drop(tx.send(Ok(Vec::new()))),
                    Ok(n) => drop(tx.send(Ok(buf[..n].to_vec()))),
                    Err(e) => return drop(tx.send(Err(e))),
                }
            }
        });
        rx
    }

    /// Collects plaintext until `want` bytes, the end, an error or 5 s
    /// without news: (the bytes, how it ended if it did).
    fn collect(rx: &mpsc::Receiver<io::Result<Vec<u8>>>, want: usize) -> (Vec<u8>, Option<io::Result<()>>) {
        let mut got = Vec::new();
        while got.len() < want {
            match rx.recv_timeout(Duration::from_secs(5)) {
                Ok(Ok(bytes)) if bytes.is_empty() => return (got, Some(Ok(()))),
                Ok(Ok(bytes)) => got.extend_from_slice(&bytes),
                Ok(Err(e)) => return (got, Some(Err(e))),
                Err(_) => return (got, None),
            }
        }
        (got, None)
    }

    /// Sends the first record and all but the last `tail` bytes of the
    /// second, and waits until the reader has the first record's plaintext
    /// and sleeps in its blocking read with the session holding the rest.
    fn into_the_blocking_read(
        peer: &mut std::net::TcpStream,
        recs: &[Vec<u8>],
        tail: usize,
        rx: &mpsc::Receiver<io::Result<Vec<u8>>>,
    ) {
        let keep = recs[1].len() - tail;
        peer.write_all(&recs[0]).unwrap();
        peer.write_all(&recs[1][..keep]).unwrap();
        let (first, end) = collect(rx, 16 * 1024);
        assert_eq!((first.len(), end.is_none()), (16 * 1024, true), "the first record whole");
        std::thread::sleep(Duration::from_millis(300));
    }

    #[test]
    fn the_rest_of_a_big_record_with_more_behind_it_is_not_a_full_plaintext_buffer() {
        let pki = Pki::make("split-full");
        let (conn, mut client, mut peer) = tls_conn(&pki);
        let data: Vec<u8> = (0..70_000u32).map(|k| (k % 253) as u8).collect();
        let (a, rest) = data.split_at(16 * 1024);
        let (b, rest) = rest.split_at(16 * 1024);
        let (c, d) = rest.split_at(100);
        let recs = records(&mut client, &[a, b, c, d]);
        let rx = reader(conn);
        into_the_blocking_read(&mut peer, &recs, 406, &rx);
        // The rest of the second record, the small third one and more, at
        // once: the session's room (what it has left for a record) is less.
        let tail = recs[1].len() - 406;
        let mut at_once = recs[1][tail..].to_vec();
        recs[2..].iter().for_each(|r| at_once.extend_from_slice(r));
        peer.write_all(&at_once).unwrap();
        let (got, end) = collect(&rx, data.len() - 16 * 1024);
        assert!(end.is_none(), "the reader ended early: {end:?}");
        assert!(got == data[16 * 1024..], "every byte, in order");
    }

    #[test]
    fn bytes_after_a_close_notify_in_the_same_read_end_the_reader_without_a_spin() {
        let pki = Pki::make("split-notify");
        let (conn, mut client, mut peer) = tls_conn(&pki);
        let data: Vec<u8> = (0..32 * 1024u32).map(|k| (k % 251) as u8).collect();
        let (a, b) = data.split_at(16 * 1024);
        let recs = records(&mut client, &[a, b]);
        client.send_close_notify();
        let mut notify = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut notify).unwrap();
        }
        let rx = reader(conn.clone());
        into_the_blocking_read(&mut peer, &recs, 406, &rx);
        // The rest of the record, the close_notify, and bytes after it (which
        // TLS says to ignore), at once.
        let mut at_once = recs[1][recs[1].len() - 406..].to_vec();
        at_once.extend_from_slice(&notify);
        at_once.extend_from_slice(&[0x17, 0x03, 0x03, 0x40, 0x00]);
        at_once.extend_from_slice(&[0u8; 3000]);
        peer.write_all(&at_once).unwrap();
        let (got, end) = collect(&rx, usize::MAX);
        let how =
            format!("{} of {} bytes, then {end:?} (None: the reader never returned)", got.len(), b.len());
        assert!(got == b && matches!(end, Some(Ok(()))), "the second record whole, then the end: {how}");
        // And the write lock is free: nothing spins holding it.
        assert!(conn.out.write.try_lock_for(Duration::from_secs(2)).is_some(), "the write lock is held");
    }
}

#[cfg(test)]
mod flood_tests {
    //! A peer whose records make no plaintext: rustls bounds empty records
    //! (32 in a row) and key updates (32 without application data) each
    //! alone, but a key update and an empty record, over and over, pass both
    //! bounds; the reader must not keep the write lock while they come.

    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
    use std::sync::{Arc, Mutex};

    use rustls::crypto::cipher::{AeadKey, Iv, MessageEncrypter, OutboundChunks, OutboundPlainMessage};
    use rustls::crypto::tls13::OkmBlock;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    use rustls::{ContentType, ProtocolVersion, SupportedCipherSuite, Tls13CipherSuite};

    use super::tests::{tls_conn_with, Pki};
    use super::*;

    /// The client's first application traffic secret, from its key log.
    #[derive(Debug, Default)]
    struct Secret(Mutex<Vec<u8>>);

    impl rustls::KeyLog for Secret {
        fn log(&self, label: &str, _: &[u8], secret: &[u8]) {
            if label == "CLIENT_TRAFFIC_SECRET_0" {
                *self.0.lock().unwrap() = secret.to_vec();
            }
        }
        fn will_log(&self, _: &str) -> bool {
            true
        }
    }

    /// The client's sending side done by hand (RFC 8446 7.1-7.2, 4.6.3).
    struct Sender {
        suite: &'static Tls13CipherSuite,
        secret: Vec<u8>,
        enc: Box<dyn MessageEncrypter>,
        seq: u64,
    }

    impl Sender {
        fn new(suite: &'static Tls13CipherSuite, secret: Vec<u8>) -> Self {
            let enc = Self::encrypter(suite, &secret);
            Sender { suite, secret, enc, seq: 0 }
        }

        fn expand(suite: &Tls13CipherSuite, secret: &[u8], label: &[u8], out: &mut [u8]) {
            let len = (out.len() as u16).to_be_bytes();
            let label_len = [(6 + label.len()) as u8];
            let info: [&[u8]; 5] = [&len, &label_len, b"tls13 ", label, &[0]];
            let expander = suite.hkdf_provider.expander_for_okm(&OkmBlock::new(secret));
            expander.expand_slice(&info, out).unwrap();
        }

        fn encrypter(suite: &Tls13CipherSuite, secret: &[u8]) -> Box<dyn MessageEncrypter> {
            let (mut key, mut iv) = ([0u8; 32], [0u8; 12]);
            Self::expand(suite, secret, b"key", &mut key);
            Self::expand(suite, secret, b"iv", &mut iv);
            suite.aead_alg.encrypter(AeadKey::from(key), Iv::new(iv))
        }

        fn record(&mut self, typ: ContentType, payload: &[u8]) -> Vec<u8> {
            let plain = OutboundPlainMessage {
                typ,
                version: ProtocolVersion::TLSv1_2,
                payload: OutboundChunks::Single(payload),
            };
            let wire = self.enc.encrypt(plain, self.seq).unwrap().encode();
            self.seq += 1;
            wire
        }

        /// A KeyUpdate (update_not_requested), then the keys after it.
        fn key_update(&mut self) -> Vec<u8> {
            let wire = self.record(ContentType::Handshake, &[24, 0, 0, 1, 0]);
            let mut next = vec![0u8; self.secret.len()];
            Self::expand(self.suite, &self.secret, b"traffic upd", &mut next);
            self.secret = next;
            self.enc = Self::encrypter(self.suite, &self.secret);
            self.seq = 0;
            wire
        }
    }

    #[test]
    fn key_updates_and_empty_records_without_end_neither_keep_the_write_lock_nor_escape_the_deadline() {
        let pki = Pki::make("flood");
        let SupportedCipherSuite::Tls13(suite) =
            rustls::crypto::ring::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256
        else {
            unreachable!()
        };
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_file(pki.path("ca.pem")).unwrap()).unwrap();
        let provider = rustls::crypto::CryptoProvider {
            cipher_suites: vec![rustls::crypto::ring::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256],
            ..rustls::crypto::ring::default_provider()
        };
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let secret = Arc::new(Secret::default());
        config.key_log = secret.clone();
        let (conn, _client, mut peer) = tls_conn_with(&pki, config);
        let mut sender = Sender::new(suite, secret.0.lock().unwrap().clone());
        // Made before any is sent, and in the socket before the reader reads,
        // so the socket does not run dry: the reader would wait (and let go
        // of the lock) if it did.
        let mut flood = Vec::new();
        for _ in 0..60_000 {
            flood.extend(sender.key_update());
            flood.extend(sender.record(ContentType::ApplicationData, &[]));
        }
        flood.extend(sender.record(ContentType::ApplicationData, b"end"));
        let done = Arc::new(AtomicBool::new(false));
        let writer = std::thread::spawn(move || peer.write_all(&flood).map(|()| peer));
        // The socket's buffers take all of it (3 MB) before the reader starts.
        std::thread::sleep(Duration::from_millis(300));
        let reader = {
            let (conn, done) = (conn.clone(), done.clone());
            std::thread::spawn(move || {
                let (mut tls_in, mut buf) = (TlsIn::new(), vec![0u8; 64 * 1024]);
                let arms = std::sync::atomic::AtomicUsize::new(0);
                let arm = || {
                    arms.fetch_add(1, SeqCst);
                    Ok(())
                };
                let got = conn.tls_read(&mut tls_in, &mut buf, arm).map(|n| buf[..n].to_vec());
                done.store(true, SeqCst);
                (got, arms.into_inner())
            })
        };
        // While the flood lasts, a writer asking for the write lock gets it
        // within READS_PER_LOCK reads, not only when the socket happens to
        // run dry.
        let mut got = 0;
        for _ in 0..1000 {
            let Some(guard) = conn.out.write.try_lock_for(Duration::from_secs(5)) else { break };
            if done.load(SeqCst) {
                break;
            }
            got += 1;
            drop(guard);
            // Not straight back: one try per time the reader lets go.
            std::thread::sleep(Duration::from_millis(1));
        }
        let (plaintext, arms) = reader.join().unwrap();
        let plaintext = plaintext.expect("the flood is valid TLS");
        assert_eq!(plaintext, b"end", "nothing but the last record had plaintext");
        // And its deadline is looked at as often: `arm` fails once it has come.
        assert!(arms >= 25, "the reader looked at its deadline {arms} times while 3 MB of records came");
        let _peer = writer.join().unwrap().unwrap();
        // Some 45 times with the bound (718 reads of 4 KiB), under 10 without.
        assert!(got >= 25, "a writer got the lock {got} times while 3 MB of records came");
    }
}
