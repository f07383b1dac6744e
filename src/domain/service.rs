//! The domain surface: the whole of what the API layer may ask of the
//! host, as one trait, [`Dom0Host`]. The API translates XenAPI calls into
//! these calls and never sees a path, a process or a grub.cfg; the safety
//! rules (boot-disk refusal, length limits, wildcard expansion, fail
//! closed) live below this line.
//!
//! [`HostDom0`] is the real implementation over a host root (a real dom0
//! or a mock host); `StubDom0Host` (tests only) answers from memory so
//! the API layer can be unit-tested without any host. Every method may
//! block (file I/O, `xen-cmdline` processes): callers in async code run
//! them on a blocking pool (`api::Context::domain`).

use std::collections::BTreeMap;
use std::fmt;

use crate::domain::about;
use crate::domain::apply_now::{self, ApplyNowError};
use crate::domain::bootcfg::txn::{LastStep, Move};
use crate::domain::bootcfg::{BootConfig, BootConfigError, Dom0AccessEngine, InitramfsUpdate};
use crate::domain::devices;
/// xapi's `host_display` values and transitions, for the API.
pub use crate::domain::display::HostDisplay;
/// Identity and drift of remembered hides, for the API.
pub use crate::domain::drift;
use crate::domain::grub::GrubError;
use crate::domain::{Dom0Access, PciAddress, mock_boot, pciback, readiness};
use crate::host::boot::{BootFingerprint, Fingerprint};
use crate::host::{HostError, HostRoot, exec, facts, pcibind, procfs, sysfs};

// What the API handles of the domain's data, named here so that this
// module stays its one door (`tests/layers.rs` holds the API to it).
pub use crate::domain::about::HostDescription;
pub use crate::domain::devices::{Names, PciFunction, dependencies};

/// Why a domain call failed. Mapped to XenAPI error codes in one place
/// (`api::error`).
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    /// The boot configuration cannot be read, or an edit was refused by
    /// one of its rules.
    #[error(transparent)]
    Boot(#[from] BootConfigError),
    /// The PCI devices cannot be listed.
    #[error("PCI discovery failed: {0}")]
    Discovery(HostError),
    /// The kernel's boot id cannot be read.
    #[error("the boot id cannot be read: {0}")]
    BootId(HostError),
    /// An apply-now move was refused or failed (every step undone).
    #[error(transparent)]
    ApplyNow(#[from] ApplyNowError),
    /// The function is no longer on the host.
    #[error("{0} is no longer on the host (not in /sys/bus/pci/devices)")]
    Gone(PciAddress),
    /// A reboot could not be done or started.
    #[error("reboot failed: {0}")]
    Reboot(String),
    /// A broken promise inside the domain (a bug).
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl DomainError {
    /// How a failed boot-configuration call is answered, when this is
    /// one ([`DomainError::Boot`]).
    pub fn boot_kind(&self) -> Option<BootErrorKind> {
        match self {
            DomainError::Boot(e) => Some(BootErrorKind::of(e)),
            DomainError::ApplyNow(e) => Some(BootErrorKind::of_apply_now(e)),
            _ => None,
        }
    }
}

/// The kinds of boot-configuration (and apply-now) failure a client tells
/// apart, each with what its answer carries. The API maps them to XenAPI codes
/// (`api::error`) without reaching into the boot-configuration, GRUB or
/// hide-list error types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootErrorKind {
    /// The edited dom0 line would be longer than Xen passes to dom0.
    TooLong {
        /// The length the edit would give.
        length: usize,
        /// The most that passes.
        limit: usize,
    },
    /// The edit would hide a function a boot disk sits behind.
    BootDevice {
        /// The mounted boot device.
        block_device: String,
    },
    /// The edit would hide a function that carries dom0's network.
    Dom0Network {
        /// The function.
        function: String,
        /// The interface it carries.
        interface: String,
    },
    /// A move now would take the function dom0's console is on.
    Dom0Console {
        /// The function.
        function: String,
        /// The console.
        console: String,
    },
    /// The edit would hide the system display device while the next boot
    /// shows the host's console on it.
    HostDisplay {
        /// The function.
        function: String,
    },
    /// A previewed edit's files changed since its preview, or the token
    /// is another edit's: nothing was written.
    PreviewStale,
    /// The edit would hide a function the host's platform uses.
    HostPlatform {
        /// The function.
        function: String,
        /// What it is.
        what: String,
    },
    /// The current hide value does not parse: edits are refused.
    HideListMalformed {
        /// The whole value.
        value: String,
        /// The text from the first bad entry on.
        offending: String,
        /// What is wrong.
        reason: String,
    },
    /// Anything else: the boot configuration cannot be read or edited
    /// now, or the edit cannot be made to take effect; why, fit for a
    /// client (no paths, one line).
    Unavailable {
        /// Why, and what to do where the error says.
        reason: String,
    },
    /// The function is assigned to a running domain.
    AssignedToDomain {
        /// The function.
        function: String,
        /// The domain's id.
        domid: u32,
        /// Its name (empty: unknown).
        name: String,
    },
    /// A step of an apply-now move failed; every earlier step was undone.
    ApplyNowStep {
        /// The function.
        function: String,
        /// The step.
        step: String,
        /// Why.
        reason: String,
    },
}

impl BootErrorKind {
    /// The kind of `e`.
    pub fn of(e: &BootConfigError) -> BootErrorKind {
        match e {
            BootConfigError::Shared(inner) => BootErrorKind::of(inner),
            BootConfigError::ApplyNow(e) => BootErrorKind::of_apply_now(e),
            BootConfigError::Grub(GrubError::TooLong { length, limit, .. }) => {
                BootErrorKind::TooLong {
                    length: *length,
                    limit: *limit,
                }
            }
            BootConfigError::BootDevice { block_device, .. } => BootErrorKind::BootDevice {
                block_device: block_device.clone(),
            },
            BootConfigError::PreviewStale => BootErrorKind::PreviewStale,
            BootConfigError::HostPlatform { what, function } => BootErrorKind::HostPlatform {
                function: function.to_string(),
                what: (*what).to_owned(),
            },
            BootConfigError::HostDisplay { function } => BootErrorKind::HostDisplay {
                function: function.to_string(),
            },
            BootConfigError::Dom0Console { console, function } => BootErrorKind::Dom0Console {
                function: function.to_string(),
                console: console.clone(),
            },
            BootConfigError::Dom0Network {
                interface,
                function,
            } => BootErrorKind::Dom0Network {
                function: function.to_string(),
                interface: interface.clone(),
            },
            BootConfigError::HideListMalformed(parse) => BootErrorKind::HideListMalformed {
                value: parse.value.clone(),
                offending: parse.offending.clone(),
                reason: parse.reason.clone(),
            },
            _ => BootErrorKind::Unavailable {
                reason: e.client_reason(),
            },
        }
    }
}

impl BootErrorKind {
    /// The kind of an apply-now failure.
    pub fn of_apply_now(e: &ApplyNowError) -> BootErrorKind {
        match e {
            ApplyNowError::InUse { function, domain } => BootErrorKind::AssignedToDomain {
                function: function.to_string(),
                domid: domain.domid,
                name: domain.name.clone().unwrap_or_default(),
            },
            ApplyNowError::Step {
                function,
                step,
                source,
            } => BootErrorKind::ApplyNowStep {
                function: function.to_string(),
                step: step.name().to_owned(),
                reason: source.source.to_string(),
            },
            ApplyNowError::NotTaken {
                function,
                step,
                found,
            } => BootErrorKind::ApplyNowStep {
                function: function.to_string(),
                step: step.name().to_owned(),
                reason: format!(
                    "it is bound to {} afterwards",
                    found.as_deref().unwrap_or("no driver")
                ),
            },
            ApplyNowError::AssignmentUnknown { function, reason } => BootErrorKind::ApplyNowStep {
                function: function.to_string(),
                step: "check the domains it is assigned to".into(),
                reason: reason.clone(),
            },
            ApplyNowError::PcibackNotLoaded { function } => BootErrorKind::ApplyNowStep {
                function: function.to_string(),
                step: "find xen-pciback".into(),
                reason:
                    "xen-pciback is not loaded: modprobe xen-pciback (pcipassd.service loads it \
                         at start)"
                        .into(),
            },
            ApplyNowError::Host(e) => BootErrorKind::ApplyNowStep {
                function: String::new(),
                step: "read its driver".into(),
                reason: e.source.to_string(),
            },
        }
    }
}

/// What a reboot did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reboot {
    /// A mock host was rebooted in place: the new boot is running.
    InPlace,
    /// The host's reboot command was started; this process will end.
    Started,
}

/// Changes whenever the boot configuration, the running command line or
/// the set of functions pciback holds changes (compare two tokens).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeToken {
    boot: Option<BootFingerprint>,
    running: Option<Fingerprint>,
    /// A digest of what else moved (pciback's functions; the stub's sets).
    generation: u64,
}

/// The dry run of an edit ([`Dom0Host::preview`]), as the API reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EditPreview {
    /// One unified diff of every file the edit changes (`patch -p1` under
    /// the root applies it).
    pub diff: String,
    /// The host's functions the next boot's kernel would hide.
    pub hidden_after: Vec<PciAddress>,
    /// The `xen-pciback.hide` value the next boot would get.
    pub value: Option<String>,
    /// The initramfs rebuild the edit runs (the command), if any.
    pub rebuild: Option<String>,
    /// What the diff cannot show before the edit's programs run, and why.
    pub unforeseen: Vec<String>,
    /// Files whose change is not text (named, not shown).
    pub binary: Vec<String>,
    /// The compare-and-swap token for the edit.
    pub token: String,
}

impl EditPreview {
    /// The report of `preview` on a host whose PCI tree is `tree`.
    fn of(preview: &crate::domain::bootcfg::Preview, tree: &crate::domain::hide::Topology) -> Self {
        let mut hidden_after: Vec<PciAddress> = tree
            .functions()
            .filter(|f| preview.after.hides_in(tree, f))
            .copied()
            .collect();
        hidden_after.sort();
        EditPreview {
            diff: preview.diff(),
            hidden_after,
            value: preview.value.clone(),
            rebuild: preview.rebuild.as_ref().map(|how| match how {
                crate::domain::bootcfg::Rebuild::Command(argv) => argv.join(" "),
                crate::domain::bootcfg::Rebuild::Mock => "the mock host's initramfs rebuild".into(),
            }),
            unforeseen: preview.unforeseen.clone(),
            binary: preview.binary().into_iter().map(str::to_owned).collect(),
            token: preview.token.clone(),
        }
    }

    /// Whether the diff is exactly what the edit writes.
    pub fn exact(&self) -> bool {
        self.unforeseen.is_empty() && self.binary.is_empty()
    }
}

/// What the API may ask of the host.
pub trait Dom0Host: Send + Sync + fmt::Debug {
    /// Every PCI function the host has. An unreadable device listing is
    /// an error, never an empty host.
    fn discover(&self) -> Result<Vec<PciFunction>, DomainError>;

    /// The dom0 access status of each function, from one read of the
    /// running and next-boot hide lists.
    fn statuses(&self, addrs: &[PciAddress]) -> Result<Vec<Dom0Access>, DomainError>;

    /// Hide `addr` from dom0 from the next boot on; refused for a function
    /// a boot disk sits behind. Returns the new status.
    fn hide(&self, addr: &PciAddress) -> Result<Dom0Access, DomainError>;

    /// Give `addr` back to dom0 from the next boot on, keeping what a
    /// wildcard or bridge entry hid besides it. Returns the new status.
    fn unhide(&self, addr: &PciAddress) -> Result<Dom0Access, DomainError>;

    /// Hide every function of `addrs` (a whole device, say) as one edit
    /// of the boot configuration: all or nothing, one function refused
    /// refuses the set and nothing is written. With `now`, the edit's last
    /// step also moves each function to pciback; a failed move puts back
    /// the ones moved and undoes the edit. The statuses, in the order of
    /// `addrs`.
    ///
    /// With `token` (from [`Dom0Host::preview`] of the same functions, the
    /// same way) the edit is made only if the files the preview read are
    /// unchanged, and it writes exactly what the preview showed
    /// ([`BootConfigError::PreviewStale`] otherwise, nothing written).
    fn hide_set(
        &self,
        addrs: &[PciAddress],
        now: bool,
        token: Option<&str>,
    ) -> Result<Vec<Dom0Access>, DomainError>;

    /// Give every function of `addrs` back to dom0 as one edit (all or
    /// nothing, as [`Dom0Host::hide_set`]). With `now`: refused while a
    /// running domain has any of them; each goes back to its driver, then
    /// the edit; a failed edit moves them back to pciback.
    fn unhide_set(
        &self,
        addrs: &[PciAddress],
        now: bool,
        token: Option<&str>,
    ) -> Result<Vec<Dom0Access>, DomainError>;

    /// What hiding (`hide`) or giving back every function of `addrs`
    /// would change now, with every check the edit makes (a refusal is
    /// the edit's), nothing written: the dry run and its token.
    fn preview(&self, addrs: &[PciAddress], hide: bool) -> Result<EditPreview, DomainError>;

    /// Hide `addr` from dom0 now and at every boot ([`Dom0Host::hide_set`]
    /// of one function, now).
    fn hide_now(&self, addr: &PciAddress) -> Result<Dom0Access, DomainError> {
        only(&self.hide_set(std::slice::from_ref(addr), true, None)?)
    }

    /// Give `addr` back to dom0 now and at every boot
    /// ([`Dom0Host::unhide_set`] of one function, now).
    fn unhide_now(&self, addr: &PciAddress) -> Result<Dom0Access, DomainError> {
        only(&self.unhide_set(std::slice::from_ref(addr), true, None)?)
    }

    /// The SHA-256 (hex) of each file a boot-configuration edit may
    /// change, for the audit (`None`: absent or unreadable).
    fn edited_files(&self) -> Vec<(String, Option<String>)>;

    /// What is at each address now (`None`: no function there).
    fn identities(&self, addrs: &[PciAddress])
    -> Result<Vec<Option<drift::Identity>>, DomainError>;

    /// Whether `addr` can be passed through, and what stands in the way
    /// ([`readiness::report`]: `verdict`, `reasons` and the facts).
    fn readiness(&self, addr: &PciAddress) -> Result<BTreeMap<String, String>, DomainError>;

    /// Whether the next boot shows the host's console on the physical
    /// display (Xen's `console=` holds `vga`, or is absent).
    fn display_at_next_boot(&self) -> Result<bool, DomainError>;

    /// Turn the host display on (`enable`) or off from the next boot on
    /// (Xen's `console=`, a serial port it writes to kept).
    fn set_display(&self, enable: bool) -> Result<(), DomainError>;

    /// The running kernel's boot id.
    fn boot_id(&self) -> Result<String, DomainError>;

    /// Reboot: a mock host in place, a real one by starting `command`.
    fn reboot(&self, command: &[String]) -> Result<Reboot, DomainError>;

    /// The statuses when they can be answered without any I/O (from views
    /// still known to be current), else `None`. Never blocks.
    fn cached_statuses(&self, _addrs: &[PciAddress]) -> Option<Vec<Dom0Access>> {
        None
    }

    /// A token that moves when the boot configuration or `/proc/cmdline`
    /// changes.
    fn changes(&self) -> ChangeToken;

    /// Log, once at start, what the next boot will do that a person should
    /// know (a hide value the kernel refuses, a boot disk hidden by hand).
    fn report_at_start(&self);

    /// What the host says about itself (product, versions, memory), read
    /// now.
    fn describe(&self) -> HostDescription;
}

/// The status of one function through [`Dom0Host::statuses`].
pub fn status(host: &dyn Dom0Host, addr: &PciAddress) -> Result<Dom0Access, DomainError> {
    only(&host.statuses(std::slice::from_ref(addr))?)
}

/// The one status of an answer about one function.
fn only(statuses: &[Dom0Access]) -> Result<Dom0Access, DomainError> {
    statuses.first().copied().ok_or(DomainError::Internal(
        "a call about one function answered no status",
    ))
}

/// The real host (or a mock host tree) under a root.
#[derive(Debug)]
pub struct HostDom0 {
    root: HostRoot,
    engine: Dom0AccessEngine,
}

impl HostDom0 {
    /// The host under `root`, its boot configuration read and edited
    /// through `backend`.
    pub fn new(root: HostRoot, backend: Box<dyn BootConfig>) -> HostDom0 {
        HostDom0 {
            engine: Dom0AccessEngine::new(backend, root.clone()),
            root,
        }
    }

    /// The same host, rebuilding the initramfs by `update` where
    /// xen-pciback is a module that must be listed in it.
    pub fn with_initramfs(mut self, update: InitramfsUpdate) -> HostDom0 {
        self.engine = self.engine.with_initramfs(update);
        self
    }

    /// Refuse to take `addr` from dom0 now when it carries dom0's network
    /// or dom0's console is on it. The edit's own check covers a function
    /// the boot configuration newly hides; the move takes it now even if
    /// the next boot hides it already.
    fn refuse_taking_now(&self, addr: &PciAddress) -> Result<(), DomainError> {
        let network = crate::domain::netdev::carrying_dom0(&self.root).map_err(|e| {
            BootConfigError::SafetyUnknown(format!("dom0's network interfaces unknown: {e}"))
        })?;
        if let Some(interface) = network.get(&addr.to_string()) {
            return Err(BootConfigError::Dom0Network {
                interface: interface.clone(),
                function: *addr,
            }
            .into());
        }
        let console = crate::host::console::is_boot_vga(&self.root, &addr.to_string())
            .and_then(|vga| {
                Ok(crate::domain::console::console_on(
                    vga,
                    &crate::host::console::vt_consoles(&self.root)?,
                ))
            })
            .map_err(|e| BootConfigError::SafetyUnknown(format!("dom0's console unknown: {e}")))?;
        if let Some(console) = console {
            return Err(BootConfigError::Dom0Console {
                console,
                function: *addr,
            }
            .into());
        }
        Ok(())
    }

    /// Move each of `addrs` to pciback now; on a failure the ones moved
    /// go back to their drivers, last first.
    fn take_all(&self, addrs: &[PciAddress]) -> Result<(), ApplyNowError> {
        let mut taken = Vec::new();
        for addr in addrs {
            match apply_now::take(&self.root, addr) {
                Ok(t) => taken.push(t),
                Err(e) => {
                    for t in taken.iter().rev() {
                        if let Err(again) = apply_now::give_back(&self.root, t) {
                            tracing::error!(function = %t.function, "cannot give it back to its driver: {again}");
                        }
                    }
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Move each of `addrs` back to pciback after a failed give-back.
    fn retake_all(&self, addrs: &[PciAddress]) {
        for addr in addrs {
            if let Err(again) = apply_now::retake(&self.root, addr) {
                tracing::error!(function = %addr, "cannot move it back to pciback: {again}");
            }
        }
    }

    /// At start: undo a boot configuration edit a crash left unfinished
    /// (its journal), so that what boots is what the last acknowledged
    /// answer said; the log says what was found and done. A journal that
    /// cannot be undone is logged, and every edit refuses until it is.
    pub fn finish_interrupted_edit(&self) {
        match self.engine.recover() {
            Ok(Some(done)) => tracing::warn!("boot configuration: {done}"),
            Ok(None) => {}
            Err(e) => tracing::error!("boot configuration: {e}"),
        }
    }
}

impl Dom0Host for HostDom0 {
    fn discover(&self) -> Result<Vec<PciFunction>, DomainError> {
        devices::discover(&self.root).map_err(DomainError::Discovery)
    }

    fn statuses(&self, addrs: &[PciAddress]) -> Result<Vec<Dom0Access>, DomainError> {
        Ok(self.engine.statuses(addrs)?)
    }

    fn hide(&self, addr: &PciAddress) -> Result<Dom0Access, DomainError> {
        Ok(self.engine.disable(addr)?)
    }

    fn unhide(&self, addr: &PciAddress) -> Result<Dom0Access, DomainError> {
        Ok(self.engine.enable(addr)?)
    }

    fn hide_set(
        &self,
        addrs: &[PciAddress],
        now: bool,
        token: Option<&str>,
    ) -> Result<Vec<Dom0Access>, DomainError> {
        if !now {
            return Ok(self.engine.edit_set(addrs, true, LastStep::NONE, token)?);
        }
        for addr in addrs {
            self.refuse_taking_now(addr)?;
        }
        // What the journal keeps for a recovery: nothing for a function
        // pciback holds already (the move does nothing then).
        let mut moves = Vec::new();
        for addr in addrs {
            match pcibind::driver(&self.root, addr).map_err(ApplyNowError::from)? {
                Some(driver) if driver == pcibind::PCIBACK => {}
                native => moves.push(Move {
                    function: addr.to_string(),
                    native,
                }),
            }
        }
        let then = || Ok(self.take_all(addrs)?);
        let last = LastStep {
            run: &then,
            moves: &moves,
        };
        Ok(self.engine.edit_set(addrs, true, last, token)?)
    }

    fn unhide_set(
        &self,
        addrs: &[PciAddress],
        now: bool,
        token: Option<&str>,
    ) -> Result<Vec<Dom0Access>, DomainError> {
        if !now {
            return Ok(self.engine.edit_set(addrs, false, LastStep::NONE, token)?);
        }
        for addr in addrs {
            apply_now::check_unassigned(&self.root, addr)?;
        }
        let mut released = Vec::new();
        for addr in addrs {
            let held = pcibind::driver(&self.root, addr)
                .map_err(ApplyNowError::from)?
                .is_some_and(|d| d == pcibind::PCIBACK);
            if let Err(e) = apply_now::release(&self.root, addr, None) {
                self.retake_all(&released);
                return Err(e.into());
            }
            if held {
                released.push(*addr);
            }
        }
        self.engine
            .edit_set(addrs, false, LastStep::NONE, token)
            .map_err(|e| {
                self.retake_all(&released);
                e.into()
            })
    }

    fn preview(&self, addrs: &[PciAddress], hide: bool) -> Result<EditPreview, DomainError> {
        let preview = self.engine.preview_set(addrs, hide)?;
        let tree = self.engine.read_tree()?;
        Ok(EditPreview::of(&preview, &tree))
    }

    fn cached_statuses(&self, addrs: &[PciAddress]) -> Option<Vec<Dom0Access>> {
        self.engine.cached_statuses(addrs)
    }

    fn edited_files(&self) -> Vec<(String, Option<String>)> {
        use sha2::Digest;
        self.engine
            .edited_files()
            .into_iter()
            .map(|rel| {
                let digest = self.root.read_if_exists(&rel).ok().flatten().map(|bytes| {
                    sha2::Sha256::digest(&bytes)
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect()
                });
                (rel, digest)
            })
            .collect()
    }

    fn identities(
        &self,
        addrs: &[PciAddress],
    ) -> Result<Vec<Option<drift::Identity>>, DomainError> {
        let hex = |s: &str| u32::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok();
        Ok(addrs
            .iter()
            .map(|a| {
                let f = sysfs::read_one(&self.root, &a.to_string())?;
                let (vendor, device) = (hex(&f.vendor)?, hex(&f.device)?);
                let sub = |s: &Option<String>, own: u32| s.as_deref().and_then(hex).unwrap_or(own);
                Some(drift::Identity {
                    vendor: u16::try_from(vendor).ok()?,
                    device: u16::try_from(device).ok()?,
                    sub_vendor: u16::try_from(sub(&f.subsystem_vendor, vendor)).ok()?,
                    sub_device: u16::try_from(sub(&f.subsystem_device, device)).ok()?,
                    class: hex(&f.class)?,
                })
            })
            .collect())
    }

    fn readiness(&self, addr: &PciAddress) -> Result<BTreeMap<String, String>, DomainError> {
        let raw = sysfs::scan_pci(&self.root).map_err(DomainError::Discovery)?;
        let all: Vec<readiness::Placed> = raw
            .iter()
            .filter_map(|f| {
                Some(readiness::Placed {
                    address: f.name.parse().ok()?,
                    path: crate::domain::bootdev::pci_functions_in_path(&f.device_path),
                    pcie: sysfs::is_pcie(&self.root, &f.name),
                })
            })
            .collect();
        if !all.iter().any(|p| p.address == *addr) {
            return Err(DomainError::Gone(*addr));
        }
        let slot = readiness::slot_functions(&all, addr);
        let group = readiness::device_group(&all, addr);
        let mut asked = vec![*addr];
        asked.extend(&slot);
        asked.extend(&group);
        let statuses = self.engine.statuses(&asked)?;
        let with = |list: &[PciAddress], from: usize| -> Vec<(PciAddress, Dom0Access)> {
            list.iter()
                .copied()
                .zip(statuses[from..].iter().copied())
                .collect()
        };
        let iommu = match facts::xl_info(&self.root) {
            Ok(Some(text)) => match readiness::iommu_from_xl_info(&text) {
                Some(on) => (Some(on), format!("xl info at boot, {}", facts::XL_INFO)),
                None => (None, format!("/{} has no virt_caps line", facts::XL_INFO)),
            },
            Ok(None) => (
                None,
                format!(
                    "no record of xl info at /{} (pcipassd-xen-facts.service writes it at boot)",
                    facts::XL_INFO
                ),
            ),
            Err(e) => (None, format!("/{} unreadable: {e}", facts::XL_INFO)),
        };
        let name = addr.to_string();
        let pciback = match crate::host::modules::pciback_facts(&self.root) {
            Ok(found) => match pciback::loading(&found) {
                pciback::Loading::BuiltIn => readiness::Pciback::Early("built in".into()),
                pciback::Loading::Early(tool) => {
                    readiness::Pciback::Early(format!("a module {tool} loads early"))
                }
                pciback::Loading::NotEarly(_) => readiness::Pciback::NotEarly(
                    "a module no initramfs configuration loads early".into(),
                ),
                pciback::Loading::Absent => readiness::Pciback::Absent,
                pciback::Loading::Unknown => readiness::Pciback::Unknown(
                    "no modules.builtin and nothing in /sys/module".into(),
                ),
            },
            Err(e) => readiness::Pciback::Unknown(e.to_string()),
        };
        let facts = readiness::Facts {
            function: *addr,
            status: statuses[0],
            driver: sysfs::bound_driver(&self.root, &name).map_err(DomainError::Discovery)?,
            iommu,
            reset: sysfs::reset_methods(&self.root, &name).ok(),
            slot: with(&slot, 1),
            group: with(&group, 1 + slot.len()),
            hide_refused: self.engine.hide_refusal(addr),
            assigned: crate::host::xenstore::assignments(&self.root, addr)
                .map(|found| {
                    found.first().map(|d| match &d.name {
                        Some(n) => format!("{} ({n})", d.domid),
                        None => d.domid.to_string(),
                    })
                })
                .map_err(|e| e.to_string()),
            pciback,
        };
        Ok(readiness::report(&facts))
    }

    fn display_at_next_boot(&self) -> Result<bool, DomainError> {
        Ok(self.engine.display_at_next_boot()?)
    }

    fn set_display(&self, enable: bool) -> Result<(), DomainError> {
        self.engine.set_display(enable)?;
        tracing::info!(
            "host display {} from the next boot on (Xen's console argument)",
            if enable { "enabled" } else { "disabled" }
        );
        Ok(())
    }

    fn boot_id(&self) -> Result<String, DomainError> {
        procfs::read_boot_id(&self.root).map_err(DomainError::BootId)
    }

    fn reboot(&self, command: &[String]) -> Result<Reboot, DomainError> {
        if self.root.is_mock() {
            mock_boot::reboot(&self.root).map_err(|e| DomainError::Reboot(e.to_string()))?;
            return Ok(Reboot::InPlace);
        }
        let Some((program, args)) = command.split_first() else {
            return Err(DomainError::Reboot(
                "no reboot command is configured".into(),
            ));
        };
        exec::spawn_detached(program, args).map_err(|e| {
            DomainError::Reboot(format!("the reboot command failed to start: {}", e.kind()))
        })?;
        Ok(Reboot::Started)
    }

    fn changes(&self) -> ChangeToken {
        let (boot, running) = self.engine.fingerprint();
        // Who pciback holds changes at runtime too (an apply-now edit,
        // `xl pci-assignable-add`), without a file changing.
        let held = pcibind::held_by(&self.root, pcibind::PCIBACK).map_or(u64::MAX, |held| {
            use std::hash::{Hash, Hasher};
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            held.hash(&mut hasher);
            hasher.finish()
        });
        ChangeToken {
            boot,
            running,
            generation: held,
        }
    }

    fn report_at_start(&self) {
        self.engine.report_at_start();
        // What the network refusal will protect, said once so that an
        // operator (and the lab) can see what pcipassd sees.
        match crate::domain::netdev::carrying_dom0(&self.root) {
            Ok(found) if found.is_empty() => {
                tracing::info!(
                    "no PCI function carries an IPv4 route of dom0 or the management interface"
                );
            }
            Ok(found) => {
                let list = found
                    .iter()
                    .map(|(f, iface)| format!("{f} ({iface})"))
                    .collect::<Vec<_>>()
                    .join(", ");
                tracing::info!(functions = %list, "dom0's network: these functions are never hidden");
            }
            Err(e) => {
                tracing::warn!("dom0's network interfaces unknown, every hide is refused: {e}");
            }
        }
    }

    fn describe(&self) -> HostDescription {
        about::describe(&facts::read_facts(&self.root))
    }
}

/// A host in memory for API unit tests: functions, the hidden set now and
/// at the next boot, boot disks and a boot id; every call is recorded.
#[cfg(test)]
#[derive(Debug, Default)]
pub struct StubDom0Host {
    /// The functions `discover` returns.
    pub functions: std::sync::Mutex<Vec<PciFunction>>,
    /// Hidden by the running kernel.
    pub running: std::sync::Mutex<std::collections::BTreeSet<PciAddress>>,
    /// Hidden at the next boot.
    pub next_boot: std::sync::Mutex<std::collections::BTreeSet<PciAddress>>,
    /// Functions on the path of a boot disk.
    pub boot_disk: std::collections::BTreeSet<PciAddress>,
    /// The boot id.
    pub boot: std::sync::Mutex<String>,
    /// When set, every boot-configuration call fails with this reason.
    pub broken: std::sync::Mutex<Option<String>>,
    /// Calls made, in order (`hide 0000:01:00.0`, `reboot`, ...).
    pub calls: std::sync::Mutex<Vec<String>>,
    /// A real host: `reboot` only starts the reboot command
    /// ([`Reboot::Started`]) instead of rebooting in place.
    pub reboots_by_command: std::sync::atomic::AtomicBool,
    /// What `describe` answers.
    pub description: HostDescription,
    /// Whether the next boot shows the console on the display.
    pub display: std::sync::atomic::AtomicBool,
}

#[cfg(test)]
impl StubDom0Host {
    fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The stub's preview token: what it would write (the next boot's set).
    fn stub_token(&self) -> String {
        format!("{:?}", Self::lock(&self.next_boot))
    }

    /// A stale token is refused as the engine refuses it.
    fn check_token(&self, token: Option<&str>) -> Result<(), DomainError> {
        match token {
            Some(t) if t != self.stub_token() => {
                Err(DomainError::Boot(BootConfigError::PreviewStale))
            }
            _ => Ok(()),
        }
    }

    fn call(&self, what: String) -> Result<(), DomainError> {
        Self::lock(&self.calls).push(what);
        match Self::lock(&self.broken).clone() {
            Some(reason) => Err(DomainError::Boot(BootConfigError::SafetyUnknown(reason))),
            None => Ok(()),
        }
    }

    fn status_of(&self, addr: &PciAddress) -> Dom0Access {
        Dom0Access::from_views(
            Self::lock(&self.running).contains(addr),
            Self::lock(&self.next_boot).contains(addr),
        )
    }
}

#[cfg(test)]
impl Dom0Host for StubDom0Host {
    fn discover(&self) -> Result<Vec<PciFunction>, DomainError> {
        Self::lock(&self.calls).push("discover".into());
        Ok(Self::lock(&self.functions).clone())
    }

    fn statuses(&self, addrs: &[PciAddress]) -> Result<Vec<Dom0Access>, DomainError> {
        self.call("statuses".into())?;
        Ok(addrs.iter().map(|a| self.status_of(a)).collect())
    }

    fn hide(&self, addr: &PciAddress) -> Result<Dom0Access, DomainError> {
        self.call(format!("hide {addr}"))?;
        if self.boot_disk.contains(addr) {
            return Err(DomainError::Boot(BootConfigError::BootDevice {
                block_device: "/dev/stub".into(),
                function: *addr,
            }));
        }
        Self::lock(&self.next_boot).insert(*addr);
        Ok(self.status_of(addr))
    }

    fn unhide(&self, addr: &PciAddress) -> Result<Dom0Access, DomainError> {
        self.call(format!("unhide {addr}"))?;
        Self::lock(&self.next_boot).remove(addr);
        Ok(self.status_of(addr))
    }

    fn hide_set(
        &self,
        addrs: &[PciAddress],
        now: bool,
        token: Option<&str>,
    ) -> Result<Vec<Dom0Access>, DomainError> {
        self.call(format!("hide_set {addrs:?} now={now}"))?;
        self.check_token(token)?;
        if let Some(addr) = addrs.iter().find(|a| self.boot_disk.contains(a)) {
            return Err(DomainError::Boot(BootConfigError::BootDevice {
                block_device: "/dev/stub".into(),
                function: *addr,
            }));
        }
        Self::lock(&self.next_boot).extend(addrs);
        if now {
            Self::lock(&self.running).extend(addrs);
        }
        Ok(addrs.iter().map(|a| self.status_of(a)).collect())
    }

    fn unhide_set(
        &self,
        addrs: &[PciAddress],
        now: bool,
        token: Option<&str>,
    ) -> Result<Vec<Dom0Access>, DomainError> {
        self.call(format!("unhide_set {addrs:?} now={now}"))?;
        self.check_token(token)?;
        for addr in addrs {
            Self::lock(&self.next_boot).remove(addr);
            if now {
                Self::lock(&self.running).remove(addr);
            }
        }
        Ok(addrs.iter().map(|a| self.status_of(a)).collect())
    }

    fn preview(&self, addrs: &[PciAddress], hide: bool) -> Result<EditPreview, DomainError> {
        self.call(format!("preview {addrs:?} hide={hide}"))?;
        Ok(EditPreview {
            diff: String::new(),
            hidden_after: Self::lock(&self.next_boot).iter().copied().collect(),
            value: None,
            rebuild: None,
            unforeseen: Vec::new(),
            binary: Vec::new(),
            token: self.stub_token(),
        })
    }

    fn edited_files(&self) -> Vec<(String, Option<String>)> {
        vec![(
            "stub".to_owned(),
            Some(format!("{:?}", Self::lock(&self.next_boot))),
        )]
    }

    fn identities(
        &self,
        addrs: &[PciAddress],
    ) -> Result<Vec<Option<drift::Identity>>, DomainError> {
        let functions = Self::lock(&self.functions);
        Ok(addrs
            .iter()
            .map(|a| {
                functions
                    .iter()
                    .find(|f| f.address == *a)
                    .map(|f| drift::Identity {
                        vendor: f.vendor_id,
                        device: f.device_id,
                        sub_vendor: f.subsystem_vendor_id.unwrap_or(f.vendor_id),
                        sub_device: f.subsystem_device_id.unwrap_or(f.device_id),
                        class: f.class,
                    })
            })
            .collect())
    }

    fn readiness(&self, addr: &PciAddress) -> Result<BTreeMap<String, String>, DomainError> {
        self.call(format!("readiness {addr}"))?;
        Ok(BTreeMap::from([
            ("verdict".to_owned(), "unknown".to_owned()),
            ("reasons".to_owned(), "a stub host".to_owned()),
        ]))
    }

    fn display_at_next_boot(&self) -> Result<bool, DomainError> {
        Ok(self.display.load(std::sync::atomic::Ordering::SeqCst))
    }

    fn set_display(&self, enable: bool) -> Result<(), DomainError> {
        self.call(format!("set_display {enable}"))?;
        self.display
            .store(enable, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    fn boot_id(&self) -> Result<String, DomainError> {
        Ok(Self::lock(&self.boot).clone())
    }

    fn reboot(&self, _command: &[String]) -> Result<Reboot, DomainError> {
        self.call("reboot".into())?;
        if self
            .reboots_by_command
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            return Ok(Reboot::Started);
        }
        let next = Self::lock(&self.next_boot).clone();
        *Self::lock(&self.running) = next;
        let mut boot = Self::lock(&self.boot);
        boot.push('+');
        Ok(Reboot::InPlace)
    }

    fn changes(&self) -> ChangeToken {
        let generation =
            (Self::lock(&self.running).len() * 1000 + Self::lock(&self.next_boot).len()) as u64;
        ChangeToken {
            boot: None,
            running: None,
            generation,
        }
    }

    fn report_at_start(&self) {}

    fn describe(&self) -> HostDescription {
        self.description.clone()
    }
}
