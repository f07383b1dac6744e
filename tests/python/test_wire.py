"""Errors and the wire: every XenAPI error description, system.listMethods,
Async tasks, HTTPS, the golden responses, and the HTTP edge cases (malformed
XML, huge and unfinished bodies), through the SDK and raw sockets."""

import http.client
import socket
import time
import xmlrpc.client
from urllib.parse import urlparse

import XenAPI

from conftest import failure


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
    # As xapi's dispatcher: one too many for a message without defaults.
    pci = s.xenapi.PCI.get_all()[0]
    assert failure(proxy, "PCI.get_record", (pci, "x")) == ["MESSAGE_PARAMETER_COUNT_MISMATCH", "PCI.get_record", "1", "2"]
    details = failure(proxy, "PCI.get_record", (5,))
    assert details[0:2] == ["FIELD_TYPE_ERROR", "self"]
    raw = xmlrpc.client.ServerProxy(daemon.url)
    result = raw.PCI.get_all("OpaqueRef:stale")
    assert result == {"Status": "Failure", "ErrorDescription": ["SESSION_INVALID", "OpaqueRef:stale"]}


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
    # Answered while the stuck body is still being waited for: its
    # connection is still open (the body timeout is 30 s).
    assert len(daemon.session("admin").xenapi.PCI.get_all()) >= 10
    stuck.setblocking(False)
    try:
        assert stuck.recv(1) != b"", "the stuck request was answered or closed"
    except BlockingIOError:
        pass
    stuck.close()


def test_async_call_runs_in_a_task(daemon):
    s = daemon.session("operator")
    pci = s.xenapi.PCI.get_all()[0]
    task = s.xenapi.Async.PCI.get_dom0_access_status(pci)
    assert task.startswith("OpaqueRef:")
    deadline = time.time() + 60  # a hang guard
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
