//! The Containerfile (Dockerfile) parser: text in, stages and steps out, each with its line
//! number. Pure: variable expansion happens at build time through `expand`, with the build's
//! own variables.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ParseError {
    /// 1-based line of the instruction that is wrong.
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

fn err<T>(line: usize, message: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError { line, message: message.into() })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Containerfile {
    /// `ARG`s before the first `FROM`: usable in `FROM` lines only (unless redeclared).
    pub global_args: Vec<ArgDecl>,
    pub stages: Vec<Stage>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    pub line: usize,
    /// The base, unexpanded (`busybox`, `scratch`, `$BASE`, or an earlier stage's name).
    pub base: String,
    pub name: Option<String>,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub line: usize,
    /// The instruction as written (continuations joined), for history and the cache key.
    pub text: String,
    pub instruction: Instruction,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instruction {
    Run(Command),
    Copy(CopySpec),
    Add(CopySpec),
    Env(Vec<(String, String)>),
    Arg(Vec<ArgDecl>),
    Workdir(String),
    User(String),
    Cmd(Command),
    Entrypoint(Command),
    Expose(Vec<String>),
    Label(Vec<(String, String)>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Run through the shell (`/bin/sh -c`).
    Shell(String),
    /// Run as is (the JSON array form).
    Exec(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopySpec {
    /// `--from=`: a stage name or index, or an image.
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub sources: Vec<String>,
    pub dest: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDecl {
    pub name: String,
    pub default: Option<String>,
}

/// Parses a whole Containerfile.
pub fn parse(text: &str) -> Result<Containerfile, ParseError> {
    let escape = escape_directive(text)?;
    let mut global_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    for (line, logical) in logical_lines(text, escape) {
        let trimmed = logical.trim_start();
        let (keyword, rest) = match trimmed.find(char::is_whitespace) {
            Some(i) => (&trimmed[..i], trimmed[i..].trim()),
            None => (trimmed, ""),
        };
        let upper = keyword.to_ascii_uppercase();
        if upper == "FROM" {
            stages.push(parse_from(line, rest)?);
            continue;
        }
        let instruction = parse_instruction(line, &upper, keyword, rest)?;
        match stages.last_mut() {
            Some(stage) => stage.steps.push(Step { line, text: format!("{upper} {rest}"), instruction }),
            None => match instruction {
                Instruction::Arg(decls) => global_args.extend(decls),
                _ => return err(line, format!("{upper} before the first FROM (only ARG may come first)")),
            },
        }
    }
    if stages.is_empty() {
        return err(1, "no FROM instruction");
    }
    Ok(Containerfile { global_args, stages })
}

fn parse_from(line: usize, rest: &str) -> Result<Stage, ParseError> {
    let words: Vec<&str> = rest.split_whitespace().filter(|w| !w.starts_with("--platform=")).collect();
    let (base, name) = match words.as_slice() {
        [base] => (*base, None),
        [base, as_, name] if as_.eq_ignore_ascii_case("as") => (*base, Some(name.to_ascii_lowercase())),
        [] => return err(line, "FROM needs an image (or scratch)"),
        _ => return err(line, "FROM takes an image and an optional AS name"),
    };
    if let Some(n) = &name {
        let ok = n.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && n.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !ok {
            return err(line, format!("invalid stage name {n:?}"));
        }
    }
    Ok(Stage { line, base: base.to_string(), name, steps: Vec::new() })
}

fn parse_instruction(line: usize, upper: &str, keyword: &str, rest: &str) -> Result<Instruction, ParseError> {
    let need = |what: &str| -> Result<(), ParseError> {
        if rest.is_empty() {
            err(line, format!("{upper} needs {what}"))
        } else {
            Ok(())
        }
    };
    Ok(match upper {
        "RUN" => {
            need("a command")?;
            Instruction::Run(command(rest))
        }
        "CMD" => {
            need("a command")?;
            Instruction::Cmd(command(rest))
        }
        "ENTRYPOINT" => {
            need("a command")?;
            Instruction::Entrypoint(command(rest))
        }
        "COPY" | "ADD" => {
            need("a source and a destination")?;
            let spec = copy_spec(line, upper, rest)?;
            if upper == "COPY" {
                Instruction::Copy(spec)
            } else {
                Instruction::Add(spec)
            }
        }
        "ENV" => {
            need("NAME=value")?;
            Instruction::Env(key_values(line, upper, rest, true)?)
        }
        "LABEL" => {
            need("key=value")?;
            Instruction::Label(key_values(line, upper, rest, false)?)
        }
        "ARG" => {
            need("a name")?;
            let mut decls = Vec::new();
            for word in split_words(line, rest)? {
                let (name, default) = match word.split_once('=') {
                    Some((n, d)) => (n.to_string(), Some(d.to_string())),
                    None => (word.clone(), None),
                };
                if !valid_var_name(&name) {
                    return err(line, format!("invalid ARG name {name:?}"));
                }
                decls.push(ArgDecl { name, default });
            }
            Instruction::Arg(decls)
        }
        "WORKDIR" => {
            need("a directory")?;
            Instruction::Workdir(unquote_single(line, rest)?)
        }
        "USER" => {
            need("a user")?;
            Instruction::User(unquote_single(line, rest)?)
        }
        "EXPOSE" => {
            need("a port")?;
            Instruction::Expose(rest.split_whitespace().map(String::from).collect())
        }
        "" => return err(line, "empty instruction"),
        "SHELL" | "VOLUME" | "HEALTHCHECK" | "ONBUILD" | "STOPSIGNAL" | "MAINTAINER" => {
            return err(line, format!("instruction {upper} is not supported"))
        }
        _ => return err(line, format!("unknown instruction {keyword:?}")),
    })
}

/// The JSON (exec) form when the text is a JSON array of strings, else the shell form.
fn command(rest: &str) -> Command {
    if rest.starts_with('[') {
        if let Ok(args) = serde_json::from_str::<Vec<String>>(rest) {
            return Command::Exec(args);
        }
    }
    Command::Shell(rest.to_string())
}

fn copy_spec(line: usize, upper: &str, rest: &str) -> Result<CopySpec, ParseError> {
    let mut spec = CopySpec { from: None, chown: None, chmod: None, sources: Vec::new(), dest: String::new() };
    let mut words: Vec<String> = Vec::new();
    let mut flags_done = false;
    let mut remaining = rest;
    while !flags_done {
        let trimmed = remaining.trim_start();
        if !trimmed.starts_with("--") {
            flags_done = true;
            remaining = trimmed;
            continue;
        }
        let end = trimmed.find(char::is_whitespace).unwrap_or(trimmed.len());
        let flag = &trimmed[..end];
        remaining = &trimmed[end..];
        let (name, value) = flag.split_once('=').unwrap_or((flag, ""));
        let slot = match name {
            "--from" if upper == "COPY" => &mut spec.from,
            "--chown" => &mut spec.chown,
            "--chmod" => &mut spec.chmod,
            _ => return err(line, format!("{upper} does not support the flag {name}")),
        };
        if value.is_empty() {
            return err(line, format!("{name} needs a value"));
        }
        *slot = Some(value.to_string());
    }
    if remaining.starts_with('[') {
        match serde_json::from_str::<Vec<String>>(remaining) {
            Ok(v) => words = v,
            Err(_) => return err(line, format!("{upper}: malformed JSON array")),
        }
    } else {
        words.extend(split_words(line, remaining)?);
    }
    if words.len() < 2 {
        return err(line, format!("{upper} needs at least one source and a destination"));
    }
    spec.dest = words.pop().expect("two or more");
    spec.sources = words;
    Ok(spec)
}

/// `K=V K2="v 2"` pairs; with `legacy`, also the old `ENV K value with spaces` form.
fn key_values(line: usize, upper: &str, rest: &str, legacy: bool) -> Result<Vec<(String, String)>, ParseError> {
    let first = rest.split_whitespace().next().unwrap_or("");
    if legacy && !first.contains('=') {
        let value = rest[first.len()..].trim();
        if value.is_empty() {
            return err(line, format!("{upper} {first} needs a value"));
        }
        if !valid_var_name(first) {
            return err(line, format!("invalid {upper} name {first:?}"));
        }
        return Ok(vec![(first.to_string(), value.to_string())]);
    }
    let mut out = Vec::new();
    for word in split_words(line, rest)? {
        let Some((k, v)) = word.split_once('=') else {
            return err(line, format!("{upper} expects key=value, got {word:?}"));
        };
        if k.is_empty() || (legacy && !valid_var_name(k)) {
            return err(line, format!("invalid {upper} name {k:?}"));
        }
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

fn unquote_single(line: usize, rest: &str) -> Result<String, ParseError> {
    let words = split_words(line, rest)?;
    Ok(if words.len() == 1 { words[0].clone() } else { rest.to_string() })
}

/// Splits on whitespace, honouring double and single quotes and backslash escapes; quotes are
/// removed. `$` references are kept for `expand`.
fn split_words(line: usize, s: &str) -> Result<Vec<String>, ParseError> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '"' | '\'' => {
                in_word = true;
                let quote = c;
                loop {
                    match chars.next() {
                        Some(q) if q == quote => break,
                        Some('\\') if quote == '"' => match chars.next() {
                            Some(n @ ('"' | '\\' | '$')) => {
                                if n == '$' {
                                    cur.push('\\');
                                }
                                cur.push(n)
                            }
                            Some(n) => {
                                cur.push('\\');
                                cur.push(n);
                            }
                            None => return err(line, "unterminated quote"),
                        },
                        Some(x) => cur.push(x),
                        None => return err(line, "unterminated quote"),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some('$') => cur.push_str("\\$"),
                    Some(n) => cur.push(n),
                    None => {}
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

fn valid_var_name(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Reads a leading `# escape=` directive (`\` or backtick).
fn escape_directive(text: &str) -> Result<char, ParseError> {
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        let Some(body) = l.strip_prefix('#') else { break };
        let Some((key, value)) = body.split_once('=') else { break };
        if key.trim().eq_ignore_ascii_case("escape") {
            return match value.trim() {
                "\\" => Ok('\\'),
                "`" => Ok('`'),
                other => err(i + 1, format!("invalid escape directive {other:?} (use \\ or `)")),
            };
        }
    }
    Ok('\\')
}

/// Joins continued lines and drops comments and blank lines; each item starts at its line.
fn logical_lines(text: &str, escape: char) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut cur: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end_matches('\r');
        let t = line.trim_start();
        if t.starts_with('#') || (t.is_empty() && cur.is_none()) {
            continue;
        }
        let (body, continues) = match line.trim_end().strip_suffix(escape) {
            Some(b) => (b, true),
            None => (line, false),
        };
        match cur.as_mut() {
            Some((_, acc)) => acc.push_str(body),
            None => cur = Some((i + 1, body.to_string())),
        }
        if !continues {
            if let Some(done) = cur.take() {
                if !done.1.trim().is_empty() {
                    out.push(done);
                }
            }
        }
    }
    if let Some(done) = cur.filter(|c| !c.1.trim().is_empty()) {
        out.push(done);
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ExpandError(pub String);

/// Expands `$VAR`, `${VAR}`, `${VAR:-default}` and `${VAR:+alternative}`; `\$` stays a literal
/// `$`. Unset variables expand to nothing, as in a shell.
pub fn expand(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, ExpandError> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'$') => {
                chars.next();
                out.push('$');
            }
            '$' => match chars.peek() {
                Some('{') => {
                    chars.next();
                    let mut inner = String::new();
                    let mut depth = 1;
                    for c in chars.by_ref() {
                        match c {
                            '{' => depth += 1,
                            '}' => {
                                depth -= 1;
                                if depth == 0 {
                                    break;
                                }
                            }
                            _ => {}
                        }
                        inner.push(c);
                    }
                    if depth != 0 {
                        return Err(ExpandError(format!("unterminated ${{ in {s:?}")));
                    }
                    let (name, op) = match inner.find(':') {
                        Some(i) => (&inner[..i], Some(&inner[i..])),
                        None => (inner.as_str(), None),
                    };
                    if !valid_var_name(name) {
                        return Err(ExpandError(format!("invalid variable name {name:?} in {s:?}")));
                    }
                    let value = lookup(name).filter(|v| !v.is_empty());
                    match op {
                        None => out.push_str(&value.unwrap_or_default()),
                        Some(op) if op.starts_with(":-") => match value {
                            Some(v) => out.push_str(&v),
                            None => out.push_str(&expand(&op[2..], lookup)?),
                        },
                        Some(op) if op.starts_with(":+") => {
                            if value.is_some() {
                                out.push_str(&expand(&op[2..], lookup)?);
                            }
                        }
                        Some(op) => return Err(ExpandError(format!("unsupported modifier {op:?} in {s:?}"))),
                    }
                }
                Some(c) if c.is_ascii_alphabetic() || *c == '_' => {
                    let mut name = String::new();
                    while let Some(&c) = chars.peek() {
                        if c.is_ascii_alphanumeric() || c == '_' {
                            name.push(c);
                            chars.next();
                        } else {
                            break;
                        }
                    }
                    out.push_str(&lookup(&name).unwrap_or_default());
                }
                _ => out.push('$'),
            },
            c => out.push(c),
        }
    }
    Ok(out)
}

/// The variable names `s` refers to, for the cache key (which build args a step uses).
pub fn references(s: &str) -> Vec<String> {
    let seen = std::cell::RefCell::new(Vec::new());
    let _ = expand(s, &|name| {
        seen.borrow_mut().push(name.to_string());
        None
    });
    let mut v = seen.into_inner();
    v.sort();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steps(text: &str) -> Vec<Instruction> {
        parse(text).unwrap().stages.into_iter().flat_map(|s| s.steps).map(|s| s.instruction).collect()
    }

    fn fails(text: &str, line: usize, message: &str) {
        let e = parse(text).unwrap_err();
        assert_eq!((e.line, e.message.as_str()), (line, message), "{text}");
    }

    #[test]
    fn instructions_parse() {
        let got = steps(
            "FROM busybox AS base\n\
             RUN echo hi && \\\n    echo there\n\
             RUN [\"/bin/echo\", \"exec form\"]\n\
             ENV A=1 B=\"two words\" C=x\\ y\n\
             ENV LEGACY value with spaces\n\
             COPY --chown=10:20 a b /dst/\n\
             ADD [\"x y\", \"/z\"]\n\
             WORKDIR /srv\nUSER 1000:1000\nCMD [\"sh\"]\nENTRYPOINT /bin/run\nEXPOSE 80/tcp 443\n\
             LABEL org.x=\"y z\" k=v\nARG V=3 W\n",
        );
        assert_eq!(
            got,
            vec![
                Instruction::Run(Command::Shell("echo hi &&     echo there".into())),
                Instruction::Run(Command::Exec(vec!["/bin/echo".into(), "exec form".into()])),
                Instruction::Env(vec![
                    ("A".into(), "1".into()),
                    ("B".into(), "two words".into()),
                    ("C".into(), "x y".into())
                ]),
                Instruction::Env(vec![("LEGACY".into(), "value with spaces".into())]),
                Instruction::Copy(CopySpec {
                    from: None,
                    chown: Some("10:20".into()),
                    chmod: None,
                    sources: vec!["a".into(), "b".into()],
                    dest: "/dst/".into()
                }),
                Instruction::Add(CopySpec {
                    from: None,
                    chown: None,
                    chmod: None,
                    sources: vec!["x y".into()],
                    dest: "/z".into()
                }),
                Instruction::Workdir("/srv".into()),
                Instruction::User("1000:1000".into()),
                Instruction::Cmd(Command::Exec(vec!["sh".into()])),
                Instruction::Entrypoint(Command::Shell("/bin/run".into())),
                Instruction::Expose(vec!["80/tcp".into(), "443".into()]),
                Instruction::Label(vec![("org.x".into(), "y z".into()), ("k".into(), "v".into())]),
                Instruction::Arg(vec![
                    ArgDecl { name: "V".into(), default: Some("3".into()) },
                    ArgDecl { name: "W".into(), default: None }
                ]),
            ]
        );
    }

    #[test]
    fn stages_comments_and_line_numbers() {
        let f = parse("# comment\nARG BASE=busybox\n\nFROM $BASE AS build\n# inside\nRUN true\nFROM scratch\nCOPY --from=build /a /a\n").unwrap();
        assert_eq!(f.global_args, vec![ArgDecl { name: "BASE".into(), default: Some("busybox".into()) }]);
        assert_eq!(f.stages.len(), 2);
        assert_eq!((f.stages[0].line, f.stages[0].name.as_deref()), (4, Some("build")));
        assert_eq!(f.stages[0].steps[0].line, 6);
        assert_eq!(f.stages[1].steps[0].line, 8);
        assert!(
            matches!(&f.stages[1].steps[0].instruction, Instruction::Copy(c) if c.from.as_deref() == Some("build"))
        );
    }

    #[test]
    fn escape_directive_switches_the_continuation_character() {
        let f = parse("# escape=`\nFROM busybox\nRUN echo a `\n  b\n").unwrap();
        assert_eq!(f.stages[0].steps[0].instruction, Instruction::Run(Command::Shell("echo a   b".into())));
    }

    #[test]
    fn bad_files_name_the_line() {
        fails("FROM busybox\nFROBNICATE x\n", 2, "unknown instruction \"FROBNICATE\"");
        fails("RUN true\n", 1, "RUN before the first FROM (only ARG may come first)");
        fails("FROM busybox\nCOPY onlyone\n", 2, "COPY needs at least one source and a destination");
        fails("FROM busybox\nCOPY --link a b\n", 2, "COPY does not support the flag --link");
        fails("FROM busybox\nENV A=\"unterminated\n", 2, "unterminated quote");
        fails("FROM busybox\nHEALTHCHECK CMD true\n", 2, "instruction HEALTHCHECK is not supported");
        fails("FROM\n", 1, "FROM needs an image (or scratch)");
        fails("# nothing\n", 1, "no FROM instruction");
        fails("FROM a AS 1x\n", 1, "invalid stage name \"1x\"");
        fails("FROM busybox\nRUN\n", 2, "RUN needs a command");
    }

    #[test]
    fn expansion() {
        let vars = |n: &str| match n {
            "A" => Some("1".to_string()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        for (input, want) in [
            ("$A", "1"),
            ("${A}x", "1x"),
            ("${NOPE:-dflt}", "dflt"),
            ("${EMPTY:-dflt}", "dflt"),
            ("${A:+alt}", "alt"),
            ("${NOPE:+alt}", ""),
            ("\\$A", "$A"),
            ("a$", "a$"),
            ("$NOPE-x", "-x"),
        ] {
            assert_eq!(expand(input, &vars).unwrap(), want, "{input}");
        }
        assert!(expand("${A", &vars).is_err());
        assert_eq!(references("$A ${B:-$C} \\$D"), ["A", "B", "C"]);
    }
}
