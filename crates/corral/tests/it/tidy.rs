//! Repository hygiene, tested like code: module docs everywhere, no ignored or should-panic
//! tests, no sleeps in tests, ARCHITECTURE.md naming every crate, and vendored crates explained.

use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn every_rust_file_starts_with_a_module_doc() {
    let mut files = Vec::new();
    rust_files(&repo().join("crates"), &mut files);
    assert!(files.len() > 10);
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(text.starts_with("//!"), "{} has no module doc (//!) at the top", f.display());
    }
}

#[test]
fn no_ignored_should_panic_or_sleeping_tests() {
    let mut files = Vec::new();
    rust_files(&repo().join("crates"), &mut files);
    let banned = [concat!("#[", "ignore"), concat!("#[", "should_panic"), concat!("thread::", "sleep(")];
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for b in banned {
            assert!(!text.contains(b), "{} contains {b}", f.display());
        }
    }
}

#[test]
fn architecture_names_every_crate() {
    let arch = std::fs::read_to_string(repo().join("ARCHITECTURE.md")).unwrap();
    for e in std::fs::read_dir(repo().join("crates")).unwrap().flatten() {
        let name = e.file_name().into_string().unwrap();
        assert!(arch.contains(&format!("`{name}`")), "ARCHITECTURE.md does not describe crate {name}");
    }
}

#[test]
fn every_vendored_crate_is_explained_and_patched_in_the_workspace() {
    let readme = std::fs::read_to_string(repo().join("vendor/README.md")).unwrap();
    let manifest = std::fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    for e in std::fs::read_dir(repo().join("vendor")).unwrap().flatten() {
        if !e.path().is_dir() {
            continue;
        }
        let name = e.file_name().into_string().unwrap();
        assert!(readme.contains(&format!("## {name} ")), "vendor/README.md does not explain {name}");
        assert!(repo().join(format!("vendor/{name}.patch")).exists(), "vendor/{name}.patch is missing");
        assert!(
            manifest.contains(&format!("{name} = {{ path = \"vendor/{name}\" }}")),
            "Cargo.toml does not patch {name} with vendor/{name}"
        );
    }
}
