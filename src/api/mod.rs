//! The XenAPI classes: one module per class, the protocol-neutral
//! [`Value`], and [`ApiError`], the one place where errors become XenAPI
//! error codes.
//!
//! A call enters at [`invoke::invoke`], which resolves the method in the
//! idl, checks the parameter count and types, the session and the role,
//! then runs either a generic implicit message ([`objects`]) or the class
//! module's handler ([`session`], [`host`], [`pci`], [`pgpu`], [`task`],
//! [`event`]).

pub mod audit;
pub mod context;
pub mod derived;
pub mod drift;
pub mod error;
pub mod event;
pub mod handler;
pub mod host;
pub mod invoke;
pub mod login_throttle;
pub mod message;
pub mod objects;
pub mod pci;
pub mod pgpu;
pub mod quota;
pub mod session;
pub mod session_table;
pub mod sync;
pub mod task;

pub use crate::value::Value;
pub use crate::vocab::Role;
pub use crate::vocab::role;
pub use context::{Caller, Context, Origin};
pub use error::ApiError;

#[cfg(test)]
mod stub_tests;
