//! The boot configuration of a host whose grub.cfg `grub-mkconfig`
//! generates (Debian, Ubuntu, Fedora-like): the next boot is read from the
//! generated grub.cfg, the entry GRUB will boot (`GRUB_DEFAULT` as the
//! generator wrote it into `set default`, grubenv's `saved_entry` and
//! `next_entry`); the hide list is written where the generator reads it
//! ([`crate::domain::grub_dropin`]), and grub.cfg is regenerated at once
//! by the host's own command.
//!
//! An edit ([`super::txn::edit`]) writes pcipass's drop-in (or block of
//! `/etc/default/grub`), runs the regeneration command and reads the
//! regenerated grub.cfg back. When the command fails, or its grub.cfg
//! would not boot the planned list, the transaction puts the drop-in and
//! grub.cfg back as they were, byte for byte: nothing is left half done.

use std::time::Duration;

use super::txn::{Changes, FileWrite, Snapshot};
use super::{
    BootConfig, BootConfigError, FlowBase, Held, NextBoot, console_check, grub_boot_view,
    grub_fingerprint, grub_locked_file, grub_xen_console, load_grub, regenerate,
};
use crate::domain::display::{self, Dom0Console};
use crate::domain::grub::GrubConfig;
use crate::domain::grub_dropin;
use crate::domain::hide::HideView;
use crate::host::HostRoot;
use crate::host::boot::{self, BootFingerprint};

/// Longest a regeneration may take (`update-grub` probes every disk for
/// other systems where os-prober runs).
const REGENERATE_LIMIT: Duration = Duration::from_secs(300);

/// How many times grub.cfg is regenerated again when another run of the
/// generator installed its own after pcipass's.
const REGENERATE_ROUNDS: usize = 3;

/// A `grub.cfg.new` written this recently is taken for another
/// grub-mkconfig at work where its process cannot be seen; one quiet for
/// longer was left by a run that failed.
const OTHER_RUN_QUIET: Duration = Duration::from_secs(30);

/// Where pcipass has the generator write, beside grub.cfg, before it
/// renames the output over grub.cfg.
const STAGED_SUFFIX: &str = ".pcipass-new";

/// The argv that makes a regeneration command write to `staged` instead
/// of grub.cfg, where the command says where it writes: grub-mkconfig's
/// `-o FILE` or `--output=FILE` (replaced), or Debian's and Ubuntu's
/// `update-grub` (`exec grub-mkconfig -o /boot/grub/grub.cfg "$@"`: an
/// `-o` given after it wins, grub-mkconfig reads its options in order).
/// `None`: the command writes where it will (a program of the operator's),
/// and grub.cfg is regenerated in place.
pub fn staged_argv(argv: &[String], staged: &str) -> Option<Vec<String>> {
    let mut out = argv.to_vec();
    let mut found = false;
    let mut i = 1;
    while i < out.len() {
        if out[i] == "-o" || out[i] == "--output" {
            if let Some(value) = out.get_mut(i + 1) {
                *value = staged.to_owned();
                found = true;
            }
            i += 2;
        } else {
            if out[i].starts_with("--output=") {
                out[i] = format!("--output={staged}");
                found = true;
            }
            i += 1;
        }
    }
    let program = argv.first()?.rsplit('/').next().unwrap_or_default();
    if !found && matches!(program, "update-grub" | "update-grub2") {
        out.extend(["-o".to_owned(), staged.to_owned()]);
        found = true;
    }
    found.then_some(out)
}

/// Where pcipass keeps the hide list for the generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultsPlace {
    /// Its own drop-in, `/etc/default/grub.d/zz-pcipass.cfg`.
    DropIn,
    /// A marked block at the end of `/etc/default/grub` (the generator
    /// reads no drop-ins).
    DefaultGrub,
}

impl DefaultsPlace {
    /// Where this root's generator reads the hide list from.
    pub fn for_host(host: &HostRoot) -> DefaultsPlace {
        if boot::mkconfig_reads_dropins(host) {
            DefaultsPlace::DropIn
        } else {
            DefaultsPlace::DefaultGrub
        }
    }

    /// The host-relative file.
    pub fn file(self) -> &'static str {
        match self {
            DefaultsPlace::DropIn => boot::PCIPASS_DROPIN,
            DefaultsPlace::DefaultGrub => boot::DEFAULT_GRUB,
        }
    }
}

/// How grub.cfg is regenerated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Regenerate {
    /// Run this program with these arguments (no shell).
    Command(Vec<String>),
    /// No command is known: edits are refused with this reason.
    Unknown(String),
}

impl Regenerate {
    /// How grub.cfg of `host` is regenerated: the `configured` command
    /// (split on spaces), else the host's own generator when the root is
    /// `/`. Another root (a mock host) has no default: its generator
    /// would write the running system's grub.cfg.
    pub fn for_root(host: &HostRoot, configured: Option<&str>) -> Regenerate {
        if let Some(command) = configured {
            return Regenerate::Command(command.split_whitespace().map(str::to_owned).collect());
        }
        if host.root() != std::path::Path::new("/") {
            return Regenerate::Unknown(format!(
                "grub.cfg of --root {} is generated by grub-mkconfig and no \
                 --grub-mkconfig-command says how to regenerate it for that root",
                host.root().display()
            ));
        }
        let grub_rel = boot::locate(host).unwrap_or("boot/grub/grub.cfg");
        match boot::default_mkconfig_command(host, grub_rel) {
            Some(argv) => Regenerate::Command(argv),
            None => Regenerate::Unknown(
                "grub.cfg is generated by grub-mkconfig, but neither update-grub, grub-mkconfig \
                 nor grub2-mkconfig is installed: give --grub-mkconfig-command"
                    .into(),
            ),
        }
    }
}

/// grub.cfg generated by `grub-mkconfig`, edited through its inputs.
#[derive(Debug)]
pub struct GrubMkconfigBootConfig {
    base: FlowBase,
    place: DefaultsPlace,
    regenerate: Regenerate,
}

/// pcipass's file as it is: its bytes (`None`: no drop-in) and the hide
/// value it sets.
struct Ours {
    bytes: Option<Vec<u8>>,
    value: Option<String>,
}

impl GrubMkconfigBootConfig {
    /// The flow for `host`, keeping the hide list at `place` and
    /// regenerating grub.cfg by `regenerate`.
    pub fn new(
        host: HostRoot,
        place: DefaultsPlace,
        regenerate: Regenerate,
    ) -> GrubMkconfigBootConfig {
        GrubMkconfigBootConfig {
            base: FlowBase::new(host),
            place,
            regenerate,
        }
    }

    /// The files a regeneration rewrites: grub.cfg, and what one cut
    /// short leaves beside it (pcipass's output, grub-mkconfig's own
    /// `.new` of it).
    fn generated(&self) -> Result<Vec<String>, BootConfigError> {
        let grub_rel = boot::locate(&self.base.host)?;
        Ok(vec![
            grub_rel.to_owned(),
            format!("{grub_rel}{STAGED_SUFFIX}"),
            format!("{grub_rel}{STAGED_SUFFIX}.new"),
        ])
    }

    /// Where the hide list is kept.
    pub fn place(&self) -> DefaultsPlace {
        self.place
    }

    fn read_ours(&self) -> Result<Ours, BootConfigError> {
        let rel = self.place.file();
        let bytes = match self.base.host.read(rel) {
            Ok(bytes) => bytes,
            Err(e) if e.is_not_found() && self.place == DefaultsPlace::DropIn => {
                return Ok(Ours {
                    bytes: None,
                    value: None,
                });
            }
            Err(e) => return Err(e.into()),
        };
        let value = match self.place {
            DefaultsPlace::DropIn => {
                Some(grub_dropin::dropin_value(&bytes).map_err(BootConfigError::dropin(rel))?)
            }
            DefaultsPlace::DefaultGrub => {
                grub_dropin::block_value(&bytes).map_err(BootConfigError::dropin(rel))?
            }
        };
        Ok(Ours {
            bytes: Some(bytes),
            value,
        })
    }

    /// Whether a file the generator reads, other than pcipass's own
    /// lines, sets a hide list (the operator's own).
    fn operator_sets_hide(&self) -> bool {
        let mut files = vec![boot::DEFAULT_GRUB.to_owned()];
        if let Ok(names) = self.base.host.list_dir(boot::DEFAULT_GRUB_D) {
            files.extend(
                names
                    .into_iter()
                    .filter(|n| n.ends_with(".cfg"))
                    .map(|n| format!("{}/{n}", boot::DEFAULT_GRUB_D))
                    .filter(|rel| rel != boot::PCIPASS_DROPIN),
            );
        }
        files.iter().any(|rel| {
            self.base
                .host
                .read(rel)
                .is_ok_and(|text| grub_dropin::mentions_hide(&text))
        })
    }

    /// The files grub-mkconfig sources, in its order: `/etc/default/grub`,
    /// then `/etc/default/grub.d/*.cfg` sorted (host-relative path and
    /// bytes; absent ones left out).
    fn defaults(&self) -> Result<Vec<(String, Vec<u8>)>, BootConfigError> {
        let host = &self.base.host;
        let mut rels = vec![boot::DEFAULT_GRUB.to_owned()];
        let mut names: Vec<String> = host
            .list_dir_if_exists(boot::DEFAULT_GRUB_D)?
            .unwrap_or_default()
            .into_iter()
            .filter(|n| n.ends_with(".cfg"))
            .collect();
        names.sort();
        rels.extend(
            names
                .iter()
                .map(|n| format!("{}/{n}", boot::DEFAULT_GRUB_D)),
        );
        let mut files = Vec::new();
        for rel in rels {
            if let Some(bytes) = host.read_if_exists(&rel)? {
                files.push((rel, bytes));
            }
        }
        Ok(files)
    }

    /// grub.cfg as the regeneration for `value` will write it, foreseen
    /// from `snap` ([`crate::domain::regenerated`]); `Err` says why it
    /// cannot be.
    fn foresee(&self, snap: &Snapshot, value: Option<&str>) -> Result<FileWrite, String> {
        let host = &self.base.host;
        let grub_rel = boot::locate(host).map_err(|e| e.to_string())?;
        let cfg = snap
            .file(grub_rel)
            .ok_or_else(|| format!("/{grub_rel} was not read"))?;
        if !snap.durable {
            return Err(format!(
                "/{grub_rel}'s xen-pciback.hide was edited by hand: the regeneration writes \
                 what grub-mkconfig's inputs give, so every line that differs from them may change"
            ));
        }
        if let Some(newer) = self.newer_input(grub_rel) {
            return Err(format!(
                "/{newer} changed after /{grub_rel} was last generated: the regeneration also \
                 brings in what changed there"
            ));
        }
        let operators = operator_defaults(snap).map_err(|e| e.to_string())?;
        if let Some((rel, _)) = operators
            .iter()
            .find(|(_, text)| grub_dropin::mentions_hide(text))
        {
            return Err(format!(
                "{rel} sets xen-pciback.hide itself: where grub-mkconfig puts it beside \
                 pcipass's is not foreseen"
            ));
        }
        let new = crate::domain::regenerated::regenerated(
            cfg,
            snap.view.value_text().as_deref(),
            value,
            &|| crate::domain::regenerated::linux_args(&operators),
        )
        .map_err(|why| format!("/{grub_rel} as grub-mkconfig will write it: {why}"))?;
        Ok(FileWrite {
            rel: grub_rel.to_owned(),
            new: Some(new),
        })
    }

    /// An input of the generator changed after grub.cfg was written (its
    /// defaults, its scripts, a kernel or Xen installed): the next
    /// regeneration brings that in too. The initramfs images are left out
    /// (their rebuild after an edit does not change what the generator
    /// writes).
    fn newer_input(&self, grub_rel: &str) -> Option<String> {
        let host = &self.base.host;
        let written = boot::fingerprint(host, grub_rel).ok()?.mtime_ns;
        let mut inputs = vec![boot::DEFAULT_GRUB.to_owned()];
        for (dir, keep) in [
            (boot::DEFAULT_GRUB_D, (|_: &str| true) as fn(&str) -> bool),
            ("etc/grub.d", |_| true),
            ("boot", |n| {
                n.starts_with("vmlinuz-") || n.starts_with("xen-")
            }),
        ] {
            let names = host
                .list_dir_if_exists(dir)
                .ok()
                .flatten()
                .unwrap_or_default();
            inputs.extend(
                names
                    .into_iter()
                    .filter(|n| keep(n))
                    .map(|n| format!("{dir}/{n}")),
            );
        }
        inputs
            .into_iter()
            .find(|rel| boot::fingerprint(host, rel).is_ok_and(|f| f.mtime_ns > written))
    }

    /// pcipass's file setting `value`, from its bytes `old`: the drop-in
    /// (removed for no list), or `/etc/default/grub` with its block.
    fn ours_with(
        &self,
        old: Option<&[u8]>,
        value: Option<&str>,
    ) -> Result<FileWrite, BootConfigError> {
        let rel = self.place.file();
        let bad = BootConfigError::dropin(rel);
        let new = match (self.place, value) {
            (DefaultsPlace::DropIn, Some(v)) => {
                Some(grub_dropin::dropin_text(v).map_err(bad)?.into_bytes())
            }
            (DefaultsPlace::DropIn, None) => None,
            (DefaultsPlace::DefaultGrub, _) => {
                Some(grub_dropin::with_block(old.unwrap_or_default(), value).map_err(bad)?)
            }
        };
        Ok(FileWrite {
            rel: self.place.file().to_owned(),
            new,
        })
    }

    /// grub.cfg regenerated: written by the generator beside it and
    /// renamed over it, so that no reader sees a half-written grub.cfg
    /// (Debian's grub-mkconfig installs with `cat grub.cfg.new >
    /// grub.cfg`). Then, while another run of grub-mkconfig is writing
    /// grub.cfg (an update-grub by hand, a kernel upgrade: its
    /// `grub.cfg.new` is held open), wait for it; if it installed its
    /// grub.cfg after pcipass's without `value` (it read the inputs before
    /// the edit wrote them), regenerate again, so that what boots holds
    /// the edit.
    fn run_regenerate(&self, hold: Held<'_>, value: Option<&str>) -> Result<(), BootConfigError> {
        let argv = match &self.regenerate {
            Regenerate::Command(argv) => argv,
            Regenerate::Unknown(reason) => {
                return Err(BootConfigError::EditsRefused(reason.clone()));
            }
        };
        let host = &self.base.host;
        let grub_rel = boot::locate(host)?;
        let staged_rel = format!("{grub_rel}{STAGED_SUFFIX}");
        let staged_path = host.resolve(&staged_rel)?;
        let staged = staged_argv(argv, &staged_path.to_string_lossy());
        let theirs_rel = format!("{grub_rel}.new");
        let theirs = host.resolve(&theirs_rel)?;
        for _ in 0..REGENERATE_ROUNDS {
            match &staged {
                Some(staged_argv) => {
                    boot::remove_durable(host, &staged_rel)?;
                    regenerate("grub.cfg", staged_argv, REGENERATE_LIMIT, hold)?;
                    let bytes = host.read(&staged_rel).map_err(|e| {
                        BootConfigError::EditsRefused(format!(
                            "`{}` succeeded but left no {staged_rel} to install: {e}",
                            staged_argv.join(" ")
                        ))
                    })?;
                    boot::replace_atomic(host, grub_rel, &bytes)?;
                    boot::remove_durable(host, &staged_rel)?;
                }
                None => regenerate("grub.cfg", argv, REGENERATE_LIMIT, hold)?,
            }
            let ours = boot::fingerprint(host, grub_rel)?;
            let waited = std::time::Instant::now();
            if self.other_run_writing(&theirs_rel, &theirs) {
                tracing::info!(
                    file = %theirs_rel,
                    "waiting for another run of grub-mkconfig (update-grub by hand, a package \
                     upgrade) to install its grub.cfg"
                );
            }
            while self.other_run_writing(&theirs_rel, &theirs) {
                if waited.elapsed() >= REGENERATE_LIMIT {
                    return Err(BootConfigError::EditsRefused(format!(
                        "another grub-mkconfig has been writing {theirs_rel} for {} s; the edit \
                         is not made while it runs",
                        waited.elapsed().as_secs()
                    )));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if boot::fingerprint(host, grub_rel)? == ours {
                return Ok(());
            }
            if self.verify_regenerated(value).is_ok() {
                tracing::info!(
                    file = grub_rel,
                    "another run of grub-mkconfig installed grub.cfg after pcipass's; it holds \
                     the edit"
                );
                return Ok(());
            }
            tracing::warn!(
                file = grub_rel,
                "another run of grub-mkconfig (update-grub by hand, a package upgrade) installed \
                 grub.cfg after pcipass's regeneration; regenerating again so that what boots \
                 holds the edit"
            );
        }
        Err(BootConfigError::EditsRefused(format!(
            "{grub_rel} kept being replaced by another run of grub-mkconfig; the edit is not made"
        )))
    }

    /// Whether another run of grub-mkconfig is writing grub.cfg now: its
    /// `grub.cfg.new` is held open by a process, or, where other processes
    /// cannot be seen (the unit's `ProtectProc=invisible` and bounded
    /// capabilities hide root's other processes), it was written in the
    /// last [`OTHER_RUN_QUIET`].
    fn other_run_writing(&self, rel: &str, path: &std::path::Path) -> bool {
        let Ok(print) = boot::fingerprint(&self.base.host, rel) else {
            return false;
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        now - print.mtime_ns < OTHER_RUN_QUIET.as_nanos() as i128
            || crate::host::exec::held_open(path)
    }

    /// The regenerated grub.cfg's next boot, which must hide exactly
    /// `value`; every other Xen entry that would not is logged.
    fn verify_regenerated(&self, value: Option<&str>) -> Result<HideView, BootConfigError> {
        let (_, config) = load_grub(&self.base.host)?;
        let view = grub_boot_view(&config)?;
        let got = view.value_text();
        let ok = match value {
            Some(v) => got.as_deref() == Some(v),
            None => view.entries().is_empty(),
        };
        if !ok {
            return Err(BootConfigError::Verify(format!(
                "the regenerated grub.cfg boots xen-pciback.hide={}, not {}: another setting of \
                 xen-pciback.hide in /etc/default/grub or /etc/default/grub.d (such as \
                 GRUB_CMDLINE_LINUX_DEFAULT or GRUB_CMDLINE_LINUX_XEN_REPLACE_DEFAULT) takes \
                 precedence; remove it there and retry",
                got.as_deref().unwrap_or("(none)"),
                value.unwrap_or("none"),
            )));
        }
        let others = xen_entries_without(&config, value);
        if !others.is_empty() {
            tracing::warn!(entries = ?others, "these Xen entries of the regenerated grub.cfg do not get the hide list");
        }
        Ok(view)
    }
}

/// The defaults files of `snap` as the operator wrote them, in the order
/// grub-mkconfig sources them (`/`-rooted name, bytes): pcipass's drop-ins
/// left out, its blocks cut from `/etc/default/grub`.
fn operator_defaults(snap: &Snapshot) -> Result<Vec<(String, Vec<u8>)>, BootConfigError> {
    let mut operators = Vec::new();
    for (rel, bytes) in &snap.files {
        let Some(bytes) = bytes else { continue };
        let theirs = match rel.as_str() {
            boot::DEFAULT_GRUB => grub_dropin::without_blocks(bytes)
                .map_err(BootConfigError::dropin(boot::DEFAULT_GRUB))?,
            boot::PCIPASS_DROPIN | boot::PCIPASS_DISPLAY_DROPIN => continue,
            r if r.starts_with(boot::DEFAULT_GRUB_D) => bytes.clone(),
            _ => continue,
        };
        operators.push((format!("/{rel}"), theirs));
    }
    Ok(operators)
}

/// The dom0 arguments the display drop-in gives the normal Xen entries
/// for `dom0` (in place of `GRUB_CMDLINE_LINUX_DEFAULT`), `None` when the
/// operator's own are already right; refused when they cannot be read, or
/// when `console=tty0` comes from `GRUB_CMDLINE_LINUX`, which the drop-in
/// cannot take out.
fn dom0_default_for(snap: &Snapshot, dom0: Dom0Console) -> Result<Option<String>, BootConfigError> {
    if dom0 == Dom0Console::Keep {
        return Ok(None);
    }
    let operators = operator_defaults(snap)?;
    let unknown = |why: String| {
        BootConfigError::EditsRefused(format!(
            "dom0's console arguments in /etc/default/grub cannot be read ({why}), so the \
             display edit cannot set them; set GRUB_CMDLINE_LINUX_DEFAULT to a literal"
        ))
    };
    if dom0 == Dom0Console::Hide {
        let linux = crate::domain::regenerated::linux_args(&operators).map_err(unknown)?;
        if linux.split_whitespace().any(|w| w == display::DOM0_VGA) {
            return Err(BootConfigError::EditsRefused(format!(
                "{} is set in GRUB_CMDLINE_LINUX, which every entry gets; remove it there to \
                 turn the display off",
                display::DOM0_VGA
            )));
        }
    }
    let default = crate::domain::regenerated::linux_default_args(&operators).map_err(unknown)?;
    let new = display::dom0_console_args(default.as_bytes(), dom0);
    Ok((new != default.as_bytes()).then(|| String::from_utf8_lossy(&new).into_owned()))
}

/// Titles of the Xen entries of `config` whose dom0 line does not give
/// exactly `value`.
fn xen_entries_without(config: &GrubConfig, value: Option<&str>) -> Vec<String> {
    config
        .entries()
        .iter()
        .filter(|e| e.is_xen())
        .filter(|e| {
            config.cmdline_of(e).map_or(true, |line| {
                HideView::from_cmdline(&line.bytes).value_text().as_deref() != value
            })
        })
        .map(|e| e.title.clone())
        .collect()
}

impl BootConfig for GrubMkconfigBootConfig {
    fn boot_view(&self) -> Result<HideView, BootConfigError> {
        let (_, config) = load_grub(&self.base.host)?;
        let view = grub_boot_view(&config)?;
        // A hide list in grub.cfg that the generator's inputs do not give
        // was edited in by hand: it boots, but the next update-grub drops it.
        match self.read_ours() {
            Ok(ours) if ours.value != view.value_text() && !self.operator_sets_hide() => {
                tracing::warn!(
                    grub_cfg = view.value_text().as_deref().unwrap_or("(none)"),
                    pcipass = ours.value.as_deref().unwrap_or("(none)"),
                    file = self.place.file(),
                    "grub.cfg's xen-pciback.hide is not what grub-mkconfig's inputs give (an edit \
                     by hand, or update-grub not run since): the next update-grub replaces it"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(file = self.place.file(), "{e}"),
        }
        Ok(view)
    }

    fn base(&self) -> &FlowBase {
        &self.base
    }

    fn locked_file(&self) -> Result<Option<String>, BootConfigError> {
        grub_locked_file(&self.base.host)
    }

    /// What boots is the generated grub.cfg; a list that boots only from
    /// a hand edit of it is not durable (the next update-grub drops it),
    /// unless the operator's own setting gives it.
    fn snapshot(&self) -> Result<Snapshot, BootConfigError> {
        // Without a way to regenerate grub.cfg no edit can be made: said
        // first, before the generator's inputs are even read.
        if let Regenerate::Unknown(reason) = &self.regenerate {
            return Err(BootConfigError::EditsRefused(reason.clone()));
        }
        let (files, config) = load_grub(&self.base.host)?;
        let view = grub_boot_view(&config)?;
        let ours = self.read_ours()?;
        let durable = ours.value == view.value_text() || self.operator_sets_hide();
        let mut read = vec![
            (self.place.file().to_owned(), ours.bytes),
            (files.rel.to_owned(), Some(files.cfg)),
        ];
        for (rel, bytes) in self.defaults()? {
            if !read.iter().any(|(r, _)| *r == rel) {
                read.push((rel, Some(bytes)));
            }
        }
        Ok(Snapshot {
            durable,
            ..Snapshot::of(config.boot_cmdline()?.bytes, read)
        })
    }

    /// pcipass's file, then grub.cfg regenerated by the host's command
    /// (grub-mkconfig installs its output only on success).
    fn plan<'a>(
        &'a self,
        snap: &Snapshot,
        value: Option<&str>,
    ) -> Result<Changes<'a>, BootConfigError> {
        let (foreseen, unforeseen) = match self.foresee(snap, value) {
            Ok(grub_cfg) => (vec![grub_cfg], Vec::new()),
            Err(why) => (Vec::new(), vec![why]),
        };
        Ok(Changes {
            writes: vec![self.ours_with(snap.file(self.place.file()), value)?],
            generated: self.generated()?,
            steps: vec![{
                let value = value.map(str::to_owned);
                Box::new(move |hold| self.run_regenerate(hold, value.as_deref()))
            }],
            foreseen,
            unforeseen,
        })
    }

    fn verify(&self, value: Option<&str>) -> Result<HideView, BootConfigError> {
        self.verify_regenerated(value)
    }

    /// From the generated grub.cfg: what boots.
    fn xen_console(&self) -> Result<Option<String>, BootConfigError> {
        grub_xen_console(&load_grub(&self.base.host)?.1)
    }

    /// pcipass's display drop-in (or its block in `/etc/default/grub`),
    /// then grub.cfg regenerated with the hide list as it is.
    ///
    /// dom0's console in the normal Xen entries: the drop-in sets
    /// `GRUB_CMDLINE_LINUX_XEN_REPLACE_DEFAULT` to the operator's
    /// `GRUB_CMDLINE_LINUX_DEFAULT` as host-display would edit it.
    fn plan_console<'a>(
        &'a self,
        snap: &Snapshot,
        value: &str,
        dom0: Dom0Console,
    ) -> Result<Changes<'a>, BootConfigError> {
        let dom0_default = dom0_default_for(snap, dom0)?;
        let write = match self.place {
            DefaultsPlace::DropIn => FileWrite {
                rel: boot::PCIPASS_DISPLAY_DROPIN.to_owned(),
                new: Some(
                    grub_dropin::display_dropin_text(value, dom0_default.as_deref())
                        .map_err(BootConfigError::dropin(boot::PCIPASS_DISPLAY_DROPIN))?
                        .into_bytes(),
                ),
            },
            DefaultsPlace::DefaultGrub => FileWrite {
                rel: boot::DEFAULT_GRUB.to_owned(),
                new: Some(
                    grub_dropin::with_display_block(
                        snap.file(boot::DEFAULT_GRUB).unwrap_or_default(),
                        value,
                        dom0_default.as_deref(),
                    )
                    .map_err(BootConfigError::dropin(boot::DEFAULT_GRUB))?,
                ),
            },
        };
        let hide = snap.view.value_text();
        Ok(Changes {
            writes: vec![write],
            generated: self.generated()?,
            steps: vec![
                Box::new(move |hold| self.run_regenerate(hold, hide.as_deref())),
                console_check(self, value, dom0),
            ],
            ..Changes::default()
        })
    }

    fn next_boot(&self) -> Result<NextBoot, BootConfigError> {
        super::native::grub_next_boot(&self.base.host)
    }

    fn fingerprint(&self) -> Option<BootFingerprint> {
        grub_fingerprint(&self.base.host)
    }

    fn cacheable(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::staged_argv;

    fn argv(words: &str) -> Vec<String> {
        words.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn the_generator_is_pointed_at_pcipasss_file_where_the_command_says_where_it_writes() {
        let staged = "/boot/grub/grub.cfg.pcipass-new";
        for (command, want) in [
            // Debian's and Ubuntu's wrapper: a later -o wins.
            (
                "/usr/sbin/update-grub",
                Some("/usr/sbin/update-grub -o /boot/grub/grub.cfg.pcipass-new"),
            ),
            (
                "update-grub2",
                Some("update-grub2 -o /boot/grub/grub.cfg.pcipass-new"),
            ),
            (
                "/usr/sbin/update-grub -o /x",
                Some("/usr/sbin/update-grub -o /boot/grub/grub.cfg.pcipass-new"),
            ),
            (
                "/usr/sbin/grub-mkconfig -o /boot/grub/grub.cfg",
                Some("/usr/sbin/grub-mkconfig -o /boot/grub/grub.cfg.pcipass-new"),
            ),
            (
                "grub2-mkconfig --output=/boot/grub2/grub.cfg",
                Some("grub2-mkconfig --output=/boot/grub/grub.cfg.pcipass-new"),
            ),
            (
                "grub2-mkconfig --output /boot/grub2/grub.cfg",
                Some("grub2-mkconfig --output /boot/grub/grub.cfg.pcipass-new"),
            ),
            (
                "wrapper ROOT -o ROOT/boot/grub/grub.cfg",
                Some("wrapper ROOT -o /boot/grub/grub.cfg.pcipass-new"),
            ),
            // The operator's own program: it writes where it will.
            ("/usr/local/sbin/my-regen", None),
            ("wrapper ROOT", None),
            // An -o with no value is not a place to write.
            ("grub-mkconfig -o", None),
        ] {
            assert_eq!(
                staged_argv(&argv(command), staged),
                want.map(argv),
                "{command}"
            );
        }
        assert_eq!(staged_argv(&[], staged), None);
    }
}
