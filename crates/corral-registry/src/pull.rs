//! `corral pull`: the manifest (choosing this platform from an index), then every blob in
//! parallel, each resumable and verified, then tag.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::path::PathBuf;

use corral_image::digest::Hasher;
use corral_image::{Digest, Image, Store};
use ureq::http::StatusCode;

use crate::client::{Client, ClientConfig, Method, RegistryError};
use crate::target::Target;
use crate::{for_each_parallel, Events, Session};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Attempts per blob; each one resumes where the previous stopped.
const ATTEMPTS: usize = 3;

/// Pulls `target` into the store and tags it with its registry name; returns the image.
pub fn pull(store: &Store, target: &Target, config: ClientConfig, events: &dyn Events) -> Result<Image, RegistryError> {
    let session = Session {
        client: Client::new(&target.registry, config),
        store,
        target,
        scope: format!("repository:{}:pull", target.repository),
        events,
    };
    let (manifest_digest, manifest) = fetch_manifest(&session, &target.manifest_ref(), 0)?;
    let client = &session.client;
    let desc = |v: &serde_json::Value| -> Result<(Digest, u64), RegistryError> {
        let d = v["digest"].as_str().and_then(|d| d.parse().ok());
        let size = v["size"].as_u64();
        match (d, size) {
            (Some(d), Some(s)) => Ok((d, s)),
            _ => Err(client.error("reading the manifest", "a descriptor lacks a sha256 digest or a size")),
        }
    };
    let (config_digest, config_size) = desc(&manifest["config"])?;
    let mut blobs: Vec<(Digest, u64, bool)> = vec![(config_digest, config_size, false)];
    for l in manifest["layers"].as_array().into_iter().flatten() {
        let (d, size) = desc(l)?;
        blobs.push((d, size, true));
    }
    // Too large as declared: refused before a byte is downloaded.
    let limits = corral_image::layer::ImageLimits::from_env();
    let sizes: Vec<u64> = blobs.iter().filter(|b| b.2).map(|b| b.1).collect();
    limits.check_declared(&sizes).map_err(|why| client.error(&format!("image {}", target.repository), why))?;
    let fresh: Vec<Digest> = blobs.iter().filter(|b| b.2 && !store.has_layer(&b.0)).map(|b| b.0.clone()).collect();
    events.planned(&blobs.iter().map(|(d, size, _)| (d.clone(), *size)).collect::<Vec<_>>());
    for_each_parallel(&blobs, |(d, size, is_layer)| pull_blob(&session, d, *size, *is_layer))?;
    let image = store.image(&manifest_digest)?;
    let mut unpacked = 0u64;
    for layer in image.layers()? {
        // Already unpacked as it arrived, unless it was there before or resumed.
        let dir = store.unpacked_layer(&layer)?;
        unpacked = unpacked.saturating_add(corral_image::layer::content_bytes(&dir, limits.max_bytes, &|_| true));
    }
    if let Err(why) = limits.check_unpacked(unpacked) {
        // What this pull unpacked goes again; layers other images share stay.
        for d in &fresh {
            store.forget_layer(d);
        }
        return Err(client.error(&format!("image {}", target.repository), why));
    }
    store.tag(&target.local_reference(), &manifest_digest)?;
    Ok(image)
}

/// Fetches and stores a manifest, following an index to this platform's image.
fn fetch_manifest(
    session: &Session<'_>,
    reference: &str,
    depth: usize,
) -> Result<(Digest, serde_json::Value), RegistryError> {
    let Session { client, store, target, scope, .. } = session;
    let scope = scope.as_str();
    let what = format!("fetching manifest {}/{}:{reference}", target.registry, target.repository);
    let url = client.url(&format!("/v2/{}/manifests/{reference}", target.repository));
    let accept = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST].join(", ");
    let mut resp = client.send(Method::Get, &url, scope, &[("Accept", accept)], None, &what)?;
    if resp.status() == StatusCode::NOT_FOUND {
        return Err(RegistryError::NotFound { registry: target.registry.clone(), what });
    }
    if !resp.status().is_success() {
        return Err(client.unexpected(&what, resp));
    }
    let mut bytes = Vec::new();
    resp.body_mut()
        .as_reader()
        .take(4 << 20)
        .read_to_end(&mut bytes)
        .map_err(|e| client.error(&what, e.to_string()))?;
    let actual = Digest::of(&bytes);
    let expected = reference.parse::<Digest>().ok().or_else(|| {
        resp.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()).and_then(|d| d.parse().ok())
    });
    if let Some(expected) = expected {
        if expected != actual {
            return Err(client.error(&what, format!("the manifest hashes to {actual}, not {expected}")));
        }
    }
    let v: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| client.error(&what, format!("not JSON: {e}")))?;
    let media_type = v["mediaType"].as_str().unwrap_or("").to_string();
    if media_type == OCI_INDEX || media_type == DOCKER_LIST || v.get("manifests").is_some() {
        if depth > 0 {
            return Err(client.error(&what, "an index inside an index"));
        }
        let arch = corral_image::import::host_arch().to_string();
        let chosen = v["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["platform"]["os"] == "linux" && m["platform"]["architecture"] == arch.as_str())
            .and_then(|m| m["digest"].as_str())
            .ok_or_else(|| client.error(&what, format!("the index has no linux/{arch} image")))?
            .to_string();
        return fetch_manifest(session, &chosen, depth + 1);
    }
    store.put_blob_expecting(&mut &bytes[..], &actual)?;
    Ok((actual, v))
}

fn pull_blob(session: &Session<'_>, digest: &Digest, size: u64, is_layer: bool) -> Result<(), RegistryError> {
    let Session { store, events, .. } = session;
    if store.has_blob(digest) && store.verify_blob(digest).is_ok() {
        events.blob_skipped(digest, size);
        return Ok(());
    }
    let what = format!("pulling blob {digest}");
    let partial = partial_path(store, digest);
    // Another process (an agent and `corral run` on one machine) may be pulling this blob into
    // the same store: one download at a time, and who waited finds it there.
    let _lock =
        lock(&partial).map_err(|e| session.client.error(&what, format!("locking {}: {e}", partial.display())))?;
    if store.has_blob(digest) && store.verify_blob(digest).is_ok() {
        events.blob_skipped(digest, size);
        return Ok(());
    }
    let mut last_err = None;
    for _ in 0..ATTEMPTS {
        match download(session, digest, size, is_layer, &partial, &what) {
            Ok((actual, unpacked)) => {
                if let Err(e) = store.adopt_blob(&partial, digest, &actual) {
                    let _ = fs::remove_file(&partial);
                    return Err(e.into());
                }
                if is_layer && !unpacked {
                    store.unpacked_layer(digest)?;
                }
                events.blob_done(digest, size);
                return Ok(());
            }
            // A timeout or a dropped connection: try again from where it stopped.
            Err(e @ (RegistryError::Timeout { .. } | RegistryError::Http { .. })) => last_err = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_err.expect("at least one attempt"))
}

/// An exclusive lock beside a partial download (released when the file is dropped).
fn lock(partial: &std::path::Path) -> io::Result<fs::File> {
    if let Some(dir) = partial.parent() {
        fs::create_dir_all(dir)?;
    }
    let f = OpenOptions::new().create(true).truncate(false).write(true).open(partial.with_extension("lock"))?;
    // SAFETY: flock on a descriptor we own; released when it is closed.
    if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&f), libc::LOCK_EX) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(f)
}

/// Where an interrupted download waits to be resumed.
pub fn partial_path(store: &Store, digest: &Digest) -> PathBuf {
    store.images_dir().join("partial").join(digest.hex())
}

/// Downloads (or resumes) a blob into `partial`. Returns the digest of the whole file and
/// whether the layer was also unpacked on the way: a download from the first byte feeds an
/// unpacker thread through a pipe, so unpacking overlaps the transfer, and the bytes are hashed
/// once, here. The partial file is not fsynced: a blob that did not reach the disk before a
/// crash fails verification when next read, and is fetched again.
fn download(
    session: &Session<'_>,
    digest: &Digest,
    size: u64,
    is_layer: bool,
    partial: &PathBuf,
    what: &str,
) -> Result<(Digest, bool), RegistryError> {
    let Session { client, store, target, scope, events } = session;
    let scope = scope.as_str();
    if let Some(dir) = partial.parent() {
        fs::create_dir_all(dir).map_err(|e| client.error(what, e.to_string()))?;
    }
    let have = fs::metadata(partial).map(|m| m.len()).unwrap_or(0);
    let url = client.url(&format!("/v2/{}/blobs/{digest}", target.repository));
    let headers: Vec<(&str, String)> = if have > 0 { vec![("Range", format!("bytes={have}-"))] } else { vec![] };
    let mut resp = client.send(Method::Get, &url, scope, &headers, None, what)?;
    let append = match resp.status() {
        StatusCode::PARTIAL_CONTENT => true,
        StatusCode::OK => false,
        StatusCode::NOT_FOUND => return Err(client.error(what, "the registry does not have this blob")),
        _ => return Err(client.unexpected(what, resp)),
    };
    let mut hasher = Hasher::default();
    if append {
        // Resuming: the digest covers the bytes already here too.
        let mut f = fs::File::open(partial).map_err(|e| client.error(what, e.to_string()))?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).map_err(|e| client.error(what, e.to_string()))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
    }
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(partial)
        .map_err(|e| client.error(what, e.to_string()))?;
    let mut done = if append { have } else { 0 };
    std::thread::scope(|scope_threads| {
        let mut tee = None;
        let mut unpacker = None;
        if is_layer && !append {
            if let Ok((reader, writer)) = std::io::pipe() {
                // A roomy pipe, so the download and the unpacking run side by side instead of
                // taking turns every 64 KiB.
                // SAFETY: fcntl on the pipe's own fd; failure only leaves the default size.
                unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&writer), libc::F_SETPIPE_SZ, 1 << 20) };
                tee = Some(writer);
                unpacker =
                    Some(scope_threads.spawn(move || store.unpack_layer_pending(io::BufReader::new(reader), digest)));
            }
        }
        let mut reader = resp.body_mut().as_reader();
        let mut buf = vec![0u8; 256 * 1024];
        let copied: Result<(), RegistryError> = loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => n,
                Err(e) => break Err(io_to_registry(client, what, e)),
            };
            if let Err(e) = file.write_all(&buf[..n]) {
                break Err(client.error(what, e.to_string()));
            }
            hasher.update(&buf[..n]);
            if let Some(w) = tee.as_mut() {
                // An unpacker that gave up (a corrupt layer) is noticed when it is joined.
                if w.write_all(&buf[..n]).is_err() {
                    tee = None;
                }
            }
            done += n as u64;
            if done > size {
                break Err(
                    client.error(what, format!("the registry sent more than the {size} bytes the manifest promised"))
                );
            }
            events.blob_progress(digest, done, size);
        };
        drop(tee);
        let unpacked = unpacker.map(|h| h.join().expect("the unpacker does not panic"));
        copied?;
        if done < size {
            return Err(RegistryError::Http {
                registry: client.registry().to_string(),
                what: what.to_string(),
                message: format!("the connection ended after {done} of {size} bytes"),
            });
        }
        let actual = hasher.clone().finish();
        let unpacked = match unpacked {
            // The unpacked tree enters the cache only if the bytes hashed right.
            Some(Ok(pending)) if actual == *digest => {
                pending.commit(&actual)?;
                true
            }
            // The bytes were right but the layer is not: report that, not a transfer error.
            Some(Err(e)) if actual == *digest => return Err(e.into()),
            Some(_) | None => false,
        };
        Ok((actual, unpacked))
    })
}

fn io_to_registry(client: &Client, what: &str, e: io::Error) -> RegistryError {
    // ureq reports its timeouts inside io errors while a body is read.
    let text = e.to_string();
    if text.contains("timeout") || text.contains("timed out") || e.kind() == io::ErrorKind::TimedOut {
        RegistryError::Timeout { registry: client.registry().to_string(), what: what.to_string(), detail: text }
    } else {
        RegistryError::Http { registry: client.registry().to_string(), what: what.to_string(), message: text }
    }
}
