//! Walking a name again without opening it: the node cache and the one-`statx` lookup.
//!
//! A lookup that opens the name costs an `openat2`, two stats and, once the fid is
//! clunked, a `close`. Most walks name files the server has seen a moment ago (a shell's
//! `stat` of each path component, `ls -l`, a build's repeated opens), so:
//!
//! - [`NodeCache`] keeps the most recently looked-up nodes alive after their last fid is
//!   gone (bounded by [`super::HostOptions::node_cache`]). Their descriptors count against
//!   the budget and are reclaimed like any idle node's. A node whose name is removed
//!   through the server leaves the cache, so an unlinked file's space is freed as soon as
//!   nothing else uses it.
//! - [`Probe::at`] asks the kernel, with one `statx` of the single validated component
//!   (`AT_SYMLINK_NOFOLLOW`: a final symlink is the link itself), which inode the name
//!   holds now. If the registry has a node of exactly that identity (device, inode, type,
//!   birth time) holding its descriptor, that node is the answer: it is the same file a
//!   confined lookup reached before, and every operation still goes through its descriptor.
//!   Anything else takes the ordinary lookup.

use std::collections::VecDeque;
use std::os::fd::BorrowedFd;
use std::sync::Mutex;

use rustix::fs::{AtFlags, StatxFlags, statx};

use super::node::{HostNode, Identity, Kind};
use super::qid::version_of;
use crate::co::sync::LockExt;
use crate::fs::{FsResult, Name};

/// What one `statx` tells: enough to recognise a registered node, build its qid, and see
/// whether a new file needs its owner changed.
pub(super) struct Probe {
    pub id: Identity,
    pub mode: u32,
    pub version: u32,
    pub uid: u32,
    pub gid: u32,
}

impl Probe {
    /// The file `name` in `dir` is now (not following a final symlink).
    pub(super) fn at(dir: BorrowedFd<'_>, name: &Name) -> FsResult<Probe> {
        Probe::statx(dir, name.as_bytes(), AtFlags::SYMLINK_NOFOLLOW)
    }

    /// The file a descriptor refers to: identity and qid fields in one call.
    pub(super) fn of_fd(fd: BorrowedFd<'_>) -> FsResult<Probe> {
        Probe::statx(fd, b"", AtFlags::EMPTY_PATH)
    }

    fn statx(dir: BorrowedFd<'_>, path: &[u8], flags: AtFlags) -> FsResult<Probe> {
        let want = StatxFlags::BASIC_STATS | StatxFlags::BTIME;
        let x = statx(dir, path, flags, want).map_err(super::errno)?;
        let got = StatxFlags::from_bits_retain(x.stx_mask);
        let mode = u32::from(x.stx_mode);
        let (sec, nsec) = (x.stx_mtime.tv_sec, u64::from(x.stx_mtime.tv_nsec));
        Ok(Probe {
            id: Identity {
                dev: libc::makedev(x.stx_dev_major, x.stx_dev_minor),
                ino: x.stx_ino,
                kind: Kind::of_mode(mode),
                btime: got
                    .contains(StatxFlags::BTIME)
                    .then_some((x.stx_btime.tv_sec, x.stx_btime.tv_nsec)),
            },
            mode,
            version: version_of(sec, nsec, x.stx_size),
            uid: x.stx_uid,
            gid: x.stx_gid,
        })
    }
}

/// The most recently looked-up nodes, kept alive (see the module doc).
pub(super) struct NodeCache {
    cap: usize,
    ring: Mutex<VecDeque<HostNode>>,
}

impl NodeCache {
    pub(super) fn new(cap: usize) -> NodeCache {
        NodeCache {
            cap,
            ring: Mutex::new(VecDeque::with_capacity(cap.min(4096))),
        }
    }

    pub(super) fn enabled(&self) -> bool {
        self.cap != 0
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, VecDeque<HostNode>> {
        self.ring.lock_unpoisoned()
    }

    /// `node` was just looked up: it is the newest entry now.
    pub(super) fn keep(&self, node: &HostNode) {
        if self.cap == 0 {
            return;
        }
        let evicted = {
            let mut r = self.ring();
            if r.back().is_some_and(|b| b.same(node)) {
                return;
            }
            if let Some(i) = r.iter().rposition(|n| n.same(node)) {
                // Already cached: move it to the back.
                let n = r.remove(i);
                r.extend(n);
                return;
            }
            r.push_back(node.clone());
            if r.len() > self.cap {
                r.pop_front()
            } else {
                None
            }
        };
        // Dropped outside the lock: a node's drop takes the registry's lock.
        drop(evicted);
    }

    /// `node` lost a name through the server: it must not outlive its other users.
    pub(super) fn forget(&self, node: &HostNode) {
        let gone: Vec<HostNode> = {
            let mut r = self.ring();
            let (gone, keep): (Vec<_>, Vec<_>) = r.drain(..).partition(|n| n.same(node));
            r.extend(keep);
            gone
        };
        drop(gone);
    }

    /// Nodes cached now.
    pub(super) fn len(&self) -> usize {
        self.ring().len()
    }

    /// Empties the cache (every node whose only user it was goes, with its descriptor).
    pub(super) fn clear(&self) {
        let all = std::mem::take(&mut *self.ring());
        drop(all);
    }
}
