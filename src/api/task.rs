//! The `task` class: `Async.` calls run in a task whose record carries the
//! progress, status, result (an XML-RPC `<value>` fragment, as xapi stores
//! it whatever the client's protocol) and error. Tasks are visible to their
//! owner and to pool operators; finished ones are collected after the
//! configured retention.

use std::sync::Arc;

use crate::api::context::{Caller, Context};
use crate::api::handler::{Handler, HandlerFuture};
use crate::api::objects::new_object;
use crate::api::{ApiError, Role, Value, quota};
use crate::store::{Change, Object, db};
use crate::value::now_datetime;

/// This class's custom messages and their handlers (`api::invoke`'s tests
/// check them against the idl both ways).
pub const HANDLERS: &[(&str, Handler)] =
    &[("create", create), ("destroy", destroy), ("cancel", cancel)];

fn new_task(
    ctx: &Context,
    caller: &Caller,
    label: &str,
    description: &str,
    call: String,
) -> Result<String, ApiError> {
    quota::check_written("label", &Value::str(label))?;
    quota::check_written("description", &Value::str(description))?;
    let mut changes = make_room(ctx, &caller.user)?;
    let reference = db::new_ref();
    let task = new_object(
        "task",
        reference.clone(),
        db::new_uuid(),
        vec![
            ("name_label", Value::str(label)),
            ("name_description", Value::str(description)),
            ("created", now_datetime()),
            ("resident_on", Value::String(ctx.host_ref.clone())),
            ("allowed_operations", Value::strings(["cancel"])),
            ("owner", Value::str(&caller.user)),
            ("finished_unix", Value::Int(0)),
            ("call", Value::String(call)),
        ],
    );
    changes.push(Change::Create(task));
    ctx.apply(changes)?;
    Ok(reference)
}

/// Room for one more task of `user`: refused when the user holds
/// [`quota::PENDING_TASKS_PER_USER`] unfinished tasks; when it holds
/// [`quota::TASKS_PER_USER`] in all, its oldest finished ones are
/// destroyed (returned as the changes to apply with the new task).
fn make_room(ctx: &Context, user: &str) -> Result<Vec<Change>, ApiError> {
    let mut finished = Vec::new();
    let mut pending = 0;
    for task in ctx.store.all("task") {
        if task.get_str("owner") != user {
            continue;
        }
        if task.get_str("status") == "pending" || task.get_str("status") == "cancelling" {
            pending += 1;
        } else {
            let at = match task.get("finished_unix") {
                Some(Value::Int(n)) => *n,
                _ => 0,
            };
            finished.push((at, task.reference.clone()));
        }
    }
    if pending >= quota::PENDING_TASKS_PER_USER {
        tracing::warn!(user, pending, "task refused: too many unfinished tasks");
        return Err(ApiError::TooManyPendingTasks);
    }
    let excess = (pending + finished.len() + 1).saturating_sub(quota::TASKS_PER_USER);
    finished.sort();
    Ok(finished
        .into_iter()
        .take(excess)
        .map(|(_, reference)| Change::Delete(reference))
        .collect())
}

/// The longest recorded call: a set of many PCIs fits, a flood of
/// arguments is not kept (the task then fails at the next start).
const CALL_MAX: usize = 64 * 1024;

/// Create the task of an `Async.` call of `method` with `args` (after the
/// session, which is never recorded).
pub fn create_for_async(
    ctx: &Context,
    caller: &Caller,
    method: &str,
    args: &[Value],
) -> Result<String, ApiError> {
    let call = serde_json::to_string(&(method, args))
        .ok()
        .filter(|c| c.len() <= CALL_MAX)
        .unwrap_or_default();
    new_task(ctx, caller, &format!("Async.{method}"), "", call)
}

/// At start: finish every task a previous run left `pending` (stopped or
/// killed with the task in flight), as its work turned out. An edit of
/// dom0 access or of the host display is `success` when its effect is in
/// the boot configuration now (the edit transaction is all or nothing, and
/// the start has finished or undone any edit cut short), with the answer
/// the call would have given; else, and for every other call, `failure`.
/// A task being cancelled is `cancelled`. Returns how many were finished.
pub fn finish_interrupted(ctx: &Context) -> usize {
    let left: Vec<Arc<crate::store::Object>> = ctx
        .store
        .all("task")
        .into_iter()
        .filter(|t| matches!(t.get_str("status"), "pending" | "cancelling"))
        .collect();
    for task in &left {
        let outcome = if task.get_str("status") == "cancelling" {
            Err(ApiError::TaskCancelled(task.reference.clone()))
        } else {
            let call: Option<(String, Vec<Value>)> =
                serde_json::from_str(task.get_str("call")).ok();
            match call {
                Some((method, args)) => effect_of(ctx, &method, &args),
                None => Err(stopped()),
            }
        };
        let status = match &outcome {
            Ok(_) => "success",
            Err(ApiError::TaskCancelled(_)) => "cancelled",
            Err(_) => "failure",
        };
        tracing::info!(
            task = %task.get_str("uuid"),
            call = %task.get_str("name_label"),
            status,
            "a task a previous run left unfinished is finished"
        );
        force_complete(ctx, &task.reference, outcome);
    }
    left.len()
}

/// The failure of a task whose work a stop cut short.
fn stopped() -> ApiError {
    ApiError::Internal(
        "pcipassd stopped before the task finished; its work was not done (an edit of the boot \
         configuration cut short is undone at start)"
            .into(),
    )
}

/// What `method` (an edit) left, read from the host now: its answer when
/// its effect is there, else the failure of a call a stop cut short.
fn effect_of(ctx: &Context, method: &str, args: &[Value]) -> Result<Value, ApiError> {
    let one = |i: usize| args.get(i).and_then(Value::as_str).unwrap_or_default();
    let pci_of = |class: &str, reference: &str| -> Result<Arc<crate::store::Object>, ApiError> {
        let object = ctx.object(class, reference)?;
        match class {
            "PGPU" => ctx.object("PCI", object.get_str("PCI")),
            _ => Ok(object),
        }
    };
    let (pcis, hide, now, as_map) = match method {
        "PCI.disable_dom0_access" | "PGPU.disable_dom0_access" => (
            vec![pci_of(method.split('.').next().unwrap_or(""), one(0))?],
            true,
            false,
            false,
        ),
        "PCI.enable_dom0_access" | "PGPU.enable_dom0_access" => (
            vec![pci_of(method.split('.').next().unwrap_or(""), one(0))?],
            false,
            false,
            false,
        ),
        "PCI.disable_dom0_access_now" => (vec![pci_of("PCI", one(0))?], true, true, false),
        "PCI.enable_dom0_access_now" => (vec![pci_of("PCI", one(0))?], false, true, false),
        "host.disable_dom0_access_of"
        | "host.enable_dom0_access_of"
        | "host.apply_dom0_access_preview" => {
            let refs = match args.get(1) {
                Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            let pcis = refs
                .into_iter()
                .map(|r| ctx.object("PCI", r))
                .collect::<Result<Vec<_>, _>>()?;
            let hide = match method {
                "host.apply_dom0_access_preview" => !matches!(args.get(2), Some(Value::Bool(true))),
                m => m == "host.disable_dom0_access_of",
            };
            let now_at = if method == "host.apply_dom0_access_preview" {
                3
            } else {
                2
            };
            (
                pcis,
                hide,
                matches!(args.get(now_at), Some(Value::Bool(true))),
                true,
            )
        }
        _ => return Err(stopped()),
    };
    let (refs, addrs) = crate::api::pci::distinct(&pcis)?;
    let statuses = ctx.host.statuses(&addrs)?;
    let done = statuses.iter().all(|s| {
        use crate::domain::Dom0Access::*;
        match (hide, now) {
            (true, false) => matches!(s, DisableOnReboot | Disabled),
            (true, true) => matches!(s, Disabled),
            (false, false) => matches!(s, EnableOnReboot | Enabled),
            (false, true) => matches!(s, Enabled),
        }
    });
    if !done {
        return Err(stopped());
    }
    Ok(if as_map {
        Value::Struct(
            refs.into_iter()
                .zip(&statuses)
                .map(|(r, s)| (r, Value::str(s.as_str())))
                .collect(),
        )
    } else {
        Value::str(statuses.first().map_or("", |s| s.as_str()))
    })
}

/// [`complete`] for a task in any unfinished state (a cancelling one too).
fn force_complete(ctx: &Context, reference: &str, outcome: Result<Value, ApiError>) {
    if let Some(task) = ctx.store.get_of("task", reference)
        && task.get_str("status") == "cancelling"
        && let Err(e) = ctx.apply(vec![Change::Update {
            reference: reference.to_owned(),
            fields: vec![("status".into(), Value::str("pending"))],
        }])
    {
        tracing::warn!("task {reference} not completed: {e}");
        return;
    }
    complete(ctx, reference, outcome);
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Record the outcome of a task's work. A cancelled task stays cancelled.
pub fn complete(ctx: &Context, reference: &str, outcome: Result<Value, ApiError>) {
    let Some(task) = ctx.store.get_of("task", reference) else {
        return;
    };
    if task.get_str("status") != "pending" {
        return;
    }
    let mut fields = vec![
        ("progress".to_owned(), Value::Float(1.0)),
        ("finished".to_owned(), now_datetime()),
        ("finished_unix".to_owned(), Value::Int(unix_now())),
        ("allowed_operations".to_owned(), Value::Array(vec![])),
    ];
    match outcome {
        Ok(value) => {
            fields.push(("status".into(), Value::str("success")));
            fields.push((
                "result".into(),
                Value::String((ctx.task_result_encoder)(&value)),
            ));
        }
        Err(error) => {
            let status = if matches!(error, ApiError::TaskCancelled(_)) {
                "cancelled"
            } else {
                "failure"
            };
            fields.push(("status".into(), Value::str(status)));
            fields.push(("error_info".into(), Value::strings(error.description())));
        }
    }
    if let Err(e) = ctx.apply(vec![Change::Update {
        reference: reference.to_owned(),
        fields,
    }]) {
        tracing::warn!("task {reference} not completed: {e}");
    }
}

fn owned_task(ctx: &Context, caller: &Caller, reference: &str) -> Result<Arc<Object>, ApiError> {
    let task = ctx.object("task", reference)?;
    if task.get_str("owner") != caller.user {
        caller.require(Role::PoolOperator, "task.destroy/any")?;
    }
    Ok(task)
}

fn arg(args: &[Value], i: usize) -> String {
    args.get(i).and_then(Value::as_str).unwrap_or("").to_owned()
}

fn create(ctx: Arc<Context>, caller: Caller, args: Vec<Value>) -> HandlerFuture {
    Box::pin(async move {
        // A value too big is said as such, without spending the budget.
        quota::check_written("label", &Value::str(arg(&args, 0)))?;
        quota::check_written("description", &Value::str(arg(&args, 1)))?;
        crate::api::objects::take_write(&ctx, &caller)?;
        Ok(Value::String(new_task(
            &ctx,
            &caller,
            &arg(&args, 0),
            &arg(&args, 1),
            String::new(),
        )?))
    })
}

fn destroy(ctx: Arc<Context>, caller: Caller, args: Vec<Value>) -> HandlerFuture {
    Box::pin(async move {
        let task = owned_task(&ctx, &caller, &arg(&args, 0))?;
        ctx.store
            .apply(vec![Change::Delete(task.reference.clone())])?;
        Ok(Value::void())
    })
}

fn cancel(ctx: Arc<Context>, caller: Caller, args: Vec<Value>) -> HandlerFuture {
    Box::pin(async move {
        let task = owned_task(&ctx, &caller, &arg(&args, 0))?;
        if task.get_str("status") != "pending" {
            return Err(ApiError::OperationNotAllowed(format!(
                "task {} is {}, not pending",
                task.uuid,
                task.get_str("status")
            )));
        }
        ctx.apply(vec![Change::Update {
            reference: task.reference.clone(),
            fields: vec![
                ("status".into(), Value::str("cancelled")),
                ("progress".into(), Value::Float(1.0)),
                ("finished".into(), now_datetime()),
                ("finished_unix".into(), Value::Int(unix_now())),
                (
                    "error_info".into(),
                    Value::strings(["TASK_CANCELLED", task.reference.as_str()]),
                ),
                ("allowed_operations".into(), Value::Array(vec![])),
            ],
        }])?;
        Ok(Value::void())
    })
}

/// Destroy finished tasks older than the retention; returns how many.
pub fn collect_finished(ctx: &Context) -> Result<usize, ApiError> {
    let limit = ctx.config.task_retention.as_secs() as i64;
    let now = unix_now();
    let old: Vec<Change> = ctx
        .store
        .all("task")
        .iter()
        .filter(|t| t.get_str("status") != "pending")
        .filter(|t| matches!(t.get("finished_unix"), Some(Value::Int(f)) if now - f > limit))
        .map(|t| Change::Delete(t.reference.clone()))
        .collect();
    let count = old.len();
    ctx.apply(old)?;
    Ok(count)
}
