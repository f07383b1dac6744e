//! The datamodel, read from `idl/xenapi.idl` (embedded at build time).
//!
//! [`datamodel()`] parses the file once. [`Datamodel::methods`] derives every
//! wire method, explicit and implicit, from it: the dispatcher, the RBAC
//! check, `system.listMethods` and `docs/api-reference.md` all read that one
//! table, so the code cannot serve a method the idl does not declare.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::LazyLock;

use crate::value::Value;
use crate::vocab::Role;

/// The idl source text.
pub const SOURCE: &str = include_str!("../../idl/xenapi.idl");

/// A XenAPI type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Type {
    /// `string`
    String,
    /// `int` (64-bit)
    Int,
    /// `float`
    Float,
    /// `bool`
    Bool,
    /// `datetime`
    DateTime,
    /// `void`
    Void,
    /// `struct`: a free-form struct (event batches).
    Struct,
    /// An enum declared with `enum`.
    Enum(String),
    /// `ref<C>`
    Ref(String),
    /// `set<T>`
    Set(Box<Type>),
    /// `map<K,V>`
    Map(Box<Type>, Box<Type>),
    /// `record<C>`
    Record(String),
    /// `option<T>`
    Option(Box<Type>),
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Type::String => f.write_str("string"),
            Type::Int => f.write_str("int"),
            Type::Float => f.write_str("float"),
            Type::Bool => f.write_str("bool"),
            Type::DateTime => f.write_str("datetime"),
            Type::Void => f.write_str("void"),
            Type::Struct => f.write_str("struct"),
            Type::Enum(e) => f.write_str(e),
            Type::Ref(c) => write!(f, "{c} ref"),
            Type::Set(t) => write!(f, "{t} set"),
            Type::Map(k, v) => write!(f, "({k} -> {v}) map"),
            Type::Record(c) => write!(f, "{c} record"),
            Type::Option(t) => write!(f, "{t} option"),
        }
    }
}

/// Who sets a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qualifier {
    /// Set by the server at any time.
    RoRuntime,
    /// Set by the server when the object is created.
    RoConstructor,
    /// Settable by clients.
    Rw,
}

impl Qualifier {
    /// The idl spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Qualifier::RoRuntime => "RO/runtime",
            Qualifier::RoConstructor => "RO/constructor",
            Qualifier::Rw => "RW",
        }
    }
}

/// How a derived field is computed: a named rule (a provider in
/// `api::derived`) applied to the object a ref field of the same object
/// points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Derived {
    /// The rule's name, e.g. `dom0_access_status`.
    pub rule: String,
    /// The ref field whose object the rule reads, e.g. `PCI`.
    pub from: String,
}

/// A field of a class.
#[derive(Debug, Clone)]
pub struct Field {
    /// Wire name.
    pub name: String,
    /// Type.
    pub ty: Type,
    /// Who sets it.
    pub qualifier: Qualifier,
    /// Value of a new object when the creator gives none.
    pub default: Option<Value>,
    /// Stored but never sent to clients, no getter.
    pub internal: bool,
    /// Computed by a rule from another object: `(rule, ref field)`.
    pub derived: Option<Derived>,
    /// Version that deprecated it.
    pub deprecated: Option<String>,
    /// Minimum role of the setter and map messages.
    pub writer: Role,
    /// Description.
    pub doc: String,
}

/// A parameter of a message (after the session).
#[derive(Debug, Clone)]
pub struct Param {
    /// Name.
    pub name: String,
    /// Type.
    pub ty: Type,
    /// Value used when a client omits this trailing parameter.
    pub default: Option<Value>,
}

/// A custom message of a class.
#[derive(Debug, Clone)]
pub struct Message {
    /// Name without the class.
    pub name: String,
    /// Parameters after the session.
    pub params: Vec<Param>,
    /// Result type.
    pub result: Type,
    /// Minimum role.
    pub role: Role,
    /// Has an `Async.` form.
    pub async_ok: bool,
    /// Takes a session as first parameter.
    pub session: bool,
    /// Version that deprecated it.
    pub deprecated: Option<String>,
    /// Errors it may raise beyond the generic ones.
    pub errors: Vec<String>,
    /// Description.
    pub doc: String,
}

/// A class.
#[derive(Debug, Clone)]
pub struct Class {
    /// Wire name, e.g. `PCI`.
    pub name: String,
    /// Description.
    pub doc: String,
    /// Writer role of RW fields.
    pub default_role: Role,
    /// Has `get_all` and `get_all_records`.
    pub has_get_all: bool,
    /// Has `get_by_name_label`.
    pub has_get_by_name_label: bool,
    /// Fields in wire order.
    pub fields: Vec<Field>,
    /// Custom messages.
    pub messages: Vec<Message>,
}

impl Class {
    /// A field by name.
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// The derived fields, with their rules.
    pub fn derived_fields(&self) -> impl Iterator<Item = (&Field, &Derived)> {
        self.fields
            .iter()
            .filter_map(|f| f.derived.as_ref().map(|d| (f, d)))
    }

    /// The fields sent to clients, in wire order.
    pub fn public_fields(&self) -> impl Iterator<Item = &Field> {
        self.fields.iter().filter(|f| !f.internal)
    }

    /// True for classes whose objects live in the store.
    pub fn is_stored(&self) -> bool {
        !self.fields.is_empty()
    }
}

/// An enum.
#[derive(Debug, Clone)]
pub struct Enum {
    /// Name.
    pub name: String,
    /// Values in datamodel order.
    pub values: Vec<String>,
    /// Description.
    pub doc: String,
}

/// A declared error.
#[derive(Debug, Clone)]
pub struct ErrorDecl {
    /// Code.
    pub code: String,
    /// Parameter names.
    pub params: Vec<String>,
    /// Description, as `xe` prints it.
    pub doc: String,
}

/// What a wire method does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MethodKind {
    /// A custom message, handled by the class module.
    Custom,
    /// `get_record`
    GetRecord,
    /// `get_by_uuid`
    GetByUuid,
    /// `get_all`
    GetAll,
    /// `get_all_records`
    GetAllRecords,
    /// `get_by_name_label`
    GetByNameLabel,
    /// `get_<field>`
    GetField(String),
    /// `set_<field>`
    SetField(String),
    /// `add_to_<field>`
    AddToMap(String),
    /// `remove_from_<field>`
    RemoveFromMap(String),
}

/// One callable wire method, explicit or implicit.
#[derive(Debug, Clone)]
pub struct Method {
    /// Class name.
    pub class: String,
    /// Message name without class.
    pub name: String,
    /// `Class.name`.
    pub wire_name: String,
    /// Parameters after the session.
    pub params: Vec<Param>,
    /// Result type.
    pub result: Type,
    /// Minimum role.
    pub role: Role,
    /// Takes a session.
    pub session: bool,
    /// Has an `Async.` form.
    pub async_ok: bool,
    /// Deprecated since.
    pub deprecated: Option<String>,
    /// What it does.
    pub kind: MethodKind,
    /// Description.
    pub doc: String,
}

impl Method {
    /// Number of parameters a caller must send (after the session).
    pub fn required_params(&self) -> usize {
        self.params.iter().filter(|p| p.default.is_none()).count()
    }
}

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

#[derive(Default)]
struct Parser {
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
    fn parse(mut self, text: &str) -> Result<Datamodel, IdlError> {
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

fn self_param(class: &str) -> Param {
    Param {
        name: "self".into(),
        ty: Type::Ref(class.to_owned()),
        default: None,
    }
}

fn derive_methods(classes: &[Class]) -> BTreeMap<String, Method> {
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
