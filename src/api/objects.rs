//! The implicit messages every stored class gets from the idl: records,
//! lookups, field getters and setters, map edits.

use std::sync::Arc;

use crate::api::context::{Caller, Context};
use crate::api::{ApiError, Role, Value, derived, quota};
use crate::idl::{self, Class, Method, MethodKind};
use crate::store::{Change, Object};
use crate::value::Snapshot;

/// The wire record of an object: its public fields in idl order, a field
/// the store lacks filled with the idl default.
pub fn record(class: &Class, object: &Object) -> Value {
    Value::Struct(
        class
            .public_fields()
            .map(|f| {
                let value = object
                    .get(&f.name)
                    .cloned()
                    .or_else(|| f.default.clone())
                    .unwrap_or_else(Value::void);
                (f.name.clone(), value)
            })
            .collect(),
    )
}

/// A complete new object of `class` from the idl defaults and `fields`.
pub fn new_object(
    class: &str,
    reference: String,
    uuid: String,
    fields: Vec<(&str, Value)>,
) -> Object {
    let mut object = Object {
        class: class.to_owned(),
        reference,
        uuid: uuid.clone(),
        fields: Vec::new(),
    };
    if let Some(def) = idl::datamodel().class(class) {
        for f in &def.fields {
            object.set(&f.name, f.default.clone().unwrap_or_else(Value::void));
        }
    }
    object.set("uuid", Value::String(uuid));
    for (name, value) in fields {
        object.set(name, value);
    }
    object
}

/// Classes some of whose objects are private to some callers: those
/// [`visible`] may refuse.
pub fn has_private_objects(class: &str) -> bool {
    matches!(class, "session" | "task")
}

/// May `caller` see `object`? Sessions are private to their owner, tasks to
/// their owner and pool operators.
///
/// The one rule for every read: the getters and `get_all*` here, and
/// every event `event.from` and `event.next` hand out, a deletion's
/// included (judged from the object as it was when deleted).
pub fn visible(caller: &Caller, object: &Object) -> bool {
    match object.class.as_str() {
        "session" => caller.may(Role::PoolAdmin) || object.reference == caller.session,
        "task" => caller.may(Role::PoolOperator) || object.get_str("owner") == caller.user,
        _ => true,
    }
}

/// Before a read of `class`: its derived fields caught up with the host.
fn current(ctx: &Context, class: &str) {
    if derived::has_derived(class) {
        derived::catch_up(ctx);
    }
}

fn visible_objects(ctx: &Context, caller: &Caller, class: &str) -> Vec<Arc<Object>> {
    current(ctx, class);
    ctx.store
        .all(class)
        .into_iter()
        .filter(|o| visible(caller, o))
        .collect()
}

/// Every record of `class` (whose objects every caller may see) as a
/// shared snapshot: made once per change of the class, so that the codecs
/// encode a large unchanged answer only once. Records are built from the
/// objects one at a time while they are encoded, never all at once.
/// Returns the class generation the records are at, and the snapshot.
pub fn all_records(ctx: &Context, class: &'static Class) -> (u64, Snapshot) {
    current(ctx, &class.name);
    let mut snapshots = ctx
        .record_snapshots
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let current = ctx.store.class_generation(&class.name);
    if let Some((generation, snapshot)) = snapshots.get(&class.name)
        && *generation == current
    {
        return (*generation, snapshot.clone());
    }
    let (generation, objects) = ctx.store.all_at_generation(&class.name);
    let snapshot = Snapshot::new(objects.len(), move |visit| {
        for object in &objects {
            visit(&object.reference, record(class, object));
        }
    });
    snapshots.insert(class.name.clone(), (generation, snapshot.clone()));
    (generation, snapshot)
}

/// One write of `caller` from its budget (local root has no limit).
pub fn take_write(ctx: &Context, caller: &Caller) -> Result<(), ApiError> {
    if matches!(caller.origin, crate::api::context::Origin::Local(Some(0))) {
        return Ok(());
    }
    ctx.write_budget.take_write(&caller.user)
}

fn checked_object(
    ctx: &Context,
    caller: &Caller,
    class: &str,
    reference: &str,
) -> Result<Arc<Object>, ApiError> {
    current(ctx, class);
    let object = ctx.object(class, reference)?;
    if !visible(caller, &object) {
        return Err(caller
            .require(Role::PoolAdmin, &format!("{class}.get_record/any"))
            .err()
            .unwrap_or_else(|| ApiError::handle_invalid(class, reference)));
    }
    Ok(object)
}

fn arg_str(args: &[Value], index: usize) -> &str {
    args.get(index).and_then(Value::as_str).unwrap_or("")
}

/// Run an implicit message.
pub fn implicit(
    ctx: &Context,
    caller: &Caller,
    method: &Method,
    kind: &MethodKind,
    args: Vec<Value>,
) -> Result<Value, ApiError> {
    let class_name = method.class.as_str();
    let class = idl::datamodel()
        .class(class_name)
        .ok_or_else(|| ApiError::Internal(format!("class {class_name} missing from idl")))?;
    match kind {
        MethodKind::GetRecord => Ok(record(
            class,
            &*checked_object(ctx, caller, class_name, arg_str(&args, 0))?,
        )),
        MethodKind::GetByUuid => {
            let uuid = arg_str(&args, 0);
            ctx.store
                .by_uuid(class_name, uuid)
                .filter(|o| visible(caller, o))
                .map(|o| Value::String(o.reference.clone()))
                .ok_or_else(|| ApiError::UuidInvalid {
                    class: class_name.to_owned(),
                    uuid: uuid.to_owned(),
                })
        }
        MethodKind::GetAll => Ok(Value::Array(
            visible_objects(ctx, caller, class_name)
                .iter()
                .map(|o| Value::String(o.reference.clone()))
                .collect(),
        )),
        MethodKind::GetAllRecords if has_private_objects(class_name) => Ok(Value::Struct(
            visible_objects(ctx, caller, class_name)
                .iter()
                .map(|o| (o.reference.clone(), record(class, o)))
                .collect(),
        )),
        MethodKind::GetAllRecords => Ok(Value::Snapshot(all_records(ctx, class).1)),
        MethodKind::GetByNameLabel => {
            let label = arg_str(&args, 0);
            Ok(Value::Array(
                visible_objects(ctx, caller, class_name)
                    .iter()
                    .filter(|o| o.get_str("name_label") == label)
                    .map(|o| Value::String(o.reference.clone()))
                    .collect(),
            ))
        }
        MethodKind::GetField(field) => {
            let object = checked_object(ctx, caller, class_name, arg_str(&args, 0))?;
            let default = class.field(field).and_then(|f| f.default.clone());
            Ok(object
                .get(field)
                .cloned()
                .or(default)
                .unwrap_or_else(Value::void))
        }
        MethodKind::SetField(field) => {
            let object = checked_object(ctx, caller, class_name, arg_str(&args, 0))?;
            let value = args.into_iter().nth(1).unwrap_or(Value::Nil);
            quota::check_written(field, &value)?;
            take_write(ctx, caller)?;
            update(ctx, &object, field, value)
        }
        MethodKind::AddToMap(field) => {
            let object = checked_object(ctx, caller, class_name, arg_str(&args, 0))?;
            let (key, value) = (
                arg_str(&args, 1).to_owned(),
                args.get(2).cloned().unwrap_or(Value::Nil),
            );
            let mut members = map_members(&object, field);
            if members.iter().any(|(k, _)| *k == key) {
                return Err(ApiError::MapDuplicateKey {
                    class: class_name.to_owned(),
                    field: field.clone(),
                    handle: object.reference.clone(),
                    key,
                });
            }
            members.push((key, value));
            let map = Value::Struct(members);
            quota::check_written(field, &map)?;
            take_write(ctx, caller)?;
            update(ctx, &object, field, map)
        }
        MethodKind::RemoveFromMap(field) => {
            let object = checked_object(ctx, caller, class_name, arg_str(&args, 0))?;
            take_write(ctx, caller)?;
            let key = arg_str(&args, 1);
            let mut members = map_members(&object, field);
            members.retain(|(k, _)| k != key);
            update(ctx, &object, field, Value::Struct(members))
        }
        MethodKind::Custom => Err(ApiError::Internal(
            "custom message routed as implicit".into(),
        )),
    }
}

fn map_members(object: &Object, field: &str) -> Vec<(String, Value)> {
    match object.get(field) {
        Some(Value::Struct(members)) => members.clone(),
        _ => Vec::new(),
    }
}

fn update(ctx: &Context, object: &Object, field: &str, value: Value) -> Result<Value, ApiError> {
    ctx.apply(vec![Change::Update {
        reference: object.reference.clone(),
        fields: vec![(field.to_owned(), value)],
    }])?;
    Ok(Value::void())
}
