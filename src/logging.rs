//! The daemon's log output: one line per event, whatever the event
//! carries. User names, originators, method names and refs come from
//! clients; a newline or an escape sequence in one must not forge a log
//! line or drive the operator's terminal. Every control character of a
//! record (but the newline that ends it) is written escaped (`\n`,
//! `\u{1b}`), and a record longer than [`MAX_RECORD`] bytes is cut.
//!
//! In the journal ([`JournalLayer`]) the event's fields are journal fields
//! (`F_USER`, ...), and its `MESSAGE` is the line stderr would carry after
//! the level and target (`session opened user=root role=pool-admin ...`),
//! escaped and cut the same way: plain `journalctl` shows only `MESSAGE`.

use std::borrow::Cow;
use std::io::{self, Write};

use tracing::field::{DisplayValue, Field, Value, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::{DefaultFields, Writer};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

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
    let Some(mut out) = escaped(body) else {
        return Cow::Borrowed(record);
    };
    if newline {
        out.push('\n');
    }
    Cow::Owned(out.into_bytes())
}

/// `text` with every control character escaped (a newline too) and its
/// length bounded, or `None` when it is safe as it is.
fn escaped(text: &[u8]) -> Option<String> {
    let lossy = String::from_utf8_lossy(text);
    if text.len() <= MAX_RECORD
        && matches!(lossy, Cow::Borrowed(_))
        && !lossy.chars().any(unsafe_char)
    {
        return None;
    }
    let mut out = String::with_capacity(text.len().min(MAX_RECORD) + 32);
    let mut cut = 0;
    for (at, c) in lossy.char_indices() {
        if out.len() >= MAX_RECORD {
            cut = lossy.len() - at;
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
    Some(out)
}

/// The journal's `MESSAGE` for an event: its message and its fields as
/// `key=value`, the text a stderr line carries after the level and target,
/// on one line (control characters escaped) of at most [`MAX_RECORD`]
/// bytes (and the note of the cut).
pub fn journal_message<R: RecordFields>(fields: R) -> String {
    let mut line = String::new();
    // Writing to a String fails only if a value's Debug/Display does: the
    // line keeps what was written.
    let _ = DefaultFields::new().format_fields(Writer::new(&mut line), fields);
    escaped(line.as_bytes()).unwrap_or(line)
}

/// tracing-journald's layer, with one change: an event's `MESSAGE` is
/// [`journal_message`]. Its `F_*` fields, `PRIORITY`, `SYSLOG_IDENTIFIER`,
/// `TARGET` and `CODE_*` are the ones tracing-journald writes.
pub struct JournalLayer(pub tracing_journald::Layer);

impl std::fmt::Debug for JournalLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournalLayer")
            .field("syslog_identifier", &self.0.syslog_identifier())
            .finish_non_exhaustive()
    }
}

impl<S> tracing_subscriber::Layer<S> for JournalLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        self.0.on_new_span(attrs, id, ctx);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        self.0.on_record(id, values, ctx);
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        with_journal_message(event, |event| self.0.on_event(event, ctx));
    }
}

/// Calls `f` with a copy of `event` whose `message` is
/// [`journal_message`]; its other fields are the text tracing-journald
/// makes of them (a `&str` as it is, any other value's `Debug`). An event
/// without a message is passed as it is.
fn with_journal_message<T>(event: &Event<'_>, f: impl FnOnce(&Event<'_>) -> T) -> T {
    let meta = event.metadata();
    let fields = meta.fields();
    let Some(message) = fields.field("message") else {
        return f(event);
    };
    let mut texts = FieldTexts(vec![None; fields.len()]);
    event.record(&mut texts);
    texts.0[message.index()] = Some(journal_message(event));
    let shown: Vec<Option<DisplayValue<&str>>> = texts
        .0
        .iter()
        .map(|t| t.as_deref().map(tracing::field::display))
        .collect();
    let values: Vec<Option<&dyn Value>> = shown
        .iter()
        .map(|v| v.as_ref().map(|v| v as &dyn Value))
        .collect();
    // `value_set_all` is how tracing's own macros (0.1.44) build an
    // event's values; tracing-journald offers no other way to change what
    // it writes as MESSAGE.
    let values = fields.value_set_all(&values);
    if event.is_contextual() {
        f(&Event::new(meta, &values))
    } else {
        f(&Event::new_child_of(event.parent().cloned(), meta, &values))
    }
}

/// Each recorded field's text, by field index, as tracing-journald writes
/// it: a `&str` as it is, anything else by its `Debug` (the default
/// `record_*` methods of [`Visit`] all come to `record_debug`, an error by
/// its `Display`).
struct FieldTexts(Vec<Option<String>>);

impl Visit for FieldTexts {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0[field.index()] = Some(value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0[field.index()] = Some(format!("{value:?}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt;

    /// Each field of the event [`JournalLayer`] hands tracing-journald, as
    /// tracing-journald writes it: a `&str` as it is, anything else by its
    /// `Debug`.
    #[derive(Default)]
    struct Handed(Vec<(&'static str, String)>);

    impl Visit for Handed {
        fn record_str(&mut self, field: &Field, value: &str) {
            self.0.push((field.name(), value.to_owned()));
        }

        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.0.push((field.name(), format!("{value:?}")));
        }
    }

    /// A layer that keeps, for each event, what [`JournalLayer`] would hand
    /// tracing-journald.
    struct Keep(Arc<Mutex<Vec<Handed>>>);

    impl<S: Subscriber> tracing_subscriber::Layer<S> for Keep {
        fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
            let handed = with_journal_message(event, |event| {
                let mut handed = Handed::default();
                event.record(&mut handed);
                handed
            });
            self.0.lock().unwrap().push(handed);
        }
    }

    /// The fields tracing-journald is handed for the one event `emit` logs.
    fn handed(emit: fn()) -> Vec<(&'static str, String)> {
        let kept = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry().with(Keep(kept.clone()));
        tracing::subscriber::with_default(subscriber, emit);
        let mut kept = kept.lock().unwrap();
        assert_eq!(kept.len(), 1);
        kept.pop().unwrap().0
    }

    #[test]
    fn the_journal_message_carries_the_fields_on_one_safe_line() {
        let huge = format!(
            "x user={} [7 more bytes cut]",
            "a".repeat(MAX_RECORD - "x user=".len())
        );
        let cases: Vec<(fn(), &str)> = vec![
            (|| tracing::info!("boot flow"), "boot flow"),
            (
                || tracing::info!(user = %"root", role = %"pool-admin", "session opened"),
                "session opened user=root role=pool-admin",
            ),
            // As on stderr: a &str field by its Debug, quoted.
            (
                || tracing::info!(method = "VM.get_all", error = 5, "call failed"),
                r#"call failed method="VM.get_all" error=5"#,
            ),
            (
                || tracing::info!(origin = ?Some(0), ok = true, "x"),
                "x origin=Some(0) ok=true",
            ),
            // A newline in a value or in the message cannot forge a line.
            (
                || tracing::warn!(user = %"evil\nINFO session opened user=root", "login failed"),
                r"login failed user=evil\nINFO session opened user=root",
            ),
            (
                || tracing::error!("pcipassd: {}", "line one\nline two\n"),
                r"pcipassd: line one\nline two\n",
            ),
            (
                || tracing::info!(user = %"\x1b[31mred\r", "x"),
                r"x user=\u{1b}[31mred\r",
            ),
            // tracing-subscriber's own escape of the message, as on stderr.
            (|| tracing::info!("{}", "\x1b[2J"), r"\x1b[2J"),
            (|| tracing::info!(user = %"a\tb é", "x"), "x user=a\tb é"),
            (
                || tracing::info!(user = %"a".repeat(MAX_RECORD), "x"),
                &huge,
            ),
        ];
        for (emit, message) in cases {
            let handed = handed(emit);
            let got = handed.iter().find(|(name, _)| *name == "message");
            assert_eq!(got.map(|(_, m)| m.as_str()), Some(message));
        }
    }

    #[test]
    fn the_other_fields_are_handed_on_as_they_were() {
        let handed = handed(|| {
            let error = io::Error::other("no such host");
            tracing::info!(
                user = %"root",
                auth = "local-root",
                origin = ?Some(0),
                count = 3u64,
                ok = true,
                error = &error as &(dyn std::error::Error + 'static),
                "session opened"
            );
        });
        let expected = [
            (
                "message",
                r#"session opened user=root auth="local-root" origin=Some(0) count=3 ok=true error=no such host"#,
            ),
            ("user", "root"),
            ("auth", "local-root"),
            ("origin", "Some(0)"),
            ("count", "3"),
            ("ok", "true"),
            ("error", "no such host"),
        ];
        let expected: Vec<_> = expected.iter().map(|(n, v)| (*n, v.to_string())).collect();
        assert_eq!(handed, expected);
    }

    #[test]
    fn an_event_without_a_message_is_handed_on_as_it_is() {
        let handed = handed(|| tracing::info!(user = "root", count = 2));
        assert_eq!(
            handed,
            [("user", "root".to_string()), ("count", "2".to_string())]
        );
    }

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
