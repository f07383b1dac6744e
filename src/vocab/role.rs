//! [`Role`]: XenAPI's RBAC roles, highest first.

use std::fmt;
use std::str::FromStr;

/// A XenAPI role. Each role holds every permission of the roles below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Lowest: read everything, change nothing.
    ReadOnly,
    /// Client-certificate logins (internal in xapi, between vm-operator and read-only).
    ClientCert,
    /// VM operator.
    VmOperator,
    /// VM admin.
    VmAdmin,
    /// VM power admin.
    VmPowerAdmin,
    /// Pool operator: may edit dom0 access.
    PoolOperator,
    /// Highest.
    PoolAdmin,
}

impl Role {
    /// Every role, highest first.
    pub const ALL: [Role; 7] = [
        Role::PoolAdmin,
        Role::PoolOperator,
        Role::VmPowerAdmin,
        Role::VmAdmin,
        Role::VmOperator,
        Role::ClientCert,
        Role::ReadOnly,
    ];

    /// The role names users may be given (`client-cert` is internal).
    pub const ASSIGNABLE: [Role; 6] = [
        Role::PoolAdmin,
        Role::PoolOperator,
        Role::VmPowerAdmin,
        Role::VmAdmin,
        Role::VmOperator,
        Role::ReadOnly,
    ];

    /// The wire spelling, e.g. `pool-operator`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::PoolAdmin => "pool-admin",
            Role::PoolOperator => "pool-operator",
            Role::VmPowerAdmin => "vm-power-admin",
            Role::VmAdmin => "vm-admin",
            Role::VmOperator => "vm-operator",
            Role::ClientCert => "client-cert",
            Role::ReadOnly => "read-only",
        }
    }

    /// True when a session with this role may call a message whose
    /// minimum role is `minimum`.
    pub fn allows(self, minimum: Role) -> bool {
        self >= minimum
    }

    /// The roles that hold a permission whose minimum is `minimum`, highest
    /// first, as xapi lists them in RBAC_PERMISSION_DENIED.
    pub fn holders(minimum: Role) -> Vec<Role> {
        Role::ALL
            .into_iter()
            .filter(|r| r.allows(minimum))
            .collect()
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown role {s:?} (roles: pool-admin, pool-operator, vm-power-admin, vm-admin, vm-operator, read-only)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hierarchy_is_ordered() {
        assert!(Role::PoolAdmin.allows(Role::PoolOperator));
        assert!(!Role::ReadOnly.allows(Role::PoolOperator));
        assert!(Role::VmOperator.allows(Role::ReadOnly));
        assert_eq!(
            Role::holders(Role::PoolOperator),
            vec![Role::PoolAdmin, Role::PoolOperator]
        );
        assert_eq!("Pool-Operator".parse::<Role>(), Ok(Role::PoolOperator));
    }
}
