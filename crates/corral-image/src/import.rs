//! `corral image import`: a root filesystem (tar, tar.gz or a directory) becomes a one-layer image.

use std::fs;
use std::io;
use std::path::Path;

use oci_spec::image::{Arch, ConfigBuilder, HistoryBuilder, ImageConfigurationBuilder, Os, RootFsBuilder};

use crate::layer;
use crate::reference::Reference;
use crate::store::{Image, LayerBlob, Store, StoreError};

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
    let layer = store
        .write_layer(|w| {
            if meta.is_dir() {
                layer::pack_dir(source, w).map(drop)
            } else {
                let mut input = layer::open_maybe_gzip(source)?;
                io::copy(&mut input, w).map(drop)
            }
        })
        .map_err(|e| match e {
            StoreError::Io { source: io_e, .. } => {
                ImportError::Source { path: source.display().to_string(), source: io_e }
            }
            other => ImportError::Store(other),
        })?;
    // Unpack now: a hostile or broken archive is refused at import, not at first run.
    if let Err(e) = store.unpacked_layer(&layer.digest) {
        let _ = fs::remove_file(store.blob_path(&layer.digest));
        return Err(ImportError::Layer { path: source.display().to_string(), source: e });
    }
    let created_by = format!("corral image import {}", source.display());
    one_layer_image(store, reference, layer, now, &created_by)
}

/// Writes config and manifest for a single gzip layer and tags the result.
fn one_layer_image(
    store: &Store,
    reference: &Reference,
    layer: LayerBlob,
    now: &str,
    created_by: &str,
) -> Result<Image, ImportError> {
    let bad = |e: oci_spec::OciSpecError| StoreError::BadDocument {
        digest: layer.digest.clone(),
        what: "an image config",
        reason: e.to_string(),
    };
    let config = ImageConfigurationBuilder::default()
        .created(now.to_string())
        .architecture(host_arch())
        .os(Os::Linux)
        .config(ConfigBuilder::default().env(vec![DEFAULT_PATH.to_string()]).build().map_err(bad)?)
        .rootfs(RootFsBuilder::default().typ("layers").diff_ids(vec![layer.diff_id.to_string()]).build().map_err(bad)?)
        .history(vec![HistoryBuilder::default()
            .created(now.to_string())
            .created_by(created_by.to_string())
            .build()
            .map_err(bad)?])
        .build()
        .map_err(bad)?;
    let manifest_digest = store.put_image(&config, &[layer])?;
    store.tag(reference, &manifest_digest)?;
    Ok(store.image(&manifest_digest)?)
}

/// The architecture of this machine, as OCI names it.
pub fn host_arch() -> Arch {
    match std::env::consts::ARCH {
        "aarch64" => Arch::ARM64,
        "arm" => Arch::ARM,
        "riscv64" => Arch::RISCV64,
        "powerpc64" => Arch::PowerPC64le,
        "s390x" => Arch::s390x,
        _ => Arch::Amd64,
    }
}
