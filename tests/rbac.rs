//! Generated from the idl: every message called by every role; the call is
//! refused with RBAC_PERMISSION_DENIED exactly when the role is below the
//! message's minimum role.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] functions: a failure should fail the test"
)]

use pcipass::api::invoke::invoke;
use pcipass::api::session_table::create_session;
use pcipass::api::{Origin, Role, Value};
use pcipass::config::Settings;
use pcipass::idl::{Type, datamodel};

fn placeholder(ty: &Type) -> Value {
    match ty {
        Type::String | Type::Ref(_) => Value::str("OpaqueRef:NULL"),
        Type::Int => Value::Int(0),
        Type::Float => Value::Float(0.0),
        Type::Bool => Value::Bool(false),
        Type::DateTime => Value::DateTime("19700101T00:00:00Z".into()),
        Type::Enum(e) => Value::String(datamodel().enum_def(e).unwrap().values[0].clone()),
        Type::Set(_) | Type::Option(_) => Value::Array(vec![]),
        Type::Map(..) | Type::Record(_) | Type::Struct => Value::Struct(vec![]),
        Type::Void => Value::Nil,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_checks_its_minimum_role() {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings::demo_under(dir.path()).unwrap();
    let ctx = pcipass::daemon::build_context(&settings).unwrap();
    let mut checked = 0;
    for method in datamodel().methods().filter(|m| m.session) {
        for role in Role::ASSIGNABLE {
            let session = create_session(
                &ctx,
                &format!("user-{role}"),
                role,
                false,
                "rbac-test",
                "users",
            )
            .unwrap();
            let mut params = vec![Value::String(session)];
            params.extend(method.params.iter().map(|p| placeholder(&p.ty)));
            let result = invoke(
                &ctx,
                &method.wire_name,
                params,
                Origin::Network("127.0.0.1:1".into()),
            )
            .await;
            let denied = matches!(&result, Err(e) if e.code() == "RBAC_PERMISSION_DENIED");
            assert_eq!(
                denied,
                !role.allows(method.role),
                "{} as {role}: {result:?} (minimum {})",
                method.wire_name,
                method.role
            );
            checked += 1;
        }
    }
    println!("rbac: {checked} calls checked");
    assert!(checked > 600, "{checked} calls checked");
}
