//! Any command line: the hide-list view never panics; when the value parses,
//! hiding and unhiding a function re-parses to exactly the intended set.
#![no_main]

use std::collections::BTreeSet;

use libfuzzer_sys::fuzz_target;
use pcipass::domain::PciAddress;
use pcipass::domain::hide::{HideEdit, HideView, plan_disable, plan_enable};

fuzz_target!(|input: (String, u8, u8, u8)| {
    let (line, bus, slot, function) = input;
    let view = HideView::from_cmdline(&line);
    let Some(addr) = PciAddress::new(0, bus, slot % 32, function % 8) else {
        return;
    };
    let Some(value) = view.value.clone() else {
        return;
    };
    if view.malformed().is_some() {
        assert!(plan_disable(Some(&value), &addr).is_err());
        return;
    }
    let apply = |edit: HideEdit| match edit {
        HideEdit::Unchanged => HideView::from_value(Some(&value)),
        HideEdit::Set(v) => HideView::from_value(Some(&v)),
        HideEdit::Delete => HideView::from_value(None),
    };
    let after = apply(plan_disable(Some(&value), &addr).unwrap());
    assert!(after.hides(&addr));
    let existing: BTreeSet<PciAddress> = (0..4)
        .filter_map(|f| PciAddress::new(0, bus, slot % 32, f))
        .chain([addr])
        .collect();
    let after = apply(plan_enable(Some(&value), &addr, &existing).unwrap());
    assert!(!after.hides(&addr));
    for other in existing.iter().filter(|o| **o != addr) {
        assert_eq!(after.hides(other), view.hides(other));
    }
});
