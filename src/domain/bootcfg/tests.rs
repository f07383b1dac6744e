//! The boot-configuration backends and the engine on mock hosts.

use std::sync::Arc;

use super::*;
use crate::domain::Dom0Access;
use crate::domain::grub::GrubConfig;
use crate::domain::grub::GrubEnv;
use crate::domain::hide::{self, Topology};

/// The demo mock host (its PCI tree, disks and mounts) with this
/// grub.cfg, booted with this command line.
fn host_with(grub: &str, cmdline: &str) -> (tempfile::TempDir, HostRoot) {
    let dir = tempfile::tempdir().unwrap();
    crate::host::mock::create(dir.path(), crate::host::mock::Profile::Demo).unwrap();
    std::fs::write(dir.path().join("boot/grub/grub.cfg"), grub).unwrap();
    let host = HostRoot::new(dir.path());
    boot_to(&host, cmdline);
    (dir, host)
}

/// Boot the mock host with `cmdline`, as the kernel would: the functions
/// it hides are bound to pciback, the others to their own driver.
fn boot_to(host: &HostRoot, cmdline: impl AsRef<[u8]>) {
    let line = cmdline.as_ref().trim_ascii_end();
    let view = HideView::from_cmdline(line);
    let tree = pci_tree(host).unwrap();
    crate::host::mock::reboot(host, line, &|a| view.hides_in(&tree, a)).unwrap();
}

const GRUB: &str = include_str!("../../../tests/fixtures/grub/xcpng-grub.cfg");

fn native_engine(host: &HostRoot) -> Dom0AccessEngine {
    Dom0AccessEngine::new(Box::new(NativeBootConfig::new(host.clone())), host.clone())
}

/// [`GRUB`] edited by hand to hide 0000:01:00.0.
fn grub_hiding_gpu() -> String {
    let hidden = GRUB.replace("quiet vga=785", "quiet xen-pciback.hide=(01:00.0) vga=785");
    assert_ne!(hidden, GRUB);
    hidden
}

#[test]
fn status_cycle_through_edits_and_reboot() {
    let (dir, host) = host_with(GRUB, "root=LABEL=x ro\n");
    let engine = native_engine(&host);
    let gpu: PciAddress = "0000:01:00.0".parse().unwrap();
    assert_eq!(engine.status(&gpu).unwrap(), Dom0Access::Enabled);
    assert_eq!(engine.disable(&gpu).unwrap(), Dom0Access::DisableOnReboot);
    assert_eq!(engine.disable(&gpu).unwrap(), Dom0Access::DisableOnReboot);
    boot_to(&host, "ro xen-pciback.hide=(0000:01:00.0)\n");
    assert_eq!(engine.status(&gpu).unwrap(), Dom0Access::Disabled);
    assert_eq!(engine.enable(&gpu).unwrap(), Dom0Access::EnableOnReboot);
    let text = std::fs::read_to_string(dir.path().join("boot/grub/grub.cfg")).unwrap();
    assert_eq!(text, GRUB, "the parameter is removed entirely when empty");
}

#[test]
fn hand_edits_show_up_at_once_between_cached_reads() {
    let (dir, host) = host_with(GRUB, "ro\n");
    let engine = native_engine(&host);
    let gpu: PciAddress = "0000:01:00.0".parse().unwrap();
    let grub = dir.path().join("boot/grub/grub.cfg");
    let hidden = grub_hiding_gpu();
    for round in 0..50 {
        // Served from the cache while nothing changes...
        for _ in 0..3 {
            assert_eq!(engine.status(&gpu).unwrap(), Dom0Access::Enabled, "{round}");
        }
        // ...and a hand edit, in place or by rename, is seen by the very
        // next call, well inside the change watch's trust period.
        if round % 2 == 0 {
            std::fs::write(&grub, &hidden).unwrap();
        } else {
            let tmp = dir.path().join("boot/grub/grub.cfg.tmp");
            std::fs::write(&tmp, &hidden).unwrap();
            std::fs::rename(&tmp, &grub).unwrap();
        }
        assert_eq!(
            engine.status(&gpu).unwrap(),
            Dom0Access::DisableOnReboot,
            "{round}"
        );
        assert_eq!(
            engine.status(&gpu).unwrap(),
            Dom0Access::DisableOnReboot,
            "{round}"
        );
        std::fs::write(&grub, GRUB).unwrap();
    }
    boot_to(&host, "ro xen-pciback.hide=(01:00.0)\n");
    assert_eq!(engine.status(&gpu).unwrap(), Dom0Access::EnableOnReboot);
}

#[test]
fn concurrent_readers_see_a_hand_edit_made_before_they_ask() {
    let (dir, host) = host_with(GRUB, "ro\n");
    let engine = Arc::new(native_engine(&host));
    let gpu: PciAddress = "0000:01:00.0".parse().unwrap();
    let grub = dir.path().join("boot/grub/grub.cfg");
    let hidden = grub_hiding_gpu();
    for round in 0..20 {
        let (text, expected) = if round % 2 == 0 {
            (&hidden, Dom0Access::DisableOnReboot)
        } else {
            (&GRUB.to_owned(), Dom0Access::Enabled)
        };
        std::fs::write(&grub, text).unwrap();
        let readers: Vec<_> = (0..4)
            .map(|_| {
                let engine = engine.clone();
                std::thread::spawn(move || {
                    (0..200).all(|_| engine.status(&gpu).unwrap() == expected)
                })
            })
            .collect();
        for r in readers {
            assert!(
                r.join().unwrap(),
                "round {round}: a stale status after the edit"
            );
        }
    }
}

#[test]
fn malformed_value_refuses_edits_and_hides_nothing() {
    let broken = GRUB.replace(
        "quiet vga=785",
        "quiet xen-pciback.hide=(0000:01:00.0)(0b::00.1) vga=785",
    );
    let (dir, host) = host_with(&broken, "ro\n");
    let engine = native_engine(&host);
    let gpu: PciAddress = "0000:01:00.0".parse().unwrap();
    assert_eq!(engine.status(&gpu).unwrap(), Dom0Access::Enabled);
    assert!(matches!(
        engine.disable(&gpu),
        Err(BootConfigError::HideListMalformed(_))
    ));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("boot/grub/grub.cfg")).unwrap(),
        broken
    );
}

#[test]
fn concurrent_edits_lose_nothing() {
    let (dir, host) = host_with(GRUB, "ro\n");
    let backend = std::sync::Arc::new(NativeBootConfig::new(host.clone()));
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            let backend = backend.clone();
            std::thread::spawn(move || {
                for i in 0..8u8 {
                    let addr = PciAddress::new(0, t + 1, i, 0).unwrap();
                    let tree = Topology::flat([addr]);
                    let config: &dyn BootConfig = backend.as_ref();
                    config
                        .update_hide(&mut |c| hide::plan_disable(c, &addr, &tree), &|_, _| Ok(()))
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let text = std::fs::read(dir.path().join("boot/grub/grub.cfg")).unwrap();
    let config = GrubConfig::parse(&text, &GrubEnv::absent()).unwrap();
    let view = grub_boot_view(&config).unwrap();
    assert_eq!(view.entries().len(), 32);
}

fn a(s: &str) -> PciAddress {
    s.parse().unwrap()
}

fn grub_bytes(dir: &tempfile::TempDir) -> Vec<u8> {
    std::fs::read(dir.path().join("boot/grub/grub.cfg")).unwrap()
}

#[test]
fn a_hidden_bridge_hides_the_functions_behind_it() {
    // 0000:00:01.0 is the root port above the GPU and its audio function.
    let grub = GRUB.replace(
        "quiet vga=785",
        "quiet xen-pciback.hide=(0000:00:01.0) vga=785",
    );
    let (_dir, host) = host_with(&grub, "ro xen-pciback.hide=(00:01.0)\n");
    let engine = native_engine(&host);
    for f in ["0000:01:00.0", "0000:01:00.1"] {
        assert_eq!(engine.status(&a(f)).unwrap(), Dom0Access::Disabled, "{f}");
    }
    assert_eq!(
        engine.status(&a("0000:00:1f.6")).unwrap(),
        Dom0Access::Enabled
    );
    // Unhiding the GPU keeps its sibling hidden.
    assert_eq!(
        engine.enable(&a("0000:01:00.0")).unwrap(),
        Dom0Access::EnableOnReboot
    );
    assert_eq!(
        engine.status(&a("0000:01:00.1")).unwrap(),
        Dom0Access::Disabled
    );
}

#[test]
fn an_edit_that_would_hide_a_boot_disk_is_refused_and_writes_nothing() {
    let (dir, host) = host_with(GRUB, "ro\n");
    let engine = native_engine(&host);
    let before = grub_bytes(&dir);
    assert!(matches!(
        engine.disable(&a("0000:02:00.0")),
        Err(BootConfigError::BootDevice { .. })
    ));
    assert_eq!(grub_bytes(&dir), before);
}

#[test]
fn a_boot_disk_already_hidden_by_hand_does_not_block_other_edits() {
    // The root port above the NVMe that holds `/`, hidden by hand.
    let grub = GRUB.replace(
        "quiet vga=785",
        "quiet xen-pciback.hide=(0000:00:1d.0) vga=785",
    );
    let (_dir, host) = host_with(&grub, "ro\n");
    let engine = native_engine(&host);
    assert_eq!(
        engine.status(&a("0000:02:00.0")).unwrap(),
        Dom0Access::DisableOnReboot
    );
    assert_eq!(
        engine.disable(&a("0000:01:00.0")).unwrap(),
        Dom0Access::DisableOnReboot
    );
}

#[test]
fn an_unreadable_pci_tree_refuses_a_wildcard_unhide() {
    let grub = GRUB.replace(
        "quiet vga=785",
        "quiet xen-pciback.hide=(0000:03:*.*) vga=785",
    );
    let (dir, host) = host_with(&grub, "ro\n");
    let engine = native_engine(&host);
    let before = grub_bytes(&dir);
    let devices = dir.path().join("sys/bus/pci/devices");
    std::fs::rename(&devices, dir.path().join("sys/bus/pci/devices.away")).unwrap();
    assert!(matches!(
        engine.enable(&a("0000:03:00.0")),
        Err(BootConfigError::Host(_))
    ));
    assert_eq!(grub_bytes(&dir), before, "no sibling silently unhidden");
}

#[test]
fn a_symlinked_grub_cfg_is_edited_through_its_link_inside_the_root() {
    let (dir, host) = host_with(GRUB, "ro\n");
    let grub = dir.path().join("boot/grub/grub.cfg");
    std::fs::rename(&grub, dir.path().join("boot/grub/real.cfg")).unwrap();
    for target in ["real.cfg", "/boot/grub/real.cfg"] {
        let _ = std::fs::remove_file(&grub);
        std::os::unix::fs::symlink(target, &grub).unwrap();
        let engine = native_engine(&host);
        assert_eq!(
            engine.disable(&a("0000:01:00.0")).unwrap(),
            Dom0Access::DisableOnReboot
        );
        assert!(grub.is_symlink(), "{target}: the link is kept");
        let text = std::fs::read_to_string(dir.path().join("boot/grub/real.cfg")).unwrap();
        assert!(text.contains("xen-pciback.hide=(0000:01:00.0)"), "{target}");
        engine.enable(&a("0000:01:00.0")).unwrap();
    }
}

#[test]
fn a_grub_cfg_link_leaving_the_root_is_an_error() {
    let (dir, host) = host_with(GRUB, "ro\n");
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("grub.cfg"), GRUB).unwrap();
    let grub = dir.path().join("boot/grub/grub.cfg");
    std::fs::remove_file(&grub).unwrap();
    let depth = dir.path().components().count() + 2;
    let escape = format!(
        "{}{}",
        "../".repeat(depth),
        outside.path().join("grub.cfg").display()
    );
    std::os::unix::fs::symlink(&escape, &grub).unwrap();
    let engine = native_engine(&host);
    assert!(engine.status(&a("0000:01:00.0")).is_err());
    assert!(engine.disable(&a("0000:01:00.0")).is_err());
    assert_eq!(
        std::fs::read_to_string(outside.path().join("grub.cfg")).unwrap(),
        GRUB
    );
}

#[test]
fn quoted_and_double_dash_command_lines_read_as_the_kernel_reads_them() {
    let (_dir, host) = host_with(
        GRUB,
        "ro \"xen-pciback.hide=(01:00.0) (01:00.1)\" -- xen-pciback.hide=(00:1f.6)\n",
    );
    let engine = native_engine(&host);
    let running = engine.running_view().unwrap();
    assert!(running.hides(&a("0000:01:00.1")));
    assert!(
        !running.hides(&a("0000:00:1f.6")),
        "after -- it goes to init"
    );
    // The kernel's isspace() counts 0xa0 (Latin-1) as a space.
    boot_to(&host, b"ro\xa0xen-pciback.hide=(00:1f.6)\n");
    assert_eq!(
        engine.status(&a("0000:00:1f.6")).unwrap(),
        Dom0Access::EnableOnReboot
    );
}

/// Every profile says how its kernel has xen-pciback: the XCP-ng ones
/// built in, the Debian ones (GRUB and Xen's EFI loader) as a module the
/// initramfs does not load yet. None is "unknown", so edits there work.
#[test]
fn every_profile_says_how_xen_pciback_loads() {
    use crate::domain::pciback::{Loading, Tool, loading};
    use crate::host::mock::Profile;
    for (profile, want) in [
        (Profile::Demo, Loading::BuiltIn),
        (Profile::DemoUefi, Loading::BuiltIn),
        (Profile::Scale(10), Loading::BuiltIn),
        (Profile::Debian, Loading::NotEarly(Tool::InitramfsTools)),
        (Profile::XenEfi, Loading::NotEarly(Tool::InitramfsTools)),
    ] {
        let dir = tempfile::tempdir().unwrap();
        crate::host::mock::create(dir.path(), profile).unwrap();
        let facts = crate::host::modules::pciback_facts(&HostRoot::new(dir.path())).unwrap();
        assert_eq!(loading(&facts), want, "{profile:?}");
    }
}

/// The demo host with its kernel's module facts as a sandbox that hides
/// `/lib/modules` shows them: `lib/modules` gone, and `sys/module`'s
/// xen_pciback directory as `sysfs` says (`None`: not there).
fn demo_without_lib_modules(sysfs: Option<&[(&str, &str)]>) -> (tempfile::TempDir, HostRoot) {
    let (dir, host) = host_with(GRUB, "ro\n");
    std::fs::remove_dir_all(dir.path().join("lib/modules")).unwrap();
    let sys = dir.path().join(crate::host::modules::SYS_MODULE_PCIBACK);
    std::fs::remove_dir_all(&sys).unwrap();
    for (rel, text) in sysfs.unwrap_or_default() {
        let path = sys.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    if sysfs.is_some() {
        std::fs::create_dir_all(&sys).unwrap();
    }
    (dir, host)
}

#[test]
fn a_hide_is_refused_when_how_xen_pciback_loads_cannot_be_told() {
    let (dir, host) = demo_without_lib_modules(None);
    let engine = native_engine(&host);
    let before = grub_bytes(&dir);
    let err = engine.disable(&a("0000:01:00.0")).unwrap_err();
    let BootConfigError::PcibackUnknown { kernel_release } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(kernel_release, "4.19.0+1");
    let text = err.to_string();
    for part in [
        "/lib/modules/4.19.0+1",
        "ProtectKernelModules",
        "modprobe xen-pciback",
    ] {
        assert!(text.contains(part), "{part}: {text}");
    }
    assert_eq!(grub_bytes(&dir), before, "nothing written");
    assert!(!dir.path().join(MODPROBE_DROPIN).exists());
    // Unhiding stays possible: it needs nothing from xen-pciback.
    assert_eq!(
        engine.enable(&a("0000:01:00.0")).unwrap(),
        Dom0Access::Enabled
    );
}

#[test]
fn sysfs_settles_a_built_in_xen_pciback_without_lib_modules() {
    // Built in, with parameters: the directory, no initstate.
    let (dir, host) = demo_without_lib_modules(Some(&[("parameters/passthrough", "0\n")]));
    let engine = native_engine(&host);
    assert_eq!(
        engine.disable(&a("0000:01:00.0")).unwrap(),
        Dom0Access::DisableOnReboot
    );
    assert!(!dir.path().join(MODPROBE_DROPIN).exists());
    // Loaded as a module (initstate): the early-load step runs, and with
    // no way to rebuild the initramfs it is refused with what to do.
    let (dir, host) = demo_without_lib_modules(Some(&[("initstate", "live\n")]));
    let engine = native_engine(&host);
    let before = grub_bytes(&dir);
    let err = engine.disable(&a("0000:01:00.0")).unwrap_err();
    assert!(matches!(err, BootConfigError::EditsRefused(_)), "{err:?}");
    assert_eq!(grub_bytes(&dir), before);
}

/// The `debian` profile with Debian's generator at `usr/sbin/grub-mkconfig`
/// (its lines that source the defaults, as Debian 12 spells them: through
/// `${sysconfdir}`) keeps the hide list in pcipass's drop-in, which is read
/// last; with upstream GRUB's, in the block of `/etc/default/grub`.
#[test]
fn the_debian_generator_as_packaged_reads_pcipass_drop_in() {
    use crate::host::boot::generators;
    let dir = tempfile::tempdir().unwrap();
    crate::host::mock::create(dir.path(), crate::host::mock::Profile::Debian).unwrap();
    let host = HostRoot::new(dir.path());
    std::fs::create_dir_all(dir.path().join("usr/sbin")).unwrap();
    let program = dir.path().join("usr/sbin/grub-mkconfig");
    std::fs::write(&program, generators::DEBIAN).unwrap();
    assert_eq!(DefaultsPlace::for_host(&host), DefaultsPlace::DropIn);
    std::fs::write(&program, generators::UPSTREAM).unwrap();
    assert_eq!(DefaultsPlace::for_host(&host), DefaultsPlace::DefaultGrub);
}

/// A function hidden by hand (here: xen.cfg edited directly) on a host
/// whose xen-pciback is a module gets its softdep at the next pcipass
/// edit: the early-load needs come from the whole resulting hide list,
/// not only from the function the edit adds.
#[test]
fn a_later_edit_sets_up_early_loading_for_a_function_hidden_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    crate::host::mock::create(dir.path(), crate::host::mock::Profile::XenEfi).unwrap();
    let host = HostRoot::new(dir.path());
    let cfg = "boot/efi/EFI/xen/xen.cfg";
    let text = std::fs::read_to_string(dir.path().join(cfg)).unwrap();
    let hand = text.replace(
        "kernel=vmlinuz-6.1.0-28-amd64 ",
        "kernel=vmlinuz-6.1.0-28-amd64 xen-pciback.hide=(0000:00:14.0) ",
    );
    assert_ne!(hand, text);
    std::fs::write(dir.path().join(cfg), hand).unwrap();
    let engine = Dom0AccessEngine::new(
        Box::new(XenEfiBootConfig::new(host.clone(), cfg)),
        host.clone(),
    )
    .with_initramfs(InitramfsUpdate::Mock);
    assert_eq!(
        engine.disable(&a("0000:01:00.0")).unwrap(),
        Dom0Access::DisableOnReboot
    );
    let conf = std::fs::read_to_string(dir.path().join(MODPROBE_DROPIN)).unwrap();
    for module in ["xhci_pci", "nouveau"] {
        assert!(
            conf.contains(&format!("softdep {module} pre: xen-pciback\n")),
            "{module}: {conf}"
        );
    }
    // After the reboot xen-pciback takes both.
    crate::domain::mock_boot::reboot(&host).unwrap();
    for f in ["0000:00:14.0", "0000:01:00.0"] {
        assert_eq!(engine.status(&a(f)).unwrap(), Dom0Access::Disabled, "{f}");
    }
}

/// The `xen-efi` profile and an engine on its xen.cfg that rebuilds the
/// mock initramfs as `update-initramfs` would.
fn xen_efi_host() -> (tempfile::TempDir, HostRoot, Dom0AccessEngine) {
    let dir = tempfile::tempdir().unwrap();
    crate::host::mock::create(dir.path(), crate::host::mock::Profile::XenEfi).unwrap();
    let host = HostRoot::new(dir.path());
    let engine = Dom0AccessEngine::new(
        Box::new(XenEfiBootConfig::new(
            host.clone(),
            "boot/efi/EFI/xen/xen.cfg",
        )),
        host.clone(),
    )
    .with_initramfs(InitramfsUpdate::Mock);
    (dir, host, engine)
}

const ESP_INITRD: &str = "boot/efi/EFI/xen/initrd.img-6.1.0-28-amd64";
const BOOT_INITRD: &str = "boot/initrd.img-6.1.0-28-amd64";

/// Seen on the real lab: on a host Xen's EFI loader boots, the initramfs
/// that boots is the ESP's copy (`ramdisk=` beside xen.efi), not the one
/// `update-initramfs` rebuilds in /boot. A hide is effective after the
/// reboot only because pcipass makes that copy the rebuilt image.
#[test]
fn xen_efi_hide_takes_effect_through_the_esp_initramfs() {
    let (dir, host, engine) = xen_efi_host();
    let nic = a("0000:03:00.0");
    let shipped = std::fs::read(dir.path().join(ESP_INITRD)).unwrap();
    assert_eq!(engine.disable(&nic).unwrap(), Dom0Access::DisableOnReboot);
    let esp = std::fs::read(dir.path().join(ESP_INITRD)).unwrap();
    assert_ne!(esp, shipped, "the ESP's initramfs was not refreshed");
    assert_eq!(esp, std::fs::read(dir.path().join(BOOT_INITRD)).unwrap());
    crate::domain::mock_boot::reboot(&host).unwrap();
    assert_eq!(engine.status(&nic).unwrap(), Dom0Access::Disabled);
}

/// The mock boots the initramfs the loader loads: with the ESP's copy
/// left as shipped (what pcipass did before), the hide is on dom0's
/// command line but the native driver keeps the function, as on the real
/// host, and the status stays `disable_on_reboot`.
#[test]
fn a_stale_esp_initramfs_keeps_the_native_driver() {
    let (dir, host, engine) = xen_efi_host();
    let nic = a("0000:03:00.0");
    let shipped = std::fs::read(dir.path().join(ESP_INITRD)).unwrap();
    engine.disable(&nic).unwrap();
    std::fs::write(dir.path().join(ESP_INITRD), shipped).unwrap();
    let line = crate::domain::mock_boot::reboot(&host).unwrap();
    assert!(String::from_utf8_lossy(&line).contains("0000:03:00.0"));
    assert_eq!(engine.status(&nic).unwrap(), Dom0Access::DisableOnReboot);
}

/// An initramfs that lists xen-pciback but has no softdep for the native
/// module: initramfs-tools starts udev first, so the native driver binds
/// (seen on the real lab before pcipass wrote softdeps).
#[test]
fn without_a_softdep_the_native_driver_wins() {
    let (dir, host, engine) = xen_efi_host();
    let nic = a("0000:03:00.0");
    engine.disable(&nic).unwrap();
    std::fs::remove_file(dir.path().join(MODPROBE_DROPIN)).unwrap();
    crate::host::mock::initramfs::rebuild_all(&host).unwrap();
    let image = std::fs::read(dir.path().join(BOOT_INITRD)).unwrap();
    std::fs::write(dir.path().join(ESP_INITRD), image).unwrap();
    crate::domain::mock_boot::reboot(&host).unwrap();
    assert_eq!(engine.status(&nic).unwrap(), Dom0Access::DisableOnReboot);
}

/// When the ESP's kernel is none of /boot's, pcipass cannot tell which
/// image the copy should be: the hide is refused, naming the files, and
/// nothing is written.
#[test]
fn xen_efi_refuses_when_the_esp_kernel_is_unknown() {
    let (dir, _host, engine) = xen_efi_host();
    std::fs::write(
        dir.path().join("boot/efi/EFI/xen/vmlinuz-6.1.0-28-amd64"),
        b"a kernel built by hand",
    )
    .unwrap();
    let cfg = dir.path().join("boot/efi/EFI/xen/xen.cfg");
    let before = std::fs::read(&cfg).unwrap();
    let err = engine.disable(&a("0000:03:00.0")).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, BootConfigError::EditsRefused(_)), "{err:?}");
    assert!(
        text.contains("/boot/efi/EFI/xen/vmlinuz-6.1.0-28-amd64"),
        "{text}"
    );
    assert!(text.contains("none of the kernels in /boot"), "{text}");
    assert_eq!(std::fs::read(&cfg).unwrap(), before);
    assert!(!dir.path().join(MODPROBE_DROPIN).exists());
}

/// A config Xen would misread is refused naming that file: here the
/// removable-media path's `BOOTX64.cfg`, not some `xen.cfg`.
#[test]
fn a_xen_cfg_xen_would_misread_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    crate::host::mock::create(dir.path(), crate::host::mock::Profile::XenEfi).unwrap();
    let host = HostRoot::new(dir.path());
    let rel = "boot/efi/EFI/BOOT/BOOTX64.cfg";
    let text = std::fs::read_to_string(dir.path().join("boot/efi/EFI/xen/xen.cfg")).unwrap();
    std::fs::create_dir_all(dir.path().join("boot/efi/EFI/BOOT")).unwrap();
    std::fs::write(dir.path().join(rel), text.trim_end()).unwrap();
    let engine = Dom0AccessEngine::new(
        Box::new(XenEfiBootConfig::new(host.clone(), rel)),
        host.clone(),
    )
    .with_initramfs(InitramfsUpdate::Mock);
    let err = engine.disable(&a("0000:03:00.0")).unwrap_err().to_string();
    assert!(
        err.contains("/boot/efi/EFI/BOOT/BOOTX64.cfg: the file does not end with a newline"),
        "{err}"
    );
    assert!(!err.contains("xen.cfg"), "{err}");
}

/// A hand edit of xen.cfg moves the engine's fingerprint (so the change
/// token moves and PGPU events follow), and a cached status read sees it
/// at once: xen.cfg is what the watch follows on this flow.
#[test]
fn a_hand_edit_of_xen_cfg_moves_the_fingerprint_and_the_status() {
    let (dir, _host, engine) = xen_efi_host();
    let nic = a("0000:03:00.0");
    assert_eq!(engine.status(&nic).unwrap(), Dom0Access::Enabled);
    let before = engine.fingerprint().0;
    assert!(before.is_some(), "xen.cfg has a fingerprint");
    let cfg = dir.path().join("boot/efi/EFI/xen/xen.cfg");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let hand = text.replace(
        "kernel=vmlinuz-6.1.0-28-amd64 ",
        "kernel=vmlinuz-6.1.0-28-amd64 xen-pciback.hide=(0000:03:00.0) ",
    );
    std::fs::write(&cfg, hand).unwrap();
    assert_ne!(engine.fingerprint().0, before);
    assert_eq!(engine.status(&nic).unwrap(), Dom0Access::DisableOnReboot);
}

/// Xen appends what follows ` -- ` in the booted section's `options=` to
/// dom0's command line (`__start_xen`'s kextra): a hide there is read,
/// and an edit moves it among `kernel=`'s arguments, dropping the ` -- `
/// when nothing else follows it (fixture a4 of the upstream differential
/// runs).
#[test]
fn xen_efi_reads_and_moves_a_hide_in_options_kextra() {
    let (dir, host, engine) = xen_efi_host();
    let cfg = dir.path().join("boot/efi/EFI/xen/xen.cfg");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let with_kextra = text.replacen(
        "options=dom0_mem=4096M,max:4096M iommu=1\n",
        "options=dom0_mem=4096M,max:4096M iommu=1 -- xen-pciback.hide=(0000:01:00.0)\n",
        1,
    );
    assert_ne!(with_kextra, text);
    std::fs::write(&cfg, &with_kextra).unwrap();
    let gpu = a("0000:01:00.0");
    let nic = a("0000:03:00.0");
    assert_eq!(engine.status(&gpu).unwrap(), Dom0Access::DisableOnReboot);
    assert_eq!(engine.status(&nic).unwrap(), Dom0Access::Enabled);

    assert_eq!(engine.disable(&nic).unwrap(), Dom0Access::DisableOnReboot);
    let after = std::fs::read_to_string(&cfg).unwrap();
    assert!(
        after.contains("options=dom0_mem=4096M,max:4096M iommu=1\n"),
        "{after}"
    );
    let kernel = after.lines().find(|l| l.starts_with("kernel=")).unwrap();
    assert!(
        kernel.ends_with(" xen-pciback.hide=(0000:01:00.0)(0000:03:00.0)"),
        "{kernel}"
    );
    assert_eq!(engine.status(&gpu).unwrap(), Dom0Access::DisableOnReboot);

    // Unhiding the one in the kextra takes it out of what boots.
    std::fs::write(&cfg, &with_kextra).unwrap();
    assert_eq!(engine.enable(&gpu).unwrap(), Dom0Access::Enabled);
    let after = std::fs::read_to_string(&cfg).unwrap();
    assert!(!after.contains("0000:01:00.0"), "{after}");
    crate::domain::mock_boot::reboot(&host).unwrap();
    assert_eq!(engine.status(&gpu).unwrap(), Dom0Access::Enabled);
}

/// dom0's network on the demo host: `xenbr0` (the default route) over
/// `eth1` on 0000:03:00.1, behind the root port 0000:00:1c.0; XCP-ng's
/// management interface `eth0` on 0000:00:1f.6.
fn with_dom0_network(dir: &tempfile::TempDir) {
    let root = dir.path();
    let mk = |rel: &str| std::fs::create_dir_all(root.join(rel)).unwrap();
    let link =
        |target: &str, rel: &str| std::os::unix::fs::symlink(target, root.join(rel)).unwrap();
    mk("sys/class/net");
    mk("sys/devices/virtual/net/xenbr0/brif");
    for (iface, pci) in [("eth0", "0000:00:1f.6"), ("eth1", "0000:03:00.1")] {
        mk(&format!("sys/devices/pci0000:00/{pci}/net/{iface}"));
        link(
            &format!("../../devices/pci0000:00/{pci}/net/{iface}"),
            &format!("sys/class/net/{iface}"),
        );
        link(
            &format!("../../../{pci}"),
            &format!("sys/devices/pci0000:00/{pci}/net/{iface}/device"),
        );
    }
    link("../../devices/virtual/net/xenbr0", "sys/class/net/xenbr0");
    link("../../eth1", "sys/devices/virtual/net/xenbr0/brif/eth1");
    mk("proc/net");
    std::fs::write(
        root.join("proc/net/route"),
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
         xenbr0\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n",
    )
    .unwrap();
    let inventory = root.join(crate::host::facts::INVENTORY);
    let mut text = std::fs::read_to_string(&inventory).unwrap_or_default();
    text.push_str("MANAGEMENT_INTERFACE='eth0'\n");
    std::fs::write(inventory, text).unwrap();
}

#[test]
fn an_edit_that_would_cut_dom0_off_its_network_is_refused_and_writes_nothing() {
    let (dir, host) = host_with(GRUB, "ro\n");
    with_dom0_network(&dir);
    let engine = native_engine(&host);
    let before = grub_bytes(&dir);
    for (function, want) in [
        // The bridge's port, and the root port above it.
        ("0000:03:00.1", "xenbr0"),
        ("0000:00:1c.0", "xenbr0"),
        // The management interface.
        ("0000:00:1f.6", "eth0"),
    ] {
        match engine.disable(&a(function)) {
            Err(BootConfigError::Dom0Network { interface, .. }) => {
                assert_eq!(interface, want, "{function}");
            }
            other => panic!("{function}: {other:?}"),
        }
        assert_eq!(grub_bytes(&dir), before, "{function}");
    }
    // Its sibling carries nothing of dom0's.
    assert_eq!(
        engine.disable(&a("0000:03:00.0")).unwrap(),
        Dom0Access::DisableOnReboot
    );
}
