//! The host display (`host.display`, XenCenter's integrated-GPU flow):
//! whether Xen shows its console on the physical display, read from Xen's
//! `console=` argument of the next boot, and the edit of that argument
//! that `host.enable_display` / `host.disable_display` make. Pure
//! functions; the boot flows read and write the argument.
//!
//! Xen's console (`xen/drivers/char/console.c`) is a comma-separated list
//! of items (`vga`, `com1`..`com4`, `dbgp`, `ehci`, `xhci`, `none`); the
//! last `console=` on the line wins (`xen/common/kernel.c`), and with none
//! at all x86 uses `vga` (`OPT_CONSOLE_STR`). xapi's `host-display`
//! decides the status by whether `vga` is in the value, and keeps a
//! serial port the default entry writes to.

/// The key of Xen's console argument.
pub const XEN_CONSOLE_KEY: &str = "console";

/// xapi's `host_display` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostDisplay {
    /// The console is on the physical display now, and will be.
    Enabled,
    /// It is now; the next boot will not show it.
    DisableOnReboot,
    /// It is not now, and will not be.
    Disabled,
    /// It is not now; the next boot will show it.
    EnableOnReboot,
}

impl HostDisplay {
    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            HostDisplay::Enabled => "enabled",
            HostDisplay::DisableOnReboot => "disable_on_reboot",
            HostDisplay::Disabled => "disabled",
            HostDisplay::EnableOnReboot => "enable_on_reboot",
        }
    }

    /// From the API spelling.
    pub fn parse(s: &str) -> Option<HostDisplay> {
        [
            HostDisplay::Enabled,
            HostDisplay::DisableOnReboot,
            HostDisplay::Disabled,
            HostDisplay::EnableOnReboot,
        ]
        .into_iter()
        .find(|d| d.as_str() == s)
    }

    /// The value after a boot that shows the console (`shown`) or not, as
    /// xapi's start on a new boot sets it.
    pub fn at_boot(shown: bool) -> HostDisplay {
        if shown {
            HostDisplay::Enabled
        } else {
            HostDisplay::Disabled
        }
    }

    /// xapi's transition table (`Xapi_host.update_display`): the value
    /// after `enable_display` (`enable`) or `disable_display`, and
    /// whether the boot configuration must be edited for it (a call that
    /// asks for what is already under way changes nothing).
    pub fn after(self, enable: bool) -> (HostDisplay, bool) {
        use HostDisplay::*;
        match (self, enable) {
            (Enabled, true) => (Enabled, false),
            (DisableOnReboot, true) => (Enabled, true),
            (Disabled, true) => (EnableOnReboot, true),
            (EnableOnReboot, true) => (EnableOnReboot, false),
            (Enabled, false) => (DisableOnReboot, true),
            (DisableOnReboot, false) => (DisableOnReboot, false),
            (Disabled, false) => (Disabled, false),
            (EnableOnReboot, false) => (Disabled, true),
        }
    }
}

/// The items of a console value, lower-cased.
fn items(value: &str) -> impl Iterator<Item = String> + '_ {
    value
        .split(',')
        .map(|i| i.trim().to_ascii_lowercase())
        .filter(|i| !i.is_empty())
}

/// Whether Xen shows its console on the display with `console` as the
/// last `console=` value (`None`: no such argument, Xen's default `vga`).
pub fn shows_display(console: Option<&str>) -> bool {
    match console {
        None => true,
        Some(value) => items(value).any(|i| i == "vga"),
    }
}

/// The serial port the console writes to, if any (`com1`..`com4`).
fn serial_port(console: Option<&str>) -> Option<String> {
    items(console?).find(|i| {
        i.strip_prefix("com")
            .is_some_and(|n| n.len() == 1 && n.as_bytes()[0].is_ascii_digit())
    })
}

/// The `console=` value that turns the display on (`enable`) or off,
/// from the current one: a serial port it writes to is kept (`com1,vga`
/// / `com1`, as `host-display` does on a serial entry); without one, `vga`
/// to turn it on and `none` to turn it off.
///
/// Differs from `host-display`, which deletes the argument to turn the
/// display off on a non-serial entry: Xen's default is then `vga`, and
/// the display would stay on.
pub fn console_value(enable: bool, console: Option<&str>) -> String {
    match (serial_port(console), enable) {
        (Some(port), true) => format!("{port},vga"),
        (Some(port), false) => port,
        (None, true) => "vga".to_owned(),
        (None, false) => "none".to_owned(),
    }
}

/// True for a console value pcipass may write: items of letters and
/// digits joined by commas (nothing GRUB, a shell or xen.cfg reads
/// specially).
pub fn is_plain_value(value: &str) -> bool {
    !value.is_empty()
        && value
            .split(',')
            .all(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// The last `console=` value among blank-separated arguments (`None`:
/// none).
pub fn console_in(args: &[u8]) -> Option<String> {
    args.split(|b| b.is_ascii_whitespace())
        .filter_map(|w| w.strip_prefix(b"console="))
        .next_back()
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Blank-separated arguments with every `console` argument replaced by
/// one `console=value`, where the first was (at the end when there was
/// none); every other argument and the blanks between them kept.
pub fn with_console(args: &[u8], value: &str) -> Vec<u8> {
    let setting = format!("{XEN_CONSOLE_KEY}={value}").into_bytes();
    let is_console = |w: &[u8]| w == b"console" || w.starts_with(b"console=");
    let mut out = Vec::with_capacity(args.len() + setting.len() + 1);
    let mut placed = false;
    let mut rest = args;
    while !rest.is_empty() {
        let blanks = rest
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(rest.len());
        let (space, tail) = rest.split_at(blanks);
        let len = tail
            .iter()
            .position(u8::is_ascii_whitespace)
            .unwrap_or(tail.len());
        let (word, tail) = tail.split_at(len);
        rest = tail;
        if is_console(word) {
            if !placed {
                out.extend_from_slice(space);
                out.extend_from_slice(&setting);
                placed = true;
            }
            continue;
        }
        out.extend_from_slice(space);
        out.extend_from_slice(word);
    }
    if !placed {
        if !out.is_empty() && !out.ends_with(b" ") {
            out.push(b' ');
        }
        out.extend_from_slice(&setting);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xapi's table, every value and both calls.
    #[test]
    fn the_transition_table_is_xapis() {
        use HostDisplay::*;
        for (from, enable, to, edits) in [
            (Enabled, true, Enabled, false),
            (Enabled, false, DisableOnReboot, true),
            (DisableOnReboot, true, Enabled, true),
            (DisableOnReboot, false, DisableOnReboot, false),
            (Disabled, true, EnableOnReboot, true),
            (Disabled, false, Disabled, false),
            (EnableOnReboot, true, EnableOnReboot, false),
            (EnableOnReboot, false, Disabled, true),
        ] {
            assert_eq!(from.after(enable), (to, edits), "{from:?} enable={enable}");
            assert_eq!(HostDisplay::parse(to.as_str()), Some(to));
        }
    }

    #[test]
    fn the_display_is_shown_when_vga_is_an_item_or_nothing_is_set() {
        for (console, shown) in [
            (None, true),
            (Some("vga"), true),
            (Some("com1,vga"), true),
            (Some("VGA"), true),
            (Some("com1"), false),
            (Some("none"), false),
            (Some(""), false),
            (Some("vgax"), false),
            (Some("dbgp"), false),
        ] {
            assert_eq!(shows_display(console), shown, "{console:?}");
        }
    }

    #[test]
    fn a_serial_port_is_kept_and_no_console_means_none() {
        for (enable, console, want) in [
            (true, Some("com1"), "com1,vga"),
            (true, Some("com2,vga"), "com2,vga"),
            (false, Some("com1,vga"), "com1"),
            (false, Some("vga,com3"), "com3"),
            (true, None, "vga"),
            (true, Some("none"), "vga"),
            (false, None, "none"),
            (false, Some("vga"), "none"),
            (false, Some("com10"), "none"),
        ] {
            let got = console_value(enable, console);
            assert_eq!(got, want, "enable={enable} {console:?}");
            assert!(is_plain_value(&got));
            assert_eq!(shows_display(Some(&got)), enable);
        }
    }

    #[test]
    fn the_console_argument_is_set_once_where_it_was() {
        for (args, value, want) in [
            ("", "vga", "console=vga"),
            ("dom0_mem=2G", "none", "dom0_mem=2G console=none"),
            (
                "console=vga dom0_mem=2G",
                "none",
                "console=none dom0_mem=2G",
            ),
            (
                "a console=com1 b console=vga c",
                "com1",
                "a console=com1 b c",
            ),
            ("a  console  b", "vga", "a  console=vga  b"),
            ("consoles=x", "vga", "consoles=x console=vga"),
        ] {
            let got = with_console(args.as_bytes(), value);
            assert_eq!(String::from_utf8_lossy(&got), want, "{args:?}");
            assert_eq!(console_in(&got).as_deref(), Some(value));
        }
        assert_eq!(
            console_in(b"console=com1 x console=vga").as_deref(),
            Some("vga")
        );
        assert_eq!(console_in(b"consoles=x"), None);
    }

    #[test]
    fn only_plain_values_are_written() {
        for (value, ok) in [
            ("vga", true),
            ("com1,vga", true),
            ("", false),
            ("vga,", false),
            ("vga com1", false),
            ("$(x)", false),
            ("vga\"", false),
        ] {
            assert_eq!(is_plain_value(value), ok, "{value:?}");
        }
    }
}
