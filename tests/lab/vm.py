"""One lab VM: a Debian 12 + Xen 4.17 disk booted by QEMU through SeaBIOS
and the disk's own GRUB, with the emulated PCI functions dom0 drives, and
the ways in: ssh for commands, the forwarded pcipassd port for the XenAPI.

QEMU's user network runs with `restrict=on`: the guest reaches nothing
but the ports forwarded from 127.0.0.1 of this machine.
"""

import json
import os
import pathlib
import shlex
import signal
import socket
import subprocess
import time

MGMT_MAC = "52:54:00:12:34:56"

# The emulated functions on q35's root bus, by slot. 00:01.0 is QEMU's
# standard VGA (the console dom0 draws on), 00:1f.x the ICH9 chipset
# (LPC, AHCI with the boot disk, SMBus).
MGMT_NIC = "0000:00:03.0"  # e1000e, dom0's management NIC (DHCP)
NIC = "0000:00:04.0"  # e1000e, a second NIC: a passthrough candidate
USB = "0000:00:05.0"  # qemu-xhci USB controller
HDA = "0000:00:06.0"  # ich9-intel-hda sound card
GPU = "0000:00:07.0"  # bochs-display, a display device besides the console's


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VmError(Exception):
    pass


class Vm:
    """A QEMU process and the guest inside it. The serial console (GRUB,
    Xen and dom0 of every boot) goes to `serial_log`."""

    def __init__(self, image_dir, work_dir, disk, accel="tcg", firmware=None, drives=()):
        self.image_dir = pathlib.Path(image_dir)
        self.work = pathlib.Path(work_dir)
        self.work.mkdir(parents=True, exist_ok=True)
        self.disk = pathlib.Path(disk)
        self.accel = accel
        # EFI firmware: (code, vars) pflash images, for OVMF; None boots
        # SeaBIOS.
        self.firmware = firmware
        # Raw disks after the boot disk, on the next AHCI ports (dom0's
        # sdb, sdc, ...), e.g. an ESP.
        self.drives = list(drives)
        # vCPUs (TCG threads): 2 for a VM alone; lab.py gives each of two
        # VMs running at once 1, so that they never ask for more threads
        # than the machine has cores.
        self.cpus = 2
        self.key = self.image_dir / "id_ed25519"
        self.password = (self.image_dir / "root-password").read_text().strip()
        self.ssh_port = free_port()
        self.api_port = free_port()
        self.serial_log = self.work / "serial.log"
        self.qmp_path = self.work / "qmp.sock"
        self.proc = None

    def qemu_argv(self):
        accel = "kvm" if self.accel == "kvm" else "tcg,thread=multi"
        # Under EFI firmware the NICs carry no option ROM: with iPXE's EFI
        # driver OVMF would add PXE boot options and may try the network
        # (DHCP and TFTP timeouts) before the disks. dom0 drives the NICs
        # the same either way.
        rom = ",romfile=" if self.firmware else ""
        # Under TCG, QEMU 7.2's `-cpu max` offers SMAP, and Xen 4.17's
        # first write of a bounce frame to dom0's stack then faults: dom0
        # dies before its first line ("d0v0 Unhandled: vec 14, #PF[0001]"
        # from create_bounce_frame). Without SMAP and SMEP it boots.
        cpu = "max" if self.accel == "kvm" else "max,smap=off,smep=off"
        argv = [
            "qemu-system-x86_64",
            "-machine", "q35", "-cpu", cpu, "-accel", accel,
            "-smp", str(self.cpus), "-m", "2560",
            "-display", "none", "-monitor", "none",
            "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
            "-serial", f"file:{self.serial_log}",
            "-drive", f"file={self.disk},format=qcow2,if=none,id=disk0",
            "-device", "ide-hd,drive=disk0,bus=ide.0",
            "-netdev",
            f"user,id=mgmt,restrict=on,"
            f"hostfwd=tcp:127.0.0.1:{self.ssh_port}-:22,"
            f"hostfwd=tcp:127.0.0.1:{self.api_port}-:8443",
            "-device", f"e1000e,netdev=mgmt,mac={MGMT_MAC},addr=0x3{rom}",
            "-netdev", "user,id=spare,restrict=on",
            "-device", f"e1000e,netdev=spare,mac=52:54:00:12:34:57,addr=0x4{rom}",
            "-device", "qemu-xhci,addr=0x5",
            "-audiodev", "none,id=snd0",
            "-device", "ich9-intel-hda,addr=0x6",
            "-device", "hda-duplex,audiodev=snd0",
            "-device", "bochs-display,addr=0x7",
        ]
        for n, drive in enumerate(self.drives, start=1):
            argv += [
                "-drive", f"file={drive},format=raw,if=none,id=disk{n}",
                "-device", f"ide-hd,drive=disk{n},bus=ide.{n}",
            ]
        if self.firmware:
            code, vars_ = self.firmware
            argv += [
                "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
                "-drive", f"if=pflash,format=raw,unit=1,file={vars_}",
            ]
        return argv

    def start(self):
        self.qmp_path.unlink(missing_ok=True)
        log = open(self.work / "qemu.log", "ab")
        self.proc = subprocess.Popen(
            self.qemu_argv(), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            start_new_session=True,
        )
        self.started = time.monotonic()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        """Power the VM off, whatever state it is in."""
        self.drop_shared()
        if not self.alive():
            return
        try:
            self.qmp("quit")
        except OSError:
            pass
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def qmp(self, command):
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(str(self.qmp_path))
            f = s.makefile("rw")
            f.readline()
            for cmd in ("qmp_capabilities", command):
                f.write(json.dumps({"execute": cmd}) + "\n")
                f.flush()
                f.readline()

    # Commands in dom0.

    def control_path(self):
        return f"/tmp/pcipass-lab-{os.getpid()}-{self.ssh_port}.ssh"

    def ssh_argv(self, command, shared=False):
        # shared: through one master connection (ControlMaster) kept
        # across commands. A new ssh connection to the busy VM took 4-75 s
        # (key exchange under TCG), one through the master 0.2 s.
        sharing = [
            "-o", "ControlMaster=auto", "-o", f"ControlPath={self.control_path()}",
            "-o", "ControlPersist=300",
        ] if shared else []
        return [
            "ssh", *sharing, "-i", str(self.key), "-p", str(self.ssh_port),
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR", "-o", "BatchMode=yes", "-o", "ConnectTimeout=15",
            "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=8",
            "root@127.0.0.1", command,
        ]

    def drop_shared(self):
        """End the shared ssh connection (before a reboot or a power-off:
        a connection to a dom0 that went away would hold later commands
        until its keepalives give up); the next run makes a new one."""
        path = self.control_path()
        if os.path.exists(path):
            subprocess.run(
                ["ssh", "-o", f"ControlPath={path}", "-p", str(self.ssh_port), "-O", "exit",
                 "root@127.0.0.1"],
                capture_output=True, timeout=30,
            )
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

    def run(self, command, check=True, timeout=1800):
        """Run a shell command in dom0 (through the shared connection);
        its stdout, or VmError."""
        try:
            p = subprocess.run(
                self.ssh_argv(command, shared=True), capture_output=True, text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as e:
            raise VmError(f"{command!r}: no answer in {timeout} s") from e
        if check and p.returncode != 0:
            raise VmError(
                f"{command!r} exited {p.returncode}: {p.stderr.strip() or p.stdout.strip()}"
            )
        return p.stdout

    def try_run(self, command, timeout=60):
        try:
            p = subprocess.run(
                self.ssh_argv(command), capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            return None
        return p.stdout if p.returncode == 0 else None

    def copy_in(self, local, remote):
        subprocess.run(
            ["scp", "-q", "-i", str(self.key), "-P", str(self.ssh_port),
             "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
             "-o", "LogLevel=ERROR", "-o", "BatchMode=yes",
             str(local), f"root@127.0.0.1:{remote}"],
            check=True, timeout=600,
        )

    def boot_id(self):
        out = self.try_run("cat /proc/sys/kernel/random/boot_id", timeout=40)
        return out.strip() if out else None

    def wait_booted(self, old_boot_id=None, timeout=1200):
        """Wait until dom0 answers over ssh with a boot id other than
        `old_boot_id`; the seconds it took. A QEMU that exits or a timeout
        is a VmError naming the serial log."""
        self.drop_shared()
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if not self.alive():
                raise VmError(f"QEMU exited ({self.proc.returncode}); see {self.serial_log}")
            bid = self.boot_id()
            if bid and bid != old_boot_id:
                return time.monotonic() - started
            time.sleep(5)
        raise VmError(f"no boot within {timeout} s; see {self.serial_log}")

    def sh(self, *words):
        return " ".join(shlex.quote(w) for w in words)
