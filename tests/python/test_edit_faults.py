"""Issue 23, generalised to every boot flow: random kills during edits,
and edits refused by a failing disk or generator, on the xcp-ng flow
(`demo`: grub.cfg edited in place), the grub-mkconfig flow (`debian`: a
drop-in, the real generator, modprobe.d, the initramfs module list and
image) and the Xen EFI flow (`xen-efi`: xen.cfg on the ESP, the
early-load files, the initramfs in /boot and its copy on the ESP).

What a hide touches, per flow (a hide on each fresh mock host, the trees
diffed; `<cfg>.pcipass-lock` is the edit's empty lock file):
  xcp-ng         boot/grub/grub.cfg
  grub-mkconfig  etc/default/grub.d/zz-pcipass.cfg, boot/grub/grub.cfg,
                 etc/modprobe.d/pcipass.conf, etc/initramfs-tools/modules,
                 boot/initrd.img-6.1.0-28-amd64
  xen-efi        boot/efi/EFI/xen/xen.cfg, etc/modprobe.d/pcipass.conf,
                 etc/initramfs-tools/modules, boot/initrd.img-6.1.0-28-amd64,
                 boot/efi/EFI/xen/initrd.img-6.1.0-28-amd64

The mock reboot (host.disable + host.reboot) boots the flow's default
entry with the initramfs its loader loads (the ESP's copy on xen-efi), so
a status of `disabled` after it proves the early-load files agree with
the boot file, not only the command line.

The fault tests mount (tmpfs, read-only binds): they need root and are
skipped without it; the grub-mkconfig cases also need Debian's generator
(see test_grub_mkconfig._why_not)."""

import errno
import os
import random
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import XenAPI

from conftest import Daemon, binary, run
from test_grub_mkconfig import MKCONFIG, _pcis, _reboot, _why_not

FLOWS = {
    # flow id: (mock-host profile, the boot file the loader reads)
    "xcp-ng": ("demo", "boot/grub/grub.cfg"),
    "grub-mkconfig": ("debian", "boot/grub/grub.cfg"),
    "xen-efi": ("xen-efi", "boot/efi/EFI/xen/xen.cfg"),
}
# Hideable on every profile (a module driver on debian and xen-efi, so the
# early-load files are written for each of them; not the console GPU,
# refused while the host display is on).
CANDIDATES = ["0000:01:00.1", "0000:00:14.0", "0000:00:1f.6", "0000:01:00.0", "0000:03:02.0"]
GPU = "0000:01:00.0"
KILLS = 8


def _descendants(pid):
    """Every process below `pid` (its children's groups included)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _skip_unless_possible(flow, mounts=False):
    if flow == "grub-mkconfig" and _why_not():
        pytest.skip(_why_not())
    if mounts and os.geteuid() != 0:
        pytest.skip("needs root (tmpfs and read-only bind mounts)")


class Lab:
    """The daemons and mounts of one test. Teardown stops the daemons
    first (they may hold files open under a mount), then unmounts in
    reverse order."""

    def __init__(self):
        self.daemons, self.mounts = [], []

    def mount(self, *args):
        target = str(args[-1])
        subprocess.run(["mount", *map(str, args)], check=True, capture_output=True, text=True, timeout=60)
        if target not in self.mounts:
            self.mounts.append(target)

    def umount(self, target):
        target = str(target)
        done = subprocess.run(["umount", target], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            # Never leave a mount behind: detach it lazily and say so.
            print(f"umount {target}: {done.stderr.strip()}; detaching lazily")
            subprocess.run(["umount", "-l", target], check=True, timeout=60)
        self.mounts.remove(target)

    def close(self):
        for d in self.daemons:
            d.cleanup()
        for target in reversed(list(self.mounts)):
            self.umount(target)


@pytest.fixture
def lab():
    lab = Lab()
    try:
        yield lab
    finally:
        lab.close()


def _host(tmp_path, flow, command=None):
    """A daemon (not started) on a fresh mock host of `flow`."""
    profile, _ = FLOWS[flow]
    root = tmp_path / "root"
    run(binary("pcipass"), "mock-host", "create", str(root), "--profile", profile)
    extra = []
    if flow == "grub-mkconfig":
        # What grub-mkconfig-mock does at its first run (it copies the
        # installed /etc/grub.d into the root), done now so that the
        # snapshots of /etc do not see it.
        shutil.copytree("/etc/grub.d", root / "etc/grub.d", symlinks=True)
        extra = ["--grub-mkconfig-command", command or f"{MKCONFIG} {root} -o {root}/boot/grub/grub.cfg"]
    d = Daemon(tmp_path, extra_args=extra)
    d.add_user("admin", "pool-admin")
    return d


def _hide_of_line(line):
    if "xen-pciback.hide=" not in line:
        return set()
    value = line.rsplit("xen-pciback.hide=", 1)[1].split()[0]
    return {entry.strip("()") for entry in value.split(")(")}


def _boot_hide(flow, root):
    """The hide list the loader boots, read from the flow's boot file:
    the dom0 kernel line of the default entry (GRUB: the first Xen
    entry's, which is the default on both grub profiles; xen.cfg: the
    `kernel=` line of the section `default=` names)."""
    text = (root / FLOWS[flow][1]).read_text()
    if flow == "xen-efi":
        default = next(l.split("=", 1)[1].strip() for l in text.splitlines() if l.startswith("default="))
        section = text.split(f"[{default}]", 1)[1].split("\n[", 1)[0]
        return _hide_of_line(next(l for l in section.splitlines() if l.startswith("kernel=")))
    for line in text.splitlines():
        words = line.split()
        if words[:1] == ["module2"] and "vmlinuz" in line:
            return _hide_of_line(line)
    raise AssertionError(f"no dom0 kernel line in {FLOWS[flow][1]}")


def _files(root, *tops):
    """Every regular file below `tops` (not following symbolic links)."""
    for top in tops:
        for dirpath, _, names in os.walk(root / top):
            for name in names:
                path = Path(dirpath) / name
                if path.is_file() and not path.is_symlink():
                    yield path


def _journals(root):
    return sorted(str(p.relative_to(root)) for p in _files(root, ".") if p.name.endswith(".pcipass-journal"))


def _leftovers(root):
    """Journals and temporary files (the daemon's `.NAME.pcipass-tmp-PID`,
    anything named *.tmp*, the mock generator's *.mock-tmp) below /boot and
    /etc and at the top of the root."""
    found = []
    for p in list(_files(root, "boot", "etc")) + [p for p in root.iterdir() if p.is_file()]:
        name = p.name
        ours = ".pcipass-" in name and not name.endswith((".pcipass-lock", ".pcipass-mock-host"))
        if ours or ".tmp" in name or "mock-tmp" in name:
            found.append(str(p.relative_to(root)))
    return sorted(found)


def _snapshot(root, exclude=()):
    """path -> bytes of every file under /boot and /etc. The edit's lock
    file (`<cfg>.pcipass-lock`) is left out: it is created empty by the
    first edit and never holds data (checked here)."""
    snap = {}
    for p in _files(root, "boot", "etc"):
        rel = str(p.relative_to(root))
        if p in exclude:
            continue
        if rel.endswith(".pcipass-lock"):
            assert p.stat().st_size == 0, rel
            continue
        snap[rel] = p.read_bytes()
    return snap


def _differences(before, after):
    return sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))


# ---------------------------------------------------------------------------
# 1. Random kills
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("flow", FLOWS)
def test_random_kills_leave_what_was_acknowledged(tmp_path, lab, flow):
    """Bounded (8 kills per flow, seeded): random hides and unhides from a
    thread through the SDK; pcipassd is killed -9 at a random moment, on
    even kills alone, on odd kills with every process below it (as a stop
    of its systemd cgroup would). After each restart: no journal anywhere
    under the root; the boot file hides exactly what the acknowledged
    answers said (the one call in flight may go either way, and is then
    recorded as what it became); on grub-mkconfig a fresh run of the
    generator gives the same list; and after a mock reboot every
    acknowledged hide is `disabled` and every acknowledged unhide
    `enabled`."""
    _skip_unless_possible(flow)
    started = time.monotonic()
    rng = random.Random(f"kills-{flow}")
    d = _host(tmp_path, flow)
    root = d.root
    lab.daemons.append(d.start())
    acked = {}   # pci -> hidden, after the last acknowledged edit
    edits = 0
    for kill in range(KILLS):
        s = d.session("admin")
        refs = _pcis(s)
        in_flight, refused = set(), []
        stop = threading.Event()
        worker_rng = random.Random(rng.random())

        def edits_until_killed():
            nonlocal edits
            while not stop.is_set():
                pci = worker_rng.choice(CANDIDATES)
                hide = worker_rng.random() < 0.6
                in_flight.add(pci)
                try:
                    call = s.xenapi.PCI.disable_dom0_access if hide else s.xenapi.PCI.enable_dom0_access
                    call(refs[pci])
                except XenAPI.Failure as f:
                    # The daemon is killed before any process below it,
                    # so an answer is an answer: no edit may be refused.
                    refused.append((pci, hide, f.details))
                    return
                except Exception:  # noqa: BLE001 - the daemon dies under the call
                    return
                acked[pci] = hide
                in_flight.discard(pci)
                edits += 1

        worker = threading.Thread(target=edits_until_killed)
        worker.start()
        time.sleep(rng.uniform(0.2, 2.5))
        victims = [d.proc.pid] + (_descendants(d.proc.pid) if kill % 2 else [])
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        d.proc.wait()
        stop.set()
        worker.join(timeout=120)
        assert not worker.is_alive(), "a call outlived the daemon by two minutes"
        assert refused == [], refused
        d.start()

        assert _journals(root) == [], (kill, _journals(root))
        hidden = _boot_hide(flow, root)
        for pci, hide in acked.items():
            if pci not in in_flight:
                assert (pci in hidden) == hide, (kill, pci, hide, hidden)
        if flow == "grub-mkconfig":
            again = tmp_path / "regenerated.cfg"
            subprocess.run([str(MKCONFIG), str(root), str(again)], check=True, capture_output=True, timeout=120)
            text = again.read_text()
            line = next(l for l in text.splitlines() if l.split()[:1] == ["module2"] and "vmlinuz" in l)
            assert _hide_of_line(line) == hidden, "the next update-grub would change what boots"
        for pci in in_flight:
            acked[pci] = pci in hidden
        leftovers = _leftovers(root)
        if leftovers:
            print(f"kill {kill}: left by the killed processes: {leftovers}")

        s = _reboot(d, d.session("admin"))
        refs = _pcis(s)
        booted = {pci: s.xenapi.PCI.get_dom0_access_status(refs[pci]) for pci in acked}
        assert booted == {pci: "disabled" if hide else "enabled" for pci, hide in acked.items()}, (kill, hidden)

    repairs = (d.workdir / "pcipassd.log").read_text().count("undid an unfinished edit")
    print(f"\nkill test [{flow}]: {KILLS} kills ({(KILLS + 1) // 2} of the daemon alone, {KILLS // 2} with every "
          f"process below it), {edits} acknowledged edits, {repairs} edits undone at restart, "
          f"{time.monotonic() - started:.1f} s")


# ---------------------------------------------------------------------------
# 2. Refused edits
# ---------------------------------------------------------------------------

FAULT_MESSAGE = "grub-mkconfig: error: cannot write /boot/grub/grub.cfg (test fault)"


class Fault:
    """One fault, applied to and removed from a started daemon's host."""

    def __init__(self, name, tmp_path, lab, root):
        self.name, self.tmp_path, self.lab, self.root = name, tmp_path, lab, root
        self.flag = tmp_path / "generator-fails"
        self.filler = None

    def _tmpfs_copy(self, where, size):
        """A tmpfs of `size` over `where`, holding a copy of what was there."""
        saved = self.tmp_path / ("saved-" + where.name)
        subprocess.run(["cp", "-a", f"{where}/.", str(saved)], check=True, timeout=60)
        self.lab.mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", where)
        subprocess.run(["cp", "-a", f"{saved}/.", str(where)], check=True, timeout=60)

    def _fill(self, where):
        self.filler = where / "filler"
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
        finally:
            os.close(fd)

    def apply(self):
        boot, esp = self.root / "boot", self.root / "boot/efi"
        if self.name == "generator-fails":
            self.flag.touch()
        elif self.name == "etc-read-only":
            etc = self.root / "etc"
            self.lab.mount("--bind", etc, etc)
            self.lab.mount("-o", "remount,bind,ro", etc)
        elif self.name == "boot-full":
            self._tmpfs_copy(boot, "4m")
            if esp.exists():
                # The ESP is a file system of its own, with room: only
                # /boot is full.
                self._tmpfs_copy(esp, "4m")
            self._fill(boot)
        elif self.name == "esp-full":
            self._tmpfs_copy(esp, "4m")
            self._fill(esp)
        else:
            raise AssertionError(self.name)

    def remove(self):
        if self.name == "generator-fails":
            self.flag.unlink()
        elif self.name == "etc-read-only":
            self.lab.umount(self.root / "etc")
        else:
            # The disk has room again; the tmpfs stays until teardown.
            self.filler.unlink()
            self.filler = None


# (flow, fault, edit). Every pair of a flow and a fault that can reach one
# of the files its edit writes must refuse the edit; see UNTOUCHED for the
# others.
CASES = [
    ("xcp-ng", "etc-read-only", "hide"), ("xcp-ng", "etc-read-only", "unhide"),
    ("xcp-ng", "boot-full", "hide"), ("xcp-ng", "boot-full", "unhide"),
    ("grub-mkconfig", "generator-fails", "hide"), ("grub-mkconfig", "generator-fails", "unhide"),
    ("grub-mkconfig", "etc-read-only", "hide"), ("grub-mkconfig", "etc-read-only", "unhide"),
    ("grub-mkconfig", "boot-full", "hide"), ("grub-mkconfig", "boot-full", "unhide"),
    ("xen-efi", "etc-read-only", "hide"), ("xen-efi", "etc-read-only", "unhide"),
    ("xen-efi", "boot-full", "hide"), ("xen-efi", "boot-full", "unhide"),
    ("xen-efi", "esp-full", "hide"), ("xen-efi", "esp-full", "unhide"),
]
# The edits a fault cannot touch, and the one file they change:
# - the xcp-ng flow edits grub.cfg alone and writes nothing under /etc
#   (no drop-in, no early-load files: XCP-ng's xen-pciback is built in);
# - an unhide on xen-efi writes xen.cfg on the ESP alone: the early-load
#   files (softdep, initramfs module list) and so the initramfs are kept
#   as they are (xen-pciback loaded early with nothing to hide is
#   harmless), so neither a read-only /etc nor a full /boot (the ESP being
#   a file system of its own, with room) can stop it.
UNTOUCHED = {
    ("xcp-ng", "etc-read-only", "hide"): "boot/grub/grub.cfg",
    ("xcp-ng", "etc-read-only", "unhide"): "boot/grub/grub.cfg",
    ("xen-efi", "etc-read-only", "unhide"): "boot/efi/EFI/xen/xen.cfg",
    ("xen-efi", "boot-full", "unhide"): "boot/efi/EFI/xen/xen.cfg",
}


def _case_id(case):
    flow, fault, edit = case
    return f"{flow}-{fault}" + ("-unhide" if edit == "unhide" else "")


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_a_refused_edit_leaves_every_file_as_it_was(tmp_path, lab, case):
    """With a fault the edit cannot get past (a failing generator, /etc
    read-only, /boot or the ESP full), a hide (or, after a hide and a
    reboot, an unhide) through the SDK fails with a XenAPI error, every
    file under /boot and /etc is byte-identical and no journal or
    temporary file is left. The fault removed, the same edit succeeds and
    a mock reboot makes it take effect."""
    flow, fault, edit = case
    _skip_unless_possible(flow, mounts=True)
    started = time.monotonic()
    root = tmp_path / "root"
    command = None
    if fault == "generator-fails":
        # The real generator, or (while the flag file exists) one that
        # fails as grub-mkconfig does when it cannot write its output.
        wrapper = tmp_path / "switchable-mkconfig"
        wrapper.write_text(f'#!/bin/sh\nif [ -e "{tmp_path}/generator-fails" ]; then\n'
                           f"  echo '{FAULT_MESSAGE}' >&2\n  exit 1\nfi\nexec \"{MKCONFIG}\" \"$@\"\n")
        wrapper.chmod(0o755)
        command = f"{wrapper} {root} -o {root}/boot/grub/grub.cfg"
    d = _host(tmp_path, flow, command)
    lab.daemons.append(d.start())
    s = d.session("admin")
    ref = _pcis(s)[GPU]
    if edit == "unhide":
        assert s.xenapi.PCI.disable_dom0_access(ref) == "disable_on_reboot"
        s = _reboot(d, s)
        ref = _pcis(s)[GPU]
        assert s.xenapi.PCI.get_dom0_access_status(ref) == "disabled"
    call = s.xenapi.PCI.disable_dom0_access if edit == "hide" else s.xenapi.PCI.enable_dom0_access
    status_before = s.xenapi.PCI.get_dom0_access_status(ref)
    answer = "disable_on_reboot" if edit == "hide" else "enable_on_reboot"
    booted = "disabled" if edit == "hide" else "enabled"

    f = Fault(fault, tmp_path, lab, root)
    f.apply()
    exclude = {f.filler} if f.filler else set()
    before = _snapshot(root, exclude)
    if case in UNTOUCHED:
        # The fault cannot reach what this edit writes (see UNTOUCHED): it
        # must succeed.
        assert call(ref) == answer
        changed = _differences(before, _snapshot(root, exclude))
        assert changed == [UNTOUCHED[case]], changed
        print(f"\n{flow} {edit} with {fault}: succeeded, as it must (it changed only {changed})")
    else:
        with pytest.raises(XenAPI.Failure) as refused:
            call(ref)
        details = refused.value.details
        print(f"\n{flow} {edit} with {fault}: refused: {details}")
        assert details[0] == "BOOT_CONFIG_UNAVAILABLE", details
        if fault == "generator-fails":
            assert "test fault" in details[1], details
        # The answer says why, as the OS said it.
        if fault == "etc-read-only":
            assert "read-only" in details[1].lower(), details
        if fault in ("boot-full", "esp-full"):
            assert "space" in details[1].lower(), details
        after = _snapshot(root, exclude)
        changed = _differences(before, after)
        assert changed == [], f"changed by the refused {edit}: {changed}"
        assert _leftovers(root) == [], _leftovers(root)
        assert _journals(root) == []
        assert s.xenapi.PCI.get_dom0_access_status(ref) == status_before

    f.remove()
    assert call(ref) == answer
    assert _leftovers(root) == [], _leftovers(root)
    s = _reboot(d, s)
    assert s.xenapi.PCI.get_dom0_access_status(_pcis(s)[GPU]) == booted
    print(f"{flow} {edit} with {fault}: {time.monotonic() - started:.1f} s")
