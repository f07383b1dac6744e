//! A boot line as GRUB and Xen hand it on: GRUB's loader command line,
//! Xen's dom0 command line (the Xen line's ` -- ` part, the 1023-byte
//! cut).

use super::*;

/// Byte range in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Span {
    pub(super) start: usize,
    pub(super) end: usize,
}

/// A boot line (`multiboot2 PATH ARGS`, `module2 [--nounzip] PATH ARGS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootLine {
    /// The words after the image path.
    pub(super) words: Vec<Word>,
    /// Just past the image path (where a first argument goes).
    pub(super) path_end: usize,
    /// A quote is left open at the end of the line.
    pub(super) open_quote: bool,
}

/// Stands for a variable's value in a command line built for checking
/// where ` -- ` falls (a byte no real argument holds).
pub(super) const VAR_MARK: u8 = 0x01;

impl BootLine {
    pub(super) fn new(cmd: &[Word], open_quote: bool) -> Option<BootLine> {
        let mut i = 1;
        while cmd.get(i).is_some_and(|w| {
            w.literal()
                .is_some_and(|l| l.starts_with(b"--") && l.len() > 2)
        }) {
            i += 1;
        }
        let path = cmd.get(i)?;
        Some(BootLine {
            words: cmd[i + 1..].to_vec(),
            path_end: path.end,
            open_quote,
        })
    }

    pub(super) fn vars(&self) -> impl Iterator<Item = &str> {
        self.words.iter().filter_map(Word::first_var)
    }

    /// The line must read exactly: no open quote, no variable.
    pub(super) fn check_exact(&self, entry: &Entry) -> Result<(), GrubError> {
        if self.open_quote {
            return Err(entry.unsupported("a quote is left open".into()));
        }
        match self.vars().next() {
            Some(v) => Err(entry.unsupported(format!("it uses the GRUB variable ${v}"))),
            None => Ok(()),
        }
    }

    /// Variables may appear when the entry itself sets them only to
    /// literal values without `--` (Debian's `${xen_rm_opts}`): where
    /// ` -- ` falls is then known.
    pub(super) fn check_bounded(&self, entry: &Entry) -> Result<(), GrubError> {
        if self.open_quote {
            return Err(entry.unsupported("a quote is left open".into()));
        }
        for var in self.vars() {
            let bounded = entry.locals.get(var).is_some_and(|values| {
                values.iter().all(|v| {
                    v.as_ref()
                        .is_some_and(|v| !v.windows(2).any(|w| w == b"--"))
                })
            });
            if !bounded {
                return Err(entry.unsupported(format!("it uses the GRUB variable ${var}")));
            }
        }
        Ok(())
    }

    /// The words' values with each variable replaced by the longest of
    /// the literals the entry sets it to, when none of those literals can
    /// change the hide list: split as the kernel splits them, none names
    /// `xen-pciback.hide` or `pciback.hide` (either spelling), none is a
    /// bare `--`, and none holds a quote. That is Debian's
    /// `${xen_rm_opts}` (empty or `no-real-mode edd=off`), which lands
    /// among dom0's arguments when `GRUB_CMDLINE_XEN[_DEFAULT]` holds
    /// ` -- `. A variable standing alone in a word expands to as many
    /// words as its value has (none when empty), as GRUB splits an
    /// unquoted expansion. `None` when some variable may touch the hide
    /// (or the entry does not bound it: see [`BootLine::check_bounded`]).
    pub(super) fn values_hide_neutral(&self, entry: &Entry) -> Option<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        for word in &self.words {
            let mut value = Vec::new();
            for part in &word.parts {
                match part {
                    Part::Lit(b) => value.extend_from_slice(b),
                    Part::Var(v) => value.extend_from_slice(hide_neutral_value(entry, v)?),
                }
            }
            if matches!(word.parts.as_slice(), [Part::Var(_)]) {
                out.extend(
                    value
                        .split(|b| *b == b' ' || *b == b'\t')
                        .filter(|w| !w.is_empty())
                        .map(<[u8]>::to_vec),
                );
            } else {
                out.push(value);
            }
        }
        Some(out)
    }

    /// The words' values, a variable standing as [`VAR_MARK`].
    pub(super) fn values(&self) -> Vec<Vec<u8>> {
        self.words
            .iter()
            .map(|w| {
                let mut out = Vec::new();
                for part in &w.parts {
                    match part {
                        Part::Lit(b) => out.extend_from_slice(b),
                        Part::Var(_) => out.push(VAR_MARK),
                    }
                }
                out
            })
            .collect()
    }
}

/// The longest literal `entry` sets `var` to, when every literal it sets
/// is neutral for the hide list (see [`BootLine::values_hide_neutral`]).
fn hide_neutral_value<'e>(entry: &'e Entry, var: &str) -> Option<&'e [u8]> {
    let values = entry.locals.get(var)?;
    let mut longest: Option<&[u8]> = None;
    for value in values {
        let value = value.as_deref()?;
        if value.contains(&b'"') {
            return None;
        }
        for arg in kernel::args(value) {
            if kernel::is_end_of_params(&arg)
                || kernel::param_eq(arg.name, HIDE_KEY.as_bytes())
                || kernel::param_eq(arg.name, LEGACY_KEY.as_bytes())
            {
                return None;
            }
        }
        if longest.is_none_or(|l| value.len() > l.len()) {
            longest = Some(value);
        }
    }
    longest
}

/// `grub_create_loader_cmdline`: words joined by one space; a word holding
/// a space is wrapped in double quotes; `\`, `'` and `"` get a backslash,
/// except a `\xHH` sequence, which passes as it is.
pub fn loader_cmdline(words: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for (n, word) in words.iter().enumerate() {
        if n > 0 {
            out.push(b' ');
        }
        let space = word.contains(&b' ');
        if space {
            out.push(b'"');
        }
        let mut i = 0;
        while i < word.len() {
            let c = word[i];
            if c == b'\\'
                && word.get(i + 1) == Some(&b'x')
                && word.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
                && word.get(i + 3).is_some_and(u8::is_ascii_hexdigit)
            {
                out.extend_from_slice(&word[i..i + 4]);
                i += 4;
                continue;
            }
            if matches!(c, b'\\' | b'\'' | b'"') {
                out.push(b'\\');
            }
            out.push(c);
            i += 1;
        }
        if space {
            out.push(b'"');
        }
    }
    out
}

/// The dom0 command line as the kernel receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dom0Cmdline {
    /// The bytes the kernel gets (cut to [`XEN_DOM0_CMDLINE_MAX`]).
    pub bytes: Vec<u8>,
    /// The length before Xen's cut.
    pub full_len: usize,
}

/// Xen's dom0 command line: the dom0 module's line without leading
/// spaces, then the Xen line's text after its first ` -- ` (keeping one
/// space), all cut to 1023 bytes.
pub fn xen_dom0_cmdline(xen_line: &[u8], dom0_line: &[u8]) -> Dom0Cmdline {
    let start = dom0_line.iter().take_while(|b| **b == b' ').count();
    let mut full = dom0_line[start..].to_vec();
    if let Some(at) = xen_line.windows(4).position(|w| w == b" -- ") {
        let mut k = at + 3;
        while xen_line.get(k + 1) == Some(&b' ') {
            k += 1;
        }
        full.extend_from_slice(&xen_line[k..]);
    }
    let full_len = full.len();
    full.truncate(XEN_DOM0_CMDLINE_MAX);
    Dom0Cmdline {
        bytes: full,
        full_len,
    }
}
