//! grub.cfg as XenServer/XCP-ng write it: `menuentry` blocks whose Xen line
//! is `multiboot2 /boot/xen.gz ARGS` (or `xen_hypervisor`) and whose dom0
//! line is the following `module2 /boot/vmlinuz ARGS` (or `xen_module`).
//! Reading takes the default entry (`set default=`); edits go to the
//! entries `xen-cmdline` manages (the default entry's title and its
//! `(Serial)` twin) and replace only the bytes of the arguments they
//! change.

use crate::domain::cmdline::{self, CmdlineError};

/// Which argument line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The hypervisor's arguments.
    Xen,
    /// The dom0 kernel's arguments.
    Dom0,
}

/// Why grub.cfg cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrubError {
    /// No menuentry boots Xen.
    #[error(
        "grub.cfg has no Xen boot entry (no multiboot2/xen_hypervisor line followed by a module2/xen_module dom0 kernel)"
    )]
    NoXenEntry,
    /// `set default=` names an entry that does not exist or is not Xen.
    #[error("the default boot entry ({0}) is not a Xen entry")]
    DefaultNotXen(String),
    /// An edit was refused.
    #[error(transparent)]
    Cmdline(#[from] CmdlineError),
}

/// Byte range of an argument string in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: usize,
    end: usize,
}

/// One menuentry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its title.
    pub title: String,
    xen: Option<Span>,
    dom0: Option<Span>,
}

impl Entry {
    /// True when the entry boots Xen with a dom0 kernel.
    pub fn is_xen(&self) -> bool {
        self.xen.is_some() && self.dom0.is_some()
    }
}

/// A parsed grub.cfg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrubConfig {
    text: String,
    entries: Vec<Entry>,
    default: String,
}

/// Words of a line with their byte offsets (GRUB quoting is not needed
/// for the command word and the path).
fn words(line: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in line.char_indices() {
        match (c.is_ascii_whitespace(), start) {
            (true, Some(s)) => {
                out.push((s, &line[s..i]));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, &line[s..]));
    }
    out
}

fn unquote_title(text: &str) -> String {
    let t = text.trim();
    for q in ['\'', '"'] {
        if let Some(rest) = t.strip_prefix(q)
            && let Some(end) = rest.find(q)
        {
            return rest[..end].to_owned();
        }
    }
    t.split_whitespace().next().unwrap_or("").to_owned()
}

impl GrubConfig {
    /// Parse grub.cfg text.
    pub fn parse(text: &str) -> Result<GrubConfig, GrubError> {
        let mut entries: Vec<Entry> = Vec::new();
        let mut default = "0".to_owned();
        let mut current: Option<Entry> = None;
        let mut offset = 0;
        for raw in text.split_inclusive('\n') {
            let line_start = offset;
            offset += raw.len();
            let line = raw.trim_end_matches(['\n', '\r']);
            let w = words(line);
            let Some((_, command)) = w.first() else {
                continue;
            };
            if command.starts_with('#') {
                continue;
            }
            match *command {
                "menuentry" if current.is_none() => {
                    let rest = &line[w[0].0 + command.len()..];
                    current = Some(Entry {
                        title: unquote_title(rest),
                        xen: None,
                        dom0: None,
                    });
                }
                "}" => {
                    if let Some(entry) = current.take() {
                        entries.push(entry);
                    }
                }
                "set" if current.is_none() => {
                    if let Some((at, _)) = w.get(1)
                        && let Some(value) = line[*at..].strip_prefix("default=")
                    {
                        default = unquote_title(value);
                    }
                }
                "multiboot2" | "multiboot" | "xen_hypervisor" => {
                    if let Some(entry) = current.as_mut()
                        && entry.xen.is_none()
                        && w.len() >= 2
                    {
                        entry.xen = Some(args_span(line_start, line, &w));
                    }
                }
                "module2" | "module" | "xen_module" => {
                    if let Some(entry) = current.as_mut()
                        && entry.xen.is_some()
                        && entry.dom0.is_none()
                        && w.len() >= 2
                    {
                        entry.dom0 = Some(args_span(line_start, line, &w));
                    }
                }
                _ => {}
            }
        }
        if !entries.iter().any(Entry::is_xen) {
            return Err(GrubError::NoXenEntry);
        }
        let config = GrubConfig {
            text: text.to_owned(),
            entries,
            default,
        };
        config.default_entry()?;
        Ok(config)
    }

    /// The entries, in file order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The default entry (by index or title).
    pub fn default_entry(&self) -> Result<&Entry, GrubError> {
        let found = match self.default.parse::<usize>() {
            Ok(index) => self.entries.get(index),
            Err(_) => self.entries.iter().find(|e| e.title == self.default),
        };
        found
            .filter(|e| e.is_xen())
            .ok_or_else(|| GrubError::DefaultNotXen(self.default.clone()))
    }

    fn span(entry: &Entry, target: Target) -> Option<Span> {
        match target {
            Target::Xen => entry.xen,
            Target::Dom0 => entry.dom0,
        }
    }

    /// The arguments of the default entry.
    pub fn args(&self, target: Target) -> Result<&str, GrubError> {
        let entry = self.default_entry()?;
        let span = Self::span(entry, target).ok_or(GrubError::NoXenEntry)?;
        Ok(&self.text[span.start..span.end])
    }

    /// The value of `key` in the default entry's arguments.
    pub fn get(&self, target: Target, key: &str) -> Result<Option<String>, GrubError> {
        Ok(cmdline::get_last(self.args(target)?, key).map(str::to_owned))
    }

    /// The entries `xen-cmdline` edits: the default one and the entry
    /// whose title is the default's base title plus ` (Serial)`.
    fn managed(&self) -> Result<Vec<&Entry>, GrubError> {
        let default = self.default_entry()?;
        let base = default
            .title
            .strip_suffix(" (Serial)")
            .unwrap_or(&default.title)
            .to_owned();
        let serial = format!("{base} (Serial)");
        Ok(self
            .entries
            .iter()
            .filter(|e| e.is_xen() && (e.title == base || e.title == serial))
            .collect())
    }

    /// The file text after applying `edit` to the arguments of every
    /// managed entry. Bytes outside those arguments are unchanged.
    pub fn edited(
        &self,
        target: Target,
        edit: impl Fn(&str) -> Result<String, CmdlineError>,
    ) -> Result<String, GrubError> {
        let mut spans: Vec<Span> = self
            .managed()?
            .into_iter()
            .filter_map(|e| Self::span(e, target))
            .collect();
        spans.sort_by_key(|s| s.start);
        let mut out = String::with_capacity(self.text.len() + 64);
        let mut cursor = 0;
        for span in spans {
            out.push_str(&self.text[cursor..span.start]);
            let args = edit(&self.text[span.start..span.end])?;
            // A line with no arguments yet: keep the image path a word of its own.
            if span.start == span.end && !args.is_empty() && !out.ends_with([' ', '\t']) {
                out.push(' ');
            }
            out.push_str(&args);
            cursor = span.end;
        }
        out.push_str(&self.text[cursor..]);
        Ok(out)
    }

    /// Set `key=value` in the managed entries.
    pub fn set(&self, target: Target, key: &str, value: Option<&str>) -> Result<String, GrubError> {
        self.edited(target, |args| cmdline::set(args, key, value))
    }

    /// Remove `key` from the managed entries.
    pub fn delete(&self, target: Target, key: &str) -> Result<String, GrubError> {
        self.edited(target, |args| Ok(cmdline::delete(args, key)))
    }
}

/// The span of the arguments after the command word and the image path.
fn args_span(line_start: usize, line: &str, w: &[(usize, &str)]) -> Span {
    let start = match w.get(2) {
        Some((offset, _)) => *offset,
        None => w.get(1).map(|(o, p)| o + p.len()).unwrap_or(line.len()),
    };
    Span {
        start: line_start + start,
        end: line_start + line.trim_end().len().max(start),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const XCPNG: &str = include_str!("../../tests/fixtures/grub/xcpng-grub.cfg");
    const XEN_BOOT: &str = include_str!("../../tests/fixtures/grub/xcpng-grub-xen-boot.cfg");

    #[test]
    fn reads_default_entry_of_fixtures() {
        for text in [XCPNG, XEN_BOOT] {
            let cfg = GrubConfig::parse(text).unwrap();
            assert_eq!(cfg.default_entry().unwrap().title, "XCP-ng");
            assert_eq!(
                cfg.get(Target::Dom0, "root").unwrap().as_deref(),
                Some("LABEL=root-vgdorj")
            );
            assert_eq!(
                cfg.get(Target::Xen, "dom0_mem").unwrap().as_deref(),
                Some("7584M,max:7584M")
            );
            assert!(
                cfg.args(Target::Dom0)
                    .unwrap()
                    .ends_with("plymouth.ignore-serial-consoles")
            );
            assert_eq!(cfg.get(Target::Dom0, "xen-pciback.hide").unwrap(), None);
        }
    }

    #[test]
    fn broken_files_are_refused() {
        for name in [
            "xcpng-grub-no-multiboot.cfg",
            "xcpng-grub-no-hypervisor.cfg",
            "xcpng-grub-linux.cfg",
        ] {
            let text = std::fs::read_to_string(format!(
                "{}/tests/fixtures/grub/{name}",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap();
            assert_eq!(
                GrubConfig::parse(&text),
                Err(GrubError::NoXenEntry),
                "{name}"
            );
        }
    }

    #[test]
    fn edit_changes_only_the_managed_dom0_lines() {
        let cfg = GrubConfig::parse(XCPNG).unwrap();
        let out = cfg
            .set(Target::Dom0, "xen-pciback.hide", Some("(0000:01:00.0)"))
            .unwrap();
        let changed: Vec<(&str, &str)> = XCPNG
            .lines()
            .zip(out.lines())
            .filter(|(a, b)| a != b)
            .collect();
        assert_eq!(
            changed.len(),
            2,
            "the XCP-ng and XCP-ng (Serial) dom0 lines"
        );
        for (before, after) in changed {
            assert_eq!(format!("{before} xen-pciback.hide=(0000:01:00.0)"), after);
        }
        assert_eq!(XCPNG.lines().count(), out.lines().count());
        let again = GrubConfig::parse(&out).unwrap();
        assert_eq!(
            again
                .get(Target::Dom0, "xen-pciback.hide")
                .unwrap()
                .as_deref(),
            Some("(0000:01:00.0)")
        );
        assert_eq!(
            again.delete(Target::Dom0, "xen-pciback.hide").unwrap(),
            XCPNG
        );
    }

    #[test]
    fn an_argument_less_kernel_line_keeps_its_path() {
        let text = "menuentry 'X' {\n\tmultiboot2 /boot/xen.gz\n\tmodule2 /boot/vmlinuz\n}\n";
        let cfg = GrubConfig::parse(text).unwrap();
        let out = cfg.set(Target::Dom0, "k", Some("v")).unwrap();
        assert!(out.contains("\tmodule2 /boot/vmlinuz k=v\n"), "{out}");
        assert_eq!(
            GrubConfig::parse(&out)
                .unwrap()
                .delete(Target::Dom0, "k")
                .unwrap()
                .replace("vmlinuz \n", "vmlinuz\n"),
            text
        );
    }

    #[test]
    fn default_by_title_and_out_of_range() {
        let text = XCPNG.replace("set default=0", "set default='XCP-ng (Serial)'");
        let cfg = GrubConfig::parse(&text).unwrap();
        assert_eq!(cfg.default_entry().unwrap().title, "XCP-ng (Serial)");
        let text = XCPNG.replace("set default=0", "set default=9");
        assert!(matches!(
            GrubConfig::parse(&text),
            Err(GrubError::DefaultNotXen(_))
        ));
    }
}
