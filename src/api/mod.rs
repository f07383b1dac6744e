//! The XenAPI classes: one module per class, the protocol-neutral
//! [`Value`], and [`ApiError`], the one place where errors become XenAPI
//! error codes.

pub mod error;
pub mod role;

pub use error::ApiError;
pub use role::Role;
pub use crate::value::Value;
