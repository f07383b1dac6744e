//! Shared harness of the pcipass benchmarks: the daemon (start, mock
//! hosts, users), a plain hyper server for the baseline, and a hand-written
//! keep-alive load generator.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

pub const PCIPASSD: &str = env!("CARGO_BIN_EXE_pcipassd");
pub const PCIPASS: &str = env!("CARGO_BIN_EXE_pcipass");
pub const XEN_CMDLINE: &str = env!("CARGO_BIN_EXE_xen-cmdline");

/// Smoke run: without `--bench`, that is under `cargo test` (debug build),
/// every section runs once at its smallest (the `demo` host instead of
/// the large ones, one request per connection, a few watchers) and checks
/// its calls succeed, in seconds: the benchmark cannot rot, and no figure
/// of a debug build is measured.
pub fn smoke() -> bool {
    !std::env::args().any(|a| a == "--bench")
}

/// Shortened run: `PCIPASS_BENCH_QUICK=1 scripts/bench`, or a smoke run.
pub fn quick() -> bool {
    std::env::var_os("PCIPASS_BENCH_QUICK").is_some() || smoke()
}

/// `full`, or less in a quick run; the host profile `full` (a large mock
/// host) is `demo` in a smoke run.
pub fn host_profile(full: &str) -> &str {
    if smoke() { "demo" } else { full }
}

/// Whether section `name` (status, hyper, scale, events, sync, bodies) is to run: all of
/// them unless some are named on the command line
/// (`cargo bench --bench pcipass -- hyper scale`).
pub fn wanted(name: &str) -> bool {
    let named: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    named.is_empty() || named.iter().any(|a| a == name)
}

pub fn secs(full: f64) -> Duration {
    if smoke() {
        // load() makes one request per connection.
        Duration::ZERO
    } else {
        Duration::from_secs_f64(if quick() { 0.3 } else { full })
    }
}

pub struct Daemon {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn mock_host(dir: &Path, profile: &str) -> PathBuf {
    let root = dir.join(format!("root-{profile}"));
    let status = Command::new(PCIPASS)
        .args(["mock-host", "create"])
        .arg(&root)
        .args(["--profile", profile])
        .status()
        .unwrap();
    assert!(status.success());
    root
}

pub fn start(root: &Path, state: &Path, extra: &[&str]) -> Daemon {
    std::fs::create_dir_all(state).unwrap();
    let mut child = Command::new(PCIPASSD)
        .arg("--root")
        .arg(root)
        .arg("--state-dir")
        .arg(state)
        .args(["--listen", "127.0.0.1:0", "--unix"])
        .arg(state.join("s.sock"))
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().unwrap().unwrap();
        if let Some(url) = line.strip_prefix("listening on http://") {
            break url.trim_end_matches('/').parse().unwrap();
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    Daemon { child, addr }
}

pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

pub fn xml_call(method: &str, params: &[&str]) -> Vec<u8> {
    let params: String = params
        .iter()
        .map(|p| format!("<param><value>{p}</value></param>"))
        .collect();
    format!("<?xml version=\"1.0\"?><methodCall><methodName>{method}</methodName><params>{params}</params></methodCall>").into_bytes()
}

/// A JSON-RPC 2.0 call whose parameters are JSON texts.
pub fn json_call(method: &str, params: &[&str]) -> Vec<u8> {
    format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"{method}\",\"params\":[{}]}}",
        params.join(",")
    )
    .into_bytes()
}

pub async fn connect(addr: SocketAddr) -> http1::SendRequest<Full<Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    sender
}

/// [`connect`] from the local address `source` (a loopback address of
/// 127.0.0.0/8: another client, as the daemon counts them).
pub async fn connect_from(
    addr: SocketAddr,
    source: std::net::IpAddr,
) -> http1::SendRequest<Full<Bytes>> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    sender
}

async fn send(
    sender: &mut http1::SendRequest<Full<Bytes>>,
    body: &[u8],
) -> Result<hyper::body::Incoming, hyper::Error> {
    sender.ready().await?;
    // A JSON body goes where JSON-RPC clients send it.
    let json = body.first() == Some(&b'{');
    let request = hyper::Request::post(if json { "/jsonrpc" } else { "/" })
        .header("host", "bench")
        .header(
            "content-type",
            if json { "application/json" } else { "text/xml" },
        )
        .body(Full::new(Bytes::copy_from_slice(body)))
        .unwrap();
    Ok(sender.send_request(request).await?.into_body())
}

async fn try_post(
    sender: &mut http1::SendRequest<Full<Bytes>>,
    body: &[u8],
) -> Result<Bytes, hyper::Error> {
    Ok(send(sender, body).await?.collect().await?.to_bytes())
}

/// Send a request and read the reply to its last byte, counting bytes
/// without gathering them (as wrk and oha do): the latency of one call.
async fn timed_post(
    sender: &mut http1::SendRequest<Full<Bytes>>,
    body: &[u8],
) -> Result<usize, hyper::Error> {
    let mut reply = send(sender, body).await?;
    let mut bytes = 0;
    while let Some(frame) = reply.frame().await {
        bytes += frame?.data_ref().map_or(0, Bytes::len);
    }
    Ok(bytes)
}

pub async fn post(sender: &mut http1::SendRequest<Full<Bytes>>, body: &[u8]) -> Bytes {
    try_post(sender, body).await.unwrap()
}

pub fn value_of(reply: &[u8]) -> String {
    let text = String::from_utf8_lossy(reply);
    let after = text.split("<name>Value</name><value>").nth(1).unwrap_or("");
    after.split('<').next().unwrap_or("").to_owned()
}

pub struct Stats {
    pub requests: usize,
    pub errors: usize,
    pub per_second: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub bytes: usize,
}

impl Stats {
    pub fn line(&self) -> String {
        format!(
            "{:>9.0} req/s  p50 {:>8.1} us  p99 {:>8.1} us  ({} requests, {} reconnects)",
            self.per_second,
            self.p50.as_secs_f64() * 1e6,
            self.p99.as_secs_f64() * 1e6,
            self.requests,
            self.errors
        )
    }
}

pub async fn load(
    addr: SocketAddr,
    body: Vec<u8>,
    connections: usize,
    duration: Duration,
) -> Stats {
    let body = Arc::new(body);
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let mut sender = connect(addr).await;
            let (mut latencies, mut bytes, mut errors) = (Vec::new(), 0, 0);
            while Instant::now() < deadline || latencies.is_empty() {
                let t = Instant::now();
                match timed_post(&mut sender, &body).await {
                    Ok(size) => {
                        bytes = size;
                        latencies.push(t.elapsed());
                    }
                    Err(_) => {
                        errors += 1;
                        sender = connect(addr).await;
                    }
                }
            }
            (latencies, bytes, errors)
        }));
    }
    let (mut all, mut bytes, mut errors) = (Vec::new(), 0, 0);
    for t in tasks {
        let (l, b, e) = t.await.unwrap();
        all.extend(l);
        bytes = b;
        errors += e;
    }
    let elapsed = started.elapsed();
    if smoke() {
        assert_eq!(errors, 0, "a smoke run's request failed");
        assert!(all.len() >= connections);
    }
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Stats {
        requests: all.len(),
        errors,
        per_second: all.len() as f64 / elapsed.as_secs_f64(),
        p50: pct(0.50),
        p99: pct(0.99),
        bytes,
    }
}

pub async fn login(addr: SocketAddr, user: &str, password: &str) -> String {
    let mut sender = connect(addr).await;
    value_of(
        &post(
            &mut sender,
            &xml_call("session.login_with_password", &[user, password]),
        )
        .await,
    )
}

pub async fn first_ref(addr: SocketAddr, session: &str, method: &str) -> String {
    let mut sender = connect(addr).await;
    let reply = post(&mut sender, &xml_call(method, &[session])).await;
    let text = String::from_utf8_lossy(&reply).into_owned();
    text.split("OpaqueRef:")
        .nth(1)
        .map(|r| format!("OpaqueRef:{}", &r[..36]))
        .unwrap_or_default()
}

/// `PCI.get_dom0_access_status` of the first PCI of the daemon at `addr`,
/// over `connections` keep-alive connections for `duration`.
pub async fn status_load(addr: SocketAddr, connections: usize, duration: Duration) -> Stats {
    let s = login(addr, "bench", "bench-secret").await;
    let pci = first_ref(addr, &s, "PCI.get_all").await;
    let body = xml_call("PCI.get_dom0_access_status", &[&s, &pci]);
    load(addr, body, connections, duration).await
}

pub fn add_user(state: &Path) {
    let mut child = Command::new(PCIPASS)
        .args(["user-add", "bench", "--role", "pool-admin", "--state-dir"])
        .arg(state)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"bench-secret\n")
        .unwrap();
    assert!(child.wait().unwrap().success());
}

/// A plain hyper server answering every request with a fixed body: the
/// ceiling for any HTTP service on this machine. It runs in a process of
/// its own (this benchmark re-executed with `--hello-server`), on a runtime
/// like pcipassd's, so that it pays the same cross-process costs.
/// The plain hyper server, in a process of its own; killed when dropped
/// (a failed section too), and it exits by itself when the benchmark's
/// end of its stdin closes (the benchmark killed), so it never outlives
/// the run holding the test runner's output open.
pub struct HelloServer(Child);

impl Drop for HelloServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn hello_server() -> (HelloServer, SocketAddr) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .arg("--hello-server")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (HelloServer(child), line.trim().parse().unwrap())
}

pub fn run_hello_server() {
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("{}", listener.local_addr().unwrap());
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            stream.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        let _ = req.into_body().collect().await;
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            Bytes::from_static(b"Hello, World!"),
                        )))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}
