"""The whole chain GRUB -> Xen -> kernel -> pci_stub, through the daemon:
real tools' grub.cfg files, the kernel's parameter rules on /proc/cmdline,
Xen's 1023-byte limit, bridges above a device, and non-UTF-8 files. Every
expectation here is hand-written from dom0-access.md ("The whole chain")
and the kernel/GRUB/Xen sources it cites, not computed by pcipass."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import XenAPI

from conftest import Daemon, REPO, binary, failure, pci_ref, run

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "grub-real"
BASE = b"root=LABEL=root-pcipass ro nolvm hpet=disable console=hvc0 console=tty0 quiet vga=785 splash plymouth.ignore-serial-consoles"
GPU, AUDIO, NVME, XHCI = "0000:01:00.0", "0000:01:00.1", "0000:02:00.0", "0000:00:14.0"
NIC0, NIC1 = "0000:03:00.0", "0000:03:00.1"
BOOT_REFUSALS = ("BOOT_CONFIG_UNAVAILABLE", "BOOT_CONFIG_HIDE_LIST_MALFORMED")


# ---------------------------------------------------------------- helpers

def _daemon(tmp_path, grub=None, cmdline=None, profile="demo", hidden_links=()):
    """A started daemon on a fresh mock host of `profile`, with grub.cfg
    and/or proc/cmdline replaced by the given bytes before it starts, and
    the `driver` link of each function in `hidden_links` pointing at
    pciback (as the kernel would have bound them at boot)."""
    root = Path(tmp_path) / "root"
    if profile != "demo":
        run(binary("pcipass"), "mock-host", "create", str(root), "--profile", profile)
    d = Daemon(tmp_path)
    if grub is not None:
        (d.root / "boot/grub/grub.cfg").write_bytes(grub)
    if cmdline is not None:
        (d.root / "proc/cmdline").write_bytes(cmdline + b"\n")
    for pci_id in hidden_links:
        _bind(d, pci_id, "pciback")
    d.add_user("admin", "pool-admin")
    d.add_user("operator", "pool-operator")
    return d.start()


@pytest.fixture
def started():
    made = []

    def make(*args, **kwargs):
        made.append(_daemon(*args, **kwargs))
        return made[-1]

    yield make
    for d in made:
        d.cleanup()


def _dev_dir(d, pci_id):
    return (d.root / "sys/bus/pci/devices" / pci_id).resolve()


def _bind(d, pci_id, driver):
    link = _dev_dir(d, pci_id) / "driver"
    target = d.root / "sys/bus/pci/drivers" / driver
    target.mkdir(parents=True, exist_ok=True)
    if link.is_symlink():
        link.unlink()
    link.symlink_to(os.path.relpath(target, link.parent))


def _driver(d, pci_id):
    link = _dev_dir(d, pci_id) / "driver"
    return os.path.basename(os.readlink(link)) if link.is_symlink() else None


def _pcis(s):
    """pci_id -> ref of every PCI object."""
    return {rec["pci_id"]: ref for ref, rec in s.xenapi.PCI.get_all_records().items()}


def _statuses(s, pcis):
    return {pci_id: s.xenapi.PCI.get_dom0_access_status(ref) for pci_id, ref in pcis.items()}


def _expect(pcis, **by_status):
    """Every PCI's expected status: the listed sets, `enabled` for the rest."""
    want = {pci_id: "enabled" for pci_id in pcis}
    for status, ids in by_status.items():
        for pci_id in ids:
            want[pci_id] = status
    return want


def _reboot(s):
    host = s.xenapi.host.get_all()[0]
    s.xenapi.host.disable(host)
    s.xenapi.host.reboot(host)
    assert s.xenapi.host.get_enabled(host) is True


def _grub(d):
    return (d.root / "boot/grub/grub.cfg").read_bytes()


def _proc_cmdline(d):
    return (d.root / "proc/cmdline").read_bytes().rstrip(b"\n")


def _grub_words(line):
    """GRUB's word splitting of one command (quotes removed, `\\` escapes)."""
    words, cur, have, quote, i = [], bytearray(), False, None, 0
    while i < len(line):
        c = line[i:i + 1]
        if quote == b"'":
            if c == b"'":
                quote = None
            else:
                cur += c
        elif quote == b'"':
            if c == b'"':
                quote = None
            elif c == b"\\" and line[i + 1:i + 2] in (b'"', b"\\", b"$"):
                i += 1
                cur += line[i:i + 1]
            else:
                cur += c
        elif c in (b" ", b"\t"):
            if have:
                words.append(bytes(cur))
            cur, have = bytearray(), False
        elif c in (b"'", b'"'):
            quote, have = c, True
        elif c == b"\\":
            i += 1
            cur += line[i:i + 1]
            have = True
        else:
            cur += c
            have = True
        i += 1
    if have:
        words.append(bytes(cur))
    return words


def _loader_cmdline(words):
    """grub_create_loader_cmdline: words joined by spaces, a word holding a
    space wrapped in double quotes."""
    out = []
    for w in words:
        w = w.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
        out.append(b'"' + w + b'"' if b" " in w else w)
    return b" ".join(out)


def _entries(cfg):
    """[(title, dom0 words, xen words)] of the menuentries, and the
    unconditional top-level default index."""
    entries, default, cur = [], None, None
    for raw in cfg.split(b"\n"):
        line = raw.strip()
        if raw.startswith(b"set default="):
            default = int(raw.split(b"=", 1)[1])
        elif line.startswith(b"menuentry "):
            cur = [_grub_words(line)[1].decode("latin-1"), None, None]
        elif cur and line == b"}":
            entries.append(tuple(cur))
            cur = None
        elif cur and line.startswith(b"multiboot2 "):
            cur[2] = _grub_words(line)[2:]
        elif cur and line.startswith(b"module2 ") and cur[1] is None:
            cur[1] = _grub_words(line)[2:]
    return entries, default


def _default_cmdline(cfg):
    """dom0's /proc/cmdline after GRUB boots the default entry of `cfg`
    (no grubenv): the module2 arguments, then Xen's arguments after ` -- `,
    cut at Xen's 1023 bytes."""
    entries, default = _entries(cfg)
    _, dom0, xen = entries[default]
    extra = xen[xen.index(b"--") + 1:] if b"--" in xen else []
    line = _loader_cmdline(dom0)
    if extra:
        line += b" " + _loader_cmdline(extra)
    return line[:1023]


def _with_dom0_args(cfg, args):
    """`cfg` with `args` (bytes) appended to the XCP-ng and XCP-ng (Serial)
    dom0 lines (the two that end with plymouth.ignore-serial-consoles)."""
    out = cfg.replace(b"plymouth.ignore-serial-consoles\n", b"plymouth.ignore-serial-consoles " + args + b"\n")
    assert out.count(args) == 2
    return out


def _mock_grub(tmp_path):
    """The demo mock host's own grub.cfg, without keeping the host."""
    tmp = Path(tmp_path) / "scratch"
    run(binary("pcipass"), "mock-host", "create", str(tmp), "--profile", "demo")
    cfg = (tmp / "boot/grub/grub.cfg").read_bytes()
    shutil.rmtree(tmp)
    return cfg


# --------------------------------------------- 1. real tools' grub.cfg

REAL_FILES = [
    # file, functions it hides at boot (hand-read from the file)
    ("xcpng-after-real-xen-cmdline.cfg", set()),
    ("xcpng-default-fallback.cfg", set()),
    ("xcpng-duplicate-hide-key.cfg", {NIC1}),          # the last occurrence wins
    ("xcpng-quoted-hide.cfg", {GPU, NIC1}),
    ("xcpng-hide-via-xen-kextra.cfg", {GPU}),          # after ` -- ` on the Xen line
]


@pytest.mark.parametrize("name,hidden", REAL_FILES, ids=[n for n, _ in REAL_FILES])
def test_real_grub_cfg_through_status_edit_and_reboot(tmp_path, started, name, hidden):
    cfg = (FIXTURES / name).read_bytes()
    d = started(tmp_path, grub=cfg)
    s = d.session("operator")
    pcis = _pcis(s)
    assert {GPU, AUDIO, NIC0, NIC1, XHCI} <= set(pcis)

    # Every status answers; the file's own hides are pending.
    assert _statuses(s, pcis) == _expect(pcis, disable_on_reboot=hidden)

    # An edit through the API works and leaves a grub.cfg the daemon reads.
    assert s.xenapi.PCI.disable_dom0_access(pcis[XHCI]) == "disable_on_reboot"
    pending = hidden | {XHCI}
    assert _statuses(s, pcis) == _expect(pcis, disable_on_reboot=pending)
    after_edit = _grub(d)
    assert b"(0000:00:14.0)" in after_edit

    entries, default = _entries(after_edit)
    assert entries[default][1] is not None
    booted = _default_cmdline(after_edit)
    assert b"0000:00:14.0" in booted, "the entry GRUB boots gets the edit"
    if name == "xcpng-default-fallback.cfg":
        assert default == 3
        assert b"(0000:00:14.0)" in b" ".join(entries[3][1]), "the fallback entry is the one booted"
    # The entries the real tool edits get it too.
    for title, dom0, _ in entries:
        if title in ("XCP-ng", "XCP-ng (Serial)"):
            assert b"(0000:00:14.0)" in b" ".join(dom0), title

    # The reboot boots exactly the default entry's command line.
    _reboot(s)
    assert _proc_cmdline(d) == booted
    assert _statuses(s, pcis) == _expect(pcis, disabled=pending)
    for pci_id in pcis:
        assert (_driver(d, pci_id) == "pciback") == (pci_id in pending), pci_id


# ------------------------------------------- 2. the kernel's rules, one by one

# One argument (no spaces) of 1050 bytes: over charp's 1024. Only the running
# side can show it (Xen would cut such a line at 1023 bytes).
HUGE = b"".join([b"(0000:03:00.1)"] * 75)
assert len(HUGE) > 1024

KERNEL_RULES = [
    # name, dom0 args after the mock's base arguments, hidden functions,
    # whether the same args can stand in grub.cfg (GRUB passes them as is)
    ("quoted_key_value", b'"xen-pciback.hide=(0000:01:00.0) (0000:03:00.1)"', {GPU, NIC1}, True),
    ("quoted_value", b'xen-pciback.hide="(0000:01:00.0) (0000:03:00.1)"', {GPU, NIC1}, True),
    ("double_dash_ends_params", b"-- xen-pciback.hide=(0000:01:00.0)", set(), True),
    ("bare_key_keeps_earlier", b"xen-pciback.hide=(0000:01:00.0) xen-pciback.hide", {GPU}, True),
    ("over_1024_keeps_earlier", b"xen-pciback.hide=(0000:01:00.0) xen-pciback.hide=" + HUGE, {GPU}, False),
    ("last_occurrence_wins", b"xen-pciback.hide=(0000:01:00.0) xen-pciback.hide=(0000:03:00.1)", {NIC1}, True),
    ("underscore_spelling", b"xen_pciback.hide=(0000:01:00.0)", {GPU}, True),
    ("legacy_pciback_ignored", b"pciback.hide=(0000:01:00.0)", set(), True),
    ("hex_0x_prefix", b"xen-pciback.hide=(0x0000:0x01:0x00.0x1)", {AUDIO}, True),
    ("hex_wraps_32_bits", b"xen-pciback.hide=(100000000:1000000003:00.1)", {NIC1}, True),
    ("ffffffff_wildcard", b"xen-pciback.hide=(0000:01:ffffffff.ffffffff)", {GPU, AUDIO}, True),
    ("one_bad_entry_hides_nothing", b"xen-pciback.hide=(0000:01:00.0)(0b::00.1)", set(), True),
    ("whitespace_only_is_malformed", b'xen-pciback.hide=(0000:01:00.0) "xen-pciback.hide= "', set(), True),
    ("nbsp_is_space", b"xen-pciback.hide=(0000:01:00.0)\xa0xen-pciback.hide=(0000:03:00.1)", {NIC1}, False),
]


@pytest.mark.parametrize("args,hidden,in_grub", [c[1:] for c in KERNEL_RULES], ids=[c[0] for c in KERNEL_RULES])
def test_kernel_rule(tmp_path, started, args, hidden, in_grub):
    grub = _with_dom0_args(_mock_grub(tmp_path), args) if in_grub else None
    d = started(tmp_path, grub=grub, cmdline=BASE + b" " + args, hidden_links=hidden)
    s = d.session("operator")
    pcis = _pcis(s)
    if in_grub:
        # Running and boot configuration agree: hidden ones are disabled.
        assert _statuses(s, pcis) == _expect(pcis, disabled=hidden)
        # The mock reboot reads grub.cfg the same way, and binds the same.
        _reboot(s)
        assert _proc_cmdline(d) == _default_cmdline(grub)  # as GRUB re-quotes it
        assert _statuses(s, pcis) == _expect(pcis, disabled=hidden)
        for pci_id in pcis:
            assert (_driver(d, pci_id) == "pciback") == (pci_id in hidden), pci_id
    else:
        # Only the running kernel hides them: they come back at reboot.
        assert _statuses(s, pcis) == _expect(pcis, enable_on_reboot=hidden)


# --------------------------------------------- 3. Xen's 1023-byte limit

def test_hiding_until_the_dom0_line_is_full(tmp_path, started):
    d = started(tmp_path, profile="large")
    s = d.session("operator")
    pcis = _pcis(s)
    candidates = sorted(p for p in pcis if p >= "0000:10:00.0")
    assert len(candidates) > 100
    done = []
    for pci_id in candidates:
        before = _grub(d)
        try:
            status = s.xenapi.PCI.disable_dom0_access(pcis[pci_id])
        except XenAPI.Failure as e:
            details = e.details
            break
        assert status == "disable_on_reboot", pci_id
        done.append(pci_id)
        assert len(_default_cmdline(_grub(d))) <= 1023
    else:
        pytest.fail("no call was refused")
    assert len(done) > 20, "many hides fit before the limit"
    assert _grub(d) == before, "the refused call wrote nothing"
    line = _default_cmdline(before)
    assert len(line) + len(b" (0000:10:00.0)") > 1023, "refused only when the entry really does not fit"
    assert details[0] == "BOOT_CONFIG_CMDLINE_TOO_LONG", details
    length, limit = details[1:]
    assert limit == "1023" and int(length) == len(line) + len(b"(0000:10:00.0)"), details
    assert s.xenapi.PCI.get_dom0_access_status(pcis[pci_id]) == "enabled"
    assert s.xenapi.PCI.get_dom0_access_status(pcis[done[-1]]) == "disable_on_reboot"
    # What is there still boots as written.
    _reboot(s)
    assert _proc_cmdline(d) == line
    assert s.xenapi.PCI.get_dom0_access_status(pcis[done[-1]]) == "disabled"
    assert s.xenapi.PCI.get_dom0_access_status(pcis[pci_id]) == "enabled"


# ------------------------------------------------------------ 4. bridges

def _pgpu_of(s, pci_ref):
    for ref, rec in s.xenapi.PGPU.get_all_records().items():
        if rec["PCI"] == pci_ref:
            return ref
    raise AssertionError("no PGPU for the GPU")


def test_root_port_entry_hides_the_functions_behind_it(tmp_path, started):
    grub = _with_dom0_args(_mock_grub(tmp_path), b"xen-pciback.hide=(0000:00:01.0)")
    d = started(tmp_path, grub=grub)
    s = d.session("operator")
    pcis = _pcis(s)
    assert "0000:00:01.0" not in pcis, "bridges are not PCI objects"
    pgpu = _pgpu_of(s, pcis[GPU])
    assert _statuses(s, pcis) == _expect(pcis, disable_on_reboot={GPU, AUDIO})
    assert s.xenapi.PGPU.get_dom0_access(pgpu) == "disable_on_reboot"
    assert s.xenapi.PGPU.get_record(pgpu)["dom0_access"] == "disable_on_reboot"
    # Hiding what is already hidden through the bridge changes nothing.
    assert s.xenapi.PCI.disable_dom0_access(pcis[GPU]) == "disable_on_reboot"
    assert _grub(d) == grub
    _reboot(s)
    assert _statuses(s, pcis) == _expect(pcis, disabled={GPU, AUDIO})
    assert s.xenapi.PGPU.get_dom0_access(pgpu) == "disabled"
    assert _driver(d, GPU) == "pciback" and _driver(d, AUDIO) == "pciback"
    assert _driver(d, NIC0) == "i40e"


def test_unhiding_one_function_behind_a_hidden_bridge(tmp_path, started):
    grub = _with_dom0_args(_mock_grub(tmp_path), b"xen-pciback.hide=(0000:00:01.0)")
    d = started(tmp_path, grub=grub)
    s = d.session("operator")
    pcis = _pcis(s)
    # Unhiding the GPU must not unhide its sibling behind the same bridge.
    assert s.xenapi.PCI.enable_dom0_access(pcis[GPU]) == "enabled"
    assert _statuses(s, pcis) == _expect(pcis, disable_on_reboot={AUDIO})


@pytest.mark.parametrize("entry", [b"(0000:00:1d.0)", b"(0000:00:*.*)"], ids=["root_port", "bus_wildcard"])
def test_hand_written_entry_hiding_the_boot_disk(tmp_path, started, entry):
    grub = _with_dom0_args(_mock_grub(tmp_path), b"xen-pciback.hide=" + entry)
    d = started(tmp_path, grub=grub)
    s = d.session("operator")
    pcis = _pcis(s)
    # The daemon keeps answering and shows what the next boot would do.
    if entry == b"(0000:00:1d.0)":
        hidden = {NVME}
    else:
        hidden = set(pcis)  # every function is on bus 0 or behind a bus-0 bridge
    assert _statuses(s, pcis) == _expect(pcis, disable_on_reboot=hidden)
    # Another function's hide: the edited file still hides the boot disk.
    # Either it is refused (and nothing is written) or it leaves the
    # boot-disk entry exactly as the person wrote it.
    target = XHCI if entry == b"(0000:00:1d.0)" else GPU
    try:
        result = s.xenapi.PCI.disable_dom0_access(pcis[target])
    except XenAPI.Failure as e:
        assert e.details[0] == "BOOT_DEVICE_PASSTHROUGH_DISALLOWED", e.details
        assert e.details[1].startswith("/dev/nvme"), e.details
        assert _grub(d) == grub
    else:
        assert result == "disable_on_reboot"
        assert _default_cmdline(_grub(d)).count(entry) == 1
    # Hiding the boot disk itself through the API stays refused or a no-op.
    try:
        s.xenapi.PCI.disable_dom0_access(pcis[NVME])
    except XenAPI.Failure as e:
        assert e.details[0] == "BOOT_DEVICE_PASSTHROUGH_DISALLOWED", e.details
    assert _statuses(s, pcis)[NVME] == "disable_on_reboot"


def test_api_edit_never_newly_hides_the_boot_path(tmp_path, started):
    """A hand-written entry naming the NIC's root port is fine; no API call
    may make the boot disk's path hidden."""
    grub = _with_dom0_args(_mock_grub(tmp_path), b"xen-pciback.hide=(0000:00:1c.0)")
    d = started(tmp_path, grub=grub)
    s = d.session("operator")
    pcis = _pcis(s)
    behind = {NIC0, NIC1, "0000:03:02.0", "0000:03:02.1", "0000:03:02.2", "0000:03:02.3"}
    assert _statuses(s, pcis) == _expect(pcis, disable_on_reboot=behind)
    assert failure(s.xenapi.PCI.disable_dom0_access, pcis[NVME])[0] == "BOOT_DEVICE_PASSTHROUGH_DISALLOWED"
    assert _grub(d) == grub
    assert s.xenapi.PCI.disable_dom0_access(pcis[XHCI]) == "disable_on_reboot"
    assert _statuses(s, pcis)[NVME] == "enabled"


# --------------------------------------------------- 5. non-UTF-8 grub.cfg

LATIN1 = [
    ("comment", lambda cfg: b"# r\xe9glage du d\xe9marrage\n" + cfg),
    ("dom0_argument", lambda cfg: _with_dom0_args(cfg, b"label=r\xe9glage")),
]


@pytest.mark.parametrize("make", [m for _, m in LATIN1], ids=[n for n, _ in LATIN1])
def test_latin1_grub_cfg(tmp_path, started, make):
    grub = make(_mock_grub(tmp_path))
    d = started(tmp_path, grub=grub)
    s = d.session("operator")
    pcis = _pcis(s)
    assert _statuses(s, pcis) == _expect(pcis)
    assert s.xenapi.PCI.disable_dom0_access(pcis[GPU]) == "disable_on_reboot"
    edited = _grub(d)
    assert b"\xe9glage" in edited and b"(0000:01:00.0)" in edited
    assert edited.replace(b" xen-pciback.hide=(0000:01:00.0)", b"") == grub, "only the hide was added"
    _reboot(s)
    assert _proc_cmdline(d) == _default_cmdline(edited)
    assert s.xenapi.PCI.get_dom0_access_status(pcis[GPU]) == "disabled"
    assert s.xenapi.PCI.enable_dom0_access(pcis[GPU]) == "enable_on_reboot"
    assert _grub(d) == grub, "the Latin-1 bytes survive byte for byte"


def _debian_like(tmp_path):
    """The demo host with Debian 12's generated grub.cfg and no XCP-ng
    inventory: a plain Xen dom0 whose grub.cfg grub-mkconfig rewrites."""
    d = Daemon(tmp_path)
    (d.root / "etc/xensource-inventory").unlink()
    (d.root / "etc/default").mkdir(parents=True, exist_ok=True)
    (d.root / "etc/default/grub").write_text('GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX=""\n')
    shutil.copy(FIXTURES / "debian12-grub-mkconfig.cfg", d.root / "boot/grub/grub.cfg")
    d.add_user("admin", "pool-admin")
    return d


def test_a_generated_grub_cfg_with_no_way_to_regenerate_it_is_read_only(tmp_path):
    """On a grub-mkconfig host an edit of grub.cfg alone would be dropped
    by the next update-grub, and on a root other than / pcipassd has no
    generator to run: auto finds the flow, statuses are read, edits are
    refused saying what to give, and nothing is written."""
    d = _debian_like(tmp_path).start()
    passwords = d.passwords
    try:
        log = (d.workdir / "pcipassd.log").read_text()
        assert "flow=grub-mkconfig" in log and "generated by grub-mkconfig" in log, log[-1500:]
        s = d.session("admin")
        pcis = s.xenapi.PCI.get_all_records()
        ref = next(r for r, p in pcis.items() if p["pci_id"] == "0000:01:00.0")
        assert s.xenapi.PCI.get_dom0_access_status(ref) in ("enabled", "disabled", "disable_on_reboot", "enable_on_reboot")
        before = (d.root / "boot/grub/grub.cfg").read_bytes()
        details = failure(s.xenapi.PCI.disable_dom0_access, ref)
        assert details[0] == "BOOT_CONFIG_UNAVAILABLE" and "--grub-mkconfig-command" in details[1], details
        assert not (d.root / "etc/default/grub.d/zz-pcipass.cfg").exists()
        assert (d.root / "boot/grub/grub.cfg").read_bytes() == before
    finally:
        d.cleanup()
    # The operator may choose to edit grub.cfg in place anyway.
    d = Daemon(tmp_path, extra_args=["--boot-flow", "xcp-ng"])
    d.passwords = passwords
    d.start()
    try:
        s = d.session("admin")
        ref = pci_ref(s, "0000:01:00.0")
        assert s.xenapi.PCI.disable_dom0_access(ref) in ("disable_on_reboot", "disabled")
    finally:
        d.cleanup()


def test_an_ambiguous_root_is_refused_with_the_candidates(tmp_path):
    d = _debian_like(tmp_path)
    esp = d.root / "boot/efi/EFI/xen"
    esp.mkdir(parents=True)
    (esp / "xen.cfg").write_text("[global]\ndefault=xen\n\n[xen]\nkernel=vmlinuz root=/dev/sda1 ro\n")
    # Without EFI variables nothing says which of the two the firmware boots.
    proc = subprocess.run(d.args(), capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0
    assert "boot/grub/grub.cfg (grub-mkconfig)" in proc.stderr, proc.stderr
    assert "boot/efi/EFI/xen/xen.cfg (xen-efi)" in proc.stderr and "--boot-flow" in proc.stderr
    d.cleanup()


def _efi_var(path):
    """An efivarfs Boot#### entry whose loader is `path` (UEFI
    EFI_LOAD_OPTION: attributes, device-path length, UCS-2 description,
    a hard-drive node, a file-path node, the end node)."""
    import struct
    ucs2 = lambda s: s.encode("utf-16-le") + b"\0\0"
    file = ucs2(path)
    nodes = bytes([4, 1, 42, 0]) + bytes(38) + bytes([4, 4]) + struct.pack("<H", 4 + len(file)) + file
    nodes += bytes([0x7F, 0xFF, 4, 0])
    return bytes([7, 0, 0, 0]) + struct.pack("<IH", 1, len(nodes)) + ucs2("Xen") + nodes


def test_xen_efi_edits_the_kernel_line_of_the_default_section(tmp_path):
    """A dom0 booted by Xen's EFI loader: the firmware's BootCurrent names
    xen.efi; pcipass edits only the dom0 arguments of xen.cfg's default
    section, every other byte kept."""
    import difflib
    d = Daemon(tmp_path)
    guid = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
    (d.root / "boot/grub/grub.cfg").unlink()
    esp = d.root / "boot/efi/EFI/xen"
    esp.mkdir(parents=True)
    shutil.copy(REPO / "tests/fixtures/xen-efi/xen.cfg", esp / "xen.cfg")
    (esp / "xen.efi").write_bytes(b"")
    vars_ = d.root / "sys/firmware/efi/efivars"
    vars_.mkdir(parents=True)
    (vars_ / f"BootCurrent-{guid}").write_bytes(bytes([7, 0, 0, 0, 3, 0]))
    (vars_ / f"Boot0003-{guid}").write_bytes(_efi_var("\\EFI\\XEN\\XEN.EFI"))
    d.add_user("admin", "pool-admin")
    d.start()
    try:
        log = (d.workdir / "pcipassd.log").read_text()
        assert "flow=xen-efi" in log and "EFI BootCurrent" in log, log[-1500:]
        s = d.session("admin")
        pcis = {p["pci_id"]: r for r, p in s.xenapi.PCI.get_all_records().items()}
        # The fixture's kernel= line already hides the GPU and its audio.
        assert s.xenapi.PCI.get_dom0_access_status(pcis["0000:01:00.0"]) == "disable_on_reboot"
        before = (esp / "xen.cfg").read_text()
        assert s.xenapi.PCI.disable_dom0_access(pcis["0000:00:14.0"]) == "disable_on_reboot"
        assert s.xenapi.PCI.enable_dom0_access(pcis["0000:01:00.0"]) == "enabled"
        after = (esp / "xen.cfg").read_text()
        diff = [l for l in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
                if l[:1] in "+-" and not l.startswith(("+++", "---"))]
        print("\n".join(diff))
        assert diff == [
            "-kernel=vmlinuz-6.1.0-28-amd64 root=UUID=3f1c2a9e-5b7d-4e0a-9c61-2d8f4b7e1a53 ro quiet "
            "console=hvc0 xen-pciback.hide=(0000:01:00.0)(0000:01:00.1)",
            "+kernel=vmlinuz-6.1.0-28-amd64 root=UUID=3f1c2a9e-5b7d-4e0a-9c61-2d8f4b7e1a53 ro quiet "
            "console=hvc0 xen-pciback.hide=(0000:01:00.1)(0000:00:14.0)",
        ], diff
        # The boot disk stays refused on this flow too.
        assert failure(s.xenapi.PCI.disable_dom0_access, pcis["0000:02:00.0"])[0] == "BOOT_DEVICE_PASSTHROUGH_DISALLOWED"
        assert (esp / "xen.cfg").read_text() == after
    finally:
        d.cleanup()
