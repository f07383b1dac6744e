//! What the host is, as the API describes it: the product and versions of
//! `host.software_version`, the Xen capabilities, the memory of
//! `host_metrics`. [`describe`] is a pure function of the facts the host
//! layer read (`crate::host::facts`).
//!
//! The keys are xapi's (`ocaml/util/xapi_version.ml` and the host record
//! xapi makes at start): on XCP-ng and XenServer the product comes from
//! `/etc/xensource-inventory` (`PRODUCT_BRAND`, `PRODUCT_VERSION`, ...),
//! with xapi's defaults for a missing key (`""`, and `0.0.0` for
//! `platform_version`); elsewhere (Debian, Fedora, ...) from os-release(5)
//! (`NAME`, `VERSION_ID`, `VERSION`, `PRETTY_NAME`). Nothing is made up:
//! a host that says nothing of itself gets empty values, never a brand.

use crate::host::facts::HostFacts;

/// The `software_version` key under which pcipass reports its own version
/// (a name of its own: clients read `product_*` for the host's product).
pub const PCIPASS_VERSION_KEY: &str = "pcipass";

/// The host as the API describes it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostDescription {
    /// `host.software_version`, in a stable order.
    pub software_version: Vec<(String, String)>,
    /// The kernel's host name, when it has one.
    pub hostname: Option<String>,
    /// Xen's capabilities (`xen-3.0-x86_64`, `hvm-3.0-x86_64`, ...).
    pub capabilities: Vec<String>,
    /// Total memory in bytes, when known.
    pub memory_total: Option<i64>,
    /// Free (available) memory in bytes, when known.
    pub memory_free: Option<i64>,
    /// Where the product description came from.
    pub source: ProductSource,
}

impl HostDescription {
    /// The value of a `software_version` key (`""` when absent).
    pub fn software(&self, key: &str) -> &str {
        self.software_version
            .iter()
            .find(|(k, _)| k == key)
            .map_or("", |(_, v)| v.as_str())
    }
}

/// Where the product description came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ProductSource {
    /// XCP-ng's or XenServer's inventory.
    Inventory,
    /// os-release(5).
    OsRelease,
    /// Neither file: the product is unknown.
    #[default]
    Unknown,
}

/// The source [`describe`] takes the product from.
pub fn product_source(facts: &HostFacts) -> ProductSource {
    if facts.inventory.is_some() {
        ProductSource::Inventory
    } else if facts.os_release.is_some() {
        ProductSource::OsRelease
    } else {
        ProductSource::Unknown
    }
}

/// Describe the host from what it says about itself.
pub fn describe(facts: &HostFacts) -> HostDescription {
    let get_inv = |key: &str| facts.inventory_value(key).unwrap_or("").to_owned();
    let get_os = |key: &str| facts.os_release_value(key).unwrap_or("").to_owned();
    let source = product_source(facts);
    let product: [(&str, String); 7] = match source {
        ProductSource::Inventory => [
            ("product_brand", get_inv("PRODUCT_BRAND")),
            ("product_version", get_inv("PRODUCT_VERSION")),
            ("product_version_text", get_inv("PRODUCT_VERSION_TEXT")),
            (
                "product_version_text_short",
                get_inv("PRODUCT_VERSION_TEXT_SHORT"),
            ),
            ("platform_name", get_inv("PLATFORM_NAME")),
            (
                "platform_version",
                facts
                    .inventory_value("PLATFORM_VERSION")
                    .unwrap_or("0.0.0")
                    .to_owned(),
            ),
            ("build_number", get_inv("BUILD_NUMBER")),
        ],
        ProductSource::OsRelease => [
            ("product_brand", get_os("NAME")),
            ("product_version", get_os("VERSION_ID")),
            (
                "product_version_text",
                facts
                    .os_release_value("VERSION")
                    .or_else(|| facts.os_release_value("PRETTY_NAME"))
                    .unwrap_or("")
                    .to_owned(),
            ),
            ("product_version_text_short", get_os("VERSION_ID")),
            ("platform_name", String::new()),
            ("platform_version", "0.0.0".to_owned()),
            ("build_number", get_os("BUILD_ID")),
        ],
        ProductSource::Unknown => [
            ("product_brand", String::new()),
            ("product_version", String::new()),
            ("product_version_text", String::new()),
            ("product_version_text_short", String::new()),
            ("platform_name", String::new()),
            ("platform_version", "0.0.0".to_owned()),
            ("build_number", String::new()),
        ],
    };
    let mut software_version: Vec<(String, String)> = product
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    let mut add = |key: &str, value: Option<&str>| {
        if let Some(value) = value {
            software_version.push((key.to_owned(), value.to_owned()));
        }
    };
    add("hostname", facts.hostname.as_deref());
    add("xen", facts.xen_version.as_deref());
    add("linux", facts.kernel_release.as_deref());
    add(PCIPASS_VERSION_KEY, Some(env!("CARGO_PKG_VERSION")));
    let bytes = |kib: Option<u64>| kib.and_then(|k| i64::try_from(k.saturating_mul(1024)).ok());
    HostDescription {
        software_version,
        hostname: facts.hostname.clone(),
        capabilities: facts.xen_capabilities.clone(),
        memory_total: bytes(facts.memory_total_kib),
        memory_free: bytes(facts.memory_free_kib),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::facts::{parse_inventory, parse_os_release};

    fn value<'a>(d: &'a HostDescription, key: &str) -> Option<&'a str> {
        d.software_version
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn the_source_is_the_file_the_product_came_from() {
        let inv = HostFacts {
            inventory: Some(Vec::new()),
            os_release: Some(Vec::new()),
            ..HostFacts::default()
        };
        assert_eq!(describe(&inv).source, ProductSource::Inventory);
        let os = HostFacts {
            os_release: Some(Vec::new()),
            ..HostFacts::default()
        };
        assert_eq!(describe(&os).source, ProductSource::OsRelease);
        assert_eq!(
            describe(&HostFacts::default()).source,
            ProductSource::Unknown
        );
        assert_eq!(describe(&os).software("product_brand"), "");
    }

    #[test]
    fn an_xcp_ng_host_is_described_by_its_inventory() {
        let facts = HostFacts {
            inventory: Some(parse_inventory(
                "PRODUCT_BRAND='XCP-ng'\nPRODUCT_VERSION='8.3.0'\nPLATFORM_VERSION='3.4.0'\nBUILD_NUMBER='cloud'\n",
            )),
            // The inventory wins over os-release, as in xapi.
            os_release: Some(parse_os_release("NAME=\"Other\"\nVERSION_ID=1\n")),
            hostname: Some("h1".into()),
            xen_version: Some("4.17.5-3".into()),
            kernel_release: Some("4.19.0+1".into()),
            memory_total_kib: Some(2),
            ..HostFacts::default()
        };
        let d = describe(&facts);
        assert_eq!(value(&d, "product_brand"), Some("XCP-ng"));
        assert_eq!(value(&d, "product_version"), Some("8.3.0"));
        assert_eq!(value(&d, "platform_version"), Some("3.4.0"));
        assert_eq!(value(&d, "build_number"), Some("cloud"));
        // xapi's default for a key the inventory lacks.
        assert_eq!(value(&d, "product_version_text"), Some(""));
        assert_eq!(value(&d, "xen"), Some("4.17.5-3"));
        assert_eq!(value(&d, "linux"), Some("4.19.0+1"));
        assert_eq!(value(&d, "hostname"), Some("h1"));
        assert_eq!(
            value(&d, PCIPASS_VERSION_KEY),
            Some(env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(d.memory_total, Some(2048));
        assert_eq!(d.memory_free, None);
    }

    #[test]
    fn a_plain_xen_dom0_is_described_by_os_release() {
        let facts = HostFacts {
            os_release: Some(parse_os_release(
                "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\nID=debian\n",
            )),
            ..HostFacts::default()
        };
        let d = describe(&facts);
        assert_eq!(value(&d, "product_brand"), Some("Debian GNU/Linux"));
        assert_eq!(value(&d, "product_version"), Some("12"));
        assert_eq!(value(&d, "product_version_text"), Some("12 (bookworm)"));
        assert_eq!(value(&d, "platform_version"), Some("0.0.0"));
        assert_eq!(value(&d, "xen"), None);
    }

    #[test]
    fn a_host_that_says_nothing_gets_no_brand() {
        let d = describe(&HostFacts::default());
        assert_eq!(value(&d, "product_brand"), Some(""));
        assert_eq!(value(&d, "product_version"), Some(""));
        assert_eq!(value(&d, "platform_version"), Some("0.0.0"));
        assert!(d.capabilities.is_empty());
    }

    #[test]
    fn no_key_looks_like_a_supplemental_pack() {
        // Xen Orchestra takes a software_version key with exactly one ':'
        // for a supplemental pack and splits its value; none may have one.
        let d = describe(&HostFacts {
            inventory: Some(Vec::new()),
            hostname: Some("h".into()),
            xen_version: Some("4.17".into()),
            kernel_release: Some("6.1".into()),
            ..HostFacts::default()
        });
        assert!(d.software_version.iter().all(|(k, _)| !k.contains(':')));
    }
}
