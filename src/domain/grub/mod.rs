//! grub.cfg as GRUB reads it, and the dom0 command line as GRUB and Xen
//! hand it to the kernel.
//!
//! * **Bytes.** grub.cfg is read and written as bytes; a Latin-1 comment or
//!   any byte that is not UTF-8 is kept as it is.
//! * **Which entry boots.** The script is walked as GRUB runs it at menu
//!   time: `if`/`elif`/`else`/`fi` with the conditions XCP-ng's and
//!   Debian's generators write (`[ -n "$v" ]`, `[ "${v}" ]`, `[ -s
//!   $prefix/grubenv ]`, `=`/`!=`), `load_env` importing the grubenv
//!   variables, `set`. The default is the `default` variable after that
//!   walk, so an indented `set default=$override_entry` inside an `if`
//!   counts only when grubenv holds `override_entry` (a one-time boot).
//!   A default that depends on a condition pcipass cannot evaluate is an
//!   error, never a guess. A default naming nothing boots entry 0, as GRUB
//!   does.
//! * **The chain.** A boot line's words go through GRUB's lexer (quotes
//!   removed), then `grub_create_loader_cmdline` (a word holding a space
//!   is wrapped in double quotes, `\`, `'` and `"` get a backslash), then
//!   Xen: the dom0 line, plus whatever follows ` -- ` on the Xen line,
//!   copied into a 1024-byte buffer (1023 characters pass).
//! * **Edits** go to the entries XCP-ng's `xen-cmdline` edits (the last
//!   entry titled with the product brand and the last one ending in
//!   `(Serial)`) and to the entry GRUB boots next, and replace only the
//!   bytes of the words they change.

use std::collections::BTreeMap;

use crate::domain::cmdline::{self, CmdlineError};
use crate::domain::hide::{HIDE_KEY, LEGACY_KEY};
use crate::domain::kernel;

mod chain;
mod edit;
mod lex;
mod script;

use chain::*;
pub use chain::{BootLine, Dom0Cmdline, loader_cmdline, xen_dom0_cmdline};
use edit::*;
pub use edit::{Edit, Matching};
use lex::*;

/// Which argument line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The hypervisor's arguments.
    Xen,
    /// The dom0 kernel's arguments.
    Dom0,
}

/// Xen copies the dom0 command line into a 1024-byte buffer
/// (`MAX_GUEST_CMDLINE`): 1023 characters and the NUL.
pub const XEN_DOM0_CMDLINE_MAX: usize = 1023;

/// Why grub.cfg cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrubError {
    /// No menuentry boots Xen.
    #[error(
        "grub.cfg has no Xen boot entry (no multiboot2/xen_hypervisor line followed by a module2/xen_module dom0 kernel)"
    )]
    NoXenEntry,
    /// The entry GRUB boots is not a Xen entry.
    #[error("the default boot entry ({0}) is not a Xen entry")]
    DefaultNotXen(String),
    /// Which entry boots depends on something pcipass cannot evaluate.
    #[error("cannot tell which entry GRUB boots: {0}")]
    DefaultUncertain(String),
    /// A boot line uses GRUB syntax whose result pcipass cannot compute.
    #[error("the boot line of entry '{entry}' cannot be read exactly: {reason}")]
    Unsupported {
        /// The boot entry's title.
        entry: String,
        /// Why.
        reason: String,
    },
    /// The edit would make a command line longer than Xen or the kernel
    /// takes.
    #[error("the edited {what} would be {length} bytes, longer than the {limit} that pass")]
    TooLong {
        /// What would be too long.
        what: &'static str,
        /// The length the edit would give.
        length: usize,
        /// The most that passes.
        limit: usize,
    },
    /// An edit was refused.
    #[error(transparent)]
    Cmdline(#[from] CmdlineError),
}

/// The grubenv block: `key=value` lines after a `#` header, padded with
/// `#` to 1024 bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrubEnv {
    /// True when the file exists and is not empty (`[ -s ... ]`).
    pub present: bool,
    vars: BTreeMap<String, Vec<u8>>,
}

impl GrubEnv {
    /// No grubenv file.
    pub fn absent() -> GrubEnv {
        GrubEnv::default()
    }

    /// Parse a grubenv file's bytes.
    pub fn parse(bytes: &[u8]) -> GrubEnv {
        let mut vars = BTreeMap::new();
        for line in bytes.split(|b| *b == b'\n') {
            if line.first() == Some(&b'#') {
                continue;
            }
            if let Some(eq) = line.iter().position(|b| *b == b'=') {
                let name = String::from_utf8_lossy(&line[..eq]).into_owned();
                vars.insert(name, line[eq + 1..].to_vec());
            }
        }
        GrubEnv {
            present: !bytes.is_empty(),
            vars,
        }
    }

    /// A variable's value.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.vars.get(name).map(Vec::as_slice)
    }
}

/// One menuentry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its title (lossy UTF-8, for logs and matching).
    pub title: String,
    /// Its `--id`, if any.
    pub id: Option<String>,
    xen: Option<BootLine>,
    dom0: Option<BootLine>,
    /// Variables the entry's own script sets, with each value it may take
    /// (`None`: not a literal).
    locals: BTreeMap<String, Vec<Option<Vec<u8>>>>,
}

impl Entry {
    fn unsupported(&self, reason: String) -> GrubError {
        GrubError::Unsupported {
            entry: self.title.clone(),
            reason,
        }
    }

    /// True when the entry boots Xen with a dom0 kernel.
    pub fn is_xen(&self) -> bool {
        self.xen.is_some() && self.dom0.is_some()
    }

    fn line(&self, target: Target) -> Option<&BootLine> {
        match target {
            Target::Xen => self.xen.as_ref(),
            Target::Dom0 => self.dom0.as_ref(),
        }
    }
}

/// A top-level menu item: an entry or a submenu.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    Entry(usize),
    Submenu {
        title: String,
        id: Option<String>,
        items: Vec<Item>,
    },
}

/// Where the default came from, for logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DefaultSource {
    /// An unconditional `set default=` (or none: entry 0).
    Config,
    /// A one-time choice held in grubenv (`override_entry`, `next_entry`).
    GrubEnv(String),
    /// `set default=` names nothing; GRUB boots entry 0.
    Fallback(String),
}

/// A parsed grub.cfg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrubConfig {
    text: Vec<u8>,
    entries: Vec<Entry>,
    menu: Vec<Item>,
    default: Result<usize, GrubError>,
    default_source: DefaultSource,
    env: GrubEnv,
}

impl GrubConfig {
    /// The entries, in file order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Where the default came from.
    pub fn default_source(&self) -> &DefaultSource {
        &self.default_source
    }

    /// The entry GRUB boots next.
    pub fn default_entry(&self) -> Result<&Entry, GrubError> {
        let index = self.default.clone()?;
        let entry = &self.entries[index];
        if entry.is_xen() {
            Ok(entry)
        } else {
            Err(GrubError::DefaultNotXen(entry.title.clone()))
        }
    }

    fn default_index(&self) -> Result<usize, GrubError> {
        self.default_entry()?;
        self.default.clone()
    }

    /// The dom0 command line the next boot gives the kernel: the default
    /// entry's dom0 line as GRUB passes it, plus the dom0 arguments after
    /// ` -- ` on its Xen line, cut where Xen cuts it.
    pub fn boot_cmdline(&self) -> Result<Dom0Cmdline, GrubError> {
        self.cmdline_of(self.default_entry()?)
    }

    /// The dom0 command line `entry` gives the kernel.
    pub fn cmdline_of(&self, entry: &Entry) -> Result<Dom0Cmdline, GrubError> {
        let (Some(xen), Some(dom0)) = (&entry.xen, &entry.dom0) else {
            return Err(GrubError::NoXenEntry);
        };
        dom0.check_exact(entry)?;
        xen.check_bounded(entry)?;
        let cmdline = xen_dom0_cmdline(
            &loader_cmdline(&xen.values()),
            &loader_cmdline(&dom0.values()),
        );
        if !cmdline.bytes.contains(&VAR_MARK) {
            return Ok(cmdline);
        }
        // A variable among dom0's arguments: answer when none of its
        // values can touch the hide list (Debian's `${xen_rm_opts}` after
        // a ` -- ` of GRUB_CMDLINE_XEN), with its longest value for Xen's
        // length limit.
        match xen.values_hide_neutral(entry) {
            Some(values) => Ok(xen_dom0_cmdline(
                &loader_cmdline(&values),
                &loader_cmdline(&dom0.values()),
            )),
            None => Err(entry.unsupported(
                "the dom0 arguments after ` -- ` on the Xen line use a GRUB variable that \
                 may set xen-pciback.hide"
                    .into(),
            )),
        }
    }

    /// The same configuration after an edit: `text` read with the same
    /// grubenv.
    pub fn reparsed(&self, text: &[u8]) -> Result<GrubConfig, GrubError> {
        GrubConfig::parse(text, &self.env)
    }

    /// Every argument of the default entry's `target` line that
    /// `xen-cmdline` prints for `key` (`KEY` or `KEY=...`, exactly): its
    /// offset and source text, in line order.
    pub fn occurrences_at(
        &self,
        target: Target,
        key: &str,
    ) -> Result<Vec<(usize, Vec<u8>)>, GrubError> {
        let entry = self.default_entry()?;
        let line = entry.line(target).ok_or(GrubError::NoXenEntry)?;
        Ok(line
            .words
            .iter()
            .filter(|w| exact_match(w, key))
            .map(|w| (w.start, self.text[w.start..w.end].to_vec()))
            .collect())
    }

    /// The arguments matching `key` exactly that the default entry's Xen
    /// line passes to dom0 (after its ` -- `): Xen appends them after the
    /// dom0 line, so they override what `--set-dom0` writes there.
    pub fn dom0_args_on_xen_line(&self, key: &str) -> Result<Vec<Vec<u8>>, GrubError> {
        let entry = self.default_entry()?;
        let xen = entry.line(Target::Xen).ok_or(GrubError::NoXenEntry)?;
        Ok(match xen.words.iter().position(|w| w.is("--")) {
            Some(n) if n > 0 => xen.words[n + 1..]
                .iter()
                .filter(|w| exact_match(w, key))
                .map(|w| self.text[w.start..w.end].to_vec())
                .collect(),
            _ => Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests;
