//! The kernel's own confinement of a serving process, applied after set-up and before the
//! first request (design brief, "Sandbox"): a bug in our path resolution or in a request
//! handler must not become an escape.
//!
//! - [`landlock`]: a Landlock ruleset (the `landlock` crate) lets the process open, create,
//!   remove, rename and link files only beneath the export (read-only rights for a
//!   read-only export; none at all for an in-memory one), plus the few paths a transport
//!   names ([`Confinement::socket_dirs`], [`Confinement::writable_files`]); it may not bind
//!   or connect tcp ports, reach abstract unix sockets or signal processes outside itself.
//!   HostFs needs no `/proc` rule: it opens `/proc/self/fd` before the sandbox, and a reopen
//!   through `/proc/self/fd/N` is checked against the file it reaches, beneath the export.
//!   Landlock does not govern calls on files already reached (`fchmod`, `fchown`, xattrs,
//!   `utimensat`, `statx`): those rest on HostFs's resolver alone.
//! - [`seccomp`]: a seccomp-BPF allow-list (rust-vmm's `seccompiler`) of the syscalls the
//!   server makes ([`Profile`]: `co9p serve`, whose reader threads wait in epoll, or the
//!   vhost-user daemon, which also binds its socket, polls eventfds and maps the guest's
//!   memory); any other syscall kills the
//!   process ([`SeccompMode::Kill`]) or is logged by the kernel ([`SeccompMode::Log`]).
//!
//! Both act on the calling thread and the threads it starts afterwards, so they are
//! applied before any server thread exists (Landlock cannot reach threads already running;
//! the seccomp filter is also synchronised to every thread).

mod landlock;
mod seccomp;

pub use self::landlock::{Confinement, Enforcement, landlock};
pub use self::seccomp::{Profile, SeccompMode, allowed_syscalls, seccomp, seccomp_filter};

/// Why the sandbox could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("landlock: {0}")]
    /// Landlock refused the ruleset.
    Landlock(String),
    #[error("seccomp: {0}")]
    /// The seccomp filter could not be built or installed.
    Seccomp(String),
    /// The kernel (or this architecture) lacks the feature.
    #[error("{0} is not supported here")]
    Unsupported(&'static str),
}
