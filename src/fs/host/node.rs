//! Nodes and open files of the host backend, the registry that makes one node per inode,
//! and the budget that bounds the descriptors they hold.
//!
//! A [`HostNode`] is one host inode, identified by `(st_dev, st_ino)`, its type (fixed for
//! the inode's life) and, where the filesystem reports it, its birth time. The
//! [`Registry`] maps `(st_dev, st_ino)` to the live node, so two lookups of one inode share
//! one node and one descriptor. A node holds at most one `O_PATH|O_NOFOLLOW` descriptor,
//! shared by its clones, and records where it was reached: `(parent node, name)` (the
//! root has no record and is never reclaimed). Operations use the descriptor through a
//! [`NodeFd`] guard; while a guard lives, the descriptor stays open.
//!
//! **Reclaim** (`reclaim.rs`) may close the descriptor of an idle node (no guard, no open
//! [`HostFile`], inode still linked, not pinned); the next use reopens it by its record
//! and checks the result is the same inode. A node the record cannot reach again is
//! *pinned* (never reclaimed): the root, a node whose recorded name was removed or whose
//! inode has no link left, and a node reached by `..` with no record.
//!
//! A [`HostFile`] owns exactly one open file description (plus, for a directory, the
//! stream state that makes readdir cookies resumable). Open files are never reclaimed (an
//! open file description carries offsets, `O_APPEND`, locks), count against the budget,
//! and keep their node's descriptor from being reclaimed while they are open.

use std::collections::BTreeMap;
use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use rustix::fs::{AtFlags, FileType, Stat, StatxFlags, statx};

use crate::co::sync::LockExt;
use crate::fs::{FsResult, Name};
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

    /// At or above this many, idle node descriptors are reclaimed (90 %).
    pub(super) fn high(&self) -> usize {
        self.max - self.max / 10
    }

    /// What a reclaim brings the count down to, if enough nodes are idle (75 %).
    pub(super) fn low(&self) -> usize {
        self.max * 3 / 4
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
        Kind::of_mode(st.st_mode)
    }

    pub(super) fn of_mode(mode: u32) -> Kind {
        match FileType::from_raw_mode(mode) {
            FileType::Directory => Kind::Dir,
            FileType::RegularFile => Kind::Reg,
            FileType::Symlink => Kind::Symlink,
            _ => Kind::Special,
        }
    }
}

/// What makes a descriptor "the same file" as a node: `(st_dev, st_ino)`, the type, and
/// the birth time where the filesystem has one (so an inode number reused after the file
/// was deleted is not mistaken for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Identity {
    pub(super) dev: u64,
    pub(super) ino: u64,
    pub(super) kind: Kind,
    pub(super) btime: Option<(i64, u32)>,
}

impl Identity {
    /// The identity of the file `fd` refers to, from its `fstat`.
    pub(super) fn of(fd: BorrowedFd<'_>, st: &Stat) -> Identity {
        let btime = statx(fd, c"", AtFlags::EMPTY_PATH, StatxFlags::BTIME)
            .ok()
            .filter(|x| StatxFlags::from_bits_retain(x.stx_mask).contains(StatxFlags::BTIME))
            .map(|x| (x.stx_btime.tv_sec, x.stx_btime.tv_nsec));
        Identity {
            dev: st.st_dev,
            ino: st.st_ino,
            kind: Kind::of(st),
            btime,
        }
    }
}

/// `(st_dev, st_ino)` → the live node of that inode (see the module doc).
#[derive(Debug, Default)]
pub(super) struct Registry {
    nodes: Mutex<BTreeMap<(u64, u64), Weak<NodeInner>>>,
    /// The LRU clock: each use of a node's descriptor takes the next tick.
    tick: AtomicU64,
    /// Descriptors closed by reclaim, ever.
    reclaimed: AtomicU64,
}

impl Registry {
    fn map(&self) -> MutexGuard<'_, BTreeMap<(u64, u64), Weak<NodeInner>>> {
        self.nodes.lock_unpoisoned()
    }

    /// The live node of inode `id`, if any. (Never drops a node while the map is locked:
    /// a node's drop takes the lock.)
    pub(super) fn get(&self, id: (u64, u64)) -> Option<HostNode> {
        let inner = self.map().get(&id).and_then(Weak::upgrade);
        inner.map(HostNode)
    }

    /// Every live node, for choosing reclaim victims.
    pub(super) fn all(&self) -> Vec<HostNode> {
        let v: Vec<_> = self.map().values().filter_map(Weak::upgrade).collect();
        v.into_iter().map(HostNode).collect()
    }

    pub(super) fn count_reclaimed(&self) {
        self.reclaimed.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn reclaimed(&self) -> u64 {
        self.reclaimed.load(Ordering::Relaxed)
    }

    fn tick(&self) -> u64 {
        self.tick.fetch_add(1, Ordering::Relaxed)
    }
}

/// A descriptor and its budget slot. Field order is drop order: the descriptor closes
/// before its slot is given back.
struct Held {
    fd: OwnedFd,
    _slot: FdSlot,
}

/// A node's descriptor in use: it stays open while this lives.
pub(super) struct NodeFd(Arc<Held>);

impl NodeFd {
    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        self.0.fd.as_fd()
    }

    pub(super) fn raw(&self) -> RawFd {
        self.0.fd.as_raw_fd()
    }
}

/// A file of the export, held like an `O_PATH` descriptor (see the module doc).
#[derive(Clone)]
pub struct HostNode(pub(super) Arc<NodeInner>);

pub(super) struct NodeInner {
    id: Identity,
    registry: Arc<Registry>,
    state: Mutex<NodeState>,
}

struct NodeState {
    /// `None` while reclaimed, or while lent.
    held: Option<Arc<Held>>,
    /// A node made with its file (Tlcreate) holds no descriptor of its own at first: it
    /// borrows the open file's, and makes its `O_PATH` one from it only if something
    /// needs it while the file is open. Most created files are used through the open
    /// file and then clunked or removed, so the reopen through `/proc/self/fd` (an
    /// `openat` and a `close` per create) is never paid. Once the file is closed, a node
    /// still in use without a descriptor reopens by its record, as a reclaimed one does.
    lender: Option<Weak<OwnedFd>>,
    /// Where the node was reached: `None` only for a pinned node.
    origin: Option<(HostNode, Name)>,
    /// Never reclaimed (see the module doc).
    pinned: bool,
    /// Open [`HostFile`]s of this node.
    open_files: usize,
    /// The LRU tick of the last use.
    last_use: u64,
}

/// What [`HostNode::try_reclaim`] did.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Reclaim {
    Closed,
    Busy,
    /// The inode has no link left: pinned instead.
    Pinned,
}

/// Longest chain of records followed (deeper than `PATH_MAX` allows with one-byte names).
pub(super) const MAX_DEPTH: usize = 4096;

impl HostNode {
    /// A new node holding `fd`, reached through `origin` (`None`: pinned), registered as
    /// the node of its inode (replacing a stale entry).
    pub(super) fn new(
        fd: OwnedFd,
        id: Identity,
        slot: FdSlot,
        origin: Option<(HostNode, Name)>,
        registry: &Arc<Registry>,
    ) -> HostNode {
        let state = NodeState {
            held: Some(Arc::new(Held { fd, _slot: slot })),
            lender: None,
            pinned: origin.is_none(),
            origin,
            open_files: 0,
            last_use: registry.tick(),
        };
        Self::register(id, state, registry)
    }

    /// A new node with no descriptor of its own, borrowing `lender`'s (the file just
    /// created and opened, see [`NodeState::lender`]), registered as the node of its inode.
    pub(super) fn new_lent(
        lender: &Arc<OwnedFd>,
        id: Identity,
        origin: (HostNode, Name),
        registry: &Arc<Registry>,
    ) -> HostNode {
        let state = NodeState {
            held: None,
            lender: Some(Arc::downgrade(lender)),
            pinned: false,
            origin: Some(origin),
            open_files: 0,
            last_use: registry.tick(),
        };
        Self::register(id, state, registry)
    }

    /// A node of `id` in `state`, registered as the node of its inode (replacing a stale
    /// entry).
    fn register(id: Identity, state: NodeState, registry: &Arc<Registry>) -> HostNode {
        let node = HostNode(Arc::new(NodeInner {
            id,
            registry: registry.clone(),
            state: Mutex::new(state),
        }));
        let old = registry
            .map()
            .insert((id.dev, id.ino), Arc::downgrade(&node.0));
        drop(old);
        node
    }

    /// The file `fd` that this node may borrow from is closing: if the node lives on
    /// (someone besides that file holds it), it makes its own descriptor now, while the
    /// file can still be reached; otherwise it just stops borrowing. If that reopen fails
    /// (the budget is full), the node is left without one, as a reclaimed node is.
    fn lender_closing(&self, fd: &Arc<OwnedFd>, back: &GiveBack) {
        let lives_on = {
            let mut s = self.state();
            let lends = s
                .lender
                .as_ref()
                .is_some_and(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(fd)));
            if !lends || s.held.is_some() {
                return;
            }
            // The file being dropped holds one reference.
            let lives_on = Arc::strong_count(&self.0) > 1;
            if !lives_on {
                s.lender = None;
            }
            lives_on
        };
        if !lives_on {
            return;
        }
        let p = super::resolve::ProcPath::new(fd.as_raw_fd());
        let own = rustix::fs::openat(
            &*back.proc_fd,
            p.rel(),
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        );
        match (own, back.budget.take()) {
            (Ok(own), Ok(slot)) => {
                self.install(own, slot);
            }
            _ => self.state().lender = None,
        }
    }

    /// The open file's descriptor a lent node may make its own from, while that file is
    /// open.
    pub(super) fn lent(&self) -> Option<Arc<OwnedFd>> {
        self.state().lender.as_ref().and_then(Weak::upgrade)
    }

    fn state(&self) -> MutexGuard<'_, NodeState> {
        self.0.state.lock_unpoisoned()
    }

    /// The same node (not merely the same inode number).
    pub(super) fn same(&self, other: &HostNode) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    pub(super) fn kind(&self) -> Kind {
        self.0.id.kind
    }

    /// The host `(st_dev, st_ino)` of the inode.
    pub(super) fn id(&self) -> (u64, u64) {
        (self.0.id.dev, self.0.id.ino)
    }

    pub(super) fn identity(&self) -> &Identity {
        &self.0.id
    }

    pub(super) fn require_dir(&self) -> FsResult<()> {
        match self.0.id.kind {
            Kind::Dir => Ok(()),
            _ => Err(Errno::ENOTDIR),
        }
    }

    /// Whether the node holds its descriptor now (`false` while reclaimed).
    pub fn holds_fd(&self) -> bool {
        self.state().held.is_some()
    }

    /// The descriptor for use, if the node holds one (marks the node used).
    pub(super) fn held(&self) -> Option<NodeFd> {
        let mut s = self.state();
        let h = s.held.clone()?;
        s.last_use = self.0.registry.tick();
        Some(NodeFd(h))
    }

    /// The record of where the node was reached.
    pub(super) fn origin(&self) -> Option<(HostNode, Name)> {
        self.state().origin.clone()
    }

    /// Gives a reclaimed node a descriptor verified (by the caller) to be its inode; if it
    /// got one meanwhile, `fd` is dropped. Returns the descriptor now held.
    pub(super) fn install(&self, fd: OwnedFd, slot: FdSlot) -> NodeFd {
        let mut s = self.state();
        let tick = self.0.registry.tick();
        s.last_use = tick;
        s.lender = None;
        let h = s
            .held
            .get_or_insert_with(|| Arc::new(Held { fd, _slot: slot }))
            .clone();
        NodeFd(h)
    }

    /// Records that the node is reached as `name` in `parent`, unless that would make the
    /// records circular (possible after renames on the host), which is refused.
    pub(super) fn set_origin(&self, parent: &HostNode, name: &Name) -> bool {
        if self
            .state()
            .origin
            .as_ref()
            .is_some_and(|(p, n)| Arc::ptr_eq(&p.0, &parent.0) && n == name)
        {
            return true;
        }
        // Would `self` become its own ancestor?
        let mut cur = Some(parent.clone());
        let mut depth = 0;
        while let Some(c) = cur {
            if Arc::ptr_eq(&c.0, &self.0) || depth >= MAX_DEPTH {
                return false;
            }
            depth += 1;
            cur = c.origin().map(|(p, _)| p);
        }
        let old = self.state().origin.replace((parent.clone(), name.clone()));
        drop(old);
        true
    }

    /// Whether the record says the node is `name` in `dir`.
    pub(super) fn reached_as(&self, dir: &HostNode, name: &Name) -> bool {
        self.state()
            .origin
            .as_ref()
            .is_some_and(|(p, n)| p.id() == dir.id() && n == name)
    }

    /// Never reclaim this node again. It must hold its descriptor (callers pin while they
    /// hold a [`NodeFd`] of it); a node without one stays as it is (it will be stale).
    pub(super) fn pin(&self) {
        let mut s = self.state();
        // A lent node makes its descriptor from the open file when next used.
        if s.held.is_some() || s.lender.as_ref().is_some_and(|w| w.strong_count() > 0) {
            s.pinned = true;
        }
    }

    /// The LRU tick of the node's last use, if it is a candidate for reclaim now.
    pub(super) fn idle_since(&self) -> Option<u64> {
        let s = self.state();
        let h = s.held.as_ref()?;
        (!s.pinned && s.open_files == 0 && Arc::strong_count(h) == 1).then_some(s.last_use)
    }

    /// Closes the node's descriptor if it is idle and its inode is still linked (see the
    /// module doc).
    pub(super) fn try_reclaim(&self) -> Reclaim {
        let mut s = self.state();
        let Some(h) = s.held.as_ref() else {
            return Reclaim::Busy;
        };
        // Guards are cloned under this lock, so a count of one means no operation uses
        // the descriptor, and none can start until the lock is released.
        if s.pinned || s.open_files != 0 || Arc::strong_count(h) != 1 || s.origin.is_none() {
            return Reclaim::Busy;
        }
        match rustix::fs::fstat(&h.fd) {
            Ok(st) if st.st_nlink > 0 => {}
            _ => {
                s.pinned = true;
                return Reclaim::Pinned;
            }
        }
        let h = s.held.take();
        drop(s);
        drop(h);
        self.0.registry.count_reclaimed();
        Reclaim::Closed
    }
}

impl Drop for NodeInner {
    fn drop(&mut self) {
        {
            let mut map = self.registry.map();
            let key = (self.id.dev, self.id.ino);
            if map
                .get(&key)
                .is_some_and(|w| std::ptr::eq(w.as_ptr(), self as *const NodeInner))
            {
                map.remove(&key);
            }
        }
        // Parents are dropped one by one, not recursively (a chain of records may be as
        // deep as the export).
        let mut next = self
            .state
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .origin
            .take();
        while let Some((parent, _)) = next {
            next = Arc::into_inner(parent.0).and_then(|mut inner| {
                inner
                    .state
                    .get_mut()
                    .unwrap_or_else(|e| e.into_inner())
                    .origin
                    .take()
            });
        }
    }
}

impl fmt::Debug for HostNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fd = self.state().held.as_ref().map(|h| h.fd.as_raw_fd());
        f.debug_struct("HostNode")
            .field("fd", &fd)
            .field("kind", &self.0.id.kind)
            .field("dev", &self.0.id.dev)
            .field("ino", &self.0.id.ino)
            .finish()
    }
}

/// An open file of the export: one open file description (which owns the file's POSIX
/// locks, `F_OFD_*`, released when it closes).
pub struct HostFile {
    pub(super) node: HostNode,
    pub(super) io: FileIo,
    /// For a file whose node borrows its descriptor: what the node needs to make its
    /// own when the file closes while the node lives on.
    give_back: Option<GiveBack>,
    /// Who writes through it: any uid but 0 drops set-id bits (see
    /// [`Filesystem::open_by`](crate::fs::Filesystem::open_by)).
    pub(super) writer: u32,
    /// Its shared mapping, once a large read made it.
    pub(super) map: super::mapping::MapSlot,
    _slot: FdSlot,
}

/// What a lent node needs to make its own `O_PATH` descriptor from the file's (through
/// `/proc/self/fd`) when the file closes: the `/proc/self/fd` directory and the budget.
pub(super) struct GiveBack {
    pub(super) proc_fd: Arc<OwnedFd>,
    pub(super) budget: Arc<FdBudget>,
}

pub(super) enum FileIo {
    /// A regular file (shared with its node while lent, see [`NodeState::lender`]).
    Data(Arc<OwnedFd>),
    /// A directory and its stream position.
    Dir(Mutex<DirStream>),
}

/// A directory stream: the open directory and a `getdents64` buffer. `at` is the cookie
/// (`d_off`) the descriptor's position stands at, if known: a readdir from it reads on
/// without a seek; from any other cookie it seeks first. `place` is where the last readdir
/// served from a kept listing ended: that listing's serial and the index of the next entry.
pub(super) struct DirStream {
    pub(super) fd: OwnedFd,
    pub(super) buf: Vec<std::mem::MaybeUninit<u8>>,
    pub(super) at: Option<u64>,
    pub(super) place: Option<(u64, usize)>,
}

/// `getdents64` buffer of an open directory.
pub(super) const DIR_BUF: usize = 32 * 1024;

impl HostFile {
    pub(super) fn new(
        node: HostNode,
        fd: OwnedFd,
        slot: FdSlot,
        writer: u32,
    ) -> FsResult<HostFile> {
        let io = match node.kind() {
            Kind::Dir => FileIo::Dir(Mutex::new(DirStream {
                fd,
                buf: Vec::with_capacity(DIR_BUF),
                at: Some(0),
                place: None,
            })),
            _ => FileIo::Data(Arc::new(fd)),
        };
        Ok(HostFile::with_io(node, io, slot, writer))
    }

    /// A regular file whose descriptor its node borrows ([`HostNode::new_lent`]).
    pub(super) fn lending(
        node: HostNode,
        fd: Arc<OwnedFd>,
        slot: FdSlot,
        writer: u32,
        give_back: GiveBack,
    ) -> HostFile {
        let mut f = HostFile::with_io(node, FileIo::Data(fd), slot, writer);
        f.give_back = Some(give_back);
        f
    }

    fn with_io(node: HostNode, io: FileIo, slot: FdSlot, writer: u32) -> HostFile {
        node.state().open_files += 1;
        HostFile {
            node,
            io,
            give_back: None,
            writer,
            map: Default::default(),
            _slot: slot,
        }
    }

    /// Runs `f` with the file's descriptor (a directory's stream is locked meanwhile).
    pub(super) fn with_fd<T>(&self, f: impl FnOnce(BorrowedFd<'_>) -> FsResult<T>) -> FsResult<T> {
        match &self.io {
            FileIo::Data(fd) => f(fd.as_fd()),
            FileIo::Dir(stream) => {
                let s = stream.lock_unpoisoned();
                f(s.fd.as_fd())
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

impl Drop for HostFile {
    fn drop(&mut self) {
        self.node.state().open_files -= 1;
        if let (Some(back), FileIo::Data(fd)) = (&self.give_back, &self.io) {
            self.node.lender_closing(fd, back);
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
