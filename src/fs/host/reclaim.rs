//! Bounded descriptors: reclaiming idle node descriptors near the budget and reopening
//! them on demand, free of the unreclaim race of QEMU's CVE-2021-20181.
//!
//! - **Taking a slot** ([`HostFs::slot`]): at 90 % of [`super::HostOptions::max_fds`],
//!   idle node descriptors are closed, least recently used first, down to 75 %; if the
//!   budget is still full, every idle one is, and only then is the answer `EMFILE`.
//! - **Idle** means: no [`NodeFd`] guard alive (no operation is using it), no open
//!   [`super::HostFile`] of the node, not pinned, and the inode still has a link (checked
//!   with `fstat` right before closing; a node whose inode has none is pinned instead).
//!   Open files' own descriptors are never reclaimed.
//! - **Reopening** ([`HostFs::node_fd`]): the nearest ancestor that holds its descriptor is
//!   found by following the records (the root always holds one); then, from it downwards,
//!   each step is exactly a lookup — one `openat2(parent, name, O_PATH|O_NOFOLLOW,
//!   RESOLVE_BENEATH|NO_SYMLINKS|NO_MAGICLINKS)` — whose result must be the recorded inode
//!   (`st_dev`, `st_ino`, type, and birth time where the filesystem has one) or the node is
//!   stale: `ESTALE`, and the descriptor is closed unused. So a reopened node is the same
//!   file or nothing: never a file put in its place on the host, never a path string,
//!   never a step out of the parent's directory.
//! - **Keeping records true**: a guest rename updates the moved node's record (after
//!   checking the new name holds that inode); a rename over a name, or an unlink, first
//!   makes sure the node losing the name holds its descriptor, then pins it if the name
//!   it was recorded as is gone or its inode has no link left.
//!
//! Host-side changes while a node is reclaimed (a rename, an unlink, a replacement) make it
//! stale (`ESTALE`), as in QEMU; it is never made to refer to another file.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{AtFlags, fstat, statat};

use crate::fs::{FsResult, Name};
use crate::protocol::Errno;

use super::cache::Probe;
use super::node::{FdSlot, HostNode, Identity, MAX_DEPTH, NodeFd, Reclaim};
use super::{HostFs, errno};

impl HostFs {
    /// Reserves a descriptor, reclaiming idle ones first when the budget is nearly used.
    pub(super) fn slot(&self) -> FsResult<FdSlot> {
        if self.budget.used() >= self.budget.high() {
            self.reclaim(self.budget.low());
        }
        match self.budget.take() {
            Err(_) => {
                self.reclaim(0);
                self.budget.take()
            }
            ok => ok,
        }
    }

    /// Closes idle node descriptors, least recently used first, until at most `target`
    /// descriptors are in use or none is idle. Returns how many were closed.
    pub(super) fn reclaim(&self, target: usize) -> usize {
        let mut idle: Vec<(u64, HostNode)> = self
            .registry
            .all()
            .into_iter()
            .filter_map(|n| n.idle_since().map(|t| (t, n)))
            .collect();
        idle.sort_by_key(|(t, _)| *t);
        let mut closed = 0;
        for (_, n) in &idle {
            if self.budget.used() <= target {
                break;
            }
            if n.try_reclaim() == Reclaim::Closed {
                closed += 1;
            }
        }
        closed
    }

    /// The node's descriptor for use, reopened through its records if it was reclaimed.
    pub(super) fn node_fd(&self, node: &HostNode) -> FsResult<NodeFd> {
        if let Some(fd) = node.held() {
            return Ok(fd);
        }
        // A node made with its file: its own descriptor from the open one (the magic
        // link names the inode, so no name is involved).
        if let Some(lent) = node.lent() {
            let fd = self.path_fd_of(lent.as_fd())?;
            return Ok(node.install(fd, self.slot()?));
        }
        // Up to the nearest ancestor that holds its descriptor.
        let mut chain: Vec<(HostNode, Name)> = Vec::new();
        let mut cur = node.clone();
        let mut base = loop {
            let (parent, name) = cur.origin().ok_or(Errno::ESTALE)?;
            chain.push((cur, name));
            if let Some(fd) = parent.held() {
                break fd;
            }
            if chain.len() >= MAX_DEPTH {
                return Err(Errno::ESTALE);
            }
            cur = parent;
        };
        // Down again, one verified lookup per step.
        for (n, name) in chain.iter().rev() {
            base = self.reopen_at(n, base.fd(), name)?;
        }
        Ok(base)
    }

    /// Reopens `node` as `name` in `dir`, exactly as a lookup, and gives it the descriptor
    /// if it is the node's inode (`ESTALE` otherwise).
    pub(super) fn reopen_at(
        &self,
        node: &HostNode,
        dir: BorrowedFd<'_>,
        name: &Name,
    ) -> FsResult<NodeFd> {
        let slot = self.slot()?;
        let fd = self.lookup_at(dir, name).map_err(|e| match e {
            Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP | Errno::EXDEV => Errno::ESTALE,
            e => e,
        })?;
        let st = fstat(&fd).map_err(errno)?;
        if Identity::of(fd.as_fd(), &st) != *node.identity() {
            return Err(Errno::ESTALE);
        }
        Ok(node.install(fd, slot))
    }

    /// The node for a descriptor just looked up as `origin` (`None`: reached by `..`, no
    /// name known): the registered node of its inode if there is one (the descriptor then
    /// serves it if it had been reclaimed, and the record is updated), a new node
    /// otherwise.
    pub(super) fn intern(
        &self,
        fd: OwnedFd,
        origin: Option<(&HostNode, &Name)>,
    ) -> FsResult<HostNode> {
        let id = Probe::of_fd(fd.as_fd())?.id;
        self.intern_as(fd, id, origin)
    }

    /// [`Self::intern`] of a descriptor whose identity the caller has just read.
    pub(super) fn intern_as(
        &self,
        fd: OwnedFd,
        id: Identity,
        origin: Option<(&HostNode, &Name)>,
    ) -> FsResult<HostNode> {
        if (id.dev, id.ino) == self.root.id() {
            return Ok(self.root.clone());
        }
        if let Some(n) = self.registry.get((id.dev, id.ino))
            && *n.identity() == id
        {
            if let Some((dir, name)) = origin {
                n.set_origin(dir, name);
            }
            if !n.holds_fd() {
                n.install(fd, self.slot()?);
            }
            return Ok(n);
        }
        let slot = self.slot()?;
        let origin = origin.map(|(d, n)| (d.clone(), n.clone()));
        Ok(HostNode::new(fd, id, slot, origin, &self.registry))
    }

    /// The registered node now named `name` in `dir`, holding its descriptor (reopened if
    /// need be), for an operation about to take that name away.
    pub(super) fn losing_name(&self, dir: BorrowedFd<'_>, name: &Name) -> Option<Losing> {
        let st = statat(dir, name.as_bytes(), AtFlags::SYMLINK_NOFOLLOW).ok()?;
        let n = self.registry.get((st.st_dev, st.st_ino))?;
        self.losing(n)
    }

    /// [`Self::losing_name`] for a node already known to be the one named. A node lent
    /// its open file's descriptor keeps borrowing it (no descriptor of its own is made
    /// for an unlink: the create+remove of a temporary file then never opens one).
    pub(super) fn losing(&self, n: HostNode) -> Option<Losing> {
        if let Some(lent) = n.lent() {
            return Some(Losing {
                node: n,
                fd: LosingFd::Lent(lent),
            });
        }
        let fd = self.node_fd(&n).ok()?;
        Some(Losing {
            node: n,
            fd: LosingFd::Held(fd),
        })
    }

    /// After `name` in `dir` was removed (unlink, or renamed over): pins the node that had
    /// it if that was its recorded name or its inode has no link left.
    pub(super) fn lost_name(&self, lost: Option<Losing>, dir: &HostNode, name: &Name) {
        let Some(Losing { node: n, fd }) = lost else {
            return;
        };
        self.cache.forget(&n);
        // The recorded name first: the stat is needed only when it was another link.
        let fd = match &fd {
            LosingFd::Held(h) => h.fd(),
            LosingFd::Lent(l) => l.as_fd(),
        };
        if n.reached_as(dir, name) || fstat(fd).map_or(true, |st| st.st_nlink == 0) {
            n.pin();
        }
    }

    /// After a rename of `old` (inode `src`) to `name` in `dir`: the moved node's record
    /// follows, if `name` holds that inode now (else a host race moved things; the node is
    /// left as it was and may be stale).
    pub(super) fn moved(
        &self,
        src: (u64, u64),
        dir: &HostNode,
        dir_fd: BorrowedFd<'_>,
        name: &Name,
    ) {
        let Some(n) = self.registry.get(src) else {
            return;
        };
        let Ok(st) = statat(dir_fd, name.as_bytes(), AtFlags::SYMLINK_NOFOLLOW) else {
            return;
        };
        if (st.st_dev, st.st_ino) != src {
            return;
        }
        if !n.set_origin(dir, name) {
            // The records would be circular: keep the node open for good instead, reopened
            // by its new name.
            if let Some(fd) = n.held().or_else(|| self.reopen_at(&n, dir_fd, name).ok()) {
                n.pin();
                drop(fd);
            }
        }
    }
}

/// The node losing a name, and the descriptor that keeps it reachable meanwhile.
pub(super) struct Losing {
    node: HostNode,
    fd: LosingFd,
}

impl Losing {
    pub(super) fn id(&self) -> (u64, u64) {
        self.node.id()
    }
}

enum LosingFd {
    Held(NodeFd),
    /// The open file's, which a lent node borrows (see `HostNode::new_lent`).
    Lent(std::sync::Arc<OwnedFd>),
}
