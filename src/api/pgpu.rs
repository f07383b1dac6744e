//! The `PGPU` class: the deprecated dom0-access messages act on the PGPU's
//! PCI, and `dom0_access` is kept equal to the PCI's live status: refreshed
//! before every read, after every edit and when a watcher sees the boot
//! configuration or `/proc/cmdline` change.

use std::sync::Arc;

use crate::api::context::{Caller, Context};
use crate::api::invoke::{Handler, HandlerFuture, blocking};
use crate::api::{ApiError, Value, pci};
use crate::domain::Dom0Access;
use crate::store::{Change, Object};

/// The custom messages this module handles.
pub const MESSAGES: &[&str] = &["enable_dom0_access", "disable_dom0_access"];

/// The handler of a custom message.
pub fn handler(name: &str) -> Option<Handler> {
    Some(match name {
        "enable_dom0_access" => enable_dom0_access,
        "disable_dom0_access" => disable_dom0_access,
        _ => return None,
    })
}

fn pci_of(ctx: &Context, args: &[Value]) -> Result<Arc<Object>, ApiError> {
    let reference = args.first().and_then(Value::as_str).unwrap_or("");
    let pgpu = ctx.object("PGPU", reference)?;
    ctx.object("PCI", pgpu.get_str("PCI"))
}

fn enable_dom0_access(ctx: Arc<Context>, _caller: Caller, args: Vec<Value>) -> HandlerFuture {
    blocking(ctx, move |ctx| {
        Ok(Value::str(
            pci::enable(ctx, &*pci_of(ctx, &args)?)?.as_str(),
        ))
    })
}

fn disable_dom0_access(ctx: Arc<Context>, _caller: Caller, args: Vec<Value>) -> HandlerFuture {
    blocking(ctx, move |ctx| {
        Ok(Value::str(
            pci::disable(ctx, &*pci_of(ctx, &args)?)?.as_str(),
        ))
    })
}

/// Bring every PGPU's `dom0_access` in line with its PCI's live status.
/// Failures (an unreadable boot configuration) are logged and leave the
/// stored values alone.
pub fn refresh_dom0_access(ctx: &Context) {
    let pgpus = ctx.store.all("PGPU");
    if pgpus.is_empty() {
        return;
    }
    let mut targets = Vec::with_capacity(pgpus.len());
    for pgpu in &pgpus {
        if let Some(addr) = ctx
            .store
            .get_of("PCI", pgpu.get_str("PCI"))
            .and_then(|p| pci::address(&p).ok())
        {
            targets.push((pgpu.clone(), addr));
        }
    }
    let addrs: Vec<_> = targets.iter().map(|(_, a)| *a).collect();
    match ctx.host.statuses(&addrs) {
        Ok(statuses) => {
            let changes = targets
                .iter()
                .zip(statuses)
                .filter_map(|((pgpu, _), status)| change_if_differs(pgpu, status))
                .collect();
            if let Err(e) = ctx.store.apply(changes) {
                tracing::warn!("PGPU dom0_access not refreshed: {e}");
            }
        }
        Err(e) => tracing::warn!("PGPU dom0_access not refreshed: {e}"),
    }
}

/// Set the `dom0_access` of the PGPUs of one PCI to a known status.
pub fn refresh_one(ctx: &Context, pci_ref: &str, status: Dom0Access) {
    let changes = ctx
        .store
        .all("PGPU")
        .iter()
        .filter(|p| p.get_str("PCI") == pci_ref)
        .filter_map(|p| change_if_differs(p, status))
        .collect();
    if let Err(e) = ctx.store.apply(changes) {
        tracing::warn!("PGPU dom0_access not refreshed: {e}");
    }
}

fn change_if_differs(pgpu: &Object, status: Dom0Access) -> Option<Change> {
    (pgpu.get_str("dom0_access") != status.as_str()).then(|| Change::Update {
        reference: pgpu.reference.clone(),
        fields: vec![("dom0_access".into(), Value::str(status.as_str()))],
    })
}
