"""Issue 7 (part): kill -9 of the daemon and of xen-cmdline at random
instants during edits; the boot configuration is always whole and holds
every acknowledged edit, and the store passes SQLite's integrity check."""

import os
import random
import signal
import sqlite3
import subprocess
import time

import XenAPI

from conftest import binary


def _hide_value(daemon):
    r = daemon.xen_cmdline("--get-dom0", "xen-pciback.hide")
    assert r.returncode == 0, r.stderr
    out = r.stdout.strip()
    return out.split("=", 1)[1] if "=" in out else ""


def test_daemon_killed_during_edits_loses_no_acknowledged_edit(daemon):
    rng = random.Random(7)
    s = daemon.session("admin")
    pcis = {r: p["pci_id"] for r, p in s.xenapi.PCI.get_all_records().items() if p["class_id"] != "0108"}
    expected = {}      # pci_id -> hidden after the last acknowledged edit
    in_flight = set()  # edits whose answer was lost with the daemon
    kills = edits = 0
    deadline = time.time() + 20
    while time.time() < deadline:
        kill_at = time.time() + rng.uniform(0.05, 0.4)
        try:
            session = daemon.session("admin")
            while time.time() < kill_at:
                ref = rng.choice(sorted(pcis))
                hide = rng.random() < 0.5
                in_flight.add(pcis[ref])
                if hide:
                    session.xenapi.PCI.disable_dom0_access(ref)
                else:
                    session.xenapi.PCI.enable_dom0_access(ref)
                in_flight.discard(pcis[ref])
                expected[pcis[ref]] = hide
                edits += 1
        except Exception:  # noqa: BLE001 - the daemon may die under the client
            pass
        os.kill(daemon.proc.pid, signal.SIGKILL)
        daemon.proc.wait()
        kills += 1
        value = _hide_value(daemon)
        for pci_id, hidden in expected.items():
            if pci_id in in_flight:
                continue
            assert (f"({pci_id})" in value) == hidden, (pci_id, hidden, value)
        daemon.start()
        in_flight.clear()
    conn = sqlite3.connect(daemon.state / "pcipass.db")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    print(f"crash-safety: {kills} kills, {edits} acknowledged edits, 0 lost")
    assert kills >= 10 and edits >= 50, (kills, edits)
    s = daemon.session("admin")
    assert len(s.xenapi.PCI.get_all()) == len(pcis) + 1


def test_xen_cmdline_killed_mid_edit_leaves_old_or_new_file(daemon):
    rng = random.Random(11)
    grub = daemon.root / "boot/grub/grub.cfg"
    written = {""}
    for n in range(60):
        value = "".join(f"(0000:{b:02x}:00.0)" for b in range(1, 2 + n % 20))
        written.add(value)
        p = subprocess.Popen([binary("xen-cmdline"), "--root", str(daemon.root), "--set-dom0", f"xen-pciback.hide={value}"])
        time.sleep(rng.uniform(0, 0.003))
        p.send_signal(signal.SIGKILL)
        p.wait()
        assert _hide_value(daemon) in written
        text = grub.read_text()
        assert text.count("menuentry") == 4 and text.endswith("}\n")
