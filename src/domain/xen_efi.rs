//! `xen.cfg`, the configuration file of Xen's own EFI loader (`xen.efi`
//! started by the firmware, no GRUB): which section Xen boots, the dom0
//! command line it takes from that section's `kernel=` line, and an edit
//! that changes only those dom0 arguments.
//!
//! The rules follow upstream Xen, read in `xen/common/efi/boot.c`
//! (`pre_parse`, `get_value`, `split_string`, `efi_start`),
//! `xen/arch/x86/efi/efi-boot.h` (`efi_arch_handle_module`) and
//! `docs/misc/efi.pandoc`. In short:
//!
//! - `pre_parse` blanks the file in place: every control byte (CR, LF,
//!   TAB, NUL, DEL, ...) ends a line; whitespace at the start of a line is
//!   dropped; `#` anywhere, or `;` as the first non-blank byte, starts a
//!   comment running to the end of the line. What survives on a line is an
//!   *entry*. A tab therefore splits a line into two entries. When the last
//!   byte of the file survives (no line end after the last entry) Xen warns
//!   that the last line is ignored; this module refuses such a file.
//! - `get_value(section, key)` looks for an entry `key=value` (no blanks
//!   before `=`, case-sensitive) only inside the *first* section whose
//!   header entry starts with `[section]` (bytes after `]` are ignored); it
//!   stops at the next header, so a later section of the same name is never
//!   read, and within the section the *first* matching key wins. Blanks
//!   after `=` are skipped; trailing blanks stay part of the value. Text
//!   before the first header belongs to no section.
//! - `efi_start` takes the section from `default=` of the first `[global]`
//!   section. Without `default=` (or with an empty one) section headers are
//!   ignored and every key is the first instance anywhere in the file. When
//!   the chosen section has no `kernel=`, Xen follows `[global]` `chain=`
//!   (another file) or stops with "No Dom0 kernel image specified."
//! - `split_string` cuts the `kernel=` value at its first blank: before it
//!   the file name, after that one blank the dom0 options, handed on as
//!   they are (no blank at all: no options). On x86,
//!   `efi_arch_handle_module` puts the module string together as
//!   `<file name> <options>`; the file name is the image name, not part of
//!   the dom0 arguments.
//! - Xen's own command line is the booted section's `options=` value
//!   (`efi_arch_handle_cmdline` in `xen/arch/x86/efi/efi-boot.h`, called
//!   from `efi_start` with `get_value(section, "options")`; options given
//!   to `xen.efi` itself on the firmware's command line would replace it,
//!   which this module does not see). `__start_xen` (`xen/arch/x86/setup.c`)
//!   cuts that line at its first ` -- `: what follows (*kextra*, further
//!   leading blanks dropped) is appended to dom0's command line after
//!   `kernel=`'s arguments, with one blank between. So dom0's kernel reads
//!   `<kernel= args> <kextra>` ([`dom0_cmdline`]), and a parameter in
//!   kextra overrides the same parameter in `kernel=` (the kernel's last
//!   occurrence wins).

use std::ops::Range;

/// What keeps a `xen.cfg` from being read or edited the way Xen reads it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XenEfiError {
    /// The file does not end with a line end, so Xen ignores its last line
    /// (`pre_parse` prints "No newline at end of config file").
    #[error("the file does not end with a newline; Xen would ignore its last line")]
    UnterminatedLastLine,
    /// `[global]` `default=` names a section that no header opens.
    #[error("default section [{0}] named in [global] does not exist")]
    MissingSection(String),
    /// The booted section (or, without `default=`, the whole file) has no
    /// `kernel=` entry; Xen stops with "No Dom0 kernel image specified."
    #[error("no kernel= line in {0}; Xen would not boot dom0")]
    MissingKernel(String),
    /// The booted section has no `kernel=` but `[global]` has `chain=`, so
    /// Xen reads another configuration file that is not at hand here.
    #[error("no kernel= line in {0}; Xen would follow chain= to another file")]
    Chained(String),
    /// The `kernel=` value is empty, so there is no dom0 image name.
    #[error("kernel= line of {0} names no file")]
    EmptyKernelFile(String),
    /// The new dom0 arguments hold a byte Xen would not read back as part of
    /// the same `kernel=` value.
    #[error("dom0 arguments hold byte 0x{byte:02x} at {at}: {why}")]
    BadArgs {
        /// The offending byte.
        byte: u8,
        /// Its offset in the arguments.
        at: usize,
        /// Why Xen would misread it.
        why: &'static str,
    },
}

/// The section Xen boots and where its `kernel=` entry lies, as byte
/// ranges into the text given to [`boot_section`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionRef {
    /// The section name from `[global]` `default=`; `None` when there is no
    /// (or an empty) `default=` and Xen reads the whole file ignoring
    /// headers.
    pub name: Option<Vec<u8>>,
    /// The header entry `[name]...` (`None` without `default=`).
    pub header: Option<Range<usize>>,
    /// The bytes Xen searches for the section's keys: from the end of the
    /// header entry to the start of the next header (or the end of the file);
    /// the whole file without `default=`.
    pub body: Range<usize>,
    /// The `kernel=...` entry (up to the line end or a `#` comment).
    pub kernel_entry: Range<usize>,
    /// The dom0 image file name in the `kernel=` value.
    pub kernel_file: Range<usize>,
    /// The dom0 arguments after the blank following the file name; `None`
    /// when the value has no blank (Xen passes no options).
    pub args: Option<Range<usize>>,
}

impl SectionRef {
    fn label(&self) -> String {
        section_label(self.name.as_deref())
    }
}

fn section_label(name: Option<&[u8]>) -> String {
    match name {
        Some(n) => format!("section [{}]", String::from_utf8_lossy(n)),
        None => "xen.cfg (no default= in [global])".to_owned(),
    }
}

/// `iscntrl` of Xen's `ctype` table: C0 controls and DEL.
fn is_cntrl(b: u8) -> bool {
    b < 0x20 || b == 0x7f
}

/// `isspace` of Xen's `ctype` table (Linux-derived): blank, the C0 white
/// space controls, and 0xa0.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | 0xa0)
}

/// The entries Xen's `pre_parse` leaves: maximal runs of bytes it does not
/// blank. Errors when the last byte of the file survives.
fn entries(text: &[u8]) -> Result<Vec<Range<usize>>, XenEfiError> {
    let mut out = Vec::new();
    let mut line_start = true;
    let mut in_comment = false;
    let mut run: Option<usize> = None;
    for (i, &b) in text.iter().enumerate() {
        let kept = if is_cntrl(b) {
            in_comment = false;
            line_start = true;
            false
        } else if in_comment || (line_start && is_space(b)) {
            false
        } else if b == b'#' || (line_start && b == b';') {
            in_comment = true;
            false
        } else {
            line_start = false;
            true
        };
        match (kept, run) {
            (true, None) => run = Some(i),
            (false, Some(s)) => {
                out.push(s..i);
                run = None;
            }
            _ => {}
        }
    }
    if run.is_some() {
        return Err(XenEfiError::UnterminatedLastLine);
    }
    Ok(out)
}

/// A value found by [`get_value`]: its entry index and where the value
/// starts (after `key=` and leading blanks).
#[derive(Debug, Clone, Copy)]
struct Found {
    entry: usize,
    value_start: usize,
}

/// Xen's `get_value` over pre-parsed entries. `section` `None` or empty:
/// headers are skipped and the whole file searched.
fn get_value(
    text: &[u8],
    ents: &[Range<usize>],
    section: Option<&[u8]>,
    key: &[u8],
) -> Option<Found> {
    let section = section.filter(|s| !s.is_empty());
    let mut matching = section.is_none();
    for (idx, r) in ents.iter().enumerate() {
        let e = text.get(r.clone())?;
        if e.first() == Some(&b'[') {
            let Some(name) = section else { continue };
            if matching {
                return None;
            }
            matching = header_matches(e, name);
            continue;
        }
        if matching && e.starts_with(key) && e.get(key.len()) == Some(&b'=') {
            let mut v = r.start + key.len() + 1;
            while v < r.end && text.get(v).is_some_and(|&b| is_space(b)) {
                v += 1;
            }
            return Some(Found {
                entry: idx,
                value_start: v,
            });
        }
    }
    None
}

/// Whether a header entry `[...` opens the section `name` (Xen compares
/// the name and wants `]` right after it).
fn header_matches(entry: &[u8], name: &[u8]) -> bool {
    entry.get(1..).is_some_and(|rest| rest.starts_with(name))
        && entry.get(1 + name.len()) == Some(&b']')
}

/// The section Xen boots when no section is given on xen.efi's command
/// line, with the byte ranges of its header, body and `kernel=` entry.
///
/// Follows `efi_start` in `xen/common/efi/boot.c`: `default=` from the
/// first `[global]`, then `kernel=` from the first section of that name
/// (see the module documentation for the no-`default=` case).
pub fn boot_section(text: &[u8]) -> Result<SectionRef, XenEfiError> {
    let ents = entries(text)?;
    let entry_at = |i: usize| ents.get(i).cloned().unwrap_or(0..0);
    let name: Option<Vec<u8>> = get_value(text, &ents, Some(b"global"), b"default")
        .map(|f| {
            let r = entry_at(f.entry);
            text.get(f.value_start..r.end).unwrap_or_default().to_vec()
        })
        .filter(|n| !n.is_empty());

    let Some(found) = get_value(text, &ents, name.as_deref(), b"kernel") else {
        let label = section_label(name.as_deref());
        if get_value(text, &ents, Some(b"global"), b"chain").is_some() {
            return Err(XenEfiError::Chained(label));
        }
        return Err(match &name {
            Some(n) if header_index(text, &ents, n).is_none() => {
                XenEfiError::MissingSection(String::from_utf8_lossy(n).into_owned())
            }
            _ => XenEfiError::MissingKernel(label),
        });
    };

    let (header, body) = match &name {
        None => (None, 0..text.len()),
        Some(n) => {
            let hi = header_index(text, &ents, n).unwrap_or(0);
            let h = entry_at(hi);
            let end = ents
                .iter()
                .skip(hi + 1)
                .find(|r| text.get(r.start) == Some(&b'['))
                .map_or(text.len(), |r| r.start);
            (Some(h.clone()), h.end..end)
        }
    };

    let kernel_entry = entry_at(found.entry);
    let value = found.value_start..kernel_entry.end;
    let file_end = (value.start..value.end)
        .find(|&i| text.get(i).is_some_and(|&b| is_space(b)))
        .unwrap_or(value.end);
    let sref = SectionRef {
        name,
        header,
        body,
        kernel_entry: kernel_entry.clone(),
        kernel_file: value.start..file_end,
        args: (file_end < value.end).then(|| file_end + 1..value.end),
    };
    if sref.kernel_file.is_empty() {
        return Err(XenEfiError::EmptyKernelFile(sref.label()));
    }
    Ok(sref)
}

/// Index of the first header entry opening section `name`.
fn header_index(text: &[u8], ents: &[Range<usize>], name: &[u8]) -> Option<usize> {
    ents.iter().position(|r| {
        text.get(r.clone())
            .is_some_and(|e| e.first() == Some(&b'[') && header_matches(e, name))
    })
}

/// The dom0 command line Xen takes from the booted section's `kernel=`
/// entry: the bytes after the first blank following the file name, up to
/// the line end or a `#` comment, exactly as `split_string` leaves them
/// (further leading and trailing blanks kept). Empty when the value is only
/// a file name. The file name itself is not included: on x86
/// `efi_arch_handle_module` puts it in front (`<file> <args>`) as the
/// image name, and it is not a dom0 argument.
pub fn dom0_args(text: &[u8]) -> Result<Vec<u8>, XenEfiError> {
    let s = boot_section(text)?;
    Ok(s.args
        .and_then(|r| text.get(r))
        .unwrap_or_default()
        .to_vec())
}

/// The dom0 arguments Xen takes from the booted section's `options=`:
/// the bytes after its first ` -- ` (further leading blanks skipped, as
/// `__start_xen` skips all but one), up to the end of the entry; `None`
/// when `options=` is absent or has no ` -- `.
pub fn kextra(text: &[u8]) -> Result<Option<Range<usize>>, XenEfiError> {
    Ok(kextra_at(text)?.map(|(_, rest)| rest))
}

/// Where ` -- ` starts in the booted section's `options=` value, and the
/// kextra range after it.
fn kextra_at(text: &[u8]) -> Result<Option<(usize, Range<usize>)>, XenEfiError> {
    let Some(Options {
        value,
        dash: Some(dash),
    }) = options_at(text)?
    else {
        return Ok(None);
    };
    let mut rest = dash + 4;
    while rest < value.end && text.get(rest) == Some(&b' ') {
        rest += 1;
    }
    Ok(Some((dash, rest..value.end)))
}

/// The booted section's `options=` value: where it is, and where its
/// first ` -- ` starts, if it has one.
struct Options {
    value: Range<usize>,
    dash: Option<usize>,
}

/// The booted section's [`Options`]; `None` without `options=`.
fn options_at(text: &[u8]) -> Result<Option<Options>, XenEfiError> {
    let s = boot_section(text)?;
    let ents = entries(text)?;
    let Some(found) = get_value(text, &ents, s.name.as_deref(), b"options") else {
        return Ok(None);
    };
    let end = ents.get(found.entry).map_or(found.value_start, |r| r.end);
    let value = text.get(found.value_start..end).unwrap_or_default();
    let dash = value
        .windows(4)
        .position(|w| w == b" -- ")
        .map(|d| found.value_start + d);
    Ok(Some(Options {
        value: found.value_start..end,
        dash,
    }))
}

/// Xen's own arguments in the booted section's `options=`: its value up
/// to a ` -- ` (the kextra after it is dom0's); `None` without
/// `options=`.
pub fn xen_options(text: &[u8]) -> Result<Option<Range<usize>>, XenEfiError> {
    Ok(options_at(text)?.map(|o| o.value.start..o.dash.unwrap_or(o.value.end)))
}

/// A new `xen.cfg` whose booted section gives Xen `options` as its own
/// arguments (a kextra after ` -- ` kept); without an `options=` entry
/// one is added on the line after `kernel=`. Every other byte is kept.
pub fn replace_xen_options(text: &[u8], options: &[u8]) -> Result<Vec<u8>, XenEfiError> {
    check_args(options)?;
    if let Some(old) = xen_options(text)? {
        let mut out = Vec::with_capacity(text.len() + options.len());
        out.extend_from_slice(text.get(..old.start).unwrap_or_default());
        out.extend_from_slice(options);
        out.extend_from_slice(text.get(old.end..).unwrap_or_default());
        return Ok(out);
    }
    let s = boot_section(text)?;
    let line_end = text
        .get(s.kernel_entry.end..)
        .and_then(|t| t.iter().position(|&b| b == b'\n'))
        .map(|n| s.kernel_entry.end + n + 1);
    let mut out = Vec::with_capacity(text.len() + options.len() + 10);
    match line_end {
        Some(at) => {
            out.extend_from_slice(text.get(..at).unwrap_or_default());
            out.extend_from_slice(b"options=");
            out.extend_from_slice(options);
            out.push(b'\n');
            out.extend_from_slice(text.get(at..).unwrap_or_default());
        }
        None => {
            out.extend_from_slice(text);
            out.extend_from_slice(b"\noptions=");
            out.extend_from_slice(options);
            out.push(b'\n');
        }
    }
    Ok(out)
}

/// The command line dom0's kernel gets: the `kernel=` arguments
/// ([`dom0_args`]), then, when the booted section's `options=` holds
/// ` -- `, one blank and the kextra ([`kextra`]), as `create_dom0`
/// appends it.
pub fn dom0_cmdline(text: &[u8]) -> Result<Vec<u8>, XenEfiError> {
    let mut line = dom0_args(text)?;
    if let Some(rest) = kextra(text)? {
        line.push(b' ');
        line.extend_from_slice(text.get(rest).unwrap_or_default());
    }
    Ok(line)
}

/// A new `xen.cfg` in which the kextra of the booted section's `options=`
/// is `rest`; when `rest` is only blanks, the ` -- ` goes too (Xen's own
/// options stay). Every other byte is kept. The text must have a kextra.
pub fn replace_kextra(text: &[u8], rest: &[u8]) -> Result<Vec<u8>, XenEfiError> {
    check_args(rest)?;
    let Some((dash, old)) = kextra_at(text)? else {
        return Ok(text.to_vec());
    };
    if text.get(old.clone()) == Some(rest) {
        return Ok(text.to_vec());
    }
    let from = if rest.iter().all(|&b| is_space(b)) {
        dash
    } else {
        old.start
    };
    let mut out = Vec::with_capacity(text.len() + rest.len());
    out.extend_from_slice(text.get(..from).unwrap_or_default());
    if from == old.start {
        out.extend_from_slice(rest);
    }
    out.extend_from_slice(text.get(old.end..).unwrap_or_default());
    Ok(out)
}

/// The initramfs Xen's EFI loader loads with the booted section: the
/// `ramdisk=` value of that section (`None` without one, or an empty one),
/// a file name relative to the loader's directory as `read_file` opens it.
/// Trailing blanks are dropped (a FAT name cannot end in one).
pub fn ramdisk(text: &[u8]) -> Result<Option<Vec<u8>>, XenEfiError> {
    let s = boot_section(text)?;
    let ents = entries(text)?;
    Ok(get_value(text, &ents, s.name.as_deref(), b"ramdisk")
        .and_then(|f| {
            let end = ents.get(f.entry)?.end;
            let mut value = text.get(f.value_start..end)?;
            while let [rest @ .., last] = value
                && is_space(*last)
            {
                value = rest;
            }
            Some(value.to_vec())
        })
        .filter(|v| !v.is_empty()))
}

/// The dom0 kernel file of the booted section's `kernel=` entry, as named
/// there (relative to the loader's directory).
pub fn kernel_file(text: &[u8]) -> Result<Vec<u8>, XenEfiError> {
    let s = boot_section(text)?;
    Ok(text.get(s.kernel_file).unwrap_or_default().to_vec())
}

/// Check that Xen would read `args` back as the whole rest of the
/// `kernel=` value.
fn check_args(args: &[u8]) -> Result<(), XenEfiError> {
    for (at, &byte) in args.iter().enumerate() {
        let why = if byte == 0 {
            "NUL ends the value"
        } else if byte == b'\n' || byte == b'\r' {
            "a line end ends the kernel= line"
        } else if is_cntrl(byte) {
            "a control byte (e.g. TAB) ends the entry for Xen's pre_parse"
        } else if byte == b'#' {
            "'#' starts a comment in xen.cfg"
        } else if byte >= 0x80 {
            "xen.cfg must be ASCII (docs/misc/efi.pandoc)"
        } else {
            continue;
        };
        return Err(XenEfiError::BadArgs { byte, at, why });
    }
    Ok(())
}

/// A new `xen.cfg` in which only the dom0 arguments of the booted
/// section's `kernel=` entry are `args`; every other byte (the file name,
/// comments, other sections, line ends) is kept. Empty `args` leave the
/// file name alone on the line; otherwise the file name is followed by one
/// blank and `args`. Giving the current arguments returns the text
/// unchanged.
///
/// Refuses arguments Xen would read differently (control bytes, `#`,
/// non-ASCII) and a file whose booted section Xen cannot find or that has
/// no `kernel=` entry.
pub fn replace_dom0_args(text: &[u8], args: &[u8]) -> Result<Vec<u8>, XenEfiError> {
    check_args(args)?;
    let s = boot_section(text)?;
    let old = s.args.clone().and_then(|r| text.get(r)).unwrap_or_default();
    if old == args {
        return Ok(text.to_vec());
    }
    let head = text.get(..s.kernel_file.end).unwrap_or_default();
    let tail = text.get(s.kernel_entry.end..).unwrap_or_default();
    let mut out = Vec::with_capacity(text.len() + args.len() + 1);
    out.extend_from_slice(head);
    if !args.is_empty() {
        out.push(b' ');
        out.extend_from_slice(args);
    }
    out.extend_from_slice(tail);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &[u8] = include_bytes!("../../tests/fixtures/xen-efi/xen.cfg");
    const HIDE: &[u8] = b"xen-pciback.hide=(0000:01:00.0)(0000:01:00.1)";

    fn lines(t: &[u8]) -> Vec<&[u8]> {
        t.split_inclusive(|&b| b == b'\n').collect()
    }

    #[test]
    fn fixture_boots_debian_xen_with_hide() {
        let s = boot_section(FIXTURE).unwrap();
        assert_eq!(s.name.as_deref(), Some(&b"debian-xen"[..]));
        assert_eq!(&FIXTURE[s.header.clone().unwrap()], b"[debian-xen]");
        assert_eq!(&FIXTURE[s.kernel_file.clone()], b"vmlinuz-6.1.0-28-amd64");
        let args = dom0_args(FIXTURE).unwrap();
        assert!(args.starts_with(b"root=UUID=3f1c2a9e"));
        assert!(args.ends_with(HIDE));
        let body = &FIXTURE[s.body.clone()];
        assert!(body.windows(7).any(|w| w == b"ramdisk"));
        assert!(!body.windows(8).any(|w| w == b"fallback"));
    }

    #[test]
    fn ramdisk_of_the_booted_section() {
        // (input, kernel file, ramdisk)
        type Case<'a> = (&'a [u8], &'a [u8], Option<&'a [u8]>);
        let cases: &[Case] = &[
            (
                FIXTURE,
                b"vmlinuz-6.1.0-28-amd64",
                Some(b"initrd.img-6.1.0-28-amd64"),
            ),
            (b"[global]\ndefault=a\n[a]\nkernel=k x\n", b"k", None),
            (
                b"[global]\ndefault=a\n[a]\nkernel=k\nramdisk=\n",
                b"k",
                None,
            ),
            (
                b"[global]\ndefault=a\n[b]\nramdisk=other\n[a]\nkernel=k\nramdisk=mine  \n",
                b"k",
                Some(b"mine"),
            ),
            (
                b"[global]\ndefault=a\n[a]\nkernel=k\n[b]\nramdisk=not-a\n",
                b"k",
                None,
            ),
            (
                b"ramdisk=first # note\n[x]\nkernel=k\nramdisk=second\n",
                b"k",
                Some(b"first"),
            ),
            (
                b"[global]\ndefault=a\n[a]\nkernel=k\nramdisk=\\EFI\\xen\\initrd.img\n",
                b"k",
                Some(b"\\EFI\\xen\\initrd.img"),
            ),
        ];
        for (text, kernel, want) in cases {
            assert_eq!(
                kernel_file(text).unwrap(),
                *kernel,
                "{}",
                String::from_utf8_lossy(text)
            );
            assert_eq!(
                ramdisk(text).unwrap().as_deref(),
                *want,
                "{}",
                String::from_utf8_lossy(text)
            );
        }
        assert_eq!(
            ramdisk(b"[global]\ndefault=nope\n[a]\nkernel=k\n"),
            Err(XenEfiError::MissingSection("nope".into()))
        );
    }

    #[test]
    fn table() {
        use XenEfiError as E;
        // (name, input, expected dom0 args or error)
        type Case<'a> = (&'a str, &'a [u8], Result<&'a [u8], E>);
        let cases: &[Case] = &[
            (
                "no default: first kernel= anywhere, headers ignored",
                b"[a]\nkernel=ka x=1\n[b]\nkernel=kb x=2\n",
                Ok(b"x=1"),
            ),
            (
                "no default: text before first section counts",
                b"kernel=k0 early\n[global]\n[a]\nkernel=ka x=1\n",
                Ok(b"early"),
            ),
            (
                "empty default= behaves like none",
                b"[global]\ndefault=\n[a]\nkernel=ka x=1\n",
                Ok(b"x=1"),
            ),
            (
                "with default, text before first section is ignored",
                b"kernel=k0 early\n[global]\ndefault=a\n[a]\nkernel=ka x=1\n",
                Ok(b"x=1"),
            ),
            (
                "default names a missing section",
                b"[global]\ndefault=nope\n[a]\nkernel=ka x=1\n",
                Err(E::MissingSection("nope".into())),
            ),
            (
                "default names a missing section, chain= present",
                b"[global]\ndefault=nope\nchain=other.cfg\n[a]\nkernel=ka\n",
                Err(E::Chained("section [nope]".into())),
            ),
            (
                "section without kernel=",
                b"[global]\ndefault=a\n[a]\noptions=x\n[b]\nkernel=kb y\n",
                Err(E::MissingKernel("section [a]".into())),
            ),
            (
                "duplicate kernel= in a section: first wins",
                b"[global]\ndefault=a\n[a]\nkernel=k first\nkernel=k second\n",
                Ok(b"first"),
            ),
            (
                "duplicate default=: first wins",
                b"[global]\ndefault=a\ndefault=b\n[a]\nkernel=k A\n[b]\nkernel=k B\n",
                Ok(b"A"),
            ),
            (
                "duplicate section: only the first is read",
                b"[global]\ndefault=a\n[a]\noptions=x\n[a]\nkernel=k late\n",
                Err(E::MissingKernel("section [a]".into())),
            ),
            (
                "default only read from [global]",
                b"[x]\ndefault=b\n[global]\ndefault=a\n[a]\nkernel=k A\n[b]\nkernel=k B\n",
                Ok(b"A"),
            ),
            (
                "section names are case-sensitive and need ']' right after",
                b"[global]\ndefault=a\n[A]\nkernel=k up\n[ab]\nkernel=k ab\n[a] x\nkernel=k ok\n",
                Ok(b"ok"),
            ),
            (
                "trailing blank in default= keeps it from matching",
                b"[global]\ndefault=a \n[a]\nkernel=k A\n",
                Err(E::MissingSection("a ".into())),
            ),
            (
                "comments, blank lines, indentation and CRLF",
                b"# top\r\n[global]\r\n  ; note\r\n\r\n  default=a # c\r\n[a]\r\n\
                  #kernel=k no\r\n   kernel=  k  two  spaces # c\r\n",
                Err(E::MissingSection("a ".into())),
            ),
            (
                "CRLF, comment after args, blanks after = skipped",
                b"[global]\r\ndefault=a\r\n[a]\r\n#kernel=k no\r\n  kernel=  k x=1 y # c\r\n",
                Ok(b"x=1 y "),
            ),
            (
                "key needs '=' right after it",
                b"[global]\ndefault=a\n[a]\nkernel =k no\nkernels=k no\nkernel=k yes\n",
                Ok(b"yes"),
            ),
            (
                "tab ends the entry",
                b"[global]\ndefault=a\n[a]\nkernel=k ro\tquiet\n",
                Ok(b"ro"),
            ),
            (
                "second blank kept in args",
                b"[global]\ndefault=a\n[a]\nkernel=k  ro\n",
                Ok(b" ro"),
            ),
            (
                "file name only",
                b"[global]\ndefault=a\n[a]\nkernel=vmlinuz\n",
                Ok(b""),
            ),
            (
                "empty kernel=",
                b"[global]\ndefault=a\n[a]\nkernel=\n",
                Err(E::EmptyKernelFile("section [a]".into())),
            ),
            (
                "no newline at end",
                b"[global]\ndefault=a\n[a]\nkernel=k ro",
                Err(E::UnterminatedLastLine),
            ),
            (
                "no newline at end but last line is a comment",
                b"[global]\ndefault=a\n[a]\nkernel=k ro\n# end",
                Ok(b"ro"),
            ),
            (
                "no kernel anywhere without default",
                b"[a]\noptions=x\n",
                Err(E::MissingKernel("xen.cfg (no default= in [global])".into())),
            ),
        ];
        for (name, input, want) in cases {
            let got = dom0_args(input);
            match want {
                Ok(w) => assert_eq!(got.as_deref(), Ok(*w), "{name}"),
                Err(e) => assert_eq!(got.as_ref(), Err(e), "{name}"),
            }
        }
    }

    #[test]
    fn options_kextra_reaches_dom0() {
        // (name, input, dom0's command line)
        let cases: &[(&str, &[u8], &[u8])] = &[
            (
                "fixture a4: the hide after ` -- ` in options= reaches dom0",
                include_bytes!("../../tests/fixtures/turn3/a4-xen-efi-options-kextra.cfg"),
                b"root=LABEL=root-pcipass ro quiet xen-pciback.hide=(0000:01:00.0)",
            ),
            (
                "blanks after ` -- ` all but one dropped",
                b"[global]\ndefault=a\n[a]\noptions=x  --   y=1 z\nkernel=k ro\n",
                b"ro y=1 z",
            ),
            (
                "`--y` is no separator; a trailing ` -- ` gives an empty kextra",
                b"[global]\ndefault=a\n[a]\noptions=x --y=1 -- \nkernel=k ro\n",
                b"ro ",
            ),
            (
                "a leading `--` is no ` -- `",
                b"[global]\ndefault=a\n[a]\noptions=-- y=1\nkernel=k ro\n",
                b"ro",
            ),
            (
                "options= of another section is not read",
                b"[global]\ndefault=a\n[b]\noptions=x -- y=1\n[a]\nkernel=k ro\n",
                b"ro",
            ),
            (
                "comment ends the kextra; no kernel= args",
                b"[global]\ndefault=a\n[a]\noptions=x -- y=1 # c\nkernel=k\n",
                b" y=1 ",
            ),
        ];
        for (name, input, want) in cases {
            assert_eq!(
                dom0_cmdline(input).as_deref(),
                Ok(*want),
                "{name}: {}",
                String::from_utf8_lossy(&dom0_cmdline(input).unwrap_or_default())
            );
        }
        let t = b"[global]\ndefault=a\n[a]\noptions=x -- y=1 # c\nkernel=k\n";
        assert_eq!(
            replace_kextra(t, b"z=2").unwrap(),
            b"[global]\ndefault=a\n[a]\noptions=x -- z=2# c\nkernel=k\n"
        );
        assert_eq!(
            replace_kextra(t, b"").unwrap(),
            b"[global]\ndefault=a\n[a]\noptions=x# c\nkernel=k\n"
        );
    }

    #[test]
    fn round_trip_same_args_is_identical() {
        let inputs: &[&[u8]] = &[
            FIXTURE,
            b"[global]\r\ndefault=a\r\n[a]\r\n  kernel=  k x=1 y # c\r\n",
            b"[global]\ndefault=a\n[a]\nkernel=vmlinuz\n",
            b"[global]\ndefault=a\n[a]\nkernel=vmlinuz \n",
        ];
        for t in inputs {
            let a = dom0_args(t).unwrap();
            assert_eq!(replace_dom0_args(t, &a).unwrap(), *t);
        }
    }

    #[test]
    fn replace_changes_only_the_kernel_line() {
        let new = b"root=/dev/sda1 ro xen-pciback.hide=(0000:02:00.0)";
        let out = replace_dom0_args(FIXTURE, new).unwrap();
        assert_eq!(dom0_args(&out).unwrap(), new);
        let (a, b) = (lines(FIXTURE), lines(&out));
        assert_eq!(a.len(), b.len());
        let s = boot_section(FIXTURE).unwrap();
        let kline = FIXTURE[..s.kernel_entry.start]
            .iter()
            .filter(|&&c| c == b'\n')
            .count();
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            if i == kline {
                assert_eq!(*y, b"kernel=vmlinuz-6.1.0-28-amd64 root=/dev/sda1 ro xen-pciback.hide=(0000:02:00.0)\n");
            } else {
                assert_eq!(x, y, "line {i}");
            }
        }
        // The fallback section still has its own arguments.
        let fallback =
            b"kernel=vmlinuz-6.1.0-27-amd64 root=UUID=3f1c2a9e-5b7d-4e0a-9c61-2d8f4b7e1a53 ro\n";
        assert!(b.contains(&&fallback[..]));
    }

    #[test]
    fn replace_keeps_crlf_and_comment() {
        let t = b"[global]\r\ndefault=a\r\n[a]\r\n  kernel=  k x=1 # c\r\n[b]\r\nkernel=k z\r\n";
        let out = replace_dom0_args(t, b"y=2").unwrap();
        assert_eq!(
            out,
            b"[global]\r\ndefault=a\r\n[a]\r\n  kernel=  k y=2# c\r\n[b]\r\nkernel=k z\r\n"
        );
    }

    #[test]
    fn file_name_only_gets_space_and_args() {
        let t = b"[global]\ndefault=a\n[a]\nkernel=vmlinuz\nramdisk=i\n";
        let out = replace_dom0_args(t, b"ro quiet").unwrap();
        assert_eq!(
            out,
            b"[global]\ndefault=a\n[a]\nkernel=vmlinuz ro quiet\nramdisk=i\n"
        );
        assert_eq!(replace_dom0_args(&out, b"").unwrap(), t);
    }

    #[test]
    fn replace_refuses() {
        use XenEfiError as E;
        for bad in [
            &b"a\nb"[..],
            b"a\rb",
            b"a\0b",
            b"a\tb",
            b"a#b",
            "a\u{e9}".as_bytes(),
        ] {
            assert!(
                matches!(replace_dom0_args(FIXTURE, bad), Err(E::BadArgs { .. })),
                "{bad:?}"
            );
        }
        assert_eq!(
            replace_dom0_args(b"[global]\ndefault=a\n[a]\noptions=x\n", b"ro"),
            Err(E::MissingKernel("section [a]".into()))
        );
        assert_eq!(
            replace_dom0_args(b"[global]\ndefault=zz\n[a]\nkernel=k\n", b"ro"),
            Err(E::MissingSection("zz".into()))
        );
    }
}
