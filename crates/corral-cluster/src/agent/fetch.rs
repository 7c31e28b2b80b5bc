//! The fetcher: a task's artifacts (Marathon's `fetch` and `uris`) downloaded into its sandbox
//! before it starts, over http or https, with a size limit; unpacked (tar, tar.gz, tgz, zip)
//! when asked, never writing outside the sandbox; tried again with a doubling wait when the
//! server is unreachable or fails on its side; progress and failures in words a task's status
//! carries, as image pulls are.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use crate::wire;

/// The most one artifact may be, downloaded or unpacked (`CORRAL_MAX_FETCH_SIZE`; default 2 GiB).
pub(super) fn max_bytes() -> u64 {
    corral_image::layer::size_limit("CORRAL_MAX_FETCH_SIZE", 2 << 30)
}

fn limit_text() -> String {
    format!("the {} limit (CORRAL_MAX_FETCH_SIZE)", corral_image::layer::human(max_bytes()))
}
/// Tries for a download that fails for a reason that may pass.
const ATTEMPTS: u32 = 3;
const FIRST_WAIT: Duration = Duration::from_secs(1);

/// Why a download failed.
#[derive(Debug)]
struct Failure {
    cause: &'static str,
    detail: String,
    /// Trying again later may help.
    transient: bool,
}

/// Fetches every artifact into `sandbox`, in order. The error names the URI and the cause.
pub(super) fn fetch_all(items: &[wire::Fetch], sandbox: &Path, progress: &(dyn Fn(&str) + Sync)) -> Result<(), String> {
    for (n, item) in items.iter().enumerate() {
        fetch_one(item, n, sandbox, progress)?;
    }
    Ok(())
}

fn fetch_one(item: &wire::Fetch, n: usize, sandbox: &Path, progress: &(dyn Fn(&str) + Sync)) -> Result<(), String> {
    let uri = &item.uri;
    let part = sandbox.join(format!(".fetch-{n}.part"));
    let mut wait = FIRST_WAIT;
    let mut attempt = 1;
    loop {
        match download(uri, &part, progress) {
            Ok(()) => break,
            Err(f) if f.transient && attempt < ATTEMPTS => {
                progress(&format!(
                    "fetching {uri}: {} ({}); try {} of {ATTEMPTS} in {} s",
                    f.cause,
                    f.detail,
                    attempt + 1,
                    wait.as_secs()
                ));
                corral_registry::demand::pause(wait);
                wait *= 2;
                attempt += 1;
            }
            Err(f) => {
                let _ = fs::remove_file(&part);
                return Err(format!("fetching {uri}: {}: {}", f.cause, f.detail));
            }
        }
    }
    let placed = place(item, &part, sandbox);
    let _ = fs::remove_file(&part);
    placed.map_err(|e| format!("fetching {uri}: {e}"))
}

/// Downloads `uri` into `part` (from scratch), at most [`max_bytes`].
fn download(uri: &str, part: &Path, progress: &(dyn Fn(&str) + Sync)) -> Result<(), Failure> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(15)))
        .timeout_per_read(Some(Duration::from_secs(30)))
        .max_redirects(5)
        .build()
        .into();
    let unreachable =
        |e: &dyn std::fmt::Display| Failure { cause: "unreachable", detail: e.to_string(), transient: true };
    let mut resp = agent.get(uri).call().map_err(|e| unreachable(&e))?;
    let status = resp.status().as_u16();
    if status != 200 {
        let (cause, transient) = match status {
            401 | 403 => ("unauthorized", false),
            404 | 410 => ("not found", false),
            500.. => ("server error", true),
            _ => ("failed", false),
        };
        return Err(Failure { cause, detail: format!("the server answered {status}"), transient });
    }
    let max = max_bytes();
    let total = resp.headers().get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if total.is_some_and(|t| t > max) {
        return Err(too_big());
    }
    let mut file =
        OpenOptions::new().create(true).write(true).truncate(true).mode(0o600).open(part).map_err(|e| Failure {
            cause: "failed",
            detail: format!("{}: {e}", part.display()),
            transient: false,
        })?;
    let mut reader = resp.body_mut().with_config().limit(max + 1).reader();
    let mut buf = vec![0u8; 256 * 1024];
    let (mut done, mut last) = (0u64, Instant::now());
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => return Err(unreachable(&e)),
        };
        done += n as u64;
        if done > max {
            return Err(too_big());
        }
        file.write_all(&buf[..n]).map_err(|e| Failure {
            cause: "failed",
            detail: format!("{}: {e}", part.display()),
            transient: false,
        })?;
        if last.elapsed() >= Duration::from_millis(500) {
            last = Instant::now();
            let of = total.map_or_else(|| "?".into(), |t| t.div_ceil(1 << 20).to_string());
            progress(&format!("fetching {uri}: {}/{of} MiB", done.div_ceil(1 << 20)));
        }
    }
    if total.is_some_and(|t| t != done) {
        return Err(Failure {
            cause: "unreachable",
            detail: format!("the connection ended after {done} of {} bytes", total.unwrap_or(0)),
            transient: true,
        });
    }
    Ok(())
}

fn too_big() -> Failure {
    Failure { cause: "too large", detail: format!("larger than {}", limit_text()), transient: false }
}

/// Puts a downloaded artifact in place: unpacked into the sandbox (or `dest_path` in it), or
/// as a file named by `dest_path` or the URI's last segment.
fn place(item: &wire::Fetch, part: &Path, sandbox: &Path) -> Result<(), String> {
    let name = item.dest_path.clone().unwrap_or_else(|| {
        let path = item.uri.split(['?', '#']).next().unwrap_or("");
        path.rsplit('/').next().unwrap_or("").to_string()
    });
    let dest = inside(sandbox, &name).ok_or_else(|| format!("{name:?} is not a name inside the sandbox"))?;
    if item.extract {
        let into = if item.dest_path.is_some() { dest } else { sandbox.to_path_buf() };
        fs::create_dir_all(&into).map_err(|e| format!("{}: {e}", into.display()))?;
        let is_zip = item.uri.split(['?', '#']).next().unwrap_or("").to_ascii_lowercase().ends_with(".zip");
        return if is_zip { unzip(part, &into) } else { untar(part, &into) };
    }
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    fs::rename(part, &dest).map_err(|e| format!("{}: {e}", dest.display()))?;
    let mode = if item.executable { 0o755 } else { 0o644 };
    fs::set_permissions(&dest, fs::Permissions::from_mode(mode)).map_err(|e| format!("{}: {e}", dest.display()))
}

/// `rel` under `root`, if it stays there (no `..`, not absolute, not empty).
fn inside(root: &Path, rel: &str) -> Option<PathBuf> {
    let p = Path::new(rel);
    let ok = !rel.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)));
    ok.then(|| root.join(p))
}

/// A tar (gzip-compressed or not), through the image store's unpacker: nothing lands outside
/// `into`, links included.
fn untar(part: &Path, into: &Path) -> Result<(), String> {
    let file = File::open(part).map_err(|e| e.to_string())?;
    let reader = corral_image::layer::gunzip_if_gzip(io::BufReader::new(file)).map_err(|e| e.to_string())?;
    corral_image::layer::unpack(reader, into).map(|_| ()).map_err(|e| format!("unpacking: {e}"))
}

/// A zip: every entry by its enclosed name; links and entries escaping `into` are refused;
/// at most [`max_bytes`] unpacked.
fn unzip(part: &Path, into: &Path) -> Result<(), String> {
    let file = File::open(part).map_err(|e| e.to_string())?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| format!("not a zip archive: {e}"))?;
    let mut written = 0u64;
    let max = max_bytes();
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(|e| format!("zip entry {i}: {e}"))?;
        let name = entry.name().map(|n| n.to_string()).unwrap_or_else(|e| format!("#{i} ({e})"));
        let rel =
            entry.enclosed_name().ok_or_else(|| format!("zip entry {name:?}: it would land outside the sandbox"))?;
        if entry.is_symlink() {
            return Err(format!("zip entry {name:?}: links are not unpacked"));
        }
        let dest = into.join(rel);
        if entry.is_dir() {
            fs::create_dir_all(&dest).map_err(|e| format!("{}: {e}", dest.display()))?;
            continue;
        }
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        let mode = entry.unix_mode().unwrap_or(0o644) & 0o777;
        let mut out = OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&dest)
            .map_err(|e| format!("zip entry {name:?}: {e}"))?;
        let copied = io::copy(&mut (&mut entry).take(max + 1 - written), &mut out)
            .map_err(|e| format!("zip entry {name:?}: {e}"))?;
        written += copied;
        if written > max {
            return Err(format!("unpacked, it is larger than {}", limit_text()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_inside_the_sandbox() {
        let root = Path::new("/s");
        assert_eq!(inside(root, "bin/tool"), Some(PathBuf::from("/s/bin/tool")));
        for bad in ["", "..", "../x", "/etc/x", "a/../../x", "./x"] {
            assert_eq!(inside(root, bad), None, "{bad:?}");
        }
    }

    #[test]
    fn zips_unpack_inside_and_refuse_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let make = |entries: &[(&str, &[u8])]| {
            let path = dir.path().join("a.zip");
            let mut w = zip::ZipWriter::new(File::create(&path).unwrap());
            for (name, data) in entries {
                w.start_file(*name, zip::write::SimpleFileOptions::default().unix_permissions(0o755)).unwrap();
                w.write_all(data).unwrap();
            }
            w.finish().unwrap();
            path
        };
        let into = dir.path().join("sandbox");
        fs::create_dir(&into).unwrap();
        unzip(&make(&[("bin/run.sh", b"#!/bin/sh\n"), ("data.txt", b"42")]), &into).unwrap();
        assert_eq!(fs::read(into.join("data.txt")).unwrap(), b"42");
        assert_eq!(fs::metadata(into.join("bin/run.sh")).unwrap().permissions().mode() & 0o777, 0o755);
        let e = unzip(&make(&[("../escape", b"x")]), &into).unwrap_err();
        assert!(e.contains("outside the sandbox"), "{e}");
        assert!(!dir.path().join("escape").exists());
    }
}
