"""Object records: PCI and PGPU fields, refs and uuids stable across
restarts, and get_all_records over XML-RPC and JSON-RPC."""

import json
import urllib.request

from conftest import failure


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
    # The demo's iGPU has its own ids as subsystem ids: libpci (and so xapi)
    # names the subsystem after the device.
    igpu = next(r for r in pcis.values() if r["pci_id"] == "0000:00:02.0")
    assert (igpu["subsystem_vendor_id"], igpu["subsystem_device_id"]) == (igpu["vendor_id"], igpu["device_id"])
    assert igpu["subsystem_vendor_name"] == igpu["vendor_name"]
    assert igpu["subsystem_device_name"] == igpu["device_name"] != ""
    pgpus = s.xenapi.PGPU.get_all_records()
    assert len(pgpus) >= 2
    for rec in pgpus.values():
        assert rec["PCI"] in pcis
        assert rec["dom0_access"] in ("enabled", "disable_on_reboot", "disabled", "enable_on_reboot")


def test_refs_and_uuids_stable_across_restart(daemon):
    s = daemon.session("admin")
    before = s.xenapi.PCI.get_all_records()
    pool = s.xenapi.pool.get_all()
    daemon.restart()
    s = daemon.session("admin")
    assert s.xenapi.pool.get_all() == pool
    after = s.xenapi.PCI.get_all_records()
    assert {r: v["uuid"] for r, v in before.items()} == {r: v["uuid"] for r, v in after.items()}


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


def software(daemon):
    s = daemon.session("reader")
    host = s.xenapi.host.get_all()[0]
    return s.xenapi.host.get_software_version(host), s.xenapi.host.get_record(host), s


def test_the_host_describes_itself_from_its_own_files(daemon):
    """software_version is what the host's files say (XCP-ng's inventory,
    os-release elsewhere), read again at every start; no brand is made up."""
    version, host, s = software(daemon)
    inventory = dict(line.split("=", 1) for line in (daemon.root / "etc/xensource-inventory").read_text().split("\n") if "=" in line)
    assert version["product_brand"] == inventory["PRODUCT_BRAND"].strip("'") == "XCP-ng"
    assert version["product_version"] == inventory["PRODUCT_VERSION"].strip("'") == "8.3.0"
    assert version["platform_version"] == inventory["PLATFORM_VERSION"].strip("'")
    assert version["xen"] == "4.17.5-3"
    assert version["linux"] == (daemon.root / "proc/sys/kernel/osrelease").read_text().strip()
    assert version["pcipass"]
    metrics = s.xenapi.host_metrics.get_record(host["metrics"])
    meminfo = (daemon.root / "proc/meminfo").read_text()
    total_kib = int(meminfo.split("MemTotal:")[1].split()[0])
    assert int(metrics["memory_total"]) == total_kib * 1024 and metrics["live"] is True
    assert "hvm-3.0-x86_64" in host["capabilities"]

    # The host is upgraded by hand: the next start says so.
    inv = daemon.root / "etc/xensource-inventory"
    inv.write_text(inv.read_text().replace("PRODUCT_VERSION='8.3.0'", "PRODUCT_VERSION='8.3.1'"))
    daemon.restart()
    assert software(daemon)[0]["product_version"] == "8.3.1"

    # A plain Xen dom0: no inventory, os-release names the distribution.
    inv.unlink()
    (daemon.root / "etc/os-release").write_text(
        'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\nVERSION="12 (bookworm)"\nID=debian\n')
    daemon.restart()
    version = software(daemon)[0]
    assert version["product_brand"] == "Debian GNU/Linux"
    assert version["product_version"] == "12"
    assert version["platform_version"] == "0.0.0"


def test_the_pool_fields_xo_servers_transform_reads_are_typed_as_xapis(daemon):
    """xo-server's pool transform reads migration_compression and
    ha_reboot_vm_on_internal_shutdown: booleans, with xapi's defaults."""
    s = daemon.session("admin")
    pool = s.xenapi.pool.get_all()[0]
    record = s.xenapi.pool.get_record(pool)
    assert record["migration_compression"] is False
    assert record["ha_reboot_vm_on_internal_shutdown"] is True
    s.xenapi.pool.set_migration_compression(pool, True)
    assert s.xenapi.pool.get_migration_compression(pool) is True
