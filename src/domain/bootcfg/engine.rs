//! [`Dom0AccessEngine`]: dom0 access of PCI functions from the two views
//! of the hide list (cached on the files' fingerprints, with a change
//! watch), the PCI tree, and edits checked against the boot disks.

use std::sync::{Arc, Mutex};
use std::time::Duration;

mod batch;

use super::group::GroupCommit;
use super::txn;
use super::{BootConfig, BootConfigError, InitramfsUpdate};
use crate::domain::bootdev::{self, BootDisk};
use crate::domain::hide::{HideView, Topology};
use crate::domain::{Dom0Access, PciAddress};
use crate::domain::{display, netdev, platform};
use crate::host::boot::{self, BootFingerprint, Fingerprint};
use crate::host::watch::ChangeWatch;
use crate::host::{HostRoot, procfs, sysfs};
use batch::{Answer, Want};

/// How long the cached views are trusted on the change watch alone before
/// a `stat` confirms them (bounds what inotify cannot see, such as a file
/// system mounted over `/boot` after start).
const WATCH_TRUST: Duration = Duration::from_millis(100);

#[derive(Debug, Default)]
struct Cache {
    running: Option<(Fingerprint, Arc<HideView>)>,
    boot: Option<(BootFingerprint, Arc<HideView>)>,
}

/// Dom0 access of PCI functions: status from the two views, and edits.
#[derive(Debug)]
pub struct Dom0AccessEngine {
    boot: Box<dyn BootConfig>,
    host: HostRoot,
    cache: Mutex<Cache>,
    cache_boot: bool,
    /// The PCI tree, read from sysfs when first needed and again when a
    /// function is not in it.
    tree: Mutex<Option<Arc<Topology>>>,
    /// Present when both views come from files alone (native backend).
    watch: Option<ChangeWatch>,
    /// How the initramfs is rebuilt where xen-pciback must be listed in it.
    initramfs: InitramfsUpdate,
    /// Concurrent edits, written together.
    edits: GroupCommit<Want, Answer>,
}

/// The bridges above a function, nearest first, from its sysfs device
/// path (every path component that is a PCI address, but the last).
pub fn bridges_in_path(path: &str) -> Vec<PciAddress> {
    let mut chain = bootdev::pci_functions_in_path(path);
    chain.pop();
    chain.reverse();
    chain
}

/// The PCI tree as sysfs shows it now. A listing or link that cannot be
/// read is an error: the tree decides what a bridge entry hides.
pub fn pci_tree(host: &HostRoot) -> Result<Topology, BootConfigError> {
    let links = sysfs::device_links(host)?;
    Ok(Topology::new(links.into_iter().filter_map(
        |(name, target)| Some((name.parse::<PciAddress>().ok()?, bridges_in_path(&target))),
    )))
}

impl Dom0AccessEngine {
    /// An engine over a backend and the host (for `/proc/cmdline`, the PCI
    /// tree and the boot devices).
    pub fn new(boot: Box<dyn BootConfig>, host: HostRoot) -> Dom0AccessEngine {
        let cache_boot = boot.cacheable();
        let watch = cache_boot.then(|| {
            let mut files = boot.watched();
            files.push(procfs::CMDLINE.to_owned());
            ChangeWatch::new(host.clone(), &files, WATCH_TRUST)
        });
        Dom0AccessEngine {
            boot,
            host,
            cache: Mutex::new(Cache::default()),
            cache_boot,
            tree: Mutex::new(None),
            watch,
            initramfs: InitramfsUpdate::Unknown("no initramfs command configured".into()),
            edits: GroupCommit::default(),
        }
    }

    /// The same engine, rebuilding the initramfs by `update` where
    /// xen-pciback is a module it must list.
    pub fn with_initramfs(mut self, update: InitramfsUpdate) -> Dom0AccessEngine {
        self.initramfs = update;
        self
    }

    /// The PCI tree as sysfs shows it now (see [`pci_tree`]).
    pub fn read_tree(&self) -> Result<Arc<Topology>, BootConfigError> {
        let tree = Arc::new(pci_tree(&self.host)?);
        *self.tree.lock().unwrap_or_else(|p| p.into_inner()) = Some(tree.clone());
        Ok(tree)
    }

    /// The PCI tree, covering `addrs` (re-read when one is missing).
    fn tree_for(&self, addrs: &[PciAddress]) -> Result<Arc<Topology>, BootConfigError> {
        let cached = self.tree.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(tree) = cached
            && addrs.iter().all(|a| tree.contains(a))
        {
            return Ok(tree);
        }
        self.read_tree()
    }

    /// Both views, running and next boot. While the change watch reports
    /// nothing, the views confirmed last are answered without touching the
    /// files; otherwise each is checked by `stat` (and re-read if changed).
    pub fn views(&self) -> Result<(Arc<HideView>, Arc<HideView>), BootConfigError> {
        let Some(watch) = &self.watch else {
            return Ok((self.running_view()?, self.boot_view()?));
        };
        if watch.unchanged() {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let (Some((_, running)), Some((_, boot))) = (&cache.running, &cache.boot) {
                return Ok((running.clone(), boot.clone()));
            }
        }
        let epoch = watch.epoch_before_reading();
        let views = (self.running_view()?, self.boot_view()?);
        watch.confirm(epoch);
        Ok(views)
    }

    /// The hide list the running kernel uses.
    pub fn running_view(&self) -> Result<Arc<HideView>, BootConfigError> {
        let print = procfs::cmdline_fingerprint(&self.host)?;
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((p, view)) = &cache.running
            && *p == print
        {
            return Ok(view.clone());
        }
        let view = Arc::new(HideView::from_cmdline(&procfs::read_cmdline(&self.host)?));
        cache.running = Some((print, view.clone()));
        Ok(view)
    }

    /// The hide list the next boot will use.
    pub fn boot_view(&self) -> Result<Arc<HideView>, BootConfigError> {
        let print = if self.cache_boot {
            self.boot.fingerprint()
        } else {
            None
        };
        if let Some(print) = print {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((p, view)) = &cache.boot
                && *p == print
            {
                return Ok(view.clone());
            }
        }
        let view = Arc::new(self.boot.boot_view()?);
        if let Some(print) = print {
            let changed = {
                let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
                let changed = cache.boot.as_ref().is_none_or(|(_, old)| **old != *view);
                cache.boot = Some((print, view.clone()));
                changed
            };
            if changed {
                self.report_boot_view(&view);
            }
        }
        Ok(view)
    }

    /// Read the next boot's hide list and log what a person should know
    /// about it (a cached read logs it on every change after this).
    pub fn report_at_start(&self) {
        let cached = self.cache_boot;
        match self.boot_view() {
            Ok(view) if !cached => self.report_boot_view(&view),
            Ok(_) => {}
            Err(e) => tracing::error!("the boot configuration cannot be read: {e}"),
        }
    }

    /// Log what a person should know about the next boot's hide list: a
    /// value the kernel refuses or ignores, and a boot device it would
    /// hide.
    pub fn report_boot_view(&self, view: &HideView) {
        if let Some(e) = view.malformed() {
            tracing::error!(value = %e.value, reason = %e.reason, at = %e.offending,
                "the next boot's xen-pciback.hide does not parse: the kernel will hide no device at all");
        }
        for refused in &view.refused {
            tracing::warn!(
                ?refused,
                "the kernel will refuse an occurrence of xen-pciback.hide and keep the one before it"
            );
        }
        if view.after_end > 0 {
            tracing::warn!(
                "xen-pciback.hide after `--` on the dom0 command line goes to init and hides nothing"
            );
        }
        if let Some(legacy) = &view.legacy {
            tracing::warn!(%legacy, "pciback.hide belongs to the old pciback driver and hides nothing");
        }
        match self.boot_disk_hidden(view) {
            Ok(None) => {}
            Ok(Some((disk, function))) => tracing::error!(
                %function, block_device = %disk,
                "the boot configuration hides a PCI function a boot disk sits behind: the host may not boot"
            ),
            Err(e) => tracing::warn!("cannot check the boot devices against the hide list: {e}"),
        }
    }

    /// The first boot-disk function `view` hides (through a bridge or a
    /// wildcard too).
    fn boot_disk_hidden(
        &self,
        view: &HideView,
    ) -> Result<Option<(String, PciAddress)>, BootConfigError> {
        if view.entries().is_empty() {
            return Ok(None);
        }
        let (disks, tree) = self.boot_disks()?;
        Ok(first_hidden(&disks, &tree, view))
    }

    /// The boot disks, and a PCI tree that covers the functions beneath
    /// them.
    fn boot_disks(&self) -> Result<(Vec<BootDisk>, Arc<Topology>), BootConfigError> {
        let disks = bootdev::boot_devices(&self.host)
            .map_err(|e| BootConfigError::SafetyUnknown(format!("boot devices unknown: {e}")))?;
        let functions: Vec<PciAddress> = disks
            .iter()
            .flat_map(|d| d.pci_functions.iter().copied())
            .collect();
        let tree = self.tree_for(&functions)?;
        Ok((disks, tree))
    }

    /// The status of one function.
    pub fn status(&self, addr: &PciAddress) -> Result<Dom0Access, BootConfigError> {
        Ok(self.statuses(std::slice::from_ref(addr))?[0])
    }

    /// The status of several functions from one read of the views.
    pub fn statuses(&self, addrs: &[PciAddress]) -> Result<Vec<Dom0Access>, BootConfigError> {
        let (running, boot) = self.views()?;
        let tree = if running.entries().is_empty() && boot.entries().is_empty() {
            Arc::new(Topology::default())
        } else {
            self.tree_for(addrs)?
        };
        judge(&running, &boot, &tree, addrs, &|a| self.driver(a))
    }

    /// The driver bound to `addr` now, if any. A link that cannot be read
    /// is an error.
    fn driver(&self, addr: &PciAddress) -> Result<Option<String>, BootConfigError> {
        Ok(sysfs::bound_driver(&self.host, &addr.to_string())?)
    }

    /// The statuses from the views the change watch still vouches for,
    /// without touching a file or starting a process: `None` when an
    /// answer needs I/O (nothing cached, something moved, the PCI tree
    /// not read yet). Never blocks, so async code may call it inline.
    pub fn cached_statuses(&self, addrs: &[PciAddress]) -> Option<Vec<Dom0Access>> {
        let watch = self.watch.as_ref()?;
        if !watch.unchanged() {
            return None;
        }
        let (running, boot) = {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            match (&cache.running, &cache.boot) {
                (Some((_, r)), Some((_, b))) => (r.clone(), b.clone()),
                _ => return None,
            }
        };
        let tree = if running.entries().is_empty() && boot.entries().is_empty() {
            Arc::new(Topology::default())
        } else {
            let tree = self
                .tree
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()?;
            if !addrs.iter().all(|a| tree.contains(a)) {
                return None;
            }
            tree
        };
        // Who holds a function now is its driver link: one readlink each,
        // which does not block (sysfs), so the answer stays inline.
        judge(&running, &boot, &tree, addrs, &|a| self.driver(a)).ok()
    }

    /// The check every edit passes before it is written: it must not newly
    /// hide a function a boot disk sits behind, nor one that carries
    /// dom0's network (its default route, its management interface).
    fn safety_check(&self, before: &HideView, after: &HideView) -> Result<(), BootConfigError> {
        if after.entries().is_empty() {
            return Ok(());
        }
        // One read of the mounts and the tree for both views.
        let (disks, tree) = self.boot_disks()?;
        if let Some((block_device, function)) = first_hidden(&disks, &tree, after)
            && first_hidden(&disks, &tree, before).is_none_or(|(_, f)| f != function)
        {
            return Err(BootConfigError::BootDevice {
                block_device,
                function,
            });
        }
        self.refuse_platform(&tree, before, after)?;
        self.refuse_host_display(before, after)?;
        let network = netdev::carrying_dom0(&self.host).map_err(|e| {
            BootConfigError::SafetyUnknown(format!("dom0's network interfaces unknown: {e}"))
        })?;
        let carried: Vec<(PciAddress, &String)> = network
            .iter()
            .filter_map(|(f, iface)| Some((f.parse().ok()?, iface)))
            .collect();
        if carried.is_empty() {
            return Ok(());
        }
        let functions: Vec<PciAddress> = carried.iter().map(|(f, _)| *f).collect();
        let tree = self.tree_for(&functions)?;
        if let Some((function, interface)) = carried
            .iter()
            .find(|(f, _)| after.hides_in(&tree, f) && !before.hides_in(&tree, f))
        {
            return Err(BootConfigError::Dom0Network {
                interface: (*interface).clone(),
                function: *function,
            });
        }
        Ok(())
    }

    /// Refuse an edit that newly hides a function the platform itself
    /// uses ([`platform::platform_class`]); a class that cannot be read
    /// refuses too.
    fn refuse_platform(
        &self,
        tree: &Topology,
        before: &HideView,
        after: &HideView,
    ) -> Result<(), BootConfigError> {
        for function in tree
            .functions()
            .filter(|f| after.hides_in(tree, f) && !before.hides_in(tree, f))
        {
            let text = sysfs::class_text(&self.host, &function.to_string()).map_err(|e| {
                BootConfigError::SafetyUnknown(format!("the class of {function} unknown: {e}"))
            })?;
            let class = platform::parse_class(&text).ok_or_else(|| {
                BootConfigError::SafetyUnknown(format!("the class of {function} is {text:?}"))
            })?;
            if let Some(what) = platform::platform_class(class) {
                return Err(BootConfigError::HostPlatform {
                    what,
                    function: *function,
                });
            }
        }
        Ok(())
    }

    /// Refuse an edit that newly hides the system display device while
    /// the next boot shows the host's console on it (`host.display`, as
    /// XenCenter's flow needs: the display off first, then the hide).
    fn refuse_host_display(
        &self,
        before: &HideView,
        after: &HideView,
    ) -> Result<(), BootConfigError> {
        let unknown = |e: &dyn std::fmt::Display| {
            BootConfigError::SafetyUnknown(format!("the system display device unknown: {e}"))
        };
        let vga: Vec<PciAddress> = crate::host::console::boot_vga_devices(&self.host)
            .map_err(|e| unknown(&e))?
            .iter()
            .filter_map(|f| f.parse().ok())
            .collect();
        if vga.is_empty() {
            return Ok(());
        }
        let tree = self.tree_for(&vga)?;
        let Some(function) = vga
            .into_iter()
            .find(|f| after.hides_in(&tree, f) && !before.hides_in(&tree, f))
        else {
            return Ok(());
        };
        if display::shows_display(self.boot.xen_console()?.as_deref()) {
            return Err(BootConfigError::HostDisplay { function });
        }
        Ok(())
    }

    /// The files an edit may change (the flow's own, pcipass's drop-ins,
    /// the early-load files), host-relative.
    pub fn edited_files(&self) -> Vec<String> {
        let mut files = self.boot.watched();
        files.extend(
            [
                boot::PCIPASS_DROPIN,
                boot::PCIPASS_DISPLAY_DROPIN,
                boot::DEFAULT_GRUB,
                super::early::MODPROBE_DROPIN,
                crate::host::modules::INITRAMFS_TOOLS_MODULES,
                super::early::DRACUT_DROPIN,
            ]
            .map(str::to_owned),
        );
        files.sort();
        files.dedup();
        files
    }

    /// Whether the next boot shows the host's console on the display
    /// (its Xen `console=`).
    pub fn display_at_next_boot(&self) -> Result<bool, BootConfigError> {
        Ok(display::shows_display(self.boot.xen_console()?.as_deref()))
    }

    /// Turn the host display on (`enable`) or off from the next boot on:
    /// Xen's `console=` set by [`display::console_value`], in one
    /// transaction of its own.
    pub fn set_display(&self, enable: bool) -> Result<(), BootConfigError> {
        txn::edit_console(self.boot.as_ref(), &|current| {
            (
                display::console_value(enable, current),
                display::dom0_console(enable, current),
            )
        })
    }

    /// Undo an edit a crash left unfinished ([`txn::recover`]), under the
    /// flow's lock; what was done, for the log.
    pub fn recover(&self) -> Result<Option<String>, BootConfigError> {
        txn::recover_now(self.boot.as_ref())
    }

    /// Fingerprints of the boot configuration and `/proc/cmdline`.
    pub fn fingerprint(&self) -> (Option<BootFingerprint>, Option<Fingerprint>) {
        (
            self.boot.fingerprint(),
            procfs::cmdline_fingerprint(&self.host).ok(),
        )
    }
}

/// The status of each function from the two views, the tree and its
/// driver now. Dom0 does not have a function now when pciback holds it
/// (hidden at boot, or taken at runtime: `xl pci-assignable-add`, an
/// apply-now hide), or when no driver holds it and the running command
/// line hides it; it has it when another driver holds it (where
/// xen-pciback is a module that loaded late, the native driver won the
/// race at boot), or when nothing holds it and nothing hid it (a function
/// no dom0 driver claims is still dom0's to give). With nothing changed
/// at runtime this is the running command line against the next boot's.
///
/// | driver now | running line hides it | dom0 has it now |
/// |---|---|---|
/// | pciback | either | no |
/// | another | either | yes |
/// | none | yes | no |
/// | none | no | yes |
fn judge(
    running: &HideView,
    boot: &HideView,
    tree: &Topology,
    addrs: &[PciAddress],
    driver: &dyn Fn(&PciAddress) -> Result<Option<String>, BootConfigError>,
) -> Result<Vec<Dom0Access>, BootConfigError> {
    addrs
        .iter()
        .map(|a| {
            let now = match driver(a)? {
                Some(d) => d == sysfs::PCIBACK_DRIVER,
                None => running.hides_in(tree, a),
            };
            Ok(Dom0Access::from_views(now, boot.hides_in(tree, a)))
        })
        .collect()
}

/// The first boot-disk function `view` hides (through a bridge or a
/// wildcard too), with its disk.
fn first_hidden(
    disks: &[BootDisk],
    tree: &Topology,
    view: &HideView,
) -> Option<(String, PciAddress)> {
    disks.iter().find_map(|d| {
        d.pci_functions
            .iter()
            .find(|f| view.hides_in(tree, f))
            .map(|f| (d.block_device.clone(), *f))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The status of one function for each driver it may have now and
    /// each pair of views (issue 24's truth table).
    #[test]
    fn who_holds_a_function_now_and_what_the_next_boot_does() {
        let gpu: PciAddress = "0000:01:00.0".parse().unwrap();
        let hides = HideView::from_value(Some(b"(0000:01:00.0)"));
        let none = HideView::from_value(None);
        let tree = Topology::default();
        use Dom0Access::*;
        for (driver, running, boot, want) in [
            // Nothing changed at runtime: the command lines decide.
            (Some("i915"), &none, &none, Enabled),
            (Some("i915"), &none, &hides, DisableOnReboot),
            (Some("pciback"), &hides, &hides, Disabled),
            (Some("pciback"), &hides, &none, EnableOnReboot),
            // The native driver won the race at boot: dom0 has it.
            (Some("i915"), &hides, &hides, DisableOnReboot),
            // Taken at runtime (an apply-now hide, xl pci-assignable-add).
            (Some("pciback"), &none, &hides, Disabled),
            (Some("pciback"), &none, &none, EnableOnReboot),
            // No driver: hidden if the running line hid it, else dom0's.
            (None, &hides, &hides, Disabled),
            (None, &none, &none, Enabled),
            (None, &none, &hides, DisableOnReboot),
        ] {
            let got = judge(running, boot, &tree, &[gpu], &|_| {
                Ok(driver.map(str::to_owned))
            })
            .unwrap();
            assert_eq!(got, vec![want], "{driver:?} {running:?} {boot:?}");
        }
    }
}
