"""The xen-efi flow on the real host (issue 22): the lab disk booted by
OVMF (Debian's `ovmf`) through Xen's own EFI loader, Debian's xen.efi on
an ESP with a xen.cfg, no GRUB on the way; pcipass hides the second NIC
and gives it back, each through a real reboot.

The ESP is a second disk made here at run time, on this machine, without
loop devices or mounts: the kernel, initramfs and xen.efi are read out of
the cached image (`qemu-img convert` of its root partition, `debugfs
dump`), the FAT is made by `mkfs.vfat` on a partition-sized file, filled
with `mcopy`, and `dd` puts it at its partition's offset in a disk
`sfdisk` partitions (one MBR partition of type EF). It holds Xen twice:

- `\\EFI\\BOOT\\BOOTX64.EFI` with `BOOTX64.cfg`: the removable-media path
  OVMF's first boot takes (fresh variables, no boot entry yet);
- `\\EFI\\xen\\xen.efi` with `xen.cfg`: what the boot entry dom0 creates
  with efibootmgr names, so that from the second boot on the firmware's
  `BootCurrent` names xen.efi, as on an operator's Xen EFI host.

Xen's EFI loader reads `<its own name>.cfg` from its own directory and
loads `kernel=` and `ramdisk=` from there too (docs/misc/efi.pandoc), so
each directory has its own copy of vmlinuz and initrd.img.

Run by `scripts/lab` (`--cases xen-efi`, one of the default three) on a
VM of its own, once the SeaBIOS VM of the other cases is powered off.
"""

import json
import os
import pathlib
import re
import shutil
import subprocess
import tempfile
import time

from lab import (
    NATIVE,
    boot_step,
    check,
    check_states,
    install_step,
    open_step,
    reboot_step,
)
from vm import NIC, Vm

OVMF_CODE = pathlib.Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = pathlib.Path("/usr/share/OVMF/OVMF_VARS_4M.fd")

ESP_MIB = 200  # the FAT partition: two copies of Xen, kernel and initramfs
ESP_LABEL = "LABESP"
ESP_DIR = "/boot/efi"
XEN_CFG = f"{ESP_DIR}/EFI/xen/xen.cfg"
FALLBACK_CFG = f"{ESP_DIR}/EFI/BOOT/BOOTX64.cfg"
ESP_INITRD = f"{ESP_DIR}/EFI/xen/initrd.img"

# Xen's section: the console and dom0 size of the lab's GRUB entries
# (grub-lab.cfg), the dom0 root by the label build-image gives it.
XEN_CFG_TEXT = """\
[global]
default=debian

[debian]
options=dom0_mem=1024M,max:1024M console=com1 com1=115200,8n1
kernel=vmlinuz root=LABEL=labroot ro console=hvc0
ramdisk=initrd.img
"""


def efi_vm(image_dir, vm_dir, disk, accel="tcg"):
    """A Vm booting OVMF (code read-only, a private writable copy of the
    variable store) with the ESP disk (built by the first step) as
    dom0's sdb."""
    vm_dir = pathlib.Path(vm_dir)
    vm_dir.mkdir(parents=True, exist_ok=True)
    vars_copy = vm_dir / "OVMF_VARS_4M.fd"
    if OVMF_VARS.exists():
        shutil.copyfile(OVMF_VARS, vars_copy)
    return Vm(
        image_dir, vm_dir, disk, accel=accel,
        firmware=(OVMF_CODE, vars_copy), drives=[vm_dir / "esp.raw"],
    )


def _run(argv, input=None):
    """A command on this machine; its stdout, or StepFailed with its stderr."""
    argv = [str(a) for a in argv]
    p = subprocess.run(
        argv, input=input, capture_output=True, text=True,
        env={**os.environ, "MTOOLS_SKIP_CHECK": "1"},
    )
    check(p.returncode == 0, f"{' '.join(argv)} exited {p.returncode}: {p.stderr.strip()}")
    return p.stdout


def image_boot_files(image_dir, work):
    """Copy /boot/vmlinuz-*, /boot/initrd.img-* and /boot/xen-*.efi out of
    the cached image into `work`, read-only: its first partition through
    qemu-img's raw driver (offset and size from the MBR), then `debugfs
    dump`. Returns {"vmlinuz": path, "initrd.img": path, "xen.efi": path}."""
    base = pathlib.Path(image_dir, "base.qcow2").resolve()
    src = f"file.driver=qcow2,file.file.driver=file,file.file.filename={base},file.file.locking=off"
    mbr = work / "mbr.bin"
    _run(["qemu-img", "dd", "-f", "qcow2", "-O", "raw", "bs=512", "count=1",
          f"if={base}", f"of={mbr}"])
    part = json.loads(_run(["sfdisk", "-J", mbr]))["partitiontable"]["partitions"][0]
    root = work / "root.img"
    _run(["qemu-img", "convert", "-O", "raw", "--image-opts",
          f"driver=raw,offset={part['start'] * 512},size={part['size'] * 512},{src}", root])
    try:
        names = [
            f.split("/")[5]
            for f in _run(["debugfs", "-R", "ls -p /boot", root])
            .splitlines() if f.count("/") >= 6
        ]

        def newest(pattern):
            found = sorted(n for n in names if re.fullmatch(pattern, n))
            check(found, f"no /boot/{pattern} in the image (has {names})")
            return found[-1]

        files = {}
        for want, pattern in (
            ("vmlinuz", r"vmlinuz-.*"),
            ("initrd.img", r"initrd\.img-.*"),
            ("xen.efi", r"xen-.*\.efi"),
        ):
            name = newest(pattern)
            files[want] = work / name
            _run(["debugfs", "-R", f"dump /boot/{name} {work / name}", root])
            check(files[want].stat().st_size > 0, f"debugfs dumped an empty /boot/{name}")
    finally:
        root.unlink(missing_ok=True)
    return files


def build_esp(image_dir, esp):
    """The ESP disk at `esp` (see the module documentation); a short fact."""
    esp = pathlib.Path(esp)
    with tempfile.TemporaryDirectory(dir=esp.parent) as tmp:
        work = pathlib.Path(tmp)
        files = image_boot_files(image_dir, work)
        cfg = work / "xen.cfg"
        cfg.write_text(XEN_CFG_TEXT)
        fat = work / "fat.img"
        # -h: the FAT's hidden sectors, its partition's start (1 MiB).
        _run(["mkfs.vfat", "-F", "32", "-n", ESP_LABEL, "-h", "2048", "-C", fat,
              ESP_MIB * 1024])
        _run(["mmd", "-i", fat, "::/EFI", "::/EFI/xen", "::/EFI/BOOT"])
        for d, loader in (("xen", "xen.efi"), ("BOOT", "BOOTX64.EFI")):
            stem = loader.rsplit(".", 1)[0]
            _run(["mcopy", "-i", fat, files["xen.efi"], f"::/EFI/{d}/{loader}"])
            _run(["mcopy", "-i", fat, cfg, f"::/EFI/{d}/{stem}.cfg"])
            _run(["mcopy", "-i", fat, files["vmlinuz"], f"::/EFI/{d}/vmlinuz"])
            _run(["mcopy", "-i", fat, files["initrd.img"], f"::/EFI/{d}/initrd.img"])
        listing = _run(["mdir", "-i", fat, "-/", "-b", "::/EFI"]).split()
        esp.unlink(missing_ok=True)
        with open(esp, "wb") as f:
            f.truncate((ESP_MIB + 2) * 1024 * 1024)
        _run(["sfdisk", "-q", "--label", "dos", esp],
             input=f"start=2048, size={ESP_MIB * 2048}, type=ef\n")
        _run(["dd", f"if={fat}", f"of={esp}", "bs=1M", "seek=1", "conv=notrunc,sparse",
              "status=none"])
        names = {k: v.name for k, v in files.items()}
    return (
        f"{esp.name}: MBR, partition 1 type EF, FAT32 {ESP_LABEL}; from the image "
        f"{names['xen.efi']}, {names['vmlinuz']}, {names['initrd.img']}; "
        + " ".join(p.split("::", 1)[-1] for p in listing)
    )


def ssh_reboot(vm):
    """`systemctl reboot` in dom0 (before pcipass is installed); the
    seconds until dom0 answers with a new boot id."""
    old = vm.boot_id()
    vm.run("systemctl reboot", check=False, timeout=60)
    return vm.wait_booted(old)


def efi_entries(vm):
    """`efibootmgr -v` in dom0: (BootCurrent, {number: line})."""
    out = vm.run("efibootmgr -v")
    current = re.search(r"^BootCurrent:\s*([0-9A-Fa-f]{4})", out, re.M)
    entries = {
        m.group(1).upper(): m.group(0)
        for m in re.finditer(r"^Boot([0-9A-Fa-f]{4})\*? .*$", out, re.M)
    }
    return (current.group(1).upper() if current else None), entries, out


def kernel_line(text, section="debian"):
    """The kernel= entry of `[section]` in a xen.cfg (plain files as the
    lab writes them: no tabs, no comments)."""
    inside = False
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("["):
            inside = s.startswith(f"[{section}]")
        elif inside and s.startswith("kernel="):
            return s
    return None


def xen_efi_steps(report, vm, dom0, deb, debs_dir, image_dir):
    esp = vm.drives[0]
    release = {}

    def build():
        for tool in ("mkfs.vfat", "mcopy", "sfdisk", "debugfs", "qemu-img"):
            check(shutil.which(tool), f"{tool} is not installed (scripts/lab installs it)")
        check(OVMF_CODE.exists() and OVMF_VARS.exists(), f"no {OVMF_CODE} (package ovmf)")
        return build_esp(image_dir, esp)

    def boot_fallback():
        started = time.monotonic()
        fact = boot_step(vm, " (OVMF, \\EFI\\BOOT\\BOOTX64.EFI, Xen EFI)")()
        report.boots.append(("xen-efi first boot, removable-media path", time.monotonic() - started))
        efi = vm.run("ls /sys/firmware/efi", check=False).split()
        check(efi, "no /sys/firmware/efi in dom0")
        line = dom0.cmdline()
        check("root=LABEL=labroot" in line, f"dom0 did not boot BOOTX64.cfg's line: {line!r}")
        release["r"] = vm.run("uname -r").strip()
        return f"{fact}; /sys/firmware/efi: {' '.join(efi)}; /proc/cmdline {line!r}"

    def esp_and_entry():
        vm.run(
            f"set -e; mkdir -p {ESP_DIR};"
            f" echo 'LABEL={ESP_LABEL} {ESP_DIR} vfat umask=0077 0 1' >> /etc/fstab;"
            f" mount {ESP_DIR}; test -f {XEN_CFG}"
        )
        # efibootmgr is not in the image: its package (and libpopt0) from
        # this machine's apt sources, kept in the image's package cache.
        wanted = ("efibootmgr", "libpopt0", "libefiboot1", "libefivar1")
        for name in wanted:
            if not sorted(debs_dir.glob(f"{name}_*.deb")):
                subprocess.run(["apt-get", "download", "-q", name], cwd=debs_dir, check=True,
                               capture_output=True)
        pkgs = [sorted(debs_dir.glob(f"{name}_*.deb"))[-1] for name in wanted]
        vm.run("mkdir -p /root/efidebs")
        for p in pkgs:
            vm.copy_in(p, f"/root/efidebs/{p.name}")
        vm.run("dpkg -i /root/efidebs/*.deb 2>&1")
        disk = vm.run(f"lsblk -no PKNAME $(findmnt -no SOURCE {ESP_DIR})").strip()
        part = vm.run(f"cat /sys/class/block/$(basename $(findmnt -no SOURCE {ESP_DIR}))/partition")
        out = vm.run(
            f"efibootmgr -c -d /dev/{disk} -p {part.strip()} -L Xen -l '\\EFI\\xen\\xen.efi' 2>&1"
        )
        check(re.search(r"Xen", out), f"efibootmgr -c: {out!r}")
        current, entries, raw = efi_entries(vm)
        xen = [n for n, line in entries.items() if "xen.efi" in line.lower()]
        check(xen, f"no boot entry names xen.efi: {raw!r}")
        order = re.search(r"^BootOrder: (\S+)", raw, re.M)
        return (
            f"ESP /dev/{disk}{part.strip()} at {ESP_DIR} (fstab); BootCurrent {current} "
            f"({entries.get(current, '?').strip()}); new entry {entries[xen[0]].strip()}; "
            f"BootOrder {order.group(1) if order else '?'}"
        )

    def reboot_into_entry():
        took = ssh_reboot(vm)
        report.boots.append(("xen-efi into the Xen boot entry", took))
        current, entries, raw = efi_entries(vm)
        line = entries.get(current, "")
        check(
            "\\efi\\xen\\xen.efi" in line.lower().replace("/", "\\"),
            f"BootCurrent {current} is not the Xen entry: {raw!r}",
        )
        check(vm.run("cat /sys/hypervisor/type").strip() == "xen", "dom0 is not on Xen")
        return f"new boot after {took:.0f} s; BootCurrent {current}: {line.strip()}"

    def flow_named():
        log = vm.run("journalctl -u pcipassd -b 0 --no-pager -o cat | grep -i 'flow' || true")
        check("xen-efi" in log, f"pcipassd's log does not name the xen-efi flow: {log!r}")
        lines = [line for line in log.splitlines() if "xen-efi" in line]
        return lines[-1].strip()

    def nic_enabled():
        st = dom0.status(NIC)
        drv = dom0.driver(NIC)
        check(st == "enabled" and drv == NATIVE[NIC], f"{NIC} is {st} with driver {drv}")
        return f"{NIC}: {st}, driver {drv}"

    def disable():
        t = time.monotonic()
        st = dom0.x.PCI.disable_dom0_access(dom0.pci(NIC))
        check(st == "disable_on_reboot", f"PCI.disable_dom0_access({NIC}) answered {st}")
        check(dom0.status(NIC) == "disable_on_reboot", f"status {dom0.status(NIC)}")
        return f"disable_on_reboot after {time.monotonic() - t:.0f} s"

    def xen_cfg_edited():
        text = vm.run(f"cat {XEN_CFG}")
        line = kernel_line(text)
        check(line and NIC in " ".join(dom0.hide_on(line)), f"xen.cfg's kernel= line: {line!r}")
        rest = text.replace(line, kernel_line(XEN_CFG_TEXT))
        check(rest == XEN_CFG_TEXT, f"xen.cfg changed elsewhere: {text!r}")
        fallback = vm.run(f"cat {FALLBACK_CFG}")
        softdeps = vm.run("cat /etc/modprobe.d/pcipass.conf 2>/dev/null || true")
        check(
            re.search(r"softdep e1000e pre:.*xen.pciback", softdeps),
            f"no softdep for e1000e in /etc/modprobe.d/pcipass.conf: {softdeps!r}",
        )
        return (
            f"xen.cfg {line!r}, every other byte kept; BOOTX64.cfg untouched "
            f"({fallback == XEN_CFG_TEXT}); /etc/modprobe.d/pcipass.conf {softdeps.strip()!r}"
        )

    def initramfs_that_boots():
        # update-initramfs rebuilt /boot/initrd.img-*; Xen's EFI loader
        # boots ramdisk= of xen.cfg's section, the copy on the ESP.
        r = release["r"]
        boot_img = f"/boot/initrd.img-{r}"
        facts = {}
        for label, path in (("/boot", boot_img), ("ESP", ESP_INITRD)):
            listed = vm.run(
                f"lsinitramfs {path} | grep -E 'xen-pciback|modprobe.d/pcipass' || true"
            ).split()
            stat = vm.run(f"stat -c '%s bytes, modified %y' {path}").strip()
            facts[label] = (listed, stat)
        same = vm.run(f"cmp -s {boot_img} {ESP_INITRD} && echo same || echo differ").strip()
        summary = "; ".join(
            f"{label} {path_stat}: {', '.join(listed) or 'no xen-pciback, no softdeps'}"
            for label, (listed, path_stat) in facts.items()
        )
        check(
            any("xen-pciback.ko" in f for f in facts["/boot"][0]),
            f"the rebuilt {boot_img} lacks xen-pciback: {summary}",
        )
        check(
            any("xen-pciback.ko" in f for f in facts["ESP"][0])
            and any("pcipass.conf" in f for f in facts["ESP"][0]),
            f"the initramfs Xen EFI boots ({ESP_INITRD}, ramdisk= of xen.cfg) was not "
            f"rebuilt ({same} from {boot_img}): {summary}",
        )
        return summary

    def host_facts():
        """What the real boot shows, whatever pcipass says."""
        cmdline = dom0.cmdline()
        drv = vm.run(f"readlink -f /sys/bus/pci/devices/{NIC}/driver || echo none").strip()
        loaded = vm.run("lsmod | grep -E '^(xen_pciback|e1000e) ' || true").strip()
        msgs = vm.run(
            "journalctl -k -b 0 --no-pager -o cat | grep -iE 'pciback|0000:00:04.0' | head -8"
            " || true"
        ).strip()
        return (
            f"/proc/cmdline {cmdline!r}; {NIC} driver -> {drv}; lsmod {loaded!r}; "
            f"kernel log {msgs!r}; pcipass says {dom0.status(NIC)}"
        )

    def enable():
        # What pcipass should answer follows the real host: a NIC that
        # pciback holds comes back on the next boot (enable_on_reboot); one
        # its native driver still holds was never hidden (enabled).
        drv = dom0.driver(NIC)
        want = "enable_on_reboot" if drv == "pciback" else "enabled"
        st = dom0.x.PCI.enable_dom0_access(dom0.pci(NIC))
        line = kernel_line(vm.run(f"cat {XEN_CFG}"))
        check(st == want, f"PCI.enable_dom0_access answered {st}; driver {drv}, want {want}")
        check(NIC not in dom0.hide_on(line or ""), f"xen.cfg still hides it: {line!r}")
        return f"{st} (driver {drv}); xen.cfg {line!r}"

    report.begin("xen-efi")
    report.step("build the ESP disk (sfdisk, mkfs.vfat, mcopy, dd; no loop, no mount)", build)
    report.step("boot through OVMF's removable-media path (BOOTX64.EFI, Xen EFI)", boot_fallback)
    report.step("ESP at /boot/efi, efibootmgr, a boot entry for \\EFI\\xen\\xen.efi", esp_and_entry)
    report.step("reboot: BootCurrent is the Xen entry", reboot_into_entry)
    report.step("install the package as the README says", install_step(vm, deb))
    report.step("listen for clients, log in as root (PAM, TLS)", open_step(vm, dom0))
    report.step("pcipassd's log names the xen-efi flow", flow_named)
    report.step(f"{NIC} enabled, {NATIVE[NIC]} bound", nic_enabled)
    report.step("PCI.disable_dom0_access: disable_on_reboot", disable)
    report.step("xen.cfg's kernel= line hides it, softdep written", xen_cfg_edited, critical=False)
    report.step(
        "the initramfs Xen EFI boots (the ESP's) has xen-pciback and the softdeps",
        initramfs_that_boots, critical=False,
    )
    report.step("host.reboot", reboot_step(report, vm, dom0, "xen-efi after disable"))
    report.step("what the real host shows", host_facts, critical=False)
    report.step(
        "after the reboot: disabled, pciback bound, assignable",
        check_states(vm, dom0, {NIC: "disabled"}, {}), critical=False,
    )
    report.step("PCI.enable_dom0_access, xen.cfg back", enable)
    report.step("host.reboot", reboot_step(report, vm, dom0, "xen-efi after enable"))
    report.step("what the real host shows", host_facts, critical=False)
    report.step(
        f"after the reboot: enabled, {NATIVE[NIC]} bound again",
        check_states(vm, dom0, {NIC: "enabled"}, {}), critical=False,
    )
