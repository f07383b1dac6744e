//! The derivation of wire methods: explicit messages plus the implicit
//! ones (getters, setters, constructors, ...) the field qualifiers imply.

use std::collections::BTreeMap;

use crate::vocab::Role;

use super::{Class, Method, MethodKind, Param, Qualifier, Type};

fn self_param(class: &str) -> Param {
    Param {
        name: "self".into(),
        ty: Type::Ref(class.to_owned()),
        default: None,
    }
}

pub(super) fn derive_methods(classes: &[Class]) -> BTreeMap<String, Method> {
    let mut methods = BTreeMap::new();
    for class in classes {
        let c = class.name.as_str();
        let mut add = |name: String,
                       params: Vec<Param>,
                       result: Type,
                       role: Role,
                       kind: MethodKind,
                       doc: String| {
            let wire_name = format!("{c}.{name}");
            methods.insert(
                wire_name.clone(),
                Method {
                    class: c.to_owned(),
                    name,
                    wire_name,
                    params,
                    result,
                    role,
                    session: true,
                    async_ok: false,
                    deprecated: None,
                    kind,
                    doc,
                },
            );
        };
        if class.is_stored() {
            let reference = Type::Ref(c.to_owned());
            add(
                "get_record".into(),
                vec![self_param(c)],
                Type::Record(c.to_owned()),
                Role::ReadOnly,
                MethodKind::GetRecord,
                format!("Get a record containing the current state of the given {c}."),
            );
            add(
                "get_by_uuid".into(),
                vec![Param {
                    name: "uuid".into(),
                    ty: Type::String,
                    default: None,
                }],
                reference.clone(),
                Role::ReadOnly,
                MethodKind::GetByUuid,
                format!("Get a reference to the {c} instance with the specified UUID."),
            );
            if class.has_get_all {
                add(
                    "get_all".into(),
                    vec![],
                    Type::Set(Box::new(reference.clone())),
                    Role::ReadOnly,
                    MethodKind::GetAll,
                    format!("Return a list of all the {c}s known to the system."),
                );
                add(
                    "get_all_records".into(),
                    vec![],
                    Type::Map(
                        Box::new(reference.clone()),
                        Box::new(Type::Record(c.to_owned())),
                    ),
                    Role::ReadOnly,
                    MethodKind::GetAllRecords,
                    format!(
                        "Return a map of {c} references to {c} records for all {c}s known to the system."
                    ),
                );
            }
            if class.has_get_by_name_label {
                add(
                    "get_by_name_label".into(),
                    vec![Param {
                        name: "label".into(),
                        ty: Type::String,
                        default: None,
                    }],
                    Type::Set(Box::new(reference.clone())),
                    Role::ReadOnly,
                    MethodKind::GetByNameLabel,
                    format!("Get all the {c} instances with the given label."),
                );
            }
            for field in class.public_fields() {
                let f = field.name.as_str();
                add(
                    format!("get_{f}"),
                    vec![self_param(c)],
                    field.ty.clone(),
                    Role::ReadOnly,
                    MethodKind::GetField(f.to_owned()),
                    format!("Get the {f} field of the given {c}."),
                );
                if field.qualifier != Qualifier::Rw {
                    continue;
                }
                let value = Param {
                    name: "value".into(),
                    ty: field.ty.clone(),
                    default: None,
                };
                add(
                    format!("set_{f}"),
                    vec![self_param(c), value],
                    Type::Void,
                    field.writer,
                    MethodKind::SetField(f.to_owned()),
                    format!("Set the {f} field of the given {c}."),
                );
                if let Type::Map(k, v) = &field.ty {
                    let key = Param {
                        name: "key".into(),
                        ty: (**k).clone(),
                        default: None,
                    };
                    let value = Param {
                        name: "value".into(),
                        ty: (**v).clone(),
                        default: None,
                    };
                    add(
                        format!("add_to_{f}"),
                        vec![self_param(c), key.clone(), value],
                        Type::Void,
                        field.writer,
                        MethodKind::AddToMap(f.to_owned()),
                        format!("Add the given key-value pair to the {f} field of the given {c}."),
                    );
                    add(
                        format!("remove_from_{f}"),
                        vec![self_param(c), key],
                        Type::Void,
                        field.writer,
                        MethodKind::RemoveFromMap(f.to_owned()),
                        format!(
                            "Remove the given key and its corresponding value from the {f} field of the given {c}. If the key is not in that Map, then do nothing."
                        ),
                    );
                }
            }
        }
        for message in &class.messages {
            let wire_name = format!("{c}.{}", message.name);
            methods.insert(
                wire_name.clone(),
                Method {
                    class: c.to_owned(),
                    name: message.name.clone(),
                    wire_name,
                    params: message.params.clone(),
                    result: message.result.clone(),
                    role: message.role,
                    session: message.session,
                    async_ok: message.async_ok,
                    deprecated: message.deprecated.clone(),
                    kind: MethodKind::Custom,
                    doc: message.doc.clone(),
                },
            );
        }
    }
    methods
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idl::datamodel;

    #[test]
    fn implicit_messages_follow_qualifiers() {
        let dm = datamodel();
        assert!(dm.method("PCI.get_all_records").is_some());
        assert!(dm.method("PCI.get_by_name_label").is_none());
        assert!(dm.method("host.get_by_name_label").is_some());
        assert!(dm.method("PCI.set_other_config").is_some());
        assert!(dm.method("PCI.add_to_other_config").is_some());
        assert!(dm.method("PCI.set_pci_id").is_none());
        assert!(dm.method("session.get_all").is_none());
        assert!(
            dm.method("session.get_role").is_none(),
            "internal fields have no getter"
        );
        assert_eq!(
            dm.method("PCI.set_other_config").unwrap().role,
            Role::PoolOperator
        );
        assert_eq!(dm.method("host.set_tags").unwrap().role, Role::VmOperator);
        assert!(dm.method("event.get_record").is_none());
    }

    #[test]
    fn defaulted_params_reduce_required_count() {
        let login = datamodel().method("session.login_with_password").unwrap();
        assert_eq!(login.params.len(), 4);
        assert_eq!(login.required_params(), 2);
        assert!(!login.session);
    }
}
