//! The `pcipass` command line: the administration commands that work on
//! the state directory and on mock hosts directly ([`admin`]).

pub mod admin;
