"""The audit (issue 25): every edit pcipass makes (who, the session's uuid,
from where, the call, the functions, the outcome, each file's SHA-256
before and after) and every outside change of the boot configuration the
change watch sees, with a hash chain that shows an edited record; read
through host.get_dom0_access_audit and `pcipass host-audit`."""

import hashlib
import sqlite3
import time

from conftest import failure, pci_ref
from test_cli import out

GPU = "0000:01:00.0"
NVME = "0000:02:00.0"


def _audit(s):
    return s.xenapi.host.get_dom0_access_audit(s.xenapi.host.get_all()[0])


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_an_edit_is_recorded_with_who_where_and_the_files(daemon):
    s = daemon.session("admin")
    grub = daemon.root / "boot/grub/grub.cfg"
    before = _sha(grub)
    assert s.xenapi.PCI.disable_dom0_access(pci_ref(s, GPU)) == "disable_on_reboot"
    (r,) = [r for r in _audit(s) if r["kind"] == "edit"]
    session_uuid = s.xenapi.session.get_uuid(s._session)
    assert (r["user"], r["call"], r["functions"], r["outcome"]) == (
        "admin", "PCI.disable_dom0_access", GPU, "ok"), r
    assert r["session"] == session_uuid and "OpaqueRef" not in str(r), r
    assert r["origin"].startswith("Network(\"127.0.0.1:"), r
    assert f"/boot/grub/grub.cfg {before} -> {_sha(grub)}" in r["files"], r
    assert r["chain"] == "intact"


def test_a_refused_edit_is_recorded_and_changed_nothing(daemon):
    s = daemon.session("operator")
    failure(s.xenapi.PCI.disable_dom0_access, pci_ref(s, NVME))
    (r,) = [r for r in _audit(daemon.session("admin")) if r["kind"] == "edit"]
    assert r["user"] == "operator" and r["outcome"].startswith("BOOT_DEVICE_PASSTHROUGH_DISALLOWED"), r
    assert r["files"] == "", r


def test_an_outside_change_is_recorded_within_seconds(daemon):
    s = daemon.session("admin")
    daemon.xen_cmdline("--set-dom0", "xen-pciback.hide=(0000:03:00.1)")
    deadline = time.time() + 30
    while time.time() < deadline:
        outside = [r for r in _audit(s) if r["kind"] == "outside"]
        if outside:
            break
        time.sleep(0.2)
    assert outside and "/boot/grub/grub.cfg" in outside[0]["files"], _audit(s)
    assert outside[0]["call"] == "the change watch"


def test_a_changed_record_breaks_the_chain(daemon):
    s = daemon.session("admin")
    s.xenapi.PCI.disable_dom0_access(pci_ref(s, GPU))
    s.xenapi.PCI.enable_dom0_access(pci_ref(s, GPU))
    assert _audit(s)[-1]["chain"] == "intact"
    db = sqlite3.connect(daemon.state / "pcipass.db", timeout=10)
    with db:
        db.execute("UPDATE audit SET record = replace(record, '\"admin\"', '\"someone\"') "
                   "WHERE seq = (SELECT min(seq) FROM audit WHERE record LIKE '%\"edit\"%')")
    db.close()
    chain = _audit(s)[-1]["chain"]
    assert chain.startswith("broken: record ") and "does not match its hash" in chain, chain


def test_readers_cannot_and_the_cli_prints_it(daemon):
    reader = daemon.session("reader")
    assert failure(reader.xenapi.host.get_dom0_access_audit, reader.xenapi.host.get_all()[0])[0] == \
        "RBAC_PERMISSION_DENIED"
    s = daemon.session("admin")
    s.xenapi.PCI.disable_dom0_access(pci_ref(s, GPU))
    lines = out(daemon, "host-audit").splitlines()
    assert any(" edit admin PCI.disable_dom0_access 0000:01:00.0 ok" in l for l in lines), lines
    assert lines[-1] == "chain: intact", lines
