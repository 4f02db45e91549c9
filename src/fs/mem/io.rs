//! File contents and attributes: read, write, truncate, setattr.

use std::io::{IoSlice, IoSliceMut};

use super::data::{Data, PAGE};
use super::inode::{Content, PERM_MASK, S_IFMT};
use super::state::State;
use crate::fs::FsResult;
use crate::protocol::{Errno, OpenFlags, SetAttr, SetattrMask, Timespec};

const NSEC_PER_SEC: u64 = 1_000_000_000;

impl State {
    /// Reads at `offset` into `bufs` in turn, stopping at end of file.
    pub(super) fn read(
        &self,
        ino: u64,
        flags: OpenFlags,
        offset: u64,
        bufs: &mut [IoSliceMut<'_>],
    ) -> FsResult<usize> {
        let data = self.file_data(ino, flags.readable())?;
        Ok(data.read_vectored(offset, bufs))
    }

    /// The data of the regular file `ino` for a read or a write: `EISDIR` for a directory,
    /// `EBADF` for any other kind, or when the file was not `opened_for` it.
    fn file_data(&self, ino: u64, opened_for: bool) -> FsResult<&Data> {
        let data = match &self.get(ino)?.content {
            Content::File(d) => d,
            Content::Dir(_) => return Err(Errno::EISDIR),
            _ => return Err(Errno::EBADF),
        };
        if !opened_for {
            return Err(Errno::EBADF);
        }
        Ok(data)
    }

    /// A write by a user without `CAP_FSETID` drops `S_ISUID`, and `S_ISGID` when
    /// group-execute is set (Linux's `file_remove_privs`).
    pub(super) fn kill_setid(&mut self, ino: u64) -> FsResult<()> {
        let inode = self.get_mut(ino)?;
        inode.mode &= !setid_to_kill(inode.mode);
        Ok(())
    }

    /// Writes `bufs` in turn at `offset` (at the end with `O_APPEND`), all or nothing as
    /// far as capacity goes (`ENOSPC`); a write crossing the file size limit is cut short
    /// there, and one starting at or past it fails with `EFBIG`.
    pub(super) fn write(
        &mut self,
        ino: u64,
        flags: OpenFlags,
        offset: u64,
        bufs: &[IoSlice<'_>],
        now: Timespec,
    ) -> FsResult<usize> {
        let max_size = self.limits.max_file_size;
        let data = self.file_data(ino, flags.writable())?;
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if total == 0 {
            return Ok(0);
        }
        let offset = if flags.contains(OpenFlags::APPEND) {
            data.size()
        } else {
            offset
        };
        if offset >= max_size {
            return Err(Errno::EFBIG);
        }
        let n = (total as u64).min(max_size - offset);
        let pages = data.new_pages(offset, n);
        self.charge(pages * PAGE)?;

        let inode = self.get_mut(ino)?;
        if let Content::File(data) = &mut inode.content {
            let (mut pos, mut left) = (offset, n as usize);
            for buf in bufs {
                let take = buf.len().min(left);
                data.write(pos, &buf[..take]);
                pos += take as u64;
                left -= take;
                if left == 0 {
                    break;
                }
            }
        }
        inode.modified(now);
        Ok(n as usize)
    }

    /// Empties a regular file (`O_TRUNC`); other kinds are left alone.
    pub(super) fn truncate_on_open(&mut self, ino: u64, now: Timespec) -> FsResult<()> {
        let inode = self.get_mut(ino)?;
        if let Content::File(data) = &mut inode.content {
            let freed = data.truncate(0);
            inode.modified(now);
            self.uncharge(freed * PAGE);
        }
        Ok(())
    }

    /// Applies the fields named in `attr.valid`; all checks come first, so a failure
    /// changes nothing. Any change sets ctime to `now`.
    pub(super) fn setattr(&mut self, ino: u64, attr: &SetAttr, now: Timespec) -> FsResult<()> {
        let v = attr.valid;
        let inode = self.get(ino)?;
        if v.contains(SetattrMask::SIZE) {
            match inode.content {
                Content::File(_) => {}
                Content::Dir(_) => return Err(Errno::EISDIR),
                _ => return Err(Errno::EINVAL),
            }
            if attr.size > self.limits.max_file_size {
                return Err(Errno::EFBIG);
            }
        }
        let bad_time = |t: Timespec| t.nsec >= NSEC_PER_SEC;
        if (v.contains(SetattrMask::ATIME_SET) && bad_time(attr.atime))
            || (v.contains(SetattrMask::MTIME_SET) && bad_time(attr.mtime))
        {
            return Err(Errno::EINVAL);
        }

        let inode = self.get_mut(ino)?;
        if v.contains(SetattrMask::MODE) {
            inode.mode = (inode.mode & S_IFMT) | (attr.mode & PERM_MASK);
        }
        if v.contains(SetattrMask::UID) {
            inode.uid = attr.uid;
        }
        if v.contains(SetattrMask::GID) {
            inode.gid = attr.gid;
        }
        let mut freed = 0;
        if v.contains(SetattrMask::SIZE) {
            if let Content::File(data) = &mut inode.content {
                freed = data.truncate(attr.size);
            }
            inode.modified(now);
        }
        if v.contains(SetattrMask::ATIME) {
            inode.atime = if v.contains(SetattrMask::ATIME_SET) {
                attr.atime
            } else {
                now
            };
        }
        if v.contains(SetattrMask::MTIME) {
            inode.mtime = if v.contains(SetattrMask::MTIME_SET) {
                attr.mtime
            } else {
                now
            };
            inode.version += 1;
        }
        if v.0 != 0 {
            inode.ctime = now;
        }
        self.uncharge(freed * PAGE);
        Ok(())
    }
}

/// The set-id bits a write by an unprivileged user drops from `mode`.
pub(crate) fn setid_to_kill(mode: u32) -> u32 {
    const S_ISUID: u32 = 0o4000;
    const S_ISGID: u32 = 0o2000;
    const S_IXGRP: u32 = 0o010;
    let mut kill = mode & S_ISUID;
    if mode & S_ISGID != 0 && mode & S_IXGRP != 0 {
        kill |= S_ISGID;
    }
    kill
}
