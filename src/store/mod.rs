//! The store: the SQLite object database ([`db`]) and the users file
//! ([`users`]).

pub mod db;
pub mod users;

pub use db::{Change, Event, Object, Operation, Store, StoreError};
