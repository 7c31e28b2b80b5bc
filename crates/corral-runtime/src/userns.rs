//! User namespaces: container root is not host root.
//!
//! Each container gets its own range of `SIZE` host ids; container uid (and gid) `n` is host id
//! `base + n`. A short-lived helper process makes the user namespace and a network namespace
//! owned by it; both are pinned on files in the container's directory, and libcontainer joins
//! them by path. The image layers are bound into the container's directory through idmapped
//! mounts (`mount_setattr(MOUNT_ATTR_IDMAP)`), so that a file the image owns as root is owned by
//! the container's root, and the overlay is made of those. Nothing on disk is chowned.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::mount::{mount, MsFlags};

/// Ids per container: a container sees uids and gids 0 to 65535.
pub const SIZE: u32 = 65_536;
/// The first host id handed to containers: well above the ids of users and of the subordinate
/// ranges `useradd` hands out (`/etc/subuid` starts at 100000).
pub const FIRST: u32 = 1 << 30;
/// How many ranges there are: from `FIRST` up to 2^31.
pub const RANGES: u32 = (1 << 30) / SIZE;

/// The host id of a container's root, for the container with this id: the first range `take`
/// gets, trying them from a place spread by the id. `None` when every range is taken.
pub fn choose_base<E>(container_id: &str, mut take: impl FnMut(u32) -> Result<bool, E>) -> Result<Option<u32>, E> {
    let hash =
        container_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    let start = (hash % u64::from(RANGES)) as u32;
    for base in (0..RANGES).map(|i| FIRST + ((start + i) % RANGES) * SIZE) {
        if take(base)? {
            return Ok(Some(base));
        }
    }
    Ok(None)
}

/// Whether this kernel and the filesystem holding `dir` can give containers a user
/// namespace: idmapped mounts are tried once on `dir` (nothing is left mounted).
pub fn supported(dir: &Path) -> bool {
    static ANSWER: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ANSWER.get_or_init(|| match probe(dir) {
        Ok(()) => true,
        Err(e) => {
            tracing::info!(dir = %dir.display(), error = %e, "no user namespaces for containers: idmapped mounts do not work here");
            false
        }
    })
}

fn probe(dir: &Path) -> io::Result<()> {
    let helper = Helper::spawn(FIRST, false)?;
    let userns = helper.userns()?;
    let tree = open_tree(dir)?;
    set_idmap(&tree, &userns)
    // Dropping the detached tree unmounts it.
}

/// Makes the container's user namespace (container ids 0.. mapped to `base`..) and a network
/// namespace it owns with `lo` up, and pins them at `userns_path` and `netns_path`.
pub fn pin(base: u32, userns_path: &Path, netns_path: &Path) -> io::Result<()> {
    let helper = Helper::spawn(base, true)?;
    let result = (|| {
        for (path, ns) in [(userns_path, "user"), (netns_path, "net")] {
            fs::File::create(path)?;
            let source = format!("/proc/{}/ns/{ns}", helper.pid);
            mount(Some(source.as_str()), path, None::<&str>, MsFlags::MS_BIND, None::<&str>)?;
        }
        Ok(())
    })();
    if result.is_err() {
        for path in [userns_path, netns_path] {
            let _ = nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH);
            let _ = fs::remove_file(path);
        }
    }
    result
}

/// Binds `source` at `target` (an existing empty directory) with ids shifted into `userns`:
/// host id 0 appears as the namespace's root.
pub fn bind_idmapped(source: &Path, target: &Path, userns: &OwnedFd) -> io::Result<()> {
    let tree = open_tree(source)?;
    set_idmap(&tree, userns)?;
    let empty = c"";
    let target_c = cstring(target)?;
    // SAFETY: valid fds and NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            target_c.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

fn open_tree(path: &Path) -> io::Result<OwnedFd> {
    let c = cstring(path)?;
    // SAFETY: a NUL-terminated path; the returned fd is owned below.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd from the kernel, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn set_idmap(tree: &OwnedFd, userns: &OwnedFd) -> io::Result<()> {
    let attr =
        MountAttr { attr_set: MOUNT_ATTR_IDMAP, attr_clr: 0, propagation: 0, userns_fd: userns.as_raw_fd() as u64 };
    let empty = c"";
    // SAFETY: valid fds, a NUL-terminated empty path and a struct of the size passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A child process in a new user namespace (and, if asked, a network namespace with `lo` up)
/// whose id maps its parent has written. It waits until dropped, which kills it.
struct Helper {
    pid: libc::pid_t,
}

impl Helper {
    fn spawn(base: u32, with_net: bool) -> io::Result<Helper> {
        let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let (go_r, go_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        // SAFETY: the child makes only async-signal-safe system calls on memory prepared before
        // the fork, and leaves with `_exit`.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            // SAFETY: see above; every call is a raw system call.
            unsafe {
                libc::close(go_w.as_raw_fd());
                libc::close(ready_r.as_raw_fd());
                let mut byte = 0u8;
                if libc::unshare(libc::CLONE_NEWUSER) != 0 {
                    libc::_exit(1);
                }
                libc::write(ready_w.as_raw_fd(), [0u8].as_ptr().cast(), 1);
                // The parent writes the maps, then says go.
                if libc::read(go_r.as_raw_fd(), (&mut byte as *mut u8).cast(), 1) != 1 {
                    libc::_exit(1);
                }
                if with_net {
                    if libc::unshare(libc::CLONE_NEWNET) != 0 {
                        libc::_exit(2);
                    }
                    // System calls only, on the stack: fine after a fork.
                    if crate::netns::loopback_up().is_err() {
                        libc::_exit(3);
                    }
                }
                libc::write(ready_w.as_raw_fd(), [0u8].as_ptr().cast(), 1);
                // Until the parent has what it needs and kills it (see `Drop`).
                loop {
                    libc::pause();
                }
            }
        }
        drop((ready_w, go_r));
        let helper = Helper { pid };
        let ready = fs::File::from(ready_r);
        let wait_ready = |mut f: &fs::File| -> io::Result<()> {
            use std::io::Read;
            let mut b = [0u8; 1];
            match f.read(&mut b)? {
                1 => Ok(()),
                _ => Err(io::Error::other("the user namespace helper gave up")),
            }
        };
        wait_ready(&ready)?;
        let map = format!("0 {base} {SIZE}\n");
        fs::write(format!("/proc/{pid}/uid_map"), &map)?;
        fs::write(format!("/proc/{pid}/gid_map"), &map)?;
        nix::unistd::write(&go_w, &[1])?;
        wait_ready(&ready)
            .map_err(|_| io::Error::other("the user namespace helper could not set up its network namespace"))?;
        Ok(helper)
    }

    fn userns(&self) -> io::Result<OwnedFd> {
        Ok(fs::File::open(format!("/proc/{}/ns/user", self.pid))?.into())
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let mut status = 0;
        // SAFETY: our own child, killed (what it made is pinned by now, or not wanted) and
        // reaped once.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, &mut status, 0);
        }
    }
}

/// Opens a pinned user namespace.
pub fn open(path: &Path) -> io::Result<OwnedFd> {
    Ok(fs::File::open(path)?.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_spread_and_skip_taken_ones() {
        let choose = |id: &str, taken: &[u32]| choose_base(id, |b| Ok::<_, ()>(!taken.contains(&b))).unwrap().unwrap();
        let a = choose("0123", &[]);
        assert!((FIRST..FIRST + RANGES * SIZE).contains(&a) && (a - FIRST).is_multiple_of(SIZE));
        assert_eq!(choose("0123", &[]), a, "the same id gets the same range");
        let b = choose("0123", &[a]);
        assert_ne!(a, b);
        assert!((b - FIRST).is_multiple_of(SIZE));
        assert_ne!(choose("4567", &[]), a);
        assert_eq!(choose_base("0123", |_| Ok::<_, ()>(false)), Ok(None), "every range taken");
    }
}
