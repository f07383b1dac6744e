//! Property tests for the kernel model and hide-list edits: random
//! command lines and values never panic the model; for any list of
//! entries in any of the six forms, on a tree with bridges, hiding or
//! unhiding one function changes exactly that function's state, keeps
//! every other entry's text, and what pcipass writes is read back by the
//! kernel model as exactly the intended set.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] functions: a failure should fail the test"
)]

use pcipass::domain::PciAddress;
use pcipass::domain::hide::{HideEdit, HideView, Topology, plan_disable, plan_enable};
use pcipass::domain::kernel;
use proptest::prelude::*;

/// One entry as text, in any of the forms the kernel accepts.
fn entry() -> impl Strategy<Value = String> {
    (0u8..4, 0u8..4, 0u8..4, 0u8..6, any::<bool>()).prop_map(
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

/// Buses 0-2 with four slots of four functions; bus 3 sits behind the
/// bridge 0000:00:01.0 (and bus 2 behind 0000:00:02.0), so an entry naming
/// a bridge hides a whole bus.
fn tree() -> Topology {
    let bridge_of = |bus: u8| match bus {
        3 => vec![PciAddress::new(0, 0, 1, 0).unwrap()],
        2 => vec![PciAddress::new(0, 0, 2, 0).unwrap()],
        _ => vec![],
    };
    Topology::new((0..4u8).flat_map(move |b| {
        (0..4u8).flat_map(move |s| {
            (0..4u8).map(move |f| (PciAddress::new(0, b, s, f).unwrap(), bridge_of(b)))
        })
    }))
}

fn apply(value: &str, edit: HideEdit) -> (HideView, Option<String>) {
    match edit {
        HideEdit::Unchanged => (
            HideView::from_value(Some(value.as_bytes())),
            Some(value.to_owned()),
        ),
        HideEdit::Set(v) => (HideView::from_value(Some(v.as_bytes())), Some(v)),
        HideEdit::Delete => (HideView::from_value(None), None),
    }
}

/// Read back through the kernel model as the boot line would carry it.
fn through_the_kernel(written: &Option<String>) -> HideView {
    let line = match written {
        Some(v) => format!("root=/dev/sda1 ro xen-pciback.hide={v} quiet"),
        None => "root=/dev/sda1 ro quiet".to_owned(),
    };
    HideView::from_cmdline(line.as_bytes())
}

proptest! {
    #[test]
    fn random_command_lines_never_panic_the_model(line in proptest::collection::vec(any::<u8>(), 0..300)) {
        let view = HideView::from_cmdline(&line);
        let _ = view.entries();
        let _ = kernel::args(&line);
    }

    #[test]
    fn random_values_never_panic_pci_stub(value in "[ (0-9a-fA-FxX:.*)\u{a0}\t-]{0,80}") {
        let _ = kernel::parse_hide(value.as_bytes());
    }

    #[test]
    fn unhide_changes_only_the_target(entries in proptest::collection::vec(entry(), 1..6), b in 0u8..4, s in 0u8..4, f in 0u8..4) {
        let value = entries.concat();
        let tree = tree();
        let target = PciAddress::new(0, b, s, f).unwrap();
        let freed: Vec<PciAddress> = std::iter::once(target).chain(tree.bridges(&target).iter().copied()).collect();
        let before = HideView::from_value(Some(value.as_bytes()));
        let (after, written) = apply(&value, plan_enable(Some(value.as_bytes()), &target, &tree).unwrap());
        prop_assert!(!after.hides_in(&tree, &target));
        for other in tree.functions().filter(|o| !freed.contains(o)) {
            prop_assert_eq!(after.hides_in(&tree, other), before.hides_in(&tree, other), "{} in {}", other, value);
        }
        // What is written reads back through the kernel model as planned.
        let read = through_the_kernel(&written);
        for other in tree.functions() {
            prop_assert_eq!(read.hides_in(&tree, other), after.hides_in(&tree, other));
        }
        // Entries that did not hide the target keep their text.
        if let Some(written) = written {
            for e in &entries {
                let single = HideView::from_value(Some(e.as_bytes()));
                if !single.hides_in(&tree, &target) {
                    prop_assert!(written.contains(e.as_str()), "{} lost from {}", e, written);
                }
            }
        }
    }

    #[test]
    fn hide_changes_only_the_target(entries in proptest::collection::vec(entry(), 0..6), b in 0u8..4, s in 0u8..4, f in 0u8..4) {
        let value = entries.concat();
        let tree = tree();
        let current = (!value.is_empty()).then_some(value.as_bytes());
        let target = PciAddress::new(0, b, s, f).unwrap();
        let before = HideView::from_value(current);
        let edit = plan_disable(current, &target, &tree).unwrap();
        let (after, written) = apply(&value, edit.clone());
        prop_assert!(after.hides_in(&tree, &target));
        prop_assert_eq!(edit == HideEdit::Unchanged, before.hides_in(&tree, &target));
        // Everything else keeps its state, but what sits behind the target
        // when the target is a bridge.
        for other in tree.functions().filter(|o| **o != target && !tree.bridges(o).contains(&target)) {
            prop_assert_eq!(after.hides_in(&tree, other), before.hides_in(&tree, other));
        }
        let read = through_the_kernel(&written);
        prop_assert_eq!(read.entries(), after.entries());
    }
}
