//! The filters of the `*-list` commands.

use super::args::Invocation;
use super::errors::CliError;
use super::output::show;
use super::records::XeRecord;
use crate::value::Value;

/// Options that select the connection or the output, never filters.
const STANDARD: &[&str] = &[
    "server",
    "port",
    "username",
    "password",
    "passwordfile",
    "nossl",
    "minimal",
    "table",
    "multiple",
    "all",
    "params",
    "socket",
    "debug",
    "no-verify",
    "fingerprint",
];

/// Keep the rows that match every filter parameter: `field=value`,
/// `map:key=value`, `set:contains=value`.
pub(super) fn apply(rows: &mut Vec<XeRecord>, inv: &Invocation) -> Result<(), CliError> {
    for (key, want) in inv
        .params
        .iter()
        .filter(|(k, _)| !STANDARD.contains(&k.as_str()))
    {
        // `field=value`, `map:key=value`, `set:contains=value`.
        let (name, sub) = match key.split_once(':') {
            Some((n, s)) => (n, Some(s)),
            None => (key.as_str(), None),
        };
        if let Some(first) = rows.first()
            && !first.iter().any(|(n, _, _)| *n == name)
        {
            return Err(CliError {
                message: format!("Unknown field '{name}'"),
                code: 1,
            });
        }
        rows.retain(|r| {
            r.iter().any(|(n, v, _)| {
                *n == name
                    && match (sub, v) {
                        (None, v) => show(v) == *want,
                        (Some("contains"), Value::Array(items)) => {
                            items.iter().any(|i| show(i) == *want)
                        }
                        (Some(k), v) => v.member(k).is_some_and(|m| show(m) == *want),
                    }
            })
        });
    }
    Ok(())
}
