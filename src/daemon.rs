//! The daemon's start-up and main loop: state directory, store, host and
//! pool objects, device sync, background work (session expiry, task
//! collection, the hand-edit watcher) and the HTTP listeners, until SIGTERM.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::api::context::{ApiConfig, Auth, Context};
use crate::api::login_throttle::LoginThrottle;
use crate::api::{derived, event::Registrations, host, session_table, sync, task};
use crate::config::{AuthMode, BootBackend, ConfigError, Settings};
use crate::domain::bootcfg::{self, BootConfig, FlowOptions, InitramfsUpdate};
use crate::domain::bootflow::{self, BootFlow, Detected, FlowError};
use crate::domain::service::{Dom0Host, HostDom0};
use crate::host::HostRoot;
use crate::store::{Store, users::UsersFile};
use crate::wire::dispatch::{Dispatcher, encode_task_result};
use crate::wire::http::{self, HttpConfig};

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Bad settings.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The state directory, database or another file is unusable; the
    /// text names the path.
    #[error("state: {0}")]
    State(String),
    /// `--root` names no directory.
    #[error("--root {path}: {reason}")]
    Root {
        /// The path given.
        path: String,
        /// Why it is unusable.
        reason: String,
    },
    /// The listeners failed.
    #[error("http: {0}")]
    Http(String),
    /// Another pcipassd holds the state directory.
    #[error(transparent)]
    Locked(#[from] crate::store::lock::LockError),
}

/// A state error about `path`: the message names it (once).
fn state_at<E: std::fmt::Display>(path: &Path) -> impl Fn(E) -> DaemonError + '_ {
    move |e| {
        let text = e.to_string();
        let shown = path.display().to_string();
        if text.contains(&shown) {
            DaemonError::State(text)
        } else {
            DaemonError::State(format!("{shown}: {text}"))
        }
    }
}

/// Refuse a `--root` that is not a directory (a typo would otherwise
/// serve an empty host). A demo root is created before this is asked.
fn check_root(root: &Path) -> Result<(), DaemonError> {
    let reason = match std::fs::metadata(root) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => "not a directory".to_owned(),
        Err(e) => e.to_string(),
    };
    Err(DaemonError::Root {
        path: root.display().to_string(),
        reason,
    })
}

/// Build the shared state: open the store, create this host's objects,
/// notice a reboot since the last start (see [`host::check_boot`]),
/// synchronise the devices and write `host.other_config:agent_start_time`.
pub fn build_context(settings: &Settings) -> Result<Arc<Context>, DaemonError> {
    let state_dir = settings.state_dir();
    crate::store::prepare_state_dir(&state_dir).map_err(state_at(&state_dir))?;
    let host_root = HostRoot::new(settings.root());
    if settings.demo && !host_root.root().exists() {
        crate::host::mock::create(host_root.root(), crate::host::mock::Profile::Demo)
            .map_err(state_at(host_root.root()))?;
        tracing::info!(root = %host_root.root().display(), "created the demo mock host");
    }
    check_root(host_root.root())?;
    let db = state_dir.join("pcipass.db");
    let store = Arc::new(Store::open(&db).map_err(state_at(&db))?);
    let found = boot_flow(settings, &host_root)?;
    let boot = boot_config(settings, &host_root, &found);
    let dom0 = HostDom0::new(host_root.clone(), boot).with_initramfs(InitramfsUpdate::choose(
        &host_root,
        settings.initramfs_command.as_deref(),
    ));
    dom0.finish_interrupted_edit();
    let dom0 = Arc::new(dom0);
    let about = dom0.describe();
    tracing::info!(
        product = about.software("product_brand"),
        version = about.software("product_version"),
        source = ?about.source,
        "host described"
    );
    let hostname = about
        .hostname
        .clone()
        .or_else(|| {
            host_root
                .read_to_string("etc/hostname")
                .map(|h| h.trim().to_owned())
                .ok()
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    let address = settings
        .listen_addrs()?
        .first()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    let (host_ref, pool_ref) =
        host::bootstrap(&store, &about, &hostname, &address).map_err(state_at(&db))?;
    let config = ApiConfig {
        session_idle_timeout: Settings::seconds(settings.session_idle_timeout, 24 * 3600),
        max_sessions_per_user: settings.max_sessions_per_user.unwrap_or(500),
        task_retention: Settings::seconds(settings.task_retention, 65 * 60),
        reboot_command: settings
            .reboot_command
            .as_deref()
            .unwrap_or("systemctl reboot")
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
        state_dir: state_dir.clone(),
        boot_flow: found.flow.to_string(),
    };
    let auth = auth_of(settings)?;
    log_auth(&auth, &state_dir);
    let ctx = Arc::new(Context {
        store,
        host: dom0,
        config,
        host_ref,
        pool_ref,
        host_lock: tokio::sync::Mutex::new(()),
        login_throttle: LoginThrottle::default(),
        event_registrations: Registrations::default(),
        record_snapshots: Default::default(),
        task_result_encoder: encode_task_result,
        auth: std::sync::RwLock::new(auth),
    });
    // A reboot nobody asked pcipassd for ends every session, as xapi's.
    match host::check_boot(&ctx).map_err(state_at(&db))? {
        host::BootCheck::FirstStart => tracing::info!("first start on this host: boot id stored"),
        host::BootCheck::SameBoot
        | host::BootCheck::NewBoot { .. }
        | host::BootCheck::Unreadable => {}
    }
    sync::synchronise(&ctx).map_err(state_at(&db))?;
    host::record_agent_start(&ctx).map_err(state_at(&db))?;
    // Say at once what the next boot will do that a person should know
    // (a hide value the kernel refuses, a boot disk hidden by hand).
    ctx.host.report_at_start();
    Ok(ctx)
}

/// `--check-config`: whether the settings are usable, without writing
/// anything: the values, listen addresses, role groups and TLS files, the
/// root and the boot flow found there. The line to print when they are.
pub fn check_config(settings: &Settings) -> Result<String, DaemonError> {
    let listen = settings.listen_addrs()?;
    let auth = auth_of(settings)?;
    tls_files(settings)?;
    let host_root = HostRoot::new(settings.root());
    if !settings.demo {
        check_root(host_root.root())?;
    }
    let choice = settings.flow_choice();
    let flow = match bootflow::detect(choice, &bootflow::gather(&host_root)) {
        Ok(found) => format!("{} ({})", found.flow, found.reason),
        Err(FlowError::Nothing) if settings.demo => "the demo host's".into(),
        Err(FlowError::Nothing) => format!("none yet ({})", FlowError::Nothing),
        Err(e) => {
            return Err(DaemonError::State(format!(
                "--root {}: {e}",
                host_root.root().display()
            )));
        }
    };
    Ok(format!(
        "configuration OK: root {}, boot flow {flow}, auth {}, listeners {}, state directory {}",
        host_root.root().display(),
        auth.source(),
        listeners_text(&listen, &settings.unix_sockets()),
        settings.state_dir().display(),
    ))
}

/// The listeners as one line's worth of text, for people.
fn listeners_text(listen: &[std::net::SocketAddr], unix: &[PathBuf]) -> String {
    listen
        .iter()
        .map(ToString::to_string)
        .chain(unix.iter().map(|p| format!("unix:{}", p.display())))
        .collect::<Vec<_>>()
        .join(" ")
}

/// How logins are checked, from `--auth` and `--role-group`.
fn auth_of(settings: &Settings) -> Result<Auth, DaemonError> {
    Ok(match settings.auth_mode() {
        AuthMode::Users => Auth::Users,
        AuthMode::Pam => Auth::Pam {
            service: crate::store::pam::SERVICE.to_owned(),
            role_groups: settings.role_groups()?,
        },
    })
}

/// Say how logins are checked.
fn log_auth(auth: &Auth, state_dir: &Path) {
    match auth {
        Auth::Users => tracing::info!(
            users_file = %state_dir.join("users").display(),
            "logins: auth users (the users file, read at every login)"
        ),
        Auth::Pam {
            service,
            role_groups,
        } => tracing::info!(
            service = %service,
            role_groups = %role_groups_text(role_groups),
            "logins: auth pam (root is pool-admin; other users need a --role-group)"
        ),
    }
}

fn role_groups_text(role_groups: &[(String, crate::api::Role)]) -> String {
    role_groups
        .iter()
        .map(|(g, r)| format!("{g}={r}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The boot configuration of the flow found, opened in the one place
/// flows are ([`bootcfg::open`]).
fn boot_config(settings: &Settings, host_root: &HostRoot, found: &Detected) -> Box<dyn BootConfig> {
    let exec = settings.boot_backend == Some(BootBackend::Exec);
    bootcfg::open(
        host_root,
        found,
        &FlowOptions {
            grub_mkconfig_command: settings.grub_mkconfig_command.clone(),
            exec_program: exec.then(|| {
                settings
                    .xen_cmdline
                    .clone()
                    .unwrap_or_else(|| "/opt/xensource/libexec/xen-cmdline".into())
            }),
        },
    )
}

/// The boot flow of `--boot-flow` on this root, logged with the reason.
/// A root that holds no boot configuration at all keeps the grub.cfg
/// flow (every call then says what is missing); an ambiguous one, or a
/// flow whose file is missing, stops the start.
fn boot_flow(settings: &Settings, host_root: &HostRoot) -> Result<Detected, DaemonError> {
    let choice = settings.flow_choice();
    match bootflow::detect(choice, &bootflow::gather(host_root)) {
        Ok(found) => {
            tracing::info!(
                flow = %found.flow,
                reason = %found.reason,
                edits = match found.flow {
                    BootFlow::XcpNg => "grub.cfg, in place",
                    BootFlow::GrubMkconfig => "the generator's input, then grub.cfg is regenerated",
                    BootFlow::XenEfi => found.xen_cfg.as_deref().unwrap_or("xen.cfg"),
                },
                "boot flow"
            );
            Ok(found)
        }
        Err(FlowError::Nothing) => {
            tracing::warn!("{}; serving the grub.cfg flow", FlowError::Nothing);
            Ok(Detected {
                flow: BootFlow::XcpNg,
                xen_cfg: None,
                reason: FlowError::Nothing.to_string(),
            })
        }
        Err(e) => Err(DaemonError::State(format!(
            "--root {}: {e}",
            host_root.root().display()
        ))),
    }
}

/// Create the demo user when the users file is empty; returns the
/// password to print (the stored one when it exists).
fn demo_credentials(settings: &Settings) -> Result<(String, String), DaemonError> {
    let state_dir = settings.state_dir();
    let mut users = UsersFile::load(&state_dir).map_err(state_at(&state_dir))?;
    let password_file = state_dir.join("demo-password");
    if users.is_empty() {
        let password = crate::store::users::random_password();
        users
            .add("root", crate::api::Role::PoolAdmin, &password)
            .map_err(state_at(&state_dir))?;
        crate::store::write_private(&password_file, password.as_bytes())
            .map_err(state_at(&password_file))?;
    }
    let password =
        std::fs::read_to_string(&password_file).unwrap_or_else(|_| "(set by user-add)".into());
    Ok(("root".into(), password.trim().to_owned()))
}

fn spawn_background(ctx: Arc<Context>, watch_interval: Duration) {
    let housekeeping = ctx.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            let ctx = housekeeping.clone();
            let _ = tokio::task::spawn_blocking(move || {
                match session_table::expire_idle(&ctx) {
                    Ok(n) if n > 0 => tracing::info!(sessions = n, "expired idle sessions"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!("session expiry failed: {e}"),
                }
                match task::collect_finished(&ctx) {
                    Ok(n) if n > 0 => tracing::info!(tasks = n, "collected finished tasks"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!("task collection failed: {e}"),
                }
            })
            .await;
        }
    });
    // Hand edits of grub.cfg or a changed /proc/cmdline must show up in
    // PGPU.dom0_access (and as events) without anyone reading the PGPU.
    tokio::spawn(async move {
        let mut last = ctx.domain(|h| h.changes()).await.ok();
        let mut tick = tokio::time::interval(watch_interval);
        loop {
            tick.tick().await;
            let now = ctx.domain(|h| h.changes()).await.ok();
            if now != last {
                last = now;
                tracing::info!(
                    "boot configuration or /proc/cmdline changed; refreshing PGPU dom0 access"
                );
                let work = ctx.clone();
                let _ = tokio::task::spawn_blocking(move || derived::refresh_all(&work)).await;
            }
        }
    });
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: finishing in-flight calls"),
        _ = int.recv() => tracing::info!("SIGINT: finishing in-flight calls"),
    }
    notify_systemd(&[sd_notify::NotifyState::Stopping]);
}

/// Tell systemd (`Type=notify`) about the daemon's state; nothing when not
/// started by systemd (no `$NOTIFY_SOCKET`).
fn notify_systemd(states: &[sd_notify::NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!("cannot notify systemd: {e}");
    }
}

/// With `WatchdogSec=` (systemd sets `$WATCHDOG_USEC`), send `WATCHDOG=1`
/// at half the interval, each time after a no-op has gone through the
/// blocking pool too: a stuck runtime or a starved pool (where every file
/// and boot-configuration call runs) misses the deadline and systemd
/// restarts the daemon.
fn spawn_watchdog() {
    let mut usec = 0;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return;
    }
    let every = Duration::from_micros(usec / 2);
    tracing::info!(
        interval_ms = every.as_millis() as u64,
        "systemd watchdog: pinging"
    );
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            if tokio::task::spawn_blocking(|| ()).await.is_ok() {
                notify_systemd(&[sd_notify::NotifyState::Watchdog]);
            }
        }
    });
}

/// Re-read the configuration at every SIGHUP (`systemctl reload
/// pcipassd`): the login settings (`--auth`, `--role-group`) take effect
/// for the next login; the users file needs no reload (it is read at
/// every login); every other setting needs a restart.
fn spawn_reload(ctx: Arc<Context>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot handle SIGHUP: the configuration is not reloadable");
        return;
    };
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            notify_systemd(&[sd_notify::NotifyState::Reloading]);
            let reloaded =
                Settings::load(<Settings as clap::Parser>::parse_from(std::env::args_os()))
                    .map_err(DaemonError::from)
                    .and_then(|fresh| auth_of(&fresh).map(|auth| (fresh, auth)));
            match reloaded {
                Ok((fresh, auth)) => {
                    tracing::info!("SIGHUP: configuration re-read; logins follow it from now on");
                    log_auth(&auth, &fresh.state_dir());
                    ctx.set_auth(auth);
                }
                Err(e) => {
                    tracing::error!("SIGHUP: configuration not reloaded, the old one stays: {e}");
                }
            }
            notify_systemd(&[sd_notify::NotifyState::Ready]);
        }
    });
}

/// The certificate and key `--tls-cert`/`--tls-key` name, read and
/// checked; `None` when neither is given. One without the other is an
/// error.
fn tls_files(settings: &Settings) -> Result<Option<crate::store::tls::TlsMaterial>, DaemonError> {
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
struct Tls {
    config: Arc<rustls::ServerConfig>,
    /// The certificate's SHA-256 fingerprint, for `pcipass --fingerprint`.
    fingerprint: Option<String>,
}

/// The TLS configuration for the TCP listeners, if TLS is asked for.
fn tls_config(settings: &Settings) -> Result<Option<Tls>, DaemonError> {
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

/// Make the state directory and take its one-daemon lock (see
/// [`crate::store::lock`]); the caller keeps the returned lock for the life
/// of the process. Called before the database or any socket is touched, so
/// a second daemon on the same directory leaves the first one's alone.
pub fn lock_state(settings: &Settings) -> Result<crate::store::lock::StateLock, DaemonError> {
    let state_dir = settings.state_dir();
    crate::store::prepare_state_dir(&state_dir).map_err(state_at(&state_dir))?;
    Ok(crate::store::lock::lock_state_dir(&state_dir)?)
}

/// Resolve port 0 to a free port, so that the demo lines can name the
/// real address, which [`http::serve`] then binds (a port taken in between
/// makes `serve` fail with the address named; nothing wrong is printed).
fn resolve_port_zero(
    listen: &[std::net::SocketAddr],
) -> Result<Vec<std::net::SocketAddr>, DaemonError> {
    listen
        .iter()
        .map(|addr| {
            if addr.port() != 0 {
                return Ok(*addr);
            }
            std::net::TcpListener::bind(addr)
                .and_then(|l| l.local_addr())
                .map_err(|e| DaemonError::Http(format!("cannot listen on {addr}: {e}")))
        })
        .collect()
}

/// The identity of the file at `path`, if any: device, inode and change
/// time (an inode number freed by removing a stale socket may come back).
fn file_identity(path: &Path) -> Option<(u64, u64, i64, i64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino(), m.ctime(), m.ctime_nsec()))
}

/// True once every Unix socket in `sockets` is a new file (not the one
/// there before, `before`) that accepts connections. [`http::serve`]
/// binds its TCP listeners before its Unix sockets, so then all are bound.
fn sockets_ready(sockets: &[PathBuf], before: &[Option<(u64, u64, i64, i64)>]) -> bool {
    sockets.iter().zip(before).all(|(path, old)| {
        let now = file_identity(path);
        now.is_some() && now != *old && std::os::unix::net::UnixStream::connect(path).is_ok()
    })
}

/// `text` quoted for a POSIX shell when it needs it.
fn shell_quote(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-:=+@%,".contains(c));
    if plain {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

/// The `pcipass` to name in the demo lines: the one built next to this
/// program when there is one, else `pcipass` from `$PATH`.
fn pcipass_program() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("pcipass")))
        .filter(|p| p.is_file())
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "pcipass".to_owned())
}

/// The lines `--demo` prints once the listeners are bound: the URL, user
/// and password, and the `pcipass` command lines that reach this daemon.
fn demo_lines(
    user: &str,
    password: &str,
    listen: &[std::net::SocketAddr],
    sockets: &[PathBuf],
    tls: Option<&Option<String>>,
) -> Vec<String> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let program = shell_quote(&pcipass_program());
    let mut lines = Vec::new();
    for addr in listen {
        lines.push(format!(
            "demo: url {scheme}://{addr}/ user {user} password {password}"
        ));
    }
    for addr in listen {
        let security = match tls {
            None => "--nossl".to_owned(),
            Some(Some(fingerprint)) => format!("--fingerprint {fingerprint}"),
            Some(None) => "--no-verify".to_owned(),
        };
        lines.push(format!(
            "demo: {program} -s {} -p {} {security} -u {} -pw {} pci-list",
            shell_quote(&addr.ip().to_string()),
            addr.port(),
            shell_quote(user),
            shell_quote(password),
        ));
    }
    for path in sockets {
        let path = std::path::absolute(path).unwrap_or_else(|_| path.clone());
        lines.push(format!(
            "demo: PCIPASS_SOCKET={} {program} -u {} -pw {} pci-list",
            shell_quote(&path.display().to_string()),
            shell_quote(user),
            shell_quote(password),
        ));
    }
    lines
}

/// Run the daemon until SIGTERM.
pub async fn run(settings: Settings) -> Result<(), DaemonError> {
    let listen = settings.listen_addrs()?;
    // Held until this function returns, i.e. for the life of the daemon.
    let state_lock = lock_state(&settings)?;
    tracing::info!(lock = %state_lock.path().display(), "state directory locked");
    let build = settings.clone();
    let ctx = tokio::task::spawn_blocking(move || build_context(&build))
        .await
        .map_err(|e| DaemonError::State(e.to_string()))??;
    let demo = if settings.demo {
        Some(demo_credentials(&settings)?)
    } else {
        None
    };
    let tls = tls_config(&settings)?;
    // Only the demo needs its port known before serve binds it; elsewhere
    // serve binds port 0 itself (no window for another process).
    let listen = if settings.demo {
        resolve_port_zero(&listen)?
    } else {
        listen
    };
    let unix = settings.unix_sockets();
    let before: Vec<_> = unix.iter().map(|p| file_identity(p)).collect();
    let fingerprint = tls.as_ref().map(|t| t.fingerprint.clone());
    let http_config = HttpConfig {
        tls: tls.map(|t| t.config),
        listen: listen.clone(),
        unix: unix.clone(),
        unix_group: settings.unix_group.clone(),
        max_body_bytes: settings.max_body_bytes.unwrap_or(16 * 1024 * 1024),
        header_timeout: Settings::seconds(settings.header_timeout, 10),
        body_timeout: Settings::seconds(settings.body_timeout, 30),
        max_connections: settings.max_connections.unwrap_or(1024),
        max_connections_per_address: settings.max_connections_per_address.unwrap_or(128),
        max_unix_connections: settings.max_unix_connections.unwrap_or(64),
        write_timeout: Settings::seconds(settings.write_timeout, 30),
    };
    spawn_background(
        ctx.clone(),
        Duration::from_millis(settings.watch_interval_ms.unwrap_or(500)),
    );
    spawn_reload(ctx.clone());
    spawn_watchdog();
    let summary = format!(
        "pcipassd {} serving: boot flow {}, auth {}, listeners {}, state directory {}",
        env!("CARGO_PKG_VERSION"),
        ctx.config.boot_flow,
        ctx.auth().source(),
        listeners_text(&listen, &unix),
        settings.state_dir().display(),
    );
    let server = tokio::spawn(http::serve(
        http_config,
        Arc::new(Dispatcher::new(ctx)),
        shutdown_signal(),
        move || {
            tracing::info!("{summary}");
            notify_systemd(&[
                sd_notify::NotifyState::Ready,
                sd_notify::NotifyState::Status("serving"),
            ]);
        },
    ));
    if let Some((user, password)) = demo {
        // Say where to connect only once it can be connected to.
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        loop {
            tick.tick().await;
            if server.is_finished() {
                break;
            }
            let (sockets, old) = (unix.clone(), before.clone());
            let ready = tokio::task::spawn_blocking(move || sockets_ready(&sockets, &old))
                .await
                .unwrap_or(false);
            if ready {
                for line in demo_lines(&user, &password, &listen, &unix, fingerprint.as_ref()) {
                    println!("{line}");
                }
                break;
            }
        }
    }
    server
        .await
        .map_err(|e| DaemonError::Http(e.to_string()))?
        .map_err(|e| DaemonError::Http(e.to_string()))?;
    tracing::info!("stopped");
    drop(state_lock);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_lines_name_the_scheme_and_the_commands() {
        let listen = vec!["127.0.0.1:4443".parse().unwrap()];
        let sockets = vec![PathBuf::from("/tmp/d s/xapi.sock")];
        let https = demo_lines("root", "pw", &listen, &sockets, Some(&Some("AB:CD".into())));
        assert_eq!(
            https[0],
            "demo: url https://127.0.0.1:4443/ user root password pw"
        );
        assert!(
            https[1].ends_with("-s 127.0.0.1 -p 4443 --fingerprint AB:CD -u root -pw pw pci-list")
        );
        assert!(https[2].starts_with("demo: PCIPASS_SOCKET='/tmp/d s/xapi.sock' "));
        let http = demo_lines("root", "pw", &listen, &sockets, None);
        assert!(http[0].starts_with("demo: url http://127.0.0.1:4443/"));
        assert!(http[1].contains(" --nossl "));
    }

    #[test]
    fn a_missing_root_is_an_error_naming_it() {
        let e = check_root(Path::new("/no/such/root"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/no/such/root"), "{e}");
    }

    #[test]
    fn state_errors_name_the_path_once() {
        let p = Path::new("/srv/state");
        assert_eq!(state_at(p)("boom").to_string(), "state: /srv/state: boom");
        assert_eq!(
            state_at(p)("open /srv/state: boom").to_string(),
            "state: open /srv/state: boom"
        );
    }
}
