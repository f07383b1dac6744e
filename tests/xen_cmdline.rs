//! The `xen-cmdline` program on copies of the fixture grub.cfg files.

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_xen-cmdline");

fn host_with(fixture: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("boot/grub")).unwrap();
    let text = std::fs::read_to_string(format!(
        "{}/tests/fixtures/grub/{fixture}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    std::fs::write(dir.path().join("boot/grub/grub.cfg"), text).unwrap();
    dir
}

fn run(root: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn grub(root: &Path) -> String {
    std::fs::read_to_string(root.join("boot/grub/grub.cfg")).unwrap()
}

#[test]
fn get_set_delete_in_one_call_keep_everything_else() {
    let dir = host_with("xcpng-grub.cfg");
    let before = grub(dir.path());
    let (code, out, _) = run(
        dir.path(),
        &[
            "--get-dom0",
            "root",
            "xen-pciback.hide",
            "--get-xen",
            "dom0_mem",
        ],
    );
    assert_eq!(code, 0);
    assert_eq!(out, "root=LABEL=root-vgdorj\ndom0_mem=7584M,max:7584M\n");
    let (code, _, err) = run(
        dir.path(),
        &[
            "--set-dom0",
            "xen-pciback.hide=(0000:01:00.0)",
            "--set-xen",
            "iommu=1",
            "--get-dom0",
            "xen-pciback.hide",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let after = grub(dir.path());
    let changed: Vec<_> = before
        .lines()
        .zip(after.lines())
        .filter(|(a, b)| a != b)
        .collect();
    assert_eq!(
        changed.len(),
        4,
        "dom0 and xen lines of XCP-ng and XCP-ng (Serial)"
    );
    let (_, out, _) = run(dir.path(), &["--get-dom0", "xen-pciback.hide"]);
    assert_eq!(out, "xen-pciback.hide=(0000:01:00.0)\n");
    let (code, _, _) = run(
        dir.path(),
        &["--delete-dom0", "xen-pciback.hide", "--delete-xen", "iommu"],
    );
    assert_eq!(code, 0);
    assert_eq!(
        grub(dir.path()),
        before,
        "deleting restores the file byte for byte"
    );
}

#[test]
fn xen_boot_layout_is_edited_too() {
    let dir = host_with("xcpng-grub-xen-boot.cfg");
    let (code, _, _) = run(dir.path(), &["--set-dom0", "xen-pciback.hide=(04:00.0)"]);
    assert_eq!(code, 0);
    assert!(grub(dir.path()).contains("xen_module /boot/vmlinuz-4.19-xen root=LABEL=root-vgdorj ro nolvm hpet=disable console=hvc0 console=tty0 quiet vga=785 splash plymouth.ignore-serial-consoles xen-pciback.hide=(04:00.0)\n"));
}

#[test]
fn broken_files_fail_clearly_and_stay_untouched() {
    for fixture in [
        "xcpng-grub-no-multiboot.cfg",
        "xcpng-grub-no-hypervisor.cfg",
        "xcpng-grub-linux.cfg",
    ] {
        let dir = host_with(fixture);
        let before = grub(dir.path());
        let (code, out, err) = run(
            dir.path(),
            &["--set-dom0", "xen-pciback.hide=(0000:01:00.0)"],
        );
        assert_eq!(code, 1, "{fixture}");
        assert!(out.is_empty());
        assert!(err.contains("no Xen boot entry"), "{fixture}: {err}");
        assert_eq!(grub(dir.path()), before);
    }
}

#[test]
fn values_grub_would_misread_are_refused() {
    let dir = host_with("xcpng-grub.cfg");
    let before = grub(dir.path());
    let (code, _, err) = run(dir.path(), &["--set-dom0", "key=a;reboot"]);
    assert_eq!(code, 1);
    assert!(err.contains("misread"), "{err}");
    assert_eq!(grub(dir.path()), before);
    let (code, _, _) = run(dir.path(), &["--frobnicate"]);
    assert_eq!(code, 1);
}
