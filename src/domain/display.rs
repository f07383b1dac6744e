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
//!
//! On an entry without a serial port `host-display` edits dom0's console
//! too: `xen-cmdline --delete-dom0 console=tty0` to turn the display off
//! (dom0's kernel no longer writes to the VGA text console), and
//! `--set-dom0 "console=hvc0 console=tty0"` to turn it on
//! ([`Dom0Console`]).

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
    replace_words(args, &is_console, Some((&setting, Place::First)))
}

/// What the display edit does to dom0's console arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dom0Console {
    /// Nothing (a serial entry: dom0's console stays as the operator has
    /// it).
    Keep,
    /// Every `console` argument becomes `console=hvc0 console=tty0`: Xen's
    /// console and the VGA text console, the last (`/dev/console`) tty0.
    Show,
    /// `console=tty0` goes; the other consoles stay.
    Hide,
}

/// The dom0 console words [`Dom0Console::Show`] writes, in order.
pub const DOM0_SHOW: [&str; 2] = ["console=hvc0", "console=tty0"];

/// [`DOM0_SHOW`] as one argument of `xen-cmdline --set-dom0`, as
/// host-display passes it.
pub const DOM0_SHOW_LINE: &str = "console=hvc0 console=tty0";

/// The dom0 console word [`Dom0Console::Hide`] removes.
pub const DOM0_VGA: &str = "console=tty0";

/// The dom0 console edit of turning the display on (`enable`) or off,
/// with Xen's current `console` value: none while Xen writes to a serial
/// port (as `host-display` does on its serial entry).
pub fn dom0_console(enable: bool, console: Option<&str>) -> Dom0Console {
    match (serial_port(console), enable) {
        (Some(_), _) => Dom0Console::Keep,
        (None, true) => Dom0Console::Show,
        (None, false) => Dom0Console::Hide,
    }
}

/// Whether dom0's arguments `args` are as `how` leaves them: for `Show`
/// its last consoles are [`DOM0_SHOW`], for `Hide` it has no
/// [`DOM0_VGA`].
pub fn dom0_console_done(args: &[u8], how: Dom0Console) -> bool {
    let consoles: Vec<&[u8]> = words(args).filter(|w| is_console(w)).collect();
    match how {
        Dom0Console::Keep => true,
        // The last two (tty0 is /dev/console): a console the operator
        // gives every entry may come before them.
        Dom0Console::Show => consoles.ends_with(&DOM0_SHOW.map(str::as_bytes)),
        Dom0Console::Hide => !consoles.contains(&DOM0_VGA.as_bytes()),
    }
}

/// dom0's blank-separated arguments as `how` leaves them: for `Show` every
/// `console` argument removed and [`DOM0_SHOW`] put where the last one was
/// (at the end when there was none), as `xen-cmdline --set-dom0` places a
/// setting; for `Hide` every `console=tty0` removed (with the blanks
/// before it). Every other argument and blank is kept.
pub fn dom0_console_args(args: &[u8], how: Dom0Console) -> Vec<u8> {
    match how {
        Dom0Console::Keep => args.to_vec(),
        Dom0Console::Show => replace_words(
            args,
            &is_console,
            Some((DOM0_SHOW_LINE.as_bytes(), Place::Last)),
        ),
        Dom0Console::Hide => replace_words(args, &|w| w == DOM0_VGA.as_bytes(), None),
    }
}

/// Which of the words removed gives its place to the new ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    First,
    Last,
}

/// Blank-separated `args` without the words `drop` picks (each with the
/// blanks before it), and `insert` where the `Place` one of them was, or
/// after the last word when none was; every other word and blank kept,
/// trailing blanks too.
fn replace_words(
    args: &[u8],
    drop: &dyn Fn(&[u8]) -> bool,
    insert: Option<(&[u8], Place)>,
) -> Vec<u8> {
    let (pieces, trailing) = pieces(args);
    let dropped: Vec<usize> = (0..pieces.len()).filter(|&n| drop(pieces[n].1)).collect();
    let at = match insert {
        Some((_, Place::First)) => dropped.first().copied(),
        Some((_, Place::Last)) => dropped.last().copied(),
        None => None,
    };
    let mut out = Vec::with_capacity(args.len() + insert.map_or(0, |(w, _)| w.len() + 1));
    for (n, (space, word)) in pieces.iter().enumerate() {
        if !drop(word) {
            out.extend_from_slice(space);
            out.extend_from_slice(word);
        } else if Some(n) == at
            && let Some((new, _)) = insert
        {
            out.extend_from_slice(space);
            out.extend_from_slice(new);
        }
    }
    if at.is_none()
        && let Some((new, _)) = insert
    {
        if !out.is_empty() {
            out.push(b' ');
        }
        out.extend_from_slice(new);
    }
    out.extend_from_slice(trailing);
    out
}

fn is_console(word: &[u8]) -> bool {
    word == b"console" || word.starts_with(b"console=")
}

fn words(args: &[u8]) -> impl Iterator<Item = &[u8]> {
    args.split(u8::is_ascii_whitespace)
        .filter(|w| !w.is_empty())
}

/// A word and the blanks before it.
type Piece<'a> = (&'a [u8], &'a [u8]);

/// Each word with the blanks before it, and the blanks after the last.
fn pieces(args: &[u8]) -> (Vec<Piece<'_>>, &[u8]) {
    let mut out = Vec::new();
    let mut rest = args;
    loop {
        let blanks = rest
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(rest.len());
        if blanks == rest.len() {
            return (out, rest);
        }
        let (space, tail) = rest.split_at(blanks);
        let len = tail
            .iter()
            .position(u8::is_ascii_whitespace)
            .unwrap_or(tail.len());
        let (word, tail) = tail.split_at(len);
        out.push((space, word));
        rest = tail;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dom0s_console_is_edited_as_host_display_edits_it_on_a_non_serial_entry() {
        use Dom0Console::*;
        let xcpng = "root=LABEL=root ro nolvm hpet=disable console=hvc0 console=tty0 quiet vga=785";
        for (args, how, want) in [
            (
                xcpng,
                Hide,
                "root=LABEL=root ro nolvm hpet=disable console=hvc0 quiet vga=785",
            ),
            (xcpng, Show, xcpng),
            (
                "root=LABEL=root ro nolvm hpet=disable console=hvc0 quiet vga=785",
                Show,
                "root=LABEL=root ro nolvm hpet=disable console=hvc0 console=tty0 quiet vga=785",
            ),
            (
                "root=/dev/sda1 ro quiet",
                Show,
                "root=/dev/sda1 ro quiet console=hvc0 console=tty0",
            ),
            ("root=/dev/sda1 ro quiet", Hide, "root=/dev/sda1 ro quiet"),
            (
                "console=tty0 a console=ttyS0 console=tty0",
                Hide,
                " a console=ttyS0",
            ),
            (
                "a console=ttyS0 b console=tty1 c",
                Show,
                "a b console=hvc0 console=tty0 c",
            ),
            ("a console=tty0x", Hide, "a console=tty0x"),
            ("a  b ", Show, "a  b console=hvc0 console=tty0 "),
            (xcpng, Keep, xcpng),
        ] {
            let got = dom0_console_args(args.as_bytes(), how);
            assert_eq!(String::from_utf8_lossy(&got), want, "{args:?} {how:?}");
            assert!(dom0_console_done(&got, how), "{want:?}");
            assert_eq!(
                dom0_console_args(&got, how),
                got,
                "not idempotent: {want:?}"
            );
        }
        assert!(!dom0_console_done(xcpng.as_bytes(), Hide));
        assert!(!dom0_console_done(b"console=tty0 console=hvc0", Show));
        assert!(dom0_console_done(
            b"console=ttyS0 a console=hvc0 console=tty0",
            Show
        ));
        for (enable, console, want) in [
            (true, None, Show),
            (false, Some("vga"), Hide),
            (true, Some("com1"), Keep),
            (false, Some("com2,vga"), Keep),
        ] {
            assert_eq!(dom0_console(enable, console), want);
        }
    }

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
