//! The dry run of an edit ([`super::txn::preview`]): what it would write,
//! as one unified diff, and the token that lets the edit be made only on
//! the files the diff was made from ([`super::txn::edit_if`]).

use sha2::{Digest, Sha256};

use super::early::Rebuild;
use super::txn::Snapshot;
use crate::domain::hide::HideView;

/// Lines of context around each change of the diff (diff's and git's
/// default).
const CONTEXT: usize = 3;

/// One file an edit changes: host-relative path, bytes before and after
/// (`None`: absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChange {
    /// Host-relative path.
    pub rel: String,
    /// The bytes now.
    pub before: Option<Vec<u8>>,
    /// The bytes the edit leaves.
    pub after: Option<Vec<u8>>,
}

/// What an edit would do, planned from what boots now.
#[derive(Debug, Clone)]
pub struct Preview {
    /// The hide value the next boot would get (`None`: none).
    pub value: Option<String>,
    /// The hide list the kernel would then read.
    pub after: HideView,
    /// Every file the edit changes, in the order it writes them (the
    /// initramfs images left out: they are rebuilt, see `rebuild`).
    pub files: Vec<FileChange>,
    /// What cannot be told before the edit's programs run, and why.
    pub unforeseen: Vec<String>,
    /// The initramfs rebuild the edit runs after the files.
    pub rebuild: Option<Rebuild>,
    /// The compare-and-swap token: a digest of the request and of every
    /// file the plan read.
    pub token: String,
}

impl Preview {
    /// Every change as one unified diff (`a/` and `b/` before the
    /// host-relative paths, `/dev/null` for a file created or removed, as
    /// `git diff` writes it; `patch -p1` applies it under the root). A
    /// file that is not text (not UTF-8, or with control characters other
    /// than tab and line ends) is named as `Binary files ... differ` and
    /// listed by [`Preview::binary`].
    pub fn diff(&self) -> String {
        self.files.iter().map(file_diff).collect()
    }

    /// The files whose change the diff cannot show as text.
    pub fn binary(&self) -> Vec<&str> {
        self.files
            .iter()
            .filter(|f| text_of(&f.before).is_none() || text_of(&f.after).is_none())
            .map(|f| f.rel.as_str())
            .collect()
    }

    /// Whether the diff is exactly what the edit writes: every file shown
    /// as text and nothing left unforeseen.
    pub fn exact(&self) -> bool {
        self.unforeseen.is_empty() && self.binary().is_empty()
    }
}

/// The bytes of a file as diff text: `""` for an absent file, `None` when
/// they are not text.
fn text_of(bytes: &Option<Vec<u8>>) -> Option<&str> {
    let Some(bytes) = bytes else {
        return Some("");
    };
    let text = std::str::from_utf8(bytes).ok()?;
    text.chars()
        .all(|c| !c.is_control() || matches!(c, '\t' | '\n' | '\r'))
        .then_some(text)
}

/// One file's part of the diff.
fn file_diff(file: &FileChange) -> String {
    let name = |side: &str, bytes: &Option<Vec<u8>>| match bytes {
        Some(_) => format!("{side}/{}", file.rel),
        None => "/dev/null".to_owned(),
    };
    let (a, b) = (name("a", &file.before), name("b", &file.after));
    let (Some(old), Some(new)) = (text_of(&file.before), text_of(&file.after)) else {
        return format!("Binary files {a} and {b} differ\n");
    };
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(CONTEXT)
        .header(&a, &b)
        .to_string()
}

/// The token of a preview: SHA-256 of the request, of what the snapshot
/// read (the dom0 line, the program's witness, every file) and of every
/// file the edit would write as it is now. Any change to any of them, or
/// another request, gives another token.
pub fn token(request: &str, snap: &Snapshot, files: &[FileChange]) -> String {
    let mut hash = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hash.update((bytes.len() as u64).to_be_bytes());
        hash.update(bytes);
    };
    field(b"pcipass preview 1");
    field(request.as_bytes());
    field(&snap.line);
    field(snap.token.as_deref().unwrap_or_default().as_bytes());
    field(&[u8::from(snap.durable)]);
    let mut file = |rel: &str, bytes: &Option<Vec<u8>>| {
        field(rel.as_bytes());
        match bytes {
            Some(bytes) => {
                field(b"+");
                field(bytes);
            }
            None => field(b"-"),
        }
    };
    for (rel, bytes) in &snap.files {
        file(rel, bytes);
    }
    for change in files {
        file(&change.rel, &change.before);
    }
    let digest = hash.finalize();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(rel: &str, before: Option<&str>, after: Option<&str>) -> FileChange {
        FileChange {
            rel: rel.into(),
            before: before.map(|t| t.as_bytes().to_vec()),
            after: after.map(|t| t.as_bytes().to_vec()),
        }
    }

    fn preview(files: Vec<FileChange>) -> Preview {
        Preview {
            value: None,
            after: HideView::from_value(None),
            files,
            unforeseen: Vec::new(),
            rebuild: None,
            token: String::new(),
        }
    }

    #[test]
    fn the_diff_names_each_file_as_git_does_and_shows_only_the_changed_lines_with_context() {
        let old = "a\nb\nc\nd\ne\nf\ng\nh\ni\n";
        let new = "a\nb\nc\nd\nE\nf\ng\nh\ni\n";
        let p = preview(vec![
            change("boot/grub/grub.cfg", Some(old), Some(new)),
            change("etc/modprobe.d/x.conf", None, Some("softdep x\n")),
            change("etc/default/grub.d/zz.cfg", Some("V=1"), None),
        ]);
        assert_eq!(
            p.diff(),
            "--- a/boot/grub/grub.cfg\n+++ b/boot/grub/grub.cfg\n@@ -2,7 +2,7 @@\n b\n c\n d\n-e\n+E\n f\n g\n h\n\
             --- /dev/null\n+++ b/etc/modprobe.d/x.conf\n@@ -0,0 +1 @@\n+softdep x\n\
             --- a/etc/default/grub.d/zz.cfg\n+++ /dev/null\n@@ -1 +0,0 @@\n-V=1\n\\ No newline at end of file\n"
        );
        assert!(p.exact());
    }

    #[test]
    fn a_file_that_is_not_text_is_named_not_shown_and_the_diff_is_not_exact() {
        for (before, after) in [
            (Some(b"ok\n".to_vec()), Some(b"\xff\xfe\n".to_vec())),
            (Some(b"bell \x07\n".to_vec()), Some(b"ok\n".to_vec())),
        ] {
            let p = preview(vec![FileChange {
                rel: "boot/grub/grub.cfg".into(),
                before,
                after,
            }]);
            assert_eq!(
                p.diff(),
                "Binary files a/boot/grub/grub.cfg and b/boot/grub/grub.cfg differ\n"
            );
            assert_eq!(p.binary(), ["boot/grub/grub.cfg"]);
            assert!(!p.exact());
        }
        let mut p = preview(Vec::new());
        p.unforeseen.push("why".into());
        assert!(!p.exact());
    }

    #[test]
    fn the_token_changes_with_the_request_and_with_every_byte_read() {
        let snap = Snapshot::of(
            b"ro xen-pciback.hide=(01:00.0)".to_vec(),
            vec![("boot/grub/grub.cfg".into(), Some(b"cfg".to_vec()))],
        );
        let files = vec![change("etc/modprobe.d/x.conf", None, Some("new"))];
        let base = token("hide 0000:01:00.0", &snap, &files);
        assert_eq!(base.len(), 64);
        assert_eq!(base, token("hide 0000:01:00.0", &snap, &files));
        assert_ne!(base, token("hide 0000:01:00.1", &snap, &files));
        let mut other = snap.clone();
        other.files[0].1 = Some(b"cfg ".to_vec());
        assert_ne!(base, token("hide 0000:01:00.0", &other, &files));
        let mut other = snap.clone();
        other.files[0].1 = None;
        assert_ne!(base, token("hide 0000:01:00.0", &other, &files));
        let mut other = snap.clone();
        other.durable = false;
        assert_ne!(base, token("hide 0000:01:00.0", &other, &files));
        let existing = vec![change("etc/modprobe.d/x.conf", Some(""), Some("new"))];
        assert_ne!(base, token("hide 0000:01:00.0", &snap, &existing));
        // What the edit would write is not part of the token: the same
        // files give the same edit.
        let later = vec![change("etc/modprobe.d/x.conf", None, Some("newer"))];
        assert_eq!(base, token("hide 0000:01:00.0", &snap, &later));
    }
}
