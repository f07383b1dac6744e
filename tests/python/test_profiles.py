"""The four states (enabled -> disable_on_reboot -> disabled ->
enable_on_reboot -> enabled) on every mock host profile, each booted the
way its boot loader would, through the SDK and through the `pcipass`
command line; and what `auto` decides on each profile."""

import os
import subprocess

import pytest

from conftest import Daemon, binary, pci_ref, run
from test_grub_mkconfig import MKCONFIG, _why_not

USB = "0000:00:14.0"
# profile -> (the flow auto must find, the file an edit changes, the
# product the host says it is)
PROFILES = {
    "demo": ("xcp-ng", "boot/grub/grub.cfg", "XCP-ng"),
    "demo-uefi": ("xcp-ng", "boot/efi/EFI/xenserver/grub.cfg", "XCP-ng"),
    "debian": ("grub-mkconfig", "etc/default/grub.d/zz-pcipass.cfg", "Debian GNU/Linux"),
    "xen-efi": ("xen-efi", "boot/efi/EFI/xen/xen.cfg", "Debian GNU/Linux"),
}


def _started(tmp_path, profile):
    if profile == "debian" and _why_not():
        pytest.skip(_why_not())
    root = tmp_path / "root"
    run(binary("pcipass"), "mock-host", "create", str(root), "--profile", profile)
    extra = ["--grub-mkconfig-command", f"{MKCONFIG} {root}"] if profile == "debian" else []
    d = Daemon(tmp_path, extra_args=extra)
    d.add_user("admin", "pool-admin")
    return d.start()


@pytest.mark.parametrize("profile", PROFILES)
def test_auto_finds_each_profiles_flow(tmp_path, profile):
    d = _started(tmp_path, profile)
    try:
        flow, _, brand = PROFILES[profile]
        log = (d.workdir / "pcipassd.log").read_text()
        assert f"flow={flow} " in log, log[-1500:]
        s = d.session("admin")
        host = s.xenapi.host.get_all()[0]
        assert s.xenapi.host.get_software_version(host)["product_brand"] == brand
    finally:
        d.cleanup()


@pytest.mark.parametrize("profile", PROFILES)
def test_the_four_states_through_the_sdk(tmp_path, profile):
    d = _started(tmp_path, profile)
    try:
        _, edited, _ = PROFILES[profile]
        s = d.session("admin")
        host = s.xenapi.host.get_all()[0]
        usb = pci_ref(s, USB)

        def reboot():
            nonlocal s
            s.xenapi.host.disable(host)
            s.xenapi.host.reboot(host)
            s = d.session("admin")

        assert s.xenapi.PCI.get_dom0_access_status(usb) == "enabled"
        assert s.xenapi.PCI.disable_dom0_access(usb) == "disable_on_reboot"
        assert f"({USB})" in (d.root / edited).read_text()
        reboot()
        assert f"xen-pciback.hide=({USB})" in (d.root / "proc/cmdline").read_text()
        assert s.xenapi.PCI.get_dom0_access_status(usb) == "disabled"
        assert s.xenapi.PCI.enable_dom0_access(usb) == "enable_on_reboot"
        reboot()
        assert "xen-pciback" not in (d.root / "proc/cmdline").read_text()
        assert s.xenapi.PCI.get_dom0_access_status(usb) == "enabled"
    finally:
        d.cleanup()


@pytest.mark.parametrize("profile", PROFILES)
def test_the_four_states_through_the_pcipass_cli(tmp_path, profile):
    d = _started(tmp_path, profile)
    env = dict(os.environ, PCIPASS_SOCKET=str(d.socket))

    def cli(*args):
        proc = subprocess.run([binary("pcipass"), *args], capture_output=True, text=True, env=env, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip()

    try:
        uuid = cli("pci-list", "params=uuid", f"pci-id={USB}", "--minimal")
        status = lambda: cli("pci-get-dom0-access-status", f"uuid={uuid}")
        assert status() == "enabled"
        assert cli("pci-disable-dom0-access", f"uuid={uuid}") == "disable_on_reboot"
        cli("host-disable")
        cli("host-reboot")
        assert status() == "disabled"
        assert cli("pci-enable-dom0-access", f"uuid={uuid}") == "enable_on_reboot"
        cli("host-disable")
        cli("host-reboot")
        assert status() == "enabled"
    finally:
        d.cleanup()
