//! The boot configuration behind one trait, two backends, and the
//! [`Dom0AccessEngine`] the API uses.
//!
//! * [`NativeBootConfig`] reads and edits grub.cfg under the root itself,
//!   under the lock it shares with the `xen-cmdline` program, through the
//!   whole chain ([`crate::domain::grub`], [`crate::domain::kernel`]).
//! * [`ExecBootConfig`] runs a `xen-cmdline` program (`--get-dom0`,
//!   `--set-dom0`, `--delete-dom0`), as xapi does on XenServer.
//!
//! The engine judges dom0 access from two views of the effective hide
//! list, `/proc/cmdline` (now) and the dom0 command line the next boot
//! gets, and from the PCI tree (a bridge's entry hides what is behind
//! it). Both views are read fresh, with a cache keyed on the files'
//! fingerprints; with the native backend a [`ChangeWatch`](crate::host::watch::ChangeWatch) on the files'
//! directories lets a status call skip even the `stat`s while nothing has
//! moved. Edits are checked before anything is written: the boot-device
//! rule, Xen's and the kernel's length limits, and that the kernel will
//! read back exactly the intended list.

use std::sync::Mutex;

use crate::domain::PciAddress;
use crate::domain::display::{self, Dom0Console};
use crate::domain::grub::{GrubError, XEN_DOM0_CMDLINE_MAX};
use crate::domain::hide::{HideEdit, HideParseError, HideView};
use crate::host::boot::BootFingerprint;
use crate::host::{HostError, HostRoot, boot};

mod early;
mod engine;
mod exec;
pub mod group;
mod mkconfig;
mod native;
mod open;
mod preview;
pub mod txn;
mod xenefi;

pub use early::{
    DRACUT_DROPIN, EarlyPlan, InitramfsCopies, InitramfsCopy, InitramfsUpdate, MODPROBE_DROPIN,
    NativeDriver, Rebuild, hidden_natives, plan_pciback_early, plan_pciback_early_for,
};
pub use engine::{Dom0AccessEngine, bridges_in_path, pci_tree};
pub use exec::ExecBootConfig;
pub use mkconfig::{DefaultsPlace, GrubMkconfigBootConfig, Regenerate};
pub use native::{NativeBootConfig, edit_grub, grub_boot_view, load_grub};
pub use open::{FlowOptions, open};
pub use txn::{Changes, Expect, FileChange, FileWrite, Preview, Snapshot};
pub use xenefi::{XenEfiBootConfig, booted_ramdisk};

/// Why the boot configuration cannot be read or edited.
#[derive(Debug, thiserror::Error)]
pub enum BootConfigError {
    /// A host file could not be read or written.
    #[error(transparent)]
    Host(#[from] HostError),
    /// grub.cfg has no usable Xen entry, or an edit would be misread.
    #[error(transparent)]
    Grub(#[from] GrubError),
    /// The current hide value does not parse: edits are refused.
    #[error("{0}")]
    HideListMalformed(#[from] HideParseError),
    /// The xen-cmdline program failed.
    #[error("xen-cmdline failed ({status}): {stderr}")]
    Exec {
        /// How the program ended.
        status: String,
        /// What it printed on stderr, on one line.
        stderr: String,
    },
    /// The edit would hide a function a boot disk sits behind.
    #[error("the edit would hide {function}, on the path of boot device {block_device}")]
    BootDevice {
        /// The mounted boot device.
        block_device: String,
        /// The PCI function that would be hidden.
        function: PciAddress,
    },
    /// The edit would hide a function that carries dom0's network: its
    /// default route or its management interface.
    #[error("the edit would hide {function}, which carries dom0's network interface {interface}")]
    Dom0Network {
        /// The interface it carries (the route's or the management one).
        interface: String,
        /// The PCI function that would be hidden.
        function: PciAddress,
    },
    /// The edit would hide the system display device while the next boot
    /// shows the host's console on it (`host.display`).
    #[error(
        "{function} is the system display device and the next boot shows the host's console on \
         it; disable the host display first (host.disable_display)"
    )]
    HostDisplay {
        /// The PCI function.
        function: PciAddress,
    },
    /// The edit would hide a function the platform itself uses (a host
    /// or ISA bridge, the SMBus, ...), which no VM can drive.
    #[error(
        "the edit would hide {function}, a {what}: the host's platform uses it and no VM can \
         drive it"
    )]
    HostPlatform {
        /// What it is (`SMBus controller`).
        what: &'static str,
        /// The PCI function.
        function: PciAddress,
    },
    /// A move now would take the function dom0's console is on.
    #[error("{function} carries dom0's console ({console}) now")]
    Dom0Console {
        /// The console (`frame buffer device`, `VGA+`).
        console: String,
        /// The PCI function.
        function: PciAddress,
    },
    /// The last step of an apply-now edit (the move to pciback) failed.
    #[error(transparent)]
    ApplyNow(#[from] crate::domain::apply_now::ApplyNowError),
    /// The boot devices or the PCI tree are unknown, so the safety rules
    /// cannot be checked.
    #[error("{0}")]
    SafetyUnknown(String),
    /// The written file would not read back as the intended hide list.
    #[error("the edited boot configuration would not read back as intended: {0}")]
    Verify(String),
    /// A xen.cfg cannot be read as Xen reads it, or edited so.
    #[error("/{file}: {source}")]
    XenEfi {
        /// The file, host-relative.
        file: String,
        /// What is wrong with it.
        source: crate::domain::xen_efi::XenEfiError,
    },
    /// pcipass's part of the GRUB defaults cannot be read or written.
    #[error("/{file}: {source}")]
    Dropin {
        /// The file, host-relative.
        file: String,
        /// What is wrong with it.
        source: crate::domain::grub_dropin::DropinError,
    },
    /// The command that regenerates grub.cfg or the initramfs failed;
    /// its input was put back.
    #[error(
        "regenerating {what} with `{command}` failed ({status}): {stderr}; the hide list was left as it was"
    )]
    Regenerate {
        /// What the command regenerates.
        what: &'static str,
        /// The command, as run.
        command: String,
        /// How it ended.
        status: String,
        /// The end of what it printed on stderr, on one line.
        stderr: String,
    },
    /// This host's boot flow cannot be edited (yet): why, and what to do.
    #[error("{0}")]
    EditsRefused(String),
    /// The boot configuration changed between read and write (a
    /// compare-and-set lost): the edit is planned again.
    #[error("the boot configuration changed while it was edited")]
    Changed,
    /// A previewed edit's files changed since the preview (its token no
    /// longer fits): nothing was written.
    #[error(
        "the boot configuration changed since the preview, or the preview was made for another \
         edit: nothing was written; preview again"
    )]
    PreviewStale,
    /// The failure of a group of edits written together, answered to each.
    #[error(transparent)]
    Shared(std::sync::Arc<BootConfigError>),
    /// Whether the running kernel has xen-pciback built in or as a module
    /// cannot be told, so pcipass cannot make a hide take effect at boot:
    /// an edit that hides a function is refused (fail closed).
    #[error(
        "cannot tell whether the running kernel {kernel_release} has xen-pciback built in or as \
         a module (no /lib/modules/{kernel_release}/modules.builtin, no xen-pciback module \
         file, nothing in /sys/module/xen_pciback), so the hide could not be made to take \
         effect at boot; nothing was written. Make /lib/modules/{kernel_release} readable to \
         pcipassd (a systemd unit with ProtectKernelModules=yes hides it) or install the \
         kernel's modules, or load xen-pciback once (modprobe xen-pciback), then retry"
    )]
    PcibackUnknown {
        /// The running kernel's release.
        kernel_release: String,
    },
}

impl BootConfigError {
    /// What keeps the xen.cfg at `file` (host-relative) from being read
    /// or edited.
    pub fn xen_efi(file: &str) -> impl Fn(crate::domain::xen_efi::XenEfiError) -> Self + '_ {
        move |source| BootConfigError::XenEfi {
            file: file.to_owned(),
            source,
        }
    }

    /// What keeps pcipass's part of the GRUB defaults in `file`
    /// (host-relative) from being read or written.
    pub fn dropin(file: &str) -> impl Fn(crate::domain::grub_dropin::DropinError) -> Self + '_ {
        move |source| BootConfigError::Dropin {
            file: file.to_owned(),
            source,
        }
    }

    /// A reason fit for a client: no paths, no raw newlines.
    pub fn client_reason(&self) -> String {
        let reason = match self {
            BootConfigError::Shared(inner) => return inner.client_reason(),
            BootConfigError::Host(e) if e.is_not_found() => {
                "the boot configuration or /proc/cmdline is missing".into()
            }
            // What the OS said (read-only, no space left), without the path.
            BootConfigError::Host(e) => {
                format!(
                    "cannot {} the boot configuration: {}",
                    e.op,
                    e.source.kind()
                )
            }
            BootConfigError::Grub(e) => e.to_string(),
            BootConfigError::HideListMalformed(e) => e.reason.clone(),
            BootConfigError::Exec { status, stderr } => {
                format!("xen-cmdline failed ({status}): {stderr}")
            }
            // The log has the detail (paths): the client learns what failed.
            BootConfigError::SafetyUnknown(_) => {
                "what dom0 needs (the devices holding its root file system, its network) \
                 cannot be determined, so no function is hidden"
                    .into()
            }
            other => other.to_string(),
        };
        one_line(&reason)
    }
}

/// Text with every control character (newlines included) shown as a
/// space, for error parameters and logs.
pub fn one_line(text: &str) -> String {
    text.trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The dom0 command line `line` with the hide parameter set to `value`
/// (`None`: removed) as the kernel reads it; refused when it would be
/// longer than Xen passes to dom0.
pub(super) fn dom0_line_with_hide(
    line: &[u8],
    value: Option<&str>,
) -> Result<Vec<u8>, BootConfigError> {
    let new = crate::domain::kernel::with_param(
        line,
        crate::domain::hide::HIDE_KEY.as_bytes(),
        value.map(str::as_bytes),
    );
    if new.len() > XEN_DOM0_CMDLINE_MAX {
        return Err(GrubError::TooLong {
            what: "the dom0 command line",
            length: new.len(),
            limit: XEN_DOM0_CMDLINE_MAX,
        }
        .into());
    }
    Ok(new)
}

/// Run the command `argv` that regenerates `what` (no shell, at most
/// `limit`); anything but exit 0 is [`BootConfigError::Regenerate`] with
/// the end of its stderr.
pub(super) fn regenerate(
    what: &'static str,
    argv: &[String],
    limit: std::time::Duration,
    hold: Held<'_>,
) -> Result<(), BootConfigError> {
    let Some((program, args)) = argv.split_first() else {
        return Err(BootConfigError::EditsRefused(format!(
            "the command that regenerates {what} is empty"
        )));
    };
    let failed = |status: String, stderr: &str| BootConfigError::Regenerate {
        what,
        command: argv.join(" "),
        status,
        stderr: one_line(&tail(stderr, 400)),
    };
    let started = std::time::Instant::now();
    let out = crate::host::exec::run_holding(program, args, limit, hold.map(boot::BootLock::file))
        .map_err(|e| failed(format!("cannot run: {e}"), ""))?;
    match out.code {
        Some(0) => {
            tracing::info!(
                command = %argv.join(" "),
                seconds = started.elapsed().as_secs(),
                "{what} regenerated"
            );
            Ok(())
        }
        Some(code) => Err(failed(format!("exit code {code}"), &out.stderr)),
        None => Err(failed("killed".into(), &out.stderr)),
    }
}

/// The last `max` bytes of `text` (on a character boundary).
fn tail(text: &str, max: usize) -> String {
    let text = text.trim_end();
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_owned()
}

/// The edit's file lock, handed to the programs an edit runs: they hold it
/// with the daemon, so a daemon killed mid-edit leaves it taken until they
/// are done, and the next edit's recovery waits for them.
pub type Held<'a> = Option<&'a boot::BootLock>;

/// The check an edit passes before anything is written: it sees the view
/// before and the view the edit would produce, and may refuse.
pub type HideCheck<'a> = dyn Fn(&HideView, &HideView) -> Result<(), BootConfigError> + 'a;

/// The edit of the hide parameter a caller plans from its current value.
pub type HidePlan<'a> = dyn FnMut(Option<&[u8]>) -> Result<HideEdit, HideParseError> + 'a;

/// The edit `plan` makes of the hide list `before`: refused when the
/// current value does not parse (the kernel hides nothing with it, and
/// an edit on top would keep it broken). Every flow plans this way.
pub(super) fn plan_edit(
    before: &HideView,
    plan: &mut HidePlan<'_>,
) -> Result<HideEdit, BootConfigError> {
    if let Some(e) = before.malformed() {
        return Err(e.clone().into());
    }
    Ok(plan(before.value.as_deref())?)
}

/// One boot flow's configuration: where the next boot's hide list is read
/// and what an edit of it changes. The edit itself is [`txn::edit`], the
/// same for every flow; a flow only reads, plans and reads back.
pub trait BootConfig: Send + Sync + std::fmt::Debug {
    /// The hide list the next boot's kernel will use.
    fn boot_view(&self) -> Result<HideView, BootConfigError>;

    /// The root the configuration is under, and this process's writer
    /// lock (one edit at a time).
    fn base(&self) -> &FlowBase;

    /// The boot configuration file beside which every edit takes the lock
    /// `xen-cmdline` takes (`<file>.pcipass-lock`) and keeps its journal
    /// (`<file>.pcipass-journal`), host-relative; `None` where the flow's
    /// program serialises its own edits and writes them atomically.
    fn locked_file(&self) -> Result<Option<String>, BootConfigError>;

    /// What an edit starts from, read under the lock.
    fn snapshot(&self) -> Result<Snapshot, BootConfigError>;

    /// What makes the next boot hide `value` (`None`: nothing), planned
    /// from `snap` before anything is written; refused here when the flow
    /// cannot do it.
    fn plan<'a>(
        &'a self,
        snap: &Snapshot,
        value: Option<&str>,
    ) -> Result<Changes<'a>, BootConfigError>;

    /// After the changes: what the next boot gives, which must be exactly
    /// `value` (else [`BootConfigError::Verify`]).
    fn verify(&self, value: Option<&str>) -> Result<HideView, BootConfigError>;

    /// Changes when the configuration changes; `None` when unknown.
    fn fingerprint(&self) -> Option<BootFingerprint>;

    /// True when a read may be cached on [`BootConfig::fingerprint`] (the
    /// value comes from the files alone).
    fn cacheable(&self) -> bool {
        false
    }

    /// What the next boot hands the dom0 kernel: its whole command line
    /// and the initramfs image it loads (host-relative; `None`: none, or
    /// not known). The mock reboot boots this.
    fn next_boot(&self) -> Result<NextBoot, BootConfigError> {
        Err(BootConfigError::EditsRefused(
            "this boot flow cannot say what the next boot loads".into(),
        ))
    }

    /// The files whose change can change what the next boot gives
    /// (host-relative): the change watch follows them.
    fn watched(&self) -> Vec<String> {
        boot::GRUB_CANDIDATES
            .iter()
            .map(|&f| f.to_owned())
            .collect()
    }

    /// The last Xen `console=` value the next boot gives (`None`: no
    /// such argument), for the host display ([`crate::domain::display`]).
    fn xen_console(&self) -> Result<Option<String>, BootConfigError>;

    /// What makes the next boot's last Xen `console=` be `value` and its
    /// dom0 console arguments as `dom0` says, every other argument and the
    /// hide list as they are, planned from `snap`; the last step of the
    /// changes reads both back.
    fn plan_console<'a>(
        &'a self,
        snap: &Snapshot,
        value: &str,
        dom0: Dom0Console,
    ) -> Result<Changes<'a>, BootConfigError>;

    /// The dom0 command line the next boot gives (for its console
    /// arguments).
    fn dom0_args(&self) -> Result<Vec<u8>, BootConfigError> {
        Ok(self.next_boot()?.cmdline)
    }

    /// The initramfs copies the next boot loads instead of the images the
    /// initramfs builder writes ([`InitramfsCopy`]), refreshed after a
    /// rebuild for a hide; refused when the boot loads one whose image
    /// cannot be told. None by default: GRUB loads `/boot`'s images.
    fn initramfs_copies(&self) -> Result<Vec<InitramfsCopy>, BootConfigError> {
        Ok(Vec::new())
    }
}

/// The step that ends a console edit: the next boot must give Xen's
/// console `value` and dom0's console arguments as `dom0` leaves them.
pub(super) fn console_check<'a>(
    config: &'a dyn BootConfig,
    value: &str,
    dom0: Dom0Console,
) -> txn::FlowStep<'a> {
    let value = value.to_owned();
    Box::new(move |_| {
        match config.xen_console()? {
            Some(got) if got == value => {}
            got => {
                return Err(BootConfigError::Verify(format!(
                    "the next boot would give Xen console={}, not {value}",
                    got.as_deref().unwrap_or("(none)")
                )));
            }
        }
        let args = config.dom0_args()?;
        if !display::dom0_console_done(&args, dom0) {
            return Err(BootConfigError::Verify(format!(
                "the next boot's dom0 console arguments are not as the display edit leaves them \
                 ({dom0:?}): {}",
                one_line(&String::from_utf8_lossy(&args))
            )));
        }
        Ok(())
    })
}

/// The last `console=` value of a grub.cfg's default entry's Xen line.
pub(super) fn grub_xen_console(
    config: &crate::domain::grub::GrubConfig,
) -> Result<Option<String>, BootConfigError> {
    let found =
        config.occurrences_at(crate::domain::grub::Target::Xen, display::XEN_CONSOLE_KEY)?;
    Ok(found.last().map(|(_, word)| {
        let word = String::from_utf8_lossy(word);
        word.split_once('=')
            .map_or(String::new(), |(_, v)| v.trim_matches('"').to_owned())
    }))
}

/// What every flow holds: the root and this process's writer lock.
#[derive(Debug)]
pub struct FlowBase {
    /// The root the configuration is under.
    pub host: HostRoot,
    /// One edit at a time in this process.
    pub writer: Mutex<()>,
}

impl FlowBase {
    /// The base of a flow on `host`.
    pub fn new(host: HostRoot) -> FlowBase {
        FlowBase {
            host,
            writer: Mutex::new(()),
        }
    }
}

/// The grub.cfg every edit of a GRUB flow locks beside.
pub(super) fn grub_locked_file(host: &HostRoot) -> Result<Option<String>, BootConfigError> {
    Ok(Some(boot::locate(host)?.to_owned()))
}

/// What the next boot hands the dom0 kernel ([`BootConfig::next_boot`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextBoot {
    /// The dom0 kernel's command line.
    pub cmdline: Vec<u8>,
    /// The initramfs image the loader loads, host-relative.
    pub initramfs: Option<String>,
}

impl dyn BootConfig + '_ {
    /// Edit the hide list by `plan`, `check` seeing the views before and
    /// after: [`txn::edit`] without an early-load step.
    pub fn update_hide(
        &self,
        plan: &mut HidePlan<'_>,
        check: &HideCheck<'_>,
    ) -> Result<HideView, BootConfigError> {
        txn::edit(self, plan, check, &|_, _| Ok(None))
    }
}

/// A written file's read-back: the next boot must hide exactly `value`.
pub(super) fn expect_value(
    view: HideView,
    value: Option<&str>,
    what: &str,
) -> Result<HideView, BootConfigError> {
    if view.value_text().as_deref() == value {
        return Ok(view);
    }
    Err(BootConfigError::Verify(format!(
        "{what} reads back xen-pciback.hide={}, not {}",
        view.value_text().as_deref().unwrap_or("(none)"),
        value.unwrap_or("(none)")
    )))
}

/// The fingerprint of the grub.cfg under `host`, if it has one.
pub(super) fn grub_fingerprint(host: &HostRoot) -> Option<BootFingerprint> {
    boot::grub_fingerprint(host).ok().map(|(_, print)| print)
}

#[cfg(test)]
mod tests;
