//! The host model end to end on real mock-host trees: discovery reads
//! what the tree says, SR-IOV and slot relations, names with and without
//! the host's pci.ids, the lspci fixture, and refs that stay stable across
//! restarts and reboots while devices come and go.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] functions: a failure should fail the test"
)]

use std::collections::BTreeMap;
use std::path::Path;

use pcipass::config::Settings;
use pcipass::domain::devices::{self, PciFunction};
use pcipass::domain::{PciAddress, bootdev};
use pcipass::host::HostRoot;
use pcipass::host::mock::{self, MockDevice, MockHostBuilder, Profile};

fn demo() -> (tempfile::TempDir, HostRoot) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    mock::create(&root, Profile::Demo).unwrap();
    (dir, HostRoot::new(root))
}

fn attr(root: &Path, f: &PciFunction, name: &str) -> String {
    std::fs::read_to_string(root.join(format!("sys/bus/pci/devices/{}/{name}", f.address)))
        .unwrap()
        .trim()
        .to_owned()
}

#[test]
fn discovery_reads_what_the_tree_says() {
    let (_dir, host) = demo();
    let found = devices::discover(&host).unwrap();
    assert_eq!(found.len(), 17);
    for f in &found {
        let root = host.root();
        assert_eq!(format!("0x{}", f.vendor_id_hex()), attr(root, f, "vendor"));
        assert_eq!(format!("0x{}", f.device_id_hex()), attr(root, f, "device"));
        assert_eq!(format!("0x{:06x}", f.class), attr(root, f, "class"));
        let driver =
            std::fs::read_link(root.join(format!("sys/bus/pci/devices/{}/driver", f.address))).ok();
        let driver = driver.map(|d| d.file_name().unwrap().to_string_lossy().into_owned());
        assert_eq!(f.driver, driver);
        assert!(
            !f.names.vendor.is_empty(),
            "{} has a vendor name",
            f.address
        );
    }
    let igpu = found
        .iter()
        .find(|f| f.address.to_string() == "0000:00:02.0")
        .unwrap();
    assert!(igpu.boot_vga && igpu.is_display());
    assert_eq!(igpu.names.class, "VGA compatible controller");
    // Its subsystem ids are its own: libpci names the subsystem after the
    // device.
    assert_eq!(
        (igpu.subsystem_vendor_id, igpu.subsystem_device_id),
        (Some(igpu.vendor_id), Some(igpu.device_id))
    );
    assert_eq!(igpu.names.subsystem_vendor, igpu.names.vendor);
    assert_eq!(igpu.names.subsystem_device, igpu.names.device);
    assert!(!igpu.names.subsystem_device.is_empty());
}

#[test]
fn sriov_relations_both_ways_and_slot_dependencies() {
    let (_dir, host) = demo();
    let found = devices::discover(&host).unwrap();
    let by: BTreeMap<String, &PciFunction> =
        found.iter().map(|f| (f.address.to_string(), f)).collect();
    let pf = by["0000:03:00.0"];
    assert_eq!(pf.virtfns.len(), 4);
    for vf in &pf.virtfns {
        assert_eq!(by[&vf.to_string()].physfn, Some(pf.address));
    }
    let listed: Vec<PciFunction> = found.iter().filter(|f| f.is_listed()).cloned().collect();
    let gpu = by["0000:01:00.0"];
    assert_eq!(
        devices::dependencies(gpu, &listed),
        vec!["0000:01:00.1".parse::<PciAddress>().unwrap()]
    );
    assert_eq!(
        devices::dependencies(by["0000:03:02.0"], &listed),
        vec![],
        "VFs have no dependencies"
    );
}

#[test]
fn host_pci_ids_file_wins_over_compiled_names() {
    let (_dir, host) = demo();
    let ids = host.root().join("usr/share/misc/pci.ids");
    std::fs::create_dir_all(ids.parent().unwrap()).unwrap();
    std::fs::write(&ids, "8086  Intel (from the host file)\n\t3e92  iGPU (from the host file)\nC 03  Display controller\n\t00  VGA compatible controller\n").unwrap();
    let found = devices::discover(&host).unwrap();
    let igpu = found
        .iter()
        .find(|f| f.address.to_string() == "0000:00:02.0")
        .unwrap();
    assert_eq!(igpu.names.vendor, "Intel (from the host file)");
    assert_eq!(igpu.names.device, "iGPU (from the host file)");
    let nvidia = found.iter().find(|f| f.vendor_id == 0x10de).unwrap();
    assert_eq!(
        nvidia.names.vendor, "",
        "names missing from the host file are empty, as libpci gives them"
    );
}

#[test]
fn lspci_fixture_host_lists_functions_without_bridges() {
    let text = include_str!("fixtures/lspci/amd-server.lspci-mn");
    let dir = tempfile::tempdir().unwrap();
    mock::from_lspci(text).write(dir.path()).unwrap();
    let found = devices::discover(&HostRoot::new(dir.path())).unwrap();
    assert_eq!(found.len(), 37);
    let listed: Vec<_> = found.iter().filter(|f| f.is_listed()).collect();
    assert_eq!(
        listed.len(),
        16,
        "37 functions less 21 bridges (host, ISA and PCI-to-PCI)"
    );
    let class = |addr: &str| {
        found
            .iter()
            .find(|f| f.address.to_string() == addr)
            .unwrap()
            .names
            .class
            .clone()
    };
    assert_eq!(class("0000:03:00.0"), "Display controller");
    assert_eq!(class("0000:06:00.0"), "Non-Volatile memory controller");
    assert_eq!(class("0000:07:00.3"), "USB controller");
    assert_eq!(class("0000:04:00.0"), "Network controller");
    assert_eq!(class("0000:08:00.0"), "SATA controller");
}

#[test]
fn boot_devices_include_the_root_port() {
    let (_dir, host) = demo();
    let disks = bootdev::boot_devices(&host).unwrap();
    let root = disks
        .iter()
        .find(|d| d.block_device == "/dev/nvme0n1p2")
        .unwrap();
    let want: Vec<PciAddress> = vec![
        "0000:00:1d.0".parse().unwrap(),
        "0000:02:00.0".parse().unwrap(),
    ];
    assert_eq!(root.pci_functions, want);
    assert!(
        bootdev::find_boot_disk_for(&disks, &"0000:00:17.0".parse().unwrap()).is_none(),
        "the SATA disk holds nothing"
    );
}

#[test]
fn boot_devices_through_device_mapper_and_md() {
    let dir = tempfile::tempdir().unwrap();
    MockHostBuilder::new()
        .device(MockDevice::new("0000:00:17.0", 0x8086, 0xa352, 0x010601).driver("ahci"))
        .device(MockDevice::new("0000:00:1d.0", 0x8086, 0xa330, 0x060400))
        .device(
            MockDevice::new("0000:05:00.0", 0x1000, 0x0097, 0x010700)
                .behind("0000:00:1d.0")
                .driver("mpt3sas"),
        )
        .disk(
            "sda",
            "0000:00:17.0",
            "ata1/host0/target0:0:0/0:0:0:0/block/sda",
            &["sda1", "sda2"],
        )
        .disk(
            "sdb",
            "0000:05:00.0",
            "host1/target1:0:0/1:0:0:0/block/sdb",
            &["sdb1"],
        )
        .virtual_disk("md0", None, &["sda2", "sdb1"])
        .virtual_disk("dm-0", Some("vg-root"), &["md0"])
        .mount("/dev/mapper/vg-root", "/", "ext4")
        .mount("/dev/sda1", "/boot", "ext4")
        .write(dir.path())
        .unwrap();
    let disks = bootdev::boot_devices(&HostRoot::new(dir.path())).unwrap();
    let root = disks
        .iter()
        .find(|d| d.block_device == "/dev/mapper/vg-root")
        .unwrap();
    let addrs: Vec<String> = root.pci_functions.iter().map(|a| a.to_string()).collect();
    assert_eq!(addrs, vec!["0000:00:17.0", "0000:00:1d.0", "0000:05:00.0"]);
    assert!(disks.iter().any(|d| d.block_device == "/dev/sda1"));
}

fn pci_refs(ctx: &pcipass::api::Context) -> BTreeMap<String, (String, String)> {
    ctx.store
        .all("PCI")
        .iter()
        .map(|o| {
            (
                o.get_str("pci_id").to_owned(),
                (o.reference.clone(), o.uuid.clone()),
            )
        })
        .collect()
}

#[test]
fn refs_stable_across_restart_and_reboot_while_devices_come_and_go() {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings::demo_under(dir.path()).unwrap();
    let root = dir.path().join("root");
    let first = pci_refs(&pcipass::daemon::build_context(&settings).unwrap());
    assert_eq!(first.len(), 13);
    let restarted = pci_refs(&pcipass::daemon::build_context(&settings).unwrap());
    assert_eq!(first, restarted);
    pcipass::domain::mock_boot::reboot(&HostRoot::new(&root)).unwrap();
    let rebooted = pci_refs(&pcipass::daemon::build_context(&settings).unwrap());
    assert_eq!(first, rebooted);

    // Remove the USB controller, add a copy of it at another address.
    let usb = root.join("sys/bus/pci/devices/0000:00:14.0");
    let target = std::fs::read_link(&usb).unwrap();
    std::fs::remove_file(&usb).unwrap();
    let new_dir = root.join("sys/devices/pci0000:00/0000:00:14.3");
    std::fs::create_dir_all(&new_dir).unwrap();
    for f in [
        "vendor",
        "device",
        "class",
        "subsystem_vendor",
        "subsystem_device",
        "revision",
    ] {
        std::fs::copy(
            root.join("sys/bus/pci/devices").join(&target).join(f),
            new_dir.join(f),
        )
        .unwrap();
    }
    std::os::unix::fs::symlink(
        "../../../devices/pci0000:00/0000:00:14.3",
        root.join("sys/bus/pci/devices/0000:00:14.3"),
    )
    .unwrap();
    let changed = pci_refs(&pcipass::daemon::build_context(&settings).unwrap());
    assert!(!changed.contains_key("0000:00:14.0"));
    assert!(changed.contains_key("0000:00:14.3"));
    for (id, refs) in &first {
        if id != "0000:00:14.0" {
            assert_eq!(&changed[id], refs, "{id} kept its ref and uuid");
        }
    }
}

#[test]
fn large_profile_has_4096_functions() {
    let dir = tempfile::tempdir().unwrap();
    mock::create(dir.path(), Profile::Large).unwrap();
    let found = devices::discover(&HostRoot::new(dir.path())).unwrap();
    assert!(found.len() >= 4096, "{} functions", found.len());
    let vfs = found.iter().filter(|f| f.physfn.is_some()).count();
    assert_eq!(vfs, 32 * 127 + 4);
}

fn pgpu_refs(ctx: &pcipass::api::Context) -> Vec<String> {
    ctx.store
        .all("PGPU")
        .iter()
        .map(|o| o.reference.clone())
        .collect()
}

/// A way to break sysfs: its name, how to break it and how to repair it.
type Breakage<'a> = (&'a str, &'a dyn Fn(), &'a dyn Fn());

/// Discovery that cannot list `sys/bus/pci/devices` (gone, not a
/// directory, unreadable) fails closed, at start and on a later sync: the
/// stored PCI and PGPU objects, and the host's lists of them, stay as they
/// were; once sysfs is back, every device still has its ref.
#[test]
fn failed_discovery_keeps_every_stored_pci() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings::demo_under(dir.path()).unwrap();
    let root = dir.path().join("root");
    let devices_dir = root.join("sys/bus/pci/devices");
    let aside = root.join("sys/bus/pci/devices.aside");
    let breakages: [Breakage; 3] = [
        (
            "removed",
            &|| std::fs::rename(&devices_dir, &aside).unwrap(),
            &|| std::fs::rename(&aside, &devices_dir).unwrap(),
        ),
        (
            "a file",
            &|| {
                std::fs::rename(&devices_dir, &aside).unwrap();
                std::fs::write(&devices_dir, "").unwrap();
            },
            &|| {
                std::fs::remove_file(&devices_dir).unwrap();
                std::fs::rename(&aside, &devices_dir).unwrap();
            },
        ),
        (
            // Root reads it anyway; the refs must hold either way.
            "unreadable",
            &|| {
                std::fs::set_permissions(&devices_dir, std::fs::Permissions::from_mode(0o000))
                    .unwrap();
            },
            &|| {
                std::fs::set_permissions(&devices_dir, std::fs::Permissions::from_mode(0o755))
                    .unwrap();
            },
        ),
    ];
    let ctx = pcipass::daemon::build_context(&settings).unwrap();
    let first = pci_refs(&ctx);
    let first_pgpus = pgpu_refs(&ctx);
    let host_lists = |ctx: &pcipass::api::Context| {
        let host = ctx.store.all("host")[0].clone();
        (host.get("PCIs").cloned(), host.get("PGPUs").cloned())
    };
    let first_lists = host_lists(&ctx);
    assert_eq!(first.len(), 13);
    assert!(!first_pgpus.is_empty());
    drop(ctx);
    for (what, break_it, repair) in breakages {
        let ctx = pcipass::daemon::build_context(&settings).unwrap();
        break_it();
        let counts = pcipass::api::sync::synchronise(&ctx).unwrap();
        if std::fs::read_dir(&devices_dir).is_err() {
            assert_eq!(counts, (0, 0, 0), "sysfs {what}: nothing changed");
        }
        assert_eq!(
            pci_refs(&ctx),
            first,
            "sysfs {what}: refresh kept every PCI"
        );
        assert_eq!(pgpu_refs(&ctx), first_pgpus, "sysfs {what}: PGPUs kept");
        assert_eq!(
            host_lists(&ctx),
            first_lists,
            "sysfs {what}: host lists kept"
        );
        drop(ctx);
        let restarted = pcipass::daemon::build_context(&settings).unwrap();
        assert_eq!(
            pci_refs(&restarted),
            first,
            "sysfs {what}: start kept every PCI"
        );
        assert_eq!(
            pgpu_refs(&restarted),
            first_pgpus,
            "sysfs {what}: start kept PGPUs"
        );
        repair();
        pcipass::api::sync::synchronise(&restarted).unwrap();
        assert_eq!(pci_refs(&restarted), first, "sysfs {what} repaired");
    }
}

#[test]
fn unlistable_sysfs_is_a_discovery_error() {
    let (dir, host) = demo();
    std::fs::remove_dir_all(dir.path().join("root/sys/bus/pci/devices")).unwrap();
    let err = devices::discover(&host).unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert!(err.to_string().contains("sys/bus/pci/devices"), "{err}");
    assert!(pcipass::host::sysfs::scan_pci(&host).is_err());
}

/// A boot mount that cannot be resolved to the PCI functions beneath it is
/// an error, never an empty "no boot device" list: one case per way the
/// lookup can break on the demo host (`/` on nvme0n1p2, `/boot/efi` on
/// nvme0n1p1).
#[test]
fn unresolvable_boot_mounts_are_errors() {
    type Breaker = fn(&Path);
    fn mountinfo(root: &Path, text: &str) {
        std::fs::write(root.join("proc/self/mountinfo"), text).unwrap();
    }
    const ROOT: &str = "20 1 259:2 / / rw - ext4 /dev/nvme0n1p2 rw\n";
    let cases: [(&str, Breaker, Option<&str>); 11] = [
        ("intact", |_| {}, None),
        (
            "mount table unreadable",
            |r| {
                std::fs::remove_file(r.join("proc/self/mountinfo")).unwrap();
                let _ = std::fs::remove_file(r.join("proc/mounts"));
            },
            Some("proc/mounts"),
        ),
        ("no / mount", |r| mountinfo(r, ""), Some("/ is not in")),
        (
            "/ from a missing device",
            |r| mountinfo(r, "20 1 0:0 / / rw - ext4 /dev/nosuch rw\n"),
            Some("/ is mounted from /dev/nosuch"),
        ),
        (
            "/ from a missing dm name",
            |r| mountinfo(r, "20 1 0:0 / / rw - ext4 /dev/mapper/vg-gone rw\n"),
            Some("/dev/mapper/vg-gone"),
        ),
        (
            "/ on an overlay",
            |r| mountinfo(r, "20 1 0:31 / / rw - overlay overlay rw\n"),
            Some("/ is mounted from overlay"),
        ),
        (
            "/boot unresolvable",
            |r| {
                mountinfo(
                    r,
                    &format!("{ROOT}21 20 0:0 / /boot rw - ext4 /dev/sdz1 rw\n"),
                );
            },
            Some("/boot is mounted from /dev/sdz1"),
        ),
        (
            "/boot/efi an idle automount",
            |r| {
                mountinfo(
                    r,
                    &format!("{ROOT}21 20 0:40 / /boot/efi rw - autofs systemd-1 rw\n"),
                );
            },
            None,
        ),
        (
            "disk's sysfs block entry missing",
            |r| std::fs::remove_file(r.join("sys/class/block/nvme0n1")).unwrap(),
            Some("sys/class/block/nvme0n1"),
        ),
        (
            "partition's sysfs block entry missing",
            |r| {
                std::fs::remove_file(r.join("sys/class/block/nvme0n1p2")).unwrap();
            },
            Some("nvme0n1p2"),
        ),
        (
            "slaves unlistable",
            |r| {
                let slaves = r.join("sys/class/block/nvme0n1p2/slaves");
                let _ = std::fs::remove_dir_all(&slaves);
                std::fs::write(slaves, "").unwrap();
            },
            Some("slaves"),
        ),
    ];
    for (what, break_it, want_error) in cases {
        let (dir, host) = demo();
        break_it(&dir.path().join("root"));
        match (bootdev::boot_devices(&host), want_error) {
            (Ok(disks), None) => {
                let root = disks.iter().find(|d| d.block_device == "/dev/nvme0n1p2");
                assert!(
                    root.is_some_and(|d| !d.pci_functions.is_empty()),
                    "{what}: {disks:?}"
                );
            }
            (Err(e), Some(want)) => {
                assert!(e.to_string().contains(want), "{what}: {e}");
            }
            (got, want) => panic!("{what}: got {got:?}, want error {want:?}"),
        }
    }
}
