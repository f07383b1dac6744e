//! The `pcipass` command line: `xe`-style commands against the daemon
//! ([`xe`], over [`client`]) and administration commands that work on the
//! state directory and mock hosts directly ([`admin`]).

pub mod admin;
pub mod client;
pub mod xe;
