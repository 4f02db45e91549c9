//! `MemFs`: a complete in-memory POSIX-like filesystem, deterministic and bounded.
//!
//! - **Deterministic.** Everything is kept in ordered maps (no hash iteration order), inode
//!   numbers and readdir cookies are counters that are never reused, and timestamps come
//!   from a [`Clock`]: [`MemFs::new`] uses a logical clock that reads `{sec: n, nsec: 0}`
//!   during the n-th successful mutation, so two `MemFs` given the same operations answer
//!   identically, timestamps included. Reads do not touch atime (as with `noatime`).
//! - **Qids.** `path` is the inode number; `version` is a per-inode counter bumped
//!   whenever the contents, the size or the mtime change (QEMU derives it from
//!   `mtime ^ size`; a counter says the same thing without collisions). It is also
//!   `data_version` in [`Attr`](crate::protocol::Attr).
//! - **Bounded.** A hostile guest cannot exhaust host memory: see [`Limits`]. File data
//!   is stored in sparse 4 KiB pages, so holes cost nothing.
//! - **No permission checks by uid.** As QEMU's `security_model=none`, the server acts
//!   as the export's owner: owners and modes are stored and reported, but only the open
//!   access mode is enforced (`EBADF` for reading a write-only file and so on).
//! - **Thread-safe.** One `std::sync::Mutex` around the whole tree; it is never held
//!   across an await (there are none: every operation completes within one poll, which
//!   also satisfies the trait's cancellation contract).
//! - **Lifetimes.** [`MemNode`] and [`MemFile`] handles keep their inode alive: an
//!   unlinked file stays readable and writable through its open files, and is freed when
//!   its last name and last handle are gone ([`MemFs::inode_count`] shows it).
//! - **Locks.** Real POSIX byte-range locks owned by each [`MemFile`] (open-file
//!   description semantics); dropping the file releases them.

use std::fmt;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::co::sync::LockExt;
use crate::fs::FsResult;
use crate::protocol::{Errno, OpenFlags, Timespec};

mod data;
mod dir;
mod dump;
mod fs_impl;
mod inode;
mod io;

pub(crate) use io::setid_to_kill;
mod locks;
mod ns;
mod state;
mod xattr;

pub use dir::ENTRY_COST;
pub use inode::{INODE_COST, makedev};
use state::State;

/// Where timestamps come from.
pub type Clock = Arc<dyn Fn() -> Timespec + Send + Sync>;

/// A [`Clock`] reading the host's wall clock (`SystemTime`), for real exports.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timespec {
            sec: d.as_secs(),
            nsec: u64::from(d.subsec_nanos()),
        }
    })
}

/// `f_type` that [`statfs`](crate::fs::Filesystem::statfs) reports (`V9FS_MAGIC`).
pub const V9FS_MAGIC: u32 = 0x0102_1997;

/// How much a guest may store. Bytes charged against `capacity` are allocated 4 KiB data
/// pages, symlink targets, xattr names and values, [`INODE_COST`] per inode and
/// [`ENTRY_COST`] plus the name per directory entry — so capacity bounds the host memory
/// a guest can claim, whatever mix of files, links and names it makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest file size (`EFBIG` beyond). Default 1 GiB.
    pub max_file_size: u64,
    /// Total bytes stored (`ENOSPC` beyond). Default 4 GiB.
    pub capacity: u64,
    /// Inodes alive at once, the root included (`ENOSPC` beyond). Default 1 Mi.
    pub max_inodes: u64,
    /// Xattrs per inode (`ENOSPC` beyond). Default 128.
    pub max_xattrs: usize,
    /// Largest xattr value (`E2BIG` beyond). Default 64 KiB (Linux `XATTR_SIZE_MAX`).
    pub max_xattr_value: usize,
    /// Most links one inode may have, and so most subdirectories a directory may hold
    /// (its `..` entries count): `EMLINK` beyond. Default 65 000, as ext4.
    pub max_links: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_file_size: 1 << 30,
            capacity: 4 << 30,
            max_inodes: 1 << 20,
            max_xattrs: 128,
            max_xattr_value: 64 << 10,
            max_links: 65_000,
        }
    }
}

struct Shared {
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every mutation checks before it changes anything, so a panic (a bug) cannot
        // leave a half-applied change behind; carry on rather than poison every caller.
        self.state.lock_unpoisoned()
    }
}

/// The in-memory filesystem. Cloning gives another handle to the same tree (so it can be
/// shared as is, or through the server's `Arc<MemFs>`).
#[derive(Clone)]
pub struct MemFs {
    shared: Arc<Shared>,
}

impl MemFs {
    /// An empty filesystem (a root directory, mode 0755, owned by 0:0), default
    /// [`Limits`], logical clock.
    pub fn new() -> MemFs {
        MemFs::with_config(Limits::default(), None)
    }

    /// An empty filesystem whose timestamps come from `clock` (e.g. [`system_clock`]).
    pub fn with_clock(clock: Clock) -> MemFs {
        MemFs::with_config(Limits::default(), Some(clock))
    }

    /// An empty filesystem with the given limits and the logical clock.
    pub fn with_limits(limits: Limits) -> MemFs {
        MemFs::with_config(limits, None)
    }

    /// An empty filesystem with the given limits and clock (`None`: the logical clock).
    pub fn with_config(limits: Limits, clock: Option<Clock>) -> MemFs {
        MemFs {
            shared: Arc::new(Shared {
                state: Mutex::new(State::new(limits, clock)),
            }),
        }
    }

    /// The memory limits this filesystem enforces.
    pub fn limits(&self) -> Limits {
        self.shared.lock().limits
    }

    /// Inodes alive: the root, everything linked, and unlinked ones still held open.
    pub fn inode_count(&self) -> u64 {
        self.shared.lock().inodes.len() as u64
    }

    /// Bytes charged against [`Limits::capacity`].
    pub fn bytes_used(&self) -> u64 {
        self.shared.lock().used
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared.lock()
    }

    /// The inode a node names, if the node belongs to this filesystem (`EXDEV` if not).
    fn ino(&self, node: &MemNode) -> FsResult<u64> {
        if Arc::ptr_eq(&node.0.shared, &self.shared) {
            Ok(node.0.ino)
        } else {
            Err(Errno::EXDEV)
        }
    }

    /// A new handle to `ino`; the caller has already counted it with `State::grab`
    /// and released the lock (dropping a handle takes it).
    fn node(&self, ino: u64) -> MemNode {
        MemNode(Arc::new(NodeRef {
            shared: self.shared.clone(),
            ino,
        }))
    }
}

impl Default for MemFs {
    fn default() -> Self {
        MemFs::new()
    }
}

impl fmt::Debug for MemFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.state();
        f.debug_struct("MemFs")
            .field("inodes", &st.inodes.len())
            .field("bytes_used", &st.used)
            .finish()
    }
}

/// A reference to an inode (what a fid holds after a walk). Keeps the inode alive.
#[derive(Clone)]
pub struct MemNode(Arc<NodeRef>);

struct NodeRef {
    shared: Arc<Shared>,
    ino: u64,
}

impl Drop for NodeRef {
    fn drop(&mut self) {
        self.shared.lock().release(self.ino);
    }
}

impl MemNode {
    /// The inode number (the qid path).
    pub fn ino(&self) -> u64 {
        self.0.ino
    }
}

impl fmt::Debug for MemNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MemNode({})", self.0.ino)
    }
}

/// An open file description: an access mode, and the owner of byte-range locks.
pub struct MemFile {
    node: MemNode,
    flags: OpenFlags,
    /// Lock owner id, unique for the life of the filesystem.
    id: u64,
    /// Whether this file ever took a lock (so closing knows whether to look).
    locked: AtomicBool,
    /// Who writes through it: any uid but 0 drops set-id bits (see `Filesystem::open_by`).
    writer: u32,
}

impl MemFile {
    /// The node this file was opened from.
    pub fn node(&self) -> &MemNode {
        &self.node
    }

    /// The flags it was opened with.
    pub fn flags(&self) -> OpenFlags {
        self.flags
    }
}

impl Drop for MemFile {
    fn drop(&mut self) {
        if self.locked.load(std::sync::atomic::Ordering::Acquire) {
            let mut st = self.node.0.shared.lock();
            if let Ok(inode) = st.get_mut(self.node.0.ino) {
                inode.locks.release(self.id);
            }
        }
    }
}

impl fmt::Debug for MemFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MemFile({}, {:?})", self.node.0.ino, self.flags)
    }
}
