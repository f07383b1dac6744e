//! grub.cfg run as GRUB runs it at menu time: blocks, conditions,
//! `set`/`load_env`, the menu tree and the default entry.

use super::*;

/// Three-valued truth for conditions pcipass may not be able to decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tri {
    True,
    False,
    Unknown,
}

/// A variable's value at menu time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Value {
    Known(Vec<u8>),
    Unknown,
}

/// Variables GRUB itself sets (platform, features, paths): their values
/// are not in grub.cfg, so conditions on them are not decided.
pub(super) fn is_builtin(name: &str) -> bool {
    name.starts_with("feature_")
        || name.starts_with("grub_")
        || matches!(
            name,
            "prefix" | "root" | "cmdpath" | "config_directory" | "config_file" | "lang" | "?"
        )
}

#[derive(Debug, Default)]
pub(super) struct Vars {
    pub(super) values: BTreeMap<String, Value>,
}

impl Vars {
    pub(super) fn get(&self, name: &str) -> Value {
        match self.values.get(name) {
            Some(v) => v.clone(),
            None if is_builtin(name) => Value::Unknown,
            None => Value::Known(Vec::new()),
        }
    }

    pub(super) fn expand(&self, word: &Word) -> Value {
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
pub(super) fn condition(words: &[Word], vars: &Vars, env: &GrubEnv) -> Tri {
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

pub(super) enum Block {
    If { state: Tri, taken: Tri },
    Entry(usize),
    Submenu,
    Function,
    Other,
}

pub(super) fn title_and_id(cmd: &[Word]) -> (String, Option<String>) {
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
                            entry.locals.entry(name).or_default().push(value.literal());
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
            let Some((name, rest)) = assignment(word) else {
                return;
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
            Some((index, false)) => (Ok(index), source),
            Some((index, true)) => (Ok(index), DefaultSource::Fallback(spec)),
            None => (Err(GrubError::NoXenEntry), DefaultSource::Fallback(spec)),
        }
    }
}

/// The entry GRUB boots for a default spec, and whether some part of the
/// spec named nothing (GRUB then takes that menu's first item), as
/// `normal/menu.c` walks it: at each level the part before an unescaped
/// `>` (`>>` is a literal `>`) is a number (`strtoul` base 0: decimal,
/// `0x` hex, leading-`0` octal; digits after which anything may follow)
/// or the first entry or submenu whose title or `--id` it equals; a
/// number past the end, or a name that matches nothing, is item 0. A
/// submenu is entered with the rest of the spec (nothing left: its item
/// 0); an entry boots whatever follows. `None` only for an empty menu.
pub(super) fn find_item(menu: &[Item], entries: &[Entry], spec: &str) -> Option<(usize, bool)> {
    let (head, rest) = split_default(spec);
    let (index, missed) = match leading_number(&head) {
        Some(n) if n < menu.len() => (n, false),
        Some(_) => (0, true),
        None => match menu.iter().position(|item| match item {
            Item::Entry(i) => entries[*i].title == head || entries[*i].id.as_deref() == Some(&head),
            Item::Submenu { title, id, .. } => *title == head || id.as_deref() == Some(&head),
        }) {
            Some(n) => (n, false),
            None => (0, !head.is_empty()),
        },
    };
    match menu.get(index)? {
        Item::Entry(i) => Some((*i, missed)),
        Item::Submenu { items, .. } => {
            let (i, deeper) = find_item(items, entries, rest.unwrap_or(""))?;
            Some((i, missed || deeper))
        }
    }
}

/// The first part of a default spec (with `>>` read as `>`) and the rest
/// after its separating `>`.
fn split_default(spec: &str) -> (String, Option<&str>) {
    let mut head = String::new();
    let mut chars = spec.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        if c == '>' {
            if chars.peek().is_some_and(|(_, n)| *n == '>') {
                chars.next();
                head.push('>');
                continue;
            }
            return (head, Some(&spec[at + 1..]));
        }
        head.push(c);
    }
    (head, None)
}

/// GRUB's `grub_strtoul(text, 0, 0)`: leading blanks, then digits of base
/// 16 (`0x`), 8 (leading `0`) or 10; `None` when no digit is read.
fn leading_number(text: &str) -> Option<usize> {
    let text = text.trim_start();
    let (digits, radix) = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) if hex.starts_with(|c: char| c.is_ascii_hexdigit()) => (hex, 16),
        _ if text.starts_with('0') => (text, 8),
        _ => (text, 10),
    };
    let end = digits
        .find(|c: char| !c.is_digit(radix))
        .unwrap_or(digits.len());
    if end == 0 {
        return None;
    }
    usize::from_str_radix(&digits[..end], radix).ok()
}
