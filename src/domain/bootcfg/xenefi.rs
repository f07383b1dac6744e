//! The boot configuration of a host booted by Xen's own EFI loader: the
//! dom0 arguments of the `kernel=` line of `xen.cfg`'s default section
//! and those Xen appends from its `options=` after ` -- ` (the kextra;
//! [`crate::domain::xen_efi`] says which section Xen boots and how it
//! reads the lines). An edit sets the hide among `kernel=`'s arguments and
//! removes any hide from the kextra (with the ` -- ` when nothing else
//! follows it), as the GRUB flows do with the Xen line's ` -- `; every
//! other byte of `xen.cfg` (other sections, Xen's own options, comments,
//! line ends) is kept, and the file is replaced atomically under the same lock file
//! discipline as grub.cfg (`xen.cfg.pcipass-lock`).

use super::txn::{Changes, FileWrite, Snapshot};
use super::{
    BootConfig, BootConfigError, FlowBase, InitramfsCopy, NextBoot, console_check,
    dom0_line_with_hide, expect_value,
};
use crate::domain::display::{self, Dom0Console};
use crate::domain::grub::{GrubError, XEN_DOM0_CMDLINE_MAX};
use crate::domain::hide::{HIDE_KEY, HideView};
use crate::domain::{kernel, xen_efi};
use crate::host::HostRoot;
use crate::host::boot::{self, BootFingerprint};

/// `xen.cfg` at a host-relative path.
#[derive(Debug)]
pub struct XenEfiBootConfig {
    base: FlowBase,
    cfg: String,
}

impl XenEfiBootConfig {
    /// The `xen.cfg` at `cfg` (host-relative) under `host`.
    pub fn new(host: HostRoot, cfg: impl Into<String>) -> XenEfiBootConfig {
        XenEfiBootConfig {
            base: FlowBase::new(host),
            cfg: cfg.into(),
        }
    }

    /// The file and the command line dom0's kernel gets from it.
    fn args(&self) -> Result<(Vec<u8>, Vec<u8>), BootConfigError> {
        let text = self.base.host.read(&self.cfg)?;
        let args = xen_efi::dom0_cmdline(&text).map_err(BootConfigError::xen_efi(&self.cfg))?;
        Ok((text, args))
    }
}

impl BootConfig for XenEfiBootConfig {
    fn boot_view(&self) -> Result<HideView, BootConfigError> {
        Ok(HideView::from_cmdline(&self.args()?.1))
    }

    fn base(&self) -> &FlowBase {
        &self.base
    }

    fn locked_file(&self) -> Result<Option<String>, BootConfigError> {
        Ok(Some(self.cfg.clone()))
    }

    fn snapshot(&self) -> Result<Snapshot, BootConfigError> {
        let (text, args) = self.args()?;
        Ok(Snapshot::of(args, vec![(self.cfg.clone(), Some(text))]))
    }

    /// The hide is set among the dom0 arguments of the booted section's
    /// `kernel=` line, and every hide among the kextra of its `options=`
    /// (parameters of the kernel, not after a `--` of `kernel=`) goes;
    /// Xen must read back exactly the planned dom0 command line.
    fn plan<'a>(
        &'a self,
        snap: &Snapshot,
        value: Option<&str>,
    ) -> Result<Changes<'a>, BootConfigError> {
        let text = snap.file(&self.cfg).unwrap_or_default();
        let args = xen_efi::dom0_args(text).map_err(BootConfigError::xen_efi(&self.cfg))?;
        let new_args = dom0_line_with_hide(&args, value)?;
        let mut new_text = xen_efi::replace_dom0_args(text, &new_args)
            .map_err(BootConfigError::xen_efi(&self.cfg))?;
        let ends_params = kernel::args(&args).iter().any(kernel::is_end_of_params);
        if let Some(rest) =
            xen_efi::kextra(&new_text).map_err(BootConfigError::xen_efi(&self.cfg))?
            && !ends_params
        {
            let old = new_text.get(rest).unwrap_or_default();
            let new_rest = kernel::with_param(old, HIDE_KEY.as_bytes(), None);
            new_text = xen_efi::replace_kextra(&new_text, &new_rest)
                .map_err(BootConfigError::xen_efi(&self.cfg))?;
        }
        let line = xen_efi::dom0_cmdline(&new_text).map_err(BootConfigError::xen_efi(&self.cfg))?;
        if line.len() > XEN_DOM0_CMDLINE_MAX {
            return Err(GrubError::TooLong {
                what: "the dom0 command line",
                length: line.len(),
                limit: XEN_DOM0_CMDLINE_MAX,
            }
            .into());
        }
        expect_value(
            HideView::from_cmdline(&line),
            value,
            "the new kernel= and options= lines",
        )?;
        Ok(Changes {
            writes: vec![FileWrite {
                rel: self.cfg.clone(),
                new: Some(new_text),
            }],
            ..Changes::default()
        })
    }

    /// From the booted section's `options=`.
    fn xen_console(&self) -> Result<Option<String>, BootConfigError> {
        let text = self.base.host.read(&self.cfg)?;
        Ok(xen_efi::xen_options(&text)
            .map_err(BootConfigError::xen_efi(&self.cfg))?
            .and_then(|r| text.get(r))
            .and_then(display::console_in))
    }

    /// The booted section's `options=` (Xen's own part) with its console
    /// set; the kextra and every other byte kept.
    /// dom0's console among the `kernel=` line's arguments, as
    /// host-display edits it.
    fn plan_console<'a>(
        &'a self,
        snap: &Snapshot,
        value: &str,
        dom0: Dom0Console,
    ) -> Result<Changes<'a>, BootConfigError> {
        let text = snap.file(&self.cfg).unwrap_or_default();
        let options = xen_efi::xen_options(text)
            .map_err(BootConfigError::xen_efi(&self.cfg))?
            .and_then(|r| text.get(r))
            .unwrap_or_default();
        let mut new_text =
            xen_efi::replace_xen_options(text, &display::with_console(options, value))
                .map_err(BootConfigError::xen_efi(&self.cfg))?;
        if dom0 != Dom0Console::Keep {
            let args =
                xen_efi::dom0_args(&new_text).map_err(BootConfigError::xen_efi(&self.cfg))?;
            new_text =
                xen_efi::replace_dom0_args(&new_text, &display::dom0_console_args(&args, dom0))
                    .map_err(BootConfigError::xen_efi(&self.cfg))?;
        }
        Ok(Changes {
            writes: vec![FileWrite {
                rel: self.cfg.clone(),
                new: Some(new_text),
            }],
            steps: vec![console_check(self, value, dom0)],
            ..Changes::default()
        })
    }

    fn verify(&self, value: Option<&str>) -> Result<HideView, BootConfigError> {
        expect_value(self.boot_view()?, value, &format!("/{}", self.cfg))
    }

    /// The booted section's dom0 line (`kernel=`'s arguments, then what
    /// follows ` -- ` in `options=`) and its `ramdisk=` on the ESP.
    fn next_boot(&self) -> Result<NextBoot, BootConfigError> {
        Ok(NextBoot {
            cmdline: self.args()?.1,
            initramfs: booted_ramdisk(&self.base.host, &self.cfg)?,
        })
    }

    /// xen.cfg alone decides what boots next.
    fn fingerprint(&self) -> Option<BootFingerprint> {
        Some(BootFingerprint {
            cfg: boot::fingerprint(&self.base.host, &self.cfg).ok()?,
            env: None,
        })
    }

    fn cacheable(&self) -> bool {
        true
    }

    fn watched(&self) -> Vec<String> {
        vec![self.cfg.clone()]
    }

    /// The loader boots `ramdisk=` beside it on the ESP, a copy of the
    /// `/boot` image of the kernel `kernel=` names (told by its bytes: the
    /// ESP's kernel is a copy of one in `/boot`).
    fn initramfs_copies(&self) -> Result<Vec<InitramfsCopy>, BootConfigError> {
        let Some(booted) = booted_ramdisk(&self.base.host, &self.cfg)? else {
            return Ok(Vec::new());
        };
        let text = self.base.host.read(&self.cfg)?;
        let kernel = beside_loader(
            &self.cfg,
            &xen_efi::kernel_file(&text).map_err(BootConfigError::xen_efi(&self.cfg))?,
        )?;
        let image = self.base.host.read(&kernel)?;
        let refuse = |why: String| {
            BootConfigError::EditsRefused(format!(
                "Xen's EFI loader boots /{kernel} with the initramfs /{booted} ({} of /{}), and \
                 {why}, so pcipass cannot tell which rebuilt initramfs to put there for \
                 xen-pciback to load before the native drivers. Copy the kernel and initramfs \
                 of /boot over those two files (the same release), then retry",
                "ramdisk=", self.cfg
            ))
        };
        let mut names = self.base.host.list_dir("boot")?;
        names.sort();
        let mut release = None;
        for name in &names {
            if let Some(r) = name.strip_prefix("vmlinuz-")
                && self.base.host.read(&format!("boot/{name}"))? == image
            {
                release = Some(r);
                break;
            }
        }
        let Some(release) = release else {
            return Err(refuse(format!("/{kernel} is none of the kernels in /boot")));
        };
        let built = [
            format!("boot/initrd.img-{release}"),
            format!("boot/initramfs-{release}.img"),
        ]
        .into_iter()
        .find(|rel| self.base.host.exists(rel))
        .ok_or_else(|| refuse(format!("/boot has no initramfs for kernel {release}")))?;
        Ok(vec![InitramfsCopy { built, booted }])
    }
}

/// The initramfs Xen's EFI loader loads with the booted section of the
/// xen.cfg at `cfg` (host-relative): its `ramdisk=`, beside the loader;
/// `None` without one.
pub fn booted_ramdisk(host: &HostRoot, cfg: &str) -> Result<Option<String>, BootConfigError> {
    let text = host.read(cfg)?;
    xen_efi::ramdisk(&text)
        .map_err(BootConfigError::xen_efi(cfg))?
        .map(|name| beside_loader(cfg, &name))
        .transpose()
}

/// The host-relative path of a file `name` that xen.cfg at `cfg` names:
/// relative to the loader's directory (xen.cfg's), or to the ESP's root
/// when it starts with `\`; `\` and `/` both separate. Refused when it
/// is not ASCII or climbs out of the ESP.
fn beside_loader(cfg: &str, name: &[u8]) -> Result<String, BootConfigError> {
    let refuse = |why: &str| {
        BootConfigError::EditsRefused(format!(
            "xen.cfg (/{cfg}) names the file {:?}, which {why}",
            String::from_utf8_lossy(name)
        ))
    };
    let name = std::str::from_utf8(name)
        .ok()
        .filter(|n| n.is_ascii())
        .ok_or_else(|| refuse("is not ASCII"))?;
    let esp: Vec<&str> = crate::host::efi::ESP.split('/').collect();
    let mut parts: Vec<&str> = if name.starts_with(['\\', '/']) {
        esp.clone()
    } else {
        cfg.rsplit_once('/')
            .map_or("", |(d, _)| d)
            .split('/')
            .collect()
    };
    for part in name.split(['\\', '/']) {
        match part {
            "" | "." => {}
            ".." if parts.len() > esp.len() => {
                parts.pop();
            }
            ".." => return Err(refuse("lies outside the ESP")),
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::beside_loader;

    #[test]
    fn files_xen_cfg_names() {
        let cfg = "boot/efi/EFI/xen/xen.cfg";
        for (name, want) in [
            ("initrd.img", Some("boot/efi/EFI/xen/initrd.img")),
            ("sub\\initrd.img", Some("boot/efi/EFI/xen/sub/initrd.img")),
            (
                "\\EFI\\debian\\initrd.img",
                Some("boot/efi/EFI/debian/initrd.img"),
            ),
            (
                "..\\debian\\initrd.img",
                Some("boot/efi/EFI/debian/initrd.img"),
            ),
            ("..\\..\\..\\etc\\shadow", None),
            ("\\..\\x", None),
            ("initrd-\u{e9}.img", None),
        ] {
            assert_eq!(
                beside_loader(cfg, name.as_bytes()).ok().as_deref(),
                want,
                "{name}"
            );
        }
    }
}
