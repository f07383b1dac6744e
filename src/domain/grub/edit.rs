//! Edits of boot lines: which entries, which words, and the checks
//! before anything is written.

use super::*;

impl GrubConfig {
    /// The entries an edit changes: those XCP-ng's `xen-cmdline` edits
    /// (the last entry titled with the brand, the last ending in
    /// `(Serial)`; the brand is the title `T` for which `T (Serial)`
    /// exists) and the entry GRUB boots next.
    pub fn edited_entries(&self) -> Result<Vec<usize>, GrubError> {
        let default = self.default_index()?;
        let titles: Vec<&str> = self.entries.iter().map(|e| e.title.as_str()).collect();
        let brand = titles
            .iter()
            .find(|t| titles.contains(&format!("{t} (Serial)").as_str()))
            .map(|t| (*t).to_owned());
        let mut out = vec![default];
        if let Some(brand) = brand {
            let last = |pred: &dyn Fn(&str) -> bool| {
                self.entries
                    .iter()
                    .rposition(|e| e.is_xen() && pred(&e.title))
            };
            let xe = last(&|t| t == brand);
            let serial = last(&|t| {
                t != brand && t.ends_with("(Serial)") && !t.ends_with("(Serial) (Trusted Boot)")
            });
            out.extend(xe.into_iter().chain(serial));
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// The file after `edit`, applied to every edited entry. Bytes outside
    /// the words it changes are kept. Refuses a result Xen or the kernel
    /// would read differently: a dom0 command line over 1023 bytes or a
    /// parameter value over 1024.
    pub fn edited(&self, target: Target, edit: &Edit<'_>) -> Result<Vec<u8>, GrubError> {
        let mut changes: Vec<Change> = Vec::new();
        for index in self.edited_entries()? {
            let entry = &self.entries[index];
            changes.extend(self.entry_changes(entry, target, edit)?);
        }
        let out = apply(&self.text, changes);
        if out == self.text {
            return Ok(out);
        }
        if let Edit::Set {
            value: Some(v),
            matching: Matching::Kernel,
            ..
        } = edit
            && v.len() > kernel::CHARP_MAX
        {
            return Err(GrubError::TooLong {
                what: "parameter value",
                length: v.len(),
                limit: kernel::CHARP_MAX,
            });
        }
        // Every edited entry must still read exactly, within Xen's limit.
        let after = GrubConfig::parse(&out, &GrubEnv::absent())?;
        for index in self.edited_entries()? {
            if let Some(entry) = after.entries.get(index) {
                let cmdline = after.cmdline_of(entry)?;
                if cmdline.full_len > XEN_DOM0_CMDLINE_MAX {
                    return Err(GrubError::TooLong {
                        what: "dom0 command line",
                        length: cmdline.full_len,
                        limit: XEN_DOM0_CMDLINE_MAX,
                    });
                }
            }
        }
        Ok(out)
    }

    fn entry_changes(
        &self,
        entry: &Entry,
        target: Target,
        edit: &Edit<'_>,
    ) -> Result<Vec<Change>, GrubError> {
        let unsupported = |reason: &str| GrubError::Unsupported {
            entry: entry.title.clone(),
            reason: reason.to_owned(),
        };
        let (Some(xen), Some(dom0)) = (&entry.xen, &entry.dom0) else {
            return Ok(Vec::new());
        };
        let line = match target {
            Target::Xen => xen,
            Target::Dom0 => dom0,
        };
        line.check_bounded(entry)?;
        let text = &self.text;
        let mut changes = Vec::new();
        match *edit {
            Edit::Set {
                key,
                value,
                matching: Matching::Exact,
            } => {
                cmdline::check_key(key)?;
                changes.extend(set_where_last(line, key, setting(key, value)?));
            }
            Edit::SetWords { key, words } => {
                cmdline::check_key(key)?;
                let mut new = Vec::new();
                for word in words.split_ascii_whitespace() {
                    let (name, value) = match word.split_once('=') {
                        Some((name, value)) => (name, Some(value)),
                        None => (word, None),
                    };
                    if name != key {
                        // Words of several keys in one setting: the name
                        // that is not the key's is refused as a name.
                        return Err(cmdline::CmdlineError::BadKey(word.to_owned()).into());
                    }
                    if !new.is_empty() {
                        new.push(b' ');
                    }
                    new.extend(setting(key, value)?);
                }
                changes.extend(set_where_last(line, key, new));
            }
            Edit::Delete {
                key,
                matching: Matching::Exact,
            } => {
                changes.extend(
                    line.words
                        .iter()
                        .filter(|w| exact_match(w, key))
                        .map(|w| Change::remove(line, w)),
                );
            }
            Edit::Set {
                key,
                matching: Matching::Kernel,
                ..
            }
            | Edit::Delete {
                key,
                matching: Matching::Kernel,
            } => {
                if target != Target::Dom0 {
                    return Err(unsupported("kernel-parameter edits apply to the dom0 line"));
                }
                let value = match *edit {
                    Edit::Set { value, .. } => Some(value),
                    _ => None,
                };
                let words = KernelWords::of(entry, xen, dom0, text)?;
                let hits = words.params_named(key);
                match value {
                    Some(value) => {
                        let new = setting(key, value)?;
                        let effective = hits.iter().rev().find(|h| h.accepted).copied();
                        // The kextra copies go: the value lives on the dom0 line.
                        for h in hits.iter().filter(|h| !h.on_dom0_line) {
                            changes.push(Change::remove(xen, h.word));
                        }
                        changes.extend(words.empty_dash(&hits, xen));
                        let on_dom0: Vec<&Hit<'_>> =
                            hits.iter().filter(|h| h.on_dom0_line).collect();
                        let keep_spelling = |w: &Word| {
                            let raw = w.literal().unwrap_or_default();
                            let name_len = raw.iter().position(|b| *b == b'=').unwrap_or(raw.len());
                            let name = String::from_utf8_lossy(&raw[..name_len]).into_owned();
                            setting(&name, value)
                        };
                        match effective
                            .filter(|h| h.on_dom0_line)
                            .or(on_dom0.last().copied().copied())
                        {
                            Some(h) => {
                                // The other copies go (either spelling):
                                // the value is set once, where it wins.
                                for other in on_dom0.iter().filter(|o| o.word != h.word) {
                                    changes.push(Change::remove(dom0, other.word));
                                }
                                changes.push(Change::replace(h.word, keep_spelling(h.word)?));
                            }
                            None => changes.push(Change::insert(append_point(dom0), &new)),
                        }
                    }
                    None => {
                        for h in &hits {
                            let owner = if h.on_dom0_line { dom0 } else { xen };
                            changes.push(Change::remove(owner, h.word));
                        }
                        changes.extend(words.empty_dash(&hits, xen));
                    }
                }
            }
        }
        Ok(changes)
    }
}

/// How an edit finds the arguments it changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Matching {
    /// As `xen-cmdline` does: `KEY` or `KEY=...` exactly.
    Exact,
    /// As the kernel does: the parameter name, `-` equal to `_`, only
    /// before `--`, including the dom0 arguments on the Xen line.
    Kernel,
}

/// An edit of a boot line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edit<'a> {
    /// Set `key` to `value` (`None`: a bare flag).
    Set {
        /// Parameter name.
        key: &'a str,
        /// New value.
        value: Option<&'a str>,
        /// How occurrences are found.
        matching: Matching,
    },
    /// Set `key` to several arguments at once (each `key=...`), where its
    /// last occurrence was, every other occurrence removed: what
    /// `xen-cmdline --set-dom0 "console=hvc0 console=tty0"` does.
    SetWords {
        /// Parameter name.
        key: &'a str,
        /// The arguments, blank-separated, each `key` or `key=value`.
        words: &'a str,
    },
    /// Remove every occurrence of `key`.
    Delete {
        /// Parameter name.
        key: &'a str,
        /// How occurrences are found.
        matching: Matching,
    },
}

pub(super) fn setting(key: &str, value: Option<&str>) -> Result<Vec<u8>, GrubError> {
    cmdline::check_key(key)?;
    Ok(match value {
        Some(v) => {
            cmdline::check_value(v)?;
            format!("{key}={v}").into_bytes()
        }
        None => key.as_bytes().to_vec(),
    })
}

/// `new` in place of the last argument of `line` that is `key` (every
/// other one removed), or appended when there is none: `xen-cmdline`'s
/// set.
fn set_where_last(line: &BootLine, key: &str, new: Vec<u8>) -> Vec<Change> {
    let hits: Vec<&Word> = line.words.iter().filter(|w| exact_match(w, key)).collect();
    match hits.split_last() {
        Some((last, before)) => {
            let mut changes: Vec<Change> = before.iter().map(|w| Change::remove(line, w)).collect();
            changes.push(Change::replace(last, new));
            changes
        }
        None => vec![Change::insert(append_point(line), &new)],
    }
}

/// `xen-cmdline`'s match: the argument is `KEY` or starts with `KEY=`.
pub(super) fn exact_match(word: &Word, key: &str) -> bool {
    word.literal().is_some_and(|l| {
        l == key.as_bytes() || (l.starts_with(key.as_bytes()) && l.get(key.len()) == Some(&b'='))
    })
}

/// Where a new argument goes on a line: before a bare `--` (what follows
/// it belongs to init on a dom0 line, to dom0 on a Xen line), else at the
/// end.
pub(super) fn append_point(line: &BootLine) -> Insert {
    match line.words.iter().position(|w| w.is("--")) {
        Some(n) => Insert::Before(line.words[n].start),
        None => Insert::After(line.words.last().map_or(line.path_end, |w| w.end)),
    }
}

/// The kernel's arguments of one entry, word by word: the dom0 line, then
/// the Xen line's words after its ` -- `.
pub(super) struct KernelWords<'a> {
    pub(super) words: Vec<(&'a Word, Vec<u8>, bool)>,
    /// The Xen line's bare `--` and how many words follow it.
    pub(super) dash: Option<(&'a Word, usize)>,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Hit<'a> {
    pub(super) word: &'a Word,
    on_dom0_line: bool,
    pub(super) accepted: bool,
}

impl<'a> KernelWords<'a> {
    /// The words, checked to map one to one onto the kernel's arguments.
    pub(super) fn of(
        entry: &Entry,
        xen: &'a BootLine,
        dom0: &'a BootLine,
        _text: &[u8],
    ) -> Result<KernelWords<'a>, GrubError> {
        let unsupported = |reason: String| GrubError::Unsupported {
            entry: entry.title.clone(),
            reason,
        };
        dom0.check_exact(entry)?;
        xen.check_bounded(entry)?;
        let (kextra, dash) = match xen.words.iter().position(|w| w.is("--")) {
            Some(n) if n > 0 => (
                &xen.words[n + 1..],
                Some((&xen.words[n], xen.words.len() - n - 1)),
            ),
            _ => (&[][..], None),
        };
        let mut words = Vec::new();
        for (word, on_dom0) in dom0
            .words
            .iter()
            .map(|w| (w, true))
            .chain(kextra.iter().map(|w| (w, false)))
        {
            let Some(value) = word.literal() else {
                // A variable no value of which touches the hide stays as
                // it is (Debian's `${xen_rm_opts}`); it is never a hit.
                let neutral = !on_dom0 && xen.values_hide_neutral(entry).is_some();
                if neutral {
                    continue;
                }
                return Err(unsupported(
                    "the dom0 arguments after ` -- ` on the Xen line use a GRUB variable that \
                     may set xen-pciback.hide"
                        .into(),
                ));
            };
            if let Some(b) = value.iter().find(|b| {
                matches!(**b, b'"' | b'\'' | b'\\') || (kernel::is_space(**b) && **b != b' ')
            }) {
                return Err(unsupported(format!(
                    "the argument {:?} holds {:?}, which GRUB and the kernel split differently",
                    String::from_utf8_lossy(&value),
                    *b as char
                )));
            }
            words.push((word, value, on_dom0));
        }
        Ok(KernelWords { words, dash })
    }

    /// The Xen line's `--` goes too when every word after it is removed.
    pub(super) fn empty_dash(&self, removed: &[Hit<'_>], xen: &BootLine) -> Option<Change> {
        let (dash, after) = self.dash?;
        let gone = removed.iter().filter(|h| !h.on_dom0_line).count();
        (after > 0 && gone == after).then(|| Change::remove(xen, dash))
    }

    /// The occurrences of parameter `key` before the first bare `--`.
    pub(super) fn params_named(&self, key: &str) -> Vec<Hit<'a>> {
        let mut hits = Vec::new();
        for (word, value, on_dom0_line) in &self.words {
            let (name, val) = match value.iter().position(|b| *b == b'=') {
                Some(eq) if eq > 0 => (&value[..eq], Some(&value[eq + 1..])),
                _ => (&value[..], None),
            };
            if val.is_none() && name == b"--" {
                break;
            }
            if kernel::param_eq(name, key.as_bytes()) {
                hits.push(Hit {
                    word,
                    on_dom0_line: *on_dom0_line,
                    accepted: val.is_some_and(|v| v.len() <= kernel::CHARP_MAX),
                });
            }
        }
        hits
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Insert {
    After(usize),
    Before(usize),
}

/// One byte-range change of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Change {
    pub(super) span: Span,
    pub(super) with: Vec<u8>,
}

impl Change {
    pub(super) fn replace(word: &Word, with: Vec<u8>) -> Change {
        Change {
            span: Span {
                start: word.start,
                end: word.end,
            },
            with,
        }
    }

    /// Remove a word and the blanks before it (after it, for the first
    /// argument, so the path keeps its separator from what follows).
    pub(super) fn remove(line: &BootLine, word: &Word) -> Change {
        let index = line.words.iter().position(|w| w == word).unwrap_or(0);
        let prev_end = if index == 0 {
            line.path_end
        } else {
            line.words[index - 1].end
        };
        Change {
            span: Span {
                start: prev_end,
                end: word.end,
            },
            with: Vec::new(),
        }
    }

    pub(super) fn insert(at: Insert, arg: &[u8]) -> Change {
        let (pos, with) = match at {
            Insert::After(p) => (p, [b" ".as_slice(), arg].concat()),
            Insert::Before(p) => (p, [arg, b" "].concat()),
        };
        Change {
            span: Span {
                start: pos,
                end: pos,
            },
            with,
        }
    }
}

pub(super) fn apply(text: &[u8], mut changes: Vec<Change>) -> Vec<u8> {
    changes.sort_by_key(|c| (c.span.start, c.span.end));
    changes.dedup();
    let mut out = Vec::with_capacity(text.len() + 64);
    let mut cursor = 0;
    for change in changes {
        if change.span.start < cursor {
            continue;
        }
        out.extend_from_slice(&text[cursor..change.span.start]);
        out.extend_from_slice(&change.with);
        cursor = change.span.end;
    }
    out.extend_from_slice(&text[cursor..]);
    out
}
