//! Image references: `[REGISTRY/]NAME[:TAG][@DIGEST]`, after the distribution spec's grammar.

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;

/// A parsed image reference. `busybox` means `busybox:latest`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reference {
    name: String,
    tag: String,
    digest: Option<Digest>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid image reference {input:?}: {reason}")]
pub struct ParseReferenceError {
    pub input: String,
    pub reason: &'static str,
}

const DEFAULT_TAG: &str = "latest";

impl Reference {
    /// The repository name, e.g. `busybox` or `registry.local:5000/team/app`.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn tag(&self) -> &str {
        &self.tag
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// `name:tag`, the key the store tags images under.
    pub fn tagged(&self) -> String {
        format!("{}:{}", self.name, self.tag)
    }
}

impl FromStr for Reference {
    type Err = ParseReferenceError;

    fn from_str(input: &str) -> Result<Reference, ParseReferenceError> {
        let err = |reason| ParseReferenceError { input: input.to_string(), reason };
        if input.is_empty() {
            return Err(err("it is empty"));
        }
        if input.len() > 255 + 1 + 128 + 72 {
            return Err(err("it is too long"));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((rest, d)) => {
                (rest, Some(d.parse::<Digest>().map_err(|_| err("the digest is not sha256:<64 hex digits>"))?))
            }
            None => (input, None),
        };
        // A ':' after the last '/' starts the tag; one before it belongs to a registry port.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if name.is_empty() {
            return Err(err("the name is empty"));
        }
        if name.len() > 255 {
            return Err(err("the name is longer than 255 characters"));
        }
        let mut components: Vec<&str> = name.split('/').collect();
        // The first component is a registry host when it has a '.', a ':' or is localhost.
        if components.len() > 1 {
            let host = components[0];
            if host.contains('.') || host.contains(':') || host == "localhost" {
                if !valid_host(host) {
                    return Err(err("the registry host is not a valid host[:port]"));
                }
                components.remove(0);
            }
        }
        if !components.iter().all(|c| valid_path_component(c)) {
            return Err(err(
                "name components must be lowercase letters and digits, separated by '.', '_', '__' or '-'",
            ));
        }
        let tag = match tag {
            Some(t) if !valid_tag(t) => {
                return Err(err("the tag must be 1-128 of [A-Za-z0-9_.-], not starting with '.' or '-'"))
            }
            Some(t) => t.to_string(),
            None => DEFAULT_TAG.to_string(),
        };
        Ok(Reference { name: name.to_string(), tag, digest })
    }
}

fn valid_host(host: &str) -> bool {
    let (h, port) = match host.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (host, None),
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    let host_ok = !h.is_empty()
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    port_ok && host_ok
}

fn valid_path_component(c: &str) -> bool {
    // [a-z0-9]+ ( ( '.' | '_' | '__' | '-'+ ) [a-z0-9]+ )*
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter().all(|&x| x.is_ascii_alphanumeric() || x == b'_' || x == b'.' || x == b'-')
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, self.tag)?;
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check(input: &str, expected: Result<(&str, &str), &str>) {
        let got = input.parse::<Reference>().map(|r| (r.name().to_string(), r.tag().to_string()));
        match expected {
            Ok((name, tag)) => assert_eq!(got, Ok((name.to_string(), tag.to_string())), "{input}"),
            Err(reason) => assert_eq!(got.unwrap_err().reason, reason, "{input}"),
        }
    }

    #[test]
    fn parses_references() {
        check("busybox", Ok(("busybox", "latest")));
        check("busybox:1.36", Ok(("busybox", "1.36")));
        check("team/app:v2", Ok(("team/app", "v2")));
        check("localhost:5000/team/app", Ok(("localhost:5000/team/app", "latest")));
        check("registry.local:5000/app:v1", Ok(("registry.local:5000/app", "v1")));
        check("my_app__x-y.z:TAG_1", Ok(("my_app__x-y.z", "TAG_1")));
        check("", Err("it is empty"));
        check(":tag", Err("the name is empty"));
        check(
            "Busybox",
            Err("name components must be lowercase letters and digits, separated by '.', '_', '__' or '-'"),
        );
        check("a//b", Err("name components must be lowercase letters and digits, separated by '.', '_', '__' or '-'"));
        check("app:", Err("the tag must be 1-128 of [A-Za-z0-9_.-], not starting with '.' or '-'"));
        check("app:-x", Err("the tag must be 1-128 of [A-Za-z0-9_.-], not starting with '.' or '-'"));
        check("app@sha256:zz", Err("the digest is not sha256:<64 hex digits>"));
    }

    #[test]
    fn digest_references_keep_their_digest() {
        let d = Digest::of(b"x");
        let r: Reference = format!("app@{d}").parse().unwrap();
        assert_eq!(r.digest(), Some(&d));
        assert_eq!(r.to_string(), format!("app:latest@{d}"));
    }

    proptest! {
        #[test]
        fn valid_references_round_trip(name in "[a-z0-9]{1,8}(/[a-z0-9]{1,8}){0,2}", tag in "[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}") {
            let r: Reference = format!("{name}:{tag}").parse().unwrap();
            prop_assert_eq!(r.name(), name.as_str());
            prop_assert_eq!(r.tag(), tag.as_str());
            prop_assert_eq!(r.to_string().parse::<Reference>().unwrap(), r);
        }
    }
}
