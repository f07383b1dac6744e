"""The grub-mkconfig flow against Debian's real generator: the `debian`
mock host, pcipassd regenerating its grub.cfg with the real
/usr/sbin/grub-mkconfig (scripts/grub-mkconfig-mock runs it in a mount
namespace over the mock's /boot and /etc/default), every GRUB_DEFAULT form
GRUB itself resolves, a failing generator, and regeneration by someone
else (as a kernel upgrade runs update-grub). What must hold is written
from GRUB's and Debian's sources (20_linux_xen, 00_header, grub.texi),
not computed by pcipass."""

import difflib
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import XenAPI

from conftest import REPO, Daemon, binary, failure, run

MKCONFIG = REPO / "scripts/grub-mkconfig-mock"
GPU, AUDIO, NVME, USB = "0000:01:00.0", "0000:01:00.1", "0000:02:00.0", "0000:00:14.0"
UUID = "3f1c2a9e-5b7d-4e0a-9c61-2d8f4b7e1a53"
XEN_SUBMENU = "Advanced options for Debian GNU/Linux (with Xen hypervisor)"
XEN_VERSION_SUBMENU = "Xen hypervisor, version 4.17-amd64"
XEN_ADVANCED = "Debian GNU/Linux, with Xen 4.17-amd64 and Linux 6.1.0-28-amd64"


def _why_not():
    if os.geteuid() != 0:
        return "needs root (unshare --mount and bind mounts)"
    if not Path("/usr/sbin/grub-mkconfig").exists() or not Path("/usr/lib/grub/i386-pc").exists():
        return "needs Debian's grub-common, grub2-common and grub-pc-bin (.ci/run installs them)"
    if shutil.which("unshare") is None:
        return "needs unshare (util-linux)"
    return None


# CI installs the generator and runs as root: there, a missing piece is a
# failure, not a skip.
if _why_not() and os.environ.get("CI") == "true":
    raise RuntimeError("the real grub-mkconfig cannot run in CI: " + _why_not())
pytestmark = pytest.mark.skipif(_why_not() is not None, reason=_why_not() or "")


def regenerate(root):
    """What a kernel or Xen package upgrade runs: update-grub (here the real
    grub-mkconfig against the mock root)."""
    proc = subprocess.run([str(MKCONFIG), str(root)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def entries(grub_cfg):
    """(title path, lines) of every menuentry, submenus joined with '>'."""
    found, stack, current = [], [], None
    for line in grub_cfg.splitlines():
        head = re.match(r"\s*(menuentry|submenu) '([^']*)'", line)
        if head and head.group(1) == "submenu":
            stack.append(head.group(2))
        elif head:
            current = (">".join(stack + [head.group(2)]), [])
        elif line.strip() == "}":
            if current is not None:
                found.append(current)
                current = None
            elif stack:
                stack.pop()
        elif current is not None:
            current[1].append(line.strip())
    return found


def dom0_lines(grub_cfg):
    """title path -> the dom0 kernel line of each Xen entry, and the
    titles of the native entries with their linux line."""
    xen, native = {}, {}
    for title, lines in entries(grub_cfg):
        if any(l.startswith("multiboot2") for l in lines):
            xen[title] = next(l for l in lines if l.startswith("module2") and "vmlinuz" in l)
        else:
            native[title] = next(l for l in lines if l.startswith("linux"))
    return xen, native


def hide_of(line):
    values = re.findall(r"xen-pciback\.hide=(\S+)", line)
    return values[-1] if values else None


def changed_lines(before, after):
    return [l for l in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
            if l[:1] in "+-" and not l.startswith(("+++", "---"))]


def debian(tmp_path, extra=(), command=None):
    """A started daemon on a fresh `debian` mock host whose grub.cfg the
    real grub-mkconfig regenerates."""
    root = tmp_path / "root"
    run(binary("pcipass"), "mock-host", "create", str(root), "--profile", "debian")
    # As on a real host (update-grub), the command says where it writes,
    # and pcipassd points it at a file of its own, then renames that.
    command = command or f"{MKCONFIG} {root} -o {root}/boot/grub/grub.cfg"
    d = Daemon(tmp_path, extra_args=["--grub-mkconfig-command", command, *extra])
    d.add_user("admin", "pool-admin")
    return d


@pytest.fixture
def made():
    daemons = []
    yield daemons
    for d in daemons:
        d.cleanup()


def _pcis(s):
    return {rec["pci_id"]: ref for ref, rec in s.xenapi.PCI.get_all_records().items()}


def _refused_hide(d, pci_id):
    """A session, the refusal of hiding `pci_id` (BOOT_CONFIG_UNAVAILABLE)
    and grub.cfg's bytes from before the attempt."""
    s = d.session("admin")
    before = (d.root / "boot/grub/grub.cfg").read_bytes()
    details = failure(s.xenapi.PCI.disable_dom0_access, _pcis(s)[pci_id])
    assert details[0] == "BOOT_CONFIG_UNAVAILABLE", details
    return s, details, before


def _reboot(d, s):
    host = s.xenapi.host.get_all()[0]
    s.xenapi.host.disable(host)
    s.xenapi.host.reboot(host)
    return d.session("admin")


def test_the_profile_is_what_the_real_generator_writes(tmp_path):
    """The `debian` mock's grub.cfg is byte for byte what Debian's real
    grub-mkconfig generates from the mock's own /etc/default and /boot."""
    root = tmp_path / "root"
    run(binary("pcipass"), "mock-host", "create", str(root), "--profile", "debian")
    shipped = (root / "boot/grub/grub.cfg").read_text()
    regenerate(root)
    assert (root / "boot/grub/grub.cfg").read_text() == shipped


def test_an_edit_reaches_every_xen_entry_only_and_survives_update_grub(tmp_path, made):
    """disable -> a kernel upgrade regenerates -> reboot -> enable ->
    regenerate -> reboot, through the API with the real generator."""
    d = debian(tmp_path)
    made.append(d.start())
    root = d.root
    s = d.session("admin")
    pcis = _pcis(s)
    original = (root / "boot/grub/grub.cfg").read_text()
    assert s.xenapi.PCI.get_dom0_access_status(pcis[GPU]) == "enabled"

    assert s.xenapi.PCI.disable_dom0_access(pcis[GPU]) == "disable_on_reboot"
    assert s.xenapi.PCI.disable_dom0_access(pcis[AUDIO]) == "disable_on_reboot"
    generated = (root / "boot/grub/grub.cfg").read_text()
    print("\n".join(changed_lines(original, generated)))
    xen, native = dom0_lines(generated)
    assert len(xen) == 3 and len(native) == 3, (xen, native)
    want = f"({GPU})({AUDIO})"
    assert {t: hide_of(l) for t, l in xen.items()} == {t: want for t in xen}
    assert all(hide_of(l) is None for l in native.values()), native
    # Every other argument of every entry is as the generator wrote it before.
    for title, line in xen.items():
        assert line.replace(f" xen-pciback.hide={want}", "") in original, title
    assert "xen-pciback" not in (root / "etc/default/grub").read_text()
    assert "xen-pciback" not in (root / "etc/default/grub.d/xen.cfg").read_text()

    # A kernel upgrade: a new kernel appears and update-grub runs. The hide
    # list is in the generator's input, so it is in the new grub.cfg too,
    # for the new kernel's Xen entries as well.
    for name, text in [("vmlinuz-6.1.0-29-amd64", ""), ("initrd.img-6.1.0-29-amd64", ""),
                       ("config-6.1.0-29-amd64", "CONFIG_XEN_DOM0=y\n")]:
        (root / "boot" / name).write_text(text)
    regenerate(root)
    xen, native = dom0_lines((root / "boot/grub/grub.cfg").read_text())
    assert len(xen) == 5 and {hide_of(l) for l in xen.values()} == {want}, xen
    assert all(hide_of(l) is None for l in native.values())
    assert s.xenapi.PCI.get_dom0_access_status(pcis[GPU]) == "disable_on_reboot"

    s = _reboot(d, s)
    assert f"xen-pciback.hide={want}" in (root / "proc/cmdline").read_text()
    assert s.xenapi.PCI.get_dom0_access_status(pcis[GPU]) == "disabled"
    assert s.xenapi.PCI.get_dom0_access_status(pcis[AUDIO]) == "disabled"

    assert s.xenapi.PCI.enable_dom0_access(pcis[GPU]) == "enable_on_reboot"
    assert s.xenapi.PCI.enable_dom0_access(pcis[AUDIO]) == "enable_on_reboot"
    assert not (root / "etc/default/grub.d/zz-pcipass.cfg").exists()
    regenerate(root)
    assert "xen-pciback" not in (root / "boot/grub/grub.cfg").read_text()
    s = _reboot(d, s)
    assert "xen-pciback" not in (root / "proc/cmdline").read_text()
    assert s.xenapi.PCI.get_dom0_access_status(pcis[GPU]) == "enabled"


def test_the_boot_disk_is_refused_and_nothing_is_written(tmp_path, made):
    d = debian(tmp_path)
    made.append(d.start())
    s = d.session("admin")
    before = (d.root / "boot/grub/grub.cfg").read_bytes()
    assert failure(s.xenapi.PCI.disable_dom0_access, _pcis(s)[NVME])[0] == "BOOT_DEVICE_PASSTHROUGH_DISALLOWED"
    assert not (d.root / "etc/default/grub.d/zz-pcipass.cfg").exists()
    assert (d.root / "boot/grub/grub.cfg").read_bytes() == before


def test_a_failing_generator_leaves_everything_as_it_was(tmp_path, made):
    """The regeneration fails (here: a generator that exits 1 after
    printing an error): the edit fails with the command's message, the
    drop-in is put back, grub.cfg is unchanged."""
    fail = tmp_path / "failing-update-grub"
    fail.write_text("#!/bin/sh\necho 'grub-probe: error: failed to get canonical path of /dev/root.' >&2\nexit 1\n")
    fail.chmod(0o755)
    d = debian(tmp_path, command=str(fail))
    made.append(d.start())
    s, details, before = _refused_hide(d, GPU)
    assert "exit code 1" in details[1] and "canonical path" in details[1], details
    assert not (d.root / "etc/default/grub.d/zz-pcipass.cfg").exists()
    assert (d.root / "boot/grub/grub.cfg").read_bytes() == before
    assert s.xenapi.PCI.get_dom0_access_status(_pcis(s)[GPU]) == "enabled"


def test_a_hand_edit_of_the_generated_file_is_read_and_warned_about(tmp_path, made):
    d = debian(tmp_path)
    made.append(d.start())
    s = d.session("admin")
    cfg = d.root / "boot/grub/grub.cfg"
    text = cfg.read_text()
    xen, _ = dom0_lines(text)
    line = xen["Debian GNU/Linux, with Xen hypervisor"]
    cfg.write_text(text.replace(line, line + f" xen-pciback.hide=({USB})", 1))
    assert s.xenapi.PCI.get_dom0_access_status(_pcis(s)[USB]) == "disable_on_reboot"
    log = (d.workdir / "pcipassd.log").read_text()
    assert "the next update-grub replaces it" in log, log[-2000:]
    # An edit through pcipass makes what boots durable.
    assert s.xenapi.PCI.disable_dom0_access(_pcis(s)[GPU]) == "disable_on_reboot"
    assert f"({USB})({GPU})" in (d.root / "etc/default/grub.d/zz-pcipass.cfg").read_text()


def test_a_hand_changed_drop_in_is_refused_naming_the_drop_in(tmp_path, made):
    """pcipass does not rewrite a drop-in of its own that someone changed:
    the refusal names that file, the one to look at, not another."""
    d = debian(tmp_path)
    made.append(d.start())
    s = d.session("admin")
    assert s.xenapi.PCI.disable_dom0_access(_pcis(s)[USB]) == "disable_on_reboot"
    dropin = d.root / "etc/default/grub.d/zz-pcipass.cfg"
    dropin.write_text(dropin.read_text() + 'GRUB_TIMEOUT=3\n')
    details = failure(s.xenapi.PCI.disable_dom0_access, _pcis(s)[GPU])
    assert details[0] == "BOOT_CONFIG_UNAVAILABLE", details
    reason = " ".join(details[1:])
    assert "/etc/default/grub.d/zz-pcipass.cfg: changed by hand" in reason, details
    assert "GRUB_TIMEOUT=3" in dropin.read_text()


def test_with_debians_real_generator_in_the_root_the_edit_goes_to_the_drop_in(tmp_path, made):
    """Debian's real /usr/sbin/grub-mkconfig spells the drop-in directory
    `${sysconfdir}/default/grub.d/*.cfg` (issue 22: pcipass looked for the
    literal path, missed it, and wrote a block into /etc/default/grub that
    every grub.d/*.cfg then overrides). With the real program in the mock
    root, the edit goes to the drop-in and /etc/default/grub is untouched."""
    root = tmp_path / "root"
    run(binary("pcipass"), "mock-host", "create", str(root), "--profile", "debian")
    (root / "usr/sbin").mkdir(parents=True)
    shutil.copy("/usr/sbin/grub-mkconfig", root / "usr/sbin/grub-mkconfig")
    stock = (root / "etc/default/grub").read_bytes()
    d = Daemon(tmp_path, extra_args=["--grub-mkconfig-command", f"{MKCONFIG} {root}"])
    d.add_user("admin", "pool-admin")
    made.append(d.start())
    s = d.session("admin")
    assert s.xenapi.PCI.disable_dom0_access(_pcis(s)[USB]) == "disable_on_reboot"
    assert f"({USB})" in (root / "etc/default/grub.d/zz-pcipass.cfg").read_text()
    assert (root / "etc/default/grub").read_bytes() == stock
    xen, _ = dom0_lines((root / "boot/grub/grub.cfg").read_text())
    assert {hide_of(l) for l in xen.values()} == {f"({USB})"}


def test_a_later_drop_in_resetting_the_xen_line_makes_the_edit_refused(tmp_path, made):
    """An operator's drop-in sourced after pcipass's sets
    GRUB_CMDLINE_LINUX_XEN_REPLACE="$GRUB_CMDLINE_LINUX", as Debian's
    xen.cfg suggests: the regenerated grub.cfg would boot no hide list.
    pcipass reads it back, refuses the edit and puts everything back."""
    root = tmp_path / "root"
    run(binary("pcipass"), "mock-host", "create", str(root), "--profile", "debian")
    (root / "etc/default/grub.d/zzz-local.cfg").write_text(
        'GRUB_CMDLINE_LINUX_XEN_REPLACE="$GRUB_CMDLINE_LINUX"\n')
    regenerate(root)
    d = Daemon(tmp_path, extra_args=["--grub-mkconfig-command", f"{MKCONFIG} {root}"])
    d.add_user("admin", "pool-admin")
    made.append(d.start())
    s, details, before = _refused_hide(d, USB)
    assert "would not read back as intended" in details[1] and "GRUB_CMDLINE_LINUX_XEN_REPLACE" in details[1], details
    assert not (root / "etc/default/grub.d/zz-pcipass.cfg").exists()
    assert (root / "boot/grub/grub.cfg").read_bytes() == before
    assert s.xenapi.PCI.get_dom0_access_status(_pcis(s)[USB]) == "enabled"


# GRUB_DEFAULT as /etc/default/grub sets it, with Debian's xen.cfg told not
# to override it; the grubenv variables as grub-set-default / grub-reboot
# write them (through the real grub-editenv). Top level of the generated
# menu: 0 Debian GNU/Linux, 1 the native submenu, 2 the Xen entry, 3 the
# Xen submenu (GRUB counts a submenu as one entry).
XEN_ADVANCED_PATH = f"{XEN_SUBMENU}>{XEN_VERSION_SUBMENU}>{XEN_ADVANCED}"
FORMS = {
    "index": ("2", {}, "Debian GNU/Linux, with Xen hypervisor"),
    "index path": ("3>0>1", {}, XEN_ADVANCED_PATH + " (recovery mode)"),
    # Past the end of a submenu: GRUB takes that submenu's first item.
    "index past the end": ("3>5", {}, XEN_ADVANCED_PATH),
    "title path": (XEN_ADVANCED_PATH, {}, XEN_ADVANCED_PATH),
    "menu-entry id": (f"xen-gnulinux-simple-{UUID}", {}, "Debian GNU/Linux, with Xen hypervisor"),
    "saved": ("saved", {"saved_entry": XEN_ADVANCED_PATH}, XEN_ADVANCED_PATH),
    "next_entry": ("0", {"next_entry": "2"}, "Debian GNU/Linux, with Xen hypervisor"),
}


@pytest.mark.parametrize("form", FORMS)
def test_every_grub_default_form_boots_the_entry_grub_would(tmp_path, made, form):
    spec, env, booted = FORMS[form]
    root = tmp_path / "root"
    run(binary("pcipass"), "mock-host", "create", str(root), "--profile", "debian")
    default = root / "etc/default/grub"
    text = re.sub(r"(?m)^GRUB_DEFAULT=.*$", f'GRUB_DEFAULT="{spec}"', default.read_text())
    default.write_text(text + "XEN_OVERRIDE_GRUB_DEFAULT=0\n")
    regenerate(root)
    for key, value in env.items():
        run("grub-editenv", str(root / "boot/grub/grubenv"), "set", f"{key}={value}")
    d = Daemon(tmp_path, extra_args=["--grub-mkconfig-command", f"{MKCONFIG} {root}"])
    d.add_user("admin", "pool-admin")
    made.append(d.start())
    s = d.session("admin")
    assert s.xenapi.PCI.disable_dom0_access(_pcis(s)[USB]) == "disable_on_reboot"
    xen, _ = dom0_lines((root / "boot/grub/grub.cfg").read_text())
    s = _reboot(d, s)
    # The booted command line is the chosen entry's (the recovery entry's
    # has `single`).
    cmdline = (root / "proc/cmdline").read_text()
    assert cmdline.split() == xen[booted].split()[2:], (cmdline, xen[booted])
    assert s.xenapi.PCI.get_dom0_access_status(_pcis(s)[USB]) == "disabled"


def test_a_native_default_is_refused_naming_the_entry(tmp_path, made):
    root = tmp_path / "root"
    run(binary("pcipass"), "mock-host", "create", str(root), "--profile", "debian")
    default = root / "etc/default/grub"
    default.write_text(default.read_text() + "XEN_OVERRIDE_GRUB_DEFAULT=0\n")
    regenerate(root)
    d = Daemon(tmp_path, extra_args=["--grub-mkconfig-command", f"{MKCONFIG} {root}"])
    d.add_user("admin", "pool-admin")
    made.append(d.start())
    s = d.session("admin")
    details = failure(s.xenapi.PCI.disable_dom0_access, _pcis(s)[USB])
    assert details[0] == "BOOT_CONFIG_UNAVAILABLE" and "Debian GNU/Linux" in details[1], details
    assert "not a Xen entry" in details[1], details
    assert not (root / "etc/default/grub.d/zz-pcipass.cfg").exists()


# xen-pciback is a module on Debian: the hide only works when the
# initramfs loads it before the native drivers (initramfs-tools loads the
# modules listed in /etc/initramfs-tools/modules at boot, before the
# root file system is mounted).
MODULES = "etc/initramfs-tools/modules"


def listed(text):
    """The modules an initramfs-tools list loads (first word of each line
    that is not a comment)."""
    return [l.split()[0] for l in text.splitlines() if l.strip() and not l.lstrip().startswith("#")]


def test_the_module_is_listed_for_the_initramfs_so_the_hide_takes_effect(tmp_path, made):
    d = debian(tmp_path)
    made.append(d.start())
    s = d.session("admin")
    stock = (d.root / MODULES).read_text()
    assert listed(stock) == []
    assert s.xenapi.PCI.disable_dom0_access(_pcis(s)[GPU]) == "disable_on_reboot"
    after = (d.root / MODULES).read_text()
    assert after == stock + "xen-pciback\n", after
    s = _reboot(d, s)
    assert s.xenapi.PCI.get_dom0_access_status(_pcis(s)[GPU]) == "disabled"
    assert os.path.basename(os.readlink(d.root / "sys/bus/pci/devices" / GPU / "driver")) == "pciback"


def test_xen_pciback_is_made_to_load_before_each_native_driver(tmp_path, made):
    """initramfs-tools starts udev, which loads the drivers of the devices
    it finds, before it loads its module list, and the initramfs carries
    /etc/modprobe.d: a softdep per native module (the module, not the
    driver's name: xhci_hcd comes from xhci_pci) makes xen-pciback come
    first. A driver built into the kernel always binds first: refused."""
    d = debian(tmp_path)
    made.append(d.start())
    s = d.session("admin")
    conf = d.root / "etc/modprobe.d/pcipass.conf"
    assert s.xenapi.PCI.disable_dom0_access(_pcis(s)[USB]) == "disable_on_reboot"
    assert s.xenapi.PCI.disable_dom0_access(_pcis(s)[GPU]) == "disable_on_reboot"
    lines = [l for l in conf.read_text().splitlines() if not l.startswith("#")]
    assert lines == ["softdep xhci_pci pre: xen-pciback", "softdep nouveau pre: xen-pciback"], lines
    # A kernel with the NIC's driver built in: sysfs gives the driver no
    # `module` link.
    (d.root / "sys/bus/pci/drivers/e1000e/module").unlink()
    details = failure(s.xenapi.PCI.disable_dom0_access, _pcis(s)["0000:00:1f.6"])
    assert details[0] == "BOOT_CONFIG_UNAVAILABLE" and "e1000e" in details[1] and "built into" in details[1], details
    assert "(0000:00:1f.6)" not in (d.root / "etc/default/grub.d/zz-pcipass.cfg").read_text()
    assert "e1000e" not in conf.read_text()


def test_a_hide_made_with_xen_cmdline_gets_its_softdep_and_takes_effect(tmp_path, made):
    """Issue 22: a device hidden by hand with the packaged xen-cmdline got no
    softdep and no initramfs list, so the native driver kept it. Now
    xen-cmdline runs the same early-load step as the API, and a later API
    edit computes the softdeps from the whole resulting list."""
    root = tmp_path / "root"
    run(binary("pcipass"), "mock-host", "create", str(root), "--profile", "debian")
    run(binary("xen-cmdline"), "--root", str(root), "--grub-mkconfig-command", f"{MKCONFIG} {root}",
        "--set-dom0", f"xen-pciback.hide=({USB})")
    assert listed((root / MODULES).read_text()) == ["xen-pciback"]
    conf = root / "etc/modprobe.d/pcipass.conf"
    assert [l for l in conf.read_text().splitlines() if not l.startswith("#")] == [
        "softdep xhci_pci pre: xen-pciback"]
    # The operator then removes the softdep by hand: the next API edit puts
    # it back along with the new function's.
    conf.unlink()
    d = Daemon(tmp_path, extra_args=["--grub-mkconfig-command", f"{MKCONFIG} {root}"])
    d.add_user("admin", "pool-admin")
    made.append(d.start())
    s = d.session("admin")
    assert s.xenapi.PCI.disable_dom0_access(_pcis(s)[GPU]) == "disable_on_reboot"
    assert [l for l in conf.read_text().splitlines() if not l.startswith("#")] == [
        "softdep xhci_pci pre: xen-pciback", "softdep nouveau pre: xen-pciback"]
    s = _reboot(d, s)
    assert s.xenapi.PCI.get_dom0_access_status(_pcis(s)[USB]) == "disabled"
    assert s.xenapi.PCI.get_dom0_access_status(_pcis(s)[GPU]) == "disabled"


def test_a_function_its_native_driver_kept_is_not_disabled(tmp_path, made):
    """The operator takes xen-pciback out of the initramfs list after the
    edit and rebuilds the initramfs: at the next boot the native driver
    binds first and keeps the GPU, whatever the command line says. pcipass
    never calls it disabled."""
    d = debian(tmp_path)
    made.append(d.start())
    s = d.session("admin")
    stock = (d.root / MODULES).read_text()
    assert s.xenapi.PCI.disable_dom0_access(_pcis(s)[GPU]) == "disable_on_reboot"
    (d.root / MODULES).write_text(stock)
    run(binary("pcipass"), "mock-host", "update-initramfs", str(d.root))
    s = _reboot(d, s)
    assert f"xen-pciback.hide=({GPU})" in (d.root / "proc/cmdline").read_text()
    assert os.path.basename(os.readlink(d.root / "sys/bus/pci/devices" / GPU / "driver")) == "nouveau"
    assert s.xenapi.PCI.get_dom0_access_status(_pcis(s)[GPU]) == "disable_on_reboot"


def test_without_a_way_to_rebuild_the_initramfs_the_edit_says_what_to_do(tmp_path, made):
    """A root that is not a mock host and not / (here: the debian tree
    without its mock marker) has no initramfs builder pcipass may run:
    the hide is refused with the exact steps, and nothing is written."""
    d = debian(tmp_path)
    (d.root / ".pcipass-mock-host").unlink()
    made.append(d.start())
    s, details, before = _refused_hide(d, GPU)
    assert "/etc/initramfs-tools/modules" in details[1] and "update-initramfs -u" in details[1], details
    assert listed((d.root / MODULES).read_text()) == []
    assert not (d.root / "etc/default/grub.d/zz-pcipass.cfg").exists()
    assert (d.root / "boot/grub/grub.cfg").read_bytes() == before


def test_a_hide_is_refused_when_the_kernels_modules_cannot_be_seen(tmp_path, made):
    """What a real Debian 12 dom0 showed (issue 22): a sandbox that hides
    /lib/modules (ProtectKernelModules=yes) while xen-pciback is not loaded
    leaves pcipass unable to tell that xen-pciback is a module. It must not
    answer disable_on_reboot for a hide that the native driver would keep
    for ever: refused, saying why and what to do, nothing written."""
    d = debian(tmp_path)
    shutil.rmtree(d.root / "lib/modules")
    made.append(d.start())
    s, details, before = _refused_hide(d, GPU)
    assert "built in or as a module" in details[1] and "modprobe xen-pciback" in details[1], details
    assert "/lib/modules/6.1.0-28-amd64" in details[1], details
    assert listed((d.root / MODULES).read_text()) == []
    assert not (d.root / "etc/modprobe.d/pcipass.conf").exists()
    assert not (d.root / "etc/default/grub.d/zz-pcipass.cfg").exists()
    assert (d.root / "boot/grub/grub.cfg").read_bytes() == before
    assert s.xenapi.PCI.get_dom0_access_status(_pcis(s)[GPU]) == "enabled"


def test_a_failing_initramfs_rebuild_puts_the_module_list_back(tmp_path, made):
    fail = tmp_path / "failing-update-initramfs"
    fail.write_text("#!/bin/sh\necho 'update-initramfs: failed for /boot/initrd.img-6.1.0-28-amd64 with 1.' >&2\nexit 1\n")
    fail.chmod(0o755)
    d = debian(tmp_path, extra=["--initramfs-command", str(fail)])
    made.append(d.start())
    s = d.session("admin")
    stock = (d.root / MODULES).read_bytes()
    details = failure(s.xenapi.PCI.disable_dom0_access, _pcis(s)[GPU])
    assert details[0] == "BOOT_CONFIG_UNAVAILABLE" and "initrd.img" in details[1], details
    assert (d.root / MODULES).read_bytes() == stock
    assert not (d.root / "etc/default/grub.d/zz-pcipass.cfg").exists()


def test_xen_cmdline_takes_the_same_boot_flows(tmp_path):
    """xen-cmdline on the debian host edits the hide list through the
    drop-in and the real generator, reads the generated grub.cfg, and
    refuses what the flow cannot keep; on the xen-efi host it edits
    xen.cfg's default section."""
    root = tmp_path / "root"
    run(binary("pcipass"), "mock-host", "create", str(root), "--profile", "debian")
    xc = lambda *a, check=True: run(binary("xen-cmdline"), "--root", str(root),
                                     "--grub-mkconfig-command", f"{MKCONFIG} {root}", *a, check=check)
    assert xc("--get-dom0", "xen-pciback.hide").stdout == "\n"
    xc("--set-dom0", f"xen-pciback.hide=({USB})")
    assert xc("--get-dom0", "xen-pciback.hide").stdout == f"xen-pciback.hide=({USB})\n"
    xen, native = dom0_lines((root / "boot/grub/grub.cfg").read_text())
    assert {hide_of(l) for l in xen.values()} == {f"({USB})"} and not any(map(hide_of, native.values()))
    changed = xc("--set-dom0-if-unchanged", "xen-pciback.hide", "", f"xen-pciback.hide=({GPU})", check=False)
    assert changed.returncode == 3 and changed.stderr.strip() == f"xen-pciback.hide=({USB})"
    assert xc("--get-dom0", "ro", "quiet").stdout == "ro\nquiet\n"
    refused = xc("--set-dom0", "quiet", check=False)
    assert refused.returncode == 1 and "/etc/default/grub" in refused.stderr
    xc("--delete-dom0", "xen-pciback.hide")
    assert not (root / "etc/default/grub.d/zz-pcipass.cfg").exists()
    assert "xen-pciback" not in (root / "boot/grub/grub.cfg").read_text()

    efi = tmp_path / "efi"
    run(binary("pcipass"), "mock-host", "create", str(efi), "--profile", "xen-efi")
    cfg = efi / "boot/efi/EFI/xen/xen.cfg"
    before = cfg.read_text()
    run(binary("xen-cmdline"), "--root", str(efi), "--set-dom0", f"xen-pciback.hide=({USB})")
    after = cfg.read_text()
    diff = changed_lines(before, after)
    assert len(diff) == 2 and diff[0].startswith("-kernel=") and diff[1].endswith(f" xen-pciback.hide=({USB})"), diff
    forced = run(binary("xen-cmdline"), "--root", str(efi), "--boot-flow", "grub-mkconfig", "--get-dom0", "ro", check=False)
    assert forced.returncode == 1 and "grub" in forced.stderr


def test_where_no_drop_ins_are_read_a_block_of_default_grub_is_edited(tmp_path, made):
    """Upstream GRUB's and Fedora's generators read no /etc/default/grub.d:
    there the hide list goes into a marked block at the end of
    /etc/default/grub, every other byte kept, and goes away whole."""
    root = tmp_path / "root"
    run(binary("pcipass"), "mock-host", "create", str(root), "--profile", "debian")
    for f in (root / "etc/default/grub.d").iterdir():
        f.unlink()
    (root / "etc/default/grub.d").rmdir()
    default = root / "etc/default/grub"
    default.write_text(re.sub(r"(?m)^GRUB_DEFAULT=.*$", 'GRUB_DEFAULT="Debian GNU/Linux, with Xen hypervisor"',
                              default.read_text()))
    regenerate(root)
    stock = default.read_bytes()
    d = Daemon(tmp_path, extra_args=["--grub-mkconfig-command", f"{MKCONFIG} {root}"])
    d.add_user("admin", "pool-admin")
    made.append(d.start())
    s = d.session("admin")
    assert s.xenapi.PCI.disable_dom0_access(_pcis(s)[USB]) == "disable_on_reboot"
    edited = default.read_bytes()
    assert edited.startswith(stock)
    print(edited[len(stock):].decode())
    assert edited[len(stock):].decode().splitlines()[0] == "# BEGIN pcipass: PCI functions hidden from dom0"
    xen, native = dom0_lines((root / "boot/grub/grub.cfg").read_text())
    assert xen and {hide_of(l) for l in xen.values()} == {f"({USB})"}
    assert not any(map(hide_of, native.values()))
    assert s.xenapi.PCI.enable_dom0_access(_pcis(s)[USB]) == "enabled"
    assert default.read_bytes() == stock


@pytest.mark.parametrize("step", ["txn-after-writes", "txn-after-steps", "txn-after-early"])
def test_a_hide_cut_short_is_undone_at_the_next_start(tmp_path, made, monkeypatch, step):
    """Issue 23: the daemon dies in the middle of a hide (it aborts at
    `step`: after the drop-in is written, after grub.cfg is regenerated,
    after the initramfs is rebuilt). The caller got no answer, so the
    next start puts every file back as it was, byte for byte, rebuilds
    the initramfs if the edit had started to, and says so in the log:
    nothing boots that was not acknowledged, and the next hide works."""
    d = debian(tmp_path)
    files = ["boot/grub/grub.cfg", "etc/default/grub.d/zz-pcipass.cfg", "etc/modprobe.d/pcipass.conf",
             MODULES, "boot/initrd.img-6.1.0-28-amd64"]

    def contents():
        return {f: (d.root / f).read_bytes() if (d.root / f).exists() else None for f in files}

    before = contents()
    journal = d.root / "boot/grub/grub.cfg.pcipass-journal"
    monkeypatch.setenv("PCIPASS_FAULT", step)
    made.append(d.start())
    s = d.session("admin")
    with pytest.raises(Exception):  # noqa: B017 - the daemon dies under the call
        s.xenapi.PCI.disable_dom0_access(_pcis(s)[GPU])
    assert d.proc.wait(timeout=120) == -signal.SIGABRT
    assert journal.exists(), "the journal of the unfinished edit"
    monkeypatch.delenv("PCIPASS_FAULT")
    d.start()
    assert not journal.exists()
    assert contents() == before, step
    log = (d.workdir / "pcipassd.log").read_text()
    assert "undid an unfinished edit" in log, log[-2000:]
    s = d.session("admin")
    assert s.xenapi.PCI.get_dom0_access_status(_pcis(s)[GPU]) == "enabled"
    assert s.xenapi.PCI.disable_dom0_access(_pcis(s)[GPU]) == "disable_on_reboot"
    s = _reboot(d, s)
    assert s.xenapi.PCI.get_dom0_access_status(_pcis(s)[GPU]) == "disabled"


def test_a_refused_hide_leaves_every_file_as_it_was(tmp_path, made):
    """Issue 23: the generator fails (here: a command that exits 1). The
    hide is refused and every file it would have touched (drop-in,
    grub.cfg, modprobe.d, the initramfs module list and image) is
    byte-identical: the early-load files are written only after grub.cfg
    was regenerated and read back."""
    failing = tmp_path / "failing-mkconfig"
    failing.write_text("#!/bin/sh\necho 'grub-mkconfig: cannot write grub.cfg' >&2\nexit 1\n")
    failing.chmod(0o755)
    d = debian(tmp_path, command=str(failing))
    files = ["boot/grub/grub.cfg", "etc/default/grub.d/zz-pcipass.cfg", "etc/modprobe.d/pcipass.conf",
             MODULES, "boot/initrd.img-6.1.0-28-amd64"]
    before = {f: (d.root / f).read_bytes() if (d.root / f).exists() else None for f in files}
    made.append(d.start())
    s = d.session("admin")
    with pytest.raises(XenAPI.Failure) as refused:
        s.xenapi.PCI.disable_dom0_access(_pcis(s)[GPU])
    assert "cannot write grub.cfg" in " ".join(refused.value.details), refused.value.details
    after = {f: (d.root / f).read_bytes() if (d.root / f).exists() else None for f in files}
    assert after == before
    assert not (d.root / "boot/grub/grub.cfg.pcipass-journal").exists()


def test_concurrent_hides_are_written_together(tmp_path, made):
    """Issue 23: Xen Orchestra sends its hides at once. Eleven concurrent
    hides on a Debian host whose xen-pciback is a module: the ten valid
    ones are written together (counted: the generator runs at most twice,
    not ten times), each caller gets its own function's status, and the
    one that cannot be made effective (a driver built into the kernel) is
    refused alone without failing the others. After the reboot all ten
    are disabled."""
    import threading

    count = tmp_path / "regenerations"
    wrapper = tmp_path / "counting-mkconfig"
    wrapper.write_text(f'#!/bin/sh\necho run >> "{count}"\nexec "{MKCONFIG}" "$@"\n')
    wrapper.chmod(0o755)
    root = tmp_path / "root"
    d = debian(tmp_path, command=f"{wrapper} {root}")
    # i40e built into this kernel: sysfs gives its driver no `module` link.
    (root / "sys/bus/pci/drivers/i40e/module").unlink()
    made.append(d.start())
    # Not the console GPU (00:02.0): refused while the host display is on.
    good = ["0000:00:14.0", "0000:00:17.0", "0000:00:1f.6", "0000:01:00.0",
            "0000:01:00.1", "0000:03:02.0", "0000:03:02.1", "0000:03:02.2", "0000:03:02.3"]
    built_in = "0000:03:00.0"
    refs = _pcis(d.session("admin"))
    sessions = {pci: d.session("admin") for pci in good + [built_in]}
    answers = {}
    start = threading.Barrier(len(sessions))

    def hide(pci):
        start.wait()
        try:
            answers[pci] = sessions[pci].xenapi.PCI.disable_dom0_access(refs[pci])
        except XenAPI.Failure as f:
            answers[pci] = f.details

    threads = [threading.Thread(target=hide, args=(pci,)) for pci in sessions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {pci: answers[pci] for pci in good} == {pci: "disable_on_reboot" for pci in good}
    assert "built into the kernel" in " ".join(answers[built_in]), answers[built_in]
    runs = count.read_text().count("run")
    print(f"group commit: {len(good)} concurrent hides, {runs} regeneration(s)")
    assert 1 <= runs <= 2, runs
    s = _reboot(d, d.session("admin"))
    refs = _pcis(s)
    for pci in good:
        assert s.xenapi.PCI.get_dom0_access_status(refs[pci]) == "disabled", pci
    assert s.xenapi.PCI.get_dom0_access_status(refs[built_in]) == "enabled"


def test_a_regeneration_orphaned_by_a_killed_daemon_is_waited_for(tmp_path, made):
    """Issue 23: the daemon is killed while grub-mkconfig runs. The
    generator lives in its own process group and goes on; like Debian's
    grub-mkconfig it writes its output last (here: generated to a
    temporary file, then copied over grub.cfg after a pause). The next
    start must not undo the edit while it runs, or the orphan would then
    install grub.cfg with a hide nobody acknowledged: the generator holds
    the edit's lock (its stdin), so the recovery waits for it and then puts
    every file back."""
    slow = tmp_path / "slow-mkconfig"
    root = tmp_path / "root"
    slow.write_text(
        "#!/bin/sh\n"
        f'"{MKCONFIG}" "$1" "$1/boot/grub/grub.cfg.slow" || exit 1\n'
        f'touch "{tmp_path}/generating"\n'
        "sleep 3\n"
        'cat "$1/boot/grub/grub.cfg.slow" > "$1/boot/grub/grub.cfg"\n'
        'rm -f "$1/boot/grub/grub.cfg.slow"\n')
    slow.chmod(0o755)
    d = debian(tmp_path, command=f"{slow} {root}")
    grub = root / "boot/grub/grub.cfg"
    dropin = root / "etc/default/grub.d/zz-pcipass.cfg"
    before = grub.read_bytes()
    made.append(d.start())
    s = d.session("admin")
    import threading

    def hide():
        try:
            s.xenapi.PCI.disable_dom0_access(_pcis(s)[GPU])
        except Exception:  # noqa: BLE001 - the daemon dies under the call
            pass

    call = threading.Thread(target=hide)
    call.start()
    deadline = time.time() + 60
    while not (tmp_path / "generating").exists():
        assert time.time() < deadline, "the generator never ran"
        time.sleep(0.02)
    os.kill(d.proc.pid, signal.SIGKILL)
    d.proc.wait()
    call.join()
    d.start()
    assert not (root / "boot/grub/grub.cfg.pcipass-journal").exists()
    assert not (root / "boot/grub/grub.cfg.slow").exists(), "the orphan was done before the recovery"
    assert grub.read_bytes() == before
    assert not dropin.exists()
    s = d.session("admin")
    assert s.xenapi.PCI.get_dom0_access_status(_pcis(s)[GPU]) == "enabled"


def _grub_hide(text):
    """The hide list of the default Xen entry's dom0 line, as a set."""
    for line in text.splitlines():
        if "vmlinuz" in line and "xen-pciback.hide=" in line:
            return set(re.findall(r"\(([0-9a-f:.]+)\)", line.split("xen-pciback.hide=")[1].split()[0]))
    return set()


def _debian_update_grub(tmp_path, root):
    """A stand-in for Debian's update-grub (`grub-mkconfig -o
    /boot/grub/grub.cfg "$@"`, a later -o winning) that installs the way
    Debian 12's grub-mkconfig does: OUT.new is opened before the inputs are
    read and held open until the end, and the output is installed with
    `cat OUT.new > OUT`, here slowed down so that a reader can catch grub.cfg
    half-written. The generation itself is the real grub-mkconfig.
    OP_PAUSE seconds pass between generating and installing (a slow
    os-prober, a busy disk)."""
    script = tmp_path / "bin" / "update-grub"
    script.parent.mkdir(exist_ok=True)
    script.write_text(
        "#!/bin/sh\n"
        f'out="{root}/boot/grub/grub.cfg"\n'
        'while [ $# -gt 0 ]; do case "$1" in -o) out=$2; shift 2;; *) shift;; esac; done\n'
        'exec 3> "$out.new"\n'
        f'"{MKCONFIG}" "{root}" "$out.gen$$" || {{ rm -f "$out.new" "$out.gen$$"; exit 1; }}\n'
        'cat "$out.gen$$" >&3; rm -f "$out.gen$$"\n'
        'sleep "${OP_PAUSE:-0}"\n'
        'head -c 3000 "$out.new" > "$out"; sleep 0.2; cat "$out.new" > "$out"\n'
        'exec 3>&-; rm -f "$out.new"\n')
    script.chmod(0o755)
    return script


def _with_debian_update_grub(tmp_path, made):
    """A started daemon on a Debian host whose regeneration command is
    [`_debian_update_grub`], and that command."""
    update_grub = tmp_path / "bin" / "update-grub"
    d = debian(tmp_path, command=str(update_grub))
    _debian_update_grub(tmp_path, d.root)
    made.append(d.start())
    return d, update_grub


def test_readers_never_see_a_half_written_grub_cfg(tmp_path, made):
    """Issue 23: Debian's grub-mkconfig installs its output with `cat
    grub.cfg.new > grub.cfg`, so while update-grub runs, grub.cfg is
    half-written. pcipassd points update-grub at a file of its own (a later
    `-o` wins) and renames it over grub.cfg: a reader polling grub.cfg
    during six hides always finds a whole file with its Xen entries."""
    import threading

    d, update_grub = _with_debian_update_grub(tmp_path, made)
    grub = d.root / "boot/grub/grub.cfg"
    seen, torn, done = [0], [], threading.Event()

    def read():
        while not done.is_set():
            text = grub.read_text(errors="replace")
            seen[0] += 1
            if "### END /etc/grub.d/41_custom ###" not in text or not dom0_lines(text)[0]:
                torn.append(len(text))

    reader = threading.Thread(target=read)
    reader.start()
    s = d.session("admin")
    refs = _pcis(s)
    try:
        for pci in ["0000:03:02.1", "0000:00:14.0", GPU, "0000:03:02.0", "0000:00:1f.6", AUDIO]:
            assert s.xenapi.PCI.disable_dom0_access(refs[pci]) == "disable_on_reboot"
    finally:
        done.set()
        reader.join()
    print(f"reads of grub.cfg during 6 hides: {seen[0]}, torn: {len(torn)}")
    assert seen[0] > 0
    assert not torn, f"{len(torn)} of {seen[0]} reads saw a half-written grub.cfg"
    assert not list(grub.parent.glob("grub.cfg.*new*")), list(grub.parent.iterdir())
    assert len(_grub_hide(grub.read_text())) == 6


def test_an_update_grub_at_the_same_time_does_not_drop_an_acknowledged_edit(tmp_path, made):
    """Issue 23: an operator's update-grub (or a kernel upgrade) runs while
    pcipass edits. A run that read the generator's inputs before pcipass's
    edit installs its grub.cfg last and would drop the edit. Before each of
    four hides such a run is started (it has generated, and installs 3 s
    later); pcipassd sees it (its grub.cfg.new), waits for it and, as its
    grub.cfg lacks the edit, regenerates again. At the end grub.cfg hides
    every acknowledged function and the log says what happened."""
    d, update_grub = _with_debian_update_grub(tmp_path, made)
    grub = d.root / "boot/grub/grub.cfg"
    s = d.session("admin")
    refs = _pcis(s)
    acked = []
    for pci in ["0000:03:02.1", "0000:00:14.0", GPU, "0000:03:02.0"]:
        # Longer than a regeneration by pcipass, so that it installs after.
        operator = subprocess.Popen([str(update_grub)], env=dict(os.environ, OP_PAUSE="3"),
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        new = grub.parent / "grub.cfg.new"
        while not (new.exists() and new.stat().st_size > 0):  # it has generated
            assert operator.poll() is None, "the operator's update-grub ended early"
            time.sleep(0.02)
        assert s.xenapi.PCI.disable_dom0_access(refs[pci]) == "disable_on_reboot"
        acked.append(pci)
        assert operator.wait(timeout=120) == 0
        assert _grub_hide(grub.read_text()) == set(acked), "an acknowledged edit is not in grub.cfg"
    log = (d.workdir / "pcipassd.log").read_text()
    redone = log.count("regenerating again")
    print(f"4 hides, each overlapped by an update-grub: pcipass regenerated again {redone} time(s)")
    assert "waiting for another run of grub-mkconfig" in log
    assert redone == 4, redone
    s = d.session("admin")
    for pci in acked:
        assert s.xenapi.PCI.get_dom0_access_status(_pcis(s)[pci]) == "disable_on_reboot", pci


def test_a_grub_cfg_new_left_by_a_failed_run_does_not_hold_up_edits(tmp_path, made):
    """grub-mkconfig leaves grub.cfg.new behind when its output fails the
    syntax check. Nothing writes it any more, so an edit does not wait for
    it (it is taken for another run at work only while a process holds it
    or it was written in the last 30 s), and it is left where it is."""
    d = debian(tmp_path)
    stale = d.root / "boot/grub/grub.cfg.new"
    stale.write_text("menuentry 'half {\n")
    an_hour_ago = time.time() - 3600
    os.utime(stale, (an_hour_ago, an_hour_ago))
    made.append(d.start())
    s = d.session("admin")
    assert s.xenapi.PCI.disable_dom0_access(_pcis(s)[GPU]) == "disable_on_reboot"
    assert "waiting for another run" not in (d.workdir / "pcipassd.log").read_text()
    assert stale.read_text() == "menuentry 'half {\n"
