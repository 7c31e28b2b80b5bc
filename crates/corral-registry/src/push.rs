//! `corral push`: blobs first (skipping those the registry has), then the manifest.

use std::path::Path;

use corral_image::{Digest, Reference, Store};
use ureq::http::StatusCode;

use crate::client::{encode, Client, ClientConfig, Method, Payload, RegistryError};
use crate::target::Target;
use crate::{for_each_parallel, Events, Session};

/// Blobs larger than this go up in chunks of this size (PATCH), smaller ones in one PUT.
pub const CHUNK: u64 = 8 << 20;

/// Pushes local image `local` to `target`; returns the manifest digest.
pub fn push(
    store: &Store,
    local: &Reference,
    target: &Target,
    config: ClientConfig,
    events: &dyn Events,
) -> Result<Digest, RegistryError> {
    let image = store.resolve(local)?;
    let session = Session {
        client: Client::new(&target.registry, config),
        store,
        target,
        scope: format!("repository:{}:pull,push", target.repository),
        events,
    };
    let mut blobs: Vec<(Digest, u64)> = vec![(image.config_digest.clone(), image.manifest.config().size())];
    for (d, desc) in image.layers()?.into_iter().zip(image.manifest.layers()) {
        blobs.push((d, desc.size()));
    }
    for_each_parallel(&blobs, |(d, size)| push_blob(&session, d, *size))?;
    let (client, scope) = (&session.client, &session.scope);

    let manifest = store.read_blob(&image.manifest_digest)?;
    let media_type = image
        .manifest
        .media_type()
        .as_ref()
        .map(|m| m.to_string())
        .unwrap_or_else(|| "application/vnd.oci.image.manifest.v1+json".to_string());
    let what = format!("putting manifest {}", target);
    let url = client.url(&format!("/v2/{}/manifests/{}", target.repository, target.tag));
    let resp = client.send(
        Method::Put,
        &url,
        scope,
        &[("Content-Type", media_type)],
        Some(&Payload::Bytes(&manifest)),
        &what,
    )?;
    if !resp.status().is_success() {
        return Err(client.unexpected(&what, resp));
    }
    if let Some(d) = resp.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()) {
        if d != image.manifest_digest.to_string() {
            return Err(client.error(&what, format!("the registry stored it as {d}, not {}", image.manifest_digest)));
        }
    }
    Ok(image.manifest_digest)
}

fn push_blob(session: &Session<'_>, digest: &Digest, size: u64) -> Result<(), RegistryError> {
    let Session { client, store, target, scope, events, .. } = session;
    let scope = scope.as_str();
    let what = format!("pushing blob {digest}");
    let repo = &target.repository;
    let head =
        client.send(Method::Head, &client.url(&format!("/v2/{repo}/blobs/{digest}")), scope, &[], None, &what)?;
    if head.status() == StatusCode::OK {
        events.blob_skipped(digest, size);
        return Ok(());
    }
    let path = store.blob_path(digest);
    store.verify_blob(digest)?;
    let start =
        client.send(Method::Post, &client.url(&format!("/v2/{repo}/blobs/uploads/")), scope, &[], None, &what)?;
    if start.status() != StatusCode::ACCEPTED {
        return Err(client.unexpected(&what, start));
    }
    let mut location = location(client, &start, &what)?;
    if size > CHUNK {
        let mut offset = 0;
        while offset < size {
            let len = CHUNK.min(size - offset);
            let headers = [
                ("Content-Type", "application/octet-stream".to_string()),
                ("Content-Range", format!("{}-{}", offset, offset + len - 1)),
            ];
            let body = Payload::File { path: &path, offset, len };
            let resp = client.send(Method::Patch, &client.url(&location), scope, &headers, Some(&body), &what)?;
            if resp.status() != StatusCode::ACCEPTED {
                return Err(client.unexpected(&what, resp));
            }
            location = self::location(client, &resp, &what)?;
            offset += len;
            events.blob_progress(digest, offset, size);
        }
        let url = with_digest(&client.url(&location), digest);
        let resp = client.send(Method::Put, &url, scope, &[], Some(&Payload::Bytes(&[])), &what)?;
        if resp.status() != StatusCode::CREATED {
            return Err(client.unexpected(&what, resp));
        }
    } else {
        let url = with_digest(&client.url(&location), digest);
        let headers = [("Content-Type", "application/octet-stream".to_string())];
        let body = Payload::File { path: Path::new(&path), offset: 0, len: size };
        let resp = client.send(Method::Put, &url, scope, &headers, Some(&body), &what)?;
        if resp.status() != StatusCode::CREATED {
            return Err(client.unexpected(&what, resp));
        }
    }
    events.blob_done(digest, size);
    Ok(())
}

fn location(client: &Client, resp: &crate::client::HttpResponse, what: &str) -> Result<String, RegistryError> {
    resp.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(String::from)
        .ok_or_else(|| client.error(what, "the upload response has no Location"))
}

fn with_digest(url: &str, digest: &Digest) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}digest={}", encode(&digest.to_string()))
}
