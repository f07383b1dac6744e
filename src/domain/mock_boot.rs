//! A simulated reboot of a mock host: what the kernel would do at boot,
//! composed from the boot configuration through the same model of GRUB,
//! Xen and the kernel the status uses.

use crate::domain::bootcfg::{BootConfigError, load_grub, pci_tree};
use crate::domain::hide::HideView;
use crate::host::HostRoot;
use crate::host::mock::{self, MockError};

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

/// Reboot the mock host under `host`; returns the new command line: the
/// default entry's dom0 command line as GRUB and Xen hand it over (grubenv
/// one-time choices included, as GRUB boots them). Every function the
/// kernel would hide with it, itself or through a bridge above it, is
/// bound to `pciback`.
pub fn reboot(host: &HostRoot) -> Result<Vec<u8>, MockBootError> {
    let (_, config) = load_grub(host)?;
    let cmdline = config.boot_cmdline().map_err(BootConfigError::from)?.bytes;
    let view = HideView::from_cmdline(&cmdline);
    let tree = pci_tree(host)?;
    mock::reboot(host, &cmdline, &|addr| view.hides_in(&tree, addr))?;
    Ok(cmdline)
}
