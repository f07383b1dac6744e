//! Whether a PCI function can be passed through, and what stands in the
//! way (`PCI.get_passthrough_readiness`): plain facts read from sysfs and
//! from Xen, each with its reader here, and a verdict with its reasons.
//! Unknown is said as unknown, never guessed.
//!
//! - Xen's IOMMU, from the hypervisor: `xl info`'s `virt_caps` holds
//!   `hvm_directio` or `pv_directio` when Xen can assign devices (Xen
//!   sets them only with its IOMMU on). The dom0 kernel cannot tell.
//! - The function's reset: the kernel's `reset_method` (Linux 5.15 on),
//!   else whether a `reset` file exists.
//! - Its Xen device group: Xen maps every bus behind a PCIe-to-PCI or
//!   legacy PCI bridge to that bridge (`alloc_pdev`'s `bus2bridge`), so
//!   the functions behind the topmost such bridge share one requester id
//!   and are assigned together (`find_upstream_bridge`,
//!   `intel_iommu_group_id`). A function is PCIe when sysfs gives it link
//!   attributes (`current_link_speed`: `pcie_dev_attrs_are_visible`).

use std::collections::BTreeMap;

use crate::domain::{Dom0Access, PciAddress};

/// The line of `xl info` that lists Xen's virtualisation capabilities.
const VIRT_CAPS: &str = "virt_caps";

/// Whether Xen can assign devices, from `xl info`'s text: `Some(true)`
/// when `virt_caps` holds `hvm_directio` or `pv_directio`, `Some(false)`
/// when it holds neither, `None` without a `virt_caps` line.
pub fn iommu_from_xl_info(text: &str) -> Option<bool> {
    let caps = text.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == VIRT_CAPS).then_some(value)
    })?;
    Some(
        caps.split_whitespace()
            .any(|c| c == "hvm_directio" || c == "pv_directio"),
    )
}

/// One function as the group rule needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    /// Its address.
    pub address: PciAddress,
    /// The functions on its path from the root complex, itself last
    /// (the bridges above it first).
    pub path: Vec<PciAddress>,
    /// Whether it is a PCIe function (it has link attributes).
    pub pcie: bool,
}

/// The bridge whose requester id Xen gives `addr`: the topmost bridge on
/// its path that is a legacy PCI bridge (not PCIe) or a PCIe-to-PCI bridge
/// (PCIe, with a conventional function right below it); `None` when there
/// is none and the function is its own group.
pub fn group_bridge(all: &[Placed], addr: &PciAddress) -> Option<PciAddress> {
    let pcie = |a: &PciAddress| all.iter().find(|p| p.address == *a).map(|p| p.pcie);
    let me = all.iter().find(|p| p.address == *addr)?;
    let path = &me.path;
    let bridges = path.len().saturating_sub(1);
    (0..bridges).find_map(|i| {
        let bridge = path[i];
        let below = path[i + 1];
        let legacy = pcie(&bridge) == Some(false);
        let to_pci = pcie(&bridge) == Some(true) && pcie(&below) == Some(false);
        (legacy || to_pci).then_some(bridge)
    })
}

/// The other functions of `addr`'s Xen device group (behind the same
/// topmost PCIe-to-PCI or legacy bridge), in address order; empty when it
/// is alone.
pub fn device_group(all: &[Placed], addr: &PciAddress) -> Vec<PciAddress> {
    let Some(bridge) = group_bridge(all, addr) else {
        return Vec::new();
    };
    let mut members: Vec<PciAddress> = all
        .iter()
        .filter(|p| p.address != *addr && p.address != bridge && p.path.contains(&bridge))
        .map(|p| p.address)
        .collect();
    members.sort();
    members
}

/// The other functions of `addr`'s slot (one device's functions), in
/// address order.
pub fn slot_functions(all: &[Placed], addr: &PciAddress) -> Vec<PciAddress> {
    let mut found: Vec<PciAddress> = all
        .iter()
        .map(|p| p.address)
        .filter(|a| {
            a != addr && a.domain == addr.domain && a.bus == addr.bus && a.slot == addr.slot
        })
        .collect();
    found.sort();
    found
}

/// Whether xen-pciback is there early enough for a hide at boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pciback {
    /// Ready: built in, or a module the initramfs loads early; how.
    Early(String),
    /// A module nothing loads early yet (a hide through pcipass lists it
    /// for the initramfs); what is missing.
    NotEarly(String),
    /// The kernel has no xen-pciback.
    Absent,
    /// The facts do not tell; why.
    Unknown(String),
}

/// What the report is made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// The function.
    pub function: PciAddress,
    /// Its dom0 access status.
    pub status: Dom0Access,
    /// The driver bound now.
    pub driver: Option<String>,
    /// Whether Xen's IOMMU can assign devices (`None`: unknown), and the
    /// source or why it is unknown.
    pub iommu: (Option<bool>, String),
    /// Its reset methods (empty: none; `None`: unknown).
    pub reset: Option<Vec<String>>,
    /// The other functions of its slot, with their statuses.
    pub slot: Vec<(PciAddress, Dom0Access)>,
    /// The other functions of its Xen device group, with their statuses.
    pub group: Vec<(PciAddress, Dom0Access)>,
    /// Why a hide of it would be refused (a boot disk, dom0's network,
    /// the host display), or that this cannot be told.
    pub hide_refused: Option<String>,
    /// The running domain it is assigned to (`Err`: cannot be told).
    pub assigned: Result<Option<String>, String>,
    /// xen-pciback's loading.
    pub pciback: Pciback,
}

/// xapi-style verdicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It can be assigned to a domain now.
    Ready,
    /// It can be once dom0 lets go of it (a hide and a reboot, or a hide
    /// now), with the functions that must go with it.
    NeedsReboot,
    /// Something the host or its firmware must change first.
    Blocked,
    /// A fact that decides it is unknown.
    Unknown,
}

impl Verdict {
    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ready => "ready",
            Verdict::NeedsReboot => "needs_reboot",
            Verdict::Blocked => "blocked",
            Verdict::Unknown => "unknown",
        }
    }
}

/// True when dom0 has (or will have after the next boot) the function.
fn with_dom0(status: Dom0Access) -> bool {
    matches!(
        status,
        Dom0Access::Enabled | Dom0Access::DisableOnReboot | Dom0Access::EnableOnReboot
    )
}

fn addresses(list: &[(PciAddress, Dom0Access)]) -> String {
    list.iter()
        .map(|(a, _)| a.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The report: every key the idl documents, `verdict` and `reasons`
/// always.
pub fn report(f: &Facts) -> BTreeMap<String, String> {
    let mut blocked: Vec<String> = Vec::new();
    let mut unknown: Vec<String> = Vec::new();
    let mut pending: Vec<String> = Vec::new();
    let mut notes: Vec<String> = Vec::new();

    match f.iommu.0 {
        Some(true) => {}
        Some(false) => blocked.push(format!(
            "Xen's IOMMU is not active (no hvm_directio or pv_directio in xl info's virt_caps: \
             {}): turn on VT-d or AMD-Vi in the firmware",
            f.iommu.1
        )),
        None => unknown.push(format!("Xen's IOMMU is unknown: {}", f.iommu.1)),
    }
    if let Some(why) = &f.hide_refused
        && with_dom0(f.status)
    {
        blocked.push(format!("dom0 needs it: {why}"));
    }
    match &f.pciback {
        Pciback::Absent => {
            blocked
                .push("the dom0 kernel has no xen-pciback (neither built in nor a module)".into());
        }
        Pciback::Unknown(why) => {
            unknown.push(format!("whether xen-pciback loads early is unknown: {why}"));
        }
        Pciback::NotEarly(what) => notes.push(format!(
            "xen-pciback is not loaded early yet ({what}); a hide through pcipass sets that up"
        )),
        Pciback::Early(_) => {}
    }
    match f.status {
        Dom0Access::Enabled => pending.push(format!(
            "dom0 has it{}: hide it (at the next boot, or now)",
            f.driver
                .as_deref()
                .map(|d| format!(" (driver {d})"))
                .unwrap_or_default()
        )),
        Dom0Access::DisableOnReboot => {
            pending.push("hidden at the next boot: reboot, or hide it now".into());
        }
        Dom0Access::EnableOnReboot => notes.push("the next boot gives it back to dom0".into()),
        Dom0Access::Disabled => {}
    }
    let group_with_dom0: Vec<(PciAddress, Dom0Access)> = f
        .group
        .iter()
        .filter(|(_, s)| with_dom0(*s))
        .copied()
        .collect();
    if !group_with_dom0.is_empty() {
        pending.push(format!(
            "{} share its Xen device group (behind one PCIe-to-PCI bridge) and dom0 still has \
             them: hide them with it",
            addresses(&group_with_dom0)
        ));
    }
    let slot_with_dom0: Vec<(PciAddress, Dom0Access)> = f
        .slot
        .iter()
        .filter(|(_, s)| with_dom0(*s))
        .copied()
        .collect();
    if !slot_with_dom0.is_empty() {
        notes.push(format!(
            "{} (the same device) still with dom0: hide the whole device to give it to one VM",
            addresses(&slot_with_dom0)
        ));
    }
    match &f.reset {
        Some(methods) if methods.is_empty() => {
            notes.push("it has no reset method: it may not come back clean between two VMs".into());
        }
        None => notes.push("its reset methods are unknown".into()),
        Some(_) => {}
    }
    let verdict = if !blocked.is_empty() {
        Verdict::Blocked
    } else if !unknown.is_empty() {
        Verdict::Unknown
    } else if !pending.is_empty() {
        Verdict::NeedsReboot
    } else {
        Verdict::Ready
    };
    let reasons: Vec<String> = blocked.into_iter().chain(unknown).chain(pending).collect();

    let mut out = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        out.insert(k.to_owned(), v);
    };
    put("verdict", verdict.as_str().to_owned());
    put("reasons", reasons.join("; "));
    put("notes", notes.join("; "));
    put("dom0_access", f.status.as_str().to_owned());
    put("driver", f.driver.clone().unwrap_or_default());
    put(
        "iommu",
        match f.iommu.0 {
            Some(true) => "active",
            Some(false) => "inactive",
            None => "unknown",
        }
        .to_owned(),
    );
    put(
        "reset",
        match &f.reset {
            Some(m) if m.is_empty() => "none".to_owned(),
            Some(m) => m.join(" "),
            None => "unknown".to_owned(),
        },
    );
    put("slot_functions", addresses(&f.slot));
    put("device_group", addresses(&f.group));
    put(
        "with_dom0",
        addresses(&[slot_with_dom0, group_with_dom0].concat()),
    );
    put("hide_refused", f.hide_refused.clone().unwrap_or_default());
    put(
        "assigned_to",
        match &f.assigned {
            Ok(Some(domain)) => domain.clone(),
            Ok(None) => String::new(),
            Err(why) => format!("unknown: {why}"),
        },
    );
    put(
        "pciback",
        match &f.pciback {
            Pciback::Early(how) => how.clone(),
            Pciback::NotEarly(what) => format!("not early: {what}"),
            Pciback::Absent => "absent".to_owned(),
            Pciback::Unknown(why) => format!("unknown: {why}"),
        },
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> PciAddress {
        s.parse().unwrap()
    }

    #[test]
    fn xens_iommu_from_virt_caps() {
        for (text, want) in [
            (
                "virt_caps              : pv hvm hvm_directio pv_directio hap shadow\n",
                Some(true),
            ),
            ("virt_caps : pv hvm hap gnttab-v1 gnttab-v2\n", Some(false)),
            ("host : lab\nvirt_caps : pv_directio\n", Some(true)),
            ("virt_caps : hvm_directio_x\n", Some(false)),
            ("xen_version : 4.17.5\n", None),
            ("", None),
        ] {
            assert_eq!(iommu_from_xl_info(text), want, "{text:?}");
        }
    }

    fn placed(addr: &str, path: &[&str], pcie: bool) -> Placed {
        let mut p: Vec<PciAddress> = path.iter().map(|s| a(s)).collect();
        p.push(a(addr));
        Placed {
            address: a(addr),
            path: p,
            pcie,
        }
    }

    /// Behind a PCIe-to-PCI bridge the conventional functions share one
    /// group; PCIe endpoints behind root ports and on the root bus are
    /// alone; a legacy bridge below the PCIe-to-PCI one does not split it.
    #[test]
    fn xen_device_groups_follow_the_topmost_pci_bridge() {
        let all = vec![
            placed("0000:00:1c.0", &[], true),               // root port
            placed("0000:01:00.0", &["0000:00:1c.0"], true), // PCIe-to-PCI bridge
            placed("0000:02:01.0", &["0000:00:1c.0", "0000:01:00.0"], false),
            placed("0000:02:02.0", &["0000:00:1c.0", "0000:01:00.0"], false),
            placed("0000:02:03.0", &["0000:00:1c.0", "0000:01:00.0"], false), // legacy bridge
            placed(
                "0000:03:00.0",
                &["0000:00:1c.0", "0000:01:00.0", "0000:02:03.0"],
                false,
            ),
            placed("0000:00:01.0", &[], true), // root port
            placed("0000:04:00.0", &["0000:00:01.0"], true), // GPU
            placed("0000:04:00.1", &["0000:00:01.0"], true), // its audio
            placed("0000:00:06.0", &[], false), // conventional on the root bus
            placed("0000:00:1e.0", &[], false), // legacy bridge on the root bus
            placed("0000:05:00.0", &["0000:00:1e.0"], false),
        ];
        let group = |s: &str| {
            device_group(&all, &a(s))
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            group("0000:02:01.0"),
            ["0000:02:02.0", "0000:02:03.0", "0000:03:00.0"]
        );
        assert_eq!(
            group_bridge(&all, &a("0000:03:00.0")),
            Some(a("0000:01:00.0"))
        );
        assert_eq!(
            group("0000:03:00.0"),
            ["0000:02:01.0", "0000:02:02.0", "0000:02:03.0"]
        );
        assert!(group("0000:04:00.0").is_empty());
        assert!(group("0000:00:06.0").is_empty());
        assert_eq!(group("0000:05:00.0"), Vec::<String>::new());
        assert_eq!(
            group_bridge(&all, &a("0000:05:00.0")),
            Some(a("0000:00:1e.0"))
        );
        assert_eq!(
            slot_functions(&all, &a("0000:04:00.0")),
            vec![a("0000:04:00.1")]
        );
        assert!(slot_functions(&all, &a("0000:00:06.0")).is_empty());
    }

    fn facts() -> Facts {
        Facts {
            function: a("0000:04:00.0"),
            status: Dom0Access::Disabled,
            driver: Some("pciback".into()),
            iommu: (Some(true), "xl info".into()),
            reset: Some(vec!["flr".into(), "bus".into()]),
            slot: vec![(a("0000:04:00.1"), Dom0Access::Disabled)],
            group: Vec::new(),
            hide_refused: None,
            assigned: Ok(None),
            pciback: Pciback::Early("built in".into()),
        }
    }

    /// Each verdict reached by changing the one fact that decides it.
    #[test]
    fn each_verdict_and_its_reason() {
        let ready = report(&facts());
        assert_eq!(ready["verdict"], "ready");
        assert_eq!(ready["reasons"], "");
        assert_eq!(ready["reset"], "flr bus");
        assert_eq!(ready["slot_functions"], "0000:04:00.1");

        type Change = Box<dyn Fn(&mut Facts)>;
        let cases: Vec<(Change, &str, &str)> = vec![
            (
                Box::new(|f| f.status = Dom0Access::Enabled),
                "needs_reboot",
                "dom0 has it",
            ),
            (
                Box::new(|f| f.status = Dom0Access::DisableOnReboot),
                "needs_reboot",
                "reboot",
            ),
            (
                Box::new(|f| f.group = vec![(a("0000:05:00.0"), Dom0Access::Enabled)]),
                "needs_reboot",
                "0000:05:00.0 share its Xen device group",
            ),
            (
                Box::new(|f| f.iommu = (Some(false), "pv hvm".into())),
                "blocked",
                "IOMMU is not active",
            ),
            (
                Box::new(|f| f.iommu = (None, "no xl info".into())),
                "unknown",
                "IOMMU is unknown: no xl info",
            ),
            (
                Box::new(|f| f.pciback = Pciback::Absent),
                "blocked",
                "no xen-pciback",
            ),
            (
                Box::new(|f| {
                    f.status = Dom0Access::Enabled;
                    f.hide_refused = Some("it carries dom0's network interface eth0".into());
                }),
                "blocked",
                "dom0 needs it: it carries dom0's network",
            ),
        ];
        for (change, verdict, reason) in cases {
            let mut f = facts();
            change(&mut f);
            let r = report(&f);
            assert_eq!(r["verdict"], verdict, "{r:?}");
            assert!(r["reasons"].contains(reason), "{r:?}");
        }

        // Notes never change the verdict.
        let mut f = facts();
        f.reset = Some(Vec::new());
        f.slot = vec![(a("0000:04:00.1"), Dom0Access::Enabled)];
        let r = report(&f);
        assert_eq!(r["verdict"], "ready");
        assert!(r["notes"].contains("no reset method"), "{r:?}");
        assert!(
            r["notes"].contains("0000:04:00.1 (the same device)"),
            "{r:?}"
        );
        assert_eq!(r["with_dom0"], "0000:04:00.1");
    }
}
