//! TLS material in the state directory: a configured certificate and key,
//! or a self-signed pair generated on first start (key 0600).

use std::path::{Path, PathBuf};

/// Why the TLS material is unusable.
#[derive(Debug, thiserror::Error)]
pub enum TlsMaterialError {
    /// A file cannot be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Certificate generation failed.
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(String),
}

/// A certificate chain and private key, PEM.
#[derive(Debug, Clone)]
pub struct TlsMaterial {
    /// Certificate chain (PEM).
    pub cert_pem: Vec<u8>,
    /// Private key (PEM).
    pub key_pem: Vec<u8>,
    /// Where the certificate is (for logs).
    pub cert_path: PathBuf,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsMaterialError> {
    std::fs::read(path).map_err(|source| TlsMaterialError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Load a configured certificate and key.
pub fn load(cert: &Path, key: &Path) -> Result<TlsMaterial, TlsMaterialError> {
    Ok(TlsMaterial {
        cert_pem: read(cert)?,
        key_pem: read(key)?,
        cert_path: cert.to_owned(),
    })
}

/// The self-signed pair in `state_dir` (`tls-cert.pem`, `tls-key.pem`),
/// generated for `names` when missing.
pub fn self_signed(state_dir: &Path, names: &[String]) -> Result<TlsMaterial, TlsMaterialError> {
    let cert_path = state_dir.join("tls-cert.pem");
    let key_path = state_dir.join("tls-key.pem");
    if !cert_path.exists() || !key_path.exists() {
        let generated = rcgen::generate_simple_self_signed(names.to_vec())
            .map_err(|e| TlsMaterialError::Generate(e.to_string()))?;
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| TlsMaterialError::Io { path, source }
        };
        super::write_private(&key_path, generated.signing_key.serialize_pem().as_bytes())
            .map_err(io(&key_path))?;
        super::write_private(&cert_path, generated.cert.pem().as_bytes())
            .map_err(io(&cert_path))?;
        tracing::info!(cert = %cert_path.display(), "generated a self-signed TLS certificate");
    }
    load(&cert_path, &key_path)
}
