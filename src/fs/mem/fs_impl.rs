//! `impl Filesystem for MemFs`: each operation takes the lock once, checks, applies, and
//! returns — all within one poll.

use std::io::{IoSlice, IoSliceMut};
use std::sync::atomic::{AtomicBool, Ordering};

use super::data::{Data, PAGE};
use super::dir::Dir;
use super::inode::{
    Content, PERM_MASK, S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG, S_IFSOCK,
    makedev,
};
use super::locks::{Held, range};
use super::ns::NewInode;
use super::state::{ROOT_INO, State};
use super::{MemFile, MemFs, MemNode, V9FS_MAGIC};
use crate::fs::{
    Creds, DirEntry, Filesystem, FsResult, LockOutcome, LockProbe, LockRequest, NAME_MAX, Name,
};
use crate::protocol::{Attr, Errno, LockType, OpenFlags, Qid, SetAttr, StatFs, Timespec};

/// Longest symlink target (Linux `PATH_MAX` less the NUL).
const SYMLINK_MAX: usize = 4095;

impl MemFs {
    /// Runs a mutation with the current time; the logical clock moves only if it succeeds.
    fn mutate<T>(&self, f: impl FnOnce(&mut State, Timespec) -> FsResult<T>) -> FsResult<T> {
        let mut st = self.state();
        let now = st.now();
        let out = f(&mut st, now)?;
        st.advance();
        Ok(out)
    }

    /// Counts a new handle to `ino` and returns its qid; build the node after unlocking.
    fn grab(st: &mut State, ino: u64) -> FsResult<Qid> {
        st.grab(ino)?;
        Ok(st.get(ino)?.qid())
    }

    fn file(&self, node: MemNode, flags: OpenFlags, id: u64, writer: u32) -> MemFile {
        MemFile {
            node,
            flags,
            id,
            locked: AtomicBool::new(false),
            writer,
        }
    }

    /// Creates an inode other than a regular file, returning its qid.
    fn make(&self, dir: &MemNode, name: &Name, new: NewInode, creds: Creds) -> FsResult<Qid> {
        let dir = self.ino(dir)?;
        self.mutate(|st, now| {
            let ino = st.make(dir, name, new, creds, now)?;
            Ok(st.get(ino)?.qid())
        })
    }
}

/// The access mode must be one of the three real ones.
fn check_access(flags: OpenFlags) -> FsResult<()> {
    if flags.access() == OpenFlags::ACCMODE.0 {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

impl Filesystem for MemFs {
    type Node = MemNode;
    type File = MemFile;

    async fn root(&self) -> FsResult<(MemNode, Qid)> {
        let qid = Self::grab(&mut self.state(), ROOT_INO)?;
        Ok((self.node(ROOT_INO), qid))
    }

    async fn lookup(&self, dir: &MemNode, name: &Name) -> FsResult<(MemNode, Qid)> {
        let dir = self.ino(dir)?;
        let (ino, qid) = {
            let mut st = self.state();
            let ino = st.lookup(dir, name)?;
            (ino, Self::grab(&mut st, ino)?)
        };
        Ok((self.node(ino), qid))
    }

    async fn parent(&self, dir: &MemNode) -> FsResult<(MemNode, Qid)> {
        let dir = self.ino(dir)?;
        let (ino, qid) = {
            let mut st = self.state();
            let ino = st.parent(dir)?;
            (ino, Self::grab(&mut st, ino)?)
        };
        Ok((self.node(ino), qid))
    }

    async fn getattr(&self, node: &MemNode) -> FsResult<Attr> {
        let ino = self.ino(node)?;
        Ok(self.state().get(ino)?.attr())
    }

    async fn setattr(&self, node: &MemNode, attr: &SetAttr) -> FsResult<()> {
        let ino = self.ino(node)?;
        self.mutate(|st, now| st.setattr(ino, attr, now))
    }

    /// Only regular files and directories open (`ENXIO` otherwise, as QEMU since
    /// CVE-2023-2861); directories only for reading (`EISDIR`). `O_TRUNC` empties a
    /// regular file opened for writing.
    async fn open(&self, node: &MemNode, flags: OpenFlags) -> FsResult<MemFile> {
        self.open_by(node, flags, Creds::default()).await
    }

    async fn open_by(&self, node: &MemNode, flags: OpenFlags, creds: Creds) -> FsResult<MemFile> {
        check_access(flags)?;
        let ino = self.ino(node)?;
        let id = {
            let mut st = self.state();
            let inode = st.get(ino)?;
            match inode.content {
                Content::Dir(_) if flags.writable() => return Err(Errno::EISDIR),
                Content::Dir(_) => {}
                Content::File(_) if flags.contains(OpenFlags::DIRECTORY) => {
                    return Err(Errno::ENOTDIR);
                }
                Content::File(_) => {}
                _ => return Err(Errno::ENXIO),
            }
            if flags.writable() && flags.contains(OpenFlags::TRUNC) {
                let now = st.now();
                st.truncate_on_open(ino, now)?;
                st.advance();
            }
            st.grab(ino)?;
            st.file_id()
        };
        Ok(self.file(self.node(ino), flags, id, creds.uid))
    }

    async fn create(
        &self,
        dir: &MemNode,
        name: &Name,
        flags: OpenFlags,
        mode: u32,
        creds: Creds,
    ) -> FsResult<(MemNode, MemFile, Qid)> {
        check_access(flags)?;
        let dir = self.ino(dir)?;
        let new = NewInode {
            mode: S_IFREG | (mode & PERM_MASK),
            rdev: 0,
            content: Content::File(Data::default()),
        };
        let (ino, qid, id) = self.mutate(|st, now| {
            let ino = st.make(dir, name, new, creds, now)?;
            let qid = Self::grab(st, ino)?;
            Ok((ino, qid, st.file_id()))
        })?;
        let node = self.node(ino);
        let file = self.file(node.clone(), flags, id, creds.uid);
        Ok((node, file, qid))
    }

    async fn read(&self, file: &MemFile, offset: u64, buf: &mut [u8]) -> FsResult<usize> {
        self.read_vectored(file, offset, &mut [IoSliceMut::new(buf)])
            .await
    }

    async fn write(&self, file: &MemFile, offset: u64, data: &[u8]) -> FsResult<usize> {
        self.write_vectored(file, offset, &[IoSlice::new(data)])
            .await
    }

    async fn read_vectored(
        &self,
        file: &MemFile,
        offset: u64,
        bufs: &mut [IoSliceMut<'_>],
    ) -> FsResult<usize> {
        let ino = self.ino(&file.node)?;
        self.state().read(ino, file.flags, offset, bufs)
    }

    /// All buffers are written under one lock: the write is atomic.
    async fn write_vectored(
        &self,
        file: &MemFile,
        offset: u64,
        bufs: &[IoSlice<'_>],
    ) -> FsResult<usize> {
        let ino = self.ino(&file.node)?;
        self.mutate(|st, now| {
            let n = st.write(ino, file.flags, offset, bufs, now)?;
            if n > 0 && file.writer != 0 {
                st.kill_setid(ino)?;
            }
            Ok(n)
        })
    }

    async fn readdir(&self, dir: &MemFile, cookie: u64, max: usize) -> FsResult<Vec<DirEntry>> {
        let ino = self.ino(&dir.node)?;
        self.state().readdir(ino, cookie, max)
    }

    async fn fsync(&self, file: &MemFile, _datasync: bool) -> FsResult<()> {
        let ino = self.ino(&file.node)?;
        self.state().get(ino).map(drop)
    }

    async fn mkdir(&self, dir: &MemNode, name: &Name, mode: u32, creds: Creds) -> FsResult<Qid> {
        let new = NewInode {
            mode: S_IFDIR | (mode & PERM_MASK),
            rdev: 0,
            content: Content::Dir(Dir::new(self.ino(dir)?)),
        };
        self.make(dir, name, new, creds)
    }

    /// `ENOENT` for an empty target (as Linux), `ENAMETOOLONG` past 4095 bytes, `EINVAL`
    /// for a NUL in it.
    async fn symlink(
        &self,
        dir: &MemNode,
        name: &Name,
        target: &[u8],
        creds: Creds,
    ) -> FsResult<Qid> {
        if target.is_empty() {
            return Err(Errno::ENOENT);
        }
        if target.len() > SYMLINK_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        if target.contains(&0) {
            return Err(Errno::EINVAL);
        }
        let new = NewInode {
            mode: S_IFLNK | 0o777,
            rdev: 0,
            content: Content::Symlink(target.to_vec()),
        };
        self.make(dir, name, new, creds)
    }

    /// Type 0 or `S_IFREG` makes a regular file; fifos, sockets and devices are nodes with
    /// attributes only; `S_IFDIR` is `EPERM` (use mkdir), anything else `EINVAL`.
    async fn mknod(
        &self,
        dir: &MemNode,
        name: &Name,
        mode: u32,
        rdev: (u32, u32),
        creds: Creds,
    ) -> FsResult<Qid> {
        let perm = mode & PERM_MASK;
        let (ty, rdev, content) = match mode & S_IFMT {
            0 | S_IFREG => (S_IFREG, 0, Content::File(Data::default())),
            S_IFIFO | S_IFSOCK => (mode & S_IFMT, 0, Content::Special),
            S_IFCHR | S_IFBLK => (mode & S_IFMT, makedev(rdev.0, rdev.1), Content::Special),
            S_IFDIR => return Err(Errno::EPERM),
            _ => return Err(Errno::EINVAL),
        };
        let new = NewInode {
            mode: ty | perm,
            rdev,
            content,
        };
        self.make(dir, name, new, creds)
    }

    async fn link(&self, target: &MemNode, dir: &MemNode, name: &Name) -> FsResult<()> {
        let (target, dir) = (self.ino(target)?, self.ino(dir)?);
        self.mutate(|st, now| st.link(target, dir, name, now))
    }

    async fn readlink(&self, node: &MemNode) -> FsResult<Vec<u8>> {
        let ino = self.ino(node)?;
        match &self.state().get(ino)?.content {
            Content::Symlink(target) => Ok(target.clone()),
            _ => Err(Errno::EINVAL),
        }
    }

    async fn rename(
        &self,
        old_dir: &MemNode,
        old_name: &Name,
        new_dir: &MemNode,
        new_name: &Name,
    ) -> FsResult<()> {
        let (old_dir, new_dir) = (self.ino(old_dir)?, self.ino(new_dir)?);
        self.mutate(|st, now| st.rename(old_dir, old_name, new_dir, new_name, now))
    }

    async fn unlink(&self, dir: &MemNode, name: &Name, rmdir: bool) -> FsResult<()> {
        let dir = self.ino(dir)?;
        self.mutate(|st, now| st.unlink(dir, name, rmdir, now))
    }

    async fn unlink_node(
        &self,
        dir: &MemNode,
        name: &Name,
        node: &MemNode,
        rmdir: bool,
    ) -> FsResult<()> {
        let (dir, ino) = (self.ino(dir)?, self.ino(node)?);
        self.mutate(|st, now| {
            st.expect_entry(dir, name, ino)?;
            st.unlink(dir, name, rmdir, now)
        })
    }

    async fn rename_node(
        &self,
        node: &MemNode,
        old_dir: &MemNode,
        old_name: &Name,
        new_dir: &MemNode,
        new_name: &Name,
    ) -> FsResult<()> {
        let (ino, old_dir, new_dir) = (self.ino(node)?, self.ino(old_dir)?, self.ino(new_dir)?);
        self.mutate(|st, now| {
            st.expect_entry(old_dir, old_name, ino)?;
            st.rename(old_dir, old_name, new_dir, new_name, now)
        })
    }

    /// Capacity in 4 KiB blocks, inodes from [`Limits::max_inodes`](super::Limits).
    async fn statfs(&self, node: &MemNode) -> FsResult<StatFs> {
        let ino = self.ino(node)?;
        let st = self.state();
        st.get(ino)?;
        let blocks = st.limits.capacity / PAGE;
        let free = st.limits.capacity.saturating_sub(st.used) / PAGE;
        let files = st.limits.max_inodes;
        Ok(StatFs {
            fs_type: V9FS_MAGIC,
            bsize: PAGE as u32,
            blocks,
            bfree: free,
            bavail: free,
            files,
            ffree: files.saturating_sub(st.inodes.len() as u64),
            fsid: 0,
            namelen: NAME_MAX as u32,
        })
    }

    async fn getxattr(&self, node: &MemNode, name: &[u8]) -> FsResult<Vec<u8>> {
        let ino = self.ino(node)?;
        self.state().getxattr(ino, name)
    }

    async fn listxattr(&self, node: &MemNode) -> FsResult<Vec<u8>> {
        let ino = self.ino(node)?;
        self.state().listxattr(ino)
    }

    async fn setxattr(
        &self,
        node: &MemNode,
        name: &[u8],
        value: &[u8],
        flags: u32,
    ) -> FsResult<()> {
        let ino = self.ino(node)?;
        self.mutate(|st, now| st.setxattr(ino, name, value, flags, now))
    }

    async fn removexattr(&self, node: &MemNode, name: &[u8]) -> FsResult<()> {
        let ino = self.ino(node)?;
        self.mutate(|st, now| st.removexattr(ino, name, now))
    }

    /// A read lock needs a file open for reading, a write lock one open for writing
    /// (`EBADF`, as `fcntl`). Never waits: `Conflict` if another file holds a lock in
    /// the way.
    async fn lock(&self, file: &MemFile, req: &LockRequest) -> FsResult<LockOutcome> {
        let ino = self.ino(&file.node)?;
        match req.lock_type {
            LockType::Read if !file.flags.readable() => return Err(Errno::EBADF),
            LockType::Write if !file.flags.writable() => return Err(Errno::EBADF),
            _ => {}
        }
        let (start, end) = range(req.start, req.length)?;
        let mut st = self.state();
        let locks = &mut st.get_mut(ino)?.locks;
        if req.lock_type != LockType::Unlock
            && locks.conflict(file.id, req.lock_type, start, end).is_some()
        {
            return Ok(LockOutcome::Conflict);
        }
        locks.set(Held {
            owner: file.id,
            ty: req.lock_type,
            start,
            end,
            proc_id: req.proc_id,
            client_id: req.client_id.clone(),
        });
        file.locked.store(true, Ordering::Release);
        Ok(LockOutcome::Granted)
    }

    /// The first conflicting lock (lowest start), or the request with type `Unlock`.
    async fn getlock(&self, file: &MemFile, req: &LockRequest) -> FsResult<LockProbe> {
        let ino = self.ino(&file.node)?;
        if req.lock_type == LockType::Unlock {
            return Err(Errno::EINVAL);
        }
        let (start, end) = range(req.start, req.length)?;
        let st = self.state();
        let locks = &st.get(ino)?.locks;
        Ok(match locks.conflict(file.id, req.lock_type, start, end) {
            Some(held) => held.probe(),
            None => LockProbe {
                lock_type: LockType::Unlock,
                ..req.clone()
            },
        })
    }
}
