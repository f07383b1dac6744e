//! The daemon's log output: one line per event, whatever the event
//! carries. User names, originators, method names and refs come from
//! clients; a newline or an escape sequence in one must not forge a log
//! line or drive the operator's terminal. Every control character of a
//! record (but the newline that ends it) is written escaped (`\n`,
//! `\u{1b}`), and a record longer than [`MAX_RECORD`] bytes is cut.

use std::borrow::Cow;
use std::io::{self, Write};

/// True when stderr is the journal stream systemd gave the service: its
/// device and inode are the ones `$JOURNAL_STREAM` (`DEV:INODE`) names
/// (systemd.exec(5)); a redirected stderr is not.
pub fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    std::fs::metadata("/proc/self/fd/2").is_ok_and(|m| m.dev() == dev && m.ino() == ino)
}

/// Longest record written; the rest is cut and counted.
pub const MAX_RECORD: usize = 16 * 1024;

/// A writer that makes every record safe to read (see the module
/// documentation). The formatter hands it one whole record per write.
#[derive(Debug)]
pub struct SafeLines<W>(pub W);

impl<W: Write> Write for SafeLines<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.write_all(&safe_record(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// Does this character need escaping in a log record?
fn unsafe_char(c: char) -> bool {
    c.is_control() && c != '\t'
}

/// `record` with its control characters escaped and its length bounded;
/// the newline that ends it is kept.
pub fn safe_record(record: &[u8]) -> Cow<'_, [u8]> {
    let (body, newline) = match record.strip_suffix(b"\n") {
        Some(body) => (body, true),
        None => (record, false),
    };
    let text = String::from_utf8_lossy(body);
    if body.len() <= MAX_RECORD
        && matches!(text, Cow::Borrowed(_))
        && !text.chars().any(unsafe_char)
    {
        return Cow::Borrowed(record);
    }
    let mut out = String::with_capacity(body.len().min(MAX_RECORD) + 32);
    let mut cut = 0;
    for (at, c) in text.char_indices() {
        if out.len() >= MAX_RECORD {
            cut = text.len() - at;
            break;
        }
        if unsafe_char(c) {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    if cut > 0 {
        out.push_str(&format!(" [{cut} more bytes cut]"));
    }
    if newline {
        out.push('\n');
    }
    Cow::Owned(out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newline_in_a_value_cannot_forge_a_line() {
        let record = b"WARN login failed user=evil\nINFO session opened user=root\n";
        let safe = safe_record(record);
        assert_eq!(
            &*safe,
            b"WARN login failed user=evil\\nINFO session opened user=root\n"
        );
        assert_eq!(safe.iter().filter(|b| **b == b'\n').count(), 1);
    }

    #[test]
    fn escapes_and_bad_bytes_are_written_visibly() {
        let safe = safe_record(b"user=\x1b[31mred\x7f \xff\r\n");
        let text = String::from_utf8(safe.into_owned()).unwrap();
        assert_eq!(text, "user=\\u{1b}[31mred\\u{7f} \u{fffd}\\r\n");
    }

    #[test]
    fn an_ordinary_record_is_written_as_it_is() {
        let record = "INFO session opened user=root role=pool-admin\ttab é\n".as_bytes();
        assert!(matches!(safe_record(record), Cow::Borrowed(_)));
    }

    #[test]
    fn a_huge_record_is_cut() {
        let mut record = vec![b'a'; MAX_RECORD + 1000];
        record.push(b'\n');
        let safe = safe_record(&record);
        assert!(safe.len() < MAX_RECORD + 100);
        assert!(safe.ends_with(b" [1000 more bytes cut]\n"));
    }
}
