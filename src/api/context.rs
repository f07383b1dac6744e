//! [`Context`]: the daemon state every API call sees, and [`Caller`], who
//! is calling.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::api::{ApiError, Role};
use crate::domain::service::{ChangeToken, Dom0Host};
use crate::store::{Change, Object, Store};
use crate::value::Snapshot;

/// Settings of the API layer.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Sessions idle longer than this are invalid.
    pub session_idle_timeout: Duration,
    /// Most sessions one user may hold; the oldest is dropped beyond it.
    pub max_sessions_per_user: usize,
    /// Finished tasks are destroyed after this long.
    pub task_retention: Duration,
    /// Command that reboots a real host (`host.reboot`).
    pub reboot_command: Vec<String>,
    /// Where the users file lives.
    pub state_dir: PathBuf,
    /// The boot flow found at start (for logs).
    pub boot_flow: String,
}

/// How password logins (other than local root's) are checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Auth {
    /// Against the users file in the state directory.
    #[default]
    Users,
    /// With PAM, the role coming from the user's groups.
    Pam {
        /// The PAM service (`pcipass`).
        service: String,
        /// `(group, role)` in order: the first group the user is in wins.
        role_groups: Vec<(String, Role)>,
    },
}

impl Auth {
    /// The auth source's name, as sessions record it.
    pub fn source(&self) -> &'static str {
        match self {
            Auth::Users => "users",
            Auth::Pam { .. } => "pam",
        }
    }
}

impl Default for ApiConfig {
    fn default() -> ApiConfig {
        ApiConfig {
            session_idle_timeout: Duration::from_secs(24 * 3600),
            max_sessions_per_user: 500,
            task_retention: Duration::from_secs(65 * 60),
            reboot_command: vec!["systemctl".into(), "reboot".into()],
            state_dir: PathBuf::from("/var/lib/pcipass"),
            boot_flow: String::new(),
        }
    }
}

/// The shared state of the daemon.
#[derive(Debug)]
pub struct Context {
    /// The object store.
    pub store: Arc<Store>,
    /// The host, through the domain surface: devices, dom0 access,
    /// reboot. Its calls block: async code runs them on the blocking pool
    /// ([`Context::domain`], or a handler wrapped in `handler::blocking`).
    pub host: Arc<dyn Dom0Host>,
    /// Settings.
    pub config: ApiConfig,
    /// This host's ref.
    pub host_ref: String,
    /// The pool's ref.
    pub pool_ref: String,
    /// Serialises `host.reboot` calls.
    pub host_lock: tokio::sync::Mutex<()>,
    /// Failed-login throttle.
    pub login_throttle: crate::api::login_throttle::LoginThrottle,
    /// Each user's budget of writes that make events ([`crate::api::quota::WRITES_PER_SECOND`]).
    pub write_budget: crate::api::quota::Budget,
    /// Sessions registered for `event.next`.
    pub event_registrations: crate::api::event::Registrations,
    /// The latest `get_all_records` answer of each class whose records
    /// every caller may see, with the class generation it was made at.
    pub record_snapshots: std::sync::Mutex<std::collections::HashMap<String, (u64, Snapshot)>>,
    /// Encodes a task result the way xapi stores it (an XML-RPC `<value>`
    /// fragment); supplied by the wire layer, which owns the encoding.
    pub task_result_encoder: fn(&crate::api::Value) -> String,
    /// How password logins (other than local root's) are checked;
    /// replaced when the daemon reloads its configuration (SIGHUP).
    pub auth: std::sync::RwLock<Auth>,
    /// The host's change token the derived fields were last computed at
    /// (`api::derived::catch_up`); held while they are recomputed.
    pub(crate) derived_at: std::sync::Mutex<Option<ChangeToken>>,
    /// Held by pcipass's own edits and by the drift look
    /// (`api::drift`), so that an own give-back is never a dropped hide.
    pub(crate) drift: std::sync::Mutex<()>,
    /// pcipass's own edits under way (`api::audit`): the change watch does
    /// not take their writes for outside changes.
    pub(crate) edits_in_flight: std::sync::atomic::AtomicUsize,
}

impl Context {
    /// The state of a daemon serving `host` from `store`, whose own host
    /// and pool objects are `host_ref` and `pool_ref`.
    pub fn new(
        store: Arc<Store>,
        host: Arc<dyn Dom0Host>,
        config: ApiConfig,
        (host_ref, pool_ref): (String, String),
        auth: Auth,
        task_result_encoder: fn(&crate::api::Value) -> String,
    ) -> Context {
        Context {
            store,
            host,
            config,
            host_ref,
            pool_ref,
            host_lock: tokio::sync::Mutex::new(()),
            login_throttle: crate::api::login_throttle::LoginThrottle::default(),
            write_budget: crate::api::quota::Budget::per_second(
                crate::api::quota::WRITES_PER_SECOND,
            ),
            event_registrations: crate::api::event::Registrations::default(),
            record_snapshots: Default::default(),
            task_result_encoder,
            auth: std::sync::RwLock::new(auth),
            derived_at: std::sync::Mutex::new(None),
            drift: std::sync::Mutex::new(()),
            edits_in_flight: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// How password logins are checked now.
    pub fn auth(&self) -> Auth {
        self.auth.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Check logins by `auth` from now on (sessions already open stay).
    pub fn set_auth(&self, auth: Auth) {
        *self.auth.write().unwrap_or_else(|p| p.into_inner()) = auth;
    }
}

/// Where a call came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// TCP (or TLS) from this address.
    Network(String),
    /// A Unix-socket peer with this uid (if known).
    Local(Option<u32>),
    /// Inside the daemon (tasks, start-up).
    Internal,
}

/// The authenticated caller of a message.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The session ref ("" for session-less calls).
    pub session: String,
    /// User name.
    pub user: String,
    /// Role.
    pub role: Role,
    /// Local superuser: bypasses RBAC.
    pub superuser: bool,
    /// Where the call came from.
    pub origin: Origin,
    /// The task an `Async.` call runs in.
    pub task: Option<String>,
}

impl Caller {
    /// A caller with no session yet (login).
    pub fn anonymous(origin: Origin) -> Caller {
        Caller {
            session: String::new(),
            user: String::new(),
            role: Role::ReadOnly,
            superuser: false,
            origin,
            task: None,
        }
    }

    /// True when this caller may call a message whose minimum role is `role`.
    pub fn may(&self, role: Role) -> bool {
        self.superuser || self.role.allows(role)
    }

    /// Check the minimum role of `permission`.
    pub fn require(&self, role: Role, permission: &str) -> Result<(), ApiError> {
        if self.may(role) {
            return Ok(());
        }
        let holders: Vec<&str> = Role::holders(role).into_iter().map(Role::as_str).collect();
        Err(ApiError::RbacPermissionDenied {
            permission: permission.to_lowercase(),
            message: format!(
                "No permission in user session. (Roles with this permission: {})",
                holders.join(", ")
            ),
        })
    }
}

impl Context {
    /// Run `work` against the host on the blocking pool (file I/O and
    /// `xen-cmdline` processes never run on a runtime thread).
    pub async fn domain<T: Send + 'static>(
        &self,
        work: impl FnOnce(&dyn Dom0Host) -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let host = self.host.clone();
        tokio::task::spawn_blocking(move || work(&*host))
            .await
            .map_err(|_| ApiError::Internal("a host worker failed".into()))
    }

    /// Apply changes to the store. In debug builds (every test) each class
    /// and field name is checked against the idl first, so a misspelt
    /// literal in a handler fails a test instead of storing a stray field.
    pub fn apply(&self, changes: Vec<Change>) -> Result<u64, ApiError> {
        if cfg!(debug_assertions) {
            for change in &changes {
                check_names(&self.store, change);
            }
        }
        Ok(self.store.apply(changes)?)
    }

    /// The object of `class` behind `reference`, or HANDLE_INVALID.
    pub fn object(&self, class: &str, reference: &str) -> Result<Arc<Object>, ApiError> {
        self.store
            .get_of(class, reference)
            .ok_or_else(|| ApiError::handle_invalid(class, reference))
    }
}

/// Panics (debug builds) when a change names a class or field the idl
/// does not declare.
fn check_names(store: &Store, change: &Change) {
    let declared = |class: &str, field: &str| {
        crate::idl::datamodel()
            .class(class)
            .is_some_and(|c| c.fields.iter().any(|f| f.name == field))
    };
    match change {
        Change::Create(object) => {
            for (name, _) in &object.fields {
                assert!(
                    declared(&object.class, name),
                    "{}.{name} is not in the idl",
                    object.class
                );
            }
        }
        Change::Update { reference, fields } => {
            if let Some(object) = store.get(reference) {
                for (name, _) in fields {
                    assert!(
                        declared(&object.class, name),
                        "{}.{name} is not in the idl",
                        object.class
                    );
                }
            }
        }
        Change::Delete(_) | Change::Touch(_) => {}
    }
}
