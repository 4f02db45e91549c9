//! Readdir with the kernel's own cookies.
//!
//! Each open directory keeps its `getdents64` stream ([`DirStream`]); an entry's cookie is
//! the kernel's `d_off` (what `telldir` returns), so a later readdir from that cookie
//! `seek`s the stream there: cookies stay valid while entries come and go, as they do for
//! a local program. Reading on from where the stream stands needs no seek. `.` and `..`
//! come from the kernel; the export root's `..` is given the root's own qid, so nothing
//! about the host directory above leaks.
//!
//! Entry qids are computed from the directory's `st_dev` and the entry's `d_ino` without a
//! stat (version 0); for a mount point inside the export that is the qid of the directory
//! under it, not of the mounted root that a lookup reports. Under mapped-xattr, regular
//! entries are reported with type `DT_UNKNOWN` (as QEMU does), since the host type is not
//! the guest's; the guest then stats them.

use rustix::fs::FileType;

use crate::fs::{DirEntry, FsResult};
use crate::protocol::{Errno, Qid, QidType};

use super::node::{DirStream, FileIo, HostFile};
use super::security::SecurityModel;
use super::{HostFs, errno};

fn dtype(t: FileType) -> u8 {
    match t {
        FileType::Fifo => 1,
        FileType::CharacterDevice => 2,
        FileType::Directory => 4,
        FileType::BlockDevice => 6,
        FileType::RegularFile => 8,
        FileType::Symlink => 10,
        FileType::Socket => 12,
        _ => 0,
    }
}

impl HostFs {
    pub(super) fn do_readdir(
        &self,
        file: &HostFile,
        cookie: u64,
        max: usize,
    ) -> FsResult<Vec<DirEntry>> {
        let FileIo::Dir(stream) = &file.io else {
            return Err(Errno::ENOTDIR);
        };
        let mut s = stream.lock().unwrap_or_else(|e| e.into_inner());
        let s: &mut DirStream = &mut s;
        let mut out = Vec::with_capacity(max.min(128));
        if cookie != s.next {
            let replay = s.recent.iter().position(|e| e.next == cookie);
            if let Some(i) = replay.filter(|i| s.recent.len() - (i + 1) <= max) {
                // The last reply stopped inside the batch: replay its tail, then read on
                // from where the stream stands (just after that batch).
                out.extend(s.recent.drain(i + 1..));
            } else {
                let off = i64::try_from(cookie).map_err(|_| Errno::EINVAL)?;
                s.next = u64::MAX; // unknown until the seek succeeds
                s.recent.clear();
                s.dir.seek(off).map_err(errno)?;
                s.next = cookie;
            }
        }
        let (dev, _) = file.node.id();
        let at_root = self.is_root(&file.node);
        let mapped = self.model == SecurityModel::MappedXattr;
        while out.len() < max {
            let ent = match s.dir.read() {
                None => break,
                Some(Ok(ent)) => ent,
                Some(Err(e)) => {
                    // The stream must seek before reading again.
                    s.next = u64::MAX;
                    if out.is_empty() {
                        return Err(errno(e));
                    }
                    break;
                }
            };
            let name = ent.file_name().to_bytes();
            let ft = ent.file_type();
            let (edev, eino) = if at_root && name == b".." {
                self.root.id()
            } else {
                (dev, ent.ino())
            };
            let ty = match ft {
                FileType::Directory => QidType::DIR,
                FileType::Symlink => QidType::SYMLINK,
                _ => QidType::FILE,
            };
            let mut dt = dtype(ft);
            if mapped && ft == FileType::RegularFile {
                dt = 0;
            }
            s.next = ent.offset() as u64;
            out.push(DirEntry {
                qid: Qid {
                    ty,
                    version: 0,
                    path: self.qids.path(edev, eino),
                },
                next: s.next,
                ty: dt,
                name: name.to_vec(),
            });
        }
        s.recent.clone_from(&out);
        Ok(out)
    }
}
