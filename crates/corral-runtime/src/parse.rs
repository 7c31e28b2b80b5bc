//! Parsers for what users type: memory sizes, cpu counts, users, env pairs, volumes, signals,
//! names and hostnames. Pure functions; each error names the input it refused.

use std::path::{Component, Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {input:?}: {reason}")]
pub struct ParseError {
    pub what: &'static str,
    pub input: String,
    pub reason: &'static str,
}

fn err(what: &'static str, input: &str, reason: &'static str) -> ParseError {
    ParseError { what, input: input.to_string(), reason }
}

/// The smallest memory limit we accept; below this even a shell cannot start.
pub const MIN_MEM_BYTES: u64 = 6 * 1024 * 1024;

/// `--mem`: mebibytes by default (`512`), or with a unit suffix `k`, `m`, `g` (`1g`, `256m`).
pub fn mem_bytes(input: &str) -> Result<u64, ParseError> {
    const WHAT: &str = "memory limit";
    let s = input.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, 'k' | 'K')) => (&s[..i], 1u64 << 10),
        Some((i, 'm' | 'M')) => (&s[..i], 1 << 20),
        Some((i, 'g' | 'G')) => (&s[..i], 1 << 30),
        Some((i, 'b' | 'B')) => (&s[..i], 1),
        _ => (s, 1 << 20),
    };
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(err(WHAT, input, "expected a number of MiB, optionally with a k, m or g suffix"));
    }
    let value: f64 =
        num.parse().map_err(|_| err(WHAT, input, "expected a number of MiB, optionally with a k, m or g suffix"))?;
    let bytes = value * mult as f64;
    if !bytes.is_finite() || bytes > (1u64 << 50) as f64 {
        return Err(err(WHAT, input, "too large"));
    }
    let bytes = bytes as u64;
    if bytes < MIN_MEM_BYTES {
        return Err(err(WHAT, input, "must be at least 6 MiB"));
    }
    Ok(bytes)
}

/// `--cpus`: a positive number of cpus, fractions allowed (`0.5`), at most 1024.
pub fn cpus(input: &str) -> Result<f64, ParseError> {
    const WHAT: &str = "cpu count";
    let v: f64 = input.trim().parse().map_err(|_| err(WHAT, input, "expected a number such as 0.5 or 2"))?;
    if !v.is_finite() || v < 0.01 {
        return Err(err(WHAT, input, "must be at least 0.01"));
    }
    if v > 1024.0 {
        return Err(err(WHAT, input, "must be at most 1024"));
    }
    Ok(v)
}

/// `--pids`: the most processes and threads the container may have, at least 1.
pub fn pids(input: &str) -> Result<i64, ParseError> {
    const WHAT: &str = "pids limit";
    let v: i64 = input.trim().parse().map_err(|_| err(WHAT, input, "expected a whole number"))?;
    if v < 1 {
        return Err(err(WHAT, input, "must be at least 1"));
    }
    Ok(v)
}

/// `--user UID[:GID]`: numeric ids; the group defaults to the uid.
pub fn user(input: &str) -> Result<(u32, u32), ParseError> {
    const WHAT: &str = "user";
    let (u, g) = match input.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (input, None),
    };
    let id = |s: &str| -> Result<u32, ParseError> {
        s.parse::<u32>()
            .ok()
            .filter(|v| *v != u32::MAX)
            .ok_or_else(|| err(WHAT, input, "expected UID[:GID] with numeric ids below 4294967295"))
    };
    let uid = id(u)?;
    let gid = match g {
        Some(g) => id(g)?,
        None => uid,
    };
    Ok((uid, gid))
}

/// `--env K=V`. A bare `K` takes its value from `lookup` (the caller's environment), as
/// `docker run -e K` does; unset, it is an error.
pub fn env(input: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<(String, String), ParseError> {
    const WHAT: &str = "environment variable";
    let (k, v) = match input.split_once('=') {
        Some((k, v)) => (k, v.to_string()),
        None => (input, lookup(input).ok_or_else(|| err(WHAT, input, "has no '=' and is not set here"))?),
    };
    if k.is_empty() {
        return Err(err(WHAT, input, "the name is empty"));
    }
    if k.contains('\0') || v.contains('\0') {
        return Err(err(WHAT, input, "contains a NUL byte"));
    }
    Ok((k.to_string(), v))
}

/// A bind mount from `--volume HOST:CTR[:ro|rw]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub host: PathBuf,
    pub container: PathBuf,
    pub readonly: bool,
}

/// Parses a volume. Whether the host path exists is checked by the caller, which does I/O.
pub fn volume(input: &str) -> Result<Volume, ParseError> {
    const WHAT: &str = "volume";
    let parts: Vec<&str> = input.split(':').collect();
    let (host, ctr, mode) = match parts.as_slice() {
        [h, c] => (*h, *c, None),
        [h, c, m] => (*h, *c, Some(*m)),
        _ => return Err(err(WHAT, input, "expected HOST:CONTAINER[:ro|rw]")),
    };
    let readonly = match mode {
        None | Some("rw") => false,
        Some("ro") => true,
        Some(_) => return Err(err(WHAT, input, "the mode must be ro or rw")),
    };
    let host = Path::new(host);
    let ctr = Path::new(ctr);
    if !host.is_absolute() {
        return Err(err(WHAT, input, "the host path must be absolute"));
    }
    if !ctr.is_absolute() || ctr == Path::new("/") {
        return Err(err(WHAT, input, "the container path must be absolute and not /"));
    }
    if ctr.components().any(|c| c == Component::ParentDir) {
        return Err(err(WHAT, input, "the container path must not contain '..'"));
    }
    Ok(Volume { host: host.to_path_buf(), container: ctr.to_path_buf(), readonly })
}

/// A signal by name (`TERM`, `SIGTERM`, `sigkill`) or number (`9`).
pub fn signal(input: &str) -> Result<i32, ParseError> {
    const WHAT: &str = "signal";
    if let Ok(n) = input.parse::<i32>() {
        return if (1..=64).contains(&n) { Ok(n) } else { Err(err(WHAT, input, "numbers must be 1-64")) };
    }
    let upper = input.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    SIGNALS.iter().find(|(n, _)| *n == name).map(|(_, v)| *v).ok_or_else(|| err(WHAT, input, "unknown signal name"))
}

const SIGNALS: &[(&str, i32)] = &[
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("ILL", libc::SIGILL),
    ("TRAP", libc::SIGTRAP),
    ("ABRT", libc::SIGABRT),
    ("BUS", libc::SIGBUS),
    ("FPE", libc::SIGFPE),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("SEGV", libc::SIGSEGV),
    ("USR2", libc::SIGUSR2),
    ("PIPE", libc::SIGPIPE),
    ("ALRM", libc::SIGALRM),
    ("TERM", libc::SIGTERM),
    ("CHLD", libc::SIGCHLD),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("TSTP", libc::SIGTSTP),
    ("TTIN", libc::SIGTTIN),
    ("TTOU", libc::SIGTTOU),
    ("URG", libc::SIGURG),
    ("XCPU", libc::SIGXCPU),
    ("XFSZ", libc::SIGXFSZ),
    ("VTALRM", libc::SIGVTALRM),
    ("PROF", libc::SIGPROF),
    ("WINCH", libc::SIGWINCH),
    ("IO", libc::SIGIO),
    ("SYS", libc::SIGSYS),
];

/// The name of a signal number, for status lines (`SIGKILL`).
pub fn signal_name(sig: i32) -> String {
    SIGNALS.iter().find(|(_, v)| *v == sig).map_or_else(|| format!("signal {sig}"), |(n, _)| format!("SIG{n}"))
}

/// A container name: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most 64 characters.
pub fn name(input: &str) -> Result<String, ParseError> {
    const WHAT: &str = "container name";
    let ok = !input.is_empty()
        && input.len() <= 64
        && input.as_bytes()[0].is_ascii_alphanumeric()
        && input.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
    if ok {
        Ok(input.to_string())
    } else {
        Err(err(WHAT, input, "must be 1-64 of [a-zA-Z0-9_.-], starting with a letter or digit"))
    }
}

/// A hostname: dot-separated RFC 1123 labels, at most 63 characters in all (a UTS limit is 64).
pub fn hostname(input: &str) -> Result<String, ParseError> {
    const WHAT: &str = "hostname";
    let ok = !input.is_empty()
        && input.len() <= 63
        && input.split('.').all(|l| {
            !l.is_empty()
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    if ok {
        Ok(input.to_string())
    } else {
        Err(err(WHAT, input, "must be letters, digits and '-' in dot-separated labels, at most 63 characters"))
    }
}

/// A working directory inside the container: absolute, without `..`.
pub fn workdir(input: &str) -> Result<String, ParseError> {
    const WHAT: &str = "working directory";
    let p = Path::new(input);
    if !p.is_absolute() || p.components().any(|c| c == Component::ParentDir) {
        return Err(err(WHAT, input, "must be an absolute path without '..'"));
    }
    Ok(input.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn memory() {
        let mib = 1u64 << 20;
        for (input, want) in
            [("512", 512 * mib), ("64m", 64 * mib), ("1g", 1 << 30), ("1.5G", 3 << 29), ("8192k", 8 * mib)]
        {
            assert_eq!(mem_bytes(input), Ok(want), "{input}");
        }
        for (input, reason) in [
            ("", "expected a number of MiB, optionally with a k, m or g suffix"),
            ("abc", "expected a number of MiB, optionally with a k, m or g suffix"),
            ("-5", "expected a number of MiB, optionally with a k, m or g suffix"),
            ("1.2.3", "expected a number of MiB, optionally with a k, m or g suffix"),
            ("1", "must be at least 6 MiB"),
            ("99999999999g", "too large"),
        ] {
            assert_eq!(mem_bytes(input).unwrap_err().reason, reason, "{input}");
        }
        assert_eq!(
            mem_bytes("lots").unwrap_err().to_string(),
            "invalid memory limit \"lots\": expected a number of MiB, optionally with a k, m or g suffix"
        );
    }

    #[test]
    fn cpus_users_pids() {
        assert_eq!(cpus("0.5"), Ok(0.5));
        assert!(cpus("0").is_err() && cpus("NaN").is_err() && cpus("inf").is_err() && cpus("2000").is_err());
        assert_eq!(user("1000"), Ok((1000, 1000)));
        assert_eq!(user("1000:50"), Ok((1000, 50)));
        assert!(user("root").is_err() && user("1:").is_err() && user("-1").is_err() && user("4294967295").is_err());
        assert_eq!(pids("64"), Ok(64));
        assert!(pids("0").is_err() && pids("x").is_err());
    }

    #[test]
    fn env_pairs() {
        let none = |_: &str| None;
        assert_eq!(env("A=b=c", none), Ok(("A".into(), "b=c".into())));
        assert_eq!(env("A=", none), Ok(("A".into(), "".into())));
        assert_eq!(env("HOME", |_| Some("/root".into())), Ok(("HOME".into(), "/root".into())));
        assert_eq!(env("NOPE", none).unwrap_err().reason, "has no '=' and is not set here");
        assert_eq!(env("=x", none).unwrap_err().reason, "the name is empty");
    }

    #[test]
    fn volumes() {
        assert_eq!(
            volume("/data:/srv:ro"),
            Ok(Volume { host: "/data".into(), container: "/srv".into(), readonly: true })
        );
        assert!(!volume("/data:/srv").unwrap().readonly);
        for (input, reason) in [
            ("data:/srv", "the host path must be absolute"),
            ("/data:srv", "the container path must be absolute and not /"),
            ("/data:/", "the container path must be absolute and not /"),
            ("/data:/a/../etc", "the container path must not contain '..'"),
            ("/data:/srv:rx", "the mode must be ro or rw"),
            ("/data", "expected HOST:CONTAINER[:ro|rw]"),
        ] {
            assert_eq!(volume(input).unwrap_err().reason, reason, "{input}");
        }
    }

    #[test]
    fn signals() {
        assert_eq!(signal("TERM"), Ok(libc::SIGTERM));
        assert_eq!(signal("sigkill"), Ok(libc::SIGKILL));
        assert_eq!(signal("9"), Ok(9));
        assert!(signal("0").is_err() && signal("FOO").is_err());
        assert_eq!(signal_name(9), "SIGKILL");
    }

    #[test]
    fn names_and_hostnames() {
        assert!(name("web-1.a_b").is_ok());
        assert!(name("-x").is_err() && name("").is_err() && name("a/b").is_err() && name(&"a".repeat(65)).is_err());
        assert!(hostname("box-1.local").is_ok());
        assert!(hostname("-box").is_err() && hostname("a..b").is_err() && hostname("under_score").is_err());
        assert!(workdir("/srv/app").is_ok() && workdir("srv").is_err() && workdir("/a/../b").is_err());
    }

    proptest! {
        /// Whatever is typed: a value within bounds, or an error naming the input.
        #[test]
        fn parsers_accept_within_bounds_or_name_the_input(
            s in prop_oneof!["\\PC{0,40}", "[0-9a-zA-Z.:/_ =-]{0,24}", "(/[a-z.]{0,6}){1,3}:(/[a-z.]{0,6}){1,3}(:ro|:rw|:x)?"],
        ) {
            let named = |e: ParseError| e.input == s && !e.reason.is_empty();
            match mem_bytes(&s) {
                Ok(n) => prop_assert!(n >= MIN_MEM_BYTES),
                Err(e) => prop_assert!(named(e)),
            }
            match cpus(&s) {
                Ok(c) => prop_assert!((0.01..=1024.0).contains(&c)),
                Err(e) => prop_assert!(named(e)),
            }
            match pids(&s) {
                Ok(p) => prop_assert!(p >= 1),
                Err(e) => prop_assert!(named(e)),
            }
            match user(&s) {
                Ok((u, g)) => prop_assert!(s.starts_with(&u.to_string()) && (s.contains(':') || u == g)),
                Err(e) => prop_assert!(named(e)),
            }
            match env(&s, |_| None) {
                Ok((k, v)) => prop_assert!(!k.is_empty() && s.starts_with(&k) && s.ends_with(&v)),
                Err(e) => prop_assert!(named(e)),
            }
            match volume(&s) {
                Ok(v) => prop_assert!(v.host.is_absolute() && v.container.is_absolute() && (v.readonly == s.ends_with(":ro"))),
                Err(e) => prop_assert!(named(e)),
            }
            match signal(&s) {
                Ok(n) => prop_assert!((1..=64).contains(&n)),
                Err(e) => prop_assert!(named(e)),
            }
            match name(&s) {
                Ok(n) => prop_assert!(n == s && !n.is_empty() && n.len() <= 64 && !n.contains('/')),
                Err(e) => prop_assert!(named(e)),
            }
            match hostname(&s) {
                Ok(h) => prop_assert!(h == s && !h.is_empty() && !h.starts_with('-') && !h.contains("..")),
                Err(e) => prop_assert!(named(e)),
            }
        }

        #[test]
        fn mebibytes_parse_exactly(n in 6u64..1_000_000) {
            prop_assert_eq!(mem_bytes(&n.to_string()), Ok(n << 20));
        }
    }
}
