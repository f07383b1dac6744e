//! The native backend: grub.cfg under the root, read through the whole
//! chain and edited in-process under the lock shared with `xen-cmdline`.

use super::txn::{Changes, FileWrite, Snapshot};
use super::{
    BootConfig, BootConfigError, FlowBase, NextBoot, console_check, expect_value, grub_fingerprint,
    grub_locked_file, grub_xen_console,
};
use crate::domain::display::{self, Dom0Console, XEN_CONSOLE_KEY};
use crate::domain::grub::{DefaultSource, Edit, GrubConfig, GrubEnv, Matching, Target};
use crate::domain::hide::{HIDE_KEY, HideEdit, HideView};
use crate::host::boot::BootFingerprint;
use crate::host::{HostRoot, boot};

/// The key of grubenv's bytes in a [`Snapshot`] (the one-time choice
/// GRUB boots is part of what an edit starts from).
const GRUBENV_KEY: &str = "(grubenv)";

/// grub.cfg under the root, edited in-process.
#[derive(Debug)]
pub struct NativeBootConfig {
    base: FlowBase,
}

impl NativeBootConfig {
    /// The backend for `host`.
    pub fn new(host: HostRoot) -> NativeBootConfig {
        NativeBootConfig {
            base: FlowBase::new(host),
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

/// What GRUB's next boot hands dom0: the default entry's line (grubenv's
/// one-time choice included) and `/boot`'s initramfs of the running
/// kernel (what the initramfs builder rebuilds and grub-mkconfig names).
pub fn grub_next_boot(host: &HostRoot) -> Result<NextBoot, BootConfigError> {
    let (_, config) = load_grub(host)?;
    let cmdline = config.boot_cmdline()?.bytes;
    let initramfs = crate::host::modules::kernel_release(host)
        .ok()
        .and_then(|r| {
            [
                format!("boot/initrd.img-{r}"),
                format!("boot/initramfs-{r}.img"),
            ]
            .into_iter()
            .find(|rel| host.exists(rel))
        });
    Ok(NextBoot { cmdline, initramfs })
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

impl NativeBootConfig {
    /// grub.cfg's path and the configuration an edit starts from, as the
    /// snapshot read them (with its grubenv).
    fn snapshot_config(&self, snap: &Snapshot) -> Result<(String, GrubConfig), BootConfigError> {
        let rel = boot::locate(&self.base.host)?.to_owned();
        let env = snap
            .file(GRUBENV_KEY)
            .map_or_else(GrubEnv::absent, GrubEnv::parse);
        let config = GrubConfig::parse(snap.file(&rel).unwrap_or_default(), &env)?;
        Ok((rel, config))
    }
}

impl BootConfig for NativeBootConfig {
    fn boot_view(&self) -> Result<HideView, BootConfigError> {
        let (_, config) = load_grub(&self.base.host)?;
        if let DefaultSource::GrubEnv(choice) = config.default_source() {
            tracing::info!(%choice, "the next boot is a one-time choice held in grubenv");
        }
        if let DefaultSource::Fallback(spec) = config.default_source() {
            tracing::warn!(default = %spec, "grub.cfg's default names no entry; GRUB boots entry 0");
        }
        grub_boot_view(&config)
    }

    fn base(&self) -> &FlowBase {
        &self.base
    }

    fn locked_file(&self) -> Result<Option<String>, BootConfigError> {
        grub_locked_file(&self.base.host)
    }

    fn snapshot(&self) -> Result<Snapshot, BootConfigError> {
        let (files, config) = load_grub(&self.base.host)?;
        Ok(Snapshot::of(
            config.boot_cmdline()?.bytes,
            vec![
                (files.rel.to_owned(), Some(files.cfg)),
                (GRUBENV_KEY.to_owned(), files.env),
            ],
        ))
    }

    /// grub.cfg edited in place: every entry the edit touches must read
    /// back exactly the planned list.
    fn plan<'a>(
        &'a self,
        snap: &Snapshot,
        value: Option<&str>,
    ) -> Result<Changes<'a>, BootConfigError> {
        let (rel, config) = self.snapshot_config(snap)?;
        let edit = match value {
            Some(v) => HideEdit::Set(v.to_owned()),
            None => HideEdit::Delete,
        };
        let Some((text, _)) = planned_grub(&config, &edit)? else {
            return Ok(Changes::default());
        };
        Ok(Changes {
            writes: vec![FileWrite {
                rel,
                new: Some(text),
            }],
            ..Changes::default()
        })
    }

    fn verify(&self, value: Option<&str>) -> Result<HideView, BootConfigError> {
        let (files, config) = load_grub(&self.base.host)?;
        expect_value(grub_boot_view(&config)?, value, &format!("/{}", files.rel))
    }

    fn xen_console(&self) -> Result<Option<String>, BootConfigError> {
        grub_xen_console(&load_grub(&self.base.host)?.1)
    }

    /// The Xen line of every entry XCP-ng's tool edits, as
    /// `xen-cmdline --set-xen console=VALUE` does.
    ///
    /// dom0's console on the same entries, as host-display's
    /// `xen-cmdline --delete-dom0 console=tty0` or `--set-dom0
    /// "console=hvc0 console=tty0"` does.
    fn plan_console<'a>(
        &'a self,
        snap: &Snapshot,
        value: &str,
        dom0: Dom0Console,
    ) -> Result<Changes<'a>, BootConfigError> {
        let (rel, config) = self.snapshot_config(snap)?;
        let mut text = config.edited(
            Target::Xen,
            &Edit::Set {
                key: XEN_CONSOLE_KEY,
                value: Some(value),
                matching: Matching::Exact,
            },
        )?;
        let dom0_edit = match dom0 {
            Dom0Console::Keep => None,
            Dom0Console::Show => Some(Edit::SetWords {
                key: XEN_CONSOLE_KEY,
                words: display::DOM0_SHOW_LINE,
            }),
            Dom0Console::Hide => Some(Edit::Delete {
                key: display::DOM0_VGA,
                matching: Matching::Exact,
            }),
        };
        if let Some(edit) = dom0_edit {
            let env = snap
                .file(GRUBENV_KEY)
                .map_or_else(GrubEnv::absent, GrubEnv::parse);
            text = GrubConfig::parse(&text, &env)?.edited(Target::Dom0, &edit)?;
        }
        Ok(Changes {
            writes: vec![FileWrite {
                rel,
                new: Some(text),
            }],
            steps: vec![console_check(self, value, dom0)],
            ..Changes::default()
        })
    }

    fn next_boot(&self) -> Result<NextBoot, BootConfigError> {
        grub_next_boot(&self.base.host)
    }

    fn fingerprint(&self) -> Option<BootFingerprint> {
        grub_fingerprint(&self.base.host)
    }

    fn cacheable(&self) -> bool {
        true
    }
}
