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

    /// How much of each buffer of a vectored read or write moves: the hook's `io_len` of
    /// the whole vector (asked once, as for one `preadv`), taken from the front.
    fn cut_lens(&self, op: OpKind, lens: impl Iterator<Item = usize> + Clone) -> Vec<usize> {
        let total = lens.clone().sum::<usize>();
        let mut left = self.hook.io_len(op, total).min(total);
        lens.map(|len| {
            let n = left.min(len);
            left -= n;
            n
        })
        .collect()
    }
}

/// The methods that are only the inner call inside [`HookedFs::wrap`]: `Kind: fn
/// name(args) -> T;` makes `async fn name(&self, args) -> FsResult<T>`, hooked as
/// `OpKind::Kind`.
macro_rules! hooked {
    ($($kind:ident: fn $name:ident($($arg:ident: $ty:ty),*) -> $out:ty;)*) => {
        $(
            async fn $name(&self, $($arg: $ty),*) -> FsResult<$out> {
                self.wrap(OpKind::$kind, self.inner.$name($($arg),*)).await
            }
        )*
    };
}

impl<F: Filesystem, H: Hook> Filesystem for HookedFs<F, H> {
    type Node = F::Node;
    type File = F::File;

    hooked! {
        Root: fn root() -> (F::Node, Qid);
        Lookup: fn lookup(dir: &F::Node, name: &Name) -> (F::Node, Qid);
        Parent: fn parent(dir: &F::Node) -> (F::Node, Qid);
        Getattr: fn getattr(node: &F::Node) -> Attr;
        Setattr: fn setattr(node: &F::Node, attr: &SetAttr) -> ();
        Open: fn open(node: &F::Node, flags: OpenFlags) -> F::File;
        Open: fn open_by(node: &F::Node, flags: OpenFlags, creds: Creds) -> F::File;
        Create: fn create(
            dir: &F::Node,
            name: &Name,
            flags: OpenFlags,
            mode: u32,
            creds: Creds
        ) -> (F::Node, F::File, Qid);
        Readdir: fn readdir(dir: &F::File, cookie: u64, max: usize) -> Vec<DirEntry>;
        Fsync: fn fsync(file: &F::File, datasync: bool) -> ();
        Mkdir: fn mkdir(dir: &F::Node, name: &Name, mode: u32, creds: Creds) -> Qid;
        Symlink: fn symlink(dir: &F::Node, name: &Name, target: &[u8], creds: Creds) -> Qid;
        Mknod: fn mknod(
            dir: &F::Node,
            name: &Name,
            mode: u32,
            rdev: (u32, u32),
            creds: Creds
        ) -> Qid;
        Link: fn link(target: &F::Node, dir: &F::Node, name: &Name) -> ();
        Readlink: fn readlink(node: &F::Node) -> Vec<u8>;
        Rename: fn rename(
            old_dir: &F::Node,
            old_name: &Name,
            new_dir: &F::Node,
            new_name: &Name
        ) -> ();
        Unlink: fn unlink(dir: &F::Node, name: &Name, rmdir: bool) -> ();
        Unlink: fn unlink_node(dir: &F::Node, name: &Name, node: &F::Node, rmdir: bool) -> ();
        Rename: fn rename_node(
            node: &F::Node,
            old_dir: &F::Node,
            old_name: &Name,
            new_dir: &F::Node,
            new_name: &Name
        ) -> ();
        Statfs: fn statfs(node: &F::Node) -> StatFs;
        Getxattr: fn getxattr(node: &F::Node, name: &[u8]) -> Vec<u8>;
        Listxattr: fn listxattr(node: &F::Node) -> Vec<u8>;
        Setxattr: fn setxattr(node: &F::Node, name: &[u8], value: &[u8], flags: u32) -> ();
        Removexattr: fn removexattr(node: &F::Node, name: &[u8]) -> ();
        Lock: fn lock(file: &F::File, req: &LockRequest) -> LockOutcome;
        Getlock: fn getlock(file: &F::File, req: &LockRequest) -> LockProbe;
    }

    // Reads and writes may be cut short by the hook first.
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
        let lens = self.cut_lens(OpKind::Read, bufs.iter().map(|b| b.len()));
        let mut cut: Vec<IoSliceMut<'_>> = bufs
            .iter_mut()
            .zip(lens)
            .map(|(b, n)| IoSliceMut::new(&mut b[..n]))
            .collect();
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
        let lens = self.cut_lens(OpKind::Write, bufs.iter().map(|b| b.len()));
        let cut: Vec<IoSlice<'_>> = bufs
            .iter()
            .zip(lens)
            .map(|(b, n)| IoSlice::new(&b[..n]))
            .collect();
        self.wrap(OpKind::Write, self.inner.write_vectored(file, offset, &cut))
            .await
    }
}
