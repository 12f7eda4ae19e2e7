//! One connection: the TCP connect (optionally from a chosen local address),
//! the handshake, and the writer thread. The reading half stays with the
//! session thread; its automatic replies (pong, close) are discarded there and
//! sent by the writer instead, so only one thread ever writes to the socket.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;
use tungstenite::protocol::{frame::coding::CloseCode, CloseFrame, Role};
use tungstenite::{HandshakeError, Message, WebSocket};

use super::{Error, Shared};

/// Where to connect: the parsed URL.
pub(crate) struct Target {
    url: String,
    host: String,
    port: u16,
}

impl Target {
    pub(crate) fn parse(url: &str) -> Result<Target, Error> {
        let rest = url.strip_prefix("ws://").ok_or_else(|| Error::BadUrl(url.to_owned()))?;
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                (h, p.parse().map_err(|_| Error::BadUrl(url.to_owned()))?)
            }
            _ => (authority, 80),
        };
        if host.is_empty() {
            return Err(Error::BadUrl(url.to_owned()));
        }
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        Ok(Target { url: url.to_owned(), host, port })
    }
}

/// The reading half: reads the socket; writes go to it only during the
/// handshake, afterwards they are dropped (the writer thread sends them).
pub(crate) struct ReadHalf {
    stream: TcpStream,
    handshaking: bool,
}

impl ReadHalf {
    /// Ends the TCP connection both ways (the writer's copy of the socket too).
    pub(crate) fn shutdown(&self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

impl Read for ReadHalf {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read(buf)
    }
}

impl Write for ReadHalf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.handshaking {
            self.stream.write(buf)
        } else {
            Ok(buf.len())
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        if self.handshaking {
            self.stream.flush()
        } else {
            Ok(())
        }
    }
}

/// The writing half: never read from.
struct WriteHalf(TcpStream);

impl Read for WriteHalf {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Ok(0)
    }
}

impl Write for WriteHalf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// What the writer thread sends.
#[derive(Clone)]
pub(crate) enum Out {
    Text(String),
    Binary(Vec<u8>),
    Pong(Vec<u8>),
    /// Sends a close frame with this code, then stops.
    Close(u16),
}

/// An open connection: the reading half and the writer's queue.
pub(crate) struct Conn {
    pub(crate) reader: WebSocket<ReadHalf>,
    pub(crate) writer: Sender<Out>,
}

/// Why a connection attempt failed.
pub(crate) enum OpenError {
    /// The server answered the upgrade with this status.
    Refused { status: u16, retry_after: Option<u64> },
    /// Anything else (connect refused, timeout, a broken handshake).
    Failed(String),
}

/// Frames that may wait for the writer thread.
const WRITE_QUEUE: usize = 1024;

/// How often the reading half wakes to check deadlines and stop requests.
pub(crate) const TICK: Duration = Duration::from_millis(200);

fn tcp_connect(target: &Target, shared: &Shared) -> io::Result<TcpStream> {
    let timeout = shared.options.request_timeout;
    let addrs: Vec<SocketAddr> = (target.host.as_str(), target.port).to_socket_addrs()?.collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address for the host");
    for addr in addrs {
        let attempt = match shared.options.local_addr {
            None => TcpStream::connect_timeout(&addr, timeout),
            Some(ip) => {
                let socket =
                    socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
                socket.bind(&SocketAddr::new(ip, 0).into())?;
                socket.connect_timeout(&addr.into(), timeout).map(|()| socket.into())
            }
        };
        match attempt {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Connects, upgrades, and starts the writer thread.
pub(crate) fn open(target: &Target, shared: &Shared) -> Result<Conn, OpenError> {
    let failed = |what: &str, e: &dyn std::fmt::Display| OpenError::Failed(format!("{what}: {e}"));
    let stream = tcp_connect(target, shared).map_err(|e| failed("connect", &e))?;
    let _ = stream.set_nodelay(true);
    stream.set_read_timeout(Some(shared.options.request_timeout)).map_err(|e| failed("socket", &e))?;
    stream.set_write_timeout(Some(shared.options.request_timeout)).map_err(|e| failed("socket", &e))?;
    let mut request = target.url.as_str().into_client_request().map_err(|e| failed("url", &e))?;
    let headers = request.headers_mut();
    headers.insert("Sec-WebSocket-Protocol", HeaderValue::from_static("wshub.v1.json"));
    if let Some(token) = shared.state.lock().token.clone() {
        let value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| failed("token", &e))?;
        headers.insert("Authorization", value);
    }
    let read_stream = stream.try_clone().map_err(|e| failed("socket", &e))?;
    let half = ReadHalf { stream: read_stream, handshaking: true };
    let mut reader = match tungstenite::client::client(request, half) {
        Ok((ws, _response)) => ws,
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
    reader.get_mut().handshaking = false;
    stream.set_read_timeout(Some(TICK)).map_err(|e| failed("socket", &e))?;
    // Bounded: a sender waits while the writer is behind (a stuck socket
    // fails its write within the timeout, which ends the queue).
    let (tx, rx) = crossbeam_channel::bounded(WRITE_QUEUE);
    // Two descriptors per connection: this one for the writer, the clone in the reading half.
    std::thread::Builder::new()
        .name("wshub-client-w".into())
        .spawn(move || write_loop(WebSocket::from_raw_socket(WriteHalf(stream), Role::Client, None), rx))
        .map_err(|e| failed("spawning the writer", &e))?;
    Ok(Conn { reader, writer: tx })
}

/// Sends what the queue holds until it is closed or a write fails; then shuts
/// the socket down so the reading half sees the end too.
fn write_loop(mut ws: WebSocket<WriteHalf>, rx: Receiver<Out>) {
    for out in rx.iter() {
        let result = match out {
            Out::Text(t) => ws.send(Message::text(t)),
            Out::Binary(b) => ws.send(Message::binary(b)),
            Out::Pong(p) => ws.send(Message::Pong(p.into())),
            Out::Close(code) => {
                let frame = CloseFrame { code: CloseCode::from(code), reason: "".into() };
                let _ = ws.close(Some(frame));
                let _ = ws.flush();
                return;
            }
        };
        if result.is_err() {
            let _ = ws.get_ref().0.shutdown(std::net::Shutdown::Both);
            return;
        }
    }
}
