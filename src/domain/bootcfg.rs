//! The boot configuration behind one trait, two backends, and the
//! [`Dom0AccessEngine`] the API uses.
//!
//! * [`NativeBootConfig`] reads and edits grub.cfg under the root itself,
//!   under the lock it shares with the `xen-cmdline` program, through the
//!   whole chain ([`crate::domain::grub`], [`crate::domain::kernel`]).
//! * [`ExecBootConfig`] runs a `xen-cmdline` program (`--get-dom0`,
//!   `--set-dom0`, `--delete-dom0`), as xapi does on XenServer.
//!
//! The engine judges dom0 access from two views of the effective hide
//! list, `/proc/cmdline` (now) and the dom0 command line the next boot
//! gets, and from the PCI tree (a bridge's entry hides what is behind
//! it). Both views are read fresh, with a cache keyed on the files'
//! fingerprints; with the native backend a [`ChangeWatch`] on the files'
//! directories lets a status call skip even the `stat`s while nothing has
//! moved. Edits are checked before anything is written: the boot-device
//! rule, Xen's and the kernel's length limits, and that the kernel will
//! read back exactly the intended list.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::domain::grub::{DefaultSource, Edit, GrubConfig, GrubEnv, GrubError, Matching, Target};
use crate::domain::hide::{self, HIDE_KEY, HideEdit, HideParseError, HideView, Topology};
use crate::domain::{Dom0Access, PciAddress, bootdev};
use crate::host::boot::{Fingerprint, GrubFingerprint};
use crate::host::watch::ChangeWatch;
use crate::host::{HostError, HostRoot, boot, exec, procfs, sysfs};

/// How long the cached views are trusted on the change watch alone before
/// a `stat` confirms them (bounds what inotify cannot see, such as a file
/// system mounted over `/boot` after start).
const WATCH_TRUST: Duration = Duration::from_millis(100);

/// Why the boot configuration cannot be read or edited.
#[derive(Debug, thiserror::Error)]
pub enum BootConfigError {
    /// A host file could not be read or written.
    #[error(transparent)]
    Host(#[from] HostError),
    /// grub.cfg has no usable Xen entry, or an edit would be misread.
    #[error(transparent)]
    Grub(#[from] GrubError),
    /// The current hide value does not parse: edits are refused.
    #[error("{0}")]
    HideListMalformed(#[from] HideParseError),
    /// The xen-cmdline program failed.
    #[error("xen-cmdline failed ({status}): {stderr}")]
    Exec { status: String, stderr: String },
    /// The edit would hide a function a boot disk sits behind.
    #[error("the edit would hide {function}, on the path of boot device {block_device}")]
    BootDevice {
        /// The mounted boot device.
        block_device: String,
        /// The PCI function that would be hidden.
        function: PciAddress,
    },
    /// The boot devices or the PCI tree are unknown, so the safety rules
    /// cannot be checked.
    #[error("{0}")]
    SafetyUnknown(String),
    /// The written file would not read back as the intended hide list.
    #[error("the edited boot configuration would not read back as intended: {0}")]
    Verify(String),
}

impl BootConfigError {
    /// A reason fit for a client: no paths, no raw newlines.
    pub fn client_reason(&self) -> String {
        let reason = match self {
            BootConfigError::Host(e) if e.is_not_found() => {
                "the boot configuration or /proc/cmdline is missing".into()
            }
            BootConfigError::Host(e) => format!("cannot {} the boot configuration", e.op),
            BootConfigError::Grub(e) => e.to_string(),
            BootConfigError::HideListMalformed(e) => e.reason.clone(),
            BootConfigError::Exec { status, stderr } => {
                format!("xen-cmdline failed ({status}): {stderr}")
            }
            other => other.to_string(),
        };
        one_line(&reason)
    }
}

/// Text with every control character (newlines included) shown as a
/// space, for error parameters and logs.
pub fn one_line(text: &str) -> String {
    text.trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The edit of the hide parameter a caller plans from its current value.
pub type HidePlan<'a> = dyn FnMut(Option<&[u8]>) -> Result<HideEdit, HideParseError> + 'a;

/// Read and edit the dom0 hide list of the boot configuration.
pub trait BootConfig: Send + Sync + std::fmt::Debug {
    /// The hide list the next boot's kernel will use.
    fn boot_view(&self) -> Result<HideView, BootConfigError>;

    /// Read-modify-write of the hide list, serialised against every other
    /// writer (this process and `xen-cmdline`). `check` sees the view the
    /// edit would produce before anything is written and may refuse it.
    fn update_hide(
        &self,
        plan: &mut HidePlan<'_>,
        check: &dyn Fn(&HideView, &HideView) -> Result<(), BootConfigError>,
    ) -> Result<(), BootConfigError>;

    /// Changes when the configuration changes; `None` when unknown.
    fn fingerprint(&self) -> Option<GrubFingerprint>;

    /// True when a read may be cached on [`BootConfig::fingerprint`] (the
    /// value comes from the files alone).
    fn cacheable(&self) -> bool {
        false
    }
}

/// The fingerprint of the grub.cfg under `host`, if it has one.
fn grub_fingerprint(host: &HostRoot) -> Option<GrubFingerprint> {
    boot::grub_fingerprint(host).ok().map(|(_, print)| print)
}

/// grub.cfg under the root, edited in-process.
#[derive(Debug)]
pub struct NativeBootConfig {
    host: HostRoot,
    writer: Mutex<()>,
}

impl NativeBootConfig {
    /// The backend for `host`.
    pub fn new(host: HostRoot) -> NativeBootConfig {
        NativeBootConfig {
            host,
            writer: Mutex::new(()),
        }
    }
}

/// grub.cfg and the grubenv beside it, parsed.
pub fn load_grub(host: &HostRoot) -> Result<(boot::GrubFiles, GrubConfig), BootConfigError> {
    let files = boot::read(host)?;
    let env = files
        .env
        .as_deref()
        .map_or_else(GrubEnv::absent, GrubEnv::parse);
    let config = GrubConfig::parse(&files.cfg, &env)?;
    Ok((files, config))
}

/// Apply `op` to the grub.cfg under `host` (read, compute, write) while
/// holding the shared lock. Used by the daemon and by `xen-cmdline`.
pub fn edit_grub<T>(
    host: &HostRoot,
    op: impl FnOnce(&GrubConfig) -> Result<(Option<Vec<u8>>, T), BootConfigError>,
) -> Result<T, BootConfigError> {
    let _lock = boot::lock(host)?;
    let (files, config) = load_grub(host)?;
    let (new_text, result) = op(&config)?;
    if let Some(new_text) = new_text
        && new_text != files.cfg
    {
        boot::replace_atomic(host, files.rel, &new_text)?;
    }
    Ok(result)
}

/// The view the next boot's kernel takes from a parsed grub.cfg.
pub fn grub_boot_view(config: &GrubConfig) -> Result<HideView, BootConfigError> {
    Ok(HideView::from_cmdline(&config.boot_cmdline()?.bytes))
}

/// The grub.cfg bytes after applying `edit` to the hide parameter, and
/// the view they give; the kernel must read back exactly the planned
/// value.
fn planned_grub(
    config: &GrubConfig,
    edit: &HideEdit,
) -> Result<Option<(Vec<u8>, HideView)>, BootConfigError> {
    let (text, want) = match edit {
        HideEdit::Unchanged => return Ok(None),
        HideEdit::Set(value) => (
            config.edited(
                Target::Dom0,
                &Edit::Set {
                    key: HIDE_KEY,
                    value: Some(value),
                    matching: Matching::Kernel,
                },
            )?,
            Some(value.as_bytes()),
        ),
        HideEdit::Delete => (
            config.edited(
                Target::Dom0,
                &Edit::Delete {
                    key: HIDE_KEY,
                    matching: Matching::Kernel,
                },
            )?,
            None,
        ),
    };
    // Read back as GRUB will boot it (no one-time override: the edit is
    // for every later boot too).
    let after = GrubConfig::parse(&text, &GrubEnv::absent())?;
    let mut view = None;
    for index in config.edited_entries()? {
        let Some(entry) = after.entries().get(index) else {
            continue;
        };
        let got = HideView::from_cmdline(&after.cmdline_of(entry)?.bytes);
        if got.value.as_deref() != want {
            return Err(BootConfigError::Verify(format!(
                "entry '{}' would give xen-pciback.hide={:?}",
                entry.title,
                got.value_text()
            )));
        }
        view.get_or_insert(got);
    }
    let view = match view {
        Some(v) => v,
        None => grub_boot_view(&after)?,
    };
    Ok(Some((text, view)))
}

impl BootConfig for NativeBootConfig {
    fn boot_view(&self) -> Result<HideView, BootConfigError> {
        let (_, config) = load_grub(&self.host)?;
        if let DefaultSource::GrubEnv(choice) = config.default_source() {
            tracing::info!(%choice, "the next boot is a one-time choice held in grubenv");
        }
        if let DefaultSource::Fallback(spec) = config.default_source() {
            tracing::warn!(default = %spec, "grub.cfg's default names no entry; GRUB boots entry 0");
        }
        grub_boot_view(&config)
    }

    fn update_hide(
        &self,
        plan: &mut HidePlan<'_>,
        check: &dyn Fn(&HideView, &HideView) -> Result<(), BootConfigError>,
    ) -> Result<(), BootConfigError> {
        let _in_process = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        edit_grub(&self.host, |config| {
            let before = grub_boot_view(config)?;
            if let Some(e) = before.malformed() {
                return Err(e.clone().into());
            }
            let edit = plan(before.value.as_deref())?;
            let Some((text, after)) = planned_grub(config, &edit)? else {
                return Ok((None, ()));
            };
            check(&before, &after)?;
            Ok((Some(text), ()))
        })
    }

    fn fingerprint(&self) -> Option<GrubFingerprint> {
        grub_fingerprint(&self.host)
    }

    fn cacheable(&self) -> bool {
        true
    }
}

/// A `xen-cmdline` program, run for every read and edit.
#[derive(Debug)]
pub struct ExecBootConfig {
    program: PathBuf,
    host: HostRoot,
    writer: Mutex<()>,
}

/// Longest a xen-cmdline run may take.
const EXEC_LIMIT: Duration = Duration::from_secs(30);

impl ExecBootConfig {
    /// Run `program`; a non-`/` root is passed as `--root DIR` (our own
    /// xen-cmdline understands it; XenServer's runs on `/` only).
    pub fn new(program: PathBuf, host: HostRoot) -> ExecBootConfig {
        ExecBootConfig {
            program,
            host,
            writer: Mutex::new(()),
        }
    }

    fn run(&self, args: &[&str]) -> Result<String, BootConfigError> {
        let mut argv: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        if self.host.root() != std::path::Path::new("/") {
            argv.push("--root".into());
            argv.push(self.host.root().display().to_string());
        }
        let program = self.program.display().to_string();
        let out = exec::run(&program, &argv, EXEC_LIMIT).map_err(|e| BootConfigError::Exec {
            status: format!("cannot run: {}", e.kind()),
            stderr: String::new(),
        })?;
        match out.code {
            Some(0) => Ok(out.stdout),
            code => Err(BootConfigError::Exec {
                status: code
                    .map(|c| format!("exit code {c}"))
                    .unwrap_or_else(|| "killed".into()),
                stderr: one_line(&out.stderr),
            }),
        }
    }

    /// The dom0 arguments `xen-cmdline` prints for the hide key, in line
    /// order, joined back into a command line for the kernel model (the
    /// `_` spelling too: the kernel reads both).
    fn hide_args(&self) -> Result<Vec<u8>, BootConfigError> {
        let underscore = HIDE_KEY.replace('-', "_");
        let out = self.run(&["--get-dom0", HIDE_KEY, &underscore])?;
        let args: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
        Ok(args.join(" ").into_bytes())
    }
}

impl BootConfig for ExecBootConfig {
    fn boot_view(&self) -> Result<HideView, BootConfigError> {
        Ok(HideView::from_cmdline(&self.hide_args()?))
    }

    fn update_hide(
        &self,
        plan: &mut HidePlan<'_>,
        check: &dyn Fn(&HideView, &HideView) -> Result<(), BootConfigError>,
    ) -> Result<(), BootConfigError> {
        let _in_process = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let before = self.boot_view()?;
        if let Some(e) = before.malformed() {
            return Err(e.clone().into());
        }
        match plan(before.value.as_deref())? {
            HideEdit::Unchanged => Ok(()),
            HideEdit::Set(value) => {
                let after = HideView::from_value(Some(value.as_bytes()));
                check(&before, &after)?;
                self.run(&["--set-dom0", &format!("{HIDE_KEY}={value}")])?;
                Ok(())
            }
            HideEdit::Delete => {
                check(&before, &HideView::from_value(None))?;
                self.run(&["--delete-dom0", HIDE_KEY])?;
                Ok(())
            }
        }
    }

    fn fingerprint(&self) -> Option<GrubFingerprint> {
        grub_fingerprint(&self.host)
    }
}

#[derive(Debug, Default)]
struct Cache {
    running: Option<(Fingerprint, Arc<HideView>)>,
    boot: Option<(GrubFingerprint, Arc<HideView>)>,
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
            let mut files = boot::GRUB_CANDIDATES.to_vec();
            files.push(procfs::CMDLINE);
            ChangeWatch::new(host.clone(), &files, WATCH_TRUST)
        });
        Dom0AccessEngine {
            boot,
            host,
            cache: Mutex::new(Cache::default()),
            cache_boot,
            tree: Mutex::new(None),
            watch,
        }
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
        if let Some(tree) = cached {
            let known: std::collections::BTreeSet<&PciAddress> = tree.functions().collect();
            if addrs.iter().all(|a| known.contains(a)) {
                return Ok(tree);
            }
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
        let disks = bootdev::boot_devices(&self.host)
            .map_err(|e| BootConfigError::SafetyUnknown(format!("boot devices unknown: {e}")))?;
        let functions: Vec<PciAddress> = disks
            .iter()
            .flat_map(|d| d.pci_functions.iter().copied())
            .collect();
        let tree = self.tree_for(&functions)?;
        Ok(disks.iter().find_map(|d| {
            d.pci_functions
                .iter()
                .find(|f| view.hides_in(&tree, f))
                .map(|f| (d.block_device.clone(), *f))
        }))
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
        Ok(addrs
            .iter()
            .map(|a| Dom0Access::from_views(running.hides_in(&tree, a), boot.hides_in(&tree, a)))
            .collect())
    }

    /// The check every edit passes before it is written: it must not newly
    /// hide a function a boot disk sits behind.
    fn safety_check(&self, before: &HideView, after: &HideView) -> Result<(), BootConfigError> {
        if let Some((block_device, function)) = self.boot_disk_hidden(after)?
            && self
                .boot_disk_hidden(before)?
                .is_none_or(|(_, f)| f != function)
        {
            return Err(BootConfigError::BootDevice {
                block_device,
                function,
            });
        }
        Ok(())
    }

    /// Hide `addr` from the next boot on.
    pub fn disable(&self, addr: &PciAddress) -> Result<Dom0Access, BootConfigError> {
        let tree = self.read_tree()?;
        self.boot.update_hide(
            &mut |current| hide::plan_disable(current, addr, &tree),
            &|before, after| self.safety_check(before, after),
        )?;
        self.status(addr)
    }

    /// Give `addr` back to dom0 from the next boot on.
    pub fn enable(&self, addr: &PciAddress) -> Result<Dom0Access, BootConfigError> {
        let tree = self.read_tree()?;
        self.boot.update_hide(
            &mut |current| hide::plan_enable(current, addr, &tree),
            &|before, after| self.safety_check(before, after),
        )?;
        self.status(addr)
    }

    /// Fingerprints of the boot configuration and `/proc/cmdline`.
    pub fn fingerprint(&self) -> (Option<GrubFingerprint>, Option<Fingerprint>) {
        (
            self.boot.fingerprint(),
            procfs::cmdline_fingerprint(&self.host).ok(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The demo mock host (its PCI tree, disks and mounts) with this
    /// grub.cfg and /proc/cmdline.
    fn host_with(grub: &str, cmdline: &str) -> (tempfile::TempDir, HostRoot) {
        let dir = tempfile::tempdir().unwrap();
        crate::host::mock::create(dir.path(), crate::host::mock::Profile::Demo).unwrap();
        std::fs::write(dir.path().join("boot/grub/grub.cfg"), grub).unwrap();
        std::fs::write(dir.path().join("proc/cmdline"), cmdline).unwrap();
        let host = HostRoot::new(dir.path());
        (dir, host)
    }

    const GRUB: &str = include_str!("../../tests/fixtures/grub/xcpng-grub.cfg");

    fn native_engine(host: &HostRoot) -> Dom0AccessEngine {
        Dom0AccessEngine::new(Box::new(NativeBootConfig::new(host.clone())), host.clone())
    }

    /// [`GRUB`] edited by hand to hide 0000:01:00.0.
    fn grub_hiding_gpu() -> String {
        let hidden = GRUB.replace("quiet vga=785", "quiet xen-pciback.hide=(01:00.0) vga=785");
        assert_ne!(hidden, GRUB);
        hidden
    }

    #[test]
    fn status_cycle_through_edits_and_reboot() {
        let (dir, host) = host_with(GRUB, "root=LABEL=x ro\n");
        let engine = native_engine(&host);
        let gpu: PciAddress = "0000:01:00.0".parse().unwrap();
        assert_eq!(engine.status(&gpu).unwrap(), Dom0Access::Enabled);
        assert_eq!(engine.disable(&gpu).unwrap(), Dom0Access::DisableOnReboot);
        assert_eq!(engine.disable(&gpu).unwrap(), Dom0Access::DisableOnReboot);
        std::fs::write(
            dir.path().join("proc/cmdline"),
            "ro xen-pciback.hide=(0000:01:00.0)\n",
        )
        .unwrap();
        assert_eq!(engine.status(&gpu).unwrap(), Dom0Access::Disabled);
        assert_eq!(engine.enable(&gpu).unwrap(), Dom0Access::EnableOnReboot);
        let text = std::fs::read_to_string(dir.path().join("boot/grub/grub.cfg")).unwrap();
        assert_eq!(text, GRUB, "the parameter is removed entirely when empty");
    }

    #[test]
    fn hand_edits_show_up_at_once_between_cached_reads() {
        let (dir, host) = host_with(GRUB, "ro\n");
        let engine = native_engine(&host);
        let gpu: PciAddress = "0000:01:00.0".parse().unwrap();
        let grub = dir.path().join("boot/grub/grub.cfg");
        let hidden = grub_hiding_gpu();
        for round in 0..50 {
            // Served from the cache while nothing changes...
            for _ in 0..3 {
                assert_eq!(engine.status(&gpu).unwrap(), Dom0Access::Enabled, "{round}");
            }
            // ...and a hand edit, in place or by rename, is seen by the very
            // next call, well inside the change watch's trust period.
            if round % 2 == 0 {
                std::fs::write(&grub, &hidden).unwrap();
            } else {
                let tmp = dir.path().join("boot/grub/grub.cfg.tmp");
                std::fs::write(&tmp, &hidden).unwrap();
                std::fs::rename(&tmp, &grub).unwrap();
            }
            assert_eq!(
                engine.status(&gpu).unwrap(),
                Dom0Access::DisableOnReboot,
                "{round}"
            );
            assert_eq!(
                engine.status(&gpu).unwrap(),
                Dom0Access::DisableOnReboot,
                "{round}"
            );
            std::fs::write(&grub, GRUB).unwrap();
        }
        std::fs::write(
            dir.path().join("proc/cmdline"),
            "ro xen-pciback.hide=(01:00.0)\n",
        )
        .unwrap();
        assert_eq!(engine.status(&gpu).unwrap(), Dom0Access::EnableOnReboot);
    }

    #[test]
    fn concurrent_readers_see_a_hand_edit_made_before_they_ask() {
        let (dir, host) = host_with(GRUB, "ro\n");
        let engine = Arc::new(native_engine(&host));
        let gpu: PciAddress = "0000:01:00.0".parse().unwrap();
        let grub = dir.path().join("boot/grub/grub.cfg");
        let hidden = grub_hiding_gpu();
        for round in 0..20 {
            let (text, expected) = if round % 2 == 0 {
                (&hidden, Dom0Access::DisableOnReboot)
            } else {
                (&GRUB.to_owned(), Dom0Access::Enabled)
            };
            std::fs::write(&grub, text).unwrap();
            let readers: Vec<_> = (0..4)
                .map(|_| {
                    let engine = engine.clone();
                    std::thread::spawn(move || {
                        (0..200).all(|_| engine.status(&gpu).unwrap() == expected)
                    })
                })
                .collect();
            for r in readers {
                assert!(
                    r.join().unwrap(),
                    "round {round}: a stale status after the edit"
                );
            }
        }
    }

    #[test]
    fn malformed_value_refuses_edits_and_hides_nothing() {
        let broken = GRUB.replace(
            "quiet vga=785",
            "quiet xen-pciback.hide=(0000:01:00.0)(0b::00.1) vga=785",
        );
        let (dir, host) = host_with(&broken, "ro\n");
        let engine = native_engine(&host);
        let gpu: PciAddress = "0000:01:00.0".parse().unwrap();
        assert_eq!(engine.status(&gpu).unwrap(), Dom0Access::Enabled);
        assert!(matches!(
            engine.disable(&gpu),
            Err(BootConfigError::HideListMalformed(_))
        ));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("boot/grub/grub.cfg")).unwrap(),
            broken
        );
    }

    #[test]
    fn concurrent_edits_lose_nothing() {
        let (dir, host) = host_with(GRUB, "ro\n");
        let backend = std::sync::Arc::new(NativeBootConfig::new(host.clone()));
        let threads: Vec<_> = (0..4u8)
            .map(|t| {
                let backend = backend.clone();
                std::thread::spawn(move || {
                    for i in 0..8u8 {
                        let addr = PciAddress::new(0, t + 1, i, 0).unwrap();
                        let tree = Topology::flat([addr]);
                        backend
                            .update_hide(&mut |c| hide::plan_disable(c, &addr, &tree), &|_, _| {
                                Ok(())
                            })
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let text = std::fs::read(dir.path().join("boot/grub/grub.cfg")).unwrap();
        let config = GrubConfig::parse(&text, &GrubEnv::absent()).unwrap();
        let view = grub_boot_view(&config).unwrap();
        assert_eq!(view.entries().len(), 32);
    }
}
