//! `HookedFs`: any [`Filesystem`] with a [`Hook`] run around each operation.
//!
//! This is how tests and the simulator put latency, stalls and faults in front of a real
//! backend without touching it: the hook may wait (virtual time, or until the request is
//! flushed) and may fail an operation *before* it happens, may turn its success into an
//! error *after* it happened (a fault after the effect), and may shorten reads and writes.
//! Waiting happens only before the effect, which keeps the cancellation contract.

use std::future::Future;
use std::io::{IoSlice, IoSliceMut};

use super::{Creds, DirEntry, Filesystem, FsResult, LockOutcome, LockProbe, LockRequest, Name};
use crate::protocol::{Attr, Errno, OpenFlags, Qid, SetAttr, StatFs};

/// Which operation a hook is called for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OpKind {
    /// `root`.
    Root,
    /// `lookup`.
    Lookup,
    /// `parent`.
    Parent,
    /// `getattr`.
    Getattr,
    /// `setattr`.
    Setattr,
    /// `open` and `open_by`.
    Open,
    /// `create`.
    Create,
    /// `read` and `read_vectored`.
    Read,
    /// `write` and `write_vectored`.
    Write,
    /// `readdir`.
    Readdir,
    /// `fsync`.
    Fsync,
    /// `mkdir`.
    Mkdir,
    /// `symlink`.
    Symlink,
    /// `mknod`.
    Mknod,
    /// `link`.
    Link,
    /// `readlink`.
    Readlink,
    /// `rename` and `rename_node`.
    Rename,
    /// `unlink` and `unlink_node`.
    Unlink,
    /// `statfs`.
    Statfs,
    /// `getxattr`.
    Getxattr,
    /// `listxattr`.
    Listxattr,
    /// `setxattr`.
    Setxattr,
    /// `removexattr`.
    Removexattr,
    /// `lock`.
    Lock,
    /// `getlock`.
    Getlock,
}

impl OpKind {
    /// Whether the operation changes the filesystem (opening may truncate, so it counts).
    pub fn is_mutating(self) -> bool {
        use OpKind::*;
        matches!(
            self,
            Setattr
                | Open
                | Create
                | Write
                | Mkdir
                | Symlink
                | Mknod
                | Link
                | Rename
                | Unlink
                | Setxattr
                | Removexattr
                | Lock
        )
    }
}

/// What runs around each operation of a [`HookedFs`].
pub trait Hook: Send + Sync + 'static {
    /// Before the operation: may wait, or fail it so that it never happens.
    fn before(&self, op: OpKind) -> impl Future<Output = FsResult<()>> + Send;
    /// Right after the operation, in the same poll (so it cannot be cancelled in between):
    /// `Some(errno)` reports a failure although the effect took place.
    fn after(&self, op: OpKind, succeeded: bool) -> Option<Errno> {
        let _ = (op, succeeded);
        None
    }
    /// How many of `len` bytes a read or write may move (a short read or write).
    fn io_len(&self, op: OpKind, len: usize) -> usize {
        let _ = op;
        len
    }
    /// After an operation that changes nothing (see [`OpKind::is_mutating`]), before its
    /// result reaches the caller: may wait. The result is already decided, so this is a
    /// slow way back (a host thread descheduled after its syscall), which lets a test put
    /// another request between a lookup and what its caller does with the answer. Never
    /// called after a mutating operation: waiting after an effect would make it
    /// cancellable once it happened.
    fn deliver(&self, op: OpKind) -> impl Future<Output = ()> + Send {
        let _ = op;
        std::future::ready(())
    }
}

/// A filesystem with a hook around every operation.
pub struct HookedFs<F, H> {
    /// The filesystem wrapped.
    pub inner: F,
    /// The hook run around each of its operations.
    pub hook: H,
}

impl<F: Filesystem, H: Hook> HookedFs<F, H> {
    /// `inner` with `hook` around each operation.
    pub fn new(inner: F, hook: H) -> Self {
        HookedFs { inner, hook }
    }

    async fn wrap<T>(&self, op: OpKind, fut: impl Future<Output = FsResult<T>>) -> FsResult<T> {
        self.hook.before(op).await?;
        let r = fut.await;
        let r = match self.hook.after(op, r.is_ok()) {
            Some(e) => Err(e),
            None => r,
        };
        if !op.is_mutating() {
            self.hook.deliver(op).await;
        }
        r
    }
}

impl<F: Filesystem, H: Hook> Filesystem for HookedFs<F, H> {
    type Node = F::Node;
    type File = F::File;

    async fn root(&self) -> FsResult<(F::Node, Qid)> {
        self.wrap(OpKind::Root, self.inner.root()).await
    }
    async fn lookup(&self, dir: &F::Node, name: &Name) -> FsResult<(F::Node, Qid)> {
        self.wrap(OpKind::Lookup, self.inner.lookup(dir, name))
            .await
    }
    async fn parent(&self, dir: &F::Node) -> FsResult<(F::Node, Qid)> {
        self.wrap(OpKind::Parent, self.inner.parent(dir)).await
    }
    async fn getattr(&self, node: &F::Node) -> FsResult<Attr> {
        self.wrap(OpKind::Getattr, self.inner.getattr(node)).await
    }
    async fn setattr(&self, node: &F::Node, attr: &SetAttr) -> FsResult<()> {
        self.wrap(OpKind::Setattr, self.inner.setattr(node, attr))
            .await
    }
    async fn open(&self, node: &F::Node, flags: OpenFlags) -> FsResult<F::File> {
        self.wrap(OpKind::Open, self.inner.open(node, flags)).await
    }
    async fn open_by(&self, node: &F::Node, flags: OpenFlags, creds: Creds) -> FsResult<F::File> {
        self.wrap(OpKind::Open, self.inner.open_by(node, flags, creds))
            .await
    }
    async fn create(
        &self,
        dir: &F::Node,
        name: &Name,
        flags: OpenFlags,
        mode: u32,
        creds: Creds,
    ) -> FsResult<(F::Node, F::File, Qid)> {
        self.wrap(
            OpKind::Create,
            self.inner.create(dir, name, flags, mode, creds),
        )
        .await
    }
    async fn read(&self, file: &F::File, offset: u64, buf: &mut [u8]) -> FsResult<usize> {
        let n = self.hook.io_len(OpKind::Read, buf.len()).min(buf.len());
        self.wrap(OpKind::Read, self.inner.read(file, offset, &mut buf[..n]))
            .await
    }
    async fn write(&self, file: &F::File, offset: u64, data: &[u8]) -> FsResult<usize> {
        let n = self.hook.io_len(OpKind::Write, data.len()).min(data.len());
        self.wrap(OpKind::Write, self.inner.write(file, offset, &data[..n]))
            .await
    }
    /// One hooked call for the whole vector, as the backend makes one `preadv`: a short
    /// read cuts the vector, not each buffer.
    async fn read_vectored(
        &self,
        file: &F::File,
        offset: u64,
        bufs: &mut [IoSliceMut<'_>],
    ) -> FsResult<usize> {
        let total = bufs.iter().map(|b| b.len()).sum::<usize>();
        let mut left = self.hook.io_len(OpKind::Read, total).min(total);
        let mut cut: Vec<IoSliceMut<'_>> = Vec::with_capacity(bufs.len());
        for b in bufs.iter_mut() {
            let n = left.min(b.len());
            cut.push(IoSliceMut::new(&mut b[..n]));
            left -= n;
        }
        self.wrap(
            OpKind::Read,
            self.inner.read_vectored(file, offset, &mut cut),
        )
        .await
    }
    /// One hooked call for the whole vector (`pwritev`), like [`Self::read_vectored`].
    async fn write_vectored(
        &self,
        file: &F::File,
        offset: u64,
        bufs: &[IoSlice<'_>],
    ) -> FsResult<usize> {
        let total = bufs.iter().map(|b| b.len()).sum::<usize>();
        let mut left = self.hook.io_len(OpKind::Write, total).min(total);
        let mut cut: Vec<IoSlice<'_>> = Vec::with_capacity(bufs.len());
        for b in bufs {
            let n = left.min(b.len());
            cut.push(IoSlice::new(&b[..n]));
            left -= n;
        }
        self.wrap(OpKind::Write, self.inner.write_vectored(file, offset, &cut))
            .await
    }
    async fn readdir(&self, dir: &F::File, cookie: u64, max: usize) -> FsResult<Vec<DirEntry>> {
        self.wrap(OpKind::Readdir, self.inner.readdir(dir, cookie, max))
            .await
    }
    async fn fsync(&self, file: &F::File, datasync: bool) -> FsResult<()> {
        self.wrap(OpKind::Fsync, self.inner.fsync(file, datasync))
            .await
    }
    async fn mkdir(&self, dir: &F::Node, name: &Name, mode: u32, creds: Creds) -> FsResult<Qid> {
        self.wrap(OpKind::Mkdir, self.inner.mkdir(dir, name, mode, creds))
            .await
    }
    async fn symlink(
        &self,
        dir: &F::Node,
        name: &Name,
        target: &[u8],
        creds: Creds,
    ) -> FsResult<Qid> {
        self.wrap(
            OpKind::Symlink,
            self.inner.symlink(dir, name, target, creds),
        )
        .await
    }
    async fn mknod(
        &self,
        dir: &F::Node,
        name: &Name,
        mode: u32,
        rdev: (u32, u32),
        creds: Creds,
    ) -> FsResult<Qid> {
        self.wrap(
            OpKind::Mknod,
            self.inner.mknod(dir, name, mode, rdev, creds),
        )
        .await
    }
    async fn link(&self, target: &F::Node, dir: &F::Node, name: &Name) -> FsResult<()> {
        self.wrap(OpKind::Link, self.inner.link(target, dir, name))
            .await
    }
    async fn readlink(&self, node: &F::Node) -> FsResult<Vec<u8>> {
        self.wrap(OpKind::Readlink, self.inner.readlink(node)).await
    }
    async fn rename(
        &self,
        old_dir: &F::Node,
        old_name: &Name,
        new_dir: &F::Node,
        new_name: &Name,
    ) -> FsResult<()> {
        self.wrap(
            OpKind::Rename,
            self.inner.rename(old_dir, old_name, new_dir, new_name),
        )
        .await
    }
    async fn unlink(&self, dir: &F::Node, name: &Name, rmdir: bool) -> FsResult<()> {
        self.wrap(OpKind::Unlink, self.inner.unlink(dir, name, rmdir))
            .await
    }
    async fn unlink_node(
        &self,
        dir: &F::Node,
        name: &Name,
        node: &F::Node,
        rmdir: bool,
    ) -> FsResult<()> {
        self.wrap(
            OpKind::Unlink,
            self.inner.unlink_node(dir, name, node, rmdir),
        )
        .await
    }
    async fn rename_node(
        &self,
        node: &F::Node,
        old_dir: &F::Node,
        old_name: &Name,
        new_dir: &F::Node,
        new_name: &Name,
    ) -> FsResult<()> {
        self.wrap(
            OpKind::Rename,
            self.inner
                .rename_node(node, old_dir, old_name, new_dir, new_name),
        )
        .await
    }
    async fn statfs(&self, node: &F::Node) -> FsResult<StatFs> {
        self.wrap(OpKind::Statfs, self.inner.statfs(node)).await
    }
    async fn getxattr(&self, node: &F::Node, name: &[u8]) -> FsResult<Vec<u8>> {
        self.wrap(OpKind::Getxattr, self.inner.getxattr(node, name))
            .await
    }
    async fn listxattr(&self, node: &F::Node) -> FsResult<Vec<u8>> {
        self.wrap(OpKind::Listxattr, self.inner.listxattr(node))
            .await
    }
    async fn setxattr(
        &self,
        node: &F::Node,
        name: &[u8],
        value: &[u8],
        flags: u32,
    ) -> FsResult<()> {
        self.wrap(
            OpKind::Setxattr,
            self.inner.setxattr(node, name, value, flags),
        )
        .await
    }
    async fn removexattr(&self, node: &F::Node, name: &[u8]) -> FsResult<()> {
        self.wrap(OpKind::Removexattr, self.inner.removexattr(node, name))
            .await
    }
    async fn lock(&self, file: &F::File, req: &LockRequest) -> FsResult<LockOutcome> {
        self.wrap(OpKind::Lock, self.inner.lock(file, req)).await
    }
    async fn getlock(&self, file: &F::File, req: &LockRequest) -> FsResult<LockProbe> {
        self.wrap(OpKind::Getlock, self.inner.getlock(file, req))
            .await
    }
}
