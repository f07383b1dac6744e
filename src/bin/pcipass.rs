//! `pcipass`: the operator command line, `xe`'s commands and output for
//! PCI passthrough, plus administration. See `pcipass help`.

use std::process::ExitCode;

use pcipass::cli::{admin, xe};

const ADMIN_HELP: &str = "
Administration (no daemon needed):
  user-add NAME --role ROLE [--state-dir DIR]   add a user; the password is read from stdin
  user-del NAME [--state-dir DIR]               remove a user
  user-list [--state-dir DIR]                   list users and roles
  mock-host create DIR [--profile P]            build a mock dom0 root in DIR (P: demo,
                                                demo-uefi, debian, xen-efi, large, scale-N)
  mock-host reboot DIR                          reboot a mock host offline
  mock-host update-initramfs DIR                rebuild a mock host's initramfs images from
                                                its files, as update-initramfs -u -k all

Roles, highest first: pool-admin, pool-operator, vm-power-admin, vm-admin,
vm-operator, read-only. The state directory defaults to /var/lib/pcipass.
Connection: the Unix socket (--socket PATH, $PCIPASS_SOCKET, else
/var/lib/pcipass/xapi.sock), or -s HOST -p PORT --nossl, or $PCIPASS_URL.
Credentials: -u USER -pw PASSWORD, or -pwf FILE (USER and PASSWORD on two
lines, username=/password= lines, or a lone password line); -u wins.
pcipass --version prints the version.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        eprintln!("Usage: pcipass COMMAND [ARGS]\nFor usage run: 'pcipass help'");
        return ExitCode::from(2);
    };
    match command.as_str() {
        "help" | "--help" | "-h" => {
            return match xe::help(
                rest.first()
                    .map(String::as_str)
                    .filter(|c| !c.starts_with("user-") && *c != "mock-host"),
            ) {
                Ok(text) => {
                    print!("{text}");
                    if rest.is_empty() || rest[0].starts_with("user-") || rest[0] == "mock-host" {
                        println!("{ADMIN_HELP}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{}", e.message);
                    ExitCode::from(e.code)
                }
            };
        }
        "--version" => {
            println!("pcipass {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        "completion" => {
            print!("{}", xe::completion_bash());
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    let mut stdout = std::io::stdout();
    if let Some(result) = admin::run(command, rest, &mut stdout) {
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{}", e.message);
                ExitCode::from(e.code)
            }
        };
    }
    let invocation = match xe::parse(&args) {
        Ok(inv) => inv,
        Err(e) => {
            eprintln!("{}", e.message);
            return ExitCode::from(e.code);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(xe::run(&invocation)) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}", e.message);
            ExitCode::from(e.code)
        }
    }
}
