//! The store: the SQLite object database and the users file.

pub mod users;
