//! The filesystem a 9p server exports: the handle-based [`Filesystem`] trait and its backends.
//!
//! Handles, not paths: a [`Filesystem::Node`] names a file the way an `O_PATH` descriptor
//! does, and a [`Filesystem::File`] is an open file description. Every directory operation
//! takes a parent node and a validated [`Name`], so no backend ever parses a path, and `..`
//! is the server's business (it never leaves the export root).
//!
//! **Cancellation contract.** The server cancels a flushed request by dropping its future.
//! A backend's futures must therefore apply their effect atomically when they complete: a
//! future dropped before it returned `Ready` has changed nothing. (Backends that do their
//! work synchronously inside one poll, like [`MemFs`] and the host backend, get this for
//! free; a backend that waits must wait *before* it acts.)

use std::future::Future;
use std::io::{IoSlice, IoSliceMut};

use crate::protocol::{Attr, Errno, LockType, OpenFlags, Qid, SetAttr, StatFs};

#[cfg(feature = "testing")]
pub mod hooked;
pub mod host;
mod mapped;
pub mod mem;
mod name;

pub use host::HostFs;
pub(crate) use mapped::FileMap;
pub use mapped::MappedBytes;
pub use mem::MemFs;
pub use name::{NAME_MAX, Name};

/// Result of a filesystem operation: errors are Linux errno values, sent to the guest as is.
pub type FsResult<T> = Result<T, Errno>;

/// Who is acting: the uid from `Tattach` (`n_uname`) and the gid of the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Creds {
    /// The attach uid.
    pub uid: u32,
    /// The gid the request names.
    pub gid: u32,
}

/// One directory entry as a backend reports it. `next` is the cookie that resumes reading
/// *after* this entry; cookies must stay valid while entries are added and removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The entry's qid.
    pub qid: Qid,
    /// The cookie that resumes reading after this entry.
    pub next: u64,
    /// `DT_*` file type (4 = directory, 8 = regular file, 10 = symlink, ...).
    pub ty: u8,
    /// The entry's name.
    pub name: Vec<u8>,
}

/// A byte-range lock request (POSIX `fcntl` semantics; owned by the open file, like Linux
/// open-file-description locks, so two fids conflict as two processes would).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockRequest {
    /// Read, write or unlock.
    pub lock_type: LockType,
    /// First byte of the range.
    pub start: u64,
    /// 0 means "to the end of the file".
    pub length: u64,
    /// The locking process, as the client names it.
    pub proc_id: u32,
    /// The client, as it names itself.
    pub client_id: Vec<u8>,
}

/// Answer to a lock probe (`Tgetlock`): the first conflicting lock, or the request itself
/// with type `Unlock` when nothing conflicts.
pub type LockProbe = LockRequest;

/// Outcome of a lock attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockOutcome {
    /// The lock is held.
    Granted,
    /// A conflicting lock is held; the caller may retry (the server does, for blocking
    /// requests, without blocking the device).
    Conflict,
}

/// A filesystem co9p can export. All methods are `async` so a backend may wait (the
/// simulator's faulty filesystem adds virtual latency); see the module's cancellation
/// contract.
pub trait Filesystem: Send + Sync + 'static {
    /// A reference to a file, like an `O_PATH` descriptor: what a fid holds after a walk.
    type Node: Clone + Send + Sync + 'static;
    /// An open file description: what a fid holds after `Tlopen`/`Tlcreate`.
    type File: Send + Sync + 'static;

    /// The export's root directory.
    fn root(&self) -> impl Future<Output = FsResult<(Self::Node, Qid)>> + Send;
    /// Finds `name` in the directory `dir`, without following a final symlink.
    fn lookup(
        &self,
        dir: &Self::Node,
        name: &Name,
    ) -> impl Future<Output = FsResult<(Self::Node, Qid)>> + Send;
    /// The parent of `dir` (the root's parent is the root).
    fn parent(&self, dir: &Self::Node) -> impl Future<Output = FsResult<(Self::Node, Qid)>> + Send;
    /// The attributes of `node`.
    fn getattr(&self, node: &Self::Node) -> impl Future<Output = FsResult<Attr>> + Send;
    /// Changes the attributes `attr.valid` selects.
    fn setattr(
        &self,
        node: &Self::Node,
        attr: &SetAttr,
    ) -> impl Future<Output = FsResult<()>> + Send;
    /// Opens `node` as the superuser would. Only regular files and directories can be
    /// opened.
    fn open(
        &self,
        node: &Self::Node,
        flags: OpenFlags,
    ) -> impl Future<Output = FsResult<Self::File>> + Send;
    /// Opens `node` for `creds.uid`: the file's writes then drop its set-id bits as
    /// Linux's do for a writer without `CAP_FSETID` (any uid but 0): `S_ISUID`, and
    /// `S_ISGID` when group-execute is set (a guest with `cache=none` leaves this to the
    /// server). Files from [`Self::create`] write for their creator the same way.
    fn open_by(
        &self,
        node: &Self::Node,
        flags: OpenFlags,
        creds: Creds,
    ) -> impl Future<Output = FsResult<Self::File>> + Send;
    /// Creates and opens a regular file `name` in `dir`.
    fn create(
        &self,
        dir: &Self::Node,
        name: &Name,
        flags: OpenFlags,
        mode: u32,
        creds: Creds,
    ) -> impl Future<Output = FsResult<(Self::Node, Self::File, Qid)>> + Send;
    /// Reads at `offset` into `buf`, returning the bytes read (0 at end of file).
    fn read(
        &self,
        file: &Self::File,
        offset: u64,
        buf: &mut [u8],
    ) -> impl Future<Output = FsResult<usize>> + Send;
    /// Writes `data` at `offset` (at the end for files opened with `O_APPEND`).
    fn write(
        &self,
        file: &Self::File,
        offset: u64,
        data: &[u8],
    ) -> impl Future<Output = FsResult<usize>> + Send;
    /// Reads into several buffers in turn (`preadv`): how an `Rread` lands straight in the
    /// guest's scattered pages. The default reads each buffer with [`Self::read`] and stops
    /// at the first short read.
    fn read_vectored(
        &self,
        file: &Self::File,
        offset: u64,
        bufs: &mut [IoSliceMut<'_>],
    ) -> impl Future<Output = FsResult<usize>> + Send {
        in_turn(
            bufs.iter_mut(),
            offset,
            |b| b.len(),
            move |buf, at| self.read(file, at, buf),
        )
    }
    /// Up to `count` bytes of `file` from `offset` as a range of a shared mapping of it,
    /// for a transport that hands an `Rread`'s data to the kernel instead of copying it
    /// into a reply buffer (see [`MappedBytes`]). Fewer than `count` bytes where the file
    /// ends sooner. `None`: call [`Self::read_vectored`] instead (the default; also a file
    /// that cannot be mapped, or a range at or past its end). Works in place, as reads do.
    fn map_read(
        &self,
        file: &Self::File,
        offset: u64,
        count: usize,
    ) -> Option<FsResult<MappedBytes>> {
        let _ = (file, offset, count);
        None
    }
    /// Writes several buffers in turn (`pwritev`). The default writes each with
    /// [`Self::write`] and stops at the first short write.
    fn write_vectored(
        &self,
        file: &Self::File,
        offset: u64,
        bufs: &[IoSlice<'_>],
    ) -> impl Future<Output = FsResult<usize>> + Send {
        in_turn(
            bufs.iter(),
            offset,
            |b| b.len(),
            move |buf, at| self.write(file, at, buf),
        )
    }
    /// Lists an open directory from `cookie` (0 = the start), at most `max` entries,
    /// including `.` and `..`.
    fn readdir(
        &self,
        dir: &Self::File,
        cookie: u64,
        max: usize,
    ) -> impl Future<Output = FsResult<Vec<DirEntry>>> + Send;
    /// Flushes the file to stable storage (`fdatasync` when `datasync`).
    fn fsync(&self, file: &Self::File, datasync: bool)
    -> impl Future<Output = FsResult<()>> + Send;
    /// Makes the directory `name` in `dir`.
    fn mkdir(
        &self,
        dir: &Self::Node,
        name: &Name,
        mode: u32,
        creds: Creds,
    ) -> impl Future<Output = FsResult<Qid>> + Send;
    /// Makes the symbolic link `name` in `dir`, pointing at `target`.
    fn symlink(
        &self,
        dir: &Self::Node,
        name: &Name,
        target: &[u8],
        creds: Creds,
    ) -> impl Future<Output = FsResult<Qid>> + Send;
    /// Creates a device node, fifo or socket (`mode` carries the type bits).
    fn mknod(
        &self,
        dir: &Self::Node,
        name: &Name,
        mode: u32,
        rdev: (u32, u32),
        creds: Creds,
    ) -> impl Future<Output = FsResult<Qid>> + Send;
    /// Makes `name` in `dir` a new hard link to `target`.
    fn link(
        &self,
        target: &Self::Node,
        dir: &Self::Node,
        name: &Name,
    ) -> impl Future<Output = FsResult<()>> + Send;
    /// The text of the symbolic link `node`.
    fn readlink(&self, node: &Self::Node) -> impl Future<Output = FsResult<Vec<u8>>> + Send;
    /// Renames `old_dir/old_name` to `new_dir/new_name`, replacing a compatible target.
    fn rename(
        &self,
        old_dir: &Self::Node,
        old_name: &Name,
        new_dir: &Self::Node,
        new_name: &Name,
    ) -> impl Future<Output = FsResult<()>> + Send;
    /// Removes `name` from `dir`; `rmdir` for directories (which must be empty).
    fn unlink(
        &self,
        dir: &Self::Node,
        name: &Name,
        rmdir: bool,
    ) -> impl Future<Output = FsResult<()>> + Send;
    /// Removes `name` from `dir` only if that name still refers to `node`: Tremove acts on
    /// the fid's own file, never on whatever has taken its name since. `ESTALE` when the
    /// name now refers to another file, `ENOENT` when it refers to none.
    fn unlink_node(
        &self,
        dir: &Self::Node,
        name: &Name,
        node: &Self::Node,
        rmdir: bool,
    ) -> impl Future<Output = FsResult<()>> + Send;
    /// Renames `old_dir/old_name` to `new_dir/new_name` only if the old name still refers
    /// to `node` (Trename moves the fid's own file), with the errors of
    /// [`Self::unlink_node`].
    fn rename_node(
        &self,
        node: &Self::Node,
        old_dir: &Self::Node,
        old_name: &Name,
        new_dir: &Self::Node,
        new_name: &Name,
    ) -> impl Future<Output = FsResult<()>> + Send;
    /// The statistics of the filesystem holding `node`.
    fn statfs(&self, node: &Self::Node) -> impl Future<Output = FsResult<StatFs>> + Send;
    /// The value of `node`'s xattr `name` (`ENODATA` if it has none).
    fn getxattr(
        &self,
        node: &Self::Node,
        name: &[u8],
    ) -> impl Future<Output = FsResult<Vec<u8>>> + Send;
    /// All xattr names, each followed by a NUL (the `listxattr(2)` format).
    fn listxattr(&self, node: &Self::Node) -> impl Future<Output = FsResult<Vec<u8>>> + Send;
    /// Sets an xattr; `flags` are `XATTR_CREATE` (1) / `XATTR_REPLACE` (2).
    fn setxattr(
        &self,
        node: &Self::Node,
        name: &[u8],
        value: &[u8],
        flags: u32,
    ) -> impl Future<Output = FsResult<()>> + Send;
    /// Removes `node`'s xattr `name`.
    fn removexattr(
        &self,
        node: &Self::Node,
        name: &[u8],
    ) -> impl Future<Output = FsResult<()>> + Send;
    /// Takes or releases a byte-range lock owned by `file`, never waiting.
    fn lock(
        &self,
        file: &Self::File,
        req: &LockRequest,
    ) -> impl Future<Output = FsResult<LockOutcome>> + Send;
    /// Tests for a conflicting lock, as `F_GETLK` does.
    fn getlock(
        &self,
        file: &Self::File,
        req: &LockRequest,
    ) -> impl Future<Output = FsResult<LockProbe>> + Send;
}

/// The default vectored read or write: a plain call for each buffer in turn, at the
/// offset the ones before it reached, stopping at the first short one (as `preadv` and
/// `pwritev` may).
async fn in_turn<B, Fut>(
    bufs: impl IntoIterator<Item = B>,
    offset: u64,
    len: impl Fn(&B) -> usize,
    mut call: impl FnMut(B, u64) -> Fut,
) -> FsResult<usize>
where
    Fut: Future<Output = FsResult<usize>>,
{
    let mut total = 0usize;
    for buf in bufs {
        let want = len(&buf);
        let n = call(buf, offset + total as u64).await?;
        total += n;
        if n < want {
            break;
        }
    }
    Ok(total)
}
