//! Identity and drift, the API's part (issue 25): what pcipass hid at
//! each address is remembered in the store (its `meta` table); at start,
//! after a reboot and whenever the change watch sees the boot
//! configuration or `/proc/cmdline` move, the remembered hides are held
//! against the host ([`drift::judge`]), and each new drift is logged and
//! becomes a XenAPI `message` (xapi's Message class, which Xen Orchestra
//! shows as an alert) and a `drift` entry of the readiness report.
//!
//! pcipass's own give-back forgets its addresses before the edit
//! ([`editing`]), under the same lock as the look, so it is never taken
//! for a dropped hide.

use std::collections::BTreeMap;

use crate::api::context::Context;
use crate::api::objects::new_object;
use crate::api::{ApiError, Value};
use crate::domain::service::drift::{self, Identity};
use crate::domain::{Dom0Access, PciAddress};
use crate::store::{Change, db};
use crate::value::now_datetime;

/// `meta` key: the remembered hides, a JSON map of address to identity.
const REMEMBERED: &str = "drift_remembered";

/// `meta` key: the drifts already reported, a JSON map of address to
/// `NAME: body`.
const REPORTED: &str = "drift_reported";

/// The most `message` objects kept; the oldest go first.
pub const MAX_MESSAGES: usize = 1000;

fn load(ctx: &Context, key: &str) -> BTreeMap<String, String> {
    match ctx.store.meta_get(key) {
        Ok(Some(text)) => serde_json::from_str(&text).unwrap_or_else(|e| {
            tracing::warn!(key, "drift memory unreadable, started afresh: {e}");
            BTreeMap::new()
        }),
        Ok(None) => BTreeMap::new(),
        Err(e) => {
            tracing::warn!(key, "drift memory unreadable: {e}");
            BTreeMap::new()
        }
    }
}

fn save(ctx: &Context, key: &str, map: &BTreeMap<String, String>) -> Result<(), ApiError> {
    let text =
        serde_json::to_string(map).map_err(|e| ApiError::Internal(format!("drift memory: {e}")))?;
    ctx.store.meta_set(key, &text)?;
    Ok(())
}

/// Run `edit`, pcipass's own hide (`hide`) or give-back of `addrs`, and
/// keep the memory right around it: a give-back forgets its addresses
/// first (so the watch never takes it for a dropped hide) and, if it
/// failed, remembers again those the next boot still hides; a hide that
/// succeeded remembers what is at each address it hid. The lock is held
/// for the memory only, never across the edit: concurrent edits still
/// meet in one batch.
pub fn editing<T>(
    ctx: &Context,
    addrs: &[PciAddress],
    hide: bool,
    edit: impl FnOnce() -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    if !hide {
        let _look = ctx.drift.lock().unwrap_or_else(|p| p.into_inner());
        let mut remembered = load(ctx, REMEMBERED);
        let mut reported = load(ctx, REPORTED);
        for addr in addrs {
            remembered.remove(&addr.to_string());
            reported.remove(&addr.to_string());
        }
        save(ctx, REMEMBERED, &remembered)?;
        save(ctx, REPORTED, &reported)?;
    }
    let answer = edit();
    if answer.is_ok() == hide
        && let Err(e) = remember_hidden(ctx, addrs)
    {
        tracing::warn!("what is hidden is not remembered: {e}");
    }
    answer
}

/// Remember each of `addrs` the next boot hides, with what is there now
/// (what was reported of it is over).
fn remember_hidden(ctx: &Context, addrs: &[PciAddress]) -> Result<(), ApiError> {
    let _look = ctx.drift.lock().unwrap_or_else(|p| p.into_inner());
    let ids = ctx.host.identities(addrs)?;
    let present: Vec<(PciAddress, Identity)> = addrs
        .iter()
        .zip(ids)
        .filter_map(|(a, id)| Some((*a, id?)))
        .collect();
    let just: Vec<PciAddress> = present.iter().map(|(a, _)| *a).collect();
    let statuses = ctx.host.statuses(&just)?;
    let mut remembered = load(ctx, REMEMBERED);
    let mut reported = load(ctx, REPORTED);
    for ((addr, id), status) in present.iter().zip(statuses) {
        if matches!(status, Dom0Access::DisableOnReboot | Dom0Access::Disabled) {
            remembered.insert(addr.to_string(), id.to_string());
            reported.remove(&addr.to_string());
        }
    }
    save(ctx, REMEMBERED, &remembered)?;
    save(ctx, REPORTED, &reported)
}

/// Hold the remembered hides against the host now (`when`: for the
/// log); report each new drift. The number reported.
pub fn check(ctx: &Context, when: &str) -> Result<usize, ApiError> {
    let _look = ctx.drift.lock().unwrap_or_else(|p| p.into_inner());
    let remembered: Vec<(PciAddress, Identity)> = load(ctx, REMEMBERED)
        .iter()
        .filter_map(|(a, id)| Some((a.parse().ok()?, id.parse().ok()?)))
        .collect();
    let mut reported = load(ctx, REPORTED);
    if remembered.is_empty() && reported.is_empty() {
        return Ok(0);
    }
    let addrs: Vec<PciAddress> = remembered.iter().map(|(a, _)| *a).collect();
    let ids = ctx.host.identities(&addrs)?;
    let present: Vec<PciAddress> = addrs
        .iter()
        .zip(&ids)
        .filter(|(_, id)| id.is_some())
        .map(|(a, _)| *a)
        .collect();
    let statuses = ctx.host.statuses(&present)?;
    let hidden_next = |a: &PciAddress| {
        present
            .iter()
            .zip(&statuses)
            .any(|(p, s)| p == a && matches!(s, Dom0Access::DisableOnReboot | Dom0Access::Disabled))
    };
    let now: Vec<Option<(Identity, bool)>> = addrs
        .iter()
        .zip(&ids)
        .map(|(a, id)| id.map(|id| (id, hidden_next(a))))
        .collect();
    let drifts = drift::judge(&remembered, &now);
    // A drift that went away (the hide is back) may be reported again.
    reported.retain(|a, _| drifts.iter().any(|d| d.address.to_string() == *a));
    let mut made = 0;
    for d in &drifts {
        let said = format!("{}: {}", d.name(), d.body());
        if reported.get(&d.address.to_string()) == Some(&said) {
            continue;
        }
        tracing::warn!(pci = %d.address, when, message = d.name(), "{}", d.body());
        message(ctx, d.name(), d.priority(), &d.body())?;
        reported.insert(d.address.to_string(), said);
        made += 1;
    }
    save(ctx, REPORTED, &reported)?;
    Ok(made)
}

/// The drift reported for `addr`, if any (`NAME: body`).
pub fn of(ctx: &Context, addr: &PciAddress) -> Option<String> {
    load(ctx, REPORTED).remove(&addr.to_string())
}

/// A `message` about this host, as xapi makes them; the oldest go beyond
/// [`MAX_MESSAGES`].
fn message(ctx: &Context, name: &str, priority: i64, body: &str) -> Result<(), ApiError> {
    let host_uuid = ctx
        .store
        .get(&ctx.host_ref)
        .map(|h| h.uuid.clone())
        .unwrap_or_default();
    let mut changes = vec![Change::Create(new_object(
        "message",
        db::new_ref(),
        db::new_uuid(),
        vec![
            ("name", Value::str(name)),
            ("priority", Value::Int(priority)),
            ("cls", Value::str("Host")),
            ("obj_uuid", Value::str(&host_uuid)),
            ("timestamp", now_datetime()),
            ("body", Value::str(body)),
        ],
    ))];
    let mut all = ctx.store.all("message");
    if all.len() >= MAX_MESSAGES {
        all.sort_by(|a, b| {
            crate::api::message::timestamp(a).cmp(crate::api::message::timestamp(b))
        });
        let over = all.len() + 1 - MAX_MESSAGES;
        changes.extend(
            all.iter()
                .take(over)
                .map(|m| Change::Delete(m.reference.clone())),
        );
    }
    ctx.apply(changes)?;
    Ok(())
}
