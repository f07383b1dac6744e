//! The daemon's side of systemd and of signals: `READY=1`, `RELOADING=1`,
//! `STOPPING=1` and the watchdog's pings (`Type=notify`), SIGTERM and
//! SIGINT to stop, SIGHUP to re-read the login settings.

use std::sync::Arc;
use std::time::Duration;

use super::DaemonError;
use super::wiring::{auth_of, log_auth};
use crate::api::context::Context;
use crate::config::Settings;

/// Resolves at the first SIGTERM or SIGINT, after telling systemd
/// `STOPPING=1`: the listeners' signal to finish in-flight calls and stop.
pub(super) async fn shutdown_signal() {
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
pub(super) fn notify_systemd(states: &[sd_notify::NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!("cannot notify systemd: {e}");
    }
}

/// While this lives, start-up may take longer than `TimeoutStartSec=`:
/// every [`StartExtended::EVERY`] systemd is told it needs
/// [`StartExtended::MORE`] more (`EXTEND_TIMEOUT_USEC=`), with why as
/// `STATUS=`. A start that undoes an edit a crash or a stop cut short
/// rebuilds the initramfs first, which takes minutes on some hosts; killed
/// at the start timeout, it would be cut short again at every restart.
pub(super) struct StartExtended {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StartExtended {
    /// How often the extension is renewed; nothing is sent when start-up
    /// is done sooner.
    const EVERY: Duration = Duration::from_secs(10);
    /// How much longer each renewal allows.
    const MORE: Duration = Duration::from_secs(60);

    /// Extend start-up while the value lives, saying `why`.
    pub(super) fn new(why: &'static str) -> StartExtended {
        if std::env::var_os("NOTIFY_SOCKET").is_none() {
            return StartExtended {
                stop: None,
                thread: None,
            };
        }
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let more = u32::try_from(StartExtended::MORE.as_micros()).unwrap_or(u32::MAX);
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(StartExtended::EVERY)
            {
                notify_systemd(&[
                    sd_notify::NotifyState::ExtendTimeoutUsec(more),
                    sd_notify::NotifyState::Status(why),
                ]);
            }
        });
        StartExtended {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for StartExtended {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// With `WatchdogSec=` (systemd sets `$WATCHDOG_USEC`), send `WATCHDOG=1`
/// at half the interval, each time after a no-op has gone through the
/// blocking pool too: a stuck runtime or a starved pool (where every file
/// and boot-configuration call runs) misses the deadline and systemd
/// restarts the daemon.
pub(super) fn spawn_watchdog() {
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
pub(super) fn spawn_reload(ctx: Arc<Context>) {
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
