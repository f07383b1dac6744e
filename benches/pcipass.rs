//! pcipass benchmarks: every figure is printed with its ratio to a
//! baseline measured in the same run (`scripts/bench`, or `cargo bench`).
//!
//! 1. status through the API, native backend vs the exec backend
//!    (spawn-per-call, as xapi does), and the in-process status cost;
//! 2. a small and a large call over keep-alive connections vs a plain
//!    hyper server;
//! 3. scale from 256 to 4096 functions: start-up sync, `get_all_records`
//!    latency and size, resident memory;
//! 4. `event.from` with 100 watchers: edit to last watcher notified.
//!
//! Without `--bench` (that is, under `cargo test --all-targets`) or with
//! `PCIPASS_BENCH_QUICK=1`, every run is shortened: the test suite checks
//! that the benchmark still works; those figures are not meaningful.
#![expect(
    clippy::unwrap_used,
    reason = "benchmark harness: a failed setup step should abort the run"
)]

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

const PCIPASSD: &str = env!("CARGO_BIN_EXE_pcipassd");
const PCIPASS: &str = env!("CARGO_BIN_EXE_pcipass");
const XEN_CMDLINE: &str = env!("CARGO_BIN_EXE_xen-cmdline");

fn quick() -> bool {
    std::env::var_os("PCIPASS_BENCH_QUICK").is_some() || !std::env::args().any(|a| a == "--bench")
}

/// Whether section `name` (status, hyper, scale, events) is to run: all of
/// them unless some are named on the command line
/// (`cargo bench --bench pcipass -- hyper scale`).
fn wanted(name: &str) -> bool {
    let named: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    named.is_empty() || named.iter().any(|a| a == name)
}

fn secs(full: f64) -> Duration {
    Duration::from_secs_f64(if quick() { 0.3 } else { full })
}

struct Daemon {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mock_host(dir: &Path, profile: &str) -> PathBuf {
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

fn start(root: &Path, state: &Path, extra: &[&str]) -> Daemon {
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

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn xml_call(method: &str, params: &[&str]) -> Vec<u8> {
    let params: String = params
        .iter()
        .map(|p| format!("<param><value>{p}</value></param>"))
        .collect();
    format!("<?xml version=\"1.0\"?><methodCall><methodName>{method}</methodName><params>{params}</params></methodCall>").into_bytes()
}

async fn connect(addr: SocketAddr) -> http1::SendRequest<Full<Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
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
    let request = hyper::Request::post("/")
        .header("host", "bench")
        .header("content-type", "text/xml")
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

async fn post(sender: &mut http1::SendRequest<Full<Bytes>>, body: &[u8]) -> Bytes {
    try_post(sender, body).await.unwrap()
}

fn value_of(reply: &[u8]) -> String {
    let text = String::from_utf8_lossy(reply);
    let after = text.split("<name>Value</name><value>").nth(1).unwrap_or("");
    after.split('<').next().unwrap_or("").to_owned()
}

struct Stats {
    requests: usize,
    errors: usize,
    per_second: f64,
    p50: Duration,
    p99: Duration,
    bytes: usize,
}

impl Stats {
    fn line(&self) -> String {
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

async fn load(addr: SocketAddr, body: Vec<u8>, connections: usize, duration: Duration) -> Stats {
    let body = Arc::new(body);
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let mut sender = connect(addr).await;
            let (mut latencies, mut bytes, mut errors) = (Vec::new(), 0, 0);
            while Instant::now() < deadline {
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

async fn login(addr: SocketAddr, user: &str, password: &str) -> String {
    let mut sender = connect(addr).await;
    value_of(
        &post(
            &mut sender,
            &xml_call("session.login_with_password", &[user, password]),
        )
        .await,
    )
}

async fn first_ref(addr: SocketAddr, session: &str, method: &str) -> String {
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
async fn status_load(addr: SocketAddr, connections: usize, duration: Duration) -> Stats {
    let s = login(addr, "bench", "bench-secret").await;
    let pci = first_ref(addr, &s, "PCI.get_all").await;
    let body = xml_call("PCI.get_dom0_access_status", &[&s, &pci]);
    load(addr, body, connections, duration).await
}

fn add_user(state: &Path) {
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
fn hello_server() -> (Child, SocketAddr) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .arg("--hello-server")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (child, line.trim().parse().unwrap())
}

fn run_hello_server() {
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

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if std::env::args().any(|a| a == "--hello-server") {
        return run_hello_server();
    }
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "pcipass benchmarks ({} cores){}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        if quick() {
            " [QUICK: figures not meaningful]"
        } else {
            ""
        }
    );

    // 1. Status: native vs exec (spawn per call).
    let demo = mock_host(dir.path(), "demo");
    let native_state = dir.path().join("state-native");
    add_user(&native_state);
    let native = start(&demo, &native_state, &[]);
    if wanted("status") {
        let exec_state = dir.path().join("state-exec");
        add_user(&exec_state);
        let exec = start(
            &demo,
            &exec_state,
            &["--boot-backend", "exec", "--xen-cmdline", XEN_CMDLINE],
        );
        let (n_stats, e_stats) = runtime.block_on(async {
            (
                status_load(native.addr, 1, secs(3.0)).await,
                status_load(exec.addr, 1, secs(3.0)).await,
            )
        });
        drop(exec);
        println!("\n1. PCI.get_dom0_access_status, one connection, sequential");
        println!("   native backend      {}", n_stats.line());
        println!("   exec backend        {}", e_stats.line());
        println!(
            "   ratio native/exec   {:.1}x calls per second",
            n_stats.per_second / e_stats.per_second
        );
        let host = pcipass::host::HostRoot::new(&demo);
        let engine = pcipass::domain::bootcfg::Dom0AccessEngine::new(
            Box::new(pcipass::domain::bootcfg::NativeBootConfig::new(
                host.clone(),
            )),
            host,
        );
        let addr: pcipass::domain::PciAddress = "0000:01:00.0".parse().unwrap();
        let n = if quick() { 1_000 } else { 200_000 };
        let t = Instant::now();
        for _ in 0..n {
            std::hint::black_box(engine.status(&addr).unwrap());
        }
        println!(
            "   in-process status computation: {:.2} us per call (cached views confirmed by the change watch, {n} calls)",
            t.elapsed().as_secs_f64() * 1e6 / n as f64
        );
    }

    if wanted("hyper") {
        // 2. Small and large calls vs plain hyper.
        let (mut hello_child, hello) = hello_server();
        let large = mock_host(dir.path(), "large");
        let large_state = dir.path().join("state-large");
        add_user(&large_state);
        let large_daemon = start(&large, &large_state, &[]);
        let (small, plain, small_seq, big_seq) = runtime.block_on(async {
            let small = status_load(native.addr, 32, secs(5.0)).await;
            let plain = load(hello, b"hello".to_vec(), 32, secs(5.0)).await;
            let small_seq = status_load(native.addr, 1, secs(2.0)).await;
            let ls = login(large_daemon.addr, "bench", "bench-secret").await;
            let big_seq = load(
                large_daemon.addr,
                xml_call("PCI.get_all_records", &[&ls]),
                1,
                secs(5.0),
            )
            .await;
            (small, plain, small_seq, big_seq)
        });
        println!("\n2. Keep-alive load, 32 connections (load generator on the same 2 cores)");
        println!("   plain hyper hello             {}", plain.line());
        println!("   PCI.get_dom0_access_status    {}", small.line());
        println!(
            "   ratio small call / hyper      {:.2} of plain hyper's requests/s",
            small.per_second / plain.per_second
        );
        println!("   sequential small call         {}", small_seq.line());
        println!(
            "   PCI.get_all_records (4096+)   {}  {} bytes",
            big_seq.line(),
            big_seq.bytes
        );
        println!(
            "   ratio large / small latency   {:.1}x (p50)",
            big_seq.p50.as_secs_f64() / small_seq.p50.as_secs_f64()
        );
        println!(
            "   daemon resident memory on the large host: {} KiB",
            rss_kib(large_daemon.child.id())
        );
        drop(large_daemon);
        let _ = hello_child.kill();
        let _ = hello_child.wait();
    }

    if wanted("scale") {
        // 3. Scale.
        println!("\n3. Scale (start-up sync in-process on a fresh store; calls over HTTP)");
        println!(
            "   {:>9} {:>12} {:>16} {:>14} {:>12}",
            "functions", "sync ms", "get_all_records", "bytes", "RSS KiB"
        );
        for n in [256usize, 1024, 4096] {
            let root = mock_host(dir.path(), &format!("scale-{n}"));
            let functions = std::fs::read_dir(root.join("sys/bus/pci/devices"))
                .unwrap()
                .count();
            let state = dir.path().join(format!("state-scale-{n}"));
            let settings = pcipass::config::Settings {
                root: Some(root.clone()),
                state_dir: Some(state.clone()),
                ..Default::default()
            };
            let t = Instant::now();
            drop(pcipass::daemon::build_context(&settings).unwrap());
            let sync_ms = t.elapsed().as_secs_f64() * 1e3;
            add_user(&state);
            let d = start(&root, &state, &[]);
            let stats = runtime.block_on(async {
                let s = login(d.addr, "bench", "bench-secret").await;
                load(d.addr, xml_call("PCI.get_all_records", &[&s]), 1, secs(3.0)).await
            });
            println!(
                "   {:>9} {:>12.1} {:>13.2} ms {:>14} {:>12}",
                functions,
                sync_ms,
                stats.p50.as_secs_f64() * 1e3,
                stats.bytes,
                rss_kib(d.child.id())
            );
        }
    }

    if wanted("events") {
        // 4. event.from with 100 watchers.
        let latency = runtime.block_on(async {
        let s = login(native.addr, "bench", "bench-secret").await;
        let token = {
            let reply = post(&mut connect(native.addr).await, &xml_call("event.inject", &[&s, "pool", &first_ref(native.addr, &s, "pool.get_all").await])).await;
            value_of(&reply)
        };
        let body = Arc::new(format!(
            "<?xml version=\"1.0\"?><methodCall><methodName>event.from</methodName><params><param><value>{s}</value></param><param><value><array><data><value>pgpu</value></data></array></value></param><param><value>{token}</value></param><param><value><double>30</double></value></param></params></methodCall>"
        ).into_bytes());
        let mut watchers = Vec::new();
        for _ in 0..100 {
            let mut sender = connect(native.addr).await;
            let body = body.clone();
            watchers.push(tokio::spawn(async move {
                let reply = post(&mut sender, &body).await;
                (Instant::now(), String::from_utf8_lossy(&reply).contains("dom0_access"))
            }));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let gpu = {
            let reply = post(&mut connect(native.addr).await, &xml_call("PGPU.get_all_records", &[&s])).await;
            let text = String::from_utf8_lossy(&reply).into_owned();
            text.split("<name>PCI</name><value>").nth(1).and_then(|x| x.split('<').next()).unwrap_or_default().to_owned()
        };
        let edit = Instant::now();
        post(&mut connect(native.addr).await, &xml_call("PCI.disable_dom0_access", &[&s, &gpu])).await;
        let mut slowest = Duration::ZERO;
        let mut notified = 0;
        for w in watchers {
            let (at, saw) = w.await.unwrap();
            notified += usize::from(saw);
            slowest = slowest.max(at.saturating_duration_since(edit));
        }
        (slowest, notified)
    });
        println!(
            "\n4. event.from, 100 watchers: edit to last watcher notified {:.2} ms ({} of 100 saw the PGPU change)",
            latency.0.as_secs_f64() * 1e3,
            latency.1
        );
    }
    drop(native);
}
