//! The committed API reference, the error codes the code can raise, and the
//! idl must agree.

use pcipass::api::ApiError;
use pcipass::idl::datamodel;

#[test]
fn api_reference_matches_idl() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/api-reference.md");
    let generated = datamodel().reference_markdown();
    if std::env::var_os("PCIPASS_BLESS").is_some() {
        std::fs::write(path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/api-reference.md is out of date: run PCIPASS_BLESS=1 cargo test --test idl_docs"
    );
}

#[test]
fn every_error_the_code_raises_is_declared_with_its_arity() {
    let dm = datamodel();
    for code in ApiError::CODES {
        assert!(
            dm.error(code).is_some(),
            "{code} is raised but not declared in the idl"
        );
    }
    for decl in &dm.errors {
        assert!(
            ApiError::CODES.contains(&decl.code.as_str()),
            "{} is declared but never raised",
            decl.code
        );
    }
    let samples = [
        ApiError::SessionInvalid("x".into()),
        ApiError::handle_invalid("PCI", "r"),
        ApiError::HostNotDisabled,
        ApiError::MessageParameterCountMismatch {
            method: "m".into(),
            expected: 1,
            received: 0,
        },
        ApiError::BootConfigHideListMalformed {
            value: "v".into(),
            reason: "r".into(),
        },
        ApiError::RbacPermissionDenied {
            permission: "p".into(),
            message: "m".into(),
        },
        ApiError::PciCarriesDom0Console {
            device: "d".into(),
            console: "c".into(),
        },
        ApiError::PciCarriesDom0Network {
            device: "d".into(),
            interface: "i".into(),
        },
    ];
    for e in samples {
        let decl = dm.error(e.code()).unwrap();
        assert_eq!(
            decl.params.len(),
            e.params().len(),
            "{} arity differs from the idl",
            e.code()
        );
    }
}

#[test]
fn messages_name_declared_errors_and_classes() {
    let dm = datamodel();
    for class in &dm.classes {
        for m in &class.messages {
            for e in &m.errors {
                assert!(
                    dm.error(e).is_some(),
                    "{}.{} names undeclared error {e}",
                    class.name,
                    m.name
                );
            }
        }
    }
}
