//! Records with xe's field names, built from the daemon's records.

use std::collections::BTreeMap;

use super::output::show;
use crate::value::Value;

/// A record in xe's terms: (field name, value, writable).
pub(super) type XeRecord = Vec<(&'static str, Value, bool)>;

/// Everything the CLI fetched, to resolve refs to uuids and names.
pub(super) struct World {
    pub(super) pcis: BTreeMap<String, Value>,
    pub(super) pgpus: BTreeMap<String, Value>,
    pub(super) hosts: BTreeMap<String, Value>,
}

pub(super) fn records(v: Value) -> BTreeMap<String, Value> {
    match v {
        Value::Struct(members) => members.into_iter().collect(),
        _ => BTreeMap::new(),
    }
}

pub(super) fn field(record: &Value, name: &str) -> Value {
    record.member(name).cloned().unwrap_or_else(Value::void)
}

pub(super) fn text(record: &Value, name: &str) -> String {
    show(&field(record, name))
}

impl World {
    fn uuid_of(&self, reference: &str) -> String {
        [&self.pcis, &self.pgpus, &self.hosts]
            .iter()
            .find_map(|m| m.get(reference))
            .map(|r| text(r, "uuid"))
            .unwrap_or_else(|| {
                if reference == "OpaqueRef:NULL" {
                    "<not in database>".into()
                } else {
                    reference.to_owned()
                }
            })
    }

    fn host_fields(&self, record: &Value) -> [(&'static str, Value, bool); 2] {
        let host = text(record, "host");
        let name = self
            .hosts
            .get(&host)
            .map(|h| field(h, "name_label"))
            .unwrap_or_else(Value::void);
        [
            ("host-uuid", Value::String(self.uuid_of(&host)), false),
            ("host-name-label", name, false),
        ]
    }

    fn dependencies(&self, record: &Value) -> Value {
        match field(record, "dependencies") {
            Value::Array(refs) => Value::Array(
                refs.iter()
                    .filter_map(|r| {
                        r.as_str()
                            .and_then(|r| self.pcis.get(r))
                            .map(|p| field(p, "pci_id"))
                    })
                    .collect(),
            ),
            _ => Value::Array(vec![]),
        }
    }

    pub(super) fn pci(&self, r: &Value) -> XeRecord {
        let mut rec = vec![
            ("uuid", field(r, "uuid"), false),
            ("vendor-name", field(r, "vendor_name"), false),
            ("device-name", field(r, "device_name"), false),
            ("driver-name", field(r, "driver_name"), false),
        ];
        rec.extend(self.host_fields(r));
        rec.push(("pci-id", field(r, "pci_id"), false));
        rec.push(("dependencies", self.dependencies(r), false));
        rec.push(("other-config", field(r, "other_config"), true));
        rec
    }

    pub(super) fn pgpu(&self, r: &Value) -> XeRecord {
        let pci = self
            .pcis
            .get(&text(r, "PCI"))
            .cloned()
            .unwrap_or(Value::Struct(vec![]));
        let uuids = |name: &str| match field(r, name) {
            Value::Array(refs) => Value::Array(
                refs.iter()
                    .map(|x| Value::String(self.uuid_of(x.as_str().unwrap_or(""))))
                    .collect(),
            ),
            other => other,
        };
        let mut rec = vec![
            ("uuid", field(r, "uuid"), false),
            ("pci-uuid", field(&pci, "uuid"), false),
            ("vendor-name", field(&pci, "vendor_name"), false),
            ("device-name", field(&pci, "device_name"), false),
            ("dom0-access", field(r, "dom0_access"), false),
            (
                "is-system-display-device",
                field(r, "is_system_display_device"),
                false,
            ),
            (
                "gpu-group-uuid",
                Value::String(self.uuid_of(&text(r, "GPU_group"))),
                true,
            ),
            ("gpu-group-name-label", Value::void(), false),
        ];
        rec.extend(self.host_fields(r));
        rec.push(("pci-id", field(&pci, "pci_id"), false));
        rec.push(("dependencies", self.dependencies(&pci), false));
        rec.push(("other-config", field(r, "other_config"), true));
        rec.push(("supported-VGPU-types", uuids("supported_VGPU_types"), false));
        rec.push(("enabled-VGPU-types", uuids("enabled_VGPU_types"), true));
        rec.push(("resident-VGPUs", uuids("resident_VGPUs"), false));
        rec
    }

    pub(super) fn host(&self, r: &Value) -> XeRecord {
        vec![
            ("uuid", field(r, "uuid"), false),
            ("name-label", field(r, "name_label"), true),
            ("name-description", field(r, "name_description"), true),
            ("allowed-operations", field(r, "allowed_operations"), false),
            ("current-operations", field(r, "current_operations"), false),
            ("enabled", field(r, "enabled"), false),
            ("display", field(r, "display"), true),
            ("API-version-major", field(r, "API_version_major"), false),
            ("API-version-minor", field(r, "API_version_minor"), false),
            ("API-version-vendor", field(r, "API_version_vendor"), false),
            ("software-version", field(r, "software_version"), false),
            ("capabilities", field(r, "capabilities"), false),
            ("other-config", field(r, "other_config"), true),
            ("hostname", field(r, "hostname"), false),
            ("address", field(r, "address"), false),
        ]
    }
}
