//! [`invoke`]: one XenAPI call, from method name and raw parameters to a
//! result, in xapi's order of checks: method lookup, parameter count,
//! parameter types (from the idl), session, role, then the class module.
//! `Async.` calls return a task at once and run the same path in it.

use std::sync::Arc;

use crate::api::context::{Caller, Context, Origin};
use crate::api::handler::Handler;
use crate::api::{
    ApiError, Value, event, host, message, objects, pci, pgpu, session, session_table, task,
};
use crate::idl::{self, Method, MethodKind, Type};

/// Every class with custom messages and its module's handler table.
pub const CLASSES: &[(&str, &[(&str, Handler)])] = &[
    ("session", session::HANDLERS),
    ("host", host::HANDLERS),
    ("PCI", pci::HANDLERS),
    ("PGPU", pgpu::HANDLERS),
    ("task", task::HANDLERS),
    ("event", event::HANDLERS),
    ("message", message::HANDLERS),
];

/// The handler of a custom message, from its class's table.
pub fn custom_handler(class: &str, message: &str) -> Option<Handler> {
    let (_, table) = CLASSES.iter().find(|(c, _)| *c == class)?;
    table.iter().find(|(m, _)| *m == message).map(|(_, h)| *h)
}

/// Every method name `system.listMethods` reports: all sync methods plus
/// the `Async.` forms, as xapi lists them.
pub fn list_methods() -> Vec<String> {
    let dm = idl::datamodel();
    let mut names: Vec<String> = dm.methods().map(|m| m.wire_name.clone()).collect();
    names.extend(
        dm.methods()
            .filter(|m| m.async_ok)
            .map(|m| format!("Async.{}", m.wire_name)),
    );
    names
}

fn resolve(name: &str) -> Option<&'static Method> {
    let dm = idl::datamodel();
    if let Some(m) = dm.method(name) {
        return Some(m);
    }
    // xapi also accepts `Class_method` for synchronous calls.
    if name.contains('.') {
        return None;
    }
    name.match_indices('_')
        .find_map(|(i, _)| dm.method(&format!("{}.{}", &name[..i], &name[i + 1..])))
}

/// Call `name` with `params` for a caller from `origin`.
pub async fn invoke(
    ctx: &Arc<Context>,
    name: &str,
    params: Vec<Value>,
    origin: Origin,
) -> Result<Value, ApiError> {
    if let Some(inner) = name.strip_prefix("Async.") {
        return invoke_async(ctx, inner, params, origin).await;
    }
    let (method, caller, args) = prepare(ctx, name, params, origin)?;
    run(ctx.clone(), method, caller, args).await
}

async fn invoke_async(
    ctx: &Arc<Context>,
    name: &str,
    params: Vec<Value>,
    origin: Origin,
) -> Result<Value, ApiError> {
    let method =
        resolve(name).ok_or_else(|| ApiError::MessageMethodUnknown(format!("Async.{name}")))?;
    if !method.async_ok {
        return Err(ApiError::NoAsyncMode(format!(
            "No async mode for this operation (rpc: {})",
            method.wire_name
        )));
    }
    // Count, types and session are checked now; role and work fail into the task.
    let (method, mut caller, args) = prepare_unchecked_role(ctx, method, params, origin)?;
    let task_ref = task::create_for_async(ctx, &caller, &method.wire_name, &args)?;
    caller.task = Some(task_ref.clone());
    let ctx = ctx.clone();
    let task_for_run = task_ref.clone();
    tokio::spawn(async move {
        let outcome = match caller.require(method.role, &method.wire_name) {
            Ok(()) => run(ctx.clone(), method, caller, args).await,
            Err(e) => Err(e),
        };
        task::complete(&ctx, &task_for_run, outcome);
    });
    Ok(Value::String(task_ref))
}

type Prepared = (&'static Method, Caller, Vec<Value>);

fn prepare(
    ctx: &Context,
    name: &str,
    params: Vec<Value>,
    origin: Origin,
) -> Result<Prepared, ApiError> {
    let Some(method) = resolve(name) else {
        // xapi checks the session of an unknown method before saying so.
        if let Some(Value::String(s)) = params.first() {
            session_table::check(ctx, s, origin)?;
        }
        return Err(ApiError::MessageMethodUnknown(name.to_owned()));
    };
    let (method, caller, args) = prepare_unchecked_role(ctx, method, params, origin)?;
    caller.require(method.role, &method.wire_name)?;
    Ok((method, caller, args))
}

fn prepare_unchecked_role(
    ctx: &Context,
    method: &'static Method,
    mut params: Vec<Value>,
    origin: Origin,
) -> Result<Prepared, ApiError> {
    let session_count = usize::from(method.session);
    let received = params.len() as i64 - session_count as i64;
    let required = method.required_params();
    // As xapi's generated dispatcher: a message without defaults takes
    // exactly its parameters; one with defaults takes at least the
    // required ones and ignores any beyond its own (clients rely on the
    // refusal to fall back to an older arity, as Xen Orchestra does for
    // host.evacuate).
    let has_defaults = required < method.params.len();
    if received < required as i64 || (!has_defaults && received > required as i64) {
        return Err(ApiError::MessageParameterCountMismatch {
            method: method.wire_name.clone(),
            expected: required,
            received,
        });
    }
    let session_value = if method.session {
        Some(params.remove(0))
    } else {
        None
    };
    // Parameters beyond a message's own (it has defaults) are ignored.
    params.truncate(method.params.len());
    let mut args = Vec::with_capacity(method.params.len());
    let mut supplied = params.into_iter();
    for param in &method.params {
        let value = match supplied.next() {
            Some(v) => coerce(&param.ty, v).map_err(|reason| ApiError::FieldTypeError {
                field: param.name.clone(),
                reason,
            })?,
            None => param.default.clone().unwrap_or(Value::Nil),
        };
        args.push(value);
    }
    let caller = match session_value {
        Some(Value::String(s)) => session_table::check(ctx, &s, origin)?,
        Some(other) => return Err(ApiError::SessionInvalid(other.to_string())),
        None => Caller::anonymous(origin),
    };
    Ok((method, caller, args))
}

async fn run(
    ctx: Arc<Context>,
    method: &'static Method,
    caller: Caller,
    args: Vec<Value>,
) -> Result<Value, ApiError> {
    match &method.kind {
        MethodKind::Custom => match custom_handler(&method.class, &method.name) {
            Some(handler) => handler(ctx, caller, args).await,
            None => Err(ApiError::NotImplemented(method.wire_name.clone())),
        },
        kind if has_derived_fields(&method.class) => {
            // Its derived fields are computed from the host: off the reactor.
            tokio::task::spawn_blocking(move || {
                objects::implicit(&ctx, &caller, method, &method.kind, args)
            })
            .await
            .map_err(|_| ApiError::Internal(format!("{kind:?} worker failed")))?
        }
        kind => objects::implicit(&ctx, &caller, method, kind, args),
    }
}

fn has_derived_fields(class: &str) -> bool {
    idl::datamodel()
        .class(class)
        .is_some_and(|c| c.derived_fields().next().is_some())
}

/// Convert a decoded wire value to the idl type `ty`, accepting every
/// spelling xapi accepts (ints as strings, enums in any case, ...).
pub fn coerce(ty: &Type, value: Value) -> Result<Value, String> {
    let wrong = |v: &Value| format!("expected {ty}, got {}", v.kind());
    match (ty, value) {
        (Type::String | Type::Ref(_), Value::String(s)) => Ok(Value::String(s)),
        (Type::Int, Value::Int(n)) => Ok(Value::Int(n)),
        (Type::Int, Value::Int32(n)) => Ok(Value::Int(n.into())),
        (Type::Int, Value::String(s)) => s
            .trim()
            .parse::<i64>()
            .map(Value::Int)
            .map_err(|_| format!("expected int, got {s:?}")),
        (Type::Float, Value::Float(x)) => Ok(Value::Float(x)),
        (Type::Float, Value::Int(n)) => Ok(Value::Float(n as f64)),
        (Type::Float, Value::Int32(n)) => Ok(Value::Float(n.into())),
        (Type::Float, Value::String(s)) => s
            .trim()
            .parse::<f64>()
            .map(Value::Float)
            .map_err(|_| format!("expected float, got {s:?}")),
        (Type::Bool, Value::Bool(b)) => Ok(Value::Bool(b)),
        (Type::DateTime, Value::DateTime(s) | Value::String(s)) => Ok(Value::DateTime(s)),
        (Type::Enum(name), Value::String(s)) => {
            let values = idl::datamodel()
                .enum_def(name)
                .map(|e| e.values.as_slice())
                .unwrap_or_default();
            values
                .iter()
                .find(|v| v.eq_ignore_ascii_case(&s))
                .map(|v| Value::String(v.clone()))
                .ok_or_else(|| format!("{s:?} is not one of {}", values.join(", ")))
        }
        (Type::Set(inner), Value::Array(items)) => items
            .into_iter()
            .map(|v| coerce(inner, v))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        (Type::Option(inner), Value::Array(items)) if items.len() <= 1 => items
            .into_iter()
            .map(|v| coerce(inner, v))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        (Type::Map(_, v_ty), Value::Struct(members)) => members
            .into_iter()
            .map(|(k, v)| coerce(v_ty, v).map(|v| (k, v)))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Struct),
        (Type::Record(_) | Type::Struct, Value::Struct(members)) => Ok(Value::Struct(members)),
        (_, v) => Err(wrong(&v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coerce_accepts_xapi_spellings() {
        assert_eq!(coerce(&Type::Int, Value::str("42")), Ok(Value::Int(42)));
        assert_eq!(coerce(&Type::Float, Value::Int(2)), Ok(Value::Float(2.0)));
        assert_eq!(
            coerce(
                &Type::Enum("pci_dom0_access".into()),
                Value::str("DISABLED")
            ),
            Ok(Value::str("disabled"))
        );
        assert!(coerce(&Type::Bool, Value::str("true")).is_err());
        assert!(coerce(&Type::String, Value::Int(5)).is_err());
        assert!(
            coerce(
                &Type::Enum("pci_dom0_access".into()),
                Value::str("disabled_on_reboot")
            )
            .is_err()
        );
    }

    #[test]
    fn underscore_form_resolves() {
        assert_eq!(
            resolve("PCI_get_record").unwrap().wire_name,
            "PCI.get_record"
        );
        assert!(resolve("PCI.get_recordx").is_none());
    }

    #[test]
    fn every_custom_message_has_a_handler() {
        for m in idl::datamodel()
            .methods()
            .filter(|m| m.kind == MethodKind::Custom)
        {
            assert!(
                custom_handler(&m.class, &m.name).is_some(),
                "{} has no handler",
                m.wire_name
            );
        }
    }

    #[test]
    fn every_handler_is_declared() {
        for (class, table) in CLASSES {
            assert!(
                idl::datamodel().class(class).is_some(),
                "class {class} not in idl"
            );
            for (name, _) in *table {
                let m = idl::datamodel().method(&format!("{class}.{name}"));
                assert!(
                    m.is_some_and(|m| m.kind == MethodKind::Custom),
                    "{class}.{name} not in idl"
                );
                assert!(custom_handler(class, name).is_some());
            }
        }
    }
}
