//! What the host says about itself: the XCP-ng inventory, os-release, the
//! kernel and Xen versions, memory and the host name.
//!
//! These are descriptive facts (for `host.software_version` and the like),
//! not safety checks: a missing or unreadable file leaves its fact empty.

use std::collections::BTreeSet;
use std::sync::Mutex;

use crate::host::{HostError, HostRoot};

/// XCP-ng's installation inventory, host-relative.
pub const INVENTORY: &str = "etc/xensource-inventory";

/// The os-release file, host-relative; see [`OS_RELEASE_FALLBACK`].
pub const OS_RELEASE: &str = "etc/os-release";

/// The os-release file read when [`OS_RELEASE`] does not exist
/// (os-release(5)), host-relative.
pub const OS_RELEASE_FALLBACK: &str = "usr/lib/os-release";

/// The running kernel's release, host-relative.
pub const KERNEL_RELEASE: &str = "proc/sys/kernel/osrelease";

/// The kernel's host name, host-relative.
pub const HOSTNAME: &str = "proc/sys/kernel/hostname";

/// What `xl info` printed at boot, host-relative: pcipassd's sandbox
/// cannot reach Xen's privileged interface, so the unit
/// `pcipassd-xen-facts.service` records it.
pub const XL_INFO: &str = "run/pcipass-facts/xl-info";

/// The recorded `xl info` text (`None`: not recorded).
pub fn xl_info(host: &HostRoot) -> Result<Option<String>, HostError> {
    Ok(host
        .read_if_exists(XL_INFO)?
        .map(|b| String::from_utf8_lossy(&b).into_owned()))
}

/// Xen's major version number, host-relative.
pub const XEN_MAJOR: &str = "sys/hypervisor/version/major";

/// Xen's minor version number, host-relative.
pub const XEN_MINOR: &str = "sys/hypervisor/version/minor";

/// Xen's extra version (e.g. `.5-3`), host-relative.
pub const XEN_EXTRA: &str = "sys/hypervisor/version/extra";

/// Xen's capabilities (e.g. `xen-3.0-x86_64 hvm-3.0-x86_64`),
/// host-relative.
pub const XEN_CAPABILITIES: &str = "sys/hypervisor/properties/capabilities";

/// The kernel's memory statistics, host-relative.
pub const MEMINFO: &str = "proc/meminfo";

/// What [`read_facts`] found on a host; `None` (or empty) where a file is
/// missing or unreadable.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostFacts {
    /// The key/value pairs of [`INVENTORY`], in file order.
    pub inventory: Option<Vec<(String, String)>>,
    /// The key/value pairs of [`OS_RELEASE`] (else
    /// [`OS_RELEASE_FALLBACK`]), in file order.
    pub os_release: Option<Vec<(String, String)>>,
    /// The running kernel's release ([`KERNEL_RELEASE`], trimmed).
    pub kernel_release: Option<String>,
    /// Xen's version, `major.minor` followed by the extra version (e.g.
    /// `4.17.5-3`); `None` when the major or minor number is missing.
    pub xen_version: Option<String>,
    /// Xen's capabilities ([`XEN_CAPABILITIES`], split at whitespace).
    pub xen_capabilities: Vec<String>,
    /// Total memory in KiB (`MemTotal` of [`MEMINFO`]).
    pub memory_total_kib: Option<u64>,
    /// Available memory in KiB (`MemAvailable` of [`MEMINFO`], else
    /// `MemFree`).
    pub memory_free_kib: Option<u64>,
    /// The kernel's host name ([`HOSTNAME`], trimmed); `None` when empty.
    pub hostname: Option<String>,
}

impl HostFacts {
    /// The value of `key` in the inventory, if any.
    pub fn inventory_value(&self, key: &str) -> Option<&str> {
        lookup(self.inventory.as_deref()?, key)
    }

    /// The value of `key` in os-release, if any.
    pub fn os_release_value(&self, key: &str) -> Option<&str> {
        lookup(self.os_release.as_deref()?, key)
    }
}

fn lookup<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Add `key` = `value`, replacing the value of an earlier `key` in place.
fn upsert(pairs: &mut Vec<(String, String)>, key: &str, value: String) {
    match pairs.iter_mut().find(|(k, _)| k == key) {
        Some(pair) => pair.1 = value,
        None => pairs.push((key.to_owned(), value)),
    }
}

/// Parse `/etc/xensource-inventory` the way xapi's inventory reader does:
/// each line is split at its first `=`, key and value are trimmed, and one
/// pair of matching single or double quotes around the value is removed.
/// Blank lines, lines without `=` and `#` comments are skipped. The pairs
/// keep file order; a later duplicate key replaces the earlier value.
pub fn parse_inventory(text: &str) -> Vec<(String, String)> {
    key_value_lines(text, |value| {
        ['\'', '"']
            .iter()
            .find_map(|q| value.strip_prefix(*q)?.strip_suffix(*q))
            .unwrap_or(value)
            .to_owned()
    })
}

/// The `KEY=value` lines of `text` (blank lines, `#` comments, lines
/// without `=` or with an empty key skipped; key and value trimmed), each
/// value read by `value`. File order is kept; a later duplicate key
/// replaces the earlier value.
fn key_value_lines(text: &str, value: impl Fn(&str) -> String) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, raw)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if key.is_empty() {
            continue;
        }
        upsert(&mut pairs, key, value(raw.trim()));
    }
    pairs
}

/// Parse an os-release(5) file: `KEY=value` lines, `#` comments and blank
/// lines skipped, values bare or in single or double quotes. Inside double
/// quotes a backslash escapes `"`, `\`, `` ` `` and `$` (any other
/// backslash is kept); single quotes take their content literally. Text
/// after the closing quote is ignored; an unclosed quote runs to the end of
/// the line. The pairs keep file order; a later duplicate key replaces the
/// earlier value.
pub fn parse_os_release(text: &str) -> Vec<(String, String)> {
    key_value_lines(text, os_release_value)
}

/// One os-release value, quotes and escapes removed.
fn os_release_value(raw: &str) -> String {
    if let Some(rest) = raw.strip_prefix('\'') {
        return rest.split('\'').next().unwrap_or_default().to_owned();
    }
    let Some(rest) = raw.strip_prefix('"') else {
        return raw.to_owned();
    };
    let mut value = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => break,
            '\\' => match chars.next() {
                Some(e @ ('"' | '\\' | '`' | '$')) => value.push(e),
                Some(other) => {
                    value.push('\\');
                    value.push(other);
                }
                None => value.push('\\'),
            },
            other => value.push(other),
        }
    }
    value
}

/// The number of the `key` line of `/proc/meminfo` (e.g. `MemTotal:
/// 16318412 kB` gives 16318412; the unit, KiB, is not checked).
pub fn parse_meminfo_kib(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, rest) = line.split_once(':')?;
        if k.trim() != key {
            return None;
        }
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Paths (root and host path) already warned about, so a file that stays
/// unreadable is logged once per process.
static WARNED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// Log `err` (for a file that exists but cannot be read) unless already
/// logged.
fn warn_once(host: &HostRoot, err: &HostError) {
    let key = format!("{}:{}", host.root().display(), err.path);
    let fresh = WARNED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(key);
    if fresh {
        tracing::warn!(root = %host.root().display(), error = %err, "host fact unreadable");
    }
}

/// The text of `rel`: `Ok(None)` when it does not exist, `Err(())` when it
/// exists but cannot be read (already logged).
fn read_text(host: &HostRoot, rel: &str) -> Result<Option<String>, ()> {
    match host.read_to_string(rel) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => {
            warn_once(host, &e);
            Err(())
        }
    }
}

/// The text of `rel`, `None` when missing or unreadable.
fn read_opt(host: &HostRoot, rel: &str) -> Option<String> {
    read_text(host, rel).ok().flatten()
}

/// The trimmed text of `rel`, `None` when missing, unreadable or empty.
fn read_trimmed(host: &HostRoot, rel: &str) -> Option<String> {
    let text = read_opt(host, rel)?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

/// os-release: [`OS_RELEASE`], else (only when it does not exist)
/// [`OS_RELEASE_FALLBACK`].
fn read_os_release(host: &HostRoot) -> Option<String> {
    match read_text(host, OS_RELEASE) {
        Ok(Some(text)) => Some(text),
        Ok(None) => read_opt(host, OS_RELEASE_FALLBACK),
        Err(()) => None,
    }
}

/// Xen's version from [`XEN_MAJOR`], [`XEN_MINOR`] and [`XEN_EXTRA`].
fn read_xen_version(host: &HostRoot) -> Option<String> {
    let major = read_trimmed(host, XEN_MAJOR)?;
    let minor = read_trimmed(host, XEN_MINOR)?;
    let extra = read_trimmed(host, XEN_EXTRA).unwrap_or_default();
    Some(format!("{major}.{minor}{extra}"))
}

/// Read every fact of the host; a missing or unreadable file leaves its
/// fact `None` or empty (an unreadable one is logged once).
pub fn read_facts(host: &HostRoot) -> HostFacts {
    let meminfo = read_opt(host, MEMINFO);
    let meminfo = meminfo.as_deref();
    HostFacts {
        inventory: read_opt(host, INVENTORY).map(|t| parse_inventory(&t)),
        os_release: read_os_release(host).map(|t| parse_os_release(&t)),
        kernel_release: read_trimmed(host, KERNEL_RELEASE),
        xen_version: read_xen_version(host),
        xen_capabilities: read_opt(host, XEN_CAPABILITIES)
            .map(|t| t.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default(),
        memory_total_kib: meminfo.and_then(|t| parse_meminfo_kib(t, "MemTotal")),
        memory_free_kib: meminfo.and_then(|t| {
            parse_meminfo_kib(t, "MemAvailable").or_else(|| parse_meminfo_kib(t, "MemFree"))
        }),
        hostname: read_trimmed(host, HOSTNAME),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::mock::{MockHostBuilder, Profile, create};

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn inventory_lines() {
        let cases: &[(&str, &[(&str, &str)])] = &[
            ("", &[]),
            ("PRODUCT_BRAND='XCP-ng'\n", &[("PRODUCT_BRAND", "XCP-ng")]),
            ("A=\"x y\"\n", &[("A", "x y")]),
            ("A=bare\n", &[("A", "bare")]),
            ("  A = ' spaced '  \n", &[("A", " spaced ")]),
            ("A='mixed\"\n", &[("A", "'mixed\"")]),
            ("A=''\n", &[("A", "")]),
            ("A='\n", &[("A", "'")]),
            ("A='x=y'\n", &[("A", "x=y")]),
            ("A='''\n", &[("A", "'")]),
            ("# A='c'\n\nno equals\n=v\nB='2'\n", &[("B", "2")]),
            ("A='1'\nB='2'\nA='3'\n", &[("A", "3"), ("B", "2")]),
            ("A='1'\r\nB='2'\r\n", &[("A", "1"), ("B", "2")]),
        ];
        for (text, want) in cases {
            assert_eq!(parse_inventory(text), pairs(want), "{text:?}");
        }
    }

    #[test]
    fn os_release_lines() {
        let cases: &[(&str, &[(&str, &str)])] = &[
            ("", &[]),
            ("NAME=\"XCP-ng\"\n", &[("NAME", "XCP-ng")]),
            ("ID=xenenterprise\n", &[("ID", "xenenterprise")]),
            ("A='single \\\" kept'\n", &[("A", "single \\\" kept")]),
            (r#"A="q\"d""#, &[("A", "q\"d")]),
            (r#"A="b\\s""#, &[("A", "b\\s")]),
            (r#"A="t\`k\$v""#, &[("A", "t`k$v")]),
            (r#"A="keep\n""#, &[("A", "keep\\n")]),
            (r#"A="trailing\"#, &[("A", "trailing\\")]),
            (r#"A="unclosed"#, &[("A", "unclosed")]),
            (r#"A="x" # after"#, &[("A", "x")]),
            ("A=\"\"\n", &[("A", "")]),
            ("# NAME=x\n\nnoeq\nB=\"2\"\n", &[("B", "2")]),
            ("A=1\nB=2\nA=\"3\"\n", &[("A", "3"), ("B", "2")]),
        ];
        for (text, want) in cases {
            assert_eq!(parse_os_release(text), pairs(want), "{text:?}");
        }
    }

    #[test]
    fn meminfo_values() {
        let text = "MemTotal:       16318412 kB\nMemFree:         1234 kB\nHugePages_Total:       0\nBad: x kB\n";
        let cases: &[(&str, Option<u64>)] = &[
            ("MemTotal", Some(16_318_412)),
            ("MemFree", Some(1234)),
            ("HugePages_Total", Some(0)),
            ("MemAvailable", None),
            ("Mem", None),
            ("Bad", None),
        ];
        for (key, want) in cases {
            assert_eq!(parse_meminfo_kib(text, key), *want, "{key}");
        }
        assert_eq!(parse_meminfo_kib("", "MemTotal"), None);
    }

    #[test]
    fn demo_host_facts() {
        let dir = tempfile::tempdir().unwrap();
        create(dir.path(), Profile::Demo).unwrap();
        let facts = read_facts(&HostRoot::new(dir.path()));
        let inventory = [
            ("PRODUCT_BRAND", "XCP-ng"),
            ("PRODUCT_NAME", "xenenterprise"),
            ("PRODUCT_VERSION", "8.3.0"),
            ("PRODUCT_VERSION_TEXT", "8.3"),
            ("PRODUCT_VERSION_TEXT_SHORT", "8.3"),
            ("PLATFORM_NAME", "XCP"),
            ("PLATFORM_VERSION", "3.4.0"),
            ("BUILD_NUMBER", "cloud"),
        ];
        for (key, want) in inventory {
            assert_eq!(facts.inventory_value(key), Some(want), "{key}");
        }
        for key in ["INSTALLATION_UUID", "CONTROL_DOMAIN_UUID"] {
            let id = facts.inventory_value(key).unwrap();
            assert!(uuid::Uuid::parse_str(id).is_ok(), "{key}={id}");
        }
        let os_release = [
            ("NAME", "XCP-ng"),
            ("VERSION", "8.3.0"),
            ("ID", "xenenterprise"),
            ("ID_LIKE", "centos rhel fedora"),
            ("VERSION_ID", "8.3.0"),
            ("PRETTY_NAME", "XCP-ng 8.3.0"),
        ];
        for (key, want) in os_release {
            assert_eq!(facts.os_release_value(key), Some(want), "{key}");
        }
        assert_eq!(facts.kernel_release.as_deref(), Some("4.19.0+1"));
        assert_eq!(facts.xen_version.as_deref(), Some("4.17.5-3"));
        assert_eq!(
            facts.xen_capabilities,
            [
                "xen-3.0-x86_64",
                "hvm-3.0-x86_32",
                "hvm-3.0-x86_32p",
                "hvm-3.0-x86_64"
            ]
        );
        let total = facts.memory_total_kib.unwrap();
        let free = facts.memory_free_kib.unwrap();
        assert!(free < total && total > 4 << 20, "{free} / {total}");
        assert_eq!(facts.hostname.as_deref(), Some("pcipass-mock"));
    }

    #[test]
    fn builder_overrides() {
        let dir = tempfile::tempdir().unwrap();
        MockHostBuilder::new()
            .inventory(None)
            .os_release(Some("ID=other\n"))
            .write(dir.path())
            .unwrap();
        let facts = read_facts(&HostRoot::new(dir.path()));
        assert_eq!(facts.inventory, None);
        assert_eq!(facts.os_release, Some(pairs(&[("ID", "other")])));
    }

    #[test]
    fn empty_root() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_facts(&HostRoot::new(dir.path())), HostFacts::default());
    }

    #[test]
    fn partial_files() {
        let dir = tempfile::tempdir().unwrap();
        let put = |rel: &str, text: &str| {
            let path = dir.path().join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        put(OS_RELEASE_FALLBACK, "ID=fallback\n");
        put(XEN_MAJOR, "4\n");
        put(XEN_EXTRA, ".5\n");
        put(HOSTNAME, "  \n");
        put(MEMINFO, "MemTotal: 100 kB\nMemFree: 40 kB\n");
        // Present but unreadable: a directory where a file should be.
        std::fs::create_dir_all(dir.path().join(KERNEL_RELEASE)).unwrap();
        let facts = read_facts(&HostRoot::new(dir.path()));
        assert_eq!(
            facts,
            HostFacts {
                os_release: Some(pairs(&[("ID", "fallback")])),
                memory_total_kib: Some(100),
                memory_free_kib: Some(40),
                ..HostFacts::default()
            }
        );
        put(XEN_MINOR, "17\n");
        assert_eq!(
            read_facts(&HostRoot::new(dir.path()))
                .xen_version
                .as_deref(),
            Some("4.17.5")
        );
    }
}
