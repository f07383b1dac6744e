//! A simulated reboot of a mock host: what the kernel would do at boot,
//! composed from the boot configuration and the hide list. The new
//! running command line is the default entry's dom0 arguments; every
//! function in its effective hide list is bound to `pciback`.

use crate::domain::bootcfg::BootConfigError;
use crate::domain::grub::{GrubConfig, Target};
use crate::domain::hide::HideView;
use crate::host::mock::{self, MockError};
use crate::host::{HostRoot, boot};

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

/// Reboot the mock host under `host`; returns the new command line.
pub fn reboot(host: &HostRoot) -> Result<String, MockBootError> {
    let (_, text, _) = boot::read(host).map_err(BootConfigError::from)?;
    let config = GrubConfig::parse(&text).map_err(BootConfigError::from)?;
    let cmdline = config
        .args(Target::Dom0)
        .map_err(BootConfigError::from)?
        .to_owned();
    let view = HideView::from_cmdline(&cmdline);
    mock::reboot(host, &cmdline, &|addr| view.hides(addr))?;
    Ok(cmdline)
}
