//! The daemon's main loop: [`run`] takes the state directory's lock,
//! builds the context, starts the background work and serves the HTTP
//! listeners until SIGTERM; [`DaemonError`] says why it could not start.
//! Each part it puts together has its own module: `wiring` (the lock, the
//! store, host and `Context`, `--check-config`), `background` (session
//! expiry, task collection, the hand-edit watcher), `systemd` (readiness,
//! watchdog, signals, SIGHUP reload), `tls` and `demo`.

mod background;
mod demo;
mod systemd;
mod tls;
mod wiring;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{ConfigError, Settings};
use crate::wire::dispatch::Dispatcher;
use crate::wire::http::{self, HttpConfig};

pub use wiring::{build_context, check_config, lock_state};

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
        Some(demo::demo_credentials(&settings)?)
    } else {
        None
    };
    let tls = tls::tls_config(&settings)?;
    // Only the demo needs its port known before serve binds it; elsewhere
    // serve binds port 0 itself (no window for another process).
    let listen = if settings.demo {
        demo::resolve_port_zero(&listen)?
    } else {
        listen
    };
    let unix = settings.unix_sockets();
    let before: Vec<_> = unix.iter().map(|p| demo::file_identity(p)).collect();
    let fingerprint = tls.as_ref().map(|t| t.fingerprint.clone());
    // The defaults live in one place, `HttpConfig::default`.
    let defaults = HttpConfig::default();
    let http_config = HttpConfig {
        tls: tls.map(|t| t.config),
        listen: listen.clone(),
        unix: unix.clone(),
        unix_group: settings.unix_group.clone(),
        max_body_bytes: settings.max_body_bytes.unwrap_or(defaults.max_body_bytes),
        header_timeout: Settings::seconds(
            settings.header_timeout,
            defaults.header_timeout.as_secs(),
        ),
        body_timeout: Settings::seconds(settings.body_timeout, defaults.body_timeout.as_secs()),
        max_connections: settings.max_connections.unwrap_or(defaults.max_connections),
        max_connections_per_address: settings
            .max_connections_per_address
            .unwrap_or(defaults.max_connections_per_address),
        max_unix_connections: settings
            .max_unix_connections
            .unwrap_or(defaults.max_unix_connections),
        write_timeout: Settings::seconds(settings.write_timeout, defaults.write_timeout.as_secs()),
        body_budget_bytes: settings
            .body_budget_bytes
            .unwrap_or(defaults.body_budget_bytes),
        max_unproven_connections: settings
            .max_unproven_connections
            .unwrap_or(defaults.max_unproven_connections),
    };
    background::spawn_background(
        ctx.clone(),
        Duration::from_millis(settings.watch_interval_ms.unwrap_or(500)),
    );
    systemd::spawn_reload(ctx.clone());
    systemd::spawn_watchdog();
    let summary = format!(
        "pcipassd {} serving: boot flow {}, auth {}, listeners {}, state directory {}",
        env!("CARGO_PKG_VERSION"),
        ctx.config.boot_flow,
        ctx.auth().source(),
        wiring::listeners_text(&listen, &unix),
        settings.state_dir().display(),
    );
    let server = tokio::spawn(http::serve(
        http_config,
        Arc::new(Dispatcher::new(ctx)),
        systemd::shutdown_signal(),
        move || {
            tracing::info!("{summary}");
            systemd::notify_systemd(&[
                sd_notify::NotifyState::Ready,
                sd_notify::NotifyState::Status("serving"),
            ]);
        },
    ));
    if let Some((user, password)) = demo {
        // Say where to connect only once it can be connected to.
        demo::announce(
            &server,
            &user,
            &password,
            &listen,
            &unix,
            &before,
            fingerprint.as_ref(),
        )
        .await;
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
    fn state_errors_name_the_path_once() {
        let p = Path::new("/srv/state");
        assert_eq!(state_at(p)("boom").to_string(), "state: /srv/state: boom");
        assert_eq!(
            state_at(p)("open /srv/state: boom").to_string(),
            "state: open /srv/state: boom"
        );
    }
}
