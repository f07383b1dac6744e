//! xenstore, read as `xl` reads it to find which domain a PCI function is
//! assigned to: libxl writes each assigned function into the PCI backend
//! of its domain, `/local/domain/0/backend/pci/<domid>/<devid>/dev-<n>` =
//! `DDDD:BB:DD.F`, and records `/libxl/pci/DDDD-BB-DD-F/domid` while the
//! assignment lasts (libxl `libxl_pci.c`: `libxl__device_pci_add`,
//! `libxl__device_pci_from_xs_be`); a domain's name is
//! `/local/domain/<domid>/name`.
//!
//! On a real dom0 the tree is read with `xenstore-ls -f PATH` (one
//! `path = "value"` line per node); on a mock host, from the file
//! [`MOCK_TREE`], which holds what `xenstore-ls -f /` would print there.

use std::time::Duration;

use crate::host::{HostError, HostRoot, exec};
use crate::vocab::PciAddress;

/// A mock host's xenstore, as `xenstore-ls -f /` prints it.
pub const MOCK_TREE: &str = "var/lib/xenstored/mock-tree";

/// Longest a `xenstore-ls` may take.
const LIMIT: Duration = Duration::from_secs(10);

/// Why xenstore could not be read.
#[derive(Debug, thiserror::Error)]
pub enum XenstoreError {
    /// The mock's tree file cannot be read.
    #[error(transparent)]
    Host(#[from] HostError),
    /// `xenstore-ls` could not run or failed.
    #[error("xenstore-ls {path}: {reason}")]
    Program {
        /// The path listed.
        path: String,
        /// What went wrong.
        reason: String,
    },
}

/// Every node below `path` (itself excluded), as (full path, value).
pub fn list(host: &HostRoot, path: &str) -> Result<Vec<(String, String)>, XenstoreError> {
    if host.is_mock() {
        let text = host.read_if_exists(MOCK_TREE)?.unwrap_or_default();
        let prefix = format!("{}/", path.trim_end_matches('/'));
        return Ok(parse_ls(&String::from_utf8_lossy(&text))
            .into_iter()
            .filter(|(p, _)| p.starts_with(&prefix))
            .collect());
    }
    let failed = |reason: String| XenstoreError::Program {
        path: path.to_owned(),
        reason,
    };
    let out = exec::run("xenstore-ls", &["-f".to_owned(), path.to_owned()], LIMIT)
        .map_err(|e| failed(format!("cannot run: {e}")))?;
    match out.code {
        Some(0) => Ok(parse_ls(&out.stdout)),
        // A path nobody wrote (no domain has a PCI backend) is empty.
        _ if out.stderr.contains("No such file or directory") => Ok(Vec::new()),
        _ => Err(failed(out.stderr.trim().to_owned())),
    }
}

/// The lines of `xenstore-ls -f` as (path, value): `path = "value"`, the
/// value with xenstore-ls's escapes (`\"`, `\\`) undone.
pub fn parse_ls(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let (path, value) = line.split_once(" = ")?;
            let value = value.trim().strip_prefix('"')?.strip_suffix('"')?;
            Some((
                path.trim().to_owned(),
                value.replace("\\\"", "\"").replace("\\\\", "\\"),
            ))
        })
        .collect()
}

/// A domain `addr` is assigned to, with its name when xenstore has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The domain's id.
    pub domid: u32,
    /// The domain's name.
    pub name: Option<String>,
}

/// The domains `addr` is assigned to, from the PCI backends' nodes
/// `nodes` (below `/local/domain/0/backend/pci`) and the domain names
/// `names` (`/local/domain/<domid>/name`).
pub fn assignments_in(
    nodes: &[(String, String)],
    names: &[(String, String)],
    addr: &PciAddress,
) -> Vec<Assignment> {
    let wanted = addr.to_string();
    let mut domids: Vec<u32> = nodes
        .iter()
        .filter(|(path, value)| {
            path.rsplit('/')
                .next()
                .is_some_and(|leaf| leaf.starts_with("dev-"))
                && value.eq_ignore_ascii_case(&wanted)
        })
        .filter_map(|(path, _)| {
            path.strip_prefix("/local/domain/0/backend/pci/")?
                .split('/')
                .next()?
                .parse()
                .ok()
        })
        .collect();
    domids.sort_unstable();
    domids.dedup();
    domids
        .into_iter()
        .map(|domid| Assignment {
            domid,
            name: names
                .iter()
                .find(|(p, _)| *p == format!("/local/domain/{domid}/name"))
                .map(|(_, v)| v.clone()),
        })
        .collect()
}

/// The domains `addr` is assigned to now.
pub fn assignments(host: &HostRoot, addr: &PciAddress) -> Result<Vec<Assignment>, XenstoreError> {
    let nodes = list(host, "/local/domain/0/backend/pci")?;
    if !nodes
        .iter()
        .any(|(_, v)| v.eq_ignore_ascii_case(&addr.to_string()))
    {
        return Ok(Vec::new());
    }
    let mut names = Vec::new();
    for domid in assignments_in(&nodes, &[], addr).iter().map(|a| a.domid) {
        names.extend(list(host, &format!("/local/domain/{domid}"))?);
    }
    Ok(assignments_in(&nodes, &names, addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xl_s_backend_nodes_name_the_domain_a_function_is_assigned_to() {
        let ls = r#"/local/domain/0/backend/pci/7/0/frontend = "/local/domain/7/device/pci/0"
/local/domain/0/backend/pci/7/0/num_devs = "2"
/local/domain/0/backend/pci/7/0/key-0 = "0000:03:00.0"
/local/domain/0/backend/pci/7/0/dev-0 = "0000:03:00.0"
/local/domain/0/backend/pci/7/0/vdevfn-0 = "28"
/local/domain/0/backend/pci/7/0/dev-1 = "0000:03:00.1"
/local/domain/0/backend/pci/9/0/dev-0 = "0000:01:00.0"
/local/domain/7/name = "win10 \"gpu\""
/local/domain/9/name = "router"
"#;
        let all = parse_ls(ls);
        assert_eq!(all[7].1, "win10 \"gpu\"");
        let nic: PciAddress = "0000:03:00.1".parse().unwrap();
        assert_eq!(
            assignments_in(&all, &all, &nic),
            vec![Assignment {
                domid: 7,
                name: Some("win10 \"gpu\"".into())
            }]
        );
        let gpu: PciAddress = "0000:01:00.0".parse().unwrap();
        assert_eq!(assignments_in(&all, &all, &gpu)[0].domid, 9);
        // key-N is the same address but not the assignment itself; a
        // function nobody has is free.
        let free: PciAddress = "0000:02:00.0".parse().unwrap();
        assert!(assignments_in(&all, &all, &free).is_empty());
        assert!(parse_ls("garbage\n/x = unquoted\n").is_empty());
    }
}
