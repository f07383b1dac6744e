"""Issue 7 (part): concurrency against the boot configuration, and hostile
input answered without disturbing other clients."""

import http.client
import socket
import subprocess
import threading
from urllib.parse import urlparse

import pytest
import XenAPI

from conftest import Daemon, binary


def _hidden(daemon):
    out = daemon.xen_cmdline("--get-dom0", "xen-pciback.hide").stdout.strip()
    value = out.split("=", 1)[1] if "=" in out else ""
    return set(e.strip("()") for e in value.replace(")(", ") (").split() if e)


def test_many_clients_and_xen_cmdline_lose_no_edit(daemon):
    s = daemon.session("admin")
    # Every function but the boot disk's and the console GPU (refused
    # while the host display is on).
    console = {p["PCI"] for p in s.xenapi.PGPU.get_all_records().values() if p["is_system_display_device"]}
    pcis = {r: p["pci_id"] for r, p in s.xenapi.PCI.get_all_records().items()
            if p["class_id"] != "0108" and r not in console}
    refs = sorted(pcis)
    errors = []

    def worker(i, action, want):
        try:
            session = daemon.session("operator")
            for round_ in range(3):
                ref = refs[(i + round_) % len(refs)]
                status = getattr(session.xenapi.PCI, action)(ref)
                if status != want:
                    errors.append((action, pcis[ref], status))
        except Exception as e:  # noqa: BLE001 - any failure is a test failure
            errors.append(repr(e))

    def hand_edits():
        for n in range(40):
            r = subprocess.run([binary("xen-cmdline"), "--root", str(daemon.root), "--set-dom0", f"pcipass.counter={n}"],
                               capture_output=True, text=True)
            if r.returncode:
                errors.append(r.stderr)

    for action, want in (("disable_dom0_access", "disable_on_reboot"), ("enable_dom0_access", "enabled")):
        threads = [threading.Thread(target=worker, args=(i, action, want)) for i in range(64)]
        threads.append(threading.Thread(target=hand_edits))
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors, errors[:5]
        expected = set(pcis.values()) if action == "disable_dom0_access" else set()
        assert _hidden(daemon) == expected
        assert daemon.xen_cmdline("--get-dom0", "pcipass.counter").stdout.strip() == "pcipass.counter=39"


def _raw(url, body, content_type="text/xml", path="/"):
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    conn.request("POST", path, body=body, headers={"Content-Type": content_type})
    r = conn.getresponse()
    return r.status, r.read()


HOSTILE_XML = [
    b"",
    b"not xml at all",
    b"<methodCall><methodName>PCI.get_all</methodName>",
    b"\xff\xfe<methodCall/>",
    b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>'
    b"<methodCall><methodName>&b;</methodName><params/></methodCall>",
    b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><methodCall><methodName>&e;</methodName></methodCall>',
    b"<methodCall><methodName>m</methodName><params><param>" + b"<value><array><data>" * 2000 + b"</data></array></value>" * 2000 + b"</param></params></methodCall>",
    b"<methodCall><methodName>PCI.get_record</methodName><params><param><value><array><data>"
    + b"<value>x</value>" * 300000 + b"</data></array></value></param></params></methodCall>",
]


@pytest.mark.parametrize("body", HOSTILE_XML, ids=range(len(HOSTILE_XML)))
def test_hostile_xml_gets_an_answer(daemon, body):
    status, reply = _raw(daemon.url, body)
    assert status == 200
    assert b"<value>Failure</value>" in reply
    assert b"passwd" not in reply and b"root:" not in reply
    assert len(daemon.session("admin").xenapi.PCI.get_all()) >= 10


@pytest.mark.parametrize("body", [b"", b"{", b"[]", b'{"jsonrpc":"2.0","id":1}', b'{"jsonrpc":"3","id":1,"method":"m"}',
                                  b'{"id":null,"method":"m","params":[]}', b'{"jsonrpc":"2.0","id":1,"method":"m","params":' + b"[" * 200 + b"]" * 200 + b"}",
                                  b'{"jsonrpc":"2.0","id":1,"method":"PCI.get_record","params":[5, 6]}'])
def test_hostile_json_gets_an_answer(daemon, body):
    status, reply = _raw(daemon.url, body, "application/json", "/jsonrpc")
    assert status == 200
    assert b'"error"' in reply
    assert len(daemon.session("admin").xenapi.PCI.get_all()) >= 10


@pytest.mark.parametrize("body,code", [
    (b'[{"jsonrpc":"2.0","id":1,"method":"session.logout","params":["x"]}]', -32600),
    (b'{"jsonrpc":"2.0","id":1,"method":"session.logout","method":"pool.get_all","params":["x"]}', -32600),
    (b'{"jsonrpc":"2.0","id":null,"method":"pool.get_all","params":["x"]}', -32600),
    (b'{"jsonrpc":"2.0","id":18446744073709551616,"method":"pool.get_all","params":["x"]}', -32600),
    (b'{"jsonrpc":"2.0",', -32700),
])
def test_what_is_no_single_request_gets_the_specifications_error(daemon, body, code):
    """A batch, a member given twice (the method!), an id that is null or
    no integer JSON keeps: never run, never answered with another id; the
    JSON-RPC 2.0 error the specification names, with id null."""
    import json
    status, reply = _raw(daemon.url, body, "application/json", "/jsonrpc")
    assert status == 200
    reply = json.loads(reply)
    assert reply["id"] is None and reply["error"]["code"] == code, reply


def test_ids_are_echoed_exactly(daemon):
    import json
    for id_ in ['"a\\u00e9"', "18446744073709551615", "-9223372036854775808", "0"]:
        body = b'{"jsonrpc":"2.0","id":' + id_.encode() + b',"method":"pool.get_all","params":["x"]}'
        status, reply = _raw(daemon.url, body, "application/json", "/jsonrpc")
        assert json.loads(reply)["id"] == json.loads(id_), reply


def test_idle_connections_and_non_readers_do_not_starve_others(tmp_path):
    d = Daemon(tmp_path, extra_args=["--max-connections", "64", "--header-timeout", "1"])
    d.add_user("admin", "pool-admin")
    d.start()
    try:
        u = urlparse(d.url)
        idle = [socket.create_connection((u.hostname, u.port)) for _ in range(300)]
        # A client that sends requests and never reads the answers.
        greedy = socket.create_connection((u.hostname, u.port))
        call = (b'<?xml version="1.0"?><methodCall><methodName>system.listMethods</methodName><params/></methodCall>')
        request = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(call), call)
        greedy.setblocking(False)
        try:
            for _ in range(2000):
                greedy.send(request)
        except BlockingIOError:
            pass
        # Answered while the idle connections and the non-reader are still
        # open; the socket timeout only turns a hang into a failure.
        socket.setdefaulttimeout(60)
        try:
            s = XenAPI.Session(d.url)
            s.xenapi.login_with_password("admin", d.passwords["admin"])
            assert len(s.xenapi.PCI.get_all()) >= 10
        finally:
            socket.setdefaulttimeout(None)
        for c in idle:
            c.close()
        greedy.close()
    finally:
        d.cleanup()


def _pci_refs(s):
    return {rec["pci_id"]: ref for ref, rec in s.xenapi.PCI.get_all_records().items()}


def test_tasks_a_crash_left_pending_are_finished_at_the_next_start(tmp_path, monkeypatch):
    """Six Async edits in flight when pcipassd dies mid-edit (the
    transaction's fault point after its writes aborts the process, as a
    kill -9 would): at the next start the edit is undone and no task is
    pending. A task whose effect is in the boot configuration (its
    function was hidden already) is success with the answer the call
    gives; the others are failure, saying why."""
    d = Daemon(tmp_path)
    try:
        d.add_user("admin", "pool-admin")
        d.start()
        s = d.session("admin")
        refs = _pci_refs(s)
        already = "0000:00:14.0"
        assert s.xenapi.PCI.disable_dom0_access(refs[already]) == "disable_on_reboot"
        d.stop()
        monkeypatch.setenv("PCIPASS_FAULT", "txn-after-writes")
        d.start()
        s = d.session("admin")
        wanted = [already, "0000:01:00.0", "0000:01:00.1", "0000:03:00.0", "0000:03:00.1", "0000:03:02.0"]
        tasks = {pci: s.xenapi.Async.PCI.disable_dom0_access(refs[pci]) for pci in wanted}
        d.proc.wait(timeout=60)
        assert d.proc.returncode != 0
        monkeypatch.delenv("PCIPASS_FAULT")
        d.proc = None
        d.start()
        s = d.session("admin")
        for pci, task in tasks.items():
            record = s.xenapi.task.get_record(task)
            status = s.xenapi.PCI.get_dom0_access_status(refs[pci])
            assert record["status"] != "pending", (pci, record)
            if pci == already:
                assert record["status"] == "success", (pci, record)
                assert "disable_on_reboot" in record["result"], record
            else:
                assert record["status"] == "failure", (pci, record)
                assert status == "enabled", (pci, status)
                assert "stopped before the task finished" in " ".join(record["error_info"]), record
        log = (d.workdir / "pcipassd.log").read_text()
        assert "tasks left unfinished by the previous run are finished" in log
    finally:
        d.cleanup()


def test_no_task_stays_pending_after_a_kill_9(tmp_path):
    """Async edits and reads killed at an arbitrary moment: after the next
    start none is pending, and every edit reported success has its effect
    in the boot configuration, every failure has none."""
    import signal
    d = Daemon(tmp_path)
    try:
        d.add_user("admin", "pool-admin")
        d.start()
        s = d.session("admin")
        refs = _pci_refs(s)
        wanted = ["0000:00:14.0", "0000:01:00.0", "0000:01:00.1", "0000:03:00.0", "0000:03:00.1", "0000:03:02.0"]
        tasks = {pci: s.xenapi.Async.PCI.disable_dom0_access(refs[pci]) for pci in wanted}
        reads = [s.xenapi.Async.PCI.get_passthrough_readiness(refs[p]) for p in wanted[:3]]
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait(timeout=60)
        d.proc = None
        d.start()
        s = d.session("admin")
        for pci, task in tasks.items():
            record = s.xenapi.task.get_record(task)
            status = s.xenapi.PCI.get_dom0_access_status(refs[pci])
            assert record["status"] in ("success", "failure"), (pci, record)
            assert (record["status"] == "success") == (status == "disable_on_reboot"), (pci, record, status)
        for task in reads:
            assert s.xenapi.task.get_status(task) in ("success", "failure")
    finally:
        d.cleanup()
