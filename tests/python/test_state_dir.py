"""One state directory, one daemon; and a database deleted or replaced
under the running daemon makes writes fail instead of vanishing."""

import os
import shutil
import subprocess
import time

import pytest

from conftest import failure

# A hang guard: the second daemon must refuse, not wait for the lock.
SECOND_DAEMON_TIMEOUT = 60


def _second_args(daemon, unix):
    args = daemon.args()
    args[args.index("--unix") + 1] = str(unix)
    args[args.index("--listen") + 1] = "127.0.0.1:0"
    return args


@pytest.mark.parametrize("same_unix", [False, True], ids=["other-socket", "same-socket"])
def test_second_daemon_on_the_same_state_dir_is_refused(daemon, same_unix):
    unix = daemon.socket if same_unix else daemon.sockdir / "second.sock"
    socket_inode = os.stat(daemon.socket).st_ino
    db = daemon.state / "pcipass.db"
    db_before = os.stat(db)
    second = subprocess.run(
        _second_args(daemon, unix), capture_output=True, text=True, timeout=SECOND_DAEMON_TIMEOUT
    )
    assert second.returncode != 0, second.stderr
    assert str(daemon.state) in second.stderr, second.stderr
    assert f"pid {daemon.proc.pid}" in second.stderr, second.stderr
    assert "listening" not in second.stdout

    # The first daemon's socket is untouched and answers.
    assert os.stat(daemon.socket).st_ino == socket_inode
    if not same_unix:
        assert not unix.exists(), "the refused daemon must not bind its socket"
    local = daemon.local_session()
    pool = local.xenapi.pool.get_all()[0]
    local.xenapi.pool.add_to_other_config(pool, "after-second", "1")
    assert local.xenapi.pool.get_other_config(pool)["after-second"] == "1"
    # The database is the same file, and the first daemon still writes it.
    db_after = os.stat(db)
    assert (db_after.st_dev, db_after.st_ino) == (db_before.st_dev, db_before.st_ino)
    assert daemon.proc.poll() is None
    # The lock names the first daemon.
    assert (daemon.state / "pcipassd.lock").read_text().strip() == str(daemon.proc.pid)


def test_lock_is_released_when_the_daemon_stops(daemon):
    daemon.restart()
    assert (daemon.state / "pcipassd.lock").read_text().strip() == str(daemon.proc.pid)
    daemon.local_session().xenapi.pool.get_all()


def _log_says(daemon, *words, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        text = (daemon.workdir / "pcipassd.log").read_text()
        if all(w in text for w in words):
            return text
        if time.monotonic() > deadline:
            raise AssertionError(f"log lacks {words}: {text[-2000:]}")
        time.sleep(0.05)


def _writes_refused_reads_served(daemon, session, pool):
    details = failure(session.xenapi.pool.add_to_other_config, pool, "lost", "1")
    assert details[0] == "INTERNAL_ERROR", details
    assert "restart pcipassd" in details[1], details
    pci = session.xenapi.PCI.get_all()[0]
    details = failure(session.xenapi.PCI.set_other_config, pci, {"lost": "1"})
    assert details[0] == "INTERNAL_ERROR", details
    # Reads go on from memory, without the refused writes.
    config = session.xenapi.pool.get_other_config(pool)
    assert config["before"] == "1"
    assert "lost" not in config
    assert "lost" not in session.xenapi.PCI.get_other_config(pci)
    assert session.xenapi.PCI.get_record(pci)["uuid"]
    assert daemon.proc.poll() is None


def test_deleted_database_refuses_writes(daemon):
    s = daemon.session()
    pool = s.xenapi.pool.get_all()[0]
    s.xenapi.pool.add_to_other_config(pool, "before", "1")
    os.remove(daemon.state / "pcipass.db")
    _writes_refused_reads_served(daemon, s, pool)
    _log_says(daemon, "deleted", "restart pcipassd")


def test_replaced_database_refuses_writes(daemon):
    s = daemon.session()
    pool = s.xenapi.pool.get_all()[0]
    s.xenapi.pool.add_to_other_config(pool, "before", "1")
    db = daemon.state / "pcipass.db"
    copy = daemon.state / "pcipass.db.copy"
    shutil.copyfile(db, copy)
    os.rename(copy, db)
    _writes_refused_reads_served(daemon, s, pool)
    _log_says(daemon, "replaced by another file", "restart pcipassd")
    # After a restart the daemon opens the file that is there and writes again.
    daemon.restart()
    s = daemon.session()
    pool = s.xenapi.pool.get_all()[0]
    s.xenapi.pool.add_to_other_config(pool, "after-restart", "1")
    assert s.xenapi.pool.get_other_config(pool)["after-restart"] == "1"


@pytest.fixture
def small_fs(tmp_path):
    """A 16 MiB tmpfs for the state directory (root only)."""
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("root is needed to mount a small file system")
        pytest.skip("root is needed to mount a small file system")
    mount = tmp_path / "statefs"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(mount):
    """Fill the file system; the file that does it, to remove for room."""
    filler = mount / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * (1 << 20))
                f.flush()
        except OSError:
            pass
    return filler


def _pcis(s):
    return {r["pci_id"]: ref for ref, r in s.xenapi.PCI.get_all_records().items()}


def test_a_full_state_file_system_at_start_still_serves(tmp_path, small_fs):
    """pcipassd starts on a full state file system (before, it did not: no
    Unix socket, so root could not get in either): root gets in on the Unix
    socket, users log in over TCP, reads and edits of the boot
    configuration (on another file system) work, and the log says the
    database is served from memory."""
    from conftest import Daemon
    d = Daemon(tmp_path, extra_args=[])
    d.state = small_fs / "state"
    d.add_user("admin", "pool-admin")
    d.start()
    d.stop()
    filler = _fill(small_fs)
    try:
        d.start()
        root = d.local_session()
        assert len(root.xenapi.PCI.get_all()) >= 10
        s = d.session("admin")
        assert s.xenapi.PCI.disable_dom0_access(_pcis(s)["0000:00:14.0"]) == "disable_on_reboot"
        assert "serves from a copy of its database in memory" in (d.workdir / "pcipassd.log").read_text()
    finally:
        d.cleanup()
        filler.unlink()


def test_a_state_file_system_that_fills_while_running(tmp_path, small_fs):
    """While running: logins and logouts still work (sessions kept in
    memory), a change that needs the disk is refused with a clear error
    naming the state directory's file system, and once there is room
    again changes are written."""
    from conftest import Daemon
    import XenAPI
    d = Daemon(tmp_path, extra_args=[])
    d.state = small_fs / "state"
    d.add_user("admin", "pool-admin")
    d.start()
    try:
        s = d.session("admin")
        host = s.xenapi.host.get_all()[0]
        filler = _fill(small_fs)
        t = d.session("admin")
        assert len(t.xenapi.PCI.get_all()) >= 10
        t.xenapi.session.logout()
        details = failure(s.xenapi.host.set_name_label, host, "renamed")
        assert details[0] == "INTERNAL_ERROR" and "state directory is full" in details[1], details
        assert s.xenapi.host.get_name_label(host) != "renamed"
        assert d.local_session().xenapi.PCI.get_all()
        filler.unlink()
        s.xenapi.host.set_name_label(host, "renamed")
        d.restart()
        assert d.session("admin").xenapi.host.get_name_label(host) == "renamed"
    finally:
        d.cleanup()
