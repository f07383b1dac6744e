//! The `PGPU` class: the deprecated dom0-access messages act on the PGPU's
//! PCI. `dom0_access` is a derived field (the idl's
//! `derived=dom0_access_status(PCI)`, computed in [`crate::api::derived`]).

use std::sync::Arc;

use crate::api::context::{Caller, Context};
use crate::api::handler::{Handler, HandlerFuture, blocking};
use crate::api::{ApiError, Value, audit, pci};
use crate::store::Object;

/// This class's custom messages and their handlers (`api::invoke`'s tests
/// check them against the idl both ways).
pub const HANDLERS: &[(&str, Handler)] = &[
    ("enable_dom0_access", enable_dom0_access),
    ("disable_dom0_access", disable_dom0_access),
];

fn pci_of(ctx: &Context, args: &[Value]) -> Result<Arc<Object>, ApiError> {
    let reference = args.first().and_then(Value::as_str).unwrap_or("");
    let pgpu = ctx.object("PGPU", reference)?;
    ctx.object("PCI", pgpu.get_str("PCI"))
}

fn enable_dom0_access(ctx: Arc<Context>, caller: Caller, args: Vec<Value>) -> HandlerFuture {
    blocking(ctx, move |ctx| {
        let pci = pci_of(ctx, &args)?;
        let status = audit::edit(
            ctx,
            &caller,
            "PGPU.enable_dom0_access",
            &[pci::address(&pci)?],
            || pci::enable(ctx, &pci),
        )?;
        Ok(Value::str(status.as_str()))
    })
}

fn disable_dom0_access(ctx: Arc<Context>, caller: Caller, args: Vec<Value>) -> HandlerFuture {
    blocking(ctx, move |ctx| {
        let pci = pci_of(ctx, &args)?;
        let status = audit::edit(
            ctx,
            &caller,
            "PGPU.disable_dom0_access",
            &[pci::address(&pci)?],
            || pci::disable(ctx, &pci),
        )?;
        Ok(Value::str(status.as_str()))
    })
}
