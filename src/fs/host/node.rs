//! Nodes and open files of the host backend, and the budget that bounds the descriptors
//! they hold.
//!
//! A [`HostNode`] owns exactly one `O_PATH|O_NOFOLLOW` descriptor, shared by its clones: it
//! pins the inode, so the file's type (checked once, at lookup) can never change under it,
//! and every later operation goes through the descriptor, never through a path. A
//! [`HostFile`] owns exactly one open file description (plus, for a directory, the stream
//! state that makes readdir cookies resumable).

use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rustix::fs::{Dir, FileType, Stat};

use crate::fs::FsResult;
use crate::protocol::Errno;

/// How many descriptors nodes and open files may hold at once. Taking a slot beyond the
/// limit fails with `EMFILE` instead of letting the process run out of descriptors.
#[derive(Debug)]
pub(super) struct FdBudget {
    used: AtomicUsize,
    max: usize,
}

impl FdBudget {
    pub(super) fn new(max: usize) -> Arc<FdBudget> {
        Arc::new(FdBudget {
            used: AtomicUsize::new(0),
            max,
        })
    }

    /// Reserves one descriptor; the slot is given back when dropped.
    pub(super) fn take(self: &Arc<Self>) -> FsResult<FdSlot> {
        let prev = self.used.fetch_add(1, Ordering::AcqRel);
        if prev >= self.max {
            self.used.fetch_sub(1, Ordering::AcqRel);
            return Err(Errno::EMFILE);
        }
        Ok(FdSlot(self.clone()))
    }

    pub(super) fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

/// One reserved descriptor of an [`FdBudget`].
#[derive(Debug)]
pub(super) struct FdSlot(Arc<FdBudget>);

impl Drop for FdSlot {
    fn drop(&mut self) {
        self.0.used.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The host type of a node, fixed for the inode's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Dir,
    Reg,
    Symlink,
    /// A fifo, socket or device node: never opened.
    Special,
}

impl Kind {
    pub(super) fn of(st: &Stat) -> Kind {
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => Kind::Dir,
            FileType::RegularFile => Kind::Reg,
            FileType::Symlink => Kind::Symlink,
            _ => Kind::Special,
        }
    }
}

/// A file of the export, held like an `O_PATH` descriptor (see the module doc).
#[derive(Clone)]
pub struct HostNode(Arc<NodeInner>);

struct NodeInner {
    // Field order is drop order: the descriptor closes before its slot is given back.
    fd: OwnedFd,
    _slot: FdSlot,
    kind: Kind,
    dev: u64,
    ino: u64,
}

impl HostNode {
    pub(super) fn new(fd: OwnedFd, st: &Stat, slot: FdSlot) -> HostNode {
        HostNode(Arc::new(NodeInner {
            fd,
            _slot: slot,
            kind: Kind::of(st),
            dev: st.st_dev,
            ino: st.st_ino,
        }))
    }

    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        self.0.fd.as_fd()
    }

    pub(super) fn raw_fd(&self) -> RawFd {
        self.0.fd.as_raw_fd()
    }

    pub(super) fn kind(&self) -> Kind {
        self.0.kind
    }

    /// The host `(st_dev, st_ino)` of the inode.
    pub(super) fn id(&self) -> (u64, u64) {
        (self.0.dev, self.0.ino)
    }

    pub(super) fn require_dir(&self) -> FsResult<()> {
        match self.0.kind {
            Kind::Dir => Ok(()),
            _ => Err(Errno::ENOTDIR),
        }
    }
}

impl fmt::Debug for HostNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostNode")
            .field("fd", &self.0.fd.as_raw_fd())
            .field("kind", &self.0.kind)
            .field("dev", &self.0.dev)
            .field("ino", &self.0.ino)
            .finish()
    }
}

/// An open file of the export: one open file description (which owns the file's POSIX
/// locks, `F_OFD_*`, released when it closes).
pub struct HostFile {
    pub(super) node: HostNode,
    pub(super) io: FileIo,
    _slot: FdSlot,
}

pub(super) enum FileIo {
    /// A regular file.
    Data(OwnedFd),
    /// A directory and its stream position.
    Dir(Mutex<DirStream>),
}

/// A directory stream: the kernel's `getdents64` buffer and where it stands. `next` is the
/// cookie (`d_off`) the stream would return next; a readdir from any other cookie seeks.
pub(super) struct DirStream {
    pub(super) dir: Dir,
    pub(super) next: u64,
}

impl HostFile {
    pub(super) fn new(node: HostNode, fd: OwnedFd, slot: FdSlot) -> FsResult<HostFile> {
        let io = match node.kind() {
            Kind::Dir => FileIo::Dir(Mutex::new(DirStream {
                dir: Dir::new(fd).map_err(super::errno)?,
                next: 0,
            })),
            _ => FileIo::Data(fd),
        };
        Ok(HostFile {
            node,
            io,
            _slot: slot,
        })
    }

    /// Runs `f` with the file's descriptor (a directory's stream is locked meanwhile).
    pub(super) fn with_fd<T>(&self, f: impl FnOnce(BorrowedFd<'_>) -> FsResult<T>) -> FsResult<T> {
        match &self.io {
            FileIo::Data(fd) => f(fd.as_fd()),
            FileIo::Dir(stream) => {
                let s = stream.lock().unwrap_or_else(|e| e.into_inner());
                f(s.dir.fd().map_err(super::errno)?)
            }
        }
    }

    /// The regular file's descriptor, or `EISDIR` for a directory.
    pub(super) fn data_fd(&self) -> FsResult<BorrowedFd<'_>> {
        match &self.io {
            FileIo::Data(fd) => Ok(fd.as_fd()),
            FileIo::Dir(_) => Err(Errno::EISDIR),
        }
    }
}

impl fmt::Debug for HostFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostFile")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}
