//! The registry client against a fake registry that misbehaves on purpose: authentication
//! challenges, dropped connections, stalls and corrupt blobs.

mod fake;

use std::collections::HashSet;
use std::time::Duration;

use corral_image::{Digest, Store};
use corral_registry::auth::Credentials;
use corral_registry::{ClientConfig, RegistryError, Target};
use fake::{Fake, Fault};

struct Quiet;

impl corral_registry::Events for Quiet {
    fn blob_skipped(&self, _: &Digest, _: u64) {}
    fn blob_progress(&self, _: &Digest, _: u64, _: u64) {}
    fn blob_done(&self, _: &Digest, _: u64) {}
}

fn config(creds: Option<(&str, &str)>) -> ClientConfig {
    ClientConfig {
        insecure: true,
        credentials: creds.map(|(u, p)| Credentials { username: u.into(), password: p.into() }),
        stall_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(30),
    }
}

fn store() -> (tempfile::TempDir, Store) {
    let tmp = tempfile::tempdir().unwrap();
    let s = Store::open(tmp.path()).unwrap();
    (tmp, s)
}

#[test]
fn bearer_tokens_are_fetched_with_credentials_and_pulls_verify() {
    let fake = Fake::start();
    fake.require_bearer("alice", "s3cret");
    let (layer, _) = fake.add_image("app", "v1", 200_000);
    let target = Target::parse(&format!("{}/app:v1", fake.addr())).unwrap();

    let (_t, s) = store();
    let err = corral_registry::pull::pull(&s, &target, config(None), &Quiet).unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
    assert!(err.to_string().contains(&fake.addr()), "the error names the registry: {err}");

    let image = corral_registry::pull::pull(&s, &target, config(Some(("alice", "s3cret"))), &Quiet).unwrap();
    assert_eq!(image.layers().unwrap(), vec![layer.clone()]);
    assert!(s.resolve(&target.local_reference()).is_ok(), "tagged locally");
    assert!(
        fake.requests().iter().any(|r| r.starts_with("GET /token?scope=repository%3Aapp%3Apull")),
        "{:?}",
        fake.requests()
    );
    let err = corral_registry::pull::pull(&s, &target, config(Some(("alice", "wrong"))), &Quiet);
    // Everything is already there: only the manifest is asked for, which needs a token.
    assert!(matches!(err, Err(RegistryError::Unauthorized { .. })), "{err:?}");
}

#[test]
fn basic_auth_pushes_skip_existing_blobs() {
    let fake = Fake::start();
    fake.require_basic("bob", "pw");
    let (_t, s) = store();
    let src = tempfile::tempdir().unwrap();
    // Incompressible, so the gzip layer stays above the chunk size.
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let noise: Vec<u8> = (0..(9u64 << 20))
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(src.path().join("big.bin"), noise).unwrap();
    corral_image::import::import(&s, src.path(), &"local:v1".parse().unwrap(), "2026-01-01T00:00:00Z").unwrap();
    let target = Target::parse(&format!("{}/team/app:v1", fake.addr())).unwrap();
    let local = "local:v1".parse().unwrap();
    assert!(matches!(
        corral_registry::push::push(&s, &local, &target, config(None), &Quiet),
        Err(RegistryError::Unauthorized { .. })
    ));
    let digest = corral_registry::push::push(&s, &local, &target, config(Some(("bob", "pw"))), &Quiet).unwrap();
    assert!(fake.has_manifest("team/app", "v1", &digest));
    let patches = fake.requests().iter().filter(|r| r.starts_with("PATCH")).count();
    assert!(patches >= 2, "a 9 MiB layer goes up in chunks: {:?}", fake.requests());
    let before = fake.requests().len();
    corral_registry::push::push(&s, &local, &target, config(Some(("bob", "pw"))), &Quiet).unwrap();
    let again: Vec<String> = fake.requests()[before..].to_vec();
    assert!(again.iter().all(|r| !r.starts_with("POST") && !r.starts_with("PATCH")), "nothing re-uploaded: {again:?}");
}

#[test]
fn an_interrupted_download_resumes_where_it_stopped() {
    let fake = Fake::start();
    let (layer, size) = fake.add_image("app", "v1", 300_000);
    fake.fault(&layer, Fault::CutOnce);
    let (_t, s) = store();
    let target = Target::parse(&format!("{}/app:v1", fake.addr())).unwrap();
    corral_registry::pull::pull(&s, &target, config(None), &Quiet).unwrap();
    let ranged: Vec<String> = fake.requests().into_iter().filter(|r| r.contains("range=bytes=")).collect();
    assert_eq!(ranged.len(), 1, "one resumed request: {:?}", fake.requests());
    let offset: u64 = ranged[0].split("range=bytes=").nth(1).unwrap().trim_end_matches('-').parse().unwrap();
    assert!(offset > 0 && offset < size, "resumed at {offset} of {size}");
    assert!(s.verify_blob(&layer).is_ok());
}

#[test]
fn a_stalled_transfer_times_out_naming_the_registry_and_the_blob() {
    let fake = Fake::start();
    let (layer, _) = fake.add_image("app", "v1", 300_000);
    fake.fault(&layer, Fault::Stall);
    let (_t, s) = store();
    let target = Target::parse(&format!("{}/app:v1", fake.addr())).unwrap();
    let err = corral_registry::pull::pull(&s, &target, config(None), &Quiet).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, RegistryError::Timeout { .. }), "{text}");
    assert!(text.contains(&fake.addr()) && text.contains(&layer.to_string()), "{text}");
    assert!(s.resolve(&target.local_reference()).is_err(), "nothing is tagged");
}

#[test]
fn a_corrupt_blob_is_refused() {
    let fake = Fake::start();
    let (layer, _) = fake.add_image("app", "v1", 50_000);
    fake.fault(&layer, Fault::Corrupt);
    let (_t, s) = store();
    let target = Target::parse(&format!("{}/app:v1", fake.addr())).unwrap();
    let err = corral_registry::pull::pull(&s, &target, config(None), &Quiet).unwrap_err();
    assert!(err.to_string().contains("is corrupt"), "{err}");
    assert!(!s.has_blob(&layer));
    assert!(s.gc(&HashSet::new()).is_ok());
}

#[test]
fn on_demand_pulls_use_the_search_list_and_credentials_once_per_image() {
    use corral_registry::{PullPolicy, Puller, Registries};
    let fake = Fake::start();
    fake.require_basic("corral", "s3cret");
    let (layer, _) = fake.add_image("team/app", "v1", 300_000);
    let with_auth = Registries {
        search: vec![fake.addr()],
        auths: [(fake.addr(), Credentials { username: "corral".into(), password: "s3cret".into() })].into(),
        ..Registries::default()
    };
    let (_t, s) = store();

    // Without credentials: the cause, in words a task's status carries, and no password.
    let p = Puller::new(Registries { search: vec![fake.addr()], ..Registries::default() });
    let e = p.ensure(&s, "team/app:v1", PullPolicy::Missing).unwrap_err();
    assert!(e.starts_with(&format!("pulling team/app:v1 from {}: unauthorized: ", fake.addr())), "{e}");
    assert!(e.contains("registries file"), "{e}");

    // With them, four launches at once make one pull; the short name is what the store knows.
    let p = Puller::new(with_auth);
    let said = std::sync::Mutex::new(Vec::<String>::new());
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                p.ensure_reporting(&s, "team/app:v1", PullPolicy::Missing, &|m| said.lock().unwrap().push(m.into()))
                    .unwrap()
            });
        }
    });
    assert!(s.resolve(&"team/app:v1".parse().unwrap()).is_ok(), "tagged by the name the task gave");
    let layer_gets = fake.requests().iter().filter(|r| r.starts_with("GET") && r.contains(&layer.to_string())).count();
    assert_eq!(layer_gets, 1, "one pull: {:?}", fake.requests());
    let said = said.into_inner().unwrap();
    assert!(said.last().is_some_and(|m| m.starts_with("pulled team/app:v1: ")), "{said:?}");
    assert!(said.iter().all(|m| !m.contains("s3cret")), "{said:?}");

    let e = p.ensure(&s, "team/nope:v1", PullPolicy::Missing).unwrap_err();
    assert!(e.contains(": not found: "), "{e}");
}

#[test]
fn two_pullers_of_one_store_download_each_blob_once() {
    use corral_registry::{PullPolicy, Puller};
    // As an agent and `corral run` on one machine: separate pullers (no shared lock map).
    let fake = Fake::start();
    let (layer, _) = fake.add_image("team/app", "v1", 2_000_000);
    let (_t, s) = store();
    let image = format!("{}/team/app:v1", fake.addr());
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| Puller::default().ensure(&s, &image, PullPolicy::Missing).unwrap());
        }
    });
    let layer_gets = fake.requests().iter().filter(|r| r.starts_with("GET") && r.contains(&layer.to_string())).count();
    assert_eq!(layer_gets, 1, "{:?}", fake.requests());
    assert!(s.resolve(&image.parse().unwrap()).is_ok());
}

#[test]
fn a_layer_past_the_size_limit_is_refused_naming_it() {
    // SAFETY: nextest runs each test in a process of its own; nothing else reads the environment
    // concurrently here.
    unsafe { std::env::set_var("CORRAL_MAX_LAYER_SIZE", "100k") };
    let fake = Fake::start();
    let (layer, _) = fake.add_image("big", "v1", 400_000);
    let target = Target::parse(&format!("{}/big:v1", fake.addr())).unwrap();
    let (_t, s) = store();
    let err = corral_registry::pull::pull(&s, &target, config(None), &Quiet).unwrap_err().to_string();
    assert!(err.contains(&layer.to_string()), "names the layer: {err}");
    assert!(err.contains("it unpacks to more than 100 KiB (CORRAL_MAX_LAYER_SIZE)"), "{err}");
    assert!(s.resolve(&target.local_reference()).is_err(), "nothing tagged");
}
