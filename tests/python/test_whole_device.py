"""Whole devices (issue 25): host.disable_dom0_access_of and
enable_dom0_access_of hide or give back a set of functions (the GPU and
its audio function, say) as one edit of the boot configuration, all or
nothing, at the next boot or now; `pcipass pci-disable-dom0-access
--whole-device` asks it for every function of a device's slot."""

import os

from conftest import failure, pci_ref
from test_cli import out

GPU = "0000:01:00.0"
AUDIO = "0000:01:00.1"
NVME = "0000:02:00.0"  # behind the root file system
USB = "0000:00:14.0"


def _grub(d):
    return (d.root / "boot/grub/grub.cfg").read_bytes()


def _driver(d, pci_id):
    link = d.root / f"sys/bus/pci/devices/{pci_id}/driver"
    return os.path.basename(os.readlink(link)) if link.is_symlink() else None


def _host(s):
    return s.xenapi.host.get_all()[0]


def test_a_device_hidden_and_given_back_as_one_edit(daemon):
    s = daemon.session("admin")
    gpu, audio = pci_ref(s, GPU), pci_ref(s, AUDIO)
    answer = s.xenapi.host.disable_dom0_access_of(_host(s), [gpu, audio], False)
    assert answer == {gpu: "disable_on_reboot", audio: "disable_on_reboot"}
    assert b"xen-pciback.hide=(0000:01:00.0)(0000:01:00.1)" in _grub(daemon)
    assert s.xenapi.PCI.get_dom0_access_status(audio) == "disable_on_reboot"
    # The PGPU of the card follows, as for a hide of the PCI alone.
    pgpus = s.xenapi.PGPU.get_all_records()
    assert [p["dom0_access"] for p in pgpus.values() if p["PCI"] == gpu] == ["disable_on_reboot"]

    answer = s.xenapi.host.enable_dom0_access_of(_host(s), [audio, gpu], False)
    assert answer == {gpu: "enabled", audio: "enabled"}
    assert b"xen-pciback.hide" not in _grub(daemon)


def test_one_function_refused_refuses_the_set_and_writes_nothing(daemon):
    s = daemon.session("admin")
    gpu, nvme = pci_ref(s, GPU), pci_ref(s, NVME)
    before = _grub(daemon)
    details = failure(s.xenapi.host.disable_dom0_access_of, _host(s), [gpu, nvme], False)
    assert details[0] == "BOOT_DEVICE_PASSTHROUGH_DISALLOWED", details
    assert _grub(daemon) == before
    assert s.xenapi.PCI.get_dom0_access_status(gpu) == "enabled"


def test_a_set_taken_now_and_given_back_now(daemon):
    s = daemon.session("admin")
    gpu, audio, usb = pci_ref(s, GPU), pci_ref(s, AUDIO), pci_ref(s, USB)
    answer = s.xenapi.host.disable_dom0_access_of(_host(s), [gpu, audio, usb], True)
    assert set(answer.values()) == {"disabled"}, answer
    assert [_driver(daemon, f) for f in (GPU, AUDIO, USB)] == ["pciback"] * 3
    answer = s.xenapi.host.enable_dom0_access_of(_host(s), [gpu, audio, usb], True)
    assert set(answer.values()) == {"enabled"}, answer
    assert [_driver(daemon, f) for f in (GPU, AUDIO, USB)] == ["nouveau", "snd_hda_intel", "xhci_hcd"]
    assert b"xen-pciback.hide" not in _grub(daemon)


def test_a_failed_move_puts_back_the_functions_moved_and_the_boot_configuration(daemon):
    """The second function's move fails: the first goes back to its
    driver, and the boot configuration is as it was."""
    s = daemon.session("admin")
    gpu, audio = pci_ref(s, GPU), pci_ref(s, AUDIO)
    before = _grub(daemon)
    # The audio function's driver cannot let go (its unbind file gone).
    unbind = daemon.root / "sys/bus/pci/drivers/snd_hda_intel/unbind"
    unbind.unlink()
    unbind.mkdir()
    details = failure(s.xenapi.host.disable_dom0_access_of, _host(s), [gpu, audio], True)
    assert details[:2] == ["PCI_APPLY_NOW_FAILED", AUDIO], details
    assert _driver(daemon, GPU) == "nouveau"
    assert _driver(daemon, AUDIO) == "snd_hda_intel"
    assert _grub(daemon) == before
    assert s.xenapi.PCI.get_dom0_access_status(gpu) == "enabled"


def test_the_read_only_role_is_refused(daemon):
    daemon.add_user("viewer", "read-only", "viewer-password")
    s = daemon.session("viewer")
    details = failure(s.xenapi.host.disable_dom0_access_of, _host(s), [pci_ref(s, GPU)], False)
    assert details[0] == "RBAC_PERMISSION_DENIED", details


def test_the_cli_hides_every_function_of_the_slot(daemon):
    s = daemon.session("admin")
    uuid = s.xenapi.PCI.get_uuid(pci_ref(s, AUDIO))
    printed = out(daemon, "pci-disable-dom0-access", f"uuid={uuid}", "--whole-device")
    assert printed.split("\n") == [f"{GPU} disable_on_reboot", f"{AUDIO} disable_on_reboot"], printed
    assert b"xen-pciback.hide=(0000:01:00.0)(0000:01:00.1)" in _grub(daemon)
    printed = out(daemon, "pci-enable-dom0-access", f"uuid={uuid}", "--whole-device")
    assert printed.split("\n") == [f"{GPU} enabled", f"{AUDIO} enabled"], printed
