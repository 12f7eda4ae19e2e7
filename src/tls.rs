//! TLS settings: where the certificate, key and client CA come from, the
//! rustls `ServerConfig` built from them, and reloading it without a restart.
//!
//! This module owns no socket and no session. Each connection's session is
//! made from [`Tls::current`] on the connection's own reader thread, and lives
//! under the write lock of `connection/outbound.rs`, which is where every byte
//! is encrypted and decrypted. A reload swaps the config that *new*
//! connections start from; open sessions keep the one they started with.

use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::RwLock;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

/// Where PEM text comes from: a file (re-read on every reload) or bytes in
/// memory (the same bytes on every reload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PemSource {
    /// A PEM file, read when the server starts and on every reload.
    File(PathBuf),
    /// PEM text held in memory.
    Pem(Vec<u8>),
}

impl PemSource {
    fn read(&self, what: &str) -> Result<Vec<u8>, String> {
        match self {
            PemSource::File(path) => {
                std::fs::read(path).map_err(|e| format!("{what}: cannot read {}: {e}", path.display()))
            }
            PemSource::Pem(bytes) => Ok(bytes.clone()),
        }
    }

    fn name(&self) -> String {
        match self {
            PemSource::File(path) => path.display().to_string(),
            PemSource::Pem(_) => "in-memory PEM".to_owned(),
        }
    }
}

/// The server's TLS material, as given in [`Config`](crate::Config).
#[derive(Debug, Clone)]
pub(crate) struct TlsSources {
    pub cert: PemSource,
    pub key: PemSource,
    pub client_ca: Option<PemSource>,
}

/// The TLS config new connections start from, swapped by [`Tls::reload`].
#[derive(Debug)]
pub(crate) struct Tls {
    sources: TlsSources,
    current: RwLock<Arc<ServerConfig>>,
}

impl Tls {
    /// Loads the certificate, key and client CA; an error names the file and the problem.
    pub(crate) fn load(sources: TlsSources) -> Result<Tls, String> {
        let config = build(&sources)?;
        Ok(Tls { sources, current: RwLock::new(config) })
    }

    /// The config a new connection starts its session from.
    pub(crate) fn current(&self) -> Arc<ServerConfig> {
        self.current.read().clone()
    }

    /// Re-reads the sources. On success new connections get the new
    /// certificate; on failure the old config stays and the error says why.
    pub(crate) fn reload(&self) -> Result<(), String> {
        let config = build(&self.sources)?;
        *self.current.write() = config;
        log::info!("TLS certificate reloaded from {}", self.sources.cert.name());
        Ok(())
    }
}

/// The crypto provider: ring (see Cargo.toml for why not aws-lc-rs).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(source: &PemSource, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = source.read(what)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what} {}: {e}", source.name()))?;
    if certs.is_empty() {
        return Err(format!("{what} {}: no CERTIFICATE in it", source.name()));
    }
    Ok(certs)
}

fn build(sources: &TlsSources) -> Result<Arc<ServerConfig>, String> {
    let chain = certs(&sources.cert, "tls_cert")?;
    let key_pem = sources.key.read("tls_key")?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| format!("tls_key {}: {e}", sources.key.name()))?;
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?;
    let builder = match &sources.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in certs(ca, "tls_client_ca")? {
                roots.add(cert).map_err(|e| format!("tls_client_ca {}: {e}", ca.name()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("tls_client_ca {}: {e}", ca.name()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("tls_cert/tls_key {}: {e}", sources.cert.name()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The subject of a DER certificate as `CN=...,O=...` (RFC 4514 order:
/// last RDN first), or `None` when it cannot be parsed. Only the attributes
/// that identify clients in practice are named; others show as their OID.
pub(crate) fn subject_of(cert: &[u8]) -> Option<String> {
    // Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version?, serial,
    //   signature, issuer, validity, subject, ... } ... }
    let (_, cert_body, _) = der(cert)?;
    let (_, tbs, _) = der(cert_body)?;
    let mut rest = tbs;
    let (tag, _, after) = der(rest)?;
    if tag == 0xa0 {
        rest = after; // explicit version
    }
    for _ in 0..4 {
        rest = der(rest)?.2; // serial, signature, issuer, validity
    }
    let (tag, mut name, _) = der(rest)?;
    if tag != 0x30 {
        return None;
    }
    let mut parts = Vec::new();
    while !name.is_empty() {
        let (_, set, after) = der(name)?;
        name = after;
        let mut set = set;
        while !set.is_empty() {
            let (_, atv, after) = der(set)?;
            set = after;
            let (oid_tag, oid, value_rest) = der(atv)?;
            if oid_tag != 0x06 {
                return None;
            }
            let (_, value, _) = der(value_rest)?;
            let key = match oid {
                [0x55, 0x04, 0x03] => "CN".to_owned(),
                [0x55, 0x04, 0x06] => "C".to_owned(),
                [0x55, 0x04, 0x07] => "L".to_owned(),
                [0x55, 0x04, 0x08] => "ST".to_owned(),
                [0x55, 0x04, 0x0a] => "O".to_owned(),
                [0x55, 0x04, 0x0b] => "OU".to_owned(),
                other => other.iter().map(|b| format!("{b:02x}")).collect(),
            };
            parts.push(format!("{key}={}", String::from_utf8_lossy(value)));
        }
    }
    parts.reverse();
    Some(parts.join(","))
}

/// One DER element: (tag, contents, what follows). Short and long lengths up to 4 bytes.
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_parsing_never_panics_on_short_input() {
        for bytes in [&[][..], &[0x30], &[0x30, 0x85, 1, 2, 3, 4, 5], &[0x30, 0x82, 0xff]] {
            assert!(subject_of(bytes).is_none());
        }
    }

    #[test]
    fn missing_files_and_empty_pem_are_errors_naming_them() {
        let sources = TlsSources {
            cert: PemSource::File("/nonexistent/cert.pem".into()),
            key: PemSource::Pem(Vec::new()),
            client_ca: None,
        };
        let err = Tls::load(sources).unwrap_err();
        assert!(err.contains("/nonexistent/cert.pem"), "{err}");
        let sources = TlsSources {
            cert: PemSource::Pem(b"nothing".to_vec()),
            key: PemSource::Pem(Vec::new()),
            client_ca: None,
        };
        assert!(Tls::load(sources).unwrap_err().contains("no CERTIFICATE"));
    }
}
