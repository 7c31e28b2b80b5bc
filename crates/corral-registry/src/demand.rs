//! Images pulled on demand, as an agent (and `corral run`) needs them: a reference that is not
//! in the local store is pulled from the registry it names. Concurrent launches of one image
//! share one pull; registries on loopback are spoken to over plain HTTP (as Docker does), others
//! only when listed as insecure.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use corral_image::{Reference, Store};

use crate::{ClientConfig, Target};

/// When to pull, as Docker and Podman users know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullPolicy {
    /// Pull every time (a tag may have moved).
    Always,
    /// Pull when the store does not have the image (the default).
    #[default]
    Missing,
    /// Never pull: the image must be in the store.
    Never,
}

impl std::str::FromStr for PullPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<PullPolicy, String> {
        match s {
            "always" => Ok(PullPolicy::Always),
            "missing" => Ok(PullPolicy::Missing),
            "never" => Ok(PullPolicy::Never),
            other => Err(format!("pull policy {other:?} must be always, missing or never")),
        }
    }
}

/// Pulls images on demand, one pull per image at a time.
#[derive(Default)]
pub struct Puller {
    /// Registries (`host[:port]`) spoken to over plain HTTP besides loopback ones.
    pub insecure: Vec<String>,
    pulling: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

/// Whether a registry host is on this machine's loopback.
fn loopback(registry: &str) -> bool {
    let host = registry.rsplit_once(':').map_or(registry, |(h, p)| if p.parse::<u16>().is_ok() { h } else { registry });
    host == "localhost" || host.starts_with("127.") || host == "[::1]"
}

impl Puller {
    pub fn new(insecure: Vec<String>) -> Puller {
        Puller { insecure, pulling: Mutex::default() }
    }

    /// Makes sure `image` is in `store`, pulling it as `policy` says. The error names the image,
    /// the registry and the cause. A reference that names no registry is not pulled: the store
    /// says what is wrong with it when the container is made (unknown, or corrupt).
    pub fn ensure(&self, store: &Store, image: &str, policy: PullPolicy) -> Result<(), String> {
        let Ok(reference) = image.parse::<Reference>() else { return Ok(()) };
        let Ok(target) = Target::parse(image) else { return Ok(()) };
        let have = || store.resolve(&reference).is_ok();
        if policy != PullPolicy::Always && have() {
            return Ok(());
        }
        if policy == PullPolicy::Never {
            return Err(format!("unknown image {image:?}: not in the store, and the pull policy is never"));
        }
        // One pull of an image at a time; who waited finds it there.
        let lock = {
            let mut pulling = self.pulling.lock().unwrap_or_else(|p| p.into_inner());
            pulling.entry(image.to_string()).or_default().clone()
        };
        let _pulling = lock.lock().unwrap_or_else(|p| p.into_inner());
        if policy == PullPolicy::Missing && have() {
            return Ok(());
        }
        let config = ClientConfig {
            insecure: loopback(&target.registry) || self.insecure.contains(&target.registry),
            ..ClientConfig::default()
        };
        tracing::info!(image, registry = %target.registry, "pulling");
        crate::pull::pull(store, &target, config, &Quiet).map_err(|e| format!("pulling {image}: {e}"))?;
        Ok(())
    }
}

struct Quiet;

impl crate::Events for Quiet {
    fn blob_skipped(&self, _: &corral_image::Digest, _: u64) {}
    fn blob_progress(&self, _: &corral_image::Digest, _: u64, _: u64) {}
    fn blob_done(&self, _: &corral_image::Digest, _: u64) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_and_loopback() {
        assert_eq!("always".parse::<PullPolicy>(), Ok(PullPolicy::Always));
        assert!("sometimes".parse::<PullPolicy>().unwrap_err().contains("always, missing or never"));
        assert!(loopback("127.0.0.1:5000") && loopback("localhost:5000") && loopback("localhost"));
        assert!(!loopback("registry.example.com:5000") && !loopback("10.0.0.1:5000"));
    }

    #[test]
    fn what_cannot_be_pulled_says_why() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let p = Puller::default();
        assert_eq!(p.ensure(&store, "busybox:latest", PullPolicy::Missing), Ok(()), "no registry: the store's to say");
        let e = p.ensure(&store, "127.0.0.1:1/team/app:v1", PullPolicy::Never).unwrap_err();
        assert!(e.contains("pull policy is never"), "{e}");
        let e = p.ensure(&store, "127.0.0.1:1/team/app:v1", PullPolicy::Missing).unwrap_err();
        assert!(e.starts_with("pulling 127.0.0.1:1/team/app:v1: "), "{e}");
    }
}
