//! Where an image lives in a registry: `HOST[:PORT]/REPOSITORY[:TAG|@DIGEST]`.

use std::fmt;

use corral_image::{Digest, Reference};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `host[:port]`.
    pub registry: String,
    /// The repository path inside the registry, e.g. `team/app`.
    pub repository: String,
    /// The tag, or the digest when the reference pinned one.
    pub tag: String,
    pub digest: Option<Digest>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid registry reference {input:?}: {reason}")]
pub struct TargetError {
    pub input: String,
    pub reason: String,
}

impl Target {
    pub fn parse(input: &str) -> Result<Target, TargetError> {
        let err = |reason: &str| TargetError { input: input.to_string(), reason: reason.to_string() };
        let r: Reference = input.parse().map_err(|e: corral_image::reference::ParseReferenceError| err(e.reason))?;
        let Some((registry, repository)) = r.name().split_once('/') else {
            return Err(err("it needs a registry host first, e.g. localhost:5000/app:v1"));
        };
        let is_host = registry.contains('.') || registry.contains(':') || registry == "localhost";
        if !is_host {
            return Err(err("it needs a registry host first, e.g. localhost:5000/app:v1"));
        }
        Ok(Target {
            registry: registry.to_string(),
            repository: repository.to_string(),
            tag: r.tag().to_string(),
            digest: r.digest().cloned(),
        })
    }

    /// The reference (`host/repo:tag`) as the local store names it.
    pub fn local_reference(&self) -> Reference {
        format!("{}/{}:{}", self.registry, self.repository, self.tag).parse().expect("built from a valid reference")
    }

    /// What to ask the registry's manifest endpoint for: the digest if pinned, else the tag.
    pub fn manifest_ref(&self) -> String {
        match &self.digest {
            Some(d) => d.to_string(),
            None => self.tag.clone(),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}:{}", self.registry, self.repository, self.tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = Target::parse("localhost:5000/team/app:v2").unwrap();
        assert_eq!((t.registry.as_str(), t.repository.as_str(), t.tag.as_str()), ("localhost:5000", "team/app", "v2"));
        assert_eq!(Target::parse("registry.example/app").unwrap().tag, "latest");
        assert_eq!(
            Target::parse("app:v1").unwrap_err().reason,
            "it needs a registry host first, e.g. localhost:5000/app:v1"
        );
        assert_eq!(
            Target::parse("team/app:v1").unwrap_err().reason,
            "it needs a registry host first, e.g. localhost:5000/app:v1"
        );
        let d = Digest::of(b"m");
        let t = Target::parse(&format!("127.0.0.1:5000/app@{d}")).unwrap();
        assert_eq!(t.manifest_ref(), d.to_string());
    }
}
