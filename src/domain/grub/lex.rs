//! GRUB's lexer, as far as boot lines and menu-time scripts need it:
//! words with their source spans, quotes, escapes, `$variables`, `;` and
//! comments.

/// Part of a word: literal bytes or a `$variable` GRUB expands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Part {
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
    pub(super) parts: Vec<Part>,
}

impl Word {
    /// The word's value when it holds no variable.
    pub(super) fn literal(&self) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        for part in &self.parts {
            match part {
                Part::Lit(b) => out.extend_from_slice(b),
                Part::Var(_) => return None,
            }
        }
        Some(out)
    }

    pub(super) fn is(&self, text: &str) -> bool {
        self.literal().is_some_and(|l| l == text.as_bytes())
    }

    pub(super) fn first_var(&self) -> Option<&str> {
        self.parts.iter().find_map(|p| match p {
            Part::Var(v) => Some(v.as_str()),
            Part::Lit(_) => None,
        })
    }
}

/// One command: its words (after `;` splitting).
pub(super) type Command = Vec<Word>;

pub(super) fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Lex one line into commands, GRUB's way: space and tab separate words,
/// `'...'` is literal, `"..."` expands `$var` and lets `\` escape
/// `$ " \`, a bare `\` escapes the next byte, an unquoted `;` ends a
/// command, a word starting with `#` starts a comment. Returns the
/// commands and whether a quote was left open.
pub(super) fn lex(line: &[u8], base: usize) -> (Vec<Command>, bool) {
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
                    b'$' => i = variable(line, i, &mut lit, &mut parts),
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
                    b'$' => i = variable(line, i, &mut lit, &mut parts),
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

/// A `$variable` at `i` becomes a part of its own (a lone `$` stays a
/// literal byte); returns where the lexer goes on.
fn variable(line: &[u8], i: usize, lit: &mut Vec<u8>, parts: &mut Vec<Part>) -> usize {
    let (var, next) = read_var(line, i);
    match var {
        Some(v) => {
            if !lit.is_empty() {
                parts.push(Part::Lit(std::mem::take(lit)));
            }
            parts.push(Part::Var(v));
        }
        None => lit.push(b'$'),
    }
    next
}

/// `$name` or `${name}` at `i` (which holds `$`).
pub(super) fn read_var(line: &[u8], i: usize) -> (Option<String>, usize) {
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

/// `NAME=VALUE` in a word: the name and the value as a word of its own.
pub(super) fn assignment(word: &Word) -> Option<(String, Word)> {
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
    Some((name, rest))
}
