"""Issue 5: the xe-style CLI against a real daemon on a demo mock host,
including host reboots between steps."""

import subprocess
from urllib.parse import urlparse

from conftest import binary


def cli(daemon, *args, check=True):
    proc = subprocess.run([binary("pcipass"), "--socket", str(daemon.socket), *args],
                          capture_output=True, text=True, timeout=60)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def out(daemon, *args):
    return cli(daemon, *args).stdout.strip()


def reboot(daemon):
    host = out(daemon, "host-list", "--minimal")
    cli(daemon, "host-disable", f"uuid={host}")
    cli(daemon, "host-reboot", f"uuid={host}")
    assert out(daemon, "host-param-get", f"uuid={host}", "param-name=enabled") == "true"


def test_pci_flow_across_reboots(daemon):
    uuid = out(daemon, "pci-list", "pci-id=0000:01:00.0", "--minimal")
    assert len(uuid) == 36
    assert out(daemon, "pci-get-dom0-access-status", f"uuid={uuid}") == "enabled"
    assert out(daemon, "pci-disable-dom0-access", f"uuid={uuid}") == "disable_on_reboot"
    assert out(daemon, "pci-get-dom0-access-status", f"uuid={uuid}") == "disable_on_reboot"
    reboot(daemon)
    assert out(daemon, "pci-get-dom0-access-status", f"uuid={uuid}") == "disabled"
    assert out(daemon, "pci-param-get", f"uuid={uuid}", "param-name=driver-name") == "pciback"
    assert out(daemon, "pci-enable-dom0-access", f"uuid={uuid}") == "enable_on_reboot"
    reboot(daemon)
    assert out(daemon, "pci-get-dom0-access-status", f"uuid={uuid}") == "enabled"
    assert out(daemon, "pci-param-get", f"uuid={uuid}", "param-name=driver-name") == "nouveau"


def test_pgpu_flow_agrees_with_pci(daemon):
    pgpu = out(daemon, "pgpu-list", "is-system-display-device=false", "--minimal")
    pci = out(daemon, "pgpu-param-get", f"uuid={pgpu}", "param-name=pci-uuid")

    def agree(want):
        assert out(daemon, "pgpu-param-get", f"uuid={pgpu}", "param-name=dom0-access") == want
        assert out(daemon, "pci-get-dom0-access-status", f"uuid={pci}") == want

    agree("enabled")
    assert out(daemon, "pgpu-disable-dom0-access", f"uuid={pgpu}") == "disable_on_reboot"
    agree("disable_on_reboot")
    reboot(daemon)
    agree("disabled")
    assert out(daemon, "pgpu-enable-dom0-access", f"uuid={pgpu}") == "enable_on_reboot"
    agree("enable_on_reboot")
    reboot(daemon)
    agree("enabled")


def test_hand_edit_is_seen(daemon):
    uuid = out(daemon, "pci-list", "pci-id=0000:00:14.0", "--minimal")
    daemon.xen_cmdline("--set-dom0", "xen-pciback.hide=(00:14.0)")
    assert out(daemon, "pci-get-dom0-access-status", f"uuid={uuid}") == "disable_on_reboot"


def test_list_layout_and_filters(daemon):
    listing = out(daemon, "pci-list", "pci-id=0000:01:00.1")
    lines = listing.splitlines()
    assert lines[0].startswith("uuid ( RO)           : ")
    assert lines[1] == "    vendor-name ( RO): NVIDIA Corporation"
    assert lines[3] == "         pci-id ( RO): 0000:01:00.1"
    full = out(daemon, "pci-param-list", f"uuid={out(daemon, 'pci-list', 'pci-id=0000:01:00.1', '--minimal')}")
    assert "dependencies (SRO): 0000:01:00.0" in full
    assert "host-name-label ( RO): pcipass-mock" in full
    assert out(daemon, "pci-list", "pci-id=0000:99:00.0", "--minimal") == ""


def test_error_paths(daemon):
    p = cli(daemon, "pci-param-get", "uuid=no-such", "param-name=pci-id", check=False)
    assert (p.returncode, p.stderr) == (1, "The uuid you supplied was invalid.\ntype: PCI\nuuid: no-such\n")
    p = cli(daemon, "pci-frobnicate", check=False)
    assert p.returncode == 2 and p.stderr.startswith("Unknown command: pci-frobnicate")
    p = cli(daemon, "pci-param-get", "param-name=pci-id", check=False)
    assert p.returncode == 2 and p.stderr.startswith("Required parameter not found: uuid")
    u = urlparse(daemon.url)
    p = subprocess.run([binary("pcipass"), "-s", u.hostname, "-p", str(u.port), "--nossl", "-u", "admin", "-pw", "wrong", "pci-list"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and p.stderr.startswith("Authentication failed")
    p = subprocess.run([binary("pcipass"), "--socket", "/nonexistent/xapi.sock", "pci-list"], capture_output=True, text=True)
    assert p.returncode == 1 and p.stderr.count("\n") == 1 and "/nonexistent/xapi.sock" in p.stderr


def test_read_only_user_over_tcp_is_refused_edits(daemon):
    u = urlparse(daemon.url)
    base = [binary("pcipass"), "-s", u.hostname, "-p", str(u.port), "--nossl", "-u", "reader", "-pw", daemon.passwords["reader"]]
    uuid = subprocess.run(base + ["pci-list", "pci-id=0000:01:00.0", "--minimal"], capture_output=True, text=True).stdout.strip()
    p = subprocess.run(base + ["pci-disable-dom0-access", f"uuid={uuid}"], capture_output=True, text=True)
    assert p.returncode == 1
    assert p.stderr.startswith("You do not have the required permissions to perform the operation.\npermission: pci.disable_dom0_access")


def test_https_needs_a_pinned_fingerprint_or_no_verify(tmp_path):
    from conftest import Daemon
    d = Daemon(tmp_path, extra_args=["--tls-self-signed"])
    d.add_user("admin", "pool-admin")
    d.start()
    try:
        u = urlparse(d.url)
        base = [binary("pcipass"), "-s", u.hostname, "-p", str(u.port), "-u", "admin", "-pw", d.passwords["admin"], "pci-list", "--minimal", "params=pci-id"]
        run = lambda *extra: subprocess.run(base + list(extra), capture_output=True, text=True, timeout=60)  # noqa: E731
        refused = run()
        assert refused.returncode == 1 and "--fingerprint" in refused.stderr
        assert "0000:01:00.0" in run("--no-verify").stdout
        assert "0000:01:00.0" in run("--fingerprint", d.fingerprint).stdout
        wrong = run("--fingerprint", "00" * 32)
        assert wrong.returncode == 1 and "fingerprint" in wrong.stderr
    finally:
        d.cleanup()


def test_map_and_set_filters(daemon):
    assert out(daemon, "pci-list", "dependencies:contains=0000:01:00.1", "--minimal", "params=pci-id") == "0000:01:00.0"
    assert out(daemon, "host-list", "software-version:product_brand=XCP-ng", "--minimal") != ""
    assert out(daemon, "host-list", "software-version:product_brand=xapi", "--minimal") == ""


def _cargo_version():
    import re
    from conftest import REPO
    text = (REPO / "Cargo.toml").read_text()
    return re.search(r'^version\s*=\s*"([^"]+)"', text, re.M).group(1)


def test_version_flags():
    version = _cargo_version()
    for name in ("pcipass", "xen-cmdline"):
        p = subprocess.run([binary(name), "--version"], capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        assert p.stdout == f"{name} {version}\n"


def test_password_file_forms_over_tcp(daemon, tmp_path):
    """-pwf as xe reads it (user then password), `username=`/`password=`
    lines, or a lone password line; an explicit -u wins over the file."""
    u = urlparse(daemon.url)
    pw = daemon.passwords["reader"]
    forms = {
        "two-lines": (f"reader\n{pw}\n", []),
        "keyed": (f"username=reader\npassword={pw}\n", []),
        "one-line-with-u": (f"{pw}\n", ["-u", "reader"]),
        "u-wins": (f"admin\n{pw}\n", ["-u", "reader"]),
    }
    for name, (text, extra) in forms.items():
        f = tmp_path / name
        f.write_text(text)
        p = subprocess.run([binary("pcipass"), "-s", u.hostname, "-p", str(u.port), "--nossl", *extra,
                            "-pwf", str(f), "pci-list", "pci-id=0000:01:00.0", "--minimal"],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0 and p.stdout.strip(), (name, p.stderr)
    # A one-line file is the password of root (no such user here), never a
    # user name: the login fails and the password is not echoed back.
    f = tmp_path / "one-line"
    f.write_text(f"{pw}\n")
    p = subprocess.run([binary("pcipass"), "-s", u.hostname, "-p", str(u.port), "--nossl",
                        "-pwf", str(f), "pci-list", "--minimal"], capture_output=True, text=True, timeout=60)
    assert p.returncode != 0
    assert pw not in p.stderr
