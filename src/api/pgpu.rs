//! The `PGPU` class: the deprecated dom0-access messages act on the PGPU's
//! PCI. `dom0_access` is a derived field (the idl's
//! `derived=dom0_access_status(PCI)`, computed in [`crate::api::derived`]).

use std::sync::Arc;

use crate::api::context::{Caller, Context};
use crate::api::invoke::{Handler, HandlerFuture, blocking};
use crate::api::{ApiError, Value, pci};
use crate::store::Object;

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
