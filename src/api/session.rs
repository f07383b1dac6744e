//! The `session` class: login, logout, and the session check every call
//! goes through. Sessions live in the store, so they survive a daemon
//! restart; a session idle longer than the configured timeout is dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::api::context::{Auth, Caller, Context, Origin};
use crate::api::handler::{Handler, HandlerFuture};
use crate::api::objects::new_object;
use crate::api::{ApiError, Role, Value};
use crate::store::pam;
use crate::store::users::{Scratch, UsersError, UsersFile};
use crate::store::{Change, Object, db};
use crate::value::now_datetime;

/// This class's custom messages and their handlers (`api::invoke`'s tests
/// check them against the idl both ways).
pub const HANDLERS: &[(&str, Handler)] = &[
    ("login_with_password", login_with_password),
    ("logout", logout),
    ("local_logout", logout),
];

/// How often `last_active` is written back at most.
const LAST_ACTIVE_GRANULARITY: Duration = Duration::from_secs(60);

/// The gate every password login passes, per user name and per client
/// address ("keys"):
///
/// - **Throttle before any work.** After `f` failures of a key (within
///   five minutes) its password checks are spaced `100 ms * 2^f` apart, at
///   most 5 s: when a checker is free, an attempt takes the next free time
///   of each of its keys or waits for the latest, so parallel attempts
///   run one after another instead of side by side, and a failure counts
///   for every attempt still waiting.
/// - **Few waiting.** At most [`LoginThrottle::QUEUED_PER_KEY`] attempts
///   wait per key that has failures and [`LoginThrottle::QUEUED`] in all;
///   more are refused at once, with no password checked. Logins of a key
///   without failures (a crowd of clients with the right password) only
///   wait for a checker.
/// - **Few hashes at once, in memory kept.** Passwords are checked by a
///   few threads of their own (one per core, four at most), each reusing
///   its argon2 memory (19 MiB with the users file's parameters), however
///   many logins come.
#[derive(Debug)]
pub struct LoginThrottle {
    keys: Mutex<HashMap<String, KeyState>>,
    queued: Mutex<usize>,
    hashing: tokio::sync::Semaphore,
    checkers: std::sync::OnceLock<Option<std::sync::mpsc::Sender<CheckJob>>>,
    refusals: Mutex<(u64, Option<Instant>)>,
}

/// A password check for the checker threads.
type CheckJob = Box<dyn FnOnce(&mut Scratch) + Send>;

#[derive(Debug)]
struct KeyState {
    failures: u32,
    last_failure: Instant,
    next_free: Instant,
    queued: usize,
}

impl KeyState {
    /// A key seen for the first time at `now`.
    fn fresh(now: Instant) -> KeyState {
        KeyState {
            failures: 0,
            last_failure: now,
            next_free: now,
            queued: 0,
        }
    }
}

/// An attempt let through the gate, waiting for its turn. Its place in
/// the queues is freed when it is dropped.
#[derive(Debug)]
pub struct Admission<'a> {
    throttle: &'a LoginThrottle,
    keys: Vec<String>,
}

impl Default for LoginThrottle {
    fn default() -> LoginThrottle {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        LoginThrottle {
            keys: Mutex::new(HashMap::new()),
            queued: Mutex::new(0),
            hashing: tokio::sync::Semaphore::new(cores.clamp(1, 4)),
            checkers: std::sync::OnceLock::new(),
            refusals: Mutex::new((0, None)),
        }
    }
}

impl LoginThrottle {
    /// Attempts that may wait per user name or per address.
    pub const QUEUED_PER_KEY: usize = 4;
    /// Attempts that may wait in all.
    pub const QUEUED: usize = 256;
    /// Failures are forgotten this long after the last one.
    const MEMORY: Duration = Duration::from_secs(300);

    fn spacing(failures: u32) -> Duration {
        if failures == 0 {
            Duration::ZERO
        } else {
            Duration::from_millis(100u64.saturating_mul(1 << failures.min(6)))
                .min(Duration::from_secs(5))
        }
    }

    /// The earliest time an attempt for `keys` may be checked (`now` when
    /// no key has a turn reserved later).
    fn next_turn(states: &HashMap<String, KeyState>, keys: &[String], now: Instant) -> Instant {
        keys.iter()
            .filter_map(|k| states.get(k))
            .map(|s| s.next_free)
            .max()
            .map_or(now, |at| at.max(now))
    }

    /// The delay a new attempt for these keys would wait now.
    pub fn delay(&self, keys: &[String]) -> Duration {
        let now = Instant::now();
        let states = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        Self::next_turn(&states, keys, now) - now
    }

    /// Let an attempt for `keys` in, or `None` when too many already wait
    /// (in all, or for a key that has failures: a key without failures
    /// only waits for a checker).
    pub fn admit(&self, keys: &[String]) -> Option<Admission<'_>> {
        let now = Instant::now();
        let mut queued = self.queued.lock().unwrap_or_else(|p| p.into_inner());
        let mut states = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if *queued >= Self::QUEUED
            || keys.iter().any(|k| {
                states
                    .get(k)
                    .is_some_and(|s| s.failures > 0 && s.queued >= Self::QUEUED_PER_KEY)
            })
        {
            return None;
        }
        if states.len() > 10_000 {
            states.retain(|_, s| s.queued > 0 || s.last_failure.elapsed() < Self::MEMORY);
        }
        for key in keys {
            let state = states
                .entry(key.clone())
                .or_insert_with(|| KeyState::fresh(now));
            if state.failures > 0 && state.last_failure.elapsed() >= Self::MEMORY {
                state.failures = 0;
            }
            state.queued += 1;
        }
        *queued += 1;
        Some(Admission {
            throttle: self,
            keys: keys.to_vec(),
        })
    }

    /// Take this attempt's turn now if its keys' schedule allows it
    /// (reserving the next turn one spacing later), else the time to wait
    /// until.
    fn reserve(&self, keys: &[String]) -> Result<(), Instant> {
        let now = Instant::now();
        let mut states = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        let at = Self::next_turn(&states, keys, now);
        if at > now {
            return Err(at);
        }
        for key in keys {
            if let Some(state) = states.get_mut(key) {
                state.next_free = now + Self::spacing(state.failures);
            }
        }
        Ok(())
    }

    /// Count an attempt refused unchecked; `Some(n)` (the refusals since the
    /// last report, this one included) at most once a second, when it
    /// should be logged.
    pub fn refusal_to_report(&self) -> Option<u64> {
        let mut refusals = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        refusals.0 += 1;
        if refusals
            .1
            .is_some_and(|at| at.elapsed() < Duration::from_secs(1))
        {
            return None;
        }
        refusals.1 = Some(Instant::now());
        Some(std::mem::take(&mut refusals.0))
    }

    /// Run `check` for an admitted attempt on a checker thread, once a
    /// checker is free and the attempt's keys' schedule allows it (the
    /// schedule is read when the checker is free, so failures recorded
    /// meanwhile count); `None` when no checker can run it.
    pub async fn check<T: Send + 'static>(
        &self,
        admission: &Admission<'_>,
        check: impl FnOnce(&mut Scratch) -> T + Send + 'static,
    ) -> Option<T> {
        let _turn = loop {
            let turn = self.hashing.acquire().await.ok()?;
            match self.reserve(&admission.keys) {
                Ok(()) => break turn,
                Err(at) => {
                    drop(turn);
                    tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
                }
            }
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: CheckJob = Box::new(move |scratch| {
            let _ = reply.send(check(scratch));
        });
        self.checkers
            .get_or_init(|| self.start_checkers())
            .as_ref()?
            .send(job)
            .ok()?;
        answer.await.ok()
    }

    /// The checker threads, as many as turns.
    fn start_checkers(&self) -> Option<std::sync::mpsc::Sender<CheckJob>> {
        let (jobs, queue) = std::sync::mpsc::channel::<CheckJob>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..self.hashing.available_permits() {
            let queue = queue.clone();
            let started = std::thread::Builder::new()
                .name(format!("pcipass-login-{n}"))
                .spawn(move || {
                    let mut scratch = Scratch::default();
                    loop {
                        let job = match queue.lock() {
                            Ok(queue) => queue.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(&mut scratch),
                            Err(_) => return,
                        }
                    }
                });
            if let Err(e) = started {
                tracing::error!("cannot start a password checker thread: {e}");
                if n == 0 {
                    return None;
                }
            }
        }
        Some(jobs)
    }

    /// Record a failure for these keys.
    pub fn failed(&self, keys: &[String]) {
        let now = Instant::now();
        let mut states = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        for k in keys {
            let state = states
                .entry(k.clone())
                .or_insert_with(|| KeyState::fresh(now));
            state.failures = state.failures.saturating_add(1);
            state.last_failure = now;
            state.next_free = state.next_free.max(now + Self::spacing(state.failures));
        }
    }

    /// Forget failures after a success.
    pub fn succeeded(&self, keys: &[String]) {
        let mut states = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        for k in keys {
            if let Some(state) = states.get_mut(k) {
                state.failures = 0;
                state.next_free = Instant::now();
            }
        }
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        let mut queued = self
            .throttle
            .queued
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *queued = queued.saturating_sub(1);
        let mut states = self.throttle.keys.lock().unwrap_or_else(|p| p.into_inner());
        for k in &self.keys {
            if let Some(state) = states.get_mut(k) {
                state.queued = state.queued.saturating_sub(1);
            }
        }
    }
}

fn unix_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

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

/// Create a session for `user`, authenticated by `source` (`pam`,
/// `users`, `local-root`), and return its ref.
pub fn create_session(
    ctx: &Context,
    user: &str,
    role: Role,
    superuser: bool,
    originator: &str,
    source: &str,
) -> Result<String, ApiError> {
    let reference = db::new_ref();
    let now = now_datetime();
    let session = new_object(
        "session",
        reference.clone(),
        db::new_uuid(),
        vec![
            ("this_host", Value::String(ctx.host_ref.clone())),
            ("this_user", Value::str("OpaqueRef:NULL")),
            ("last_active", now.clone()),
            ("validation_time", now),
            ("is_local_superuser", Value::Bool(superuser)),
            ("auth_user_name", Value::str(user)),
            ("originator", Value::str(originator)),
            ("role", Value::str(role.as_str())),
            ("auth_source", Value::str(source)),
            ("last_active_unix", Value::Int(unix_seconds())),
            ("login_ns", Value::Int(unix_nanos())),
        ],
    );
    let mut changes = vec![Change::Create(session)];
    // Keep each user's sessions bounded: drop the least recently active.
    let mut own: Vec<Arc<Object>> = ctx
        .store
        .all("session")
        .into_iter()
        .filter(|s| s.get_str("auth_user_name") == user)
        .collect();
    if own.len() >= ctx.config.max_sessions_per_user {
        own.sort_by_key(|s| (last_active_unix(s), login_ns(s)));
        let excess = own.len() + 1 - ctx.config.max_sessions_per_user;
        changes.extend(
            own.iter()
                .take(excess)
                .map(|s| Change::Delete(s.reference.clone())),
        );
    }
    ctx.apply(changes)?;
    Ok(reference)
}

fn unix_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn login_ns(session: &Object) -> i64 {
    match session.get("login_ns") {
        Some(Value::Int(n)) => *n,
        _ => 0,
    }
}

fn last_active_unix(session: &Object) -> i64 {
    match session.get("last_active_unix") {
        Some(Value::Int(n)) => *n,
        _ => 0,
    }
}

/// Check a session ref and return the caller it stands for.
pub fn check(ctx: &Context, reference: &str, origin: Origin) -> Result<Caller, ApiError> {
    let invalid = || ApiError::SessionInvalid(reference.to_owned());
    let session = ctx.store.get_of("session", reference).ok_or_else(invalid)?;
    let now = unix_seconds();
    let idle = now.saturating_sub(last_active_unix(&session));
    if idle > ctx.config.session_idle_timeout.as_secs() as i64 {
        ctx.store
            .apply(vec![Change::Delete(reference.to_owned())])?;
        tracing::info!(
            user = session.get_str("auth_user_name"),
            "session expired after {idle} s idle"
        );
        return Err(invalid());
    }
    if idle > LAST_ACTIVE_GRANULARITY.as_secs() as i64 {
        // Bookkeeping, not the call: a store that refuses writes (its file
        // vanished) must not turn every read into an error.
        if let Err(e) = ctx.apply(vec![Change::Update {
            reference: reference.to_owned(),
            fields: vec![
                ("last_active".into(), now_datetime()),
                ("last_active_unix".into(), Value::Int(now)),
            ],
        }]) {
            tracing::warn!("cannot record the session's activity: {e}");
        }
    }
    Ok(Caller {
        session: reference.to_owned(),
        user: session.get_str("auth_user_name").to_owned(),
        role: session.get_str("role").parse().unwrap_or(Role::ReadOnly),
        superuser: matches!(session.get("is_local_superuser"), Some(Value::Bool(true))),
        origin,
        task: None,
    })
}

fn logout(ctx: Arc<Context>, caller: Caller, _args: Vec<Value>) -> HandlerFuture {
    Box::pin(async move {
        ctx.store
            .apply(vec![Change::Delete(caller.session.clone())])?;
        tracing::info!(user = %caller.user, "session closed");
        Ok(Value::void())
    })
}

/// Drop every session (a host reboot does this).
pub fn invalidate_all(ctx: &Context) -> Result<usize, ApiError> {
    let sessions = ctx.store.all("session");
    let count = sessions.len();
    ctx.apply(
        sessions
            .iter()
            .map(|s| Change::Delete(s.reference.clone()))
            .collect(),
    )?;
    Ok(count)
}

/// Drop sessions idle longer than the timeout; returns how many.
pub fn expire_idle(ctx: &Context) -> Result<usize, ApiError> {
    let now = unix_seconds();
    let limit = ctx.config.session_idle_timeout.as_secs() as i64;
    let stale: Vec<Change> = ctx
        .store
        .all("session")
        .iter()
        .filter(|s| now.saturating_sub(last_active_unix(s)) > limit)
        .map(|s| Change::Delete(s.reference.clone()))
        .collect();
    let count = stale.len();
    ctx.apply(stale)?;
    Ok(count)
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn throttle_grows_and_resets() {
        let t = LoginThrottle::default();
        let keys = vec!["user:a".to_owned()];
        assert_eq!(t.delay(&keys), Duration::ZERO);
        // Two failures: 400 ms from the second, less the time this test
        // took to ask (measured, so a busy machine cannot fail it).
        let before = Instant::now();
        t.failed(&keys);
        t.failed(&keys);
        let delay = t.delay(&keys);
        let took = before.elapsed();
        assert!(delay <= Duration::from_millis(400), "{delay:?}");
        assert!(
            delay + took >= Duration::from_millis(400),
            "{delay:?} {took:?}"
        );
        t.succeeded(&keys);
        assert_eq!(t.delay(&keys), Duration::ZERO);
    }

    #[test]
    fn parallel_attempts_queue_one_after_another() {
        let t = LoginThrottle::default();
        let keys = vec!["user:root".to_owned(), "addr:10.0.0.1".to_owned()];
        // Without failures a crowd is let in and checked at once.
        let crowd: Vec<_> = (0..10).map(|_| t.admit(&keys).unwrap()).collect();
        assert!(crowd.iter().all(|_| t.reserve(&keys).is_ok()));
        drop(crowd);
        // One failure: checks are 200 ms apart, each after the previous:
        // the next turn is 200 ms after the failure, which happened
        // between `before` and the refusal (bounds from measured instants,
        // so a busy machine cannot fail the test).
        let before = Instant::now();
        t.failed(&keys);
        let _first = t.admit(&keys).unwrap();
        match t.reserve(&keys) {
            Err(turn) => {
                assert!(
                    turn >= before + Duration::from_millis(200),
                    "{turn:?} {before:?}"
                );
                assert!(turn <= Instant::now() + Duration::from_millis(200));
            }
            // Only when the machine stalled for the whole spacing.
            Ok(()) => assert!(before.elapsed() >= Duration::from_millis(200)),
        }
        // At most QUEUED_PER_KEY wait for a key with failures; another
        // key is free.
        let _more: Vec<_> = (0..3).map(|_| t.admit(&keys).unwrap()).collect();
        assert!(t.admit(&keys).is_none());
        assert!(t.admit(&["user:other".to_owned()]).is_some());
        // Refusals are reported once a second, with their count (the
        // next ones are quiet if this test took under a second to ask).
        let reported = Instant::now();
        assert_eq!(t.refusal_to_report(), Some(1));
        let next = [t.refusal_to_report(), t.refusal_to_report()];
        if reported.elapsed() < Duration::from_secs(1) {
            assert_eq!(next, [None, None]);
        }
    }
}
