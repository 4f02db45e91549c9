//! The seccomp allow-list: the syscalls a serving co9p makes, found by running it (strace
//! and `--seccomp log` under co9p-bench, the test suites and a Linux guest, over tcp, unix
//! sockets and vhost-user).
//!
//! Where a syscall has an older form and an `*at` form (`mkdir`/`mkdirat`, ...), both are
//! allowed: they grant the same power, and which one libc or std picks is theirs to change.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use super::SandboxError;

/// What a syscall outside the list does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeccompMode {
    /// The kernel kills the process (`SECCOMP_RET_KILL_PROCESS`, SIGSYS).
    Kill,
    /// The kernel logs it (audit, `type=1326`) and lets it run: for finding what is missing.
    Log,
}

/// Which command the list is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// `co9p serve`: its listener is bound before the sandbox; it only accepts.
    Serve,
    /// `co9p vhost-user`: binds its socket after the sandbox, polls eventfds with epoll,
    /// receives the guest's memory as descriptors (`SCM_RIGHTS`) and maps it.
    VhostUser,
}

/// Syscalls every profile makes.
const COMMON: &[libc::c_long] = &[
    // memory
    libc::SYS_brk,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
    // threads, time, signals
    libc::SYS_futex,
    libc::SYS_clone,
    libc::SYS_clone3,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_set_tid_address,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_tgkill,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_prctl,
    libc::SYS_sigaltstack,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_restart_syscall,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_getrandom,
    libc::SYS_prlimit64,
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getegid,
    // a panic's backtrace shortens paths against the working directory
    libc::SYS_getcwd,
    // descriptors and I/O
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_preadv2,
    libc::SYS_pwritev2,
    libc::SYS_lseek,
    libc::SYS_close,
    libc::SYS_fcntl,
    libc::SYS_dup,
    libc::SYS_dup3,
    libc::SYS_ppoll,
    // files (HostFs)
    libc::SYS_openat,
    libc::SYS_openat2,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_fstatfs,
    libc::SYS_statfs,
    libc::SYS_getdents64,
    // kept listings are dropped by inotify (listing.rs)
    libc::SYS_inotify_init1,
    libc::SYS_inotify_add_watch,
    libc::SYS_inotify_rm_watch,
    libc::SYS_readlinkat,
    libc::SYS_mkdirat,
    libc::SYS_mknodat,
    libc::SYS_symlinkat,
    libc::SYS_linkat,
    libc::SYS_unlinkat,
    libc::SYS_renameat,
    libc::SYS_renameat2,
    libc::SYS_fchmod,
    libc::SYS_fchmodat,
    libc::SYS_fchown,
    libc::SYS_fchownat,
    libc::SYS_utimensat,
    libc::SYS_ftruncate,
    libc::SYS_fallocate,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_flock,
    libc::SYS_getxattr,
    libc::SYS_lgetxattr,
    libc::SYS_fgetxattr,
    libc::SYS_setxattr,
    libc::SYS_lsetxattr,
    libc::SYS_fsetxattr,
    libc::SYS_listxattr,
    libc::SYS_llistxattr,
    libc::SYS_flistxattr,
    libc::SYS_removexattr,
    libc::SYS_lremovexattr,
    libc::SYS_fremovexattr,
    // the stream server's reader threads wait on their connections in epoll, woken by an
    // eventfd; the vhost-user daemon polls its eventfds the same way
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_pwait2,
    libc::SYS_eventfd2,
    // sockets already made
    libc::SYS_accept4,
    libc::SYS_recvfrom,
    libc::SYS_recvmsg,
    libc::SYS_sendto,
    libc::SYS_sendmsg,
    libc::SYS_shutdown,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
    libc::SYS_getsockopt,
    libc::SYS_setsockopt,
];

/// The older forms, where the architecture has them (x86_64; aarch64 only has `*at`).
#[cfg(target_arch = "x86_64")]
const LEGACY: &[libc::c_long] = &[
    libc::SYS_open,
    libc::SYS_stat,
    libc::SYS_lstat,
    libc::SYS_readlink,
    libc::SYS_mkdir,
    libc::SYS_rmdir,
    libc::SYS_unlink,
    libc::SYS_rename,
    libc::SYS_symlink,
    libc::SYS_link,
    libc::SYS_chmod,
    libc::SYS_chown,
    libc::SYS_lchown,
    libc::SYS_poll,
    libc::SYS_epoll_wait,
    libc::SYS_dup2,
    libc::SYS_accept,
];
#[cfg(not(target_arch = "x86_64"))]
const LEGACY: &[libc::c_long] = &[];

/// The vhost-user daemon's own.
const VHOST_USER: &[libc::c_long] = &[libc::SYS_socket, libc::SYS_bind, libc::SYS_listen];

/// `ioctl` only for these requests: non-blocking and close-on-exec flags, and the
/// terminal check of the log writer.
const IOCTLS: &[u64] = &[libc::FIONBIO, libc::FIOCLEX, libc::FIONCLEX, libc::TCGETS];

/// The syscalls allowed (without conditions) for `profile`; `ioctl` is allowed for a few
/// requests only.
pub fn allowed_syscalls(profile: Profile) -> Vec<libc::c_long> {
    let mut v: Vec<_> = COMMON.iter().chain(LEGACY).copied().collect();
    if profile == Profile::VhostUser {
        v.extend_from_slice(VHOST_USER);
    }
    v.sort_unstable();
    v.dedup();
    v
}

fn target_arch() -> Result<TargetArch, SandboxError> {
    if cfg!(target_arch = "x86_64") {
        Ok(TargetArch::x86_64)
    } else if cfg!(target_arch = "aarch64") {
        Ok(TargetArch::aarch64)
    } else {
        Err(SandboxError::Unsupported(
            "a seccomp allow-list for this architecture",
        ))
    }
}

/// The compiled filter for `profile`.
pub fn seccomp_filter(profile: Profile, mode: SeccompMode) -> Result<BpfProgram, SandboxError> {
    let err = |e: &dyn std::fmt::Display| SandboxError::Seccomp(e.to_string());
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = allowed_syscalls(profile)
        .into_iter()
        .map(|nr| (nr, Vec::new()))
        .collect();
    let ioctl = IOCTLS
        .iter()
        .map(|&req| {
            SeccompCondition::new(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, req)
                .and_then(|c| SeccompRule::new(vec![c]))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(&e))?;
    rules.insert(libc::SYS_ioctl, ioctl);
    let mismatch = match mode {
        SeccompMode::Kill => SeccompAction::KillProcess,
        SeccompMode::Log => SeccompAction::Log,
    };
    let filter = SeccompFilter::new(rules, mismatch, SeccompAction::Allow, target_arch()?)
        .map_err(|e| err(&e))?;
    BpfProgram::try_from(filter).map_err(|e| err(&e))
}

/// Installs the filter for `profile` on every thread of the process (and so on the
/// threads started afterwards). Also sets `PR_SET_NO_NEW_PRIVS`.
pub fn seccomp(profile: Profile, mode: SeccompMode) -> Result<(), SandboxError> {
    // SAFETY: PR_GET_SECCOMP takes no pointer; it fails (EINVAL) only where the kernel
    // was built without seccomp.
    if unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) } < 0 {
        return Err(SandboxError::Unsupported("seccomp"));
    }
    let filter = seccomp_filter(profile, mode)?;
    seccompiler::apply_filter_all_threads(&filter).map_err(|e| SandboxError::Seccomp(e.to_string()))
}
