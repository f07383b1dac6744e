//! The `event` class: `event.from` (blocking, token based), `event.inject`,
//! `event.get_current_id`, and the legacy `register`/`next`/`unregister`.
//! Events come from the store's log: one per changed object, with the new
//! snapshot, coalesced per object within one batch.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::api::context::{Caller, Context};
use crate::api::handler::{Handler, HandlerFuture};
use crate::api::objects::{self, record};
use crate::api::quota;
use crate::api::{ApiError, Value, derived};
use crate::idl;
use crate::store::{Change, Event, Object, Operation};
use crate::value::Rows;

/// This class's custom messages and their handlers (`api::invoke`'s tests
/// check them against the idl both ways).
pub const HANDLERS: &[(&str, Handler)] = &[
    ("from", from),
    ("register", register),
    ("unregister", unregister),
    ("next", next),
    ("get_current_id", get_current_id),
    ("inject", inject),
];

/// Longest an `event.from` call blocks, whatever timeout it asks for (a
/// client's own timeouts are shorter: Xen Orchestra waits 60 s).
const MAX_WAIT: Duration = Duration::from_secs(3600);
/// `event.next` returns an empty batch after this long without events.
const NEXT_WAIT: Duration = Duration::from_secs(60);

/// Legacy `event.register` state: per session, its classes and position
/// (at most [`quota::REGISTRATION_ENTRIES`] entries, dropped with their
/// session); the budget of `event.inject`'s writes; and how far each
/// `event.from` stream that sees tasks has been handed
/// ([`handed_to_streams`]).
#[derive(Debug, Default)]
pub struct Registrations {
    sessions: Mutex<HashMap<String, (BTreeSet<String>, u64)>>,
    injects: quota::InjectBudget,
    streams: Mutex<HashMap<String, Stream>>,
    handed: tokio::sync::Notify,
}

/// An `event.from` stream that subscribes to tasks: its caller (whose
/// tasks it may see, by [`objects::visible`]) and the generation of the
/// last token it was handed.
#[derive(Debug)]
struct Stream {
    caller: Caller,
    handed: u64,
}

/// Format an event.from token.
pub fn token(generation: u64) -> String {
    format!("{generation:020},{:020}", 0)
}

/// Parse an event.from token (`""` is the beginning).
pub fn parse_token(token: &str) -> Result<Option<u64>, ApiError> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || ApiError::EventFromTokenParseFailure(token.to_owned());
    let (db, _messages) = token.split_once(',').ok_or_else(bad)?;
    db.trim().parse::<u64>().map(Some).map_err(|_| bad())
}

/// A subscription: `*`, a class, or `class/ref`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Subscription {
    class: Option<String>,
    reference: Option<String>,
}

fn parse_subscriptions(classes: &[Value]) -> Vec<Subscription> {
    classes
        .iter()
        .filter_map(Value::as_str)
        .map(|entry| {
            if entry == "*" {
                return Subscription {
                    class: None,
                    reference: None,
                };
            }
            let (class, reference) = match entry.split_once('/') {
                Some((c, r)) => (c, Some(r.to_owned())),
                None => (entry, None),
            };
            Subscription {
                class: Some(class.to_lowercase()),
                reference,
            }
        })
        .collect()
}

fn matches(subs: &[Subscription], class: &str, reference: &str) -> bool {
    subs.iter().any(|s| {
        s.class.as_deref().is_none_or(|c| c == class.to_lowercase())
            && s.reference.as_deref().is_none_or(|r| r == reference)
    })
}

/// The members an event starts with: id, timestamp, class, operation.
fn event_head(id: u64, class: &str, operation: Operation) -> Vec<(String, Value)> {
    vec![
        ("id".to_owned(), Value::String(id.to_string())),
        ("timestamp".to_owned(), Value::str("0.0")),
        ("class".to_owned(), Value::String(class.to_lowercase())),
        ("operation".to_owned(), Value::str(operation.as_str())),
    ]
}

fn event_value(event: &Event, operation: Operation) -> Value {
    let mut members = event_head(event.id, &event.class, operation);
    members.push(("ref".to_owned(), Value::String(event.reference.clone())));
    if operation != Operation::Del
        && let Some(class) = idl::datamodel().class(&event.class)
    {
        members.push(("snapshot".to_owned(), record(class, &event.snapshot)));
    }
    Value::Struct(members)
}

/// Coalesce events per object: the newest state wins; an object created
/// and changed in the batch is an `add`, one created and destroyed is a
/// `del`.
fn coalesce(events: Vec<Event>) -> Vec<(Event, Operation)> {
    let mut order: Vec<String> = Vec::new();
    let mut latest: HashMap<String, (Event, Operation)> = HashMap::new();
    for event in events {
        let op = event.operation;
        match latest.get_mut(&event.reference) {
            Some((slot, slot_op)) => {
                let merged = match (*slot_op, op) {
                    (Operation::Add, Operation::Mod) => Operation::Add,
                    (Operation::Add, Operation::Del) => Operation::Del,
                    (_, op) => op,
                };
                *slot = event;
                *slot_op = merged;
            }
            None => {
                order.push(event.reference.clone());
                latest.insert(event.reference.clone(), (event, op));
            }
        }
    }
    order
        .into_iter()
        .filter_map(|r| latest.remove(&r))
        .collect()
}

fn valid_ref_counts(ctx: &Context) -> Value {
    let counts = ctx.store.counts();
    Value::Struct(
        idl::datamodel()
            .classes
            .iter()
            .filter(|c| c.is_stored())
            .map(|c| {
                let n = counts
                    .iter()
                    .find(|(k, _)| *k == c.name)
                    .map(|(_, n)| *n)
                    .unwrap_or(0);
                (
                    c.name.to_lowercase(),
                    Value::Int32(i32::try_from(n).unwrap_or(i32::MAX)),
                )
            })
            .collect(),
    )
}

fn batch(caller: &Caller, subs: &[Subscription], events: Vec<Event>) -> Vec<Value> {
    coalesce(events)
        .into_iter()
        .filter(|(e, _)| matches(subs, &e.class, &e.reference))
        .filter(|(e, _)| objects::visible(caller, &e.snapshot))
        .filter(|(e, op)| {
            !(e.class == "session" && *op == Operation::Del && e.reference == caller.session)
        })
        .map(|(e, op)| event_value(&e, op))
        .collect()
}

/// Every visible stored object as an `add` event, and the generation read
/// *before* the copy: the token to hand out with it. A write landing while
/// the objects are copied is then at or after the token, so the next
/// `event.from` delivers it (perhaps again, which is harmless); a token
/// read after the copy could pass it by.
///
/// A class subscribed to as a whole whose objects every caller may see is
/// answered from its shared `get_all_records` snapshot, as rows: the
/// codecs splice the records they already encoded, so a client's first
/// sync costs about what listing the classes costs. Each of those events
/// carries the class generation its records are at.
fn snapshot_all(ctx: &Context, caller: &Caller, subs: &[Subscription]) -> (Vec<Value>, u64) {
    let generation = ctx.store.generation();
    let mut events = Vec::new();
    for class in idl::datamodel().classes.iter().filter(|c| c.is_stored()) {
        if whole_class(subs, &class.name) && !objects::has_private_objects(&class.name) {
            let (at, records) = objects::all_records(ctx, class);
            if !records.is_empty() {
                events.push(Value::Rows(Rows::new(
                    records,
                    event_head(at, &class.name, Operation::Add),
                    "ref",
                    "snapshot",
                )));
            }
            continue;
        }
        // all_records catches derived fields up itself; here it is done
        // once per class read object by object.
        if derived::has_derived(&class.name) {
            derived::catch_up(ctx);
        }
        for object in ctx.store.all(&class.name) {
            if !matches(subs, &class.name, &object.reference) || !objects::visible(caller, &object)
            {
                continue;
            }
            events.push(event_value(
                &Event {
                    id: generation,
                    class: class.name.clone(),
                    operation: Operation::Add,
                    reference: object.reference.clone(),
                    snapshot: object,
                },
                Operation::Add,
            ));
        }
    }
    (events, generation)
}

/// Is `class` subscribed to as a whole (`*` or its name without a ref)?
fn whole_class(subs: &[Subscription], class: &str) -> bool {
    subs.iter().any(|s| {
        s.reference.is_none() && s.class.as_deref().is_none_or(|c| c == class.to_lowercase())
    })
}

fn timeout_of(value: Option<&Value>) -> Duration {
    let seconds = match value {
        Some(Value::Float(x)) => *x,
        Some(Value::Int(n)) => *n as f64,
        _ => 0.0,
    };
    // As xapi's deadline (now + timeout): a negative or NaN timeout has
    // already passed, so the call answers at once.
    if seconds.is_nan() || seconds <= 0.0 {
        Duration::ZERO
    } else {
        Duration::try_from_secs_f64(seconds)
            .unwrap_or(MAX_WAIT)
            .min(MAX_WAIT)
    }
}

/// Wait until the log holds events after `since` that `keep` accepts, or
/// the deadline passes; returns them (possibly empty) and the generation
/// they reach.
async fn wait_for(
    ctx: &Context,
    since: u64,
    wait: Duration,
    keep: impl Fn(&[Event]) -> bool,
) -> Result<(Vec<Event>, u64), ApiError> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut changes = ctx.store.subscribe();
    loop {
        changes.borrow_and_update();
        let generation = ctx.store.generation();
        let events = ctx.store.events_since(since).ok_or(ApiError::EventsLost)?;
        if keep(&events) {
            return Ok((events, generation));
        }
        match tokio::time::timeout_at(deadline, changes.changed()).await {
            Ok(Ok(())) => continue,
            _ => return Ok((Vec::new(), generation)),
        }
    }
}

fn from(ctx: Arc<Context>, caller: Caller, args: Vec<Value>) -> HandlerFuture {
    Box::pin(async move {
        let classes = match args.first() {
            Some(Value::Array(items)) => items.clone(),
            _ => Vec::new(),
        };
        let subs = parse_subscriptions(&classes);
        let since = parse_token(args.get(1).and_then(Value::as_str).unwrap_or(""))?;
        let wait = timeout_of(args.get(2));
        let (events, generation) = match since {
            None => snapshot_all(&ctx, &caller, &subs),
            Some(since) => {
                let (raw, generation) = wait_for(&ctx, since, wait, |events| {
                    !batch(&caller, &subs, events.to_vec()).is_empty()
                })
                .await?;
                (batch(&caller, &subs, raw), generation)
            }
        };
        handed_out(&ctx, &caller, &subs, generation);
        Ok(Value::Struct(vec![
            ("events".into(), Value::Array(events)),
            ("valid_ref_counts".into(), valid_ref_counts(&ctx)),
            ("token".into(), Value::String(token(generation))),
        ]))
    })
}

/// Remember that `caller`'s stream was handed everything up to
/// `generation`, when it subscribes to tasks (`*` or `task`).
fn handed_out(ctx: &Context, caller: &Caller, subs: &[Subscription], generation: u64) {
    let sees_tasks = subs
        .iter()
        .any(|s| s.class.as_deref().is_none_or(|c| c == "task"));
    if caller.session.is_empty() || !sees_tasks {
        return;
    }
    let registrations = &ctx.event_registrations;
    if let Ok(mut streams) = registrations.streams.lock() {
        // Streams of sessions that ended go with them.
        streams.retain(|session, _| ctx.store.get_of("session", session).is_some());
        streams.insert(
            caller.session.clone(),
            Stream {
                caller: caller.clone(),
                handed: generation,
            },
        );
    }
    registrations.handed.notify_waiters();
}

/// Has every `event.from` stream of a live session that may see `task`
/// been handed `generation` or later?
pub fn handed_to_streams(ctx: &Context, task: &Object, generation: u64) -> bool {
    match ctx.event_registrations.streams.lock() {
        Ok(streams) => !streams.iter().any(|(session, s)| {
            objects::visible(&s.caller, task)
                && s.handed < generation
                && ctx.store.get_of("session", session).is_some()
        }),
        Err(_) => true,
    }
}

/// Wait until `done` holds, checking it again whenever the store changes
/// or a stream is handed events, for at most `bound`; true when it held.
pub async fn wait_until(ctx: &Context, bound: Duration, done: impl Fn() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + bound;
    let registrations = &ctx.event_registrations;
    let mut changes = ctx.store.subscribe();
    loop {
        let handed = registrations.handed.notified();
        tokio::pin!(handed);
        handed.as_mut().enable();
        changes.borrow_and_update();
        if done() {
            return true;
        }
        let woken = tokio::time::timeout_at(deadline, async {
            tokio::select! {
                _ = &mut handed => {}
                _ = changes.changed() => {}
            }
        });
        if woken.await.is_err() {
            return false;
        }
    }
}

/// `event.inject`: a `mod` event on the object and its token. Only a
/// caller whose role may write the object's class makes the event, within
/// its user's budget ([`quota::INJECTS_PER_SECOND`]); anyone else gets the
/// current token and no event, so no client can flush the others' events
/// out of the log.
fn inject(ctx: Arc<Context>, caller: Caller, args: Vec<Value>) -> HandlerFuture {
    Box::pin(async move {
        let class = args.first().and_then(Value::as_str).unwrap_or("");
        let reference = args.get(1).and_then(Value::as_str).unwrap_or("");
        let declared = idl::datamodel().class_ci(class);
        ctx.object(declared.map_or(class, |c| c.name.as_str()), reference)?;
        let may_write = declared.is_some_and(|c| caller.may(c.default_role));
        if !may_write || !ctx.event_registrations.injects.take(&caller.user) {
            if may_write {
                tracing::debug!(user = %caller.user, "event.inject over budget: no event made");
            }
            return Ok(Value::String(token(ctx.store.generation())));
        }
        let generation = ctx.apply(vec![Change::Touch(reference.to_owned())])?;
        Ok(Value::String(token(generation)))
    })
}

fn get_current_id(ctx: Arc<Context>, _caller: Caller, _args: Vec<Value>) -> HandlerFuture {
    Box::pin(async move {
        Ok(Value::Int(
            i64::try_from(ctx.store.generation()).unwrap_or(i64::MAX),
        ))
    })
}

fn class_set(args: &[Value]) -> BTreeSet<String> {
    match args.first() {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_lowercase)
            .collect(),
        _ => BTreeSet::new(),
    }
}

fn register(ctx: Arc<Context>, caller: Caller, args: Vec<Value>) -> HandlerFuture {
    Box::pin(async move {
        let generation = ctx.store.generation();
        let mut sessions = ctx
            .event_registrations
            .sessions
            .lock()
            .map_err(|_| ApiError::Internal("event registrations poisoned".into()))?;
        // Registrations of sessions that ended (logout, expiry, reboot)
        // go with them.
        sessions.retain(|session, _| ctx.store.get_of("session", session).is_some());
        let entry = sessions
            .entry(caller.session.clone())
            .or_insert((BTreeSet::new(), generation));
        let mut wanted = entry.0.clone();
        wanted.extend(class_set(&args));
        if wanted.len() > quota::REGISTRATION_ENTRIES {
            return Err(ApiError::InvalidValue {
                field: "classes".into(),
                value: format!(
                    "{} classes registered (at most {})",
                    wanted.len(),
                    quota::REGISTRATION_ENTRIES
                ),
            });
        }
        entry.0 = wanted;
        Ok(Value::void())
    })
}

fn unregister(ctx: Arc<Context>, caller: Caller, args: Vec<Value>) -> HandlerFuture {
    Box::pin(async move {
        let remove = class_set(&args);
        let mut sessions = ctx
            .event_registrations
            .sessions
            .lock()
            .map_err(|_| ApiError::Internal("event registrations poisoned".into()))?;
        if let Some(entry) = sessions.get_mut(&caller.session) {
            entry.0.retain(|c| !remove.contains(c));
        }
        Ok(Value::void())
    })
}

fn next(ctx: Arc<Context>, caller: Caller, _args: Vec<Value>) -> HandlerFuture {
    Box::pin(async move {
        let registration = ctx
            .event_registrations
            .sessions
            .lock()
            .map_err(|_| ApiError::Internal("event registrations poisoned".into()))?
            .get(&caller.session)
            .cloned();
        let Some((classes, since)) = registration else {
            return Err(ApiError::SessionNotRegistered(caller.session.clone()));
        };
        let subs: Vec<Subscription> = parse_subscriptions(
            &classes
                .iter()
                .map(|c| Value::str(c.as_str()))
                .collect::<Vec<_>>(),
        );
        let (raw, generation) = wait_for(&ctx, since, NEXT_WAIT, |events| {
            !batch(&caller, &subs, events.to_vec()).is_empty()
        })
        .await?;
        if let Ok(mut sessions) = ctx.event_registrations.sessions.lock()
            && let Some(entry) = sessions.get_mut(&caller.session)
        {
            entry.1 = generation;
        }
        Ok(Value::Array(batch(&caller, &subs, raw)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Origin, Role, session_table};
    use crate::config::Settings;

    fn context(dir: &tempfile::TempDir) -> Arc<Context> {
        let settings = Settings::demo_under(dir.path()).unwrap();
        crate::daemon::build_context(&settings).unwrap()
    }

    fn admin(ctx: &Context) -> Caller {
        Caller {
            session: session_table::create_session(
                ctx,
                "admin",
                Role::PoolAdmin,
                false,
                "test",
                "users",
            )
            .unwrap(),
            user: "admin".into(),
            role: Role::PoolAdmin,
            superuser: false,
            origin: Origin::Network("127.0.0.1:1".into()),
            task: None,
        }
    }

    fn member<'a>(value: &'a Value, name: &str) -> &'a Value {
        value
            .member(name)
            .unwrap_or_else(|| panic!("no {name} in {value:?}"))
    }

    #[test]
    fn a_write_after_the_snapshot_copy_is_after_its_token() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(&dir);
        let caller = admin(&ctx);
        let subs = parse_subscriptions(&[Value::str("*")]);
        let (events, generation) = snapshot_all(&ctx, &caller, &subs);
        assert!(!events.is_empty());
        // A write landing after the objects were copied, before `from`
        // formats the token: the old code read the token here, past it.
        let written = ctx
            .store
            .apply(vec![Change::Touch(ctx.host_ref.clone())])
            .unwrap();
        assert!(written > generation);
        let after = ctx.store.events_since(generation).unwrap();
        assert!(
            after
                .iter()
                .any(|e| e.id == written && e.reference == ctx.host_ref),
            "the write is delivered after the snapshot's token: {after:?}"
        );
    }

    #[tokio::test]
    async fn from_empty_token_returns_the_snapshot_generation() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(&dir);
        let caller = admin(&ctx);
        let before = ctx.store.generation();
        let reply = from(
            ctx.clone(),
            caller,
            vec![
                Value::Array(vec![Value::str("*")]),
                Value::str(""),
                Value::Float(0.0),
            ],
        )
        .await
        .unwrap();
        let token = member(&reply, "token").as_str().unwrap();
        let generation = parse_token(token).unwrap().unwrap();
        assert!(generation >= before);
        let Value::Array(events) = member(&reply, "events").expanded() else {
            panic!("events is not an array: {reply:?}");
        };
        // Every stored object the caller may see, once, as an add no
        // newer than the token.
        let mut expected: Vec<String> = idl::datamodel()
            .classes
            .iter()
            .filter(|c| c.is_stored())
            .flat_map(|c| ctx.store.all(&c.name))
            .map(|o| o.reference.clone())
            .collect();
        let mut seen: Vec<String> = Vec::new();
        for event in &events {
            let id = member(event, "id").as_str().unwrap();
            assert!(id.parse::<u64>().unwrap() <= generation, "{event:?}");
            assert_eq!(member(event, "operation"), &Value::str("add"));
            let class = member(event, "class").as_str().unwrap();
            let reference = member(event, "ref").as_str().unwrap();
            let object = ctx.store.get(reference).unwrap();
            assert_eq!(class, object.class.to_lowercase());
            assert_eq!(
                member(event, "snapshot"),
                &record(idl::datamodel().class(&object.class).unwrap(), &object)
            );
            seen.push(reference.to_owned());
        }
        expected.sort();
        seen.sort();
        assert_eq!(seen, expected);
    }

    #[test]
    fn timeouts_are_clamped_and_a_bad_one_answers_at_once() {
        assert_eq!(
            timeout_of(Some(&Value::Float(60.1))),
            Duration::from_secs_f64(60.1)
        );
        assert_eq!(timeout_of(Some(&Value::Int(5))), Duration::from_secs(5));
        for bad in [f64::NAN, -1.0, f64::NEG_INFINITY, 0.0] {
            assert_eq!(
                timeout_of(Some(&Value::Float(bad))),
                Duration::ZERO,
                "{bad}"
            );
        }
        assert_eq!(timeout_of(Some(&Value::Float(f64::INFINITY))), MAX_WAIT);
        assert_eq!(timeout_of(Some(&Value::Float(1e300))), MAX_WAIT);
        assert_eq!(timeout_of(Some(&Value::Int(-5))), Duration::ZERO);
        assert_eq!(timeout_of(None), Duration::ZERO);
    }

    #[test]
    fn tokens_round_trip_in_xapi_format() {
        assert_eq!(token(10), "00000000000000000010,00000000000000000000");
        assert_eq!(parse_token(&token(10)).unwrap(), Some(10));
        assert_eq!(parse_token("").unwrap(), None);
        assert!(matches!(
            parse_token("garbage"),
            Err(ApiError::EventFromTokenParseFailure(_))
        ));
    }

    #[test]
    fn subscriptions_match_case_insensitively() {
        let subs = parse_subscriptions(&[Value::str("PCI"), Value::str("host/OpaqueRef:h")]);
        assert!(matches(&subs, "PCI", "OpaqueRef:x"));
        assert!(matches(&subs, "host", "OpaqueRef:h"));
        assert!(!matches(&subs, "host", "OpaqueRef:other"));
        assert!(!matches(&subs, "PGPU", "OpaqueRef:x"));
        assert!(matches(
            &parse_subscriptions(&[Value::str("*")]),
            "task",
            "r"
        ));
    }

    #[test]
    fn coalescing_keeps_latest_state() {
        let e = |id, op, r: &str| Event {
            id,
            class: "PCI".into(),
            operation: op,
            reference: r.into(),
            snapshot: Arc::new(objects::new_object("PCI", r.into(), r.into(), Vec::new())),
        };
        let out = coalesce(vec![
            e(1, Operation::Add, "a"),
            e(2, Operation::Mod, "a"),
            e(3, Operation::Mod, "b"),
        ]);
        let summary: Vec<_> = out.iter().map(|(e, op)| (e.id, *op)).collect();
        assert_eq!(summary, vec![(2, Operation::Add), (3, Operation::Mod)]);
    }
}
