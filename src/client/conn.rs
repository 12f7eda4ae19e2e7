//! One connection: the parsed URL, the TCP connect (optionally from a chosen
//! local address), TLS for `wss://`, the handshake, and the writer thread.
//!
//! The reading half stays with the session thread. After the handshake it
//! never writes to the socket: its automatic replies (pong, close) are
//! discarded there and sent by the writer instead, and TLS records that
//! reading produced (a key update's answer) are sent by the writer too, when
//! the reader asks it to ([`Out::Flush`]). So only one thread writes.
//!
//! Every connection attempt has one deadline (`Options::request_timeout`),
//! checked before each read of the TCP connect, the TLS handshake, the
//! upgrade and the wait for `connected`; a `close()` ends an attempt at its
//! next read.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;
use tungstenite::protocol::{frame::coding::CloseCode, CloseFrame, Role, WebSocketConfig};
use tungstenite::{HandshakeError, Message, WebSocket};

use super::deflate::{self, Unpack};
use super::{Error, Shared};

/// Where to connect: the parsed URL.
pub(crate) struct Target {
    /// The URL with its scheme in lower case (what the request is built from).
    url: String,
    host: String,
    port: u16,
    tls: bool,
}

impl Target {
    /// `ws://` or `wss://` (in any case), a host name, an IPv4 address or an
    /// IPv6 address in brackets, an optional port, then a path.
    pub(crate) fn parse(url: &str) -> Result<Target, Error> {
        let bad = || Error::BadUrl(url.to_owned());
        let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "ws" => false,
            "wss" => true,
            _ => return Err(bad()),
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        if authority.contains('@') {
            return Err(bad());
        }
        let default_port = if tls { 443 } else { 80 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(bad)?;
            host.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
            let port = match after {
                "" => default_port,
                p => p.strip_prefix(':').and_then(|p| p.parse().ok()).ok_or_else(bad)?,
            };
            (host, port)
        } else {
            match authority.split_once(':') {
                Some((h, p)) => (h, p.parse().map_err(|_| bad())?),
                None => (authority, default_port),
            }
        };
        if host.is_empty() {
            return Err(bad());
        }
        let scheme = if tls { "wss" } else { "ws" };
        let path = if path.is_empty() { "/" } else { path };
        let url = format!("{scheme}://{authority}{path}");
        // What every attempt builds its request from must build one (a
        // space in the query, say), or every attempt fails the same way.
        url.as_str().into_client_request().map_err(|_| bad())?;
        Ok(Target { url, host: host.to_owned(), port, tls })
    }

    /// Whether this is a `wss://` URL.
    pub(crate) fn is_tls(&self) -> bool {
        self.tls
    }
}

/// The TLS session both halves share: the reader decrypts under its lock, the
/// writer encrypts under it and writes the records after letting it go.
type Tls = Arc<Mutex<ClientConnection>>;

/// The reading half: reads the socket; writes go to it only during the
/// handshake, afterwards they are dropped (the writer thread sends them).
pub(crate) struct ReadHalf {
    tcp: TcpStream,
    tls: Option<Tls>,
    /// TLS bytes read from the socket, not yet given to rustls (from `raw_at`).
    raw: Vec<u8>,
    raw_at: usize,
    handshaking: bool,
    /// The attempt's deadline, while handshaking.
    deadline: Instant,
    stopping: Arc<AtomicBool>,
    /// The TLS session has records to send that reading produced.
    pub(crate) wants_flush: bool,
    /// After the handshake: when a read last returned to the session with `WouldBlock`.
    yielded_at: Instant,
    /// While handshaking: how much of the `\r\n\r\n` that ends the response
    /// head has been read; the bytes after it wait in `after_head`, so that
    /// they reach tungstenite through [`Unpack`] and not with the response.
    head_matched: usize,
    after_head: Vec<u8>,
    /// With permessage-deflate agreed: what inflates the server's compressed messages.
    unpack: Option<Unpack>,
}

impl ReadHalf {
    /// Ends the TCP connection both ways (the writer's copy of the socket too).
    pub(crate) fn shutdown(&self) {
        let _ = self.tcp.shutdown(std::net::Shutdown::Both);
    }

    /// While handshaking: the attempt's deadline and `close()`, checked before every read.
    fn check_attempt(&self) -> io::Result<Duration> {
        if self.stopping.load(Ordering::SeqCst) {
            return Err(io::Error::other("closed by the application"));
        }
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "the connection attempt took too long"));
        }
        Ok(left)
    }

    /// One read of the TCP socket. While handshaking it waits (within the
    /// attempt's deadline) until bytes come; afterwards a read that times out
    /// returns `WouldBlock`, for the session's periodic checks, and so does a
    /// read a [`TICK`] after the last one that did: tungstenite reads on until
    /// a message is whole, so a peer trickling a frame would otherwise keep
    /// the deadlines and `close()` from being looked at.
    fn read_tcp(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.handshaking {
            if self.yielded_at.elapsed() >= TICK {
                self.yielded_at = Instant::now();
                return Err(io::ErrorKind::WouldBlock.into());
            }
            return self.tcp.read(buf).inspect_err(|e| {
                if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) {
                    self.yielded_at = Instant::now();
                }
            });
        }
        loop {
            let left = self.check_attempt()?;
            self.tcp.set_read_timeout(Some(left.min(TICK)))?;
            match self.tcp.read(buf) {
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                other => return other,
            }
        }
    }

    /// Writes what the TLS session has to send (only while handshaking).
    fn send_tls(&mut self, tls: &Tls) -> io::Result<()> {
        let mut out = Vec::new();
        {
            let mut conn = tls.lock();
            while conn.wants_write() {
                conn.write_tls(&mut out)?;
            }
        }
        self.tcp.write_all(&out)
    }

    /// Runs the TLS handshake to its end (before the upgrade request).
    fn tls_handshake(&mut self, tls: &Tls) -> io::Result<()> {
        loop {
            let (handshaking, wants_write) = {
                let conn = tls.lock();
                (conn.is_handshaking(), conn.wants_write())
            };
            if wants_write {
                self.send_tls(tls)?;
            }
            if !handshaking {
                return Ok(());
            }
            if self.fill_tls(tls)? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed during the TLS handshake"));
            }
        }
    }

    /// Gives rustls the next TLS bytes (read from the socket when none wait);
    /// 0 at the end of the stream.
    fn fill_tls(&mut self, tls: &Tls) -> io::Result<usize> {
        if self.raw_at >= self.raw.len() {
            self.raw.resize(READ_CHUNK, 0);
            let mut chunk = std::mem::take(&mut self.raw);
            let n = self.read_tcp(&mut chunk);
            self.raw = chunk;
            let n = n.inspect_err(|_| self.raw.clear())?;
            self.raw.truncate(n);
            self.raw_at = 0;
        }
        let mut conn = tls.lock();
        let mut pending = &self.raw[self.raw_at..];
        let n = conn.read_tls(&mut pending)?;
        // After the peer's close_notify rustls takes nothing more.
        self.raw_at = if n == 0 { self.raw.len() } else { self.raw_at + n };
        conn.process_new_packets().map_err(tls_error)?;
        if conn.wants_write() {
            self.wants_flush = true;
        }
        Ok(n)
    }
}

impl ReadHalf {
    /// Lowers the largest message the server's compressed ones may inflate to.
    pub(crate) fn set_inflate_limit(&mut self, limit: usize) {
        if let Some(unpack) = &mut self.unpack {
            unpack.set_limit(limit);
        }
    }

    /// The stream's bytes: while handshaking, up to the end of the response
    /// head and no further; afterwards what came after it first.
    fn read_stream(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.handshaking && !self.after_head.is_empty() {
            let n = buf.len().min(self.after_head.len());
            buf[..n].copy_from_slice(&self.after_head[..n]);
            self.after_head.drain(..n);
            return Ok(n);
        }
        let n = self.read_decrypted(buf)?;
        if self.handshaking {
            for (i, &b) in buf[..n].iter().enumerate() {
                let expected = b"\r\n\r\n"[self.head_matched];
                self.head_matched = match (b == expected, b == b'\r') {
                    (true, _) => self.head_matched + 1,
                    (false, true) => 1,
                    (false, false) => 0,
                };
                if self.head_matched == 4 {
                    self.after_head.extend_from_slice(&buf[i + 1..n]);
                    self.head_matched = 0;
                    return Ok(i + 1);
                }
            }
        }
        Ok(n)
    }

    /// The socket's bytes, decrypted with TLS.
    fn read_decrypted(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(tls) = self.tls.clone() else { return self.read_tcp(buf) };
        loop {
            match tls.lock().reader().read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                other => return other,
            }
            if self.fill_tls(&tls)? == 0 && self.raw_at >= self.raw.len() {
                // The end of the stream: rustls says whether it was a clean one.
                return tls.lock().reader().read(buf);
            }
            if self.handshaking && self.wants_flush {
                self.wants_flush = false;
                self.send_tls(&tls)?;
            }
        }
    }
}

impl Read for ReadHalf {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.unpack.take() {
            None => self.read_stream(buf),
            Some(mut unpack) => {
                let got = unpack.read(buf, &mut |b| self.read_stream(b));
                self.unpack = Some(unpack);
                got
            }
        }
    }
}

impl Write for ReadHalf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.handshaking {
            return Ok(buf.len());
        }
        let Some(tls) = self.tls.clone() else { return self.tcp.write(buf) };
        let n = tls.lock().writer().write(buf)?;
        self.send_tls(&tls)?;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        if self.handshaking {
            self.tcp.flush()
        } else {
            Ok(())
        }
    }
}

/// The writing half: never read from.
struct WriteHalf {
    tcp: TcpStream,
    tls: Option<Tls>,
}

impl WriteHalf {
    /// Sends the TLS records waiting in the session (the lock is let go before the socket write).
    fn send_tls(&mut self) -> io::Result<()> {
        let Some(tls) = &self.tls else { return Ok(()) };
        let mut out = Vec::new();
        {
            let mut conn = tls.lock();
            while conn.wants_write() {
                conn.write_tls(&mut out)?;
            }
        }
        self.tcp.write_all(&out)
    }
}

impl Read for WriteHalf {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Ok(0)
    }
}

impl Write for WriteHalf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(tls) = &self.tls else { return self.tcp.write(buf) };
        let n = tls.lock().writer().write(buf)?;
        self.send_tls()?;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.send_tls()?;
        self.tcp.flush()
    }
}

/// What the writer thread sends.
#[derive(Clone)]
pub(crate) enum Out {
    Text(String),
    Binary(Vec<u8>),
    Pong(Vec<u8>),
    /// Sends the TLS records the reading half produced.
    Flush,
    /// Sends a close frame with this code, then stops.
    Close(u16),
}

/// An open connection: the reading half, the writer's queue, and the attempt's deadline.
pub(crate) struct Conn {
    pub(crate) reader: WebSocket<ReadHalf>,
    pub(crate) writer: Sender<Out>,
    /// Disconnected once the writer thread has ended (its last write done).
    pub(crate) writer_done: Receiver<()>,
    /// When the attempt's time is up (`connected` must come before).
    pub(crate) deadline: Instant,
}

/// Why a connection attempt failed.
pub(crate) enum OpenError {
    /// The server answered the upgrade with this status.
    Refused { status: u16, retry_after: Option<u64> },
    /// The server's certificate was not accepted, or the TLS settings are unusable.
    Tls(String),
    /// Anything else (connect refused, timeout, a broken handshake, `close()`).
    Failed(String),
}

/// A rustls error as an I/O error: `InvalidData` (which stops a client for
/// good, [`OpenError::Tls`]) only when the server's certificate was not
/// accepted or the two sides share no TLS version or cipher; anything else
/// (a corrupt record, say: plain HTTP on the port, a proxy) may pass, and
/// is retried.
fn tls_error(e: rustls::Error) -> io::Error {
    use rustls::Error as E;
    let kind = match e {
        E::InvalidCertificate(_) | E::NoCertificatesPresented | E::PeerIncompatible(_) => {
            io::ErrorKind::InvalidData
        }
        _ => io::ErrorKind::ConnectionAborted,
    };
    io::Error::new(kind, e)
}

/// Frames that may wait for the writer thread.
const WRITE_QUEUE: usize = 1024;

/// Bytes read from the socket at once for TLS.
const READ_CHUNK: usize = 16 * 1024;

/// How often the reading half wakes to check deadlines and stop requests.
pub(crate) const TICK: Duration = Duration::from_millis(200);

fn tcp_connect(target: &Target, shared: &Shared, deadline: Instant) -> io::Result<TcpStream> {
    let addrs: Vec<SocketAddr> = (target.host.as_str(), target.port).to_socket_addrs()?.collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address for the host");
    for addr in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || shared.stopping.load(Ordering::SeqCst) {
            break;
        }
        let attempt = match shared.options.local_addr {
            None => TcpStream::connect_timeout(&addr, left),
            Some(ip) => {
                let socket =
                    socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
                socket.bind(&SocketAddr::new(ip, 0).into())?;
                socket.connect_timeout(&addr.into(), left).map(|()| socket.into())
            }
        };
        match attempt {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Connects, upgrades, and starts the writer thread; all within one deadline.
pub(crate) fn open(
    target: &Target,
    shared: &Shared,
    tls: Option<&Arc<ClientConfig>>,
) -> Result<Conn, OpenError> {
    let deadline = Instant::now() + shared.options.request_timeout;
    let failed = |what: &str, e: &dyn std::fmt::Display| OpenError::Failed(format!("{what}: {e}"));
    let stream = tcp_connect(target, shared, deadline).map_err(|e| failed("connect", &e))?;
    let _ = stream.set_nodelay(true);
    stream.set_write_timeout(Some(shared.options.request_timeout)).map_err(|e| failed("socket", &e))?;
    let session = match (target.tls, tls) {
        (false, _) => None,
        (true, None) => return Err(OpenError::Tls("no TLS settings for a wss:// URL".into())),
        (true, Some(config)) => {
            let name = ServerName::try_from(target.host.clone())
                .map_err(|e| OpenError::Tls(format!("server name {:?}: {e}", target.host)))?;
            let conn =
                ClientConnection::new(config.clone(), name).map_err(|e| OpenError::Tls(e.to_string()))?;
            Some(Arc::new(Mutex::new(conn)))
        }
    };
    let read_stream = stream.try_clone().map_err(|e| failed("socket", &e))?;
    let mut half = ReadHalf {
        tcp: read_stream,
        tls: session.clone(),
        raw: Vec::new(),
        raw_at: 0,
        handshaking: true,
        deadline,
        stopping: shared.stopping.clone(),
        wants_flush: false,
        yielded_at: Instant::now(),
        head_matched: 0,
        after_head: Vec::new(),
        unpack: None,
    };
    if let Some(session) = &session {
        half.tls_handshake(session).map_err(|e| match e.kind() {
            io::ErrorKind::InvalidData => OpenError::Tls(e.to_string()),
            _ => failed("TLS handshake", &e),
        })?;
    }
    let mut request = target.url.as_str().into_client_request().map_err(|e| failed("url", &e))?;
    let headers = request.headers_mut();
    headers.insert("Sec-WebSocket-Protocol", HeaderValue::from_static("wshub.v1.json"));
    if let Some(token) = shared.state.lock().token.clone() {
        let value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| failed("token", &e))?;
        headers.insert("Authorization", value);
    }
    if shared.options.compression {
        headers.insert("Sec-WebSocket-Extensions", HeaderValue::from_static(deflate::OFFER));
    }
    let limit = Some(shared.options.max_message_bytes);
    let config = WebSocketConfig::default().max_message_size(limit).max_frame_size(limit);
    let (mut reader, agreed) = match tungstenite::client::client_with_config(request, half, Some(config)) {
        Ok((ws, response)) => {
            let answers = response.headers().get_all("Sec-WebSocket-Extensions");
            let answers = answers.iter().map(|v| v.to_str().unwrap_or("(not text)"));
            match deflate::accept(answers) {
                Ok(agreed) if agreed.is_none() || shared.options.compression => (ws, agreed),
                Ok(_) => return Err(failed("handshake", &"permessage-deflate answered but not offered")),
                Err(why) => return Err(failed("handshake", &why)),
            }
        }
        Err(HandshakeError::Failure(tungstenite::Error::Http(response))) => {
            let retry_after = response
                .headers()
                .get("Retry-After")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok());
            return Err(OpenError::Refused { status: response.status().as_u16(), retry_after });
        }
        Err(HandshakeError::Failure(e)) => return Err(failed("handshake", &e)),
        Err(HandshakeError::Interrupted(_)) => {
            return Err(OpenError::Failed("handshake: no answer in time".into()))
        }
    };
    if agreed.is_some() {
        reader.get_mut().unpack = Some(Unpack::new(shared.options.max_message_bytes));
    }
    reader.get_mut().handshaking = false;
    reader.get_mut().yielded_at = Instant::now();
    stream.set_read_timeout(Some(TICK)).map_err(|e| failed("socket", &e))?;
    // Bounded: a sender waits while the writer is behind (a stuck socket
    // fails its write within the timeout, which ends the queue).
    let (tx, rx) = crossbeam_channel::bounded(WRITE_QUEUE);
    let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(0);
    let write_half = WriteHalf { tcp: stream, tls: session };
    let compress = Compress { agreed, min_bytes: shared.options.compression_min_bytes };
    // Two descriptors per connection: this one for the writer, the clone in the reading half.
    std::thread::Builder::new()
        .name("wshub-client-w".into())
        .spawn(move || {
            write_loop(WebSocket::from_raw_socket(write_half, Role::Client, None), rx, compress);
            drop(done_tx);
        })
        .map_err(|e| failed("spawning the writer", &e))?;
    Ok(Conn { reader, writer: tx, writer_done: done_rx, deadline })
}

/// How the writer compresses: what the server agreed to (`None`: never).
struct Compress {
    agreed: Option<deflate::Agreed>,
    min_bytes: usize,
}

/// Sends what the queue holds until it is closed or a write fails; then shuts
/// the socket down so the reading half sees the end too.
fn write_loop(mut ws: WebSocket<WriteHalf>, rx: Receiver<Out>, compress: Compress) {
    let Compress { agreed, min_bytes } = compress;
    for out in rx.iter() {
        let result = match out {
            Out::Text(t) => ws.send(deflate::outgoing(Message::text(t), agreed, min_bytes)),
            Out::Binary(b) => ws.send(deflate::outgoing(Message::binary(b), agreed, min_bytes)),
            Out::Pong(p) => ws.send(Message::Pong(p.into())),
            Out::Flush => ws.get_mut().flush().map_err(tungstenite::Error::Io),
            Out::Close(code) => {
                let frame = CloseFrame { code: CloseCode::from(code), reason: "".into() };
                let _ = ws.close(Some(frame));
                let _ = ws.flush();
                return;
            }
        };
        if result.is_err() {
            let _ = ws.get_ref().tcp.shutdown(std::net::Shutdown::Both);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(url: &str) -> (String, String, u16, bool) {
        let t = Target::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        (t.url, t.host, t.port, t.tls)
    }

    #[test]
    fn urls_with_any_scheme_case_ipv6_and_default_ports() {
        assert_eq!(parts("ws://[::1]/ws"), ("ws://[::1]/ws".into(), "::1".into(), 80, false));
        assert_eq!(parts("ws://[::1]:9001/ws"), ("ws://[::1]:9001/ws".into(), "::1".into(), 9001, false));
        assert_eq!(parts("WSS://example.org/ws?x=1").1, "example.org");
        assert_eq!(parts("WsS://example.org/ws").2, 443);
        assert_eq!(parts("wss://127.0.0.1:8443").0, "wss://127.0.0.1:8443/");
        assert_eq!(parts("ws://h:1/p").0, "ws://h:1/p");
        for bad in [
            "http://h/ws",
            "ws://",
            "ws://[::1/ws",
            "ws://[zz]/",
            "ws://h:x/",
            "ws://u@h/",
            "h:1/ws",
            "ws://h/ws?a=b c",
            "ws://h/w\ns",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }
}
