//! Whether xen-pciback can claim devices hidden with the dom0 kernel
//! argument `xen-pciback.hide=`: is it built into the running kernel, a
//! module, or absent, and when it is a module, does the initramfs load it
//! early enough (before a device's native driver binds).
//!
//! Pure functions over [`PcibackFacts`]; every judgement fails closed: when
//! the facts do not settle a question the answer is "unknown" or "not
//! early", never the permissive one.

use crate::host::modules::PcibackFacts;

/// The module's name as modprobe and the initramfs tools spell it.
pub const PCIBACK: &str = "xen-pciback";

/// The line `modules.builtin` carries when xen-pciback is built in (paths
/// relative to `lib/modules/<release>`, one per line).
pub const PCIBACK_BUILTIN_PATH: &str = crate::host::modules::PCIBACK_BUILTIN_PATH;

/// How the running kernel provides xen-pciback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Build {
    /// Built into the kernel image: it is there from the start.
    BuiltIn,
    /// A loadable module, installed for the running kernel.
    Module,
    /// Neither built in nor installed as a module (nor loaded).
    Absent,
    /// The facts do not tell: no `modules.builtin`, no module file and
    /// nothing in `/sys/module` (such as `/lib/modules` hidden from the
    /// service while the module is not loaded).
    Unknown,
}

/// How the running kernel provides xen-pciback:
///
/// - [`Build::BuiltIn`] when `modules.builtin` has the line
///   [`PCIBACK_BUILTIN_PATH`], or when `/sys/module/xen_pciback` exists
///   without an `initstate` file (the kernel gives every loadable module
///   that file and a built-in one never; xen-pciback has parameters, so a
///   built-in xen-pciback always has the directory);
/// - [`Build::Module`] when `/sys/module/xen_pciback/initstate` exists (a
///   loaded module), else when the module file is installed (a kernel
///   build makes a driver either built in or a module, never both);
/// - else, with `modules.builtin` present: [`Build::Absent`];
/// - else (no `modules.builtin`, nothing in sysfs): [`Build::Unknown`].
pub fn build(facts: &PcibackFacts) -> Build {
    let listed = facts
        .modules_builtin
        .as_deref()
        .map(|text| lines(text).any(|line| trim(line) == PCIBACK_BUILTIN_PATH.as_bytes()));
    if listed == Some(true) || (facts.loaded && !facts.initstate) {
        return Build::BuiltIn;
    }
    if facts.loaded || facts.module_file {
        return Build::Module;
    }
    match listed {
        Some(_) => Build::Absent,
        None => Build::Unknown,
    }
}

/// The lines of `text` (split at `\n`; a final line needs no newline).
fn lines(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    text.split(|b| *b == b'\n')
}

/// `bytes` without leading and trailing ASCII white space (so a `\r\n`
/// line ending is tolerated).
fn trim(bytes: &[u8]) -> &[u8] {
    bytes.trim_ascii()
}

/// True when module names `a` and `b` are the same to modprobe, which
/// treats `-` and `_` alike.
fn same_module(a: &[u8], b: &[u8]) -> bool {
    let norm = |c: &u8| if *c == b'-' { b'_' } else { *c };
    a.len() == b.len() && a.iter().map(norm).eq(b.iter().map(norm))
}

/// True when the initramfs-tools module list `list_text` (the format of
/// `/etc/initramfs-tools/modules`, initramfs-tools(5)) names module
/// `name`: one module per line, its first word the name and any further
/// words its parameters; blank lines and lines starting with `#` are
/// skipped; `-` and `_` are the same in a name.
pub fn lists_module(list_text: &[u8], name: &str) -> bool {
    lines(list_text).any(|line| {
        line.split(|b| b.is_ascii_whitespace())
            .find(|w| !w.is_empty())
            .is_some_and(|first| !first.starts_with(b"#") && same_module(first, name.as_bytes()))
    })
}

/// One recognised assignment to `force_drivers`.
enum Assign<'a> {
    /// `force_drivers=...`: the list is replaced.
    Set(Vec<&'a [u8]>),
    /// `force_drivers+=...`: the words are appended.
    Append(Vec<&'a [u8]>),
    /// A line that mentions `force_drivers` in a way not understood (an
    /// expansion, a condition, an unclosed quote, ...).
    Unclear,
}

/// Read one line of a dracut configuration file as far as
/// `force_drivers` goes; `None` when the line does not mention it.
fn force_drivers_line(line: &[u8]) -> Option<Assign<'_>> {
    const KEY: &[u8] = b"force_drivers";
    let line = trim(line);
    if line.starts_with(b"#") || !line.windows(KEY.len()).any(|w| w == KEY) {
        return None;
    }
    let Some(rest) = line.strip_prefix(KEY) else {
        return Some(Assign::Unclear);
    };
    let (append, value) = if let Some(v) = rest.strip_prefix(b"+=") {
        (true, v)
    } else if let Some(v) = rest.strip_prefix(b"=") {
        (false, v)
    } else {
        return Some(Assign::Unclear);
    };
    let Some(words) = shell_words(value) else {
        return Some(Assign::Unclear);
    };
    Some(if append {
        Assign::Append(words)
    } else {
        Assign::Set(words)
    })
}

/// The words of a simple shell value: one double- or single-quoted string
/// or one bare word, optionally followed by blanks and a `#` comment.
/// `None` for anything else (expansions, escapes, unclosed quotes, more
/// commands on the line), which the caller treats as unclear.
fn shell_words(value: &[u8]) -> Option<Vec<&[u8]>> {
    let (inner, after): (&[u8], &[u8]) = match value.first() {
        Some(q @ (b'"' | b'\'')) => {
            let end = value[1..].iter().position(|b| b == q)? + 1;
            (&value[1..end], &value[end + 1..])
        }
        _ => {
            let end = value
                .iter()
                .position(|b| b.is_ascii_whitespace())
                .unwrap_or(value.len());
            value.split_at(end)
        }
    };
    let after_ok = after.is_empty()
        || (after[0].is_ascii_whitespace() && {
            let rest = trim(after);
            rest.is_empty() || rest.starts_with(b"#")
        });
    let plain = !inner
        .iter()
        .any(|b| matches!(b, b'$' | b'`' | b'\\' | b'"' | b'\'' | b';' | b'&' | b'|'));
    if !after_ok || !plain {
        return None;
    }
    Some(
        inner
            .split(|b| b.is_ascii_whitespace())
            .filter(|w| !w.is_empty())
            .collect(),
    )
}

/// True when the dracut configuration `confs` (the files in the order
/// dracut reads them, dracut.conf(5)) makes dracut force-load module
/// `name` early: `force_drivers="..."` replaces the list, `force_drivers+=
/// "..."` appends to it, later lines and files win; `#` comment lines are
/// skipped; `-` and `_` are the same in a name. A line touching
/// `force_drivers` that is not one of those plain assignments (an
/// expansion, a condition) may have removed the module, so the answer is
/// false after it unless a later plain assignment names the module.
pub fn dracut_forces(confs: &[(String, Vec<u8>)], name: &str) -> bool {
    let named = |words: &[&[u8]]| words.iter().any(|w| same_module(w, name.as_bytes()));
    let mut forced = false;
    for (_, text) in confs {
        for line in lines(text) {
            match force_drivers_line(line) {
                None => {}
                Some(Assign::Set(words)) => forced = named(&words),
                Some(Assign::Append(words)) => forced = forced || named(&words),
                Some(Assign::Unclear) => forced = false,
            }
        }
    }
    forced
}

/// The initramfs generator an operator would change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// initramfs-tools (Debian, Ubuntu).
    InitramfsTools,
    /// dracut (Fedora, Qubes, RHEL).
    Dracut,
    /// Neither is installed.
    None,
}

/// Whether xen-pciback is there before a device's native driver binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loading {
    /// Built into the kernel.
    BuiltIn,
    /// A module the initramfs loads early; the tool that does it
    /// (`"initramfs-tools"` or `"dracut"`).
    Early(&'static str),
    /// A module no initramfs configuration loads early; the tool to change.
    NotEarly(Tool),
    /// The kernel has no xen-pciback.
    Absent,
    /// The facts do not tell (see [`Build::Unknown`]).
    Unknown,
}

/// Whether xen-pciback loads early: built in; a module listed in
/// `/etc/initramfs-tools/modules` (initramfs-tools installed) or forced by
/// dracut's `force_drivers`; otherwise not early, naming initramfs-tools
/// when it is installed, else dracut when it is, else no tool.
pub fn loading(facts: &PcibackFacts) -> Loading {
    match build(facts) {
        Build::BuiltIn => Loading::BuiltIn,
        Build::Absent => Loading::Absent,
        Build::Unknown => Loading::Unknown,
        Build::Module => {
            let listed = facts.initramfs_tools
                && facts
                    .initramfs_tools_modules
                    .as_deref()
                    .is_some_and(|t| lists_module(t, PCIBACK));
            if listed {
                Loading::Early("initramfs-tools")
            } else if facts.dracut && dracut_forces(&facts.dracut_confs, PCIBACK) {
                Loading::Early("dracut")
            } else if facts.initramfs_tools {
                Loading::NotEarly(Tool::InitramfsTools)
            } else if facts.dracut {
                Loading::NotEarly(Tool::Dracut)
            } else {
                Loading::NotEarly(Tool::None)
            }
        }
    }
}

/// The header of a new `/etc/initramfs-tools/modules` written by
/// [`with_module_listed`].
const MODULES_HEADER: &str = "\
# Kernel modules the initramfs loads at boot, one per line, each name
# optionally followed by its parameters; see initramfs-tools(5).
# Run update-initramfs -u after changing this file.
";

/// The initramfs-tools module list `list_text` with module `name` on a
/// line of its own at the end; every existing byte is kept (a newline is
/// added first when the text does not end with one). Unchanged when the
/// list already names the module; a new file (a comment header, then the
/// name) when there is no list.
pub fn with_module_listed(list_text: Option<&[u8]>, name: &str) -> Vec<u8> {
    let Some(text) = list_text else {
        let mut out = MODULES_HEADER.as_bytes().to_vec();
        out.extend_from_slice(name.as_bytes());
        out.push(b'\n');
        return out;
    };
    let mut out = text.to_vec();
    if lists_module(text, name) {
        return out;
    }
    if !out.is_empty() && !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    out.extend_from_slice(name.as_bytes());
    out.push(b'\n');
    out
}

/// The modprobe configuration line that makes modprobe load xen-pciback
/// before `module` (modprobe.d(5) `softdep`), wherever `module` is loaded:
/// by udev in the initramfs (initramfs-tools starts udev before it loads
/// its module list; the initramfs carries `/etc/modprobe.d`) or later.
pub fn softdep_line(module: &str) -> String {
    format!("softdep {module} pre: {PCIBACK}")
}

/// Whether modprobe configuration text already loads xen-pciback before
/// `module` (a `softdep MODULE pre: ... xen-pciback ...` line; `-` and
/// `_` alike in names).
pub fn softdeps_pciback(text: &[u8], module: &str) -> bool {
    lines(text).any(|line| {
        let words: Vec<&[u8]> = line
            .split(u8::is_ascii_whitespace)
            .filter(|w| !w.is_empty())
            .collect();
        match words.as_slice() {
            [cmd, name, rest @ ..]
                if *cmd == b"softdep" && same_module(name, module.as_bytes()) =>
            {
                let pre = rest.iter().skip_while(|w| **w != b"pre:").skip(1);
                pre.take_while(|w| !w.ends_with(b":"))
                    .any(|w| same_module(w, PCIBACK.as_bytes()))
            }
            _ => false,
        }
    })
}

/// `/etc/modprobe.d/pcipass.conf` with a [`softdep_line`] for each of
/// `modules` it lacks (every existing byte kept; a short header when the
/// file is new); `None` when nothing is to be added.
pub fn with_softdeps(text: Option<&[u8]>, modules: &[&str]) -> Option<Vec<u8>> {
    let mut out = text.map_or_else(
        || {
            b"# Written by pcipass: load xen-pciback before the native drivers of the\n\
              # PCI functions it hides, so that xen-pciback.hide= takes effect.\n"
                .to_vec()
        },
        <[u8]>::to_vec,
    );
    let mut added = false;
    for module in modules {
        if softdeps_pciback(&out, module) {
            continue;
        }
        if !out.is_empty() && !out.ends_with(b"\n") {
            out.push(b'\n');
        }
        out.extend_from_slice(softdep_line(module).as_bytes());
        out.push(b'\n');
        added = true;
    }
    added.then_some(out)
}

/// What an operator must do, in one sentence, when xen-pciback is not
/// there early enough for `xen-pciback.hide=`; `None` when nothing is to
/// be done or nothing can be said.
pub fn advice(loading: &Loading) -> Option<String> {
    let text = match loading {
        Loading::NotEarly(Tool::InitramfsTools) => {
            "Add xen-pciback on a line of its own to /etc/initramfs-tools/modules \
             and run `update-initramfs -u`, so the initramfs loads it before \
             the devices' native drivers."
        }
        Loading::NotEarly(Tool::Dracut) => {
            "Add `force_drivers+=\" xen-pciback \"` to a file in /etc/dracut.conf.d/ \
             and run `dracut -f`, so the initramfs loads xen-pciback before the \
             devices' native drivers."
        }
        Loading::NotEarly(Tool::None) => {
            "Make xen-pciback load before the devices' native drivers (no \
             initramfs-tools or dracut configuration was found), for example \
             by building it into the kernel."
        }
        Loading::Absent => {
            "The running kernel has no xen-pciback, so xen-pciback.hide= has no \
             effect; boot a kernel built with CONFIG_XEN_PCIDEV_BACKEND."
        }
        Loading::BuiltIn | Loading::Early(_) | Loading::Unknown => return None,
    };
    Some(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> PcibackFacts {
        PcibackFacts {
            kernel_release: "6.1.0-28-amd64".to_owned(),
            ..PcibackFacts::default()
        }
    }

    #[test]
    fn build_table() {
        let builtin =
            Some(b"kernel/a.ko\nkernel/drivers/xen/xen-pciback/xen-pciback.ko\n".to_vec());
        let other = Some(b"kernel/a.ko\nkernel/drivers/xen/xen-blkback/xen-blkback.ko".to_vec());
        let near = Some(b"kernel/drivers/xen/xen-pciback/xen-pciback.ko.xz\n".to_vec());
        let crlf = Some(b"kernel/drivers/xen/xen-pciback/xen-pciback.ko\r\n".to_vec());
        // (modules.builtin, module file, sysfs: None, Some(initstate), expected)
        type Row = (Option<Vec<u8>>, bool, Option<bool>, Build);
        let rows: &[Row] = &[
            (builtin.clone(), false, None, Build::BuiltIn),
            (builtin.clone(), false, Some(false), Build::BuiltIn),
            (builtin, true, Some(true), Build::BuiltIn),
            (crlf, false, None, Build::BuiltIn),
            (other.clone(), true, None, Build::Module),
            (other.clone(), true, Some(true), Build::Module),
            (None, true, None, Build::Module),
            (other.clone(), false, None, Build::Absent),
            (near, false, None, Build::Absent),
            (Some(Vec::new()), false, None, Build::Absent),
            // Loaded as a module from somewhere not looked at (updates/).
            (other.clone(), false, Some(true), Build::Module),
            // No /lib/modules at all (hidden from the service, or not
            // installed): sysfs settles it when it can.
            (None, false, Some(false), Build::BuiltIn),
            (None, false, Some(true), Build::Module),
            (None, false, None, Build::Unknown),
            // A sysfs directory without initstate is a built-in module.
            (other, false, Some(false), Build::BuiltIn),
        ];
        for (i, (builtin, file, sysfs, want)) in rows.iter().enumerate() {
            let f = PcibackFacts {
                modules_builtin: builtin.clone(),
                module_file: *file,
                loaded: sysfs.is_some(),
                initstate: sysfs.unwrap_or(false),
                ..facts()
            };
            assert_eq!(build(&f), *want, "row {i}");
        }
    }

    #[test]
    fn lists_module_table() {
        let rows: &[(&str, &str, bool)] = &[
            ("xen-pciback\n", "xen-pciback", true),
            ("xen_pciback\n", "xen-pciback", true),
            ("xen-pciback\n", "xen_pciback", true),
            ("xen-pciback", "xen-pciback", true),
            ("  xen-pciback  \n", "xen-pciback", true),
            ("\txen-pciback\r\n", "xen-pciback", true),
            (
                "loop\nxen-pciback passthrough=1 hide=(01:00.0)\n",
                "xen-pciback",
                true,
            ),
            ("xen-pciback # trailing comment\n", "xen-pciback", true),
            ("# xen-pciback\n", "xen-pciback", false),
            ("#xen-pciback\n", "xen-pciback", false),
            ("   # xen-pciback\n", "xen-pciback", false),
            ("", "xen-pciback", false),
            ("\n\n\n", "xen-pciback", false),
            ("loop xen-pciback\n", "xen-pciback", false),
            ("xen-pcibackx\n", "xen-pciback", false),
            ("xen-pcibac\n", "xen-pciback", false),
            ("xen-pciback.ko\n", "xen-pciback", false),
            ("xen-blkback\n", "xen-pciback", false),
        ];
        for (text, name, want) in rows {
            assert_eq!(
                lists_module(text.as_bytes(), name),
                *want,
                "{text:?} {name}"
            );
        }
        assert!(lists_module(b"\xff\xfe\nxen-pciback\n", "xen-pciback"));
    }

    fn confs(files: &[&str]) -> Vec<(String, Vec<u8>)> {
        files
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("etc/dracut.conf.d/{i}.conf"), t.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn dracut_forces_table() {
        let rows: &[(&[&str], bool)] = &[
            (&[], false),
            (&[""], false),
            (&["force_drivers+=\" xen-pciback \"\n"], true),
            (&["force_drivers+=\" xen_pciback \""], true),
            (&["force_drivers=\"loop xen-pciback\"\n"], true),
            (&["force_drivers='xen-pciback'\n"], true),
            (&["force_drivers=xen-pciback\n"], true),
            (
                &["  force_drivers+=\" xen-pciback \"  # for passthrough\n"],
                true,
            ),
            (&["# force_drivers+=\" xen-pciback \"\n"], false),
            (&["add_drivers+=\" xen-pciback \"\n"], false),
            (&["force_drivers+=\" loop \"\n"], false),
            // '=' after '+=' resets, in the same file and in a later one.
            (
                &["force_drivers+=\" xen-pciback \"\nforce_drivers=\" loop \"\n"],
                false,
            ),
            (
                &["force_drivers+=\" xen-pciback \"\n", "force_drivers=\"\"\n"],
                false,
            ),
            (
                &["force_drivers=\"\"\n", "force_drivers+=\" xen-pciback \"\n"],
                true,
            ),
            // '+=' after '+=' keeps it.
            (
                &[
                    "force_drivers+=\" xen-pciback \"\n",
                    "force_drivers+=\" loop \"\n",
                ],
                true,
            ),
            // Not understood: fail closed.
            (&["force_drivers+=\" $extra xen-pciback \"\n"], false),
            (
                &[
                    "force_drivers+=\" xen-pciback \"\n",
                    "[ -e /x ] && force_drivers=\"\"\n",
                ],
                false,
            ),
            (
                &["force_drivers+=\" xen-pciback \"\nforce_drivers=\"$(cat /x)\"\n"],
                false,
            ),
            (&["force_drivers+=\" xen-pciback\n\"\n"], false),
            (&["force_drivers+=\" xen-pciback \"; rm -rf /\n"], false),
            (&["force_drivers += \" xen-pciback \"\n"], false),
            (&["force_drivers_extra+=\" xen-pciback \"\n"], false),
        ];
        for (files, want) in rows {
            assert_eq!(
                dracut_forces(&confs(files), "xen-pciback"),
                *want,
                "{files:?}"
            );
        }
    }

    #[test]
    fn loading_table() {
        let module = PcibackFacts {
            module_file: true,
            modules_builtin: Some(Vec::new()),
            ..facts()
        };
        let listed = Some(b"xen_pciback\n".to_vec());
        let forced = confs(&["force_drivers+=\" xen-pciback \"\n"]);
        let rows: Vec<(PcibackFacts, Loading)> = vec![
            (
                PcibackFacts {
                    modules_builtin: Some(PCIBACK_BUILTIN_PATH.as_bytes().to_vec()),
                    ..facts()
                },
                Loading::BuiltIn,
            ),
            (
                PcibackFacts {
                    modules_builtin: Some(Vec::new()),
                    ..facts()
                },
                Loading::Absent,
            ),
            (facts(), Loading::Unknown),
            (module.clone(), Loading::NotEarly(Tool::None)),
            (
                PcibackFacts {
                    initramfs_tools: true,
                    initramfs_tools_modules: listed.clone(),
                    ..module.clone()
                },
                Loading::Early("initramfs-tools"),
            ),
            // A list without initramfs-tools installed does not count.
            (
                PcibackFacts {
                    initramfs_tools_modules: listed,
                    ..module.clone()
                },
                Loading::NotEarly(Tool::None),
            ),
            (
                PcibackFacts {
                    initramfs_tools: true,
                    ..module.clone()
                },
                Loading::NotEarly(Tool::InitramfsTools),
            ),
            (
                PcibackFacts {
                    dracut: true,
                    dracut_confs: forced.clone(),
                    ..module.clone()
                },
                Loading::Early("dracut"),
            ),
            (
                PcibackFacts {
                    dracut: true,
                    initramfs_tools: true,
                    dracut_confs: forced,
                    ..module.clone()
                },
                Loading::Early("dracut"),
            ),
            (
                PcibackFacts {
                    dracut: true,
                    ..module.clone()
                },
                Loading::NotEarly(Tool::Dracut),
            ),
            (
                PcibackFacts {
                    dracut: true,
                    initramfs_tools: true,
                    ..module
                },
                Loading::NotEarly(Tool::InitramfsTools),
            ),
        ];
        for (i, (f, want)) in rows.iter().enumerate() {
            assert_eq!(loading(f), *want, "row {i}");
        }
    }

    #[test]
    fn with_module_listed_table() {
        let rows: &[(&str, &str)] = &[
            ("", "xen-pciback\n"),
            ("loop\n", "loop\nxen-pciback\n"),
            ("loop", "loop\nxen-pciback\n"),
            ("# comment\n\n", "# comment\n\nxen-pciback\n"),
            ("# xen-pciback\n", "# xen-pciback\nxen-pciback\n"),
            ("xen_pciback\n", "xen_pciback\n"),
            ("xen-pciback passthrough=1", "xen-pciback passthrough=1"),
            ("loop\r\n", "loop\r\nxen-pciback\n"),
        ];
        for (before, after) in rows {
            let got = with_module_listed(Some(before.as_bytes()), PCIBACK);
            assert_eq!(String::from_utf8_lossy(&got), *after, "{before:?}");
        }
        let bytes = b"\xffloop".to_vec();
        assert_eq!(
            with_module_listed(Some(&bytes), PCIBACK),
            b"\xffloop\nxen-pciback\n"
        );
        let new = with_module_listed(None, PCIBACK);
        let text = String::from_utf8(new.clone()).unwrap();
        assert!(text.starts_with('#'), "{text}");
        assert!(text.contains("initramfs-tools(5)"), "{text}");
        assert!(text.ends_with("\nxen-pciback\n"), "{text}");
        assert!(lists_module(&new, PCIBACK));
        // Adding again changes nothing.
        assert_eq!(with_module_listed(Some(&new), PCIBACK), new);
    }

    #[test]
    fn advice_table() {
        let rows: &[(Loading, Option<&str>)] = &[
            (Loading::BuiltIn, None),
            (Loading::Early("initramfs-tools"), None),
            (Loading::Early("dracut"), None),
            (Loading::Unknown, None),
            (
                Loading::NotEarly(Tool::InitramfsTools),
                Some("update-initramfs -u"),
            ),
            (
                Loading::NotEarly(Tool::Dracut),
                Some("force_drivers+=\" xen-pciback \""),
            ),
            (Loading::NotEarly(Tool::None), Some("into the kernel")),
            (Loading::Absent, Some("no xen-pciback")),
        ];
        for (l, want) in rows {
            let got = advice(l);
            match want {
                None => assert_eq!(got, None, "{l:?}"),
                Some(part) => {
                    let text = got.unwrap();
                    assert!(text.contains(part), "{l:?}: {text}");
                }
            }
        }
        let text = advice(&Loading::NotEarly(Tool::InitramfsTools)).unwrap();
        assert!(text.contains("/etc/initramfs-tools/modules"), "{text}");
        let text = advice(&Loading::NotEarly(Tool::Dracut)).unwrap();
        assert!(
            text.contains("/etc/dracut.conf.d/") && text.contains("dracut -f"),
            "{text}"
        );
    }

    #[test]
    fn softdeps_are_read_as_modprobe_reads_them() {
        for (text, module, loads_first) in [
            (
                &b"softdep xhci_pci pre: xen-pciback\n"[..],
                "xhci_pci",
                true,
            ),
            (b"softdep xhci-pci pre: xen_pciback\n", "xhci_pci", true),
            (
                b"softdep nouveau pre: foo xen-pciback post: bar\n",
                "nouveau",
                true,
            ),
            (b"softdep nouveau post: xen-pciback\n", "nouveau", false),
            (
                b"softdep nouveau pre: foo post: xen-pciback\n",
                "nouveau",
                false,
            ),
            (b"# softdep nouveau pre: xen-pciback\n", "nouveau", false),
            (b"softdep i915 pre: xen-pciback\n", "nouveau", false),
            (b"", "nouveau", false),
        ] {
            assert_eq!(
                softdeps_pciback(text, module),
                loads_first,
                "{}",
                String::from_utf8_lossy(text)
            );
        }
    }

    #[test]
    fn softdep_lines_are_added_once_keeping_the_file() {
        let new = with_softdeps(None, &["xhci_pci"]).unwrap();
        assert!(new.starts_with(b"# Written by pcipass"));
        assert!(new.ends_with(b"softdep xhci_pci pre: xen-pciback\n"));
        assert_eq!(with_softdeps(Some(&new), &["xhci_pci"]), None);
        let more = with_softdeps(Some(&new), &["nouveau", "xhci_pci"]).unwrap();
        assert!(more.starts_with(&new));
        assert!(more.ends_with(b"softdep nouveau pre: xen-pciback\n"));
        let bare = with_softdeps(Some(b"options x y=1"), &["nouveau"]).unwrap();
        assert_eq!(bare, b"options x y=1\nsoftdep nouveau pre: xen-pciback\n");
    }
}
