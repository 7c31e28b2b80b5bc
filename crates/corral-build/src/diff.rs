//! Turning a RUN container's overlay upper directory into an OCI layer: overlay whiteouts
//! (0:0 character devices) become `.wh.<name>` entries, opaque directories gain a
//! `.wh..wh..opq` entry, and the placeholders the runtime made for its own mounts are left out.

use std::ffi::{CString, OsString};
use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Mount points the runtime creates in a root that lacked them; never part of a layer.
const MOUNT_PLACEHOLDERS: &[&str] =
    &["proc", "sys", "dev", "etc/hosts", "etc/hostname", "etc/passwd", "etc/group", "etc/resolv.conf", "sandbox"];

/// Writes the tar of `upper`'s changes to `out`; returns how many entries it wrote.
pub fn upper_to_tar<W: Write>(upper: &Path, out: W) -> io::Result<(W, usize)> {
    let mut b = tar::Builder::new(out);
    b.follow_symlinks(false);
    b.mode(tar::HeaderMode::Complete);
    let mut count = 0;
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let abs = upper.join(&rel);
        let meta = fs::symlink_metadata(&abs)?;
        if !rel.as_os_str().is_empty() {
            if meta.file_type().is_char_device() && meta.rdev() == 0 {
                let name = rel.file_name().expect("non-root entries have names");
                let mut wh = OsString::from(".wh.");
                wh.push(name);
                append_empty(&mut b, &rel.with_file_name(wh))?;
                count += 1;
                continue;
            }
            if is_placeholder(&rel, &meta, &abs) {
                continue;
            }
            b.append_path_with_name(&abs, &rel)?;
            count += 1;
        }
        if meta.is_dir() {
            if !rel.as_os_str().is_empty() && is_opaque(&abs) {
                append_empty(&mut b, &rel.join(".wh..wh..opq"))?;
                count += 1;
            }
            let mut names: Vec<OsString> =
                fs::read_dir(&abs)?.map(|e| e.map(|e| e.file_name())).collect::<io::Result<_>>()?;
            names.sort_unstable_by(|a, b| b.cmp(a));
            stack.extend(names.into_iter().map(|n| rel.join(n)));
        }
    }
    Ok((b.into_inner()?, count))
}

fn is_placeholder(rel: &Path, meta: &fs::Metadata, abs: &Path) -> bool {
    let empty = if meta.is_dir() {
        fs::read_dir(abs).map(|mut d| d.next().is_none()).unwrap_or(false)
    } else {
        meta.len() == 0
    };
    empty && MOUNT_PLACEHOLDERS.iter().any(|p| rel == Path::new(p))
}

fn append_empty<W: Write>(b: &mut tar::Builder<W>, path: &Path) -> io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(0);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_cksum();
    b.append_data(&mut h, path, io::empty())
}

fn is_opaque(dir: &Path) -> bool {
    let Ok(c) = CString::new(dir.as_os_str().as_bytes()) else { return false };
    let mut v = [0u8; 1];
    // SAFETY: valid C strings and a 1-byte buffer.
    let n = unsafe { libc::lgetxattr(c.as_ptr(), c"trusted.overlay.opaque".as_ptr(), v.as_mut_ptr().cast(), 1) };
    n == 1 && v[0] == b'y'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(tar_bytes: &[u8]) -> Vec<String> {
        let mut a = tar::Archive::new(tar_bytes);
        a.entries().unwrap().map(|e| e.unwrap().path().unwrap().display().to_string()).collect()
    }

    #[test]
    fn whiteouts_opaque_dirs_and_placeholders() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: this test needs root (mknod, trusted xattrs); CI runs as root");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let up = tmp.path();
        fs::create_dir_all(up.join("etc")).unwrap();
        fs::write(up.join("etc/app.conf"), "x").unwrap();
        fs::write(up.join("etc/hosts"), "").unwrap();
        fs::create_dir(up.join("proc")).unwrap();
        nix::sys::stat::mknod(&up.join("etc/motd"), nix::sys::stat::SFlag::S_IFCHR, nix::sys::stat::Mode::empty(), 0)
            .unwrap();
        fs::create_dir(up.join("var")).unwrap();
        let c = CString::new(up.join("var").as_os_str().as_bytes()).unwrap();
        // SAFETY: valid C strings and a 1-byte value.
        assert_eq!(
            unsafe { libc::lsetxattr(c.as_ptr(), c"trusted.overlay.opaque".as_ptr(), b"y".as_ptr().cast(), 1, 0) },
            0
        );
        let (bytes, n) = upper_to_tar(up, Vec::new()).unwrap();
        assert_eq!(names(&bytes), ["etc", "etc/app.conf", "etc/.wh.motd", "var", "var/.wh..wh..opq"]);
        assert_eq!(n, 5);
    }
}
