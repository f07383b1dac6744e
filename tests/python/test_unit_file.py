"""The systemd unit scripts/pcipassd.service: the limits and the sandbox
that matter are there, and systemd-analyze rates it OK (exposure <= 4.0)."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "scripts" / "pcipassd.service"


def parse_unit(text):
    """{section: {key: [value, ...]}}: systemd allows a key several times,
    which configparser does not keep."""
    sections = {}
    current = None
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"directive outside a section: {line}"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.fixture(scope="module")
def service():
    return parse_unit(UNIT.read_text())["Service"]


def last(service, key):
    assert key in service, f"{key}= is missing"
    return service[key][-1]


def words(service, key):
    return [w for v in service.get(key, []) for w in v.split()]


def test_limit_nofile(service):
    value = last(service, "LimitNOFILE")
    soft = value.split(":")[0]
    assert soft == "infinity" or int(soft) >= 4096


def test_filesystem_is_read_only_but_state_and_boot(service):
    assert last(service, "ProtectSystem") == "strict"
    paths = {w.lstrip("-+") for w in words(service, "ReadWritePaths")}
    assert "/var/lib/pcipass" in paths
    assert "/boot" in paths
    # What the grub-mkconfig flow and the initramfs step write, no more of /etc.
    assert {p for p in paths if p.startswith("/etc")} == {
        "/etc/default", "/etc/initramfs-tools", "/etc/dracut.conf.d", "/etc/modprobe.d"}
    assert last(service, "ProtectHome") in ("yes", "read-only", "tmpfs")
    # /proc/cmdline must stay readable.
    assert service.get("ProcSubset", ["all"])[-1] == "all"


def test_readiness_and_reload(service):
    """Type=notify: systemd waits for READY=1, sent once every listener
    accepts; reload is SIGHUP."""
    assert last(service, "Type") == "notify"
    assert last(service, "NotifyAccess") == "main"
    assert "-HUP" in last(service, "ExecReload")


def test_privileges(service):
    assert last(service, "NoNewPrivileges") == "yes"
    caps = words(service, "CapabilityBoundingSet")
    assert caps, "CapabilityBoundingSet= must list what root needs"
    assert not caps[0].startswith("~"), "an allow list, not a deny list"
    assert "CAP_SYS_ADMIN" not in caps
    assert "CAP_CHOWN" in caps  # the Unix socket's group


def test_address_families(service):
    families = words(service, "RestrictAddressFamilies")
    assert "AF_UNIX" in families and "AF_INET" in families
    assert not families[0].startswith("~")


def test_kernel_and_devices(service):
    for key in ("ProtectKernelTunables", "ProtectKernelLogs",
                "ProtectControlGroups", "RestrictNamespaces", "RestrictSUIDSGID",
                "LockPersonality", "MemoryDenyWriteExecute"):
        assert last(service, key) == "yes", key
    assert last(service, "SystemCallArchitectures") == "native"
    assert "@system-service" in words(service, "SystemCallFilter")
    # /dev stays visible (the boot disk is resolved through it).
    assert service.get("PrivateDevices", ["no"])[-1] == "no"
    assert last(service, "DevicePolicy") == "closed"


def test_the_service_sees_lib_modules_but_cannot_load_modules(service):
    """pcipass reads /lib/modules/<release> (is xen-pciback built in or a
    module?) and the initramfs rebuild it runs (update-initramfs, dracut)
    reads it too. ProtectKernelModules=yes makes /lib/modules and
    /usr/lib/modules inaccessible inside the service: on a real Debian 12
    dom0 pcipass could then not tell that xen-pciback is a module, wrote
    no initramfs set-up, and the hidden NIC stayed with e1000e after the
    reboot. Module loading stays refused by the syscall filter (@module)
    and the capability set (no CAP_SYS_MODULE) instead."""
    assert service.get("ProtectKernelModules", ["no"])[-1] == "no"
    hiding = ("InaccessiblePaths", "TemporaryFileSystem", "BindPaths", "BindReadOnlyPaths")
    for key in hiding:
        for path in words(service, key):
            path = path.lstrip("-+").split(":")[0]
            assert not any(path == p or p.startswith(path.rstrip("/") + "/")
                           for p in ("/lib/modules", "/usr/lib/modules")), (key, path)
    filters = service.get("SystemCallFilter", [])
    assert any(f.startswith("~") and "@module" in f.split() for f in filters), filters
    assert "CAP_SYS_MODULE" not in words(service, "CapabilityBoundingSet")


def test_systemd_analyze_rates_it_ok(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    true = shutil.which("true") or "/bin/true"
    text = re.sub(r"^ExecStart=.*$", f"ExecStart={true}", UNIT.read_text(), flags=re.M)
    unit = tmp_path / "pcipassd.service"
    unit.write_text(text)
    # The unit it pulls in, beside it (verify loads it too).
    facts = (REPO / "scripts" / "pcipassd-xen-facts.service").read_text()
    (tmp_path / "pcipassd-xen-facts.service").write_text(facts)
    verify = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=120)
    assert verify.returncode == 0, verify.stderr
    p = subprocess.run([analyze, "security", "--offline=yes", "--no-pager", str(unit)],
                       capture_output=True, text=True, timeout=120)
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", p.stdout + p.stderr)
    if found is None:
        pytest.skip(f"systemd-analyze security --offline is not supported here: {p.stderr.strip()}")
    assert float(found.group(1)) <= 4.0, p.stdout


def test_the_xen_facts_unit_runs_after_xens_daemons_and_before_pcipassd(tmp_path):
    """xl info needs /proc/xen and xenstored: run before them at boot it
    failed on the lab, and pcipassd read no IOMMU facts."""
    text = (REPO / "scripts" / "pcipassd-xen-facts.service").read_text()
    unit = parse_unit(text)["Unit"]
    after = " ".join(unit["After"]).split()
    assert {"proc-xen.mount", "xenstored.service", "xen-init-dom0.service"} <= set(after), after
    assert unit["Before"] == ["pcipassd.service"]
    assert "/run/pcipass-facts/xl-info" in parse_unit(text)["Service"]["ExecStart"][0]
    pcipassd = parse_unit(UNIT.read_text())["Unit"]
    assert "pcipassd-xen-facts.service" in " ".join(pcipassd["Wants"]).split()
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    (tmp_path / "pcipassd-xen-facts.service").write_text(text)
    verify = subprocess.run([analyze, "verify", str(tmp_path / "pcipassd-xen-facts.service")],
                            capture_output=True, text=True, timeout=120)
    assert verify.returncode == 0, verify.stderr
