//! The parser of `idl/xenapi.idl`.

use crate::value::Value;
use crate::vocab::Role;

use super::methods::derive_methods;
use super::{
    Class, Datamodel, Derived, Enum, ErrorDecl, Field, IdlError, Message, Param, Qualifier, Type,
};

#[derive(Default)]
pub(super) struct Parser {
    api_version: Option<(i64, i64)>,
    roles: Vec<String>,
    enums: Vec<Enum>,
    errors: Vec<ErrorDecl>,
    classes: Vec<Class>,
}

fn split_doc(line: &str) -> (&str, String) {
    match line.split_once(" -- ") {
        Some((head, doc)) => (head.trim(), doc.trim().to_owned()),
        None => (line.trim(), String::new()),
    }
}

/// Split at top-level commas (outside `<>` and quotes).
fn split_top(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut quoted, mut start) = (0i32, false, 0);
    for (i, c) in text.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '<' | '(' | '{' | '[' if !quoted => depth += 1,
            '>' | ')' | '}' | ']' if !quoted => depth -= 1,
            ',' if !quoted && depth == 0 => {
                parts.push(text[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    let last = text[start..].trim();
    if !last.is_empty() {
        parts.push(last);
    }
    parts
}

/// Parse a type expression such as `map<string,set<ref<PCI>>>`.
pub fn parse_type(text: &str, enums: &[Enum]) -> Result<Type, String> {
    let text = text.trim();
    let generic = |name: &str| -> Option<&str> {
        text.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix('<'))
            .and_then(|rest| rest.strip_suffix('>'))
    };
    Ok(match text {
        "string" => Type::String,
        "int" => Type::Int,
        "float" => Type::Float,
        "bool" => Type::Bool,
        "datetime" => Type::DateTime,
        "void" => Type::Void,
        "struct" => Type::Struct,
        _ => {
            if let Some(inner) = generic("ref") {
                Type::Ref(inner.trim().to_owned())
            } else if let Some(inner) = generic("record") {
                Type::Record(inner.trim().to_owned())
            } else if let Some(inner) = generic("set") {
                Type::Set(Box::new(parse_type(inner, enums)?))
            } else if let Some(inner) = generic("option") {
                Type::Option(Box::new(parse_type(inner, enums)?))
            } else if let Some(inner) = generic("map") {
                match split_top(inner).as_slice() {
                    [k, v] => Type::Map(
                        Box::new(parse_type(k, enums)?),
                        Box::new(parse_type(v, enums)?),
                    ),
                    _ => return Err(format!("map needs two types: {text}")),
                }
            } else if enums.iter().any(|e| e.name == text) {
                Type::Enum(text.to_owned())
            } else {
                return Err(format!("unknown type {text:?}"));
            }
        }
    })
}

/// Parse a default literal of type `ty`.
fn parse_literal(text: &str, ty: &Type, enums: &[Enum]) -> Result<Value, String> {
    let text = text.trim();
    let bad = || format!("default {text:?} is not a {ty}");
    Ok(match ty {
        Type::String => Value::String(
            text.strip_prefix('"')
                .and_then(|t| t.strip_suffix('"'))
                .ok_or_else(bad)?
                .to_owned(),
        ),
        Type::Int => Value::Int(text.parse().map_err(|_| bad())?),
        Type::Float => Value::Float(text.parse().map_err(|_| bad())?),
        Type::Bool => Value::Bool(text.parse().map_err(|_| bad())?),
        Type::DateTime => Value::DateTime(text.to_owned()),
        Type::Ref(_) => Value::String(text.to_owned()),
        Type::Enum(e) => {
            let def = enums.iter().find(|d| &d.name == e).ok_or_else(bad)?;
            if !def.values.iter().any(|v| v == text) {
                return Err(bad());
            }
            Value::String(text.to_owned())
        }
        Type::Set(_) | Type::Option(_) if text == "[]" => Value::Array(vec![]),
        Type::Map(..) if text == "{}" => Value::Struct(vec![]),
        _ => return Err(bad()),
    })
}

impl Parser {
    pub(super) fn parse(mut self, text: &str) -> Result<Datamodel, IdlError> {
        for (index, raw) in text.lines().enumerate() {
            let err = |reason: String| IdlError {
                line: index + 1,
                reason,
            };
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (head, doc) = split_doc(line);
            let (keyword, rest) = head.split_once(' ').unwrap_or((head, ""));
            let rest = rest.trim();
            match keyword {
                "api_version" => {
                    let (maj, min) = rest
                        .split_once('.')
                        .ok_or_else(|| err("want MAJOR.MINOR".into()))?;
                    let parse = |s: &str| {
                        s.parse::<i64>()
                            .map_err(|_| err(format!("bad version {rest}")))
                    };
                    self.api_version = Some((parse(maj)?, parse(min)?));
                }
                "role" => {
                    rest.parse::<Role>().map_err(err)?;
                    self.roles.push(rest.to_owned());
                }
                "enum" => {
                    let (name, values) = rest
                        .split_once('=')
                        .ok_or_else(|| err("want enum NAME = a | b".into()))?;
                    self.enums.push(Enum {
                        name: name.trim().to_owned(),
                        values: values.split('|').map(|v| v.trim().to_owned()).collect(),
                        doc,
                    });
                }
                "error" => {
                    let (code, params) = rest
                        .split_once('(')
                        .ok_or_else(|| err("want error CODE(params)".into()))?;
                    let params = params
                        .strip_suffix(')')
                        .ok_or_else(|| err("missing )".into()))?;
                    self.errors.push(ErrorDecl {
                        code: code.trim().to_owned(),
                        params: split_top(params).into_iter().map(str::to_owned).collect(),
                        doc,
                    });
                }
                "class" => self.classes.push(Class {
                    name: rest.to_owned(),
                    doc,
                    default_role: Role::PoolAdmin,
                    has_get_all: false,
                    has_get_by_name_label: false,
                    fields: vec![],
                    messages: vec![],
                }),
                "default-role" | "has" | "field" | "message" => {
                    let enums = &self.enums;
                    let class = self
                        .classes
                        .last_mut()
                        .ok_or_else(|| err(format!("{keyword} outside a class")))?;
                    match keyword {
                        "default-role" => class.default_role = rest.parse().map_err(err)?,
                        "has" => match rest {
                            "get_all" => class.has_get_all = true,
                            "get_by_name_label" => class.has_get_by_name_label = true,
                            other => return Err(err(format!("unknown implicit message {other}"))),
                        },
                        "field" => {
                            let field =
                                parse_field(rest, doc, class.default_role, enums).map_err(err)?;
                            class.fields.push(field);
                        }
                        _ => {
                            let message = parse_message(rest, doc, enums).map_err(err)?;
                            class.messages.push(message);
                        }
                    }
                }
                other => return Err(err(format!("unknown keyword {other:?}"))),
            }
        }
        let api_version = self.api_version.ok_or(IdlError {
            line: 0,
            reason: "no api_version".into(),
        })?;
        let methods = derive_methods(&self.classes);
        Ok(Datamodel {
            api_version,
            roles: self.roles,
            enums: self.enums,
            errors: self.errors,
            classes: self.classes,
            methods,
        })
    }
}

/// Attribute words after the type: `key=value` or flags.
fn attributes(words: &[&str]) -> Vec<(String, Option<String>)> {
    words
        .iter()
        .map(|w| match w.split_once('=') {
            Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
            None => ((*w).to_owned(), None),
        })
        .collect()
}

fn parse_field(
    rest: &str,
    doc: String,
    default_role: Role,
    enums: &[Enum],
) -> Result<Field, String> {
    let (name, rest) = rest
        .split_once(':')
        .ok_or("want field NAME : TYPE QUALIFIER")?;
    let words: Vec<&str> = rest.split_whitespace().collect();
    let [ty, qualifier, attrs @ ..] = words.as_slice() else {
        return Err("want field NAME : TYPE QUALIFIER".into());
    };
    let ty = parse_type(ty, enums)?;
    let qualifier = match *qualifier {
        "RO/runtime" => Qualifier::RoRuntime,
        "RO/constructor" => Qualifier::RoConstructor,
        "RW" => Qualifier::Rw,
        other => return Err(format!("unknown qualifier {other}")),
    };
    let mut field = Field {
        name: name.trim().to_owned(),
        ty,
        qualifier,
        default: None,
        internal: false,
        derived: None,
        deprecated: None,
        writer: default_role,
        doc,
    };
    for (key, value) in attributes(attrs) {
        match (key.as_str(), value) {
            ("default", Some(v)) => field.default = Some(parse_literal(&v, &field.ty, enums)?),
            ("internal", None) => field.internal = true,
            ("derived", Some(v)) => {
                let (rule, from) = v
                    .strip_suffix(')')
                    .and_then(|v| v.split_once('('))
                    .ok_or_else(|| format!("derived={v}: want RULE(REF_FIELD)"))?;
                field.derived = Some(Derived {
                    rule: rule.to_owned(),
                    from: from.to_owned(),
                });
            }
            ("deprecated", Some(v)) => field.deprecated = Some(v),
            ("writer", Some(v)) => field.writer = v.parse()?,
            (k, _) => return Err(format!("unknown field attribute {k}")),
        }
    }
    Ok(field)
}

fn parse_message(rest: &str, doc: String, enums: &[Enum]) -> Result<Message, String> {
    let (name, rest) = rest
        .split_once('(')
        .ok_or("want message NAME(params) -> TYPE")?;
    let (params, rest) = rest.split_once(')').ok_or("missing ) after parameters")?;
    let rest = rest.trim().strip_prefix("->").ok_or("missing -> TYPE")?;
    let words: Vec<&str> = rest.split_whitespace().collect();
    let [result, attrs @ ..] = words.as_slice() else {
        return Err("missing result type".into());
    };
    let mut message = Message {
        name: name.trim().to_owned(),
        params: Vec::new(),
        result: parse_type(result, enums)?,
        role: Role::PoolAdmin,
        async_ok: false,
        session: true,
        deprecated: None,
        errors: Vec::new(),
        doc,
    };
    for param in split_top(params) {
        let (decl, default) = match param.split_once('=') {
            Some((d, v)) => (d, Some(v)),
            None => (param, None),
        };
        let (pname, ty) = decl
            .split_once(':')
            .ok_or_else(|| format!("want NAME: TYPE in {param:?}"))?;
        let ty = parse_type(ty, enums)?;
        let default = default.map(|v| parse_literal(v, &ty, enums)).transpose()?;
        message.params.push(Param {
            name: pname.trim().to_owned(),
            ty,
            default,
        });
    }
    for (key, value) in attributes(attrs) {
        match (key.as_str(), value) {
            ("role", Some(v)) => message.role = v.parse()?,
            ("async", None) => message.async_ok = true,
            ("no-session", None) => message.session = false,
            ("deprecated", Some(v)) => message.deprecated = Some(v),
            ("errors", Some(v)) => message.errors = v.split(',').map(str::to_owned).collect(),
            (k, _) => return Err(format!("unknown message attribute {k}")),
        }
    }
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_parse_nested() {
        let t = parse_type("map<ref<VGPU_type>,int>", &[]).unwrap();
        assert_eq!(t.to_string(), "(VGPU_type ref -> int) map");
        assert!(parse_type("list<int>", &[]).is_err());
    }

    #[test]
    fn bad_lines_name_their_line() {
        let err =
            Datamodel::parse("api_version 2.21\nclass X\n  field a : strin RW\n").unwrap_err();
        assert_eq!(err.line, 3);
        let err = Datamodel::parse("api_version 2.21\n  field a : string RW\n").unwrap_err();
        assert_eq!(err.line, 2);
    }
}
