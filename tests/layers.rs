//! The layering rule of `src/lib.rs`, checked on the parsed source: every
//! path in a layer's non-test code that leads into the crate names only
//! that layer or one it may use.
//!
//! ```text
//! wire → api → domain → host
//!          ↘    ↓   ↘    ↓
//!          store  idl   vocab (and value) below everything
//! ```
//!
//! And the API layer reaches the domain only through the domain surface:
//! `crate::domain::service` and what `src/domain/mod.rs` re-exports at its
//! top level.
//!
//! Every file is parsed with `syn`. A path counts wherever it is written:
//! in a `use` (grouped, renamed, glob, `pub use` re-exports), a type, an
//! expression, a pattern, an `impl` header, a visibility, or the tokens of
//! a macro call. `crate::`, `self::` and `super::` paths are resolved
//! against the file's module path (`src/domain/x/y.rs` is
//! `crate::domain::x::y`; `super::` climbs from there), and a path that
//! starts with a name the module imported is resolved through that import.
//! Code under `#[cfg(test)]` is exempt, decided by the attribute on the
//! item (a module, an `impl`, a function, a field ...); a file whose
//! `mod` declaration is `#[cfg(test)]` is exempt as a whole.

#![expect(
    clippy::unwrap_used,
    reason = "a test: a failure to read the tree should fail it"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use proc_macro2::{Spacing, TokenStream, TokenTree};
use syn::punctuated::Punctuated;
use syn::visit::{self, Visit};

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

/// The module of the domain surface; with the names `src/domain/mod.rs`
/// re-exports, the only names the API layer may put after
/// `crate::domain::`.
const DOMAIN_SURFACE: &str = "service";

/// A module path inside the crate, without the leading `crate`.
type ModPath = Vec<String>;

/// One path written in a file.
#[derive(Debug)]
struct Written {
    /// The module (file module plus inline modules) it is written in.
    module: ModPath,
    /// Its segments as written (`super`, `self`, `crate` included; `*`
    /// for a glob import).
    segments: Vec<String>,
    /// The line of its first segment.
    line: usize,
}

/// What one file says: the paths it writes, the names its `use`s bring
/// into scope, and its `#[cfg(test)]` modules.
#[derive(Debug, Default)]
struct Scan {
    module: ModPath,
    written: Vec<Written>,
    /// `(module, local name)` → the segments the `use` wrote.
    imports: Vec<(ModPath, String, Vec<String>)>,
    /// Modules declared under `#[cfg(test)]`, inline or in their own file.
    test_modules: Vec<ModPath>,
}

/// Whether `meta` (the predicate of a `cfg`) holds only under test.
fn implies_test(meta: &syn::Meta) -> bool {
    match meta {
        syn::Meta::Path(p) => p.is_ident("test"),
        syn::Meta::List(list) if list.path.is_ident("all") => list
            .parse_args_with(Punctuated::<syn::Meta, syn::Token![,]>::parse_terminated)
            .is_ok_and(|all| all.iter().any(implies_test)),
        _ => false,
    }
}

/// Whether the attributes put the item under `#[cfg(test)]` (or a `cfg`
/// that requires `test`).
fn test_only(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg") && a.parse_args::<syn::Meta>().is_ok_and(|m| implies_test(&m))
    })
}

fn item_attrs(item: &syn::Item) -> &[syn::Attribute] {
    use syn::Item;
    match item {
        Item::Const(i) => &i.attrs,
        Item::Enum(i) => &i.attrs,
        Item::ExternCrate(i) => &i.attrs,
        Item::Fn(i) => &i.attrs,
        Item::ForeignMod(i) => &i.attrs,
        Item::Impl(i) => &i.attrs,
        Item::Macro(i) => &i.attrs,
        Item::Mod(i) => &i.attrs,
        Item::Static(i) => &i.attrs,
        Item::Struct(i) => &i.attrs,
        Item::Trait(i) => &i.attrs,
        Item::TraitAlias(i) => &i.attrs,
        Item::Type(i) => &i.attrs,
        Item::Union(i) => &i.attrs,
        Item::Use(i) => &i.attrs,
        _ => &[],
    }
}

fn impl_item_attrs(item: &syn::ImplItem) -> &[syn::Attribute] {
    match item {
        syn::ImplItem::Const(i) => &i.attrs,
        syn::ImplItem::Fn(i) => &i.attrs,
        syn::ImplItem::Type(i) => &i.attrs,
        syn::ImplItem::Macro(i) => &i.attrs,
        _ => &[],
    }
}

fn trait_item_attrs(item: &syn::TraitItem) -> &[syn::Attribute] {
    match item {
        syn::TraitItem::Const(i) => &i.attrs,
        syn::TraitItem::Fn(i) => &i.attrs,
        syn::TraitItem::Type(i) => &i.attrs,
        syn::TraitItem::Macro(i) => &i.attrs,
        _ => &[],
    }
}

fn line_of(span: proc_macro2::Span) -> usize {
    span.start().line
}

impl Scan {
    fn write(&mut self, segments: Vec<String>, line: usize) {
        self.written.push(Written {
            module: self.module.clone(),
            segments,
            line,
        });
    }

    /// The leaves of a `use` tree: each path, and the name it brings in.
    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        let leaf = |scan: &mut Scan, ident: &syn::Ident, local: Option<&syn::Ident>| {
            let mut path = prefix.clone();
            if ident != "self" {
                path.push(ident.to_string());
            }
            let name = match (local, path.last()) {
                (Some(rename), _) => Some(rename.to_string()),
                (None, Some(last)) => Some(last.clone()),
                (None, None) => None,
            };
            if let Some(name) = name.filter(|n| n != "_") {
                scan.imports.push((scan.module.clone(), name, path.clone()));
            }
            scan.write(path, line_of(ident.span()));
        };
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => leaf(self, &n.ident, None),
            syn::UseTree::Rename(r) => leaf(self, &r.ident, Some(&r.rename)),
            syn::UseTree::Glob(g) => {
                let mut path = prefix.clone();
                path.push("*".into());
                self.write(path, line_of(g.star_token.span));
            }
            syn::UseTree::Group(g) => {
                for tree in &g.items {
                    self.use_tree(prefix, tree);
                }
            }
        }
    }

    /// The `crate::`, `self::` and `super::` paths in a macro call's
    /// tokens (which `syn` leaves unparsed).
    fn tokens(&mut self, tokens: TokenStream) {
        let tokens: Vec<TokenTree> = tokens.into_iter().collect();
        let is_sep = |at: usize| {
            matches!((tokens.get(at), tokens.get(at + 1)),
                (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b)))
                    if a.as_char() == ':' && a.spacing() == Spacing::Joint && b.as_char() == ':')
        };
        let mut at = 0;
        while at < tokens.len() {
            match &tokens[at] {
                TokenTree::Group(g) => self.tokens(g.stream()),
                TokenTree::Ident(first)
                    if (first == "crate" || first == "super" || first == "self")
                        && is_sep(at + 1) =>
                {
                    let mut segments = vec![first.to_string()];
                    while is_sep(at + 1) {
                        let Some(TokenTree::Ident(next)) = tokens.get(at + 3) else {
                            break;
                        };
                        segments.push(next.to_string());
                        at += 3;
                    }
                    self.write(segments, line_of(first.span()));
                }
                _ => {}
            }
            at += 1;
        }
    }
}

impl<'ast> Visit<'ast> for Scan {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        if test_only(item_attrs(item)) {
            if let syn::Item::Mod(m) = item {
                let mut module = self.module.clone();
                module.push(m.ident.to_string());
                self.test_modules.push(module);
            }
            return;
        }
        visit::visit_item(self, item);
    }

    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        self.module.push(m.ident.to_string());
        visit::visit_item_mod(self, m);
        self.module.pop();
    }

    fn visit_impl_item(&mut self, item: &'ast syn::ImplItem) {
        if !test_only(impl_item_attrs(item)) {
            visit::visit_impl_item(self, item);
        }
    }

    fn visit_trait_item(&mut self, item: &'ast syn::TraitItem) {
        if !test_only(trait_item_attrs(item)) {
            visit::visit_trait_item(self, item);
        }
    }

    fn visit_field(&mut self, field: &'ast syn::Field) {
        if !test_only(&field.attrs) {
            visit::visit_field(self, field);
        }
    }

    fn visit_variant(&mut self, variant: &'ast syn::Variant) {
        if !test_only(&variant.attrs) {
            visit::visit_variant(self, variant);
        }
    }

    fn visit_stmt(&mut self, stmt: &'ast syn::Stmt) {
        if let syn::Stmt::Local(local) = stmt
            && test_only(&local.attrs)
        {
            return;
        }
        visit::visit_stmt(self, stmt);
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        if u.leading_colon.is_none() {
            self.use_tree(&mut Vec::new(), &u.tree);
        }
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        if path.leading_colon.is_none()
            && let Some(first) = path.segments.first()
        {
            let segments = path.segments.iter().map(|s| s.ident.to_string()).collect();
            self.write(segments, line_of(first.ident.span()));
        }
        visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.tokens(mac.tokens.clone());
        visit::visit_macro(self, mac);
    }
}

/// The module path of a file, from its path under `src/`
/// (`domain/x/y.rs` → `domain::x::y`, `domain/mod.rs` → `domain`).
fn module_of(file: &str) -> ModPath {
    let mut parts: Vec<String> = file
        .trim_end_matches(".rs")
        .split('/')
        .map(String::from)
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts
}

/// Parse one file under `src/` (named by its path there).
fn scan(file: &str, text: &str) -> Result<Scan, String> {
    let parsed = syn::parse_file(text)
        .map_err(|e| format!("{file}:{}: does not parse: {e}", line_of(e.span()),))?;
    let mut scan = Scan {
        module: module_of(file),
        ..Scan::default()
    };
    if test_only(&parsed.attrs) {
        // `#![cfg(test)]`: the whole file is test code.
        scan.test_modules.push(scan.module.clone());
    } else {
        scan.visit_file(&parsed);
    }
    Ok(scan)
}

/// The names a `use` brought into each module, resolved to the crate.
type Imports = BTreeMap<(ModPath, String), ModPath>;

/// `segments`, written in `module`, as a path from the crate root, or
/// `None` when it does not lead into the crate (`std::...`, a local
/// name). Imported names are followed, also after `self::`/`super::`.
fn resolve(module: &[String], segments: &[String], imports: &Imports) -> Option<ModPath> {
    let (first, rest) = segments.split_first()?;
    let mut path: ModPath = match first.as_str() {
        "crate" => rest.to_vec(),
        "self" | "super" => {
            let mut base = module.to_vec();
            let mut rest = segments;
            if rest.first().is_some_and(|s| s == "self") {
                rest = &rest[1..];
            }
            while rest.first().is_some_and(|s| s == "super") {
                base.pop()?;
                rest = &rest[1..];
            }
            base.extend_from_slice(rest);
            base
        }
        // A single name is the import itself, or a local value.
        _ if rest.is_empty() => return None,
        _ => {
            let target = imports.get(&(module.to_vec(), first.clone()))?;
            target.iter().chain(rest).cloned().collect()
        }
    };
    // Follow imports met on the way (`self::devices::x` where `devices`
    // was imported), a few times at most.
    for _ in 0..8 {
        let found = (0..path.len()).find_map(|at| {
            imports
                .get(&(path[..at].to_vec(), path[at].clone()))
                .filter(|target| target[..] != path[..=at])
                .map(|target| (at, target))
        });
        let Some((at, target)) = found else { break };
        path = target.iter().chain(&path[at + 1..]).cloned().collect();
    }
    Some(path)
}

/// The names the API layer may put after `crate::domain::`.
#[derive(Debug)]
struct Surface(BTreeSet<String>);

impl Surface {
    /// `service`, and every name `src/domain/mod.rs` re-exports at its top
    /// level (`pub use`).
    fn from_domain_mod(text: &str) -> Surface {
        let parsed = syn::parse_file(text).unwrap();
        let mut names = BTreeSet::from([DOMAIN_SURFACE.to_owned()]);
        for item in &parsed.items {
            if let syn::Item::Use(u) = item
                && matches!(u.vis, syn::Visibility::Public(_))
                && !test_only(&u.attrs)
            {
                let mut scan = Scan::default();
                scan.use_tree(&mut Vec::new(), &u.tree);
                names.extend(scan.imports.into_iter().map(|(_, name, _)| name));
            }
        }
        Surface(names)
    }
}

/// Every crossing in one file under `src/` (named by its path there): one
/// line each, `file:line: path as written (as resolved): why`.
fn violations(file: &str, scan: &Scan, surface: &Surface) -> Vec<String> {
    let Some(layer) = scan.module.first() else {
        return Vec::new();
    };
    let Some((_, allowed)) = RULES.iter().find(|(name, _)| name == layer) else {
        return Vec::new();
    };
    let mut imports = Imports::new();
    for _ in 0..2 {
        for (module, name, segments) in &scan.imports {
            if let Some(target) = resolve(module, segments, &imports) {
                imports.insert((module.clone(), name.clone()), target);
            }
        }
    }
    let mut found = BTreeSet::new();
    for w in &scan.written {
        let Some(path) = resolve(&w.module, &w.segments, &imports) else {
            continue;
        };
        let Some(top) = path.first() else { continue };
        let why = if top == "*" {
            format!("a glob of the crate root names every layer, from {layer}")
        } else if !MODULES.contains(&top.as_str()) {
            continue;
        } else if top != layer && !allowed.contains(&top.as_str()) {
            format!("{layer} may not name {top}")
        } else if layer == "api"
            && top == "domain"
            && path.get(1).is_some_and(|next| !surface.0.contains(next))
        {
            "the API reaches the domain only through the domain surface".to_owned()
        } else {
            continue;
        };
        let written = w.segments.join("::");
        let resolved = format!("crate::{}", path.join("::"));
        let shown = if written == resolved {
            written
        } else {
            format!("{written} (= {resolved})")
        };
        found.insert((w.line, format!("{file}:{}: {shown}: {why}", w.line)));
    }
    found.into_iter().map(|(_, line)| line).collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The crate's domain surface, from `src/domain/mod.rs`.
fn surface() -> Surface {
    Surface::from_domain_mod(&std::fs::read_to_string(src().join("domain").join("mod.rs")).unwrap())
}

/// Every crossing in the crate's non-test code.
fn crate_violations() -> Vec<String> {
    let src = src();
    let surface = surface();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut scans = Vec::new();
    let mut broken = Vec::new();
    for file in files {
        let name = file
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        if name.starts_with("bin/") {
            continue; // Each binary is its own crate: `crate::` is not pcipass.
        }
        match scan(&name, &std::fs::read_to_string(&file).unwrap()) {
            Ok(scan) => scans.push((name, scan)),
            Err(e) => broken.push(e),
        }
    }
    let test_modules: Vec<ModPath> = scans
        .iter()
        .flat_map(|(_, s)| s.test_modules.iter().cloned())
        .collect();
    for (layer, _) in RULES {
        assert!(
            scans
                .iter()
                .any(|(_, s)| s.module.first().map(String::as_str) == Some(*layer)),
            "layer {layer} has no files"
        );
    }
    for (name, scan) in &scans {
        if test_modules.iter().any(|t| scan.module.starts_with(t)) {
            continue;
        }
        broken.extend(violations(name, scan, &surface));
    }
    broken
}

#[test]
fn every_layer_names_only_the_layers_below_it() {
    let broken = crate_violations();
    let surface = surface();
    assert!(
        broken.is_empty(),
        "layering broken:\n{}\n(the domain surface: crate::domain::{{{}}})",
        broken.join("\n"),
        surface.0.iter().cloned().collect::<Vec<_>>().join(", ")
    );
}

/// The crossings the checker reports in `text`, as if it were the file
/// `file` under `src/`, with the real domain surface.
fn check(file: &str, text: &str) -> Vec<String> {
    let surface = surface();
    violations(file, &scan(file, text).unwrap(), &surface)
}

#[test]
fn the_surface_is_service_and_the_domain_root_re_exports() {
    let surface = surface();
    for name in ["service", "Dom0Access", "PciAddress"] {
        assert!(surface.0.contains(name), "{name}: {surface:?}");
    }
    assert!(!surface.0.contains("bootcfg"), "{surface:?}");
}

#[test]
fn the_check_sees_each_kind_of_crossing() {
    let cases: &[(&str, &str, &[&str])] = &[
        // Grouped imports, nested groups, renames, globs.
        (
            "domain/x.rs",
            "use crate::{api, host};\nuse crate::{vocab, wire::{self as w}};\nuse crate::store::*;",
            &[
                "domain/x.rs:1: crate::api: domain may not name api",
                "domain/x.rs:2: crate::wire: domain may not name wire",
                "domain/x.rs:3: crate::store::*: domain may not name store",
            ],
        ),
        // `super::` climbing out of the layer, from a file and from an
        // inline module.
        (
            "domain/x.rs",
            "use super::super::api::Role;\nmod inner { fn f() -> super::super::super::wire::W { todo!() } }",
            &[
                "domain/x.rs:1: super::super::api::Role (= crate::api::Role): domain may not name api",
                "domain/x.rs:2: super::super::super::wire::W (= crate::wire::W): domain may not name wire",
            ],
        ),
        (
            "domain/x/y.rs",
            "fn f(_: super::super::super::api::X) {}\nfn g(_: super::super::hide::HideView) {}",
            &[
                "domain/x/y.rs:1: super::super::super::api::X (= crate::api::X): domain may not name api",
            ],
        ),
        // A re-export, a path in an expression and in a macro call.
        (
            "host/x.rs",
            "pub use crate::domain::Dom0Access;\nfn f() { let _ = crate::store::Store::open(); }\nfn g() { tracing::warn!(\"{}\", crate::api::X); }",
            &[
                "host/x.rs:1: crate::domain::Dom0Access: host may not name domain",
                "host/x.rs:2: crate::store::Store::open: host may not name store",
                "host/x.rs:3: crate::api::X: host may not name api",
            ],
        ),
        // The API past the domain surface: an impl header, a grouped
        // import, an import followed through `self::` and through a
        // module alias; the surface itself is fine.
        (
            "api/error.rs",
            "use crate::domain::service::DomainError;\nuse crate::domain::{Dom0Access, PciAddress, self};\n\
             impl From<crate::domain::bootcfg::BootConfigError> for X {}\n\
             use crate::domain::{devices::{self, PciFunction}, service};\n\
             fn f() { self::domain::grub::parse(); domain::about::describe(); service::status(); }",
            &[
                "api/error.rs:3: crate::domain::bootcfg::BootConfigError: the API reaches the domain only through the domain surface",
                "api/error.rs:4: crate::domain::devices: the API reaches",
                "api/error.rs:4: crate::domain::devices::PciFunction: the API reaches",
                "api/error.rs:5: self::domain::grub::parse (= crate::domain::grub::parse): the API reaches",
                "api/error.rs:5: domain::about::describe (= crate::domain::about::describe): the API reaches",
            ],
        ),
    ];
    for (file, text, expected) in cases {
        let found = check(file, text);
        for want in *expected {
            assert!(
                found.iter().any(|f| f.starts_with(want)),
                "{file}: {want:?} not reported in {found:#?}"
            );
        }
        assert_eq!(found.len(), expected.len(), "{file}: {found:#?}");
    }
}

#[test]
fn test_code_is_exempt_by_its_attribute() {
    let text = "use crate::vocab::Role;\n\
                #[cfg(test)]\nuse crate::api::Role;\n\
                #[cfg(test)]\nmod tests { use crate::wire::X; }\n\
                #[cfg(all(test, unix))]\nfn helper() -> crate::api::Y { todo!() }\n\
                struct S { #[cfg(test)] probe: crate::api::Z }\n\
                impl S { #[cfg(test)] fn t() { crate::api::call(); } }\n\
                #[cfg(not(test))]\nfn real() -> crate::api::Real { todo!() }\n\
                // crate::api in a comment\n\
                /// [crate::api] in a doc link\nfn documented() {}\n";
    let found = check("domain/x.rs", text);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0].starts_with("domain/x.rs:11: crate::api::Real:"),
        "{found:#?}"
    );

    let declared = scan("domain/x.rs", "#[cfg(test)]\nmod tests;\nmod real;").unwrap();
    assert_eq!(declared.test_modules, [vec!["domain", "x", "tests"]]);
    let inner = scan("domain/x.rs", "#![cfg(test)]\nuse crate::api::Role;").unwrap();
    assert_eq!(inner.test_modules, [vec!["domain", "x"]]);
    assert!(inner.written.is_empty(), "{inner:?}");
}
