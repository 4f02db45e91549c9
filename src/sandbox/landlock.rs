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
    if let Some(export) = &c.export {
        let access = if c.readonly { ro } else { rw };
        ruleset = ruleset
            .add_rule(PathBeneath::new(open(export)?, access))
            .map_err(|e| err(&e))?;
    }
    for dir in &c.socket_dirs {
        ruleset = ruleset
            .add_rule(PathBeneath::new(open(dir)?, AccessFs::MakeSock))
            .map_err(|e| err(&e))?;
    }
    for dir in &c.readable {
        ruleset = ruleset
            .add_rule(PathBeneath::new(open(dir)?, ro))
            .map_err(|e| err(&e))?;
    }
    for dir in &c.listable {
        ruleset = ruleset
            .add_rule(PathBeneath::new(open(dir)?, AccessFs::ReadDir))
            .map_err(|e| err(&e))?;
    }
    for file in &c.writable_files {
        ruleset = ruleset
            .add_rule(PathBeneath::new(open(file)?, file_rw))
            .map_err(|e| err(&e))?;
    }
    let status = ruleset.restrict_self().map_err(|e| err(&e))?;
    Ok(match status.ruleset {
        RulesetStatus::FullyEnforced => Enforcement::Full,
        RulesetStatus::PartiallyEnforced => Enforcement::Partial,
        RulesetStatus::NotEnforced => Enforcement::None,
    })
}
