//! Start-up wiring: the state directory's lock, then everything a call
//! needs, built from the settings and the root: the store, the boot flow
//! and its boot configuration, the host, the auth mode and the `Context`
//! (this host's objects, the device sync); and `--check-config`, the same
//! checks without writing anything.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::tls::tls_files;
use super::{DaemonError, state_at};
use crate::api::context::{ApiConfig, Auth, Context};
use crate::api::{host, sync};
use crate::config::{AuthMode, BootBackend, Settings};
use crate::domain::bootcfg::{self, BootConfig, FlowOptions, InitramfsUpdate};
use crate::domain::bootflow::{self, BootFlow, Detected, FlowError};
use crate::domain::service::{Dom0Host, HostDom0};
use crate::host::HostRoot;
use crate::store::Store;
use crate::wire::dispatch::encode_task_result;

/// Make the state directory and take its one-daemon lock (see
/// [`crate::store::lock`]); the caller keeps the returned lock for the life
/// of the process. Called before the database or any socket is touched, so
/// a second daemon on the same directory leaves the first one's alone.
pub fn lock_state(settings: &Settings) -> Result<crate::store::lock::StateLock, DaemonError> {
    let state_dir = settings.state_dir();
    crate::store::prepare_state_dir(&state_dir).map_err(state_at(&state_dir))?;
    Ok(crate::store::lock::lock_state_dir(&state_dir)?)
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
    {
        let _longer = super::systemd::StartExtended::new(
            "undoing an unfinished boot configuration edit (rebuilding the initramfs)",
        );
        dom0.finish_interrupted_edit();
    }
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
    let ctx = Arc::new(Context::new(
        store,
        dom0,
        config,
        (host_ref, pool_ref),
        auth,
        encode_task_result,
    ));
    // A reboot nobody asked pcipassd for ends every session, as xapi's.
    match host::check_boot(&ctx).map_err(state_at(&db))? {
        host::BootCheck::FirstStart => tracing::info!("first start on this host: boot id stored"),
        host::BootCheck::SameBoot
        | host::BootCheck::NewBoot { .. }
        | host::BootCheck::Unreadable => {}
    }
    sync::synchronise(&ctx).map_err(state_at(&db))?;
    host::record_agent_start(&ctx).map_err(state_at(&db))?;
    // Tasks a stop left in flight: finished as their work turned out.
    let finished = crate::api::task::finish_interrupted(&ctx);
    if finished > 0 {
        tracing::info!(
            finished,
            "tasks left unfinished by the previous run are finished"
        );
    }
    // What changed in the boot configuration while pcipassd did not run.
    crate::api::audit::outside(&ctx, "start");
    // Hardware drift shows at start: another card at a hidden address.
    if let Err(e) = crate::api::drift::check(&ctx, "start") {
        tracing::warn!("drift not checked: {e}");
    }
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
pub(super) fn listeners_text(listen: &[std::net::SocketAddr], unix: &[PathBuf]) -> String {
    listen
        .iter()
        .map(ToString::to_string)
        .chain(unix.iter().map(|p| format!("unix:{}", p.display())))
        .collect::<Vec<_>>()
        .join(" ")
}

/// How logins are checked, from `--auth` and `--role-group`.
pub(super) fn auth_of(settings: &Settings) -> Result<Auth, DaemonError> {
    Ok(match settings.auth_mode() {
        AuthMode::Users => Auth::Users,
        AuthMode::Pam => Auth::Pam {
            service: crate::store::pam::SERVICE.to_owned(),
            role_groups: settings.role_groups()?,
        },
    })
}

/// Say how logins are checked.
pub(super) fn log_auth(auth: &Auth, state_dir: &Path) {
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

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn a_missing_root_is_an_error_naming_it() {
        let e = check_root(Path::new("/no/such/root"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/no/such/root"), "{e}");
    }
}
