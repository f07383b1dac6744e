//! Making a hide effective where xen-pciback is a module: the kernel
//! argument only works when the module loads before the device's native
//! driver binds, that is from the initramfs ([`crate::domain::pciback`]
//! tells whether it will). Before an edit that hides a function on such a
//! host, pcipass lists the module where the host's initramfs builder reads
//! it (`/etc/initramfs-tools/modules`, or a dracut drop-in with
//! `force_drivers+=`), makes it load before the native module of every
//! function the resulting hide list hides (however each was hidden), and
//! rebuilds the initramfs; when it cannot, or cannot tell how xen-pciback
//! loads, the edit is refused with what to do. `xen-cmdline` runs the same
//! step for its edits of the hide list ([`plan_pciback_early_for`]).

use std::time::Duration;

use super::txn::FileWrite;
use super::{BootConfigError, Held, regenerate};
use crate::domain::PciAddress;
use crate::domain::hide::{HideView, Topology};
use crate::domain::pciback::{self, Loading, PCIBACK, Tool};
use crate::host::{HostRoot, boot, modules, sysfs};

/// pcipass's dracut drop-in.
pub const DRACUT_DROPIN: &str = "etc/dracut.conf.d/50-pcipass.conf";

/// pcipass's modprobe configuration (its `softdep` lines).
pub const MODPROBE_DROPIN: &str = "etc/modprobe.d/pcipass.conf";

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
    /// How the initramfs of `host` is rebuilt, for pcipassd and
    /// `xen-cmdline` alike: the `configured` command (split on spaces, no
    /// shell), nothing on a mock host (its reboot reads the list), the
    /// system's own builder on `/`, else unknown (a step that needs a
    /// rebuild is refused, naming the flag).
    pub fn choose(host: &HostRoot, configured: Option<&str>) -> InitramfsUpdate {
        if let Some(command) = configured {
            InitramfsUpdate::Command(command.split_whitespace().map(str::to_owned).collect())
        } else if host.is_mock() {
            InitramfsUpdate::Mock
        } else if host.root() == std::path::Path::new("/") {
            InitramfsUpdate::System
        } else {
            InitramfsUpdate::Unknown(format!(
                "no --initramfs-command says how to rebuild the initramfs of --root {}",
                host.root().display()
            ))
        }
    }

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

/// An initramfs the boot loader loads from a copy of the image the
/// builder writes: Xen's EFI loader reads `ramdisk=` beside `xen.efi` on
/// the ESP, where no initramfs builder writes. After a rebuild for a hide,
/// the copy must be the image again, or the hide never takes effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitramfsCopy {
    /// The image the builder writes (`boot/initrd.img-<release>`),
    /// host-relative.
    pub built: String,
    /// The copy the next boot loads, host-relative.
    pub booted: String,
}

/// Where the next boot loads its initramfs from copies: asked only when a
/// hide needs xen-pciback in the initramfs.
pub type InitramfsCopies<'a> = dyn Fn() -> Result<Vec<InitramfsCopy>, BootConfigError> + 'a;

/// The native driver bound to a function an edit is about to hide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NativeDriver {
    /// The function.
    pub function: String,
    /// The driver's name (`xhci_hcd`).
    pub driver: String,
    /// The module that provides it (`xhci_pci`); `None`: built in.
    pub module: Option<String>,
}

/// How the initramfs is rebuilt by an edit, as its journal records it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Rebuild {
    /// This program with these arguments (no shell).
    Command(Vec<String>),
    /// A mock host's images rebuilt from its files
    /// ([`crate::host::mock::initramfs::rebuild_all`]).
    Mock,
}

/// Rebuild the initramfs as `how` says.
pub fn rebuild(host: &HostRoot, how: &Rebuild, hold: Held<'_>) -> Result<(), BootConfigError> {
    match how {
        Rebuild::Command(argv) => regenerate("the initramfs", argv, REBUILD_LIMIT, hold),
        Rebuild::Mock => crate::host::mock::initramfs::rebuild_all(host)
            .map_err(|e| BootConfigError::EditsRefused(format!("mock initramfs rebuild: {e}"))),
    }
}

/// The early-load part of an edit, planned before anything is written:
/// the files to write, the rebuild, and the copies the loader boots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EarlyPlan {
    /// The module list and modprobe files, with their new bytes.
    pub writes: Vec<FileWrite>,
    /// The rebuild that follows the writes; `None`: nothing to rebuild
    /// (the files already say it, or the running system rebuilds nothing).
    pub rebuild: Option<Rebuild>,
    /// The copies made the rebuilt image afterwards.
    pub copies: Vec<InitramfsCopy>,
}

impl EarlyPlan {
    /// After the writes: rebuild (then `rebuilt` is set), then refresh
    /// the copies.
    pub fn run(
        &self,
        host: &HostRoot,
        rebuilt: &mut bool,
        hold: Held<'_>,
    ) -> Result<(), BootConfigError> {
        if let Some(how) = &self.rebuild {
            rebuild(host, how, hold)?;
            *rebuilt = true;
        }
        refresh_copies(host, &self.copies)?;
        let files: Vec<&str> = self.writes.iter().map(|w| w.rel.as_str()).collect();
        tracing::info!(
            files = ?files,
            rebuilt = self.rebuild.is_some(),
            copies = ?self.copies.iter().map(|c| c.booted.as_str()).collect::<Vec<_>>(),
            "xen-pciback set to load before the native drivers from the next boot on"
        );
        Ok(())
    }
}

/// Plan how xen-pciback takes the functions about to be hidden at the next
/// boot, or say why it cannot. Built in: nothing to do. Unknown (the
/// facts do not say whether it is built in or a module): refused with
/// [`BootConfigError::PcibackUnknown`]. A module: it is listed where the
/// initramfs builder reads it, and for each native driver `natives` names
/// a modprobe `softdep` in [`MODPROBE_DROPIN`] makes xen-pciback load first
/// (initramfs-tools starts udev, which loads the drivers of the devices it
/// finds, before it loads its module list); then the initramfs is rebuilt
/// once and every copy the boot loads (`copies`) made the image again. A
/// native driver built into the kernel always binds first: refused.
/// Nothing is written here: [`EarlyPlan::run`] does it inside the edit.
pub fn plan_pciback_early(
    host: &HostRoot,
    update: &InitramfsUpdate,
    natives: &[NativeDriver],
    copies: &InitramfsCopies<'_>,
) -> Result<Option<EarlyPlan>, BootConfigError> {
    let facts = modules::pciback_facts(host)?;
    let loading = pciback::loading(&facts);
    let tool = match loading {
        Loading::BuiltIn => return Ok(None),
        // A hide that xen-pciback may never act on would answer success
        // and stay `disable_on_reboot` for ever: refused.
        Loading::Unknown => {
            return Err(BootConfigError::PcibackUnknown {
                kernel_release: facts.kernel_release,
            });
        }
        Loading::Absent | Loading::NotEarly(Tool::None) => return Err(refused(&loading)),
        Loading::Early("dracut") | Loading::NotEarly(Tool::Dracut) => Tool::Dracut,
        Loading::Early(_) | Loading::NotEarly(_) => Tool::InitramfsTools,
    };
    if let Some(built_in) = natives.iter().find(|n| n.module.is_none()) {
        return Err(BootConfigError::EditsRefused(format!(
            "{} is bound to {}, which is built into the kernel, while xen-pciback is a module: \
             the built-in driver always claims the device first, whatever xen-pciback.hide says. \
             Boot a kernel with xen-pciback built in (CONFIG_XEN_PCIDEV_BACKEND=y), or {} as a module",
            built_in.function, built_in.driver, built_in.driver
        )));
    }
    let mut writes = Vec::new();
    if matches!(loading, Loading::NotEarly(_)) {
        writes.push(list_edit(host, tool)?);
    }
    let wanted: Vec<&str> = natives.iter().filter_map(|n| n.module.as_deref()).collect();
    let old = host.read_if_exists(MODPROBE_DROPIN)?;
    if let Some(new) = pciback::with_softdeps(old.as_deref(), &wanted) {
        writes.push(FileWrite {
            rel: MODPROBE_DROPIN.to_owned(),
            new: Some(new),
        });
    }
    let copies = copies()?;
    if writes.is_empty() {
        // Nothing to add; a copy may still be older than the image.
        return Ok((!copies.is_empty()).then_some(EarlyPlan {
            writes,
            rebuild: None,
            copies,
        }));
    }
    let system;
    let update = match update {
        InitramfsUpdate::System => {
            system = InitramfsUpdate::for_system(host, tool);
            &system
        }
        other => other,
    };
    let rebuild = match update {
        InitramfsUpdate::Unknown(why) => {
            let steps = match pciback::advice(&loading) {
                Some(advice) => advice,
                None => format!(
                    "Add {} to {MODPROBE_DROPIN} and rebuild the initramfs.",
                    wanted
                        .iter()
                        .map(|m| format!("`{}`", pciback::softdep_line(m)))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            return Err(BootConfigError::EditsRefused(format!("{steps} ({why})")));
        }
        InitramfsUpdate::Command(argv) => Rebuild::Command(argv.clone()),
        InitramfsUpdate::Mock => Rebuild::Mock,
        // Replaced above by the system's own builder.
        InitramfsUpdate::System => return Err(refused(&loading)),
    };
    Ok(Some(EarlyPlan {
        writes,
        rebuild: Some(rebuild),
        copies,
    }))
}

/// Make each copy the boot loads the image it copies, where it is not
/// already (an atomic replace beside the copy).
pub fn refresh_copies(host: &HostRoot, copies: &[InitramfsCopy]) -> Result<(), BootConfigError> {
    for copy in copies {
        let image = host.read(&copy.built)?;
        if host.read_if_exists(&copy.booted)?.as_deref() == Some(&image[..]) {
            continue;
        }
        boot::replace_atomic(host, &copy.booted, &image)?;
        tracing::info!(
            image = %copy.built, copy = %copy.booted,
            "the initramfs the boot loader loads refreshed from the rebuilt image"
        );
    }
    Ok(())
}

/// The native drivers xen-pciback must load before, for a hide list that
/// hides what `after` says: every function it hides (itself or through a
/// bridge) that a driver other than pciback holds now, however it came to
/// be hidden (by pcipass, by hand, with `xen-cmdline`). A function that
/// `before` already hid and whose driver is built into the kernel is left
/// out (logged): refusing this edit would not help it; one this edit
/// newly hides is kept, so [`plan_pciback_early`] refuses it.
pub fn hidden_natives(
    host: &HostRoot,
    tree: &Topology,
    before: &dyn Fn(&PciAddress) -> bool,
    after: &dyn Fn(&PciAddress) -> bool,
) -> Result<Vec<NativeDriver>, BootConfigError> {
    let mut natives = Vec::new();
    for function in tree.functions().filter(|f| after(f)) {
        let name = function.to_string();
        let Some(driver) = sysfs::bound_driver(host, &name)?.filter(|d| d != sysfs::PCIBACK_DRIVER)
        else {
            continue;
        };
        let module = sysfs::driver_module(host, &name)?;
        if module.is_none() && before(function) {
            tracing::warn!(
                function = %name, %driver,
                "hidden already, but bound to a driver built into the kernel: xen-pciback \
                 cannot take it at boot"
            );
            continue;
        }
        natives.push(NativeDriver {
            function: name,
            driver,
            module,
        });
    }
    Ok(natives)
}

/// The early-load step of an edit that takes the boot hide list from
/// `before` to `after` (the whole lists): nothing when `after` hides
/// nothing or xen-pciback is built in; else [`plan_pciback_early`] for
/// [`hidden_natives`] (the PCI tree read from sysfs). Every edit of
/// `xen-pciback.hide`, by pcipassd or `xen-cmdline`, plans it.
pub fn plan_pciback_early_for(
    host: &HostRoot,
    update: &InitramfsUpdate,
    copies: &InitramfsCopies<'_>,
    before: &HideView,
    after: &HideView,
) -> Result<Option<EarlyPlan>, BootConfigError> {
    if after.entries().is_empty() {
        return Ok(None);
    }
    let facts = modules::pciback_facts(host)?;
    if pciback::loading(&facts) == Loading::BuiltIn {
        return Ok(None);
    }
    let tree = super::pci_tree(host)?;
    let natives = hidden_natives(host, &tree, &|f| before.hides_in(&tree, f), &|f| {
        after.hides_in(&tree, f)
    })?;
    plan_pciback_early(host, update, &natives, copies)
}

/// The edit that lists xen-pciback for `tool`'s initramfs.
fn list_edit(host: &HostRoot, tool: Tool) -> Result<FileWrite, BootConfigError> {
    Ok(match tool {
        Tool::Dracut => FileWrite {
            rel: DRACUT_DROPIN.to_owned(),
            new: Some(
                format!(
                    "# Written by pcipass: load xen-pciback from the initramfs, before the native\n\
                 # drivers, so that xen-pciback.hide= on the kernel command line takes effect.\n\
                 force_drivers+=\" {PCIBACK} \"\n"
                )
                .into_bytes(),
            ),
        },
        _ => {
            let rel = modules::INITRAMFS_TOOLS_MODULES;
            let old = host.read_if_exists(rel)?;
            let new = pciback::with_module_listed(old.as_deref(), PCIBACK);
            FileWrite {
                rel: rel.to_owned(),
                new: Some(new),
            }
        }
    })
}

fn refused(loading: &Loading) -> BootConfigError {
    BootConfigError::EditsRefused(
        pciback::advice(loading).unwrap_or_else(|| "xen-pciback will not load at boot".into()),
    )
}
