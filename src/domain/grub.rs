//! grub.cfg as GRUB reads it, and the dom0 command line as GRUB and Xen
//! hand it to the kernel.
//!
//! * **Bytes.** grub.cfg is read and written as bytes; a Latin-1 comment or
//!   any byte that is not UTF-8 is kept as it is.
//! * **Which entry boots.** The script is walked as GRUB runs it at menu
//!   time: `if`/`elif`/`else`/`fi` with the conditions XCP-ng's and
//!   Debian's generators write (`[ -n "$v" ]`, `[ "${v}" ]`, `[ -s
//!   $prefix/grubenv ]`, `=`/`!=`), `load_env` importing the grubenv
//!   variables, `set`. The default is the `default` variable after that
//!   walk, so an indented `set default=$override_entry` inside an `if`
//!   counts only when grubenv holds `override_entry` (a one-time boot).
//!   A default that depends on a condition pcipass cannot evaluate is an
//!   error, never a guess. A default naming nothing boots entry 0, as GRUB
//!   does.
//! * **The chain.** A boot line's words go through GRUB's lexer (quotes
//!   removed), then `grub_create_loader_cmdline` (a word holding a space
//!   is wrapped in double quotes, `\`, `'` and `"` get a backslash), then
//!   Xen: the dom0 line, plus whatever follows ` -- ` on the Xen line,
//!   copied into a 1024-byte buffer (1023 characters pass).
//! * **Edits** go to the entries XCP-ng's `xen-cmdline` edits (the last
//!   entry titled with the product brand and the last one ending in
//!   `(Serial)`) and to the entry GRUB boots next, and replace only the
//!   bytes of the words they change.

use std::collections::BTreeMap;

use crate::domain::cmdline::{self, CmdlineError};
use crate::domain::kernel;

/// Which argument line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The hypervisor's arguments.
    Xen,
    /// The dom0 kernel's arguments.
    Dom0,
}

/// Xen copies the dom0 command line into a 1024-byte buffer
/// (`MAX_GUEST_CMDLINE`): 1023 characters and the NUL.
pub const XEN_DOM0_CMDLINE_MAX: usize = 1023;

/// Why grub.cfg cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrubError {
    /// No menuentry boots Xen.
    #[error(
        "grub.cfg has no Xen boot entry (no multiboot2/xen_hypervisor line followed by a module2/xen_module dom0 kernel)"
    )]
    NoXenEntry,
    /// The entry GRUB boots is not a Xen entry.
    #[error("the default boot entry ({0}) is not a Xen entry")]
    DefaultNotXen(String),
    /// Which entry boots depends on something pcipass cannot evaluate.
    #[error("cannot tell which entry GRUB boots: {0}")]
    DefaultUncertain(String),
    /// A boot line uses GRUB syntax whose result pcipass cannot compute.
    #[error("the boot line of entry '{entry}' cannot be read exactly: {reason}")]
    Unsupported { entry: String, reason: String },
    /// The edit would make a command line longer than Xen or the kernel
    /// takes.
    #[error("the edited {what} would be {length} bytes, longer than the {limit} that pass")]
    TooLong {
        what: &'static str,
        length: usize,
        limit: usize,
    },
    /// An edit was refused.
    #[error(transparent)]
    Cmdline(#[from] CmdlineError),
}

/// The grubenv block: `key=value` lines after a `#` header, padded with
/// `#` to 1024 bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrubEnv {
    /// True when the file exists and is not empty (`[ -s ... ]`).
    pub present: bool,
    vars: BTreeMap<String, Vec<u8>>,
}

impl GrubEnv {
    /// No grubenv file.
    pub fn absent() -> GrubEnv {
        GrubEnv::default()
    }

    /// Parse a grubenv file's bytes.
    pub fn parse(bytes: &[u8]) -> GrubEnv {
        let mut vars = BTreeMap::new();
        for line in bytes.split(|b| *b == b'\n') {
            if line.first() == Some(&b'#') {
                continue;
            }
            if let Some(eq) = line.iter().position(|b| *b == b'=') {
                let name = String::from_utf8_lossy(&line[..eq]).into_owned();
                vars.insert(name, line[eq + 1..].to_vec());
            }
        }
        GrubEnv {
            present: !bytes.is_empty(),
            vars,
        }
    }

    /// A variable's value.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.vars.get(name).map(Vec::as_slice)
    }
}

/// Part of a word: literal bytes or a `$variable` GRUB expands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(Vec<u8>),
    Var(String),
}

/// One word of a GRUB command, as the lexer reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    /// Absolute byte offset of the word's first source byte.
    pub start: usize,
    /// Absolute byte offset just past its last source byte.
    pub end: usize,
    parts: Vec<Part>,
}

impl Word {
    /// The word's value when it holds no variable.
    fn literal(&self) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        for part in &self.parts {
            match part {
                Part::Lit(b) => out.extend_from_slice(b),
                Part::Var(_) => return None,
            }
        }
        Some(out)
    }

    fn is(&self, text: &str) -> bool {
        self.literal().is_some_and(|l| l == text.as_bytes())
    }

    fn first_var(&self) -> Option<&str> {
        self.parts.iter().find_map(|p| match p {
            Part::Var(v) => Some(v.as_str()),
            Part::Lit(_) => None,
        })
    }
}

/// One command: its words (after `;` splitting).
type Command = Vec<Word>;

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Lex one line into commands, GRUB's way: space and tab separate words,
/// `'...'` is literal, `"..."` expands `$var` and lets `\` escape
/// `$ " \`, a bare `\` escapes the next byte, an unquoted `;` ends a
/// command, a word starting with `#` starts a comment. Returns the
/// commands and whether a quote was left open.
fn lex(line: &[u8], base: usize) -> (Vec<Command>, bool) {
    let mut commands = vec![Vec::new()];
    let mut i = 0;
    let mut open = false;
    while i < line.len() {
        let b = line[i];
        if b == b' ' || b == b'\t' {
            i += 1;
            continue;
        }
        if b == b';' {
            commands.push(Vec::new());
            i += 1;
            continue;
        }
        if b == b'#' {
            break;
        }
        let start = i;
        let mut parts: Vec<Part> = Vec::new();
        let mut lit = Vec::new();
        let flush = |lit: &mut Vec<u8>, parts: &mut Vec<Part>| {
            if !lit.is_empty() {
                parts.push(Part::Lit(std::mem::take(lit)));
            }
        };
        let mut quote: Option<u8> = None;
        while i < line.len() {
            let c = line[i];
            match quote {
                Some(b'\'') => {
                    if c == b'\'' {
                        quote = None;
                    } else {
                        lit.push(c);
                    }
                    i += 1;
                }
                Some(_) => match c {
                    b'"' => {
                        quote = None;
                        i += 1;
                    }
                    b'\\' if matches!(line.get(i + 1), Some(b'$' | b'"' | b'\\')) => {
                        lit.push(line[i + 1]);
                        i += 2;
                    }
                    b'$' => {
                        let (var, next) = read_var(line, i);
                        match var {
                            Some(v) => {
                                flush(&mut lit, &mut parts);
                                parts.push(Part::Var(v));
                            }
                            None => lit.push(b'$'),
                        }
                        i = next;
                    }
                    _ => {
                        lit.push(c);
                        i += 1;
                    }
                },
                None => match c {
                    b' ' | b'\t' | b';' => break,
                    b'\'' | b'"' => {
                        quote = Some(c);
                        i += 1;
                    }
                    b'\\' => {
                        if let Some(n) = line.get(i + 1) {
                            lit.push(*n);
                        }
                        i += 2;
                    }
                    b'$' => {
                        let (var, next) = read_var(line, i);
                        match var {
                            Some(v) => {
                                flush(&mut lit, &mut parts);
                                parts.push(Part::Var(v));
                            }
                            None => lit.push(b'$'),
                        }
                        i = next;
                    }
                    _ => {
                        lit.push(c);
                        i += 1;
                    }
                },
            }
        }
        if quote.is_some() {
            open = true;
        }
        flush(&mut lit, &mut parts);
        let end = i.min(line.len());
        if let Some(cmd) = commands.last_mut() {
            cmd.push(Word {
                start: base + start,
                end: base + end,
                parts,
            });
        }
    }
    commands.retain(|c| !c.is_empty());
    (commands, open)
}

/// `$name` or `${name}` at `i` (which holds `$`).
fn read_var(line: &[u8], i: usize) -> (Option<String>, usize) {
    if line.get(i + 1) == Some(&b'{') {
        if let Some(close) = line[i + 2..].iter().position(|b| *b == b'}') {
            let name = String::from_utf8_lossy(&line[i + 2..i + 2 + close]).into_owned();
            return (Some(name), i + 3 + close);
        }
        return (None, i + 1);
    }
    let mut j = i + 1;
    while j < line.len() && is_name_byte(line[j]) {
        j += 1;
    }
    if j == i + 1 {
        // `$?`, `$#`, `$@`, `$*`: special parameters.
        return match line.get(j) {
            Some(c @ (b'?' | b'#' | b'@' | b'*')) => (Some((*c as char).to_string()), j + 1),
            _ => (None, j),
        };
    }
    (
        Some(String::from_utf8_lossy(&line[i + 1..j]).into_owned()),
        j,
    )
}

/// `NAME=VALUE` in a word: the name and, when literal, the value.
fn assignment(word: &Word) -> Option<(String, Option<Vec<u8>>)> {
    let Some(Part::Lit(first)) = word.parts.first() else {
        return None;
    };
    let eq = first.iter().position(|b| *b == b'=')?;
    if eq == 0 || !first[..eq].iter().all(|b| is_name_byte(*b)) {
        return None;
    }
    let name = String::from_utf8_lossy(&first[..eq]).into_owned();
    let rest = Word {
        start: word.start,
        end: word.end,
        parts: std::iter::once(Part::Lit(first[eq + 1..].to_vec()))
            .chain(word.parts[1..].iter().cloned())
            .collect(),
    };
    Some((name, rest.literal()))
}

/// Three-valued truth for conditions pcipass may not be able to decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tri {
    True,
    False,
    Unknown,
}

/// A variable's value at menu time.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Known(Vec<u8>),
    Unknown,
}

/// Variables GRUB itself sets (platform, features, paths): their values
/// are not in grub.cfg, so conditions on them are not decided.
fn is_builtin(name: &str) -> bool {
    name.starts_with("feature_")
        || name.starts_with("grub_")
        || matches!(
            name,
            "prefix" | "root" | "cmdpath" | "config_directory" | "config_file" | "lang" | "?"
        )
}

#[derive(Debug, Default)]
struct Vars {
    values: BTreeMap<String, Value>,
}

impl Vars {
    fn get(&self, name: &str) -> Value {
        match self.values.get(name) {
            Some(v) => v.clone(),
            None if is_builtin(name) => Value::Unknown,
            None => Value::Known(Vec::new()),
        }
    }

    fn expand(&self, word: &Word) -> Value {
        let mut out = Vec::new();
        for part in &word.parts {
            match part {
                Part::Lit(b) => out.extend_from_slice(b),
                Part::Var(name) => match self.get(name) {
                    Value::Known(v) => out.extend_from_slice(&v),
                    Value::Unknown => return Value::Unknown,
                },
            }
        }
        Value::Known(out)
    }
}

/// `[ ... ]` as GRUB's `test` evaluates the forms generators write.
fn condition(words: &[Word], vars: &Vars, env: &GrubEnv) -> Tri {
    let inner = match words {
        [open, inner @ .., close] if open.is("[") && close.is("]") => inner,
        [open, inner @ ..] if open.is("test") => inner,
        _ => return Tri::Unknown,
    };
    let truth = |b: bool| if b { Tri::True } else { Tri::False };
    let value = |w: &Word| vars.expand(w);
    match inner {
        [] => Tri::False,
        [flag, file]
            if flag.is("-s")
                && file.parts.first() == Some(&Part::Var("prefix".into()))
                && file.parts.get(1) == Some(&Part::Lit(b"/grubenv".to_vec()))
                && file.parts.len() == 2 =>
        {
            truth(env.present)
        }
        [flag, w] if flag.is("-n") || flag.is("-z") => match value(w) {
            Value::Known(v) => truth(v.is_empty() == flag.is("-z")),
            Value::Unknown => Tri::Unknown,
        },
        [w] => match value(w) {
            Value::Known(v) => truth(!v.is_empty()),
            Value::Unknown => Tri::Unknown,
        },
        [a, op, b] if op.is("=") || op.is("==") || op.is("!=") => match (value(a), value(b)) {
            (Value::Known(a), Value::Known(b)) => truth((a == b) != op.is("!=")),
            _ => Tri::Unknown,
        },
        _ => Tri::Unknown,
    }
}

/// Byte range in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: usize,
    end: usize,
}

/// A boot line (`multiboot2 PATH ARGS`, `module2 [--nounzip] PATH ARGS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootLine {
    /// The words after the image path.
    words: Vec<Word>,
    /// Just past the image path (where a first argument goes).
    path_end: usize,
    /// A quote is left open at the end of the line.
    open_quote: bool,
}

/// Stands for a variable's value in a command line built for checking
/// where ` -- ` falls (a byte no real argument holds).
const VAR_MARK: u8 = 0x01;

impl BootLine {
    fn new(cmd: &[Word], open_quote: bool) -> Option<BootLine> {
        let mut i = 1;
        while cmd.get(i).is_some_and(|w| {
            w.literal()
                .is_some_and(|l| l.starts_with(b"--") && l.len() > 2)
        }) {
            i += 1;
        }
        let path = cmd.get(i)?;
        Some(BootLine {
            words: cmd[i + 1..].to_vec(),
            path_end: path.end,
            open_quote,
        })
    }

    fn vars(&self) -> impl Iterator<Item = &str> {
        self.words.iter().filter_map(Word::first_var)
    }

    /// The line must read exactly: no open quote, no variable.
    fn check_exact(&self, entry: &Entry) -> Result<(), GrubError> {
        if self.open_quote {
            return Err(entry.unsupported("a quote is left open".into()));
        }
        match self.vars().next() {
            Some(v) => Err(entry.unsupported(format!("it uses the GRUB variable ${v}"))),
            None => Ok(()),
        }
    }

    /// Variables may appear when the entry itself sets them only to
    /// literal values without `--` (Debian's `${xen_rm_opts}`): where
    /// ` -- ` falls is then known.
    fn check_bounded(&self, entry: &Entry) -> Result<(), GrubError> {
        if self.open_quote {
            return Err(entry.unsupported("a quote is left open".into()));
        }
        for var in self.vars() {
            let bounded = entry.locals.get(var).is_some_and(|values| {
                values.iter().all(|v| {
                    v.as_ref()
                        .is_some_and(|v| !v.windows(2).any(|w| w == b"--"))
                })
            });
            if !bounded {
                return Err(entry.unsupported(format!("it uses the GRUB variable ${var}")));
            }
        }
        Ok(())
    }

    /// The words' values, a variable standing as [`VAR_MARK`].
    fn values(&self) -> Vec<Vec<u8>> {
        self.words
            .iter()
            .map(|w| {
                let mut out = Vec::new();
                for part in &w.parts {
                    match part {
                        Part::Lit(b) => out.extend_from_slice(b),
                        Part::Var(_) => out.push(VAR_MARK),
                    }
                }
                out
            })
            .collect()
    }
}

/// `grub_create_loader_cmdline`: words joined by one space; a word holding
/// a space is wrapped in double quotes; `\`, `'` and `"` get a backslash,
/// except a `\xHH` sequence, which passes as it is.
pub fn loader_cmdline(words: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for (n, word) in words.iter().enumerate() {
        if n > 0 {
            out.push(b' ');
        }
        let space = word.contains(&b' ');
        if space {
            out.push(b'"');
        }
        let mut i = 0;
        while i < word.len() {
            let c = word[i];
            if c == b'\\'
                && word.get(i + 1) == Some(&b'x')
                && word.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
                && word.get(i + 3).is_some_and(u8::is_ascii_hexdigit)
            {
                out.extend_from_slice(&word[i..i + 4]);
                i += 4;
                continue;
            }
            if matches!(c, b'\\' | b'\'' | b'"') {
                out.push(b'\\');
            }
            out.push(c);
            i += 1;
        }
        if space {
            out.push(b'"');
        }
    }
    out
}

/// One menuentry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its title (lossy UTF-8, for logs and matching).
    pub title: String,
    /// Its `--id`, if any.
    pub id: Option<String>,
    xen: Option<BootLine>,
    dom0: Option<BootLine>,
    /// Variables the entry's own script sets, with each value it may take
    /// (`None`: not a literal).
    locals: BTreeMap<String, Vec<Option<Vec<u8>>>>,
}

impl Entry {
    fn unsupported(&self, reason: String) -> GrubError {
        GrubError::Unsupported {
            entry: self.title.clone(),
            reason,
        }
    }

    /// True when the entry boots Xen with a dom0 kernel.
    pub fn is_xen(&self) -> bool {
        self.xen.is_some() && self.dom0.is_some()
    }

    fn line(&self, target: Target) -> Option<&BootLine> {
        match target {
            Target::Xen => self.xen.as_ref(),
            Target::Dom0 => self.dom0.as_ref(),
        }
    }
}

/// A top-level menu item: an entry or a submenu.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    Entry(usize),
    Submenu {
        title: String,
        id: Option<String>,
        items: Vec<Item>,
    },
}

/// Where the default came from, for logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DefaultSource {
    /// An unconditional `set default=` (or none: entry 0).
    Config,
    /// A one-time choice held in grubenv (`override_entry`, `next_entry`).
    GrubEnv(String),
    /// `set default=` names nothing; GRUB boots entry 0.
    Fallback(String),
}

/// The dom0 command line as the kernel receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dom0Cmdline {
    /// The bytes the kernel gets (cut to [`XEN_DOM0_CMDLINE_MAX`]).
    pub bytes: Vec<u8>,
    /// The length before Xen's cut.
    pub full_len: usize,
}

/// A parsed grub.cfg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrubConfig {
    text: Vec<u8>,
    entries: Vec<Entry>,
    menu: Vec<Item>,
    default: Result<usize, GrubError>,
    default_source: DefaultSource,
    env: GrubEnv,
}

enum Block {
    If { state: Tri, taken: Tri },
    Entry(usize),
    Submenu,
    Function,
    Other,
}

fn title_and_id(cmd: &[Word]) -> (String, Option<String>) {
    let title = cmd
        .get(1)
        .and_then(Word::literal)
        .map(|t| String::from_utf8_lossy(&t).into_owned())
        .unwrap_or_default();
    let mut id = None;
    for pair in cmd.windows(2) {
        let is_id_opt =
            pair[0].is("--id") || pair[0].parts == [Part::Var("menuentry_id_option".into())];
        if is_id_opt {
            id = pair[1]
                .literal()
                .map(|t| String::from_utf8_lossy(&t).into_owned());
        }
    }
    (title, id)
}

impl GrubConfig {
    /// Parse grub.cfg bytes, with the grubenv GRUB would load beside it.
    pub fn parse(text: &[u8], env: &GrubEnv) -> Result<GrubConfig, GrubError> {
        let mut entries: Vec<Entry> = Vec::new();
        let mut menu_stack: Vec<Vec<Item>> = vec![Vec::new()];
        let mut submenu_heads: Vec<(String, Option<String>)> = Vec::new();
        let mut blocks: Vec<Block> = Vec::new();
        let mut vars = Vars::default();
        let mut uncertain_menu = false;
        let mut offset = 0;
        for raw in text.split_inclusive(|b| *b == b'\n') {
            let line_start = offset;
            offset += raw.len();
            let line = raw.strip_suffix(b"\n").unwrap_or(raw);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let (commands, open_quote) = lex(line, line_start);
            for mut cmd in commands {
                // `then cmd`, `else cmd`, `do cmd`: the keyword, then a command.
                while let Some(first) = cmd.first() {
                    if first.is("then") || first.is("do") {
                        cmd.remove(0);
                    } else if first.is("else") {
                        if let Some(Block::If { state, taken }) = blocks.last_mut() {
                            *state = match *taken {
                                Tri::True => Tri::False,
                                Tri::False => Tri::True,
                                Tri::Unknown => Tri::Unknown,
                            };
                        }
                        cmd.remove(0);
                    } else {
                        break;
                    }
                }
                let Some(first) = cmd.first() else { continue };
                let in_body = blocks
                    .iter()
                    .any(|b| matches!(b, Block::Entry(_) | Block::Function));
                let context = blocks.iter().fold(Tri::True, |acc, b| match (acc, b) {
                    (Tri::False, _)
                    | (
                        _,
                        Block::If {
                            state: Tri::False, ..
                        },
                    ) => Tri::False,
                    (Tri::Unknown, _)
                    | (
                        _,
                        Block::If {
                            state: Tri::Unknown,
                            ..
                        },
                    ) => Tri::Unknown,
                    _ => Tri::True,
                });
                let opens_block = cmd.last().is_some_and(|w| w.is("{"));
                if first.is("if") || first.is("while") || first.is("for") {
                    let is_if = first.is("if");
                    let state = if is_if && !in_body {
                        condition(&cmd[1..], &vars, env)
                    } else {
                        Tri::Unknown
                    };
                    blocks.push(if is_if {
                        Block::If {
                            state,
                            taken: state,
                        }
                    } else {
                        Block::Other
                    });
                } else if first.is("elif") {
                    let cond = condition(&cmd[1..], &vars, env);
                    if let Some(Block::If { state, taken }) = blocks.last_mut() {
                        (*state, *taken) = match *taken {
                            Tri::True => (Tri::False, Tri::True),
                            Tri::False => (cond, cond),
                            Tri::Unknown => (Tri::Unknown, Tri::Unknown),
                        };
                    }
                } else if first.is("fi") || first.is("done") {
                    blocks.pop();
                } else if first.is("menuentry") && opens_block {
                    let (title, id) = title_and_id(&cmd);
                    let index = entries.len();
                    entries.push(Entry {
                        title,
                        id,
                        xen: None,
                        dom0: None,
                        locals: BTreeMap::new(),
                    });
                    match context {
                        Tri::True if !in_body => {
                            if let Some(items) = menu_stack.last_mut() {
                                items.push(Item::Entry(index));
                            }
                        }
                        Tri::False => {}
                        _ => uncertain_menu = true,
                    }
                    blocks.push(Block::Entry(index));
                } else if first.is("submenu") && opens_block {
                    submenu_heads.push(title_and_id(&cmd));
                    menu_stack.push(Vec::new());
                    if context != Tri::True {
                        uncertain_menu = true;
                    }
                    blocks.push(Block::Submenu);
                } else if first.is("function") && opens_block {
                    blocks.push(Block::Function);
                } else if first.is("}") {
                    // Close the innermost menu block (an `if` left open inside
                    // it is closed with it).
                    while let Some(b) = blocks.pop() {
                        match b {
                            Block::Entry(_) | Block::Function => break,
                            Block::Submenu => {
                                let items = menu_stack.pop().unwrap_or_default();
                                let (title, id) = submenu_heads.pop().unwrap_or_default();
                                if let Some(parent) = menu_stack.last_mut() {
                                    parent.push(Item::Submenu { title, id, items });
                                }
                                break;
                            }
                            _ => {}
                        }
                    }
                } else if let Some(Block::Entry(index)) = blocks
                    .iter()
                    .rev()
                    .find(|b| matches!(b, Block::Entry(_) | Block::Function))
                {
                    let entry = &mut entries[*index];
                    let assigned = if first.is("set") {
                        &cmd[1..]
                    } else {
                        &cmd[..1]
                    };
                    for word in assigned {
                        if let Some((name, value)) = assignment(word) {
                            entry.locals.entry(name).or_default().push(value);
                        }
                    }
                    if first.is("multiboot2") || first.is("multiboot") || first.is("xen_hypervisor")
                    {
                        if entry.xen.is_none() {
                            entry.xen = BootLine::new(&cmd, open_quote);
                        }
                    } else if (first.is("module2") || first.is("module") || first.is("xen_module"))
                        && entry.xen.is_some()
                        && entry.dom0.is_none()
                    {
                        entry.dom0 = BootLine::new(&cmd, open_quote);
                    }
                } else if !in_body {
                    Self::top_level(&cmd, context, &mut vars, env);
                }
            }
        }
        let (default, default_source) =
            Self::resolve_default(&vars, env, &entries, &menu_stack[0], uncertain_menu);
        if !entries.iter().any(Entry::is_xen) {
            return Err(GrubError::NoXenEntry);
        }
        Ok(GrubConfig {
            text: text.to_vec(),
            entries,
            menu: menu_stack.swap_remove(0),
            default,
            default_source,
            env: env.clone(),
        })
    }

    /// A top-level command outside any entry: `set`, `NAME=VALUE`,
    /// `unset`, `load_env`.
    fn top_level(cmd: &[Word], context: Tri, vars: &mut Vars, env: &GrubEnv) {
        let assign = |vars: &mut Vars, word: &Word| {
            let Some(Part::Lit(first)) = word.parts.first() else {
                return;
            };
            let Some(eq) = first.iter().position(|b| *b == b'=') else {
                return;
            };
            let name = String::from_utf8_lossy(&first[..eq]).into_owned();
            if name.is_empty() || !first[..eq].iter().all(|b| is_name_byte(*b)) {
                return;
            }
            let rest = Word {
                start: word.start,
                end: word.end,
                parts: std::iter::once(Part::Lit(first[eq + 1..].to_vec()))
                    .chain(word.parts[1..].iter().cloned())
                    .collect(),
            };
            let value = match context {
                Tri::True => vars.expand(&rest),
                _ => Value::Unknown,
            };
            if context != Tri::False {
                vars.values.insert(name, value);
            }
        };
        let first = &cmd[0];
        if first.is("set") {
            for word in &cmd[1..] {
                assign(vars, word);
            }
        } else if first.is("unset") {
            for word in &cmd[1..] {
                if let Some(name) = word.literal() {
                    let name = String::from_utf8_lossy(&name).into_owned();
                    match context {
                        Tri::True => vars.values.insert(name, Value::Known(Vec::new())),
                        Tri::Unknown => vars.values.insert(name, Value::Unknown),
                        Tri::False => None,
                    };
                }
            }
        } else if first.is("load_env") {
            if cmd.len() > 1 || context == Tri::Unknown {
                // Another file, or maybe loaded: every grubenv name is unknown.
                if context != Tri::False {
                    for name in env.vars.keys() {
                        vars.values.insert(name.clone(), Value::Unknown);
                    }
                }
            } else if context == Tri::True {
                for (name, value) in &env.vars {
                    vars.values
                        .insert(name.clone(), Value::Known(value.clone()));
                }
            }
        } else if cmd.len() == 1 {
            assign(vars, first);
        }
    }

    fn resolve_default(
        vars: &Vars,
        env: &GrubEnv,
        entries: &[Entry],
        menu: &[Item],
        uncertain_menu: bool,
    ) -> (Result<usize, GrubError>, DefaultSource) {
        let spec = match vars.get("default") {
            Value::Known(v) => String::from_utf8_lossy(&v).into_owned(),
            Value::Unknown => {
                return (
                    Err(GrubError::DefaultUncertain(
                        "`set default=` depends on a condition or variable pcipass cannot evaluate"
                            .into(),
                    )),
                    DefaultSource::Config,
                );
            }
        };
        let from_env = ["override_entry", "next_entry", "saved_entry"]
            .into_iter()
            .find(|name| {
                env.get(name)
                    .is_some_and(|v| !v.is_empty() && v == spec.as_bytes())
            });
        let source = match from_env {
            Some(name) => DefaultSource::GrubEnv(format!("{name}={spec}")),
            None => DefaultSource::Config,
        };
        let spec_or_zero = if spec.is_empty() { "0" } else { spec.as_str() };
        if uncertain_menu && spec_or_zero.split('>').any(|p| p.parse::<usize>().is_ok()) {
            return (
                Err(GrubError::DefaultUncertain(
                    "a menu entry is defined under a condition pcipass cannot evaluate, so entry numbers are uncertain".into(),
                )),
                source,
            );
        }
        match find_item(menu, entries, spec_or_zero) {
            Some(index) => (Ok(index), source),
            None => {
                let first = match menu.first() {
                    Some(Item::Entry(i)) => Ok(*i),
                    _ => Err(GrubError::DefaultNotXen(spec.clone())),
                };
                (first, DefaultSource::Fallback(spec))
            }
        }
    }

    /// The entries, in file order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Where the default came from.
    pub fn default_source(&self) -> &DefaultSource {
        &self.default_source
    }

    /// The entry GRUB boots next.
    pub fn default_entry(&self) -> Result<&Entry, GrubError> {
        let index = self.default.clone()?;
        let entry = &self.entries[index];
        if entry.is_xen() {
            Ok(entry)
        } else {
            Err(GrubError::DefaultNotXen(entry.title.clone()))
        }
    }

    fn default_index(&self) -> Result<usize, GrubError> {
        self.default_entry()?;
        self.default.clone()
    }

    /// The dom0 command line the next boot gives the kernel: the default
    /// entry's dom0 line as GRUB passes it, plus the dom0 arguments after
    /// ` -- ` on its Xen line, cut where Xen cuts it.
    pub fn boot_cmdline(&self) -> Result<Dom0Cmdline, GrubError> {
        self.cmdline_of(self.default_entry()?)
    }

    /// The dom0 command line `entry` gives the kernel.
    pub fn cmdline_of(&self, entry: &Entry) -> Result<Dom0Cmdline, GrubError> {
        let (Some(xen), Some(dom0)) = (&entry.xen, &entry.dom0) else {
            return Err(GrubError::NoXenEntry);
        };
        dom0.check_exact(entry)?;
        xen.check_bounded(entry)?;
        let cmdline = xen_dom0_cmdline(
            &loader_cmdline(&xen.values()),
            &loader_cmdline(&dom0.values()),
        );
        if cmdline.bytes.contains(&VAR_MARK) {
            return Err(entry.unsupported(
                "the dom0 arguments after ` -- ` on the Xen line use a GRUB variable".into(),
            ));
        }
        Ok(cmdline)
    }

    /// The same configuration after an edit: `text` read with the same
    /// grubenv.
    pub fn reparsed(&self, text: &[u8]) -> Result<GrubConfig, GrubError> {
        GrubConfig::parse(text, &self.env)
    }

    /// Every argument of the default entry's `target` line that
    /// `xen-cmdline` prints for `key` (`KEY` or `KEY=...`, exactly): its
    /// offset and source text, in line order.
    pub fn occurrences_at(
        &self,
        target: Target,
        key: &str,
    ) -> Result<Vec<(usize, Vec<u8>)>, GrubError> {
        let entry = self.default_entry()?;
        let line = entry.line(target).ok_or(GrubError::NoXenEntry)?;
        Ok(line
            .words
            .iter()
            .filter(|w| exact_match(w, key))
            .map(|w| (w.start, self.text[w.start..w.end].to_vec()))
            .collect())
    }

    /// The arguments matching `key` exactly that the default entry's Xen
    /// line passes to dom0 (after its ` -- `): Xen appends them after the
    /// dom0 line, so they override what `--set-dom0` writes there.
    pub fn dom0_args_on_xen_line(&self, key: &str) -> Result<Vec<Vec<u8>>, GrubError> {
        let entry = self.default_entry()?;
        let xen = entry.line(Target::Xen).ok_or(GrubError::NoXenEntry)?;
        Ok(match xen.words.iter().position(|w| w.is("--")) {
            Some(n) if n > 0 => xen.words[n + 1..]
                .iter()
                .filter(|w| exact_match(w, key))
                .map(|w| self.text[w.start..w.end].to_vec())
                .collect(),
            _ => Vec::new(),
        })
    }

    /// The entries an edit changes: those XCP-ng's `xen-cmdline` edits
    /// (the last entry titled with the brand, the last ending in
    /// `(Serial)`; the brand is the title `T` for which `T (Serial)`
    /// exists) and the entry GRUB boots next.
    pub fn edited_entries(&self) -> Result<Vec<usize>, GrubError> {
        let default = self.default_index()?;
        let titles: Vec<&str> = self.entries.iter().map(|e| e.title.as_str()).collect();
        let brand = titles
            .iter()
            .find(|t| titles.contains(&format!("{t} (Serial)").as_str()))
            .map(|t| (*t).to_owned());
        let mut out = vec![default];
        if let Some(brand) = brand {
            let last = |pred: &dyn Fn(&str) -> bool| {
                self.entries
                    .iter()
                    .rposition(|e| e.is_xen() && pred(&e.title))
            };
            let xe = last(&|t| t == brand);
            let serial = last(&|t| {
                t != brand && t.ends_with("(Serial)") && !t.ends_with("(Serial) (Trusted Boot)")
            });
            out.extend(xe.into_iter().chain(serial));
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// The file after `edit`, applied to every edited entry. Bytes outside
    /// the words it changes are kept. Refuses a result Xen or the kernel
    /// would read differently: a dom0 command line over 1023 bytes or a
    /// parameter value over 1024.
    pub fn edited(&self, target: Target, edit: &Edit<'_>) -> Result<Vec<u8>, GrubError> {
        let mut changes: Vec<Change> = Vec::new();
        for index in self.edited_entries()? {
            let entry = &self.entries[index];
            changes.extend(self.entry_changes(entry, target, edit)?);
        }
        let out = apply(&self.text, changes);
        if out == self.text {
            return Ok(out);
        }
        if let Edit::Set {
            value: Some(v),
            matching: Matching::Kernel,
            ..
        } = edit
            && v.len() > kernel::CHARP_MAX
        {
            return Err(GrubError::TooLong {
                what: "parameter value",
                length: v.len(),
                limit: kernel::CHARP_MAX,
            });
        }
        // Every edited entry must still read exactly, within Xen's limit.
        let after = GrubConfig::parse(&out, &GrubEnv::absent())?;
        for index in self.edited_entries()? {
            if let Some(entry) = after.entries.get(index) {
                let cmdline = after.cmdline_of(entry)?;
                if cmdline.full_len > XEN_DOM0_CMDLINE_MAX {
                    return Err(GrubError::TooLong {
                        what: "dom0 command line",
                        length: cmdline.full_len,
                        limit: XEN_DOM0_CMDLINE_MAX,
                    });
                }
            }
        }
        Ok(out)
    }

    fn entry_changes(
        &self,
        entry: &Entry,
        target: Target,
        edit: &Edit<'_>,
    ) -> Result<Vec<Change>, GrubError> {
        let unsupported = |reason: &str| GrubError::Unsupported {
            entry: entry.title.clone(),
            reason: reason.to_owned(),
        };
        let (Some(xen), Some(dom0)) = (&entry.xen, &entry.dom0) else {
            return Ok(Vec::new());
        };
        let line = match target {
            Target::Xen => xen,
            Target::Dom0 => dom0,
        };
        line.check_bounded(entry)?;
        let text = &self.text;
        let mut changes = Vec::new();
        match *edit {
            Edit::Set {
                key,
                value,
                matching: Matching::Exact,
            } => {
                cmdline::check_key(key)?;
                let new = setting(key, value)?;
                let hits: Vec<&Word> = line.words.iter().filter(|w| exact_match(w, key)).collect();
                match hits.split_last() {
                    Some((last, before)) => {
                        changes.extend(before.iter().map(|w| Change::remove(line, w)));
                        changes.push(Change::replace(last, new));
                    }
                    None => changes.push(Change::insert(append_point(line), &new)),
                }
            }
            Edit::Delete {
                key,
                matching: Matching::Exact,
            } => {
                changes.extend(
                    line.words
                        .iter()
                        .filter(|w| exact_match(w, key))
                        .map(|w| Change::remove(line, w)),
                );
            }
            Edit::Set {
                key,
                matching: Matching::Kernel,
                ..
            }
            | Edit::Delete {
                key,
                matching: Matching::Kernel,
            } => {
                if target != Target::Dom0 {
                    return Err(unsupported("kernel-parameter edits apply to the dom0 line"));
                }
                let value = match *edit {
                    Edit::Set { value, .. } => Some(value),
                    _ => None,
                };
                let words = KernelWords::of(entry, xen, dom0, text)?;
                let hits = words.params_named(key);
                match value {
                    Some(value) => {
                        let new = setting(key, value)?;
                        let effective = hits.iter().rev().find(|h| h.accepted).copied();
                        // The kextra copies go: the value lives on the dom0 line.
                        for h in hits.iter().filter(|h| !h.on_dom0_line) {
                            changes.push(Change::remove(xen, h.word));
                        }
                        changes.extend(words.empty_dash(&hits, xen));
                        let on_dom0: Vec<&Hit<'_>> =
                            hits.iter().filter(|h| h.on_dom0_line).collect();
                        let keep_spelling = |w: &Word| {
                            let raw = w.literal().unwrap_or_default();
                            let name_len = raw.iter().position(|b| *b == b'=').unwrap_or(raw.len());
                            let name = String::from_utf8_lossy(&raw[..name_len]).into_owned();
                            setting(&name, value)
                        };
                        match effective
                            .filter(|h| h.on_dom0_line)
                            .or(on_dom0.last().copied().copied())
                        {
                            Some(h) => {
                                changes.push(Change::replace(h.word, keep_spelling(h.word)?));
                            }
                            None => changes.push(Change::insert(append_point(dom0), &new)),
                        }
                    }
                    None => {
                        for h in &hits {
                            let owner = if h.on_dom0_line { dom0 } else { xen };
                            changes.push(Change::remove(owner, h.word));
                        }
                        changes.extend(words.empty_dash(&hits, xen));
                    }
                }
            }
        }
        Ok(changes)
    }
}

/// How an edit finds the arguments it changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Matching {
    /// As `xen-cmdline` does: `KEY` or `KEY=...` exactly.
    Exact,
    /// As the kernel does: the parameter name, `-` equal to `_`, only
    /// before `--`, including the dom0 arguments on the Xen line.
    Kernel,
}

/// An edit of a boot line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edit<'a> {
    /// Set `key` to `value` (`None`: a bare flag).
    Set {
        /// Parameter name.
        key: &'a str,
        /// New value.
        value: Option<&'a str>,
        /// How occurrences are found.
        matching: Matching,
    },
    /// Remove every occurrence of `key`.
    Delete {
        /// Parameter name.
        key: &'a str,
        /// How occurrences are found.
        matching: Matching,
    },
}

fn setting(key: &str, value: Option<&str>) -> Result<Vec<u8>, GrubError> {
    cmdline::check_key(key)?;
    Ok(match value {
        Some(v) => {
            cmdline::check_value(v)?;
            format!("{key}={v}").into_bytes()
        }
        None => key.as_bytes().to_vec(),
    })
}

/// `xen-cmdline`'s match: the argument is `KEY` or starts with `KEY=`.
fn exact_match(word: &Word, key: &str) -> bool {
    word.literal().is_some_and(|l| {
        l == key.as_bytes() || (l.starts_with(key.as_bytes()) && l.get(key.len()) == Some(&b'='))
    })
}

/// Where a new argument goes on a line: before a bare `--` (what follows
/// it belongs to init on a dom0 line, to dom0 on a Xen line), else at the
/// end.
fn append_point(line: &BootLine) -> Insert {
    match line.words.iter().position(|w| w.is("--")) {
        Some(n) => Insert::Before(line.words[n].start),
        None => Insert::After(line.words.last().map_or(line.path_end, |w| w.end)),
    }
}

/// The kernel's arguments of one entry, word by word: the dom0 line, then
/// the Xen line's words after its ` -- `.
struct KernelWords<'a> {
    words: Vec<(&'a Word, Vec<u8>, bool)>,
    /// The Xen line's bare `--` and how many words follow it.
    dash: Option<(&'a Word, usize)>,
}

#[derive(Debug, Clone, Copy)]
struct Hit<'a> {
    word: &'a Word,
    on_dom0_line: bool,
    accepted: bool,
}

impl<'a> KernelWords<'a> {
    /// The words, checked to map one to one onto the kernel's arguments.
    fn of(
        entry: &Entry,
        xen: &'a BootLine,
        dom0: &'a BootLine,
        _text: &[u8],
    ) -> Result<KernelWords<'a>, GrubError> {
        let unsupported = |reason: String| GrubError::Unsupported {
            entry: entry.title.clone(),
            reason,
        };
        dom0.check_exact(entry)?;
        xen.check_bounded(entry)?;
        let (kextra, dash) = match xen.words.iter().position(|w| w.is("--")) {
            Some(n) if n > 0 => (
                &xen.words[n + 1..],
                Some((&xen.words[n], xen.words.len() - n - 1)),
            ),
            _ => (&[][..], None),
        };
        let mut words = Vec::new();
        for (word, on_dom0) in dom0
            .words
            .iter()
            .map(|w| (w, true))
            .chain(kextra.iter().map(|w| (w, false)))
        {
            let Some(value) = word.literal() else {
                return Err(unsupported(
                    "the dom0 arguments after ` -- ` on the Xen line use a GRUB variable".into(),
                ));
            };
            if let Some(b) = value.iter().find(|b| {
                matches!(**b, b'"' | b'\'' | b'\\') || (kernel::is_space(**b) && **b != b' ')
            }) {
                return Err(unsupported(format!(
                    "the argument {:?} holds {:?}, which GRUB and the kernel split differently",
                    String::from_utf8_lossy(&value),
                    *b as char
                )));
            }
            words.push((word, value, on_dom0));
        }
        Ok(KernelWords { words, dash })
    }

    /// The Xen line's `--` goes too when every word after it is removed.
    fn empty_dash(&self, removed: &[Hit<'_>], xen: &BootLine) -> Option<Change> {
        let (dash, after) = self.dash?;
        let gone = removed.iter().filter(|h| !h.on_dom0_line).count();
        (after > 0 && gone == after).then(|| Change::remove(xen, dash))
    }

    /// The occurrences of parameter `key` before the first bare `--`.
    fn params_named(&self, key: &str) -> Vec<Hit<'a>> {
        let mut hits = Vec::new();
        for (word, value, on_dom0_line) in &self.words {
            let (name, val) = match value.iter().position(|b| *b == b'=') {
                Some(eq) if eq > 0 => (&value[..eq], Some(&value[eq + 1..])),
                _ => (&value[..], None),
            };
            if val.is_none() && name == b"--" {
                break;
            }
            if kernel::param_eq(name, key.as_bytes()) {
                hits.push(Hit {
                    word,
                    on_dom0_line: *on_dom0_line,
                    accepted: val.is_some_and(|v| v.len() <= kernel::CHARP_MAX),
                });
            }
        }
        hits
    }
}

/// Xen's dom0 command line: the dom0 module's line without leading
/// spaces, then the Xen line's text after its first ` -- ` (keeping one
/// space), all cut to 1023 bytes.
pub fn xen_dom0_cmdline(xen_line: &[u8], dom0_line: &[u8]) -> Dom0Cmdline {
    let start = dom0_line.iter().take_while(|b| **b == b' ').count();
    let mut full = dom0_line[start..].to_vec();
    if let Some(at) = xen_line.windows(4).position(|w| w == b" -- ") {
        let mut k = at + 3;
        while xen_line.get(k + 1) == Some(&b' ') {
            k += 1;
        }
        full.extend_from_slice(&xen_line[k..]);
    }
    let full_len = full.len();
    full.truncate(XEN_DOM0_CMDLINE_MAX);
    Dom0Cmdline {
        bytes: full,
        full_len,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Insert {
    After(usize),
    Before(usize),
}

/// One byte-range change of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Change {
    span: Span,
    with: Vec<u8>,
}

impl Change {
    fn replace(word: &Word, with: Vec<u8>) -> Change {
        Change {
            span: Span {
                start: word.start,
                end: word.end,
            },
            with,
        }
    }

    /// Remove a word and the blanks before it (after it, for the first
    /// argument, so the path keeps its separator from what follows).
    fn remove(line: &BootLine, word: &Word) -> Change {
        let index = line.words.iter().position(|w| w == word).unwrap_or(0);
        let prev_end = if index == 0 {
            line.path_end
        } else {
            line.words[index - 1].end
        };
        Change {
            span: Span {
                start: prev_end,
                end: word.end,
            },
            with: Vec::new(),
        }
    }

    fn insert(at: Insert, arg: &[u8]) -> Change {
        let (pos, with) = match at {
            Insert::After(p) => (p, [b" ".as_slice(), arg].concat()),
            Insert::Before(p) => (p, [arg, b" "].concat()),
        };
        Change {
            span: Span {
                start: pos,
                end: pos,
            },
            with,
        }
    }
}

fn apply(text: &[u8], mut changes: Vec<Change>) -> Vec<u8> {
    changes.sort_by_key(|c| (c.span.start, c.span.end));
    changes.dedup();
    let mut out = Vec::with_capacity(text.len() + 64);
    let mut cursor = 0;
    for change in changes {
        if change.span.start < cursor {
            continue;
        }
        out.extend_from_slice(&text[cursor..change.span.start]);
        out.extend_from_slice(&change.with);
        cursor = change.span.end;
    }
    out.extend_from_slice(&text[cursor..]);
    out
}

/// The entry a default spec names: `N`, a title or an id, `>`-separated
/// through submenus.
fn find_item(menu: &[Item], entries: &[Entry], spec: &str) -> Option<usize> {
    let (head, rest) = match spec.split_once('>') {
        Some((h, r)) => (h, Some(r)),
        None => (spec, None),
    };
    let item = match head.parse::<usize>() {
        Ok(n) => menu.get(n)?,
        Err(_) => menu.iter().find(|item| match item {
            Item::Entry(i) => entries[*i].title == head || entries[*i].id.as_deref() == Some(head),
            Item::Submenu { title, id, .. } => title == head || id.as_deref() == Some(head),
        })?,
    };
    match (item, rest) {
        (Item::Entry(i), None) => Some(*i),
        (Item::Submenu { items, .. }, Some(rest)) => find_item(items, entries, rest),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
