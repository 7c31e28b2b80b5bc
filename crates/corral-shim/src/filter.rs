//! Seccomp filters compiled once and installed by the container's init just before exec.
//!
//! libcontainer compiles a bundle's seccomp profile with libseccomp inside every container's
//! init: a few milliseconds per start, for a profile that is nearly always the same. Here the
//! profile is compiled to its BPF program once, cached on disk by a digest of the profile, the
//! libseccomp version and the kernel release. The container is then created from a copy of the
//! spec without the profile, and an executor installs the cached program with one `seccomp(2)`
//! call right before `execve`. The program is what libseccomp's own load would install: the
//! same translation of actions, operators and architectures, the same skipping of rules that
//! repeat the default action or name syscalls this kernel does not know.
//!
//! Profiles this path does not take stay with libcontainer, unchanged: anything with a notify
//! action, a listener or the wait-killable flag; processes without `noNewPrivileges` (their
//! filter has to be loaded before the capabilities are dropped, which an executor runs after);
//! specs with hooks (libcontainer runs some of them after it loads the filter, and hands them
//! the bundle); and everything, when `CORRAL_SECCOMP_CACHE=off` is in the environment.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read, Seek};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorSetEnvsError, ExecutorValidationError};
use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall, ScmpVersion};
use oci_spec::runtime::{Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator, Spec};
use sha2::{Digest, Sha256};

/// Largest program the kernel accepts (BPF_MAXINSNS), in 8-byte instructions.
const MAX_INSTRUCTIONS: usize = 4096;

/// Part of every cache key: a change to the translation below must not reuse old programs.
const FORMAT: &str = concat!("corral seccomp program 1, corral-shim ", env!("CARGO_PKG_VERSION"));

#[derive(Debug, thiserror::Error)]
enum FilterError {
    #[error("compiling the seccomp profile: {0}")]
    Compile(String),
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A compiled filter: the BPF program and the `seccomp(2)` flags to install it with.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Compiled {
    program: Vec<libc::sock_filter>,
    flags: libc::c_ulong,
}

impl Compiled {
    /// Installs the filter on the calling thread. Needs no_new_privs (or CAP_SYS_ADMIN).
    fn install(&self) -> io::Result<()> {
        let prog =
            libc::sock_fprog { len: self.program.len() as libc::c_ushort, filter: self.program.as_ptr().cast_mut() };
        // SAFETY: `prog` points at `self.program`, which outlives the call; the kernel copies it.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                self.flags,
                &prog as *const libc::sock_fprog,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.program.len() * 8);
        out.extend_from_slice(&self.flags.to_le_bytes());
        for i in &self.program {
            out.extend_from_slice(&i.code.to_ne_bytes());
            out.push(i.jt);
            out.push(i.jf);
            out.extend_from_slice(&i.k.to_ne_bytes());
        }
        out
    }

    fn from_bytes(bytes: &[u8]) -> Option<Compiled> {
        let (flags, program) = bytes.split_at_checked(8)?;
        let flags = u64::from_le_bytes(flags.try_into().ok()?) as libc::c_ulong;
        Some(Compiled { program: parse_program(program)?, flags })
    }
}

/// Reads a raw BPF program as libseccomp exports it: native-endian `sock_filter` records.
fn parse_program(bytes: &[u8]) -> Option<Vec<libc::sock_filter>> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(8) || bytes.len() / 8 > MAX_INSTRUCTIONS {
        return None;
    }
    Some(
        bytes
            .chunks_exact(8)
            .map(|c| libc::sock_filter {
                code: u16::from_ne_bytes([c[0], c[1]]),
                jt: c[2],
                jf: c[3],
                k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect(),
    )
}

/// The profile this path can take from `spec`, with its `seccomp(2)` flags; `None` leaves the
/// spec to libcontainer.
fn takeable(spec: &Spec) -> Option<(&LinuxSeccomp, libc::c_ulong)> {
    let profile = spec.linux().as_ref()?.seccomp().as_ref()?;
    if spec.process().as_ref()?.no_new_privileges() != Some(true) || spec.hooks().is_some() {
        return None;
    }
    let notify = |a: LinuxSeccompAction| a == LinuxSeccompAction::ScmpActNotify;
    if notify(profile.default_action())
        || profile.syscalls().iter().flatten().any(|s| notify(s.action()))
        || profile.listener_path().is_some()
    {
        return None;
    }
    let mut flags = 0;
    for flag in profile.flags().iter().flatten() {
        flags |= match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => libc::SECCOMP_FILTER_FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => libc::SECCOMP_FILTER_FLAG_TSYNC,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW,
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => return None,
        };
    }
    Some((profile, flags))
}

/// Compiles `profile` with libseccomp into its BPF program.
fn compile(profile: &LinuxSeccomp, flags: libc::c_ulong) -> Result<Compiled, FilterError> {
    let err = |what: &str, e: libseccomp::error::SeccompError| FilterError::Compile(format!("{what}: {e}"));
    let default = action(profile.default_action(), profile.default_errno_ret())?;
    let mut ctx = ScmpFilterContext::new(default).map_err(|e| err("creating the filter", e))?;
    for &a in profile.architectures().iter().flatten() {
        ctx.add_arch(arch(a)).map_err(|e| err("adding an architecture", e))?;
    }
    for rule in profile.syscalls().iter().flatten() {
        let act = action(rule.action(), rule.errno_ret())?;
        if act == default {
            continue;
        }
        let comparisons: Vec<ScmpArgCompare> = rule
            .args()
            .iter()
            .flatten()
            .map(|a| ScmpArgCompare::new(a.index() as u32, operator(a.op(), a.value_two()), a.value()))
            .collect();
        let mut indexes = HashSet::new();
        // libseccomp compares each argument at most once per rule: a rule that compares one
        // argument twice becomes one rule per comparison, as runc and libcontainer do.
        let split = !rule.args().iter().flatten().all(|a| indexes.insert(a.index()));
        for name in rule.names() {
            let Ok(sc) = ScmpSyscall::from_name(name) else {
                continue; // unknown to this libseccomp or kernel, as libcontainer skips it
            };
            let added = if comparisons.is_empty() {
                ctx.add_rule(act, sc).map(drop)
            } else if split {
                comparisons
                    .iter()
                    .try_for_each(|c| ctx.add_rule_conditional(act, sc, std::slice::from_ref(c)).map(drop))
            } else {
                ctx.add_rule_conditional(act, sc, &comparisons).map(drop)
            };
            added.map_err(|e| err(&format!("adding the rule for {name}"), e))?;
        }
    }
    let exported = exported_bpf(&ctx)?;
    let program = parse_program(&exported).ok_or_else(|| {
        FilterError::Compile(format!("libseccomp exported {} bytes, not a BPF program", exported.len()))
    })?;
    Ok(Compiled { program, flags })
}

fn exported_bpf(ctx: &ScmpFilterContext) -> Result<Vec<u8>, FilterError> {
    let io = |source| FilterError::Io { action: "exporting", path: PathBuf::from("memfd"), source };
    // SAFETY: memfd_create with a static name; the fd is owned right away.
    let fd = unsafe { libc::memfd_create(c"corral-seccomp".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io(io::Error::last_os_error()));
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let mut file = fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    ctx.export_bpf(file.as_fd()).map_err(|e| FilterError::Compile(format!("exporting the program: {e}")))?;
    let mut bytes = Vec::new();
    file.rewind().map_err(io)?;
    file.read_to_end(&mut bytes).map_err(io)?;
    Ok(bytes)
}

/// The compiled filter for `profile`, from the cache under `dir` or compiled (and stored) now.
/// A cache file that does not check out is compiled again and replaced.
fn cached(dir: &Path, profile: &LinuxSeccomp, flags: libc::c_ulong) -> Result<Compiled, FilterError> {
    let path = dir.join(format!("{}.bpf", cache_key(profile, flags)));
    if let Ok(bytes) = fs::read(&path) {
        if let Some(compiled) = verified(&bytes) {
            return Ok(compiled);
        }
        tracing::warn!(path = %path.display(), "cached seccomp program is damaged; compiling it again");
    }
    let compiled = compile(profile, flags)?;
    if let Err(e) = store(&path, &compiled) {
        tracing::warn!(error = %e, "could not cache the seccomp program; it is compiled again next time");
    }
    Ok(compiled)
}

/// Writes `compiled` to `path` through a temporary file of this writer's own, so concurrent
/// shims never see each other's half-written files.
fn store(path: &Path, compiled: &Compiled) -> Result<(), FilterError> {
    let dir = path.parent().expect("cache files live in a directory");
    let io = |action| move |source| FilterError::Io { action, path: dir.to_path_buf(), source };
    let body = compiled.to_bytes();
    let mut file = Sha256::digest(&body).to_vec();
    file.extend_from_slice(&body);
    fs::create_dir_all(dir).map_err(io("creating"))?;
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let tmp = dir.join(format!(".tmp.{}.{nanos}", std::process::id()));
    let written = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .and_then(|mut f| io::Write::write_all(&mut f, &file))
        .and_then(|()| fs::rename(&tmp, path));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written.map_err(io("writing into"))
}

/// A cache file's program, if its digest matches its body.
fn verified(bytes: &[u8]) -> Option<Compiled> {
    let (digest, body) = bytes.split_at_checked(32)?;
    if Sha256::digest(body).as_slice() != digest {
        return None;
    }
    Compiled::from_bytes(body)
}

/// What the compiled program depends on: the profile, the flags, libseccomp's version and the
/// kernel (libseccomp asks it which actions exist).
fn cache_key(profile: &LinuxSeccomp, flags: libc::c_ulong) -> String {
    let mut h = Sha256::new();
    h.update(FORMAT);
    h.update(serde_json::to_vec(profile).expect("seccomp profiles serialize"));
    h.update(flags.to_le_bytes());
    if let Ok(v) = ScmpVersion::current() {
        h.update(format!("libseccomp {}.{}.{}", v.major, v.minor, v.micro));
    }
    h.update(fs::read("/proc/sys/kernel/osrelease").unwrap_or_default());
    h.update(std::env::consts::ARCH);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn action(a: LinuxSeccompAction, errno: Option<u32>) -> Result<ScmpAction, FilterError> {
    let errno = errno.map_or(libc::EPERM, |e| e as i32);
    Ok(match a {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => ScmpAction::KillThread,
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(errno),
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(
            u16::try_from(errno).map_err(|_| FilterError::Compile(format!("trace value {errno} is out of range")))?,
        ),
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActNotify => ScmpAction::Notify,
    })
}

fn operator(op: LinuxSeccompOperator, mask: Option<u64>) -> ScmpCompareOp {
    match op {
        LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
        LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
        LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
        LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
        LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
        LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
        LinuxSeccompOperator::ScmpCmpMaskedEq => ScmpCompareOp::MaskedEqual(mask.unwrap_or(0)),
    }
}

fn arch(a: Arch) -> ScmpArch {
    match a {
        Arch::ScmpArchNative => ScmpArch::Native,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        Arch::ScmpArchMips => ScmpArch::Mips,
        Arch::ScmpArchMips64 => ScmpArch::Mips64,
        Arch::ScmpArchMips64n32 => ScmpArch::Mips64N32,
        Arch::ScmpArchMipsel => ScmpArch::Mipsel,
        Arch::ScmpArchMipsel64 => ScmpArch::Mipsel64,
        Arch::ScmpArchMipsel64n32 => ScmpArch::Mipsel64N32,
        Arch::ScmpArchPpc => ScmpArch::Ppc,
        Arch::ScmpArchPpc64 => ScmpArch::Ppc64,
        Arch::ScmpArchPpc64le => ScmpArch::Ppc64Le,
        Arch::ScmpArchS390 => ScmpArch::S390,
        Arch::ScmpArchS390x => ScmpArch::S390X,
        Arch::ScmpArchRiscv64 => ScmpArch::Riscv64,
        Arch::ScmpArchParisc => ScmpArch::Parisc,
        Arch::ScmpArchParisc64 => ScmpArch::Parisc64,
        Arch::ScmpArchLoongarch64 => ScmpArch::Loongarch64,
        Arch::ScmpArchM68k => ScmpArch::M68k,
        Arch::ScmpArchSh => ScmpArch::Sh,
        Arch::ScmpArchSheb => ScmpArch::Sheb,
    }
}

/// libcontainer's default executor, with a compiled filter installed just before it execs the
/// container's program. A filter that does not install fails the start: the program never runs
/// unfiltered.
#[derive(Clone)]
pub struct FilteredExecutor {
    filter: Compiled,
}

impl Executor for FilteredExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        self.filter.install().map_err(|e| ExecutorError::Other(format!("installing the seccomp filter: {e}")))?;
        DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }

    fn setup_envs(&self, envs: std::collections::HashMap<String, String>) -> Result<(), ExecutorSetEnvsError> {
        DefaultExecutor {}.setup_envs(envs)
    }
}

/// What libcontainer is given for a bundle: where to read the spec, and the executor to run
/// the program with.
pub struct Prepared {
    /// The bundle itself, or `scratch` holding a copy of its spec without the seccomp profile.
    pub bundle: PathBuf,
    pub executor: Option<FilteredExecutor>,
}

/// Takes the seccomp profile out of `bundle`'s spec when this path can install it (see the
/// module docs): the filter comes from the cache under `cache`, the spec copy goes to
/// `scratch/config.json` with an absolute root path. Anything that does not work out leaves the
/// bundle as it is, for libcontainer to load the profile itself.
pub fn prepare(bundle: &Path, scratch: &Path, cache: &Path) -> Prepared {
    let as_is = || Prepared { bundle: bundle.to_path_buf(), executor: None };
    if std::env::var_os("CORRAL_SECCOMP_CACHE").is_some_and(|v| v == "off") {
        return as_is();
    }
    let mut spec = match Spec::load(bundle.join("config.json")) {
        Ok(spec) => spec,
        Err(_) => return as_is(), // libcontainer reports a bad spec in its own words
    };
    let Some((profile, flags)) = takeable(&spec) else { return as_is() };
    // The root is the only path libcontainer reads relative to the bundle; mount sources are
    // taken relative to its working directory, which the copy does not change.
    let filter = match cached(cache, profile, flags) {
        Ok(filter) => filter,
        Err(e) => {
            tracing::warn!(error = %e, "seccomp profile left to libcontainer");
            return as_is();
        }
    };
    let result = (|| -> Result<(), String> {
        let mut root = spec.root().clone().ok_or("the spec has no root")?;
        if root.path().is_relative() {
            let bundle = fs::canonicalize(bundle).map_err(|e| e.to_string())?;
            root.set_path(bundle.join(root.path()));
        }
        spec.set_root(Some(root));
        let mut linux = spec.linux().clone().ok_or("the spec has no linux section")?;
        linux.set_seccomp(None);
        spec.set_linux(Some(linux));
        fs::create_dir_all(scratch).map_err(|e| e.to_string())?;
        spec.save(scratch.join("config.json")).map_err(|e| e.to_string())
    })();
    match result {
        Ok(()) => Prepared { bundle: scratch.to_path_buf(), executor: Some(FilteredExecutor { filter }) },
        Err(e) => {
            tracing::warn!(error = %e, "seccomp profile left to libcontainer");
            as_is()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_runtime::seccomp::default_profile;
    use oci_spec::runtime::{LinuxBuilder, ProcessBuilder, SpecBuilder};

    fn spec_with(profile: LinuxSeccomp, nnp: Option<bool>) -> Spec {
        let mut process = ProcessBuilder::default().build().unwrap();
        process.set_no_new_privileges(nnp);
        SpecBuilder::default()
            .process(process)
            .linux(LinuxBuilder::default().seccomp(profile).build().unwrap())
            .build()
            .unwrap()
    }

    #[test]
    fn the_default_profile_compiles_to_a_program_the_kernel_would_take() {
        let compiled = compile(&default_profile(), 0).unwrap();
        let n = compiled.program.len();
        assert!(n > 100 && n <= MAX_INSTRUCTIONS, "{n} instructions");
        // The last instruction returns; a BPF program that falls off its end is rejected.
        assert_eq!(compiled.program.last().unwrap().code, 0x06, "BPF_RET | BPF_K");
    }

    #[test]
    fn the_cache_hands_back_what_it_compiled_and_recompiles_a_damaged_file() {
        let dir = tempfile::tempdir().unwrap();
        let profile = default_profile();
        let first = cached(dir.path(), &profile, libc::SECCOMP_FILTER_FLAG_LOG).unwrap();
        let files: Vec<PathBuf> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).collect();
        assert_eq!(files.len(), 1, "one cache file, no temporaries: {files:?}");
        assert_eq!(cached(dir.path(), &profile, libc::SECCOMP_FILTER_FLAG_LOG).unwrap(), first);

        let mut bytes = fs::read(&files[0]).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&files[0], &bytes).unwrap();
        assert!(verified(&bytes).is_none());
        assert_eq!(cached(dir.path(), &profile, libc::SECCOMP_FILTER_FLAG_LOG).unwrap(), first);
        assert!(verified(&fs::read(&files[0]).unwrap()).is_some(), "the damaged file was replaced");

        // Another profile, or other flags, is another entry.
        cached(dir.path(), &profile, 0).unwrap();
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn only_profiles_an_executor_can_install_are_taken() {
        assert!(takeable(&spec_with(default_profile(), Some(true))).is_some());
        // Without no_new_privs the filter must be loaded while capabilities remain.
        assert!(takeable(&spec_with(default_profile(), None)).is_none());
        assert!(takeable(&spec_with(default_profile(), Some(false))).is_none());

        let mut notify = default_profile();
        let mut rules = notify.syscalls().clone().unwrap();
        rules[0].set_action(LinuxSeccompAction::ScmpActNotify);
        notify.set_syscalls(Some(rules));
        assert!(takeable(&spec_with(notify, Some(true))).is_none());

        let mut hooked = spec_with(default_profile(), Some(true));
        hooked.set_hooks(Some(oci_spec::runtime::HooksBuilder::default().build().unwrap()));
        assert!(takeable(&hooked).is_none(), "hooks may run after the filter is loaded");

        let mut flagged = default_profile();
        flagged.set_flags(Some(vec![LinuxSeccompFilterFlag::SeccompFilterFlagLog]));
        let (_, flags) = takeable(&spec_with(flagged.clone(), Some(true))).map(|(p, f)| (p.clone(), f)).unwrap();
        assert_eq!(flags, libc::SECCOMP_FILTER_FLAG_LOG);
        flagged.set_flags(Some(vec![LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv]));
        assert!(takeable(&spec_with(flagged, Some(true))).is_none());
    }

    #[test]
    fn a_bad_trace_value_is_an_error_naming_it() {
        let mut profile = default_profile();
        profile.set_default_action(LinuxSeccompAction::ScmpActTrace);
        profile.set_default_errno_ret(Some(70000));
        let err = compile(&profile, 0).unwrap_err().to_string();
        assert!(err.contains("70000"), "{err}");
    }

    #[test]
    fn prepare_moves_the_profile_out_of_a_copy_of_the_spec() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path().join("bundle");
        fs::create_dir_all(bundle.join("rootfs")).unwrap();
        let mut spec = spec_with(default_profile(), Some(true));
        spec.set_root(Some(oci_spec::runtime::RootBuilder::default().path("rootfs").build().unwrap()));
        spec.set_mounts(None);
        spec.save(bundle.join("config.json")).unwrap();

        let prepared = prepare(&bundle, &dir.path().join("scratch"), &dir.path().join("cache"));
        assert!(prepared.executor.is_some());
        assert_eq!(prepared.bundle, dir.path().join("scratch"));
        let copy = Spec::load(prepared.bundle.join("config.json")).unwrap();
        assert!(copy.linux().as_ref().unwrap().seccomp().is_none());
        assert_eq!(copy.root().as_ref().unwrap().path(), &fs::canonicalize(&bundle).unwrap().join("rootfs"));
        assert!(Spec::load(bundle.join("config.json")).unwrap().linux().as_ref().unwrap().seccomp().is_some());

        // A profile libcontainer must load itself leaves the bundle alone.
        spec.process_mut().as_mut().unwrap().set_no_new_privileges(None);
        spec.save(bundle.join("config.json")).unwrap();
        let prepared = prepare(&bundle, &dir.path().join("scratch2"), &dir.path().join("cache"));
        assert!(prepared.executor.is_none());
        assert_eq!(prepared.bundle, bundle);
        assert!(!dir.path().join("scratch2").exists());
    }
}
