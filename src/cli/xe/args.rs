//! xe's argument syntax, and what the arguments say about where to connect
//! and as whom.

use super::errors::{CliError, usage};
use crate::cli::client::Endpoint;

/// A parsed command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Invocation {
    /// The command.
    pub command: String,
    /// `key=value` parameters and `--flag`s (as `flag=true`), in order.
    pub params: Vec<(String, String)>,
}

impl Invocation {
    /// A parameter's value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// True when a switch is set.
    pub fn flag(&self, key: &str) -> bool {
        self.get(key).is_some_and(|v| v == "true" || v.is_empty())
    }
}

/// Parse xe's syntax: `key=value`, `--flag`, dyadic `-s -p -u -pw -pwf -h`.
pub fn parse(args: &[String]) -> Result<Invocation, CliError> {
    let mut inv = Invocation::default();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let dyadic = match arg.as_str() {
            "-s" | "-h" => Some("server"),
            "-p" => Some("port"),
            "-u" => Some("username"),
            "-pw" => Some("password"),
            "-pwf" => Some("passwordfile"),
            _ => None,
        };
        if let Some(key) = dyadic {
            let value = iter
                .next()
                .ok_or_else(|| usage(format!("Syntax error: {arg} needs a value")))?;
            inv.params.push((key.to_owned(), value.clone()));
        } else if let Some(flag) = arg.strip_prefix("--") {
            match flag.split_once('=') {
                Some((k, v)) => inv.params.push((k.to_owned(), v.to_owned())),
                None if flag == "socket" || flag == "fingerprint" => {
                    let value = iter
                        .next()
                        .ok_or_else(|| usage(format!("Syntax error: --{flag} needs a value")))?;
                    inv.params.push((flag.to_owned(), value.clone()));
                }
                None => inv.params.push((flag.to_owned(), "true".to_owned())),
            }
        } else if arg.starts_with('-') {
            return Err(usage(format!("Syntax error: unknown switch {arg}")));
        } else if inv.command.is_empty() && !arg.contains('=') {
            inv.command = arg.clone();
        } else {
            let (k, v) = arg
                .split_once('=')
                .ok_or_else(|| usage(format!("Syntax error: {arg} is not key=value")))?;
            inv.params.push((k.to_owned(), v.to_owned()));
        }
    }
    Ok(inv)
}

/// Where to connect: `-s` (TCP), else `$PCIPASS_URL`, else `--socket`,
/// `$PCIPASS_SOCKET`, `/var/lib/pcipass/xapi.sock`.
pub fn endpoint(inv: &Invocation) -> Result<Endpoint, CliError> {
    if let Some(server) = inv.get("server") {
        if inv.flag("nossl") {
            return Ok(Endpoint::Tcp(format!(
                "{server}:{}",
                inv.get("port").unwrap_or("80")
            )));
        }
        let addr = format!("{server}:{}", inv.get("port").unwrap_or("443"));
        return tls_endpoint(inv, addr);
    }
    if let Some(socket) = inv.get("socket") {
        return Ok(Endpoint::Unix(socket.to_owned()));
    }
    if let Ok(url) = std::env::var("PCIPASS_URL") {
        if let Some(path) = url.strip_prefix("unix://") {
            return Ok(Endpoint::Unix(path.to_owned()));
        }
        if let Some(addr) = url.strip_prefix("http://") {
            return Ok(Endpoint::Tcp(addr.trim_end_matches('/').to_owned()));
        }
        if let Some(addr) = url.strip_prefix("https://") {
            return tls_endpoint(inv, addr.trim_end_matches('/').to_owned());
        }
        return Err(usage(format!(
            "$PCIPASS_URL {url:?}: want http://HOST:PORT or unix://PATH"
        )));
    }
    Ok(Endpoint::Unix(
        std::env::var("PCIPASS_SOCKET").unwrap_or_else(|_| "/var/lib/pcipass/xapi.sock".into()),
    ))
}

/// HTTPS needs `--fingerprint SHA256` (pcipassd prints it at start) or an
/// explicit `--no-verify`: a self-signed certificate is never accepted
/// silently.
fn tls_endpoint(inv: &Invocation, addr: String) -> Result<Endpoint, CliError> {
    match (inv.get("fingerprint"), inv.flag("no-verify")) {
        (Some(fp), _) => Ok(Endpoint::Tls {
            addr,
            fingerprint: Some(fp.to_owned()),
        }),
        (None, true) => Ok(Endpoint::Tls {
            addr,
            fingerprint: None,
        }),
        (None, false) => Err(CliError {
            message: format!(
                "https://{addr}/: the server certificate cannot be verified; pass --fingerprint SHA256 (pcipassd prints it at start) or --no-verify, or use --nossl"
            ),
            code: 1,
        }),
    }
}

/// User and password.
///
/// `-u USER` and `-pw PASSWORD` are taken as given. `-pwf FILE` reads the
/// file in one of these forms:
///
/// * xe's own: line 1 the user name, line 2 the password (xe's `newcli.ml`
///   reads exactly two lines);
/// * `username=USER` / `password=PASSWORD` lines, as in xe's `~/.xe`;
/// * a single line: the password alone, never a user name.
///
/// An explicit `-u` wins over the file's user; without either the user is
/// `root`. An explicit `-pw` wins over the file's password.
pub(super) fn credentials(inv: &Invocation) -> Result<(String, String), CliError> {
    let (file_user, file_password) = match inv.get("passwordfile") {
        Some(file) => {
            let text = std::fs::read_to_string(file).map_err(|e| CliError {
                message: format!("cannot read password file {file}: {e}"),
                code: 1,
            })?;
            parse_password_file(&text)
        }
        None => (None, None),
    };
    let user = inv
        .get("username")
        .map(str::to_owned)
        .or(file_user)
        .unwrap_or_else(|| "root".to_owned());
    let password = inv
        .get("password")
        .map(str::to_owned)
        .or(file_password)
        .unwrap_or_default();
    Ok((user, password))
}

/// The user (if the file names one) and password of a `-pwf` file; see
/// [`credentials`] for the forms accepted.
fn parse_password_file(text: &str) -> (Option<String>, Option<String>) {
    let lines: Vec<&str> = text
        .lines()
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    let keyed = lines
        .iter()
        .any(|l| l.starts_with("username=") || l.starts_with("password="));
    if keyed {
        let mut user = None;
        let mut password = None;
        for line in &lines {
            if let Some(v) = line.strip_prefix("username=") {
                user = Some(v.to_owned());
            } else if let Some(v) = line.strip_prefix("password=") {
                password = Some(v.to_owned());
            }
        }
        return (user, password);
    }
    // Trailing blank lines (an editor's final newline) do not make a
    // one-line file a two-line one.
    let mut significant = lines.as_slice();
    while let Some((last, rest)) = significant.split_last() {
        if !last.is_empty() || rest.is_empty() {
            break;
        }
        significant = rest;
    }
    match significant {
        [] => (None, None),
        [password] => (None, Some((*password).to_owned())),
        [user, password, ..] => (Some((*user).to_owned()), Some((*password).to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn parses_xe_syntax() {
        let inv = parse(&strings(&[
            "pci-list",
            "pci-id=0000:03:00.0",
            "--minimal",
            "-u",
            "root",
            "-pw",
            "x=y",
            "params=uuid,pci-id",
        ]))
        .unwrap();
        assert_eq!(inv.command, "pci-list");
        assert_eq!(inv.get("pci-id"), Some("0000:03:00.0"));
        assert!(inv.flag("minimal"));
        assert_eq!(inv.get("password"), Some("x=y"));
        assert_eq!(parse(&strings(&["pci-list", "-x"])).unwrap_err().code, 2);
        assert_eq!(parse(&strings(&["pci-list", "-u"])).unwrap_err().code, 2);
    }

    fn creds(args: &[&str], file: Option<&str>) -> (String, String) {
        let dir = std::env::temp_dir().join(format!(
            "pcipass-pwf-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pw");
        let mut all = strings(&["pci-list"]);
        all.extend(strings(args));
        if let Some(text) = file {
            std::fs::write(&path, text).unwrap();
            all.push("-pwf".to_owned());
            all.push(path.to_string_lossy().into_owned());
        }
        let got = credentials(&parse(&all).unwrap()).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        got
    }

    fn pair(u: &str, p: &str) -> (String, String) {
        (u.to_owned(), p.to_owned())
    }

    #[test]
    fn pwf_two_lines_is_user_then_password() {
        assert_eq!(creds(&[], Some("alice\ns3cret\n")), pair("alice", "s3cret"));
        assert_eq!(
            creds(&[], Some("alice\r\ns3cret\r\n")),
            pair("alice", "s3cret")
        );
    }

    #[test]
    fn pwf_one_line_is_the_password_only() {
        assert_eq!(creds(&[], Some("s3cret\n")), pair("root", "s3cret"));
        assert_eq!(creds(&[], Some("s3cret")), pair("root", "s3cret"));
        assert_eq!(creds(&[], Some("s3cret\n\n")), pair("root", "s3cret"));
        assert_eq!(
            creds(&["-u", "bob"], Some("s3cret\n")),
            pair("bob", "s3cret")
        );
    }

    #[test]
    fn pwf_keyed_lines() {
        assert_eq!(
            creds(&[], Some("username=carol\npassword=a=b\n")),
            pair("carol", "a=b")
        );
        assert_eq!(
            creds(&[], Some("# xe\npassword=pw\nusername=dave\n")),
            pair("dave", "pw")
        );
        assert_eq!(creds(&[], Some("password=pw\n")), pair("root", "pw"));
        assert_eq!(
            creds(&["-u", "erin"], Some("username=carol\npassword=pw\n")),
            pair("erin", "pw")
        );
    }

    #[test]
    fn explicit_user_wins_over_the_file() {
        assert_eq!(
            creds(&["-u", "bob"], Some("alice\ns3cret\n")),
            pair("bob", "s3cret")
        );
        // Order on the command line does not matter.
        let dir = std::env::temp_dir().join(format!("pcipass-pwf-order-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pw");
        std::fs::write(&path, "alice\ns3cret\n").unwrap();
        let inv = parse(&strings(&[
            "pci-list",
            "-pwf",
            path.to_str().unwrap(),
            "-u",
            "bob",
        ]))
        .unwrap();
        assert_eq!(credentials(&inv).unwrap(), pair("bob", "s3cret"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn without_a_file() {
        assert_eq!(creds(&[], None), pair("root", ""));
        assert_eq!(creds(&["-u", "bob", "-pw", "x"], None), pair("bob", "x"));
        assert_eq!(creds(&["-pw", "x"], Some("alice\ny\n")), pair("alice", "x"));
        assert_eq!(creds(&[], Some("")), pair("root", ""));
    }

    #[test]
    fn unreadable_file_is_an_error() {
        let inv = parse(&strings(&["pci-list", "-pwf", "/nonexistent/pcipass/pw"])).unwrap();
        assert_eq!(credentials(&inv).unwrap_err().code, 1);
    }
}
