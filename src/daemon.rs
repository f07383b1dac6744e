//! The daemon's start-up and main loop: state directory, store, host and
//! pool objects, device sync, background work (session expiry, task
//! collection, the hand-edit watcher) and the HTTP listeners, until SIGTERM.

use std::sync::Arc;
use std::time::Duration;

use crate::api::context::{ApiConfig, Context};
use crate::api::{derived, event::Registrations, host, session, sync, task};
use crate::config::{BootBackend, ConfigError, Settings};
use crate::domain::bootcfg::{BootConfig, ExecBootConfig, NativeBootConfig};
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
    /// The state directory or database is unusable.
    #[error("state: {0}")]
    State(String),
    /// The listeners failed.
    #[error("http: {0}")]
    Http(String),
    /// Another pcipassd holds the state directory.
    #[error(transparent)]
    Locked(#[from] crate::store::lock::LockError),
}

fn state_err(e: impl std::fmt::Display) -> DaemonError {
    DaemonError::State(e.to_string())
}

/// Build the shared state: open the store, create this host's objects,
/// notice a reboot since the last start (see [`host::check_boot`]),
/// synchronise the devices and write `host.other_config:agent_start_time`.
pub fn build_context(settings: &Settings) -> Result<Arc<Context>, DaemonError> {
    let state_dir = settings.state_dir();
    crate::store::prepare_state_dir(&state_dir).map_err(state_err)?;
    let host_root = HostRoot::new(settings.root());
    if settings.demo && !host_root.root().exists() {
        crate::host::mock::create(host_root.root(), crate::host::mock::Profile::Demo)
            .map_err(state_err)?;
        tracing::info!(root = %host_root.root().display(), "created the demo mock host");
    }
    let store = Arc::new(Store::open(&state_dir.join("pcipass.db")).map_err(state_err)?);
    let boot: Box<dyn BootConfig> = match settings.boot_backend.unwrap_or(BootBackend::Native) {
        BootBackend::Native => Box::new(NativeBootConfig::new(host_root.clone())),
        BootBackend::Exec => {
            let program = settings
                .xen_cmdline
                .clone()
                .unwrap_or_else(|| "/opt/xensource/libexec/xen-cmdline".into());
            Box::new(ExecBootConfig::new(program, host_root.clone()))
        }
    };
    let dom0 = Arc::new(HostDom0::new(host_root.clone(), boot));
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
        host::bootstrap(&store, &about, &hostname, &address).map_err(state_err)?;
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
        state_dir,
    };
    let ctx = Arc::new(Context {
        store,
        host: dom0,
        config,
        host_ref,
        pool_ref,
        host_lock: tokio::sync::Mutex::new(()),
        login_throttle: session::LoginThrottle::default(),
        event_registrations: Registrations::default(),
        record_snapshots: Default::default(),
        task_result_encoder: encode_task_result,
    });
    // A reboot nobody asked pcipassd for ends every session, as xapi's.
    match host::check_boot(&ctx).map_err(state_err)? {
        host::BootCheck::FirstStart => tracing::info!("first start on this host: boot id stored"),
        host::BootCheck::SameBoot
        | host::BootCheck::NewBoot { .. }
        | host::BootCheck::Unreadable => {}
    }
    sync::synchronise(&ctx).map_err(state_err)?;
    host::record_agent_start(&ctx).map_err(state_err)?;
    // Say at once what the next boot will do that a person should know
    // (a hide value the kernel refuses, a boot disk hidden by hand).
    ctx.host.report_at_start();
    Ok(ctx)
}

/// Create the demo user when the users file is empty; returns the
/// password to print (the stored one when it exists).
fn demo_credentials(settings: &Settings) -> Result<(String, String), DaemonError> {
    let state_dir = settings.state_dir();
    let mut users = UsersFile::load(&state_dir).map_err(state_err)?;
    let password_file = state_dir.join("demo-password");
    if users.is_empty() {
        let password = crate::store::users::random_password();
        users
            .add("root", crate::api::Role::PoolAdmin, &password)
            .map_err(state_err)?;
        crate::store::write_private(&password_file, password.as_bytes()).map_err(state_err)?;
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
                match session::expire_idle(&ctx) {
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
}

/// The TLS configuration for the TCP listeners, if TLS is asked for.
fn tls_config(settings: &Settings) -> Result<Option<Arc<rustls::ServerConfig>>, DaemonError> {
    let material = match (
        &settings.tls_cert,
        &settings.tls_key,
        settings.tls_self_signed,
    ) {
        (Some(cert), Some(key), _) => crate::store::tls::load(cert, key).map_err(state_err)?,
        (Some(_), None, _) | (None, Some(_), _) => {
            return Err(ConfigError::Invalid("--tls-cert and --tls-key go together".into()).into());
        }
        (None, None, true) => {
            let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
            crate::store::tls::self_signed(&settings.state_dir(), &names).map_err(state_err)?
        }
        (None, None, false) => return Ok(None),
    };
    if let Some(fingerprint) = crate::wire::tls::fingerprint(&material.cert_pem) {
        println!("tls certificate sha256 fingerprint {fingerprint}");
    }
    let config = crate::wire::tls::server_config(
        &material.cert_pem,
        &material.key_pem,
        &material.cert_path.display().to_string(),
    )
    .map_err(state_err)?;
    Ok(Some(config))
}

/// Make the state directory and take its one-daemon lock (see
/// [`crate::store::lock`]); the caller keeps the returned lock for the life
/// of the process. Called before the database or any socket is touched, so
/// a second daemon on the same directory leaves the first one's alone.
pub fn lock_state(settings: &Settings) -> Result<crate::store::lock::StateLock, DaemonError> {
    let state_dir = settings.state_dir();
    crate::store::prepare_state_dir(&state_dir).map_err(state_err)?;
    Ok(crate::store::lock::lock_state_dir(&state_dir)?)
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
    if settings.demo {
        let (user, password) = demo_credentials(&settings)?;
        for addr in &listen {
            println!("demo: url http://{addr}/ user {user} password {password}");
        }
    }
    let tls = tls_config(&settings)?;
    let http_config = HttpConfig {
        tls,
        listen,
        unix: settings.unix_sockets(),
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
    http::serve(
        http_config,
        Arc::new(Dispatcher::new(ctx)),
        shutdown_signal(),
    )
    .await
    .map_err(|e| DaemonError::Http(e.to_string()))?;
    tracing::info!("stopped");
    drop(state_lock);
    Ok(())
}
