//! The boot configuration of a host booted by Xen's own EFI loader: the
//! dom0 arguments of the `kernel=` line of `xen.cfg`'s default section
//! ([`crate::domain::xen_efi`] says which section Xen boots and how it
//! reads the line). Only those arguments change; every other byte of
//! `xen.cfg` (other sections, Xen's `options=`, comments, line ends) is
//! kept, and the file is replaced atomically under the same lock file
//! discipline as grub.cfg (`xen.cfg.pcipass-lock`).

use std::sync::Mutex;

use super::{BootConfig, BootConfigError, HideCheck, HidePlan, dom0_line_with_hide, plan_edit};
use crate::domain::hide::{HideEdit, HideView};
use crate::domain::xen_efi;
use crate::host::HostRoot;
use crate::host::boot::{self, GrubFingerprint};

/// `xen.cfg` at a host-relative path.
#[derive(Debug)]
pub struct XenEfiBootConfig {
    host: HostRoot,
    cfg: String,
    writer: Mutex<()>,
}

impl XenEfiBootConfig {
    /// The `xen.cfg` at `cfg` (host-relative) under `host`.
    pub fn new(host: HostRoot, cfg: impl Into<String>) -> XenEfiBootConfig {
        XenEfiBootConfig {
            host,
            cfg: cfg.into(),
            writer: Mutex::new(()),
        }
    }

    fn args(&self) -> Result<(Vec<u8>, Vec<u8>), BootConfigError> {
        let text = self.host.read(&self.cfg)?;
        let args = xen_efi::dom0_args(&text)?;
        Ok((text, args))
    }
}

impl BootConfig for XenEfiBootConfig {
    fn boot_view(&self) -> Result<HideView, BootConfigError> {
        Ok(HideView::from_cmdline(&self.args()?.1))
    }

    fn update_hide(
        &self,
        plan: &mut HidePlan<'_>,
        check: &HideCheck<'_>,
    ) -> Result<HideView, BootConfigError> {
        let _in_process = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let _lock = boot::lock_beside(&self.host, &self.cfg)?;
        let (text, args) = self.args()?;
        let before = HideView::from_cmdline(&args);
        let value = match plan_edit(&before, plan)? {
            HideEdit::Unchanged => return Ok(before),
            HideEdit::Set(value) => Some(value),
            HideEdit::Delete => None,
        };
        let new_args = dom0_line_with_hide(&args, value.as_deref())?;
        let after = HideView::from_cmdline(&new_args);
        if after.value.as_deref() != value.as_deref().map(str::as_bytes) {
            return Err(BootConfigError::Verify(format!(
                "xen.cfg would read back xen-pciback.hide={:?}",
                after.value_text()
            )));
        }
        check(&before, &after)?;
        let new_text = xen_efi::replace_dom0_args(&text, &new_args)?;
        // What Xen will read from the new file is what was planned.
        if xen_efi::dom0_args(&new_text)? != new_args {
            return Err(BootConfigError::Verify(
                "xen.cfg would not read back".into(),
            ));
        }
        boot::replace_atomic(&self.host, &self.cfg, &new_text)?;
        Ok(after)
    }

    fn fingerprint(&self) -> Option<GrubFingerprint> {
        None
    }
}
