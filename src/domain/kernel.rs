//! The dom0 kernel's own reading of its command line, as bytes, rule for
//! rule: how `next_arg` (lib/cmdline.c) splits arguments, where
//! `parse_args` (kernel/params.c) stops, which `xen-pciback.hide`
//! occurrence the charp parameter keeps, and how pci_stub.c's `sscanf`
//! loop (lib/vsprintf.c `vsscanf`) turns the value into device ids.
//!
//! This is the one model of the chain's last links: the status (both
//! `/proc/cmdline` and the next boot), the edit planner, the mock reboot
//! and `xen-cmdline` all read hide values through it.

/// The kernel's `isspace` (lib/ctype.c): the six ASCII spaces and 0xA0,
/// which the kernel's Latin-1 table marks as space too.
pub fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | 0xa0)
}

/// The kernel's `isxdigit`.
fn is_xdigit(b: u8) -> bool {
    b.is_ascii_hexdigit()
}

fn skip_spaces(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && is_space(s[i]) {
        i += 1;
    }
    i
}

/// A C string ends at its first NUL; what follows is never seen.
fn c_str(s: &[u8]) -> &[u8] {
    s.iter().position(|b| *b == 0).map_or(s, |n| &s[..n])
}

/// One argument as `next_arg` returns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arg<'a> {
    /// Byte offset where the argument starts (its opening quote, if any).
    pub start: usize,
    /// Byte offset just past the argument.
    pub end: usize,
    /// The parameter name, quotes removed as `next_arg` removes them.
    pub name: &'a [u8],
    /// The value after the first `=`, quotes removed; `None` without `=`.
    pub value: Option<&'a [u8]>,
}

/// Split one argument starting at `start` (not a space), as `next_arg`
/// does: a leading `"` opens a quote; spaces inside quotes do not end the
/// argument; the first `=` (even inside quotes, but not at the very
/// first byte) separates name and value; a value starting with `"` loses
/// it and the argument's closing `"`; a quoted argument loses its closing
/// `"`. Returns the argument and the offset of the next one.
fn next_arg(line: &[u8], start: usize) -> (Arg<'_>, usize) {
    let mut begin = start;
    let quoted = line[begin] == b'"';
    if quoted {
        begin += 1;
    }
    let mut in_quote = quoted;
    let mut equals = None;
    let mut i = begin;
    while i < line.len() {
        if is_space(line[i]) && !in_quote {
            break;
        }
        if equals.is_none() && line[i] == b'=' && i > begin {
            equals = Some(i);
        }
        if line[i] == b'"' {
            in_quote = !in_quote;
        }
        i += 1;
    }
    // `args[i-1] = '\0'` for a quoted argument ending in a quote.
    let closing = i > begin && line[i - 1] == b'"';
    let (name, value) = match equals {
        None => {
            let end = if quoted && closing { i - 1 } else { i };
            (&line[begin..end], None)
        }
        Some(eq) => {
            let mut v_start = eq + 1;
            let mut v_end = i;
            if v_start < i && line[v_start] == b'"' {
                v_start += 1;
                if closing {
                    v_end = i - 1;
                }
            }
            if quoted && closing {
                v_end = v_end.min(i - 1);
            }
            (&line[begin..eq], Some(&line[v_start..v_end.max(v_start)]))
        }
    };
    let next = if i < line.len() { i + 1 } else { i };
    (
        Arg {
            start,
            end: i,
            name,
            value,
        },
        skip_spaces(line, next),
    )
}

/// Every argument of a command line, in order, including those after a
/// bare `--` (see [`params`] for the kernel's own parameters).
pub fn args(line: &[u8]) -> Vec<Arg<'_>> {
    let line = c_str(line);
    let mut out = Vec::new();
    let mut i = skip_spaces(line, 0);
    while i < line.len() {
        let (arg, next) = next_arg(line, i);
        out.push(arg);
        i = next;
    }
    out
}

/// True for the bare `--` that ends the kernel's parameters (`parse_args`
/// compares the name after quote removal, so `"--"` counts too).
pub fn is_end_of_params(arg: &Arg<'_>) -> bool {
    arg.value.is_none() && arg.name == b"--"
}

/// The kernel's own parameters: the arguments before the first bare
/// `--` (what follows goes to init and sets no parameter).
pub fn params(line: &[u8]) -> Vec<Arg<'_>> {
    let mut all = args(line);
    if let Some(n) = all.iter().position(is_end_of_params) {
        all.truncate(n);
    }
    all
}

/// `line` with the kernel parameter `key` (either spelling of `-`/`_`)
/// set to `value`, or removed with `None`: every occurrence before a
/// bare `--` goes, with the blank before it; the new `key=value` takes
/// the last one's place, else goes before a bare `--`, else at the end.
/// Every other byte is kept.
pub fn with_param(line: &[u8], key: &[u8], value: Option<&[u8]>) -> Vec<u8> {
    let line = c_str(line);
    let all = args(line);
    let end_of_params = all.iter().position(is_end_of_params);
    let ours: Vec<&Arg<'_>> = all
        .iter()
        .take(end_of_params.unwrap_or(all.len()))
        .filter(|a| param_eq(a.name, key))
        .collect();
    let mut new = key.to_vec();
    if let Some(v) = value {
        new.push(b'=');
        new.extend_from_slice(v);
    }
    let insert_at = ours
        .last()
        .map(|a| a.start)
        .or_else(|| end_of_params.map(|n| all[n].start))
        .unwrap_or(line.len());
    let mut out = Vec::with_capacity(line.len() + new.len() + 1);
    let mut at = 0;
    let mut inserted = value.is_none();
    for arg in &ours {
        // Drop the argument and the blanks before it (none at the start).
        let mut from = arg.start;
        while from > at && is_space(line[from - 1]) {
            from -= 1;
        }
        out.extend_from_slice(&line[at..from]);
        if !inserted && arg.start == insert_at {
            if !out.is_empty() {
                out.push(b' ');
            }
            out.extend_from_slice(&new);
            inserted = true;
        }
        at = arg.end;
    }
    if !inserted {
        let mut to = insert_at.max(at);
        while to > at && is_space(line[to - 1]) {
            to -= 1;
        }
        out.extend_from_slice(&line[at..to]);
        if !out.is_empty() {
            out.push(b' ');
        }
        out.extend_from_slice(&new);
        if to < line.len() {
            out.push(b' ');
        }
        at = insert_at.max(at);
        // The blanks before the `--` were written as the one above.
        while at < line.len() && is_space(line[at]) {
            at += 1;
        }
    } else if out.is_empty() {
        while at < line.len() && is_space(line[at]) {
            at += 1;
        }
    }
    out.extend_from_slice(&line[at..]);
    out
}

/// `parameq`: names are equal when they are equal with every `-` read
/// as `_`.
pub fn param_eq(a: &[u8], b: &[u8]) -> bool {
    let norm = |c: u8| if c == b'-' { b'_' } else { c };
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| norm(*x) == norm(*y))
}

/// The longest value a `charp` module parameter takes (`param_set_charp`
/// refuses `strlen(val) > 1024` and keeps the earlier value).
pub const CHARP_MAX: usize = 1024;

/// An occurrence of a parameter that the kernel refused (the value set
/// before it stays).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// `name` without `=`: a charp parameter needs a value (-EINVAL).
    Bare,
    /// A value longer than [`CHARP_MAX`] bytes (-ENOSPC).
    TooLong(usize),
}

/// What the kernel keeps for a charp parameter after reading a whole
/// command line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CharpParam<'a> {
    /// The value kept: the last occurrence the kernel accepted.
    pub value: Option<&'a [u8]>,
    /// Occurrences refused, in order.
    pub refused: Vec<Refused>,
    /// Occurrences after `--`, which reach init, not the kernel.
    pub after_end: usize,
}

/// The value the kernel keeps for charp parameter `name`.
pub fn charp<'a>(line: &'a [u8], name: &[u8]) -> CharpParam<'a> {
    let mut out = CharpParam::default();
    let mut ended = false;
    for arg in args(line) {
        if !ended && is_end_of_params(&arg) {
            ended = true;
            continue;
        }
        if !param_eq(arg.name, name) {
            continue;
        }
        if ended {
            out.after_end += 1;
            continue;
        }
        match arg.value {
            None => out.refused.push(Refused::Bare),
            Some(v) if v.len() > CHARP_MAX => out.refused.push(Refused::TooLong(v.len())),
            Some(v) => out.value = Some(v),
        }
    }
    out
}

/// The kernel's `%x` conversion at `i` (after `vsscanf` skipped spaces):
/// an optional `0x`/`0X` prefix, then hex digits without a width; the
/// 64-bit result wraps, and the caller stores it into an `int`.
fn scan_hex(s: &[u8], i: usize) -> Option<(i32, usize)> {
    if i >= s.len() {
        return None;
    }
    let i = skip_spaces(s, i);
    if i >= s.len() || !is_xdigit(s[i]) {
        return None;
    }
    let mut j = i;
    if s[j] == b'0' && s.get(j + 1).is_some_and(|b| b.eq_ignore_ascii_case(&b'x')) {
        j += 2;
    }
    let mut value: u64 = 0;
    while j < s.len() && is_xdigit(s[j]) {
        let digit = (s[j] as char).to_digit(16).unwrap_or(0);
        value = value.wrapping_mul(16).wrapping_add(u64::from(digit));
        j += 1;
    }
    // `*va_arg(args, unsigned int *) = val.u`, read back as `int`.
    Some((value as u32 as i32, j))
}

/// `vsscanf(s, fmt, ...)` for the formats pci_stub.c uses: a space
/// matches any run of spaces (or none), `%x` a hex number, `%n` records
/// the offset reached, any other byte must match. Returns the number of
/// conversions made; `out` receives them in order, as far as they got.
fn scan(s: &[u8], fmt: &str, out: &mut [i32], parsed: &mut usize) -> usize {
    let fmt = fmt.as_bytes();
    let (mut f, mut i, mut n) = (0, 0, 0);
    while f < fmt.len() {
        if fmt[f] == b' ' {
            while f < fmt.len() && fmt[f] == b' ' {
                f += 1;
            }
            i = skip_spaces(s, i);
        }
        if f >= fmt.len() {
            break;
        }
        if fmt[f] != b'%' {
            if s.get(i) != Some(&fmt[f]) {
                break;
            }
            f += 1;
            i += 1;
            continue;
        }
        match fmt.get(f + 1) {
            Some(b'n') => {
                *parsed = i;
                f += 2;
            }
            Some(b'x') => {
                let Some((value, next)) = scan_hex(s, i) else {
                    break;
                };
                out[n] = value;
                n += 1;
                i = next;
                f += 2;
            }
            _ => break,
        }
    }
    n
}

/// One device id as pci_stub keeps it; `None` is a wildcard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StubId {
    /// PCI domain.
    pub domain: u16,
    /// Bus.
    pub bus: u8,
    /// Slot, `None` for every slot.
    pub slot: Option<u8>,
    /// Function, `None` for every function.
    pub function: Option<u8>,
}

/// One parsed entry with the bytes it consumed (leading and trailing
/// spaces included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StubEntry {
    /// The id.
    pub id: StubId,
    /// Start offset in the value.
    pub start: usize,
    /// End offset in the value.
    pub end: usize,
}

/// Why pci_stub refuses a hide value (and hides nothing at all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StubError {
    /// Offset where parsing stopped (the driver logs the text from here).
    pub at: usize,
    /// What is wrong.
    pub reason: &'static str,
}

/// `pcistub_device_id_add`'s checks: a negative slot or function (any
/// value with bit 31 set, e.g. `ffffffff`) is a wildcard; otherwise the
/// domain must fit 16 bits, the bus 8, the slot 5 and the function 3.
fn stub_id(domain: i32, bus: i32, slot: i32, function: i32) -> Result<StubId, &'static str> {
    let slot = if slot < 0 { None } else { Some(slot) };
    let function = if function < 0 { None } else { Some(function) };
    if !(0..=0xffff).contains(&domain) {
        return Err("domain out of range");
    }
    if !(0..=0xff).contains(&bus) {
        return Err("bus out of range");
    }
    if slot.is_some_and(|s| s > 0x1f) {
        return Err("slot out of range");
    }
    if function.is_some_and(|f| f > 7) {
        return Err("function out of range");
    }
    Ok(StubId {
        domain: domain as u16,
        bus: bus as u8,
        slot: slot.map(|s| s as u8),
        function: function.map(|f| f as u8),
    })
}

/// pci_stub.c's loop over `xen-pciback.hide`: at each position try
/// `(D:B:S.F)`, `(D:B:S.*)`, `(D:B:*.*)`, then without a domain
/// `(B:S.F)`, `(B:S.*)`, `(B:*.*)`, each with optional spaces around it.
/// An empty value hides nothing and is fine; anything else that does not
/// parse, or names an id out of range, makes the driver fail: no device
/// at all is hidden.
pub fn parse_hide(value: &[u8]) -> Result<Vec<StubEntry>, StubError> {
    let value = c_str(value);
    let mut entries = Vec::new();
    let mut pos = 0;
    if value.is_empty() {
        return Ok(entries);
    }
    loop {
        let s = &value[pos..];
        let mut parsed = 0;
        let mut v = [0i32; 4];
        let (mut domain, mut bus, mut slot, mut function);
        match scan(s, " (%x:%x:%x.%x) %n", &mut v, &mut parsed) {
            3 => {
                v[3] = -1;
                scan(s, " (%x:%x:%x.*) %n", &mut v, &mut parsed);
            }
            2 => {
                v[2] = -1;
                v[3] = -1;
                scan(s, " (%x:%x:*.*) %n", &mut v, &mut parsed);
            }
            _ => {}
        }
        [domain, bus, slot, function] = v;
        if parsed == 0 {
            domain = 0;
            let mut w = [bus, slot, function];
            match scan(s, " (%x:%x.%x) %n", &mut w, &mut parsed) {
                2 => {
                    w[2] = -1;
                    scan(s, " (%x:%x.*) %n", &mut w, &mut parsed);
                }
                1 => {
                    w[1] = -1;
                    w[2] = -1;
                    scan(s, " (%x:*.*) %n", &mut w, &mut parsed);
                }
                _ => {}
            }
            [bus, slot, function] = w;
        }
        if parsed == 0 {
            return Err(StubError {
                at: pos,
                reason: "not an entry of the form (DDDD:BB:SS.F), (BB:SS.F) or a wildcard form",
            });
        }
        let id =
            stub_id(domain, bus, slot, function).map_err(|reason| StubError { at: pos, reason })?;
        entries.push(StubEntry {
            id,
            start: pos,
            end: pos + parsed,
        });
        pos += parsed;
        if pos >= value.len() {
            return Ok(entries);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept<'a>(line: &'a [u8], key: &str) -> Option<&'a [u8]> {
        charp(line, key.as_bytes()).value
    }

    type Id = (u16, u8, Option<u8>, Option<u8>);

    fn ids(value: &str) -> Option<Vec<Id>> {
        parse_hide(value.as_bytes()).ok().map(|e| {
            e.iter()
                .map(|e| (e.id.domain, e.id.bus, e.id.slot, e.id.function))
                .collect()
        })
    }

    const HIDE: &str = "xen_pciback.hide";

    #[test]
    fn next_arg_double_quotes_around_the_whole_key_value() {
        let line = br#"ro "xen-pciback.hide=(0000:01:00.0) (0000:03:00.1)" quiet"#;
        assert_eq!(
            kept(line, HIDE),
            Some(&b"(0000:01:00.0) (0000:03:00.1)"[..])
        );
        let names: Vec<&[u8]> = args(line).iter().map(|a| a.name).collect();
        assert_eq!(names, [&b"ro"[..], b"xen-pciback.hide", b"quiet"]);
    }

    #[test]
    fn next_arg_quoted_value_loses_its_quotes() {
        let line = br#"xen-pciback.hide="(01:00.0) (02:00.0)" ro"#;
        assert_eq!(kept(line, HIDE), Some(&b"(01:00.0) (02:00.0)"[..]));
    }

    #[test]
    fn next_arg_equals_found_inside_quotes() {
        // The first `=` separates, even inside the quotes.
        let line = br#""a=b c" x"#;
        let a = args(line);
        assert_eq!(a[0].name, b"a");
        assert_eq!(a[0].value, Some(&b"b c"[..]));
        assert_eq!(a[1].name, b"x");
    }

    #[test]
    fn next_arg_quote_in_the_middle_keeps_its_bytes() {
        let line = br#"xen-pciback.hide=(01:00.0)"(02:00.0) x" y"#;
        assert_eq!(kept(line, HIDE), Some(&br#"(01:00.0)"(02:00.0) x""#[..]));
        assert!(parse_hide(kept(line, HIDE).unwrap_or_default()).is_err());
    }

    #[test]
    fn isspace_includes_vertical_tab_form_feed_and_0xa0() {
        for sep in [b'\x0b', b'\x0c', b'\r', 0xa0, b'\t', b'\n'] {
            let mut line = b"ro".to_vec();
            line.push(sep);
            line.extend_from_slice(b"xen-pciback.hide=(01:00.0)");
            assert_eq!(kept(&line, HIDE), Some(&b"(01:00.0)"[..]), "{sep:#x}");
        }
        // Inside a value, 0xA0 is a space for pci_stub's sscanf too.
        assert!(ids("(01:00.0)\u{a0}").is_none(), "UTF-8 NBSP is two bytes");
        assert_eq!(
            ids_bytes(b"\xa0(01:00.0)\xa0(02:00.0)\xa0").map(|v| v.len()),
            Some(2)
        );
    }

    fn ids_bytes(v: &[u8]) -> Option<Vec<StubEntry>> {
        parse_hide(v).ok()
    }

    #[test]
    fn double_dash_ends_parameters() {
        let line = b"ro -- xen-pciback.hide=(01:00.0)";
        let p = charp(line, HIDE.as_bytes());
        assert_eq!(p.value, None);
        assert_eq!(p.after_end, 1);
        assert_eq!(kept(b"ro \"--\" xen-pciback.hide=(01:00.0)", HIDE), None);
        assert_eq!(
            kept(
                b"xen-pciback.hide=(01:00.0) --x xen-pciback.hide=(02:00.0)",
                HIDE
            ),
            Some(&b"(02:00.0)"[..]),
            "only a bare -- ends them"
        );
    }

    #[test]
    fn bare_key_is_refused_and_the_earlier_value_kept() {
        let p = charp(
            b"xen-pciback.hide=(01:00.0) xen-pciback.hide",
            HIDE.as_bytes(),
        );
        assert_eq!(p.value, Some(&b"(01:00.0)"[..]));
        assert_eq!(p.refused, [Refused::Bare]);
    }

    #[test]
    fn value_over_1024_bytes_is_refused_and_the_earlier_value_kept() {
        let long = "(0000:01:00.0)".repeat(74); // 1036 bytes
        let exact = "(01:00.0)".repeat(113) + "       "; // 1024 bytes
        assert_eq!(exact.len(), 1024);
        let line = format!("xen-pciback.hide=(02:00.0) xen-pciback.hide={long}");
        let p = charp(line.as_bytes(), HIDE.as_bytes());
        assert_eq!(p.value, Some(&b"(02:00.0)"[..]));
        assert_eq!(p.refused, [Refused::TooLong(1036)]);
        let line = format!("xen-pciback.hide=(02:00.0) \"xen-pciback.hide={exact}\"");
        assert_eq!(kept(line.as_bytes(), HIDE).map(<[u8]>::len), Some(1024));
    }

    #[test]
    fn dash_and_underscore_are_the_same_name() {
        assert!(param_eq(b"xen-pciback.hide", b"xen_pciback.hide"));
        assert!(!param_eq(b"xen-pciback-hide", b"xen_pciback.hide"));
        assert!(!param_eq(b"Xen-pciback.hide", b"xen_pciback.hide"));
        assert!(!param_eq(b"pciback.hide", b"xen_pciback.hide"));
    }

    #[test]
    fn last_occurrence_wins() {
        let line = b"xen-pciback.hide=(01:00.0) xen_pciback.hide=(02:00.0) ro";
        assert_eq!(kept(line, HIDE), Some(&b"(02:00.0)"[..]));
    }

    #[test]
    fn nul_ends_the_line() {
        assert_eq!(kept(b"ro\0 xen-pciback.hide=(01:00.0)", HIDE), None);
    }

    #[test]
    fn sscanf_hex_skips_leading_whitespace() {
        assert_eq!(
            ids("( 0000: 01: 00. 1)"),
            Some(vec![(0, 1, Some(0), Some(1))])
        );
        assert_eq!(
            ids("(01 :00.0)"),
            None,
            "spaces after a number do not match ':'"
        );
    }

    #[test]
    fn sscanf_hex_accepts_0x_prefixes_and_a_bare_0x_reads_as_zero() {
        assert_eq!(
            ids("(0x0:0x1:0X2.0x3)"),
            Some(vec![(0, 1, Some(2), Some(3))])
        );
        assert_eq!(ids("(0x:0x.0x)"), Some(vec![(0, 0, Some(0), Some(0))]));
        assert_eq!(ids("(0x)"), None);
    }

    #[test]
    fn sscanf_hex_has_no_width_and_wraps_to_32_bits() {
        assert_eq!(
            ids("(100000001:00.0)"),
            Some(vec![(0, 1, Some(0), Some(0))])
        );
        assert_eq!(
            ids("(00000000000000000001:00.0)"),
            Some(vec![(0, 1, Some(0), Some(0))])
        );
        assert_eq!(ids("(0000:100:00.0)"), None, "bus 0x100 is out of range");
    }

    #[test]
    fn sscanf_negative_slot_or_function_is_a_wildcard() {
        assert_eq!(
            ids("(0000:01:ffffffff.3)"),
            Some(vec![(0, 1, None, Some(3))])
        );
        assert_eq!(ids("(01:00.ffffffff)"), Some(vec![(0, 1, Some(0), None)]));
        assert_eq!(ids("(01:00.80000000)"), Some(vec![(0, 1, Some(0), None)]));
        assert_eq!(
            ids("(ffffffff:01:00.0)"),
            None,
            "a negative domain is refused"
        );
        assert_eq!(ids("(ffffffff:00.0)"), None, "a negative bus is refused");
    }

    #[test]
    fn range_checks_after_the_scan() {
        assert_eq!(ids("(10000:01:00.0)"), None);
        assert_eq!(
            ids("(ffff:ff:1f.7)"),
            Some(vec![(0xffff, 0xff, Some(0x1f), Some(7))])
        );
        assert_eq!(ids("(01:20.0)"), None);
        assert_eq!(ids("(01:00.8)"), None);
    }

    #[test]
    fn six_forms_and_wildcards() {
        assert_eq!(
            ids("(0001:02:03.4)(0001:02:03.*)(0001:02:*.*)(02:03.4)(02:03.*)(02:*.*)"),
            Some(vec![
                (1, 2, Some(3), Some(4)),
                (1, 2, Some(3), None),
                (1, 2, None, None),
                (0, 2, Some(3), Some(4)),
                (0, 2, Some(3), None),
                (0, 2, None, None),
            ])
        );
        assert_eq!(ids("(0000:03:*.1)"), None);
        assert_eq!(ids("(0b::00.1)"), None);
        assert_eq!(ids("(0000.02:00.3)"), None);
        assert_eq!(ids("(01:00.0),(02:00.0)"), None);
    }

    #[test]
    fn one_bad_entry_hides_nothing() {
        let err = parse_hide(b"(01:00.0) (0b::00.1)").unwrap_err();
        assert_eq!(err.at, 10);
        assert!(parse_hide(b"(01:00.0)(01:00.8)").is_err());
    }

    #[test]
    fn empty_value_hides_nothing_but_spaces_alone_are_an_error() {
        assert_eq!(ids(""), Some(vec![]));
        assert_eq!(ids("  "), None);
        assert_eq!(ids(" (01:00.0) "), Some(vec![(0, 1, Some(0), Some(0))]));
    }

    #[test]
    fn entry_spans_cover_the_whole_value() {
        let v = b" (01:00.0)  (02:*.*) ";
        let e = parse_hide(v).unwrap();
        assert_eq!(
            (e[0].start, e[0].end, e[1].start, e[1].end),
            (0, 12, 12, v.len())
        );
    }

    #[test]
    fn with_param_sets_replaces_and_removes_keeping_the_rest() {
        let key = b"xen-pciback.hide";
        let v = Some(&b"(0000:01:00.0)"[..]);
        let cases: &[(&str, Option<&[u8]>, &str)] = &[
            (
                "root=/dev/sda1 ro quiet",
                v,
                "root=/dev/sda1 ro quiet xen-pciback.hide=(0000:01:00.0)",
            ),
            (
                "ro xen-pciback.hide=(a) quiet",
                v,
                "ro xen-pciback.hide=(0000:01:00.0) quiet",
            ),
            (
                "ro xen_pciback.hide=(a) quiet xen-pciback.hide=(b)",
                v,
                "ro quiet xen-pciback.hide=(0000:01:00.0)",
            ),
            (
                "ro -- xen-pciback.hide=(a)",
                v,
                "ro xen-pciback.hide=(0000:01:00.0) -- xen-pciback.hide=(a)",
            ),
            ("ro xen-pciback.hide=(a) quiet", None, "ro quiet"),
            ("xen-pciback.hide=(a)", None, ""),
            ("xen-pciback.hide=(a) ro", None, "ro"),
            ("", v, "xen-pciback.hide=(0000:01:00.0)"),
            ("ro  quiet", None, "ro  quiet"),
        ];
        for (line, value, want) in cases {
            let got = with_param(line.as_bytes(), key, *value);
            assert_eq!(String::from_utf8_lossy(&got), *want, "{line:?}");
            let read = charp(&got, key);
            assert_eq!(read.value, *value, "{line:?} reads back");
        }
    }
}
