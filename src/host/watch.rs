//! [`ChangeWatch`]: says, for the price of one non-blocking `read` and no
//! lock, whether any of a few host files may have changed since a moment
//! the caller marked. It watches (inotify) the directories that hold the
//! files, their symlink targets' directories and, for a file that does not
//! exist, its nearest existing ancestor; any event there counts as a
//! change. Callers keep a cache checked by `stat` and use the watch to
//! skip the `stat`s while nothing moves.
//!
//! What inotify cannot see (a file system mounted over a watched
//! directory) is bounded by a trust period, after which the watch reports
//! a change and is armed afresh.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use inotify::{Inotify, WatchMask};

use crate::host::HostRoot;

/// Events that can mean a watched file's content or identity changed.
fn mask() -> WatchMask {
    WatchMask::MODIFY
        | WatchMask::ATTRIB
        | WatchMask::CLOSE_WRITE
        | WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
}

/// The armed inotify instance.
#[derive(Debug)]
struct Armed {
    /// Keeps the watches alive.
    _inotify: Inotify,
    /// The same descriptor, read through `&File` by many threads at once.
    events: File,
    at: Instant,
}

/// A watch over some host-relative files.
///
/// Protocol: [`ChangeWatch::unchanged`] says true if nothing can have
/// changed; on false the caller takes [`ChangeWatch::epoch_before_reading`],
/// reads the files, then calls [`ChangeWatch::confirm`] with that epoch.
#[derive(Debug)]
pub struct ChangeWatch {
    host: HostRoot,
    files: Vec<String>,
    trust: Duration,
    armed: RwLock<Option<Armed>>,
    /// Moves on every change seen (and on every re-arm).
    epoch: AtomicU64,
    /// Threads between the start of a read of the event queue and the
    /// moment their findings are counted in `epoch`.
    reading: AtomicUsize,
    /// The epoch in which the caller last confirmed its cache (`u64::MAX`:
    /// never).
    confirmed: AtomicU64,
}

impl ChangeWatch {
    /// A watch over `files` (host-relative) whose "unchanged" answers hold
    /// for at most `trust` after arming. It starts unarmed.
    pub fn new(host: HostRoot, files: &[String], trust: Duration) -> ChangeWatch {
        ChangeWatch {
            host,
            files: files.to_vec(),
            trust,
            armed: RwLock::new(None),
            epoch: AtomicU64::new(0),
            reading: AtomicUsize::new(0),
            confirmed: AtomicU64::new(u64::MAX),
        }
    }

    /// True when the cache the caller confirmed last is still good: no
    /// event is queued, none was taken by another thread that has not yet
    /// counted it, the trust period runs, and the confirmation was made in
    /// the current epoch. On false the caller must read the files.
    pub fn unchanged(&self) -> bool {
        let guard = self.armed.read().unwrap_or_else(|p| p.into_inner());
        let Some(armed) = guard.as_ref() else {
            drop(guard);
            self.rearm();
            return false;
        };
        if armed.at.elapsed() >= self.trust {
            drop(guard);
            self.rearm();
            return false;
        }
        self.reading.fetch_add(1, SeqCst);
        let mut buffer = [0u8; 1024];
        let quiet = matches!((&armed.events).read(&mut buffer), Err(e) if e.kind() == ErrorKind::WouldBlock);
        if !quiet {
            self.epoch.fetch_add(1, SeqCst);
        }
        // Alone means: no other thread took events it has not counted yet
        // (one that finished before us counted them before leaving, so the
        // load below sees its count).
        let alone = self.reading.fetch_sub(1, SeqCst) == 1;
        drop(guard);
        if !quiet {
            self.rearm();
            return false;
        }
        alone && self.confirmed.load(SeqCst) == self.epoch.load(SeqCst)
    }

    /// The epoch to confirm after reading the files: take it after
    /// [`ChangeWatch::unchanged`] said false and before reading.
    pub fn epoch_before_reading(&self) -> u64 {
        self.epoch.load(SeqCst)
    }

    /// Record that the files were read after `epoch` was taken; answers
    /// are "unchanged" until the next change.
    pub fn confirm(&self, epoch: u64) {
        if self.epoch.load(SeqCst) == epoch {
            self.confirmed.store(epoch, SeqCst);
        }
    }

    /// Replace the inotify instance with a fresh one over the directories
    /// as they are now (a watched directory may have been replaced).
    fn rearm(&self) {
        let mut armed = self.armed.write().unwrap_or_else(|p| p.into_inner());
        self.epoch.fetch_add(1, SeqCst);
        *armed = self.fresh();
    }

    fn fresh(&self) -> Option<Armed> {
        let inotify = Inotify::init()
            .map_err(|e| tracing::debug!("inotify unavailable, host files checked by stat: {e}"))
            .ok()?;
        for dir in self.directories() {
            if let Err(e) = inotify.watches().add(&dir, mask()) {
                tracing::debug!("cannot watch {}: {e}", dir.display());
                return None;
            }
        }
        let events = File::from(
            std::os::fd::AsFd::as_fd(&inotify)
                .try_clone_to_owned()
                .ok()?,
        );
        Some(Armed {
            _inotify: inotify,
            events,
            at: Instant::now(),
        })
    }

    /// The directories whose events can mean a change of one of the files.
    fn directories(&self) -> BTreeSet<PathBuf> {
        let root = self.host.root();
        let mut dirs = BTreeSet::new();
        for rel in &self.files {
            let Ok(path) = self.host.resolve_nofollow(rel) else {
                continue;
            };
            if let Ok(Ok(target)) = self.host.resolve(rel).map(std::fs::canonicalize)
                && let Some(parent) = target.parent()
            {
                dirs.insert(parent.to_path_buf());
            }
            if let Some(existing) = path.parent().and_then(|p| nearest_existing(p, root)) {
                dirs.insert(existing);
            }
        }
        dirs
    }
}

/// `dir` or its nearest ancestor that is a directory, not above `root`.
fn nearest_existing(dir: &Path, root: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .take_while(|d| d.starts_with(root))
        .find(|d| d.is_dir())
        .map(Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch(dir: &Path, trust: Duration) -> ChangeWatch {
        ChangeWatch::new(
            HostRoot::new(dir),
            &[
                "boot/grub/grub.cfg".to_owned(),
                "boot/efi/EFI/xenserver/grub.cfg".to_owned(),
            ],
            trust,
        )
    }

    /// What a cache user does: ask, and on "changed" read and confirm.
    fn ask(w: &ChangeWatch) -> bool {
        if w.unchanged() {
            return true;
        }
        let epoch = w.epoch_before_reading();
        w.confirm(epoch);
        false
    }

    #[test]
    fn reports_edits_replacements_and_new_candidates() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("boot/grub")).unwrap();
        std::fs::create_dir_all(dir.path().join("boot/efi")).unwrap();
        let cfg = dir.path().join("boot/grub/grub.cfg");
        std::fs::write(&cfg, "a").unwrap();
        let w = watch(dir.path(), Duration::from_secs(3600));
        assert!(!ask(&w), "the first answer arms the watch");
        assert!(ask(&w));
        assert!(ask(&w));

        std::fs::write(&cfg, "b").unwrap();
        assert!(!ask(&w), "an edit in place");
        assert!(ask(&w));

        let tmp = dir.path().join("boot/grub/.grub.cfg.new");
        std::fs::write(&tmp, "c").unwrap();
        std::fs::rename(&tmp, &cfg).unwrap();
        assert!(!ask(&w), "an atomic replacement");
        assert!(ask(&w));

        // The EFI candidate's directory does not exist: its creation under
        // the nearest existing ancestor counts.
        std::fs::create_dir_all(dir.path().join("boot/efi/EFI/xenserver")).unwrap();
        assert!(!ask(&w), "a directory on the way to a candidate");
        std::fs::write(dir.path().join("boot/efi/EFI/xenserver/grub.cfg"), "d").unwrap();
        assert!(!ask(&w), "a new candidate file, now watched directly");
        assert!(ask(&w));
    }

    #[test]
    fn unconfirmed_reads_never_count() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("boot/grub")).unwrap();
        let w = watch(dir.path(), Duration::from_secs(3600));
        assert!(!w.unchanged());
        assert!(!w.unchanged(), "nothing was confirmed yet");
        let epoch = w.epoch_before_reading();
        std::fs::write(dir.path().join("boot/grub/grub.cfg"), "a").unwrap();
        assert!(!w.unchanged(), "the change is seen");
        w.confirm(epoch);
        assert!(
            !w.unchanged(),
            "a confirmation from before the change does not count"
        );
    }

    #[test]
    fn a_symlinked_file_is_watched_where_it_lives() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("boot/grub")).unwrap();
        std::fs::create_dir_all(dir.path().join("elsewhere")).unwrap();
        let target = dir.path().join("elsewhere/grub.cfg");
        std::fs::write(&target, "a").unwrap();
        // Absolute targets start at the root, as in a chroot.
        std::os::unix::fs::symlink("/elsewhere/grub.cfg", dir.path().join("boot/grub/grub.cfg"))
            .unwrap();
        let w = watch(dir.path(), Duration::from_secs(3600));
        assert!(!ask(&w));
        assert!(ask(&w));
        std::fs::write(&target, "b").unwrap();
        assert!(!ask(&w));
    }

    #[test]
    fn trust_runs_out() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("boot/grub")).unwrap();
        let w = watch(dir.path(), Duration::ZERO);
        assert!(!ask(&w));
        assert!(!ask(&w), "with no trust every answer is 'changed'");
    }
}
