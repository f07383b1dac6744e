//! `pcipass`: the operator command line. See `pcipass help`.

use std::process::ExitCode;

const HELP: &str = "usage: pcipass COMMAND [ARGS]

Administration (no daemon needed):
  user-add NAME --role ROLE [--state-dir DIR]   add a user; the password is read from stdin
  user-del NAME [--state-dir DIR]               remove a user
  user-list [--state-dir DIR]                   list users and roles
  mock-host create DIR [--profile demo|large]   build a mock dom0 root in DIR
  mock-host reboot DIR                          reboot a mock host offline

Roles, highest first: pool-admin, pool-operator, vm-power-admin, vm-admin,
vm-operator, read-only. The state directory defaults to /var/lib/pcipass.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        eprintln!("{HELP}");
        return ExitCode::from(2);
    };
    if matches!(command.as_str(), "help" | "--help" | "-h") {
        println!("{HELP}");
        return ExitCode::SUCCESS;
    }
    let mut stdout = std::io::stdout();
    match pcipass::cli::admin::run(command, rest, &mut stdout) {
        Some(Ok(())) => ExitCode::SUCCESS,
        Some(Err(e)) => {
            eprintln!("{}", e.message);
            ExitCode::from(e.code)
        }
        None => {
            eprintln!("Unknown command: {command}\nFor usage run: 'pcipass help'");
            ExitCode::from(2)
        }
    }
}
