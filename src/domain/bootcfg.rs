//! The boot configuration behind one trait, two backends, and the
//! [`Dom0AccessEngine`] the API uses.
//!
//! * [`NativeBootConfig`] reads and edits grub.cfg under the root itself,
//!   under the lock it shares with the `xen-cmdline` program.
//! * [`ExecBootConfig`] runs a `xen-cmdline` program (`--get-dom0`,
//!   `--set-dom0`, `--delete-dom0`), as xapi does on XenServer.
//!
//! The engine judges dom0 access from two views of the effective hide
//! list: `/proc/cmdline` (now) and the boot configuration (next boot).
//! Both are read fresh, with a cache keyed on the files' fingerprints;
//! with the native backend a [`ChangeWatch`] on the files' directories
//! lets a status call skip even the `stat`s while nothing has moved.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::domain::grub::{GrubConfig, GrubError, Target};
use crate::domain::hide::{self, HIDE_KEY, HideEdit, HideParseError, HideView};
use crate::domain::{Dom0Access, PciAddress};
use crate::host::boot::Fingerprint;
use crate::host::watch::ChangeWatch;
use crate::host::{HostError, HostRoot, boot, exec, procfs};

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
    /// grub.cfg has no usable Xen entry.
    #[error(transparent)]
    Grub(#[from] GrubError),
    /// The current hide value does not parse: edits are refused.
    #[error("{0}")]
    HideListMalformed(#[from] HideParseError),
    /// The xen-cmdline program failed.
    #[error("xen-cmdline failed ({status}): {stderr}")]
    Exec { status: String, stderr: String },
}

impl BootConfigError {
    /// A reason fit for a client: no paths.
    pub fn client_reason(&self) -> String {
        match self {
            BootConfigError::Host(e) if e.is_not_found() => {
                "the boot configuration or /proc/cmdline is missing".into()
            }
            BootConfigError::Host(e) => format!("cannot {} the boot configuration", e.op),
            BootConfigError::Grub(e) => e.to_string(),
            BootConfigError::HideListMalformed(e) => e.reason.clone(),
            BootConfigError::Exec { status, .. } => format!("xen-cmdline failed ({status})"),
        }
    }
}

/// Read and edit the dom0 arguments of the boot configuration.
pub trait BootConfig: Send + Sync + std::fmt::Debug {
    /// The value of dom0 parameter `key` in the default entry.
    fn get_dom0(&self, key: &str) -> Result<Option<String>, BootConfigError>;

    /// Read-modify-write of dom0 parameter `key`, serialised against every
    /// other writer (this process and `xen-cmdline`). Returns the value
    /// after the edit.
    fn update_dom0(
        &self,
        key: &str,
        edit: &mut dyn FnMut(Option<&str>) -> Result<HideEdit, HideParseError>,
    ) -> Result<Option<String>, BootConfigError>;

    /// Changes when the configuration changes; `None` when unknown.
    fn fingerprint(&self) -> Option<Fingerprint>;

    /// True when a read may be cached on [`BootConfig::fingerprint`] (the
    /// value comes from the file alone).
    fn cacheable(&self) -> bool {
        false
    }
}

/// The fingerprint of the grub.cfg under `host`, if it has one.
fn grub_fingerprint(host: &HostRoot) -> Option<Fingerprint> {
    boot::locate_fingerprinted(host)
        .ok()
        .map(|(_, print)| print)
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

/// Apply `op` to the grub.cfg under `host` (read, compute, write) while
/// holding the shared lock. Used by the daemon and by `xen-cmdline`.
pub fn edit_grub<T>(
    host: &HostRoot,
    op: impl FnOnce(&GrubConfig) -> Result<(Option<String>, T), BootConfigError>,
) -> Result<T, BootConfigError> {
    let _lock = boot::lock(host)?;
    let (rel, text, _) = boot::read(host)?;
    let config = GrubConfig::parse(&text)?;
    let (new_text, result) = op(&config)?;
    if let Some(new_text) = new_text
        && new_text != text
    {
        boot::replace_atomic(host, rel, &new_text)?;
    }
    Ok(result)
}

impl BootConfig for NativeBootConfig {
    fn get_dom0(&self, key: &str) -> Result<Option<String>, BootConfigError> {
        let (_, text, _) = boot::read(&self.host)?;
        Ok(GrubConfig::parse(&text)?.get(Target::Dom0, key)?)
    }

    fn update_dom0(
        &self,
        key: &str,
        edit: &mut dyn FnMut(Option<&str>) -> Result<HideEdit, HideParseError>,
    ) -> Result<Option<String>, BootConfigError> {
        let _in_process = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        edit_grub(&self.host, |config| {
            let current = config.get(Target::Dom0, key)?;
            Ok(match edit(current.as_deref())? {
                HideEdit::Unchanged => (None, current),
                HideEdit::Set(value) => (
                    Some(config.set(Target::Dom0, key, Some(&value))?),
                    Some(value),
                ),
                HideEdit::Delete => (Some(config.delete(Target::Dom0, key)?), None),
            })
        })
    }

    fn fingerprint(&self) -> Option<Fingerprint> {
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
                stderr: out.stderr.trim().to_owned(),
            }),
        }
    }
}

impl BootConfig for ExecBootConfig {
    fn get_dom0(&self, key: &str) -> Result<Option<String>, BootConfigError> {
        // As xapi reads it: `KEY=VALUE` on stdout, anything else is unset.
        let out = self.run(&["--get-dom0", key])?;
        let line = out.trim_end();
        Ok(line.strip_prefix(&format!("{key}=")).map(str::to_owned))
    }

    fn update_dom0(
        &self,
        key: &str,
        edit: &mut dyn FnMut(Option<&str>) -> Result<HideEdit, HideParseError>,
    ) -> Result<Option<String>, BootConfigError> {
        let _in_process = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.get_dom0(key)?;
        match edit(current.as_deref())? {
            HideEdit::Unchanged => Ok(current),
            HideEdit::Set(value) => {
                self.run(&["--set-dom0", &format!("{key}={value}")])?;
                Ok(Some(value))
            }
            HideEdit::Delete => {
                self.run(&["--delete-dom0", key])?;
                Ok(None)
            }
        }
    }

    fn fingerprint(&self) -> Option<Fingerprint> {
        grub_fingerprint(&self.host)
    }
}

#[derive(Debug, Default)]
struct Cache {
    running: Option<(Fingerprint, Arc<HideView>)>,
    boot: Option<(Fingerprint, Arc<HideView>)>,
}

/// Dom0 access of PCI functions: status from the two views, and edits.
#[derive(Debug)]
pub struct Dom0AccessEngine {
    boot: Box<dyn BootConfig>,
    host: HostRoot,
    cache: Mutex<Cache>,
    cache_boot: bool,
    /// Present when both views come from files alone (native backend).
    watch: Option<ChangeWatch>,
}

impl Dom0AccessEngine {
    /// An engine over a backend and the host (for `/proc/cmdline` and the
    /// list of existing functions).
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
            watch,
        }
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
        let view = Arc::new(HideView::from_value(
            self.boot.get_dom0(HIDE_KEY)?.as_deref(),
        ));
        if let Some(print) = print {
            self.cache.lock().unwrap_or_else(|p| p.into_inner()).boot = Some((print, view.clone()));
        }
        Ok(view)
    }

    /// The status of one function.
    pub fn status(&self, addr: &PciAddress) -> Result<Dom0Access, BootConfigError> {
        Ok(self.statuses(std::slice::from_ref(addr))?[0])
    }

    /// The status of many functions from one read of each file.
    pub fn statuses(&self, addrs: &[PciAddress]) -> Result<Vec<Dom0Access>, BootConfigError> {
        let (running, boot) = self.views()?;
        Ok(addrs
            .iter()
            .map(|a| Dom0Access::from_views(running.hides(a), boot.hides(a)))
            .collect())
    }

    /// Hide `addr` from dom0 at the next boot; the new status.
    pub fn disable(&self, addr: &PciAddress) -> Result<Dom0Access, BootConfigError> {
        self.boot
            .update_dom0(HIDE_KEY, &mut |current| hide::plan_disable(current, addr))?;
        self.status(addr)
    }

    /// Give `addr` back to dom0 at the next boot; the new status.
    pub fn enable(&self, addr: &PciAddress) -> Result<Dom0Access, BootConfigError> {
        let existing = self.existing_functions();
        self.boot.update_dom0(HIDE_KEY, &mut |current| {
            hide::plan_enable(current, addr, &existing)
        })?;
        self.status(addr)
    }

    /// The functions present in sysfs (for wildcard expansion).
    fn existing_functions(&self) -> BTreeSet<PciAddress> {
        self.host
            .list_dir("sys/bus/pci/devices")
            .unwrap_or_default()
            .iter()
            .filter_map(|name| name.parse().ok())
            .collect()
    }

    /// Changes whenever grub.cfg or `/proc/cmdline` changes.
    pub fn fingerprint(&self) -> (Option<Fingerprint>, Option<Fingerprint>) {
        (
            self.boot.fingerprint(),
            procfs::cmdline_fingerprint(&self.host).ok(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_with(grub: &str, cmdline: &str) -> (tempfile::TempDir, HostRoot) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("boot/grub")).unwrap();
        std::fs::create_dir_all(dir.path().join("proc")).unwrap();
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
                        backend
                            .update_dom0(HIDE_KEY, &mut |c| hide::plan_disable(c, &addr))
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let text = std::fs::read_to_string(dir.path().join("boot/grub/grub.cfg")).unwrap();
        let value = GrubConfig::parse(&text)
            .unwrap()
            .get(Target::Dom0, HIDE_KEY)
            .unwrap()
            .unwrap();
        assert_eq!(hide::parse_value(&value).unwrap().len(), 32);
    }
}
