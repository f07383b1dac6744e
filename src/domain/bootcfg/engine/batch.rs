//! Edits of the engine, written together: concurrent hides and unhides
//! go through one [`GroupCommit`](crate::domain::bootcfg::group::GroupCommit), are checked one by one, and are written
//! by one transaction ([`txn::edit`]) per run of edits that do not
//! contradict each other.

use std::sync::Arc;

use super::{Dom0AccessEngine, judge};
use crate::domain::bootcfg::group::Queued;
use crate::domain::bootcfg::{
    BootConfigError, EarlyPlan, Preview, hidden_natives, plan_pciback_early, txn,
};
use crate::domain::hide::{self, HideEdit, HideParseError, HideView, Topology};
use crate::domain::{Dom0Access, PciAddress};

impl Dom0AccessEngine {
    /// Hide `addr` from the next boot on. Concurrent edits are written
    /// together ([`GroupCommit`](crate::domain::bootcfg::group::GroupCommit)): one transaction, one regeneration, one
    /// initramfs rebuild for the batch, and each caller answered for its
    /// own function.
    pub fn disable(&self, addr: &PciAddress) -> Result<Dom0Access, BootConfigError> {
        self.submit(Want::Hide(*addr))
    }

    /// Give `addr` back to dom0 from the next boot on (batched as
    /// [`Dom0AccessEngine::disable`]).
    pub fn enable(&self, addr: &PciAddress) -> Result<Dom0Access, BootConfigError> {
        self.submit(Want::GiveBack(*addr))
    }

    /// Hide (`hide`) or give back every function of `addrs` as one edit:
    /// one transaction with `last` as its last step, all or nothing (one
    /// function refused refuses the set, and nothing is written). The
    /// answer is each function's status, in the order of `addrs`.
    ///
    /// With `token` (from [`Dom0AccessEngine::preview_set`] of the same
    /// functions and direction) the edit is made only if every file the
    /// preview read is as it was then, and it then writes exactly what the
    /// preview showed ([`txn::edit_if`]).
    pub fn edit_set(
        &self,
        addrs: &[PciAddress],
        hide: bool,
        last: txn::LastStep<'_>,
        token: Option<&str>,
    ) -> Result<Vec<Dom0Access>, BootConfigError> {
        let wants = wants_of(addrs, hide);
        let tree = self.read_tree()?;
        let running = self.running_view()?;
        let request = request_of(addrs, hide);
        let expect = token.map(|token| txn::Expect {
            request: &request,
            token,
        });
        let written = self.write(&tree, &wants, last, expect.as_ref())?;
        judge(&running, &written, &tree, addrs, &|a| self.driver(a))
    }

    /// What [`Dom0AccessEngine::edit_set`] of `addrs` would do now, with
    /// every check it makes, nothing written: the dry run, and the token
    /// that makes the edit a compare-and-swap.
    pub fn preview_set(
        &self,
        addrs: &[PciAddress],
        hide: bool,
    ) -> Result<Preview, BootConfigError> {
        let wants = wants_of(addrs, hide);
        let tree = self.read_tree()?;
        txn::preview(
            self.boot.as_ref(),
            &mut |current| compose(current, &wants, &tree),
            &|before, after| self.safety_check(before, after),
            &self.early_planner(&tree, &wants),
            &request_of(addrs, hide),
        )
    }

    fn submit(&self, want: Want) -> Result<Dom0Access, BootConfigError> {
        self.edits
            .submit(want, &|batch| self.edit_batch(batch), &|| {
                Err(BootConfigError::EditsRefused(
                    "the edit was lost with the batch it was written in; retry".into(),
                ))
            })
    }

    /// A batch of edits, in as few transactions as its contradictions
    /// allow ([`conflict_free_runs`]). In each, every edit is first checked alone
    /// against what boots now (its plan, the boot disks, whether
    /// xen-pciback can take its function early), so that one bad function
    /// is refused without failing the others; the rest are planned one
    /// after the other into one hide list and written together. The
    /// early-load needs come from the whole list the batch leaves, so a
    /// function hidden by hand or with `xen-cmdline` gets its softdep too.
    fn edit_batch(&self, batch: Vec<Queued<Want>>) -> Vec<(u64, Answer)> {
        conflict_free_runs(batch)
            .into_iter()
            .flat_map(|run| self.edit_together(run, txn::LastStep::NONE))
            .collect()
    }

    /// One transaction for edits that do not contradict each other, with
    /// `then` as its last step.
    fn edit_together(
        &self,
        batch: Vec<Queued<Want>>,
        last: txn::LastStep<'_>,
    ) -> Vec<(u64, Answer)> {
        let read = self
            .read_tree()
            .and_then(|tree| Ok((tree, self.running_view()?, self.boot_view()?)));
        let (tree, running, now) = match read {
            Ok(read) => read,
            Err(e) => return shared_failure(e, batch.iter().map(|q| q.ticket)),
        };
        let mut answers = Vec::new();
        let mut admitted = Vec::new();
        // An edit alone meets the same checks in its transaction: the
        // admission is only there to keep one edit from failing others.
        let alone = batch.len() == 1;
        for queued in batch {
            match if alone {
                Ok(())
            } else {
                self.admit(&now, &tree, queued.request)
            } {
                Ok(()) => admitted.push(queued),
                Err(e) => answers.push((queued.ticket, Err(e))),
            }
        }
        if admitted.is_empty() {
            return answers;
        }
        let wants: Vec<Want> = admitted.iter().map(|q| q.request).collect();
        match self.write(&tree, &wants, last, None) {
            Ok(written) => answers.extend(admitted.iter().map(|q| {
                let addr = q.request.addr();
                let status =
                    judge(&running, &written, &tree, &[addr], &|a| self.driver(a)).map(|s| s[0]);
                (q.ticket, status)
            })),
            Err(e) => answers.extend(shared_failure(e, admitted.iter().map(|q| q.ticket))),
        }
        answers
    }

    /// `wants` planned one after the other and written by one transaction
    /// (every check on the whole edit, the early-load needs of the list it
    /// leaves), with `last` as its last step; the view it wrote.
    fn write(
        &self,
        tree: &Topology,
        wants: &[Want],
        last: txn::LastStep<'_>,
        expect: Option<&txn::Expect<'_>>,
    ) -> Result<HideView, BootConfigError> {
        txn::edit_if(
            self.boot.as_ref(),
            &mut |current| compose(current, wants, tree),
            &|before, after| self.safety_check(before, after),
            &self.early_planner(tree, wants),
            last,
            expect,
        )
    }

    /// The early-load step of `wants`: xen-pciback before the native
    /// drivers of the functions the edit newly hides (nothing for an edit
    /// that only gives back).
    fn early_planner<'a>(
        &'a self,
        tree: &'a Topology,
        wants: &[Want],
    ) -> impl Fn(&HideView, &HideView) -> Result<Option<EarlyPlan>, BootConfigError> + 'a {
        let hides = wants.iter().any(|w| matches!(w, Want::Hide(_)));
        move |before: &HideView, after: &HideView| {
            if !hides {
                return Ok(None);
            }
            let natives = hidden_natives(&self.host, tree, &|f| before.hides_in(tree, f), &|f| {
                after.hides_in(tree, f)
            })?;
            plan_pciback_early(&self.host, &self.initramfs, &natives, &|| {
                self.boot.initramfs_copies()
            })
        }
    }

    /// Why a hide of `addr` alone would be refused now (the boot disks,
    /// dom0's network, the host display, the early-load plan, or that the
    /// boot configuration cannot be read), as the readiness report says
    /// it; `None` when it would be accepted. Nothing is written.
    pub fn hide_refusal(&self, addr: &PciAddress) -> Option<String> {
        let refusal = self
            .read_tree()
            .and_then(|tree| Ok((tree, self.boot_view()?)))
            .and_then(|(tree, now)| self.admit(&now, &tree, Want::Hide(*addr)));
        refusal.err().map(|e| e.to_string())
    }

    /// Whether one edit may join a batch: it plans against `now`, and a
    /// hide alone would pass the boot-disk rule and could be made to take
    /// effect (xen-pciback early before its function's native driver).
    fn admit(&self, now: &HideView, tree: &Topology, want: Want) -> Result<(), BootConfigError> {
        if let Want::GiveBack(_) = want {
            compose(now.value.as_deref(), &[want], tree)?;
            return Ok(());
        }
        let edit = compose(now.value.as_deref(), &[want], tree)?;
        let after = match &edit {
            HideEdit::Unchanged => return Ok(()),
            HideEdit::Set(value) => HideView::from_value(Some(value.as_bytes())),
            HideEdit::Delete => HideView::from_value(None),
        };
        self.safety_check(now, &after)?;
        let natives = hidden_natives(&self.host, tree, &|f| now.hides_in(tree, f), &|f| {
            after.hides_in(tree, f)
        })?;
        // The copies the loader boots are the same for every edit: the
        // batch's own plan refuses them for all.
        plan_pciback_early(&self.host, &self.initramfs, &natives, &|| Ok(Vec::new()))?;
        Ok(())
    }
}

/// One edit of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Want {
    /// Hide the function from the next boot on.
    Hide(PciAddress),
    /// Give it back to dom0 from the next boot on.
    GiveBack(PciAddress),
}

impl Want {
    fn addr(self) -> PciAddress {
        match self {
            Want::Hide(a) | Want::GiveBack(a) => a,
        }
    }
}

/// The edits of `addrs`, one way.
fn wants_of(addrs: &[PciAddress], hide: bool) -> Vec<Want> {
    let want = if hide { Want::Hide } else { Want::GiveBack };
    addrs.iter().map(|a| want(*a)).collect()
}

/// The request a preview's token is bound to: the direction and the
/// functions, sorted (a set).
fn request_of(addrs: &[PciAddress], hide: bool) -> String {
    let mut functions: Vec<String> = addrs.iter().map(PciAddress::to_string).collect();
    functions.sort();
    functions.dedup();
    format!(
        "{} {}",
        if hide { "hide" } else { "give back" },
        functions.join(",")
    )
}

/// A caller's answer.
pub(super) type Answer = Result<Dom0Access, BootConfigError>;

/// The hide edit of `wants` planned one after the other from `current`.
fn compose(
    current: Option<&[u8]>,
    wants: &[Want],
    tree: &Topology,
) -> Result<HideEdit, HideParseError> {
    let mut value: Option<Vec<u8>> = current.map(<[u8]>::to_vec);
    for want in wants {
        let edit = match want {
            Want::Hide(a) => hide::plan_disable(value.as_deref(), a, tree)?,
            Want::GiveBack(a) => hide::plan_enable(value.as_deref(), a, tree)?,
        };
        match edit {
            HideEdit::Unchanged => {}
            HideEdit::Set(v) => value = Some(v.into_bytes()),
            HideEdit::Delete => value = None,
        }
    }
    Ok(match value {
        v if v.as_deref() == current => HideEdit::Unchanged,
        Some(v) => HideEdit::Set(String::from_utf8_lossy(&v).into_owned()),
        None => HideEdit::Delete,
    })
}

/// `batch` cut, in arrival order, into runs in which no function is both
/// hidden and given back: each caller's answer is then what its own edit
/// made, as if the edits had been written one after the other.
fn conflict_free_runs(batch: Vec<Queued<Want>>) -> Vec<Vec<Queued<Want>>> {
    let mut runs: Vec<Vec<Queued<Want>>> = Vec::new();
    let mut current: Vec<Queued<Want>> = Vec::new();
    for queued in batch {
        let contradicts = current
            .iter()
            .any(|q| q.request.addr() == queued.request.addr() && q.request != queued.request);
        if contradicts {
            runs.push(std::mem::take(&mut current));
        }
        current.push(queued);
    }
    if !current.is_empty() {
        runs.push(current);
    }
    runs
}

/// A batch-wide failure, answered to each of `tickets` (as it is to a
/// batch of one).
fn shared_failure(e: BootConfigError, tickets: impl Iterator<Item = u64>) -> Vec<(u64, Answer)> {
    let tickets: Vec<u64> = tickets.collect();
    if let [only] = tickets[..] {
        return vec![(only, Err(e))];
    }
    let e = Arc::new(e);
    tickets
        .into_iter()
        .map(|t| (t, Err(BootConfigError::Shared(e.clone()))))
        .collect()
}
