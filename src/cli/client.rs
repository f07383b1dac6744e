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
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix:{p}"),
            Endpoint::Tcp(a) => write!(f, "http://{a}/"),
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
