//! One mio event loop driving many WebSocket client connections.
//!
//! The WebSocket client side is hand-written (RFC 6455): the upgrade request,
//! the 101 check (with `Sec-WebSocket-Accept`), masked client frames, and the
//! server's frames — partial, several per read, fragmented, pings (answered
//! with pongs) and close frames. A scenario drives [`Net::turn`] with a
//! callback that receives [`Ev`]s per connection and may [`Net::send_text`] on
//! any connection; sends are buffered per connection and flushed once per turn.
//!
//! With [`Net::offer_deflate`] the upgrade request offers permessage-deflate
//! (RFC 7692) as browsers do; when the server accepts, its compressed messages
//! (RSV1) are inflated here before the callback sees them, with or without
//! context takeover as the server's answer says.
//!
//! Every connection can carry a deadline (handshake, a reply, the close
//! handshake); when it passes the connection fails with a message naming what
//! was awaited, so nothing waits forever.

use std::io::{self, ErrorKind, Read, Write};
use std::mem;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use flate2::{Decompress, FlushDecompress};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::tls::Sock;

/// Largest server frame or message accepted.
const MAX_MESSAGE: usize = 64 << 20;
/// Largest 101 response header accepted.
const MAX_RESPONSE_HEAD: usize = 16 << 10;
/// How often deadlines are checked.
const DEADLINE_SCAN: Duration = Duration::from_millis(100);

/// `ws://host:port/path` or `wss://...`, resolved once.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub host: String,
    pub path: String,
    /// `wss://`: the client config (from `--tls-ca`).
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, String> {
        Target::parse_with_ca(url, None)
    }

    /// `wss://` URLs need the CA file (PEM) the server's certificate chains to.
    pub fn parse_with_ca(url: &str, tls_ca: Option<&str>) -> Result<Target, String> {
        let (rest, tls, port) = if let Some(rest) = url.strip_prefix("wss://") {
            let ca = tls_ca.ok_or_else(|| format!("--url {url:?}: wss:// needs --tls-ca FILE"))?;
            (rest, Some(crate::tls::client_config(ca)?), 443)
        } else if let Some(rest) = url.strip_prefix("ws://") {
            (rest, None, 80)
        } else {
            return Err(format!("--url {url:?}: only ws:// and wss:// URLs are supported"));
        };
        let (hostport, path) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].to_string()),
            None => (rest, "/".to_string()),
        };
        if hostport.is_empty() {
            return Err(format!("--url {url:?}: no host"));
        }
        let with_port = if hostport.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
            hostport.to_string()
        } else {
            format!("{hostport}:{port}")
        };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|e| format!("--url {url:?}: cannot resolve {with_port}: {e}"))?
            .next()
            .ok_or_else(|| format!("--url {url:?}: {with_port} resolves to nothing"))?;
        Ok(Target { addr, host: hostport.to_string(), path, tls })
    }
}

/// What happened on a connection.
pub enum Ev<'a> {
    /// The server answered 101 with the right accept key.
    Upgraded,
    /// A complete text message (reassembled if it was fragmented).
    Text(&'a [u8]),
    /// A complete binary message.
    Binary(&'a [u8]),
    /// A close frame arrived (the connection is gone after this event).
    /// `by_us` when it answers a close this side started.
    Closed { code: Option<u16>, reason: String, by_us: bool },
    /// I/O error, EOF without a close frame, protocol violation or a passed
    /// deadline (the connection is gone after this event).
    Failed(String),
}

pub type Handler<'h> = dyn FnMut(&mut Net, usize, Ev<'_>) + 'h;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum St {
    Connecting,
    Handshake,
    Open,
}

struct Conn {
    stream: Sock,
    st: St,
    /// The expected `Sec-WebSocket-Accept` until the 101 arrives.
    accept: String,
    /// Received bytes not yet forming a whole frame (usually empty).
    pending: Vec<u8>,
    /// A fragmented message being reassembled, and its opcode (0: none).
    frag: Vec<u8>,
    frag_op: u8,
    wbuf: Vec<u8>,
    wpos: usize,
    writable: bool,
    dirty: bool,
    close_sent: bool,
    deadline: Option<(Instant, &'static str)>,
    /// Which of the targets it connected to.
    target: usize,
    /// permessage-deflate, when the server accepted it.
    inflate: Option<Inflate>,
    /// Whether the message being reassembled is compressed (RSV1 on its first frame).
    frag_z: bool,
}

/// One connection's permessage-deflate receive side.
struct Inflate {
    z: Decompress,
    /// The server answered `server_no_context_takeover`: each message is
    /// inflated from a fresh window.
    reset: bool,
    out: Vec<u8>,
}

impl Inflate {
    fn new(reset: bool) -> Inflate {
        Inflate { z: Decompress::new(false), reset, out: Vec::new() }
    }

    /// Inflates one whole message (its payloads joined) into `self.out`.
    fn message(&mut self, input: &[u8]) -> Result<(), String> {
        self.out.clear();
        for chunk in [input, &[0, 0, 0xff, 0xff][..]] {
            let mut used = 0;
            loop {
                if self.out.capacity() - self.out.len() < 1024 {
                    self.out.reserve(self.out.len().max(16 << 10));
                }
                let before = self.z.total_in();
                self.z
                    .decompress_vec(&chunk[used..], &mut self.out, FlushDecompress::Sync)
                    .map_err(|e| format!("protocol: bad deflate data: {e}"))?;
                used += (self.z.total_in() - before) as usize;
                if self.out.len() > MAX_MESSAGE {
                    return Err("protocol: compressed message inflates too large".into());
                }
                if used == chunk.len() && self.out.len() < self.out.capacity() {
                    break;
                }
            }
        }
        if self.reset {
            self.z.reset(false);
        }
        Ok(())
    }
}

/// Counters over the whole run.
#[derive(Default, Clone, Copy, Debug)]
pub struct NetStats {
    pub frames_in: u64,
    pub frames_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Messages that arrived compressed (RSV1), and their wire bytes
    /// (frame headers and compressed payloads).
    pub compressed_in: u64,
    pub compressed_wire_bytes_in: u64,
    /// Wire bytes (headers and payloads, as sent) of the last complete data
    /// message handed to the callback: read it from within the callback.
    pub last_message_wire_bytes: u64,
    pub pings_answered: u64,
}

pub struct Net {
    poll: Poll,
    events: Events,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    target: Target,
    /// More servers (`--also-url`): connections go round robin over
    /// `target` and these, in the order they are opened.
    also: Vec<Target>,
    opened: usize,
    scratch: Vec<u8>,
    dirty: Vec<usize>,
    /// Connections with an error found outside a read (a failed flush).
    doomed: Vec<(usize, String)>,
    rng: u64,
    handshake_timeout: Duration,
    close_timeout: Duration,
    last_scan: Instant,
    live: usize,
    /// Offer permessage-deflate in the upgrade request.
    deflate: bool,
    pub stats: NetStats,
}

impl Net {
    pub fn new(target: Target, handshake_timeout: Duration) -> io::Result<Net> {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9E37_79B9_7F4A_7C15)
            ^ (std::process::id() as u64) << 32;
        Ok(Net {
            poll: Poll::new()?,
            events: Events::with_capacity(4096),
            conns: Vec::new(),
            free: Vec::new(),
            target,
            also: Vec::new(),
            opened: 0,
            scratch: vec![0; 256 << 10],
            dirty: Vec::new(),
            doomed: Vec::new(),
            rng: seed | 1,
            handshake_timeout,
            close_timeout: Duration::from_secs(5),
            last_scan: Instant::now(),
            live: 0,
            deflate: false,
            stats: NetStats::default(),
        })
    }

    /// Connections not yet closed or failed.
    pub fn live(&self) -> usize {
        self.live
    }

    pub fn is_live(&self, tok: usize) -> bool {
        self.conns.get(tok).is_some_and(|c| c.is_some())
    }

    /// Tokens of all live connections.
    pub fn live_tokens(&self) -> Vec<usize> {
        (0..self.conns.len()).filter(|&i| self.conns[i].is_some()).collect()
    }

    /// Offers permessage-deflate (`client_max_window_bits`, as browsers do)
    /// on the connections opened from now on.
    pub fn offer_deflate(&mut self) {
        self.deflate = true;
    }

    /// Adds a server: connections then go round robin over all of them.
    pub fn also(&mut self, target: Target) {
        self.also.push(target);
    }

    fn target_of(&self, i: usize) -> &Target {
        if i == 0 {
            &self.target
        } else {
            &self.also[i - 1]
        }
    }

    /// Starts a non-blocking connect; the connection's handshake deadline starts now.
    pub fn open(&mut self) -> io::Result<usize> {
        let which = self.opened % (1 + self.also.len());
        self.opened += 1;
        let target = self.target_of(which);
        let stream = TcpStream::connect(target.addr)?;
        let _ = stream.set_nodelay(true);
        // The certificate is for the URL's host name without the port.
        let sni = target.host.rsplit_once(':').map_or(target.host.as_str(), |(h, _)| h).to_owned();
        let stream = Sock::new(stream, target.tls.as_ref().map(|c| (c, sni.as_str())))?;
        let tok = self.free.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.conns.len() - 1
        });
        let mut conn = Conn {
            stream,
            st: St::Connecting,
            accept: String::new(),
            pending: Vec::new(),
            frag: Vec::new(),
            frag_op: 0,
            wbuf: Vec::new(),
            wpos: 0,
            writable: false,
            dirty: false,
            close_sent: false,
            deadline: Some((Instant::now() + self.handshake_timeout, "the TCP connect and the 101 response")),
            target: which,
            inflate: None,
            frag_z: false,
        };
        if let Err(e) = self.poll.registry().register(
            conn.stream.tcp_mut(),
            Token(tok),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            self.free.push(tok);
            return Err(e);
        }
        self.conns[tok] = Some(conn);
        self.live += 1;
        Ok(tok)
    }

    /// Sets (or clears) the deadline of a connection; `what` names what is awaited.
    pub fn set_deadline(&mut self, tok: usize, deadline: Option<(Instant, &'static str)>) {
        if let Some(Some(c)) = self.conns.get_mut(tok) {
            c.deadline = deadline;
        }
    }

    /// Queues a masked text frame (flushed at the end of the current turn, or
    /// at the start of the next one).
    pub fn send_text(&mut self, tok: usize, text: &[u8]) {
        self.send_frame(tok, 0x1, text);
    }

    /// Starts the close handshake with `code`; the connection ends with
    /// `Ev::Closed { by_us: true, .. }` or fails after the close timeout.
    pub fn close(&mut self, tok: usize, code: u16) {
        let ok = match self.conns.get(tok) {
            Some(Some(c)) => !c.close_sent && c.st == St::Open,
            _ => false,
        };
        if !ok {
            return;
        }
        self.send_frame(tok, 0x8, &code.to_be_bytes());
        let deadline = Instant::now() + self.close_timeout;
        if let Some(Some(c)) = self.conns.get_mut(tok) {
            c.close_sent = true;
            c.deadline = Some((deadline, "the server's close frame"));
        }
    }

    /// Drops every connection at once (no close handshake).
    pub fn drop_all(&mut self) {
        for i in 0..self.conns.len() {
            if self.conns[i].is_some() {
                self.remove(i);
            }
        }
    }

    fn next_mask(&mut self) -> [u8; 4] {
        // xorshift64*: masking keys need not be cryptographic for a load generator.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32).to_le_bytes()[..4].try_into().unwrap()
    }

    fn send_frame(&mut self, tok: usize, op: u8, payload: &[u8]) {
        let key = self.next_mask();
        let Some(Some(c)) = self.conns.get_mut(tok) else { return };
        if c.close_sent {
            return;
        }
        if c.wpos > 0 && c.wpos == c.wbuf.len() {
            c.wbuf.clear();
            c.wpos = 0;
        }
        let len = payload.len();
        c.wbuf.push(0x80 | op);
        if len < 126 {
            c.wbuf.push(0x80 | len as u8);
        } else if len <= 0xffff {
            c.wbuf.push(0x80 | 126);
            c.wbuf.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            c.wbuf.push(0x80 | 127);
            c.wbuf.extend_from_slice(&(len as u64).to_be_bytes());
        }
        c.wbuf.extend_from_slice(&key);
        let start = c.wbuf.len();
        c.wbuf.extend_from_slice(payload);
        mask(&mut c.wbuf[start..], key);
        self.stats.frames_out += 1;
        if !c.dirty {
            c.dirty = true;
            self.dirty.push(tok);
        }
    }

    /// Writes what is buffered until done or the socket is full.
    fn flush(&mut self, tok: usize) {
        let Some(Some(c)) = self.conns.get_mut(tok) else { return };
        c.dirty = false;
        if c.st == St::Connecting {
            return;
        }
        // TLS records a full socket held back go first.
        if c.writable {
            match c.stream.flush_pending() {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => c.writable = false,
                Err(e) => {
                    self.doomed.push((tok, format!("write: {e}")));
                    return;
                }
            }
        }
        while c.writable && c.wpos < c.wbuf.len() {
            match c.stream.write(&c.wbuf[c.wpos..]) {
                Ok(0) => {
                    self.doomed.push((tok, "write returned 0".into()));
                    return;
                }
                Ok(n) => {
                    c.wpos += n;
                    self.stats.bytes_out += n as u64;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => c.writable = false,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    self.doomed.push((tok, format!("write: {e}")));
                    return;
                }
            }
        }
        if c.wpos == c.wbuf.len() {
            c.wbuf.clear();
            c.wpos = 0;
            if c.wbuf.capacity() > 64 << 10 {
                c.wbuf.shrink_to(4096);
            }
        }
    }

    fn flush_dirty(&mut self, f: &mut Handler<'_>) {
        loop {
            while let Some(tok) = self.dirty.pop() {
                self.flush(tok);
            }
            if self.doomed.is_empty() {
                break;
            }
            for (tok, msg) in mem::take(&mut self.doomed) {
                self.fail(tok, msg, f);
            }
        }
    }

    fn remove(&mut self, tok: usize) {
        if let Some(mut c) = self.conns[tok].take() {
            let _ = self.poll.registry().deregister(c.stream.tcp_mut());
            self.free.push(tok);
            self.live -= 1;
        }
    }

    fn fail(&mut self, tok: usize, msg: String, f: &mut Handler<'_>) {
        if self.is_live(tok) {
            self.remove(tok);
            f(self, tok, Ev::Failed(msg));
        }
    }

    /// One round: flush, wait for events up to `timeout`, handle them, flush,
    /// check deadlines.
    pub fn turn(&mut self, timeout: Duration, f: &mut Handler<'_>) -> io::Result<()> {
        self.flush_dirty(f);
        let mut events = mem::replace(&mut self.events, Events::with_capacity(0));
        let res = self.poll.poll(&mut events, Some(timeout));
        match res {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                self.events = events;
                return Err(e);
            }
        }
        for ev in events.iter() {
            let tok = ev.token().0;
            if !self.is_live(tok) {
                continue;
            }
            if ev.is_writable() || ev.is_error() || ev.is_write_closed() {
                self.on_writable(tok, f);
            }
            if self.is_live(tok) && (ev.is_readable() || ev.is_read_closed() || ev.is_error()) {
                self.on_readable(tok, f);
            }
        }
        self.events = events;
        self.flush_dirty(f);
        let now = Instant::now();
        if now.duration_since(self.last_scan) >= DEADLINE_SCAN {
            self.last_scan = now;
            self.check_deadlines(now, f);
        }
        Ok(())
    }

    fn check_deadlines(&mut self, now: Instant, f: &mut Handler<'_>) {
        for tok in 0..self.conns.len() {
            let expired = match &self.conns[tok] {
                Some(Conn { deadline: Some((t, what)), .. }) if *t <= now => Some(*what),
                _ => None,
            };
            if let Some(what) = expired {
                self.fail(tok, format!("timed out waiting for {what}"), f);
            }
        }
        self.flush_dirty(f);
    }

    fn on_writable(&mut self, tok: usize, f: &mut Handler<'_>) {
        let Some(Some(c)) = self.conns.get_mut(tok) else { return };
        if c.st == St::Connecting {
            match c.stream.tcp().take_error() {
                Ok(Some(e)) | Err(e) => return self.fail(tok, format!("connect: {e}"), f),
                Ok(None) => {}
            }
            match c.stream.tcp().peer_addr() {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::NotConnected => return,
                Err(e) => return self.fail(tok, format!("connect: {e}"), f),
            }
            c.st = St::Handshake;
            let target = if c.target == 0 { &self.target } else { &self.also[c.target - 1] };
            let key = tungstenite::handshake::client::generate_key();
            c.accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
            let ext = if self.deflate {
                "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
            } else {
                ""
            };
            let req = format!(
                "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{ext}\r\n",
                target.path, target.host
            );
            c.wbuf.extend_from_slice(req.as_bytes());
        }
        c.writable = true;
        self.flush(tok);
        if !self.doomed.is_empty() {
            for (t, msg) in mem::take(&mut self.doomed) {
                self.fail(t, msg, f);
            }
        }
    }

    fn on_readable(&mut self, tok: usize, f: &mut Handler<'_>) {
        let mut scratch = mem::take(&mut self.scratch);
        while let Some(Some(c)) = self.conns.get_mut(tok) {
            if c.st == St::Connecting {
                break;
            }
            match c.stream.read(&mut scratch) {
                Ok(0) => {
                    let msg = if c.close_sent {
                        "EOF after our close frame, without the server's close frame"
                    } else if c.st == St::Handshake {
                        "EOF during the handshake"
                    } else {
                        "EOF without a close frame"
                    };
                    self.fail(tok, msg.into(), f);
                    break;
                }
                Ok(n) => {
                    self.stats.bytes_in += n as u64;
                    if !self.feed(tok, &scratch[..n], f) {
                        break;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    self.fail(tok, format!("read: {e}"), f);
                    break;
                }
            }
        }
        self.scratch = scratch;
    }

    /// Parses `data` after what was pending; false when the connection ended.
    fn feed(&mut self, tok: usize, data: &[u8], f: &mut Handler<'_>) -> bool {
        let Some(Some(c)) = self.conns.get_mut(tok) else { return false };
        let mut pend = mem::take(&mut c.pending);
        if !pend.is_empty() {
            pend.extend_from_slice(data);
        }
        let buf: &[u8] = if pend.is_empty() { data } else { &pend };
        let (used, alive) = self.parse(tok, buf, f);
        if !alive {
            return false;
        }
        let Some(Some(c)) = self.conns.get_mut(tok) else { return false };
        if pend.is_empty() {
            if used < data.len() {
                c.pending = data[used..].to_vec();
            }
        } else {
            pend.drain(..used);
            c.pending = pend;
        }
        true
    }

    /// Handles every whole frame in `buf`; returns the bytes used and whether
    /// the connection is still there.
    fn parse(&mut self, tok: usize, buf: &[u8], f: &mut Handler<'_>) -> (usize, bool) {
        let mut pos = 0;
        loop {
            let Some(Some(c)) = self.conns.get_mut(tok) else { return (pos, false) };
            if c.st == St::Handshake {
                let rest = &buf[pos..];
                let Some(end) = rest.windows(4).position(|w| w == b"\r\n\r\n") else {
                    if rest.len() > MAX_RESPONSE_HEAD {
                        self.fail(tok, "101 response head too large".into(), f);
                        return (pos, false);
                    }
                    return (pos, true);
                };
                let head = &rest[..end + 4];
                match check_101(head, &c.accept, self.deflate) {
                    Ok(deflate) => c.inflate = deflate.map(Inflate::new),
                    Err(msg) => {
                        self.fail(tok, msg, f);
                        return (pos, false);
                    }
                }
                c.st = St::Open;
                c.accept = String::new();
                pos += end + 4;
                f(self, tok, Ev::Upgraded);
                continue;
            }
            let rest = &buf[pos..];
            if rest.len() < 2 {
                return (pos, true);
            }
            let (b0, b1) = (rest[0], rest[1]);
            let fin = b0 & 0x80 != 0;
            let op = b0 & 0x0f;
            let rsv1 = b0 & 0x40 != 0;
            if b0 & 0x30 != 0 || (rsv1 && (c.inflate.is_none() || !(op == 1 || op == 2))) {
                self.fail(tok, format!("protocol: reserved bits set (0x{b0:02x})"), f);
                return (pos, false);
            }
            if b1 & 0x80 != 0 {
                self.fail(tok, "protocol: server frame is masked".into(), f);
                return (pos, false);
            }
            let (len, hl) = match b1 & 0x7f {
                126 if rest.len() >= 4 => (u16::from_be_bytes([rest[2], rest[3]]) as usize, 4),
                127 if rest.len() >= 10 => (u64::from_be_bytes(rest[2..10].try_into().unwrap()) as usize, 10),
                126 | 127 => return (pos, true),
                n => (n as usize, 2),
            };
            if len > MAX_MESSAGE {
                self.fail(tok, format!("protocol: frame of {len} bytes"), f);
                return (pos, false);
            }
            if rest.len() < hl + len {
                return (pos, true);
            }
            let payload = &rest[hl..hl + len];
            pos += hl + len;
            self.stats.frames_in += 1;
            match op {
                0x1 | 0x2 => {
                    if c.frag_op != 0 {
                        self.fail(tok, "protocol: new message inside a fragmented one".into(), f);
                        return (pos, false);
                    }
                    if fin {
                        if !self.deliver(tok, op, rsv1, payload, (hl + len) as u64, f) {
                            return (pos, false);
                        }
                    } else {
                        c.frag_op = op;
                        c.frag_z = rsv1;
                        c.frag.clear();
                        c.frag.extend_from_slice(payload);
                        self.stats.last_message_wire_bytes = (hl + len) as u64;
                    }
                }
                0x0 => {
                    if c.frag_op == 0 {
                        self.fail(tok, "protocol: continuation without a message".into(), f);
                        return (pos, false);
                    }
                    if c.frag.len() + payload.len() > MAX_MESSAGE {
                        self.fail(tok, "protocol: fragmented message too large".into(), f);
                        return (pos, false);
                    }
                    c.frag.extend_from_slice(payload);
                    self.stats.last_message_wire_bytes += (hl + len) as u64;
                    if fin {
                        let msg = mem::take(&mut c.frag);
                        let op = mem::replace(&mut c.frag_op, 0);
                        let z = mem::replace(&mut c.frag_z, false);
                        let wire = self.stats.last_message_wire_bytes;
                        if !self.deliver(tok, op, z, &msg, wire, f) {
                            return (pos, false);
                        }
                        if let Some(Some(c)) = self.conns.get_mut(tok) {
                            let mut msg = msg;
                            msg.clear();
                            c.frag = msg;
                        }
                    }
                }
                0x8 => {
                    let (code, reason) = if payload.len() >= 2 {
                        (
                            Some(u16::from_be_bytes([payload[0], payload[1]])),
                            String::from_utf8_lossy(&payload[2..]).into_owned(),
                        )
                    } else {
                        (None, String::new())
                    };
                    let by_us = c.close_sent;
                    if !by_us {
                        // Answer with the same code, best effort, before dropping.
                        let echo = code.map(|c| c.to_be_bytes().to_vec()).unwrap_or_default();
                        self.send_frame(tok, 0x8, &echo);
                        self.flush(tok);
                        self.doomed.retain(|(t, _)| *t != tok);
                    }
                    self.remove(tok);
                    f(self, tok, Ev::Closed { code, reason, by_us });
                    return (pos, false);
                }
                0x9 => {
                    if len > 125 || !fin {
                        self.fail(tok, "protocol: bad ping frame".into(), f);
                        return (pos, false);
                    }
                    self.stats.pings_answered += 1;
                    let payload = payload.to_vec();
                    self.send_frame(tok, 0xA, &payload);
                }
                0xA => {}
                _ => {
                    self.fail(tok, format!("protocol: unknown opcode {op}"), f);
                    return (pos, false);
                }
            }
        }
    }
}

impl Net {
    /// Hands one complete data message to the callback, inflated first when
    /// it came compressed; false when the connection failed.
    fn deliver(
        &mut self,
        tok: usize,
        op: u8,
        compressed: bool,
        payload: &[u8],
        wire: u64,
        f: &mut Handler<'_>,
    ) -> bool {
        self.stats.last_message_wire_bytes = wire;
        if !compressed {
            f(self, tok, if op == 1 { Ev::Text(payload) } else { Ev::Binary(payload) });
            return true;
        }
        self.stats.compressed_in += 1;
        self.stats.compressed_wire_bytes_in += wire;
        let Some(Some(Conn { inflate: Some(z), .. })) = self.conns.get_mut(tok) else { return false };
        if let Err(msg) = z.message(payload) {
            self.fail(tok, msg, f);
            return false;
        }
        let out = mem::take(&mut z.out);
        f(self, tok, if op == 1 { Ev::Text(&out) } else { Ev::Binary(&out) });
        if let Some(Some(Conn { inflate: Some(z), .. })) = self.conns.get_mut(tok) {
            z.out = out;
        }
        true
    }
}

/// Checks the upgrade response head (ending in the blank line). With
/// `offered` (permessage-deflate was offered), returns what the server agreed:
/// `Some(server_no_context_takeover)` when it accepted the extension.
fn check_101(head: &[u8], accept: &str, offered: bool) -> Result<Option<bool>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err("handshake: incomplete response head".into()),
        Err(e) => return Err(format!("handshake: bad response: {e}")),
    }
    let code = resp.code.unwrap_or(0);
    if code != 101 {
        let retry = resp
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("retry-after"))
            .map(|h| format!(" (Retry-After: {})", String::from_utf8_lossy(h.value)))
            .unwrap_or_default();
        return Err(format!("handshake: server answered {code} {}{retry}", resp.reason.unwrap_or("")));
    }
    let got = resp
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"))
        .map(|h| h.value)
        .unwrap_or(b"");
    if got != accept.as_bytes() {
        return Err(format!(
            "handshake: wrong Sec-WebSocket-Accept {:?} (want {accept:?})",
            String::from_utf8_lossy(got)
        ));
    }
    let mut agreed = None;
    for h in resp.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("sec-websocket-extensions")) {
        let value = String::from_utf8_lossy(h.value);
        for ext in value.split(',') {
            let mut params = ext.split(';').map(str::trim);
            if params.next() != Some("permessage-deflate") {
                return Err(format!("handshake: extension {:?} was not offered", ext.trim()));
            }
            if !offered || agreed.is_some() {
                return Err(format!(
                    "handshake: permessage-deflate in the answer but not offered once: {value:?}"
                ));
            }
            let mut reset = false;
            for p in params {
                match p.split_once('=').map_or(p, |(k, _)| k).trim() {
                    "server_no_context_takeover" => reset = true,
                    "client_no_context_takeover" | "client_max_window_bits" | "server_max_window_bits" => {}
                    other => {
                        return Err(format!("handshake: unknown permessage-deflate parameter {other:?}"))
                    }
                }
            }
            agreed = Some(reset);
        }
    }
    Ok(agreed)
}

/// XORs `data` with the masking key, 8 bytes at a time.
fn mask(data: &mut [u8], key: [u8; 4]) {
    let wide = u64::from_ne_bytes([key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3]]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let v = u64::from_ne_bytes(chunk.try_into().unwrap()) ^ wide;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_matches_bytewise() {
        let key = [1, 2, 3, 4];
        let orig: Vec<u8> = (0..37u8).collect();
        let mut data = orig.clone();
        mask(&mut data, key);
        for (i, (a, b)) in orig.iter().zip(&data).enumerate() {
            assert_eq!(a ^ key[i % 4], *b);
        }
    }

    /// A fake server: the 101 in the same write as the first frames, a text
    /// message fragmented in three with a ping between the fragments, two
    /// frames in one write, a 70000-byte binary frame (64-bit length), all
    /// dribbled out in 7-byte writes at first; then a close 1013. The client
    /// must answer the ping with a masked pong and echo the close code.
    #[test]
    fn frames_partial_fragmented_ping_and_close() {
        use std::io::{Read as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.set_nodelay(true).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut req = Vec::new();
            let mut b = [0u8; 1];
            while !req.ends_with(b"\r\n\r\n") {
                s.read_exact(&mut b).unwrap();
                req.push(b[0]);
            }
            let req = String::from_utf8(req).unwrap();
            assert!(req.starts_with("GET /ws HTTP/1.1\r\n"), "{req}");
            let key = req.lines().find_map(|l| l.strip_prefix("Sec-WebSocket-Key: ")).unwrap();
            let accept = tungstenite::handshake::derive_accept_key(key.trim().as_bytes());
            let mut out = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            )
            .into_bytes();
            out.extend_from_slice(&[0x01, 3, b'h', b'e', b'l']);
            out.extend_from_slice(&[0x89, 2, b'p', b'1']);
            out.extend_from_slice(&[0x00, 1, b'l']);
            out.extend_from_slice(&[0x80, 1, b'o']);
            out.extend_from_slice(&[0x81, 1, b'a', 0x81, 1, b'b']);
            out.extend_from_slice(&[0x82, 127]);
            out.extend_from_slice(&70000u64.to_be_bytes());
            out.extend((0..70000u32).map(|i| i as u8));
            out.extend_from_slice(&[0x88, 6, 0x03, 0xF5, b's', b'l', b'o', b'w']);
            let (slow, rest) = out.split_at(out.len() - 70100);
            for chunk in slow.chunks(7) {
                s.write_all(chunk).unwrap();
                std::thread::sleep(Duration::from_millis(1));
            }
            s.write_all(rest).unwrap();
            // Read the client's frames: a pong "p1", then a close 1013.
            let mut frames = Vec::new();
            for _ in 0..2 {
                let mut h = [0u8; 2];
                s.read_exact(&mut h).unwrap();
                assert_eq!(h[1] & 0x80, 0x80, "client frames are masked");
                let len = (h[1] & 0x7f) as usize;
                let mut key = [0u8; 4];
                s.read_exact(&mut key).unwrap();
                let mut p = vec![0u8; len];
                s.read_exact(&mut p).unwrap();
                for (i, b) in p.iter_mut().enumerate() {
                    *b ^= key[i % 4];
                }
                frames.push((h[0], p));
            }
            frames
        });

        let target = Target::parse(&format!("ws://{addr}/ws")).unwrap();
        let mut net = Net::new(target, Duration::from_secs(5)).unwrap();
        let tok = net.open().unwrap();
        let mut seen: Vec<String> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while net.live() > 0 && Instant::now() < deadline {
            net.turn(Duration::from_millis(20), &mut |_, t, ev| {
                assert_eq!(t, tok);
                seen.push(match ev {
                    Ev::Upgraded => "upgraded".into(),
                    Ev::Text(t) => format!("text {}", String::from_utf8_lossy(t)),
                    Ev::Binary(b) => {
                        assert!(b.iter().enumerate().all(|(i, &x)| x == i as u8));
                        format!("binary {}", b.len())
                    }
                    Ev::Closed { code, reason, by_us } => format!("closed {code:?} {reason} {by_us}"),
                    Ev::Failed(m) => format!("failed {m}"),
                });
            })
            .unwrap();
        }
        assert_eq!(
            seen,
            ["upgraded", "text hello", "text a", "text b", "binary 70000", "closed Some(1013) slow false"]
        );
        assert_eq!(net.stats.pings_answered, 1);
        let frames = server.join().unwrap();
        assert_eq!(frames[0], (0x8A, b"p1".to_vec()));
        assert_eq!(frames[1], (0x88, 1013u16.to_be_bytes().to_vec()));
    }

    /// A server that accepts and never answers: the handshake deadline fails
    /// the connection instead of waiting forever.
    /// A raw-deflate message as a permessage-deflate sender frames it: sync
    /// flushed, the trailing 00 00 ff ff taken off.
    fn deflated(z: &mut flate2::Compress, text: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(text.len() + 64);
        z.compress_vec(text, &mut out, flate2::FlushCompress::Sync).unwrap();
        assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
        out.truncate(out.len() - 4);
        out
    }

    /// One server on loopback that answers the upgrade with `ext` and sends
    /// `frames`; returns the upgrade request it got.
    fn deflate_server(ext: &'static str, frames: Vec<u8>) -> (SocketAddr, std::thread::JoinHandle<String>) {
        use std::io::{Read as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut req = Vec::new();
            let mut b = [0u8; 1];
            while !req.ends_with(b"\r\n\r\n") {
                s.read_exact(&mut b).unwrap();
                req.push(b[0]);
            }
            let req = String::from_utf8(req).unwrap();
            let key = req.lines().find_map(|l| l.strip_prefix("Sec-WebSocket-Key: ")).unwrap();
            let accept = tungstenite::handshake::derive_accept_key(key.trim().as_bytes());
            let mut out = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Extensions: {ext}\r\n\r\n"
            )
            .into_bytes();
            out.extend_from_slice(&frames);
            out.extend_from_slice(&[0x88, 2, 0x03, 0xE8]);
            s.write_all(&out).unwrap();
            // Wait for the client's close answer before dropping the socket.
            let mut h = [0u8; 8];
            let _ = s.read(&mut h);
            req
        });
        (addr, server)
    }

    fn texts(addr: SocketAddr) -> (Vec<String>, NetStats) {
        let mut net =
            Net::new(Target::parse(&format!("ws://{addr}/ws")).unwrap(), Duration::from_secs(5)).unwrap();
        net.offer_deflate();
        net.open().unwrap();
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while net.live() > 0 && Instant::now() < deadline {
            net.turn(Duration::from_millis(20), &mut |net, _, ev| match ev {
                Ev::Text(t) => {
                    seen.push(format!("{} {}", String::from_utf8_lossy(t), net.stats.last_message_wire_bytes))
                }
                Ev::Failed(m) => seen.push(format!("failed {m}")),
                _ => {}
            })
            .unwrap();
        }
        (seen, net.stats)
    }

    #[test]
    fn inflates_compressed_messages_whole_and_fragmented() {
        let text = br#"{"type":"room:message","payload":{"data":"hello hello hello hello hello"}}"#;
        let mut z = flate2::Compress::new(flate2::Compression::default(), false);
        let c = deflated(&mut z, text);
        z.reset();
        let mut frames = vec![0xC1, c.len() as u8];
        frames.extend_from_slice(&c);
        // The same compressed message in two fragments: RSV1 on the first only.
        let (a, b) = c.split_at(c.len() / 2);
        frames.extend_from_slice(&[0x41, a.len() as u8]);
        frames.extend_from_slice(a);
        frames.extend_from_slice(&[0x80, b.len() as u8]);
        frames.extend_from_slice(b);
        // And a plain one between compressed ones.
        frames.extend_from_slice(&[0x81, 5]);
        frames.extend_from_slice(b"plain");
        let (addr, server) = deflate_server(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
            frames,
        );
        let (seen, stats) = texts(addr);
        let want = String::from_utf8_lossy(text);
        assert_eq!(
            seen,
            [format!("{want} {}", c.len() + 2), format!("{want} {}", c.len() + 4), "plain 7".to_string()]
        );
        assert_eq!((stats.compressed_in, stats.compressed_wire_bytes_in), (2, 2 * c.len() as u64 + 6));
        let req = server.join().unwrap();
        assert!(
            req.contains("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"),
            "{req}"
        );
    }

    #[test]
    fn inflates_with_context_takeover_when_the_server_keeps_its_window() {
        let text = b"the same words again and again: the same words again and again";
        let mut z = flate2::Compress::new(flate2::Compression::default(), false);
        let (c1, c2) = (deflated(&mut z, text), deflated(&mut z, text));
        assert!(c2.len() < c1.len(), "the second refers back to the first");
        let mut frames = vec![0xC1, c1.len() as u8];
        frames.extend_from_slice(&c1);
        frames.extend_from_slice(&[0xC1, c2.len() as u8]);
        frames.extend_from_slice(&c2);
        let (addr, server) = deflate_server("permessage-deflate", frames);
        let (seen, _) = texts(addr);
        let want = String::from_utf8_lossy(text);
        assert_eq!(seen, [format!("{want} {}", c1.len() + 2), format!("{want} {}", c2.len() + 2)]);
        server.join().unwrap();
    }

    #[test]
    fn refuses_bad_deflate_data_and_an_extension_not_offered() {
        let (addr, server) = deflate_server("permessage-deflate", vec![0xC1, 3, 0xff, 0xff, 0xff]);
        let (seen, _) = texts(addr);
        assert_eq!(seen.len(), 1);
        assert!(seen[0].starts_with("failed protocol: bad deflate data"), "{seen:?}");
        server.join().unwrap();
        assert!(check_101(
            b"HTTP/1.1 101 OK\r\nSec-WebSocket-Accept: k\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
            "k",
            false
        )
        .unwrap_err()
        .contains("not offered"));
    }

    #[test]
    fn handshake_deadline() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let target = Target::parse(&format!("ws://{}/ws", listener.local_addr().unwrap())).unwrap();
        let mut net = Net::new(target, Duration::from_millis(200)).unwrap();
        net.open().unwrap();
        let start = Instant::now();
        let mut failed = None;
        while net.live() > 0 && start.elapsed() < Duration::from_secs(5) {
            net.turn(Duration::from_millis(20), &mut |_, _, ev| {
                if let Ev::Failed(m) = ev {
                    failed = Some(m);
                }
            })
            .unwrap();
        }
        let msg = failed.expect("the connection should have failed");
        assert!(msg.starts_with("timed out waiting for"), "{msg}");
        assert!(start.elapsed() < Duration::from_secs(1));
        drop(listener);
    }

    #[test]
    fn urls() {
        let t = Target::parse("ws://127.0.0.1:9001/ws").unwrap();
        assert_eq!(t.addr.port(), 9001);
        assert_eq!(t.path, "/ws");
        assert_eq!(t.host, "127.0.0.1:9001");
        assert!(Target::parse("http://x/").is_err());
        assert!(t.tls.is_none());
        let err = Target::parse("wss://127.0.0.1:9001/ws").err().unwrap_or_default();
        assert!(err.contains("--tls-ca"), "{err}");
        assert!(Target::parse_with_ca("wss://127.0.0.1:9001/ws", Some("/nonexistent/ca.pem")).is_err());
    }
}
