//! `wss://`: a rustls client session over the event loop's non-blocking
//! socket. [`Sock`] reads and writes plaintext like a `TcpStream`; the TLS
//! records it owes the server (handshake messages, encrypted frames) leave as
//! the socket takes them, and [`Sock::flush_pending`] sends what a full
//! socket held back, on the next writable event.

use std::io::{self, ErrorKind, Read, Write};
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

/// A client config trusting the CA certificates in `ca_file` (PEM), with
/// ring as the provider (as the server) and ALPN `http/1.1`.
pub fn client_config(ca_file: &str) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca_file).map_err(|e| format!("--tls-ca {ca_file}: {e}"))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("--tls-ca {ca_file}: {e}"))?;
        roots.add(cert).map_err(|e| format!("--tls-ca {ca_file}: {e}"))?;
    }
    let mut config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A plain or TLS client socket.
pub enum Sock {
    Plain(TcpStream),
    Tls(Box<TlsSock>),
}

pub struct TlsSock {
    tcp: TcpStream,
    conn: ClientConnection,
}

impl Sock {
    pub fn new(tcp: TcpStream, tls: Option<(&Arc<ClientConfig>, &str)>) -> io::Result<Sock> {
        let Some((config, host)) = tls else { return Ok(Sock::Plain(tcp)) };
        let name =
            ServerName::try_from(host.to_owned()).map_err(|e| io::Error::new(ErrorKind::InvalidInput, e))?;
        let conn = ClientConnection::new(config.clone(), name).map_err(io::Error::other)?;
        Ok(Sock::Tls(Box::new(TlsSock { tcp, conn })))
    }

    pub fn tcp(&self) -> &TcpStream {
        match self {
            Sock::Plain(s) => s,
            Sock::Tls(t) => &t.tcp,
        }
    }

    pub fn tcp_mut(&mut self) -> &mut TcpStream {
        match self {
            Sock::Plain(s) => s,
            Sock::Tls(t) => &mut t.tcp,
        }
    }

    /// Sends TLS records held back by a full socket; `WouldBlock` while some remain.
    pub fn flush_pending(&mut self) -> io::Result<()> {
        match self {
            Sock::Plain(_) => Ok(()),
            Sock::Tls(t) => t.flush_pending(),
        }
    }
}

impl TlsSock {
    fn flush_pending(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut self.tcp) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let t = match self {
            Sock::Plain(s) => return s.read(buf),
            Sock::Tls(t) => t,
        };
        loop {
            match t.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            match t.conn.read_tls(&mut t.tcp) {
                Ok(0) => return Ok(0),
                Ok(_) => {
                    t.conn.process_new_packets().map_err(|e| io::Error::new(ErrorKind::InvalidData, e))?;
                    // Handshake replies (and anything the handshake released).
                    match t.flush_pending() {
                        Ok(()) => {}
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl Write for Sock {
    /// Takes plaintext only once earlier records are out, so a full socket
    /// shows as `WouldBlock` like a plain one (and the caller waits for writable).
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let t = match self {
            Sock::Plain(s) => return s.write(buf),
            Sock::Tls(t) => t,
        };
        t.flush_pending()?;
        let n = t.conn.writer().write(buf)?;
        match t.flush_pending() {
            Ok(()) => Ok(n),
            Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(n),
            Err(e) => Err(e),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_pending()
    }
}
