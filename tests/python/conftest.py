"""Fixtures: a real pcipassd on a mock host, driven by the unmodified
Python XenAPI SDK over TCP and over its Unix socket."""

import itertools
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import XenAPI

REPO = Path(__file__).resolve().parents[2]
BIN_DIR = Path(os.environ.get("PCIPASS_BIN_DIR", REPO / "target" / "debug"))
_sock_counter = itertools.count()


def binary(name):
    path = BIN_DIR / name
    if not path.exists():
        raise RuntimeError(f"{path} is missing: run `cargo build` first")
    return str(path)


def stop_process(proc):
    """SIGTERM, then SIGKILL after 20 s."""
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run(*args, stdin=None, check=True):
    return subprocess.run(args, input=stdin, capture_output=True, text=True, check=check, timeout=60)


class Daemon:
    """One pcipassd process with its state directory and mock host."""

    def __init__(self, workdir, backend="native", extra_args=()):
        self.workdir = Path(workdir)
        self.root = self.workdir / "root"
        self.state = self.workdir / "state"
        # The SDK's Unix transport turns '_' in the host part into '/', so
        # the socket path must not contain underscores.
        self.sockdir = Path(f"/tmp/pcipass-test-{os.getpid()}-{next(_sock_counter)}")
        self.sockdir.mkdir(parents=True, exist_ok=True)
        self.socket = self.sockdir / "xapi.sock"
        self.backend = backend
        self.extra_args = list(extra_args)
        self.proc = None
        self.url = None
        self.passwords = {}
        if not self.root.exists():
            run(binary("pcipass"), "mock-host", "create", str(self.root), "--profile", "demo")

    def add_user(self, name, role, password=None):
        password = password or f"{name}-secret"
        run(binary("pcipass"), "user-add", name, "--role", role, "--state-dir", str(self.state), stdin=password + "\n")
        self.passwords[name] = password
        return password

    def args(self):
        args = [
            binary("pcipassd"),
            "--root", str(self.root),
            "--state-dir", str(self.state),
            "--listen", "127.0.0.1:0",
            "--unix", str(self.socket),
            "--boot-backend", self.backend,
            "--watch-interval-ms", "100",
        ]
        if self.backend == "exec":
            args += ["--xen-cmdline", binary("xen-cmdline")]
        return args + self.extra_args

    def start(self):
        self.log = open(self.workdir / "pcipassd.log", "a")
        self.proc = subprocess.Popen(self.args(), stdout=subprocess.PIPE, stderr=self.log, text=True)
        deadline = time.time() + 60
        seen_unix = False
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("pcipassd exited: " + (self.workdir / "pcipassd.log").read_text()[-2000:])
            fp = re.search(r"fingerprint (\S+)", line)
            if fp:
                self.fingerprint = fp.group(1)
            m = re.search(r"listening on (https?://\S+)", line)
            if m:
                self.url = m.group(1).rstrip("/") + "/"
            if "listening on unix:" in line:
                seen_unix = True
            if self.url and seen_unix:
                return self
        raise RuntimeError("pcipassd did not start listening")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            stop_process(self.proc)
        self.proc = None

    def restart(self):
        self.stop()
        return self.start()

    def session(self, user="admin", url=None):
        s = XenAPI.Session(url or self.url)
        s.xenapi.login_with_password(user, self.passwords[user], "2.21", "pytest")
        return s

    def local_session(self):
        s = XenAPI.Session("http://" + str(self.socket).replace("/", "_") + "/", transport=XenAPI.UDSTransport())
        s.xenapi.login_with_password("root", "", "2.21", "pytest")
        return s

    def xen_cmdline(self, *args, check=True):
        return run(binary("xen-cmdline"), "--root", str(self.root), *args, check=check)

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.sockdir, ignore_errors=True)


def _started(tmp_path, backend="native"):
    d = Daemon(tmp_path, backend=backend)
    d.add_user("admin", "pool-admin")
    d.add_user("operator", "pool-operator")
    d.add_user("reader", "read-only")
    return d.start()


@pytest.fixture
def daemon(tmp_path):
    d = _started(tmp_path)
    yield d
    d.cleanup()


@pytest.fixture(params=["native", "exec"])
def any_backend_daemon(tmp_path, request):
    d = _started(tmp_path, request.param)
    yield d
    d.cleanup()


def pci_ref(session, pci_id):
    """The PCI object's reference for the function `pci_id`."""
    return next(ref for ref, rec in session.xenapi.PCI.get_all_records().items()
                if rec["pci_id"] == pci_id)


def failure(call, *args):
    """The ErrorDescription of a call that must fail."""
    with pytest.raises(XenAPI.Failure) as info:
        call(*args)
    return info.value.details
