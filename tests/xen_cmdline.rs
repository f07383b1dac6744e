//! The `xen-cmdline` program on copies of the fixture grub.cfg files.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] functions: a failure should fail the test"
)]

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_xen-cmdline");

fn host_with(fixture: &str) -> tempfile::TempDir {
    host_with_bytes(&fixture_bytes("grub", fixture))
}

/// A mock host whose grub.cfg is a copy of `tests/fixtures/grub-real/FIXTURE`
/// (files as real tools leave them).
fn host_with_real(fixture: &str) -> tempfile::TempDir {
    host_with_bytes(&fixture_bytes("grub-real", fixture))
}

fn fixture_bytes(set: &str, fixture: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/{set}/{fixture}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn real_fixture(fixture: &str) -> String {
    String::from_utf8(fixture_bytes("grub-real", fixture)).unwrap()
}

/// A mock host whose grub.cfg holds exactly these bytes, with the kernel
/// facts of the XCP-ng host these grub.cfg files come from: release
/// 4.19.0+1, whose `modules.builtin` lists xen-pciback (an edit of the
/// hide list needs no initramfs set-up there).
fn host_with_bytes(bytes: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("boot/grub")).unwrap();
    std::fs::write(dir.path().join("boot/grub/grub.cfg"), bytes).unwrap();
    for (rel, text) in [
        ("proc/sys/kernel/osrelease", "4.19.0+1\n"),
        (
            "lib/modules/4.19.0+1/modules.builtin",
            "kernel/drivers/xen/xen-pciback/xen-pciback.ko\n",
        ),
    ] {
        let path = dir.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
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

fn grub_bytes(root: &Path) -> Vec<u8> {
    std::fs::read(root.join("boot/grub/grub.cfg")).unwrap()
}

/// The 0-based numbers of the lines that differ (both texts must have as
/// many lines: the tool rewrites arguments, it never adds or drops lines).
fn changed_lines(before: &str, after: &str) -> Vec<usize> {
    assert_eq!(
        before.lines().count(),
        after.lines().count(),
        "line count changed:\n{after}"
    );
    before
        .lines()
        .zip(after.lines())
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, _)| i)
        .collect()
}

/// The 0-based numbers of the lines holding NEEDLE.
fn lines_with(text: &str, needle: &str) -> Vec<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.contains(needle))
        .map(|(i, _)| i)
        .collect()
}

/// The line numbers of the `module2` (dom0) lines of the entries titled
/// TITLES, in file order.
fn dom0_lines_of(text: &str, titles: &[&str]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut current: Option<&str> = None;
    for (i, line) in text.lines().enumerate() {
        if let Some(rest) = line.strip_prefix("menuentry '") {
            current = rest.split('\'').next();
        } else if line.trim_start().starts_with("module2 /boot/vmlinuz")
            && current.is_some_and(|t| titles.contains(&t))
        {
            out.push(i);
        }
    }
    out
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

const HIDE: &str = "xen-pciback.hide";
const DUP: &str = "xcpng-duplicate-hide-key.cfg";
const AFTER_REAL: &str = "xcpng-after-real-xen-cmdline.cfg";
const BOTH_HIDES: &str = "xen-pciback.hide=(0000:01:00.0)\nxen-pciback.hide=(0000:03:00.1)";

#[test]
fn get_prints_every_occurrence_in_line_order() {
    let dir = host_with_real(DUP);
    let (code, out, err) = run(dir.path(), &["--get-dom0", HIDE]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, format!("{BOTH_HIDES}\n"));
}

#[test]
fn get_of_an_absent_key_prints_one_empty_line() {
    let dir = host_with_real(AFTER_REAL);
    let (code, out, err) = run(dir.path(), &["--get-dom0", HIDE]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "\n");
    // One print per operation: two operations, two lines.
    let (code, out, _) = run(dir.path(), &["--get-dom0", HIDE, "--get-dom0", "nosuch"]);
    assert_eq!(code, 0);
    assert_eq!(out, "\n\n");
}

#[test]
fn get_with_two_keys_prints_matches_in_line_order() {
    let dir = host_with_real(DUP);
    // Keys given in the opposite order of the line: the line order wins.
    let (code, out, err) = run(dir.path(), &["--get-dom0", HIDE, "root", "quiet"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        format!("root=LABEL=root-pcipass\nquiet\n{BOTH_HIDES}\n")
    );
}

#[test]
fn keys_match_exactly() {
    let dir = host_with_real(DUP);
    for key in [
        "xen-pciback",                     // a prefix of the key
        "xen-pciback.hid",                 // a shorter prefix
        "xen_pciback.hide",                // the other spelling is not aliased
        "xen-pciback.hide=(0000:02:00.0)", // KEY=VALUE matches only itself
        "hide",
        "vga=78",
    ] {
        let (code, out, err) = run(dir.path(), &["--get-dom0", key]);
        assert_eq!(code, 0, "{key}: {err}");
        assert_eq!(out, "\n", "{key}");
    }
    // `quiet` (bare) matches `quiet`; `vga` matches `vga=785`.
    let (_, out, _) = run(dir.path(), &["--get-dom0", "quiet", "vga"]);
    assert_eq!(out, "quiet\nvga=785\n");

    // Deleting a prefix leaves the file alone.
    let before = grub(dir.path());
    for key in ["xen-pciback", "xen-pciback.hid"] {
        let (code, _, err) = run(dir.path(), &["--delete-dom0", key]);
        assert_eq!(code, 0, "{key}: {err}");
        assert_eq!(grub(dir.path()), before, "{key}");
    }
    // An edit of the hide matches it as the kernel does (`-` = `_`):
    // setting the other spelling sets the one copy the kernel takes,
    // in its place and spelling, and the other copies go.
    let (code, _, err) = run(
        dir.path(),
        &["--set-dom0", "xen_pciback.hide=(0000:09:00.0)"],
    );
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = run(dir.path(), &["--get-dom0", HIDE]);
    assert_eq!(out, "xen-pciback.hide=(0000:09:00.0)\n");
    let (_, out, _) = run(dir.path(), &["--get-dom0", "xen_pciback.hide"]);
    assert_eq!(out, "\n");
}

#[test]
fn set_replaces_every_occurrence_and_touches_only_managed_lines() {
    let dir = host_with_real(DUP);
    let before = grub(dir.path());
    let (code, _, err) = run(
        dir.path(),
        &["--set-dom0", "xen-pciback.hide=(0000:05:00.0)"],
    );
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = run(dir.path(), &["--get-dom0", HIDE]);
    assert_eq!(out, "xen-pciback.hide=(0000:05:00.0)\n");
    let after = grub(dir.path());
    assert_eq!(
        changed_lines(&before, &after),
        dom0_lines_of(&before, &["XCP-ng", "XCP-ng (Serial)"])
    );
    // The XCP-ng line: both old occurrences gone, one new, the rest as it was.
    let line = after.lines().nth(8).unwrap();
    assert_eq!(line.matches("xen-pciback.hide=").count(), 1, "{line}");
    assert!(
        line.ends_with(" plymouth.ignore-serial-consoles xen-pciback.hide=(0000:05:00.0)"),
        "{line}"
    );
    // The serial twin did not have one: it gets one.
    let serial = after.lines().nth(14).unwrap();
    assert!(
        serial.ends_with(" plymouth.ignore-serial-consoles xen-pciback.hide=(0000:05:00.0)"),
        "{serial}"
    );
}

#[test]
fn delete_removes_every_occurrence() {
    let dir = host_with_real(DUP);
    let before = grub(dir.path());
    let (code, _, err) = run(dir.path(), &["--delete-dom0", HIDE]);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = run(dir.path(), &["--get-dom0", HIDE]);
    assert_eq!(out, "\n");
    let after = grub(dir.path());
    assert!(!after.contains("xen-pciback.hide"));
    assert_eq!(changed_lines(&before, &after), vec![8]);
    assert!(
        after
            .lines()
            .nth(8)
            .unwrap()
            .ends_with(" plymouth.ignore-serial-consoles")
    );
}

#[test]
fn set_keeps_the_real_tools_override_block_byte_for_byte() {
    let dir = host_with_real(AFTER_REAL);
    let before = grub_bytes(dir.path());
    let (code, _, err) = run(
        dir.path(),
        &["--set-dom0", "xen-pciback.hide=(0000:01:00.0)"],
    );
    assert_eq!(code, 0, "{err}");
    let after = grub_bytes(dir.path());
    let head = b"serial --unit=0 --speed=115200\nterminal_input serial console\nterminal_output serial console\nset default=0\nset timeout=5\nif [ -s $prefix/grubenv ]; then\n\tload_env\nfi\n\nif [ -n \"$override_entry\" ]; then\n\tset default=$override_entry\nfi\n\nmenuentry 'XCP-ng' {\n";
    assert!(before.starts_with(head));
    assert!(
        after.starts_with(head),
        "{}",
        String::from_utf8_lossy(&after)
    );
    let (before, after) = (
        String::from_utf8(before).unwrap(),
        String::from_utf8(after).unwrap(),
    );
    assert_eq!(
        changed_lines(&before, &after),
        dom0_lines_of(&before, &["XCP-ng", "XCP-ng (Serial)"])
    );
    let (_, out, _) = run(dir.path(), &["--get-dom0", HIDE]);
    assert_eq!(out, "xen-pciback.hide=(0000:01:00.0)\n");
}

#[test]
fn set_on_default_fallback_edits_brand_serial_and_fallback_only() {
    let dir = host_with_real("xcpng-default-fallback.cfg");
    let before = grub(dir.path());
    // Reads use the entry GRUB boots next: the fallback.
    let (_, out, _) = run(dir.path(), &["--get-dom0", "root", "quiet"]);
    assert_eq!(out, "root=LABEL=root-pcipass\n");
    let (code, _, err) = run(
        dir.path(),
        &["--set-dom0", "xen-pciback.hide=(0000:01:00.0)"],
    );
    assert_eq!(code, 0, "{err}");
    let after = grub(dir.path());
    let expected = dom0_lines_of(
        &before,
        &[
            "XCP-ng",
            "XCP-ng (Serial)",
            "XCP-ng (Xen 4.17.5 / Linux 4.19.0+1)",
        ],
    );
    assert_eq!(expected.len(), 3);
    assert_eq!(changed_lines(&before, &after), expected);
    for i in expected {
        let line = after.lines().nth(i).unwrap();
        assert!(line.ends_with(" xen-pciback.hide=(0000:01:00.0)"), "{line}");
    }
    let safe = dom0_lines_of(&after, &["XCP-ng in Safe Mode"]);
    assert!(!after.lines().nth(safe[0]).unwrap().contains("pciback"));
    let (_, out, _) = run(dir.path(), &["--get-dom0", HIDE]);
    assert_eq!(out, "xen-pciback.hide=(0000:01:00.0)\n");
}

#[test]
fn get_on_quoted_file_prints_the_argument_as_written() {
    let dir = host_with_real("xcpng-quoted-hide.cfg");
    let (code, out, err) = run(dir.path(), &["--get-dom0", HIDE]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "xen-pciback.hide=\"(0000:01:00.0) (0000:03:00.1)\"\n");
}

#[test]
fn set_if_unchanged_sets_when_the_value_matches() {
    let dir = host_with_real(DUP);
    let (code, out, err) = run(
        dir.path(),
        &[
            "--set-dom0-if-unchanged",
            HIDE,
            BOTH_HIDES,
            "xen-pciback.hide=(0000:05:00.0)",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.is_empty(), "{out}");
    let (_, out, _) = run(dir.path(), &["--get-dom0", HIDE]);
    assert_eq!(out, "xen-pciback.hide=(0000:05:00.0)\n");
}

#[test]
fn set_if_unchanged_refuses_on_mismatch() {
    let dir = host_with_real(DUP);
    let before = grub_bytes(dir.path());
    // Only the first of the two: not what --get-dom0 prints.
    let (code, _, err) = run(
        dir.path(),
        &[
            "--set-dom0-if-unchanged",
            HIDE,
            "xen-pciback.hide=(0000:01:00.0)",
            "xen-pciback.hide=(0000:05:00.0)",
        ],
    );
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains(BOTH_HIDES),
        "stderr shows the current value: {err}"
    );
    assert_eq!(grub_bytes(dir.path()), before);
    // The delete form refuses as well.
    let (code, _, _) = run(dir.path(), &["--set-dom0-if-unchanged", HIDE, ""]);
    assert_eq!(code, 3);
    assert_eq!(grub_bytes(dir.path()), before);
}

#[test]
fn set_if_unchanged_without_value_deletes() {
    let dir = host_with_real(DUP);
    let (code, _, err) = run(dir.path(), &["--set-dom0-if-unchanged", HIDE, BOTH_HIDES]);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = run(dir.path(), &["--get-dom0", HIDE]);
    assert_eq!(out, "\n");
    assert!(!grub(dir.path()).contains("pciback"));
}

#[test]
fn set_if_unchanged_on_an_absent_key_expects_empty() {
    let dir = host_with_real(AFTER_REAL);
    let before = grub(dir.path());
    let (code, _, err) = run(
        dir.path(),
        &[
            "--set-dom0-if-unchanged",
            HIDE,
            "",
            "xen-pciback.hide=(0000:01:00.0)",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let after = grub(dir.path());
    assert_eq!(
        changed_lines(&before, &after),
        dom0_lines_of(&before, &["XCP-ng", "XCP-ng (Serial)"])
    );
    // Now it is set, expecting "" again fails and changes nothing.
    let (code, _, err) = run(
        dir.path(),
        &[
            "--set-dom0-if-unchanged",
            HIDE,
            "",
            "xen-pciback.hide=(0000:02:00.0)",
        ],
    );
    assert_eq!(code, 3);
    assert!(err.contains("xen-pciback.hide=(0000:01:00.0)"), "{err}");
    assert_eq!(grub(dir.path()), after);
}

#[test]
fn values_grub_would_misread_are_refused_without_write() {
    let dir = host_with_real(AFTER_REAL);
    let before = grub_bytes(dir.path());
    for arg in [
        "xen-pciback.hide=(0000:01:00.0) (0000:02:00.0)",
        "xen-pciback.hide=$x",
        "xen-pciback.hide=(0000:01:00.0);reboot",
        "xen-pciback.hide=\"(0000:01:00.0)\"",
        "xen-pciback.hide='(0000:01:00.0)'",
    ] {
        let (code, out, err) = run(dir.path(), &["--set-dom0", arg]);
        assert_eq!(code, 1, "{arg}: {err}");
        assert!(out.is_empty(), "{arg}: {out}");
        assert!(!err.is_empty(), "{arg}");
        assert_eq!(grub_bytes(dir.path()), before, "{arg}");
        // The compare-and-set path refuses the same values.
        let (code, _, err) = run(dir.path(), &["--set-dom0-if-unchanged", HIDE, "", arg]);
        assert_eq!(code, 1, "{arg}: {err}");
        assert_eq!(grub_bytes(dir.path()), before, "{arg}");
    }
}

#[test]
fn dom0_line_past_1023_bytes_is_refused_without_write() {
    let dir = host_with_real(AFTER_REAL);
    let before = grub_bytes(dir.path());
    let value = "a".repeat(1000);
    let (code, _, err) = run(dir.path(), &["--set-dom0", &format!("pad={value}")]);
    assert_eq!(code, 1, "{err}");
    assert!(!err.is_empty());
    assert_eq!(grub_bytes(dir.path()), before);
    // The limit counts dom0's arguments after the kernel's path (what Xen
    // copies into its 1024-byte buffer): 1023 bytes pass, 1024 do not.
    let text = real_fixture(AFTER_REAL);
    let args = dom0_lines_of(&text, &["XCP-ng", "XCP-ng (Serial)"])
        .into_iter()
        .map(|i| {
            let line = text.lines().nth(i).unwrap();
            line.trim_start()
                .strip_prefix("module2 /boot/vmlinuz-4.19-xen ")
                .unwrap()
                .len()
        })
        .max()
        .unwrap();
    let fits = 1023 - args - " pad=".len();
    let (code, _, err) = run(
        dir.path(),
        &["--set-dom0", &format!("pad={}", "a".repeat(fits + 1))],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("1024 bytes"), "{err}");
    assert_eq!(grub_bytes(dir.path()), before);
    let (code, _, err) = run(
        dir.path(),
        &["--set-dom0", &format!("pad={}", "a".repeat(fits))],
    );
    assert_eq!(code, 0, "{err}");
}

#[test]
fn a_new_key_lands_before_a_bare_double_dash() {
    let text = real_fixture(AFTER_REAL).replacen(
        "plymouth.ignore-serial-consoles\n",
        "plymouth.ignore-serial-consoles -- single\n",
        1,
    );
    let dir = host_with_bytes(text.as_bytes());
    let (code, _, err) = run(
        dir.path(),
        &["--set-dom0", "xen-pciback.hide=(0000:01:00.0)"],
    );
    assert_eq!(code, 0, "{err}");
    let after = grub(dir.path());
    let at = dom0_lines_of(&after, &["XCP-ng"])[0];
    let line = after.lines().nth(at).unwrap();
    assert!(
        line.ends_with(
            " plymouth.ignore-serial-consoles xen-pciback.hide=(0000:01:00.0) -- single"
        ),
        "{line}"
    );
    let (_, out, _) = run(dir.path(), &["--get-dom0", HIDE]);
    assert_eq!(out, "xen-pciback.hide=(0000:01:00.0)\n");
}

#[test]
fn non_utf8_bytes_are_read_edited_and_kept() {
    let mut bytes = b"# r\xe9seau de caf\xe9 (Latin-1)\n".to_vec();
    bytes.extend(fixture_bytes("grub-real", AFTER_REAL));
    let dir = host_with_bytes(&bytes);
    let (code, out, err) = run(dir.path(), &["--get-dom0", "root"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "root=LABEL=root-pcipass\n");
    let (code, _, err) = run(
        dir.path(),
        &["--set-dom0", "xen-pciback.hide=(0000:01:00.0)"],
    );
    assert_eq!(code, 0, "{err}");
    let after = grub_bytes(dir.path());
    assert!(after.starts_with(b"# r\xe9seau de caf\xe9 (Latin-1)\n"));
    let (_, out, _) = run(dir.path(), &["--get-dom0", HIDE]);
    assert_eq!(out, "xen-pciback.hide=(0000:01:00.0)\n");
    let (code, _, err) = run(dir.path(), &["--delete-dom0", HIDE]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(grub_bytes(dir.path()), bytes, "delete restores the bytes");
}

#[test]
fn debian_default_by_title_is_read_and_the_only_entry_edited() {
    let dir = host_with_real("debian12-grub-mkconfig.cfg");
    let before = grub(dir.path());
    let (code, out, err) = run(dir.path(), &["--get-dom0", HIDE, "root"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "root=/dev/nvme0n1p2\nxen-pciback.hide=(0000:01:00.0)(0000:01:00.1)\n"
    );
    // A generated grub.cfg: `auto` picks the grub-mkconfig flow, which on
    // a root with no regeneration command refuses, writing nothing.
    let (code, _, err) = run(
        dir.path(),
        &["--set-dom0", "xen-pciback.hide=(0000:02:00.0)"],
    );
    assert_eq!(code, 1);
    assert!(err.contains("--grub-mkconfig-command"), "{err}");
    assert_eq!(grub(dir.path()), before);
    // In place, as the operator may choose.
    let (code, _, err) = run(
        dir.path(),
        &[
            "--boot-flow",
            "xcp-ng",
            "--set-dom0",
            "xen-pciback.hide=(0000:02:00.0)",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let after = grub(dir.path());
    // No XCP-ng entry here: only the default, `set default="Debian GNU/Linux,
    // with Xen hypervisor"`, is edited; the submenu's Xen entries are not.
    let default = lines_with(
        &before,
        "module2\t/boot/vmlinuz-6.1.0-28-amd64 placeholder root=/dev/nvme0n1p2 ro  quiet console=hvc0 xen-pciback.hide=",
    );
    assert_eq!(default.len(), 2, "the default and its submenu twin");
    assert_eq!(changed_lines(&before, &after), vec![default[0]]);
    assert!(after.lines().nth(default[0]).unwrap().ends_with(
        "\tmodule2\t/boot/vmlinuz-6.1.0-28-amd64 placeholder root=/dev/nvme0n1p2 ro  quiet console=hvc0 xen-pciback.hide=(0000:02:00.0)"
    ));
}

#[test]
fn a_dom0_edit_overridden_by_the_xen_line_says_so() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("boot/grub")).unwrap();
    let text = std::fs::read(format!(
        "{}/tests/fixtures/grub-real/xcpng-hide-via-xen-kextra.cfg",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    std::fs::write(dir.path().join("boot/grub/grub.cfg"), &text).unwrap();
    let (code, _, err) = run(dir.path(), &["--set-dom0", "console=hvc0"]);
    assert_eq!(code, 0, "{err}");
    // The hide after ` -- ` is moved to the dom0 line, as pcipassd does,
    // so a hide edit is not overridden and gets no warning.
    let dir = host_with_bytes(&text);
    let (code, _, err) = run(
        dir.path(),
        &["--set-dom0", "xen-pciback.hide=(0000:02:00.0)"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("warning"), "{err}");
    let after = grub(dir.path());
    assert!(!after.contains("(0000:01:00.0)"), "{after}");
    assert!(after.contains("xen-pciback.hide=(0000:02:00.0)"), "{after}");
}

/// The exec backend against a program that, like XenServer's own
/// xen-cmdline, ignores `--set-dom0-if-unchanged` (it exits 0 and writes
/// nothing): the edit is still made, by a plain `--set-dom0`, and checked.
#[test]
fn exec_backend_falls_back_when_the_program_has_no_compare_and_set() {
    use pcipass::domain::PciAddress;
    use pcipass::domain::bootcfg::{Dom0AccessEngine, ExecBootConfig};
    use pcipass::domain::dom0_access::Dom0Access;
    use pcipass::host::HostRoot;
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    pcipass::host::mock::create(&root, pcipass::host::mock::Profile::Demo).unwrap();
    let script = dir.path().join("xen-cmdline-without-cas");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncase \"$1\" in --set-dom0-if-unchanged) exit 0;; esac\nexec {BIN} \"$@\"\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    // Another test's fork may still hold the script open for writing for
    // a moment (ETXTBSY): wait until it can be run (up to a minute, a
    // hang guard for a busy machine).
    for _ in 0..6000 {
        match Command::new(&script).arg("--help").output() {
            Err(e) if e.raw_os_error() == Some(26) => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            _ => break,
        }
    }
    let host = HostRoot::new(&root);
    let engine = Dom0AccessEngine::new(Box::new(ExecBootConfig::new(script, host.clone())), host);
    let gpu: PciAddress = "0000:01:00.0".parse().unwrap();
    assert_eq!(engine.disable(&gpu).unwrap(), Dom0Access::DisableOnReboot);
    let (_, out, _) = run(&root, &["--get-dom0", "xen-pciback.hide"]);
    assert_eq!(out, "xen-pciback.hide=(0000:01:00.0)\n");
    assert_eq!(engine.enable(&gpu).unwrap(), Dom0Access::Enabled);
}

/// The non-comment lines of a modprobe or initramfs-tools file.
fn code_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// A hide made with xen-cmdline on a host whose xen-pciback is a module
/// (the xen-efi profile: a Debian kernel) gets the same early-load set-up
/// as one made through the API: xen-pciback listed for the initramfs and
/// a softdep before each native module of the functions the resulting
/// list hides (issue 22: it used to get none, and the native driver kept
/// the device).
#[test]
fn a_hide_set_with_xen_cmdline_gets_the_early_load_set_up() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    pcipass::host::mock::create(root, pcipass::host::mock::Profile::XenEfi).unwrap();
    let (code, _, err) = run(root, &["--set-dom0", "xen-pciback.hide=(0000:00:14.0)"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        code_lines(&root.join("etc/initramfs-tools/modules")),
        ["xen-pciback"]
    );
    let softdeps = root.join("etc/modprobe.d/pcipass.conf");
    assert_eq!(code_lines(&softdeps), ["softdep xhci_pci pre: xen-pciback"]);
    // The whole resulting list counts, the function hidden before too.
    let (code, _, err) = run(
        root,
        &[
            "--set-dom0",
            "xen-pciback.hide=(0000:00:14.0)(0000:01:00.0)",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        code_lines(&softdeps),
        [
            "softdep xhci_pci pre: xen-pciback",
            "softdep nouveau pre: xen-pciback"
        ]
    );
    // Taking the list away needs nothing.
    let (code, _, err) = run(root, &["--delete-dom0", "xen-pciback.hide"]);
    assert_eq!(code, 0, "{err}");
}

/// A driver built into the kernel always binds before a modular
/// xen-pciback: xen-cmdline refuses to hide its function, and writes
/// nothing.
#[test]
fn xen_cmdline_refuses_a_hide_that_a_built_in_driver_would_defeat() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    pcipass::host::mock::create(root, pcipass::host::mock::Profile::XenEfi).unwrap();
    std::fs::remove_file(root.join("sys/bus/pci/drivers/e1000e/module")).unwrap();
    let cfg = root.join("boot/efi/EFI/xen/xen.cfg");
    let before = std::fs::read(&cfg).unwrap();
    let (code, _, err) = run(root, &["--set-dom0", "xen-pciback.hide=(0000:00:1f.6)"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("e1000e") && err.contains("built into"),
        "{err}"
    );
    assert_eq!(std::fs::read(&cfg).unwrap(), before);
    assert!(!root.join("etc/modprobe.d/pcipass.conf").exists());
}

/// Where it cannot be told how xen-pciback loads (no /lib/modules, nothing
/// in /sys/module), xen-cmdline refuses a hide as pcipassd does; other
/// arguments are still edited.
#[test]
fn xen_cmdline_refuses_a_hide_when_xen_pciback_cannot_be_placed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    pcipass::host::mock::create(root, pcipass::host::mock::Profile::Demo).unwrap();
    std::fs::remove_dir_all(root.join("lib/modules")).unwrap();
    std::fs::remove_dir_all(root.join("sys/module/xen_pciback")).unwrap();
    let before = grub_bytes(root);
    let (code, _, err) = run(root, &["--set-dom0", "xen-pciback.hide=(0000:01:00.0)"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("built in or as a module") && err.contains("modprobe xen-pciback"),
        "{err}"
    );
    assert_eq!(grub_bytes(root), before);
    let (code, _, err) = run(root, &["--set-dom0", "pcipass.test=1"]);
    assert_eq!(code, 0, "{err}");
}

fn turn3(name: &str) -> tempfile::TempDir {
    host_with_bytes(&fixture_bytes("turn3", name))
}

/// Fixture a1 of the upstream differential runs: the kernel reads `-` and
/// `_` alike and takes the last occurrence, so `--set-dom0` must leave its
/// value the one in charge, as XCP-ng's tool does (it removes the key and
/// appends); `--delete-dom0` removes both spellings.
#[test]
fn set_dom0_hide_wins_over_a_later_underscore_spelling() {
    let dir = turn3("a1-set-leaves-underscore-variant.cfg");
    let (code, _, err) = run(
        dir.path(),
        &["--set-dom0", "xen-pciback.hide=(0000:05:00.0)"],
    );
    assert_eq!(code, 0, "{err}");
    let text = grub(dir.path());
    for line in text.lines().filter(|l| l.contains("module2 /boot/vmlinuz")) {
        assert!(line.ends_with(" xen_pciback.hide=(0000:05:00.0)"), "{line}");
        assert!(!line.contains("xen-pciback.hide"), "{line}");
    }
    let (code, out, _) = run(dir.path(), &["--get-dom0", "xen_pciback.hide"]);
    assert_eq!(
        (code, out.as_str()),
        (0, "xen_pciback.hide=(0000:05:00.0)\n")
    );

    let dir = turn3("a1-set-leaves-underscore-variant.cfg");
    let (code, _, err) = run(dir.path(), &["--delete-dom0", "xen-pciback.hide"]);
    assert_eq!(code, 0, "{err}");
    let text = grub(dir.path());
    assert!(!text.contains("pciback.hide"), "{text}");
}

/// `--set-dom0 xen-pciback.hide` without `=` deletes the list on every
/// flow (the kernel refuses a bare charp name; XCP-ng's bare key hides
/// nothing either).
#[test]
fn set_dom0_bare_hide_key_deletes_the_list() {
    let dir = turn3("a1-set-leaves-underscore-variant.cfg");
    let (code, _, err) = run(dir.path(), &["--set-dom0", "xen-pciback.hide"]);
    assert_eq!(code, 0, "{err}");
    let text = grub(dir.path());
    assert!(!text.contains("pciback.hide"), "{text}");
}

/// Fixture a1 (leading quote): an argument GRUB quotes whole is matched
/// by its value, as GRUB and the kernel read it (closer to what boots
/// than XCP-ng's tool, which does not match it): `--get-dom0` prints it as
/// written, `--set-dom0` replaces it rather than adding a second copy,
/// `--delete-dom0` removes it. Documented in `--help`.
#[test]
fn leading_quote_hide_is_matched_as_grub_reads_it() {
    let dir = turn3("a1-leading-quote-hide.cfg");
    let (code, out, _) = run(dir.path(), &["--get-dom0", "xen-pciback.hide"]);
    assert_eq!(
        (code, out.as_str()),
        (0, "\"xen-pciback.hide=(0000:01:00.0) (0000:03:00.1)\"\n")
    );
    let (code, _, err) = run(
        dir.path(),
        &["--set-dom0", "xen-pciback.hide=(0000:05:00.0)"],
    );
    assert_eq!(code, 0, "{err}");
    let text = grub(dir.path());
    assert_eq!(text.matches("pciback.hide").count(), 2, "{text}");
    assert!(!text.contains('"'), "{text}");
    let (code, _, err) = run(dir.path(), &["--delete-dom0", "xen-pciback.hide"]);
    assert_eq!(code, 0, "{err}");
    assert!(!grub(dir.path()).contains("pciback.hide"));
    let (_, help, _) = run(dir.path(), &["--help"]);
    assert!(help.contains("quotes whole"), "{help}");
}
