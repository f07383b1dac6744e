//! The command table, which also drives `pcipass help` and the bash
//! completion script.

use std::fmt::Write as _;

use super::errors::{CliError, usage};

/// One command of the table.
#[derive(Debug, Clone, Copy)]
pub struct Command {
    /// Name, as xe spells it.
    pub name: &'static str,
    /// Required parameters.
    pub required: &'static [&'static str],
    /// Optional parameters.
    pub optional: &'static [&'static str],
    /// One line of description.
    pub help: &'static str,
}

const LIST_OPTS: &[&str] = &["params", "--minimal", "<field>=<value>"];

/// Every xe-style command.
pub const COMMANDS: &[Command] = &[
    Command {
        name: "pci-list",
        required: &[],
        optional: &["params", "--minimal", "--table", "<field>=<value>"],
        help: "List the PCI devices (--table: one line each for people).",
    },
    Command {
        name: "pci-param-list",
        required: &["uuid"],
        optional: &[],
        help: "List every field of a PCI device.",
    },
    Command {
        name: "pci-param-get",
        required: &["uuid", "param-name"],
        optional: &["param-key"],
        help: "Print one field of a PCI device.",
    },
    Command {
        name: "pci-enable-dom0-access",
        required: &["uuid"],
        optional: &["--whole-device", "--dry-run", "token"],
        help: "Give a PCI device back to dom0 at the next boot (--whole-device: every function of its slot, as one edit; --dry-run: print the diff of the boot configuration and a token, change nothing; token=: make the previewed edit only if nothing changed since).",
    },
    Command {
        name: "pci-disable-dom0-access",
        required: &["uuid"],
        optional: &["--whole-device", "--dry-run", "token"],
        help: "Hide a PCI device from dom0 at the next boot (--whole-device: every function of its slot, as one edit; --dry-run: print the diff of the boot configuration and a token, change nothing; token=: make the previewed edit only if nothing changed since).",
    },
    Command {
        name: "pci-enable-dom0-access-now",
        required: &["uuid"],
        optional: &["--whole-device", "--dry-run", "token"],
        help: "Give a PCI device back to dom0 now and at every boot.",
    },
    Command {
        name: "pci-disable-dom0-access-now",
        required: &["uuid"],
        optional: &["--whole-device", "--dry-run", "token"],
        help: "Hide a PCI device from dom0 now and at every boot.",
    },
    Command {
        name: "pci-get-dom0-access-status",
        required: &["uuid"],
        optional: &[],
        help: "Print enabled, disable_on_reboot, disabled or enable_on_reboot.",
    },
    Command {
        name: "pci-readiness",
        required: &["uuid"],
        optional: &[],
        help: "Whether a PCI device can be passed through to a VM, and what stands in the way.",
    },
    Command {
        name: "pgpu-list",
        required: &[],
        optional: LIST_OPTS,
        help: "List the physical GPUs.",
    },
    Command {
        name: "pgpu-param-list",
        required: &["uuid"],
        optional: &[],
        help: "List every field of a PGPU.",
    },
    Command {
        name: "pgpu-param-get",
        required: &["uuid", "param-name"],
        optional: &["param-key"],
        help: "Print one field of a PGPU.",
    },
    Command {
        name: "pgpu-enable-dom0-access",
        required: &["uuid"],
        optional: &[],
        help: "Give a GPU back to dom0 at the next boot (deprecated API).",
    },
    Command {
        name: "pgpu-disable-dom0-access",
        required: &["uuid"],
        optional: &[],
        help: "Hide a GPU from dom0 at the next boot (deprecated API).",
    },
    Command {
        name: "host-list",
        required: &[],
        optional: LIST_OPTS,
        help: "List the hosts.",
    },
    Command {
        name: "host-param-list",
        required: &["uuid"],
        optional: &[],
        help: "List every field of a host.",
    },
    Command {
        name: "host-param-get",
        required: &["uuid", "param-name"],
        optional: &["param-key"],
        help: "Print one field of a host.",
    },
    Command {
        name: "host-disable",
        required: &[],
        optional: &["uuid", "host"],
        help: "Disable the host (needed before host-reboot).",
    },
    Command {
        name: "host-enable",
        required: &[],
        optional: &["uuid", "host"],
        help: "Enable the host.",
    },
    Command {
        name: "host-reboot",
        required: &[],
        optional: &["uuid", "host", "--multiple"],
        help: "Reboot a disabled host (a mock host reboots in place).",
    },
    Command {
        name: "host-audit",
        required: &[],
        optional: &[],
        help: "The audit of dom0 access edits and outside boot-configuration changes, oldest first.",
    },
    Command {
        name: "host-enable-display",
        required: &[],
        optional: &["uuid", "host"],
        help: "Show the host's console on its physical display from the next boot on.",
    },
    Command {
        name: "host-disable-display",
        required: &[],
        optional: &["uuid", "host"],
        help: "Stop showing the host's console on its physical display from the next boot on.",
    },
];

/// `pcipass help [COMMAND]`.
pub fn help(command: Option<&str>) -> Result<String, CliError> {
    let mut out = String::new();
    match command {
        None => {
            out.push_str("usage: pcipass COMMAND [key=value ...] [-s HOST -p PORT --nossl] [-u USER -pw PASS | -pwf FILE] [--socket PATH]\n\nCommands:\n");
            for c in COMMANDS {
                let _ = writeln!(out, "  {:<28} {}", c.name, c.help);
            }
            out.push_str("  user-add, user-del, user-list, mock-host    administration (pcipass help user-add)\n  completion bash              print a bash completion script\n");
        }
        Some(name) => {
            let c = COMMANDS
                .iter()
                .find(|c| c.name == name)
                .ok_or_else(|| usage(format!("Unknown command: {name}")))?;
            let _ = writeln!(out, "command name            : {}", c.name);
            let _ = writeln!(out, "        reqd params     : {}", c.required.join(", "));
            let _ = writeln!(out, "        optional params : {}", c.optional.join(", "));
            let _ = writeln!(out, "        description     : {}", c.help);
        }
    }
    Ok(out)
}

/// A bash completion script from the command table.
pub fn completion_bash() -> String {
    let names: Vec<&str> = COMMANDS
        .iter()
        .map(|c| c.name)
        .chain([
            "user-add",
            "user-del",
            "user-list",
            "mock-host",
            "help",
            "completion",
        ])
        .collect();
    format!(
        "# bash completion for pcipass\n_pcipass() {{\n  local cur=${{COMP_WORDS[COMP_CWORD]}}\n  if [ \"$COMP_CWORD\" -eq 1 ]; then\n    COMPREPLY=( $(compgen -W \"{}\" -- \"$cur\") )\n  else\n    COMPREPLY=( $(compgen -W \"uuid= params= param-name= param-key= --minimal --table --multiple\" -- \"$cur\") )\n  fi\n}}\ncomplete -F _pcipass pcipass\n",
        names.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_comes_from_the_command_table() {
        let all = help(None).unwrap();
        for c in COMMANDS {
            assert!(all.contains(c.name));
            assert!(completion_bash().contains(c.name));
        }
        assert!(
            help(Some("pci-param-get"))
                .unwrap()
                .contains("uuid, param-name")
        );
        assert_eq!(help(Some("nope")).unwrap_err().code, 2);
    }
}
