//! The content-addressed store: an OCI image layout under `<root>/images` (so it can be read by
//! any OCI tool as it is), plus a cache of unpacked layers under `<root>/layers`.
//!
//! Blobs are verified against their digest when written and when read; a blob whose bytes do not
//! match its name is reported as corrupt and never used. Tags live in `index.json` as the
//! `org.opencontainers.image.ref.name` annotation, holding the full `name:tag`.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageIndexBuilder, ImageManifest, MediaType};

use crate::digest::{Digest, DigestReader, DigestWriter};
use crate::layer::{self, LayerError};
use crate::reference::Reference;

pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unknown image {0:?}")]
    UnknownImage(String),
    #[error("blob {digest} is missing from the store")]
    MissingBlob { digest: Digest },
    #[error("blob {digest} is corrupt: its content hashes to {actual}")]
    CorruptBlob { digest: Digest, actual: Digest },
    #[error("blob {digest} is not valid {what}: {reason}")]
    BadDocument { digest: Digest, what: &'static str, reason: String },
    #[error("unpacking layer {digest}: {source}")]
    Layer {
        digest: Digest,
        #[source]
        source: LayerError,
    },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io { action, path, source }
}

/// An image resolved from the store: its manifest and config, verified.
#[derive(Debug, Clone)]
pub struct Image {
    pub manifest_digest: Digest,
    pub manifest: ImageManifest,
    pub config_digest: Digest,
    pub config: ImageConfiguration,
}

impl Image {
    /// The layer blob digests, bottom first.
    pub fn layers(&self) -> Result<Vec<Digest>, StoreError> {
        self.manifest.layers().iter().map(|d| oci_digest(d, &self.manifest_digest)).collect()
    }

    /// The image id, as `docker images` shows it: the config digest.
    pub fn id(&self) -> &Digest {
        &self.config_digest
    }
}

/// A stored layer: the digest and size of its compressed blob, and the digest of its tar
/// (the config's `diff_id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerBlob {
    pub digest: Digest,
    pub size: u64,
    pub diff_id: Digest,
}

/// One tag in the store.
#[derive(Debug, Clone)]
pub struct TagEntry {
    pub name: String,
    pub manifest: Digest,
    pub size: u64,
}

#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the store under `state_root`.
    pub fn open(state_root: &Path) -> Result<Store, StoreError> {
        let store = Store { root: state_root.to_path_buf() };
        for dir in [store.blobs_dir(), store.layers_dir(), store.tmp_dir()] {
            fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
        }
        // Closed to other users: unpacked layers keep their setuid bits and world-writable
        // directories, which must work inside containers only, never for a host user who
        // walks in by path.
        for dir in [store.images_dir(), store.root.join("layers"), store.tmp_dir()] {
            close_to_others(&dir)?;
        }
        let layout = store.images_dir().join("oci-layout");
        if !layout.exists() {
            write_atomic(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        let index = store.index_path();
        if !index.exists() {
            write_atomic(&index, empty_index().to_string().map_err(|e| bad_index(e.to_string()))?.as_bytes())?;
        }
        Ok(store)
    }

    pub fn images_dir(&self) -> PathBuf {
        self.root.join("images")
    }

    fn blobs_dir(&self) -> PathBuf {
        self.images_dir().join("blobs/sha256")
    }

    fn layers_dir(&self) -> PathBuf {
        self.root.join("layers/sha256")
    }

    fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    fn index_path(&self) -> PathBuf {
        self.images_dir().join("index.json")
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs_dir().join(digest.hex())
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Lets `produce` write a blob and stores it under the digest of what it wrote.
    pub fn write_blob(
        &self,
        produce: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> Result<(Digest, u64), StoreError> {
        self.write_blob_checked(produce, None)
    }

    /// Stores a gzip-compressed layer from the uncompressed tar stream `produce` writes.
    pub fn write_layer(&self, produce: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> Result<LayerBlob, StoreError> {
        let mut diff_id = None;
        let (digest, size) = self.write_blob(|w| {
            let gz = flate2::write::GzEncoder::new(w, flate2::Compression::fast());
            let mut tarred = DigestWriter::new(gz);
            produce(&mut tarred)?;
            let (d, _, gz) = tarred.finish();
            gz.finish()?.flush()?;
            diff_id = Some(d);
            Ok(())
        })?;
        Ok(LayerBlob { digest, size, diff_id: diff_id.expect("set by the writer") })
    }

    /// Writes `config` and a manifest over `layers` (bottom first); returns the manifest digest.
    pub fn put_image(&self, config: &ImageConfiguration, layers: &[LayerBlob]) -> Result<Digest, StoreError> {
        let bad = |e: oci_spec::OciSpecError| StoreError::BadDocument {
            digest: Digest::of(b""),
            what: "a new image",
            reason: e.to_string(),
        };
        let config_json = config.to_string().map_err(bad)?;
        let (config_digest, config_size) = self.put_blob_bytes(config_json.as_bytes())?;
        let manifest = oci_spec::image::ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(Descriptor::new(MediaType::ImageConfig, config_size, to_oci(&config_digest)))
            .layers(
                layers
                    .iter()
                    .map(|l| Descriptor::new(MediaType::ImageLayerGzip, l.size, to_oci(&l.digest)))
                    .collect::<Vec<_>>(),
            )
            .build()
            .map_err(bad)?;
        let manifest_json = manifest.to_string().map_err(bad)?;
        Ok(self.put_blob_bytes(manifest_json.as_bytes())?.0)
    }

    /// Streams `content` into the store and returns its digest and size.
    pub fn put_blob(&self, content: &mut dyn Read) -> Result<(Digest, u64), StoreError> {
        self.write_blob(|w| io::copy(content, w).map(drop))
    }

    /// Stores `content`, which must hash to `expected`; anything else is rejected as corrupt.
    pub fn put_blob_expecting(&self, content: &mut dyn Read, expected: &Digest) -> Result<u64, StoreError> {
        self.write_blob_checked(|w| io::copy(content, w).map(drop), Some(expected)).map(|(_, n)| n)
    }

    fn write_blob_checked(
        &self,
        produce: impl FnOnce(&mut dyn Write) -> io::Result<()>,
        expected: Option<&Digest>,
    ) -> Result<(Digest, u64), StoreError> {
        let tmp = self.tmp_file()?;
        let tmp_path = tmp.path.clone();
        let file = tmp.file.try_clone().map_err(io_err("writing", &tmp_path))?;
        let mut w = DigestWriter::new(io::BufWriter::new(file));
        produce(&mut w).map_err(io_err("writing", &tmp_path))?;
        let (digest, size, buf) = w.finish();
        buf.into_inner().map_err(|e| e.into_error()).map_err(io_err("writing", &tmp_path))?;
        if let Some(expected) = expected.filter(|e| **e != digest) {
            return Err(StoreError::CorruptBlob { digest: expected.clone(), actual: digest });
        }
        tmp.commit(&self.blob_path(&digest))?;
        Ok((digest, size))
    }

    /// Moves the file at `path` (on the store's filesystem) into the store as blob `expected`.
    /// `actual` is the digest the caller computed while writing it; a mismatch is refused.
    pub fn adopt_blob(&self, path: &Path, expected: &Digest, actual: &Digest) -> Result<(), StoreError> {
        if actual != expected {
            return Err(StoreError::CorruptBlob { digest: expected.clone(), actual: actual.clone() });
        }
        fs::rename(path, self.blob_path(expected)).map_err(io_err("renaming", path))
    }

    pub fn put_blob_bytes(&self, bytes: &[u8]) -> Result<(Digest, u64), StoreError> {
        self.put_blob(&mut &bytes[..])
    }

    /// Reads a whole blob, verifying its digest.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        let path = self.blob_path(digest);
        let bytes = fs::read(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::MissingBlob { digest: digest.clone() },
            _ => StoreError::Io { action: "reading", path: path.clone(), source: e },
        })?;
        let actual = Digest::of(&bytes);
        if &actual != digest {
            return Err(StoreError::CorruptBlob { digest: digest.clone(), actual });
        }
        Ok(bytes)
    }

    /// Checks a blob's digest by streaming it.
    pub fn verify_blob(&self, digest: &Digest) -> Result<u64, StoreError> {
        let path = self.blob_path(digest);
        let f = File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::MissingBlob { digest: digest.clone() },
            _ => StoreError::Io { action: "reading", path: path.clone(), source: e },
        })?;
        let mut r = DigestReader::new(io::BufReader::new(f));
        io::copy(&mut r, &mut io::sink()).map_err(io_err("reading", &path))?;
        let (actual, size) = r.finish();
        if &actual != digest {
            return Err(StoreError::CorruptBlob { digest: digest.clone(), actual });
        }
        Ok(size)
    }

    /// Resolves a reference to a verified image.
    pub fn resolve(&self, reference: &Reference) -> Result<Image, StoreError> {
        let manifest_digest = match reference.digest() {
            Some(d) if self.has_blob(d) => d.clone(),
            Some(_) => return Err(StoreError::UnknownImage(reference.to_string())),
            None => self
                .tags()?
                .into_iter()
                .find(|t| t.name == reference.tagged())
                .map(|t| t.manifest)
                .ok_or_else(|| StoreError::UnknownImage(reference.tagged()))?,
        };
        self.image(&manifest_digest)
    }

    /// Loads the image whose manifest has this digest.
    pub fn image(&self, manifest_digest: &Digest) -> Result<Image, StoreError> {
        let manifest_bytes = self.read_blob(manifest_digest)?;
        let manifest =
            serde_json::from_slice::<ImageManifest>(&manifest_bytes).map_err(|e| StoreError::BadDocument {
                digest: manifest_digest.clone(),
                what: "an image manifest",
                reason: e.to_string(),
            })?;
        let config_digest = oci_digest(manifest.config(), manifest_digest)?;
        let config_bytes = self.read_blob(&config_digest)?;
        let config = serde_json::from_slice::<ImageConfiguration>(&config_bytes).map_err(|e| {
            StoreError::BadDocument { digest: config_digest.clone(), what: "an image config", reason: e.to_string() }
        })?;
        Ok(Image { manifest_digest: manifest_digest.clone(), manifest, config_digest, config })
    }

    /// Every tag, sorted by name.
    pub fn tags(&self) -> Result<Vec<TagEntry>, StoreError> {
        let index = self.read_index()?;
        let mut out = Vec::new();
        for m in index.manifests() {
            let Some(name) = m.annotations().as_ref().and_then(|a| a.get(REF_NAME_ANNOTATION)) else {
                continue;
            };
            let digest = Digest::from_str(m.digest().as_ref()).map_err(|e| bad_index(e.to_string()))?;
            out.push(TagEntry { name: name.clone(), manifest: digest, size: m.size() });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Notes that a container was made from the image with this manifest now (for removing the
    /// least recently used images first). Best effort: a store that cannot note it still works.
    pub fn mark_used(&self, manifest: &Digest) {
        let dir = self.images_dir().join("used");
        let _ = fs::create_dir_all(&dir).and_then(|_| fs::write(dir.join(manifest.hex()), b""));
    }

    /// When a container was last made from the image (when it arrived, if never).
    pub fn last_used(&self, manifest: &Digest) -> Option<std::time::SystemTime> {
        let used = self.images_dir().join("used").join(manifest.hex());
        fs::metadata(&used).or_else(|_| fs::metadata(self.blob_path(manifest))).and_then(|m| m.modified()).ok()
    }

    /// Points `reference` at the manifest with this digest, replacing any earlier target.
    pub fn tag(&self, reference: &Reference, manifest: &Digest) -> Result<(), StoreError> {
        let size = self.verify_blob(manifest)?;
        let name = reference.tagged();
        self.update_index(|entries| {
            entries.insert(name.clone(), (manifest.clone(), size));
        })
    }

    /// Removes a tag, then every blob and unpacked layer no tag still needs (except the layers
    /// listed in `in_use`, which running containers hold). Returns the removed blob count.
    pub fn remove(&self, reference: &Reference, in_use: &HashSet<Digest>) -> Result<usize, StoreError> {
        let name = reference.tagged();
        let mut found = false;
        self.update_index(|entries| found = entries.remove(&name).is_some())?;
        if !found {
            return Err(StoreError::UnknownImage(name));
        }
        self.gc(in_use)
    }

    /// Deletes blobs unreachable from any tag and unpacked layers nobody uses.
    pub fn gc(&self, in_use: &HashSet<Digest>) -> Result<usize, StoreError> {
        let _lock = self.lock_index()?;
        let mut keep: HashSet<Digest> = in_use.clone();
        for t in self.tags()? {
            keep.insert(t.manifest.clone());
            if let Ok(img) = self.image(&t.manifest) {
                keep.insert(img.config_digest.clone());
                keep.extend(img.layers()?);
            }
        }
        let mut removed = 0;
        for dir in [self.blobs_dir(), self.layers_dir()] {
            for entry in fs::read_dir(&dir).map_err(io_err("listing", &dir))? {
                let entry = entry.map_err(io_err("listing", &dir))?;
                let name = entry.file_name();
                let Ok(d) = Digest::from_str(&format!("sha256:{}", name.to_string_lossy())) else {
                    continue;
                };
                if keep.contains(&d) {
                    continue;
                }
                let path = entry.path();
                if path.is_dir() {
                    fs::remove_dir_all(&path).map_err(io_err("removing", &path))?;
                } else {
                    fs::remove_file(&path).map_err(io_err("removing", &path))?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    /// Whether layer `digest` is unpacked in the cache.
    pub fn has_layer(&self, digest: &Digest) -> bool {
        self.layers_dir().join(digest.hex()).is_dir()
    }

    /// Drops layer `digest`, unpacked and as a blob: a layer just pulled for an image that was
    /// then refused. Best effort; `gc` collects what is left.
    pub fn forget_layer(&self, digest: &Digest) {
        let _ = fs::remove_dir_all(self.layers_dir().join(digest.hex()));
        let _ = fs::remove_file(self.blob_path(digest));
    }

    /// The directory holding the unpacked content of layer `digest`, unpacking it first if this is
    /// its first use. Unpacked layers are shared by every container that uses them, read-only.
    pub fn unpacked_layer(&self, digest: &Digest) -> Result<PathBuf, StoreError> {
        let dir = self.layers_dir().join(digest.hex());
        if dir.is_dir() {
            return Ok(dir);
        }
        let path = self.blob_path(digest);
        let f = File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::MissingBlob { digest: digest.clone() },
            _ => StoreError::Io { action: "reading", path: path.clone(), source: e },
        })?;
        self.unpack_layer_stream(io::BufReader::new(f), digest)
    }

    /// Unpacks the layer blob read from `compressed` (gzip or plain tar) into the layer cache,
    /// checking that what was read hashes to `digest`; nothing is cached otherwise.
    pub fn unpack_layer_stream(&self, compressed: impl Read, digest: &Digest) -> Result<PathBuf, StoreError> {
        let mut hashed = DigestReader::new(compressed);
        let pending = self.unpack_layer_pending(&mut hashed, digest)?;
        let (actual, _) = hashed.finish();
        pending.commit(&actual)
    }

    /// Unpacks a layer into a temporary directory that enters the cache only when
    /// `PendingLayer::commit` is given the blob's verified digest. Lets a pull unpack a layer
    /// while it downloads, and hash the bytes once.
    pub fn unpack_layer_pending(&self, compressed: impl Read, digest: &Digest) -> Result<PendingLayer, StoreError> {
        let tmp = self.tmp_dir().join(format!("layer-{}-{}-{:x}", digest.short(), std::process::id(), rand_u64()));
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir(&tmp).map_err(io_err("creating", &tmp))?;
        let pending =
            PendingLayer { tmp, dir: self.layers_dir().join(digest.hex()), digest: digest.clone(), done: false };
        let mut compressed = compressed;
        let decoded = layer::gunzip_if_gzip(&mut compressed).map_err(io_err("reading", &pending.tmp))?;
        layer::unpack(decoded, &pending.tmp).map_err(|source| StoreError::Layer { digest: digest.clone(), source })?;
        // Read what follows the archive too: the digest covers every byte.
        io::copy(&mut compressed, &mut io::sink()).map_err(io_err("reading", &pending.tmp))?;
        Ok(pending)
    }

    fn read_index(&self) -> Result<ImageIndex, StoreError> {
        let path = self.index_path();
        let bytes = fs::read(&path).map_err(io_err("reading", &path))?;
        serde_json::from_slice::<ImageIndex>(&bytes).map_err(|e| bad_index(e.to_string()))
    }

    fn update_index(&self, change: impl FnOnce(&mut BTreeMap<String, (Digest, u64)>)) -> Result<(), StoreError> {
        let _lock = self.lock_index()?;
        let mut index = self.read_index()?;
        let mut untagged = Vec::new();
        let mut entries = BTreeMap::new();
        for m in index.manifests() {
            match m.annotations().as_ref().and_then(|a| a.get(REF_NAME_ANNOTATION)) {
                Some(name) => {
                    let d = Digest::from_str(m.digest().as_ref()).map_err(|e| bad_index(e.to_string()))?;
                    entries.insert(name.clone(), (d, m.size()));
                }
                None => untagged.push(m.clone()),
            }
        }
        change(&mut entries);
        let mut manifests = untagged;
        for (name, (digest, size)) in entries {
            let mut d = Descriptor::new(MediaType::ImageManifest, size, to_oci(&digest));
            d.set_annotations(Some([(REF_NAME_ANNOTATION.to_string(), name)].into_iter().collect()));
            manifests.push(d);
        }
        index.set_manifests(manifests);
        let text = index.to_string().map_err(|e| bad_index(e.to_string()))?;
        write_atomic(&self.index_path(), text.as_bytes())
    }

    fn lock_index(&self) -> Result<File, StoreError> {
        let path = self.images_dir().join("index.lock");
        let f =
            File::options().create(true).truncate(false).write(true).open(&path).map_err(io_err("opening", &path))?;
        // SAFETY: flock on a file descriptor we own; released when the file is closed.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(StoreError::Io { action: "locking", path, source: io::Error::last_os_error() });
        }
        Ok(f)
    }

    fn tmp_file(&self) -> Result<TmpFile, StoreError> {
        let path = self.tmp_dir().join(format!("blob-{}-{:016x}", std::process::id(), rand_u64()));
        let file = File::options().create_new(true).write(true).open(&path).map_err(io_err("creating", &path))?;
        Ok(TmpFile { path, file })
    }
}

/// An unpacked layer waiting for its blob's digest to be confirmed. Dropped uncommitted, it is
/// removed.
#[derive(Debug)]
pub struct PendingLayer {
    tmp: PathBuf,
    dir: PathBuf,
    digest: Digest,
    done: bool,
}

impl PendingLayer {
    /// Moves the layer into the cache if `actual` (the digest of the bytes it was unpacked
    /// from) is the layer's.
    pub fn commit(mut self, actual: &Digest) -> Result<PathBuf, StoreError> {
        if actual != &self.digest {
            return Err(StoreError::CorruptBlob { digest: self.digest.clone(), actual: actual.clone() });
        }
        self.done = true;
        match fs::rename(&self.tmp, &self.dir) {
            Ok(()) => Ok(self.dir.clone()),
            // Another process unpacked it first: use theirs.
            Err(_) if self.dir.is_dir() => {
                let _ = fs::remove_dir_all(&self.tmp);
                Ok(self.dir.clone())
            }
            Err(e) => Err(StoreError::Io { action: "renaming", path: self.tmp.clone(), source: e }),
        }
    }
}

impl Drop for PendingLayer {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_dir_all(&self.tmp);
        }
    }
}

struct TmpFile {
    path: PathBuf,
    file: File,
}

impl TmpFile {
    fn commit(self, dest: &Path) -> Result<(), StoreError> {
        self.file.sync_all().map_err(io_err("syncing", &self.path))?;
        fs::rename(&self.path, dest).map_err(io_err("renaming", &self.path))
    }
}

impl Drop for TmpFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

/// Writes `bytes` to `path` through a temporary file and a rename, so readers see old or new.
/// Makes a directory of ours reachable by its owner only (0700), if it is not already.
pub fn close_to_others(dir: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(dir).map_err(io_err("reading", dir))?.permissions().mode();
    if mode & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err("closing", dir))?;
    }
    Ok(())
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    // Unique per process and per call: two threads opening a fresh store at once each write
    // their own file and rename it into place.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
    let mut f = File::create(&tmp).map_err(io_err("creating", &tmp))?;
    f.write_all(bytes).map_err(io_err("writing", &tmp))?;
    f.sync_all().map_err(io_err("syncing", &tmp))?;
    fs::rename(&tmp, path).map_err(io_err("renaming", &tmp))
}

fn empty_index() -> ImageIndex {
    ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(Vec::<Descriptor>::new())
        .build()
        .expect("an empty index is valid")
}

fn bad_index(reason: String) -> StoreError {
    StoreError::BadDocument { digest: Digest::of(b""), what: "an image index (index.json)", reason }
}

/// Our digest from a descriptor's, naming the document that held it on error.
fn oci_digest(d: &Descriptor, holder: &Digest) -> Result<Digest, StoreError> {
    Digest::from_str(d.digest().as_ref()).map_err(|e| StoreError::BadDocument {
        digest: holder.clone(),
        what: "an image manifest",
        reason: e.to_string(),
    })
}

pub fn to_oci(d: &Digest) -> oci_spec::image::Digest {
    oci_spec::image::Digest::from_str(&d.to_string()).expect("our digests are valid sha256 digests")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::open(tmp.path()).unwrap();
        (tmp, s)
    }

    fn import_tree(s: &Store, tag: &str) -> Image {
        let src = tempfile::tempdir().unwrap();
        fs::create_dir_all(src.path().join("etc")).unwrap();
        fs::write(src.path().join("etc/hostname"), tag).unwrap();
        crate::import::import(s, src.path(), &tag.parse().unwrap(), "2026-01-01T00:00:00Z").unwrap()
    }

    #[test]
    fn a_fresh_store_opened_by_many_threads_at_once_opens_for_each() {
        for _ in 0..20 {
            let tmp = tempfile::tempdir().unwrap();
            std::thread::scope(|scope| {
                for _ in 0..8 {
                    scope.spawn(|| Store::open(tmp.path()).unwrap());
                }
            });
        }
    }

    #[test]
    fn corrupt_blobs_are_reported_not_used() {
        let (_tmp, s) = store();
        let (d, _) = s.put_blob_bytes(b"hello").unwrap();
        assert_eq!(s.read_blob(&d).unwrap(), b"hello");
        fs::write(s.blob_path(&d), b"jello").unwrap();
        match s.read_blob(&d) {
            Err(StoreError::CorruptBlob { digest, actual }) => {
                assert_eq!(digest, d);
                assert_eq!(actual, Digest::of(b"jello"));
            }
            other => panic!("expected a corrupt blob, got {other:?}"),
        }
        assert!(matches!(s.verify_blob(&d), Err(StoreError::CorruptBlob { .. })));
        let wrong = Digest::of(b"other");
        assert!(matches!(s.put_blob_expecting(&mut &b"hello"[..], &wrong), Err(StoreError::CorruptBlob { .. })));
        assert!(!s.has_blob(&wrong));
    }

    #[test]
    fn a_corrupt_layer_is_never_unpacked() {
        let (_tmp, s) = store();
        let img = import_tree(&s, "app:v1");
        let layer = img.layers().unwrap()[0].clone();
        fs::remove_dir_all(s.layers_dir().join(layer.hex())).unwrap();
        let mut bytes = fs::read(s.blob_path(&layer)).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(s.blob_path(&layer), bytes).unwrap();
        let err = s.unpacked_layer(&layer).unwrap_err();
        assert!(matches!(err, StoreError::CorruptBlob { .. } | StoreError::Layer { .. }), "{err}");
        assert!(!s.layers_dir().join(layer.hex()).exists());
    }

    #[test]
    fn tags_resolve_and_removal_collects_garbage() {
        let (_tmp, s) = store();
        let v1 = import_tree(&s, "app:v1");
        let v2 = import_tree(&s, "app:v2");
        assert_ne!(v1.id(), v2.id());
        assert_eq!(s.resolve(&"app:v1".parse().unwrap()).unwrap().manifest_digest, v1.manifest_digest);
        assert!(matches!(s.resolve(&"app:v3".parse().unwrap()), Err(StoreError::UnknownImage(n)) if n == "app:v3"));
        let names: Vec<String> = s.tags().unwrap().into_iter().map(|t| t.name).collect();
        assert_eq!(names, ["app:v1", "app:v2"]);
        s.remove(&"app:v1".parse().unwrap(), &HashSet::new()).unwrap();
        assert!(!s.has_blob(&v1.manifest_digest));
        assert!(!s.layers_dir().join(v1.layers().unwrap()[0].hex()).exists());
        assert!(s.has_blob(&v2.manifest_digest), "the other image is kept");
        assert!(matches!(s.remove(&"app:v1".parse().unwrap(), &HashSet::new()), Err(StoreError::UnknownImage(_))));
    }

    #[test]
    fn import_refuses_hostile_archives_and_keeps_nothing() {
        let (tmp, s) = store();
        let mut h = tar::Header::new_old();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(1);
        h.as_old_mut().name[..11].copy_from_slice(b"../escape.x");
        h.set_cksum();
        let mut b = tar::Builder::new(Vec::new());
        b.append(&h, &b"x"[..]).unwrap();
        let path = tmp.path().join("evil.tar");
        fs::write(&path, b.into_inner().unwrap()).unwrap();
        let err = crate::import::import(&s, &path, &"evil:1".parse().unwrap(), "now").unwrap_err();
        assert!(err.to_string().contains("../escape.x"), "{err}");
        assert!(s.tags().unwrap().is_empty());
        assert_eq!(fs::read_dir(s.blobs_dir()).unwrap().count(), 0);
    }
}
