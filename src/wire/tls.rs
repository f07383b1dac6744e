//! TLS for the TCP listeners: a rustls server configuration (TLS 1.2 and
//! 1.3 only) from PEM material, and the certificate fingerprint clients pin.

use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

/// Why TLS cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate PEM holds no certificate.
    #[error("no certificate in {0}")]
    NoCertificate(String),
    /// The key PEM holds no usable key.
    #[error("no private key usable with {0}")]
    NoKey(String),
    /// rustls refused the pair.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A rustls server configuration for a PEM certificate chain and key
/// (`name` says where they came from, for errors).
pub fn server_config(
    cert_pem: &[u8],
    key_pem: &[u8],
    name: &str,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let name = name.to_owned();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(name));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| TlsError::NoKey(name))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// SHA-256 fingerprint of the first certificate of a PEM chain, `AA:BB:...`.
pub fn fingerprint(cert_pem: &[u8]) -> Option<String> {
    let cert = CertificateDer::pem_slice_iter(cert_pem).next()?.ok()?;
    let digest = Sha256::digest(cert.as_ref());
    Some(
        digest
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":"),
    )
}
