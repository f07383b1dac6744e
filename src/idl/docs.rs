//! The API reference generator (`docs/api-reference.md`).

use super::Datamodel;

impl Datamodel {
    /// The API reference in Markdown (`docs/api-reference.md` is this text;
    /// a test keeps the two equal).
    pub fn reference_markdown(&self) -> String {
        use std::fmt::Write;
        let mut md = String::new();
        let _ = writeln!(md, "# pcipass XenAPI reference\n");
        let _ = writeln!(
            md,
            "Generated from `idl/xenapi.idl`; do not edit. Regenerate with \
             `PCIPASS_BLESS=1 cargo test --test idl_docs`.\n"
        );
        let _ = writeln!(
            md,
            "API version {}.{}.\n",
            self.api_version.0, self.api_version.1
        );
        let _ = writeln!(md, "## Roles (highest first)\n");
        for role in &self.roles {
            let _ = writeln!(md, "- `{role}`");
        }
        let _ = writeln!(md, "\n## Enums\n");
        for e in &self.enums {
            let _ = writeln!(
                md,
                "- `{}`: {} ({})",
                e.name,
                e.values
                    .iter()
                    .map(|v| format!("`{v}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                e.doc
            );
        }
        let _ = writeln!(md, "\n## Errors\n");
        let _ = writeln!(md, "| code | parameters | meaning |\n|---|---|---|");
        for e in &self.errors {
            let _ = writeln!(md, "| `{}` | {} | {} |", e.code, e.params.join(", "), e.doc);
        }
        for class in &self.classes {
            let _ = writeln!(md, "\n## Class `{}`\n\n{}\n", class.name, class.doc);
            if class.is_stored() {
                let _ = writeln!(
                    md,
                    "| field | type | qualifier | default | description |\n|---|---|---|---|---|"
                );
                for f in class.public_fields() {
                    let default = f
                        .default
                        .as_ref()
                        .map(|d| format!("`{d}`"))
                        .unwrap_or_default();
                    let deprecated = f
                        .deprecated
                        .as_ref()
                        .map(|v| format!(" **Deprecated {v}.**"))
                        .unwrap_or_default();
                    let _ = writeln!(
                        md,
                        "| `{}` | `{}` | {} | {} | {}{} |",
                        f.name,
                        f.ty,
                        f.qualifier.as_str(),
                        default,
                        f.doc,
                        deprecated
                    );
                }
                let _ = writeln!(md);
            }
            let _ = writeln!(
                md,
                "| message | parameters | result | minimum role | async |\n|---|---|---|---|---|"
            );
            for m in self.methods().filter(|m| m.class == class.name) {
                let params: Vec<String> = m
                    .params
                    .iter()
                    .map(|p| match &p.default {
                        Some(d) => format!("`{}: {}` (default `{}`)", p.name, p.ty, d),
                        None => format!("`{}: {}`", p.name, p.ty),
                    })
                    .collect();
                let session = if m.session { "session, " } else { "" };
                let deprecated = m
                    .deprecated
                    .as_ref()
                    .map(|v| format!(" **Deprecated {v}.**"))
                    .unwrap_or_default();
                let _ = writeln!(
                    md,
                    "| `{}`{} | {}{} | `{}` | `{}` | {} |",
                    m.wire_name,
                    deprecated,
                    session,
                    params.join(", "),
                    m.result,
                    m.role,
                    if m.async_ok { "yes" } else { "no" }
                );
            }
        }
        md
    }
}
