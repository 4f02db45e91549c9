//! The fid table of one session.
//!
//! A fid names a node the client walked to, and later an open file or an xattr buffer.
//! Each entry carries a [`CoRwLock`] that makes Tclunk (and Tremove) a barrier for the fid:
//! every request using the fid holds it shared while it runs, and clunk takes it exclusive,
//! so the clunk is answered only after the requests before it on that fid have finished.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::co::sync::LockExt;
use crate::co::{CoRwLock, CoRwLockReadGuard, CoRwLockWriteGuard};
use crate::fs::{Filesystem, Name};
use crate::protocol::{Errno, Fid, OpenFlags, Qid};

/// What a fid refers to beyond its node.
pub(crate) enum Open<F: Filesystem> {
    /// Walked to, not opened.
    Closed,
    /// Opened with `Tlopen`/`Tlcreate`.
    File {
        file: Arc<F::File>,
        flags: OpenFlags,
    },
    /// Made by `Txattrwalk`: the value (or name list), read with `Tread`.
    XattrRead(Arc<Vec<u8>>),
    /// Made by `Txattrcreate`: the value is written with `Twrite` and set at clunk.
    XattrWrite {
        name: Vec<u8>,
        flags: u32,
        value: Vec<u8>,
        written: usize,
        _slot: XattrSlot,
    },
}

impl<F: Filesystem> Open<F> {
    /// What Tlopen and Tlcreate leave in the fid.
    pub(crate) fn file(file: F::File, flags: OpenFlags) -> Self {
        Open::File {
            file: Arc::new(file),
            flags,
        }
    }
}

/// One of the session's limited xattr-write buffers; given back when dropped, however the
/// fid ends (clunk, walk over it, Tversion, connection close).
pub(crate) struct XattrSlot(Arc<AtomicUsize>);

impl XattrSlot {
    /// Takes a slot if fewer than `limit` are out.
    pub(crate) fn take(counter: &Arc<AtomicUsize>, limit: usize) -> Option<XattrSlot> {
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| XattrSlot(counter.clone()))
    }
}

impl Drop for XattrSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The directory entry a fid's file was reached by: what Trename and Tremove act through.
///
/// A rename made through the session moves the record of every fid it concerns (QEMU's
/// `v9fs_fix_path`), so a fid keeps naming its own file, never whatever takes its old name.
/// The filesystem checks, when acting, that the name still refers to the fid's node: a
/// rename by another session or on the host makes the record stale, and then the answer
/// is an error, never another file.
pub(crate) struct Parent<F: Filesystem> {
    pub dir: F::Node,
    /// The directory's qid: its `path` identifies the directory when renames fix records.
    pub dir_qid: Qid,
    pub name: Name,
}

impl<F: Filesystem> Clone for Parent<F> {
    fn clone(&self) -> Self {
        Parent {
            dir: self.dir.clone(),
            dir_qid: self.dir_qid,
            name: self.name.clone(),
        }
    }
}

impl<F: Filesystem> Parent<F> {
    /// Whether this record is the entry `name` in the directory of qid path `dir_path`.
    fn is(&self, dir_path: u64, name: &Name) -> bool {
        self.dir_qid.path == dir_path && self.name == *name
    }
}

/// A fid's state.
pub(crate) struct FidState<F: Filesystem> {
    pub node: F::Node,
    pub qid: Qid,
    /// The entry this fid was reached by, for Trename and Tremove; `None` for the export
    /// root (and a fid reached by `..`, whose own entry is not known).
    pub parent: Option<Parent<F>>,
    /// The uid from Tattach, for files this fid creates.
    pub uid: u32,
    /// Last: fields drop in order, so the node is let go before the file closes (see
    /// `end_fid` in handlers/clunk.rs).
    pub open: Open<F>,
}

impl<F: Filesystem> FidState<F> {
    /// A copy for a new fid (Twalk, Txattrwalk): the same node, not open.
    pub(crate) fn walked(&self) -> FidState<F> {
        FidState {
            node: self.node.clone(),
            qid: self.qid,
            parent: self.parent.clone(),
            uid: self.uid,
            open: Open::Closed,
        }
    }
}

/// One fid: its barrier lock and its state. The state mutex is never held across an await.
pub(crate) struct FidEntry<F: Filesystem> {
    /// Taken only through [`FidEntry::enter`] and its siblings, which check the fid too.
    barrier: CoRwLock<()>,
    pub state: Mutex<FidState<F>>,
    /// Set by Tclunk/Tremove under the exclusive barrier: a request that was queued behind
    /// them finds the fid gone.
    clunked: AtomicBool,
    /// Requests on this fid that have arrived and not yet ended, by arrival number (taken
    /// when the frame is submitted, not when its coroutine first runs): Tclunk and Tremove
    /// wait for every one that arrived before them.
    arrivals: Mutex<Arrivals>,
}

#[derive(Default)]
struct Arrivals {
    next: u64,
    pending: std::collections::BTreeSet<u64>,
    /// Tclunk/Tremove coroutines waiting for earlier arrivals to end.
    waiting: Vec<std::task::Waker>,
}

/// A request's place in its fid's arrival order; leaves it when dropped (the request
/// ended, or was cancelled before it ever ran).
pub(crate) struct Arrival<F: Filesystem> {
    entry: Arc<FidEntry<F>>,
    pub number: u64,
}

impl<F: Filesystem> Drop for Arrival<F> {
    fn drop(&mut self) {
        let waiting = {
            let mut a = self.entry.arrivals.lock_unpoisoned();
            a.pending.remove(&self.number);
            std::mem::take(&mut a.waiting)
        };
        waiting.into_iter().for_each(std::task::Waker::wake);
    }
}

/// Completes once no request that arrived before `number` is still going.
pub(crate) struct EarlierDone<'a, F: Filesystem> {
    entry: &'a FidEntry<F>,
    number: u64,
}

impl<F: Filesystem> std::future::Future for EarlierDone<'_, F> {
    type Output = ();
    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        let mut a = self.entry.arrivals.lock_unpoisoned();
        if a.pending.first().is_some_and(|&first| first < self.number) {
            a.waiting.push(cx.waker().clone());
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    }
}

impl<F: Filesystem> FidEntry<F> {
    pub(crate) fn new(state: FidState<F>) -> Arc<Self> {
        Arc::new(FidEntry {
            barrier: CoRwLock::new(()),
            state: Mutex::new(state),
            clunked: AtomicBool::new(false),
            arrivals: Mutex::default(),
        })
    }

    /// Takes the next place in this fid's arrival order.
    pub(crate) fn arrive(self: &Arc<Self>) -> Arrival<F> {
        let mut a = self.arrivals.lock_unpoisoned();
        let number = a.next;
        a.next += 1;
        a.pending.insert(number);
        Arrival {
            entry: self.clone(),
            number,
        }
    }

    /// Waits until no request that arrived before `number` is still going.
    pub(crate) fn earlier_done(&self, number: u64) -> EarlierDone<'_, F> {
        EarlierDone {
            entry: self,
            number,
        }
    }

    /// The fid rule, for the fid a request works on: takes the barrier shared (a Tclunk or
    /// Tremove of the fid that came before has ended, one that comes after waits for this
    /// request), then checks the fid was not clunked meanwhile (`EBADF`). The request holds
    /// the guard until it ends.
    pub(crate) async fn enter(&self) -> Result<CoRwLockReadGuard<'_, ()>, Errno> {
        let guard = self.barrier.read().await;
        self.check()?;
        Ok(guard)
    }

    /// [`Self::enter`] for Tclunk and Tremove: the barrier exclusive.
    pub(crate) async fn enter_exclusive(&self) -> Result<CoRwLockWriteGuard<'_, ()>, Errno> {
        let guard = self.barrier.write().await;
        self.check()?;
        Ok(guard)
    }

    /// The barrier shared, the check left to the caller: for the directory handlers, which
    /// check their other arguments first and then the fid, as the directory they act in
    /// (`dir_of`, `dir_entry`), so the errors keep that order.
    pub(crate) async fn hold(&self) -> CoRwLockReadGuard<'_, ()> {
        self.barrier.read().await
    }

    /// `EBADF` if the fid was clunked while this request waited for it.
    pub(crate) fn check(&self) -> Result<(), Errno> {
        if self.clunked.load(Ordering::Acquire) {
            Err(Errno::EBADF)
        } else {
            Ok(())
        }
    }

    pub(crate) fn mark_clunked(&self) {
        self.clunked.store(true, Ordering::Release);
    }

    pub(crate) fn with<T>(&self, f: impl FnOnce(&mut FidState<F>) -> T) -> T {
        f(&mut self.state.lock_unpoisoned())
    }
}

/// The table, with its explicit limit.
pub(crate) struct FidTable<F: Filesystem> {
    map: Mutex<BTreeMap<Fid, Arc<FidEntry<F>>>>,
    limit: usize,
}

impl<F: Filesystem> FidTable<F> {
    pub(crate) fn new(limit: usize) -> Self {
        FidTable {
            map: Mutex::new(BTreeMap::new()),
            limit,
        }
    }

    /// The fid's entry; an unknown fid is `ENOENT`, as QEMU answers.
    pub(crate) fn get(&self, fid: Fid) -> Result<Arc<FidEntry<F>>, Errno> {
        self.map
            .lock_unpoisoned()
            .get(&fid)
            .cloned()
            .ok_or(Errno::ENOENT)
    }

    /// Adds a new fid: `EINVAL` if it is in use (or is NOFID), `EMFILE` past the limit.
    pub(crate) fn insert(&self, fid: Fid, state: FidState<F>) -> Result<(), Errno> {
        let mut map = self.map.lock_unpoisoned();
        if fid == Fid::NOFID || map.contains_key(&fid) {
            return Err(Errno::EINVAL);
        }
        if map.len() >= self.limit {
            return Err(Errno::EMFILE);
        }
        map.insert(fid, FidEntry::new(state));
        Ok(())
    }

    /// Adds `fid` as a fresh copy of `source`'s state (then changed by `f`), made under
    /// the table's lock: a rename moving records ([`Self::renamed`], which holds that lock
    /// too) either moves the copy's or was already in the source's when it was copied.
    pub(crate) fn insert_copy(
        &self,
        fid: Fid,
        source: &FidEntry<F>,
        f: impl FnOnce(&mut FidState<F>),
    ) -> Result<(), Errno> {
        let mut map = self.map.lock_unpoisoned();
        if fid == Fid::NOFID || map.contains_key(&fid) {
            return Err(Errno::EINVAL);
        }
        if map.len() >= self.limit {
            return Err(Errno::EMFILE);
        }
        let mut state = source.with(|s| s.walked());
        f(&mut state);
        map.insert(fid, FidEntry::new(state));
        Ok(())
    }

    /// Removes `fid` if it is still `entry`: a clunk whose last poll runs on another
    /// thread while a Tversion clears the table must not remove the fid a Tattach
    /// pipelined behind the Tversion made under the same number.
    pub(crate) fn remove_entry(&self, fid: Fid, entry: &Arc<FidEntry<F>>) -> bool {
        let mut map = self.map.lock_unpoisoned();
        match map.get(&fid) {
            Some(e) if Arc::ptr_eq(e, entry) => {
                map.remove(&fid);
                true
            }
            _ => false,
        }
    }

    /// Removes every fid (Tversion, connection close); their files close as the last
    /// request using each one ends.
    pub(crate) fn clear(&self) -> usize {
        let mut map = self.map.lock_unpoisoned();
        let n = map.len();
        map.clear();
        n
    }

    pub(crate) fn len(&self) -> usize {
        self.map.lock_unpoisoned().len()
    }

    /// After `from_dir/from_name` was renamed to `to`: every fid reached by that entry now
    /// records `to`. Fids inside a renamed directory need nothing: they record the
    /// directory's node, which a rename does not change. A fid whose file was replaced by
    /// the rename keeps its record, and a stale record (its name taken over by another
    /// file) may be moved along: the filesystem refuses either if used (`ESTALE`).
    pub(crate) fn renamed(&self, from_dir: u64, from_name: &Name, to: &Parent<F>) {
        let map = self.map.lock_unpoisoned();
        for e in map.values() {
            e.with(|s| {
                if s.parent.as_ref().is_some_and(|p| p.is(from_dir, from_name)) {
                    s.parent = Some(to.clone());
                }
            });
        }
    }
}
