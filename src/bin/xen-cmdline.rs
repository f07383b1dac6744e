//! `xen-cmdline`: read and edit the Xen and dom0 arguments of the boot
//! configuration, a drop-in for XenServer's tool of the same name, with
//! `--root DIR` for mock hosts. Edits take the lock pcipassd takes.

use std::process::ExitCode;

use pcipass::domain::bootcfg::{BootConfigError, edit_grub};
use pcipass::domain::grub::{GrubConfig, Target};
use pcipass::host::{HostRoot, boot};

const USAGE: &str = "usage: xen-cmdline [--root DIR] OPERATION...
Read or edit the kernel arguments of the default Xen boot entry (and of the
entries xen-cmdline manages) in grub.cfg.

Operations, applied in order:
  --get-xen KEY...        print KEY=VALUE (or KEY for a flag) of Xen's arguments
  --set-xen KEY[=VALUE]...   set Xen arguments
  --delete-xen KEY...     remove Xen arguments
  --get-dom0 KEY...       print KEY=VALUE (or KEY) of dom0's arguments
  --set-dom0 KEY[=VALUE]...  set dom0 arguments
  --delete-dom0 KEY...    remove dom0 arguments
Options:
  --root DIR              the host root (default /), e.g. a mock host
  -h, --help              this help";

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Get,
    Set,
    Delete,
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("xen-cmdline: {message}");
    ExitCode::from(1)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut root = "/".to_owned();
    let mut ops: Vec<(Op, Target, Vec<String>)> = Vec::new();
    let mut iter = args.into_iter();
    while let Some(arg) = iter.next() {
        let (op, target) = match arg.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            "--root" => {
                let Some(dir) = iter.next() else {
                    return fail("--root needs a directory");
                };
                root = dir;
                continue;
            }
            "--get-xen" => (Op::Get, Target::Xen),
            "--set-xen" => (Op::Set, Target::Xen),
            "--delete-xen" => (Op::Delete, Target::Xen),
            "--get-dom0" => (Op::Get, Target::Dom0),
            "--set-dom0" => (Op::Set, Target::Dom0),
            "--delete-dom0" => (Op::Delete, Target::Dom0),
            other if other.starts_with('-') => {
                eprintln!("{USAGE}");
                return fail(format!("unknown option {other}"));
            }
            other => match ops.last_mut() {
                Some((_, _, keys)) => {
                    keys.push(other.to_owned());
                    continue;
                }
                None => {
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
    for (op, target, keys) in ops {
        if keys.is_empty() {
            return fail("an operation needs at least one KEY");
        }
        let result = match op {
            Op::Get => get(&host, target, &keys),
            Op::Set | Op::Delete => edit(&host, op, target, &keys),
        };
        if let Err(e) = result {
            return fail(e);
        }
    }
    ExitCode::SUCCESS
}

fn get(host: &HostRoot, target: Target, keys: &[String]) -> Result<(), BootConfigError> {
    let (_, text, _) = boot::read(host)?;
    let config = GrubConfig::parse(&text)?;
    for key in keys {
        match config.get(target, key)? {
            Some(value)
                if value.is_empty() && !config.args(target)?.contains(&format!("{key}=")) =>
            {
                println!("{key}")
            }
            Some(value) => println!("{key}={value}"),
            None => {}
        }
    }
    Ok(())
}

fn edit(host: &HostRoot, op: Op, target: Target, keys: &[String]) -> Result<(), BootConfigError> {
    edit_grub(host, |config| {
        let mut text = None::<String>;
        for key in keys {
            let current = match &text {
                Some(t) => GrubConfig::parse(t)?,
                None => config.clone(),
            };
            text = Some(match op {
                Op::Set => match key.split_once('=') {
                    Some((k, v)) => current.set(target, k, Some(v))?,
                    None => current.set(target, key, None)?,
                },
                _ => current.delete(target, key)?,
            });
        }
        Ok((text, ()))
    })
}
