//! `HostFs`: the backend that serves real host files, confined to the export directory.
//!
//! Every security property rests on a few mechanisms, each in one file:
//!
//! - **Handles, not paths** (`node.rs`): a node is one inode, `(st_dev, st_ino)`, whose
//!   type is read once and cannot change; one node per inode (a registry), holding one
//!   `O_PATH|O_NOFOLLOW|O_CLOEXEC` descriptor while in use, and every operation goes
//!   through that descriptor, never through a path.
//! - **One component at a time, beneath the export** (`resolve.rs`): lookups are
//!   `openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS)` (or `openat`
//!   with `O_NOFOLLOW`) of a validated single-component [`Name`]; symlinks on the host are
//!   never followed (a lookup yields the link, `readlink` its text); the root's parent is
//!   the root, and a parent that no longer leads back to the root is refused.
//! - **Only regular files and directories are opened** (`resolve.rs`), reopened through
//!   `/proc/self/fd/N` after the type check, so a fifo, socket or device is never opened
//!   (`ENXIO`, as QEMU) and nothing blocks.
//! - **Security models** (`security.rs`), **xattr namespaces** (`xattr.rs`), **qids**
//!   unique across devices (`qid.rs`), **OFD locks** (`locks.rs`), **readdir cookies**
//!   (`dir.rs`), **whole listings kept between opens** while inotify sees no change
//!   (`listing.rs`), **making names** (`create.rs`), **attributes** (`attr.rs`).
//!
//! **Descriptor use is bounded, and idle node descriptors are reclaimed** (`reclaim.rs`).
//! Nodes and open files together hold at most [`HostOptions::max_fds`] descriptors (by
//! default `RLIMIT_NOFILE` less a reserve). Near that, the descriptors of idle nodes are
//! closed, least recently used first, and reopened on demand the way a lookup opens
//! them — one component beneath the recorded parent — then checked to be the recorded
//! inode, else `ESTALE`: never a path from the root, never another file (the race of
//! QEMU's CVE-2021-20181). Open files, nodes in use, and nodes that could not be reopened
//! by name (unlinked) are never reclaimed; when they alone fill the budget, the answer is
//! `EMFILE`.
//!
//! All work is synchronous inside each `async fn` (no awaits), which meets the trait's
//! cancellation contract.

mod attr;
mod cache;
mod create;
mod dir;
mod listing;
mod locks;
mod mapping;
mod node;
mod qid;
mod reclaim;
mod resolve;
mod security;
mod xattr;

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;

use rustix::fs::{CWD, Mode, OFlags, ResolveFlags, fdatasync, fstat, fstatfs, fsync, openat};

use crate::fs::{Creds, DirEntry, Filesystem, FsResult, LockOutcome, LockProbe, LockRequest, Name};
use crate::protocol::{Attr, Errno, OpenFlags, Qid, SetAttr, StatFs};

pub use node::{HostFile, HostNode};
pub use security::SecurityModel;

use cache::{NodeCache, Probe};
use listing::Listings;
use node::{FdBudget, Identity, Kind, Registry};
use qid::QidMap;
use resolve::{ProcPath, reopen_flags};

/// `statfs` magic of procfs.
const PROC_SUPER_MAGIC: i64 = 0x9fa0;
/// Longest symlink target read back from a mapped-xattr symlink file.
const MAPPED_LINK_MAX: usize = 4096;

/// How a [`HostFs`] serves its export.
#[derive(Debug, Clone, Default)]
pub struct HostOptions {
    /// How guest ownership and modes map onto host files.
    pub security_model: SecurityModel,
    /// Refuse every change with `EROFS` (the server enforces `--readonly` too; this is a
    /// second line).
    pub readonly: bool,
    /// Most descriptors nodes and open files may hold at once; `None`: `RLIMIT_NOFILE`
    /// less a quarter (at most 256) kept for everything else.
    pub max_fds: Option<usize>,
    /// Nodes kept open after their last fid is gone, so a path walked again costs one
    /// `statx` instead of an open, two stats and a close (see `cache.rs`); `None`: 256.
    /// `Some(0)` turns the cache off.
    pub node_cache: Option<usize>,
    /// Read every directory from the kernel at every listing instead of keeping whole
    /// listings between opens (see `listing.rs`; kept listings are dropped by inotify, on
    /// local filesystems only). For an export that changes where inotify cannot see.
    pub no_listing_cache: bool,
    /// Copy every read's data into the reply (`pread`) instead of offering large reads as
    /// ranges of a shared mapping of the file, which a stream transport sends with one
    /// copy fewer (see [`MappedBytes`](crate::fs::MappedBytes)).
    pub no_mapped_reads: bool,
}

/// Nodes the cache keeps when [`HostOptions::node_cache`] is `None`.
pub const DEFAULT_NODE_CACHE: usize = 256;

/// The host backend (see the module doc).
pub struct HostFs {
    root: HostNode,
    /// `/proc/self/fd`, opened once and checked to be procfs.
    proc_fd: Arc<OwnedFd>,
    model: SecurityModel,
    readonly: bool,
    qids: QidMap,
    budget: Arc<FdBudget>,
    registry: Arc<Registry>,
    has_openat2: bool,
    /// The process umask, which the kernel applies to modes given at creation.
    umask: u32,
    cache: NodeCache,
    listings: Listings,
    map_reads: bool,
}

impl std::fmt::Debug for HostFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostFs")
            .field("root", &self.root)
            .field("model", &self.model)
            .field("readonly", &self.readonly)
            .field("openat2", &self.has_openat2)
            .finish_non_exhaustive()
    }
}

pub(super) fn errno(e: rustix::io::Errno) -> Errno {
    Errno(e.raw_os_error() as u32)
}

fn io_err(e: rustix::io::Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

fn default_max_fds() -> usize {
    let lim = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let cur = lim.current.unwrap_or(1 << 20).min(1 << 30) as usize;
    cur.saturating_sub((cur / 4).min(256)).max(16)
}

fn process_umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

impl HostFs {
    /// Serves the directory `export` (symlinks in `export` itself are followed: it is the
    /// administrator's path; nothing the guest names ever is).
    pub fn new(export: &Path, opts: HostOptions) -> io::Result<HostFs> {
        let proc_fd = openat(
            CWD,
            "/proc/self/fd",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io_err)?;
        if fstatfs(&proc_fd).map_err(io_err)?.f_type as i64 != PROC_SUPER_MAGIC {
            return Err(io::Error::other("/proc/self/fd is not on procfs"));
        }
        let budget = FdBudget::new(opts.max_fds.unwrap_or_else(default_max_fds).max(1));
        let slot = budget
            .take()
            .map_err(|_| io::Error::from_raw_os_error(libc::EMFILE))?;
        let fd = openat(
            CWD,
            export,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io_err)?;
        let st = fstat(&fd).map_err(io_err)?;
        let has_openat2 = !matches!(
            rustix::fs::openat2(
                &fd,
                ".",
                OFlags::PATH | OFlags::CLOEXEC,
                Mode::empty(),
                ResolveFlags::BENEATH
            ),
            Err(rustix::io::Errno::NOSYS)
        );
        let registry = Arc::new(Registry::default());
        let id = Identity::of(fd.as_fd(), &st);
        let root = HostNode::new(fd, id, slot, None, &registry);
        if opts.security_model == SecurityModel::MappedXattr {
            let p = ProcPath::new(root.held().expect("the root is never reclaimed").raw());
            if let Err(rustix::io::Errno::OPNOTSUPP) =
                rustix::fs::getxattr(p.abs(), c"user.virtfs.mode", &mut [0u8; 4][..])
            {
                return Err(io::Error::other(
                    "mapped-xattr needs user.* xattrs, which the export's filesystem lacks",
                ));
            }
        }
        Ok(HostFs {
            qids: QidMap::new(st.st_dev),
            root,
            proc_fd: Arc::new(proc_fd),
            model: opts.security_model,
            readonly: opts.readonly,
            budget,
            registry,
            has_openat2,
            umask: process_umask(),
            cache: NodeCache::new(opts.node_cache.unwrap_or(DEFAULT_NODE_CACHE)),
            listings: Listings::new(!opts.no_listing_cache),
            map_reads: !opts.no_mapped_reads,
        })
    }

    /// The security model this export uses.
    pub fn security_model(&self) -> SecurityModel {
        self.model
    }

    /// Descriptors held by nodes and open files right now (the root's included).
    pub fn fds_in_use(&self) -> usize {
        self.budget.used()
    }

    fn writable(&self) -> FsResult<()> {
        if self.readonly {
            Err(Errno::EROFS)
        } else {
            Ok(())
        }
    }

    /// Descriptors of idle nodes closed by reclaim so far (see `reclaim.rs`).
    pub fn fds_reclaimed(&self) -> u64 {
        self.registry.reclaimed()
    }

    /// Closes the descriptor of every idle node now (they are reopened on demand, see
    /// `reclaim.rs`); returns how many. Reclaim also happens by itself near the budget.
    pub fn reclaim_idle(&self) -> usize {
        self.reclaim(0)
    }

    fn do_lookup(&self, dir: &HostNode, name: &Name) -> FsResult<(HostNode, Qid)> {
        dir.require_dir()?;
        let d = self.node_fd(dir)?;
        if let Some(hit) = self.cached_lookup(d.fd(), dir, name) {
            return Ok(hit);
        }
        let fd = self.lookup_at(d.fd(), name)?;
        drop(d);
        let p = Probe::of_fd(fd.as_fd())?;
        let qid = self.qid_probed(fd.as_fd(), &p)?;
        let node = self.intern_as(fd, p.id, Some((dir, name)))?;
        self.cache.keep(&node);
        Ok((node, qid))
    }

    /// The lookup of a name whose inode has a live node holding its descriptor: one
    /// `statx`, no open (see `cache.rs`). `None`: take the ordinary lookup.
    fn cached_lookup(
        &self,
        dir_fd: std::os::fd::BorrowedFd<'_>,
        dir: &HostNode,
        name: &Name,
    ) -> Option<(HostNode, Qid)> {
        let bytes = name.as_bytes();
        if !self.cache.enabled() || bytes.contains(&b'/') || bytes == b"." || bytes == b".." {
            return None;
        }
        let p = Probe::at(dir_fd, name).ok()?;
        let n = self.registry.get((p.id.dev, p.id.ino))?;
        if *n.identity() != p.id || !n.holds_fd() {
            return None;
        }
        let mode = if self.model == SecurityModel::MappedXattr {
            self.guest_mode(self.node_fd(&n).ok()?.fd(), p.mode).ok()?
        } else {
            p.mode
        };
        n.set_origin(dir, name);
        self.cache.keep(&n);
        let qid = Qid {
            ty: qid::qid_type(mode),
            version: p.version,
            path: self.qids.path(p.id.dev, p.id.ino),
        };
        Some((n, qid))
    }

    /// Nodes the lookup cache keeps alive now.
    pub fn cached_nodes(&self) -> usize {
        self.cache.len()
    }

    /// Empties the lookup cache: nodes no fid uses close their descriptors.
    pub fn drop_cached_nodes(&self) {
        self.cache.clear();
    }

    /// Whole directory listings kept now (see [`HostOptions::no_listing_cache`]).
    pub fn kept_listings(&self) -> usize {
        self.listings.kept()
    }

    fn do_parent(&self, dir: &HostNode) -> FsResult<(HostNode, Qid)> {
        let node = match self.parent_fd(dir)? {
            None => self.root.clone(),
            Some(fd) => match dir.origin() {
                // The recorded parent, if `..` is that inode.
                Some((p, _)) if fstat(&fd).is_ok_and(|st| (st.st_dev, st.st_ino) == p.id()) => p,
                _ => self.intern(fd, None)?,
            },
        };
        Ok((node.clone(), self.qid_of(&node)?))
    }

    fn do_open(&self, node: &HostNode, flags: OpenFlags, writer: u32) -> FsResult<HostFile> {
        if flags.writable() || flags.contains(OpenFlags::TRUNC) {
            self.writable()?;
        }
        if self.model == SecurityModel::MappedXattr && node.kind() == Kind::Reg {
            // A mapped fifo, device or symlink is a regular file on the host; the guest
            // must not open it as data either.
            let fd = self.node_fd(node)?;
            let mode = security::read_mapped_mode(ProcPath::new(fd.raw()).abs())?;
            if mode.is_some_and(|m| m & libc::S_IFMT != 0 && m & libc::S_IFMT != libc::S_IFREG) {
                return Err(Errno::ENXIO);
            }
        }
        let slot = self.slot()?;
        let mut oflags = reopen_flags(flags)?;
        if node.kind() == Kind::Dir {
            oflags |= OFlags::DIRECTORY;
        }
        let fd = self.reopen(node, oflags)?;
        HostFile::new(node.clone(), fd, slot, writer)
    }

    /// A write to `file` by the syscall `write`: `EROFS` on a read-only export, retried on
    /// `EINTR`, and the set-id bits dropped once it wrote something.
    fn write_with(
        &self,
        file: &HostFile,
        mut write: impl FnMut(BorrowedFd<'_>) -> rustix::io::Result<usize>,
    ) -> FsResult<usize> {
        self.writable()?;
        let fd = file.data_fd()?;
        let n = retry(|| write(fd))?;
        if n > 0 {
            self.kill_setid(file);
        }
        Ok(n)
    }

    /// After a write through `file` by a user without `CAP_FSETID`: drops the set-id bits
    /// Linux's `file_remove_privs` would, in the mode the guest sees (the host file's, or
    /// the stored one under mapped-xattr). The write happened: a failure here is logged,
    /// not reported as the write's.
    fn kill_setid(&self, file: &HostFile) {
        if file.writer == 0 {
            return;
        }
        let result = file.data_fd().and_then(|fd| {
            let st = fstat(fd).map_err(errno)?;
            let mode = self.guest_mode(fd, st.st_mode)?;
            let kill = crate::fs::mem::setid_to_kill(mode);
            if kill == 0 {
                return Ok(());
            }
            match self.model {
                SecurityModel::MappedXattr => {
                    let m = security::Mapped {
                        mode: Some(mode & !kill),
                        ..security::Mapped::default()
                    };
                    security::write_mapped_path(
                        ProcPath::new(std::os::fd::AsRawFd::as_raw_fd(&fd)).abs(),
                        &m,
                    )
                }
                _ => rustix::fs::fchmod(fd, Mode::from_raw_mode((mode & 0o7777) & !kill))
                    .map_err(errno),
            }
        });
        if let Err(e) = result {
            tracing::debug!("cannot drop set-id bits after a write: {e}");
        }
    }

    fn do_readlink(&self, node: &HostNode) -> FsResult<Vec<u8>> {
        match node.kind() {
            Kind::Symlink => {
                let fd = self.node_fd(node)?;
                let target = rustix::fs::readlinkat(fd.fd(), c"", Vec::new()).map_err(errno)?;
                Ok(target.into_bytes())
            }
            Kind::Reg if self.model == SecurityModel::MappedXattr => {
                let pfd = self.node_fd(node)?;
                let p = ProcPath::new(pfd.raw());
                let mode = security::read_mapped_mode(p.abs())?.unwrap_or(0);
                if mode & libc::S_IFMT != libc::S_IFLNK {
                    return Err(Errno::EINVAL);
                }
                let fd = self.reopen(node, OFlags::RDONLY)?;
                let mut buf = vec![0u8; MAPPED_LINK_MAX];
                let mut len = 0;
                while len < buf.len() {
                    match rustix::io::pread(&fd, &mut buf[len..], len as u64) {
                        Ok(0) => break,
                        Ok(n) => len += n,
                        Err(e) if e == rustix::io::Errno::INTR => {}
                        Err(e) => return Err(errno(e)),
                    }
                }
                buf.truncate(len);
                Ok(buf)
            }
            _ => Err(Errno::EINVAL),
        }
    }
}

/// Retries a syscall interrupted by a signal.
fn retry<T>(mut f: impl FnMut() -> rustix::io::Result<T>) -> FsResult<T> {
    loop {
        match f() {
            Err(e) if e == rustix::io::Errno::INTR => {}
            r => return r.map_err(errno),
        }
    }
}

/// The operations whose whole work is the method `do_name` with the same arguments (in
/// the file of its family): `fn name(args) -> T;` makes `async fn name(&self, args) ->
/// FsResult<T>`. HostFs makes its syscalls in place, so nothing there awaits.
macro_rules! in_place {
    ($(fn $name:ident($($arg:ident: $ty:ty),*) -> $out:ty = $do:ident;)*) => {
        $(
            async fn $name(&self, $($arg: $ty),*) -> FsResult<$out> {
                self.$do($($arg),*)
            }
        )*
    };
}

impl Filesystem for HostFs {
    type Node = HostNode;
    type File = HostFile;

    in_place! {
        fn lookup(dir: &HostNode, name: &Name) -> (HostNode, Qid) = do_lookup;
        fn parent(dir: &HostNode) -> (HostNode, Qid) = do_parent;
        fn getattr(node: &HostNode) -> Attr = do_getattr;
        fn setattr(node: &HostNode, attr: &SetAttr) -> () = do_setattr;
        fn create(
            dir: &HostNode,
            name: &Name,
            flags: OpenFlags,
            mode: u32,
            creds: Creds
        ) -> (HostNode, HostFile, Qid) = do_create;
        fn readdir(dir: &HostFile, cookie: u64, max: usize) -> Vec<DirEntry> = do_readdir;
        fn mkdir(dir: &HostNode, name: &Name, mode: u32, creds: Creds) -> Qid = do_mkdir;
        fn symlink(dir: &HostNode, name: &Name, target: &[u8], creds: Creds) -> Qid = do_symlink;
        fn mknod(
            dir: &HostNode,
            name: &Name,
            mode: u32,
            rdev: (u32, u32),
            creds: Creds
        ) -> Qid = do_mknod;
        fn link(target: &HostNode, dir: &HostNode, name: &Name) -> () = do_link;
        fn readlink(node: &HostNode) -> Vec<u8> = do_readlink;
        fn statfs(node: &HostNode) -> StatFs = do_statfs;
        fn getxattr(node: &HostNode, name: &[u8]) -> Vec<u8> = do_getxattr;
        fn listxattr(node: &HostNode) -> Vec<u8> = do_listxattr;
        fn setxattr(node: &HostNode, name: &[u8], value: &[u8], flags: u32) -> () = do_setxattr;
        fn removexattr(node: &HostNode, name: &[u8]) -> () = do_removexattr;
    }

    async fn root(&self) -> FsResult<(HostNode, Qid)> {
        Ok((self.root.clone(), self.qid_of(&self.root)?))
    }
    async fn open(&self, node: &HostNode, flags: OpenFlags) -> FsResult<HostFile> {
        self.do_open(node, flags, 0)
    }
    async fn open_by(&self, node: &HostNode, flags: OpenFlags, creds: Creds) -> FsResult<HostFile> {
        self.do_open(node, flags, creds.uid)
    }
    async fn read(&self, file: &HostFile, offset: u64, buf: &mut [u8]) -> FsResult<usize> {
        let fd = file.data_fd()?;
        retry(|| rustix::io::pread(fd, &mut *buf, offset))
    }
    fn map_read(
        &self,
        file: &HostFile,
        offset: u64,
        count: usize,
    ) -> Option<FsResult<crate::fs::MappedBytes>> {
        let fd = file.data_fd().ok()?;
        self.map_reads
            .then(|| file.map.range(fd, offset, count))
            .flatten()
    }
    async fn write(&self, file: &HostFile, offset: u64, data: &[u8]) -> FsResult<usize> {
        // With O_APPEND, Linux's pwrite appends whatever the offset.
        self.write_with(file, |fd| rustix::io::pwrite(fd, data, offset))
    }
    async fn read_vectored(
        &self,
        file: &HostFile,
        offset: u64,
        bufs: &mut [IoSliceMut<'_>],
    ) -> FsResult<usize> {
        let fd = file.data_fd()?;
        retry(|| rustix::io::preadv(fd, &mut *bufs, offset))
    }
    async fn write_vectored(
        &self,
        file: &HostFile,
        offset: u64,
        bufs: &[IoSlice<'_>],
    ) -> FsResult<usize> {
        self.write_with(file, |fd| rustix::io::pwritev(fd, bufs, offset))
    }
    async fn fsync(&self, file: &HostFile, datasync: bool) -> FsResult<()> {
        file.with_fd(|fd| {
            if datasync {
                retry(|| fdatasync(fd))
            } else {
                retry(|| fsync(fd))
            }
        })
    }
    async fn rename(
        &self,
        old_dir: &HostNode,
        old_name: &Name,
        new_dir: &HostNode,
        new_name: &Name,
    ) -> FsResult<()> {
        self.do_rename(old_dir, old_name, new_dir, new_name, None)
    }
    async fn unlink(&self, dir: &HostNode, name: &Name, rmdir: bool) -> FsResult<()> {
        self.do_unlink(dir, name, rmdir, None)
    }
    async fn unlink_node(
        &self,
        dir: &HostNode,
        name: &Name,
        node: &HostNode,
        rmdir: bool,
    ) -> FsResult<()> {
        self.do_unlink(dir, name, rmdir, Some(node))
    }
    async fn rename_node(
        &self,
        node: &HostNode,
        old_dir: &HostNode,
        old_name: &Name,
        new_dir: &HostNode,
        new_name: &Name,
    ) -> FsResult<()> {
        self.do_rename(old_dir, old_name, new_dir, new_name, Some(node))
    }
    async fn lock(&self, file: &HostFile, req: &LockRequest) -> FsResult<LockOutcome> {
        file.with_fd(|fd| locks::set(fd, req))
    }
    async fn getlock(&self, file: &HostFile, req: &LockRequest) -> FsResult<LockProbe> {
        file.with_fd(|fd| locks::get(fd, req))
    }
}
