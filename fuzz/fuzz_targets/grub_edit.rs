//! Any grub.cfg bytes and any value: parsing never panics; an accepted
//! edit reads back through the whole chain (GRUB, Xen, the kernel) as the
//! value written, and deleting it again restores every other byte.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pcipass::domain::grub::{Edit, GrubConfig, GrubEnv, Matching, Target};
use pcipass::domain::kernel;

const KEY: &str = "pcipass.fuzz";

fn value_of(config: &GrubConfig) -> Option<Vec<u8>> {
    let cmdline = config.boot_cmdline().ok()?;
    kernel::charp(&cmdline.bytes, KEY.as_bytes())
        .value
        .map(<[u8]>::to_vec)
}

fuzz_target!(|input: (Vec<u8>, String)| {
    let (text, value) = input;
    let Ok(config) = GrubConfig::parse(&text, &GrubEnv::absent()) else {
        return;
    };
    if config.boot_cmdline().is_err() || value_of(&config).is_some() {
        return;
    }
    let set = Edit::Set {
        key: KEY,
        value: Some(&value),
        matching: Matching::Kernel,
    };
    let Ok(edited) = config.edited(Target::Dom0, &set) else {
        return;
    };
    let again = config.reparsed(&edited).expect("an edited file parses");
    assert_eq!(value_of(&again), Some(value.clone().into_bytes()));
    let delete = Edit::Delete {
        key: KEY,
        matching: Matching::Kernel,
    };
    let restored = again.edited(Target::Dom0, &delete).unwrap();
    assert_eq!(
        config.reparsed(&restored).unwrap().boot_cmdline().unwrap(),
        config.boot_cmdline().unwrap()
    );
});
