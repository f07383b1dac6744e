//! The `session` class: `login_with_password` (through the
//! [`LoginThrottle`](crate::api::login_throttle::LoginThrottle), checked
//! against the users file or PAM), `logout` and `local_logout`. The
//! sessions themselves are in [`session_table`](crate::api::session_table).

use std::sync::Arc;

use crate::api::context::{Auth, Caller, Context, Origin};
use crate::api::handler::{Handler, HandlerFuture};
use crate::api::login_throttle::{Pool, Source};
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
            // A name no account has, refused before anything is kept.
            if user.len() > MAX_USER_NAME {
                tracing::warn!(
                    origin = ?caller.origin,
                    length = user.len(),
                    "login refused unchecked: the user name is longer than any account's"
                );
                return Err(ApiError::SessionAuthenticationFailed {
                    user: user.chars().take(64).collect(),
                    message: "Authentication failure".into(),
                });
            }
            let from = throttle_source(&caller.origin);
            let mut admission = match ctx.login_throttle.admit(&from) {
                Ok(admission) => admission,
                Err((refusal, log)) => {
                    if log {
                        tracing::warn!(
                            source = %from,
                            user = %user,
                            ?refusal,
                            "login refused unchecked: this source failed too often lately, or \
                             too many of its logins wait (logged once per source every 10 s)"
                        );
                    }
                    return Err(ApiError::SessionAuthenticationThrottled(
                        refusal.retry_after_secs(),
                    ));
                }
            };
            let state_dir = ctx.config.state_dir.clone();
            let (u, p) = (user.clone(), password);
            let users_file = state_dir.join("users");
            let auth = ctx.auth();
            let source = auth.source();
            // xapi: root authenticated by PAM is the local superuser.
            let pam_root = matches!(auth, Auth::Pam { .. }) && user == "root";
            let pool = match auth {
                Auth::Users => Pool::Hash,
                Auth::Pam { .. } => Pool::Pam,
            };
            let verdict = ctx
                .login_throttle
                .check(&mut admission, pool, move |scratch| match auth {
                    Auth::Users => check_password(&state_dir, &u, &p, scratch),
                    Auth::Pam {
                        service,
                        role_groups,
                    } => check_pam(&service, &role_groups, &u, &p),
                })
                .await;
            drop(admission);
            let verified = match verdict {
                Ok(Verdict::Accepted(role)) => Some(role),
                Ok(Verdict::Refused) => None,
                Err(Some(refusal)) => {
                    return Err(ApiError::SessionAuthenticationThrottled(
                        refusal.retry_after_secs(),
                    ));
                }
                Err(None) => {
                    tracing::error!(user = %user, "the password check could not run");
                    None
                }
                Ok(Verdict::PamRefused(why)) => {
                    tracing::warn!(
                        user = %user,
                        origin = ?caller.origin,
                        "PAM login refused: {why}"
                    );
                    None
                }
                Ok(Verdict::Unavailable(cause)) => {
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
                    ctx.login_throttle.succeeded(&from);
                    (role, pam_root, user.clone(), source)
                }
                None => {
                    ctx.login_throttle.failed(&from);
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

/// The longest user name a login is checked for (Linux's own limit is 32;
/// an LDAP or users-file name is rarely longer than 64).
const MAX_USER_NAME: usize = 256;

/// Where a login comes from, for the throttle.
fn throttle_source(origin: &Origin) -> Source {
    match origin {
        Origin::Network(addr) => Source::of_address(addr),
        Origin::Local(Some(uid)) => Source::Uid(*uid),
        Origin::Local(None) | Origin::Internal => Source::Unknown,
    }
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
