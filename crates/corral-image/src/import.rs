//! `corral image import`: a root filesystem (tar, tar.gz or a directory) becomes a one-layer image.

use std::fs;
use std::io;
use std::path::Path;

use flate2::write::GzEncoder;
use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, HistoryBuilder, ImageConfigurationBuilder, ImageManifestBuilder, MediaType, Os,
    RootFsBuilder,
};

use crate::digest::{Digest, DigestWriter};
use crate::layer;
use crate::reference::Reference;
use crate::store::{to_oci, Image, Store, StoreError};

/// The PATH an image gets when nothing else says, as Docker and Podman set it.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("import source {path}: {source}")]
    Source {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("import source {path}: {source}")]
    Layer {
        path: String,
        #[source]
        source: StoreError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Imports `source` as a one-layer image tagged `reference`.
pub fn import(store: &Store, source: &Path, reference: &Reference, now: &str) -> Result<Image, ImportError> {
    let meta =
        fs::metadata(source).map_err(|e| ImportError::Source { path: source.display().to_string(), source: e })?;
    let mut diff_id = None;
    let (layer_digest, layer_size) = store
        .write_blob(|w| {
            let gz = GzEncoder::new(w, flate2::Compression::fast());
            let mut tarred = DigestWriter::new(gz);
            if meta.is_dir() {
                layer::pack_dir(source, &mut tarred)?;
            } else {
                let mut input = layer::open_maybe_gzip(source)?;
                io::copy(&mut input, &mut tarred)?;
            }
            let (d, _, gz) = tarred.finish();
            gz.finish()?.flush()?;
            diff_id = Some(d);
            Ok(())
        })
        .map_err(|e| match e {
            StoreError::Io { source: io_e, .. } => {
                ImportError::Source { path: source.display().to_string(), source: io_e }
            }
            other => ImportError::Store(other),
        })?;
    let diff_id: Digest = diff_id.expect("set by the writer");
    // Unpack now: a hostile or broken archive is refused at import, not at first run.
    if let Err(e) = store.unpacked_layer(&layer_digest) {
        let _ = fs::remove_file(store.blob_path(&layer_digest));
        return Err(ImportError::Layer { path: source.display().to_string(), source: e });
    }
    let created_by = format!("corral image import {}", source.display());
    one_layer_image(store, reference, (layer_digest, layer_size), diff_id, now, &created_by)
}

/// Writes config and manifest for a single gzip layer and tags the result.
fn one_layer_image(
    store: &Store,
    reference: &Reference,
    (layer_digest, layer_size): (Digest, u64),
    diff_id: Digest,
    now: &str,
    created_by: &str,
) -> Result<Image, ImportError> {
    let bad = |e: oci_spec::OciSpecError| StoreError::BadDocument {
        digest: layer_digest.clone(),
        what: "an image config",
        reason: e.to_string(),
    };
    let config = ImageConfigurationBuilder::default()
        .created(now.to_string())
        .architecture(host_arch())
        .os(Os::Linux)
        .config(ConfigBuilder::default().env(vec![DEFAULT_PATH.to_string()]).build().map_err(bad)?)
        .rootfs(RootFsBuilder::default().typ("layers").diff_ids(vec![diff_id.to_string()]).build().map_err(bad)?)
        .history(vec![HistoryBuilder::default()
            .created(now.to_string())
            .created_by(created_by.to_string())
            .build()
            .map_err(bad)?])
        .build()
        .map_err(bad)?;
    let config_json = config.to_string().map_err(bad)?;
    let (config_digest, config_size) = store.put_blob_bytes(config_json.as_bytes())?;
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(Descriptor::new(MediaType::ImageConfig, config_size, to_oci(&config_digest)))
        .layers(vec![Descriptor::new(MediaType::ImageLayerGzip, layer_size, to_oci(&layer_digest))])
        .build()
        .map_err(bad)?;
    let manifest_json = manifest.to_string().map_err(bad)?;
    let (manifest_digest, _) = store.put_blob_bytes(manifest_json.as_bytes())?;
    store.tag(reference, &manifest_digest)?;
    Ok(store.image(&manifest_digest)?)
}

fn host_arch() -> Arch {
    match std::env::consts::ARCH {
        "aarch64" => Arch::ARM64,
        "arm" => Arch::ARM,
        "riscv64" => Arch::RISCV64,
        "powerpc64" => Arch::PowerPC64le,
        "s390x" => Arch::s390x,
        _ => Arch::Amd64,
    }
}
