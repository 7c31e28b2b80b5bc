//! `.containerignore` / `.dockerignore`: which context paths a build may not see.
//!
//! One pattern a line; `#` starts a comment; `!` re-includes; `*` and `?` match within one path
//! component, `**` any number of components; a pattern that matches a directory excludes what is
//! below it. Later lines win, as Docker does.

#[derive(Debug, Clone, Default)]
pub struct Ignore {
    rules: Vec<(bool, Vec<String>)>,
}

impl Ignore {
    pub fn parse(text: &str) -> Ignore {
        let mut rules = Vec::new();
        for line in text.lines() {
            let l = line.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let (include, pat) = match l.strip_prefix('!') {
                Some(p) => (true, p.trim()),
                None => (false, l),
            };
            let parts: Vec<String> = pat
                .trim_start_matches("./")
                .trim_matches('/')
                .split('/')
                .filter(|s| !s.is_empty() && *s != ".")
                .map(String::from)
                .collect();
            if !parts.is_empty() {
                rules.push((include, parts));
            }
        }
        Ignore { rules }
    }

    /// Whether the context-relative `path` (`a/b/c`) is excluded.
    pub fn excludes(&self, path: &str) -> bool {
        let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let mut excluded = false;
        for (include, pat) in &self.rules {
            // A pattern matches the path or any of its parent directories.
            let hit = (1..=parts.len()).any(|n| match_parts(pat, &parts[..n]));
            if hit {
                excluded = !include;
            }
        }
        excluded
    }
}

fn match_parts(pat: &[String], path: &[&str]) -> bool {
    match (pat.first(), path.first()) {
        (None, None) => true,
        (None, Some(_)) => false,
        (Some(p), _) if p == "**" => (0..=path.len()).any(|skip| match_parts(&pat[1..], &path[skip..])),
        (Some(_), None) => false,
        (Some(p), Some(c)) => glob(p.as_bytes(), c.as_bytes()) && match_parts(&pat[1..], &path[1..]),
    }
}

/// `*`, `?` and `[...]` (with `!` or `^` negation and ranges) within one component.
pub fn glob(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (None, Some(_)) => false,
        (Some(b'*'), _) => (0..=s.len()).any(|i| glob(&p[1..], &s[i..])),
        (Some(_), None) => false,
        (Some(b'?'), Some(_)) => glob(&p[1..], &s[1..]),
        (Some(b'['), Some(&c)) => match p.iter().position(|&b| b == b']').filter(|&e| e > 1) {
            Some(end) => {
                let mut set = &p[1..end];
                let negate = matches!(set.first(), Some(b'!' | b'^'));
                if negate {
                    set = &set[1..];
                }
                let mut hit = false;
                let mut i = 0;
                while i < set.len() {
                    if i + 2 < set.len() && set[i + 1] == b'-' {
                        hit |= set[i] <= c && c <= set[i + 2];
                        i += 3;
                    } else {
                        hit |= set[i] == c;
                        i += 1;
                    }
                }
                hit != negate && glob(&p[end + 1..], &s[1..])
            }
            None => c == b'[' && glob(&p[1..], &s[1..]),
        },
        (Some(b'\\'), Some(&c)) if p.len() > 1 => p[1] == c && glob(&p[2..], &s[1..]),
        (Some(&a), Some(&b)) => a == b && glob(&p[1..], &s[1..]),
    }
}

/// Whether a COPY source has glob characters.
pub fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let ig = Ignore::parse("# comment\n*.log\nbuild/\n**/tmp\n!build/keep.txt\nsecret?\n");
        for (path, excluded) in [
            ("a.log", true),
            ("dir/a.log", false),
            ("build", true),
            ("build/x/y", true),
            ("build/keep.txt", false),
            ("x/y/tmp", true),
            ("x/y/tmp/z", true),
            ("tmp", true),
            ("secret1", true),
            ("secret12", false),
            ("src/main.rs", false),
        ] {
            assert_eq!(ig.excludes(path), excluded, "{path}");
        }
    }

    #[test]
    fn globs() {
        assert!(glob(b"*.rs", b"main.rs"));
        assert!(!glob(b"*.rs", b"main.rsx"));
        assert!(glob(b"f[0-9]", b"f7"));
        assert!(!glob(b"f[!0-9]", b"f7"));
        assert!(glob(b"a?c", b"abc"));
        assert!(glob(b"\\*", b"*"));
    }
}
