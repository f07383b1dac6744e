"""Logging in and out, sessions (across restarts, per-user bounds, login
throttling), roles, and the privacy of the state that holds them, through
the unmodified Python XenAPI SDK."""

import time
import xmlrpc.client

import XenAPI

from conftest import failure


def test_login_pool_host_and_api_version(daemon):
    s = daemon.session("admin")
    pools = s.xenapi.pool.get_all()
    assert len(pools) == 1
    master = s.xenapi.pool.get_master(pools[0])
    host = s.xenapi.host.get_record(master)
    assert host["API_version_major"] == "2"
    assert host["enabled"] is True
    assert master in s.xenapi.host.get_all()
    assert s.API_version == "2.21"
    s.xenapi.session.logout()


def test_session_of_own_record_and_this_host(daemon):
    s = daemon.session("operator")
    ref = s._session
    assert s.xenapi.session.get_this_host(ref) == s.xenapi.pool.get_master(s.xenapi.pool.get_all()[0])
    assert s.xenapi.session.get_this_user(ref) == "OpaqueRef:NULL"
    rec = s.xenapi.session.get_record(ref)
    assert rec["auth_user_name"] == "operator"
    assert "role" not in rec, "internal fields never reach the wire"


def test_read_only_role_is_refused_edits(daemon):
    s = daemon.session("reader")
    pci = s.xenapi.PCI.get_all()[0]
    details = failure(s.xenapi.PCI.disable_dom0_access, pci)
    assert details[0] == "RBAC_PERMISSION_DENIED"
    assert details[1] == "pci.disable_dom0_access"
    assert "pool-operator" in details[2]
    # Reading the status is allowed to read-only (xapi wrongly demands pool-operator).
    assert s.xenapi.PCI.get_dom0_access_status(pci) == "enabled"


def test_session_survives_daemon_restart(daemon):
    s = daemon.session("admin")
    before = s._session
    daemon.restart()
    s2 = XenAPI.Session(daemon.url)
    s2._session = before
    assert len(s2.xenapi.pool.get_all()) == 1
    assert s2._session == before, "no re-login happened: the old session is still valid"


def test_unix_socket_root_peer_is_superuser(daemon):
    s = daemon.local_session()
    rec = s.xenapi.session.get_record(s._session)
    assert rec["is_local_superuser"] is True
    assert len(s.xenapi.PCI.get_all()) >= 10


def test_logout_invalidates(daemon):
    s = daemon.session("admin")
    ref = s._session
    s.xenapi.session.logout()
    raw = xmlrpc.client.ServerProxy(daemon.url)
    assert raw.pool.get_all(ref)["ErrorDescription"] == ["SESSION_INVALID", ref]


def test_state_is_private(daemon):
    import stat
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(daemon.state) == 0o700
    assert mode(daemon.state / "pcipass.db") == 0o600
    assert mode(daemon.state / "users") == 0o600
    assert mode(daemon.socket) == 0o600
    assert "secret" not in (daemon.state / "users").read_text()


def test_failed_logins_are_slowed_per_user(daemon):
    s = XenAPI.Session(daemon.url)
    durations = []
    for _ in range(4):
        started = time.time()
        failure(s.xenapi.login_with_password, "operator", "wrong")
        durations.append(time.time() - started)
    # Lower bounds only (a busy machine is slower, never faster); that the
    # first failure is not delayed is the unit test throttle_grows_and_resets.
    assert durations[3] >= 0.7, durations
    started = time.time()
    other = daemon.session("reader")  # the address is slowed too, for every user
    assert time.time() - started >= 0.7
    other.xenapi.session.logout()
    local = daemon.local_session()  # the local superuser is not throttled
    local.xenapi.session.logout()


def test_sessions_per_user_are_bounded(tmp_path):
    from conftest import Daemon
    d = Daemon(tmp_path, extra_args=["--max-sessions-per-user", "2"])
    d.add_user("admin", "pool-admin")
    d.start()
    try:
        sessions = [d.session("admin") for _ in range(3)]
        raw = xmlrpc.client.ServerProxy(d.url)
        assert raw.pool.get_all(sessions[0]._session)["ErrorDescription"][0] == "SESSION_INVALID"
        assert raw.pool.get_all(sessions[2]._session)["Status"] == "Success"
    finally:
        d.cleanup()
