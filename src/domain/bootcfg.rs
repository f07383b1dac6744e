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
fn exec_failure(code: Option<i32>, stderr: &str) -> BootConfigError {
    BootConfigError::Exec {
        status: code
            .map(|c| format!("exit code {c}"))
            .unwrap_or_else(|| "killed".into()),
        stderr: one_line(stderr),
    }
}

/// `xen-cmdline --set-dom0-if-unchanged` found another value.
const EXEC_CHANGED: i32 = 3;

/// How often a compare-and-set is retried after a concurrent change.
const EXEC_ATTEMPTS: usize = 3;

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

    /// Run the program; its exit code (`None`: killed) and output.
    fn run_status(&self, args: &[&str]) -> Result<(Option<i32>, String, String), BootConfigError> {
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
        Ok((out.code, out.stdout, out.stderr))
    }

    /// Run the program; anything but exit 0 is an error.
    fn run(&self, args: &[&str]) -> Result<String, BootConfigError> {
        match self.run_status(args)? {
            (Some(0), stdout, _) => Ok(stdout),
            (code, _, stderr) => Err(exec_failure(code, &stderr)),
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
        for _ in 0..EXEC_ATTEMPTS {
            // What the program prints now is the compare-and-set's witness.
            let printed = self.run(&["--get-dom0", HIDE_KEY])?;
            let expected = printed.trim_end_matches('\n');
            let before = self.boot_view()?;
            if let Some(e) = before.malformed() {
                return Err(e.clone().into());
            }
            let edit = plan(before.value.as_deref())?;
            let (setting, want) = match &edit {
                HideEdit::Unchanged => return Ok(()),
                HideEdit::Set(value) => {
                    (Some(format!("{HIDE_KEY}={value}")), Some(value.as_bytes()))
                }
                HideEdit::Delete => (None, None),
            };
            check(&before, &HideView::from_value(want))?;
            let mut cas = vec!["--set-dom0-if-unchanged", HIDE_KEY, expected];
            cas.extend(setting.as_deref());
            match self.run_status(&cas)? {
                (Some(0), _, _) => {}
                (Some(EXEC_CHANGED), _, _) => {
                    tracing::info!(
                        "the boot configuration changed between read and write; planning again"
                    );
                    continue;
                }
                (code, _, stderr) => return Err(exec_failure(code, &stderr)),
            }
            if self.boot_view()?.value.as_deref() == want {
                return Ok(());
            }
            // A program without the compare-and-set (XenServer's own
            // xen-cmdline ignores options it does not know, and takes no
            // lock): a plain edit, which a concurrent hand edit can undo.
            tracing::warn!(
                program = %self.program.display(),
                "xen-cmdline did not apply --set-dom0-if-unchanged; editing without compare-and-set"
            );
            match &setting {
                Some(arg) => self.run(&["--set-dom0", arg])?,
                None => self.run(&["--delete-dom0", HIDE_KEY])?,
            };
            let after = self.boot_view()?;
            if after.value.as_deref() != want {
                return Err(BootConfigError::Verify(format!(
                    "xen-cmdline left xen-pciback.hide={:?}",
                    after.value_text()
                )));
            }
            return Ok(());
        }
        Err(BootConfigError::Verify(
            "the boot configuration kept changing while pcipass edited it".into(),
        ))
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

    fn a(s: &str) -> PciAddress {
        s.parse().unwrap()
    }

    fn grub_bytes(dir: &tempfile::TempDir) -> Vec<u8> {
        std::fs::read(dir.path().join("boot/grub/grub.cfg")).unwrap()
    }

    #[test]
    fn a_hidden_bridge_hides_the_functions_behind_it() {
        // 0000:00:01.0 is the root port above the GPU and its audio function.
        let grub = GRUB.replace(
            "quiet vga=785",
            "quiet xen-pciback.hide=(0000:00:01.0) vga=785",
        );
        let (_dir, host) = host_with(&grub, "ro xen-pciback.hide=(00:01.0)\n");
        let engine = native_engine(&host);
        for f in ["0000:01:00.0", "0000:01:00.1"] {
            assert_eq!(engine.status(&a(f)).unwrap(), Dom0Access::Disabled, "{f}");
        }
        assert_eq!(
            engine.status(&a("0000:00:1f.6")).unwrap(),
            Dom0Access::Enabled
        );
        // Unhiding the GPU keeps its sibling hidden.
        assert_eq!(
            engine.enable(&a("0000:01:00.0")).unwrap(),
            Dom0Access::EnableOnReboot
        );
        assert_eq!(
            engine.status(&a("0000:01:00.1")).unwrap(),
            Dom0Access::Disabled
        );
    }

    #[test]
    fn an_edit_that_would_hide_a_boot_disk_is_refused_and_writes_nothing() {
        let (dir, host) = host_with(GRUB, "ro\n");
        let engine = native_engine(&host);
        let before = grub_bytes(&dir);
        assert!(matches!(
            engine.disable(&a("0000:02:00.0")),
            Err(BootConfigError::BootDevice { .. })
        ));
        assert_eq!(grub_bytes(&dir), before);
    }

    #[test]
    fn a_boot_disk_already_hidden_by_hand_does_not_block_other_edits() {
        // The root port above the NVMe that holds `/`, hidden by hand.
        let grub = GRUB.replace(
            "quiet vga=785",
            "quiet xen-pciback.hide=(0000:00:1d.0) vga=785",
        );
        let (_dir, host) = host_with(&grub, "ro\n");
        let engine = native_engine(&host);
        assert_eq!(
            engine.status(&a("0000:02:00.0")).unwrap(),
            Dom0Access::DisableOnReboot
        );
        assert_eq!(
            engine.disable(&a("0000:01:00.0")).unwrap(),
            Dom0Access::DisableOnReboot
        );
    }

    #[test]
    fn an_unreadable_pci_tree_refuses_a_wildcard_unhide() {
        let grub = GRUB.replace(
            "quiet vga=785",
            "quiet xen-pciback.hide=(0000:03:*.*) vga=785",
        );
        let (dir, host) = host_with(&grub, "ro\n");
        let engine = native_engine(&host);
        let before = grub_bytes(&dir);
        let devices = dir.path().join("sys/bus/pci/devices");
        std::fs::rename(&devices, dir.path().join("sys/bus/pci/devices.away")).unwrap();
        assert!(matches!(
            engine.enable(&a("0000:03:00.0")),
            Err(BootConfigError::Host(_))
        ));
        assert_eq!(grub_bytes(&dir), before, "no sibling silently unhidden");
    }

    #[test]
    fn a_symlinked_grub_cfg_is_edited_through_its_link_inside_the_root() {
        let (dir, host) = host_with(GRUB, "ro\n");
        let grub = dir.path().join("boot/grub/grub.cfg");
        std::fs::rename(&grub, dir.path().join("boot/grub/real.cfg")).unwrap();
        for target in ["real.cfg", "/boot/grub/real.cfg"] {
            let _ = std::fs::remove_file(&grub);
            std::os::unix::fs::symlink(target, &grub).unwrap();
            let engine = native_engine(&host);
            assert_eq!(
                engine.disable(&a("0000:01:00.0")).unwrap(),
                Dom0Access::DisableOnReboot
            );
            assert!(grub.is_symlink(), "{target}: the link is kept");
            let text = std::fs::read_to_string(dir.path().join("boot/grub/real.cfg")).unwrap();
            assert!(text.contains("xen-pciback.hide=(0000:01:00.0)"), "{target}");
            engine.enable(&a("0000:01:00.0")).unwrap();
        }
    }

    #[test]
    fn a_grub_cfg_link_leaving_the_root_is_an_error() {
        let (dir, host) = host_with(GRUB, "ro\n");
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("grub.cfg"), GRUB).unwrap();
        let grub = dir.path().join("boot/grub/grub.cfg");
        std::fs::remove_file(&grub).unwrap();
        let depth = dir.path().components().count() + 2;
        let escape = format!(
            "{}{}",
            "../".repeat(depth),
            outside.path().join("grub.cfg").display()
        );
        std::os::unix::fs::symlink(&escape, &grub).unwrap();
        let engine = native_engine(&host);
        assert!(engine.status(&a("0000:01:00.0")).is_err());
        assert!(engine.disable(&a("0000:01:00.0")).is_err());
        assert_eq!(
            std::fs::read_to_string(outside.path().join("grub.cfg")).unwrap(),
            GRUB
        );
    }

    #[test]
    fn quoted_and_double_dash_command_lines_read_as_the_kernel_reads_them() {
        let (dir, host) = host_with(
            GRUB,
            "ro \"xen-pciback.hide=(01:00.0) (01:00.1)\" -- xen-pciback.hide=(00:1f.6)\n",
        );
        let engine = native_engine(&host);
        let running = engine.running_view().unwrap();
        assert!(running.hides(&a("0000:01:00.1")));
        assert!(
            !running.hides(&a("0000:00:1f.6")),
            "after -- it goes to init"
        );
        std::fs::write(
            dir.path().join("proc/cmdline"),
            b"ro\xa0xen-pciback.hide=(00:1f.6)\n",
        )
        .unwrap();
        assert_eq!(
            engine.status(&a("0000:00:1f.6")).unwrap(),
            Dom0Access::EnableOnReboot
        );
    }
}
