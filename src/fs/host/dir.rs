//! Readdir with the kernel's own cookies.
//!
//! Each open directory keeps its descriptor and a `getdents64` buffer ([`DirStream`]),
//! read in place ([`RawDir`]: no allocation per entry but the name handed out). An
//! entry's cookie is the kernel's `d_off` (what `telldir` returns), so a later readdir from
//! that cookie `seek`s the descriptor there: cookies stay valid while entries come and go,
//! as they do for a local program. Reading on from where the descriptor stands needs no
//! seek; a reply that held fewer entries than were read costs one seek to resume. `.` and `..`
//! come from the kernel; the export root's `..` is given the root's own qid, so nothing
//! about the host directory above leaks.
//!
//! Entry qids are computed from the directory's `st_dev` and the entry's `d_ino` without a
//! stat (version 0); for a mount point inside the export that is the qid of the directory
//! under it, not of the mounted root that a lookup reports. Under mapped-xattr, regular
//! entries are reported with type `DT_UNKNOWN` (as QEMU does), since the host type is not
//! the guest's; the guest then stats them.

use std::os::fd::AsFd;

use rustix::fs::{FileType, RawDir};

use crate::fs::{DirEntry, FsResult};
use crate::protocol::{Errno, Qid, QidType};

use super::listing::{Listing, MAX_ENTRIES};
use super::node::{DIR_BUF, DirStream, FileIo, HostFile};
use super::security::SecurityModel;
use super::{HostFs, errno};
use crate::co::sync::LockExt;

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
        let mut s = stream.lock_unpoisoned();
        let s: &mut DirStream = &mut s;
        let id = file.node.identity();
        // A removed directory's IN_DELETE_SELF waits for its last descriptor, this one: a
        // kept copy is served only while the directory still has links (the kernel answers
        // a dead directory's readdir ENOENT).
        if let Some(l) = self.listings.current(id)
            && rustix::fs::fstat(&s.fd).is_ok_and(|st| st.st_nlink != 0)
        {
            let hint = s.place.filter(|&(serial, _)| serial == l.serial);
            if let Some(i) = l.start(cookie, hint.map(|(_, i)| i)) {
                return Ok(serve(s, &l, i, max));
            }
        }
        s.place = None;
        if cookie == 0
            && let Some(t) = self.listings.begin(id, s.fd.as_fd())
        {
            // Read it all for keeping (the descriptor then stands at its end).
            let (mut all, whole) = self.read_entries(file, s, 0, MAX_ENTRIES + 1)?;
            if whole && all.len() <= MAX_ENTRIES {
                let l = self.listings.keep(t, all);
                return Ok(serve(s, &l, 0, max));
            }
            if all.len() > MAX_ENTRIES {
                self.listings.too_big(t);
            }
            all.truncate(max);
            return Ok(all);
        }
        Ok(self.read_entries(file, s, cookie, max)?.0)
    }

    /// Up to `max` entries from `cookie`, read from the kernel; and whether the reading
    /// reached the directory's end.
    fn read_entries(
        &self,
        file: &HostFile,
        s: &mut DirStream,
        cookie: u64,
        max: usize,
    ) -> FsResult<(Vec<DirEntry>, bool)> {
        if s.at != Some(cookie) {
            let off = i64::try_from(cookie).map_err(|_| Errno::EINVAL)?;
            s.at = None; // unknown until the seek succeeds
            rustix::fs::seek(&s.fd, rustix::fs::SeekFrom::Start(off as u64)).map_err(errno)?;
            s.at = Some(cookie);
        }
        let (dev, _) = file.node.id();
        let at_root = self.is_root(&file.node);
        let mapped = self.model == SecurityModel::MappedXattr;
        let mut out = Vec::with_capacity(max.min(1024));
        s.buf.resize_with(DIR_BUF, std::mem::MaybeUninit::uninit);
        let mut dir = RawDir::new(s.fd.as_fd(), &mut s.buf[..]);
        let mut next = cookie;
        let mut whole = false;
        while out.len() < max {
            let ent = match dir.next() {
                None => {
                    whole = true;
                    break;
                }
                Some(Ok(ent)) => ent,
                Some(Err(e)) => {
                    if out.is_empty() {
                        s.at = None;
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
            next = ent.next_entry_cookie();
            out.push(DirEntry {
                qid: Qid {
                    ty,
                    version: 0,
                    path: self.qids.path(edev, eino),
                },
                next,
                ty: dt,
                name: name.to_vec(),
            });
        }
        // The descriptor stands after the last entry returned only if none is left
        // unread in the buffer (the directory's end, or a batch that ended exactly there).
        let exact = dir.is_buffer_empty();
        s.at = exact.then_some(next);
        Ok((out, whole))
    }
}

/// Up to `max` entries of the kept listing `l` from index `i`; the stream remembers where
/// they ended, so the next readdir finds its place without a search.
fn serve(s: &mut DirStream, l: &Listing, i: usize, max: usize) -> Vec<DirEntry> {
    let out: Vec<DirEntry> = l.entries[i..].iter().take(max).cloned().collect();
    s.place = Some((l.serial, i + out.len()));
    out
}
