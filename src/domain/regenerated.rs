//! What `grub-mkconfig` will write into grub.cfg for pcipass's hide list,
//! foreseen without running it (the dry run of an edit on a grub-mkconfig
//! host).
//!
//! The hide list reaches grub.cfg one way only. pcipass's drop-in (or
//! block of `/etc/default/grub`, [`crate::domain::grub_dropin`]) sets
//! `GRUB_CMDLINE_LINUX_XEN_REPLACE="${GRUB_CMDLINE_LINUX_XEN_REPLACE:-$GRUB_CMDLINE_LINUX} xen-pciback.hide=V"`,
//! and only `/etc/grub.d/20_linux_xen` reads that variable: when it is not
//! empty it takes `GRUB_CMDLINE_LINUX`'s place, so every dom0 kernel line
//! the script writes, `module2 KERNEL placeholder root=DEV ro ARGS`, has
//! `ARGS` = `L xen-pciback.hide=V D` (normal entries, `D` being
//! `GRUB_CMDLINE_LINUX_DEFAULT` or its `_XEN_REPLACE_DEFAULT`) or
//! `single L xen-pciback.hide=V` (recovery entries), where `L` is the
//! operator's `GRUB_CMDLINE_LINUX_XEN_REPLACE`, else `GRUB_CMDLINE_LINUX`.
//! Without the drop-in the same lines read `L D` and `single L`.
//!
//! So, on a grub.cfg the generator wrote from the same inputs, the next
//! regeneration changes exactly the word `xen-pciback.hide=OLD` of those
//! lines into `xen-pciback.hide=NEW`, drops it with its space, or (from no
//! list) puts ` xen-pciback.hide=NEW` after `L`, which is read from the
//! defaults files where they assign it a literal. Anything else (a line
//! that does not have that shape, an `L` set by a shell construct) cannot
//! be foreseen and is said so, never guessed.

use crate::domain::hide::HIDE_KEY;

/// The variable `20_linux_xen` uses for `GRUB_CMDLINE_LINUX` when set.
const XEN_REPLACE: &str = "GRUB_CMDLINE_LINUX_XEN_REPLACE";
/// The kernel arguments of every Linux entry.
const LINUX: &str = "GRUB_CMDLINE_LINUX";
/// The kernel arguments of the normal (not recovery) Linux entries.
const LINUX_DEFAULT: &str = "GRUB_CMDLINE_LINUX_DEFAULT";
/// The variable `20_linux_xen` uses for `GRUB_CMDLINE_LINUX_DEFAULT` when set.
const XEN_REPLACE_DEFAULT: &str = "GRUB_CMDLINE_LINUX_XEN_REPLACE_DEFAULT";

/// grub.cfg `cfg` (generated, with the hide value `old`) as the generator
/// will write it with `new`; `linux` gives `L` when it is needed (from no
/// list to one). `Err` says why it cannot be foreseen.
pub fn regenerated(
    cfg: &[u8],
    old: Option<&str>,
    new: Option<&str>,
    linux: &dyn Fn() -> Result<String, String>,
) -> Result<Vec<u8>, String> {
    if old == new {
        return Ok(cfg.to_vec());
    }
    let text = std::str::from_utf8(cfg).map_err(|_| "grub.cfg is not UTF-8 text".to_owned())?;
    let linux = match old {
        Some(_) => None,
        None => Some(linux()?),
    };
    let mut out = String::with_capacity(text.len() + 64);
    let mut lines = 0;
    for line in text.split_inclusive('\n') {
        let (body, end) = match line.strip_suffix('\n') {
            Some(body) => (body, "\n"),
            None => (line, ""),
        };
        match dom0_args_at(body) {
            Some(at) => {
                let (head, args) = body.split_at(at);
                out.push_str(head);
                out.push_str(
                    &edited_args(args, old, new, linux.as_deref())
                        .map_err(|why| format!("the dom0 line `{}` {why}", body.trim_start()))?,
                );
                lines += 1;
            }
            None => out.push_str(body),
        }
        out.push_str(end);
    }
    if lines == 0 {
        return Err("grub.cfg has no dom0 kernel line written by 20_linux_xen".into());
    }
    Ok(out.into_bytes())
}

/// Where `ARGS` starts in a dom0 kernel line `20_linux_xen` writes
/// (`module2`/`module`, then `KERNEL placeholder root=DEV ro `).
fn dom0_args_at(line: &str) -> Option<usize> {
    let words = line.trim_start();
    let loader = words.split(['\t', ' ']).next()?;
    if !matches!(loader, "module2" | "module") {
        return None;
    }
    let root = line.find(" placeholder root=")? + " placeholder ".len();
    let end_of_root = root + line[root..].find(' ')?;
    line[end_of_root..]
        .starts_with(" ro ")
        .then_some(end_of_root + " ro ".len())
}

/// One line's `ARGS` with the hide word changed as the drop-in changes it.
fn edited_args(
    args: &str,
    old: Option<&str>,
    new: Option<&str>,
    linux: Option<&str>,
) -> Result<String, String> {
    let word = |v: &str| format!("{HIDE_KEY}={v}");
    if let Some(old) = old {
        let spaced = format!(" {}", word(old));
        let found: Vec<usize> = args
            .match_indices(&spaced)
            .filter(|(at, _)| {
                let after = &args[at + spaced.len()..];
                after.is_empty() || after.starts_with(' ')
            })
            .map(|(at, _)| at)
            .collect();
        let [at] = found[..] else {
            return Err(format!(
                "does not carry pcipass's `{}` once (grub.cfg was not generated from the \
                 current defaults)",
                word(old)
            ));
        };
        let rest = &args[at + spaced.len()..];
        return Ok(match new {
            Some(new) => format!("{} {}{rest}", &args[..at], word(new)),
            None => format!("{}{rest}", &args[..at]),
        });
    }
    let (Some(new), Some(linux)) = (new, linux) else {
        return Ok(args.to_owned());
    };
    if args == format!("single {linux}") {
        return Ok(format!("{args} {}", word(new)));
    }
    match args.strip_prefix(linux) {
        Some(rest) if rest.starts_with(' ') => Ok(format!("{linux} {}{rest}", word(new))),
        _ => Err(format!(
            "does not start with GRUB_CMDLINE_LINUX (`{linux}`) as the defaults set it"
        )),
    }
}

/// `L` as `20_linux_xen` sees it before pcipass's lines: the operator's
/// `GRUB_CMDLINE_LINUX_XEN_REPLACE` when not empty, else
/// `GRUB_CMDLINE_LINUX`, from `files` (name and text, in the order
/// grub-mkconfig sources them, pcipass's own left out). The files are
/// shell; they are read only as far as this can be certain: every line
/// that names one of the two variables must assign it a literal, outside
/// any `if`, `case` or loop; a line that could set a variable without
/// naming it (`eval`, `.`, `source`, `read`, `declare`) makes `L` unknown.
/// Other lines (Debian's own `grub.d/xen.cfg` has `echo`, `if` blocks and
/// `grub_warn`) do not change `L` and are passed over.
pub fn linux_args(files: &[(String, Vec<u8>)]) -> Result<String, String> {
    args_var(files, LINUX, XEN_REPLACE)
}

/// `D` as `20_linux_xen` sees it for the normal entries: the operator's
/// `GRUB_CMDLINE_LINUX_XEN_REPLACE_DEFAULT` when not empty, else
/// `GRUB_CMDLINE_LINUX_DEFAULT`, read as [`linux_args`] reads `L`.
pub fn linux_default_args(files: &[(String, Vec<u8>)]) -> Result<String, String> {
    args_var(files, LINUX_DEFAULT, XEN_REPLACE_DEFAULT)
}

/// The value of `base`, or of `replace` when that is set and not empty.
fn args_var(files: &[(String, Vec<u8>)], base: &str, replace_var: &str) -> Result<String, String> {
    let mut linux = String::new();
    let mut replace = String::new();
    for (name, bytes) in files {
        let text = String::from_utf8_lossy(bytes);
        let mut depth = 0usize;
        for (number, line) in text.lines().enumerate() {
            let unknown = |why: &str| format!("{name} line {}: {why}", number + 1);
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let first = line
                .split(|c: char| c.is_whitespace() || c == ';')
                .next()
                .unwrap_or_default();
            if matches!(
                first,
                "eval" | "." | "source" | "read" | "declare" | "typeset"
            ) {
                return Err(unknown(&format!("`{first}` may set any variable")));
            }
            let named = names(line, base) || names(line, replace_var);
            match first {
                "if" | "case" | "for" | "while" | "until" => depth += 1,
                "fi" | "esac" | "done" => depth = depth.saturating_sub(1),
                _ => {}
            }
            if !named {
                continue;
            }
            if depth > 0 {
                return Err(unknown(
                    "the kernel arguments are set inside a conditional block",
                ));
            }
            let Some((var, value)) = assignment(line) else {
                return Err(unknown(
                    "names the kernel arguments other than by assigning them",
                ));
            };
            let literal =
                literal(value).ok_or_else(|| unknown(&format!("{var} is not set to a literal")))?;
            if var == base {
                linux = literal;
            } else if var == replace_var {
                replace = literal;
            } else {
                return Err(unknown(&format!("{var} is set from {base}")));
            }
        }
    }
    Ok(if replace.is_empty() { linux } else { replace })
}

/// `NAME=VALUE` of a shell line, `None` when the line is no assignment.
fn assignment(line: &str) -> Option<(&str, &str)> {
    let (var, value) = line.split_once('=')?;
    let ident = !var.is_empty()
        && !var.starts_with(|c: char| c.is_ascii_digit())
        && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    ident.then_some((var, value))
}

/// Whether `line` names the shell variable `var` (a whole name).
fn names(line: &str, var: &str) -> bool {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    line.match_indices(var)
        .any(|(at, _)| !line[..at].ends_with(ident) && !line[at + var.len()..].starts_with(ident))
}

/// The value of a shell word that is a literal (`"..."` or `'...'` with
/// nothing after it but a comment, or a bare word without expansions);
/// `None` otherwise.
fn literal(word: &str) -> Option<String> {
    let rest_is_comment = |rest: &str| {
        let rest = rest.trim_start();
        rest.is_empty() || rest.starts_with('#')
    };
    if let Some(inner) = word.strip_prefix('"') {
        let end = inner.find('"')?;
        let (value, rest) = (&inner[..end], &inner[end + 1..]);
        return (!value.contains(['$', '`', '\\']) && rest_is_comment(rest))
            .then(|| value.to_owned());
    }
    if let Some(inner) = word.strip_prefix('\'') {
        let end = inner.find('\'')?;
        return rest_is_comment(&inner[end + 1..]).then(|| inner[..end].to_owned());
    }
    let end = word.find(char::is_whitespace).unwrap_or(word.len());
    let (value, rest) = word.split_at(end);
    (!value.contains(['$', '`', '\\', '"', '\'', ';', '&', '|', '<', '>', '(', ')'])
        && rest_is_comment(rest))
    .then(|| value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NORMAL: &str =
        "\tmodule2\t/boot/vmlinuz-6.1.0-28-amd64 placeholder root=/dev/nvme0n1p2 ro ";
    const LINUX_LINE: &str =
        "\tlinux\t/boot/vmlinuz-6.1.0-28-amd64 root=/dev/nvme0n1p2 ro  quiet\n";

    fn cfg(normal: &str, recovery: &str) -> String {
        format!(
            "menuentry 'Debian' {{\n{LINUX_LINE}}}\nmenuentry 'Xen' {{\n\tmultiboot2\t/boot/xen.gz placeholder  \n{NORMAL}{normal}\n\tmodule2\t--nounzip   /boot/initrd.img\n}}\nmenuentry 'Xen (recovery mode)' {{\n{NORMAL}{recovery}\n}}\n"
        )
    }

    fn lit(l: &'static str) -> impl Fn() -> Result<String, String> {
        move || Ok(l.to_owned())
    }

    #[test]
    fn the_hide_word_of_every_dom0_line_changes_as_the_generator_changes_it() {
        let a = Some("(0000:01:00.0)");
        let b = Some("(0000:01:00.0)(0000:02:00.0)");
        for (l, before, after, old, new) in [
            // From no list: after L (empty here, as Debian's default).
            (
                "",
                cfg(" quiet", "single "),
                cfg(
                    " xen-pciback.hide=(0000:01:00.0) quiet",
                    "single  xen-pciback.hide=(0000:01:00.0)",
                ),
                None,
                a,
            ),
            (
                "console=hvc0",
                cfg("console=hvc0 quiet", "single console=hvc0"),
                cfg(
                    "console=hvc0 xen-pciback.hide=(0000:01:00.0) quiet",
                    "single console=hvc0 xen-pciback.hide=(0000:01:00.0)",
                ),
                None,
                a,
            ),
            // One list for another; and back to none.
            (
                "",
                cfg(
                    " xen-pciback.hide=(0000:01:00.0) quiet",
                    "single  xen-pciback.hide=(0000:01:00.0)",
                ),
                cfg(
                    " xen-pciback.hide=(0000:01:00.0)(0000:02:00.0) quiet",
                    "single  xen-pciback.hide=(0000:01:00.0)(0000:02:00.0)",
                ),
                a,
                b,
            ),
            (
                "",
                cfg(
                    " xen-pciback.hide=(0000:01:00.0) quiet",
                    "single  xen-pciback.hide=(0000:01:00.0)",
                ),
                cfg(" quiet", "single "),
                a,
                None,
            ),
        ] {
            let got = regenerated(before.as_bytes(), old, new, &lit(l)).unwrap();
            assert_eq!(String::from_utf8(got).unwrap(), after, "{old:?} -> {new:?}");
            // The native entry's `linux` line is never touched.
            assert!(after.contains(LINUX_LINE));
        }
    }

    #[test]
    fn what_cannot_be_foreseen_is_said_not_guessed() {
        let a = Some("(0000:01:00.0)");
        for (before, old, new, linux, why) in [
            // A hand edit left the old word twice, or not at all.
            (
                cfg(
                    " xen-pciback.hide=(0000:01:00.0) xen-pciback.hide=(0000:01:00.0)",
                    "single",
                ),
                a,
                None,
                lit(""),
                "does not carry",
            ),
            (cfg(" quiet", "single "), a, None, lit(""), "does not carry"),
            // The line does not start with L as the defaults set it.
            (
                cfg("quiet", "single "),
                None,
                a,
                lit("console=hvc0"),
                "does not start",
            ),
            // No Xen entry at all.
            (
                format!("menuentry 'Debian' {{\n{LINUX_LINE}}}\n"),
                None,
                a,
                lit(""),
                "no dom0",
            ),
        ] {
            let err = regenerated(before.as_bytes(), old, new, &linux).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
        let err = regenerated(cfg(" quiet", "single ").as_bytes(), None, a, &|| {
            Err("line 3".into())
        })
        .unwrap_err();
        assert_eq!(err, "line 3");
        // The same value is the same file, whatever it holds.
        assert_eq!(regenerated(b"\xff", a, a, &lit("")).unwrap(), b"\xff");
    }

    fn files(texts: &[&str]) -> Vec<(String, Vec<u8>)> {
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("f{i}"), t.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn d_is_read_as_l_is_with_its_own_two_names() {
        let debian = "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\nGRUB_CMDLINE_LINUX=\"\"\n";
        for (texts, want) in [
            (vec![debian], Ok("quiet")),
            (
                vec![
                    debian,
                    "GRUB_CMDLINE_LINUX_XEN_REPLACE_DEFAULT=\"quiet loglevel=3\"\n",
                ],
                Ok("quiet loglevel=3"),
            ),
            (
                vec!["GRUB_CMDLINE_LINUX_DEFAULT=\"$GRUB_CMDLINE_LINUX_DEFAULT x\"\n"],
                Err("f0 line 1"),
            ),
        ] {
            let got = linux_default_args(&files(&texts));
            match want {
                Ok(d) => assert_eq!(got.as_deref(), Ok(d), "{texts:?}"),
                Err(at) => assert!(
                    got.as_ref().is_err_and(|e| e.starts_with(at)),
                    "{texts:?}: {got:?}"
                ),
            }
        }
    }

    #[test]
    fn l_is_read_from_literal_assignments_in_the_order_the_generator_sources_them() {
        let debian = "# If you change this file, run 'update-grub'\nGRUB_DEFAULT=0\nGRUB_TIMEOUT=5\n\
                      GRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`\n\
                      GRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\nGRUB_CMDLINE_LINUX=\"\"\n\
                      #GRUB_CMDLINE_LINUX=\"commented\"\n";
        for (texts, want) in [
            (vec![debian], Ok("")),
            (
                vec![
                    debian,
                    "GRUB_CMDLINE_LINUX=\"console=hvc0 iommu=pt\"  # serial\n",
                ],
                Ok("console=hvc0 iommu=pt"),
            ),
            (vec!["GRUB_CMDLINE_LINUX='a b'\n"], Ok("a b")),
            (vec!["GRUB_CMDLINE_LINUX=plain\n"], Ok("plain")),
            (
                vec![
                    "GRUB_CMDLINE_LINUX=\"x\"\n",
                    "GRUB_CMDLINE_LINUX_XEN_REPLACE=\"y\"\n",
                ],
                Ok("y"),
            ),
            (
                vec!["GRUB_CMDLINE_LINUX=\"x\"\nGRUB_CMDLINE_LINUX_XEN_REPLACE=\"\"\n"],
                Ok("x"),
            ),
            // Another variable's value is never needed.
            (
                vec!["GRUB_CMDLINE_LINUX_DEFAULT=\"$GRUB_CMDLINE_LINUX_DEFAULT splash\"\n"],
                Ok(""),
            ),
            (
                vec!["GRUB_CMDLINE_LINUX=\"$GRUB_CMDLINE_LINUX x\"\n"],
                Err("f0 line 1"),
            ),
            (
                vec!["GRUB_CMDLINE_LINUX=`cat /etc/args`\n"],
                Err("f0 line 1"),
            ),
            (
                vec!["GRUB_CMDLINE_XEN=\"$GRUB_CMDLINE_LINUX\"\n"],
                Err("f0 line 1"),
            ),
            (
                vec!["GRUB_TIMEOUT=5\nif true; then GRUB_CMDLINE_LINUX=x; fi\n"],
                Err("f0 line 2"),
            ),
            (
                vec!["if true; then\n  GRUB_CMDLINE_LINUX=x\nfi\n"],
                Err("f0 line 2"),
            ),
            (vec![". /etc/default/other\n"], Err("f0 line 1")),
            (
                vec!["eval \"GRUB_CMD\"\"LINE_LINUX=x\"\n"],
                Err("f0 line 1"),
            ),
            (vec!["export GRUB_CMDLINE_LINUX\n"], Err("f0 line 1")),
            // Debian's grub.d/xen.cfg: an echo and if blocks that set
            // other variables pass.
            (
                vec![
                    "echo \"Including Xen overrides\" >&2\nif [ \"$X\" = \"\" ]; then\n\tX=1\nfi\nGRUB_CMDLINE_LINUX=\"a\"\n",
                ],
                Ok("a"),
            ),
            (
                vec!["GRUB_CMDLINE_LINUX=\"multi\nline\"\n"],
                Err("f0 line 1"),
            ),
        ] {
            let got = linux_args(&files(&texts));
            match want {
                Ok(l) => assert_eq!(got.as_deref(), Ok(l), "{texts:?}"),
                Err(at) => assert!(
                    got.as_ref().is_err_and(|e| e.starts_with(at)),
                    "{texts:?}: {got:?}"
                ),
            }
        }
    }
}
