//! HTTP: the TCP, TLS and Unix-socket listeners and the request routing.
//!
//! POST `/jsonrpc` is JSON-RPC; every other POST path (`/`, `/RPC2`,
//! `/xmlrpc`, ...) is XML-RPC, as xapi routes them. GET `/health` answers
//! `ok`. No CORS header is ever sent and a preflight (OPTIONS) is refused,
//! so a web page of another origin cannot call the API with a user's
//! browser. Limits: body size (413), time to send the headers and the body
//! (the connection is closed or 408), time for a blocked answer to be read
//! (the connection is closed), TCP connections served at once (further
//! ones wait in the kernel's accept queue) and per client address (further
//! ones are closed at once). The Unix sockets have a budget of their own,
//! and local root gets in even when it is spent. Responses go out with
//! TCP_NODELAY. On shutdown the listeners close and in-flight calls get up
//! to ten seconds to finish.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::wire::body::ReplyBody;
use crate::wire::limits::{AddressSlot, AddressSlots, WriteTimeout, fit_to_open_files};
use crate::wire::page;
use crate::wire::unproven::{CountRead, Ticket, Unproven};

/// Listener and limit settings.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// TCP listeners.
    pub listen: Vec<SocketAddr>,
    /// Unix-socket listeners.
    pub unix: Vec<PathBuf>,
    /// Group allowed on the Unix sockets (name or gid); mode 0660 then.
    pub unix_group: Option<String>,
    /// TLS for the TCP listeners.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Time allowed for the request headers (also the keep-alive idle time).
    pub header_timeout: Duration,
    /// Time allowed for the request body.
    pub body_timeout: Duration,
    /// TCP connections served at once.
    pub max_connections: usize,
    /// TCP connections one client address may hold.
    pub max_connections_per_address: usize,
    /// Unix-socket connections served at once (local root is never
    /// refused).
    pub max_unix_connections: usize,
    /// Time an answer may stay unread (its write blocked) before the
    /// connection is closed.
    pub write_timeout: Duration,
    /// TCP connections that have not finished a request yet, at most; a
    /// new one past it closes the slowest of them ([`Unproven`]).
    pub max_unproven_connections: usize,
    /// Bytes of large request bodies (over [`SMALL_BODY`]) held at once by
    /// all connections together; a request whose body would exceed it is
    /// answered 503 (Retry-After: 1) before its body is read.
    pub body_budget_bytes: usize,
}

/// A body this small is never held back by the body budget: a login or a
/// call, whatever else arrives.
pub const SMALL_BODY: usize = 64 * 1024;

/// The least a connection must send on average, in bytes a second, once
/// it is [`RATE_AFTER`] old and has not finished a request.
pub const MIN_RATE: u64 = 64;

/// When [`MIN_RATE`] starts to apply to a connection.
pub const RATE_AFTER: Duration = Duration::from_secs(5);

/// The unit the body budget counts in.
const BUDGET_UNIT: usize = 4096;

impl Default for HttpConfig {
    fn default() -> HttpConfig {
        HttpConfig {
            listen: Vec::new(),
            unix: Vec::new(),
            unix_group: None,
            tls: None,
            max_body_bytes: 16 * 1024 * 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: 1024,
            max_connections_per_address: 512,
            max_unix_connections: 64,
            write_timeout: Duration::from_secs(30),
            body_budget_bytes: 48 * 1024 * 1024,
            max_unproven_connections: 256,
        }
    }
}

/// Who is on the other end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// A TCP (or TLS) client.
    Tcp(SocketAddr),
    /// A Unix-socket client and its credentials.
    Unix {
        /// Peer uid.
        uid: Option<u32>,
        /// Peer pid.
        pid: Option<i32>,
    },
}

/// Which codec a request uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// XML-RPC.
    XmlRpc,
    /// JSON-RPC.
    JsonRpc,
}

impl Protocol {
    fn content_type(self) -> &'static str {
        match self {
            Protocol::XmlRpc => "text/xml",
            Protocol::JsonRpc => "application/json",
        }
    }
}

/// One RPC request.
#[derive(Debug, Clone)]
pub struct RpcRequest {
    /// Codec.
    pub protocol: Protocol,
    /// Request path.
    pub path: String,
    /// Caller.
    pub peer: Peer,
    /// Body.
    pub body: Bytes,
}

/// The encoded reply.
#[derive(Debug, Clone)]
pub struct RpcResponse {
    /// Body, in the request's protocol.
    pub body: ReplyBody,
}

/// What answers RPC requests (the dispatcher).
pub trait RpcHandler: Send + Sync + 'static {
    /// Answer one request.
    fn handle(&self, request: RpcRequest)
    -> Pin<Box<dyn Future<Output = RpcResponse> + Send + '_>>;

    /// The user of `session` and the messages it may call (lowercase
    /// `class.message`), for the page on the host; `None` when the
    /// session is not valid.
    fn whoami(&self, session: &str, peer: &Peer) -> Option<(String, Vec<String>)>;
}

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// A listener could not be set up.
    #[error("cannot listen on {what}: {source}")]
    Bind {
        /// What would be too long.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
}

fn plain(status: StatusCode, body: &'static str) -> Response<ReplyBody> {
    let mut response = Response::new(ReplyBody::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain"),
    );
    response
}

/// A request's whole body, within the bounds: its size (413), the shared
/// budget of large bodies (503 at once, before a byte is read), the body
/// timeout (408). `Err` is the reply that refuses it.
async fn read_body(
    headers: &hyper::HeaderMap,
    body: Incoming,
    config: &HttpConfig,
    budget: &Arc<Semaphore>,
) -> Result<Bytes, Response<ReplyBody>> {
    let length = headers
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if length.is_some_and(|n| n > config.max_body_bytes as u64) {
        return Err(plain(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body too large\n",
        ));
    }
    // A large body (or one of unknown length, which may be as large as
    // allowed) takes its size from the budget all connections share, or
    // waits for nothing: it is answered at once, before a byte is read.
    let need = length.map_or(config.max_body_bytes, |n| n as usize);
    let _held = if need > SMALL_BODY {
        let units = need.div_ceil(BUDGET_UNIT).min(u32::MAX as usize) as u32;
        match budget.clone().try_acquire_many_owned(units) {
            Ok(held) => Some(held),
            Err(_) => {
                let mut busy = plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many large request bodies at once; retry\n",
                );
                busy.headers_mut().insert(
                    hyper::header::RETRY_AFTER,
                    hyper::header::HeaderValue::from_static("1"),
                );
                return Err(busy);
            }
        }
    } else {
        None
    };
    let body = Limited::new(body, config.max_body_bytes);
    match tokio::time::timeout(config.body_timeout, body.collect()).await {
        Err(_) => Err(plain(
            StatusCode::REQUEST_TIMEOUT,
            "request body not received in time\n",
        )),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(plain(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body too large\n",
        )),
        Ok(Err(_)) => Err(plain(StatusCode::BAD_REQUEST, "request body unreadable\n")),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

async fn route(
    request: Request<Incoming>,
    peer: Peer,
    config: Arc<HttpConfig>,
    handler: Arc<dyn RpcHandler>,
    budget: Arc<Semaphore>,
    ticket: Option<Arc<Ticket>>,
) -> Result<Response<ReplyBody>, Infallible> {
    let path = request.uri().path().to_owned();
    // A browser's request from another site changes nothing, whatever its
    // path: refused before its body is read.
    if let Some(why) = page::cross_site(request.method(), request.headers()) {
        // Any page a user opens can make their browser send these: one
        // line a second at most, with the count of the others.
        static LOGGED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        static UNLOGGED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let second = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if LOGGED.swap(second, std::sync::atomic::Ordering::Relaxed) != second {
            let before = UNLOGGED.swap(0, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(path, peer = ?peer, unlogged_before = before, "{}", why.trim_end());
        } else {
            UNLOGGED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        return Ok(plain(StatusCode::FORBIDDEN, why));
    }
    match *request.method() {
        Method::GET if path == "/health" => return Ok(plain(StatusCode::OK, "ok")),
        Method::GET if path == "/ui/session" => {}
        Method::GET => {
            return Ok(
                page::asset(&path).unwrap_or_else(|| plain(StatusCode::NOT_FOUND, "not found\n"))
            );
        }
        Method::POST => {}
        _ => {
            return Ok(plain(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed\n",
            ));
        }
    }
    let (parts, body) = request.into_parts();
    // A GET (the page's /ui/session) has no body to read or to take a
    // share of the large-body budget for.
    let body = if parts.method == Method::GET {
        Bytes::new()
    } else {
        match read_body(&parts.headers, body, &config, &budget).await {
            Ok(body) => body,
            Err(refusal) => return Ok(refusal),
        }
    };
    // A whole request arrived: the connection is an established client.
    if let Some(ticket) = &ticket {
        ticket.proven();
    }
    if path.starts_with("/ui/") {
        let tls = config.tls.is_some() && matches!(peer, Peer::Tcp(_));
        let request = page::PageRequest {
            path: &path,
            headers: &parts.headers,
            body,
            peer,
            tls,
        };
        return Ok(page::endpoint(request, handler.as_ref()).await);
    }
    let protocol = if path == "/jsonrpc" {
        Protocol::JsonRpc
    } else {
        Protocol::XmlRpc
    };
    let reply = handler
        .handle(RpcRequest {
            protocol,
            path,
            peer,
            body,
        })
        .await;
    let mut response = Response::new(reply.body);
    let headers = response.headers_mut();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(protocol.content_type()),
    );
    Ok(response)
}

struct Shared {
    config: Arc<HttpConfig>,
    handler: Arc<dyn RpcHandler>,
    permits: Arc<Semaphore>,
    unix_permits: Arc<Semaphore>,
    addresses: Arc<AddressSlots>,
    /// The large request bodies all connections may hold at once
    /// ([`HttpConfig::body_budget_bytes`], in units of 4 KiB).
    bodies: Arc<Semaphore>,
    /// TCP connections that have not finished a request yet.
    unproven: Arc<Unproven>,
    graceful: GracefulShutdown,
}

/// What a connection holds while it is served: its place in a connection
/// budget and in its address's bound (both freed when it ends).
type Hold = (Option<OwnedSemaphorePermit>, Option<AddressSlot>);

impl Shared {
    fn serve<IO>(&self, io: IO, peer: Peer, hold: Hold, ticket: Option<Ticket>)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let ticket = ticket.map(Arc::new);
        let counted = ticket
            .as_ref()
            .map_or_else(Default::default, |t| t.bytes.clone());
        let closed = ticket.as_ref().map(|t| t.close.clone());
        let io = WriteTimeout::new(CountRead::new(io, counted), self.config.write_timeout);
        let (config, handler) = (self.config.clone(), self.handler.clone());
        let bodies = self.bodies.clone();
        let service = service_fn(move |request| {
            route(
                request,
                peer.clone(),
                config.clone(),
                handler.clone(),
                bodies.clone(),
                ticket.clone(),
            )
        });
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(self.config.header_timeout)
            .keep_alive(true)
            .serve_connection(TokioIo::new(io), service);
        let connection = self.graceful.watch(connection);
        tokio::spawn(async move {
            let closed = async {
                match closed {
                    Some(closed) => closed.notified().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                ended = connection => {
                    if let Err(e) = ended {
                        tracing::debug!("connection ended: {e}");
                    }
                }
                () = closed => tracing::debug!("closed to make room: no request finished"),
            }
            drop(hold);
        });
    }
}

fn bind_unix(path: &PathBuf, group: Option<&str>) -> Result<UnixListener, HttpError> {
    use std::os::unix::fs::PermissionsExt;
    let err = |source| HttpError::Bind {
        what: format!("unix:{}", path.display()),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    // A socket file left by a previous run would make bind fail.
    if std::fs::symlink_metadata(path).is_ok_and(|m| {
        use std::os::unix::fs::FileTypeExt;
        m.file_type().is_socket()
    }) {
        std::fs::remove_file(path).map_err(err)?;
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    let mode = if group.is_some() { 0o660 } else { 0o600 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(err)?;
    if let Some(group) = group {
        let gid = group_id(group).ok_or_else(|| {
            err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no group {group}"),
            ))
        })?;
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(err)?;
    }
    Ok(listener)
}

fn group_id(group: &str) -> Option<u32> {
    if let Ok(gid) = group.parse() {
        return Some(gid);
    }
    std::fs::read_to_string("/etc/group")
        .ok()?
        .lines()
        .find_map(|line| {
            let mut parts = line.split(':');
            (parts.next()? == group).then(|| parts.nth(1)?.parse().ok())?
        })
}

/// Accept connections until told to stop. With `permits`, each one first
/// takes a slot of that budget (so excess clients wait in the accept
/// queue); without, `on_connection` decides.
async fn accept_loop<A>(
    permits: Option<Arc<Semaphore>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    mut accept: impl AsyncFnMut() -> std::io::Result<A>,
    on_connection: impl Fn(A, Option<OwnedSemaphorePermit>),
) {
    loop {
        let permit = match &permits {
            Some(permits) => match permits.clone().acquire_owned().await {
                Ok(permit) => Some(permit),
                Err(_) => return,
            },
            None => None,
        };
        let accepted = tokio::select! {
            a = accept() => a,
            _ = stop.changed() => return,
        };
        match accepted {
            Ok(connection) => on_connection(connection, permit),
            Err(e) => {
                // Out of descriptors, most likely: the client waits in
                // the queue and is served when one is free; nothing is
                // answered wrongly.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serve until `shutdown` completes, then drain in-flight calls.
/// `on_ready` runs once every listener is bound and accepting (the
/// daemon tells systemd then).
pub async fn serve(
    config: HttpConfig,
    handler: Arc<dyn RpcHandler>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce() + Send + 'static,
) -> Result<(), HttpError> {
    let mut config = config;
    let wanted = config.max_connections + config.max_unix_connections;
    let (usable, open_files) = fit_to_open_files(wanted);
    if usable < wanted {
        let tcp = usable.saturating_sub(config.max_unix_connections).max(1);
        tracing::warn!(
            open_files,
            max_connections = config.max_connections,
            lowered_to = tcp,
            "the open-file limit cannot hold every connection: serving fewer"
        );
        config.max_connections = tcp;
    }
    let config = Arc::new(config);
    let shared = Arc::new(Shared {
        config: config.clone(),
        handler,
        permits: Arc::new(Semaphore::new(config.max_connections.max(1))),
        unix_permits: Arc::new(Semaphore::new(config.max_unix_connections.max(1))),
        addresses: AddressSlots::new(config.max_connections_per_address),
        // At least one body of the largest size fits.
        bodies: Arc::new(Semaphore::new(
            config
                .body_budget_bytes
                .max(config.max_body_bytes)
                .div_ceil(BUDGET_UNIT)
                .min(Semaphore::MAX_PERMITS),
        )),
        unproven: Unproven::new(
            config
                .max_unproven_connections
                .min(config.max_connections.saturating_sub(1))
                .max(1),
        ),
        graceful: GracefulShutdown::new(),
    });
    // The minimum data rate of a request, whatever the pressure: a
    // connection that has sent less than MIN_RATE bytes a second on
    // average after RATE_AFTER without finishing a request is closed.
    {
        let unproven = shared.unproven.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                unproven.sweep(RATE_AFTER, MIN_RATE);
            }
        });
    }
    let mut tcp = Vec::new();
    for addr in &config.listen {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| HttpError::Bind {
                what: addr.to_string(),
                source,
            })?;
        let local = listener.local_addr().map_err(|source| HttpError::Bind {
            what: addr.to_string(),
            source,
        })?;
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        tcp.push((listener, format!("{scheme}://{local}/")));
    }
    let mut unix = Vec::new();
    for path in &config.unix {
        unix.push((bind_unix(path, config.unix_group.as_deref())?, path.clone()));
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut accepters = tokio::task::JoinSet::new();
    let acceptor = config.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    for (listener, url) in tcp {
        println!("listening on {url}");
        let acceptor = acceptor.clone();
        let on_connection = {
            let shared = shared.clone();
            move |(stream, addr): (tokio::net::TcpStream, SocketAddr), permit| {
                let Some(slot) = shared.addresses.take(addr.ip()) else {
                    if let Some(count) = shared.addresses.refused(addr.ip()) {
                        tracing::warn!(
                            address = %addr.ip(),
                            limit = shared.addresses.limit(),
                            refused_since = count,
                            "connection refused: the address holds --max-connections-per-address \
                             (logged once per address every 10 s)"
                        );
                    }
                    // Said, not reset: a client sees why and when to retry.
                    tokio::spawn(async move {
                        use tokio::io::AsyncWriteExt;
                        let mut stream = stream;
                        let busy = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n\
                                     Content-Length: 0\r\nConnection: close\r\n\r\n";
                        let _ = tokio::time::timeout(
                            std::time::Duration::from_secs(1),
                            stream.write_all(busy),
                        )
                        .await;
                    });
                    return;
                };
                let hold = (permit, Some(slot));
                let ticket = shared.unproven.admit();
                let _ = stream.set_nodelay(true);
                match &acceptor {
                    None => shared.serve(stream, Peer::Tcp(addr), hold, Some(ticket)),
                    Some(acceptor) => {
                        let (acceptor, shared) = (acceptor.clone(), shared.clone());
                        let limit = shared.config.header_timeout;
                        tokio::spawn(async move {
                            // A handshake that never ends is closed to
                            // make room like a slow request.
                            let close = ticket.close.clone();
                            let handshake = tokio::time::timeout(limit, acceptor.accept(stream));
                            let handshake = tokio::select! {
                                done = handshake => done,
                                () = close.notified() => return,
                            };
                            match handshake {
                                Ok(Ok(tls)) => {
                                    shared.serve(tls, Peer::Tcp(addr), hold, Some(ticket));
                                }
                                Ok(Err(e)) => tracing::debug!(%addr, "TLS handshake failed: {e}"),
                                Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
                            }
                        });
                    }
                }
            }
        };
        accepters.spawn(accept_loop(
            Some(shared.permits.clone()),
            stop_rx.clone(),
            async move || listener.accept().await,
            on_connection,
        ));
    }
    for (listener, path) in unix {
        println!("listening on unix:{}", path.display());
        let on_connection = {
            let shared = shared.clone();
            move |(stream, _): (tokio::net::UnixStream, tokio::net::unix::SocketAddr), _| {
                let cred = stream.peer_cred().ok();
                let uid = cred.map(|c| c.uid());
                let permit = match shared.unix_permits.clone().try_acquire_owned() {
                    Ok(permit) => Some(permit),
                    // Local root always gets in.
                    Err(_) if uid == Some(0) => None,
                    Err(_) => {
                        tracing::warn!(?uid, "refused a local client: the Unix sockets are full");
                        return;
                    }
                };
                let peer = Peer::Unix {
                    uid,
                    pid: cred.and_then(|c| c.pid()),
                };
                shared.serve(stream, peer, (permit, None), None);
            }
        };
        accepters.spawn(accept_loop(
            None,
            stop_rx.clone(),
            async move || listener.accept().await,
            on_connection,
        ));
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    // Every listener is bound and accepting: a client connecting now is
    // served.
    on_ready();
    shutdown.await;
    let _ = stop_tx.send(true);
    while accepters.join_next().await.is_some() {}
    for path in &config.unix {
        let _ = std::fs::remove_file(path);
    }
    let Ok(shared) = Arc::try_unwrap(shared) else {
        tracing::warn!("connections still referenced at shutdown");
        return Ok(());
    };
    if tokio::time::timeout(Duration::from_secs(10), shared.graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("in-flight calls did not finish within 10 s; closing");
    }
    Ok(())
}
