//! The API layer on its own: every call goes through `invoke` (the idl's
//! checks, RBAC, the class handlers, the store and its events) against a
//! host in memory ([`StubDom0Host`]), with no file, process or tree.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use crate::api::context::{ApiConfig, Auth, Context, Origin};
use crate::api::invoke::invoke;
use crate::api::{ApiError, Role, Value, host, session_table, sync};
use crate::domain::PciAddress;
use crate::domain::service::{Names, PciFunction, StubDom0Host};
use crate::store::Store;

fn a(s: &str) -> PciAddress {
    s.parse().unwrap()
}

fn function(addr: &str, class: u32, device: &str) -> PciFunction {
    PciFunction {
        address: a(addr),
        class,
        vendor_id: 0x10de,
        device_id: 0x1e87,
        subsystem_vendor_id: None,
        subsystem_device_id: None,
        revision: None,
        driver: Some("nouveau".into()),
        physfn: None,
        virtfns: Vec::new(),
        boot_vga: false,
        names: Names {
            device: device.into(),
            ..Names::default()
        },
    }
}

/// A stub host with a GPU (and its PGPU), an audio function and an NVMe
/// that holds the boot disk.
fn stub() -> Arc<StubDom0Host> {
    let stub = StubDom0Host {
        boot_disk: BTreeSet::from([a("0000:02:00.0")]),
        ..StubDom0Host::default()
    };
    *stub.functions.lock().unwrap() = vec![
        function("0000:01:00.0", 0x030000, "GPU"),
        function("0000:01:00.1", 0x040300, "Audio"),
        function("0000:02:00.0", 0x010802, "NVMe"),
    ];
    *stub.boot.lock().unwrap() = "boot-1".into();
    Arc::new(stub)
}

fn context(stub: Arc<StubDom0Host>) -> Arc<Context> {
    let store = Arc::new(Store::open_in_memory().unwrap());
    let (host_ref, pool_ref) =
        host::bootstrap(&store, &stub.description, "stub", "127.0.0.1").unwrap();
    let config = ApiConfig {
        task_retention: Duration::from_secs(60),
        ..ApiConfig::default()
    };
    let ctx = Arc::new(Context::new(
        store,
        stub,
        config,
        (host_ref, pool_ref),
        Auth::default(),
        |v| format!("{v:?}"),
    ));
    sync::synchronise(&ctx).unwrap();
    ctx
}

struct Client {
    ctx: Arc<Context>,
    session: String,
}

impl Client {
    /// Logged in as `role` (a session made directly, as login would).
    fn new(ctx: &Arc<Context>, role: Role) -> Client {
        Client::of_user(ctx, "tester", role)
    }

    /// Logged in as `user` with `role`.
    fn of_user(ctx: &Arc<Context>, user: &str, role: Role) -> Client {
        let session =
            session_table::create_session(ctx, user, role, false, "test", "users").unwrap();
        Client {
            ctx: ctx.clone(),
            session,
        }
    }

    async fn call(&self, name: &str, args: Vec<Value>) -> Result<Value, ApiError> {
        let mut params = vec![Value::str(&self.session)];
        params.extend(args);
        invoke(&self.ctx, name, params, Origin::Network("192.0.2.1".into())).await
    }

    async fn pci(&self, pci_id: &str) -> Value {
        let Value::Array(refs) = self.call("PCI.get_all", vec![]).await.unwrap() else {
            panic!("PCI.get_all is not a list")
        };
        for reference in refs {
            if self.str("PCI.get_pci_id", vec![reference.clone()]).await == pci_id {
                return reference;
            }
        }
        panic!("no PCI {pci_id}")
    }

    async fn str(&self, name: &str, args: Vec<Value>) -> String {
        match self.call(name, args).await.unwrap() {
            Value::String(s) => s,
            other => panic!("{name}: {other:?}"),
        }
    }
}

fn field(record: &Value, name: &str) -> String {
    match record {
        Value::Struct(m) => m
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str().unwrap_or("").to_owned())
            .unwrap_or_default(),
        _ => String::new(),
    }
}

fn code(e: &ApiError) -> &'static str {
    e.code()
}

#[tokio::test]
async fn pci_messages_translate_to_the_domain_and_back() {
    let stub = stub();
    let ctx = context(stub.clone());
    let op = Client::new(&ctx, Role::PoolOperator);
    let gpu = op.pci("0000:01:00.0").await;
    assert_eq!(
        op.str("PCI.get_dom0_access_status", vec![gpu.clone()])
            .await,
        "enabled"
    );
    assert_eq!(
        op.str("PCI.disable_dom0_access", vec![gpu.clone()]).await,
        "disable_on_reboot"
    );
    assert_eq!(
        op.str("PCI.enable_dom0_access", vec![gpu.clone()]).await,
        "enabled"
    );
    let calls = stub.calls.lock().unwrap().clone();
    assert!(calls.contains(&"hide 0000:01:00.0".to_owned()), "{calls:?}");
    assert!(
        calls.contains(&"unhide 0000:01:00.0".to_owned()),
        "{calls:?}"
    );
}

#[tokio::test]
async fn domain_refusals_become_xenapi_errors() {
    let stub = stub();
    let ctx = context(stub.clone());
    let op = Client::new(&ctx, Role::PoolOperator);
    let nvme = op.pci("0000:02:00.0").await;
    let e = op
        .call("PCI.disable_dom0_access", vec![nvme])
        .await
        .unwrap_err();
    assert_eq!(
        e.description(),
        ["BOOT_DEVICE_PASSTHROUGH_DISALLOWED", "/dev/stub"]
    );
    *stub.broken.lock().unwrap() = Some("disk gone".into());
    let gpu = op.pci("0000:01:00.0").await;
    let e = op
        .call("PCI.disable_dom0_access", vec![gpu])
        .await
        .unwrap_err();
    assert_eq!(code(&e), "BOOT_CONFIG_UNAVAILABLE");
}

#[tokio::test]
async fn a_read_only_session_cannot_edit_and_a_bad_ref_is_handle_invalid() {
    let stub = stub();
    let ctx = context(stub.clone());
    let ro = Client::new(&ctx, Role::ReadOnly);
    let gpu = ro.pci("0000:01:00.0").await;
    let e = ro
        .call("PCI.disable_dom0_access", vec![gpu])
        .await
        .unwrap_err();
    assert_eq!(code(&e), "RBAC_PERMISSION_DENIED");
    let e = ro
        .call(
            "PCI.get_dom0_access_status",
            vec![Value::str("OpaqueRef:nope")],
        )
        .await
        .unwrap_err();
    assert_eq!(e.description(), ["HANDLE_INVALID", "PCI", "OpaqueRef:nope"]);
    assert!(
        !stub
            .calls
            .lock()
            .unwrap()
            .iter()
            .any(|c| c.starts_with("hide"))
    );
}

#[tokio::test]
async fn pgpu_follows_its_pci_through_edits() {
    let stub = stub();
    let ctx = context(stub.clone());
    let op = Client::new(&ctx, Role::PoolOperator);
    let pgpus = op.call("PGPU.get_all", vec![]).await.unwrap();
    let Value::Array(pgpus) = pgpus else { panic!() };
    assert_eq!(pgpus.len(), 1, "one PGPU, for the display function");
    let pgpu = pgpus[0].clone();
    assert_eq!(
        op.str("PGPU.disable_dom0_access", vec![pgpu.clone()]).await,
        "disable_on_reboot"
    );
    assert_eq!(
        op.str("PGPU.get_dom0_access", vec![pgpu.clone()]).await,
        "disable_on_reboot"
    );
    let gpu = op.pci("0000:01:00.0").await;
    assert_eq!(
        op.str("PCI.get_dom0_access_status", vec![gpu]).await,
        "disable_on_reboot"
    );
}

/// Issue 23: a status read computes and returns; it never writes the
/// store. A change made behind the daemon's back (a hand edit) shows in
/// the derived PGPU field at the next read of it, written once by the
/// one trigger, and reads that find nothing moved write nothing.
#[tokio::test]
async fn reads_never_write_and_a_hand_edit_shows_at_the_next_pgpu_read() {
    let stub = stub();
    let ctx = context(stub.clone());
    let op = Client::new(&ctx, Role::PoolOperator);
    let gpu = op.pci("0000:01:00.0").await;
    let Value::Array(pgpus) = op.call("PGPU.get_all", vec![]).await.unwrap() else {
        panic!("PGPU.get_all is not a list")
    };
    let pgpu = pgpus[0].clone();
    assert_eq!(
        op.str("PGPU.get_dom0_access", vec![pgpu.clone()]).await,
        "enabled"
    );
    // The hand edit: the stub's next boot hides the GPU.
    stub.next_boot.lock().unwrap().insert(a("0000:01:00.0"));
    let before = ctx.store.class_generation("PGPU");
    for _ in 0..3 {
        assert_eq!(
            op.str("PCI.get_dom0_access_status", vec![gpu.clone()])
                .await,
            "disable_on_reboot"
        );
    }
    assert_eq!(
        ctx.store.class_generation("PGPU"),
        before,
        "a status read wrote"
    );
    assert_eq!(
        op.str("PGPU.get_dom0_access", vec![pgpu.clone()]).await,
        "disable_on_reboot"
    );
    let caught_up = ctx.store.class_generation("PGPU");
    assert!(
        caught_up > before,
        "the PGPU read did not see the hand edit"
    );
    let record = op
        .call("PGPU.get_record", vec![pgpu.clone()])
        .await
        .unwrap();
    assert_eq!(field(&record, "dom0_access"), "disable_on_reboot");
    op.call("PGPU.get_all_records", vec![]).await.unwrap();
    assert_eq!(
        ctx.store.class_generation("PGPU"),
        caught_up,
        "a read with nothing moved wrote"
    );
}

#[tokio::test]
async fn host_reboot_needs_a_disabled_host_then_drops_sessions() {
    let stub = stub();
    let ctx = context(stub.clone());
    let op = Client::new(&ctx, Role::PoolOperator);
    let host = Value::str(&ctx.host_ref);
    let e = op
        .call("host.reboot", vec![host.clone()])
        .await
        .unwrap_err();
    assert_eq!(code(&e), "HOST_NOT_DISABLED");
    let gpu = op.pci("0000:01:00.0").await;
    op.call("PCI.disable_dom0_access", vec![gpu.clone()])
        .await
        .unwrap();
    op.call("host.disable", vec![host.clone()]).await.unwrap();
    op.call("host.reboot", vec![host]).await.unwrap();
    assert!(stub.calls.lock().unwrap().contains(&"reboot".to_owned()));
    let e = op.call("PCI.get_all", vec![]).await.unwrap_err();
    assert_eq!(code(&e), "SESSION_INVALID", "a reboot ends every session");
    let again = Client::new(&ctx, Role::PoolOperator);
    let gpu = again.pci("0000:01:00.0").await;
    assert_eq!(
        again.str("PCI.get_dom0_access_status", vec![gpu]).await,
        "disabled"
    );
    let host = ctx.object("host", &ctx.host_ref).unwrap();
    assert_eq!(
        host.get("enabled"),
        Some(&Value::Bool(true)),
        "enabled after the reboot"
    );
}

#[tokio::test]
async fn discovery_fills_the_store_and_a_vanished_device_goes() {
    let stub = stub();
    let ctx = context(stub.clone());
    let op = Client::new(&ctx, Role::ReadOnly);
    let Value::Array(pcis) = op.call("PCI.get_all", vec![]).await.unwrap() else {
        panic!()
    };
    assert_eq!(pcis.len(), 3);
    stub.functions
        .lock()
        .unwrap()
        .retain(|f| f.address != a("0000:01:00.1"));
    sync::synchronise(&ctx).unwrap();
    let Value::Array(pcis) = op.call("PCI.get_all", vec![]).await.unwrap() else {
        panic!()
    };
    assert_eq!(pcis.len(), 2);
}

#[tokio::test]
async fn an_async_edit_runs_as_a_task_with_its_result() {
    let stub = stub();
    let ctx = context(stub.clone());
    let op = Client::new(&ctx, Role::PoolOperator);
    let gpu = op.pci("0000:01:00.0").await;
    let task = op
        .call("Async.PCI.disable_dom0_access", vec![gpu])
        .await
        .unwrap();
    let mut status = String::new();
    // Up to a minute: a hang guard, the loop ends with the task.
    for _ in 0..6000 {
        status = op.str("task.get_status", vec![task.clone()]).await;
        if status != "pending" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(status, "success");
    assert!(
        op.str("task.get_result", vec![task])
            .await
            .contains("disable_on_reboot")
    );
}

#[tokio::test]
async fn event_from_reports_an_edit_after_its_token() {
    let stub = stub();
    let ctx = context(stub.clone());
    let op = Client::new(&ctx, Role::PoolOperator);
    let classes = Value::Array(vec![Value::str("PGPU")]);
    let token = stream_token(&op, &classes).await;
    let gpu = op.pci("0000:01:00.0").await;
    op.call("PCI.disable_dom0_access", vec![gpu]).await.unwrap();
    let next = op
        .call(
            "event.from",
            vec![classes, Value::str(&token), Value::Float(1.0)],
        )
        .await
        .unwrap();
    let Value::Struct(members) = next else {
        panic!()
    };
    let events = members
        .iter()
        .find(|(k, _)| k == "events")
        .map(|(_, v)| v.clone());
    let Some(Value::Array(events)) = events else {
        panic!("no events")
    };
    assert!(
        events
            .iter()
            .any(|e| field(e, "class") == "pgpu" && field(e, "operation") == "mod"),
        "{events:?}"
    );
}

/// The (ref, operation) of each task event `client`'s `event.from` over
/// tasks hands out after `token`.
async fn task_events_from(client: &Client, token: &str) -> Vec<(String, String)> {
    let batch = client
        .call(
            "event.from",
            vec![
                Value::Array(vec![Value::str("task")]),
                Value::str(token),
                Value::Float(1.0),
            ],
        )
        .await
        .unwrap();
    task_events(batch.member("events").unwrap())
}

/// The (ref, operation) of each task event in a list of events.
fn task_events(events: &Value) -> Vec<(String, String)> {
    let Value::Array(events) = events else {
        panic!("events are not a list: {events:?}")
    };
    events
        .iter()
        .filter(|e| field(e, "class") == "task")
        .map(|e| (field(e, "ref"), field(e, "operation")))
        .collect()
}

/// Tasks are private to their owner and pool operators, in events as in
/// the getters: a read-only user's `event.from` and `event.next` carry
/// none of another user's task events, its `del` included, while its own
/// task's `del` and, for an operator, the other user's, come through.
#[tokio::test]
async fn another_users_task_events_its_del_included_are_private() {
    let ctx = context(stub());
    let alice = Client::of_user(&ctx, "alice", Role::ReadOnly);
    let bob = Client::of_user(&ctx, "bob", Role::ReadOnly);
    let op = Client::of_user(&ctx, "olga", Role::PoolOperator);
    let classes = Value::Array(vec![Value::str("task")]);
    let bob_token = stream_token(&bob, &classes).await;
    let op_token = stream_token(&op, &classes).await;
    bob.call("event.register", vec![classes.clone()])
        .await
        .unwrap();

    let task = |label: &'static str| vec![Value::str(label), Value::str("")];
    let hers = alice.str("task.create", task("hers")).await;
    alice
        .call("task.destroy", vec![Value::str(&hers)])
        .await
        .unwrap();
    let his = bob.str("task.create", task("his")).await;
    bob.call("task.destroy", vec![Value::str(&his)])
        .await
        .unwrap();

    let his_del = (his.clone(), "del".to_owned());
    let hers_del = (hers.clone(), "del".to_owned());

    let seen = task_events_from(&bob, &bob_token).await;
    assert!(seen.contains(&his_del), "bob's own del: {seen:?}");
    assert!(seen.iter().all(|(r, _)| *r != hers), "event.from: {seen:?}");

    let seen = task_events(&bob.call("event.next", vec![]).await.unwrap());
    assert!(seen.contains(&his_del), "bob's own del: {seen:?}");
    assert!(seen.iter().all(|(r, _)| *r != hers), "event.next: {seen:?}");

    let seen = task_events_from(&op, &op_token).await;
    assert!(
        seen.contains(&hers_del) && seen.contains(&his_del),
        "{seen:?}"
    );
}

/// `host.other_config:agent_start_time` of a host record or snapshot.
fn agent_start_time(record: &Value) -> String {
    record
        .member("other_config")
        .and_then(|c| c.member(host::AGENT_START_TIME))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// Xen Orchestra, after `Async.host.reboot`, watches for a new
/// agent_start_time only once its event stream brought the task's
/// success, and misses a value it received before or with it. The success
/// must reach a stream holding its token across the reboot while the
/// value is still the old one; once the task is destroyed (as XO does)
/// the session ends, and a fresh login sees the new value.
#[tokio::test]
async fn an_async_reboot_succeeds_before_the_host_restarts() {
    let stub = stub();
    let ctx = context(stub.clone());
    host::record_agent_start(&ctx).unwrap();
    let xo = Client::new(&ctx, Role::PoolOperator);
    let host = Value::str(&ctx.host_ref);
    let before = agent_start_time(
        &xo.call("host.get_record", vec![host.clone()])
            .await
            .unwrap(),
    );
    let gpu = xo.pci("0000:01:00.0").await;
    xo.call("PCI.disable_dom0_access", vec![gpu]).await.unwrap();
    xo.call("host.disable", vec![host.clone()]).await.unwrap();
    let classes = Value::Array(vec![Value::str("host"), Value::str("task")]);
    let token = stream_token(&xo, &classes).await;
    let task = xo
        .call("Async.host.reboot", vec![host.clone()])
        .await
        .unwrap();
    let task_ref = task.as_str().unwrap().to_owned();
    // The stream until the task's success.
    let mut token = until_task_succeeded(&xo, &classes, token, &task_ref, |event| {
        if field(event, "class") == "host" {
            let snapshot = event.member("snapshot").cloned().unwrap_or(Value::Nil);
            assert_eq!(
                agent_start_time(&snapshot),
                before,
                "agent_start_time moved before the task's success was seen"
            );
        }
    })
    .await;
    xo.call("task.destroy", vec![task]).await.unwrap();
    // Then the host restarts: the session ends.
    loop {
        match xo
            .call(
                "event.from",
                vec![classes.clone(), Value::str(&token), Value::Float(30.0)],
            )
            .await
        {
            Ok(batch) => token = field(&batch, "token"),
            Err(e) => {
                assert_eq!(code(&e), "SESSION_INVALID");
                break;
            }
        }
    }
    let again = Client::new(&ctx, Role::PoolOperator);
    let record = again.call("host.get_record", vec![host]).await.unwrap();
    assert!(agent_start_time(&record).parse::<f64>().unwrap() > before.parse::<f64>().unwrap());
    assert_eq!(record.member("enabled"), Some(&Value::Bool(true)));
}

/// On a real host the reboot command stops pcipassd within seconds: an
/// `Async.host.reboot`'s success must reach Xen Orchestra's stream before
/// the command runs (xapi's reboot fuse), or XO fails the reboot with
/// "task destroyed before completion" when it reconnects.
#[tokio::test]
async fn a_real_hosts_reboot_command_runs_after_the_task_succeeded() {
    let stub = stub();
    stub.reboots_by_command
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let ctx = context(stub.clone());
    let xo = Client::new(&ctx, Role::PoolOperator);
    let host = Value::str(&ctx.host_ref);
    xo.call("host.disable", vec![host.clone()]).await.unwrap();
    let classes = Value::Array(vec![Value::str("task")]);
    let token = stream_token(&xo, &classes).await;
    let task = xo.call("Async.host.reboot", vec![host]).await.unwrap();
    let task_ref = task.as_str().unwrap().to_owned();
    let rebooted = || stub.calls.lock().unwrap().contains(&"reboot".to_owned());
    until_task_succeeded(&xo, &classes, token, &task_ref, |_| {}).await;
    assert!(
        !rebooted(),
        "the reboot command ran before the task's success was seen"
    );
    xo.call("task.destroy", vec![task]).await.unwrap();
    for _ in 0..600 {
        if rebooted() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the reboot command never ran after the task was destroyed");
}

/// Follow an event stream from `token` until it brings the success of the
/// task `task_ref`; `other` sees every other event on the way. The token
/// after that batch.
async fn until_task_succeeded(
    xo: &Client,
    classes: &Value,
    mut token: String,
    task_ref: &str,
    mut other: impl FnMut(&Value),
) -> String {
    loop {
        let batch = xo
            .call(
                "event.from",
                vec![classes.clone(), Value::str(&token), Value::Float(30.0)],
            )
            .await
            .unwrap_or_else(|e| panic!("the stream ended before the task's success: {e:?}"));
        token = field(&batch, "token");
        let Some(Value::Array(events)) = batch.member("events") else {
            panic!("no events in {batch:?}")
        };
        let mut succeeded = false;
        for event in events {
            if field(event, "class") == "task" && field(event, "ref") == task_ref {
                let snapshot = event.member("snapshot").cloned().unwrap_or(Value::Nil);
                succeeded |= field(&snapshot, "status") == "success";
            } else {
                other(event);
            }
        }
        if succeeded {
            return token;
        }
    }
}

/// A new event stream over `classes`: the token of its first batch.
async fn stream_token(client: &Client, classes: &Value) -> String {
    let first = client
        .call(
            "event.from",
            vec![classes.clone(), Value::str(""), Value::Float(0.0)],
        )
        .await
        .unwrap();
    field(&first, "token")
}
