//! The whole tree behind one mutex: the inode table, the clock, and capacity accounting.

use std::collections::BTreeMap;

use super::dir::Dir;
use super::inode::{Content, Inode, S_IFDIR};
use super::{Clock, Limits};
use crate::fs::FsResult;
use crate::protocol::{Errno, Timespec};

/// The root directory's inode number.
pub(crate) const ROOT_INO: u64 = 1;

pub(crate) struct State {
    pub inodes: BTreeMap<u64, Inode>,
    next_ino: u64,
    next_file: u64,
    /// The logical clock: advanced by every mutation when no real clock is given.
    tick: u64,
    clock: Option<Clock>,
    /// Bytes charged against `limits.capacity`.
    pub used: u64,
    pub limits: Limits,
}

impl State {
    pub(super) fn new(limits: Limits, clock: Option<Clock>) -> Self {
        let mut st = State {
            inodes: BTreeMap::new(),
            next_ino: ROOT_INO,
            next_file: 1,
            tick: 0,
            clock,
            used: 0,
            limits,
        };
        let now = st.now();
        st.advance();
        let mut root = Inode::new(
            ROOT_INO,
            S_IFDIR | 0o755,
            0,
            0,
            Content::Dir(Dir::new(ROOT_INO)),
            now,
        );
        root.nlink = 2;
        st.used = root.charged();
        st.inodes.insert(ROOT_INO, root);
        st.next_ino = ROOT_INO + 1;
        st
    }

    /// The time of the mutation being made: the injected clock, or the next logical tick
    /// (`{sec: n, nsec: 0}` for the n-th successful mutation, the root's creation being
    /// the first). The tick moves only when [`advance`](Self::advance) is called, after
    /// the mutation succeeded, so failed requests leave no trace.
    pub(super) fn now(&self) -> Timespec {
        match &self.clock {
            Some(clock) => clock(),
            None => Timespec {
                sec: self.tick + 1,
                nsec: 0,
            },
        }
    }

    /// A mutation happened: the logical clock moves on.
    pub(super) fn advance(&mut self) {
        self.tick += 1;
    }

    pub(super) fn get(&self, ino: u64) -> FsResult<&Inode> {
        // A handle keeps its inode alive, so a miss is a bug; answer it rather than panic.
        self.inodes.get(&ino).ok_or(Errno::EIO)
    }

    pub(super) fn get_mut(&mut self, ino: u64) -> FsResult<&mut Inode> {
        self.inodes.get_mut(&ino).ok_or(Errno::EIO)
    }

    pub(super) fn dir(&self, ino: u64) -> FsResult<&Dir> {
        self.get(ino)?.dir().ok_or(Errno::ENOTDIR)
    }

    pub(super) fn dir_mut(&mut self, ino: u64) -> FsResult<&mut Dir> {
        self.get_mut(ino)?.dir_mut().ok_or(Errno::ENOTDIR)
    }

    /// A directory that is still linked in the tree (`ENOTDIR`, or `ENOENT` once removed):
    /// the only kind that may gain entries.
    pub(super) fn live_dir(&self, ino: u64) -> FsResult<&Dir> {
        let inode = self.get(ino)?;
        let dir = inode.dir().ok_or(Errno::ENOTDIR)?;
        if inode.nlink == 0 {
            return Err(Errno::ENOENT);
        }
        Ok(dir)
    }

    /// Charges `bytes` against capacity (`ENOSPC` if they do not fit).
    pub(super) fn charge(&mut self, bytes: u64) -> FsResult<()> {
        self.check_room(bytes)?;
        self.used += bytes;
        Ok(())
    }

    pub(super) fn check_room(&self, bytes: u64) -> FsResult<()> {
        match self.used.checked_add(bytes) {
            Some(total) if total <= self.limits.capacity => Ok(()),
            _ => Err(Errno::ENOSPC),
        }
    }

    pub(super) fn uncharge(&mut self, bytes: u64) {
        debug_assert!(self.used >= bytes, "uncharging more than was charged");
        self.used = self.used.saturating_sub(bytes);
    }

    /// `ENOSPC` when the inode limit is reached.
    pub(super) fn check_inode_room(&self) -> FsResult<()> {
        if self.inodes.len() as u64 >= self.limits.max_inodes {
            return Err(Errno::ENOSPC);
        }
        Ok(())
    }

    /// Adds a new inode (nlink 0, no handles): its number is never used again.
    pub(super) fn alloc(&mut self, inode: impl FnOnce(u64) -> Inode) -> u64 {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.inodes.insert(ino, inode(ino));
        ino
    }

    /// A fresh open-file id (lock owner), never reused.
    pub(super) fn file_id(&mut self) -> u64 {
        let id = self.next_file;
        self.next_file += 1;
        id
    }

    /// A new handle to `ino` exists.
    pub(super) fn grab(&mut self, ino: u64) -> FsResult<()> {
        self.get_mut(ino)?.handles += 1;
        Ok(())
    }

    /// A handle to `ino` went away.
    pub(super) fn release(&mut self, ino: u64) {
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.handles -= 1;
            self.maybe_free(ino);
        }
    }

    /// Frees `ino` if nothing names it and nothing holds it.
    pub(super) fn maybe_free(&mut self, ino: u64) {
        let Some(inode) = self.inodes.get(&ino) else {
            return;
        };
        if ino == ROOT_INO || inode.nlink > 0 || inode.handles > 0 {
            return;
        }
        let charged = inode.charged();
        self.inodes.remove(&ino);
        self.uncharge(charged);
    }
}
