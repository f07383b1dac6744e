//! What one client may make the daemon keep: tasks per user, the size of
//! every map, set and string a client may write, event registrations, and
//! how often `event.inject` may write. Every bound is a constant here;
//! refusals are XenAPI errors (`TOO_MANY_PENDING_TASKS`, `INVALID_VALUE`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::api::{ApiError, Value};

/// Tasks one user may hold, finished or not; beyond, the user's oldest
/// finished tasks are collected first.
pub const TASKS_PER_USER: usize = 1000;

/// Unfinished tasks one user may hold; beyond, `TOO_MANY_PENDING_TASKS`.
pub const PENDING_TASKS_PER_USER: usize = 200;

/// Entries a map written by a client may have.
pub const MAP_ENTRIES: usize = 512;

/// Items a set written by a client may have.
pub const SET_ITEMS: usize = 1024;

/// Bytes of a map key.
pub const KEY_BYTES: usize = 1024;

/// Bytes of a string written by a client (a map value, a name, a label).
pub const STRING_BYTES: usize = 64 * 1024;

/// Bytes of a whole map or set written by a client (its keys and values
/// together): with [`TASKS_PER_USER`], what one user can make the
/// database keep is bounded (a task's `other_config` at most 256 KiB, its
/// label and description 64 KiB each: at most 384 MiB for 1000 tasks).
pub const VALUE_BYTES: usize = 256 * 1024;

/// The bytes of the strings in `value` (keys too).
fn text_bytes(value: &Value) -> usize {
    match value {
        Value::String(s) => s.len(),
        Value::Struct(members) => members.iter().map(|(k, v)| k.len() + text_bytes(v)).sum(),
        Value::Array(items) => items.iter().map(text_bytes).sum(),
        _ => 0,
    }
}

/// Entries of an event registration (`event.register`'s classes).
pub const REGISTRATION_ENTRIES: usize = 64;

/// `event.inject` writes per user and second, sustained (with a burst of
/// twice as many).
pub const INJECTS_PER_SECOND: f64 = 50.0;

fn too_big(field: &str, why: String) -> ApiError {
    ApiError::InvalidValue {
        field: field.to_owned(),
        value: why,
    }
}

fn check_string(field: &str, s: &str) -> Result<(), ApiError> {
    if s.len() > STRING_BYTES {
        return Err(too_big(
            field,
            format!("a string of {} bytes (at most {STRING_BYTES})", s.len()),
        ));
    }
    Ok(())
}

/// Check a value a client writes into `field`: strings, and the entries,
/// keys and values of maps and sets, within the bounds above.
pub fn check_written(field: &str, value: &Value) -> Result<(), ApiError> {
    if matches!(value, Value::Struct(_) | Value::Array(_)) && text_bytes(value) > VALUE_BYTES {
        return Err(too_big(
            field,
            format!(
                "a value of {} bytes in all (at most {VALUE_BYTES})",
                text_bytes(value)
            ),
        ));
    }
    match value {
        Value::String(s) => check_string(field, s),
        Value::Struct(members) => {
            if members.len() > MAP_ENTRIES {
                return Err(too_big(
                    field,
                    format!("a map of {} entries (at most {MAP_ENTRIES})", members.len()),
                ));
            }
            for (key, value) in members {
                if key.len() > KEY_BYTES {
                    return Err(too_big(
                        field,
                        format!("a key of {} bytes (at most {KEY_BYTES})", key.len()),
                    ));
                }
                check_written(field, value)?;
            }
            Ok(())
        }
        Value::Array(items) => {
            if items.len() > SET_ITEMS {
                return Err(too_big(
                    field,
                    format!("a set of {} items (at most {SET_ITEMS})", items.len()),
                ));
            }
            items.iter().try_for_each(|item| check_written(field, item))
        }
        _ => Ok(()),
    }
}

/// Writes of its objects' fields (`set_`, `add_to_`, `remove_from_`) and
/// `task.create`s per user and second, sustained (with a burst of twice as
/// many): each makes an event, and the event log (65 536) is shared, so
/// one user must not roll the others' event windows (at this rate one
/// user takes more than 20 minutes to roll it, and clients read theirs
/// every few seconds). Local root is not limited.
pub const WRITES_PER_SECOND: f64 = 50.0;

/// A token bucket per user, `rate` a second with a burst of twice as many.
#[derive(Debug)]
pub struct Budget {
    rate: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

/// `event.inject`'s budget.
pub type InjectBudget = Budget;

impl Default for Budget {
    fn default() -> Budget {
        Budget::per_second(INJECTS_PER_SECOND)
    }
}

impl Budget {
    /// `rate` a second per user.
    pub fn per_second(rate: f64) -> Budget {
        Budget {
            rate,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// May `user` write once more now? Takes it if so.
    pub fn take(&self, user: &str) -> bool {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() > 10_000 {
            buckets.retain(|_, (_, at)| now.duration_since(*at).as_secs() < 60);
        }
        let burst = 2.0 * self.rate;
        let (tokens, at) = buckets.entry(user.to_owned()).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// [`Budget::take`] as a XenAPI answer for a write by `user`:
    /// `OPERATION_NOT_ALLOWED` saying the rate when over it.
    pub fn take_write(&self, user: &str) -> Result<(), ApiError> {
        if self.take(user) {
            return Ok(());
        }
        Err(ApiError::OperationNotAllowed(format!(
            "too many writes by {user}: at most {} a second (each makes an event every client \
             reads); retry in a second",
            self.rate
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_values_are_bounded() {
        assert!(
            check_written(
                "other_config",
                &Value::Struct(vec![("k".into(), Value::str("v"))])
            )
            .is_ok()
        );
        let huge = Value::str("x".repeat(STRING_BYTES + 1));
        let err = check_written("name_label", &huge).unwrap_err();
        assert_eq!(err.code(), "INVALID_VALUE");
        let many = Value::Struct(
            (0..=MAP_ENTRIES)
                .map(|i| (i.to_string(), Value::str("")))
                .collect(),
        );
        assert!(check_written("other_config", &many).is_err());
        let long_key = Value::Struct(vec![("k".repeat(KEY_BYTES + 1), Value::str(""))]);
        assert!(check_written("other_config", &long_key).is_err());
        let deep = Value::Struct(vec![("k".into(), huge)]);
        assert!(check_written("other_config", &deep).is_err());
        // Many entries, each within bounds, but too much together.
        let bulky = Value::Struct(
            (0..8)
                .map(|i| (i.to_string(), Value::str("v".repeat(STRING_BYTES - 8))))
                .collect(),
        );
        assert!(check_written("other_config", &bulky).is_err());
        let tags = Value::strings((0..=SET_ITEMS).map(|i| i.to_string()));
        assert!(check_written("tags", &tags).is_err());
    }

    #[test]
    fn injects_are_rate_limited_per_user() {
        let budget = InjectBudget::default();
        let burst = (2.0 * INJECTS_PER_SECOND) as usize;
        assert!((0..burst).all(|_| budget.take("reader")));
        assert!(!budget.take("reader"));
        assert!(budget.take("other"), "another user has a budget of its own");
        let writes = Budget::per_second(WRITES_PER_SECOND);
        let burst = (2.0 * WRITES_PER_SECOND) as usize;
        assert!((0..burst).all(|_| writes.take_write("reader").is_ok()));
        let err = writes.take_write("reader").unwrap_err();
        assert_eq!(err.code(), "OPERATION_NOT_ALLOWED");
    }
}
