//! The `message` class: what pcipassd tells an administrator (drift of a
//! remembered hide: [`crate::api::drift`]), as xapi's messages, which Xen
//! Orchestra shows as alerts. Read with the implicit calls and event.from;
//! `get_since` and `destroy` as xapi has them.

use std::sync::Arc;

use crate::api::context::{Caller, Context};
use crate::api::handler::{Handler, HandlerFuture};
use crate::api::objects::record;
use crate::api::{ApiError, Value};
use crate::idl;
use crate::store::Change;

/// This class's custom messages and their handlers.
pub const HANDLERS: &[(&str, Handler)] = &[("get_since", get_since), ("destroy", destroy)];

fn class() -> Result<&'static idl::Class, ApiError> {
    idl::datamodel()
        .class("message")
        .ok_or_else(|| ApiError::Internal("the idl has no message class".into()))
}

/// Every message whose timestamp is at or after `since`, by reference.
fn get_since(ctx: Arc<Context>, _caller: Caller, args: Vec<Value>) -> HandlerFuture {
    Box::pin(async move {
        let since = match args.first() {
            Some(Value::DateTime(s) | Value::String(s)) => s.clone(),
            _ => String::new(),
        };
        let class = class()?;
        let mut found: Vec<_> = ctx
            .store
            .all("message")
            .into_iter()
            .filter(|m| timestamp(m) >= since.as_str())
            .collect();
        found.sort_by(|a, b| timestamp(a).cmp(timestamp(b)));
        Ok(Value::Struct(
            found
                .iter()
                .map(|m| (m.reference.clone(), record(class, m)))
                .collect(),
        ))
    })
}

/// A message's timestamp, `YYYYMMDDTHH:MM:SSZ` (which sorts as text).
pub fn timestamp(m: &crate::store::Object) -> &str {
    match m.get("timestamp") {
        Some(Value::DateTime(s) | Value::String(s)) => s,
        _ => "",
    }
}

fn destroy(ctx: Arc<Context>, _caller: Caller, args: Vec<Value>) -> HandlerFuture {
    Box::pin(async move {
        let reference = args.first().and_then(Value::as_str).unwrap_or("");
        let message = ctx.object("message", reference)?;
        ctx.apply(vec![Change::Delete(message.reference.clone())])?;
        Ok(Value::void())
    })
}
