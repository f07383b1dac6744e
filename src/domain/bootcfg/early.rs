//! Making a hide effective where xen-pciback is a module: the kernel
//! argument only works when the module loads before the device's native
//! driver binds, that is from the initramfs ([`crate::domain::pciback`]
//! tells whether it will). Before the first edit that hides a function on
//! such a host, pcipass lists the module where the host's initramfs
//! builder reads it (`/etc/initramfs-tools/modules`, or a dracut drop-in
//! with `force_drivers+=`) and rebuilds the initramfs; when it cannot, the
//! edit is refused with what to do.

use std::time::Duration;

use super::{BootConfigError, regenerate};
use crate::domain::pciback::{self, Loading, PCIBACK, Tool};
use crate::host::{HostRoot, boot, modules};

/// pcipass's dracut drop-in.
pub const DRACUT_DROPIN: &str = "etc/dracut.conf.d/50-pcipass.conf";

/// Longest an initramfs rebuild may take (every installed kernel).
const REBUILD_LIMIT: Duration = Duration::from_secs(600);

/// How the initramfs is rebuilt after xen-pciback is listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitramfsUpdate {
    /// Run this program with these arguments (no shell).
    Command(Vec<String>),
    /// A mock host: its reboot reads the module list itself.
    Mock,
    /// The running system (`/`): its own builder, found when needed
    /// ([`InitramfsUpdate::for_system`]).
    System,
    /// Unknown: where xen-pciback must be listed, edits are refused with
    /// this reason.
    Unknown(String),
}

impl InitramfsUpdate {
    /// The rebuild command of the running system (`/`) for `tool`.
    pub fn for_system(host: &HostRoot, tool: Tool) -> InitramfsUpdate {
        let found = |rels: &[&str]| {
            rels.iter()
                .find(|rel| host.exists(rel))
                .map(|rel| format!("/{rel}"))
        };
        let command = match tool {
            Tool::InitramfsTools => found(&["usr/sbin/update-initramfs", "sbin/update-initramfs"])
                .map(|p| vec![p, "-u".into(), "-k".into(), "all".into()]),
            Tool::Dracut => found(&["usr/bin/dracut", "usr/sbin/dracut", "sbin/dracut"])
                .map(|p| vec![p, "-f".into(), "--regenerate-all".into()]),
            Tool::None => None,
        };
        match command {
            Some(argv) => InitramfsUpdate::Command(argv),
            None => InitramfsUpdate::Unknown("no initramfs builder is installed".into()),
        }
    }
}

/// Make xen-pciback load early enough for the next boot, or say why not.
/// Built in, already early, or unknown (logged): nothing to do.
pub fn ensure_pciback_early(
    host: &HostRoot,
    update: &InitramfsUpdate,
) -> Result<(), BootConfigError> {
    let facts = modules::pciback_facts(host)?;
    let loading = pciback::loading(&facts);
    let tool = match loading {
        Loading::BuiltIn | Loading::Early(_) => return Ok(()),
        Loading::Unknown => {
            tracing::warn!(
                kernel = %facts.kernel_release,
                "cannot tell whether xen-pciback is built in or loads from the initramfs: a hidden \
                 function may stay with its native driver (its status then stays short of disabled)"
            );
            return Ok(());
        }
        Loading::Absent => return Err(refused(&loading)),
        Loading::NotEarly(tool) => tool,
    };
    let system;
    let update = match update {
        InitramfsUpdate::System => {
            system = InitramfsUpdate::for_system(host, tool);
            &system
        }
        other => other,
    };
    let argv = match (update, tool) {
        (_, Tool::None) => return Err(refused(&loading)),
        (InitramfsUpdate::Unknown(why), _) => {
            return Err(BootConfigError::EditsRefused(format!(
                "{} ({why})",
                pciback::advice(&loading).unwrap_or_default()
            )));
        }
        (InitramfsUpdate::Command(argv), _) => Some(argv),
        (InitramfsUpdate::Mock | InitramfsUpdate::System, _) => None,
    };
    let (rel, old, new) = match tool {
        Tool::InitramfsTools => {
            let rel = modules::INITRAMFS_TOOLS_MODULES;
            let old = read_optional(host, rel)?;
            let new = pciback::with_module_listed(old.as_deref(), PCIBACK);
            (rel, old, new)
        }
        _ => {
            let rel = DRACUT_DROPIN;
            let old = read_optional(host, rel)?;
            let new = format!(
                "# Written by pcipass: load xen-pciback from the initramfs, before the native\n\
                 # drivers, so that xen-pciback.hide= on the kernel command line takes effect.\n\
                 force_drivers+=\" {PCIBACK} \"\n"
            );
            (rel, old, new.into_bytes())
        }
    };
    boot::replace_atomic(host, rel, &new)?;
    let Some(argv) = argv else {
        tracing::info!(file = rel, "xen-pciback listed for the (mock) initramfs");
        return Ok(());
    };
    if let Err(e) = regenerate("the initramfs", argv, REBUILD_LIMIT) {
        let back = match &old {
            Some(bytes) => boot::replace_atomic(host, rel, bytes),
            None => boot::remove_durable(host, rel).map(drop),
        };
        if let Err(again) = back {
            tracing::error!("cannot restore {rel}: {again}");
        }
        return Err(e);
    }
    tracing::info!(
        file = rel,
        "xen-pciback listed for the initramfs and the initramfs rebuilt: the next boot's hide takes effect"
    );
    Ok(())
}

fn refused(loading: &Loading) -> BootConfigError {
    BootConfigError::EditsRefused(
        pciback::advice(loading).unwrap_or_else(|| "xen-pciback will not load at boot".into()),
    )
}

fn read_optional(host: &HostRoot, rel: &str) -> Result<Option<Vec<u8>>, BootConfigError> {
    match host.read(rel) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}
