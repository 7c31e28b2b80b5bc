//! Layers: unpacking a (possibly hostile) tar stream into a directory, and packing a directory.
//!
//! The unpacker never writes outside the destination: `..` components and absolute paths are
//! rejected, every parent directory is resolved inside the root (a symlink in the archive that
//! points at `/etc` leads to `<root>/etc`, never the host's), device nodes are rejected, and the
//! OCI whiteouts `.wh.<name>` and `.wh..wh..opq` become overlayfs whiteouts (a 0:0 character
//! device) and opaque directories (`trusted.overlay.opaque=y`), so unpacked layers stack as
//! overlay lower directories.

use std::ffi::{CString, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use tar::EntryType;

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";
/// How many symlinks one path may traverse before we call it a loop (as Linux does).
const MAX_SYMLINKS: usize = 40;

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("layer entry {entry:?}: {reason}")]
    Rejected { entry: String, reason: &'static str },
    #[error("layer entry {entry:?}: {source}")]
    Entry {
        entry: String,
        #[source]
        source: io::Error,
    },
    #[error("reading layer archive: {0}")]
    Archive(#[source] io::Error),
    #[error("it unpacks to more than {what} ({var}); refused")]
    TooLarge { what: String, var: &'static str },
}

/// How much one archive may unpack to: a 2 MB gzip of zeros must not become a 2 GiB layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of file content (`CORRAL_MAX_LAYER_SIZE`, e.g. `10g`; default 10 GiB).
    pub max_bytes: u64,
    /// Entries (`CORRAL_MAX_LAYER_ENTRIES`; default 1,000,000).
    pub max_entries: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_bytes: 10 << 30, max_entries: 1_000_000 }
    }
}

impl Limits {
    /// The defaults, or what `CORRAL_MAX_LAYER_SIZE` and `CORRAL_MAX_LAYER_ENTRIES` say (an
    /// unreadable value keeps the default, with a warning).
    pub fn from_env() -> Limits {
        let mut l = Limits::default();
        l.max_bytes = size_limit("CORRAL_MAX_LAYER_SIZE", l.max_bytes);
        if let Ok(v) = std::env::var("CORRAL_MAX_LAYER_ENTRIES") {
            match v.trim().parse() {
                Ok(n) => l.max_entries = n,
                Err(_) => tracing::warn!(value = %v, "CORRAL_MAX_LAYER_ENTRIES is not a number; ignored"),
            }
        }
        l
    }
}

/// A size limit from the environment variable `var` (`512m`, `10g`), else `default`; a value
/// that is not a size keeps the default, with a warning.
pub fn size_limit(var: &str, default: u64) -> u64 {
    match std::env::var(var) {
        Ok(v) => parse_size(&v).unwrap_or_else(|| {
            tracing::warn!(value = %v, var, "not a size like 512m or 10g; the default applies");
            default
        }),
        Err(_) => default,
    }
}

/// How large one image may be: what its manifest declares, checked before anything is
/// downloaded, and what its layers unpack to together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLimits {
    /// Bytes, of its layers as stored and as unpacked (`CORRAL_MAX_IMAGE_SIZE`; default 20 GiB).
    pub max_bytes: u64,
    /// Layers (`CORRAL_MAX_IMAGE_LAYERS`; default 125, as Docker's overlay driver allows).
    pub max_layers: usize,
}

impl ImageLimits {
    pub fn from_env() -> ImageLimits {
        let max_layers =
            std::env::var("CORRAL_MAX_IMAGE_LAYERS").ok().and_then(|v| v.trim().parse().ok()).unwrap_or(125);
        ImageLimits { max_bytes: size_limit("CORRAL_MAX_IMAGE_SIZE", 20 << 30), max_layers }
    }

    /// Whether a manifest's layer sizes are within the limits; the reason when not.
    pub fn check_declared(&self, layer_sizes: &[u64]) -> Result<(), String> {
        if layer_sizes.len() > self.max_layers {
            return Err(format!(
                "it has {} layers, past the limit of {} (CORRAL_MAX_IMAGE_LAYERS); refused",
                layer_sizes.len(),
                self.max_layers
            ));
        }
        let total = layer_sizes.iter().fold(0u64, |a, b| a.saturating_add(*b));
        if total > self.max_bytes {
            return Err(format!(
                "its layers are {}, past the limit of {} (CORRAL_MAX_IMAGE_SIZE); refused",
                human(total),
                human(self.max_bytes)
            ));
        }
        Ok(())
    }

    /// Whether what its layers unpacked to is within the limit; the reason when not.
    pub fn check_unpacked(&self, bytes: u64) -> Result<(), String> {
        if bytes > self.max_bytes {
            return Err(format!(
                "its layers unpack to more than {} (CORRAL_MAX_IMAGE_SIZE); refused",
                human(self.max_bytes)
            ));
        }
        Ok(())
    }
}

/// Bytes of file content under `dir` (links not followed) whose paths relative to `dir` `keep`
/// lets through, counted up to just past `stop_after`.
pub fn content_bytes(dir: &Path, stop_after: u64, keep: &dyn Fn(&Path) -> bool) -> u64 {
    let mut total = 0u64;
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(dir.join(&rel)) else { continue };
        for e in entries.flatten() {
            let child = rel.join(e.file_name());
            if !keep(&child) {
                continue;
            }
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(child);
            } else if m.is_file() {
                total = total.saturating_add(m.len());
                if total > stop_after {
                    return total;
                }
            }
        }
    }
    total
}

/// `1048576`, `512k`, `100m`, `10g` (powers of 1024).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim().to_ascii_lowercase();
    let (digits, shift) = match s.as_bytes().last()? {
        b'k' => (&s[..s.len() - 1], 10),
        b'm' => (&s[..s.len() - 1], 20),
        b'g' => (&s[..s.len() - 1], 30),
        b't' => (&s[..s.len() - 1], 40),
        _ => (&s[..], 0),
    };
    digits.parse::<u64>().ok()?.checked_mul(1 << shift)
}

/// `10 GiB`, `512 KiB`, `1.5 GiB`: sizes in messages.
pub fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 && b % (1 << 30) == 0 => format!("{} GiB", b >> 30),
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b => format!("{b} bytes"),
    }
}

impl LayerError {
    fn rejected(entry: &Path, reason: &'static str) -> LayerError {
        LayerError::Rejected { entry: entry.display().to_string(), reason }
    }
}

/// What one unpack did, for logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UnpackStats {
    pub entries: u64,
    pub bytes: u64,
    pub whiteouts: u64,
}

/// Unpacks an uncompressed tar stream into `dest`, an existing directory, within the limits the
/// environment sets ([`Limits::from_env`]).
pub fn unpack<R: Read>(archive: R, dest: &Path) -> Result<UnpackStats, LayerError> {
    unpack_within(archive, dest, Limits::from_env())
}

/// Unpacks within `limits`: past them, the unpack stops with [`LayerError::TooLarge`].
pub fn unpack_within<R: Read>(archive: R, dest: &Path, limits: Limits) -> Result<UnpackStats, LayerError> {
    let mut ar = tar::Archive::new(archive);
    let chown = nix::unistd::geteuid().is_root();
    let mut stats = UnpackStats::default();
    for entry in ar.entries().map_err(LayerError::Archive)? {
        let mut entry = entry.map_err(LayerError::Archive)?;
        let raw = PathBuf::from(OsString::from_vec(entry.path_bytes().into_owned()));
        let Some(rel) = normalize(&raw)? else {
            continue; // the archive's root directory itself
        };
        let io_err = |source| LayerError::Entry { entry: raw.display().to_string(), source };
        let name = rel.file_name().expect("normalized paths end in a name").to_os_string();
        let parent =
            resolve_in_root(dest, rel.parent().unwrap_or(Path::new("")), true).map_err(|e| resolve_error(&raw, e))?;
        stats.entries += 1;
        if stats.entries > limits.max_entries {
            return Err(LayerError::TooLarge {
                what: format!("{} entries", limits.max_entries),
                var: "CORRAL_MAX_LAYER_ENTRIES",
            });
        }

        if let Some(hidden) = name.to_str().and_then(|n| n.strip_prefix(WHITEOUT_PREFIX)) {
            stats.whiteouts += 1;
            if name == OPAQUE_WHITEOUT {
                set_opaque(&parent).map_err(io_err)?;
            } else if hidden.starts_with(".wh.") || hidden.is_empty() {
                // Other `.wh..wh.` names are reserved metadata; nothing to apply.
            } else {
                let target = parent.join(hidden);
                remove_existing(&target).map_err(io_err)?;
                make_whiteout(&target).map_err(io_err)?;
            }
            continue;
        }

        let target = parent.join(&name);
        let header = entry.header().clone();
        let mode = header.mode().map_err(io_err)? & 0o7777;
        // Some archivers leave the owner fields blank: that means root, not a broken layer.
        let (uid, gid) = (header.uid().unwrap_or(0), header.gid().unwrap_or(0));
        match header.entry_type() {
            EntryType::Directory => {
                match fs::symlink_metadata(&target) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        remove_existing(&target).map_err(io_err)?;
                        fs::create_dir(&target).map_err(io_err)?;
                    }
                    Err(_) => fs::create_dir(&target).map_err(io_err)?,
                }
                finish(&target, chown, uid, gid, Some(mode)).map_err(io_err)?;
            }
            EntryType::Regular | EntryType::Continuous => {
                remove_existing(&target).map_err(io_err)?;
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .mode(0o600)
                    .open(&target)
                    .map_err(io_err)?;
                let room = limits.max_bytes.saturating_sub(stats.bytes);
                stats.bytes += io::copy(&mut (&mut entry).take(room.saturating_add(1)), &mut f).map_err(io_err)?;
                if stats.bytes > limits.max_bytes {
                    return Err(LayerError::TooLarge { what: human(limits.max_bytes), var: "CORRAL_MAX_LAYER_SIZE" });
                }
                f.flush().map_err(io_err)?;
                drop(f);
                finish(&target, chown, uid, gid, Some(mode)).map_err(io_err)?;
            }
            EntryType::Symlink => {
                let link = entry
                    .link_name()
                    .map_err(io_err)?
                    .ok_or_else(|| LayerError::rejected(&raw, "symlink without a target"))?;
                remove_existing(&target).map_err(io_err)?;
                std::os::unix::fs::symlink(&link, &target).map_err(io_err)?;
                finish(&target, chown, uid, gid, None).map_err(io_err)?;
            }
            EntryType::Link => {
                let link = entry
                    .link_name()
                    .map_err(io_err)?
                    .ok_or_else(|| LayerError::rejected(&raw, "hardlink without a target"))?;
                let link_rel = normalize(&link)
                    .map_err(|_| LayerError::rejected(&raw, "hardlink target escapes the layer root"))?
                    .ok_or_else(|| LayerError::rejected(&raw, "hardlink to the layer root"))?;
                let src_parent = resolve_in_root(dest, link_rel.parent().unwrap_or(Path::new("")), false)
                    .map_err(|e| resolve_error(&raw, e))?;
                let src = src_parent.join(link_rel.file_name().expect("normalized"));
                match fs::symlink_metadata(&src) {
                    Ok(m) if m.is_dir() => return Err(LayerError::rejected(&raw, "hardlink to a directory")),
                    Ok(_) => {}
                    Err(_) => return Err(LayerError::rejected(&raw, "hardlink target is not in the layer")),
                }
                if src != target {
                    remove_existing(&target).map_err(io_err)?;
                    fs::hard_link(&src, &target).map_err(io_err)?;
                }
            }
            EntryType::Fifo => {
                remove_existing(&target).map_err(io_err)?;
                nix::unistd::mkfifo(&target, nix::sys::stat::Mode::from_bits_truncate(mode))
                    .map_err(|e| io_err(e.into()))?;
                finish(&target, chown, uid, gid, Some(mode)).map_err(io_err)?;
            }
            EntryType::Char | EntryType::Block => {
                return Err(LayerError::rejected(&raw, "device nodes are not allowed in layers"));
            }
            EntryType::XGlobalHeader | EntryType::XHeader | EntryType::GNULongName | EntryType::GNULongLink => {}
            _ => return Err(LayerError::rejected(&raw, "unsupported entry type")),
        }
    }
    Ok(stats)
}

/// Packs `dir` into an uncompressed tar stream written to `out`, with paths relative to `dir`,
/// in a stable (sorted) order so the same tree gives the same bytes.
pub fn pack_dir<W: Write>(dir: &Path, out: W) -> io::Result<W> {
    let mut b = tar::Builder::new(out);
    b.follow_symlinks(false);
    b.mode(tar::HeaderMode::Complete);
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let abs = dir.join(&rel);
        if !rel.as_os_str().is_empty() {
            b.append_path_with_name(&abs, &rel)?;
        }
        if fs::symlink_metadata(&abs)?.is_dir() {
            let mut names: Vec<OsString> =
                fs::read_dir(&abs)?.map(|e| e.map(|e| e.file_name())).collect::<io::Result<_>>()?;
            // Reversed onto the stack, so children pop in sorted order, depth first.
            names.sort_unstable_by(|a, b| b.cmp(a));
            stack.extend(names.into_iter().map(|n| rel.join(n)));
        }
    }
    b.into_inner()
}

/// Strips `./` and rejects what would leave the root. `Ok(None)` is the root itself.
fn normalize(raw: &Path) -> Result<Option<PathBuf>, LayerError> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => return Err(LayerError::rejected(raw, "path contains '..'")),
            Component::RootDir | Component::Prefix(_) => return Err(LayerError::rejected(raw, "absolute path")),
        }
    }
    Ok(if out.as_os_str().is_empty() { None } else { Some(out) })
}

#[derive(Debug)]
enum ResolveError {
    NotADirectory,
    Loop,
    Io(io::Error),
}

fn resolve_error(entry: &Path, e: ResolveError) -> LayerError {
    match e {
        ResolveError::NotADirectory => LayerError::rejected(entry, "a parent is not a directory"),
        ResolveError::Loop => LayerError::rejected(entry, "too many levels of symlinks"),
        ResolveError::Io(source) => LayerError::Entry { entry: entry.display().to_string(), source },
    }
}

/// Resolves the directory `rel` under `root` as if `root` were `/`: symlinks are followed,
/// absolute targets restart at `root`, and `..` never climbs above it. With `create`, missing
/// directories are made; otherwise they are an error.
fn resolve_in_root(root: &Path, rel: &Path, create: bool) -> Result<PathBuf, ResolveError> {
    resolve(root, rel, if create { Resolve::CreateDirs } else { Resolve::Dirs })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Resolve {
    /// Every component must be a directory; missing ones are created.
    CreateDirs,
    /// Every component must be an existing directory.
    Dirs,
    /// Like `Dirs`, but the last component may be anything, or missing.
    Lookup,
}

fn resolve(root: &Path, rel: &Path, how: Resolve) -> Result<PathBuf, ResolveError> {
    let create = how == Resolve::CreateDirs;
    let mut todo: Vec<OsString> = rel.components().rev().map(|c| c.as_os_str().to_os_string()).collect();
    let mut cur: Vec<OsString> = Vec::new();
    let mut followed = 0;
    while let Some(part) = todo.pop() {
        match part.as_bytes() {
            b"" | b"." => continue,
            b".." => {
                cur.pop();
                continue;
            }
            b"/" => {
                cur.clear();
                continue;
            }
            _ => {}
        }
        let path = join_all(root, &cur).join(&part);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => {
                followed += 1;
                if followed > MAX_SYMLINKS {
                    return Err(ResolveError::Loop);
                }
                let target = fs::read_link(&path).map_err(ResolveError::Io)?;
                if target.is_absolute() {
                    cur.clear();
                }
                for c in target.components().rev() {
                    todo.push(match c {
                        Component::RootDir => OsString::from("/"),
                        other => other.as_os_str().to_os_string(),
                    });
                }
            }
            Ok(m) if m.is_dir() => cur.push(part),
            Ok(_) if how == Resolve::Lookup && todo.is_empty() => cur.push(part),
            Ok(_) => return Err(ResolveError::NotADirectory),
            Err(e) if e.kind() == io::ErrorKind::NotFound && how == Resolve::Lookup && todo.is_empty() => {
                cur.push(part)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                fs::create_dir(&path).map_err(ResolveError::Io)?;
                cur.push(part);
            }
            Err(e) => return Err(ResolveError::Io(e)),
        }
    }
    Ok(join_all(root, &cur))
}

fn join_all(root: &Path, parts: &[OsString]) -> PathBuf {
    let mut p = root.to_path_buf();
    for part in parts {
        p.push(part);
    }
    p
}

/// Removes whatever is at `path` (never following a symlink there); a missing path is fine.
fn remove_existing(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn make_whiteout(path: &Path) -> io::Result<()> {
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    mknod(path, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0)).map_err(io::Error::from)
}

fn set_opaque(dir: &Path) -> io::Result<()> {
    let c = CString::new(dir.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let name = c"trusted.overlay.opaque";
    // SAFETY: both strings are NUL-terminated and outlive the call; the value is 1 byte.
    let rc = unsafe { libc::lsetxattr(c.as_ptr(), name.as_ptr(), b"y".as_ptr().cast(), 1, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn finish(path: &Path, chown: bool, uid: u64, gid: u64, mode: Option<u32>) -> io::Result<()> {
    if chown {
        let (uid, gid) = (u32::try_from(uid).ok(), u32::try_from(gid).ok());
        nix::unistd::fchownat(
            None,
            path,
            uid.map(nix::unistd::Uid::from_raw),
            gid.map(nix::unistd::Gid::from_raw),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(io::Error::from)?;
    }
    if let Some(mode) = mode {
        // After chown, which clears setuid bits.
        fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Resolves `path` (absolute or relative) inside `root` as the container would see it, following
/// symlinks without ever leaving `root`. Returns the host path of what it names, if it exists.
pub fn lookup_in_root(root: &Path, path: &Path) -> Option<PathBuf> {
    let rel: PathBuf = path.components().filter(|c| matches!(c, Component::Normal(_) | Component::ParentDir)).collect();
    let found = resolve(root, &rel, Resolve::Lookup).ok()?;
    fs::symlink_metadata(&found).is_ok().then_some(found)
}

/// Decompresses `input` if it starts with the gzip magic, else passes it through.
pub fn gunzip_if_gzip<'a>(input: impl Read + 'a) -> io::Result<Box<dyn Read + 'a>> {
    let mut br = io::BufReader::new(input);
    let head = io::BufRead::fill_buf(&mut br)?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::bufread::GzDecoder::new(br)))
    } else {
        Ok(Box::new(br))
    }
}

/// Opens `path` for reading, decompressing gzip when the file starts with the gzip magic.
pub fn open_maybe_gzip(path: &Path) -> io::Result<Box<dyn Read>> {
    gunzip_if_gzip(File::open(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// One archive entry, written with raw names so hostile paths get through the builder.
    #[derive(Debug, Clone)]
    enum E {
        Dir(&'static str),
        File(&'static str, &'static str),
        Symlink(&'static str, &'static str),
        Hardlink(&'static str, &'static str),
        Char(&'static str),
    }

    fn raw_header(kind: EntryType, path: &str, size: u64) -> tar::Header {
        let mut h = tar::Header::new_old();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        let name = &mut h.as_old_mut().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        h
    }

    fn set_link(h: &mut tar::Header, target: &str) {
        h.as_old_mut().linkname[..target.len()].copy_from_slice(target.as_bytes());
    }

    fn archive(entries: &[E]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for e in entries {
            let (mut h, data): (tar::Header, &[u8]) = match e {
                E::Dir(p) => (raw_header(EntryType::Directory, p, 0), b""),
                E::File(p, c) => (raw_header(EntryType::Regular, p, c.len() as u64), c.as_bytes()),
                E::Symlink(p, t) => {
                    let mut h = raw_header(EntryType::Symlink, p, 0);
                    set_link(&mut h, t);
                    (h, b"")
                }
                E::Hardlink(p, t) => {
                    let mut h = raw_header(EntryType::Link, p, 0);
                    set_link(&mut h, t);
                    (h, b"")
                }
                E::Char(p) => (raw_header(EntryType::Char, p, 0), b""),
            };
            h.set_cksum();
            b.append(&h, data).unwrap();
        }
        b.into_inner().unwrap()
    }

    /// Unpacks into `<tmp>/root` and returns the result; `<tmp>/outside` is the canary dir.
    fn check(entries: &[E]) -> (tempfile::TempDir, Result<UnpackStats, LayerError>) {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir(tmp.path().join("root")).unwrap();
        fs::create_dir(tmp.path().join("outside")).unwrap();
        let result = unpack(&archive(entries)[..], &tmp.path().join("root"));
        (tmp, result)
    }

    fn rejected(entries: &[E], entry: &str, reason: &str) {
        let (tmp, result) = check(entries);
        match result {
            Err(LayerError::Rejected { entry: e, reason: r }) => assert_eq!((e.as_str(), r), (entry, reason)),
            other => panic!("expected {entry:?} to be rejected ({reason}), got {other:?}"),
        }
        assert_eq!(fs::read_dir(tmp.path().join("outside")).unwrap().count(), 0, "nothing written outside");
    }

    #[test]
    fn images_past_their_limits_are_refused_saying_which() {
        let limits = ImageLimits { max_bytes: 10 << 20, max_layers: 3 };
        assert_eq!(limits.check_declared(&[1 << 20, 2 << 20]), Ok(()));
        assert_eq!(limits.check_declared(&[10 << 20]), Ok(()), "the limit itself is fine");
        let e = limits.check_declared(&[6 << 20, 5 << 20]).unwrap_err();
        assert!(e.contains("11 MiB, past the limit of 10 MiB (CORRAL_MAX_IMAGE_SIZE)"), "{e}");
        let e = limits.check_declared(&[1, 1, 1, 1]).unwrap_err();
        assert!(e.contains("4 layers, past the limit of 3 (CORRAL_MAX_IMAGE_LAYERS)"), "{e}");
        assert!(limits.check_declared(&[u64::MAX, u64::MAX]).is_err(), "sums saturate");
        assert!(limits.check_unpacked(10 << 20).is_ok());
        assert!(limits.check_unpacked((10 << 20) + 1).unwrap_err().contains("unpack to more than 10 MiB"));
        assert_eq!(human((3 << 30) / 2 + 1), "1.5 GiB");
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("skip")).unwrap();
        fs::write(dir.path().join("a"), [0u8; 100]).unwrap();
        fs::write(dir.path().join("skip/b"), [0u8; 50]).unwrap();
        assert_eq!(content_bytes(dir.path(), u64::MAX, &|_| true), 150);
        assert_eq!(content_bytes(dir.path(), u64::MAX, &|p| !p.starts_with("skip")), 100);
    }

    #[test]
    fn bombs_stop_at_the_limits() {
        // 3 MiB of zeros, gzipped to a few KiB.
        let zeros = vec![0u8; 3 << 20];
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(zeros.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "zeros", &zeros[..]).unwrap();
        let tar = b.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        io::Write::write_all(&mut gz, &tar).unwrap();
        let gz = gz.finish().unwrap();
        assert!(gz.len() < 64 << 10);
        let tmp = tempfile::tempdir().unwrap();
        let limits = Limits { max_bytes: 1 << 20, max_entries: 10 };
        let e = unpack_within(gunzip_if_gzip(&gz[..]).unwrap(), tmp.path(), limits).unwrap_err();
        assert_eq!(e.to_string(), "it unpacks to more than 1 MiB (CORRAL_MAX_LAYER_SIZE); refused");
        let written = fs::metadata(tmp.path().join("zeros")).unwrap().len();
        assert!(written <= (1 << 20) + 1, "it stopped at the limit: {written}");
        // Within the limit it unpacks.
        let roomy = Limits { max_bytes: 3 << 20, max_entries: 10 };
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(unpack_within(gunzip_if_gzip(&gz[..]).unwrap(), tmp.path(), roomy).unwrap().bytes, 3 << 20);
        // Too many entries.
        let many: Vec<E> = vec![E::Dir("a/"), E::Dir("b/"), E::Dir("c/")];
        let tmp = tempfile::tempdir().unwrap();
        let e = unpack_within(&archive(&many)[..], tmp.path(), Limits { max_bytes: 1, max_entries: 2 }).unwrap_err();
        assert!(e.to_string().contains("more than 2 entries (CORRAL_MAX_LAYER_ENTRIES)"), "{e}");
        assert_eq!(parse_size("512k"), Some(512 << 10));
        assert_eq!(parse_size("10G"), Some(10 << 30));
        assert_eq!(parse_size("12"), Some(12));
        assert_eq!(parse_size("ten"), None);
        assert_eq!(parse_size("99999999999t"), None, "overflow is not a size");
    }

    #[test]
    fn plain_layers_unpack() {
        let (tmp, r) = check(&[
            E::Dir("etc/"),
            E::File("etc/hostname", "box\n"),
            E::Symlink("bin", "usr/bin"),
            E::File("./a", "x"),
        ]);
        let stats = r.unwrap();
        assert_eq!(stats.entries, 4);
        let root = tmp.path().join("root");
        assert_eq!(fs::read_to_string(root.join("etc/hostname")).unwrap(), "box\n");
        assert_eq!(fs::read_link(root.join("bin")).unwrap(), Path::new("usr/bin"));
        assert_eq!(fs::read_to_string(root.join("a")).unwrap(), "x");
    }

    #[test]
    fn escaping_paths_are_rejected() {
        rejected(&[E::File("../outside/x", "pwned")], "../outside/x", "path contains '..'");
        rejected(&[E::File("a/../../outside/x", "pwned")], "a/../../outside/x", "path contains '..'");
        rejected(&[E::File("/etc/passwd", "pwned")], "/etc/passwd", "absolute path");
        rejected(&[E::Char("dev/sda")], "dev/sda", "device nodes are not allowed in layers");
        rejected(&[E::File("f", "x"), E::Hardlink("h", "../outside/x")], "h", "hardlink target escapes the layer root");
        rejected(&[E::Hardlink("h", "missing")], "h", "hardlink target is not in the layer");
        rejected(&[E::Dir("d/"), E::Hardlink("h", "d")], "h", "hardlink to a directory");
        rejected(&[E::File("f", "x"), E::File("f/g", "y")], "f/g", "a parent is not a directory");
    }

    #[test]
    fn symlinks_cannot_be_used_to_write_outside() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let outside = tmp.path().join("outside");
        fs::create_dir_all(&root).unwrap();
        fs::create_dir_all(&outside).unwrap();
        let abs = outside.to_str().unwrap().to_string();
        let abs: &'static str = Box::leak(abs.into_boxed_str());
        // An absolute symlink to the outside dir, then a file through it: lands inside the root.
        let entries = [
            E::Symlink("evil", abs),
            E::File("evil/x", "pwned"),
            E::Symlink("up", "../../.."),
            E::File("up/y", "pwned"),
        ];
        unpack(&archive(&entries)[..], &root).unwrap();
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0, "nothing written outside");
        let inside = root.join(abs.trim_start_matches('/')).join("x");
        assert_eq!(fs::read_to_string(inside).unwrap(), "pwned");
        assert_eq!(fs::read_to_string(root.join("y")).unwrap(), "pwned", "'..' stops at the root");
        // A file replacing a symlink replaces the link itself, never its target.
        let entries = [E::Symlink("l", abs), E::File("l", "new")];
        unpack(&archive(&entries)[..], &root).unwrap();
        assert!(fs::symlink_metadata(root.join("l")).unwrap().is_file());
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    }

    #[test]
    fn symlink_loops_are_rejected() {
        rejected(
            &[E::Symlink("a", "b"), E::Symlink("b", "a"), E::File("a/x", "y")],
            "a/x",
            "too many levels of symlinks",
        );
    }

    #[test]
    fn whiteouts_become_overlay_whiteouts() {
        use std::os::unix::fs::FileTypeExt;
        use std::os::unix::fs::MetadataExt;
        if !nix::unistd::geteuid().is_root() {
            panic!("this test needs root (mknod and trusted xattrs); CI runs as root");
        }
        let (tmp, r) =
            check(&[E::Dir("etc/"), E::File("etc/.wh.motd", ""), E::Dir("var/"), E::File("var/.wh..wh..opq", "")]);
        assert_eq!(r.unwrap().whiteouts, 2);
        let root = tmp.path().join("root");
        let m = fs::symlink_metadata(root.join("etc/motd")).unwrap();
        assert!(m.file_type().is_char_device() && m.rdev() == 0);
        let mut value = [0u8; 1];
        let path = CString::new(root.join("var").as_os_str().as_bytes()).unwrap();
        // SAFETY: valid C strings and a 1-byte buffer.
        let n =
            unsafe { libc::lgetxattr(path.as_ptr(), c"trusted.overlay.opaque".as_ptr(), value.as_mut_ptr().cast(), 1) };
        assert_eq!((n, value[0]), (1, b'y'));
        assert!(!root.join("var/.wh..wh..opq").exists());
    }

    #[test]
    fn pack_then_unpack_round_trips() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs::create_dir_all(src.join("a/b")).unwrap();
        fs::write(src.join("a/b/f"), "hello").unwrap();
        std::os::unix::fs::symlink("a/b/f", src.join("link")).unwrap();
        let tar1 = pack_dir(&src, Vec::new()).unwrap();
        let tar2 = pack_dir(&src, Vec::new()).unwrap();
        assert_eq!(tar1, tar2, "packing is deterministic");
        let dest = tmp.path().join("dest");
        fs::create_dir(&dest).unwrap();
        unpack(&tar1[..], &dest).unwrap();
        assert_eq!(fs::read_to_string(dest.join("a/b/f")).unwrap(), "hello");
        assert_eq!(fs::read_link(dest.join("link")).unwrap(), Path::new("a/b/f"));
    }

    fn arb_path() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "a",
            "a/b",
            "a/b/c",
            "b",
            "../x",
            "a/../../x",
            "/abs",
            "l",
            "l/x",
            "l/../y",
            "./a/./b",
            "a//b",
            ".wh.a",
            "a/.wh..wh..opq",
            "l2",
            "l2/z",
        ])
    }

    fn arb_entry() -> impl Strategy<Value = E> {
        let targets = prop::sample::select(vec!["a", "..", "../..", "/", "/tmp", "a/b", "l", "l2", "../outside"]);
        prop_oneof![
            arb_path().prop_map(E::Dir),
            arb_path().prop_map(|p| E::File(p, "data")),
            (arb_path(), targets.clone()).prop_map(|(p, t)| E::Symlink(p, t)),
            (arb_path(), targets).prop_map(|(p, t)| E::Hardlink(p, t)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn no_archive_writes_outside_the_root(entries in prop::collection::vec(arb_entry(), 1..12)) {
            let (tmp, _result) = check(&entries);
            prop_assert_eq!(fs::read_dir(tmp.path().join("outside")).unwrap().count(), 0);
            let siblings: Vec<_> = fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
            prop_assert_eq!(siblings.len(), 2, "only root/ and outside/ exist: {:?}", siblings);
        }
    }
}
