//! Apply now: a PCI function moved between its dom0 driver and pciback at
//! runtime, each step checked and, when one fails, every earlier one
//! undone.
//!
//! The function goes to pciback by `driver_override` (pciback takes a
//! function whose override names it, since Linux 4.9): the override keeps
//! the native driver from taking it back at any later probe (a module
//! reload, a rescan), which the older `new_slot` route does not, and it
//! works the same whether xen-pciback is built in or a module. Then the
//! native driver lets go and pciback binds it explicitly, so a refusal
//! comes back as the write's error. Giving it back: pciback lets go, its
//! slot goes (else pciback would take it again at the next probe), the
//! override is cleared and the native driver binds it (the one recorded
//! when it was taken, else whichever the kernel's probe picks).
//!
//! A function assigned to a running domain is never given back: unbinding
//! it from pciback would pull it from under the guest (pciback only warns
//! and releases it).

use crate::domain::PciAddress;
use crate::host::pcibind::{self, PCIBACK};
use crate::host::xenstore::{self, Assignment};
use crate::host::{HostError, HostRoot};

/// One step of a move, named in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `driver_override` set to pciback.
    OverridePciback,
    /// Released by its native driver.
    UnbindNative,
    /// Bound to pciback.
    BindPciback,
    /// Released by pciback.
    UnbindPciback,
    /// pciback's slot removed.
    RemoveSlot,
    /// `driver_override` cleared.
    ClearOverride,
    /// Bound to its native driver again.
    BindNative,
}

impl Step {
    /// The step as errors and logs name it.
    pub fn name(self) -> &'static str {
        match self {
            Step::OverridePciback => "set driver_override to pciback",
            Step::UnbindNative => "unbind the native driver",
            Step::BindPciback => "bind to pciback",
            Step::UnbindPciback => "unbind from pciback",
            Step::RemoveSlot => "remove pciback's slot",
            Step::ClearOverride => "clear driver_override",
            Step::BindNative => "bind the native driver",
        }
    }
}

/// Why a move failed (every earlier step undone).
#[derive(Debug, thiserror::Error)]
pub enum ApplyNowError {
    /// A step's write failed.
    #[error("{function}: {} failed: {source}", .step.name())]
    Step {
        /// The function.
        function: PciAddress,
        /// The step.
        step: Step,
        /// What the kernel said.
        #[source]
        source: HostError,
    },
    /// The writes went through but the function is not where it should
    /// be.
    #[error("{function}: {} did not take: it is bound to {}", .step.name(), .found.as_deref().unwrap_or("no driver"))]
    NotTaken {
        /// The function.
        function: PciAddress,
        /// The step.
        step: Step,
        /// The driver it is bound to.
        found: Option<String>,
    },
    /// The function is assigned to a running domain.
    #[error("{function} is assigned to domain {}{}", .domain.domid, .domain.name.as_ref().map(|n| format!(" ({n})")).unwrap_or_default())]
    InUse {
        /// The function.
        function: PciAddress,
        /// The domain.
        domain: Assignment,
    },
    /// Whether the function is assigned to a domain cannot be told.
    #[error("cannot tell whether {function} is assigned to a domain: {reason}")]
    AssignmentUnknown {
        /// The function.
        function: PciAddress,
        /// Why.
        reason: String,
    },
    /// xen-pciback is not loaded: no driver to move the function to.
    #[error(
        "{function}: xen-pciback is not loaded (no /sys/bus/pci/drivers/pciback): load it with `modprobe xen-pciback` (pcipassd.service does at start)"
    )]
    PcibackNotLoaded {
        /// The function.
        function: PciAddress,
    },
    /// Reading the function's driver failed.
    #[error(transparent)]
    Host(#[from] HostError),
}

impl ApplyNowError {
    /// The step that failed, if a step did.
    pub fn step(&self) -> Option<Step> {
        match self {
            ApplyNowError::Step { step, .. } | ApplyNowError::NotTaken { step, .. } => Some(*step),
            _ => None,
        }
    }
}

/// What taking a function did, for giving it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    /// The function.
    pub function: PciAddress,
    /// The driver that held it before (`None`: none, or pciback already).
    pub native: Option<String>,
    /// Whether anything was done (pciback held it already: nothing).
    pub moved: bool,
}

/// Steps done so far, undone in reverse on failure.
struct Done<'h> {
    host: &'h HostRoot,
    addr: PciAddress,
    undo: Vec<Step>,
    native: Option<String>,
}

impl Done<'_> {
    fn run(
        &mut self,
        step: Step,
        write: impl FnOnce() -> Result<(), HostError>,
    ) -> Result<(), ApplyNowError> {
        match write() {
            Ok(()) => {
                self.undo.push(step);
                Ok(())
            }
            Err(source) => Err(self.fail(ApplyNowError::Step {
                function: self.addr,
                step,
                source,
            })),
        }
    }

    /// Undo every step done, newest first, and hand back `e`; an undo
    /// that fails too is logged (the function's driver says where it is).
    fn fail(&mut self, e: ApplyNowError) -> ApplyNowError {
        for step in self.undo.drain(..).rev() {
            if let Err(again) = undo_one(self.host, &self.addr, step, self.native.as_deref()) {
                tracing::error!(function = %self.addr, step = step.name(), "cannot undo: {again}");
            }
        }
        e
    }
}

/// Undo one step of a move.
fn undo_one(
    host: &HostRoot,
    addr: &PciAddress,
    step: Step,
    native: Option<&str>,
) -> Result<(), HostError> {
    match step {
        Step::OverridePciback => pcibind::set_override(host, addr, None),
        Step::ClearOverride => pcibind::set_override(host, addr, Some(PCIBACK)),
        // The override would keep the native driver out: it goes first
        // (undoing the override step after this clears it again).
        Step::UnbindNative => match native {
            Some(driver) => {
                pcibind::set_override(host, addr, None)?;
                pcibind::bind(host, addr, driver)
            }
            None => Ok(()),
        },
        Step::BindPciback => pcibind::unbind(host, addr, PCIBACK),
        Step::UnbindPciback => pcibind::bind(host, addr, PCIBACK),
        // pciback binds only a function in its slots or whose override
        // names it: a function hidden at boot has no override, so its slot
        // must come back before the bind (seen on the lab).
        Step::RemoveSlot => pcibind::new_slot(host, addr),
        // Whichever driver bound it (the recorded one, or the probe's).
        Step::BindNative => match pcibind::driver(host, addr)? {
            Some(driver) if driver != PCIBACK => pcibind::unbind(host, addr, &driver),
            _ => Ok(()),
        },
    }
}

/// Move `addr` from its driver to pciback now.
pub fn take(host: &HostRoot, addr: &PciAddress) -> Result<Taken, ApplyNowError> {
    let native = pcibind::driver(host, addr)?;
    if native.as_deref() == Some(PCIBACK) {
        return Ok(Taken {
            function: *addr,
            native: None,
            moved: false,
        });
    }
    // Seen on the lab: a Debian dom0 that hid nothing at boot never loaded
    // the module, and nothing would take the function.
    if !host.exists(&format!("sys/bus/pci/drivers/{PCIBACK}")) {
        return Err(ApplyNowError::PcibackNotLoaded { function: *addr });
    }
    let mut done = Done {
        host,
        addr: *addr,
        undo: Vec::new(),
        native: native.clone(),
    };
    done.run(Step::OverridePciback, || {
        pcibind::set_override(host, addr, Some(PCIBACK))
    })?;
    if let Some(driver) = &native {
        done.run(Step::UnbindNative, || pcibind::unbind(host, addr, driver))?;
    }
    done.run(Step::BindPciback, || pcibind::bind(host, addr, PCIBACK))?;
    let found = pcibind::driver(host, addr)?;
    if found.as_deref() != Some(PCIBACK) {
        return Err(done.fail(ApplyNowError::NotTaken {
            function: *addr,
            step: Step::BindPciback,
            found,
        }));
    }
    tracing::info!(function = %addr, native = native.as_deref().unwrap_or("none"), "taken from dom0 now: bound to pciback");
    Ok(Taken {
        function: *addr,
        native,
        moved: true,
    })
}

/// Undo a [`take`] (an apply-now hide whose boot-configuration edit
/// failed after the move).
pub fn give_back(host: &HostRoot, taken: &Taken) -> Result<(), ApplyNowError> {
    if !taken.moved {
        return Ok(());
    }
    release(host, &taken.function, taken.native.as_deref()).map(drop)
}

/// Refuse when `addr` is assigned to a running domain (or when that
/// cannot be told: fail closed).
pub fn check_unassigned(host: &HostRoot, addr: &PciAddress) -> Result<(), ApplyNowError> {
    let found =
        xenstore::assignments(host, addr).map_err(|e| ApplyNowError::AssignmentUnknown {
            function: *addr,
            reason: e.to_string(),
        })?;
    match found.into_iter().next() {
        Some(domain) => Err(ApplyNowError::InUse {
            function: *addr,
            domain,
        }),
        None => Ok(()),
    }
}

/// Move `addr` from pciback back to `native` (`None`: the driver the
/// kernel's probe picks) now; the driver it ends up with. The caller has
/// checked it is assigned to no domain.
pub fn release(
    host: &HostRoot,
    addr: &PciAddress,
    native: Option<&str>,
) -> Result<Option<String>, ApplyNowError> {
    if pcibind::driver(host, addr)?.as_deref() != Some(PCIBACK) {
        return Ok(pcibind::driver(host, addr)?);
    }
    let mut done = Done {
        host,
        addr: *addr,
        undo: Vec::new(),
        native: native.map(str::to_owned),
    };
    done.run(Step::UnbindPciback, || pcibind::unbind(host, addr, PCIBACK))?;
    done.run(Step::RemoveSlot, || pcibind::remove_slot(host, addr))?;
    if pcibind::override_of(host, addr)?.is_some() {
        done.run(Step::ClearOverride, || {
            pcibind::set_override(host, addr, None)
        })?;
    }
    match native {
        Some(driver) => done.run(Step::BindNative, || pcibind::bind(host, addr, driver))?,
        None => done.run(Step::BindNative, || pcibind::probe(host, addr))?,
    }
    let found = pcibind::driver(host, addr)?;
    if found.is_none() || found.as_deref() == Some(PCIBACK) {
        return Err(done.fail(ApplyNowError::NotTaken {
            function: *addr,
            step: Step::BindNative,
            found,
        }));
    }
    tracing::info!(function = %addr, driver = found.as_deref().unwrap_or("none"), "given back to dom0 now");
    Ok(found)
}

/// Give `addr` back to `native` after a move a crash cut short anywhere:
/// whatever of [`take`] was done is undone (pciback lets go, its slot and
/// the override go, the native driver or the kernel's probe binds it).
/// Each part is done only where needed, so this may run again.
pub fn restore(host: &HostRoot, addr: &PciAddress, native: Option<&str>) -> Result<(), HostError> {
    if pcibind::driver(host, addr)?.as_deref() == Some(PCIBACK) {
        pcibind::unbind(host, addr, PCIBACK)?;
    }
    pcibind::remove_slot(host, addr)?;
    if pcibind::override_of(host, addr)?.as_deref() == Some(PCIBACK) {
        pcibind::set_override(host, addr, None)?;
    }
    if pcibind::driver(host, addr)?.is_none() {
        match native {
            Some(driver) => pcibind::bind(host, addr, driver)?,
            None => pcibind::probe(host, addr)?,
        }
    }
    Ok(())
}

/// What `release` undoes when the boot-configuration edit after it fails.
pub fn retake(host: &HostRoot, addr: &PciAddress) -> Result<(), ApplyNowError> {
    take(host, addr).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::mock::Profile;
    use crate::host::mock::testing::{break_file, host};

    fn demo() -> (tempfile::TempDir, HostRoot) {
        host(Profile::Demo)
    }

    const USB: &str = "0000:00:14.0";

    /// Where the function is: its driver and its override.
    fn state(host: &HostRoot, addr: &PciAddress) -> (Option<String>, Option<String>) {
        (
            pcibind::driver(host, addr).unwrap(),
            pcibind::override_of(host, addr).unwrap(),
        )
    }

    #[test]
    fn taken_and_given_back() {
        let (_dir, host) = demo();
        let usb: PciAddress = USB.parse().unwrap();
        let taken = take(&host, &usb).unwrap();
        assert_eq!(taken.native.as_deref(), Some("xhci_hcd"));
        assert_eq!(
            state(&host, &usb),
            (Some(PCIBACK.into()), Some(PCIBACK.into()))
        );
        // Taking it again does nothing.
        assert!(!take(&host, &usb).unwrap().moved);
        assert_eq!(
            release(&host, &usb, None).unwrap().as_deref(),
            Some("xhci_hcd"),
            "the probe binds its own driver"
        );
        assert_eq!(state(&host, &usb), (Some("xhci_hcd".into()), None));
        take(&host, &usb).unwrap();
        give_back(&host, &taken).unwrap();
        assert_eq!(state(&host, &usb), (Some("xhci_hcd".into()), None));
    }

    /// Issue 24: a failure at each step of a take leaves the function as
    /// it was, and the error names the step.
    #[test]
    fn a_take_failing_at_any_step_leaves_the_function_with_its_driver() {
        for (rel, step) in [
            (
                "sys/bus/pci/devices/0000:00:14.0/driver_override",
                Step::OverridePciback,
            ),
            ("sys/bus/pci/drivers/xhci_hcd/unbind", Step::UnbindNative),
            ("sys/bus/pci/drivers/pciback/bind", Step::BindPciback),
        ] {
            let (_dir, host) = demo();
            let usb: PciAddress = USB.parse().unwrap();
            break_file(&host, rel);
            let e = take(&host, &usb).unwrap_err();
            assert_eq!(e.step(), Some(step), "{e}");
            assert!(e.to_string().contains(step.name()), "{e}");
            if step != Step::OverridePciback {
                assert_eq!(state(&host, &usb), (Some("xhci_hcd".into()), None), "{rel}");
            }
        }
    }

    /// The same for giving back: after a failure pciback holds it again
    /// and it reads as not dom0's.
    #[test]
    fn a_release_failing_at_any_step_leaves_the_function_with_pciback() {
        for (rel, step) in [
            ("sys/bus/pci/drivers/pciback/unbind", Step::UnbindPciback),
            ("sys/bus/pci/drivers/pciback/remove_slot", Step::RemoveSlot),
            ("sys/bus/pci/drivers/xhci_hcd/bind", Step::BindNative),
        ] {
            let (_dir, host) = demo();
            let usb: PciAddress = USB.parse().unwrap();
            take(&host, &usb).unwrap();
            break_file(&host, rel);
            let e = release(&host, &usb, Some("xhci_hcd")).unwrap_err();
            assert_eq!(e.step(), Some(step), "{e}");
            assert_eq!(
                pcibind::driver(&host, &usb).unwrap().as_deref(),
                Some(PCIBACK),
                "{rel}"
            );
        }
    }

    /// A crash may cut a take short after any step: the recovery's
    /// restore gives the function back from each of those states, and
    /// again without harm.
    #[test]
    fn a_take_cut_short_anywhere_is_restored() {
        type Cut<'a> = &'a dyn Fn(&HostRoot, &PciAddress);
        let cut: [Cut<'_>; 3] = [
            &|h, a| pcibind::set_override(h, a, Some(PCIBACK)).unwrap(),
            &|h, a| {
                pcibind::set_override(h, a, Some(PCIBACK)).unwrap();
                pcibind::unbind(h, a, "xhci_hcd").unwrap();
            },
            &|h, a| drop(take(h, a).unwrap()),
        ];
        for (n, cut) in cut.iter().enumerate() {
            let (_dir, host) = demo();
            let usb: PciAddress = USB.parse().unwrap();
            cut(&host, &usb);
            restore(&host, &usb, Some("xhci_hcd")).unwrap();
            assert_eq!(
                state(&host, &usb),
                (Some("xhci_hcd".into()), None),
                "cut {n}"
            );
            restore(&host, &usb, Some("xhci_hcd")).unwrap();
            assert_eq!(
                state(&host, &usb),
                (Some("xhci_hcd".into()), None),
                "cut {n}, again"
            );
        }
    }

    #[test]
    fn without_xen_pciback_loaded_nothing_is_touched() {
        let (_dir, host) = demo();
        let usb: PciAddress = USB.parse().unwrap();
        std::fs::remove_dir_all(host.path("sys/bus/pci/drivers/pciback")).unwrap();
        let e = take(&host, &usb).unwrap_err();
        assert!(matches!(e, ApplyNowError::PcibackNotLoaded { .. }), "{e}");
        assert!(e.to_string().contains("modprobe xen-pciback"), "{e}");
        assert_eq!(state(&host, &usb), (Some("xhci_hcd".into()), None));
    }

    #[test]
    fn a_function_assigned_to_a_running_domain_is_in_use() {
        let (_dir, host) = demo();
        let usb: PciAddress = USB.parse().unwrap();
        check_unassigned(&host, &usb).unwrap();
        std::fs::create_dir_all(host.path("var/lib/xenstored")).unwrap();
        std::fs::write(
            host.path(xenstore::MOCK_TREE),
            "/local/domain/0/backend/pci/3/0/dev-0 = \"0000:00:14.0\"\n/local/domain/3/name = \"usb-vm\"\n",
        )
        .unwrap();
        let e = check_unassigned(&host, &usb).unwrap_err();
        assert!(
            matches!(e, ApplyNowError::InUse { ref domain, .. } if domain.domid == 3),
            "{e}"
        );
        assert_eq!(
            e.to_string(),
            "0000:00:14.0 is assigned to domain 3 (usb-vm)"
        );
    }
}
