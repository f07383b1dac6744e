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

/// User and password: `-u/-pw`, or `-pwf FILE` (line 1 user, line 2 password).
pub(super) fn credentials(inv: &Invocation) -> Result<(String, String), CliError> {
    if let Some(file) = inv.get("passwordfile") {
        let text = std::fs::read_to_string(file).map_err(|e| CliError {
            message: format!("cannot read password file {file}: {e}"),
            code: 1,
        })?;
        let mut lines = text.lines();
        return Ok((
            lines.next().unwrap_or("").to_owned(),
            lines.next().unwrap_or("").to_owned(),
        ));
    }
    Ok((
        inv.get("username").unwrap_or("root").to_owned(),
        inv.get("password").unwrap_or("").to_owned(),
    ))
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
}
