//! The exec backend: a `xen-cmdline` program run for every read and edit,
//! as xapi does on XenServer, with a compare-and-set where the program has
//! one.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use super::{
    BootConfig, BootConfigError, HideCheck, HidePlan, grub_fingerprint, one_line, plan_edit,
};
use crate::domain::hide::{HIDE_KEY, HideEdit, HideView};
use crate::host::boot::GrubFingerprint;
use crate::host::{HostRoot, exec};

/// The error of a run that did not exit 0.
fn exec_failure(code: Option<i32>, stderr: &str) -> BootConfigError {
    BootConfigError::Exec {
        status: code
            .map(|c| format!("exit code {c}"))
            .unwrap_or_else(|| "killed".into()),
        stderr: one_line(stderr),
    }
}

/// `xen-cmdline --set-dom0-if-unchanged` found another value.
const EXEC_CHANGED: i32 = 3;

/// How often a compare-and-set is retried after a concurrent change.
const EXEC_ATTEMPTS: usize = 3;

/// A `xen-cmdline` program, run for every read and edit.
#[derive(Debug)]
pub struct ExecBootConfig {
    program: PathBuf,
    host: HostRoot,
    writer: Mutex<()>,
}

/// Longest a xen-cmdline run may take.
const EXEC_LIMIT: Duration = Duration::from_secs(30);

impl ExecBootConfig {
    /// Run `program`; a non-`/` root is passed as `--root DIR` (our own
    /// xen-cmdline understands it; XenServer's runs on `/` only).
    pub fn new(program: PathBuf, host: HostRoot) -> ExecBootConfig {
        ExecBootConfig {
            program,
            host,
            writer: Mutex::new(()),
        }
    }

    /// Run the program; its exit code (`None`: killed) and output.
    fn run_status(&self, args: &[&str]) -> Result<(Option<i32>, String, String), BootConfigError> {
        let mut argv: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        if self.host.root() != std::path::Path::new("/") {
            argv.push("--root".into());
            argv.push(self.host.root().display().to_string());
        }
        let program = self.program.display().to_string();
        let out = exec::run(&program, &argv, EXEC_LIMIT).map_err(|e| BootConfigError::Exec {
            status: format!("cannot run: {}", e.kind()),
            stderr: String::new(),
        })?;
        Ok((out.code, out.stdout, out.stderr))
    }

    /// Run the program; anything but exit 0 is an error.
    fn run(&self, args: &[&str]) -> Result<String, BootConfigError> {
        match self.run_status(args)? {
            (Some(0), stdout, _) => Ok(stdout),
            (code, _, stderr) => Err(exec_failure(code, &stderr)),
        }
    }

    /// The dom0 arguments `xen-cmdline` prints for the hide key, in line
    /// order, joined back into a command line for the kernel model (the
    /// `_` spelling too: the kernel reads both).
    fn hide_args(&self) -> Result<Vec<u8>, BootConfigError> {
        let underscore = HIDE_KEY.replace('-', "_");
        let out = self.run(&["--get-dom0", HIDE_KEY, &underscore])?;
        let args: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
        Ok(args.join(" ").into_bytes())
    }
}

impl BootConfig for ExecBootConfig {
    fn boot_view(&self) -> Result<HideView, BootConfigError> {
        Ok(HideView::from_cmdline(&self.hide_args()?))
    }

    fn update_hide(
        &self,
        plan: &mut HidePlan<'_>,
        check: &HideCheck<'_>,
    ) -> Result<HideView, BootConfigError> {
        let _in_process = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        for _ in 0..EXEC_ATTEMPTS {
            // What the program prints now is the compare-and-set's witness.
            let printed = self.run(&["--get-dom0", HIDE_KEY])?;
            let expected = printed.trim_end_matches('\n');
            let before = self.boot_view()?;
            let edit = plan_edit(&before, plan)?;
            let (setting, want) = match &edit {
                HideEdit::Unchanged => return Ok(before),
                HideEdit::Set(value) => {
                    (Some(format!("{HIDE_KEY}={value}")), Some(value.as_bytes()))
                }
                HideEdit::Delete => (None, None),
            };
            let wanted = HideView::from_value(want);
            check(&before, &wanted)?;
            let mut cas = vec!["--set-dom0-if-unchanged", HIDE_KEY, expected];
            cas.extend(setting.as_deref());
            match self.run_status(&cas)? {
                (Some(0), _, _) => {}
                (Some(EXEC_CHANGED), _, _) => {
                    tracing::info!(
                        "the boot configuration changed between read and write; planning again"
                    );
                    continue;
                }
                (code, _, stderr) => return Err(exec_failure(code, &stderr)),
            }
            if self.boot_view()?.value.as_deref() == want {
                return Ok(wanted);
            }
            // A program without the compare-and-set (XenServer's own
            // xen-cmdline ignores options it does not know, and takes no
            // lock): a plain edit, which a concurrent hand edit can undo.
            tracing::warn!(
                program = %self.program.display(),
                "xen-cmdline did not apply --set-dom0-if-unchanged; editing without compare-and-set"
            );
            match &setting {
                Some(arg) => self.run(&["--set-dom0", arg])?,
                None => self.run(&["--delete-dom0", HIDE_KEY])?,
            };
            let after = self.boot_view()?;
            if after.value.as_deref() != want {
                return Err(BootConfigError::Verify(format!(
                    "xen-cmdline left xen-pciback.hide={:?}",
                    after.value_text()
                )));
            }
            return Ok(after);
        }
        Err(BootConfigError::Verify(
            "the boot configuration kept changing while pcipass edited it".into(),
        ))
    }

    fn fingerprint(&self) -> Option<GrubFingerprint> {
        grub_fingerprint(&self.host)
    }
}
