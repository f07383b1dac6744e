//! dom0's network interfaces as sysfs shows them (`sys/class/net/IF`, a
//! link to the interface's place in the device tree; a bridge's `brif/`
//! ports, the `lower_*` links of a bond or VLAN) and its IPv4 routing
//! table (`proc/net/route`).

use crate::host::{HostError, HostRoot};

/// One interface, raw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawNetInterface {
    /// Its name.
    pub name: String,
    /// Where it sits in the device tree: the target of its
    /// `sys/class/net/IF` link (`../../devices/pci0000:00/0000:00:03.0/
    /// virtio2/net/eth0` for virtio-net: the PCI function is an ancestor,
    /// not the `device` link's target; a USB NIC sits below its USB
    /// controller's function).
    pub path: Option<String>,
    /// The interfaces below it (bridge ports, lower devices).
    pub below: Vec<String>,
}

/// Every interface in `sys/class/net` (none when the directory is absent).
pub fn interfaces(host: &HostRoot) -> Result<Vec<RawNetInterface>, HostError> {
    let mut names = host
        .list_dir_if_exists("sys/class/net")?
        .unwrap_or_default();
    names.sort();
    let mut found = Vec::new();
    for name in names {
        let dir = format!("sys/class/net/{name}");
        let path = host.read_link_if_exists(&dir)?;
        let mut below = host
            .list_dir_if_exists(&format!("{dir}/brif"))?
            .unwrap_or_default();
        below.extend(
            host.list_dir_if_exists(&dir)?
                .unwrap_or_default()
                .into_iter()
                .filter_map(|n| n.strip_prefix("lower_").map(str::to_owned)),
        );
        below.sort();
        found.push(RawNetInterface { name, path, below });
    }
    Ok(found)
}

/// The text of `proc/net/route`. The running host (a root of `/`) always
/// has it, so its absence there is an error (a sandbox hiding it must not
/// read as "no routes"); another tree without it has no IPv4 routes.
pub fn route_table(host: &HostRoot) -> Result<String, HostError> {
    let bytes = if host.root() == std::path::Path::new("/") {
        host.read("proc/net/route")?
    } else {
        host.read_if_exists("proc/net/route")?.unwrap_or_default()
    };
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// XCP-ng's management interface: `MANAGEMENT_INTERFACE` in
/// `etc/xensource-inventory` (`None`: no inventory, or no such key, or
/// empty as on a host with no management interface).
pub fn management_interface(host: &HostRoot) -> Result<Option<String>, HostError> {
    let Some(text) = host.read_if_exists(crate::host::facts::INVENTORY)? else {
        return Ok(None);
    };
    Ok(
        crate::host::facts::parse_inventory(&String::from_utf8_lossy(&text))
            .into_iter()
            .find(|(k, v)| k == "MANAGEMENT_INTERFACE" && !v.is_empty())
            .map(|(_, v)| v),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bridge_over_a_bond_over_two_pci_nics() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let mk = |rel: &str| std::fs::create_dir_all(root.join(rel)).unwrap();
        let link =
            |target: &str, rel: &str| std::os::unix::fs::symlink(target, root.join(rel)).unwrap();
        std::fs::write(root.join(crate::host::MOCK_HOST_MARKER), "").unwrap();
        mk("sys/devices/pci0000:00/0000:03:00.0/net/eth0");
        mk("sys/devices/pci0000:00/0000:03:00.1/net/eth1");
        mk("sys/devices/virtual/net/bond0");
        mk("sys/devices/virtual/net/xenbr0/brif");
        mk("sys/class/net");
        link(
            "../../devices/pci0000:00/0000:03:00.0/net/eth0",
            "sys/class/net/eth0",
        );
        link(
            "../../devices/pci0000:00/0000:03:00.1/net/eth1",
            "sys/class/net/eth1",
        );
        link("../../devices/virtual/net/bond0", "sys/class/net/bond0");
        link("../../devices/virtual/net/xenbr0", "sys/class/net/xenbr0");
        link(
            "../../../0000:03:00.0",
            "sys/devices/pci0000:00/0000:03:00.0/net/eth0/device",
        );
        link(
            "../../../0000:03:00.1",
            "sys/devices/pci0000:00/0000:03:00.1/net/eth1/device",
        );
        link("../eth0", "sys/devices/virtual/net/bond0/lower_eth0");
        link("../eth1", "sys/devices/virtual/net/bond0/lower_eth1");
        link("../../bond0", "sys/devices/virtual/net/xenbr0/brif/bond0");
        let host = HostRoot::new(root);
        let got = interfaces(&host).unwrap();
        let by: std::collections::BTreeMap<_, _> =
            got.iter().map(|i| (i.name.as_str(), i)).collect();
        assert_eq!(
            by["eth0"].path.as_deref(),
            Some("../../devices/pci0000:00/0000:03:00.0/net/eth0")
        );
        assert_eq!(by["bond0"].below, vec!["eth0", "eth1"]);
        assert_eq!(by["xenbr0"].below, vec!["bond0"]);
        assert_eq!(
            by["xenbr0"].path.as_deref(),
            Some("../../devices/virtual/net/xenbr0")
        );
        assert_eq!(route_table(&host).unwrap(), "");
    }
}
