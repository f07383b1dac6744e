//! A small JSON-RPC client for the CLI: one HTTP/1.1 connection to
//! pcipassd over its Unix socket or TCP, XenAPI failures as [`RpcFailure`].

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::Value as Json;

use crate::value::Value;
use crate::wire::jsonrpc;

/// Where the daemon is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A Unix socket path.
    Unix(String),
    /// `host:port` over plain HTTP.
    Tcp(String),
    /// `host:port` over HTTPS; the certificate is accepted only when its
    /// SHA-256 fingerprint matches, or with `None` (`--no-verify`).
    Tls {
        /// `host:port`.
        addr: String,
        /// Pinned fingerprint, `AA:BB:...` (case and colons ignored).
        fingerprint: Option<String>,
    },
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix:{p}"),
            Endpoint::Tcp(a) => write!(f, "http://{a}/"),
            Endpoint::Tls { addr, .. } => write!(f, "https://{addr}/"),
        }
    }
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RpcFailure {
    /// The daemon could not be reached or answered nonsense.
    Transport(String),
    /// A XenAPI error: `[CODE, params...]`.
    Api(Vec<String>),
}

/// A connected client.
pub struct Client {
    sender: http1::SendRequest<Full<Bytes>>,
    host: String,
    next_id: u64,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connect to `endpoint`.
    pub async fn connect(endpoint: &Endpoint) -> Result<Client, RpcFailure> {
        let fail =
            |e: std::io::Error| RpcFailure::Transport(format!("cannot connect to {endpoint}: {e}"));
        let handshake_fail =
            |e: hyper::Error| RpcFailure::Transport(format!("cannot talk to {endpoint}: {e}"));
        let (sender, host) = match endpoint {
            Endpoint::Unix(path) => {
                let stream = tokio::net::UnixStream::connect(path).await.map_err(fail)?;
                let (sender, conn) = http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(handshake_fail)?;
                tokio::spawn(conn);
                (sender, "localhost".to_owned())
            }
            Endpoint::Tcp(addr) => {
                let stream = tokio::net::TcpStream::connect(addr).await.map_err(fail)?;
                let _ = stream.set_nodelay(true);
                let (sender, conn) = http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(handshake_fail)?;
                tokio::spawn(conn);
                (sender, addr.clone())
            }
            Endpoint::Tls { addr, fingerprint } => {
                let stream = tokio::net::TcpStream::connect(addr).await.map_err(fail)?;
                let _ = stream.set_nodelay(true);
                let host = addr
                    .rsplit_once(':')
                    .map(|(h, _)| h)
                    .unwrap_or(addr)
                    .trim_matches(['[', ']']);
                let name =
                    rustls_pki_types::ServerName::try_from(host.to_owned()).map_err(|_| {
                        RpcFailure::Transport(format!("{host} is not a valid server name"))
                    })?;
                let connector =
                    tokio_rustls::TlsConnector::from(tls_client_config(fingerprint.clone())?);
                let tls = connector.connect(name, stream).await.map_err(|e| {
                    RpcFailure::Transport(format!("TLS with {endpoint} failed: {e}"))
                })?;
                let (sender, conn) = http1::handshake(TokioIo::new(tls))
                    .await
                    .map_err(handshake_fail)?;
                tokio::spawn(conn);
                (sender, addr.clone())
            }
        };
        Ok(Client {
            sender,
            host,
            next_id: 1,
        })
    }

    /// Call `method` with `params`.
    pub async fn call(&mut self, method: &str, params: Vec<Value>) -> Result<Value, RpcFailure> {
        let id = self.next_id;
        self.next_id += 1;
        let body = serde_json::json!({
            "jsonrpc": "2.0",
            "id": id,
            "method": method,
            "params": params.iter().map(jsonrpc::to_json).collect::<Vec<_>>(),
        });
        let request = hyper::Request::post("/jsonrpc")
            .header("host", &self.host)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(
                serde_json::to_vec(&body).unwrap_or_default(),
            )))
            .map_err(|e| RpcFailure::Transport(e.to_string()))?;
        let transport = |e: hyper::Error| RpcFailure::Transport(format!("request failed: {e}"));
        let response = self.sender.send_request(request).await.map_err(transport)?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(transport)?
            .to_bytes();
        if !status.is_success() {
            return Err(RpcFailure::Transport(format!("HTTP {status}")));
        }
        let reply: Json = serde_json::from_slice(&bytes)
            .map_err(|_| RpcFailure::Transport("the reply is not JSON".into()))?;
        if let Some(error) = reply.get("error").filter(|e| !e.is_null()) {
            let mut description = vec![
                error
                    .get("message")
                    .and_then(Json::as_str)
                    .unwrap_or("INTERNAL_ERROR")
                    .to_owned(),
            ];
            if let Some(Json::Array(data)) = error.get("data") {
                description.extend(data.iter().map(|d| {
                    d.as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| d.to_string())
                }));
            }
            return Err(RpcFailure::Api(description));
        }
        Ok(jsonrpc::from_json(
            reply.get("result").cloned().unwrap_or(Json::Null),
        ))
    }
}

/// Accepts the server's certificate only when it is pinned (or when told
/// not to verify): pcipassd's certificates are usually self-signed, and a
/// self-signed certificate is never accepted silently.
#[derive(Debug)]
struct PinnedCertificate {
    fingerprint: Option<String>,
    provider: std::sync::Arc<rustls::crypto::CryptoProvider>,
}

fn normalise_fingerprint(text: &str) -> String {
    text.chars()
        .filter(char::is_ascii_hexdigit)
        .collect::<String>()
        .to_ascii_lowercase()
}

impl rustls::client::danger::ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        use sha2::Digest;
        let Some(pinned) = &self.fingerprint else {
            return Ok(rustls::client::danger::ServerCertVerified::assertion());
        };
        let actual: String = sha2::Sha256::digest(end_entity.as_ref())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if actual == normalise_fingerprint(pinned) {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the server certificate does not match the pinned fingerprint".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn tls_client_config(
    fingerprint: Option<String>,
) -> Result<std::sync::Arc<rustls::ClientConfig>, RpcFailure> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let verifier = std::sync::Arc::new(PinnedCertificate {
        fingerprint,
        provider: provider.clone(),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| RpcFailure::Transport(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(std::sync::Arc::new(config))
}
