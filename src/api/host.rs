//! The `host` class: this host's object, enable/disable, and reboot. On a
//! mock host `host.reboot` reboots the mock in place: the running command
//! line becomes the default entry's dom0 arguments, driver links follow the
//! hide list, every session ends and the device sync runs again. An
//! `Async.host.reboot` looks to its client as xapi's does: the task
//! succeeds first, and the mock restarts (sessions end, a new
//! agent_start_time) only once the client is done with the task, or after
//! xapi's ~10 s (`REBOOT_FUSE`).
//!
//! At every start the daemon also notices a reboot nobody asked it for:
//! [`check_boot`] compares the kernel's boot id with the one it stored (in
//! the store's private `meta` table, key [`BOOT_ID_KEY`]) and on a new boot
//! drops every session and re-enables a host that `host.disable` left
//! disabled, unless that call said `auto_enable=false` (remembered under
//! [`AUTO_ENABLE_KEY`]). [`record_agent_start`] writes
//! `other_config:agent_start_time`, as xapi does.

use std::sync::Arc;

use crate::api::context::{Caller, Context};
use crate::api::handler::{Handler, HandlerFuture, blocking};
use crate::api::objects::new_object;
use crate::api::session_table;
use crate::api::{ApiError, Value, audit, event, sync, task};
use crate::domain::service::{HostDescription, HostDisplay, Reboot};
use crate::idl;
use crate::store::{Change, Object, Store, db};
use crate::value::now_datetime;

/// This class's custom messages and their handlers (`api::invoke`'s tests
/// check them against the idl both ways).
pub const HANDLERS: &[(&str, Handler)] = &[
    ("reboot", reboot),
    ("disable", disable),
    ("enable", enable),
    ("get_servertime", get_servertime),
    ("evacuate", evacuate),
    ("disable_dom0_access_of", disable_dom0_access_of),
    ("enable_dom0_access_of", enable_dom0_access_of),
    ("enable_display", enable_display),
    ("get_dom0_access_audit", get_dom0_access_audit),
    ("disable_display", disable_display),
    ("preview_dom0_access", preview_dom0_access),
    ("apply_dom0_access_preview", apply_dom0_access_preview),
];

/// `host.enable_display` / `host.disable_display`: xapi's transition
/// table ([`HostDisplay::after`]); where it says so, Xen's console
/// argument is edited first, and `host.display` is written only once the
/// edit is made (a failed edit leaves it as it was). One at a time, under
/// the host lock.
fn update_display(
    ctx: Arc<Context>,
    caller: Caller,
    args: Vec<Value>,
    enable: bool,
) -> HandlerFuture {
    Box::pin(async move {
        let reference = host_arg(&ctx, &args)?;
        let _guard = ctx.host_lock.lock().await;
        let host = ctx.object("host", &reference)?;
        let current = HostDisplay::parse(host.get_str("display")).unwrap_or(HostDisplay::Enabled);
        let (next, edits) = current.after(enable);
        if edits {
            let work = ctx.clone();
            let who = caller.clone();
            tokio::task::spawn_blocking(move || {
                let call = if enable {
                    "host.enable_display"
                } else {
                    "host.disable_display"
                };
                audit::edit(&work, &who, call, &[], || {
                    Ok(work.host.set_display(enable)?)
                })
            })
            .await
            .map_err(|_| ApiError::Internal("a host worker failed".into()))??;
        }
        if next != current {
            ctx.apply(vec![Change::Update {
                reference: reference.clone(),
                fields: vec![("display".into(), Value::str(next.as_str()))],
            }])?;
        }
        tracing::info!(
            user = %caller.user,
            from = current.as_str(),
            to = next.as_str(),
            "host.{}_display",
            if enable { "enable" } else { "disable" }
        );
        Ok(Value::str(next.as_str()))
    })
}

fn enable_display(ctx: Arc<Context>, caller: Caller, args: Vec<Value>) -> HandlerFuture {
    update_display(ctx, caller, args, true)
}

fn disable_display(ctx: Arc<Context>, caller: Caller, args: Vec<Value>) -> HandlerFuture {
    update_display(ctx, caller, args, false)
}

/// At the first start on a boot (and after a mock reboot), as xapi's
/// start on a new boot: `host.display` is what this boot's configuration
/// shows, `enabled` or `disabled` (a pending `*_on_reboot` has happened).
/// An unreadable configuration keeps the value, with a warning.
fn sync_display(ctx: &Context) -> Result<(), ApiError> {
    let shown = match ctx.host.display_at_next_boot() {
        Ok(shown) => shown,
        Err(e) => {
            tracing::warn!("host.display kept: the boot configuration's console is unknown: {e}");
            return Ok(());
        }
    };
    let value = HostDisplay::at_boot(shown);
    ctx.apply(vec![Change::Update {
        reference: ctx.host_ref.clone(),
        fields: vec![("display".into(), Value::str(value.as_str()))],
    }])?;
    Ok(())
}

/// `host.disable_dom0_access_of(self, pcis, now)` and its give-back: one
/// edit for a set of functions, answered as a map from each PCI to its
/// new status.
fn dom0_access_of(
    ctx: Arc<Context>,
    caller: Caller,
    args: Vec<Value>,
    hide: bool,
) -> HandlerFuture {
    blocking(ctx, move |ctx| {
        host_arg(ctx, &args)?;
        let pcis = pci_set(ctx, args.get(1))?;
        let now = matches!(args.get(2), Some(Value::Bool(true)));
        let addrs = pcis
            .iter()
            .map(|p| crate::api::pci::address(p))
            .collect::<Result<Vec<_>, _>>()?;
        let call = if hide {
            "host.disable_dom0_access_of"
        } else {
            "host.enable_dom0_access_of"
        };
        let answer = audit::edit(ctx, &caller, call, &addrs, || {
            crate::api::pci::edit_set(ctx, &pcis, hide, now, None)
        })?;
        Ok(Value::Struct(
            answer
                .into_iter()
                .map(|(reference, status)| (reference, Value::str(status.as_str())))
                .collect(),
        ))
    })
}

fn disable_dom0_access_of(ctx: Arc<Context>, caller: Caller, args: Vec<Value>) -> HandlerFuture {
    dom0_access_of(ctx, caller, args, true)
}

fn enable_dom0_access_of(ctx: Arc<Context>, caller: Caller, args: Vec<Value>) -> HandlerFuture {
    dom0_access_of(ctx, caller, args, false)
}

/// The PCI objects of a `set<ref<PCI>>` parameter (checked by the idl).
fn pci_set(ctx: &Context, arg: Option<&Value>) -> Result<Vec<Arc<Object>>, ApiError> {
    match arg {
        Some(Value::Array(items)) => items
            .iter()
            .map(|r| ctx.object("PCI", r.as_str().unwrap_or("")))
            .collect(),
        _ => Ok(Vec::new()),
    }
}

/// `host.preview_dom0_access(self, pcis, enabled)`: the dry run of the
/// edit `host.enable_dom0_access_of` (`enabled`) or
/// `host.disable_dom0_access_of` would make now, with its token. Nothing
/// is written; a refusal is the edit's.
fn preview_dom0_access(ctx: Arc<Context>, _caller: Caller, args: Vec<Value>) -> HandlerFuture {
    blocking(ctx, move |ctx| {
        host_arg(ctx, &args)?;
        let pcis = pci_set(ctx, args.get(1))?;
        let enabled = matches!(args.get(2), Some(Value::Bool(true)));
        let (_, addrs) = crate::api::pci::distinct(&pcis)?;
        let preview = ctx.host.preview(&addrs, !enabled)?;
        let words = |items: Vec<String>| items.join(" ");
        Ok(Value::Struct(
            [
                ("diff", preview.diff.clone()),
                (
                    "hidden_after",
                    words(
                        preview
                            .hidden_after
                            .iter()
                            .map(ToString::to_string)
                            .collect(),
                    ),
                ),
                ("hide_value", preview.value.clone().unwrap_or_default()),
                ("rebuild", preview.rebuild.clone().unwrap_or_default()),
                ("exact", preview.exact().to_string()),
                ("unforeseen", preview.unforeseen.join("\n")),
                ("binary", words(preview.binary.clone())),
                ("token", preview.token.clone()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), Value::str(v)))
            .collect(),
        ))
    })
}

/// `host.apply_dom0_access_preview(self, pcis, enabled, now, token)`: the
/// previewed edit, made only if every file the preview read is as it was
/// (`DOM0_ACCESS_PREVIEW_STALE` otherwise, nothing written); answered as
/// `host.*_dom0_access_of`.
fn apply_dom0_access_preview(ctx: Arc<Context>, caller: Caller, args: Vec<Value>) -> HandlerFuture {
    blocking(ctx, move |ctx| {
        host_arg(ctx, &args)?;
        let pcis = pci_set(ctx, args.get(1))?;
        let hide = !matches!(args.get(2), Some(Value::Bool(true)));
        let now = matches!(args.get(3), Some(Value::Bool(true)));
        let token = args
            .get(4)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let (_, addrs) = crate::api::pci::distinct(&pcis)?;
        let answer = audit::edit(
            ctx,
            &caller,
            "host.apply_dom0_access_preview",
            &addrs,
            || crate::api::pci::edit_set(ctx, &pcis, hide, now, Some(&token)),
        )?;
        Ok(Value::Struct(
            answer
                .into_iter()
                .map(|(reference, status)| (reference, Value::str(status.as_str())))
                .collect(),
        ))
    })
}

fn get_dom0_access_audit(ctx: Arc<Context>, _caller: Caller, args: Vec<Value>) -> HandlerFuture {
    blocking(ctx, move |ctx| {
        host_arg(ctx, &args)?;
        audit::records(ctx)
    })
}

/// xapi's null reference.
const NULL_REF: &str = "OpaqueRef:NULL";

fn host_arg(ctx: &Context, args: &[Value]) -> Result<String, ApiError> {
    let reference = args.first().and_then(Value::as_str).unwrap_or("");
    Ok(ctx.object("host", reference)?.reference.clone())
}

/// What a live host allows, as xapi's `valid_operations` judges it: VMs
/// may start or arrive only while it is enabled, `enable` only while it is
/// disabled; evacuating, shutting down and rebooting always (`power_on`
/// is for a host that is down, never this one).
fn allowed_operations(enabled: bool) -> Value {
    if enabled {
        Value::strings([
            "provision",
            "evacuate",
            "shutdown",
            "reboot",
            "vm_start",
            "vm_resume",
            "vm_migrate",
        ])
    } else {
        Value::strings(["evacuate", "shutdown", "reboot", "enable"])
    }
}

fn set_enabled(ctx: &Context, reference: &str, enabled: bool) -> Result<(), ApiError> {
    ctx.apply(vec![Change::Update {
        reference: reference.to_owned(),
        fields: vec![
            ("enabled".into(), Value::Bool(enabled)),
            ("allowed_operations".into(), allowed_operations(enabled)),
        ],
    }])?;
    Ok(())
}

/// The `meta` key of the boot id seen at the daemon's last start (or the
/// last mock reboot).
pub const BOOT_ID_KEY: &str = "boot_id";

/// The `meta` key of `host.disable`'s `auto_enable` flag: `"false"` when
/// the host must stay disabled across reboots until `host.enable`.
pub const AUTO_ENABLE_KEY: &str = "host_auto_enable";

/// The `other_config` key xapi writes at every start of its daemon.
pub const AGENT_START_TIME: &str = "agent_start_time";

/// Should a reboot bring a disabled host back to enabled?
fn auto_enable(ctx: &Context) -> Result<bool, ApiError> {
    Ok(ctx.store.meta_get(AUTO_ENABLE_KEY)?.as_deref() != Some("false"))
}

/// After a reboot: enable the host when it is disabled and `host.disable`
/// did not say `auto_enable=false`. Returns whether it was enabled.
fn enable_after_reboot(ctx: &Context) -> Result<bool, ApiError> {
    let disabled = ctx
        .store
        .get(&ctx.host_ref)
        .is_some_and(|h| h.get("enabled") == Some(&Value::Bool(false)));
    if disabled && auto_enable(ctx)? {
        set_enabled(ctx, &ctx.host_ref, true)?;
        return Ok(true);
    }
    Ok(false)
}

/// What [`check_boot`] found at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootCheck {
    /// No boot id was stored: the first start; the id is stored now.
    FirstStart,
    /// The same boot as at the last start: nothing changes.
    SameBoot,
    /// The host rebooted since the last start.
    NewBoot {
        /// How many sessions were dropped.
        sessions_dropped: usize,
        /// Whether a disabled host was enabled again.
        host_enabled: bool,
    },
    /// The boot id could not be read: sessions are kept.
    Unreadable,
}

/// Compare the kernel's boot id with the stored one; on a new boot drop
/// every session and re-enable the host (see the module documentation).
pub fn check_boot(ctx: &Context) -> Result<BootCheck, ApiError> {
    let current = match ctx.host.boot_id() {
        Ok(id) => id,
        Err(e) => {
            tracing::warn!("cannot read the boot id ({e}); keeping sessions");
            return Ok(BootCheck::Unreadable);
        }
    };
    let stored = ctx.store.meta_get(BOOT_ID_KEY)?;
    let check = match stored {
        None => {
            sync_display(ctx)?;
            BootCheck::FirstStart
        }
        Some(stored) if stored == current => return Ok(BootCheck::SameBoot),
        Some(_) => {
            let sessions_dropped = session_table::invalidate_all(ctx)?;
            let host_enabled = enable_after_reboot(ctx)?;
            sync_display(ctx)?;
            tracing::info!(
                sessions_dropped,
                host_enabled,
                "the host rebooted since the last start: sessions dropped"
            );
            BootCheck::NewBoot {
                sessions_dropped,
                host_enabled,
            }
        }
    };
    ctx.store.meta_set(BOOT_ID_KEY, &current)?;
    Ok(check)
}

/// The time now as xapi writes `agent_start_time`: seconds since the
/// epoch as a decimal string with a fraction, e.g. `1733050000.123`.
fn agent_start_time_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:03}", now.as_secs(), now.subsec_millis())
}

/// Write this start's time into `host.other_config:agent_start_time`;
/// returns the value written.
pub fn record_agent_start(ctx: &Context) -> Result<String, ApiError> {
    let host = ctx.object("host", &ctx.host_ref)?;
    let mut other_config = match host.get("other_config") {
        Some(Value::Struct(members)) => members.clone(),
        _ => Vec::new(),
    };
    let now = agent_start_time_now();
    other_config.retain(|(k, _)| k != AGENT_START_TIME);
    other_config.push((AGENT_START_TIME.to_owned(), Value::str(&now)));
    ctx.apply(vec![Change::Update {
        reference: ctx.host_ref.clone(),
        fields: vec![("other_config".into(), Value::Struct(other_config))],
    }])?;
    Ok(now)
}

fn disable(ctx: Arc<Context>, caller: Caller, args: Vec<Value>) -> HandlerFuture {
    Box::pin(async move {
        let reference = host_arg(&ctx, &args)?;
        // `auto_enable` defaults to true (xapi 25.31.0).
        let auto_enable = !matches!(args.get(1), Some(Value::Bool(false)));
        ctx.store
            .meta_set(AUTO_ENABLE_KEY, if auto_enable { "true" } else { "false" })?;
        set_enabled(&ctx, &reference, false)?;
        tracing::info!(user = %caller.user, auto_enable, "host disabled");
        Ok(Value::void())
    })
}

fn enable(ctx: Arc<Context>, caller: Caller, args: Vec<Value>) -> HandlerFuture {
    Box::pin(async move {
        let reference = host_arg(&ctx, &args)?;
        ctx.store.meta_set(AUTO_ENABLE_KEY, "true")?;
        set_enabled(&ctx, &reference, true)?;
        tracing::info!(user = %caller.user, "host enabled");
        Ok(Value::void())
    })
}

fn get_servertime(ctx: Arc<Context>, _caller: Caller, args: Vec<Value>) -> HandlerFuture {
    Box::pin(async move {
        host_arg(&ctx, &args)?;
        Ok(now_datetime())
    })
}

/// xapi reboots about 10 s after `host.reboot` succeeded. After an
/// `Async.host.reboot`'s task succeeded, pcipass waits at most this long
/// for its client to be done with the task before it runs the reboot
/// command (a real host) or reboots the mock in place.
const REBOOT_FUSE: std::time::Duration = std::time::Duration::from_secs(10);

fn reboot(ctx: Arc<Context>, caller: Caller, args: Vec<Value>) -> HandlerFuture {
    Box::pin(async move {
        let reference = host_arg(&ctx, &args)?;
        let _guard = ctx.host_lock.lock().await;
        let host = ctx.object("host", &reference)?;
        if host.get("enabled") != Some(&Value::Bool(false)) {
            return Err(ApiError::HostNotDisabled);
        }
        tracing::warn!(user = %caller.user, "host reboot requested");
        // As with xapi (its reboot fuse), an `Async.host.reboot`'s task
        // succeeds while the host is still up, and the host goes down once
        // its client is done with it: every event stream that sees the
        // task was handed the success and the task was destroyed (Xen
        // Orchestra destroys it once it saw it), or after xapi's delay.
        // On a real host the reboot command would otherwise stop pcipassd
        // before the success reached Xen Orchestra, which then fails the
        // reboot ("task destroyed before completion"). On a mock host
        // Xen Orchestra starts watching for the new agent_start_time only
        // when the task succeeded and misses a value that reached it
        // first, or with the success; a call of its still in flight when
        // the sessions end is retried a second later, and fails for good
        // if the host has gone down again meanwhile.
        if let Some(task_ref) = &caller.task {
            // Who may see the task does not change as it completes.
            let task = ctx.store.get_of("task", task_ref);
            task::complete(&ctx, task_ref, Ok(Value::void()));
            let at = ctx.store.generation();
            let done = || {
                ctx.store.get_of("task", task_ref).is_none()
                    && task
                        .as_ref()
                        .is_none_or(|task| event::handed_to_streams(&ctx, task, at))
            };
            if !event::wait_until(&ctx, REBOOT_FUSE, done).await {
                tracing::info!(
                    "the reboot's client is not done with its task: the host goes down anyway"
                );
            }
        }
        let command = ctx.config.reboot_command.clone();
        let started = command.clone();
        let outcome = ctx.domain(move |host| host.reboot(&started)).await;
        let outcome = match (outcome, &caller.task) {
            (Ok(Ok(outcome)), _) => outcome,
            (Ok(Err(e)), Some(_)) => {
                // The task already succeeded: the failure is only logged.
                tracing::error!(user = %caller.user, ?command, "the reboot failed: {e}");
                return Ok(Value::void());
            }
            (Ok(Err(e)), None) => return Err(e.into()),
            (Err(e), _) => return Err(e),
        };
        if outcome == Reboot::Started {
            tracing::warn!(user = %caller.user, ?command, "reboot command started");
            return Ok(Value::void());
        }
        let work = ctx.clone();
        let work_user = caller.user.clone();
        let restarted = tokio::task::spawn_blocking(move || restart_in_place(&work, &work_user))
            .await
            .map_err(|_| ApiError::Internal("reboot worker failed".into()))?;
        if let (Err(e), Some(_)) = (&restarted, &caller.task) {
            // The task already succeeded: the failure is only logged.
            tracing::error!("the mock host's restart after the reboot failed: {e}");
        }
        restarted.map(|()| Value::void())
    })
}

/// The toolstack starting again on the mock host just rebooted in place,
/// as after a real reboot: the devices are synchronised and the host
/// described again, a disabled host is enabled (unless
/// `auto_enable=false`), a new agent_start_time, and, last, every session
/// ends. A client that logs in again after its SESSION_INVALID therefore
/// always finds the host as it is after the boot, as on a real host,
/// where the toolstack accepts logins only once it has started.
fn restart_in_place(ctx: &Context, user: &str) -> Result<(), ApiError> {
    // The mock reboot wrote a new boot id: remember it, or the next
    // start would take this boot for another one.
    match ctx.host.boot_id() {
        Ok(id) => ctx.store.meta_set(BOOT_ID_KEY, &id)?,
        Err(e) => tracing::warn!("cannot read the new boot id: {e}"),
    }
    sync::synchronise(ctx)?;
    describe_again(ctx)?;
    enable_after_reboot(ctx)?;
    sync_display(ctx)?;
    if let Err(e) = crate::api::drift::check(ctx, "the mock reboot") {
        tracing::warn!("drift not checked: {e}");
    }
    // Clients (Xen Orchestra) wait for agent_start_time to move.
    record_agent_start(ctx)?;
    let dropped = session_table::invalidate_all(ctx)?;
    tracing::warn!(%user, sessions_ended = dropped, "mock host rebooted in place");
    Ok(())
}

/// The fields of the host object that describe the host as it is now:
/// product and versions (its own files say them: the inventory on XCP-ng,
/// os-release elsewhere), host name, address, Xen capabilities.
fn described_fields(
    about: &HostDescription,
    hostname: &str,
    address: &str,
    metrics_ref: &str,
) -> Vec<(String, Value)> {
    let (major, minor) = idl::datamodel().api_version;
    let software_version = Value::Struct(
        about
            .software_version
            .iter()
            .map(|(k, v)| (k.clone(), Value::str(v)))
            .collect(),
    );
    vec![
        ("API_version_major".into(), Value::Int(major)),
        ("API_version_minor".into(), Value::Int(minor)),
        ("API_version_vendor".into(), Value::str("XenSource")),
        ("software_version".into(), software_version),
        ("hostname".into(), Value::str(hostname)),
        ("address".into(), Value::str(address)),
        (
            "capabilities".into(),
            Value::strings(about.capabilities.iter().cloned()),
        ),
        ("metrics".into(), Value::str(metrics_ref)),
    ]
}

/// The fields of the host's `host_metrics` object.
fn metrics_fields(about: &HostDescription) -> Vec<(String, Value)> {
    vec![
        (
            "memory_total".into(),
            Value::Int(about.memory_total.unwrap_or(0)),
        ),
        (
            "memory_free".into(),
            Value::Int(about.memory_free.unwrap_or(0)),
        ),
        ("live".into(), Value::Bool(true)),
        ("last_updated".into(), now_datetime()),
    ]
}

/// Find or create this host's `host` object, its `host_metrics` and the
/// one-host `pool`, and write what describes the host now (`about`).
/// Returns (host, pool) refs, stable across restarts.
pub fn bootstrap(
    store: &Store,
    about: &HostDescription,
    hostname: &str,
    address: &str,
) -> Result<(String, String), ApiError> {
    let mut changes = Vec::new();
    let metrics_ref = match store.all("host_metrics").first() {
        Some(metrics) => metrics.reference.clone(),
        None => {
            let reference = db::new_ref();
            changes.push(Change::Create(new_object(
                "host_metrics",
                reference.clone(),
                db::new_uuid(),
                Vec::new(),
            )));
            reference
        }
    };
    let host_ref = match store.all("host").first() {
        Some(host) => host.reference.clone(),
        None => {
            let reference = db::new_ref();
            changes.push(Change::Create(new_object(
                "host",
                reference.clone(),
                db::new_uuid(),
                vec![
                    ("name_label", Value::str(hostname)),
                    ("enabled", Value::Bool(true)),
                    ("allowed_operations", allowed_operations(true)),
                ],
            )));
            reference
        }
    };
    changes.push(Change::Update {
        reference: host_ref.clone(),
        fields: described_fields(about, hostname, address, &metrics_ref),
    });
    changes.push(Change::Update {
        reference: metrics_ref,
        fields: metrics_fields(about),
    });
    let pool_ref = match store.all("pool").first() {
        Some(pool) => pool.reference.clone(),
        None => {
            let reference = db::new_ref();
            changes.push(Change::Create(new_object(
                "pool",
                reference.clone(),
                db::new_uuid(),
                vec![("master", Value::String(host_ref.clone()))],
            )));
            reference
        }
    };
    store.apply(changes)?;
    Ok((host_ref, pool_ref))
}

/// Describe the host again (after a reboot in place): product, versions
/// and memory as the host says them now.
pub fn describe_again(ctx: &Context) -> Result<(), ApiError> {
    let about = ctx.host.describe();
    let host = ctx.object("host", &ctx.host_ref)?;
    let hostname = about
        .hostname
        .clone()
        .unwrap_or_else(|| host.get_str("hostname").to_owned());
    let metrics_ref = host.get_str("metrics").to_owned();
    let mut changes = vec![Change::Update {
        reference: ctx.host_ref.clone(),
        fields: described_fields(&about, &hostname, host.get_str("address"), &metrics_ref),
    }];
    if ctx.store.get(&metrics_ref).is_some() {
        changes.push(Change::Update {
            reference: metrics_ref,
            fields: metrics_fields(&about),
        });
    }
    ctx.apply(changes)?;
    Ok(())
}

fn evacuate(ctx: Arc<Context>, caller: Caller, args: Vec<Value>) -> HandlerFuture {
    Box::pin(async move {
        let reference = host_arg(&ctx, &args)?;
        let network = args.get(1).and_then(Value::as_str).unwrap_or(NULL_REF);
        if network != NULL_REF {
            return Err(ApiError::handle_invalid("network", network));
        }
        let host = ctx.object("host", &reference)?;
        let resident = match host.get("resident_VMs") {
            Some(Value::Array(vms)) => vms.len(),
            _ => 0,
        };
        tracing::info!(user = %caller.user, resident, "host evacuated (no resident VMs)");
        Ok(Value::void())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Origin, Role};
    use crate::config::Settings;
    use crate::host::procfs::BOOT_ID;

    struct Fixture {
        _dir: tempfile::TempDir,
        root: std::path::PathBuf,
        settings: Settings,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings::demo_under(dir.path()).unwrap();
        let root = dir.path().join("root");
        Fixture {
            _dir: dir,
            root,
            settings,
        }
    }

    fn start(f: &Fixture) -> Arc<Context> {
        crate::daemon::build_context(&f.settings).unwrap()
    }

    fn new_boot_id(f: &Fixture) {
        std::fs::write(f.root.join(BOOT_ID), format!("{}\n", db::new_uuid())).unwrap();
    }

    fn enabled(ctx: &Context) -> bool {
        ctx.store.get(&ctx.host_ref).unwrap().get("enabled") == Some(&Value::Bool(true))
    }

    fn start_time(ctx: &Context) -> f64 {
        let host = ctx.store.get(&ctx.host_ref).unwrap();
        host.get("other_config")
            .and_then(|m| m.member(AGENT_START_TIME))
            .and_then(Value::as_str)
            .unwrap()
            .parse()
            .unwrap()
    }

    async fn call(ctx: &Arc<Context>, name: &str, params: Vec<Value>) -> Result<Value, ApiError> {
        crate::api::invoke::invoke(ctx, name, params, Origin::Network("127.0.0.1:1".into())).await
    }

    async fn login_and_disable(ctx: &Arc<Context>, auto_enable: Option<bool>) -> String {
        let session =
            session_table::create_session(ctx, "admin", Role::PoolAdmin, false, "test", "users")
                .unwrap();
        let mut params = vec![Value::str(&session), Value::str(&ctx.host_ref)];
        params.extend(auto_enable.map(Value::Bool));
        call(ctx, "host.disable", params).await.unwrap();
        assert!(!enabled(ctx));
        session
    }

    #[tokio::test]
    async fn new_boot_drops_sessions_and_enables_the_host() {
        let f = fixture();
        let ctx = start(&f);
        assert!(ctx.store.meta_get(BOOT_ID_KEY).unwrap().is_some());
        let first_start = start_time(&ctx);
        let session = login_and_disable(&ctx, None).await;
        drop(ctx);

        new_boot_id(&f);
        let ctx = start(&f);
        assert!(ctx.store.get(&session).is_none(), "session dropped");
        assert!(enabled(&ctx));
        assert!(start_time(&ctx) > first_start);
        let host_ref = ctx.host_ref.clone();
        let err = call(
            &ctx,
            "host.get_enabled",
            vec![Value::str(&session), Value::str(&host_ref)],
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), "SESSION_INVALID");
    }

    #[tokio::test]
    async fn same_boot_keeps_sessions_and_the_disabled_host() {
        let f = fixture();
        let ctx = start(&f);
        let first_start = start_time(&ctx);
        let session = login_and_disable(&ctx, None).await;
        drop(ctx);
        std::thread::sleep(std::time::Duration::from_millis(5));
        let ctx = start(&f);
        assert!(ctx.store.get(&session).is_some());
        assert!(!enabled(&ctx));
        assert!(start_time(&ctx) > first_start);
    }

    #[tokio::test]
    async fn auto_enable_false_keeps_the_host_disabled_across_reboots() {
        let f = fixture();
        let ctx = start(&f);
        login_and_disable(&ctx, Some(false)).await;
        drop(ctx);
        new_boot_id(&f);
        let ctx = start(&f);
        assert!(!enabled(&ctx));
        // host.enable clears the flag: the next disable defaults to true.
        let session =
            session_table::create_session(&ctx, "admin", Role::PoolAdmin, false, "test", "users")
                .unwrap();
        let host_ref = ctx.host_ref.clone();
        call(
            &ctx,
            "host.enable",
            vec![Value::str(&session), Value::str(&host_ref)],
        )
        .await
        .unwrap();
        login_and_disable(&ctx, None).await;
        drop(ctx);
        new_boot_id(&f);
        assert!(enabled(&start(&f)));
    }

    #[tokio::test]
    async fn unreadable_boot_id_keeps_sessions() {
        let f = fixture();
        let ctx = start(&f);
        let session = login_and_disable(&ctx, None).await;
        drop(ctx);
        std::fs::remove_file(f.root.join(BOOT_ID)).unwrap();
        let ctx = start(&f);
        assert_eq!(check_boot(&ctx).unwrap(), BootCheck::Unreadable);
        assert!(ctx.store.get(&session).is_some());
        assert!(!enabled(&ctx));
    }

    #[tokio::test]
    async fn first_start_stores_the_boot_id() {
        let f = fixture();
        let ctx = start(&f);
        let id = ctx.host.boot_id().unwrap();
        assert_eq!(ctx.store.meta_get(BOOT_ID_KEY).unwrap(), Some(id));
        assert_eq!(check_boot(&ctx).unwrap(), BootCheck::SameBoot);
    }

    #[test]
    fn mock_reboot_changes_the_boot_id() {
        let f = fixture();
        let host = crate::host::HostRoot::new(&f.root);
        let before = crate::host::procfs::read_boot_id(&host).unwrap();
        crate::domain::mock_boot::reboot(&host).unwrap();
        assert_ne!(crate::host::procfs::read_boot_id(&host).unwrap(), before);
    }
}
