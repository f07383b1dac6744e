//! `--demo`: the demo user and its password, a known port for a
//! `:0` listener, and the lines, printed once every listener accepts,
//! that say where to connect and with which `pcipass` command.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{DaemonError, state_at};
use crate::config::Settings;
use crate::store::users::UsersFile;

/// Create the demo user when the users file is empty; returns the
/// password to print (the stored one when it exists).
pub(super) fn demo_credentials(settings: &Settings) -> Result<(String, String), DaemonError> {
    let state_dir = settings.state_dir();
    let mut users = UsersFile::load(&state_dir).map_err(state_at(&state_dir))?;
    let password_file = state_dir.join("demo-password");
    if users.is_empty() {
        let password = crate::store::users::random_password();
        users
            .add("root", crate::api::Role::PoolAdmin, &password)
            .map_err(state_at(&state_dir))?;
        crate::store::write_private(&password_file, password.as_bytes())
            .map_err(state_at(&password_file))?;
    }
    let password =
        std::fs::read_to_string(&password_file).unwrap_or_else(|_| "(set by user-add)".into());
    Ok(("root".into(), password.trim().to_owned()))
}

/// Resolve port 0 to a free port, so that the demo lines can name the
/// real address, which [`serve`](crate::wire::http::serve) then binds (a port taken in between
/// makes `serve` fail with the address named; nothing wrong is printed).
pub(super) fn resolve_port_zero(
    listen: &[std::net::SocketAddr],
) -> Result<Vec<std::net::SocketAddr>, DaemonError> {
    listen
        .iter()
        .map(|addr| {
            if addr.port() != 0 {
                return Ok(*addr);
            }
            std::net::TcpListener::bind(addr)
                .and_then(|l| l.local_addr())
                .map_err(|e| DaemonError::Http(format!("cannot listen on {addr}: {e}")))
        })
        .collect()
}

/// The identity of the file at `path`, if any: device, inode and change
/// time (an inode number freed by removing a stale socket may come back).
pub(super) fn file_identity(path: &Path) -> Option<(u64, u64, i64, i64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino(), m.ctime(), m.ctime_nsec()))
}

/// True once every Unix socket in `sockets` is a new file (not the one
/// there before, `before`) that accepts connections. [`serve`](crate::wire::http::serve)
/// binds its TCP listeners before its Unix sockets, so then all are bound.
fn sockets_ready(sockets: &[PathBuf], before: &[Option<(u64, u64, i64, i64)>]) -> bool {
    sockets.iter().zip(before).all(|(path, old)| {
        let now = file_identity(path);
        now.is_some() && now != *old && std::os::unix::net::UnixStream::connect(path).is_ok()
    })
}

/// `text` quoted for a POSIX shell when it needs it.
fn shell_quote(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-:=+@%,".contains(c));
    if plain {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

/// The `pcipass` to name in the demo lines: the one built next to this
/// program when there is one, else `pcipass` from `$PATH`.
fn pcipass_program() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("pcipass")))
        .filter(|p| p.is_file())
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "pcipass".to_owned())
}

/// The lines `--demo` prints once the listeners are bound: the URL, user
/// and password, and the `pcipass` command lines that reach this daemon.
fn demo_lines(
    user: &str,
    password: &str,
    listen: &[std::net::SocketAddr],
    sockets: &[PathBuf],
    tls: Option<&Option<String>>,
) -> Vec<String> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let program = shell_quote(&pcipass_program());
    let mut lines = Vec::new();
    for addr in listen {
        lines.push(format!(
            "demo: url {scheme}://{addr}/ user {user} password {password}"
        ));
    }
    for addr in listen {
        let security = match tls {
            None => "--nossl".to_owned(),
            Some(Some(fingerprint)) => format!("--fingerprint {fingerprint}"),
            Some(None) => "--no-verify".to_owned(),
        };
        lines.push(format!(
            "demo: {program} -s {} -p {} {security} -u {} -pw {} pci-list",
            shell_quote(&addr.ip().to_string()),
            addr.port(),
            shell_quote(user),
            shell_quote(password),
        ));
    }
    for path in sockets {
        let path = std::path::absolute(path).unwrap_or_else(|_| path.clone());
        lines.push(format!(
            "demo: PCIPASS_SOCKET={} {program} -u {} -pw {} pci-list",
            shell_quote(&path.display().to_string()),
            shell_quote(user),
            shell_quote(password),
        ));
    }
    lines
}

/// Print the [`demo_lines`] once every Unix socket in `unix` is the new
/// one and accepts connections ([`sockets_ready`]; `before` holds the
/// files there before `server` started); nothing if `server` stops first.
pub(super) async fn announce<T>(
    server: &tokio::task::JoinHandle<T>,
    user: &str,
    password: &str,
    listen: &[std::net::SocketAddr],
    unix: &[PathBuf],
    before: &[Option<(u64, u64, i64, i64)>],
    fingerprint: Option<&Option<String>>,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    loop {
        tick.tick().await;
        if server.is_finished() {
            break;
        }
        let (sockets, old) = (unix.to_vec(), before.to_vec());
        let ready = tokio::task::spawn_blocking(move || sockets_ready(&sockets, &old))
            .await
            .unwrap_or(false);
        if ready {
            for line in demo_lines(user, password, listen, unix, fingerprint) {
                println!("{line}");
            }
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_lines_name_the_scheme_and_the_commands() {
        let listen = vec!["127.0.0.1:4443".parse().unwrap()];
        let sockets = vec![PathBuf::from("/tmp/d s/xapi.sock")];
        let https = demo_lines("root", "pw", &listen, &sockets, Some(&Some("AB:CD".into())));
        assert_eq!(
            https[0],
            "demo: url https://127.0.0.1:4443/ user root password pw"
        );
        assert!(
            https[1].ends_with("-s 127.0.0.1 -p 4443 --fingerprint AB:CD -u root -pw pw pci-list")
        );
        assert!(https[2].starts_with("demo: PCIPASS_SOCKET='/tmp/d s/xapi.sock' "));
        let http = demo_lines("root", "pw", &listen, &sockets, None);
        assert!(http[0].starts_with("demo: url http://127.0.0.1:4443/"));
        assert!(http[1].contains(" --nossl "));
    }
}
