//! TLS for the TCP listeners: the certificate and key `--tls-cert` and
//! `--tls-key` name, or a self-signed pair in the state directory
//! (`--tls-self-signed`), made into the listeners' server configuration.

use std::sync::Arc;

use super::{DaemonError, state_at};
use crate::config::{ConfigError, Settings};

/// The certificate and key `--tls-cert`/`--tls-key` name, read and
/// checked; `None` when neither is given. One without the other is an
/// error.
pub(super) fn tls_files(
    settings: &Settings,
) -> Result<Option<crate::store::tls::TlsMaterial>, DaemonError> {
    Ok(Some(match (&settings.tls_cert, &settings.tls_key) {
        (Some(cert), Some(key)) => crate::store::tls::load(cert, key).map_err(|e| {
            let text = e.to_string();
            let (c, k) = (cert.display().to_string(), key.display().to_string());
            if text.contains(&c) || text.contains(&k) {
                DaemonError::State(text)
            } else {
                DaemonError::State(format!("--tls-cert {c} / --tls-key {k}: {text}"))
            }
        })?,
        (Some(cert), None) => {
            return Err(ConfigError::Invalid(format!(
                "--tls-cert {} needs --tls-key",
                cert.display()
            ))
            .into());
        }
        (None, Some(key)) => {
            return Err(ConfigError::Invalid(format!(
                "--tls-key {} needs --tls-cert",
                key.display()
            ))
            .into());
        }
        (None, None) => return Ok(None),
    }))
}

/// TLS for the TCP listeners, if asked for.
pub(super) struct Tls {
    pub(super) config: Arc<rustls::ServerConfig>,
    /// The certificate's SHA-256 fingerprint, for `pcipass --fingerprint`.
    pub(super) fingerprint: Option<String>,
}

/// The TLS configuration for the TCP listeners, if TLS is asked for.
pub(super) fn tls_config(settings: &Settings) -> Result<Option<Tls>, DaemonError> {
    let material = match (tls_files(settings)?, settings.tls_self_signed) {
        (Some(material), _) => material,
        (None, true) => {
            let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
            let dir = settings.state_dir();
            crate::store::tls::self_signed(&dir, &names).map_err(state_at(&dir))?
        }
        (None, false) => return Ok(None),
    };
    let fingerprint = crate::wire::tls::fingerprint(&material.cert_pem);
    if let Some(fingerprint) = &fingerprint {
        println!("tls certificate sha256 fingerprint {fingerprint}");
    }
    let config = crate::wire::tls::server_config(
        &material.cert_pem,
        &material.key_pem,
        &material.cert_path.display().to_string(),
    )
    .map_err(state_at(&material.cert_path))?;
    Ok(Some(Tls {
        config,
        fingerprint,
    }))
}
