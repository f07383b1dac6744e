//! Start-up synchronisation: the PCI and PGPU objects of this host made to
//! match the devices found in sysfs, as one store transaction.
//!
//! [`plan`] is a pure diff: it receives the stored objects and the wanted
//! devices and returns the changes. A device keeps its ref and uuid as long
//! as its address and ids (vendor, device, subsystem) are unchanged, across
//! daemon restarts and host reboots; a device replaced by another at the
//! same address gets a new object.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::api::context::Context;
use crate::api::objects::new_object;
use crate::api::{ApiError, Value, derived};
use crate::domain::service::{self, PciFunction};
use crate::store::{Change, Object, db};

/// What one PCI object should say, from discovery.
#[derive(Debug, Clone, PartialEq)]
pub struct WantedPci {
    /// Canonical `DDDD:BB:SS.F`.
    pub pci_id: String,
    /// Identity fields (`vendor_id`, ...), used to match stored objects.
    pub identity: [String; 4],
    /// Every other field to write.
    pub fields: Vec<(&'static str, Value)>,
    /// `pci_id` of the physical function, for a VF.
    pub physfn: Option<String>,
    /// `pci_id`s of the other functions of the slot.
    pub dependencies: Vec<String>,
    /// Display controller without a physical function: gets a PGPU.
    pub pgpu: Option<bool>,
}

impl WantedPci {
    /// The wanted state of one discovered function.
    pub fn from_function(f: &PciFunction, all: &[PciFunction]) -> WantedPci {
        let fields = vec![
            ("class_id", Value::String(f.class_id())),
            ("class_name", Value::String(f.names.class.clone())),
            ("vendor_id", Value::String(f.vendor_id_hex())),
            ("vendor_name", Value::String(f.names.vendor.clone())),
            ("device_id", Value::String(f.device_id_hex())),
            ("device_name", Value::String(f.names.device.clone())),
            ("pci_id", Value::String(f.address.to_string())),
            (
                "subsystem_vendor_id",
                Value::String(f.subsystem_vendor_id_hex()),
            ),
            (
                "subsystem_vendor_name",
                Value::String(f.names.subsystem_vendor.clone()),
            ),
            (
                "subsystem_device_id",
                Value::String(f.subsystem_device_id_hex()),
            ),
            (
                "subsystem_device_name",
                Value::String(f.names.subsystem_device.clone()),
            ),
            (
                "driver_name",
                Value::String(f.driver.clone().unwrap_or_default()),
            ),
        ];
        WantedPci {
            pci_id: f.address.to_string(),
            identity: [
                f.vendor_id_hex(),
                f.device_id_hex(),
                f.subsystem_vendor_id_hex(),
                f.subsystem_device_id_hex(),
            ],
            fields,
            physfn: f.physfn.map(|a| a.to_string()),
            dependencies: service::dependencies(f, all)
                .iter()
                .map(|a| a.to_string())
                .collect(),
            pgpu: (f.is_display() && f.physfn.is_none()).then_some(f.boot_vga),
        }
    }
}

fn identity(o: &Object) -> [String; 4] {
    [
        "vendor_id",
        "device_id",
        "subsystem_vendor_id",
        "subsystem_device_id",
    ]
    .map(|k| o.get_str(k).to_owned())
}

fn refs(values: impl IntoIterator<Item = String>) -> Value {
    Value::Array(values.into_iter().map(Value::String).collect())
}

/// The changes that make the stored PCI and PGPU objects of `host_ref`
/// match `wanted`, and the host's `PCIs`/`PGPUs` lists.
pub fn plan(
    host_ref: &str,
    stored_pcis: &[Arc<Object>],
    stored_pgpus: &[Arc<Object>],
    wanted: &[WantedPci],
) -> Vec<Change> {
    let mut changes = Vec::new();
    let mut by_id: HashMap<&str, &Arc<Object>> = stored_pcis
        .iter()
        .filter(|o| o.get_str("host") == host_ref)
        .map(|o| (o.get_str("pci_id"), o))
        .collect();
    // First pass: a ref for every wanted device (kept or new).
    let mut ref_of: BTreeMap<String, (String, Option<Arc<Object>>)> = BTreeMap::new();
    let mut replaced = Vec::new();
    for w in wanted {
        let kept = match by_id.remove(w.pci_id.as_str()) {
            Some(o) if identity(o) == w.identity => Some(o.clone()),
            Some(o) => {
                replaced.push(o.reference.clone());
                None
            }
            None => None,
        };
        let reference = kept
            .as_ref()
            .map(|o| o.reference.clone())
            .unwrap_or_else(db::new_ref);
        ref_of.insert(w.pci_id.clone(), (reference, kept));
    }
    let reference_for = |pci_id: &str| ref_of.get(pci_id).map(|(r, _)| r.clone());
    // Second pass: full field sets, including relations by ref.
    for w in wanted {
        let Some((reference, kept)) = ref_of.get(&w.pci_id) else {
            continue;
        };
        let vfs: Vec<String> = wanted
            .iter()
            .filter(|v| v.physfn.as_deref() == Some(w.pci_id.as_str()))
            .filter_map(|v| reference_for(&v.pci_id))
            .collect();
        let mut fields: Vec<(String, Value)> = w
            .fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        fields.push(("host".into(), Value::str(host_ref)));
        fields.push(("functions".into(), Value::Int(1)));
        fields.push((
            "dependencies".into(),
            refs(w.dependencies.iter().filter_map(|d| reference_for(d))),
        ));
        fields.push(("virtual_functions".into(), refs(vfs)));
        fields.push((
            "physical_function".into(),
            Value::String(
                w.physfn
                    .as_deref()
                    .and_then(reference_for)
                    .unwrap_or_else(|| "OpaqueRef:NULL".into()),
            ),
        ));
        match kept {
            Some(_) => changes.push(Change::Update {
                reference: reference.clone(),
                fields,
            }),
            None => {
                let pairs = fields
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.clone()))
                    .collect();
                changes.push(Change::Create(new_object(
                    "PCI",
                    reference.clone(),
                    db::new_uuid(),
                    pairs,
                )));
            }
        }
    }
    // Vanished (or replaced) devices.
    let removed: Vec<String> = by_id
        .values()
        .map(|o| o.reference.clone())
        .chain(replaced)
        .collect();
    changes.extend(removed.iter().map(|r| Change::Delete(r.clone())));

    // PGPUs: one per display PCI without a physical function.
    let mut pgpu_by_pci: HashMap<&str, &Arc<Object>> = stored_pgpus
        .iter()
        .filter(|p| p.get_str("host") == host_ref)
        .map(|p| (p.get_str("PCI"), p))
        .collect();
    let mut pgpu_refs = Vec::new();
    for w in wanted {
        let (Some(boot_vga), Some((pci_ref, _))) = (w.pgpu, ref_of.get(&w.pci_id)) else {
            continue;
        };
        let fields = vec![("is_system_display_device".to_owned(), Value::Bool(boot_vga))];
        match pgpu_by_pci.remove(pci_ref.as_str()) {
            Some(existing) => {
                pgpu_refs.push(existing.reference.clone());
                changes.push(Change::Update {
                    reference: existing.reference.clone(),
                    fields,
                });
            }
            None => {
                let reference = db::new_ref();
                pgpu_refs.push(reference.clone());
                changes.push(Change::Create(new_object(
                    "PGPU",
                    reference,
                    db::new_uuid(),
                    vec![
                        ("PCI", Value::String(pci_ref.clone())),
                        ("host", Value::str(host_ref)),
                        ("is_system_display_device", Value::Bool(boot_vga)),
                    ],
                )));
            }
        }
    }
    changes.extend(
        pgpu_by_pci
            .values()
            .map(|p| Change::Delete(p.reference.clone())),
    );
    let pci_refs: Vec<String> = ref_of.values().map(|(r, _)| r.clone()).collect();
    changes.push(Change::Update {
        reference: host_ref.to_owned(),
        fields: vec![
            ("PCIs".into(), refs(pci_refs)),
            ("PGPUs".into(), refs(pgpu_refs)),
        ],
    });
    changes
}

/// Scan the host and bring the store in line; returns (created, updated,
/// destroyed) counts of PCI objects.
///
/// Fails closed: when discovery itself fails (sysfs cannot be listed), the
/// stored PCI and PGPU objects are kept exactly as they are, an error
/// naming the reason is logged and the counts are all zero. Replacing them
/// with the empty result would give every device a new ref.
pub fn synchronise(ctx: &Context) -> Result<(usize, usize, usize), ApiError> {
    let started = std::time::Instant::now();
    let found = match ctx.host.discover() {
        Ok(found) => found,
        Err(e) => {
            tracing::error!(
                reason = %e,
                stored = ctx.store.all("PCI").len(),
                "PCI discovery failed: the stored PCI and PGPU objects are kept unchanged"
            );
            return Ok((0, 0, 0));
        }
    };
    let listed: Vec<PciFunction> = found.iter().filter(|f| f.is_listed()).cloned().collect();
    let wanted: Vec<WantedPci> = listed
        .iter()
        .map(|f| WantedPci::from_function(f, &listed))
        .collect();
    let changes = plan(
        &ctx.host_ref,
        &ctx.store.all("PCI"),
        &ctx.store.all("PGPU"),
        &wanted,
    );
    let count = |pred: fn(&Change) -> bool| changes.iter().filter(|c| pred(c)).count();
    let created = count(|c| matches!(c, Change::Create(o) if o.class == "PCI"));
    let destroyed = changes
        .iter()
        .filter(|c| matches!(c, Change::Delete(r) if ctx.store.get_of("PCI", r).is_some()))
        .count();
    let updated = wanted.len() - created;
    ctx.apply(changes)?;
    derived::recompute(ctx);
    tracing::info!(
        functions = found.len(),
        listed = wanted.len(),
        created,
        destroyed,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "PCI devices synchronised"
    );
    Ok((created, updated, destroyed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted(pci_id: &str, device: &str, physfn: Option<&str>, pgpu: Option<bool>) -> WantedPci {
        WantedPci {
            pci_id: pci_id.into(),
            identity: ["10de".into(), device.into(), "".into(), "".into()],
            fields: vec![
                ("pci_id", Value::str(pci_id)),
                ("vendor_id", Value::str("10de")),
                ("device_id", Value::str(device)),
                ("subsystem_vendor_id", Value::str("")),
                ("subsystem_device_id", Value::str("")),
            ],
            physfn: physfn.map(str::to_owned),
            dependencies: vec![],
            pgpu,
        }
    }

    fn apply(store: &crate::store::Store, changes: Vec<Change>) {
        store.apply(changes).unwrap();
    }

    fn setup() -> crate::store::Store {
        let store = crate::store::Store::open_in_memory().unwrap();
        let host = new_object("host", "OpaqueRef:host".into(), "h".into(), vec![]);
        store.apply(vec![Change::Create(host)]).unwrap();
        store
    }

    fn sync_with(store: &crate::store::Store, w: &[WantedPci]) {
        apply(
            store,
            plan("OpaqueRef:host", &store.all("PCI"), &store.all("PGPU"), w),
        );
    }

    fn refs_by_id(store: &crate::store::Store) -> BTreeMap<String, (String, String)> {
        store
            .all("PCI")
            .iter()
            .map(|o| {
                (
                    o.get_str("pci_id").to_owned(),
                    (o.reference.clone(), o.uuid.clone()),
                )
            })
            .collect()
    }

    #[test]
    fn unchanged_devices_keep_refs_and_uuids() {
        let store = setup();
        let devices = [
            wanted("0000:01:00.0", "1eb8", None, Some(false)),
            wanted("0000:02:00.0", "1234", None, None),
        ];
        sync_with(&store, &devices);
        let before = refs_by_id(&store);
        let pgpu_before = store.all("PGPU")[0].reference.clone();
        let generation = store.generation();
        sync_with(&store, &devices);
        assert_eq!(refs_by_id(&store), before);
        assert_eq!(store.all("PGPU")[0].reference, pgpu_before);
        assert_eq!(
            store.generation(),
            generation,
            "a sync with nothing new changes nothing"
        );
    }

    #[test]
    fn added_removed_and_replaced_devices() {
        let store = setup();
        sync_with(
            &store,
            &[
                wanted("0000:01:00.0", "1eb8", None, Some(false)),
                wanted("0000:02:00.0", "1234", None, None),
            ],
        );
        let before = refs_by_id(&store);
        sync_with(
            &store,
            &[
                wanted("0000:01:00.0", "2204", None, Some(false)),
                wanted("0000:03:00.0", "5678", None, None),
            ],
        );
        let after = refs_by_id(&store);
        assert!(
            !after.contains_key("0000:02:00.0"),
            "vanished device destroyed"
        );
        assert_ne!(
            after["0000:01:00.0"], before["0000:01:00.0"],
            "a different device at the same address is new"
        );
        assert!(after.contains_key("0000:03:00.0"));
        assert_eq!(store.all("PGPU").len(), 1);
        assert_eq!(store.all("PGPU")[0].get_str("PCI"), after["0000:01:00.0"].0);
        let host = store.get("OpaqueRef:host").unwrap();
        assert_eq!(
            host.get("PCIs").map(|v| match v {
                Value::Array(a) => a.len(),
                _ => 0,
            }),
            Some(2)
        );
    }

    #[test]
    fn sriov_relations_both_ways() {
        let store = setup();
        sync_with(
            &store,
            &[
                wanted("0000:05:00.0", "1572", None, None),
                wanted("0000:05:02.0", "154c", Some("0000:05:00.0"), None),
                wanted("0000:05:02.1", "154c", Some("0000:05:00.0"), None),
            ],
        );
        let ids = refs_by_id(&store);
        let pf = store.get(&ids["0000:05:00.0"].0).unwrap();
        let vf = store.get(&ids["0000:05:02.1"].0).unwrap();
        assert_eq!(vf.get_str("physical_function"), pf.reference);
        assert_eq!(
            pf.get("virtual_functions"),
            Some(&Value::strings([
                ids["0000:05:02.0"].0.clone(),
                ids["0000:05:02.1"].0.clone()
            ]))
        );
        assert_eq!(pf.get_str("physical_function"), "OpaqueRef:NULL");
    }
}
