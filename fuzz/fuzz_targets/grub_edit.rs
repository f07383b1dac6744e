//! Any grub.cfg and any value: parsing never panics; an accepted edit
//! re-parses to the value written, and deleting it again restores every
//! other byte.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pcipass::domain::grub::{GrubConfig, Target};

fuzz_target!(|input: (String, String)| {
    let (text, value) = input;
    let Ok(config) = GrubConfig::parse(&text) else {
        return;
    };
    if config
        .get(Target::Dom0, "pcipass.fuzz")
        .ok()
        .flatten()
        .is_some()
    {
        return;
    }
    let Ok(edited) = config.set(Target::Dom0, "pcipass.fuzz", Some(&value)) else {
        return;
    };
    let again = GrubConfig::parse(&edited).expect("an edited file parses");
    assert_eq!(
        again.get(Target::Dom0, "pcipass.fuzz").unwrap().as_deref(),
        Some(value.as_str())
    );
    let restored = again.delete(Target::Dom0, "pcipass.fuzz").unwrap();
    assert_eq!(
        GrubConfig::parse(&restored)
            .unwrap()
            .args(Target::Dom0)
            .unwrap(),
        config.args(Target::Dom0).unwrap()
    );
});
