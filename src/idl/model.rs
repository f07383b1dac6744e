//! The datamodel types: classes, fields, messages, methods, types, enums
//! and error declarations.

use std::fmt;

use crate::value::Value;
use crate::vocab::Role;

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
