//! Open files: Tlopen, Tlcreate, Tread, Twrite, Treaddir, Tfsync.

use std::io::IoSlice;
use std::sync::Arc;

use crate::co::Executor;
use crate::co::sync::LockExt;
use crate::fs::{Creds, Filesystem};
use crate::protocol::{
    DIRENT_FIXED_LEN, Dirent, DirentWriter, Errno, Fid, OpenFlags, P9String, PAYLOAD_HEADER_LEN,
    PayloadReply, QidType, Rmessage,
};
use crate::server::fids::{FidEntry, Open, Parent};
use crate::server::{HandlerResult, Out, Responder, SessionCore, scatter};

use super::{Access, new_entry_name, ok};

/// Smallest wire size of a directory entry (a one-byte name).
const MIN_DIRENT: usize = DIRENT_FIXED_LEN + 1;

/// Flags that change the file when it is opened.
fn mutating(flags: OpenFlags) -> bool {
    flags.writable() || flags.intersects(OpenFlags::TRUNC | OpenFlags::CREAT)
}

/// Where a `Twrite`'s data is.
pub(in crate::server) enum WriteData {
    /// Decoded with the message.
    Inline(Vec<u8>),
    /// `count` bytes still in the transport's buffers ([`Responder::write_data`]).
    InTransport(u32),
}

impl<F: Filesystem, E: Executor, R: Responder> SessionCore<F, E, R> {
    pub(super) async fn lopen(&self, fid: Fid, flags: OpenFlags) -> HandlerResult {
        let e = self.fids.get(fid)?;
        let _g = e.enter().await?;
        if mutating(flags) {
            self.writable()?;
        }
        let (node, qid, uid) = e.with(|s| match s.open {
            Open::Closed => Ok((s.node.clone(), s.qid, s.uid)),
            _ => Err(Errno::EINVAL),
        })?;
        // The writer is the fid's user: its writes drop set-id bits unless it is root.
        let creds = Creds { uid, gid: 0 };
        let file = self.fs.open_by(&node, flags, creds).await?;
        e.with(|s| s.open = Open::file(file, flags));
        ok(Rmessage::Lopen { qid, iounit: 0 })
    }

    /// Tlcreate: creates `name` in the directory `fid` and opens it; `fid` then names the
    /// new file.
    pub(super) async fn lcreate(
        &self,
        fid: Fid,
        name: P9String,
        flags: OpenFlags,
        mode: u32,
        gid: u32,
    ) -> HandlerResult {
        let e = self.fids.get(fid)?;
        let _g = e.enter().await?;
        self.writable()?;
        let name = new_entry_name(&name)?;
        let (dir, dir_qid, uid) = e.with(|s| match s.open {
            Open::Closed if s.qid.ty == QidType::DIR => Ok((s.node.clone(), s.qid, s.uid)),
            Open::Closed => Err(Errno::ENOTDIR),
            _ => Err(Errno::EINVAL),
        })?;
        // No rename between creating the entry and recording it (see Twalk).
        let _names = self.names.read().await;
        let (node, file, qid) = self
            .fs
            .create(&dir, &name, flags, mode, Creds { uid, gid })
            .await?;
        e.with(|s| {
            s.node = node;
            s.qid = qid;
            s.parent = Some(Parent { dir, dir_qid, name });
            s.open = Open::file(file, flags);
        });
        ok(Rmessage::Lcreate { qid, iounit: 0 })
    }

    pub(super) async fn read(
        &self,
        fid: Fid,
        offset: u64,
        count: u32,
        responder: &mut R,
    ) -> HandlerResult {
        let e = self.fids.get(fid)?;
        let _g = e.enter().await?;
        let count = self.payload_room(count);
        let target = e.with(|s| match &s.open {
            Open::File { file, flags } if flags.readable() => Ok(Readable::<F>::File(file.clone())),
            Open::XattrRead(value) => Ok(Readable::Xattr(value.clone())),
            _ => Err(Errno::EBADF),
        })?;
        if let Readable::File(file) = &target
            && responder.takes_mapped()
            && let Some(mapped) = self.fs.map_read(file, offset, count)
        {
            let mapped = mapped?.at_most(count);
            let n = mapped.len() as u32;
            responder.take_mapped(mapped);
            return Ok(Out::Payload(PayloadReply::Read, n));
        }
        let mut bufs = responder.payload(count);
        let n = match target {
            Readable::File(file) => self.fs.read_vectored(&file, offset, &mut bufs).await?,
            Readable::Xattr(value) => {
                let start = usize::try_from(offset)
                    .unwrap_or(usize::MAX)
                    .min(value.len());
                let end = value.len().min(start + count);
                scatter(&value[start..end], &mut bufs)
            }
        };
        Ok(Out::Payload(PayloadReply::Read, n.min(count) as u32))
    }

    pub(super) async fn write(
        &self,
        fid: Fid,
        offset: u64,
        data: WriteData,
        responder: &mut R,
    ) -> HandlerResult {
        let e = self.fids.get(fid)?;
        let _g = e.enter().await?;
        let bufs = match &data {
            WriteData::Inline(v) => vec![IoSlice::new(v)],
            WriteData::InTransport(count) => {
                let bufs = responder.write_data();
                // The transport promised `count` bytes; anything else is its bug, or guest
                // memory that went away under a reset.
                if bufs.iter().map(|b| b.len() as u64).sum::<u64>() != u64::from(*count) {
                    return Err(Errno::EIO);
                }
                bufs
            }
        };
        let len = bufs.iter().map(|b| b.len()).sum::<usize>();
        let file = {
            let mut s = e.state.lock_unpoisoned();
            match &mut s.open {
                Open::File { file, flags } if flags.writable() => file.clone(),
                Open::XattrWrite { value, written, .. } => {
                    // The value was sized by Txattrcreate; writes fill it in place.
                    let start = usize::try_from(offset).map_err(|_| Errno::EINVAL)?;
                    let end = start
                        .checked_add(len)
                        .filter(|&end| end <= value.len())
                        .ok_or(Errno::EINVAL)?;
                    let mut at = start;
                    for b in &bufs {
                        value[at..at + b.len()].copy_from_slice(b);
                        at += b.len();
                    }
                    *written = (*written).max(end);
                    return ok(Rmessage::Write { count: len as u32 });
                }
                _ => return Err(Errno::EBADF),
            }
        };
        self.writable()?;
        let n = match bufs.as_slice() {
            [one] => self.fs.write(&file, offset, one).await?,
            _ => self.fs.write_vectored(&file, offset, &bufs).await?,
        };
        ok(Rmessage::Write { count: n as u32 })
    }

    pub(super) async fn readdir(
        &self,
        fid: Fid,
        offset: u64,
        count: u32,
        responder: &mut R,
    ) -> HandlerResult {
        let e = self.fids.get(fid)?;
        let _g = e.enter().await?;
        let count = self.payload_room(count);
        let file = open_file(&e)?;
        let entries = self
            .fs
            .readdir(&file, offset, count / MIN_DIRENT + 1)
            .await?;
        // Entries are packed whole: first count how many fit, then build exactly those in
        // a buffer of their size (not of `count`, which may be a whole msize) and copy it
        // into the reply's room.
        let mut len = 0;
        let fitting = entries
            .iter()
            .take_while(|d| {
                let l = DIRENT_FIXED_LEN + d.name.len();
                let fits = len + l <= count;
                len += if fits { l } else { 0 };
                fits
            })
            .count();
        let mut packed = vec![0u8; len];
        let mut w = DirentWriter::new(&mut packed);
        for d in entries.into_iter().take(fitting) {
            let d = Dirent {
                qid: d.qid,
                offset: d.next,
                ty: d.ty,
                name: P9String(d.name),
            };
            let pushed = w.push(&d);
            debug_assert!(pushed, "counted to fit");
        }
        let len = w.len();
        let copied = scatter(&packed[..len], &mut responder.payload(len));
        if copied != len {
            return Err(Errno::EIO);
        }
        Ok(Out::Payload(PayloadReply::Readdir, len as u32))
    }

    pub(super) async fn fsync(&self, fid: Fid, datasync: bool) -> HandlerResult {
        let sync = async |file: Arc<F::File>| self.fs.fsync(&file, datasync).await;
        self.on_fid(fid, Access::Read, open_file, sync).await?;
        ok(Rmessage::Fsync {})
    }

    /// How much of a Tread's or Treaddir's `count` a reply can carry.
    fn payload_room(&self, count: u32) -> usize {
        (count as usize).min(self.msize() as usize - PAYLOAD_HEADER_LEN)
    }
}

enum Readable<F: Filesystem> {
    File(Arc<F::File>),
    Xattr(Arc<Vec<u8>>),
}

/// The open file of a fid, or `EBADF`.
pub(super) fn open_file<F: Filesystem>(e: &FidEntry<F>) -> Result<Arc<F::File>, Errno> {
    e.with(|s| match &s.open {
        Open::File { file, .. } => Ok(file.clone()),
        _ => Err(Errno::EBADF),
    })
}
