//! The daemon's background work while it serves: session expiry and task
//! collection once a minute, and the watch for hand edits of the boot
//! configuration or a changed `/proc/cmdline`, which refreshes
//! `PGPU.dom0_access`.

use std::sync::Arc;
use std::time::Duration;

use crate::api::context::Context;
use crate::api::{audit, derived, drift, session_table, task};

/// Start the background work on the runtime: housekeeping (idle sessions,
/// finished tasks) every minute, and the change watch every
/// `watch_interval`.
pub(super) fn spawn_background(ctx: Arc<Context>, watch_interval: Duration) {
    let housekeeping = ctx.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            let ctx = housekeeping.clone();
            let _ = tokio::task::spawn_blocking(move || {
                match session_table::expire_idle(&ctx) {
                    Ok(n) if n > 0 => tracing::info!(sessions = n, "expired idle sessions"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!("session expiry failed: {e}"),
                }
                match task::collect_finished(&ctx) {
                    Ok(n) if n > 0 => tracing::info!(tasks = n, "collected finished tasks"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!("task collection failed: {e}"),
                }
            })
            .await;
        }
    });
    // Hand edits of the boot configuration or a changed /proc/cmdline
    // must show up in PGPU.dom0_access (and as events) without anyone
    // reading the PGPU: the one trigger of derived fields, on every tick.
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(watch_interval);
        // An outside change seen while an own edit was under way is
        // audited at the next tick.
        let mut deferred = false;
        loop {
            tick.tick().await;
            let work = ctx.clone();
            deferred = tokio::task::spawn_blocking(move || {
                let moved = derived::catch_up(&work);
                // Something moved: hold the remembered hides against it.
                if moved && let Err(e) = drift::check(&work, "the change watch") {
                    tracing::warn!("drift not checked: {e}");
                }
                (moved || deferred) && !audit::outside(&work, "the change watch")
            })
            .await
            .unwrap_or(deferred);
        }
    });
}
