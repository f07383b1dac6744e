//! The kernel command line: a tokenizer that follows the kernel's
//! `next_arg` (whitespace separates, double quotes group), parameter-name
//! equality (`-` equals `_`), and edits that touch only the argument they
//! change and keep every other byte in place.

/// One argument of a command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arg<'a> {
    /// Byte offset of the argument in the line.
    pub start: usize,
    /// Byte offset just past the argument.
    pub end: usize,
    /// The parameter name (before `=`).
    pub key: &'a str,
    /// The raw value after `=` (quotes kept), `None` for a bare flag.
    pub value: Option<&'a str>,
}

/// Why an edit was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CmdlineError {
    /// The key is empty or has characters a parameter name cannot have.
    #[error("invalid parameter name {0:?}")]
    BadKey(String),
    /// The value has a character the kernel or GRUB would misread.
    #[error("value {value:?} contains {found:?}, which the kernel or GRUB would misread")]
    BadValue { value: String, found: char },
    /// The existing line cannot be edited safely: an unbalanced quote, a
    /// GRUB comment, or a control character.
    #[error("the existing arguments cannot be edited safely ({0})")]
    UnsafeLine(&'static str),
}

/// Split a command line into arguments, as the kernel does.
pub fn tokenize(line: &str) -> Vec<Arg<'_>> {
    let bytes = line.as_bytes();
    let mut args = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= bytes.len() {
            break;
        }
        let start = i;
        let mut in_quote = false;
        let mut equals = None;
        while i < bytes.len() && (in_quote || !bytes[i].is_ascii_whitespace()) {
            match bytes[i] {
                b'"' => in_quote = !in_quote,
                b'=' if equals.is_none() && !in_quote => equals = Some(i),
                _ => {}
            }
            i += 1;
        }
        let (key, value) = match equals {
            Some(eq) => (&line[start..eq], Some(&line[eq + 1..i])),
            None => (&line[start..i], None),
        };
        args.push(Arg {
            start,
            end: i,
            key: key.trim_matches('"'),
            value,
        });
    }
    args
}

/// Kernel parameter-name equality: `-` and `_` are the same character.
pub fn param_eq(a: &str, b: &str) -> bool {
    let norm = |c: u8| if c == b'-' { b'_' } else { c };
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| norm(x) == norm(y))
}

/// A value with one pair of surrounding double quotes removed.
pub fn unquote(value: &str) -> &str {
    value
        .strip_prefix('"')
        .map(|v| v.strip_suffix('"').unwrap_or(v))
        .unwrap_or(value)
}

/// The value of the last occurrence of `key` (unquoted); `Some("")` for a
/// bare flag; `None` when absent.
pub fn get_last<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    tokenize(line)
        .into_iter()
        .rev()
        .find(|a| param_eq(a.key, key))
        .map(|a| a.value.map(unquote).unwrap_or(""))
}

fn check_key(key: &str) -> Result<(), CmdlineError> {
    let ok = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-,".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(CmdlineError::BadKey(key.to_owned()))
    }
}

/// Refuse values that would change meaning in grub.cfg or on the kernel
/// command line: whitespace, quotes, GRUB's shell characters, control and
/// non-ASCII characters.
pub fn check_value(value: &str) -> Result<(), CmdlineError> {
    match value
        .chars()
        .find(|c| !c.is_ascii_graphic() || "\"'\\$;&|<>{}#`".contains(*c))
    {
        Some(found) => Err(CmdlineError::BadValue {
            value: value.to_owned(),
            found,
        }),
        None => Ok(()),
    }
}

/// Refuse to edit a line whose meaning an edit could change: unbalanced
/// double quotes (an appended argument would land inside them), a word
/// starting with `#` (GRUB ignores the rest of the line), control
/// characters.
fn check_line(line: &str) -> Result<(), CmdlineError> {
    if line.bytes().filter(|b| *b == b'"').count() % 2 == 1 {
        return Err(CmdlineError::UnsafeLine("unbalanced double quote"));
    }
    if line.split_ascii_whitespace().any(|w| w.starts_with('#')) {
        return Err(CmdlineError::UnsafeLine(
            "a word starts with '#', a GRUB comment",
        ));
    }
    if line.chars().any(|c| c.is_control() && c != '\t') {
        return Err(CmdlineError::UnsafeLine("control character"));
    }
    Ok(())
}

/// Set `key=value`: the last occurrence is rewritten in place (earlier
/// ones have no effect and are left alone); when absent, the argument is
/// appended. `value` `None` writes a bare flag.
pub fn set(line: &str, key: &str, value: Option<&str>) -> Result<String, CmdlineError> {
    check_key(key)?;
    check_line(line)?;
    if let Some(v) = value {
        check_value(v)?;
    }
    let arg_text = match value {
        Some(v) => format!("{key}={v}"),
        None => key.to_owned(),
    };
    let tokens = tokenize(line);
    Ok(match tokens.iter().rev().find(|a| param_eq(a.key, key)) {
        Some(last) => format!("{}{}{}", &line[..last.start], arg_text, &line[last.end..]),
        None => {
            let trimmed = line.trim_end();
            let sep = if trimmed.is_empty() { "" } else { " " };
            format!("{trimmed}{sep}{arg_text}{}", &line[trimmed.len()..])
        }
    })
}

/// Remove every occurrence of `key` with the whitespace before it.
pub fn delete(line: &str, key: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut cursor = 0;
    for arg in tokenize(line).into_iter().filter(|a| param_eq(a.key, key)) {
        // Drop the separator before the argument (or after it at the start).
        let before = line[cursor..arg.start].trim_end_matches(|c: char| c.is_ascii_whitespace());
        out.push_str(before);
        cursor = arg.end;
        if out.is_empty() {
            let rest = &line[cursor..];
            cursor += rest.len()
                - rest
                    .trim_start_matches(|c: char| c.is_ascii_whitespace())
                    .len();
        }
    }
    out.push_str(&line[cursor..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizes_like_the_kernel() {
        let line = "ro  quiet key=\"a b\" xen-pciback.hide=(0000:01:00.0) flag";
        let args: Vec<_> = tokenize(line).iter().map(|a| (a.key, a.value)).collect();
        assert_eq!(
            args,
            vec![
                ("ro", None),
                ("quiet", None),
                ("key", Some("\"a b\"")),
                ("xen-pciback.hide", Some("(0000:01:00.0)")),
                ("flag", None)
            ]
        );
        assert_eq!(get_last(line, "key"), Some("a b"));
    }

    #[test]
    fn names_treat_dash_and_underscore_alike() {
        assert!(param_eq("xen-pciback.hide", "xen_pciback.hide"));
        assert!(!param_eq("pciback.hide", "xen-pciback.hide"));
        assert_eq!(
            get_last(
                "xen_pciback.hide=(a) xen-pciback.hide=(b)",
                "xen-pciback.hide"
            ),
            Some("(b)")
        );
    }

    #[test]
    fn set_rewrites_last_occurrence_in_place() {
        assert_eq!(set("a=1 b c=2", "b", Some("x")).unwrap(), "a=1 b=x c=2");
        assert_eq!(set("k=1 m k=2 z", "k", Some("3")).unwrap(), "k=1 m k=3 z");
        assert_eq!(
            set(
                "root=/dev/sda ro",
                "xen-pciback.hide",
                Some("(0000:01:00.0)")
            )
            .unwrap(),
            "root=/dev/sda ro xen-pciback.hide=(0000:01:00.0)"
        );
        assert_eq!(set("", "k", Some("v")).unwrap(), "k=v");
    }

    #[test]
    fn set_refuses_what_would_be_misread() {
        for bad in ["a b", "a\"b", "a;b", "a\nb", "$x", "é"] {
            assert!(set("ro", "k", Some(bad)).is_err(), "{bad:?} accepted");
        }
        assert!(set("ro", "bad key", Some("v")).is_err());
        assert!(set("ro", "k", Some("(0000:01:*.*)")).is_ok());
        assert!(matches!(
            set("ro \"quiet", "k", Some("v")),
            Err(CmdlineError::UnsafeLine(_))
        ));
        assert!(matches!(
            set("ro # comment", "k", Some("v")),
            Err(CmdlineError::UnsafeLine(_))
        ));
    }

    #[test]
    fn delete_removes_every_occurrence_and_its_separator() {
        assert_eq!(delete("a k=1 b k=2 c", "k"), "a b c");
        assert_eq!(delete("k=1 a", "k"), "a");
        assert_eq!(delete("a k=1", "k"), "a");
        assert_eq!(delete("a\tb", "k"), "a\tb");
        assert_eq!(delete("k", "k"), "");
    }
}
