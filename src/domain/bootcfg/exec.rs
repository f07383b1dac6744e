//! The exec backend: a `xen-cmdline` program run for every read and edit,
//! as xapi does on XenServer, with a compare-and-set where the program has
//! one.

use std::path::PathBuf;
use std::time::Duration;

use super::txn::{Changes, Snapshot};
use super::{
    BootConfig, BootConfigError, FlowBase, Held, console_check, expect_value, grub_fingerprint,
    one_line,
};
use crate::domain::display::{self, Dom0Console, XEN_CONSOLE_KEY};
use crate::domain::hide::{HIDE_KEY, HideView};
use crate::host::boot::{self, BootFingerprint};
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

/// A `xen-cmdline` program, run for every read and edit.
#[derive(Debug)]
pub struct ExecBootConfig {
    program: PathBuf,
    base: FlowBase,
}

/// Longest a xen-cmdline run may take.
const EXEC_LIMIT: Duration = Duration::from_secs(30);

impl ExecBootConfig {
    /// Run `program`; a non-`/` root is passed as `--root DIR` (our own
    /// xen-cmdline understands it; XenServer's runs on `/` only).
    pub fn new(program: PathBuf, host: HostRoot) -> ExecBootConfig {
        ExecBootConfig {
            program,
            base: FlowBase::new(host),
        }
    }

    /// Run the program; its exit code (`None`: killed) and output.
    fn run_status(&self, args: &[&str]) -> Result<(Option<i32>, String, String), BootConfigError> {
        let mut argv: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        if self.base.host.root() != std::path::Path::new("/") {
            argv.push("--root".into());
            argv.push(self.base.host.root().display().to_string());
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

    fn base(&self) -> &FlowBase {
        &self.base
    }

    /// The program serialises its own edits (its compare-and-set) and
    /// writes them atomically: no lock, nothing to put back.
    fn locked_file(&self) -> Result<Option<String>, BootConfigError> {
        Ok(None)
    }

    /// What the program prints now is the compare-and-set's witness.
    fn snapshot(&self) -> Result<Snapshot, BootConfigError> {
        let printed = self.run(&["--get-dom0", HIDE_KEY])?;
        let line = self.hide_args()?;
        Ok(Snapshot {
            token: Some(printed.trim_end_matches('\n').to_owned()),
            ..Snapshot::of(line, Vec::new())
        })
    }

    /// One run of the program: `--set-dom0-if-unchanged` against the
    /// snapshot's witness ([`BootConfigError::Changed`] when it lost).
    /// A program without the compare-and-set (XenServer's own xen-cmdline
    /// ignores options it does not know, and takes no lock) gets a plain
    /// edit, which a concurrent hand edit can undo.
    fn plan<'a>(
        &'a self,
        snap: &Snapshot,
        value: Option<&str>,
    ) -> Result<Changes<'a>, BootConfigError> {
        let expected = snap.token.clone().unwrap_or_default();
        let setting = value.map(|v| format!("{HIDE_KEY}={v}"));
        let want = value.map(str::to_owned);
        let step = move |_: Held<'_>| {
            let mut cas = vec!["--set-dom0-if-unchanged", HIDE_KEY, expected.as_str()];
            cas.extend(setting.as_deref());
            match self.run_status(&cas)? {
                (Some(0), _, _) => {}
                (Some(EXEC_CHANGED), _, _) => return Err(BootConfigError::Changed),
                (code, _, stderr) => return Err(exec_failure(code, &stderr)),
            }
            if self.boot_view()?.value_text() == want {
                return Ok(());
            }
            tracing::warn!(
                program = %self.program.display(),
                "xen-cmdline did not apply --set-dom0-if-unchanged; editing without compare-and-set"
            );
            match &setting {
                Some(arg) => self.run(&["--set-dom0", arg])?,
                None => self.run(&["--delete-dom0", HIDE_KEY])?,
            };
            Ok(())
        };
        // grub.cfg is recorded and put back when the program's edit does
        // not read back as planned (it failed half-way, or left another
        // occurrence of the hide in charge).
        let generated = boot::grub_fingerprint(&self.base.host)
            .map(|(rel, _)| vec![rel.to_owned()])
            .unwrap_or_default();
        Ok(Changes {
            steps: vec![Box::new(step)],
            generated,
            unforeseen: vec![format!(
                "`{} --set-dom0` edits the boot configuration itself: which files it changes \
                 is not known before it runs",
                self.program.display()
            )],
            ..Changes::default()
        })
    }

    fn verify(&self, value: Option<&str>) -> Result<HideView, BootConfigError> {
        expect_value(self.boot_view()?, value, "xen-cmdline")
    }

    /// The console arguments `xen-cmdline --get-dom0 console` prints (the
    /// rest of dom0's line does not matter to the display).
    fn dom0_args(&self) -> Result<Vec<u8>, BootConfigError> {
        let out = self.run(&["--get-dom0", XEN_CONSOLE_KEY])?;
        Ok(out
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .into_bytes())
    }

    /// The last line `xen-cmdline --get-xen console` prints.
    fn xen_console(&self) -> Result<Option<String>, BootConfigError> {
        let out = self.run(&["--get-xen", XEN_CONSOLE_KEY])?;
        Ok(out
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .map(|l| l.split_once('=').map_or("", |(_, v)| v).to_owned()))
    }

    /// One run of `xen-cmdline --set-xen console=VALUE`, as xapi's
    /// host-display runs it; grub.cfg put back when it does not read back.
    ///
    /// Then dom0's console as host-display edits it: `--delete-dom0
    /// console=tty0`, or `--set-dom0 "console=hvc0 console=tty0"`.
    fn plan_console<'a>(
        &'a self,
        _snap: &Snapshot,
        value: &str,
        dom0: Dom0Console,
    ) -> Result<Changes<'a>, BootConfigError> {
        let setting = format!("{XEN_CONSOLE_KEY}={value}");
        let step = move |_: Held<'_>| {
            self.run(&["--set-xen", &setting])?;
            match dom0 {
                Dom0Console::Keep => {}
                Dom0Console::Show => {
                    self.run(&["--set-dom0", display::DOM0_SHOW_LINE])?;
                }
                Dom0Console::Hide => {
                    self.run(&["--delete-dom0", display::DOM0_VGA])?;
                }
            }
            Ok(())
        };
        let generated = boot::grub_fingerprint(&self.base.host)
            .map(|(rel, _)| vec![rel.to_owned()])
            .unwrap_or_default();
        Ok(Changes {
            steps: vec![Box::new(step), console_check(self, value, dom0)],
            generated,
            ..Changes::default()
        })
    }

    fn fingerprint(&self) -> Option<BootFingerprint> {
        grub_fingerprint(&self.base.host)
    }
}
