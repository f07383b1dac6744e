//! A simulated reboot of a mock host: what the kernel would do at boot,
//! composed from the boot configuration through the same model of GRUB,
//! Xen and the kernel the status uses.

use crate::domain::bootcfg::{BootConfigError, load_grub, pci_tree};
use crate::domain::bootflow::{self, BootFlow, Detected, FlowChoice};
use crate::domain::hide::HideView;
use crate::domain::pciback::{self, Loading};
use crate::domain::xen_efi;
use crate::host::mock::{self, MockError};
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

/// The dom0 command line the host's boot flow hands over: on a host the
/// firmware starts Xen's EFI loader on, the dom0 arguments of `xen.cfg`'s
/// booted section; else the default entry's, as GRUB and Xen hand it
/// over (grubenv one-time choices included, as GRUB boots them).
fn booted_cmdline(host: &HostRoot) -> Result<Vec<u8>, MockBootError> {
    if let Ok(Detected {
        flow: BootFlow::XenEfi,
        xen_cfg: Some(cfg),
        ..
    }) = bootflow::detect(FlowChoice::Auto, &bootflow::gather(host))
    {
        let text = host.read(&cfg).map_err(BootConfigError::from)?;
        return Ok(xen_efi::dom0_args(&text).map_err(BootConfigError::from)?);
    }
    let (_, config) = load_grub(host)?;
    Ok(config.boot_cmdline().map_err(BootConfigError::from)?.bytes)
}

/// Reboot the mock host under `host`, booting as its flow does; returns the
/// new command line. Every function the kernel would hide with it, itself
/// or through a bridge above it, is bound to `pciback`, provided
/// xen-pciback is there before the native drivers: built in, or a module
/// the initramfs loads (listed for initramfs-tools, forced for dracut).
/// Otherwise the native driver binds first and keeps the function. A
/// hand-made tree that says nothing about its kernel's modules boots as
/// with xen-pciback built in (every profile says: the XCP-ng ones have it
/// built in, the Debian ones as a module).
pub fn reboot(host: &HostRoot) -> Result<Vec<u8>, MockBootError> {
    let cmdline = booted_cmdline(host)?;
    let view = HideView::from_cmdline(&cmdline);
    let tree = pci_tree(host)?;
    let facts = modules::pciback_facts(host).map_err(BootConfigError::from)?;
    let early = matches!(
        pciback::loading(&facts),
        Loading::BuiltIn | Loading::Early(_) | Loading::Unknown
    );
    mock::reboot(host, &cmdline, &|addr| early && view.hides_in(&tree, addr))?;
    Ok(cmdline)
}
