//! Running a command: log in, fetch the records, act, log out.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::args::{Invocation, credentials, endpoint};
use super::commands::{COMMANDS, Command};
use super::errors::{CliError, api_error, usage};
use super::filter;
use super::output::{pci_table, print_minimal, print_records, show};
use super::records::{World, XeRecord, records, text};
use crate::cli::client::{Client, RpcFailure};
use crate::value::Value;

/// Run one xe-style command against the daemon; returns stdout text.
pub async fn run(inv: &Invocation) -> Result<String, CliError> {
    let Some(cmd) = COMMANDS.iter().find(|c| c.name == inv.command) else {
        return Err(usage(format!("Unknown command: {}", inv.command)));
    };
    for required in cmd.required {
        if inv.get(required).is_none() {
            return Err(usage(format!("Required parameter not found: {required}")));
        }
    }
    let endpoint = endpoint(inv)?;
    let mut client = Client::connect(&endpoint).await.map_err(api_error)?;
    let (user, password) = credentials(inv)?;
    let session = client
        .call(
            "session.login_with_password",
            vec![
                Value::String(user),
                Value::String(password),
                Value::str("2.21"),
                Value::str("pcipass"),
            ],
        )
        .await
        .map_err(api_error)?;
    let result = execute(cmd, inv, &mut client, &session).await;
    let _ = client.call("session.logout", vec![session]).await;
    result
}

async fn fetch(
    client: &mut Client,
    session: &Value,
    class: &str,
) -> Result<BTreeMap<String, Value>, CliError> {
    Ok(records(
        client
            .call(&format!("{class}.get_all_records"), vec![session.clone()])
            .await
            .map_err(api_error)?,
    ))
}

async fn execute(
    cmd: &Command,
    inv: &Invocation,
    client: &mut Client,
    session: &Value,
) -> Result<String, CliError> {
    let (class, verb) = cmd.name.split_once('-').unwrap_or((cmd.name, ""));
    let api_class = match class {
        "pci" => "PCI",
        "pgpu" => "PGPU",
        _ => "host",
    };
    let world = World {
        pcis: fetch(client, session, "PCI").await?,
        pgpus: if class == "pgpu" {
            fetch(client, session, "PGPU").await?
        } else {
            BTreeMap::new()
        },
        hosts: fetch(client, session, "host").await?,
    };
    let table = match class {
        "pci" => &world.pcis,
        "pgpu" => &world.pgpus,
        _ => &world.hosts,
    };
    let to_xe = |r: &Value| match class {
        "pci" => world.pci(r),
        "pgpu" => world.pgpu(r),
        _ => world.host(r),
    };
    let mut out = String::new();
    let by_uuid = |uuid: &str| -> Result<(String, Value), CliError> {
        table
            .iter()
            .find(|(_, r)| text(r, "uuid") == uuid)
            .map(|(k, v)| (k.clone(), v.clone()))
            .ok_or_else(|| {
                api_error(RpcFailure::Api(vec![
                    "UUID_INVALID".into(),
                    api_class.into(),
                    uuid.into(),
                ]))
            })
    };
    match verb {
        "list" => {
            let defaults: &[&str] = match class {
                "pci" => &["uuid", "vendor-name", "device-name", "pci-id"],
                "pgpu" => &[
                    "uuid",
                    "pci-uuid",
                    "vendor-name",
                    "device-name",
                    "gpu-group-uuid",
                ],
                _ => &["uuid", "name-label", "name-description"],
            };
            let mut rows: Vec<XeRecord> = table.values().map(to_xe).collect();
            rows.sort_by_key(|r| {
                r.iter()
                    .find(|(n, _, _)| *n == "pci-id")
                    .map(|(_, v, _)| show(v))
                    .unwrap_or_default()
            });
            filter::apply(&mut rows, inv)?;
            if inv.flag("table") && class == "pci" {
                return pci_table(client, session, &world, &rows).await;
            }
            let params = inv
                .get("params")
                .map(|p| p.split(',').map(str::to_owned).collect::<Vec<_>>());
            let selected = |name: &str| match &params {
                Some(p) if p.iter().any(|x| x == "all") => true,
                Some(p) => p.iter().any(|x| x == name),
                None => defaults.contains(&name),
            };
            if inv.flag("minimal") {
                print_minimal(&rows, &selected, &mut out);
            } else {
                print_records(&rows, &selected, &mut out);
            }
        }
        "param-list" => {
            let (_, record) = by_uuid(inv.get("uuid").unwrap_or(""))?;
            print_records(&[to_xe(&record)], &|_| true, &mut out);
        }
        "param-get" => {
            let (_, record) = by_uuid(inv.get("uuid").unwrap_or(""))?;
            let name = inv.get("param-name").unwrap_or("");
            let rec = to_xe(&record);
            let Some((_, value, _)) = rec.iter().find(|(n, _, _)| *n == name) else {
                return Err(CliError {
                    message: format!("Error code: Missing parameter\nError parameters: {name}"),
                    code: 1,
                });
            };
            match inv.get("param-key") {
                Some(key) => match value.member(key) {
                    Some(v) => {
                        let _ = writeln!(out, "{}", show(v));
                    }
                    None => {
                        return Err(CliError {
                            message: format!("Key {key} not found in map"),
                            code: 1,
                        });
                    }
                },
                None => {
                    let _ = writeln!(out, "{}", show(value));
                }
            }
        }
        "audit" => {
            let host = world.hosts.keys().next().cloned().unwrap_or_default();
            let records = client
                .call(
                    "host.get_dom0_access_audit",
                    vec![session.clone(), Value::String(host)],
                )
                .await
                .map_err(api_error)?;
            // One line a record: what, who, on what, and how it ended;
            // then the files it changed and the chain's state.
            let field = |r: &Value, k: &str| r.member(k).map(show).unwrap_or_default();
            if let Value::Array(rows) = &records {
                for r in rows {
                    let _ = writeln!(
                        out,
                        "{} {} {} {} {} {} {}",
                        field(r, "seq"),
                        field(r, "time"),
                        field(r, "kind"),
                        field(r, "user"),
                        field(r, "call"),
                        field(r, "functions"),
                        field(r, "outcome")
                    );
                    let files = field(r, "files");
                    if !files.is_empty() {
                        let _ = writeln!(out, "    {files}");
                    }
                }
                if let Some(r) = rows.last() {
                    let _ = writeln!(out, "chain: {}", field(r, "chain"));
                }
            }
        }
        "readiness" => {
            let (reference, _) = by_uuid(inv.get("uuid").unwrap_or(""))?;
            let report = client
                .call(
                    "PCI.get_passthrough_readiness",
                    vec![session.clone(), Value::String(reference)],
                )
                .await
                .map_err(api_error)?;
            // The verdict and its reasons first, then the facts.
            if let Value::Struct(members) = &report {
                let first = ["verdict", "reasons", "notes"];
                for key in first {
                    if let Some((_, v)) = members.iter().find(|(k, _)| k == key) {
                        let _ = writeln!(out, "{key}: {}", show(v));
                    }
                }
                for (k, v) in members.iter().filter(|(k, _)| !first.contains(&k.as_str())) {
                    let _ = writeln!(out, "{k}: {}", show(v));
                }
            }
        }
        "enable-dom0-access"
        | "disable-dom0-access"
        | "enable-dom0-access-now"
        | "disable-dom0-access-now"
            if inv.flag("whole-device") || inv.flag("dry-run") || inv.get("token").is_some() =>
        {
            // A set of functions (every function of the device's slot
            // with --whole-device), edited by one call of the host: its
            // dry run (host.preview_dom0_access), the previewed edit
            // (host.apply_dom0_access_preview), or the plain one
            // (host.disable_dom0_access_of).
            let (reference, record) = by_uuid(inv.get("uuid").unwrap_or(""))?;
            let address = text(&record, "pci_id");
            let mut members: Vec<(String, String)> = if inv.flag("whole-device") {
                let slot = slot_of(&address);
                table
                    .iter()
                    .filter(|(_, r)| slot_of(&text(r, "pci_id")) == slot)
                    .map(|(k, r)| (text(r, "pci_id"), k.clone()))
                    .collect()
            } else {
                vec![(address, reference)]
            };
            members.sort();
            let host = Value::String(world.hosts.keys().next().cloned().unwrap_or_default());
            let pcis = Value::Array(
                members
                    .iter()
                    .map(|(_, r)| Value::String(r.clone()))
                    .collect(),
            );
            let hide = verb.starts_with("disable");
            let now = Value::Bool(verb.ends_with("-now"));
            if inv.flag("dry-run") {
                let preview = client
                    .call(
                        "host.preview_dom0_access",
                        vec![session.clone(), host, pcis, Value::Bool(!hide)],
                    )
                    .await
                    .map_err(api_error)?;
                write_preview(&mut out, &preview);
                return Ok(out);
            }
            let answer = match inv.get("token") {
                Some(token) => client.call(
                    "host.apply_dom0_access_preview",
                    vec![
                        session.clone(),
                        host,
                        pcis,
                        Value::Bool(!hide),
                        now,
                        Value::String(token.to_owned()),
                    ],
                ),
                None => client.call(
                    if hide {
                        "host.disable_dom0_access_of"
                    } else {
                        "host.enable_dom0_access_of"
                    },
                    vec![session.clone(), host, pcis, now],
                ),
            }
            .await
            .map_err(api_error)?;
            for (address, reference) in &members {
                if let Some(status) = answer.member(reference) {
                    let _ = writeln!(out, "{address} {}", show(status));
                }
            }
        }
        "enable-dom0-access"
        | "disable-dom0-access"
        | "enable-dom0-access-now"
        | "disable-dom0-access-now"
        | "get-dom0-access-status" => {
            let (reference, _) = by_uuid(inv.get("uuid").unwrap_or(""))?;
            let message = format!("{api_class}.{}", verb.replace('-', "_"));
            let status = client
                .call(&message, vec![session.clone(), Value::String(reference)])
                .await
                .map_err(api_error)?;
            let _ = writeln!(
                out,
                "{}",
                if inv.flag("minimal") {
                    String::new()
                } else {
                    show(&status)
                }
            );
        }
        "disable" | "enable" | "reboot" | "enable-display" | "disable-display" => {
            let selector = inv.get("uuid").or(inv.get("host"));
            let hosts: Vec<&String> = table
                .iter()
                .filter(|(_, r)| {
                    selector.is_none_or(|s| {
                        text(r, "uuid") == s
                            || text(r, "name_label") == s
                            || text(r, "hostname") == s
                    })
                })
                .map(|(k, _)| k)
                .collect();
            if hosts.is_empty() {
                return Err(CliError {
                    message: "No matching hosts found".into(),
                    code: 1,
                });
            }
            if hosts.len() > 1 && !inv.flag("multiple") {
                return Err(CliError {
                    message: "More than one host matches: use --multiple".into(),
                    code: 1,
                });
            }
            for host in hosts {
                let answer = client
                    .call(
                        &format!("host.{}", verb.replace('-', "_")),
                        vec![session.clone(), Value::String(host.clone())],
                    )
                    .await
                    .map_err(api_error)?;
                // The display calls answer host.display's new value.
                if verb.ends_with("-display") {
                    let _ = writeln!(out, "{}", show(&answer));
                }
            }
        }
        _ => return Err(usage(format!("Unknown command: {}", inv.command))),
    }
    Ok(out)
}

/// The slot of a PCI address (`0000:01:00.1` → `0000:01:00`): the device
/// whose functions go together.
fn slot_of(address: &str) -> &str {
    address.rsplit_once('.').map_or(address, |(slot, _)| slot)
}

/// A dry run as the operator reads it: the diff as it is (`patch -p1`
/// under `/` applies it), then what else the edit does, and the token.
fn write_preview(out: &mut String, preview: &Value) {
    let get = |key: &str| match preview.member(key) {
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    };
    let diff = get("diff");
    if diff.is_empty() {
        let _ = writeln!(out, "# no file changes");
    } else {
        out.push_str(&diff);
    }
    let or_none = |s: String| if s.is_empty() { "(none)".to_owned() } else { s };
    let _ = writeln!(
        out,
        "# xen-pciback.hide after: {}",
        or_none(get("hide_value"))
    );
    let _ = writeln!(
        out,
        "# hidden at the next boot: {}",
        or_none(get("hidden_after"))
    );
    let _ = writeln!(out, "# initramfs rebuild: {}", or_none(get("rebuild")));
    for line in get("unforeseen").lines() {
        let _ = writeln!(out, "# not shown: {line}");
    }
    if !get("binary").is_empty() {
        let _ = writeln!(out, "# not text: {}", get("binary"));
    }
    let _ = writeln!(out, "# exact: {}", get("exact"));
    let _ = writeln!(out, "# token: {}", get("token"));
}
