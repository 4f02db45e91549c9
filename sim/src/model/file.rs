//! The model's files: opening (the access mode), reading and writing (the set-id bits a
//! write drops) and attributes (what a setattr changes, and in which order).

use co9p::fs::host::SecurityModel;
use co9p::protocol::{Errno, OpenFlags, SetAttr, SetattrMask};

use super::{Backend, Content, Model, Node, NodeId, R, S_IFMT, S_ISGID, S_ISUID, S_IXGRP};

impl Model {
    pub fn open(&mut self, id: NodeId, flags: OpenFlags) -> R<()> {
        check_access(flags)?;
        let backend = self.backend;
        let n = &mut self.nodes[id];
        let trunc = flags.contains(OpenFlags::TRUNC);
        match &mut n.content {
            Content::Dir(_) if flags.writable() => return Err(Errno::EISDIR),
            // Linux asks for write access to truncate, and a directory has none.
            Content::Dir(_) if trunc && backend != Backend::Mem => return Err(Errno::EISDIR),
            Content::Dir(_) => {}
            Content::File(_) if flags.contains(OpenFlags::DIRECTORY) => {
                return Err(Errno::ENOTDIR);
            }
            Content::File(d) => {
                // POSIX leaves O_TRUNC without write access unspecified: Linux truncates
                // (HostFs passes the flag on), MemFs does not.
                let trunc = flags.contains(OpenFlags::TRUNC)
                    && (flags.writable() || matches!(backend, Backend::Host(_)));
                if trunc {
                    d.clear();
                }
            }
            Content::Symlink(_) | Content::Special => return Err(Errno::ENXIO),
        }
        Ok(())
    }

    pub fn read(&self, id: NodeId, flags: OpenFlags, offset: u64, len: usize) -> R<Vec<u8>> {
        let data = match &self.nodes[id].content {
            Content::File(d) => d,
            Content::Dir(_) => return Err(Errno::EISDIR),
            _ => return Err(Errno::EBADF),
        };
        if !flags.readable() {
            return Err(Errno::EBADF);
        }
        let start = (offset.min(data.len() as u64)) as usize;
        let end = data.len().min(start + len);
        Ok(data[start..end].to_vec())
    }

    /// Writes through a file opened by `uid`: a write of at least one byte by any uid
    /// but 0 drops the set-id bits (see the module doc).
    pub fn write(
        &mut self,
        id: NodeId,
        flags: OpenFlags,
        offset: u64,
        data: &[u8],
        uid: u32,
    ) -> R<usize> {
        let n = &mut self.nodes[id];
        let d = match &mut n.content {
            Content::File(d) => d,
            Content::Dir(_) => return Err(Errno::EISDIR),
            _ => return Err(Errno::EBADF),
        };
        if !flags.writable() {
            return Err(Errno::EBADF);
        }
        if data.is_empty() {
            return Ok(0);
        }
        let off = if flags.contains(OpenFlags::APPEND) {
            d.len() as u64
        } else {
            offset
        };
        let data = if self.backend == Backend::Mem {
            if off >= self.max_file_size {
                return Err(Errno::EFBIG);
            }
            &data[..data.len().min((self.max_file_size - off) as usize)]
        } else {
            data
        };
        let off = off as usize;
        if d.len() < off + data.len() {
            d.resize(off + data.len(), 0);
        }
        d[off..off + data.len()].copy_from_slice(data);
        n.writes += 1;
        if uid != 0 {
            n.mode &= !setid_to_kill(n.mode);
        }
        Ok(data.len())
    }

    /// `Tsetattr`. MemFs checks everything before it changes anything; HostFs applies
    /// owner, mode, size and times in turn, each of which may fail after the earlier ones
    /// took effect (as QEMU's `v9fs_setattr` does) — the model applies them in the same
    /// order.
    pub fn setattr(&mut self, id: NodeId, a: &SetAttr) -> R<()> {
        let v = a.valid;
        let size_err = |n: &Node| -> R<()> {
            match n.content {
                Content::File(_) => Ok(()),
                Content::Dir(_) => Err(Errno::EISDIR),
                _ => Err(Errno::EINVAL),
            }
        };
        let bad_time = (v.contains(SetattrMask::ATIME_SET) && a.atime.nsec >= 1_000_000_000)
            || (v.contains(SetattrMask::MTIME_SET) && a.mtime.nsec >= 1_000_000_000);
        match self.backend {
            Backend::Mem => {
                if v.contains(SetattrMask::SIZE) {
                    size_err(&self.nodes[id])?;
                    if a.size > self.max_file_size {
                        return Err(Errno::EFBIG);
                    }
                }
                if bad_time {
                    return Err(Errno::EINVAL);
                }
                self.apply_owner(id, a);
                self.apply_mode(id, a);
                self.apply_size(id, a);
            }
            Backend::Host(sm) => {
                self.apply_owner(id, a);
                if v.contains(SetattrMask::MODE) {
                    if sm != SecurityModel::MappedXattr && self.nodes[id].is_symlink() {
                        return Err(Errno::EOPNOTSUPP);
                    }
                    self.apply_mode(id, a);
                }
                if v.contains(SetattrMask::SIZE) {
                    size_err(&self.nodes[id])?;
                    self.apply_size(id, a);
                }
                if bad_time && v.intersects(SetattrMask::ATIME | SetattrMask::MTIME) {
                    return Err(Errno::EINVAL);
                }
            }
        }
        Ok(())
    }

    /// A chown. POSIX leaves it to the implementation whether a privileged chown of a
    /// regular file drops its set-id bits: MemFs keeps them; Linux (so HostFs, but for
    /// mapped-xattr, which only stores the owner) drops them from anything but a
    /// directory — `S_ISUID`, and `S_ISGID` with group-execute — even for root. (A Linux
    /// client sends that mode change itself, in the same request.)
    fn apply_owner(&mut self, id: NodeId, a: &SetAttr) {
        let kills = matches!(self.backend, Backend::Host(m) if m != SecurityModel::MappedXattr);
        let n = &mut self.nodes[id];
        let chown = a.valid.intersects(SetattrMask::UID | SetattrMask::GID);
        if a.valid.contains(SetattrMask::UID) {
            n.uid = a.uid;
        }
        if a.valid.contains(SetattrMask::GID) {
            n.gid = a.gid;
        }
        if chown && kills && !n.is_dir() {
            n.mode &= !setid_to_kill(n.mode);
        }
    }

    fn apply_mode(&mut self, id: NodeId, a: &SetAttr) {
        if a.valid.contains(SetattrMask::MODE) {
            let n = &mut self.nodes[id];
            n.mode = (n.mode & S_IFMT) | (a.mode & 0o7777);
        }
    }

    fn apply_size(&mut self, id: NodeId, a: &SetAttr) {
        if a.valid.contains(SetattrMask::SIZE)
            && let Content::File(d) = &mut self.nodes[id].content
        {
            d.resize(a.size as usize, 0);
        }
    }
}

/// The set-id bits a write by an unprivileged user drops from `mode`.
fn setid_to_kill(mode: u32) -> u32 {
    let mut kill = mode & S_ISUID;
    if mode & S_ISGID != 0 && mode & S_IXGRP != 0 {
        kill |= S_ISGID;
    }
    kill
}

pub(super) fn check_access(flags: OpenFlags) -> R<()> {
    if flags.access() == 3 {
        return Err(Errno::EINVAL);
    }
    Ok(())
}
