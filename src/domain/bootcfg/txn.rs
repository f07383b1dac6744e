//! The one edit transaction of every boot flow. A flow says what boots
//! ([`BootConfig::snapshot`]), which files an edit changes and which
//! programs it runs ([`BootConfig::plan`]), and what boots afterwards
//! ([`BootConfig::verify`]); [`edit`] does the rest, the same way for
//! every flow:
//!
//! 1. the process's writer lock, then the flow's file lock (the one
//!    `xen-cmdline` takes);
//! 2. an unfinished earlier edit is undone ([`recover`]);
//! 3. plan from what boots, then every check that can be made before
//!    writing: the kernel's length limit, the caller's check (boot disks),
//!    the flow's own (no regeneration command, ...), the early-load needs
//!    (xen-pciback in the initramfs, the copies the loader boots). A
//!    refused edit has touched nothing;
//! 4. the intent is recorded, fsync'd, in a journal beside the flow's
//!    lock (every file the edit may change, with its bytes before, and
//!    whether the initramfs is rebuilt);
//! 5. the flow's files are written and its programs run (grub.cfg
//!    regenerated), and what boots is read back; then the early-load
//!    files, the initramfs rebuild and the copies;
//! 6. the journal is removed: the edit is done and may be acknowledged.
//!
//! A failure in 5 puts every recorded file back (the initramfs rebuilt
//! again if it had been); a crash in 5 leaves the journal, and the next
//! edit or the next start ([`recover`]) does the same, so that what boots
//! is always what the last acknowledged answer said. Programs run in
//! their own process group ([`crate::host::exec`]), so a stop of the
//! daemon's main process does not kill them half-way.

use serde::{Deserialize, Serialize};

use super::early::{EarlyPlan, Rebuild};
pub use super::preview::{FileChange, Preview};
use super::{
    BootConfig, BootConfigError, Held, HideCheck, HidePlan, dom0_line_with_hide, plan_edit,
};
use crate::domain::display::Dom0Console;
use crate::domain::hide::{HideEdit, HideView};
use crate::host::{HostRoot, boot};

/// How many times an edit is planned again when the boot configuration
/// changed under it (a compare-and-set that lost).
const ATTEMPTS: usize = 5;

/// What an edit starts from, read under the flow's lock.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The hide list the next boot gives.
    pub view: HideView,
    /// The dom0 command line the hide list is part of (for Xen's length
    /// limit); only the hide arguments where the flow cannot tell more.
    pub line: Vec<u8>,
    /// False when the next boot's list is not yet durable and an edit
    /// that changes nothing must still write it (grub.cfg edited by hand
    /// on a grub-mkconfig host).
    pub durable: bool,
    /// The flow's files as read, host-relative path and bytes (`None`:
    /// absent), for its [`BootConfig::plan`].
    pub files: Vec<(String, Option<Vec<u8>>)>,
    /// What a compare-and-set compares against, where the flow's program
    /// edits (what `xen-cmdline --get-dom0` printed).
    pub token: Option<String>,
}

impl Snapshot {
    /// What boots is `line`, as read from `files`: durable, and no
    /// compare-and-set token (the usual case; flows change a field).
    pub fn of(line: Vec<u8>, files: Vec<(String, Option<Vec<u8>>)>) -> Snapshot {
        Snapshot {
            view: HideView::from_cmdline(&line),
            line,
            durable: true,
            files,
            token: None,
        }
    }

    /// The bytes of `rel` as read.
    pub fn file(&self, rel: &str) -> Option<&[u8]> {
        self.files
            .iter()
            .find(|(r, _)| r == rel)
            .and_then(|(_, b)| b.as_deref())
    }
}

/// One file an edit writes: where, and what it will hold (`None`:
/// removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileWrite {
    /// Host-relative path.
    pub rel: String,
    /// The new bytes; `None` removes the file.
    pub new: Option<Vec<u8>>,
}

/// A program or step of a flow's edit, after its files are written; it
/// gets the edit's lock to hand to the programs it runs.
pub type FlowStep<'a> = Box<dyn FnOnce(Held<'_>) -> Result<(), BootConfigError> + 'a>;

/// What a flow's edit changes.
#[derive(Default)]
pub struct Changes<'a> {
    /// Files written, in order.
    pub writes: Vec<FileWrite>,
    /// Files a step rewrites (grub.cfg from the generator): recorded and
    /// put back like the written ones.
    pub generated: Vec<String>,
    /// Steps after the writes (the generator), in order.
    pub steps: Vec<FlowStep<'a>>,
    /// What the steps leave in the files they rewrite (`generated`), as
    /// far as the flow can tell before running them: for the dry run
    /// ([`preview`]). A generated file not listed is left as it is.
    pub foreseen: Vec<FileWrite>,
    /// Why some of what the steps rewrite cannot be told before they run
    /// (the dry run says so).
    pub unforeseen: Vec<String>,
}

impl std::fmt::Debug for Changes<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Changes")
            .field("writes", &self.writes)
            .field("generated", &self.generated)
            .field("steps", &self.steps.len())
            .field("foreseen", &self.foreseen)
            .field("unforeseen", &self.unforeseen)
            .finish()
    }
}

/// A file as it was before an edit, in the journal.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Saved {
    rel: String,
    /// Hex of the bytes; `None`: the file did not exist.
    old: Option<String>,
}

/// The journal of an edit in progress.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Journal {
    /// What the edit was for (the planned hide list), for the log.
    value: Option<String>,
    /// Every file the edit may change, as it was.
    files: Vec<Saved>,
    /// The initramfs rebuild the edit runs, `None` without one: after a
    /// crash the initramfs is rebuilt from the restored files whatever
    /// they say.
    rebuild: Option<Rebuild>,
    /// The copies of the initramfs the loader boots (built, booted).
    copies: Vec<(String, String)>,
    /// Functions the edit's last step moves to pciback now (an apply-now
    /// hide), with their drivers before: a recovery gives them back.
    #[serde(default)]
    moves: Vec<Move>,
    /// The initramfs images in `/boot` and their stamps (inode, size,
    /// mtime) before the rebuild: a recovery that finds them unchanged
    /// (the edit was cut short before a new image was installed) need not
    /// rebuild. `None` (an older journal): it rebuilds.
    #[serde(default)]
    images: Option<Vec<boot::Image>>,
}

/// A function an edit's last step moves from its driver to pciback.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Move {
    /// The function's address.
    pub function: String,
    /// Its driver before (`None`: none).
    pub native: Option<String>,
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    let digits = text.as_bytes();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    digits
        .chunks_exact(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok())
        .collect()
}

/// The journal beside the boot configuration file `cfg`
/// (`<cfg>.pcipass-journal`, beside its lock).
pub fn journal_beside(cfg: &str) -> String {
    format!("{cfg}.pcipass-journal")
}

/// Undo an edit a crash left unfinished: its journal at `journal` names
/// every file as it was; they are put back, the initramfs rebuilt if the
/// edit rebuilds it and its copies refreshed, then the journal removed.
/// Returns what was done, for the log; `None` when there was nothing.
/// Run under the flow's lock, before any edit and at start.
pub fn recover(
    host: &HostRoot,
    journal: &str,
    hold: Held<'_>,
) -> Result<Option<String>, BootConfigError> {
    let Some(bytes) = host.read_if_exists(journal)? else {
        return Ok(None);
    };
    let record: Journal = serde_json::from_slice(&bytes).map_err(|e| {
        BootConfigError::EditsRefused(format!(
            "the journal of an unfinished boot configuration edit, /{journal}, cannot be read \
             ({e}): check the files it names against the running system's, then remove it"
        ))
    })?;
    let mut restored = Vec::new();
    for saved in record.files.iter().rev() {
        let old = match &saved.old {
            Some(text) => Some(unhex(text).ok_or_else(|| {
                BootConfigError::EditsRefused(format!(
                    "the journal /{journal} holds damaged bytes for /{}",
                    saved.rel
                ))
            })?),
            None => None,
        };
        if host.read_if_exists(&saved.rel)? != old {
            boot::put_back(host, &saved.rel, old.as_deref())?;
            restored.push(format!("/{}", saved.rel));
        }
    }
    let mut rebuilt = false;
    if let Some(how) = &record.rebuild {
        if images_unchanged(host, record.images.as_deref())? {
            drop_half_built(host, record.images.as_deref().unwrap_or_default())?;
        } else {
            super::early::rebuild(host, how, hold)?;
            rebuilt = true;
        }
    }
    let copies: Vec<_> = record
        .copies
        .iter()
        .map(|(built, booted)| super::early::InitramfsCopy {
            built: built.clone(),
            booted: booted.clone(),
        })
        .collect();
    super::early::refresh_copies(host, &copies)?;
    for moved in &record.moves {
        let give_back = |reason: String| {
            BootConfigError::EditsRefused(format!(
                "cannot give {} back to dom0: {reason}",
                moved.function
            ))
        };
        let addr = moved
            .function
            .parse()
            .map_err(|_| give_back("not a PCI address".into()))?;
        crate::domain::apply_now::restore(host, &addr, moved.native.as_deref())
            .map_err(|e| give_back(e.to_string()))?;
        restored.push(format!(
            "{} to {}",
            moved.function,
            moved.native.as_deref().unwrap_or("dom0")
        ));
    }
    boot::remove_durable(host, journal)?;
    let done = format!(
        "undid an unfinished edit (xen-pciback.hide={}): {}{}",
        record.value.as_deref().unwrap_or("(none)"),
        if restored.is_empty() {
            "every file was still as before".to_owned()
        } else {
            format!("put back {}", restored.join(", "))
        },
        match (&record.rebuild, rebuilt) {
            (Some(_), true) => "; the initramfs rebuilt",
            (Some(_), false) => "; the initramfs images were as before, not rebuilt",
            (None, _) => "",
        },
    );
    Ok(Some(done))
}

/// [`recover`] for `config`'s journal, under its locks: at start.
pub fn recover_now(config: &dyn BootConfig) -> Result<Option<String>, BootConfigError> {
    let base = config.base();
    let _in_process = base.writer.lock().unwrap_or_else(|p| p.into_inner());
    let Some(file) = config.locked_file()? else {
        return Ok(None);
    };
    let journal = journal_beside(&file);
    if !base.host.exists(&journal) {
        return Ok(None);
    }
    let lock = boot::lock_beside(&base.host, &file)?;
    recover(&base.host, &journal, Some(&lock))
}

/// The early-load step of an edit, planned from the views before and
/// after; `None` when it changes nothing.
pub type EarlyPlanner<'a> =
    dyn Fn(&HideView, &HideView) -> Result<Option<EarlyPlan>, BootConfigError> + 'a;

/// Edit the hide list of `config` by `plan`: the whole transaction of
/// the module documentation. `check` sees the views before and after
/// and may refuse; `early` plans the early-load step.
pub fn edit(
    config: &dyn BootConfig,
    plan: &mut HidePlan<'_>,
    check: &HideCheck<'_>,
    early: &EarlyPlanner<'_>,
) -> Result<HideView, BootConfigError> {
    edit_then(config, plan, check, early, LastStep::NONE)
}

/// The last step of an edit, after every file is written and before the
/// edit is done: an apply-now hide moves the function to pciback there.
/// When it fails (having undone its own work), the edit is undone too.
pub type Then<'a> = dyn Fn() -> Result<(), BootConfigError> + 'a;

/// An edit's last step and what it moves at runtime, for the journal: a
/// crash before the edit is done leaves them for the recovery to give
/// back with the files.
#[derive(Clone, Copy)]
pub struct LastStep<'a> {
    /// The step.
    pub run: &'a Then<'a>,
    /// The functions it moves to pciback.
    pub moves: &'a [Move],
}

impl std::fmt::Debug for LastStep<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LastStep")
            .field("moves", &self.moves)
            .finish()
    }
}

fn nothing() -> Result<(), BootConfigError> {
    Ok(())
}

impl LastStep<'static> {
    /// No last step.
    pub const NONE: LastStep<'static> = LastStep {
        run: &nothing,
        moves: &[],
    };
}

/// [`edit`] with `last` as its last step.
pub fn edit_then(
    config: &dyn BootConfig,
    plan: &mut HidePlan<'_>,
    check: &HideCheck<'_>,
    early: &EarlyPlanner<'_>,
    last: LastStep<'_>,
) -> Result<HideView, BootConfigError> {
    edit_if(config, plan, check, early, last, None)
}

/// [`edit_then`] made only if what it starts from is what a [`preview`]
/// of the same `request` saw (its token, `expect`): the compare-and-swap
/// of a previewed edit ([`BootConfigError::PreviewStale`] otherwise,
/// nothing written). `None`: no comparison.
pub fn edit_if(
    config: &dyn BootConfig,
    plan: &mut HidePlan<'_>,
    check: &HideCheck<'_>,
    early: &EarlyPlanner<'_>,
    last: LastStep<'_>,
    expect: Option<&Expect<'_>>,
) -> Result<HideView, BootConfigError> {
    attempts(config, &mut |snap, journal, lock| {
        let prepared = prepare(config, &snap, plan, check, early)?;
        if let Some(expect) = expect {
            let seen = preview_of(config, &snap, prepared.as_ref(), expect.request)?;
            if seen.token != expect.token {
                return Err(BootConfigError::PreviewStale);
            }
        }
        let Some(prepared) = prepared else {
            // Nothing to write; the last step still runs (an apply-now
            // hide of a function the next boot already hides).
            (last.run)()?;
            return Ok(snap.view);
        };
        run(
            config,
            journal,
            lock,
            prepared.value.as_deref(),
            prepared.changes,
            prepared.early.as_ref(),
            last,
            expect.is_some(),
        )
    })
}

/// What a previewed edit must still start from: the request the preview
/// was made for and the token it gave.
#[derive(Debug, Clone, Copy)]
pub struct Expect<'a> {
    /// The request, as the caller describes it to [`preview`].
    pub request: &'a str,
    /// The preview's [`Preview::token`].
    pub token: &'a str,
}

/// An edit planned from a snapshot, every check made, nothing written.
struct Prepared<'a> {
    /// The hide value the next boot gets.
    value: Option<String>,
    /// The view it gives.
    after: HideView,
    /// The flow's files and steps.
    changes: Changes<'a>,
    /// The early-load step.
    early: Option<EarlyPlan>,
}

/// Step 3 of the module documentation: the plan from `snap` and every
/// check before writing; `None` when there is nothing to write.
fn prepare<'a>(
    config: &'a dyn BootConfig,
    snap: &Snapshot,
    plan: &mut HidePlan<'_>,
    check: &HideCheck<'_>,
    early: &EarlyPlanner<'_>,
) -> Result<Option<Prepared<'a>>, BootConfigError> {
    let value = match plan_edit(&snap.view, plan)? {
        HideEdit::Unchanged if snap.durable => return Ok(None),
        HideEdit::Unchanged => snap.view.value_text(),
        HideEdit::Set(value) => Some(value),
        HideEdit::Delete => None,
    };
    let line = dom0_line_with_hide(&snap.line, value.as_deref())?;
    let after = HideView::from_cmdline(&line);
    check(&snap.view, &after)?;
    let changes = config.plan(snap, value.as_deref())?;
    let early = early(&snap.view, &after)?;
    Ok(Some(Prepared {
        value,
        after,
        changes,
        early,
    }))
}

/// What the edit `plan` would do now, planned and checked as [`edit`]
/// plans and checks it (a refusal is the edit's refusal), with nothing
/// written and no lock taken: the dry run. `request` says what the edit
/// is for (which functions, which way); it is part of the token, so that
/// the token fits only the same request ([`edit_if`]).
pub fn preview(
    config: &dyn BootConfig,
    plan: &mut HidePlan<'_>,
    check: &HideCheck<'_>,
    early: &EarlyPlanner<'_>,
    request: &str,
) -> Result<Preview, BootConfigError> {
    let snap = config.snapshot()?;
    let prepared = prepare(config, &snap, plan, check, early)?;
    let mut seen = preview_of(config, &snap, prepared.as_ref(), request)?;
    let host = &config.base().host;
    if let Some(file) = config.locked_file()?
        && host.exists(&journal_beside(&file))
    {
        seen.unforeseen.push(format!(
            "an edit is in progress or was cut short (/{}): it is finished or undone before \
             any other edit, so preview again",
            journal_beside(&file)
        ));
    }
    Ok(seen)
}

/// The preview of `prepared` (`None`: nothing to write) from `snap`.
fn preview_of(
    config: &dyn BootConfig,
    snap: &Snapshot,
    prepared: Option<&Prepared<'_>>,
    request: &str,
) -> Result<Preview, BootConfigError> {
    let host = &config.base().host;
    let Some(prepared) = prepared else {
        return Ok(Preview {
            value: snap.view.value_text(),
            after: snap.view.clone(),
            files: Vec::new(),
            unforeseen: Vec::new(),
            rebuild: None,
            token: super::preview::token(request, snap, &[]),
        });
    };
    let changes = &prepared.changes;
    let mut planned: Vec<&FileWrite> = changes.writes.iter().collect();
    planned.extend(&changes.foreseen);
    if let Some(early) = &prepared.early {
        planned.extend(&early.writes);
    }
    let mut files: Vec<FileChange> = Vec::new();
    for write in planned {
        let before = match snap.files.iter().find(|(rel, _)| *rel == write.rel) {
            Some((_, bytes)) => bytes.clone(),
            None => host.read_if_exists(&write.rel)?,
        };
        match files.iter_mut().find(|f| f.rel == write.rel) {
            Some(file) => file.after.clone_from(&write.new),
            None => files.push(FileChange {
                rel: write.rel.clone(),
                before,
                after: write.new.clone(),
            }),
        }
    }
    let token = super::preview::token(request, snap, &files);
    files.retain(|f| f.before != f.after);
    Ok(Preview {
        value: prepared.value.clone(),
        after: prepared.after.clone(),
        files,
        unforeseen: changes.unforeseen.clone(),
        rebuild: prepared.early.as_ref().and_then(|e| e.rebuild.clone()),
        token,
    })
}

/// Make the next boot's last Xen `console=` be `want(current)` (the host
/// display), every other argument and the hide list as they are: the
/// same locks, journal and recovery as a hide edit. Refused while the
/// hide list that boots is not durable (on grub-mkconfig hosts the
/// regeneration would change it too).
pub fn edit_console(
    config: &dyn BootConfig,
    want: &dyn Fn(Option<&str>) -> (String, Dom0Console),
) -> Result<(), BootConfigError> {
    attempts(config, &mut |snap, journal, lock| {
        if !snap.durable {
            return Err(BootConfigError::EditsRefused(
                "grub.cfg's xen-pciback.hide was edited by hand and is not what grub-mkconfig's \
                 inputs give; the regeneration a console edit needs would change it (hide or \
                 give back through pcipass first, or run update-grub)"
                    .into(),
            ));
        }
        let current = config.xen_console()?;
        let (value, dom0) = want(current.as_deref());
        if current.as_deref() == Some(value.as_str())
            && crate::domain::display::dom0_console_done(&config.dom0_args()?, dom0)
        {
            return Ok(());
        }
        let changes = config.plan_console(&snap, &value, dom0)?;
        let hide = snap.view.value_text();
        run(
            config,
            journal,
            lock,
            hide.as_deref(),
            changes,
            None,
            LastStep::NONE,
            false,
        )
        .map(drop)
    })
}

/// One attempt of an edit, given what it starts from: the snapshot, the
/// journal's path, the flow's lock.
type Attempt<'a, T> =
    dyn FnMut(Snapshot, Option<&str>, Held<'_>) -> Result<T, BootConfigError> + 'a;

/// Steps 1 and 2, then `body` with what the edit starts from (the
/// snapshot, the journal's path, the flow's lock); planned again when the
/// configuration changed between the read and the write.
fn attempts<T>(config: &dyn BootConfig, body: &mut Attempt<'_, T>) -> Result<T, BootConfigError> {
    let base = config.base();
    let _in_process = base.writer.lock().unwrap_or_else(|p| p.into_inner());
    for _ in 0..ATTEMPTS {
        let file = config.locked_file()?;
        let lock = match &file {
            Some(file) => Some(boot::lock_beside(&base.host, file)?),
            None => None,
        };
        let host = &base.host;
        let journal = file.as_deref().map(journal_beside);
        if let Some(journal) = &journal
            && let Some(done) = recover(host, journal, lock.as_ref())?
        {
            tracing::warn!(journal = %journal, "{done}");
        }
        let snap = config.snapshot()?;
        match body(snap, journal.as_deref(), lock.as_ref()) {
            Err(BootConfigError::Changed) => {
                tracing::info!(
                    "the boot configuration changed between read and write; planning again"
                );
            }
            other => return other,
        }
    }
    Err(BootConfigError::Verify(
        "the boot configuration kept changing while pcipass edited it".into(),
    ))
}

/// Steps 4 to 6 of the module documentation. `as_foreseen`: the files the
/// steps rewrite must then hold what the flow foresaw (a previewed edit
/// makes exactly what its preview showed, or nothing).
#[allow(clippy::too_many_arguments)]
fn run(
    config: &dyn BootConfig,
    journal: Option<&str>,
    hold: Held<'_>,
    value: Option<&str>,
    changes: Changes<'_>,
    early: Option<&EarlyPlan>,
    last: LastStep<'_>,
    as_foreseen: bool,
) -> Result<HideView, BootConfigError> {
    let host = &config.base().host;
    let mut rels: Vec<String> = changes.writes.iter().map(|w| w.rel.clone()).collect();
    rels.extend(changes.generated.iter().cloned());
    if let Some(early) = early {
        rels.extend(early.writes.iter().map(|w| w.rel.clone()));
    }
    let mut saved = Vec::new();
    for rel in &rels {
        if !saved.iter().any(|(r, _): &(String, _)| r == rel) {
            saved.push((rel.clone(), host.read_if_exists(rel)?));
        }
    }
    let record = Journal {
        value: value.map(str::to_owned),
        files: saved
            .iter()
            .map(|(rel, old)| Saved {
                rel: rel.clone(),
                old: old.as_deref().map(hex),
            })
            .collect(),
        rebuild: early.and_then(|e| e.rebuild.clone()),
        images: match early.and_then(|e| e.rebuild.as_ref()) {
            Some(_) => Some(boot::initramfs_images(host)?),
            None => None,
        },
        copies: early
            .map(|e| {
                e.copies
                    .iter()
                    .map(|c| (c.built.clone(), c.booted.clone()))
                    .collect()
            })
            .unwrap_or_default(),
        moves: last.moves.to_vec(),
    };
    if let Some(journal) = journal {
        let text = serde_json::to_vec(&record).map_err(|e| {
            BootConfigError::EditsRefused(format!("cannot record the edit's journal: {e}"))
        })?;
        boot::replace_atomic(host, journal, &text)?;
    }
    let mut rebuilt = false;
    let result = (|| {
        write_all(host, &changes.writes)?;
        boot::fault_point("txn-after-writes");
        for step in changes.steps {
            step(hold)?;
        }
        let view = config.verify(value)?;
        if as_foreseen {
            for foreseen in &changes.foreseen {
                if host.read_if_exists(&foreseen.rel)? != foreseen.new {
                    tracing::warn!(
                        file = %foreseen.rel,
                        "the regenerated file differs from what the preview showed (an input of \
                         the generator changed since); the previewed edit is undone"
                    );
                    return Err(BootConfigError::PreviewStale);
                }
            }
        }
        boot::fault_point("txn-after-steps");
        if let Some(early) = early {
            write_all(host, &early.writes)?;
            early.run(host, &mut rebuilt, hold)?;
        }
        boot::fault_point("txn-after-early");
        (last.run)()?;
        boot::fault_point("txn-after-then");
        Ok(view)
    })();
    match result {
        Ok(view) => {
            if let Some(journal) = journal {
                boot::remove_durable(host, journal)?;
            }
            Ok(view)
        }
        Err(e) => {
            // A rebuild cut short before it installed an image changed
            // nothing the boot loads; one cut short after the first of
            // several did, and is redone with the files put back.
            let changed = match &record.images {
                Some(before) => boot::initramfs_images(host).map_or(true, |now| now != *before),
                None => false,
            };
            if !(rebuilt || changed)
                && let Some(images) = &record.images
                && let Err(again) = drop_half_built(host, images)
            {
                tracing::warn!("a half-built initramfs is left: {again}");
            }
            let undone = undo(host, &saved, rebuilt || changed, early, hold);
            match (&undone, journal) {
                (Ok(()), Some(journal)) => {
                    if let Err(again) = boot::remove_durable(host, journal) {
                        tracing::error!("cannot remove /{journal}: {again}");
                    }
                }
                (Err(again), _) => tracing::error!(
                    "cannot undo a failed edit ({again}); the journal stays for the next edit \
                     or start to finish"
                ),
                _ => {}
            }
            Err(e)
        }
    }
}

/// Write the early-load files and run the rebuild now, outside an edit
/// transaction (`xen-cmdline`'s generic key edits of grub.cfg in place);
/// the files are put back if the rebuild fails.
pub fn apply_early(host: &HostRoot, early: &EarlyPlan) -> Result<(), BootConfigError> {
    let mut saved = Vec::new();
    for write in &early.writes {
        saved.push((write.rel.clone(), host.read_if_exists(&write.rel)?));
    }
    let mut rebuilt = false;
    let result = write_all(host, &early.writes).and_then(|()| early.run(host, &mut rebuilt, None));
    if result.is_err()
        && let Err(again) = undo(host, &saved, rebuilt, Some(early), None)
    {
        tracing::error!("cannot undo the early-load files: {again}");
    }
    result
}

/// Write each file (atomically), or remove it.
fn write_all(host: &HostRoot, writes: &[FileWrite]) -> Result<(), BootConfigError> {
    for write in writes {
        if let Some((dir, _)) = write.rel.rsplit_once('/') {
            boot::ensure_dir(host, dir)?;
        }
        boot::put_back(host, &write.rel, write.new.as_deref())?;
    }
    Ok(())
}

/// Whether the initramfs images are as `before` recorded them (same
/// names, inodes, sizes and mtimes); false without a record.
fn images_unchanged(
    host: &HostRoot,
    before: Option<&[boot::Image]>,
) -> Result<bool, BootConfigError> {
    let Some(before) = before else {
        return Ok(false);
    };
    Ok(boot::initramfs_images(host)? == before)
}

/// Remove what a rebuild cut short leaves beside the images: the builder's
/// `<image>.new` (update-initramfs and dracut build there, then rename).
fn drop_half_built(host: &HostRoot, images: &[boot::Image]) -> Result<(), BootConfigError> {
    for (name, _) in images {
        let half = format!("boot/{name}.new");
        if host.exists(&half) {
            boot::put_back(host, &half, None)?;
        }
    }
    Ok(())
}

/// Put every saved file back, newest first; rebuild the initramfs again
/// when this edit had rebuilt it.
fn undo(
    host: &HostRoot,
    saved: &[(String, Option<Vec<u8>>)],
    rebuilt: bool,
    early: Option<&EarlyPlan>,
    hold: Held<'_>,
) -> Result<(), BootConfigError> {
    for (rel, old) in saved.iter().rev() {
        if host.read_if_exists(rel)? != *old {
            boot::put_back(host, rel, old.as_deref())?;
        }
    }
    if rebuilt && let Some(early) = early {
        let mut again = false;
        early.run(host, &mut again, hold)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        for bytes in [&b""[..], b"\x00\xff grub.cfg\n", &[7u8; 300][..]] {
            assert_eq!(unhex(&hex(bytes)).as_deref(), Some(bytes));
        }
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
    }

    #[test]
    fn recover_puts_every_file_back_and_removes_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::new(dir.path());
        std::fs::create_dir_all(dir.path().join("etc/default/grub.d")).unwrap();
        std::fs::create_dir_all(dir.path().join("boot/grub")).unwrap();
        std::fs::write(dir.path().join("boot/grub/grub.cfg"), "new\n").unwrap();
        std::fs::write(
            dir.path().join("etc/default/grub.d/zz-pcipass.cfg"),
            "half an edit\n",
        )
        .unwrap();
        let record = Journal {
            moves: Vec::new(),
            value: Some("(0000:01:00.0)".into()),
            files: vec![
                Saved {
                    rel: "etc/default/grub.d/zz-pcipass.cfg".into(),
                    old: None,
                },
                Saved {
                    rel: "boot/grub/grub.cfg".into(),
                    old: Some(hex(b"old\n")),
                },
            ],
            rebuild: None,
            copies: Vec::new(),
            images: None,
        };
        let journal = "boot/grub/grub.cfg.pcipass-journal";
        std::fs::write(
            dir.path().join(journal),
            serde_json::to_vec(&record).unwrap(),
        )
        .unwrap();
        let done = recover(&host, journal, None).unwrap().unwrap();
        assert!(
            done.contains("/etc/default/grub.d/zz-pcipass.cfg"),
            "{done}"
        );
        assert!(done.contains("/boot/grub/grub.cfg"), "{done}");
        assert!(
            !dir.path()
                .join("etc/default/grub.d/zz-pcipass.cfg")
                .exists()
        );
        assert_eq!(
            std::fs::read(dir.path().join("boot/grub/grub.cfg")).unwrap(),
            b"old\n"
        );
        assert!(!dir.path().join(journal).exists());
        assert_eq!(recover(&host, journal, None).unwrap(), None);
    }

    /// A rebuild cut short before it installed an image: the recovery
    /// finds the images as recorded and does not rebuild (it removes the
    /// builder's half-built `.new`); a `.dpkg-bak` left beside them is no
    /// image. An image that changed is rebuilt.
    #[test]
    fn recovery_rebuilds_only_when_an_image_changed() {
        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::new(dir.path());
        std::fs::create_dir_all(dir.path().join("boot")).unwrap();
        std::fs::write(
            dir.path().join("boot/initrd.img-6.1.0-28-amd64"),
            "old image",
        )
        .unwrap();
        let images = boot::initramfs_images(&host).unwrap();
        assert_eq!(images.len(), 1);
        // The rebuild, if run, leaves its mark.
        let mark = dir.path().join("rebuilt");
        let record = |images| Journal {
            moves: Vec::new(),
            value: None,
            files: Vec::new(),
            rebuild: Some(Rebuild::Command(vec![
                "/bin/sh".into(),
                "-c".into(),
                format!("touch {}", mark.display()),
            ])),
            copies: Vec::new(),
            images,
        };
        let journal = "journal";
        let write = |r: &Journal| {
            std::fs::write(dir.path().join(journal), serde_json::to_vec(r).unwrap()).unwrap();
        };
        std::fs::write(
            dir.path().join("boot/initrd.img-6.1.0-28-amd64.new"),
            "half",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("boot/initrd.img-6.1.0-28-amd64.dpkg-bak"),
            "old",
        )
        .unwrap();
        write(&record(Some(images.clone())));
        let done = recover(&host, journal, None).unwrap().unwrap();
        assert!(done.contains("not rebuilt"), "{done}");
        assert!(!mark.exists());
        assert!(
            !dir.path()
                .join("boot/initrd.img-6.1.0-28-amd64.new")
                .exists()
        );

        std::fs::write(
            dir.path().join("boot/initrd.img-6.1.0-28-amd64"),
            "a new image!",
        )
        .unwrap();
        write(&record(Some(images)));
        let done = recover(&host, journal, None).unwrap().unwrap();
        assert!(done.contains("the initramfs rebuilt"), "{done}");
        assert!(mark.exists());

        // An older journal, without images: rebuilt.
        std::fs::remove_file(&mark).unwrap();
        write(&record(None));
        recover(&host, journal, None).unwrap();
        assert!(mark.exists());
    }

    #[test]
    fn a_damaged_journal_refuses_edits() {
        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::new(dir.path());
        std::fs::write(dir.path().join("x.pcipass-journal"), "{ half").unwrap();
        let err = recover(&host, "x.pcipass-journal", None).unwrap_err();
        assert!(matches!(err, BootConfigError::EditsRefused(_)), "{err:?}");
        assert!(dir.path().join("x.pcipass-journal").exists());
    }
}
