//! The `PCI` class: dom0 access of one PCI function, through the domain
//! surface. Every status answer reflects the files as they are (read
//! fresh, or from a cache the change watch and file fingerprints keep
//! exact); edits go to the boot configuration and take effect at the next
//! boot.

use std::sync::Arc;

use crate::api::context::{Caller, Context};
use crate::api::handler::{Handler, HandlerFuture, blocking};
use crate::api::{ApiError, Value, audit, derived, drift};
use crate::domain::service;
use crate::domain::{Dom0Access, PciAddress};
use crate::store::Object;

/// This class's custom messages and their handlers (`api::invoke`'s tests
/// check them against the idl both ways).
pub const HANDLERS: &[(&str, Handler)] = &[
    ("disable_dom0_access", disable_dom0_access),
    ("enable_dom0_access", enable_dom0_access),
    ("disable_dom0_access_now", disable_dom0_access_now),
    ("enable_dom0_access_now", enable_dom0_access_now),
    ("get_dom0_access_status", get_dom0_access_status),
    ("get_passthrough_readiness", get_passthrough_readiness),
];

fn get_passthrough_readiness(
    ctx: Arc<Context>,
    _caller: Caller,
    args: Vec<Value>,
) -> HandlerFuture {
    blocking(ctx, move |ctx| {
        let pci = ctx.object("PCI", &self_ref(&args))?;
        let addr = address(&pci)?;
        let mut report = ctx.host.readiness(&addr)?;
        report.insert("drift".into(), drift::of(ctx, &addr).unwrap_or_default());
        Ok(Value::Struct(
            report
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect(),
        ))
    })
}

/// The PCI address of a PCI object.
pub fn address(pci: &Object) -> Result<PciAddress, ApiError> {
    pci.get_str("pci_id")
        .parse()
        .map_err(|_| ApiError::Internal(format!("PCI {} has no valid pci_id", pci.uuid)))
}

fn self_ref(args: &[Value]) -> String {
    args.first()
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned()
}

/// Hide `pci` from dom0 at the next boot; returns the new status. The
/// domain refuses a function a boot disk sits behind.
pub fn disable(ctx: &Context, pci: &Object) -> Result<Dom0Access, ApiError> {
    let addr = address(pci)?;
    let status = drift::editing(ctx, &[addr], true, || Ok(ctx.host.hide(&addr)?))?;
    tracing::info!(pci = %addr, %status, "dom0 access disabled in the boot configuration");
    derived::recompute(ctx);
    Ok(status)
}

/// Give `pci` back to dom0 at the next boot; returns the new status.
pub fn enable(ctx: &Context, pci: &Object) -> Result<Dom0Access, ApiError> {
    let addr = address(pci)?;
    let status = drift::editing(ctx, &[addr], false, || Ok(ctx.host.unhide(&addr)?))?;
    tracing::info!(pci = %addr, %status, "dom0 access enabled in the boot configuration");
    derived::recompute(ctx);
    Ok(status)
}

/// Hide `pci` from dom0 now and at every boot; returns the new status.
pub fn disable_now(ctx: &Context, pci: &Object) -> Result<Dom0Access, ApiError> {
    let addr = address(pci)?;
    let status = drift::editing(ctx, &[addr], true, || Ok(ctx.host.hide_now(&addr)?))?;
    tracing::info!(pci = %addr, %status, "dom0 access disabled now and in the boot configuration");
    derived::recompute(ctx);
    Ok(status)
}

/// Give `pci` back to dom0 now and at every boot; returns the new status.
pub fn enable_now(ctx: &Context, pci: &Object) -> Result<Dom0Access, ApiError> {
    let addr = address(pci)?;
    let status = drift::editing(ctx, &[addr], false, || Ok(ctx.host.unhide_now(&addr)?))?;
    tracing::info!(pci = %addr, %status, "dom0 access enabled now and in the boot configuration");
    derived::recompute(ctx);
    Ok(status)
}

/// Hide (`hide`) or give back every function of `pcis` as one edit of
/// the boot configuration (all or nothing), and with `now` at once too;
/// each function's new status by its reference. With `token` (from
/// `host.preview_dom0_access` of the same set, the same way) only if the
/// files are as the preview saw them.
pub fn edit_set(
    ctx: &Context,
    pcis: &[Arc<Object>],
    hide: bool,
    now: bool,
    token: Option<&str>,
) -> Result<Vec<(String, Dom0Access)>, ApiError> {
    let (refs, addrs) = distinct(pcis)?;
    if addrs.is_empty() {
        return Ok(Vec::new());
    }
    let statuses = drift::editing(ctx, &addrs, hide, || {
        Ok(if hide {
            ctx.host.hide_set(&addrs, now, token)?
        } else {
            ctx.host.unhide_set(&addrs, now, token)?
        })
    })?;
    let list = addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ");
    tracing::info!(
        pcis = %list,
        now,
        "dom0 access {} for the set in the boot configuration{}",
        if hide { "disabled" } else { "enabled" },
        if now { " and now" } else { "" },
    );
    derived::recompute(ctx);
    Ok(refs.into_iter().zip(statuses).collect())
}

/// The distinct functions of `pcis`, in order: their references and
/// addresses.
pub fn distinct(pcis: &[Arc<Object>]) -> Result<(Vec<String>, Vec<PciAddress>), ApiError> {
    let mut seen = std::collections::BTreeSet::new();
    let mut refs = Vec::new();
    let mut addrs = Vec::new();
    for pci in pcis {
        let addr = address(pci)?;
        if seen.insert(addr) {
            refs.push(pci.reference.clone());
            addrs.push(addr);
        }
    }
    Ok((refs, addrs))
}

/// The live status of `pci`.
pub fn status(ctx: &Context, pci: &Object) -> Result<Dom0Access, ApiError> {
    Ok(service::status(&*ctx.host, &address(pci)?)?)
}

fn disable_dom0_access(ctx: Arc<Context>, caller: Caller, args: Vec<Value>) -> HandlerFuture {
    blocking(ctx, move |ctx| {
        let pci = ctx.object("PCI", &self_ref(&args))?;
        let status = audit::edit(
            ctx,
            &caller,
            "PCI.disable_dom0_access",
            &[address(&pci)?],
            || disable(ctx, &pci),
        )?;
        Ok(Value::str(status.as_str()))
    })
}

fn enable_dom0_access(ctx: Arc<Context>, caller: Caller, args: Vec<Value>) -> HandlerFuture {
    blocking(ctx, move |ctx| {
        let pci = ctx.object("PCI", &self_ref(&args))?;
        let status = audit::edit(
            ctx,
            &caller,
            "PCI.enable_dom0_access",
            &[address(&pci)?],
            || enable(ctx, &pci),
        )?;
        Ok(Value::str(status.as_str()))
    })
}

fn disable_dom0_access_now(ctx: Arc<Context>, caller: Caller, args: Vec<Value>) -> HandlerFuture {
    blocking(ctx, move |ctx| {
        let pci = ctx.object("PCI", &self_ref(&args))?;
        let status = audit::edit(
            ctx,
            &caller,
            "PCI.disable_dom0_access_now",
            &[address(&pci)?],
            || disable_now(ctx, &pci),
        )?;
        Ok(Value::str(status.as_str()))
    })
}

fn enable_dom0_access_now(ctx: Arc<Context>, caller: Caller, args: Vec<Value>) -> HandlerFuture {
    blocking(ctx, move |ctx| {
        let pci = ctx.object("PCI", &self_ref(&args))?;
        let status = audit::edit(
            ctx,
            &caller,
            "PCI.enable_dom0_access_now",
            &[address(&pci)?],
            || enable_now(ctx, &pci),
        )?;
        Ok(Value::str(status.as_str()))
    })
}

fn get_dom0_access_status(ctx: Arc<Context>, _caller: Caller, args: Vec<Value>) -> HandlerFuture {
    // Answered inline while nothing has moved (no I/O: the change watch
    // vouches for the cached views); otherwise on the blocking pool. A
    // status read never writes: the PGPU fields derived from it are the
    // change watch's job (`derived::catch_up`).
    if let Some(pci) = ctx.store.get_of("PCI", &self_ref(&args))
        && let Ok(addr) = address(&pci)
        && let Some(status) = ctx
            .host
            .cached_statuses(&[addr])
            .and_then(|s| s.first().copied())
    {
        return Box::pin(async move { Ok(Value::str(status.as_str())) });
    }
    blocking(ctx, move |ctx| {
        let pci = ctx.object("PCI", &self_ref(&args))?;
        Ok(Value::str(status(ctx, &pci)?.as_str()))
    })
}
