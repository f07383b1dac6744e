//! The hide list where `grub-mkconfig` reads it: a shell assignment that
//! pcipass owns, either a whole drop-in file (`/etc/default/grub.d/`, read
//! by Debian's and Ubuntu's `grub-mkconfig`) or a marked block at the end
//! of `/etc/default/grub` (upstream GRUB and Fedora-like `grub2-mkconfig`
//! read no drop-ins).
//!
//! The assignment is
//!
//! ```text
//! GRUB_CMDLINE_LINUX_XEN_REPLACE="${GRUB_CMDLINE_LINUX_XEN_REPLACE:-$GRUB_CMDLINE_LINUX} xen-pciback.hide=(...)"
//! ```
//!
//! Only `/etc/grub.d/20_linux_xen` reads `GRUB_CMDLINE_LINUX_XEN_REPLACE`:
//! when it is set, every Xen entry (the recovery ones too) takes it in
//! place of `GRUB_CMDLINE_LINUX`, and the native `10_linux` entries never
//! see it. Starting from the variable's own value, or `GRUB_CMDLINE_LINUX`
//! when it is empty, keeps every other argument the operator set. The
//! files are shell sourced as root, so the value is checked to hold only
//! the characters of a hide list: nothing a shell would expand or split.

/// The variable the assignment sets.
pub const XEN_REPLACE_VAR: &str = "GRUB_CMDLINE_LINUX_XEN_REPLACE";

/// The first line of pcipass's block in `/etc/default/grub`.
pub const BLOCK_BEGIN: &str = "# BEGIN pcipass: PCI functions hidden from dom0";
/// The last line of the block.
pub const BLOCK_END: &str = "# END pcipass";

/// Why pcipass's part of the GRUB defaults cannot be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DropinError {
    /// The value holds a character a shell would treat specially.
    #[error("xen-pciback.hide value {0:?} holds a character that is not part of a hide list")]
    UnsafeValue(String),
    /// The file or block is not in the form pcipass writes (edited by
    /// hand): pcipass does not rewrite what it cannot read back.
    #[error("{0}")]
    Foreign(String),
}

/// True for a character a hide list may hold (`(dddd:bb:dd.f)`, `*`
/// wildcards, `,`): none of them is special inside double quotes.
fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '(' | ')' | ':' | '.' | '*' | ',' | '-' | '_')
}

/// The assignment line for `value`.
fn assignment(value: &str) -> Result<String, DropinError> {
    if value.is_empty() || !value.chars().all(allowed) {
        return Err(DropinError::UnsafeValue(value.to_owned()));
    }
    Ok(format!(
        "{XEN_REPLACE_VAR}=\"${{{XEN_REPLACE_VAR}:-$GRUB_CMDLINE_LINUX}} xen-pciback.hide={value}\"\n"
    ))
}

/// The value of an assignment line pcipass wrote, `None` when the line is
/// not one.
fn value_of(line: &str) -> Option<&str> {
    let rest = line
        .strip_prefix(XEN_REPLACE_VAR)?
        .strip_prefix("=\"${")?
        .strip_prefix(XEN_REPLACE_VAR)?
        .strip_prefix(":-$GRUB_CMDLINE_LINUX} xen-pciback.hide=")?
        .strip_suffix('"')?;
    (!rest.is_empty() && rest.chars().all(allowed)).then_some(rest)
}

/// The whole drop-in file for `value`.
pub fn dropin_text(value: &str) -> Result<String, DropinError> {
    Ok(format!(
        "# Written by pcipass: the PCI functions hidden from the Xen dom0.\n\
         # grub-mkconfig (update-grub) sources this file after /etc/default/grub and,\n\
         # by its zz- name, after the other drop-ins. Only the Xen entries\n\
         # (/etc/grub.d/20_linux_xen) read {XEN_REPLACE_VAR}.\n\
         # Change it through pcipass (PCI.disable_dom0_access, enable_dom0_access).\n\
         {}",
        assignment(value)?
    ))
}

/// The hide value of a drop-in file pcipass wrote. Comments and blank
/// lines are skipped; anything else than one assignment of pcipass's form
/// is [`DropinError::Foreign`].
pub fn dropin_value(text: &[u8]) -> Result<String, DropinError> {
    let foreign = || {
        DropinError::Foreign(
            "changed by hand: it no longer holds only the one assignment pcipass writes".into(),
        )
    };
    let text = std::str::from_utf8(text).map_err(|_| foreign())?;
    let mut found = None;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match (found, value_of(line)) {
            (None, Some(value)) => found = Some(value),
            _ => return Err(foreign()),
        }
    }
    found.map(str::to_owned).ok_or_else(foreign)
}

/// Where pcipass's block lies in `text`: the byte range of its lines,
/// `None` when there is none.
fn block_range(text: &str) -> Result<Option<std::ops::Range<usize>>, DropinError> {
    marked_range(text, BLOCK_BEGIN, BLOCK_END)
}

/// Where the block between the lines `begin` and `end` lies in `text`.
fn marked_range(
    text: &str,
    begin: &str,
    end: &str,
) -> Result<Option<std::ops::Range<usize>>, DropinError> {
    let which = if begin == BLOCK_BEGIN {
        "pcipass's block"
    } else {
        "pcipass's display block"
    };
    let foreign = |what: &str| Err(DropinError::Foreign(format!("{which} {what}")));
    let (mut start, mut found) = (None, None);
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let bare = line.trim_end_matches(['\n', '\r']);
        let marker = bare == begin || bare == end;
        if marker && found.is_some() {
            return foreign("appears more than once");
        }
        match (bare == begin, start) {
            (true, None) => start = Some(offset),
            (true, Some(_)) => return foreign("starts twice"),
            (false, Some(s)) if bare == end => {
                found = Some(s..offset + line.len());
                start = None;
            }
            (false, None) if bare == end => {
                return foreign("ends without a start");
            }
            _ => {}
        }
        offset += line.len();
    }
    if start.is_some() {
        return foreign("starts without an end");
    }
    Ok(found)
}

/// The hide value of pcipass's block in `/etc/default/grub`, `None` when
/// there is no block.
pub fn block_value(text: &[u8]) -> Result<Option<String>, DropinError> {
    let text = std::str::from_utf8(text)
        .map_err(|_| DropinError::Foreign("not UTF-8 around pcipass's blocks".into()))?;
    let Some(range) = block_range(text)? else {
        return Ok(None);
    };
    let body = &text[range];
    let lines: Vec<&str> = body
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    match lines.as_slice() {
        [line] => value_of(line)
            .map(|v| Some(v.to_owned()))
            .ok_or_else(|| DropinError::Foreign("pcipass's block was changed by hand".into())),
        _ => Err(DropinError::Foreign(
            "pcipass's block was changed by hand".into(),
        )),
    }
}

/// `/etc/default/grub` with pcipass's block set to `value` (added at the
/// end when there is none) or removed (`None`). Every byte outside the
/// block is kept.
pub fn with_block(text: &[u8], value: Option<&str>) -> Result<Vec<u8>, DropinError> {
    let text = std::str::from_utf8(text)
        .map_err(|_| DropinError::Foreign("not UTF-8 around pcipass's blocks".into()))?;
    let block = match value {
        Some(v) => format!(
            "{BLOCK_BEGIN}\n\
             # Written by pcipass; only the Xen entries read {XEN_REPLACE_VAR}.\n\
             {}{BLOCK_END}\n",
            assignment(v)?
        ),
        None => String::new(),
    };
    Ok(spliced(text, block_range(text)?, &block).into_bytes())
}

/// `text` with the block at `range` (or at the end when there is none)
/// replaced by `block`; every other byte kept.
fn spliced(text: &str, range: Option<std::ops::Range<usize>>, block: &str) -> String {
    let mut out = String::with_capacity(text.len() + block.len() + 1);
    match range {
        Some(range) => {
            out.push_str(&text[..range.start]);
            out.push_str(block);
            out.push_str(&text[range.end..]);
        }
        None if block.is_empty() => out.push_str(text),
        None => {
            out.push_str(text);
            if !text.is_empty() && !text.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(block);
        }
    }
    out
}

/// The variable the display assignment sets: `20_linux_xen` passes it to
/// Xen in the normal entries only (after `GRUB_CMDLINE_XEN`), so the
/// recovery entries keep the operator's console.
pub const XEN_DEFAULT_VAR: &str = "GRUB_CMDLINE_XEN_DEFAULT";

/// The first line of pcipass's display block in `/etc/default/grub`.
pub const DISPLAY_BLOCK_BEGIN: &str = "# BEGIN pcipass: Xen's console (host.display)";
/// The last line of the display block.
pub const DISPLAY_BLOCK_END: &str = "# END pcipass display";

/// The assignment that appends `console=VALUE` to Xen's arguments (Xen
/// takes the last `console=`, so the operator's own stays and loses).
fn console_assignment(value: &str) -> Result<String, DropinError> {
    if !crate::domain::display::is_plain_value(value) {
        return Err(DropinError::UnsafeValue(value.to_owned()));
    }
    Ok(format!(
        "{XEN_DEFAULT_VAR}=\"${{{XEN_DEFAULT_VAR}}} console={value}\"\n"
    ))
}

/// The console value of a display assignment pcipass wrote.
fn console_of(line: &str) -> Option<&str> {
    let rest = line
        .strip_prefix(XEN_DEFAULT_VAR)?
        .strip_prefix("=\"${")?
        .strip_prefix(XEN_DEFAULT_VAR)?
        .strip_prefix("} console=")?
        .strip_suffix('"')?;
    crate::domain::display::is_plain_value(rest).then_some(rest)
}

/// The variable `20_linux_xen` uses for `GRUB_CMDLINE_LINUX_DEFAULT` in
/// the normal Xen entries when set: the display edit's dom0 console.
pub const XEN_REPLACE_DEFAULT_VAR: &str = "GRUB_CMDLINE_LINUX_XEN_REPLACE_DEFAULT";

/// The display's assignments: Xen's console `value`, and with `dom0` the
/// dom0 arguments of the normal Xen entries (in place of
/// `GRUB_CMDLINE_LINUX_DEFAULT`), a literal.
fn display_assignments(value: &str, dom0: Option<&str>) -> Result<String, DropinError> {
    let mut text = console_assignment(value)?;
    if let Some(args) = dom0 {
        if args.contains(['"', '$', '`', '\\', '\n']) {
            return Err(DropinError::UnsafeValue(args.to_owned()));
        }
        text.push_str(&format!("{XEN_REPLACE_DEFAULT_VAR}=\"{args}\"\n"));
    }
    Ok(text)
}

/// The whole display drop-in for `value` (and `dom0`, see
/// `display_assignments`).
pub fn display_dropin_text(value: &str, dom0: Option<&str>) -> Result<String, DropinError> {
    Ok(format!(
        "# Written by pcipass: Xen's console for the host display (host.display),\n\
         # and dom0's console in the Xen entries where it changes.\n\
         # Change it through pcipass (host.enable_display, host.disable_display).\n\
         {}",
        display_assignments(value, dom0)?
    ))
}

/// The console value of pcipass's display drop-in; anything but the one
/// assignment it writes is [`DropinError::Foreign`].
pub fn display_dropin_value(text: &[u8]) -> Result<String, DropinError> {
    let foreign = || {
        DropinError::Foreign(
            "changed by hand: it no longer holds only the one assignment pcipass writes".into(),
        )
    };
    let text = std::str::from_utf8(text).map_err(|_| foreign())?;
    let mut lines = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    let value = lines.next().and_then(console_of).ok_or_else(foreign)?;
    let dom0_line = |l: &str| {
        l.strip_prefix(XEN_REPLACE_DEFAULT_VAR)
            .and_then(|r| r.strip_prefix("=\""))
            .and_then(|r| r.strip_suffix('"'))
            .is_some_and(|args| !args.contains(['"', '$', '`', '\\']))
    };
    match (lines.next(), lines.next()) {
        (None, _) => Ok(value.to_owned()),
        (Some(l), None) if dom0_line(l) => Ok(value.to_owned()),
        _ => Err(foreign()),
    }
}

/// `/etc/default/grub` with pcipass's display block set to `value`
/// (added at the end when there is none). Every byte outside it is kept.
pub fn with_display_block(
    text: &[u8],
    value: &str,
    dom0: Option<&str>,
) -> Result<Vec<u8>, DropinError> {
    let text = std::str::from_utf8(text)
        .map_err(|_| DropinError::Foreign("not UTF-8 around pcipass's blocks".into()))?;
    let block = format!(
        "{DISPLAY_BLOCK_BEGIN}\n{}{DISPLAY_BLOCK_END}\n",
        display_assignments(value, dom0)?
    );
    let range = marked_range(text, DISPLAY_BLOCK_BEGIN, DISPLAY_BLOCK_END)?;
    Ok(spliced(text, range, &block).into_bytes())
}

/// `/etc/default/grub` without pcipass's blocks (the hide list's and the
/// display's): the operator's own lines.
pub fn without_blocks(text: &[u8]) -> Result<Vec<u8>, DropinError> {
    let text = with_block(text, None)?;
    let text = std::str::from_utf8(&text)
        .map_err(|_| DropinError::Foreign("not UTF-8 around pcipass's blocks".into()))?;
    let range = marked_range(text, DISPLAY_BLOCK_BEGIN, DISPLAY_BLOCK_END)?;
    Ok(match range {
        Some(_) => spliced(text, range, "").into_bytes(),
        None => text.as_bytes().to_vec(),
    })
}

/// True when shell text mentions the hide key outside a comment line: a
/// hide list the operator set there (pcipass's own lines excepted).
pub fn mentions_hide(text: &[u8]) -> bool {
    String::from_utf8_lossy(text).lines().any(|line| {
        let line = line.trim();
        !line.starts_with('#')
            && value_of(line).is_none()
            && (line.contains("xen-pciback.hide") || line.contains("xen_pciback.hide"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_in_round_trips_and_refuses_what_a_shell_would_expand() {
        for value in [
            "(0000:01:00.0)",
            "(0000:01:00.0)(0000:01:00.1)",
            "(01:00.*)",
        ] {
            let text = dropin_text(value).unwrap();
            assert_eq!(dropin_value(text.as_bytes()).unwrap(), value);
            assert!(text.ends_with(&format!("xen-pciback.hide={value}\"\n")));
        }
        for bad in [
            "",
            "(01:00.0) x",
            "$(reboot)",
            "(01:00.0)\"",
            "`id`",
            "a\nb",
            "(a)\\",
        ] {
            assert_eq!(
                dropin_text(bad),
                Err(DropinError::UnsafeValue(bad.into())),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_display_drop_in_and_block_round_trip() {
        for value in ["vga", "com1,vga", "none", "com2"] {
            let text = display_dropin_text(value, None).unwrap();
            assert_eq!(display_dropin_value(text.as_bytes()).unwrap(), value);
            let text = display_dropin_text(value, Some("quiet console=hvc0 console=tty0")).unwrap();
            assert!(text.ends_with(
                "GRUB_CMDLINE_LINUX_XEN_REPLACE_DEFAULT=\"quiet console=hvc0 console=tty0\"\n"
            ));
            assert_eq!(display_dropin_value(text.as_bytes()).unwrap(), value);
            let grub = b"GRUB_DEFAULT=0\nGRUB_CMDLINE_XEN=\"dom0_mem=2G\"";
            let edited = with_display_block(grub, value, None).unwrap();
            assert!(
                edited.starts_with(grub),
                "{}",
                String::from_utf8_lossy(&edited)
            );
            // Set again: the block replaced, not repeated; the hide block
            // beside it is another block.
            let again = with_display_block(
                &with_block(&edited, Some("(0000:01:00.0)")).unwrap(),
                "vga",
                Some("quiet"),
            )
            .unwrap();
            let again = String::from_utf8(again).unwrap();
            assert_eq!(again.matches(DISPLAY_BLOCK_BEGIN).count(), 1, "{again}");
            assert!(again.contains("console=vga\""), "{again}");
            assert_eq!(
                block_value(again.as_bytes()).unwrap().as_deref(),
                Some("(0000:01:00.0)")
            );
        }
        for bad in ["", "vga com1", "$(reboot)", "vga\""] {
            assert!(display_dropin_text(bad, None).is_err(), "{bad:?}");
        }
        for bad in ["$(reboot)", "a\"b", "a`b`", "a\\b"] {
            assert!(display_dropin_text("vga", Some(bad)).is_err(), "{bad:?}");
        }
        let by_hand = format!(
            "{}GRUB_TIMEOUT=1\n",
            display_dropin_text("vga", None).unwrap()
        );
        assert!(display_dropin_value(by_hand.as_bytes()).is_err());
    }

    #[test]
    fn a_drop_in_edited_by_hand_is_foreign() {
        let ours = dropin_text("(0000:01:00.0)").unwrap();
        for text in [
            String::new(),
            format!("{ours}GRUB_CMDLINE_LINUX=\"quiet\"\n"),
            ours.replace(":-$GRUB_CMDLINE_LINUX}", "}"),
            format!("{ours}{}", assignment("(0000:02:00.0)").unwrap()),
            ours.replace("(0000:01:00.0)", "(0000:01:00.0) $(id)"),
        ] {
            assert!(
                matches!(dropin_value(text.as_bytes()), Err(DropinError::Foreign(_))),
                "{text}"
            );
        }
    }

    #[test]
    fn the_block_in_default_grub_keeps_every_other_byte() {
        let stock = b"GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX=\"\"\n# a comment \xc3\xa9\n";
        let added = with_block(stock, Some("(0000:01:00.0)")).unwrap();
        assert!(added.starts_with(stock));
        assert_eq!(
            block_value(&added).unwrap().as_deref(),
            Some("(0000:01:00.0)")
        );
        let changed = with_block(&added, Some("(0000:02:00.0)")).unwrap();
        assert!(changed.starts_with(stock));
        assert_eq!(
            block_value(&changed).unwrap().as_deref(),
            Some("(0000:02:00.0)")
        );
        assert_eq!(with_block(&changed, None).unwrap(), stock);
        assert_eq!(with_block(stock, None).unwrap(), stock);
        assert_eq!(block_value(stock).unwrap(), None);
        // No final newline: one is added before the block, and kept after
        // the block goes (the file ends in a newline as a shell file should).
        let bare = b"GRUB_TIMEOUT=5";
        let added = with_block(bare, Some("(0000:01:00.0)")).unwrap();
        assert!(added.starts_with(b"GRUB_TIMEOUT=5\n# BEGIN"));
        assert_eq!(with_block(&added, None).unwrap(), b"GRUB_TIMEOUT=5\n");
    }

    #[test]
    fn a_broken_block_is_foreign() {
        let block = |v| String::from_utf8(with_block(b"", Some(v)).unwrap()).unwrap();
        for text in [
            format!("{BLOCK_BEGIN}\nX=1\n"),
            format!("X=1\n{BLOCK_END}\n"),
            format!("{}{}", block("(0000:01:00.0)"), block("(0000:02:00.0)")),
            block("(0000:01:00.0)").replace("xen-pciback.hide=", "pci=nomsi xen-pciback.hide="),
        ] {
            assert!(
                matches!(block_value(text.as_bytes()), Err(DropinError::Foreign(_))),
                "{text}"
            );
        }
    }

    #[test]
    fn a_hide_list_set_by_the_operator_is_noticed() {
        for (text, set) in [
            (
                &b"GRUB_CMDLINE_LINUX=\"xen-pciback.hide=(01:00.0)\"\n"[..],
                true,
            ),
            (
                b"GRUB_CMDLINE_LINUX_DEFAULT=\"quiet xen_pciback.hide=(01:00.0)\"\n",
                true,
            ),
            (
                b"# GRUB_CMDLINE_LINUX=\"xen-pciback.hide=(01:00.0)\"\n",
                false,
            ),
            (b"GRUB_CMDLINE_LINUX=\"quiet\"\n", false),
        ] {
            assert_eq!(
                mentions_hide(text),
                set,
                "{}",
                String::from_utf8_lossy(text)
            );
        }
        assert!(!mentions_hide(
            dropin_text("(0000:01:00.0)").unwrap().as_bytes()
        ));
    }
}
