"""The host display as XenCenter's integrated-GPU flow uses it (issue 25):
host.display with xapi's four values and transitions, host.disable_display
and host.enable_display editing Xen's console argument through the boot
configuration's transaction, and the system display device's PCI (or
PGPU) refused while the next boot shows the console on it. XenCenter's
call sequence (UpdateIntegratedGpuPassthroughAction: the display off
first, then PGPU.disable_dom0_access; a reboot; then back) is replayed on
every boot flow: XCP-ng's grub.cfg, Debian's real grub-mkconfig, Xen's EFI
loader."""

import re
import time

import pytest

from conftest import failure, pci_ref
from test_cli import out
from test_profiles import _started as profile_started

VGA = "0000:00:02.0"  # the demo profiles' boot VGA device (i915)
GPU = "0000:01:00.0"

# profile -> the file whose Xen console argument the next boot takes
PROFILES = {
    "demo": "boot/grub/grub.cfg",
    "debian": "boot/grub/grub.cfg",
    "xen-efi": "boot/efi/EFI/xen/xen.cfg",
}


@pytest.fixture(params=list(PROFILES))
def host(tmp_path, request):
    d = profile_started(tmp_path, request.param)
    d.profile = request.param
    yield d
    d.cleanup()


def _xen_consoles(d):
    """The console= values of Xen's lines in the file the next boot reads,
    the default entry's first: GRUB's multiboot lines (the default entry
    is the first on every profile), or xen.cfg's options=."""
    text = (d.root / PROFILES[d.profile]).read_text()
    if d.profile == "xen-efi":
        lines = [l for l in text.splitlines() if l.startswith("options=")]
    else:
        lines = [l for l in text.splitlines() if re.match(r"\s*multiboot2?\s", l)]
    return [re.findall(r"(?<!\S)console=(\S+)", l)[-1:] for l in lines]


def _dom0_consoles(d):
    """The console= arguments of the default entry's dom0 kernel line (the
    first vmlinuz module of grub.cfg, xen.cfg's kernel=), in order."""
    text = (d.root / PROFILES[d.profile]).read_text()
    if d.profile == "xen-efi":
        line = next(l for l in text.splitlines() if l.startswith("kernel="))
    else:
        line = next(l for l in text.splitlines() if re.match(r"\s*module2?\s+\S*vmlinuz", l))
    return re.findall(r"(?<!\S)console=(\S+)", line)


def _running_consoles(d):
    return re.findall(r"(?<!\S)console=(\S+)", (d.root / "proc/cmdline").read_text())


def _vga_pgpu(s):
    return next(ref for ref, p in s.xenapi.PGPU.get_all_records().items()
                if p["is_system_display_device"])


def _reboot(d, s):
    h = s.xenapi.host.get_all()[0]
    s.xenapi.host.disable(h)
    s.xenapi.host.reboot(h)
    return d.session("admin")


def _async(s, call, *args):
    """An Async call polled to its end, as XenCenter polls it; the result."""
    task = call(*args)
    for _ in range(600):
        status = s.xenapi.task.get_status(task)
        if status != "pending":
            break
        time.sleep(0.1)
    assert status == "success", s.xenapi.task.get_error_info(task)
    result = s.xenapi.task.get_result(task)
    s.xenapi.task.destroy(task)
    return re.sub(r"</?value>", "", result)


def test_xencenters_integrated_gpu_sequence_gives_xapis_values(host):
    s = host.session("admin")
    h = s.xenapi.host.get_all()[0]
    vga = _vga_pgpu(s)
    assert s.xenapi.PCI.get_pci_id(s.xenapi.PGPU.get_PCI(vga)) == VGA
    assert s.xenapi.host.get_display(h) == "enabled"

    # Hiding the console GPU while the next boot shows the console on it.
    before = (host.root / PROFILES[host.profile]).read_bytes()
    assert failure(s.xenapi.PGPU.disable_dom0_access, vga) == ["PCI_IS_HOST_DISPLAY", VGA]
    assert failure(s.xenapi.PCI.disable_dom0_access, pci_ref(s, VGA)) == ["PCI_IS_HOST_DISPLAY", VGA]
    assert (host.root / PROFILES[host.profile]).read_bytes() == before

    # XenCenter: the display off, then the PGPU, each an Async call.
    assert _async(s, s.xenapi.Async.host.disable_display, h) == "disable_on_reboot"
    assert s.xenapi.host.get_display(h) == "disable_on_reboot"
    default = _xen_consoles(host)[0]
    assert default and "vga" not in default[0], _xen_consoles(host)
    # dom0's VGA text console goes too, as host-display deletes it.
    assert "tty0" not in _dom0_consoles(host), _dom0_consoles(host)
    assert _async(s, s.xenapi.Async.PGPU.disable_dom0_access, vga) == "disable_on_reboot"
    # Asked again: nothing to do, xapi's answer.
    assert s.xenapi.host.disable_display(h) == "disable_on_reboot"

    s = _reboot(host, s)
    h, vga = s.xenapi.host.get_all()[0], _vga_pgpu(s)
    assert s.xenapi.host.get_display(h) == "disabled"
    assert s.xenapi.PGPU.get_dom0_access(vga) == "disabled"
    assert "tty0" not in _running_consoles(host), _running_consoles(host)

    # And back: the GPU to dom0, then the display.
    assert s.xenapi.PGPU.enable_dom0_access(vga) == "enable_on_reboot"
    assert s.xenapi.host.enable_display(h) == "enable_on_reboot"
    assert s.xenapi.host.enable_display(h) == "enable_on_reboot"
    default = _xen_consoles(host)[0]
    assert default and "vga" in default[0], _xen_consoles(host)
    # dom0 writes to Xen's console and, last, the VGA text console.
    assert _dom0_consoles(host)[-2:] == ["hvc0", "tty0"], _dom0_consoles(host)
    s = _reboot(host, s)
    h, vga = s.xenapi.host.get_all()[0], _vga_pgpu(s)
    assert s.xenapi.host.get_display(h) == "enabled"
    assert s.xenapi.PGPU.get_dom0_access(vga) == "enabled"
    assert _running_consoles(host)[-2:] == ["hvc0", "tty0"], _running_consoles(host)


def test_a_display_change_taken_back_before_the_reboot(host):
    s = host.session("admin")
    h = s.xenapi.host.get_all()[0]
    assert s.xenapi.host.disable_display(h) == "disable_on_reboot"
    assert s.xenapi.host.enable_display(h) == "enabled"
    default = _xen_consoles(host)[0]
    assert default and "vga" in default[0], _xen_consoles(host)
    # The console GPU is refused again.
    assert failure(s.xenapi.PGPU.disable_dom0_access, _vga_pgpu(s))[0] == "PCI_IS_HOST_DISPLAY"


def test_other_gpus_are_not_the_host_display(daemon):
    s = daemon.session("admin")
    assert s.xenapi.PCI.disable_dom0_access(pci_ref(s, GPU)) == "disable_on_reboot"


def test_a_serial_console_is_kept(daemon):
    """On an entry whose Xen console writes to a serial port, the port
    stays: com1,vga <-> com1, as host-display does on XCP-ng's serial
    entry."""
    daemon.xen_cmdline("--set-xen", "console=com2,vga")
    daemon.xen_cmdline("--set-dom0", "console=hvc0 console=tty0")
    daemon.restart()
    s = daemon.session("admin")
    h = s.xenapi.host.get_all()[0]
    dom0 = daemon.xen_cmdline("--get-dom0", "console").stdout.split()
    assert dom0 == ["console=hvc0", "console=tty0"]
    assert s.xenapi.host.disable_display(h) == "disable_on_reboot"
    assert daemon.xen_cmdline("--get-xen", "console").stdout.split() == ["console=com2"]
    # dom0's console is the operator's on a serial entry.
    assert daemon.xen_cmdline("--get-dom0", "console").stdout.split() == dom0
    assert s.xenapi.host.enable_display(h) == "enabled"
    assert daemon.xen_cmdline("--get-xen", "console").stdout.split() == ["console=com2,vga"]
    assert daemon.xen_cmdline("--get-dom0", "console").stdout.split() == dom0


def test_the_exec_backend_edits_dom0s_console_as_host_display(tmp_path):
    """Through a xen-cmdline program, the calls host-display makes:
    --delete-dom0 console=tty0, then --set-dom0 "console=hvc0 console=tty0"."""
    from conftest import _started
    d = _started(tmp_path, "exec")
    try:
        d.xen_cmdline("--set-dom0", "console=hvc0 console=tty0")
        d.restart()
        s = d.session("admin")
        h = s.xenapi.host.get_all()[0]
        assert s.xenapi.host.disable_display(h) == "disable_on_reboot"
        assert d.xen_cmdline("--get-dom0", "console").stdout.split() == ["console=hvc0"]
        assert s.xenapi.host.enable_display(h) == "enabled"
        assert d.xen_cmdline("--get-dom0", "console").stdout.split() == ["console=hvc0", "console=tty0"]
    finally:
        d.cleanup()


def test_on_debian_dom0s_console_comes_from_the_display_drop_in(tmp_path):
    """grub-mkconfig: the display drop-in gives the Xen entries dom0's
    console in GRUB_CMDLINE_LINUX_XEN_REPLACE_DEFAULT (the operator's
    GRUB_CMDLINE_LINUX_DEFAULT as host-display would edit it); a
    console=tty0 in GRUB_CMDLINE_LINUX, which every entry gets, is refused
    rather than left."""
    d = profile_started(tmp_path, "debian")
    d.profile = "debian"
    try:
        s = d.session("admin")
        h = s.xenapi.host.get_all()[0]
        dropin = d.root / "etc/default/grub.d/zz-pcipass-display.cfg"
        assert s.xenapi.host.disable_display(h) == "disable_on_reboot"
        # Debian's default has no console=tty0: nothing to take out.
        assert "XEN_REPLACE_DEFAULT" not in dropin.read_text()
        assert s.xenapi.host.enable_display(h) == "enabled"
        assert 'GRUB_CMDLINE_LINUX_XEN_REPLACE_DEFAULT="quiet console=hvc0 console=tty0"' in dropin.read_text()
        assert _dom0_consoles(d) == ["hvc0", "tty0"]
        # The operator's GRUB_CMDLINE_LINUX with console=tty0: refused.
        grub = d.root / "etc/default/grub"
        grub.write_text(grub.read_text().replace('GRUB_CMDLINE_LINUX=""', 'GRUB_CMDLINE_LINUX="console=tty0"'))
        before = dropin.read_bytes()
        details = failure(s.xenapi.host.disable_display, h)
        assert details[0] == "BOOT_CONFIG_UNAVAILABLE" and "GRUB_CMDLINE_LINUX" in details[1], details
        assert dropin.read_bytes() == before
        assert s.xenapi.host.get_display(h) == "enabled"
    finally:
        d.cleanup()


def test_the_cli_turns_the_display_off_and_on(daemon):
    assert out(daemon, "host-disable-display") == "disable_on_reboot"
    assert out(daemon, "host-enable-display") == "enabled"


def test_the_display_after_a_restart_and_for_a_reader(daemon):
    s = daemon.session("admin")
    h = s.xenapi.host.get_all()[0]
    assert s.xenapi.host.disable_display(h) == "disable_on_reboot"
    # A restart on the same boot keeps the pending change (xapi syncs only
    # on a new boot).
    daemon.restart()
    s = daemon.session("admin")
    assert s.xenapi.host.get_display(h) == "disable_on_reboot"
    r = daemon.session("reader")
    assert r.xenapi.host.get_display(h) == "disable_on_reboot"
    assert failure(r.xenapi.host.enable_display, h)[0] == "RBAC_PERMISSION_DENIED"
