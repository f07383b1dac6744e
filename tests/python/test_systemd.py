"""pcipassd under systemd, by the protocols systemd speaks: readiness
(`Type=notify`: READY=1 on $NOTIFY_SOCKET once every listener accepts,
RELOADING=1/READY=1 around a SIGHUP reload, STOPPING=1 at SIGTERM) and the
journal (native protocol datagrams on /run/systemd/journal/socket when
stderr is the journal stream $JOURNAL_STREAM names). systemd itself does
not run in the test machine; its sockets are played by the test."""

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import XenAPI

from conftest import Daemon, failure, pci_ref

JOURNAL_DIR = Path("/run/systemd/journal")


def _notify_socket(tmp_path):
    path = str(tmp_path / f"notify-{uuid.uuid4().hex[:8]}")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(30)
    return sock, path


def _recv_until(sock, word):
    got = []
    while True:
        msg = sock.recv(4096).decode()
        got.append(msg)
        if word in msg.split("\n"):
            return got


def test_ready_reload_and_stopping_on_the_notify_socket(tmp_path):
    sock, path = _notify_socket(tmp_path)
    d = Daemon(tmp_path)
    d.add_user("admin", "pool-admin")
    config = tmp_path / "pcipassd.toml"
    config.write_text('auth = "users"\n')
    # WATCHDOG_USEC as systemd sets it for WatchdogSec= (here 2 s), for
    # this process (WATCHDOG_PID).
    env = dict(os.environ, NOTIFY_SOCKET=path, WATCHDOG_USEC="2000000")
    log = open(tmp_path / "pcipassd.log", "w")
    # WATCHDOG_PID must be the daemon's pid: the shell's, kept by exec.
    proc = subprocess.Popen(["sh", "-c", 'WATCHDOG_PID=$$ exec "$@"', "sh",
                             *map(str, d.args()), "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    try:
        ready = _recv_until(sock, "READY=1")
        url = None
        while url is None:
            line = proc.stdout.readline()
            if line.startswith("listening on http"):
                url = line.split()[-1]
        # Ready means served: the Unix socket answers at once.
        s = d.local_session()
        assert s.xenapi.host.get_all()
        assert any("STATUS=serving" in m for m in ready), ready
        text = (tmp_path / "pcipassd.log").read_text()
        summary = [l for l in text.splitlines() if "serving: boot flow" in l]
        assert len(summary) == 1, text[-2000:]
        for part in ("pcipassd ", "boot flow xcp-ng", "auth users", f"unix:{d.socket}",
                     f"state directory {d.state}"):
            assert part in summary[0], summary[0]

        # Reload: the configuration now says PAM with no group mapped, so
        # the users-file user no longer gets in; local root still does.
        config.write_text('auth = "pam"\n')
        proc.send_signal(signal.SIGHUP)
        got = _recv_until(sock, "READY=1")
        assert any("RELOADING=1" in m for m in got), got
        assert failure(XenAPI.Session(url).xenapi.login_with_password, "admin",
                       d.passwords["admin"], "2.21", "t")[0] == "SESSION_AUTHENTICATION_FAILED"
        assert d.local_session().xenapi.host.get_all()
        assert "SIGHUP: configuration re-read" in (tmp_path / "pcipassd.log").read_text()

        # A configuration that does not parse leaves the old one.
        config.write_text("auth = [\n")
        proc.send_signal(signal.SIGHUP)
        _recv_until(sock, "READY=1")
        assert "configuration not reloaded" in (tmp_path / "pcipassd.log").read_text()

        # The watchdog pings, at half the interval: the period the daemon
        # chose is in its log (no wall-clock bound: a busy machine delays
        # pings, which is systemd's business, not a test failure).
        _recv_until(sock, "WATCHDOG=1")
        _recv_until(sock, "WATCHDOG=1")
        pinging = [l for l in (tmp_path / "pcipassd.log").read_text().splitlines()
                   if "systemd watchdog: pinging" in l]
        assert len(pinging) == 1 and "interval_ms=1000" in pinging[0], pinging

        proc.send_signal(signal.SIGTERM)
        _recv_until(sock, "STOPPING=1")
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()
        d.cleanup()


def test_without_systemd_nothing_is_sent_and_logs_go_to_stderr(tmp_path):
    """No $NOTIFY_SOCKET: the daemon runs as before; $JOURNAL_STREAM that
    does not name stderr (a redirected stderr) keeps the log on stderr."""
    d = Daemon(tmp_path)
    d.add_user("admin", "pool-admin")
    os.environ["JOURNAL_STREAM"] = "1:2"
    try:
        d.start()
    finally:
        del os.environ["JOURNAL_STREAM"]
    try:
        deadline = time.time() + 60  # a hang guard
        while "serving: boot flow" not in (tmp_path / "pcipassd.log").read_text():
            assert time.time() < deadline, "no start-up line on stderr"
            time.sleep(0.05)
    finally:
        d.cleanup()


def _native_fields(datagram):
    """The fields of one journal native-protocol datagram
    (systemd.journal-fields: `KEY=value\n`, or `KEY\n`, a 64-bit
    little-endian length, the value and `\n`)."""
    fields, at = {}, 0
    while at < len(datagram):
        end = datagram.index(b"\n", at)
        line = datagram[at:end]
        if b"=" in line:
            key, value = line.split(b"=", 1)
            at = end + 1
        else:
            key = line
            size = int.from_bytes(datagram[end + 1:end + 9], "little")
            value = datagram[end + 9:end + 9 + size]
            assert datagram[end + 9 + size:end + 10 + size] == b"\n"
            at = end + 10 + size
        fields[key] = value
    return fields


def _why_no_fake_journal():
    if os.geteuid() != 0:
        return "needs root to play journald at /run/systemd/journal/socket"
    if JOURNAL_DIR.exists():
        return "a journald (or its directory) is there: the test does not play it"
    return None


@pytest.mark.skipif(_why_no_fake_journal() is not None, reason=_why_no_fake_journal() or "")
def test_logs_go_to_the_journal_with_their_fields(tmp_path):
    """stderr is the journal stream: every event is a native-protocol
    datagram with MESSAGE (the message and the event's fields as
    key=value), PRIORITY, SYSLOG_IDENTIFIER and the event's own fields
    (F_USER, ...)."""
    made = JOURNAL_DIR.parent if not JOURNAL_DIR.parent.exists() else JOURNAL_DIR
    JOURNAL_DIR.mkdir(parents=True)
    journal = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    journal.bind(str(JOURNAL_DIR / "socket"))
    journal.settimeout(30)
    d = Daemon(tmp_path)
    d.add_user("admin", "pool-admin")
    # stderr is a socket the test holds, and JOURNAL_STREAM names it, as
    # systemd does for StandardError=journal.
    stream_r, stream_w = socket.socketpair()
    st = os.fstat(stream_w.fileno())
    env = dict(os.environ, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")
    proc = subprocess.Popen(d.args(), stdout=subprocess.PIPE, stderr=stream_w.fileno(), text=True, env=env)
    try:
        records = []
        deadline = time.time() + 30
        while time.time() < deadline:
            records.append(journal.recv(65536))
            if any(b"serving: boot flow" in r for r in records):
                break
        # A login, so that an event with a user field is logged.
        while "listening on unix" not in proc.stdout.readline():
            pass
        d.local_session()
        while time.time() < deadline:
            records.append(journal.recv(65536))
            if any(b"session opened" in r for r in records):
                break
        opened = next(r for r in records if b"session opened" in r)
        fields = _native_fields(opened)
        assert fields[b"SYSLOG_IDENTIFIER"] == b"pcipassd"
        assert fields[b"PRIORITY"] == b"5"  # tracing-journald: info is "notice"
        assert fields[b"F_USER"] == b"root" and fields[b"F_ROLE"] == b"pool-admin", fields
        # MESSAGE, all plain `journalctl` shows, says to whom and how too:
        # the fields as key=value, as on a stderr line, on one line.
        message = fields[b"MESSAGE"]
        assert message.startswith(b"session opened "), message
        for field in (b"user=root", b"role=pool-admin", b'auth="local-root"'):
            assert field in message.split(b" "), message
        assert b"\n" not in message
        flow = _native_fields(next(r for r in records if b"boot flow" in r and b"serving" not in r))
        assert flow[b"MESSAGE"].startswith(b"boot flow flow=xcp-ng reason="), flow
        assert flow[b"F_FLOW"] == b"xcp-ng", flow
        stream_r.setblocking(False)
        try:
            leaked = stream_r.recv(65536)
        except BlockingIOError:
            leaked = b""
        assert b"session opened" not in leaked, "logged twice: stderr too"
    finally:
        proc.kill()
        proc.wait()
        journal.close()
        shutil.rmtree(made)
        stream_r.close()
        stream_w.close()
        d.cleanup()


def test_a_start_that_undoes_an_edit_asks_systemd_for_more_time(tmp_path, monkeypatch):
    """Issue 23: a stop of the unit mid-hide (SIGKILL after
    TimeoutStopSec=30, while the initramfs is rebuilt) leaves the edit's
    journal, and the next start undoes it, rebuilding the initramfs before
    it is ready. That rebuild may take longer than TimeoutStartSec; killed
    there, it would be cut short at every restart. So while it runs the
    daemon renews EXTEND_TIMEOUT_USEC (every 10 s) with a STATUS that says
    why, before READY=1. Here the rebuild of the recovery takes 12 s."""
    from conftest import binary, run

    root = tmp_path / "root"
    run(binary("pcipass"), "mock-host", "create", str(root), "--profile", "xen-efi")
    slow = tmp_path / "slow"
    rebuild = tmp_path / "rebuild-initramfs"
    rebuild.write_text(f'#!/bin/sh\n[ -e "{slow}" ] && sleep 12\n'
                       f'exec "{binary("pcipass")}" mock-host update-initramfs "{root}"\n')
    rebuild.chmod(0o755)
    d = Daemon(tmp_path, extra_args=["--initramfs-command", str(rebuild)])
    d.add_user("admin", "pool-admin")
    monkeypatch.setenv("PCIPASS_FAULT", "txn-after-early")
    d.start()
    s = d.session("admin")
    gpu = pci_ref(s, "0000:01:00.0")
    with pytest.raises(Exception):  # noqa: B017 - the daemon aborts under the call
        s.xenapi.PCI.disable_dom0_access(gpu)
    d.proc.wait(timeout=120)
    monkeypatch.delenv("PCIPASS_FAULT")
    slow.touch()
    sock, path = _notify_socket(tmp_path)
    log = open(tmp_path / "pcipassd.log", "a")
    proc = subprocess.Popen(d.args(), stdout=subprocess.DEVNULL, stderr=log,
                            env=dict(os.environ, NOTIFY_SOCKET=path))
    try:
        got = _recv_until(sock, "READY=1")
        extended = [m for m in got if "EXTEND_TIMEOUT_USEC=60000000" in m]
        assert extended, got
        assert all("STATUS=undoing an unfinished boot configuration edit" in m for m in extended), got
        assert got.index(extended[0]) < len(got) - 1, "EXTEND_TIMEOUT_USEC after READY=1"
        assert "undid an unfinished edit" in (tmp_path / "pcipassd.log").read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        sock.close()
        d.cleanup()
