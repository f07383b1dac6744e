//! Logins with the host's own accounts: a password checked by PAM (service
//! [`SERVICE`], `/etc/pam.d/pcipass`) and a role found from the user's
//! groups in the system's group database (`getgrouplist`, so NSS sources
//! such as LDAP count too). Every function here blocks: callers run them
//! off the async runtime.

use std::ffi::{CStr, CString};

use crate::vocab::Role;

/// The PAM service pcipass authenticates against.
pub const SERVICE: &str = "pcipass";

/// Why PAM refused a login.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PamRefusal {
    /// `pam_authenticate` failed: unknown user, wrong password, or a
    /// locked password (pam_unix cannot tell them apart).
    #[error("wrong password or unknown user (or a locked password): {0}")]
    Authentication(String),
    /// `pam_acct_mgmt` refused an authenticated user: the account is
    /// expired, locked or its password must be changed first.
    #[error("account locked or expired: {0}")]
    Account(String),
    /// PAM could not be started or gave up (a broken service file).
    #[error("PAM is unusable: {0}")]
    Unavailable(String),
}

/// A PAM conversation that answers the user name and password prompts
/// and logs what PAM says.
struct Answers {
    user: String,
    password: String,
    /// PAM's error messages, in order (pam_unix says why an account is
    /// refused this way, while the return code may be a plain AUTH_ERR
    /// from pam_deny in Debian's common-account).
    errors: Vec<String>,
}

impl pam::Converse for Answers {
    fn prompt_echo(&mut self, _msg: &CStr) -> Result<CString, ()> {
        CString::new(self.user.clone()).map_err(|_| ())
    }
    fn prompt_blind(&mut self, _msg: &CStr) -> Result<CString, ()> {
        CString::new(self.password.clone()).map_err(|_| ())
    }
    fn info(&mut self, msg: &CStr) {
        tracing::debug!(user = %self.user, "PAM: {}", msg.to_string_lossy());
    }
    fn error(&mut self, msg: &CStr) {
        let msg = msg.to_string_lossy().into_owned();
        tracing::info!(user = %self.user, "PAM: {msg}");
        self.errors.push(msg);
    }
    fn username(&self) -> &str {
        &self.user
    }
}

/// Check `user`'s `password` with PAM service `service`: `pam_authenticate`
/// then `pam_acct_mgmt` (so an expired or locked account is refused).
/// Blocks (PAM modules read files and may sleep on failure).
pub fn authenticate(service: &str, user: &str, password: &str) -> Result<(), PamRefusal> {
    if user.is_empty() || user.contains('\0') || password.contains('\0') {
        return Err(PamRefusal::Authentication(
            "empty user name, or a NUL byte in the credentials".into(),
        ));
    }
    let answers = Answers {
        user: user.to_owned(),
        password: password.to_owned(),
        errors: Vec::new(),
    };
    let mut pam = pam::Authenticator::with_handler(service, answers)
        .map_err(|e| PamRefusal::Unavailable(format!("pam_start({service}): {e}")))?;
    match pam.authenticate() {
        Ok(()) => Ok(()),
        Err(e) => Err(classify(&e.to_string(), &pam.get_handler().errors)),
    }
}

/// Which step failed, from the PAM return code (`AUTH_ERR (7)`) and the
/// error messages PAM sent (the `pam` crate runs both steps in one call
/// and returns only the code; an account refusal is often a bare AUTH_ERR,
/// but then pam_unix has said why).
fn classify(code: &str, errors: &[String]) -> PamRefusal {
    let name = code.split(' ').next().unwrap_or(code);
    let told = errors.join("; ");
    let with = |what: &str| {
        if told.is_empty() {
            what.to_owned()
        } else {
            format!("{what}, PAM says: {told}")
        }
    };
    match name {
        "ACCT_EXPIRED" | "NEW_AUTHTOK_REQD" | "AUTHTOK_EXPIRED" | "PERM_DENIED" => {
            PamRefusal::Account(with(code))
        }
        "SERVICE_ERR" | "SYSTEM_ERR" | "BUF_ERR" | "ABORT" | "OPEN_ERR" | "SYMBOL_ERR" => {
            PamRefusal::Unavailable(with(code))
        }
        _ if !errors.is_empty() => PamRefusal::Account(with(code)),
        _ => PamRefusal::Authentication(code.to_owned()),
    }
}

/// Parse a `GROUP=ROLE` mapping (`--role-group`).
pub fn parse_role_group(spec: &str) -> Result<(String, Role), String> {
    let (group, role) = spec
        .split_once('=')
        .ok_or_else(|| format!("--role-group {spec:?} is not GROUP=ROLE"))?;
    let group = group.trim();
    if group.is_empty() {
        return Err(format!("--role-group {spec:?} names no group"));
    }
    Ok((group.to_owned(), role.trim().parse()?))
}

/// Why no role was found for a user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoleRefusal {
    /// The user is in none of the mapped groups.
    #[error("no --role-group matches the groups of {user} ({groups})")]
    NoGroup {
        /// The user.
        user: String,
        /// The user's groups, comma-separated.
        groups: String,
    },
    /// The user or the group database cannot be read.
    #[error("cannot look up the groups of {user}: {cause}")]
    Lookup {
        /// The user.
        user: String,
        /// Why.
        cause: String,
    },
}

/// The role of a PAM-authenticated `user`: `root` is pool-admin, anyone
/// else gets the role of the first `(group, role)` of `role_groups` whose
/// group they belong to (primary or supplementary), through the system's
/// group database. Blocks (NSS lookups).
pub fn role_of(user: &str, role_groups: &[(String, Role)]) -> Result<Role, RoleRefusal> {
    if user == "root" {
        return Ok(Role::PoolAdmin);
    }
    let lookup = |cause: String| RoleRefusal::Lookup {
        user: user.to_owned(),
        cause,
    };
    let account = nix::unistd::User::from_name(user)
        .map_err(|e| lookup(e.to_string()))?
        .ok_or_else(|| lookup("no such user".into()))?;
    let name = CString::new(user).map_err(|e| lookup(e.to_string()))?;
    let gids = nix::unistd::getgrouplist(&name, account.gid).map_err(|e| lookup(e.to_string()))?;
    let mut names = Vec::new();
    for gid in gids {
        match nix::unistd::Group::from_gid(gid) {
            Ok(Some(group)) => names.push(group.name),
            Ok(None) => names.push(gid.to_string()),
            Err(e) => return Err(lookup(e.to_string())),
        }
    }
    role_groups
        .iter()
        .find(|(group, _)| names.iter().any(|n| n == group))
        .map(|(_, role)| *role)
        .ok_or_else(|| RoleRefusal::NoGroup {
            user: user.to_owned(),
            groups: names.join(","),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_groups_parse() {
        assert_eq!(
            parse_role_group("ops=pool-operator").unwrap(),
            ("ops".to_owned(), Role::PoolOperator)
        );
        assert!(parse_role_group("ops").is_err());
        assert!(parse_role_group("=read-only").is_err());
        assert!(parse_role_group("ops=king").is_err());
    }

    #[test]
    fn root_is_pool_admin() {
        assert_eq!(role_of("root", &[]).unwrap(), Role::PoolAdmin);
    }

    #[test]
    fn first_matching_group_wins() {
        // root's primary group is root (gid 0) on every Linux system, but
        // role_of answers for root before looking; use a system user.
        let groups = [
            ("no-such-group-x".to_owned(), Role::PoolAdmin),
            ("root".to_owned(), Role::ReadOnly),
        ];
        // `daemon` exists on Debian with primary group `daemon`.
        if nix::unistd::User::from_name("daemon")
            .ok()
            .flatten()
            .is_some()
        {
            let daemon = [("daemon".to_owned(), Role::VmAdmin)];
            assert_eq!(role_of("daemon", &daemon).unwrap(), Role::VmAdmin);
            assert!(matches!(
                role_of("daemon", &groups[..1]),
                Err(RoleRefusal::NoGroup { .. })
            ));
        }
        assert!(matches!(
            role_of("no-such-user-pcipass", &groups),
            Err(RoleRefusal::Lookup { .. })
        ));
    }

    #[test]
    fn codes_are_classified() {
        let expired = ["Your account has expired".to_owned()];
        assert!(matches!(
            classify("AUTH_ERR (7)", &[]),
            PamRefusal::Authentication(_)
        ));
        assert!(matches!(
            classify("AUTH_ERR (7)", &expired),
            PamRefusal::Account(_)
        ));
        assert!(matches!(
            classify("ACCT_EXPIRED (13)", &[]),
            PamRefusal::Account(_)
        ));
        assert!(matches!(
            classify("SERVICE_ERR (3)", &[]),
            PamRefusal::Unavailable(_)
        ));
    }
}
