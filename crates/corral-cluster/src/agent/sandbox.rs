//! Task sandboxes: a directory per task under the agent's work directory
//! (`<work-dir>/sandboxes/<task id>`), the task's working directory when it has no image and
//! `/mnt/mesos/sandbox` when it has one. The task writes there, fetched files land there, and
//! its output is kept there (`stdout`, `stderr`) once its container is removed. Files are
//! served from it without following any symbolic link: the task owns its sandbox and may plant
//! links to anywhere on the host.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

/// The sandboxes' directory: root's alone (the sandboxes in it are open to the tasks' users).
pub(super) fn root(work_dir: &Path) -> PathBuf {
    work_dir.join("sandboxes")
}

/// A task's sandbox, if its id can name a directory (ids come over the network).
pub(super) fn of(work_dir: &Path, task_id: &str) -> Option<PathBuf> {
    let ok = !task_id.is_empty()
        && task_id.len() <= 250
        && task_id != "."
        && task_id != ".."
        && task_id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    ok.then(|| root(work_dir).join(task_id))
}

/// Makes a task's sandbox: writable by whichever user the task runs as (its parent is closed
/// to everyone but root, so only the task and root reach it).
pub(super) fn create(work_dir: &Path, task_id: &str) -> io::Result<PathBuf> {
    let dir = of(work_dir, task_id).ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("task id {task_id:?} cannot name a sandbox"))
    })?;
    let parent = root(work_dir);
    std::fs::create_dir_all(&parent)?;
    std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o700))?;
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777))?;
    Ok(dir)
}

/// A file or directory in a sandbox, as `corral task files` lists it (Mesos's `files/browse`).
pub(super) type Entry = crate::wire::SandboxEntry;

/// What is at `rel` inside `sandbox`: a directory's entries, or a file and its own entry.
pub(super) enum Found {
    Dir(Vec<Entry>),
    File(File, Entry),
}

/// Opens `rel` inside `sandbox`, one component at a time, following no symbolic link; a
/// directory is listed, a file opened. `..` and absolute paths are refused.
pub(super) fn open(sandbox: &Path, rel: &str) -> io::Result<Found> {
    let refused = |why: &str| io::Error::new(io::ErrorKind::PermissionDenied, format!("{rel:?}: {why}"));
    let mut fd = open_at(libc::AT_FDCWD, sandbox.as_os_str().as_bytes(), libc::O_DIRECTORY)?;
    let rel_path = Path::new(rel.trim_start_matches('/'));
    for c in rel_path.components() {
        match c {
            Component::Normal(name) => {
                // O_NOFOLLOW: a link as any component fails with ELOOP.
                fd = open_at(std::os::fd::AsRawFd::as_raw_fd(&fd), name.as_bytes(), 0).map_err(|e| {
                    if e.raw_os_error() == Some(libc::ELOOP) {
                        refused("a symbolic link is not followed")
                    } else {
                        e
                    }
                })?;
            }
            Component::CurDir => {}
            _ => return Err(refused("the path must stay inside the sandbox")),
        }
    }
    let file = File::from(fd);
    let meta = file.metadata()?;
    if !meta.is_dir() && !meta.is_file() {
        return Err(refused("only files and directories are served"));
    }
    if meta.is_dir() {
        let shown = rel_path.to_string_lossy().to_string();
        let dir_path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&file));
        let mut entries = Vec::new();
        for e in std::fs::read_dir(&dir_path)?.flatten() {
            let Ok(meta) = e.path().symlink_metadata() else { continue };
            let name = e.file_name().to_string_lossy().to_string();
            entries.push(entry(if shown.is_empty() { name } else { format!("{shown}/{name}") }, &meta));
        }
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        return Ok(Found::Dir(entries));
    }
    Ok(Found::File(file, entry(rel_path.to_string_lossy().to_string(), &meta)))
}

fn entry(path: String, meta: &std::fs::Metadata) -> Entry {
    Entry { path, size: meta.len(), mode: mode_string(meta), mtime: std::os::unix::fs::MetadataExt::mtime(meta) }
}

fn open_at(dir: libc::c_int, name: &[u8], flags: libc::c_int) -> io::Result<OwnedFd> {
    let name = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: a valid C string and flags; the returned descriptor is owned here.
    let fd = unsafe {
        libc::openat(dir, name.as_ptr(), flags | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_RDONLY | libc::O_NONBLOCK)
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn mode_string(meta: &std::fs::Metadata) -> String {
    let kind = if meta.file_type().is_symlink() {
        'l'
    } else if meta.is_dir() {
        'd'
    } else {
        '-'
    };
    let m = meta.permissions().mode();
    let bits: String = (0..9).map(|i| if m & (1 << (8 - i)) != 0 { ['r', 'w', 'x'][i % 3] } else { '-' }).collect();
    format!("{kind}{bits}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_cannot_name_a_directory_get_no_sandbox() {
        let w = Path::new("/w");
        assert_eq!(of(w, "web.1a2b-3c"), Some(PathBuf::from("/w/sandboxes/web.1a2b-3c")));
        for bad in ["", ".", "..", "a/b", "../x", "a b", &"x".repeat(251)] {
            assert_eq!(of(w, bad), None, "{bad:?}");
        }
    }

    #[test]
    fn files_are_served_from_inside_without_following_links() {
        let w = tempfile::tempdir().unwrap();
        let s = create(w.path(), "t1").unwrap();
        std::fs::create_dir(s.join("out")).unwrap();
        std::fs::write(s.join("out/result.txt"), "42\n").unwrap();
        std::os::unix::fs::symlink("/etc", s.join("etc")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", s.join("out/host")).unwrap();

        let Found::Dir(top) = open(&s, "").unwrap() else { panic!("a directory") };
        let names: Vec<(&str, char)> = top.iter().map(|e| (e.path.as_str(), e.mode.chars().next().unwrap())).collect();
        assert_eq!(names, [("etc", 'l'), ("out", 'd')]);
        let Found::Dir(out) = open(&s, "out").unwrap() else { panic!("a directory") };
        assert_eq!(out.iter().map(|e| e.path.as_str()).collect::<Vec<_>>(), ["out/host", "out/result.txt"]);
        let Found::File(mut f, e) = open(&s, "/out/result.txt").unwrap() else { panic!("a file") };
        assert_eq!((e.path.as_str(), e.size, &e.mode[..1]), ("out/result.txt", 3, "-"));
        let mut text = String::new();
        std::io::Read::read_to_string(&mut f, &mut text).unwrap();
        assert_eq!(text, "42\n");

        for (bad, says) in [
            ("etc/hostname", "symbolic link"),
            ("out/host", "symbolic link"),
            ("../../etc/hostname", "inside the sandbox"),
            ("out/../../x", "inside the sandbox"),
        ] {
            let e = open(&s, bad).err().unwrap_or_else(|| panic!("{bad} opened"));
            assert!(e.to_string().contains(says), "{bad}: {e}");
        }
        assert_eq!(open(&s, "nope").err().unwrap().kind(), io::ErrorKind::NotFound);
    }
}
