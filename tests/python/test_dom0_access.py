"""Issue 4: the design note's test cases through the Python SDK, with real
reboots of the mock host, on both boot-configuration backends."""

import time

from conftest import failure


def _discrete_gpu(s):
    for ref, rec in s.xenapi.PGPU.get_all_records().items():
        if not rec["is_system_display_device"]:
            return ref, rec["PCI"]
    raise AssertionError("the demo host has a discrete GPU")


def _reboot(s):
    host = s.xenapi.host.get_all()[0]
    s.xenapi.host.disable(host)
    s.xenapi.host.reboot(host)
    # The reboot ended every session; the SDK logs in again by itself.
    assert s.xenapi.host.get_enabled(host) is True


def _status(s, pci, pgpu):
    status = s.xenapi.PCI.get_dom0_access_status(pci)
    assert s.xenapi.PGPU.get_dom0_access(pgpu) == status, "PGPU.dom0_access follows the PCI"
    assert s.xenapi.PGPU.get_record(pgpu)["dom0_access"] == status
    return status


def test_hide_then_unhide_across_reboots(any_backend_daemon):
    s = any_backend_daemon.session("operator")
    pgpu, pci = _discrete_gpu(s)
    assert _status(s, pci, pgpu) == "enabled"
    assert s.xenapi.PCI.disable_dom0_access(pci) == "disable_on_reboot"
    assert _status(s, pci, pgpu) == "disable_on_reboot"
    assert s.xenapi.PCI.disable_dom0_access(pci) == "disable_on_reboot", "idempotent"
    _reboot(s)
    assert _status(s, pci, pgpu) == "disabled"
    assert s.xenapi.PCI.enable_dom0_access(pci) == "enable_on_reboot"
    assert _status(s, pci, pgpu) == "enable_on_reboot"
    _reboot(s)
    assert _status(s, pci, pgpu) == "enabled"


def test_deprecated_pgpu_methods_stay_coherent(any_backend_daemon):
    s = any_backend_daemon.session("operator")
    pgpu, pci = _discrete_gpu(s)
    assert s.xenapi.PGPU.disable_dom0_access(pgpu) == "disable_on_reboot"
    assert _status(s, pci, pgpu) == "disable_on_reboot"
    _reboot(s)
    assert _status(s, pci, pgpu) == "disabled"
    assert s.xenapi.PGPU.enable_dom0_access(pgpu) == "enable_on_reboot"
    assert _status(s, pci, pgpu) == "enable_on_reboot"
    _reboot(s)
    assert _status(s, pci, pgpu) == "enabled"


def test_cancelling_a_pending_change(any_backend_daemon):
    s = any_backend_daemon.session("operator")
    pgpu, pci = _discrete_gpu(s)
    assert s.xenapi.PCI.disable_dom0_access(pci) == "disable_on_reboot"
    assert s.xenapi.PCI.enable_dom0_access(pci) == "enabled"
    assert _status(s, pci, pgpu) == "enabled"


def test_reboot_needs_a_disabled_host(daemon):
    s = daemon.session("operator")
    host = s.xenapi.host.get_all()[0]
    assert failure(s.xenapi.host.reboot, host) == ["HOST_NOT_DISABLED"]


def test_hand_edits_are_seen_at_once(any_backend_daemon):
    d = any_backend_daemon
    s = d.session("reader")
    pgpu, pci = _discrete_gpu(s)
    pci_id = s.xenapi.PCI.get_pci_id(pci)
    domain, bus, rest = pci_id.split(":")
    slot, function = rest.split(".")
    cases = [
        (f"({pci_id})", "disable_on_reboot"),
        (f"({bus}:{slot}.{function})", "disable_on_reboot"),           # domain-less
        (f"({pci_id.upper()})", "disable_on_reboot"),                 # upper case
        (f"({domain}:{bus}:{slot}.*)", "disable_on_reboot"),           # wildcard
        (f"({domain}:{bus}:*.*)", "disable_on_reboot"),
        ("(0000:ff:1f.7)", "enabled"),                                # another device
        (f"({pci_id})(0b::00.1)", "enabled"),                         # a typo hides nothing
    ]
    for value, want in cases:
        d.xen_cmdline("--set-dom0", f"xen-pciback.hide={value}")
        assert _status(s, pci, pgpu) == want, value
    d.xen_cmdline("--delete-dom0", "xen-pciback.hide")
    assert _status(s, pci, pgpu) == "enabled"


def test_malformed_value_refuses_edits_but_status_answers(daemon):
    s = daemon.session("operator")
    pgpu, pci = _discrete_gpu(s)
    daemon.xen_cmdline("--set-dom0", "xen-pciback.hide=(0000.02:00.3)")
    assert s.xenapi.PCI.get_dom0_access_status(pci) == "enabled"
    details = failure(s.xenapi.PCI.disable_dom0_access, pci)
    assert details[0] == "BOOT_CONFIG_HIDE_LIST_MALFORMED"
    assert "(0000.02:00.3)" in details[1]
    assert daemon.xen_cmdline("--get-dom0", "xen-pciback.hide").stdout.strip() == "xen-pciback.hide=(0000.02:00.3)"


def test_pgpu_field_follows_hand_edit_without_reads(daemon):
    s = daemon.session("reader")
    pgpu, pci = _discrete_gpu(s)
    pci_id = s.xenapi.PCI.get_pci_id(pci)
    event_from = getattr(s.xenapi.event, "from")
    # The token is taken before the edit. From here on nothing reads a PGPU
    # (every PGPU read refreshes the field itself): event.from with a token
    # only reports what is stored, so only the watcher can produce the event.
    token = event_from(["PGPU"], "", 0.0)["token"]
    daemon.xen_cmdline("--set-dom0", f"xen-pciback.hide=({pci_id})")
    deadline = time.time() + 60  # a hang guard: the loop ends at the event
    seen = []
    while time.time() < deadline:
        batch = event_from(["PGPU"], token, max(0.0, deadline - time.time()))
        token = batch["token"]
        seen += [(e["operation"], e["ref"], e.get("snapshot", {}).get("dom0_access")) for e in batch["events"]]
        if ("mod", pgpu, "disable_on_reboot") in seen:
            break
    assert ("mod", pgpu, "disable_on_reboot") in seen, f"the watcher refreshed the stored field; events: {seen}"


def test_boot_disk_controller_cannot_be_hidden(any_backend_daemon):
    s = any_backend_daemon.session("operator")
    nvme = [r for r, rec in s.xenapi.PCI.get_all_records().items() if rec["class_id"] == "0108"]
    assert nvme, "the demo host boots from NVMe"
    before = any_backend_daemon.xen_cmdline("--get-dom0", "xen-pciback.hide").stdout
    details = failure(s.xenapi.PCI.disable_dom0_access, nvme[0])
    assert details[0] == "BOOT_DEVICE_PASSTHROUGH_DISALLOWED"
    assert details[1].startswith("/dev/nvme")
    assert any_backend_daemon.xen_cmdline("--get-dom0", "xen-pciback.hide").stdout == before
