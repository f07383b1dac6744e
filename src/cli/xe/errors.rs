//! CLI failures and xe's error layout.

use std::fmt::Write as _;

use crate::cli::client::RpcFailure;
use crate::idl;

/// A CLI failure: the lines for stderr and the exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    /// Text for stderr.
    pub message: String,
    /// 1 for failures, 2 for usage errors.
    pub code: u8,
}

pub(super) fn usage(message: impl Into<String>) -> CliError {
    CliError {
        message: format!("{}\nFor usage run: 'pcipass help'", message.into()),
        code: 2,
    }
}

/// Render a XenAPI failure as xe does: the error's doc text, then one
/// `name: value` line per declared parameter.
pub fn render_failure(description: &[String]) -> String {
    let Some((code, params)) = description.split_first() else {
        return "Error code: INTERNAL_ERROR".into();
    };
    match idl::datamodel().error(code) {
        Some(decl) => {
            let mut out = decl.doc.clone();
            for (i, value) in params.iter().enumerate() {
                let name = decl.params.get(i).map(String::as_str).unwrap_or("<extra>");
                let _ = write!(out, "\n{name}: {value}");
            }
            out
        }
        None => format!(
            "Error code: {code}\nError parameters: {}",
            params.join(", ")
        ),
    }
}

pub(super) fn api_error(f: RpcFailure) -> CliError {
    match f {
        RpcFailure::Transport(message) => CliError { message, code: 1 },
        RpcFailure::Api(d)
            if d.first().map(String::as_str) == Some("SESSION_AUTHENTICATION_FAILED") =>
        {
            CliError {
                message: "Authentication failed\nFor usage run: 'pcipass help'".into(),
                code: 1,
            }
        }
        RpcFailure::Api(d) => CliError {
            message: render_failure(&d),
            code: 1,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn failures_render_like_xe() {
        assert_eq!(
            render_failure(&strings(&["UUID_INVALID", "PCI", "abc"])),
            "The uuid you supplied was invalid.\ntype: PCI\nuuid: abc"
        );
        assert_eq!(
            render_failure(&strings(&[
                "BOOT_DEVICE_PASSTHROUGH_DISALLOWED",
                "/dev/nvme0n1p2"
            ])),
            "Passing through a PCI device backing a boot disk is disallowed.\ndevice: /dev/nvme0n1p2"
        );
        assert_eq!(
            render_failure(&strings(&["NO_SUCH_CODE", "a", "b"])),
            "Error code: NO_SUCH_CODE\nError parameters: a, b"
        );
    }
}
