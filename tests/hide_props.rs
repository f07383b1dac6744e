//! Property tests for hide-list edits: for any list of entries in any of
//! the six forms, hiding or unhiding one function changes exactly that
//! function's state and keeps every other entry's text.

use std::collections::BTreeSet;

use pcipass::domain::PciAddress;
use pcipass::domain::hide::{HideEdit, HideView, plan_disable, plan_enable};
use proptest::prelude::*;

/// One entry as text, in any of the forms the kernel accepts.
fn entry() -> impl Strategy<Value = String> {
    (0u8..3, 0u8..4, 0u8..4, 0u8..6, any::<bool>()).prop_map(
        |(bus, slot, function, form, upper)| {
            let text = match form {
                0 => format!("(0000:{bus:02x}:{slot:02x}.{function})"),
                1 => format!("(0000:{bus:02x}:{slot:02x}.*)"),
                2 => format!("(0000:{bus:02x}:*.*)"),
                3 => format!("({bus:02x}:{slot:02x}.{function})"),
                4 => format!("({bus:x}:{slot:x}.*)"),
                _ => format!("({bus:02x}:*.*)"),
            };
            if upper { text.to_uppercase() } else { text }
        },
    )
}

fn existing() -> BTreeSet<PciAddress> {
    (0..3u8)
        .flat_map(|b| {
            (0..4u8).flat_map(move |s| (0..4u8).map(move |f| PciAddress::new(0, b, s, f).unwrap()))
        })
        .collect()
}

fn apply(value: &str, edit: HideEdit) -> (HideView, Option<String>) {
    match edit {
        HideEdit::Unchanged => (HideView::from_value(Some(value)), Some(value.to_owned())),
        HideEdit::Set(v) => (HideView::from_value(Some(&v)), Some(v)),
        HideEdit::Delete => (HideView::from_value(None), None),
    }
}

proptest! {
    #[test]
    fn unhide_changes_only_the_target(entries in proptest::collection::vec(entry(), 1..6), b in 0u8..3, s in 0u8..4, f in 0u8..4) {
        let value = entries.concat();
        let target = PciAddress::new(0, b, s, f).unwrap();
        let before = HideView::from_value(Some(&value));
        let (after, written) = apply(&value, plan_enable(Some(&value), &target, &existing()).unwrap());
        prop_assert!(!after.hides(&target));
        for other in existing().iter().filter(|o| **o != target) {
            prop_assert_eq!(after.hides(other), before.hides(other), "{} in {}", other, value);
        }
        // Exact entries that did not cover the target keep their text.
        if let Some(written) = written {
            for e in &entries {
                let single = HideView::from_value(Some(e));
                if !single.hides(&target) {
                    prop_assert!(written.contains(e.as_str()), "{} lost from {}", e, written);
                }
            }
        }
    }

    #[test]
    fn hide_changes_only_the_target(entries in proptest::collection::vec(entry(), 0..6), b in 0u8..3, s in 0u8..4, f in 0u8..4) {
        let value = entries.concat();
        let current = (!value.is_empty()).then_some(value.as_str());
        let target = PciAddress::new(0, b, s, f).unwrap();
        let before = HideView::from_value(current);
        let edit = plan_disable(current, &target).unwrap();
        let (after, _) = apply(&value, edit.clone());
        prop_assert!(after.hides(&target));
        prop_assert_eq!(edit == HideEdit::Unchanged, before.hides(&target));
        for other in existing().iter().filter(|o| **o != target) {
            prop_assert_eq!(after.hides(other), before.hides(other));
        }
    }
}
