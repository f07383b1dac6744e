//! Any command line bytes: the kernel model never panics; when the value
//! parses, hiding and unhiding a function (behind a bridge or not) reads
//! back to exactly the intended set.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pcipass::domain::PciAddress;
use pcipass::domain::hide::{HideEdit, HideView, Topology, plan_disable, plan_enable};

fuzz_target!(|input: (Vec<u8>, u8, u8, u8, bool)| {
    let (line, bus, slot, function, behind_bridge) = input;
    let view = HideView::from_cmdline(&line);
    let Some(addr) = PciAddress::new(0, bus, slot % 32, function % 8) else {
        return;
    };
    let Some(value) = view.value.clone() else {
        return;
    };
    let bridges = if behind_bridge {
        PciAddress::new(0, bus.wrapping_sub(1), 1, 0).into_iter().collect()
    } else {
        Vec::new()
    };
    let tree = Topology::new(
        (0..4)
            .filter_map(|f| PciAddress::new(0, bus, slot % 32, f))
            .chain([addr])
            .map(|a| (a, bridges.clone())),
    );
    if view.malformed().is_some() {
        assert!(plan_disable(Some(&value), &addr, &tree).is_err());
        return;
    }
    let apply = |edit: HideEdit| match edit {
        HideEdit::Unchanged => HideView::from_value(Some(&value)),
        HideEdit::Set(v) => HideView::from_value(Some(v.as_bytes())),
        HideEdit::Delete => HideView::from_value(None),
    };
    let after = apply(plan_disable(Some(&value), &addr, &tree).unwrap());
    assert!(after.hides_in(&tree, &addr));
    let after = apply(plan_enable(Some(&value), &addr, &tree).unwrap());
    assert!(!after.hides_in(&tree, &addr));
    for other in tree.functions().filter(|o| **o != addr) {
        assert_eq!(after.hides_in(&tree, other), view.hides_in(&tree, other));
    }
});
