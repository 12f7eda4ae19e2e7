//! `floor-server`: the least a server can do for `wshub-bench echo` and
//! `conns`, to measure what this machine allows with the generator beside it.
//!
//! One thread, one mio event loop, no JSON library, no per-connection thread,
//! no queue: it upgrades (Sec-WebSocket-Accept from tungstenite's helper),
//! sends `{"type":"connected"}`, and answers each masked text frame
//! `{"type":"ping","id":"N",...}` with `{"type":"ack","id":"N"}` in the same
//! read-loop turn, one `write` per readable socket. It speaks nothing else
//! (no rooms, no validation beyond the framing it needs) and is not a server
//! anyone should run: it is the floor the real servers are compared with.
//!
//!   floor-server [--bind 127.0.0.1:0]     prints `listening on ADDR`

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

const LISTENER: Token = Token(usize::MAX);

struct Conn {
    stream: TcpStream,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    upgraded: bool,
    closing: bool,
}

fn main() {
    let mut bind: SocketAddr = "127.0.0.1:0".parse().expect("default address");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--bind" => bind = args.next().and_then(|v| v.parse().ok()).expect("--bind ADDR"),
            _ => {
                eprintln!("usage: floor-server [--bind 127.0.0.1:0]");
                std::process::exit(2);
            }
        }
    }
    if let Err(e) = run(bind) {
        eprintln!("floor-server: {e}");
        std::process::exit(1);
    }
}

fn run(bind: SocketAddr) -> io::Result<()> {
    let mut listener = TcpListener::bind(bind)?;
    let mut poll = Poll::new()?;
    poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
    println!("listening on {}", listener.local_addr()?);
    io::stdout().flush()?;
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match poll.poll(&mut events, None) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for ev in events.iter() {
            if ev.token() == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            stream.set_nodelay(true)?;
                            let i = free.pop().unwrap_or_else(|| {
                                conns.push(None);
                                conns.len() - 1
                            });
                            poll.registry().register(&mut stream, Token(i), Interest::READABLE)?;
                            conns[i] = Some(Conn {
                                stream,
                                inbuf: Vec::new(),
                                out: Vec::new(),
                                upgraded: false,
                                closing: false,
                            });
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                }
                continue;
            }
            let i = ev.token().0;
            let Some(conn) = conns.get_mut(i).and_then(Option::as_mut) else { continue };
            let alive = serve(conn, &mut buf);
            if !alive {
                if let Some(mut c) = conns[i].take() {
                    let _ = poll.registry().deregister(&mut c.stream);
                }
                free.push(i);
            } else if !conn.out.is_empty() {
                poll.registry().reregister(
                    &mut conn.stream,
                    Token(i),
                    Interest::READABLE | Interest::WRITABLE,
                )?;
            } else if ev.is_writable() {
                poll.registry().reregister(&mut conn.stream, Token(i), Interest::READABLE)?;
            }
        }
    }
}

/// Reads what is there, answers it, writes; false when the connection is done.
fn serve(c: &mut Conn, buf: &mut [u8]) -> bool {
    loop {
        match c.stream.read(buf) {
            Ok(0) => return false,
            Ok(n) => c.inbuf.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    if !c.upgraded {
        let Some(end) = find(&c.inbuf, b"\r\n\r\n") else { return c.inbuf.len() < 8192 };
        let head = String::from_utf8_lossy(&c.inbuf[..end]).into_owned();
        let key = head
            .lines()
            .find_map(|l| {
                l.split_once(':').filter(|(k, _)| k.trim().eq_ignore_ascii_case("sec-websocket-key"))
            })
            .map(|(_, v)| v.trim().to_owned());
        let Some(key) = key else { return false };
        let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
        c.out.extend_from_slice(
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {accept}\r\n\r\n"
            )
            .as_bytes(),
        );
        text_frame(&mut c.out, br#"{"type":"connected"}"#);
        c.inbuf.drain(..end + 4);
        c.upgraded = true;
    }
    let mut at = 0;
    while let Some((opcode, payload, used)) = next_frame(&c.inbuf[at..]) {
        at += used;
        match opcode {
            0x1 => {
                let reply = match id_of(&payload) {
                    Some(id) => format!(r#"{{"type":"ack","id":"{id}"}}"#),
                    None => r#"{"type":"error"}"#.to_owned(),
                };
                text_frame(&mut c.out, reply.as_bytes());
            }
            0x8 => {
                c.out.extend_from_slice(&[0x88, 0x02, 0x03, 0xe8]);
                c.closing = true;
                break;
            }
            0x9 => frame(&mut c.out, 0xA, &payload),
            _ => {}
        }
    }
    c.inbuf.drain(..at);
    while !c.out.is_empty() {
        match c.stream.write(&c.out) {
            Ok(n) => {
                c.out.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    !(c.closing && c.out.is_empty())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The value of the first `"id":"..."` in a ping.
fn id_of(payload: &[u8]) -> Option<String> {
    let at = find(payload, br#""id":""#)? + 6;
    let len = payload[at..].iter().position(|&b| b == b'"')?;
    Some(String::from_utf8_lossy(&payload[at..at + len]).into_owned())
}

/// One complete masked client frame: (opcode, unmasked payload, bytes used).
fn next_frame(b: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    if b.len() < 2 {
        return None;
    }
    let opcode = b[0] & 0x0f;
    let masked = b[1] & 0x80 != 0;
    let (len, mut at) = match b[1] & 0x7f {
        126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
        127 if b.len() >= 10 => (u64::from_be_bytes(b[2..10].try_into().ok()?) as usize, 10),
        126 | 127 => return None,
        n => (n as usize, 2),
    };
    let mask = if masked {
        let m: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
        at += 4;
        Some(m)
    } else {
        None
    };
    let data = b.get(at..at + len)?;
    let payload = match mask {
        Some(m) => data.iter().enumerate().map(|(i, x)| x ^ m[i % 4]).collect(),
        None => data.to_vec(),
    };
    Some((opcode, payload, at + len))
}

fn frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= 0xffff => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

fn text_frame(out: &mut Vec<u8>, payload: &[u8]) {
    frame(out, 0x1, payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut f = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    #[test]
    fn parses_masked_frames_split_anywhere_and_finds_the_id() {
        let ping = br#"{"type":"ping","id":"42","payload":{"n":42}}"#;
        let mut wire = masked(0x1, ping, [1, 2, 3, 4]);
        let long = vec![b'x'; 300];
        wire.extend(masked(0x1, &long, [9, 8, 7, 6]));
        for cut in 0..wire.len() {
            // A frame is only taken once all of it is there.
            match next_frame(&wire[..cut]) {
                Some((_, _, used)) => assert!(used <= cut),
                None => assert!(cut < ping.len() + 6),
            }
        }
        let (op, payload, used) = next_frame(&wire).unwrap();
        assert_eq!((op, payload.as_slice()), (0x1, &ping[..]));
        assert_eq!(id_of(&payload).as_deref(), Some("42"));
        let (_, payload, rest) = next_frame(&wire[used..]).unwrap();
        assert_eq!(payload, long);
        assert_eq!(used + rest, wire.len());
        assert_eq!(id_of(b"{\"type\":\"ping\"}"), None);
    }

    #[test]
    fn server_frames_are_unmasked_with_the_right_length_encoding() {
        let mut out = Vec::new();
        text_frame(&mut out, b"hi");
        assert_eq!(out, b"\x81\x02hi");
        let mut out = Vec::new();
        text_frame(&mut out, &[b'a'; 200]);
        assert_eq!(&out[..4], &[0x81, 126, 0, 200]);
        assert_eq!(out.len(), 204);
    }
}
