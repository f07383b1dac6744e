//! The audit of dom0 access (issue 25): every edit pcipass makes (who,
//! which session, from where, the call, the functions, the outcome, and
//! each file's SHA-256 before and after) and every outside change of
//! those files the change watch sees, kept in the store with a hash chain
//! and bounded ([`KEEP`]); read through `host.get_dom0_access_audit` and
//! `pcipass host-audit`.

use std::sync::atomic::Ordering;

use serde_json::json;

use crate::api::context::{Caller, Context};
use crate::api::{ApiError, Value};
use crate::domain::PciAddress;
use crate::store::verify_chain;
use crate::value::now_datetime;

/// The most records kept; the oldest go first.
pub const KEEP: usize = 2000;

/// `meta` key: the digests of the edited files as last audited.
const LAST: &str = "audit_files";

/// The files' digests as text, for the record and the comparison.
type Digests = Vec<(String, Option<String>)>;

fn last(ctx: &Context) -> Option<Digests> {
    let text = ctx.store.meta_get(LAST).ok()??;
    serde_json::from_str(&text).ok()
}

fn set_last(ctx: &Context, digests: &Digests) {
    match serde_json::to_string(digests) {
        Ok(text) => {
            if let Err(e) = ctx.store.meta_set(LAST, &text) {
                tracing::warn!("audit: the files' digests not kept: {e}");
            }
        }
        Err(e) => tracing::warn!("audit: {e}"),
    }
}

/// The files that differ between `before` and `after`, each with its
/// digest before and after (`-`: absent).
fn changed(before: &Digests, after: &Digests) -> Vec<serde_json::Value> {
    let digest = |list: &Digests, path: &str| {
        list.iter()
            .find(|(p, _)| p == path)
            .and_then(|(_, d)| d.clone())
            .unwrap_or_else(|| "-".to_owned())
    };
    let mut paths: Vec<&String> = before.iter().chain(after).map(|(p, _)| p).collect();
    paths.sort();
    paths.dedup();
    paths
        .into_iter()
        .filter_map(|p| {
            let (b, a) = (digest(before, p), digest(after, p));
            (b != a).then(|| json!({"file": format!("/{p}"), "before": b, "after": a}))
        })
        .collect()
}

fn append(ctx: &Context, record: &serde_json::Value) {
    if let Err(e) = ctx.store.audit_append(&record.to_string(), KEEP) {
        tracing::error!("audit record not kept: {e}");
    }
}

/// Run `edit`, pcipass's own boot-configuration edit `call` of `addrs`
/// by `caller`, and record it: who, the session's uuid (never its
/// reference), the origin, the outcome and the files it changed. The
/// change watch does not take the edit's writes for an outside change.
pub fn edit<T>(
    ctx: &Context,
    caller: &Caller,
    call: &str,
    addrs: &[PciAddress],
    edit: impl FnOnce() -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    {
        let _look = ctx.drift.lock().unwrap_or_else(|p| p.into_inner());
        ctx.edits_in_flight.fetch_add(1, Ordering::SeqCst);
    }
    let before = ctx.host.edited_files();
    let answer = edit();
    let after = ctx.host.edited_files();
    let session = ctx
        .store
        .get_of("session", &caller.session)
        .map(|s| s.uuid.clone())
        .unwrap_or_default();
    let outcome = match &answer {
        Ok(_) => "ok".to_owned(),
        Err(e) => e.description().join(" "),
    };
    append(
        ctx,
        &json!({
            "time": now_datetime().as_str().unwrap_or_default(),
            "kind": "edit",
            "user": caller.user,
            "session": session,
            "origin": format!("{:?}", caller.origin),
            "call": call,
            "functions": addrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(" "),
            "outcome": outcome,
            "files": changed(&before, &after),
        }),
    );
    {
        let _look = ctx.drift.lock().unwrap_or_else(|p| p.into_inner());
        set_last(ctx, &after);
        ctx.edits_in_flight.fetch_sub(1, Ordering::SeqCst);
    }
    answer
}

/// Record the edited files' outside changes since the last look (at
/// start: since pcipassd last ran). Deferred, with `false`, while one of
/// pcipass's own edits is in flight.
pub fn outside(ctx: &Context, when: &str) -> bool {
    let _look = ctx.drift.lock().unwrap_or_else(|p| p.into_inner());
    if ctx.edits_in_flight.load(Ordering::SeqCst) > 0 {
        return false;
    }
    let now = ctx.host.edited_files();
    let Some(before) = last(ctx) else {
        set_last(ctx, &now);
        return true;
    };
    let files = changed(&before, &now);
    if !files.is_empty() {
        tracing::warn!(
            when,
            files = files.len(),
            "the boot configuration was changed outside pcipass"
        );
        append(
            ctx,
            &json!({
                "time": now_datetime().as_str().unwrap_or_default(),
                "kind": "outside",
                "call": when,
                "files": files,
            }),
        );
        set_last(ctx, &now);
    }
    true
}

/// Every kept record, oldest first, as `host.get_dom0_access_audit`
/// answers it: the record's keys as text, plus `seq`, `hash`, `prev` and
/// `chain` (`intact`, or where it is broken).
pub fn records(ctx: &Context) -> Result<Value, ApiError> {
    let rows = ctx.store.audit_rows()?;
    let chain = match verify_chain(&rows) {
        Ok(()) => "intact".to_owned(),
        Err(why) => format!("broken: {why}"),
    };
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(files) => files
            .iter()
            .map(|f| {
                format!(
                    "{} {} -> {}",
                    f["file"].as_str().unwrap_or(""),
                    f["before"].as_str().unwrap_or(""),
                    f["after"].as_str().unwrap_or("")
                )
            })
            .collect::<Vec<_>>()
            .join("; "),
        other => other.to_string(),
    };
    Ok(Value::Array(
        rows.iter()
            .map(|row| {
                let mut members = vec![
                    ("seq".to_owned(), Value::String(row.seq.to_string())),
                    ("hash".to_owned(), Value::String(row.hash.clone())),
                    ("prev".to_owned(), Value::String(row.prev.clone())),
                    ("chain".to_owned(), Value::String(chain.clone())),
                ];
                match serde_json::from_str::<serde_json::Value>(&row.record) {
                    Ok(serde_json::Value::Object(map)) => {
                        members
                            .extend(map.iter().map(|(k, v)| (k.clone(), Value::String(text(v)))));
                    }
                    _ => members.push(("record".to_owned(), Value::String(row.record.clone()))),
                }
                Value::Struct(members)
            })
            .collect(),
    ))
}
