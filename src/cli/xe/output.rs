//! xe's output layout: records, `--minimal`, and the `--table` of PCI
//! devices.

use std::fmt::Write as _;

use super::errors::CliError;
use super::records::{World, XeRecord, text};
use crate::cli::client::Client;
use crate::value::Value;

/// The value as xe shows it.
pub(super) fn show(value: &Value) -> String {
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

pub(super) async fn pci_table(
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
