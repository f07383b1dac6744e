"""A real reboot: the host reboots without host.reboot, its boot id
changes, and the next start of pcipassd drops every session, re-enables a
host that host.disable left disabled (unless auto_enable was false) and
writes a later other_config:agent_start_time."""

import time
import uuid
import xmlrpc.client

from conftest import failure

BOOT_ID = "proc/sys/kernel/random/boot_id"


def _host(s):
    return s.xenapi.pool.get_master(s.xenapi.pool.get_all()[0])


def _start_time(s, host):
    return float(s.xenapi.host.get_other_config(host)["agent_start_time"])


def _disabled_then_restarted(daemon, new_boot, *disable_args):
    """Log in, disable the host, stop pcipassd, maybe change the boot id,
    start again on the same state dir. Returns (old session ref, new session,
    host, agent_start_time before, agent_start_time after)."""
    old = daemon.session("admin")
    host = _host(old)
    before = _start_time(old, host)
    old.xenapi.host.disable(host, *disable_args)
    assert old.xenapi.host.get_enabled(host) is False
    daemon.stop()
    boot_id = daemon.root / BOOT_ID
    assert boot_id.read_text().strip(), "the mock host has a boot id"
    if new_boot:
        boot_id.write_text(f"{uuid.uuid4()}\n")
    daemon.start()
    new = daemon.session("admin")
    return old._session, new, host, before, _start_time(new, host)


def _get_enabled(daemon, session_ref, host):
    """host.get_enabled with a given session ref, as the raw XML-RPC reply
    (the SDK turns SESSION_INVALID into a re-login attempt)."""
    return xmlrpc.client.ServerProxy(daemon.url).host.get_enabled(session_ref, host)


def _session_invalid(daemon, session_ref, host):
    reply = _get_enabled(daemon, session_ref, host)
    return reply["Status"] == "Failure" and reply["ErrorDescription"] == ["SESSION_INVALID", session_ref]


def test_new_boot_drops_sessions_and_enables_the_host(daemon):
    old, new, host, before, after = _disabled_then_restarted(daemon, True)
    assert _session_invalid(daemon, old, host)
    assert new.xenapi.host.get_enabled(host) is True
    assert "vm_start" in new.xenapi.host.get_allowed_operations(host)
    assert after > before


def test_same_boot_keeps_sessions_and_the_disabled_host(daemon):
    old, new, host, before, after = _disabled_then_restarted(daemon, False)
    assert _get_enabled(daemon, old, host) == {"Status": "Success", "Value": False}, "the old session still works"
    assert new.xenapi.host.get_enabled(host) is False
    assert after > before


def test_auto_enable_false_keeps_the_host_disabled(daemon):
    old, new, host, before, after = _disabled_then_restarted(daemon, True, False)
    assert _session_invalid(daemon, old, host)
    assert new.xenapi.host.get_enabled(host) is False
    assert after > before
    new.xenapi.host.enable(host)
    assert new.xenapi.host.get_enabled(host) is True


def test_agent_start_time_is_xapi_format(daemon):
    s = daemon.session("reader")
    value = s.xenapi.host.get_other_config(_host(s))["agent_start_time"]
    seconds, _, fraction = value.partition(".")
    assert seconds.isdigit() and fraction.isdigit(), value


def _task_result(s, task):
    for _ in range(200):
        if s.xenapi.task.get_status(task) != "pending":
            break
        time.sleep(0.05)
    return s.xenapi.task.get_record(task)


def test_evacuate_as_xapi_takes_it(daemon):
    """host.evacuate with xapi's arities (host[, network[, batch size]]):
    no VM is resident, so it succeeds at once, also on a disabled host and
    as an Async task; errors as xapi raises them."""
    s = daemon.session("operator")
    host = _host(s)
    assert s.xenapi.host.evacuate(host) == ""
    assert s.xenapi.host.evacuate(host, "OpaqueRef:NULL") == ""
    s.xenapi.host.disable(host)
    assert "evacuate" in s.xenapi.host.get_allowed_operations(host)
    task = s.xenapi.Async.host.evacuate(host, "OpaqueRef:NULL", "3")
    rec = _task_result(s, task)
    assert rec["status"] == "success", rec
    # A message with defaults ignores parameters beyond its own, as xapi's
    # dispatcher does; one without refuses them.
    assert s.xenapi.host.evacuate(host, "OpaqueRef:NULL", "3", "x") == ""
    assert failure(s.xenapi.host.get_servertime, host, "x") == [
        "MESSAGE_PARAMETER_COUNT_MISMATCH", "host.get_servertime", "1", "2"]
    assert failure(s.xenapi.host.evacuate, "OpaqueRef:nope") == ["HANDLE_INVALID", "host", "OpaqueRef:nope"]
    net = "OpaqueRef:" + str(uuid.uuid4())
    assert failure(s.xenapi.host.evacuate, host, net) == ["HANDLE_INVALID", "network", net]
    reader = daemon.session("reader")
    assert failure(reader.xenapi.host.evacuate, host)[0] == "RBAC_PERMISSION_DENIED"
    s.xenapi.host.enable(host)


def test_every_start_moves_agent_start_time(daemon):
    s = daemon.session("admin")
    host = _host(s)
    first = _start_time(s, host)
    daemon.restart()
    assert _start_time(daemon.session("admin"), host) > first
