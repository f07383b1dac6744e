//! The `host` class: this host's object, enable/disable, and reboot. On a
//! mock host `host.reboot` reboots the mock in place: the running command
//! line becomes the default entry's dom0 arguments, driver links follow the
//! hide list, every session ends and the device sync runs again.

use std::sync::Arc;

use crate::api::context::{Caller, Context};
use crate::api::invoke::{Handler, HandlerFuture};
use crate::api::objects::new_object;
use crate::api::session::{self, now_datetime};
use crate::api::{ApiError, Value, sync};
use crate::idl;
use crate::store::{Change, Store, db};

/// The custom messages this module handles.
pub const MESSAGES: &[&str] = &["reboot", "disable", "enable", "get_servertime"];

/// The handler of a custom message.
pub fn handler(name: &str) -> Option<Handler> {
    Some(match name {
        "reboot" => reboot,
        "disable" => disable,
        "enable" => enable,
        "get_servertime" => get_servertime,
        _ => return None,
    })
}

fn host_arg(ctx: &Context, args: &[Value]) -> Result<String, ApiError> {
    let reference = args.first().and_then(Value::as_str).unwrap_or("");
    Ok(ctx.object("host", reference)?.reference.clone())
}

fn set_enabled(ctx: &Context, reference: &str, enabled: bool) -> Result<(), ApiError> {
    let allowed = if enabled {
        Value::strings([
            "provision",
            "evacuate",
            "shutdown",
            "reboot",
            "power_on",
            "vm_start",
            "vm_resume",
            "vm_migrate",
        ])
    } else {
        Value::strings(["shutdown", "reboot", "enable"])
    };
    ctx.store.apply(vec![Change::Update {
        reference: reference.to_owned(),
        fields: vec![
            ("enabled".into(), Value::Bool(enabled)),
            ("allowed_operations".into(), allowed),
        ],
    }])?;
    Ok(())
}

fn disable(ctx: Arc<Context>, caller: Caller, args: Vec<Value>) -> HandlerFuture {
    Box::pin(async move {
        let reference = host_arg(&ctx, &args)?;
        set_enabled(&ctx, &reference, false)?;
        tracing::info!(user = %caller.user, "host disabled");
        Ok(Value::void())
    })
}

fn enable(ctx: Arc<Context>, caller: Caller, args: Vec<Value>) -> HandlerFuture {
    Box::pin(async move {
        let reference = host_arg(&ctx, &args)?;
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

fn reboot(ctx: Arc<Context>, caller: Caller, args: Vec<Value>) -> HandlerFuture {
    Box::pin(async move {
        let reference = host_arg(&ctx, &args)?;
        let _guard = ctx.host_lock.lock().await;
        let host = ctx.object("host", &reference)?;
        if host.get("enabled") != Some(&Value::Bool(false)) {
            return Err(ApiError::HostNotDisabled);
        }
        if !ctx.host_root.is_mock() {
            return reboot_real_host(&ctx, &caller);
        }
        tracing::info!(user = %caller.user, "rebooting the mock host");
        let work = ctx.clone();
        tokio::task::spawn_blocking(move || -> Result<(), ApiError> {
            crate::domain::mock_boot::reboot(&work.host_root)
                .map_err(|e| ApiError::Internal(format!("mock reboot failed: {e}")))?;
            let dropped = session::invalidate_all(&work)?;
            sync::synchronise(&work)?;
            set_enabled(&work, &work.host_ref, true)?;
            tracing::info!(sessions_ended = dropped, "mock host rebooted");
            Ok(())
        })
        .await
        .map_err(|_| ApiError::Internal("reboot worker failed".into()))??;
        Ok(Value::void())
    })
}

fn reboot_real_host(ctx: &Context, caller: &Caller) -> Result<Value, ApiError> {
    let Some((program, args)) = ctx.config.reboot_command.split_first() else {
        return Err(ApiError::OperationNotAllowed(
            "no reboot command is configured".into(),
        ));
    };
    tracing::warn!(user = %caller.user, command = ?ctx.config.reboot_command, "rebooting the host");
    crate::host::exec::spawn_detached(program, args)
        .map_err(|e| ApiError::Internal(format!("reboot command failed to start: {}", e.kind())))?;
    Ok(Value::void())
}

/// What the daemon says about itself in `host.software_version`.
fn software_version(hostname: &str) -> Value {
    let version = env!("CARGO_PKG_VERSION");
    Value::Struct(
        [
            ("product_brand", "pcipass"),
            ("product_version", version),
            ("platform_name", "pcipass"),
            ("platform_version", version),
            ("xapi", version),
            ("hostname", hostname),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), Value::str(v)))
        .collect(),
    )
}

/// Find or create this host's `host` object and the one-host `pool`;
/// refresh the fields that describe this build. Returns (host, pool) refs,
/// stable across restarts.
pub fn bootstrap(
    store: &Store,
    hostname: &str,
    address: &str,
) -> Result<(String, String), ApiError> {
    let (major, minor) = idl::datamodel().api_version;
    let common = vec![
        ("API_version_major", Value::Int(major)),
        ("API_version_minor", Value::Int(minor)),
        ("API_version_vendor", Value::str("XenSource")),
        ("software_version", software_version(hostname)),
        ("hostname", Value::str(hostname)),
        ("address", Value::str(address)),
        (
            "capabilities",
            Value::strings(["xen-3.0-x86_64", "hvm-3.0-x86_64"]),
        ),
    ];
    let mut changes = Vec::new();
    let host_ref = match store.all("host").first() {
        Some(host) => {
            changes.push(Change::Update {
                reference: host.reference.clone(),
                fields: common
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), v.clone()))
                    .collect(),
            });
            host.reference.clone()
        }
        None => {
            let reference = db::new_ref();
            let mut fields = common.clone();
            fields.push(("name_label", Value::str(hostname)));
            fields.push(("enabled", Value::Bool(true)));
            changes.push(Change::Create(new_object(
                "host",
                reference.clone(),
                db::new_uuid(),
                fields,
            )));
            reference
        }
    };
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
