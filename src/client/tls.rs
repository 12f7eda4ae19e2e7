//! The client's TLS settings for `wss://`: which certificates it trusts (the
//! system's roots, or only the CA file of [`Options::ca_file`]), or none at
//! all with [`Options::insecure`]. Built once per client; every connection
//! attempt starts a rustls session from it. This module owns no socket.
//!
//! [`Options::ca_file`]: super::Options::ca_file
//! [`Options::insecure`]: super::Options::insecure

use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::{Error, Options};

/// The rustls config for this client's `wss://` connections.
pub(crate) fn client_config(options: &Options) -> Result<Arc<ClientConfig>, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(format!("TLS setup: {e}")))?;
    let mut config = if options.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth()
    } else {
        builder.with_root_certificates(roots(options)?).with_no_client_auth()
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Only the certificates of `ca_file` when it is set (as `curl --cacert`),
/// else the system's.
fn roots(options: &Options) -> Result<RootCertStore, Error> {
    let mut roots = RootCertStore::empty();
    if let Some(path) = &options.ca_file {
        let shown = path.display();
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| Error::Options(format!("cannot read the CA file {shown}: {e}")))?;
        for cert in certs {
            let cert = cert.map_err(|e| Error::Options(format!("the CA file {shown}: {e}")))?;
            roots.add(cert).map_err(|e| Error::Options(format!("the CA file {shown}: {e}")))?;
        }
        if roots.is_empty() {
            return Err(Error::Options(format!("the CA file {shown} holds no certificate")));
        }
        return Ok(roots);
    }
    system_roots().map(|r| (*r).clone())
}

/// The system's roots, read once per process (every client would read the
/// same files).
fn system_roots() -> Result<Arc<RootCertStore>, Error> {
    static ROOTS: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    let found = ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        let mut roots = RootCertStore::empty();
        let (added, _) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            let why = found.errors.first().map(|e| e.to_string()).unwrap_or_else(|| "none found".into());
            return Err(format!("no system root certificates ({why}); pass a CA file"));
        }
        Ok(Arc::new(roots))
    });
    found.clone().map_err(Error::Tls)
}

/// `--insecure`: any certificate for any name is accepted; the handshake's
/// signatures are still checked, so the session is encrypted, but to whoever
/// answered.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
