//! The default seccomp profile: an allowlist. Anything not listed fails with EPERM.
//!
//! Left out on purpose, as in the profiles container users know: kernel modules and kexec,
//! mount and namespace manipulation (`mount`, `umount2`, `pivot_root`, `setns`, `unshare`, the
//! new mount API), `bpf`, `perf_event_open`, `ptrace`, `process_vm_*`, keyrings, clock and
//! time setting, `reboot`, swap, `acct`, `quotactl`, raw I/O ports, `userfaultfd`, `kcmp`,
//! `open_by_handle_at` and the like. `clone` may not create namespaces, and `clone3` reports
//! ENOSYS so that libc falls back to `clone`, whose flags can be checked.

use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompOperator, LinuxSyscall};

/// Syscalls every container may make, grouped loosely by what they are for.
const ALLOWED: &[&str] = &[
    // files and directories
    "access",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "close",
    "close_range",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "flock",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "getcwd",
    "getdents",
    "getdents64",
    "lchown",
    "lchown32",
    "link",
    "linkat",
    "_llseek",
    "lseek",
    "lstat",
    "lstat64",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "newfstatat",
    "open",
    "openat",
    "openat2",
    "pread64",
    "preadv",
    "preadv2",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "rename",
    "renameat",
    "renameat2",
    "rmdir",
    "sendfile",
    "sendfile64",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "tee",
    "truncate",
    "truncate64",
    "umask",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "futimesat",
    "vmsplice",
    "write",
    "writev",
    // extended attributes
    "fgetxattr",
    "flistxattr",
    "fremovexattr",
    "fsetxattr",
    "getxattr",
    "lgetxattr",
    "listxattr",
    "llistxattr",
    "lremovexattr",
    "lsetxattr",
    "removexattr",
    "setxattr",
    // file notification and I/O multiplexing
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "poll",
    "ppoll",
    "ppoll_time64",
    "pselect6",
    "pselect6_time64",
    "select",
    "_newselect",
    "signalfd",
    "signalfd4",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "io_cancel",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "io_setup",
    "io_submit",
    "ioctl",
    "pipe",
    "pipe2",
    // memory
    "brk",
    "madvise",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mremap",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "remap_file_pages",
    "get_mempolicy",
    "set_mempolicy_home_node",
    // processes and threads
    "arch_prctl",
    "capget",
    "capset",
    "clone",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "fork",
    "get_robust_list",
    "get_thread_area",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrlimit",
    "getrusage",
    "getsid",
    "gettid",
    "ioprio_get",
    "ioprio_set",
    "kill",
    "pidfd_open",
    "pidfd_send_signal",
    "pidfd_getfd",
    "prctl",
    "prlimit64",
    "rseq",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "set_robust_list",
    "set_thread_area",
    "set_tid_address",
    "setpgid",
    "setpriority",
    "setrlimit",
    "setsid",
    "tgkill",
    "tkill",
    "ugetrlimit",
    "vfork",
    "wait4",
    "waitid",
    "waitpid",
    "futex",
    "futex_time64",
    "futex_requeue",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "restart_syscall",
    "uname",
    "sysinfo",
    "getrandom",
    "getcpu",
    // users and groups
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getuid",
    "getuid32",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setuid",
    "setuid32",
    // signals
    "pause",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sigaction",
    "sigaltstack",
    "signal",
    "sigpending",
    "sigprocmask",
    "sigreturn",
    "sigsuspend",
    // time (reading, sleeping and timers; not setting the clock)
    "alarm",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "getitimer",
    "gettimeofday",
    "nanosleep",
    "setitimer",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "times",
    // sockets and IPC
    "accept",
    "accept4",
    "bind",
    "connect",
    "getpeername",
    "getsockname",
    "getsockopt",
    "listen",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "send",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setsockopt",
    "shutdown",
    "socket",
    "socketcall",
    "socketpair",
    "ipc",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    // io_uring is left out, as recent container profiles do; landlock is harmless and allowed
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "cachestat",
    "process_mrelease",
    "map_shadow_stack",
    "fanotify_mark",
];

/// `personality` values that only select an execution domain (Linux, 32-bit compat, no ASLR).
const PERSONALITIES: &[u64] = &[0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// The namespace flags `clone` may not use.
const CLONE_NAMESPACE_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP) as u64;

pub fn default_profile() -> LinuxSeccomp {
    let mut rules = Vec::new();
    let mut allow = LinuxSyscall::default();
    allow.set_names(ALLOWED.iter().filter(|n| **n != "clone").map(|s| s.to_string()).collect());
    allow.set_action(LinuxSeccompAction::ScmpActAllow);
    rules.push(allow);

    let mut clone = LinuxSyscall::default();
    clone.set_names(vec!["clone".into()]);
    clone.set_action(LinuxSeccompAction::ScmpActAllow);
    let arg = LinuxSeccompArgBuilder::default()
        .index(0usize)
        .value(CLONE_NAMESPACE_FLAGS)
        .value_two(0u64)
        .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
        .build()
        .expect("a complete seccomp argument");
    clone.set_args(Some(vec![arg]));
    rules.push(clone);

    let mut clone3 = LinuxSyscall::default();
    clone3.set_names(vec!["clone3".into()]);
    clone3.set_action(LinuxSeccompAction::ScmpActErrno);
    clone3.set_errno_ret(Some(libc::ENOSYS as u32));
    rules.push(clone3);

    for value in PERSONALITIES {
        let mut p = LinuxSyscall::default();
        p.set_names(vec!["personality".into()]);
        p.set_action(LinuxSeccompAction::ScmpActAllow);
        let arg = LinuxSeccompArgBuilder::default()
            .index(0usize)
            .value(*value)
            .op(LinuxSeccompOperator::ScmpCmpEq)
            .build()
            .expect("a complete seccomp argument");
        p.set_args(Some(vec![arg]));
        rules.push(p);
    }

    let mut profile = LinuxSeccomp::default();
    profile.set_default_action(LinuxSeccompAction::ScmpActErrno);
    profile.set_default_errno_ret(Some(libc::EPERM as u32));
    // The native architecture only: syscalls made through another ABI (32-bit x86 on x86_64)
    // are killed, and the filter compiles several times faster than one for four ABIs.
    profile.set_architectures(None);
    profile.set_syscalls(Some(rules));
    profile
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dangerous_syscalls_are_not_allowed() {
        for name in [
            "mount",
            "umount2",
            "pivot_root",
            "setns",
            "unshare",
            "bpf",
            "ptrace",
            "kexec_load",
            "init_module",
            "reboot",
            "swapon",
            "keyctl",
            "add_key",
            "perf_event_open",
            "open_by_handle_at",
            "clock_settime",
            "settimeofday",
            "io_uring_setup",
            "userfaultfd",
            "process_vm_readv",
        ] {
            assert!(!ALLOWED.contains(&name), "{name} must not be in the allowlist");
        }
    }

    #[test]
    fn the_allowlist_has_no_duplicates() {
        let mut names = ALLOWED.to_vec();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len());
    }
}
