//! `xen-cmdline`: read and edit the Xen and dom0 arguments of the boot
//! configuration, a drop-in for XenServer's tool of the same name, with
//! `--root DIR` for mock hosts. Edits take the lock pcipassd takes.

use std::io::Write;
use std::process::ExitCode;

use pcipass::domain::bootcfg::{
    BootConfig, BootConfigError, EarlyPlan, FlowOptions, InitramfsUpdate, edit_grub,
    grub_boot_view, load_grub, one_line, open, plan_pciback_early_for, txn,
};
use pcipass::domain::bootflow::{self, BootFlow, FlowChoice, FlowError};
use pcipass::domain::grub::{Edit, GrubConfig, Matching, Target};
use pcipass::domain::hide::{HIDE_KEY, HideEdit, HideView};
use pcipass::host::HostRoot;

const USAGE: &str = "usage: xen-cmdline [--root DIR] [--boot-flow FLOW] OPERATION...
Read or edit the kernel arguments of the boot configuration (grub.cfg), as
XCP-ng's xen-cmdline does: reads use the entry GRUB boots next; edits go to
the entries XCP-ng's tool edits (the product-brand entry and its (Serial)
twin) and to the entry GRUB boots next.

Operations, applied in order:
  --get-xen KEY...        print every Xen argument that is KEY or KEY=...,
                          in line order, one per line (an empty line if none)
  --set-xen KEY[=VALUE]...   set Xen arguments (every occurrence replaced)
  --delete-xen KEY...     remove every occurrence of Xen arguments
  --get-dom0 KEY...       the same for dom0's arguments
  --set-dom0 KEY[=VALUE]...
  --delete-dom0 KEY...
  --set-dom0-if-unchanged KEY EXPECTED [KEY=VALUE]
                          compare-and-set: only when `--get-dom0 KEY` would
                          print EXPECTED (its lines joined by newlines, \"\"
                          for none), set KEY=VALUE (or delete KEY when no
                          third argument); else change nothing, print what
                          it would print to stderr and exit 3
Options:
  --root DIR              the host root (default /), e.g. a mock host
  --boot-flow FLOW        auto (default: decide from the root, as pcipassd
                          does), xcp-ng (grub.cfg edited in place),
                          grub-mkconfig (reads the generated grub.cfg; edits
                          of xen-pciback.hide go to pcipass's drop-in
                          /etc/default/grub.d/zz-pcipass.cfg, then grub.cfg
                          is regenerated) or xen-efi (the default section of
                          Xen's xen.cfg). On the last two only the dom0
                          argument xen-pciback.hide can be edited; reads
                          in the grub-mkconfig flow are of the generated
                          grub.cfg (what boots), any key.
  --grub-mkconfig-command CMD
                          what regenerates grub.cfg in the grub-mkconfig flow
                          (default on /: update-grub, else grub-mkconfig -o)
  --initramfs-command CMD what rebuilds the initramfs when an edit of
                          xen-pciback.hide needs xen-pciback loaded early
                          (a module: listed for the initramfs, softdeps in
                          /etc/modprobe.d/pcipass.conf), as pcipassd does
                          (default on /: update-initramfs -u -k all or
                          dracut -f --regenerate-all)
  -h, --help              this help
  --version               print the version and exit

xen-pciback.hide on the dom0 line is matched as the kernel matches it:
`-` and `_` alike (xen_pciback.hide too), and only before a bare `--`.
--set-dom0 xen-pciback.hide=V removes every other copy (either spelling)
and leaves V the one the kernel takes; --delete-dom0 removes both
spellings; --set-dom0 xen-pciback.hide without `=` deletes the list on
every boot flow (XCP-ng's tool writes the bare key, which the kernel
refuses, so nothing is hidden either way).

An argument GRUB quotes whole (\"xen-pciback.hide=(a) (b)\") is matched by
its value, as GRUB and the kernel read it (they hide (a) and (b));
XCP-ng's tool does not match it, so its --get prints nothing and its
--set adds a second copy. --get-* prints such an argument as written.

Differences from XCP-ng's tool: a default given by title, tab-separated
arguments and several keys in one --set work; a new argument goes before a
bare `--` rather than after it; a value GRUB or the kernel would misread
and a dom0 line longer than Xen passes (1023 bytes) are refused.";

/// Exit code when a compare-and-set found another value.
const CHANGED: u8 = 3;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Get,
    Set,
    Delete,
    CompareAndSet,
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("xen-cmdline: {message}");
    ExitCode::from(1)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut root = "/".to_owned();
    let mut flow = FlowChoice::Auto;
    let mut mkconfig: Option<String> = None;
    let mut initramfs: Option<String> = None;
    let mut ops: Vec<(Op, Target, Vec<String>)> = Vec::new();
    let mut iter = args.into_iter().peekable();
    while let Some(arg) = iter.next() {
        let (op, target) = match arg.as_str() {
            // A closed stdout (`| head`) ends the output, not the program.
            "-h" | "--help" => {
                let _ = writeln!(std::io::stdout(), "{USAGE}");
                return ExitCode::SUCCESS;
            }
            "--version" => {
                let _ = writeln!(
                    std::io::stdout(),
                    "xen-cmdline {}",
                    env!("CARGO_PKG_VERSION")
                );
                return ExitCode::SUCCESS;
            }
            "--root" => {
                let Some(dir) = iter.next() else {
                    return fail("--root needs a directory");
                };
                root = dir;
                continue;
            }
            "--boot-flow" => {
                match iter.next().map(|f| f.parse::<FlowChoice>()) {
                    Some(Ok(choice)) => flow = choice,
                    Some(Err(e)) => return fail(e),
                    None => {
                        return fail(format!("--boot-flow needs auto, {}", BootFlow::names()));
                    }
                }
                continue;
            }
            "--grub-mkconfig-command" => {
                let Some(command) = iter.next() else {
                    return fail("--grub-mkconfig-command needs a command");
                };
                mkconfig = Some(command);
                continue;
            }
            "--initramfs-command" => {
                let Some(command) = iter.next() else {
                    return fail("--initramfs-command needs a command");
                };
                initramfs = Some(command);
                continue;
            }
            "--get-xen" => (Op::Get, Target::Xen),
            "--set-xen" => (Op::Set, Target::Xen),
            "--delete-xen" => (Op::Delete, Target::Xen),
            "--get-dom0" => (Op::Get, Target::Dom0),
            "--set-dom0" => (Op::Set, Target::Dom0),
            "--delete-dom0" => (Op::Delete, Target::Dom0),
            "--set-dom0-if-unchanged" => {
                let (Some(key), Some(expected)) = (iter.next(), iter.next()) else {
                    return fail("--set-dom0-if-unchanged needs KEY EXPECTED [KEY=VALUE]");
                };
                let mut words = vec![key, expected];
                if let Some(new) = iter.next_if(|w| !w.starts_with("--")) {
                    words.push(new);
                }
                ops.push((Op::CompareAndSet, Target::Dom0, words));
                continue;
            }
            other if other.starts_with('-') => {
                eprintln!("{USAGE}");
                return fail(format!("unknown option {other}"));
            }
            other => match ops.last_mut() {
                Some((op, _, keys)) if *op != Op::CompareAndSet => {
                    keys.push(other.to_owned());
                    continue;
                }
                _ => {
                    eprintln!("{USAGE}");
                    return fail(format!("{other}: which operation?"));
                }
            },
        };
        ops.push((op, target, Vec::new()));
    }
    if ops.is_empty() {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    let host = HostRoot::new(root);
    let (boot, flow_is_mkconfig) = match flow_config(&host, flow, mkconfig.as_deref()) {
        Ok(found) => found,
        Err(e) => return fail(e),
    };
    let early = Early {
        host: &host,
        update: InitramfsUpdate::choose(&host, initramfs.as_deref()),
        boot: boot.as_deref(),
    };
    for (op, target, keys) in ops {
        if keys.is_empty() {
            return fail("an operation needs at least one KEY");
        }
        // The generated grub.cfg is what boots: read it as grub.cfg.
        let reads_grub = op == Op::Get && flow_is_mkconfig;
        if let Some(boot) = boot.as_ref().filter(|_| !reads_grub) {
            match hide_op(boot.as_ref(), &early, op, target, &keys) {
                Ok(true) => continue,
                Ok(false) => return ExitCode::from(CHANGED),
                Err(e) => return fail(one_line(&e)),
            }
        }
        let result = match op {
            Op::Get => get(&host, target, &keys),
            Op::Set | Op::Delete => edit(&early, op, target, &keys),
            Op::CompareAndSet => match compare_and_set(&early, &keys) {
                Ok(true) => Ok(()),
                Ok(false) => return ExitCode::from(CHANGED),
                Err(e) => Err(e),
            },
        };
        if let Err(e) = result {
            return fail(one_line(&e.to_string()));
        }
    }
    ExitCode::SUCCESS
}

/// What `--get-* KEYS` prints: every matching argument's source text, in
/// line order, newline-joined (nothing matching: an empty line).
fn occurrences(
    config: &GrubConfig,
    target: Target,
    keys: &[String],
) -> Result<Vec<u8>, BootConfigError> {
    let mut found: Vec<(usize, Vec<u8>)> = Vec::new();
    for key in keys {
        found.extend(config.occurrences_at(target, key)?);
    }
    found.sort_by_key(|(at, _)| *at);
    found.dedup();
    Ok(found
        .into_iter()
        .map(|(_, text)| text)
        .collect::<Vec<_>>()
        .join(&b'\n'))
}

fn get(host: &HostRoot, target: Target, keys: &[String]) -> Result<(), BootConfigError> {
    let (_, config) = load_grub(host)?;
    let mut out = occurrences(&config, target, keys)?;
    out.push(b'\n');
    // A closed stdout (e.g. `| head`) is not an error of the boot configuration.
    let _ = std::io::stdout().write_all(&out);
    Ok(())
}

/// The edit `--set-*`/`--delete-*` makes of `arg`. On the dom0 line the
/// hide parameter is matched as the kernel matches it (`-` and `_` alike):
/// a set leaves the new value the one occurrence in charge, a delete
/// removes both spellings, and a set without `=` deletes the list (the
/// kernel refuses a bare charp name, so XCP-ng's bare key hides nothing
/// either; every flow does the same).
fn edit_of(op: Op, target: Target, arg: &str) -> Edit<'_> {
    let key = arg.split_once('=').map_or(arg, |(k, _)| k);
    if target == Target::Dom0 && is_hide_key(key) {
        return match (op, arg.split_once('=')) {
            (Op::Set, Some((key, value))) => Edit::Set {
                key,
                value: Some(value),
                matching: Matching::Kernel,
            },
            _ => Edit::Delete {
                key,
                matching: Matching::Kernel,
            },
        };
    }
    match op {
        // host-display's `--set-dom0 "console=hvc0 console=tty0"`: one
        // setting of several words of the same key, where the key was.
        Op::Set if arg.contains(' ') => Edit::SetWords { key, words: arg },
        Op::Set => match arg.split_once('=') {
            Some((key, value)) => Edit::Set {
                key,
                value: Some(value),
                matching: Matching::Exact,
            },
            None => Edit::Set {
                key: arg,
                value: None,
                matching: Matching::Exact,
            },
        },
        _ => Edit::Delete {
            key: arg,
            matching: Matching::Exact,
        },
    }
}

/// Apply the edits one after the other to the text (each reads the
/// result of the one before).
fn apply_all(
    config: &GrubConfig,
    target: Target,
    edits: &[Edit<'_>],
) -> Result<Vec<u8>, BootConfigError> {
    let mut current = config.clone();
    let mut text = None;
    for e in edits {
        let next = current.edited(target, e)?;
        current = current.reparsed(&next)?;
        text = Some(next);
    }
    Ok(text.unwrap_or_default())
}

fn edit(early: &Early<'_>, op: Op, target: Target, keys: &[String]) -> Result<(), BootConfigError> {
    edit_grub(early.host, |config| {
        if target == Target::Dom0 {
            warn_overridden(config, keys);
        }
        let edits: Vec<Edit<'_>> = keys.iter().map(|k| edit_of(op, target, k)).collect();
        let text = apply_all(config, target, &edits)?;
        if target == Target::Dom0 && keys.iter().any(|k| is_hide_key(k)) {
            early.for_grub_edit(config, &text)?;
        }
        Ok((Some(text), ()))
    })
}

/// True when `word` (`KEY` or `KEY=VALUE`) names the hide parameter, in
/// either spelling.
fn is_hide_key(word: &str) -> bool {
    let key = word.split_once('=').map_or(word, |(k, _)| k);
    key == HIDE_KEY || key == HIDE_KEY.replace('-', "_")
}

/// What an edit of `xen-pciback.hide` needs besides the boot
/// configuration: where xen-pciback is a module, the early-load set-up
/// (initramfs list, softdeps, rebuild) for every function the resulting
/// list hides, as pcipassd does; refused where it cannot be done or it
/// cannot be told how xen-pciback loads.
struct Early<'a> {
    host: &'a HostRoot,
    update: InitramfsUpdate,
    /// The flow's boot configuration: it says which initramfs copies the
    /// boot loads (none for GRUB's flows).
    boot: Option<&'a dyn BootConfig>,
}

impl Early<'_> {
    /// The step for a hide list going from `before` to `after`, planned
    /// (the edit's transaction runs it).
    fn plan(
        &self,
        before: &HideView,
        after: &HideView,
    ) -> Result<Option<EarlyPlan>, BootConfigError> {
        if before.value_text() == after.value_text() {
            return Ok(None);
        }
        let copies = || self.boot.map_or(Ok(Vec::new()), |b| b.initramfs_copies());
        plan_pciback_early_for(self.host, &self.update, &copies, before, after)
    }

    /// The step for grub.cfg edited in place from `config` to `text` (the
    /// xcp-ng flow's generic key edits), run before grub.cfg is written.
    fn for_grub_edit(&self, config: &GrubConfig, text: &[u8]) -> Result<(), BootConfigError> {
        let before = grub_boot_view(config)?;
        let after = grub_boot_view(&config.reparsed(text)?)?;
        match self.plan(&before, &after)? {
            Some(early) => txn::apply_early(self.host, &early),
            None => Ok(()),
        }
    }
}

/// Say when the Xen line's dom0 arguments (after ` -- `) hold a key being
/// edited on the dom0 line: Xen appends them, so the kernel takes them.
fn warn_overridden(config: &GrubConfig, keys: &[String]) {
    for key in keys {
        let key = key.split_once('=').map_or(key.as_str(), |(k, _)| k);
        // The hide is edited the kernel's way: a copy there is moved.
        if is_hide_key(key) {
            continue;
        }
        for arg in config.dom0_args_on_xen_line(key).unwrap_or_default() {
            eprintln!(
                "xen-cmdline: warning: the Xen line passes {} to dom0 after ` -- `; it overrides the dom0 line",
                String::from_utf8_lossy(&arg)
            );
        }
    }
}

fn compare_and_set(early: &Early<'_>, words: &[String]) -> Result<bool, BootConfigError> {
    let key = &words[0];
    let expected = words[1].as_bytes();
    edit_grub(early.host, |config| {
        let now = occurrences(config, Target::Dom0, std::slice::from_ref(key))?;
        if now != expected {
            eprintln!("{}", String::from_utf8_lossy(&now));
            return Ok((None, false));
        }
        let edit = match words.get(2) {
            Some(arg) if arg.split_once('=').map_or(arg.as_str(), |(k, _)| k) == key => {
                edit_of(Op::Set, Target::Dom0, arg)
            }
            Some(arg) => {
                return Err(BootConfigError::Verify(format!("{arg} does not set {key}")));
            }
            None => edit_of(Op::Delete, Target::Dom0, key),
        };
        let text = apply_all(config, Target::Dom0, &[edit])?;
        if is_hide_key(key) {
            early.for_grub_edit(config, &text)?;
        }
        Ok((Some(text), true))
    })
}

/// The boot configuration of a flow other than XCP-ng's (`None`: edit
/// grub.cfg in place, as XCP-ng's tool does), and whether the flow is
/// grub-mkconfig's. A root with no boot configuration at all stays on
/// grub.cfg, which then says what is missing.
fn flow_config(
    host: &HostRoot,
    choice: FlowChoice,
    mkconfig: Option<&str>,
) -> Result<(Option<Box<dyn BootConfig>>, bool), String> {
    let found = match bootflow::detect(choice, &bootflow::gather(host)) {
        Ok(found) => found,
        Err(FlowError::Nothing) => return Ok((None, false)),
        Err(e) => return Err(e.to_string()),
    };
    match (found.flow, &found.xen_cfg) {
        (BootFlow::XcpNg, _) => Ok((None, false)),
        (BootFlow::XenEfi, None) => Err("no xen.cfg to edit".into()),
        (flow, _) => {
            let options = FlowOptions {
                grub_mkconfig_command: mkconfig.map(str::to_owned),
                exec_program: None,
            };
            Ok((
                Some(open(host, &found, &options)),
                flow == BootFlow::GrubMkconfig,
            ))
        }
    }
}

/// One operation on a flow that keeps the hide list for pcipass: only the
/// dom0 argument `xen-pciback.hide` (either spelling). `Ok(false)`: a
/// compare-and-set found another value (printed on stderr).
fn hide_op(
    boot: &dyn BootConfig,
    early: &Early<'_>,
    op: Op,
    target: Target,
    words: &[String],
) -> Result<bool, String> {
    let underscore = HIDE_KEY.replace('-', "_");
    let key_of = |w: &str| w.split_once('=').map_or(w, |(k, _)| k).to_owned();
    let keys: Vec<String> = match op {
        Op::CompareAndSet => vec![words[0].clone()],
        _ => words.iter().map(|w| key_of(w)).collect(),
    };
    if target != Target::Dom0 || keys.iter().any(|k| *k != HIDE_KEY && *k != underscore) {
        return Err(format!(
            "on this host's boot flow xen-cmdline edits and reads only the dom0 argument {HIDE_KEY} \
             (pcipass keeps it where the boot loader's configuration is generated from); change \
             other arguments where the flow keeps them (/etc/default/grub and update-grub, or xen.cfg)"
        ));
    }
    let printed =
        |value: Option<&str>| value.map(|v| format!("{HIDE_KEY}={v}")).unwrap_or_default();
    match op {
        Op::Get => {
            let view = boot.boot_view().map_err(|e| e.to_string())?;
            let _ = writeln!(
                std::io::stdout(),
                "{}",
                printed(view.value_text().as_deref())
            );
            Ok(true)
        }
        Op::Set | Op::Delete => {
            let value = match op {
                Op::Set => words
                    .last()
                    .and_then(|w| w.split_once('='))
                    .map(|(_, v)| v.to_owned()),
                _ => None,
            };
            let mut plan = |_: Option<&[u8]>| {
                Ok(match &value {
                    Some(v) => HideEdit::Set(v.clone()),
                    None => HideEdit::Delete,
                })
            };
            txn::edit(boot, &mut plan, &|_, _| Ok(()), &|before, after| {
                early.plan(before, after)
            })
            .map(|_| true)
            .map_err(|e| e.to_string())
        }
        Op::CompareAndSet => {
            let expected = words[1].clone();
            let value = words
                .get(2)
                .and_then(|w| w.split_once('='))
                .map(|(_, v)| v.to_owned());
            let mut found = None;
            let mut plan = |current: Option<&[u8]>| {
                let now = printed(current.map(String::from_utf8_lossy).as_deref());
                if now != expected {
                    found = Some(now);
                    return Ok(HideEdit::Unchanged);
                }
                Ok(match &value {
                    Some(v) => HideEdit::Set(v.clone()),
                    None => HideEdit::Delete,
                })
            };
            txn::edit(boot, &mut plan, &|_, _| Ok(()), &|before, after| {
                early.plan(before, after)
            })
            .map_err(|e: BootConfigError| e.to_string())?;
            match found {
                Some(now) => {
                    eprintln!("{now}");
                    Ok(false)
                }
                None => Ok(true),
            }
        }
    }
}
