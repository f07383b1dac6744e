//! The `xe`-style commands: the command table (which also drives help and
//! completion), xe's argument syntax, record fields with xe's names, and
//! xe's output and error layout.

mod args;
mod commands;
mod errors;
mod filter;
mod output;
mod records;
mod run;

pub use args::{Invocation, endpoint, parse};
pub use commands::{COMMANDS, Command, completion_bash, help};
pub use errors::{CliError, render_failure};
pub use output::{print_minimal, print_records};
pub use run::run;
