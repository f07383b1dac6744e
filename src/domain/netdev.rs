//! Which PCI functions carry dom0's own network: the interfaces of its
//! IPv4 routes (`/proc/net/route`: the default route's, and the subnet
//! route the kernel adds for every address dom0 has, so a host reached on
//! a network without a gateway, as the lab's, is covered too) and its
//! management interface (XCP-ng's inventory `MANAGEMENT_INTERFACE`), down
//! through bridges (`/sys/class/net/BR/brif/*`, as XCP-ng's `xenbr0`),
//! bonds and VLANs (their `lower_*` links) to the physical interfaces and
//! the PCI function nearest above each in the device tree. Hiding one of
//! those cuts the host off a network it uses. Pure functions over what
//! the host layer read.

use std::collections::{BTreeMap, BTreeSet};

use crate::domain::PciAddress;
use crate::host::{HostError, HostRoot, netdev};

/// The PCI functions that carry dom0's IPv4 routes and its management
/// interface, each with the interface it carries, as the
/// host is now.
pub fn carrying_dom0(host: &HostRoot) -> Result<BTreeMap<String, String>, HostError> {
    let interfaces = netdev::interfaces(host)?
        .into_iter()
        .map(|raw| {
            let pci = raw.path.as_deref().and_then(nearest_pci_function);
            (
                raw.name,
                NetInterface {
                    pci,
                    below: raw.below,
                },
            )
        })
        .collect();
    let mut roots = routed_interfaces(&netdev::route_table(host)?);
    roots.extend(netdev::management_interface(host)?);
    Ok(pci_functions_under(&roots, &interfaces))
}

/// One network interface as sysfs shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetInterface {
    /// The PCI function its `device` link points at (`None`: virtual, or
    /// not on PCI).
    pub pci: Option<String>,
    /// The interfaces below it: a bridge's ports (`brif`), a bond's or a
    /// VLAN's lower devices (`lower_*`).
    pub below: Vec<String>,
}

/// The PCI function nearest above an interface's place in the device
/// tree (the last path component that is a PCI address): the NIC itself,
/// virtio-net's PCI function above its `virtioN` device, the USB
/// controller below which a USB NIC sits. `None` for a virtual interface.
pub fn nearest_pci_function(path: &str) -> Option<String> {
    path.rsplit('/')
        .find(|c| c.parse::<PciAddress>().is_ok())
        .map(str::to_owned)
}

/// The interfaces that carry a route in `/proc/net/route`'s text (IPv4:
/// the default route, a gateway's, or the subnet of an address dom0 has
/// on it), each once, the loopback left out. A line that does not parse
/// (not eleven fields, a destination that is not hexadecimal) is skipped.
pub fn routed_interfaces(route: &str) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    for line in route.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(iface), Some(dest)) = (fields.first(), fields.get(1)) else {
            continue;
        };
        if fields.len() < 8 || u32::from_str_radix(dest, 16).is_err() || *iface == "lo" {
            continue;
        }
        if !found.iter().any(|f| f == iface) {
            found.push((*iface).to_owned());
        }
    }
    found
}

/// The PCI functions under `roots` (followed through every interface
/// below, cycles ignored), each with the interface it carries.
pub fn pci_functions_under(
    roots: &[String],
    interfaces: &BTreeMap<String, NetInterface>,
) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    for root in roots {
        let mut seen = BTreeSet::new();
        let mut todo = vec![root.clone()];
        while let Some(name) = todo.pop() {
            if !seen.insert(name.clone()) {
                continue;
            }
            let Some(iface) = interfaces.get(&name) else {
                continue;
            };
            if let Some(pci) = &iface.pci {
                found.entry(pci.clone()).or_insert_with(|| root.clone());
            }
            todo.extend(iface.below.iter().cloned());
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pci_function_above_an_interface() {
        for (path, want) in [
            (
                "../../devices/pci0000:00/0000:00:03.0/net/enp0s3",
                Some("0000:00:03.0"),
            ),
            // virtio-net: the function is above the virtio device.
            (
                "../../devices/pci0000:00/0000:00:03.0/virtio2/net/eth0",
                Some("0000:00:03.0"),
            ),
            // Behind a root port: the nearest function is the NIC's.
            (
                "../../devices/pci0000:00/0000:00:1c.0/0000:03:00.1/net/eth1",
                Some("0000:03:00.1"),
            ),
            // A USB NIC: its USB controller.
            (
                "../../devices/pci0000:00/0000:00:14.0/usb1/1-1/1-1:1.0/net/usb0",
                Some("0000:00:14.0"),
            ),
            ("../../devices/virtual/net/xenbr0", None),
            ("../../devices/pci0000:00", None),
        ] {
            assert_eq!(nearest_pci_function(path).as_deref(), want, "{path}");
        }
    }

    #[test]
    fn routed_interfaces_from_proc_net_route() {
        let head =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n";
        // A default route, its subnet, a second default, a host route.
        let route = format!(
            "{head}\
xenbr0\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
xenbr0\t0001A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
eth1\t00000000\t0102A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
eth2\t0A0A0A0A\t00000000\t0005\t0\t0\t0\tFFFFFFFF\t0\t0\t0\n"
        );
        assert_eq!(routed_interfaces(&route), vec!["xenbr0", "eth1", "eth2"]);
        // The lab: QEMU's user network gives no gateway, only the subnet
        // of dom0's address (seen on the real Debian 12 dom0).
        let lab =
            format!("{head}enp0s3\t0002000A\t00000000\t0001\t0\t0\t1024\t00FFFFFF\t0\t0\t0\n");
        assert_eq!(routed_interfaces(&lab), vec!["enp0s3"]);
        assert!(routed_interfaces("").is_empty());
        assert!(
            routed_interfaces(&format!(
                "{head}broken line\nlo\t0000007F\t0\t1\t0\t0\t0\t000000FF\n"
            ))
            .is_empty()
        );
    }

    #[test]
    fn through_bridges_bonds_and_vlans_to_the_functions() {
        let iface = |pci: Option<&str>, below: &[&str]| NetInterface {
            pci: pci.map(str::to_owned),
            below: below.iter().map(|s| (*s).to_owned()).collect(),
        };
        let interfaces: BTreeMap<String, NetInterface> = [
            ("xenbr0", iface(None, &["bond0.10", "vif1.0"])),
            ("bond0.10", iface(None, &["bond0"])),
            ("bond0", iface(None, &["eth0", "eth1"])),
            ("eth0", iface(Some("0000:03:00.0"), &[])),
            ("eth1", iface(Some("0000:03:00.1"), &[])),
            ("vif1.0", iface(None, &[])),
            ("eth2", iface(Some("0000:00:1f.6"), &[])),
            // A loop (a misreading) does not hang.
            ("loop", iface(None, &["loop"])),
        ]
        .into_iter()
        .map(|(n, i)| (n.to_owned(), i))
        .collect();
        let found = pci_functions_under(&["xenbr0".into(), "loop".into()], &interfaces);
        assert_eq!(
            found,
            BTreeMap::from([
                ("0000:03:00.0".to_owned(), "xenbr0".to_owned()),
                ("0000:03:00.1".to_owned(), "xenbr0".to_owned()),
            ])
        );
        assert!(pci_functions_under(&["absent".into()], &interfaces).is_empty());
    }
}
