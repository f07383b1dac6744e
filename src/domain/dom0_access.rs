//! [`Dom0Access`]: whether dom0 owns a PCI device now and after the next boot.

use std::fmt;
use std::str::FromStr;

/// XenAPI's `pci_dom0_access` enum, wire spellings since API 24.14.0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dom0Access {
    /// Not hidden now, not hidden after reboot.
    Enabled,
    /// Not hidden now, hidden after reboot.
    DisableOnReboot,
    /// Hidden now and after reboot.
    Disabled,
    /// Hidden now, not hidden after reboot.
    EnableOnReboot,
}

impl Dom0Access {
    /// Every value, in datamodel order.
    pub const ALL: [Dom0Access; 4] = [
        Dom0Access::Enabled,
        Dom0Access::DisableOnReboot,
        Dom0Access::Disabled,
        Dom0Access::EnableOnReboot,
    ];

    /// The status from the two views of the effective hide list: the
    /// running kernel's (`/proc/cmdline`) and the boot configuration's.
    pub fn from_views(hidden_running: bool, hidden_at_boot: bool) -> Dom0Access {
        match (hidden_running, hidden_at_boot) {
            (false, false) => Dom0Access::Enabled,
            (false, true) => Dom0Access::DisableOnReboot,
            (true, true) => Dom0Access::Disabled,
            (true, false) => Dom0Access::EnableOnReboot,
        }
    }

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Dom0Access::Enabled => "enabled",
            Dom0Access::DisableOnReboot => "disable_on_reboot",
            Dom0Access::Disabled => "disabled",
            Dom0Access::EnableOnReboot => "enable_on_reboot",
        }
    }
}

impl fmt::Display for Dom0Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Dom0Access {
    type Err = String;

    /// Case-insensitive, as xapi matches enum strings.
    fn from_str(s: &str) -> Result<Dom0Access, String> {
        Dom0Access::ALL
            .into_iter()
            .find(|v| v.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| s.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_table_matches_dom0_access_md() {
        let table = [
            (false, false, "enabled"),
            (false, true, "disable_on_reboot"),
            (true, true, "disabled"),
            (true, false, "enable_on_reboot"),
        ];
        for (running, boot, want) in table {
            assert_eq!(Dom0Access::from_views(running, boot).as_str(), want);
            assert_eq!(want.parse::<Dom0Access>().unwrap().as_str(), want);
        }
        assert_eq!("DISABLED".parse::<Dom0Access>(), Ok(Dom0Access::Disabled));
        assert!("disabled_on_reboot".parse::<Dom0Access>().is_err());
    }
}
