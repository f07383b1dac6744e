//! A simulated reboot of a mock host: what the kernel would do at boot,
//! composed from the boot configuration through the same model of GRUB,
//! Xen and the kernel the status uses.

use crate::domain::bootcfg::{BootConfigError, booted_ramdisk, load_grub, pci_tree};
use crate::domain::bootflow::{self, BootFlow, Detected, FlowChoice};
use crate::domain::hide::HideView;
use crate::domain::pciback::{self, Loading};
use crate::domain::xen_efi;
use crate::host::mock::{self, MockError, initramfs};
use crate::host::{HostRoot, modules};

/// Why a mock reboot failed.
#[derive(Debug, thiserror::Error)]
pub enum MockBootError {
    /// The boot configuration could not be read.
    #[error(transparent)]
    Boot(#[from] BootConfigError),
    /// The tree could not be updated.
    #[error(transparent)]
    Mock(#[from] MockError),
}

/// The dom0 command line the host's boot flow hands over and the
/// initramfs it loads: on a host the firmware starts Xen's EFI loader on,
/// the dom0 arguments (`kernel=`'s, then those after ` -- ` in `options=`)
/// and `ramdisk=` of `xen.cfg`'s booted section; else
/// the default entry's line, as GRUB and Xen hand it over (grubenv
/// one-time choices included, as GRUB boots them), with `/boot`'s image
/// of the running kernel.
fn booted(host: &HostRoot) -> Result<(Vec<u8>, Option<String>), MockBootError> {
    if let Ok(Detected {
        flow: BootFlow::XenEfi,
        xen_cfg: Some(cfg),
        ..
    }) = bootflow::detect(FlowChoice::Auto, &bootflow::gather(host))
    {
        let text = host.read(&cfg).map_err(BootConfigError::from)?;
        let args = xen_efi::dom0_cmdline(&text).map_err(BootConfigError::from)?;
        return Ok((args, booted_ramdisk(host, &cfg)?));
    }
    let (_, config) = load_grub(host)?;
    let line = config.boot_cmdline().map_err(BootConfigError::from)?.bytes;
    let image = modules::kernel_release(host).ok().and_then(|r| {
        [
            format!("boot/initrd.img-{r}"),
            format!("boot/initramfs-{r}.img"),
        ]
        .into_iter()
        .find(|rel| host.exists(rel))
    });
    Ok((line, image))
}

/// What decides, at boot, whether xen-pciback takes a function before its
/// native driver: the files the loaded initramfs was built from (a mock
/// image, [`initramfs`]), or the root's own when the tree models no
/// initramfs (no image, or not a mock one).
struct EarlyFiles {
    facts: modules::PcibackFacts,
    modprobe: Vec<Vec<u8>>,
}

impl EarlyFiles {
    fn read(host: &HostRoot, image: Option<&str>) -> Result<EarlyFiles, MockBootError> {
        let mut facts = modules::pciback_facts(host).map_err(BootConfigError::from)?;
        let packed = image
            .and_then(|rel| host.read(rel).ok())
            .and_then(|bytes| initramfs::unpack(&bytes));
        let files = match packed {
            Some(files) => files,
            None => initramfs::packed_files(host).map_err(BootConfigError::from)?,
        };
        let get = |rel: &str| files.iter().find(|(r, _)| r == rel).map(|(_, b)| b.clone());
        facts.initramfs_tools_modules = get(modules::INITRAMFS_TOOLS_MODULES);
        // dracut's order: its main file, then the drop-ins by name, one in
        // /etc replacing the one of the same name in /usr/lib.
        let mut dropins = std::collections::BTreeMap::new();
        for dir in [modules::DRACUT_CONF_D_VENDOR, modules::DRACUT_CONF_D] {
            for (rel, bytes) in files
                .iter()
                .filter(|(r, _)| r.rsplit_once('/').is_some_and(|(d, _)| d == dir))
            {
                let name = rel.rsplit('/').next().unwrap_or(rel).to_owned();
                dropins.insert(name, (rel.clone(), bytes.clone()));
            }
        }
        facts.dracut_confs = get(modules::DRACUT_CONF)
            .map(|b| (modules::DRACUT_CONF.to_owned(), b))
            .into_iter()
            .chain(dropins.into_values())
            .collect();
        let modprobe = files
            .into_iter()
            .filter(|(r, _)| r.starts_with("etc/modprobe.d/"))
            .map(|(_, b)| b)
            .collect();
        Ok(EarlyFiles { facts, modprobe })
    }

    /// Whether xen-pciback binds `addr` before its own driver at boot:
    /// built in, it always does; a module the initramfs lists, when the
    /// initramfs also loads it before the function's own module (dracut's
    /// `force_drivers` loads it before udev; initramfs-tools starts udev
    /// first, so only a `softdep` does) and that driver is not built in.
    fn pciback_first(&self, host: &HostRoot, addr: &crate::vocab::PciAddress) -> bool {
        match pciback::loading(&self.facts) {
            Loading::BuiltIn | Loading::Unknown => true,
            Loading::Early(tool) => match mock::own_driver(host, addr) {
                None => true,
                Some((_, None)) => false,
                Some((_, Some(_))) if tool == "dracut" => true,
                Some((_, Some(module))) => self
                    .modprobe
                    .iter()
                    .any(|text| pciback::softdeps_pciback(text, &module)),
            },
            Loading::NotEarly(_) | Loading::Absent => false,
        }
    }
}

/// Reboot the mock host under `host`, booting as its flow does; returns the
/// new command line. Every function the kernel would hide with it, itself
/// or through a bridge above it, is bound to `pciback` when xen-pciback is
/// there before its native driver, judged
/// from the initramfs the boot loader really loads: `/boot`'s image after
/// GRUB, the ESP's copy `ramdisk=` names after Xen's EFI loader. Otherwise
/// the native driver binds first and keeps the function. A hand-made tree
/// that says nothing about its kernel's modules boots as with xen-pciback
/// built in (every profile says: the XCP-ng ones have it built in, the
/// Debian ones as a module).
pub fn reboot(host: &HostRoot) -> Result<Vec<u8>, MockBootError> {
    let (cmdline, image) = booted(host)?;
    let view = HideView::from_cmdline(&cmdline);
    let tree = pci_tree(host)?;
    let early = EarlyFiles::read(host, image.as_deref())?;
    mock::reboot(host, &cmdline, &|addr| {
        view.hides_in(&tree, addr) && early.pciback_first(host, addr)
    })?;
    Ok(cmdline)
}
