//! The one place a boot flow becomes its [`BootConfig`]: `pcipassd`,
//! `xen-cmdline` and the mock reboot all open the flow
//! [`crate::domain::bootflow::detect`] found here.

use std::path::PathBuf;

use super::{
    BootConfig, DefaultsPlace, ExecBootConfig, GrubMkconfigBootConfig, NativeBootConfig,
    Regenerate, XenEfiBootConfig,
};
use crate::domain::bootflow::{BootFlow, Detected};
use crate::host::HostRoot;

/// What opening a flow needs besides the root.
#[derive(Debug, Clone, Default)]
pub struct FlowOptions {
    /// The command that regenerates grub.cfg (`--grub-mkconfig-command`);
    /// `None`: the host's own on `/`, none elsewhere.
    pub grub_mkconfig_command: Option<String>,
    /// The `xen-cmdline` program that edits grub.cfg in place instead of
    /// pcipass itself (`--boot-backend exec`), as xapi does on XenServer.
    pub exec_program: Option<PathBuf>,
}

/// The boot configuration of the flow `found` on `host`. A xen-efi flow
/// without its xen.cfg (nothing to edit) falls back to grub.cfg in place,
/// where every call says what is missing.
pub fn open(host: &HostRoot, found: &Detected, options: &FlowOptions) -> Box<dyn BootConfig> {
    match (found.flow, &found.xen_cfg) {
        (BootFlow::XenEfi, Some(cfg)) => Box::new(XenEfiBootConfig::new(host.clone(), cfg.clone())),
        (BootFlow::GrubMkconfig, _) => {
            let place = DefaultsPlace::for_host(host);
            let regenerate = Regenerate::for_root(host, options.grub_mkconfig_command.as_deref());
            match &regenerate {
                Regenerate::Command(argv) => tracing::info!(
                    file = place.file(),
                    command = %argv.join(" "),
                    "grub-mkconfig flow: edits go to the generator's input, then grub.cfg is \
                     regenerated"
                ),
                Regenerate::Unknown(reason) => tracing::warn!("grub-mkconfig flow: {reason}"),
            }
            Box::new(GrubMkconfigBootConfig::new(host.clone(), place, regenerate))
        }
        (BootFlow::XcpNg | BootFlow::XenEfi, _) => match &options.exec_program {
            Some(program) => Box::new(ExecBootConfig::new(program.clone(), host.clone())),
            None => Box::new(NativeBootConfig::new(host.clone())),
        },
    }
}
