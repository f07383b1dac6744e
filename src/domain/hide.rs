//! The `xen-pciback.hide` list as the kernel reads it (through
//! [`kernel`]), whether a function is hidden (its own id or a bridge above
//! it matches, as `pcistub_match_one` walks up), and the edits that hide
//! or unhide one function while keeping everything a person wrote.

use std::collections::{BTreeMap, BTreeSet};

use crate::domain::PciAddress;
use crate::domain::kernel::{self, Refused, StubEntry, StubId};

/// The parameter pcipass manages.
pub const HIDE_KEY: &str = "xen-pciback.hide";
/// The old out-of-tree driver's parameter: reported, never effective.
pub const LEGACY_KEY: &str = "pciback.hide";

/// One entry of the hide list: pci_stub's device id, `None` a wildcard.
pub type HideEntry = StubId;

impl StubId {
    /// True when the entry names `addr` itself.
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

/// The PCI tree: each function with the bridges above it, nearest first
/// (from the sysfs device path). A function missing from it has no
/// bridge above it as far as pcipass knows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topology {
    bridges: BTreeMap<PciAddress, Vec<PciAddress>>,
}

impl Topology {
    /// A tree from `(function, bridges above it nearest first)`.
    pub fn new(functions: impl IntoIterator<Item = (PciAddress, Vec<PciAddress>)>) -> Topology {
        Topology {
            bridges: functions.into_iter().collect(),
        }
    }

    /// A flat tree: the functions, no bridges.
    pub fn flat(functions: impl IntoIterator<Item = PciAddress>) -> Topology {
        Topology::new(functions.into_iter().map(|a| (a, Vec::new())))
    }

    /// The bridges above `addr`, nearest first.
    pub fn bridges(&self, addr: &PciAddress) -> &[PciAddress] {
        self.bridges.get(addr).map_or(&[], Vec::as_slice)
    }

    /// True when `addr` is in the tree.
    pub fn contains(&self, addr: &PciAddress) -> bool {
        self.bridges.contains_key(addr)
    }

    /// Every function, in address order.
    pub fn functions(&self) -> impl Iterator<Item = &PciAddress> {
        self.bridges.keys()
    }

    /// True when `entry` hides `addr`: it names the function or a bridge
    /// above it.
    pub fn covers(&self, entry: &HideEntry, addr: &PciAddress) -> bool {
        entry.matches(addr) || self.bridges(addr).iter().any(|b| entry.matches(b))
    }
}

/// Why a hide value does not parse (so the kernel hides nothing with it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("xen-pciback.hide={value}: {reason} at {offending:?}")]
pub struct HideParseError {
    /// The whole value (lossy UTF-8).
    pub value: String,
    /// The text from the first bad entry on.
    pub offending: String,
    /// What is wrong.
    pub reason: String,
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn parse_spanned(value: &[u8]) -> Result<Vec<StubEntry>, HideParseError> {
    kernel::parse_hide(value).map_err(|e| HideParseError {
        value: lossy(value),
        offending: lossy(&value[e.at.min(value.len())..])
            .chars()
            .take(40)
            .collect(),
        reason: e.reason.to_owned(),
    })
}

/// Parse a hide value into its entries, as pci_stub does.
pub fn parse_value(value: &[u8]) -> Result<Vec<HideEntry>, HideParseError> {
    Ok(parse_spanned(value)?.into_iter().map(|s| s.id).collect())
}

/// The hide list the kernel would use, from one command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HideView {
    /// The effective raw value (the last occurrence the kernel accepted).
    pub value: Option<Vec<u8>>,
    entries: Result<Vec<HideEntry>, HideParseError>,
    /// A `pciback.hide` value, which upstream kernels ignore.
    pub legacy: Option<String>,
    /// Occurrences the kernel refused (bare key, value over 1024 bytes).
    pub refused: Vec<Refused>,
    /// Occurrences after `--`, which go to init.
    pub after_end: usize,
}

impl HideView {
    /// The view of a whole command line (`/proc/cmdline`, or the dom0
    /// command line the next boot gets).
    pub fn from_cmdline(line: &[u8]) -> HideView {
        let param = kernel::charp(line, HIDE_KEY.as_bytes());
        let mut view = HideView::from_value(param.value);
        view.refused = param.refused;
        view.after_end = param.after_end;
        view.legacy = kernel::charp(line, LEGACY_KEY.as_bytes()).value.map(lossy);
        view
    }

    /// The view of a bare value.
    pub fn from_value(value: Option<&[u8]>) -> HideView {
        HideView {
            value: value.map(<[u8]>::to_vec),
            entries: value.map(parse_value).unwrap_or(Ok(Vec::new())),
            legacy: None,
            refused: Vec::new(),
            after_end: 0,
        }
    }

    /// True when an entry names `addr` itself.
    pub fn hides(&self, addr: &PciAddress) -> bool {
        self.entries().iter().any(|x| x.matches(addr))
    }

    /// True when the kernel hides `addr`: an entry names it or a bridge
    /// above it.
    pub fn hides_in(&self, tree: &Topology, addr: &PciAddress) -> bool {
        self.entries().iter().any(|x| tree.covers(x, addr))
    }

    /// The parse error when the value is malformed (the kernel hides nothing).
    pub fn malformed(&self) -> Option<&HideParseError> {
        self.entries.as_ref().err()
    }

    /// The entries, empty when malformed.
    pub fn entries(&self) -> &[HideEntry] {
        self.entries.as_deref().unwrap_or(&[])
    }

    /// The effective value as text (lossy), for logs and clients.
    pub fn value_text(&self) -> Option<String> {
        self.value.as_deref().map(lossy)
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

/// Hide `addr`: append its canonical entry unless it is already hidden
/// (by its own entry or a bridge's).
pub fn plan_disable(
    current: Option<&[u8]>,
    addr: &PciAddress,
    tree: &Topology,
) -> Result<HideEdit, HideParseError> {
    let Some(value) = current else {
        return Ok(HideEdit::Set(addr.hide_entry()));
    };
    let entries = parse_value(value)?;
    if entries.iter().any(|e| tree.covers(e, addr)) {
        return Ok(HideEdit::Unchanged);
    }
    let mut out = without_whitespace(value);
    out.push_str(&addr.hide_entry());
    Ok(HideEdit::Set(out))
}

/// Unhide `addr`: remove every entry that hides it (its own, a wildcard,
/// a bridge above it). What such an entry hid besides `addr` and the
/// bridges above it stays hidden: it is replaced by explicit entries for
/// the other functions of `tree` it covered.
pub fn plan_enable(
    current: Option<&[u8]>,
    addr: &PciAddress,
    tree: &Topology,
) -> Result<HideEdit, HideParseError> {
    let Some(value) = current else {
        return Ok(HideEdit::Unchanged);
    };
    let spanned = parse_spanned(value)?;
    if !spanned.iter().any(|s| tree.covers(&s.id, addr)) {
        return Ok(HideEdit::Unchanged);
    }
    let freed: BTreeSet<PciAddress> = std::iter::once(*addr)
        .chain(tree.bridges(addr).iter().copied())
        .collect();
    let mut out = Vec::with_capacity(value.len());
    let mut added = BTreeSet::new();
    let mut cursor = 0;
    for s in spanned.iter().filter(|s| tree.covers(&s.id, addr)) {
        out.extend_from_slice(&value[cursor..s.start]);
        for other in tree
            .functions()
            .filter(|a| !freed.contains(a) && tree.covers(&s.id, a))
        {
            // Only what no kept entry already hides.
            let kept = spanned
                .iter()
                .any(|k| !tree.covers(&k.id, addr) && tree.covers(&k.id, other));
            if !kept && added.insert(*other) {
                out.extend_from_slice(other.hide_entry().as_bytes());
            }
        }
        cursor = s.end;
    }
    out.extend_from_slice(&value[cursor..]);
    let out = without_whitespace(&out);
    if out.is_empty() {
        Ok(HideEdit::Delete)
    } else {
        Ok(HideEdit::Set(out))
    }
}

/// Spaces between entries are legal for the kernel but cannot be written
/// unquoted on a boot line, so written values carry none; every entry's
/// own text is kept. A value that parsed holds ASCII and kernel spaces
/// only.
fn without_whitespace(value: &[u8]) -> String {
    lossy(
        &value
            .iter()
            .copied()
            .filter(|b| !kernel::is_space(*b))
            .collect::<Vec<u8>>(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> PciAddress {
        s.parse().unwrap()
    }

    fn view(value: &str) -> HideView {
        HideView::from_value(Some(value.as_bytes()))
    }

    fn flat(addrs: &[&str]) -> Topology {
        Topology::flat(addrs.iter().map(|s| a(s)))
    }

    fn set(s: &str) -> HideEdit {
        HideEdit::Set(s.into())
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
            assert_eq!(view(value).hides(&a(addr)), hidden, "{value} vs {addr}");
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
            let v = view(value);
            assert!(!v.hides(&a("0000:03:00.1")), "{value}");
            assert!(v.malformed().is_some(), "{value}");
        }
        let err = parse_value(b"(0000:03:00.1)(0b::00.1)").unwrap_err();
        assert!(err.offending.starts_with("(0b::00.1)"));
    }

    #[test]
    fn last_occurrence_wins_and_legacy_is_ignored() {
        let v = HideView::from_cmdline(
            b"xen-pciback.hide=(0000:01:00.0) ro xen_pciback.hide=(0000:02:00.0) pciback.hide=(0000:03:00.0)",
        );
        assert!(!v.hides(&a("0000:01:00.0")));
        assert!(v.hides(&a("0000:02:00.0")));
        assert!(!v.hides(&a("0000:03:00.0")));
        assert_eq!(v.legacy.as_deref(), Some("(0000:03:00.0)"));
    }

    /// A root port 00:01.0 with a GPU (01:00.0, 01:00.1) behind it, and a
    /// NIC at 00:1f.6 on the root bus.
    fn tree() -> Topology {
        Topology::new([
            (a("0000:00:01.0"), vec![]),
            (a("0000:01:00.0"), vec![a("0000:00:01.0")]),
            (a("0000:01:00.1"), vec![a("0000:00:01.0")]),
            (a("0000:00:1f.6"), vec![]),
        ])
    }

    #[test]
    fn a_bridge_entry_hides_what_is_behind_it() {
        let v = view("(0000:00:01.0)");
        let t = tree();
        assert!(v.hides_in(&t, &a("0000:01:00.1")));
        assert!(!v.hides(&a("0000:01:00.1")), "not by its own id");
        assert!(!v.hides_in(&t, &a("0000:00:1f.6")));
    }

    #[test]
    fn disable_appends_canonical_entry_once() {
        let x = a("0000:0a:00.0");
        let t = flat(&["0000:0a:00.0"]);
        assert_eq!(plan_disable(None, &x, &t), Ok(set("(0000:0a:00.0)")));
        assert_eq!(
            plan_disable(Some(b"(01:00.0)"), &x, &t),
            Ok(set("(01:00.0)(0000:0a:00.0)"))
        );
        assert_eq!(
            plan_disable(Some(b"(0000:0A:00.0)"), &x, &t),
            Ok(HideEdit::Unchanged)
        );
        assert_eq!(
            plan_disable(Some(b"(0000:0a:*.*)"), &x, &t),
            Ok(HideEdit::Unchanged)
        );
        assert_eq!(plan_disable(Some(b""), &x, &t), Ok(set("(0000:0a:00.0)")));
        assert!(plan_disable(Some(b"(0b::00.1)"), &x, &t).is_err());
        assert_eq!(
            plan_disable(Some(b"(00:01.0)"), &a("0000:01:00.0"), &tree()),
            Ok(HideEdit::Unchanged),
            "already hidden through its bridge"
        );
    }

    #[test]
    fn enable_removes_matches_and_expands_wildcards() {
        let t = flat(&[
            "0000:03:00.0",
            "0000:03:00.1",
            "0000:03:00.2",
            "0000:04:00.0",
        ]);
        let x = a("0000:03:00.1");
        assert_eq!(
            plan_enable(Some(b"(0000:03:00.1)"), &x, &t),
            Ok(HideEdit::Delete)
        );
        assert_eq!(
            plan_enable(Some(b"(04:00.0) (0000:03:00.1) (0000:03:00.1)"), &x, &t),
            Ok(set("(04:00.0)"))
        );
        assert_eq!(
            plan_enable(Some(b"(0000:03:00.*)(04:00.0)"), &x, &t),
            Ok(set("(0000:03:00.0)(0000:03:00.2)(04:00.0)"))
        );
        assert_eq!(
            plan_enable(Some(b"(04:00.0)"), &x, &t),
            Ok(HideEdit::Unchanged)
        );
        assert_eq!(plan_enable(None, &x, &t), Ok(HideEdit::Unchanged));
    }

    #[test]
    fn enable_behind_a_hidden_bridge_keeps_the_siblings_hidden() {
        let t = tree();
        assert_eq!(
            plan_enable(Some(b"(0000:00:01.0)(00:1f.6)"), &a("0000:01:00.0"), &t),
            Ok(set("(0000:01:00.1)(00:1f.6)"))
        );
        assert_eq!(
            plan_enable(Some(b"(00:*.*)"), &a("0000:01:00.1"), &t),
            Ok(set("(0000:00:1f.6)(0000:01:00.0)"))
        );
    }

    #[test]
    fn edits_reparse_to_the_intended_set() {
        let t = Topology::flat(
            (0..4u8).flat_map(|s| (0..3u8).map(move |f| PciAddress::new(0, 5, s, f).unwrap())),
        );
        let values = ["(05:*.*)", "(0000:05:01.*)(05:02.2)", "(05:00.0) (05:03.1)"];
        for value in values {
            let before = view(value);
            for target in t.functions() {
                let after = match plan_enable(Some(value.as_bytes()), target, &t).unwrap() {
                    HideEdit::Unchanged => before.clone(),
                    HideEdit::Set(v) => view(&v),
                    HideEdit::Delete => HideView::from_value(None),
                };
                for other in t.functions() {
                    let want = other != target && before.hides(other);
                    assert_eq!(after.hides(other), want, "{value} unhide {target}: {other}");
                }
            }
        }
    }
}
