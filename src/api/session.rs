//! The `session` class: `login_with_password` (through the
//! [`LoginThrottle`](crate::api::login_throttle::LoginThrottle), checked
//! against the users file or PAM), `logout` and `local_logout`. The
//! sessions themselves are in [`session_table`](crate::api::session_table).

use std::sync::Arc;

use crate::api::context::{Auth, Caller, Context, Origin};
use crate::api::handler::{Handler, HandlerFuture};
use crate::api::session_table::create_session;
use crate::api::{ApiError, Role, Value};
use crate::store::Change;
use crate::store::pam;
use crate::store::users::{Scratch, UsersError, UsersFile};

/// This class's custom messages and their handlers (`api::invoke`'s tests
/// check them against the idl both ways).
pub const HANDLERS: &[(&str, Handler)] = &[
    ("login_with_password", login_with_password),
    ("logout", logout),
    ("local_logout", logout),
];

fn login_with_password(ctx: Arc<Context>, caller: Caller, args: Vec<Value>) -> HandlerFuture {
    Box::pin(async move {
        let arg = |i: usize| args.get(i).and_then(Value::as_str).unwrap_or("").to_owned();
        let (user, password, originator) = (arg(0), arg(1), arg(3));
        let local_root = matches!(caller.origin, Origin::Local(Some(0)));
        let (role, superuser, name, source) = if local_root {
            (
                Role::PoolAdmin,
                true,
                if user.is_empty() {
                    "root".to_owned()
                } else {
                    user.clone()
                },
                "local-root",
            )
        } else {
            let keys = throttle_keys(&user, &caller.origin);
            let refused = || ApiError::SessionAuthenticationFailed {
                user: user.clone(),
                message: "Authentication failure".into(),
            };
            let Some(admission) = ctx.login_throttle.admit(&keys) else {
                // A flood would write a line per attempt: one a second is
                // enough to say it happens, with how many were refused.
                if let Some(refused_since) = ctx.login_throttle.refusal_to_report() {
                    tracing::warn!(
                        user = %user,
                        origin = ?caller.origin,
                        refused_since,
                        "login refused unchecked: too many logins wait for this user or address"
                    );
                }
                return Err(refused());
            };
            let state_dir = ctx.config.state_dir.clone();
            let (u, p) = (user.clone(), password);
            let users_file = state_dir.join("users");
            let auth = ctx.auth();
            let source = auth.source();
            // xapi: root authenticated by PAM is the local superuser.
            let pam_root = matches!(auth, Auth::Pam { .. }) && user == "root";
            let verdict = ctx
                .login_throttle
                .check(&admission, move |scratch| match auth {
                    Auth::Users => check_password(&state_dir, &u, &p, scratch),
                    Auth::Pam {
                        service,
                        role_groups,
                    } => check_pam(&service, &role_groups, &u, &p),
                })
                .await;
            drop(admission);
            let verified = match verdict {
                Some(Verdict::Accepted(role)) => Some(role),
                Some(Verdict::Refused) => None,
                None => {
                    tracing::error!(user = %user, "the password check could not run");
                    None
                }
                Some(Verdict::PamRefused(why)) => {
                    tracing::warn!(
                        user = %user,
                        origin = ?caller.origin,
                        "PAM login refused: {why}"
                    );
                    None
                }
                Some(Verdict::Unavailable(cause)) => {
                    // Not the client's fault: say why, or an operator sees
                    // only failed logins while everyone is locked out.
                    tracing::error!(
                        user = %user,
                        users_file = %users_file.display(),
                        cause = %cause,
                        "cannot check passwords: the users file is unusable"
                    );
                    None
                }
            };
            match verified {
                Some(role) => {
                    ctx.login_throttle.succeeded(&keys);
                    (role, pam_root, user.clone(), source)
                }
                None => {
                    ctx.login_throttle.failed(&keys);
                    tracing::warn!(user = %user, origin = ?caller.origin, "login failed");
                    return Err(ApiError::SessionAuthenticationFailed {
                        user,
                        message: "Authentication failure".into(),
                    });
                }
            }
        };
        let reference = create_session(&ctx, &name, role, superuser, &originator, source)?;
        tracing::info!(
            user = %name,
            role = %role,
            auth = source,
            origin = ?caller.origin,
            "session opened"
        );
        Ok(Value::String(reference))
    })
}

/// What the users file says about a password.
#[derive(Debug)]
enum Verdict {
    /// The password is right: the user's role.
    Accepted(Role),
    /// Unknown user or wrong password.
    Refused,
    /// PAM or the group lookup refused the login: why, for the log.
    PamRefused(String),
    /// The users file cannot be read or parsed: why. The client is told
    /// only that authentication failed.
    Unavailable(UsersError),
}

/// Check `user`'s `password` against `<state_dir>/users` (blocking: reads
/// the file and runs argon2).
fn check_password(
    state_dir: &std::path::Path,
    user: &str,
    password: &str,
    scratch: &mut Scratch,
) -> Verdict {
    match UsersFile::load(state_dir) {
        Ok(users) => users
            .verify_with(user, password, scratch)
            .map_or(Verdict::Refused, Verdict::Accepted),
        Err(e) => Verdict::Unavailable(e),
    }
}

/// Check `user`'s `password` with PAM, then find the role from the
/// user's groups (blocking: PAM modules and NSS lookups).
fn check_pam(service: &str, role_groups: &[(String, Role)], user: &str, password: &str) -> Verdict {
    if let Err(refusal) = pam::authenticate(service, user, password) {
        return Verdict::PamRefused(refusal.to_string());
    }
    match pam::role_of(user, role_groups) {
        Ok(role) => Verdict::Accepted(role),
        Err(refusal) => Verdict::PamRefused(refusal.to_string()),
    }
}

fn throttle_keys(user: &str, origin: &Origin) -> Vec<String> {
    let mut keys = vec![format!("user:{user}")];
    if let Origin::Network(addr) = origin {
        let ip = addr.rsplit_once(':').map(|(ip, _)| ip).unwrap_or(addr);
        keys.push(format!("addr:{ip}"));
    }
    keys
}

fn logout(ctx: Arc<Context>, caller: Caller, _args: Vec<Value>) -> HandlerFuture {
    Box::pin(async move {
        ctx.store
            .apply(vec![Change::Delete(caller.session.clone())])?;
        tracing::info!(user = %caller.user, "session closed");
        Ok(Value::void())
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[test]
    fn a_corrupt_users_file_is_unavailable_not_a_wrong_password() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            check_password(dir.path(), "alice", "pw", &mut Scratch::default()),
            Verdict::Refused
        ));
        std::fs::write(dir.path().join("users"), "this is not a users line\n").unwrap();
        assert!(matches!(
            check_password(dir.path(), "alice", "pw", &mut Scratch::default()),
            Verdict::Unavailable(UsersError::Corrupt { line: 1, .. })
        ));
    }

    #[test]
    fn the_right_password_is_accepted_and_a_wrong_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut users = UsersFile::load(dir.path()).unwrap();
        users.add("alice", Role::ReadOnly, "secret").unwrap();
        assert!(matches!(
            check_password(dir.path(), "alice", "secret", &mut Scratch::default()),
            Verdict::Accepted(Role::ReadOnly)
        ));
        assert!(matches!(
            check_password(dir.path(), "alice", "wrong", &mut Scratch::default()),
            Verdict::Refused
        ));
    }

    /// A log sink for one test.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_corrupt_users_file_fails_login_and_logs_why() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        crate::host::mock::create(&root, crate::host::mock::Profile::Demo).unwrap();
        let settings = crate::config::Settings {
            root: Some(root),
            state_dir: Some(dir.path().join("state")),
            auth: Some(crate::config::AuthMode::Users),
            ..crate::config::Settings::default()
        };
        let ctx = crate::daemon::build_context(&settings).unwrap();
        std::fs::write(ctx.config.state_dir.join("users"), "garbage\n").unwrap();

        let logs = Captured::default();
        let sink = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let err = crate::api::invoke::invoke(
            &ctx,
            "session.login_with_password",
            vec![
                Value::str("alice"),
                Value::str("pw"),
                Value::str("1.0"),
                Value::str("t"),
            ],
            Origin::Network("127.0.0.1:1".into()),
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), "SESSION_AUTHENTICATION_FAILED");
        let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
        let line = text
            .lines()
            .find(|l| l.contains("ERROR"))
            .unwrap_or_else(|| panic!("no error logged: {text}"));
        assert!(line.contains("users file line 1"), "{line}");
        assert!(line.contains("want name:role:hash"), "{line}");
    }
}
