//! Exporting images as standalone OCI image layouts, and loading them back, so any OCI tool
//! (skopeo, umoci, ...) can read what corral builds and corral can run what they write.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use oci_spec::image::{Descriptor, ImageIndex, ImageIndexBuilder, MediaType};

use crate::digest::Digest;
use crate::reference::Reference;
use crate::store::{to_oci, Image, Store, StoreError, REF_NAME_ANNOTATION};

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("{path} is not empty: export needs a new or empty directory")]
    NotEmpty { path: PathBuf },
    #[error("{path} is not an OCI image layout: {reason}")]
    NotALayout { path: PathBuf, reason: String },
    #[error("the layout names its image {name:?}, which is only a tag: give NAME:TAG")]
    NeedsName { name: String },
    #[error("image {image}: {why}")]
    TooLarge { image: String, why: String },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> LayoutError {
    let path = path.to_path_buf();
    move |source| LayoutError::Io { action, path, source }
}

/// Writes `reference` and its blobs as an OCI image layout in `dir`, tagged with its tag (so
/// `skopeo inspect oci:DIR:TAG` finds it).
pub fn export(store: &Store, reference: &Reference, dir: &Path) -> Result<Image, LayoutError> {
    if dir.exists() && fs::read_dir(dir).map_err(io_err("reading", dir))?.next().is_some() {
        return Err(LayoutError::NotEmpty { path: dir.to_path_buf() });
    }
    let image = store.resolve(reference)?;
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).map_err(io_err("creating", &blobs))?;
    let mut digests = vec![image.manifest_digest.clone(), image.config_digest.clone()];
    digests.extend(image.layers()?);
    for d in &digests {
        store.verify_blob(d)?;
        let src = store.blob_path(d);
        let dst = blobs.join(d.hex());
        if fs::hard_link(&src, &dst).is_err() {
            fs::copy(&src, &dst).map_err(io_err("copying", &dst))?;
        }
    }
    let manifest_size = fs::metadata(store.blob_path(&image.manifest_digest)).map_err(io_err("reading", dir))?.len();
    let mut desc = Descriptor::new(MediaType::ImageManifest, manifest_size, to_oci(&image.manifest_digest));
    desc.set_annotations(Some([(REF_NAME_ANNOTATION.to_string(), reference.tag().to_string())].into_iter().collect()));
    let index: ImageIndex = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![desc])
        .build()
        .expect("a complete index");
    let text =
        index.to_string().map_err(|e| LayoutError::NotALayout { path: dir.to_path_buf(), reason: e.to_string() })?;
    fs::write(dir.join("index.json"), text).map_err(io_err("writing", dir))?;
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).map_err(io_err("writing", dir))?;
    Ok(image)
}

/// Loads every image of the layout in `dir` into the store, verifying each blob, and tags it
/// `name` (or the layout's own `org.opencontainers.image.ref.name` when that is a full
/// reference). Returns the loaded images with their tags.
pub fn load(store: &Store, dir: &Path, name: Option<&Reference>) -> Result<Vec<(Reference, Image)>, LayoutError> {
    let not_layout = |reason: String| LayoutError::NotALayout { path: dir.to_path_buf(), reason };
    let index_bytes = fs::read(dir.join("index.json")).map_err(|e| not_layout(format!("index.json: {e}")))?;
    let index =
        serde_json::from_slice::<ImageIndex>(&index_bytes).map_err(|e| not_layout(format!("index.json: {e}")))?;
    if index.manifests().is_empty() {
        return Err(not_layout("index.json lists no images".into()));
    }
    let mut out = Vec::new();
    for desc in index.manifests() {
        if *desc.media_type() != MediaType::ImageManifest {
            return Err(not_layout(format!("{} is a {}, not an image manifest", desc.digest(), desc.media_type())));
        }
        let reference = match (name, desc.annotations().as_ref().and_then(|a| a.get(REF_NAME_ANNOTATION))) {
            (Some(n), _) => n.clone(),
            (None, Some(ann)) if ann.contains(':') || ann.contains('/') => {
                ann.parse().map_err(|e: crate::reference::ParseReferenceError| not_layout(e.to_string()))?
            }
            (None, Some(ann)) => return Err(LayoutError::NeedsName { name: ann.clone() }),
            (None, None) => return Err(LayoutError::NeedsName { name: String::new() }),
        };
        let manifest_digest = Digest::from_str(desc.digest().as_ref()).map_err(|e| not_layout(e.to_string()))?;
        let copy = |d: &Digest| -> Result<(), LayoutError> {
            if store.has_blob(d) && store.verify_blob(d).is_ok() {
                return Ok(());
            }
            let path = dir.join("blobs/sha256").join(d.hex());
            let mut f = fs::File::open(&path).map_err(|e| not_layout(format!("blob {d}: {e}")))?;
            store.put_blob_expecting(&mut f, d)?;
            Ok(())
        };
        copy(&manifest_digest)?;
        let manifest_bytes = store.read_blob(&manifest_digest)?;
        let manifest = serde_json::from_slice::<oci_spec::image::ImageManifest>(&manifest_bytes)
            .map_err(|e| not_layout(format!("manifest {manifest_digest}: {e}")))?;
        let limits = crate::layer::ImageLimits::from_env();
        let too_large = |why: String| LayoutError::TooLarge { image: reference.to_string(), why };
        let sizes: Vec<u64> = manifest.layers().iter().map(|l| l.size()).collect();
        limits.check_declared(&sizes).map_err(too_large)?;
        copy(&Digest::from_str(manifest.config().digest().as_ref()).map_err(|e| not_layout(e.to_string()))?)?;
        let mut unpacked = 0u64;
        for l in manifest.layers() {
            let d = Digest::from_str(l.digest().as_ref()).map_err(|e| not_layout(e.to_string()))?;
            copy(&d)?;
            // Unpack now: a hostile layer is refused at load, not at first run.
            let dir = store.unpacked_layer(&d)?;
            unpacked = unpacked.saturating_add(crate::layer::content_bytes(&dir, limits.max_bytes, &|_| true));
            limits.check_unpacked(unpacked).map_err(too_large)?;
        }
        let image = store.image(&manifest_digest)?;
        store.tag(&reference, &manifest_digest)?;
        out.push((reference, image));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layout_with_a_hostile_digest_says_which_and_where() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        fs::write(
            dir.path().join("index.json"),
            r#"{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:../../../etc/passwd","size":10}]}"#,
        )
        .unwrap();
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let e = load(&store, dir.path(), None).unwrap_err().to_string();
        assert!(e.contains("index.json: ") && e.contains("../../../etc/passwd") && e.contains("line 1"), "{e}");
        assert!(!e.contains("serde failed"), "{e}");
    }
}
