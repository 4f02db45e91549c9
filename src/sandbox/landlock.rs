//! The Landlock ruleset: file access only beneath the export.

use std::path::PathBuf;

use landlock::{
    ABI, Access, AccessFs, AccessNet, BitFlags, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, Scope,
};

use super::SandboxError;

/// The newest Landlock ABI whose rights this ruleset asks for (and was tested with); a
/// kernel with an older one enforces what it knows (best effort, reported as
/// [`Enforcement::Partial`]).
const ABI_USED: ABI = ABI::V6;

/// What the process may still reach once confined.
#[derive(Debug, Clone, Default)]
pub struct Confinement {
    /// The exported directory: everything beneath it (read-only rights with `readonly`).
    /// `None`: no file at all (an in-memory export).
    pub export: Option<PathBuf>,
    /// Read-only rights on the export.
    pub readonly: bool,
    /// Directories where a unix socket may be made (the vhost-user daemon binds its
    /// socket after the sandbox is up).
    pub socket_dirs: Vec<PathBuf>,
    /// Files that may be opened for reading and writing (the vhost-user socket's lock).
    pub writable_files: Vec<PathBuf>,
    /// Hierarchies that may be read (none for the server, which opens what it needs
    /// before; `/proc/self` for a process that makes a HostFs once confined).
    pub readable: Vec<PathBuf>,
    /// Hierarchies whose directories may be listed, no file in them read (none for the
    /// server).
    pub listable: Vec<PathBuf>,
}

/// What the kernel enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enforcement {
    /// Every right asked for.
    Full,
    /// Those the kernel's Landlock ABI knows (an older kernel).
    Partial,
    /// None: the kernel has no Landlock, or it is disabled.
    None,
}

/// Confines the calling thread, and the threads and processes it starts afterwards, to
/// `c` (see the module doc). Also sets `PR_SET_NO_NEW_PRIVS`.
pub fn landlock(c: &Confinement) -> Result<Enforcement, SandboxError> {
    let err = |e: &dyn std::fmt::Display| SandboxError::Landlock(e.to_string());
    let all = AccessFs::from_all(ABI_USED);
    // Never needed: running programs, and device ioctls (HostFs never opens devices).
    let rw = all & !(AccessFs::Execute | AccessFs::IoctlDev);
    let ro: BitFlags<AccessFs> = AccessFs::ReadFile | AccessFs::ReadDir;
    let file_rw: BitFlags<AccessFs> = AccessFs::ReadFile | AccessFs::WriteFile;
    let mut ruleset = Ruleset::default()
        .handle_access(all)
        .map_err(|e| err(&e))?
        // Handled with no rule: no tcp port may be bound or connected to.
        .handle_access(AccessNet::BindTcp | AccessNet::ConnectTcp)
        .map_err(|e| err(&e))?
        .scope(Scope::from_all(ABI_USED))
        .map_err(|e| err(&e))?
        .create()
        .map_err(|e| err(&e))?;
    let open = |p: &PathBuf| PathFd::new(p).map_err(|e| err(&format!("{}: {e}", p.display())));
    // One rule for each path, with the access it gives beneath it.
    let export = if c.readonly { ro } else { rw };
    let rules = beneath(c.export.as_slice(), export)
        .chain(beneath(&c.socket_dirs, AccessFs::MakeSock.into()))
        .chain(beneath(&c.readable, ro))
        .chain(beneath(&c.listable, AccessFs::ReadDir.into()))
        .chain(beneath(&c.writable_files, file_rw));
    for (path, access) in rules {
        ruleset = ruleset
            .add_rule(PathBeneath::new(open(path)?, access))
            .map_err(|e| err(&e))?;
    }
    let status = ruleset.restrict_self().map_err(|e| err(&e))?;
    Ok(match status.ruleset {
        RulesetStatus::FullyEnforced => Enforcement::Full,
        RulesetStatus::PartiallyEnforced => Enforcement::Partial,
        RulesetStatus::NotEnforced => Enforcement::None,
    })
}

/// Each of `paths` with the access a rule gives beneath it.
fn beneath(
    paths: &[PathBuf],
    access: BitFlags<AccessFs>,
) -> impl Iterator<Item = (&PathBuf, BitFlags<AccessFs>)> {
    paths.iter().map(move |p| (p, access))
}
