"""Identity and drift (issue 25): what pcipass hid is remembered with its
address; an outside edit that drops the hide (seen by the change watch
within seconds), another card at the address after a reboot, or no card
at all at start, each produce a log line, a XenAPI `message` (which Xen
Orchestra shows as an alert) and a readiness entry. pcipass's own
give-back is no drift."""

import shutil
import time

from conftest import failure, pci_ref

GPU = "0000:01:00.0"
USB = "0000:00:14.0"


def _messages(s, name=None):
    found = s.xenapi.message.get_all_records().values()
    return [m for m in found if name is None or m["name"] == name]


def _wait_for(s, name, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        found = _messages(s, name)
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"no {name} message in {seconds} s: {_messages(s)}")


def _log(d):
    return (d.workdir / "pcipassd.log").read_text()


def test_an_outside_edit_that_drops_a_hide_is_reported_within_seconds(daemon):
    s = daemon.session("admin")
    assert s.xenapi.PCI.disable_dom0_access(pci_ref(s, GPU)) == "disable_on_reboot"
    daemon.xen_cmdline("--delete-dom0", "xen-pciback.hide")
    (m,) = _wait_for(s, "PCI_HIDE_DROPPED")
    assert m["body"].startswith(f"{GPU} (10de:1e87 (subsystem 1043:8670, class 030000)) was hidden"), m
    assert (m["cls"], m["priority"]) == ("Host", "3"), m
    assert m["obj_uuid"] == s.xenapi.host.get_uuid(s.xenapi.host.get_all()[0])
    assert "PCI_HIDE_DROPPED" in _log(daemon)
    r = s.xenapi.PCI.get_passthrough_readiness(pci_ref(s, GPU))
    assert r["drift"].startswith("PCI_HIDE_DROPPED: "), r
    # Said once, not on every look.
    time.sleep(1)
    assert len(_messages(s, "PCI_HIDE_DROPPED")) == 1
    # Hidden again through pcipass: the drift is over.
    s.xenapi.PCI.disable_dom0_access(pci_ref(s, GPU))
    assert s.xenapi.PCI.get_passthrough_readiness(pci_ref(s, GPU))["drift"] == ""


def test_pcipass_own_give_back_is_no_drift(daemon):
    s = daemon.session("admin")
    for _ in range(3):
        s.xenapi.PCI.disable_dom0_access(pci_ref(s, GPU))
        s.xenapi.PCI.enable_dom0_access(pci_ref(s, GPU))
        s.xenapi.host.disable_dom0_access_of(s.xenapi.host.get_all()[0], [pci_ref(s, USB)], True)
        s.xenapi.host.enable_dom0_access_of(s.xenapi.host.get_all()[0], [pci_ref(s, USB)], True)
    time.sleep(1)
    assert _messages(s) == []


def test_another_card_at_a_hidden_address_after_a_reboot(daemon):
    s = daemon.session("admin")
    s.xenapi.PCI.disable_dom0_access(pci_ref(s, GPU))
    # The card swapped while the host was down: another device id.
    (daemon.root / f"sys/bus/pci/devices/{GPU}/device").write_text("0x2204\n")
    h = s.xenapi.host.get_all()[0]
    s.xenapi.host.disable(h)
    s.xenapi.host.reboot(h)
    s = daemon.session("admin")
    (m,) = _wait_for(s, "PCI_IDENTITY_CHANGED")
    assert "now holds 10de:2204" in m["body"] and m["priority"] == "2", m
    # The status is not a silent "disabled" for the stranger: its
    # readiness says what happened.
    r = s.xenapi.PCI.get_passthrough_readiness(pci_ref(s, GPU))
    assert r["drift"].startswith("PCI_IDENTITY_CHANGED: "), r


def test_a_hidden_card_gone_is_said_at_start(daemon):
    s = daemon.session("admin")
    s.xenapi.PCI.disable_dom0_access(pci_ref(s, USB))
    daemon.stop()
    link = daemon.root / f"sys/bus/pci/devices/{USB}"
    shutil.move(str(link), str(daemon.workdir / "usb-link"))
    daemon.start()
    s = daemon.session("admin")
    (m,) = _wait_for(s, "PCI_GONE")
    assert m["body"].startswith(f"{USB} was hidden from dom0 as 8086:a36d"), m


def test_messages_since_a_time_and_destroyed(daemon):
    s = daemon.session("admin")
    s.xenapi.PCI.disable_dom0_access(pci_ref(s, GPU))
    daemon.xen_cmdline("--delete-dom0", "xen-pciback.hide")
    (m,) = _wait_for(s, "PCI_HIDE_DROPPED")
    ref = next(iter(s.xenapi.message.get_since(m["timestamp"])))
    assert s.xenapi.message.get_since("20991231T00:00:00Z") == {}
    reader = daemon.session("reader")
    assert ref in reader.xenapi.message.get_all()
    assert failure(reader.xenapi.message.destroy, ref)[0] == "RBAC_PERMISSION_DENIED"
    s.xenapi.message.destroy(ref)
    assert _messages(s) == []
