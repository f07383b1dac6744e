"""Issue 2: login, objects, errors, sessions and the HTTP edge cases,
through the unmodified Python XenAPI SDK and raw sockets."""

import http.client
import json
import socket
import time
import urllib.request
import xmlrpc.client
from urllib.parse import urlparse

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


def test_pci_and_pgpu_records(daemon):
    s = daemon.session("reader")
    pcis = s.xenapi.PCI.get_all_records()
    assert len(pcis) >= 10
    for ref, rec in pcis.items():
        assert ref.startswith("OpaqueRef:")
        assert rec["vendor_name"] and rec["device_name"], rec["pci_id"]
        for field in ("uuid", "class_id", "class_name", "vendor_id", "vendor_name", "device_id", "device_name",
                      "host", "pci_id", "dependencies", "other_config", "subsystem_vendor_id",
                      "subsystem_vendor_name", "subsystem_device_id", "subsystem_device_name", "driver_name"):
            assert field in rec, field
    pgpus = s.xenapi.PGPU.get_all_records()
    assert len(pgpus) >= 2
    for rec in pgpus.values():
        assert rec["PCI"] in pcis
        assert rec["dom0_access"] in ("enabled", "disable_on_reboot", "disabled", "enable_on_reboot")


def test_session_of_own_record_and_this_host(daemon):
    s = daemon.session("operator")
    ref = s._session
    assert s.xenapi.session.get_this_host(ref) == s.xenapi.pool.get_master(s.xenapi.pool.get_all()[0])
    assert s.xenapi.session.get_this_user(ref) == "OpaqueRef:NULL"
    rec = s.xenapi.session.get_record(ref)
    assert rec["auth_user_name"] == "operator"
    assert "role" not in rec, "internal fields never reach the wire"


def test_every_error_has_its_description(daemon):
    bad = XenAPI.Session(daemon.url)
    assert failure(bad.xenapi.login_with_password, "admin", "wrong") == [
        "SESSION_AUTHENTICATION_FAILED", "admin", "Authentication failure"]
    s = daemon.session("admin")
    proxy = s.xenapi_request  # raw access without automatic re-login
    assert failure(proxy, "PCI.get_record", ("OpaqueRef:nope",)) == ["HANDLE_INVALID", "PCI", "OpaqueRef:nope"]
    host = s.xenapi.host.get_all()[0]
    assert failure(proxy, "PCI.get_record", (host,)) == ["HANDLE_INVALID", "PCI", host]
    assert failure(proxy, "PCI.get_by_uuid", ("no-such-uuid",)) == ["UUID_INVALID", "PCI", "no-such-uuid"]
    assert failure(proxy, "PCI.get_frobnicated", ()) == ["MESSAGE_METHOD_UNKNOWN", "PCI.get_frobnicated"]
    assert failure(proxy, "PCI.get_record", ()) == ["MESSAGE_PARAMETER_COUNT_MISMATCH", "PCI.get_record", "1", "0"]
    details = failure(proxy, "PCI.get_record", (5,))
    assert details[0:2] == ["FIELD_TYPE_ERROR", "self"]
    raw = xmlrpc.client.ServerProxy(daemon.url)
    result = raw.PCI.get_all("OpaqueRef:stale")
    assert result == {"Status": "Failure", "ErrorDescription": ["SESSION_INVALID", "OpaqueRef:stale"]}


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


def test_refs_and_uuids_stable_across_restart(daemon):
    s = daemon.session("admin")
    before = s.xenapi.PCI.get_all_records()
    pool = s.xenapi.pool.get_all()
    daemon.restart()
    s = daemon.session("admin")
    assert s.xenapi.pool.get_all() == pool
    after = s.xenapi.PCI.get_all_records()
    assert {r: v["uuid"] for r, v in before.items()} == {r: v["uuid"] for r, v in after.items()}


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


def test_list_methods_is_unwrapped(daemon):
    s = XenAPI.Session(daemon.url)
    methods = s.system.listMethods()
    assert "PCI.get_dom0_access_status" in methods
    assert "PGPU.get_all_records" in methods
    assert not any(m.startswith("Async.") and m.endswith("get_all_records") for m in methods)


def _post(url, body, headers=None):
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    conn.request("POST", "/", body=body, headers=headers or {"Content-Type": "text/xml"})
    resp = conn.getresponse()
    return resp.status, resp.getheader("Content-Type"), resp.read()


def test_malformed_xml_gets_an_answer_and_daemon_serves_on(daemon):
    status, ctype, body = _post(daemon.url, b"<methodCall><methodName>PCI.get_all</methodName><params><param>")
    assert status == 200 and ctype == "text/xml"
    assert b"<value>Failure</value>" in body
    assert b"<param>" not in body.split(b"ErrorDescription")[1][:200], "the request is not echoed"
    assert len(daemon.session("admin").xenapi.PCI.get_all()) >= 10


def _send_huge(url, headers, body_chunks):
    u = urlparse(url)
    sock = socket.create_connection((u.hostname, u.port), timeout=30)
    sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\n" + headers + b"\r\n")
    try:
        for chunk in body_chunks:
            sock.sendall(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server answered early and closed: allowed by HTTP
    reply = sock.recv(4096)
    sock.close()
    return reply


def test_huge_body_is_refused_with_413(daemon):
    size = 20 * 1024 * 1024
    reply = _send_huge(daemon.url, b"Content-Length: %d\r\n" % size, [b"x" * (1024 * 1024)] * 20)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:100]
    chunk = b"x" * (1024 * 1024)
    chunked = [b"%x\r\n" % len(chunk) + chunk + b"\r\n"] * 20 + [b"0\r\n\r\n"]
    reply = _send_huge(daemon.url, b"Transfer-Encoding: chunked\r\n", chunked)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:100]
    assert len(daemon.session("admin").xenapi.PCI.get_all()) >= 10


def test_body_that_never_finishes_does_not_block_others(daemon):
    u = urlparse(daemon.url)
    stuck = socket.create_connection((u.hostname, u.port))
    stuck.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nContent-Length: 1000\r\n\r\n<metho")
    started = time.time()
    assert len(daemon.session("admin").xenapi.PCI.get_all()) >= 10
    assert time.time() - started < 5
    stuck.close()


def test_async_call_runs_in_a_task(daemon):
    s = daemon.session("operator")
    pci = s.xenapi.PCI.get_all()[0]
    task = s.xenapi.Async.PCI.get_dom0_access_status(pci)
    assert task.startswith("OpaqueRef:")
    deadline = time.time() + 10
    while s.xenapi.task.get_status(task) == "pending" and time.time() < deadline:
        time.sleep(0.05)
    rec = s.xenapi.task.get_record(task)
    assert rec["status"] == "success"
    assert rec["result"] == "<value>enabled</value>"
    assert rec["name_label"] == "Async.PCI.get_dom0_access_status"
    assert rec["progress"] == 1.0
    bad = s.xenapi.Async.PCI.disable_dom0_access("OpaqueRef:nope")
    while s.xenapi.task.get_status(bad) == "pending" and time.time() < deadline:
        time.sleep(0.05)
    assert s.xenapi.task.get_error_info(bad) == ["HANDLE_INVALID", "PCI", "OpaqueRef:nope"]
    s.xenapi.task.destroy(task)
    assert failure(s.xenapi.task.get_record, task)[0] == "HANDLE_INVALID"
    assert failure(s.xenapi.Async.PCI.get_record, pci) == ["Fault", "No async mode for this operation (rpc: PCI.get_record)"]


def test_https_with_self_signed_certificate(tmp_path):
    from conftest import Daemon
    d = Daemon(tmp_path, extra_args=["--tls-self-signed"])
    d.add_user("admin", "pool-admin")
    try:
        d.start()
        url = d.url
        assert url.startswith("https://")
        s = XenAPI.Session(url, ignore_ssl=True)
        s.xenapi.login_with_password("admin", d.passwords["admin"], "2.21", "pytest")
        assert len(s.xenapi.PCI.get_all()) >= 10
        strict = XenAPI.Session(url)
        try:
            strict.xenapi.login_with_password("admin", d.passwords["admin"])
            raise AssertionError("a self-signed certificate must not be accepted silently")
        except Exception as e:  # ssl.SSLCertVerificationError
            assert "CERTIFICATE_VERIFY_FAILED" in str(e)
    finally:
        d.cleanup()


def test_python_parses_every_golden_response():
    from pathlib import Path
    responses = Path(__file__).resolve().parents[1] / "fixtures" / "xmlrpc" / "responses"
    files = sorted(responses.glob("*.xml"))
    assert len(files) >= 8
    for f in files:
        (value,), _ = xmlrpc.client.loads(f.read_bytes())
        if f.stem == "list-methods":
            assert value == ["PCI.get_all_records", "pool.get_all_records"]
        elif f.stem == "failure":
            assert value["ErrorDescription"][0] == "SESSION_AUTHENTICATION_FAILED"
        else:
            assert value["Status"] == "Success", f
    (value,), _ = xmlrpc.client.loads((responses / "awkward-text.xml").read_bytes())
    assert value["Value"] == "a<b>&c \ufffd \r\n\t\ufffd é"


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
    assert durations[0] < 0.5
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


def _jsonrpc(url, method, *params):
    body = json.dumps({"jsonrpc": "2.0", "id": 7, "method": method, "params": list(params)}).encode()
    request = urllib.request.Request(url.rstrip("/") + "/jsonrpc", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request) as reply:
        return json.loads(reply.read())


def _as_xmlrpc_strings(value):
    """JSON-RPC ints are numbers; XML-RPC sends API ints as strings."""
    if isinstance(value, dict):
        return {k: _as_xmlrpc_strings(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_xmlrpc_strings(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def test_get_all_records_follows_every_change_in_both_protocols(daemon):
    s = daemon.session("admin")
    first = s.xenapi.PCI.get_all_records()
    assert s.xenapi.PCI.get_all_records() == first, "an unchanged class answers the same"
    ref = sorted(first)[0]
    s.xenapi.PCI.add_to_other_config(ref, "note", "a<b&c")
    after = s.xenapi.PCI.get_all_records()
    assert after[ref]["other_config"] == {"note": "a<b&c"}, "the cached answer follows an edit"
    assert {r: v for r, v in after.items() if r != ref} == {r: v for r, v in first.items() if r != ref}
    reply = _jsonrpc(daemon.url, "PCI.get_all_records", s._session)
    assert reply["id"] == 7 and "error" not in reply
    assert _as_xmlrpc_strings(reply["result"]) == after, "JSON-RPC and XML-RPC agree"
    s.xenapi.PCI.remove_from_other_config(ref, "note")
    assert s.xenapi.PCI.get_all_records() == first
    result = _jsonrpc(daemon.url, "PCI.get_all_records", s._session)["result"]
    assert _as_xmlrpc_strings(result) == first


XAPI_PCI_FIELDS = {
    "uuid", "class_id", "class_name", "vendor_id", "vendor_name", "device_id", "device_name", "host", "pci_id",
    "dependencies", "other_config", "subsystem_vendor_id", "subsystem_vendor_name", "subsystem_device_id",
    "subsystem_device_name", "driver_name",
}


def test_pci_records_have_exactly_xapis_public_fields_in_both_protocols(daemon):
    s = daemon.session("reader")
    records = s.xenapi.PCI.get_all_records()
    assert records
    for ref, rec in records.items():
        assert set(rec) == XAPI_PCI_FIELDS, ref
        assert set(s.xenapi.PCI.get_record(ref)) == XAPI_PCI_FIELDS, ref
    reply = _jsonrpc(daemon.url, "PCI.get_all_records", s._session)
    for ref, rec in reply["result"].items():
        assert set(rec) == XAPI_PCI_FIELDS, ref
    ref = sorted(records)[0]
    assert set(_jsonrpc(daemon.url, "PCI.get_record", s._session, ref)["result"]) == XAPI_PCI_FIELDS
    for field in ("functions", "virtual_functions", "physical_function", "attached_VMs"):
        method = "PCI.get_" + field
        assert failure(getattr(s.xenapi.PCI, "get_" + field), ref) == ["MESSAGE_METHOD_UNKNOWN", method]
        assert _jsonrpc(daemon.url, method, s._session, ref)["error"]["message"] == "MESSAGE_METHOD_UNKNOWN"
