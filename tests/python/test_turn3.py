"""The four minimal cases of tests/fixtures/turn3 (seeded differential runs
against upstream; ../shared/fixtures/turn3/README.md), each on a fresh mock
host and through every user surface: the XenAPI through the Python SDK,
the `pcipass` CLI over the Unix socket as local root, and `xen-cmdline
--get-dom0`.

What "upstream" decides is computed here, not by pcipass: `boots()` reads
the file the boot loader reads as that loader and Xen do (GRUB's word
splitting and quotes; Xen's EFI loader's `options=`; Xen's ` -- ` kextra
appended to dom0's arguments after the kernel's own), and `kernel_hides()`
applies the kernel's rule (`parameq`: `-` and `_` alike; the last
occurrence wins; nothing after a bare `--`). Every status checked is then
`from_views(hidden in /proc/cmdline, hidden in what boots next)`, and all
three surfaces must give it."""

import re
import shlex
import subprocess

import pytest

from conftest import REPO, Daemon, binary, run
from test_grub_mkconfig import MKCONFIG, _why_not, entries, regenerate

FIXTURES = REPO / "tests/fixtures/turn3"
GPU, USB = "0000:01:00.0", "0000:00:14.0"
QUOTED_TOO = "0000:03:00.1"  # a1-leading-quote's second function
OVERRIDDEN = "0000:03:02.1"  # a1-set-leaves-underscore-variant's earlier, overridden hide
GRUB_CFG, XEN_CFG, DEFAULT_GRUB = "boot/grub/grub.cfg", "boot/efi/EFI/xen/xen.cfg", "etc/default/grub"
# The values Debian's 20_linux_xen gives ${xen_rm_opts} (it sets nothing else).
XEN_RM_OPTS = ("", "no-real-mode edd=off")


# --- upstream's rules -------------------------------------------------------

def bdfs(value):
    """The functions a xen-pciback.hide value names, as pcistub parses it
    (a missing domain is 0000)."""
    found = re.findall(r"\(\s*(?:([0-9a-fA-F]{1,4}):)?([0-9a-fA-F]{1,2}):([0-9a-fA-F]{1,2})\.([0-7])\s*\)", value)
    return {f"{int(d or '0', 16):04x}:{int(b, 16):02x}:{int(s, 16):02x}.{f}" for d, b, s, f in found}


def kernel_hides(args):
    """The functions dom0's kernel hides given its argument words: the last
    `xen-pciback.hide=` or `xen_pciback.hide=` before a bare `--` wins."""
    value = None
    for word in args:
        if word == "--":
            break
        name, eq, val = word.partition("=")
        if eq and name.replace("-", "_") == "xen_pciback.hide":
            value = val
    return bdfs(value or "")


def _kextra(xen_args):
    """What Xen's __start_xen appends to dom0's command line: the part of
    its own after the first ` -- `."""
    _, sep, rest = xen_args.partition(" -- ")
    return rest if sep else ""


def _grub_words(line):
    """A grub.cfg command's words after the command and the image path, as
    GRUB splits them (quotes grouping and removed)."""
    return shlex.split(line)[2:]


def _grub_entry(grub_cfg, title=None):
    """(xen line, dom0 kernel line) of the entry `title`, else GRUB's default
    (the fixtures here all say `set default=0`)."""
    assert title or re.search(r"^set default=0$", grub_cfg, re.M), grub_cfg
    for t, lines in entries(grub_cfg):
        if title in (None, t):
            xen = next(l for l in lines if l.startswith("multiboot2"))
            dom0 = next(l for l in lines if l.startswith("module2") and "vmlinuz" in l)
            return xen, dom0
    raise AssertionError(f"no entry {title!r}")


def boots_grub(grub_cfg, title=None, rm_opts=""):
    """dom0's argument words when GRUB boots `title` (else its default)."""
    xen, dom0 = _grub_entry(grub_cfg, title)
    xen = xen.replace("${xen_rm_opts}", rm_opts)
    return _grub_words(dom0) + shlex.split(_kextra(" ".join(_grub_words(xen))))


def boots_xen_efi(xen_cfg):
    """dom0's argument words when Xen's EFI loader boots xen.cfg's default
    section: `kernel=`'s arguments, then `options=`'s part after ` -- `."""
    sections, current = {}, None
    for line in xen_cfg.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        head = re.fullmatch(r"\[(.*)\]", line)
        if head:
            current = sections.setdefault(head.group(1), {})
        elif current is not None and "=" in line:
            key, _, value = line.partition("=")
            current[key.strip()] = value.strip()
    section = sections[sections["global"]["default"]]
    kernel_args = section.get("kernel", "").split()[1:]
    return kernel_args + _kextra(section.get("options", "")).split()


def from_views(now, next_boot):
    return {(False, False): "enabled", (False, True): "disable_on_reboot",
            (True, True): "disabled", (True, False): "enable_on_reboot"}[(now, next_boot)]


# --- the mock host and the three surfaces -------------------------------------

class Host:
    def __init__(self, tmp_path, profile, flow, place=None, extra=()):
        root = tmp_path / "root"
        run(binary("pcipass"), "mock-host", "create", str(root), "--profile", profile)
        if place:
            fixture, rel = place
            (root / rel).write_bytes((FIXTURES / fixture).read_bytes())
        self.flow = flow
        self.d = Daemon(tmp_path, extra_args=["--boot-flow", flow, *extra])
        self.root = self.d.root
        self.d.add_user("admin", "pool-admin")

    def start(self):
        self.d.start()
        self.s = self.d.session("admin")
        self.refs = {rec["pci_id"]: ref for ref, rec in self.s.xenapi.PCI.get_all_records().items()}
        return self

    def cli(self, *args):
        proc = subprocess.run([binary("pcipass"), *args, "--socket", str(self.d.socket)],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, (args, proc.stderr)
        return proc.stdout.strip()

    def uuid(self, pci_id):
        return self.cli("pci-list", f"pci-id={pci_id}", "--minimal")

    def xen_cmdline_hides(self):
        """The functions hidden at the next boot as `xen-cmdline --get-dom0`
        shows them: both spellings, in line order, the last one winning, each
        printed argument read as GRUB reads it (quotes removed)."""
        proc = self.d.xen_cmdline("--boot-flow", self.flow, "--get-dom0", "xen-pciback.hide", "xen_pciback.hide")
        words = [w for line in proc.stdout.splitlines() if line for w in shlex.split(line)]
        return kernel_hides(words)

    def running_hides(self):
        return kernel_hides((self.root / "proc/cmdline").read_text().split())

    def statuses(self, pci_id):
        """{surface: status} for one function."""
        api = self.s.xenapi.PCI.get_dom0_access_status(self.refs[pci_id])
        cli = self.cli("pci-get-dom0-access-status", f"uuid={self.uuid(pci_id)}")
        xcl = from_views(pci_id in self.running_hides(), pci_id in self.xen_cmdline_hides())
        return {"api": api, "cli": cli, "xen-cmdline": xcl}

    def expect(self, next_boot, want):
        """Each function in `want` ({pci_id: status}) has that status on every
        surface, and it is upstream's: from /proc/cmdline and `next_boot`,
        the set upstream's rules hide at the next boot."""
        for pci_id, status in want.items():
            upstream = from_views(pci_id in self.running_hides(), pci_id in next_boot)
            assert upstream == status, (pci_id, upstream, next_boot)
            assert self.statuses(pci_id) == dict.fromkeys(("api", "cli", "xen-cmdline"), status), pci_id

    def reboot(self):
        """`pcipass host-disable` + `host-reboot`: the mock host boots in place."""
        self.cli("host-disable")
        self.cli("host-reboot")
        self.s = self.d.session("admin")

    def read(self, rel):
        return (self.root / rel).read_text()


@pytest.fixture
def hosts():
    made = []
    yield made
    for h in made:
        h.d.cleanup()


# --- a4: Xen's EFI loader, a hide in options='s kextra --------------------------

def _a4(tmp_path, hosts):
    h = Host(tmp_path, "xen-efi", "xen-efi", ("a4-xen-efi-options-kextra.cfg", XEN_CFG))
    hosts.append(h.start())
    assert boots_xen_efi(h.read(XEN_CFG))[-1] == f"xen-pciback.hide=({GPU})"
    assert kernel_hides(boots_xen_efi(h.read(XEN_CFG))) == {GPU}
    h.expect({GPU}, {GPU: "disable_on_reboot", USB: "enabled"})
    return h


def _a4_reboot(h):
    h.reboot()
    booted = boots_xen_efi(h.read(XEN_CFG))
    # The mock booted as Xen's EFI loader does.
    assert kernel_hides((h.root / "proc/cmdline").read_text().split()) == kernel_hides(booted)
    return kernel_hides(booted)


def test_a4_kextra_hide_is_read_on_every_surface_and_an_unhide_removes_it(tmp_path, hosts):
    h = _a4(tmp_path, hosts)
    assert h.s.xenapi.PCI.enable_dom0_access(h.refs[GPU]) == "enabled"
    cfg = h.read(XEN_CFG)
    assert kernel_hides(boots_xen_efi(cfg)) == set(), cfg
    assert "options=dom0_mem=4096M,max:4096M" in cfg, cfg
    h.expect(set(), {GPU: "enabled"})
    assert _a4_reboot(h) == set()
    h.expect(set(), {GPU: "enabled", USB: "enabled"})


def test_a4_a_hide_of_another_function_makes_one_effective_list(tmp_path, hosts):
    h = _a4(tmp_path, hosts)
    assert h.s.xenapi.PCI.disable_dom0_access(h.refs[USB]) == "disable_on_reboot"
    cfg = h.read(XEN_CFG)
    booted = boots_xen_efi(cfg)
    # One list, holding both: not a kernel= hide that kextra's overrides.
    assert len([w for w in booted if "pciback.hide" in w.replace("_", "-")]) == 1, cfg
    assert kernel_hides(booted) == {GPU, USB}, cfg
    h.expect({GPU, USB}, {GPU: "disable_on_reboot", USB: "disable_on_reboot"})
    assert _a4_reboot(h) == {GPU, USB}
    h.expect({GPU, USB}, {GPU: "disabled", USB: "disabled"})


# --- a3: Debian, GRUB_CMDLINE_XEN_DEFAULT with ` -- ` ---------------------------

def _debian_next_boot(grub_cfg):
    """The hide every Xen entry of the generated grub.cfg boots with, whatever
    ${xen_rm_opts} is set to; they must all agree."""
    xen_titles = [t for t, lines in entries(grub_cfg) if any(l.startswith("multiboot2") for l in lines)]
    assert xen_titles, grub_cfg
    found = {frozenset(kernel_hides(boots_grub(grub_cfg, t, opts))) for t in xen_titles for opts in XEN_RM_OPTS}
    assert len(found) == 1, found
    return set(found.pop())


def test_a3_debian_dashdash_in_grub_cmdline_xen_answers_and_edits(tmp_path, hosts):
    if _why_not():
        pytest.skip(_why_not())
    root = tmp_path / "root"
    command = f"{MKCONFIG} {root} -o {root}/boot/grub/grub.cfg"
    h = Host(tmp_path, "debian", "grub-mkconfig", ("a3-debian-grub-cmdline-xen-dashdash.default-grub", DEFAULT_GRUB),
             extra=["--grub-mkconfig-command", command])
    regenerate(root)  # as update-grub would after the hand edit of /etc/default/grub
    generated = h.read(GRUB_CFG)
    assert re.search(r"multiboot2\s.* -- console=hvc0 \$\{xen_rm_opts\}$", generated, re.M), generated
    hosts.append(h.start())
    h.expect(set(), {GPU: "enabled", USB: "enabled"})

    assert h.s.xenapi.PCI.disable_dom0_access(h.refs[USB]) == "disable_on_reboot"
    assert _debian_next_boot(h.read(GRUB_CFG)) == {USB}
    h.expect({USB}, {USB: "disable_on_reboot", GPU: "enabled"})
    # A kernel or Xen upgrade regenerates grub.cfg: the hide is kept.
    regenerate(root)
    assert _debian_next_boot(h.read(GRUB_CFG)) == {USB}
    h.expect({USB}, {USB: "disable_on_reboot"})
    h.reboot()
    assert h.running_hides() == {USB}
    h.expect({USB}, {USB: "disabled", GPU: "enabled"})


# --- a1: XCP-ng grub.cfg ----------------------------------------------------------

XCPNG_TITLES = ("XCP-ng", "XCP-ng (Serial)")


def _xcpng_next_boot(h):
    """What GRUB's default entry boots; the (Serial) twin, which XCP-ng's
    tool edits alike, must boot the same hide."""
    cfg = h.read(GRUB_CFG)
    found = [kernel_hides(boots_grub(cfg, t)) for t in XCPNG_TITLES]
    assert found[0] == found[1] == kernel_hides(boots_grub(cfg)), (found, cfg)
    return found[0]


def test_a1_the_last_underscore_spelling_is_in_charge_and_a_hide_takes_over(tmp_path, hosts):
    h = Host(tmp_path, "demo", "xcp-ng", ("a1-set-leaves-underscore-variant.cfg", GRUB_CFG))
    hosts.append(h.start())
    assert _xcpng_next_boot(h) == {GPU}
    h.expect({GPU}, {GPU: "disable_on_reboot", OVERRIDDEN: "enabled", USB: "enabled"})

    assert h.s.xenapi.PCI.disable_dom0_access(h.refs[USB]) == "disable_on_reboot"
    after = _xcpng_next_boot(h)
    assert USB in after, h.read(GRUB_CFG)
    # The other two keep whatever status the edited file gives them, the
    # same on every surface (pcipass extends the list in charge: GPU stays).
    h.expect(after, {p: from_views(False, p in after) for p in (USB, GPU, OVERRIDDEN)})
    h.reboot()
    assert h.running_hides() == after
    h.expect(after, {p: "disabled" if p in after else "enabled" for p in (USB, GPU, OVERRIDDEN)})


def test_a1_a_whole_quoted_hide_is_read_as_grub_reads_it_and_unhidden(tmp_path, hosts):
    h = Host(tmp_path, "demo", "xcp-ng", ("a1-leading-quote-hide.cfg", GRUB_CFG))
    hosts.append(h.start())
    both = {GPU, QUOTED_TOO}
    assert _xcpng_next_boot(h) == both
    h.expect(both, {GPU: "disable_on_reboot", QUOTED_TOO: "disable_on_reboot"})

    assert h.s.xenapi.PCI.enable_dom0_access(h.refs[GPU]) == "enabled"
    assert _xcpng_next_boot(h) == {QUOTED_TOO}, h.read(GRUB_CFG)
    assert h.read(GRUB_CFG).count("pciback.hide") == 2, h.read(GRUB_CFG)
    h.expect({QUOTED_TOO}, {GPU: "enabled", QUOTED_TOO: "disable_on_reboot"})
    h.reboot()
    h.expect({QUOTED_TOO}, {GPU: "enabled", QUOTED_TOO: "disabled"})
