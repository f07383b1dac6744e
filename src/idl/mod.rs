//! The datamodel, read from `idl/xenapi.idl` (embedded at build time).
//!
//! [`datamodel()`] parses the file once. [`Datamodel::methods`] derives every
//! wire method, explicit and implicit, from it: the dispatcher, the RBAC
//! check, `system.listMethods` and `docs/api-reference.md` all read that one
//! table, so the code cannot serve a method the idl does not declare.

mod docs;
mod methods;
mod model;
mod parse;

use std::collections::BTreeMap;
use std::sync::LazyLock;

pub use model::*;
pub use parse::parse_type;

use parse::Parser;

/// The idl source text.
pub const SOURCE: &str = include_str!("../../idl/xenapi.idl");

/// The whole datamodel.
#[derive(Debug, Clone)]
pub struct Datamodel {
    /// Reported API version (major, minor).
    pub api_version: (i64, i64),
    /// Role names, highest first.
    pub roles: Vec<String>,
    /// Enums.
    pub enums: Vec<Enum>,
    /// Errors.
    pub errors: Vec<ErrorDecl>,
    /// Classes.
    pub classes: Vec<Class>,
    methods: BTreeMap<String, Method>,
}

/// Why the idl text does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("idl line {line}: {reason}")]
pub struct IdlError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

static DATAMODEL: LazyLock<Datamodel> = LazyLock::new(|| match Datamodel::parse(SOURCE) {
    Ok(dm) => dm,
    // The idl is compiled in and a unit test parses it, so this is a build defect.
    #[expect(clippy::panic, reason = "the embedded idl is checked by a unit test")]
    Err(e) => panic!("embedded idl/xenapi.idl is invalid: {e}"),
});

/// The datamodel served by this build.
pub fn datamodel() -> &'static Datamodel {
    &DATAMODEL
}

impl Datamodel {
    /// A class by wire name.
    pub fn class(&self, name: &str) -> Option<&Class> {
        self.classes.iter().find(|c| c.name == name)
    }

    /// A class by name, case-insensitively (event subscriptions).
    pub fn class_ci(&self, name: &str) -> Option<&Class> {
        self.classes
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(name))
    }

    /// An enum by name.
    pub fn enum_def(&self, name: &str) -> Option<&Enum> {
        self.enums.iter().find(|e| e.name == name)
    }

    /// An error by code.
    pub fn error(&self, code: &str) -> Option<&ErrorDecl> {
        self.errors.iter().find(|e| e.code == code)
    }

    /// A wire method by `Class.name`.
    pub fn method(&self, wire_name: &str) -> Option<&Method> {
        self.methods.get(wire_name)
    }

    /// Every wire method, sorted by wire name.
    pub fn methods(&self) -> impl Iterator<Item = &Method> {
        self.methods.values()
    }

    /// Parse idl text.
    pub fn parse(text: &str) -> Result<Datamodel, IdlError> {
        Parser::default().parse(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_idl_parses() {
        let dm = Datamodel::parse(SOURCE).unwrap();
        assert_eq!(dm.api_version, (2, 21));
        assert_eq!(dm.roles.len(), 7);
        let pci = dm.class("PCI").unwrap();
        assert_eq!(pci.field("pci_id").unwrap().ty, Type::String);
        assert_eq!(
            dm.method("PCI.get_dom0_access_status").unwrap().result,
            Type::Enum("pci_dom0_access".into())
        );
    }
}
