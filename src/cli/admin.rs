//! Commands that need no daemon: users in the state directory, and mock
//! hosts (`mock-host create DIR --profile P`, `mock-host reboot DIR`,
//! `mock-host update-initramfs DIR`).

use std::io::BufRead;
use std::path::{Path, PathBuf};

use crate::api::Role;
use crate::domain::mock_boot;
use crate::host::HostRoot;
use crate::host::mock::{self, Profile};
use crate::store::users::UsersFile;

/// A failed admin command: message and exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminError {
    /// One line for stderr.
    pub message: String,
    /// Exit code (1 failure, 2 usage).
    pub code: u8,
}

fn usage(message: impl Into<String>) -> AdminError {
    AdminError {
        message: format!("{}\nFor usage run: 'pcipass help'", message.into()),
        code: 2,
    }
}

fn failure(message: impl std::fmt::Display) -> AdminError {
    AdminError {
        message: message.to_string(),
        code: 1,
    }
}

/// Value of `--name VALUE` or `--name=VALUE` in `args`.
fn option(args: &[String], name: &str) -> Option<String> {
    let flag = format!("--{name}");
    args.iter().enumerate().find_map(|(i, a)| {
        if *a == flag {
            args.get(i + 1).cloned()
        } else {
            a.strip_prefix(&format!("{flag}=")).map(str::to_owned)
        }
    })
}

fn positional(args: &[String]) -> Vec<&String> {
    let mut out = Vec::new();
    let mut skip = false;
    for a in args {
        if skip {
            skip = false;
            continue;
        }
        if a.starts_with("--") {
            skip = !a.contains('=');
            continue;
        }
        out.push(a);
    }
    out
}

fn state_dir(args: &[String]) -> PathBuf {
    option(args, "state-dir")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/pcipass"))
}

/// Run an admin command; `None` when `command` is not one.
pub fn run(
    command: &str,
    args: &[String],
    stdout: &mut dyn std::io::Write,
) -> Option<Result<(), AdminError>> {
    Some(match command {
        "user-add" => user_add(args),
        "user-del" => user_del(args),
        "user-list" => user_list(args, stdout),
        "mock-host" => mock_host(args, stdout),
        _ => return None,
    })
}

fn user_add(args: &[String]) -> Result<(), AdminError> {
    let [name] = positional(args)[..] else {
        return Err(usage("user-add NAME --role ROLE [--state-dir DIR]"));
    };
    let role: Role = option(args, "role")
        .ok_or_else(|| usage("user-add needs --role ROLE"))?
        .parse()
        .map_err(usage)?;
    let mut password = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut password)
        .map_err(failure)?;
    let password = password.trim_end_matches(['\n', '\r']);
    let mut users = UsersFile::load(&state_dir(args)).map_err(failure)?;
    users.add(name, role, password).map_err(failure)
}

fn user_del(args: &[String]) -> Result<(), AdminError> {
    let [name] = positional(args)[..] else {
        return Err(usage("user-del NAME [--state-dir DIR]"));
    };
    let mut users = UsersFile::load(&state_dir(args)).map_err(failure)?;
    users.remove(name).map_err(failure)
}

fn user_list(args: &[String], stdout: &mut dyn std::io::Write) -> Result<(), AdminError> {
    let users = UsersFile::load(&state_dir(args)).map_err(failure)?;
    for (name, role) in users.list() {
        writeln!(stdout, "{name} {role}").map_err(failure)?;
    }
    Ok(())
}

fn mock_host(args: &[String], stdout: &mut dyn std::io::Write) -> Result<(), AdminError> {
    match positional(args)[..] {
        [action, dir] if action == "create" => {
            let profile: Profile = option(args, "profile")
                .as_deref()
                .unwrap_or("demo")
                .parse()
                .map_err(usage)?;
            mock::create(Path::new(dir), profile).map_err(failure)
        }
        [action, dir] if action == "reboot" => {
            let cmdline = mock_boot::reboot(&HostRoot::new(dir)).map_err(failure)?;
            stdout
                .write_all(&[cmdline.as_slice(), b"\n"].concat())
                .map_err(failure)
        }
        [action, dir] if action == "update-initramfs" => {
            mock::initramfs::rebuild_all(&HostRoot::new(dir)).map_err(failure)
        }
        _ => Err(usage(
            "mock-host create DIR --profile demo|demo-uefi|debian|xen-efi|large|scale-N | mock-host reboot DIR | mock-host update-initramfs DIR",
        )),
    }
}
