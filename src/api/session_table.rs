//! The session table: a session is made ([`create_session`]), checked on
//! every call ([`check`], which gives the [`Caller`] it stands for and
//! keeps `last_active` up to date), and dropped when idle too long
//! ([`expire_idle`]) or all at once ([`invalidate_all`], a host reboot).
//! Sessions live in the store, so they survive a daemon restart.

use std::sync::Arc;
use std::time::Duration;

use crate::api::context::{Caller, Context, Origin};
use crate::api::objects::new_object;
use crate::api::{ApiError, Role, Value};
use crate::store::{Change, Object, db};
use crate::value::now_datetime;

/// How often `last_active` is written back at most.
const LAST_ACTIVE_GRANULARITY: Duration = Duration::from_secs(60);

fn unix_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Create a session for `user`, authenticated by `source` (`pam`,
/// `users`, `local-root`), and return its ref.
pub fn create_session(
    ctx: &Context,
    user: &str,
    role: Role,
    superuser: bool,
    originator: &str,
    source: &str,
) -> Result<String, ApiError> {
    let reference = db::new_ref();
    let now = now_datetime();
    let session = new_object(
        "session",
        reference.clone(),
        db::new_uuid(),
        vec![
            ("this_host", Value::String(ctx.host_ref.clone())),
            ("this_user", Value::str("OpaqueRef:NULL")),
            ("last_active", now.clone()),
            ("validation_time", now),
            ("is_local_superuser", Value::Bool(superuser)),
            ("auth_user_name", Value::str(user)),
            ("originator", Value::str(originator)),
            ("role", Value::str(role.as_str())),
            ("auth_source", Value::str(source)),
            ("last_active_unix", Value::Int(unix_seconds())),
            ("login_ns", Value::Int(unix_nanos())),
        ],
    );
    let mut changes = vec![Change::Create(session)];
    // Keep each user's sessions bounded: drop the least recently active.
    let mut own: Vec<Arc<Object>> = ctx
        .store
        .all("session")
        .into_iter()
        .filter(|s| s.get_str("auth_user_name") == user)
        .collect();
    if own.len() >= ctx.config.max_sessions_per_user {
        own.sort_by_key(|s| (last_active_unix(s), login_ns(s)));
        let excess = own.len() + 1 - ctx.config.max_sessions_per_user;
        changes.extend(
            own.iter()
                .take(excess)
                .map(|s| Change::Delete(s.reference.clone())),
        );
    }
    ctx.apply(changes)?;
    Ok(reference)
}

fn unix_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn login_ns(session: &Object) -> i64 {
    match session.get("login_ns") {
        Some(Value::Int(n)) => *n,
        _ => 0,
    }
}

fn last_active_unix(session: &Object) -> i64 {
    match session.get("last_active_unix") {
        Some(Value::Int(n)) => *n,
        _ => 0,
    }
}

/// Check a session ref and return the caller it stands for.
pub fn check(ctx: &Context, reference: &str, origin: Origin) -> Result<Caller, ApiError> {
    let invalid = || ApiError::SessionInvalid(reference.to_owned());
    let session = ctx.store.get_of("session", reference).ok_or_else(invalid)?;
    let now = unix_seconds();
    let idle = now.saturating_sub(last_active_unix(&session));
    if idle > ctx.config.session_idle_timeout.as_secs() as i64 {
        ctx.store
            .apply(vec![Change::Delete(reference.to_owned())])?;
        tracing::info!(
            user = session.get_str("auth_user_name"),
            "session expired after {idle} s idle"
        );
        return Err(invalid());
    }
    if idle > LAST_ACTIVE_GRANULARITY.as_secs() as i64 {
        // Bookkeeping, not the call: a store that refuses writes (its file
        // vanished) must not turn every read into an error.
        if let Err(e) = ctx.apply(vec![Change::Update {
            reference: reference.to_owned(),
            fields: vec![
                ("last_active".into(), now_datetime()),
                ("last_active_unix".into(), Value::Int(now)),
            ],
        }]) {
            tracing::warn!("cannot record the session's activity: {e}");
        }
    }
    Ok(Caller {
        session: reference.to_owned(),
        user: session.get_str("auth_user_name").to_owned(),
        role: session.get_str("role").parse().unwrap_or(Role::ReadOnly),
        superuser: matches!(session.get("is_local_superuser"), Some(Value::Bool(true))),
        origin,
        task: None,
    })
}

/// Who a session is, for the page on the host: its user and the
/// messages its role may call, as lowercase `class.message` names (the
/// spelling of xapi's RBAC permissions), so the page offers only what
/// the API would allow. `None` for a session that is not (or no longer)
/// valid.
pub fn whoami(ctx: &Context, reference: &str, origin: Origin) -> Option<(String, Vec<String>)> {
    let caller = check(ctx, reference, origin).ok()?;
    let mut permissions: Vec<String> = crate::idl::datamodel()
        .methods()
        .filter(|m| m.session && caller.role.allows(m.role))
        .map(|m| m.wire_name.to_ascii_lowercase())
        .collect();
    permissions.sort();
    permissions.dedup();
    Some((caller.user, permissions))
}

/// Drop every session (a host reboot does this).
pub fn invalidate_all(ctx: &Context) -> Result<usize, ApiError> {
    let sessions = ctx.store.all("session");
    let count = sessions.len();
    ctx.apply(
        sessions
            .iter()
            .map(|s| Change::Delete(s.reference.clone()))
            .collect(),
    )?;
    Ok(count)
}

/// Drop sessions idle longer than the timeout; returns how many.
pub fn expire_idle(ctx: &Context) -> Result<usize, ApiError> {
    let now = unix_seconds();
    let limit = ctx.config.session_idle_timeout.as_secs() as i64;
    let stale: Vec<Change> = ctx
        .store
        .all("session")
        .iter()
        .filter(|s| now.saturating_sub(last_active_unix(s)) > limit)
        .map(|s| Change::Delete(s.reference.clone()))
        .collect();
    let count = stale.len();
    ctx.apply(stale)?;
    Ok(count)
}
