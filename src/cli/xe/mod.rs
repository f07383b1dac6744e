//! The `xe`-style commands: the command table (which also drives help and
//! completion), xe's argument syntax, record fields with xe's names, and
//! xe's output and error layout.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::cli::client::{Client, Endpoint, RpcFailure};
use crate::idl;
use crate::value::Value;

/// One command of the table.
#[derive(Debug, Clone, Copy)]
pub struct Command {
    /// Name, as xe spells it.
    pub name: &'static str,
    /// Required parameters.
    pub required: &'static [&'static str],
    /// Optional parameters.
    pub optional: &'static [&'static str],
    /// One line of description.
    pub help: &'static str,
}

const LIST_OPTS: &[&str] = &["params", "--minimal", "<field>=<value>"];

/// Every xe-style command.
pub const COMMANDS: &[Command] = &[
    Command {
        name: "pci-list",
        required: &[],
        optional: &["params", "--minimal", "--table", "<field>=<value>"],
        help: "List the PCI devices (--table: one line each for people).",
    },
    Command {
        name: "pci-param-list",
        required: &["uuid"],
        optional: &[],
        help: "List every field of a PCI device.",
    },
    Command {
        name: "pci-param-get",
        required: &["uuid", "param-name"],
        optional: &["param-key"],
        help: "Print one field of a PCI device.",
    },
    Command {
        name: "pci-enable-dom0-access",
        required: &["uuid"],
        optional: &[],
        help: "Give a PCI device back to dom0 at the next boot.",
    },
    Command {
        name: "pci-disable-dom0-access",
        required: &["uuid"],
        optional: &[],
        help: "Hide a PCI device from dom0 at the next boot.",
    },
    Command {
        name: "pci-get-dom0-access-status",
        required: &["uuid"],
        optional: &[],
        help: "Print enabled, disable_on_reboot, disabled or enable_on_reboot.",
    },
    Command {
        name: "pgpu-list",
        required: &[],
        optional: LIST_OPTS,
        help: "List the physical GPUs.",
    },
    Command {
        name: "pgpu-param-list",
        required: &["uuid"],
        optional: &[],
        help: "List every field of a PGPU.",
    },
    Command {
        name: "pgpu-param-get",
        required: &["uuid", "param-name"],
        optional: &["param-key"],
        help: "Print one field of a PGPU.",
    },
    Command {
        name: "pgpu-enable-dom0-access",
        required: &["uuid"],
        optional: &[],
        help: "Give a GPU back to dom0 at the next boot (deprecated API).",
    },
    Command {
        name: "pgpu-disable-dom0-access",
        required: &["uuid"],
        optional: &[],
        help: "Hide a GPU from dom0 at the next boot (deprecated API).",
    },
    Command {
        name: "host-list",
        required: &[],
        optional: LIST_OPTS,
        help: "List the hosts.",
    },
    Command {
        name: "host-param-list",
        required: &["uuid"],
        optional: &[],
        help: "List every field of a host.",
    },
    Command {
        name: "host-param-get",
        required: &["uuid", "param-name"],
        optional: &["param-key"],
        help: "Print one field of a host.",
    },
    Command {
        name: "host-disable",
        required: &[],
        optional: &["uuid", "host"],
        help: "Disable the host (needed before host-reboot).",
    },
    Command {
        name: "host-enable",
        required: &[],
        optional: &["uuid", "host"],
        help: "Enable the host.",
    },
    Command {
        name: "host-reboot",
        required: &[],
        optional: &["uuid", "host", "--multiple"],
        help: "Reboot a disabled host (a mock host reboots in place).",
    },
];

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

/// A parsed command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Invocation {
    /// The command.
    pub command: String,
    /// `key=value` parameters and `--flag`s (as `flag=true`), in order.
    pub params: Vec<(String, String)>,
}

impl Invocation {
    /// A parameter's value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// True when a switch is set.
    pub fn flag(&self, key: &str) -> bool {
        self.get(key).is_some_and(|v| v == "true" || v.is_empty())
    }
}

/// A CLI failure: the lines for stderr and the exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    /// Text for stderr.
    pub message: String,
    /// 1 for failures, 2 for usage errors.
    pub code: u8,
}

fn usage(message: impl Into<String>) -> CliError {
    CliError {
        message: format!("{}\nFor usage run: 'pcipass help'", message.into()),
        code: 2,
    }
}

/// Parse xe's syntax: `key=value`, `--flag`, dyadic `-s -p -u -pw -pwf -h`.
pub fn parse(args: &[String]) -> Result<Invocation, CliError> {
    let mut inv = Invocation::default();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let dyadic = match arg.as_str() {
            "-s" | "-h" => Some("server"),
            "-p" => Some("port"),
            "-u" => Some("username"),
            "-pw" => Some("password"),
            "-pwf" => Some("passwordfile"),
            _ => None,
        };
        if let Some(key) = dyadic {
            let value = iter
                .next()
                .ok_or_else(|| usage(format!("Syntax error: {arg} needs a value")))?;
            inv.params.push((key.to_owned(), value.clone()));
        } else if let Some(flag) = arg.strip_prefix("--") {
            match flag.split_once('=') {
                Some((k, v)) => inv.params.push((k.to_owned(), v.to_owned())),
                None if flag == "socket" || flag == "fingerprint" => {
                    let value = iter
                        .next()
                        .ok_or_else(|| usage(format!("Syntax error: --{flag} needs a value")))?;
                    inv.params.push((flag.to_owned(), value.clone()));
                }
                None => inv.params.push((flag.to_owned(), "true".to_owned())),
            }
        } else if arg.starts_with('-') {
            return Err(usage(format!("Syntax error: unknown switch {arg}")));
        } else if inv.command.is_empty() && !arg.contains('=') {
            inv.command = arg.clone();
        } else {
            let (k, v) = arg
                .split_once('=')
                .ok_or_else(|| usage(format!("Syntax error: {arg} is not key=value")))?;
            inv.params.push((k.to_owned(), v.to_owned()));
        }
    }
    Ok(inv)
}

/// Where to connect: `-s` (TCP), else `$PCIPASS_URL`, else `--socket`,
/// `$PCIPASS_SOCKET`, `/var/lib/pcipass/xapi.sock`.
pub fn endpoint(inv: &Invocation) -> Result<Endpoint, CliError> {
    if let Some(server) = inv.get("server") {
        if inv.flag("nossl") {
            return Ok(Endpoint::Tcp(format!(
                "{server}:{}",
                inv.get("port").unwrap_or("80")
            )));
        }
        let addr = format!("{server}:{}", inv.get("port").unwrap_or("443"));
        return tls_endpoint(inv, addr);
    }
    if let Some(socket) = inv.get("socket") {
        return Ok(Endpoint::Unix(socket.to_owned()));
    }
    if let Ok(url) = std::env::var("PCIPASS_URL") {
        if let Some(path) = url.strip_prefix("unix://") {
            return Ok(Endpoint::Unix(path.to_owned()));
        }
        if let Some(addr) = url.strip_prefix("http://") {
            return Ok(Endpoint::Tcp(addr.trim_end_matches('/').to_owned()));
        }
        if let Some(addr) = url.strip_prefix("https://") {
            return tls_endpoint(inv, addr.trim_end_matches('/').to_owned());
        }
        return Err(usage(format!(
            "$PCIPASS_URL {url:?}: want http://HOST:PORT or unix://PATH"
        )));
    }
    Ok(Endpoint::Unix(
        std::env::var("PCIPASS_SOCKET").unwrap_or_else(|_| "/var/lib/pcipass/xapi.sock".into()),
    ))
}

/// HTTPS needs `--fingerprint SHA256` (pcipassd prints it at start) or an
/// explicit `--no-verify`: a self-signed certificate is never accepted
/// silently.
fn tls_endpoint(inv: &Invocation, addr: String) -> Result<Endpoint, CliError> {
    match (inv.get("fingerprint"), inv.flag("no-verify")) {
        (Some(fp), _) => Ok(Endpoint::Tls {
            addr,
            fingerprint: Some(fp.to_owned()),
        }),
        (None, true) => Ok(Endpoint::Tls {
            addr,
            fingerprint: None,
        }),
        (None, false) => Err(CliError {
            message: format!(
                "https://{addr}/: the server certificate cannot be verified; pass --fingerprint SHA256 (pcipassd prints it at start) or --no-verify, or use --nossl"
            ),
            code: 1,
        }),
    }
}

/// User and password: `-u/-pw`, or `-pwf FILE` (line 1 user, line 2 password).
fn credentials(inv: &Invocation) -> Result<(String, String), CliError> {
    if let Some(file) = inv.get("passwordfile") {
        let text = std::fs::read_to_string(file).map_err(|e| CliError {
            message: format!("cannot read password file {file}: {e}"),
            code: 1,
        })?;
        let mut lines = text.lines();
        return Ok((
            lines.next().unwrap_or("").to_owned(),
            lines.next().unwrap_or("").to_owned(),
        ));
    }
    Ok((
        inv.get("username").unwrap_or("root").to_owned(),
        inv.get("password").unwrap_or("").to_owned(),
    ))
}

/// Render a XenAPI failure as xe does: the error's doc text, then one
/// `name: value` line per declared parameter.
pub fn render_failure(description: &[String]) -> String {
    let Some((code, params)) = description.split_first() else {
        return "Error code: INTERNAL_ERROR".into();
    };
    match idl::datamodel().error(code) {
        Some(decl) => {
            let mut out = decl.doc.clone();
            for (i, value) in params.iter().enumerate() {
                let name = decl.params.get(i).map(String::as_str).unwrap_or("<extra>");
                let _ = write!(out, "\n{name}: {value}");
            }
            out
        }
        None => format!(
            "Error code: {code}\nError parameters: {}",
            params.join(", ")
        ),
    }
}

fn api_error(f: RpcFailure) -> CliError {
    match f {
        RpcFailure::Transport(message) => CliError { message, code: 1 },
        RpcFailure::Api(d)
            if d.first().map(String::as_str) == Some("SESSION_AUTHENTICATION_FAILED") =>
        {
            CliError {
                message: "Authentication failed\nFor usage run: 'pcipass help'".into(),
                code: 1,
            }
        }
        RpcFailure::Api(d) => CliError {
            message: render_failure(&d),
            code: 1,
        },
    }
}

/// The value as xe shows it.
fn show(value: &Value) -> String {
    value.to_string()
}

/// How a field is shown: `( RO)`, `(SRO)`, `(MRW)`, ...
fn tag(value: &Value, rw: bool) -> &'static str {
    match (value, rw) {
        (Value::Array(_), false) => "(SRO)",
        (Value::Array(_), true) => "(SRW)",
        (Value::Struct(_), false) => "(MRO)",
        (Value::Struct(_), true) => "(MRW)",
        (_, false) => "( RO)",
        (_, true) => "( RW)",
    }
}

/// A record in xe's terms: (field name, value, writable).
type XeRecord = Vec<(&'static str, Value, bool)>;

/// Everything the CLI fetched, to resolve refs to uuids and names.
struct World {
    pcis: BTreeMap<String, Value>,
    pgpus: BTreeMap<String, Value>,
    hosts: BTreeMap<String, Value>,
}

fn records(v: Value) -> BTreeMap<String, Value> {
    match v {
        Value::Struct(members) => members.into_iter().collect(),
        _ => BTreeMap::new(),
    }
}

fn field(record: &Value, name: &str) -> Value {
    record.member(name).cloned().unwrap_or_else(Value::void)
}

fn text(record: &Value, name: &str) -> String {
    show(&field(record, name))
}

impl World {
    fn uuid_of(&self, reference: &str) -> String {
        [&self.pcis, &self.pgpus, &self.hosts]
            .iter()
            .find_map(|m| m.get(reference))
            .map(|r| text(r, "uuid"))
            .unwrap_or_else(|| {
                if reference == "OpaqueRef:NULL" {
                    "<not in database>".into()
                } else {
                    reference.to_owned()
                }
            })
    }

    fn host_fields(&self, record: &Value) -> [(&'static str, Value, bool); 2] {
        let host = text(record, "host");
        let name = self
            .hosts
            .get(&host)
            .map(|h| field(h, "name_label"))
            .unwrap_or_else(Value::void);
        [
            ("host-uuid", Value::String(self.uuid_of(&host)), false),
            ("host-name-label", name, false),
        ]
    }

    fn dependencies(&self, record: &Value) -> Value {
        match field(record, "dependencies") {
            Value::Array(refs) => Value::Array(
                refs.iter()
                    .filter_map(|r| {
                        r.as_str()
                            .and_then(|r| self.pcis.get(r))
                            .map(|p| field(p, "pci_id"))
                    })
                    .collect(),
            ),
            _ => Value::Array(vec![]),
        }
    }

    fn pci(&self, r: &Value) -> XeRecord {
        let mut rec = vec![
            ("uuid", field(r, "uuid"), false),
            ("vendor-name", field(r, "vendor_name"), false),
            ("device-name", field(r, "device_name"), false),
            ("driver-name", field(r, "driver_name"), false),
        ];
        rec.extend(self.host_fields(r));
        rec.push(("pci-id", field(r, "pci_id"), false));
        rec.push(("dependencies", self.dependencies(r), false));
        rec.push(("other-config", field(r, "other_config"), true));
        rec
    }

    fn pgpu(&self, r: &Value) -> XeRecord {
        let pci = self
            .pcis
            .get(&text(r, "PCI"))
            .cloned()
            .unwrap_or(Value::Struct(vec![]));
        let uuids = |name: &str| match field(r, name) {
            Value::Array(refs) => Value::Array(
                refs.iter()
                    .map(|x| Value::String(self.uuid_of(x.as_str().unwrap_or(""))))
                    .collect(),
            ),
            other => other,
        };
        let mut rec = vec![
            ("uuid", field(r, "uuid"), false),
            ("pci-uuid", field(&pci, "uuid"), false),
            ("vendor-name", field(&pci, "vendor_name"), false),
            ("device-name", field(&pci, "device_name"), false),
            ("dom0-access", field(r, "dom0_access"), false),
            (
                "is-system-display-device",
                field(r, "is_system_display_device"),
                false,
            ),
            (
                "gpu-group-uuid",
                Value::String(self.uuid_of(&text(r, "GPU_group"))),
                true,
            ),
            ("gpu-group-name-label", Value::void(), false),
        ];
        rec.extend(self.host_fields(r));
        rec.push(("pci-id", field(&pci, "pci_id"), false));
        rec.push(("dependencies", self.dependencies(&pci), false));
        rec.push(("other-config", field(r, "other_config"), true));
        rec.push(("supported-VGPU-types", uuids("supported_VGPU_types"), false));
        rec.push(("enabled-VGPU-types", uuids("enabled_VGPU_types"), true));
        rec.push(("resident-VGPUs", uuids("resident_VGPUs"), false));
        rec
    }

    fn host(&self, r: &Value) -> XeRecord {
        vec![
            ("uuid", field(r, "uuid"), false),
            ("name-label", field(r, "name_label"), true),
            ("name-description", field(r, "name_description"), true),
            ("allowed-operations", field(r, "allowed_operations"), false),
            ("current-operations", field(r, "current_operations"), false),
            ("enabled", field(r, "enabled"), false),
            ("display", field(r, "display"), true),
            ("API-version-major", field(r, "API_version_major"), false),
            ("API-version-minor", field(r, "API_version_minor"), false),
            ("API-version-vendor", field(r, "API_version_vendor"), false),
            ("software-version", field(r, "software_version"), false),
            ("capabilities", field(r, "capabilities"), false),
            ("other-config", field(r, "other_config"), true),
            ("hostname", field(r, "hostname"), false),
            ("address", field(r, "address"), false),
        ]
    }
}

/// Print records as xe does: label column 4 wider than the longest label,
/// first line left-aligned, the others right-aligned, two blank lines after
/// each record.
pub fn print_records(records: &[XeRecord], selected: &dyn Fn(&str) -> bool, out: &mut String) {
    for rec in records {
        let rows: Vec<(String, String)> = rec
            .iter()
            .filter(|(name, _, _)| selected(name))
            .map(|(name, value, rw)| (format!("{name} {}", tag(value, *rw)), show(value)))
            .collect();
        let width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0) + 4;
        for (i, (label, value)) in rows.iter().enumerate() {
            if i == 0 {
                let _ = writeln!(out, "{label:<width$}: {value}");
            } else {
                let _ = writeln!(out, "{label:>width$}: {value}");
            }
        }
        out.push_str("\n\n");
    }
}

/// `--minimal`: the first selected field of each record, comma-joined.
pub fn print_minimal(records: &[XeRecord], selected: &dyn Fn(&str) -> bool, out: &mut String) {
    let items: Vec<String> = records
        .iter()
        .filter_map(|rec| rec.iter().find(|(n, _, _)| selected(n)))
        .map(|(_, v, _)| show(v).replace('\\', "\\\\").replace(',', "\\,"))
        .collect();
    let _ = writeln!(out, "{}", items.join(","));
}

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
        "enable-dom0-access" | "disable-dom0-access" | "get-dom0-access-status" => {
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
        "disable" | "enable" | "reboot" => {
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
                client
                    .call(
                        &format!("host.{verb}"),
                        vec![session.clone(), Value::String(host.clone())],
                    )
                    .await
                    .map_err(api_error)?;
            }
        }
        _ => return Err(usage(format!("Unknown command: {}", inv.command))),
    }
    Ok(out)
}

async fn pci_table(
    client: &mut Client,
    session: &Value,
    world: &World,
    rows: &[XeRecord],
) -> Result<String, CliError> {
    let mut lines = vec![[
        "ADDRESS".to_owned(),
        "CLASS".into(),
        "VENDOR".into(),
        "DEVICE".into(),
        "DRIVER".into(),
        "DOM0 ACCESS".into(),
    ]];
    for row in rows {
        let uuid = row
            .iter()
            .find(|(n, _, _)| *n == "uuid")
            .map(|(_, v, _)| show(v))
            .unwrap_or_default();
        let Some((reference, record)) = world.pcis.iter().find(|(_, r)| text(r, "uuid") == uuid)
        else {
            continue;
        };
        let status = client
            .call(
                "PCI.get_dom0_access_status",
                vec![session.clone(), Value::String(reference.clone())],
            )
            .await
            .map(|s| show(&s))
            .unwrap_or_else(|_| "?".into());
        lines.push([
            text(record, "pci_id"),
            text(record, "class_name"),
            text(record, "vendor_name"),
            text(record, "device_name"),
            text(record, "driver_name"),
            status,
        ]);
    }
    let widths: Vec<usize> = (0..6)
        .map(|i| {
            lines
                .iter()
                .map(|l| l[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for line in lines {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
    }
    Ok(out)
}

/// `pcipass help [COMMAND]`.
pub fn help(command: Option<&str>) -> Result<String, CliError> {
    let mut out = String::new();
    match command {
        None => {
            out.push_str("usage: pcipass COMMAND [key=value ...] [-s HOST -p PORT --nossl] [-u USER -pw PASS | -pwf FILE] [--socket PATH]\n\nCommands:\n");
            for c in COMMANDS {
                let _ = writeln!(out, "  {:<28} {}", c.name, c.help);
            }
            out.push_str("  user-add, user-del, user-list, mock-host    administration (pcipass help user-add)\n  completion bash              print a bash completion script\n");
        }
        Some(name) => {
            let c = COMMANDS
                .iter()
                .find(|c| c.name == name)
                .ok_or_else(|| usage(format!("Unknown command: {name}")))?;
            let _ = writeln!(out, "command name            : {}", c.name);
            let _ = writeln!(out, "        reqd params     : {}", c.required.join(", "));
            let _ = writeln!(out, "        optional params : {}", c.optional.join(", "));
            let _ = writeln!(out, "        description     : {}", c.help);
        }
    }
    Ok(out)
}

/// A bash completion script from the command table.
pub fn completion_bash() -> String {
    let names: Vec<&str> = COMMANDS
        .iter()
        .map(|c| c.name)
        .chain([
            "user-add",
            "user-del",
            "user-list",
            "mock-host",
            "help",
            "completion",
        ])
        .collect();
    format!(
        "# bash completion for pcipass\n_pcipass() {{\n  local cur=${{COMP_WORDS[COMP_CWORD]}}\n  if [ \"$COMP_CWORD\" -eq 1 ]; then\n    COMPREPLY=( $(compgen -W \"{}\" -- \"$cur\") )\n  else\n    COMPREPLY=( $(compgen -W \"uuid= params= param-name= param-key= --minimal --table --multiple\" -- \"$cur\") )\n  fi\n}}\ncomplete -F _pcipass pcipass\n",
        names.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn parses_xe_syntax() {
        let inv = parse(&strings(&[
            "pci-list",
            "pci-id=0000:03:00.0",
            "--minimal",
            "-u",
            "root",
            "-pw",
            "x=y",
            "params=uuid,pci-id",
        ]))
        .unwrap();
        assert_eq!(inv.command, "pci-list");
        assert_eq!(inv.get("pci-id"), Some("0000:03:00.0"));
        assert!(inv.flag("minimal"));
        assert_eq!(inv.get("password"), Some("x=y"));
        assert_eq!(parse(&strings(&["pci-list", "-x"])).unwrap_err().code, 2);
        assert_eq!(parse(&strings(&["pci-list", "-u"])).unwrap_err().code, 2);
    }

    #[test]
    fn records_print_in_xe_layout() {
        let rec: XeRecord = vec![
            (
                "uuid",
                Value::str("3c0b6d6a-0e51-4e36-a1b4-6c0a6f4b8e11"),
                false,
            ),
            ("vendor-name", Value::str("Intel Corporation"), false),
            ("device-name", Value::str("HD Graphics 530"), false),
            ("pci-id", Value::str("0000:00:02.0"), false),
            (
                "dependencies",
                Value::strings(["0000:00:02.1", "0000:00:02.2"]),
                false,
            ),
            (
                "other-config",
                Value::Struct(vec![("a".into(), Value::str("1"))]),
                true,
            ),
        ];
        let mut out = String::new();
        print_records(
            std::slice::from_ref(&rec),
            &|n| n != "other-config",
            &mut out,
        );
        assert_eq!(
            out,
            "uuid ( RO)            : 3c0b6d6a-0e51-4e36-a1b4-6c0a6f4b8e11\n     vendor-name ( RO): Intel Corporation\n     device-name ( RO): HD Graphics 530\n          pci-id ( RO): 0000:00:02.0\n    dependencies (SRO): 0000:00:02.1; 0000:00:02.2\n\n\n"
        );
        let mut out = String::new();
        print_records(
            std::slice::from_ref(&rec),
            &|n| ["uuid", "other-config"].contains(&n),
            &mut out,
        );
        assert!(out.contains("    other-config (MRW): a: 1\n"));
        let mut out = String::new();
        print_minimal(&[rec.clone(), rec], &|n| n == "pci-id", &mut out);
        assert_eq!(out, "0000:00:02.0,0000:00:02.0\n");
    }

    #[test]
    fn failures_render_like_xe() {
        assert_eq!(
            render_failure(&strings(&["UUID_INVALID", "PCI", "abc"])),
            "The uuid you supplied was invalid.\ntype: PCI\nuuid: abc"
        );
        assert_eq!(
            render_failure(&strings(&[
                "BOOT_DEVICE_PASSTHROUGH_DISALLOWED",
                "/dev/nvme0n1p2"
            ])),
            "Passing through a PCI device backing a boot disk is disallowed.\ndevice: /dev/nvme0n1p2"
        );
        assert_eq!(
            render_failure(&strings(&["NO_SUCH_CODE", "a", "b"])),
            "Error code: NO_SUCH_CODE\nError parameters: a, b"
        );
    }

    #[test]
    fn help_comes_from_the_command_table() {
        let all = help(None).unwrap();
        for c in COMMANDS {
            assert!(all.contains(c.name));
            assert!(completion_bash().contains(c.name));
        }
        assert!(
            help(Some("pci-param-get"))
                .unwrap()
                .contains("uuid, param-name")
        );
        assert_eq!(help(Some("nope")).unwrap_err().code, 2);
    }
}
