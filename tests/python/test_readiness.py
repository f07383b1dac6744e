"""PCI.get_passthrough_readiness (issue 25): each verdict reached on a mock
host by changing the one fact that decides it, the facts it reports
(Xen's IOMMU from the recorded `xl info`, reset methods, the functions of
the slot and of the Xen device group, a hide's refusal, an assignment to a
domain), and `pcipass pci-readiness`."""

from conftest import failure, pci_ref
from test_cli import out

USB = "0000:00:14.0"
GPU, AUDIO = "0000:01:00.0", "0000:01:00.1"
NVME = "0000:02:00.0"  # behind the root file system
VGA = "0000:00:02.0"   # the boot VGA device, the host display on
NIC0, NIC1 = "0000:03:00.0", "0000:03:00.1"
XL_INFO = "run/pcipass-facts/xl-info"


def _ready(s, pci_id):
    return s.xenapi.PCI.get_passthrough_readiness(pci_ref(s, pci_id))


def test_a_function_goes_from_needs_reboot_to_ready(daemon):
    s = daemon.session("admin")
    r = _ready(s, USB)
    assert r["verdict"] == "needs_reboot", r
    assert "dom0 has it (driver xhci_hcd)" in r["reasons"], r
    assert (r["iommu"], r["reset"], r["driver"], r["dom0_access"]) == ("active", "flr bus", "xhci_hcd", "enabled")
    assert r["hide_refused"] == "" and r["assigned_to"] == "", r
    assert r["pciback"] == "built in", r
    s.xenapi.PCI.disable_dom0_access(pci_ref(s, USB))
    r = _ready(s, USB)
    assert r["verdict"] == "needs_reboot" and "hidden at the next boot" in r["reasons"], r
    s.xenapi.PCI.disable_dom0_access_now(pci_ref(s, USB))
    r = _ready(s, USB)
    assert (r["verdict"], r["reasons"], r["driver"]) == ("ready", "", "pciback"), r


def test_what_dom0_needs_is_blocked_with_the_refusal(daemon):
    s = daemon.session("admin")
    r = _ready(s, NVME)
    assert r["verdict"] == "blocked", r
    assert "boot" in r["hide_refused"] and "dom0 needs it" in r["reasons"], r
    r = _ready(s, VGA)
    assert r["verdict"] == "blocked" and "host display" in r["reasons"], r


def test_the_functions_of_the_device_are_named(daemon):
    s = daemon.session("admin")
    r = _ready(s, GPU)
    assert (r["slot_functions"], r["device_group"]) == (AUDIO, ""), r
    s.xenapi.PCI.disable_dom0_access_now(pci_ref(s, GPU))
    r = _ready(s, GPU)
    # Ready, but the audio function stays with dom0: said, not blocking.
    assert r["verdict"] == "ready", r
    assert r["with_dom0"] == AUDIO and f"{AUDIO} (the same device)" in r["notes"], r


def test_xens_iommu_is_read_from_xl_info(daemon):
    s = daemon.session("admin")
    path = daemon.root / XL_INFO
    text = path.read_text()
    path.write_text(text.replace(" hvm_directio pv_directio", ""))
    r = _ready(s, USB)
    assert (r["verdict"], r["iommu"]) == ("blocked", "inactive"), r
    assert "turn on VT-d or AMD-Vi" in r["reasons"], r
    path.unlink()
    r = _ready(s, USB)
    assert (r["verdict"], r["iommu"]) == ("unknown", "unknown"), r
    assert "no record of xl info" in r["reasons"], r


def test_a_device_group_behind_a_pcie_to_pci_bridge(daemon):
    """The NIC's functions made conventional: the root port 00:1c.0 above
    them is then a PCIe-to-PCI bridge, and Xen assigns every function
    behind it together."""
    for f in (NIC0, NIC1):
        (daemon.root / f"sys/bus/pci/devices/{f}/current_link_speed").unlink()
    s = daemon.session("admin")
    r = _ready(s, NIC1)
    assert NIC0 in r["device_group"].split(), r
    s.xenapi.PCI.disable_dom0_access_now(pci_ref(s, NIC1))
    r = _ready(s, NIC1)
    assert r["verdict"] == "needs_reboot", r
    assert f"{NIC0}" in r["reasons"] and "Xen device group" in r["reasons"], r


def test_no_reset_method_and_an_assigned_domain_are_said(daemon):
    (daemon.root / f"sys/bus/pci/devices/{USB}/reset_method").unlink()
    (daemon.root / f"sys/bus/pci/devices/{USB}/reset").unlink()
    tree = daemon.root / "var/lib/xenstored/mock-tree"
    tree.parent.mkdir(parents=True, exist_ok=True)
    tree.write_text('/local/domain/0/backend/pci/4/0/num_devs = "1"\n'
                    '/local/domain/0/backend/pci/4/0/dev-0 = "0000:00:14.0"\n'
                    '/local/domain/4/name = "usb-passthrough"\n')
    r = _ready(daemon.session("reader"), USB)
    assert r["reset"] == "none" and "no reset method" in r["notes"], r
    assert r["assigned_to"] == "4 (usb-passthrough)", r


def test_the_cli_prints_the_verdict_first(daemon):
    uuid = out(daemon, "pci-list", f"pci-id={USB}", "--minimal")
    lines = out(daemon, "pci-readiness", f"uuid={uuid}").splitlines()
    assert lines[0] == "verdict: needs_reboot", lines
    assert lines[1].startswith("reasons: dom0 has it"), lines
    assert "iommu: active" in lines, lines


def test_a_function_the_platform_uses_is_never_hidden(daemon):
    """An SMBus controller (the host's memory SPD and sensors; here the
    USB controller's sysfs class rewritten to 0x0c0500, as a real SMBus
    function reads): every hide is refused naming what it is, the
    readiness report says so, and nothing is written."""
    usb = "0000:00:14.0"
    (daemon.root / f"sys/bus/pci/devices/{usb}/class").write_text("0x0c0500\n")
    s = daemon.session("admin")
    grub = daemon.root / "boot/grub/grub.cfg"
    before = grub.read_bytes()
    want = ["PCI_IS_HOST_PLATFORM_DEVICE", usb, "SMBus controller"]
    assert failure(s.xenapi.PCI.disable_dom0_access, pci_ref(s, usb)) == want
    host = s.xenapi.host.get_all()[0]
    assert failure(s.xenapi.host.disable_dom0_access_of, host, [pci_ref(s, usb)], False) == want
    assert failure(s.xenapi.host.preview_dom0_access, host, [pci_ref(s, usb)], False) == want
    assert grub.read_bytes() == before
    report = _ready(s, usb)
    assert report["verdict"] == "blocked", report
    assert "SMBus controller" in report["hide_refused"], report
