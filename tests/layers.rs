//! The layering rule of `src/lib.rs`, checked: every `crate::` path in a
//! layer's non-test code names only that layer or one it may use.
//!
//! ```text
//! wire → api → domain → host
//!          ↘    ↓   ↘    ↓
//!          store  idl   vocab (and value) below everything
//! ```

#![expect(
    clippy::unwrap_used,
    reason = "a test: a failure to read the tree should fail it"
)]

use std::collections::BTreeSet;
use std::path::Path;

/// Each layer (a top-level module of the crate) with the modules it may
/// name besides itself.
const RULES: &[(&str, &[&str])] = &[
    ("vocab", &[]),
    ("value", &["vocab"]),
    ("host", &["vocab"]),
    ("store", &["vocab", "value"]),
    ("idl", &["vocab", "value"]),
    ("domain", &["vocab", "host"]),
    ("api", &["vocab", "value", "idl", "store", "domain"]),
    ("wire", &["vocab", "value", "idl", "api"]),
    (
        "cli",
        &[
            "vocab", "value", "idl", "api", "wire", "domain", "host", "store",
        ],
    ),
];

const MODULES: &[&str] = &[
    "vocab", "value", "host", "store", "idl", "domain", "api", "wire", "cli", "daemon", "config",
    "logging",
];

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The modules named by `crate::NAME` in the code before the file's
/// first `#[cfg(test)]`.
fn named_modules(text: &str) -> BTreeSet<String> {
    let code = text.split("#[cfg(test)]").next().unwrap_or("");
    let mut found = BTreeSet::new();
    for line in code.lines() {
        let line = line.trim_start();
        if line.starts_with("//") {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if MODULES.contains(&name.as_str()) {
                found.insert(name);
            }
        }
    }
    found
}

#[test]
fn every_layer_names_only_the_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut broken = Vec::new();
    for (layer, allowed) in RULES {
        let mut files = Vec::new();
        let dir = src.join(layer);
        if dir.is_dir() {
            rust_files(&dir, &mut files);
        }
        let single = src.join(format!("{layer}.rs"));
        if single.is_file() {
            files.push(single);
        }
        assert!(!files.is_empty(), "layer {layer} has no files");
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for name in named_modules(&text) {
                if name != *layer && !allowed.contains(&name.as_str()) {
                    broken.push(format!(
                        "{} names crate::{name}",
                        file.strip_prefix(&src).unwrap().display()
                    ));
                }
            }
        }
    }
    assert!(broken.is_empty(), "layering broken:\n{}", broken.join("\n"));
}

#[test]
fn the_scan_sees_a_crossing() {
    let text = "use crate::domain::PciAddress;\n// crate::api in a comment\n#[cfg(test)]\nuse crate::api::Role;";
    assert_eq!(
        named_modules(text).into_iter().collect::<Vec<_>>(),
        ["domain"]
    );
}
