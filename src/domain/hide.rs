//! The `xen-pciback.hide` list as the Linux driver reads it
//! (`drivers/xen/xen-pciback/pci_stub.c`), and the edits that hide or
//! unhide one function while keeping everything a person wrote.
//!
//! Six entry forms: `(D:B:S.F)`, `(D:B:S.*)`, `(D:B:*.*)`, `(B:S.F)`,
//! `(B:S.*)`, `(B:*.*)`; hex of any case and length (`%x`), whitespace
//! around entries. One entry that does not parse makes the driver hide
//! nothing at all.

use std::collections::BTreeSet;

use crate::domain::PciAddress;
use crate::domain::cmdline;

/// The parameter pcipass manages.
pub const HIDE_KEY: &str = "xen-pciback.hide";
/// The old out-of-tree driver's parameter: reported, never effective.
pub const LEGACY_KEY: &str = "pciback.hide";

/// One entry of the hide list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HideEntry {
    /// PCI domain (0 when the entry has none).
    pub domain: u16,
    /// Bus.
    pub bus: u8,
    /// Slot, `None` for `*`.
    pub slot: Option<u8>,
    /// Function, `None` for `*`.
    pub function: Option<u8>,
}

impl HideEntry {
    /// True when the entry covers `addr`.
    pub fn matches(&self, addr: &PciAddress) -> bool {
        self.domain == addr.domain
            && self.bus == addr.bus
            && self.slot.is_none_or(|s| s == addr.slot)
            && self.function.is_none_or(|f| f == addr.function)
    }

    /// True when the entry names exactly one function.
    pub fn is_exact(&self) -> bool {
        self.slot.is_some() && self.function.is_some()
    }
}

/// Why a hide value does not parse (so the kernel hides nothing with it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("xen-pciback.hide={value}: {reason} at {offending:?}")]
pub struct HideParseError {
    /// The whole value.
    pub value: String,
    /// The text from the first bad entry on.
    pub offending: String,
    /// What is wrong.
    pub reason: String,
}

/// An entry with its byte span in the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Spanned {
    entry: HideEntry,
    start: usize,
    end: usize,
}

fn hex_field(text: &str) -> Option<u32> {
    let digits = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(digits, 16).ok()
}

fn parse_entry(inner: &str) -> Result<HideEntry, String> {
    let (head, function) = inner.rsplit_once('.').ok_or("no '.' before the function")?;
    let parts: Vec<&str> = head.split(':').collect();
    let (domain, bus, slot) = match parts.as_slice() {
        [d, b, s] => (Some(*d), *b, *s),
        [b, s] => (None, *b, *s),
        _ => return Err("want (DDDD:BB:SS.F) or (BB:SS.F)".into()),
    };
    let field = |text: &str, max: u32, what: &str| -> Result<u32, String> {
        let n = hex_field(text).ok_or_else(|| format!("{what} {text:?} is not hex"))?;
        if n > max {
            return Err(format!("{what} {text} is out of range"));
        }
        Ok(n)
    };
    let domain = match domain {
        Some(d) => field(d, 0xffff, "domain")? as u16,
        None => 0,
    };
    let bus = field(bus, 0xff, "bus")? as u8;
    let (slot, function) = match (slot, function) {
        ("*", "*") => (None, None),
        ("*", _) => return Err("a wildcard slot needs a wildcard function".into()),
        (s, "*") => (Some(field(s, 0x1f, "slot")? as u8), None),
        (s, f) => (
            Some(field(s, 0x1f, "slot")? as u8),
            Some(field(f, 7, "function")? as u8),
        ),
    };
    Ok(HideEntry {
        domain,
        bus,
        slot,
        function,
    })
}

fn parse_spanned(value: &str) -> Result<Vec<Spanned>, HideParseError> {
    let mut entries = Vec::new();
    let bytes = value.as_bytes();
    let mut i = 0;
    let fail = |at: usize, reason: String| HideParseError {
        value: value.to_owned(),
        offending: value[at..].chars().take(40).collect(),
        reason,
    };
    loop {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= bytes.len() {
            return Ok(entries);
        }
        if bytes[i] != b'(' {
            return Err(fail(i, "expected '('".into()));
        }
        let close = value[i..]
            .find(')')
            .ok_or_else(|| fail(i, "missing ')'".into()))?
            + i;
        let entry = parse_entry(&value[i + 1..close]).map_err(|reason| fail(i, reason))?;
        entries.push(Spanned {
            entry,
            start: i,
            end: close + 1,
        });
        i = close + 1;
    }
}

/// Parse a hide value into its entries.
pub fn parse_value(value: &str) -> Result<Vec<HideEntry>, HideParseError> {
    Ok(parse_spanned(value)?.into_iter().map(|s| s.entry).collect())
}

/// The hide list the kernel would use, from one command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HideView {
    /// The effective raw value (last occurrence), if any.
    pub value: Option<String>,
    entries: Result<Vec<HideEntry>, HideParseError>,
    /// A `pciback.hide` value, which upstream kernels ignore.
    pub legacy: Option<String>,
}

impl HideView {
    /// The view of a whole command line (`/proc/cmdline` or dom0 args).
    pub fn from_cmdline(line: &str) -> HideView {
        let mut view = HideView::from_value(cmdline::get_last(line, HIDE_KEY));
        view.legacy = cmdline::get_last(line, LEGACY_KEY).map(str::to_owned);
        view
    }

    /// The view of a bare value (what `xen-cmdline --get-dom0` reports).
    pub fn from_value(value: Option<&str>) -> HideView {
        HideView {
            value: value.map(str::to_owned),
            entries: value.map(parse_value).unwrap_or(Ok(Vec::new())),
            legacy: None,
        }
    }

    /// True when the kernel hides `addr` with this list.
    pub fn hides(&self, addr: &PciAddress) -> bool {
        self.entries
            .as_ref()
            .is_ok_and(|e| e.iter().any(|x| x.matches(addr)))
    }

    /// The parse error when the value is malformed (the kernel hides nothing).
    pub fn malformed(&self) -> Option<&HideParseError> {
        self.entries.as_ref().err()
    }

    /// The entries, empty when malformed.
    pub fn entries(&self) -> &[HideEntry] {
        self.entries.as_deref().unwrap_or(&[])
    }
}

/// What an edit does to the parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HideEdit {
    /// Nothing to change.
    Unchanged,
    /// Write this value.
    Set(String),
    /// Remove the parameter.
    Delete,
}

/// Hide `addr`: append its canonical entry unless already hidden.
pub fn plan_disable(current: Option<&str>, addr: &PciAddress) -> Result<HideEdit, HideParseError> {
    let Some(value) = current else {
        return Ok(HideEdit::Set(addr.hide_entry()));
    };
    let entries = parse_value(value)?;
    if entries.iter().any(|e| e.matches(addr)) {
        return Ok(HideEdit::Unchanged);
    }
    Ok(HideEdit::Set(without_whitespace(&format!(
        "{value}{}",
        addr.hide_entry()
    ))))
}

/// Unhide `addr`: remove every entry covering it; a wildcard is replaced by
/// explicit entries for the other `existing` functions it covered.
pub fn plan_enable(
    current: Option<&str>,
    addr: &PciAddress,
    existing: &BTreeSet<PciAddress>,
) -> Result<HideEdit, HideParseError> {
    let Some(value) = current else {
        return Ok(HideEdit::Unchanged);
    };
    let spanned = parse_spanned(value)?;
    if !spanned.iter().any(|s| s.entry.matches(addr)) {
        return Ok(HideEdit::Unchanged);
    }
    let mut out = String::with_capacity(value.len());
    let mut cursor = 0;
    for s in spanned.iter().filter(|s| s.entry.matches(addr)) {
        out.push_str(&value[cursor..s.start]);
        if !s.entry.is_exact() {
            for other in existing.iter().filter(|a| *a != addr && s.entry.matches(a)) {
                out.push_str(&other.hide_entry());
            }
        }
        cursor = s.end;
    }
    out.push_str(&value[cursor..]);
    let out = without_whitespace(&out);
    if out.is_empty() {
        Ok(HideEdit::Delete)
    } else {
        Ok(HideEdit::Set(out))
    }
}

/// Whitespace between entries is legal for the kernel but cannot be
/// written unquoted on a boot line (and GRUB would strip the quotes), so
/// written values carry none; every entry's own text is kept.
fn without_whitespace(value: &str) -> String {
    value.chars().filter(|c| !c.is_ascii_whitespace()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> PciAddress {
        s.parse().unwrap()
    }

    #[test]
    fn every_form_the_kernel_accepts() {
        let cases = [
            ("(0000:03:00.1)", "0000:03:00.1", true),
            ("(0000:03:00.*)", "0000:03:00.5", true),
            ("(0000:03:*.*)", "0000:03:1f.7", true),
            ("(03:00.1)", "0000:03:00.1", true),
            ("(03:00.*)", "0000:03:00.2", true),
            ("(03:*.*)", "0000:03:04.0", true),
            ("(0000:0A:00.0)", "0000:0a:00.0", true),
            ("(0000:4:1.0)", "0000:04:01.0", true),
            (" (0000:03:00.1)  (0000:04:00.0) ", "0000:04:00.0", true),
            ("(0001:03:00.1)", "0000:03:00.1", false),
            ("(0000:03:00.1)", "0000:03:00.0", false),
            ("(03:*.*)", "0000:04:00.0", false),
        ];
        for (value, addr, hidden) in cases {
            assert_eq!(
                HideView::from_value(Some(value)).hides(&a(addr)),
                hidden,
                "{value} vs {addr}"
            );
        }
    }

    #[test]
    fn one_typo_hides_nothing() {
        for value in [
            "(0000:03:00.1)(0b::00.1)",
            "(0000.02:00.3)",
            "(0000:03:00.1),(0000:04:00.0)",
            "(0000:03:00.8)",
            "(0000:03:20.0)",
            "(0000:03:*.1)",
            "0000:03:00.1",
            "(0000:03:00.1",
        ] {
            let view = HideView::from_value(Some(value));
            assert!(!view.hides(&a("0000:03:00.1")), "{value}");
            assert!(view.malformed().is_some(), "{value}");
        }
        let err = parse_value("(0000:03:00.1)(0b::00.1)").unwrap_err();
        assert!(err.offending.starts_with("(0b::00.1)"));
    }

    #[test]
    fn last_occurrence_wins_and_legacy_is_ignored() {
        let view = HideView::from_cmdline(
            "xen-pciback.hide=(0000:01:00.0) ro xen_pciback.hide=(0000:02:00.0) pciback.hide=(0000:03:00.0)",
        );
        assert!(!view.hides(&a("0000:01:00.0")));
        assert!(view.hides(&a("0000:02:00.0")));
        assert!(!view.hides(&a("0000:03:00.0")));
        assert_eq!(view.legacy.as_deref(), Some("(0000:03:00.0)"));
    }

    #[test]
    fn disable_appends_canonical_entry_once() {
        let x = a("0000:0a:00.0");
        assert_eq!(
            plan_disable(None, &x),
            Ok(HideEdit::Set("(0000:0a:00.0)".into()))
        );
        assert_eq!(
            plan_disable(Some("(01:00.0)"), &x),
            Ok(HideEdit::Set("(01:00.0)(0000:0a:00.0)".into()))
        );
        assert_eq!(
            plan_disable(Some("(0000:0A:00.0)"), &x),
            Ok(HideEdit::Unchanged)
        );
        assert_eq!(
            plan_disable(Some("(0000:0a:*.*)"), &x),
            Ok(HideEdit::Unchanged)
        );
        assert!(plan_disable(Some("(0b::00.1)"), &x).is_err());
    }

    #[test]
    fn enable_removes_matches_and_expands_wildcards() {
        let existing: BTreeSet<PciAddress> = [
            "0000:03:00.0",
            "0000:03:00.1",
            "0000:03:00.2",
            "0000:04:00.0",
        ]
        .iter()
        .map(|s| a(s))
        .collect();
        let x = a("0000:03:00.1");
        assert_eq!(
            plan_enable(Some("(0000:03:00.1)"), &x, &existing),
            Ok(HideEdit::Delete)
        );
        assert_eq!(
            plan_enable(
                Some("(04:00.0) (0000:03:00.1) (0000:03:00.1)"),
                &x,
                &existing
            ),
            Ok(HideEdit::Set("(04:00.0)".into()))
        );
        assert_eq!(
            plan_enable(Some("(0000:03:00.*)(04:00.0)"), &x, &existing),
            Ok(HideEdit::Set(
                "(0000:03:00.0)(0000:03:00.2)(04:00.0)".into()
            ))
        );
        assert_eq!(
            plan_enable(Some("(04:00.0)"), &x, &existing),
            Ok(HideEdit::Unchanged)
        );
        assert_eq!(plan_enable(None, &x, &existing), Ok(HideEdit::Unchanged));
    }

    #[test]
    fn edits_reparse_to_the_intended_set() {
        let existing: BTreeSet<PciAddress> = (0..4u8)
            .flat_map(|s| (0..3u8).map(move |f| PciAddress::new(0, 5, s, f).unwrap()))
            .collect();
        let values = ["(05:*.*)", "(0000:05:01.*)(05:02.2)", "(05:00.0) (05:03.1)"];
        for value in values {
            let before = HideView::from_value(Some(value));
            for target in &existing {
                let after = match plan_enable(Some(value), target, &existing).unwrap() {
                    HideEdit::Unchanged => before.clone(),
                    HideEdit::Set(v) => HideView::from_value(Some(&v)),
                    HideEdit::Delete => HideView::from_value(None),
                };
                for other in &existing {
                    let want = other != target && before.hides(other);
                    assert_eq!(after.hides(other), want, "{value} unhide {target}: {other}");
                }
            }
        }
    }
}
