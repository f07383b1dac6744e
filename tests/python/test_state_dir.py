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
