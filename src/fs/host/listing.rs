//! Directory listings kept between opens, dropped the moment inotify says the directory
//! changed.
//!
//! A guest lists the same directories over and over (`ls`, a shell's completion, a build
//! scanning its tree), and with `cache=none` every listing is a fresh Tlopen and Treaddirs
//! to the end. Reading a directory is the kernel's work (`getdents64`: the directory walk
//! and `filldir`, more than half of a listing's cost on tmpfs), the same each time while the
//! directory does not change. So a listing read from cookie 0 to the end is kept, and the
//! next listing of that directory is served from it.
//!
//! **Why it is never stale.** Before a directory is read for keeping, it gets an inotify
//! watch for every change to its entries (`IN_CREATE`, `IN_DELETE`, `IN_MOVED_FROM`,
//! `IN_MOVED_TO`) and to itself (`IN_MOVE_SELF`, whose `..` then names another directory;
//! `IN_DELETE_SELF`). The kernel queues these events inside the syscall that makes the
//! change, before it returns, whoever makes it (this server, or a program on the host). Every
//! use of a kept listing first drains the queue, so a change that completed before the
//! Treaddir arrived has dropped the listing by the time it is looked at. A change during the
//! read that fills a listing counts as a change of the directory, and a listing read across
//! a change is not kept. A queue overflow (`IN_Q_OVERFLOW`) drops everything. One change
//! has no timely event: a removed directory's `IN_DELETE_SELF` waits for its last
//! descriptor to close, which may be the one being read; so a kept copy is served only after
//! an `fstat` shows the directory still linked (`dir.rs`).
//!
//! inotify sees only changes made through this kernel's VFS, so listings are kept only for
//! directories on local filesystems (tmpfs, ext2/3/4, xfs, btrfs, f2fs, ramfs, by
//! `fstatfs`): a directory on NFS or FUSE, whose server may change it unseen, is read from
//! the kernel every time. Without inotify (the per-user instance limit reached) nothing is
//! kept.
//!
//! **Bounds.** At most [`MAX_ENTRIES`] entries in one listing (a bigger directory is read
//! from the kernel), at most [`MAX_DIRS`] directories watched, and at most [`BUDGET`] bytes of
//! listings in all; the least recently used listing goes first.
//!
//! Cookies are the kernel's `d_off`s either way, so a listing begun from a kept copy goes on
//! correctly from the kernel after the copy is dropped, and the other way round.

use std::collections::BTreeMap;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex};

use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};

use super::node::Identity;
use crate::co::sync::LockExt;
use crate::fs::DirEntry;

/// Most entries a kept listing holds.
pub(super) const MAX_ENTRIES: usize = 1 << 17;
/// Most directories watched (and listings kept) at once.
pub(super) const MAX_DIRS: usize = 1024;
/// Most bytes all kept listings take (names and entries).
pub(super) const BUDGET: usize = 64 << 20;

/// `f_type`s of filesystems whose every change passes through this kernel's VFS.
const LOCAL: [i64; 6] = [
    0x0102_1994, // tmpfs
    0x8584_58f6, // ramfs
    0xef53,      // ext2/3/4
    0x5846_5342, // xfs
    0x9123_683e, // btrfs
    0xf2f5_2010, // f2fs
];

/// Whether `dir` is on a filesystem in [`LOCAL`].
#[allow(clippy::unnecessary_cast)] // `f_type` is i64 on x86_64, narrower elsewhere
fn is_local(dir: BorrowedFd<'_>) -> bool {
    rustix::fs::fstatfs(dir).is_ok_and(|st| LOCAL.contains(&(st.f_type as i64)))
}

/// The changes that drop a directory's listing.
fn watched() -> WatchFlags {
    WatchFlags::CREATE
        | WatchFlags::DELETE
        | WatchFlags::MOVED_FROM
        | WatchFlags::MOVED_TO
        | WatchFlags::MOVE_SELF
        | WatchFlags::DELETE_SELF
        | WatchFlags::ONLYDIR
}

/// A whole directory as `getdents64` gave it, from cookie 0 to the end.
pub(super) struct Listing {
    /// Which listing this is, so an open directory's place in it can be recognised.
    pub(super) serial: u64,
    pub(super) entries: Vec<DirEntry>,
}

impl Listing {
    /// Where a readdir from `cookie` starts: 0 for cookie 0, else just after the entry
    /// whose next cookie is `cookie` (`hint` first, the index the last readdir ended at).
    /// `None` if no entry has that cookie.
    pub(super) fn start(&self, cookie: u64, hint: Option<usize>) -> Option<usize> {
        if cookie == 0 {
            return Some(0);
        }
        if let Some(h) = hint.filter(|&h| h > 0 && h <= self.entries.len())
            && self.entries[h - 1].next == cookie
        {
            return Some(h);
        }
        self.entries
            .iter()
            .position(|e| e.next == cookie)
            .map(|i| i + 1)
    }

    fn bytes(&self) -> usize {
        self.entries
            .iter()
            .map(|e| std::mem::size_of::<DirEntry>() + e.name.len())
            .sum()
    }
}

/// Permission to keep what a read from the start of a directory finds.
pub(super) struct Ticket {
    key: (u64, u64),
    changes: u64,
    epoch: u64,
}

struct Slot {
    identity: Identity,
    wd: i32,
    /// Bumped by every event on the directory.
    changes: u64,
    listing: Option<(Arc<Listing>, usize)>,
    last_use: u64,
    /// The directory had more than [`MAX_ENTRIES`] at its last read: not read for keeping
    /// again until it changes.
    too_big: bool,
}

#[derive(Default)]
struct State {
    slots: BTreeMap<(u64, u64), Slot>,
    by_wd: BTreeMap<i32, (u64, u64)>,
    /// Bumped by a queue overflow, which may have hidden any directory's events.
    epoch: u64,
    bytes: usize,
    tick: u64,
    serial: u64,
}

/// The kept listings of one export (see the module doc).
pub(super) struct Listings {
    /// `None`: nothing is kept.
    inotify: Option<OwnedFd>,
    state: Mutex<State>,
}

impl Listings {
    /// Listings kept if `enabled` and inotify is available.
    pub(super) fn new(enabled: bool) -> Listings {
        let inotify = enabled
            .then(|| inotify::init(CreateFlags::NONBLOCK | CreateFlags::CLOEXEC).ok())
            .flatten();
        Listings {
            inotify,
            state: Mutex::new(State::default()),
        }
    }

    /// The kept listing of the directory `id`, if any is still true.
    pub(super) fn current(&self, id: &Identity) -> Option<Arc<Listing>> {
        let ino = self.inotify.as_ref()?;
        let mut s = self.state.lock_unpoisoned();
        drain(ino.as_fd(), &mut s);
        s.tick += 1;
        let tick = s.tick;
        let slot = s.slots.get_mut(&(id.dev, id.ino))?;
        if slot.identity != *id {
            return None;
        }
        slot.last_use = tick;
        slot.listing.as_ref().map(|(l, _)| l.clone())
    }

    /// Starts keeping the directory open as `dir` (identity `id`): watches it, and returns
    /// the ticket a read from its start must show to [`Listings::keep`]. `None` if it is not
    /// to be kept (not local, too big last time, no watch to be had).
    pub(super) fn begin(&self, id: &Identity, dir: BorrowedFd<'_>) -> Option<Ticket> {
        let ino = self.inotify.as_ref()?;
        if !is_local(dir) {
            return None;
        }
        let key = (id.dev, id.ino);
        let mut s = self.state.lock_unpoisoned();
        drain(ino.as_fd(), &mut s);
        if let Some(slot) = s.slots.get(&key) {
            if slot.identity == *id {
                return (!slot.too_big).then_some(Ticket {
                    key,
                    changes: slot.changes,
                    epoch: s.epoch,
                });
            }
            // An inode number reused by another directory: the old slot is stale.
            forget(ino.as_fd(), &mut s, key);
        }
        if s.slots.len() >= MAX_DIRS {
            let oldest = s
                .slots
                .iter()
                .min_by_key(|(_, v)| v.last_use)
                .map(|(k, _)| *k);
            forget(ino.as_fd(), &mut s, oldest?);
        }
        // The watch is added before the directory is read, so a change during the read is
        // an event. The descriptor's /proc path names exactly this directory.
        let path = format!("/proc/self/fd/{}", dir.as_raw_fd());
        let wd = inotify::add_watch(ino, path, watched()).ok()?;
        s.tick += 1;
        let tick = s.tick;
        s.by_wd.insert(wd, key);
        s.slots.insert(
            key,
            Slot {
                identity: *id,
                wd,
                changes: 0,
                listing: None,
                last_use: tick,
                too_big: false,
            },
        );
        Some(Ticket {
            key,
            changes: 0,
            epoch: s.epoch,
        })
    }

    /// Keeps `entries`, read from the start of the directory to its end, if nothing changed
    /// it since `t` was given. Returns the listing to serve from (kept or not).
    pub(super) fn keep(&self, t: Ticket, entries: Vec<DirEntry>) -> Arc<Listing> {
        let mut s = self.state.lock_unpoisoned();
        if let Some(ino) = &self.inotify {
            drain(ino.as_fd(), &mut s);
        }
        s.serial += 1;
        let listing = Arc::new(Listing {
            serial: s.serial,
            entries,
        });
        let bytes = listing.bytes();
        let epoch = s.epoch;
        let fresh = s
            .slots
            .get(&t.key)
            .is_some_and(|slot| slot.changes == t.changes && epoch == t.epoch);
        if !fresh || bytes > BUDGET {
            return listing;
        }
        while s.bytes + bytes > BUDGET {
            let oldest = s
                .slots
                .iter()
                .filter(|(k, v)| v.listing.is_some() && **k != t.key)
                .min_by_key(|(_, v)| v.last_use)
                .map(|(k, _)| *k);
            match oldest {
                Some(k) => drop_listing(&mut s, k),
                None => return listing,
            }
        }
        s.bytes += bytes;
        let slot = s.slots.get_mut(&t.key).expect("checked fresh above");
        slot.listing = Some((listing.clone(), bytes));
        listing
    }

    /// The read from the start found more than [`MAX_ENTRIES`]: do not try again until the
    /// directory changes.
    pub(super) fn too_big(&self, t: Ticket) {
        let mut s = self.state.lock_unpoisoned();
        if let Some(slot) = s.slots.get_mut(&t.key)
            && slot.changes == t.changes
        {
            slot.too_big = true;
        }
    }

    /// Listings kept now (for tests and diagnostics).
    pub(super) fn kept(&self) -> usize {
        let s = self.state.lock_unpoisoned();
        s.slots.values().filter(|v| v.listing.is_some()).count()
    }
}

fn drop_listing(s: &mut State, key: (u64, u64)) {
    if let Some(slot) = s.slots.get_mut(&key)
        && let Some((_, b)) = slot.listing.take()
    {
        s.bytes -= b;
    }
}

/// Stops watching `key` and drops its listing.
fn forget(ino: BorrowedFd<'_>, s: &mut State, key: (u64, u64)) {
    drop_listing(s, key);
    if let Some(slot) = s.slots.remove(&key) {
        s.by_wd.remove(&slot.wd);
        // The watch may already be gone with its directory (IN_IGNORED not yet read).
        let _ = inotify::remove_watch(ino, slot.wd);
    }
}

/// Reads every queued event and drops the listings they concern.
fn drain(ino: BorrowedFd<'_>, s: &mut State) {
    let mut buf = [MaybeUninit::<u8>::uninit(); 4096];
    let mut r = inotify::Reader::new(ino, &mut buf);
    loop {
        let (wd, mask) = match r.next() {
            Ok(ev) => (ev.wd(), ev.events()),
            Err(rustix::io::Errno::AGAIN) => return,
            Err(rustix::io::Errno::INTR) => continue,
            // Events that cannot be read may have been lost: as an overflow.
            Err(_) => {
                apply(s, -1, ReadFlags::QUEUE_OVERFLOW);
                return;
            }
        };
        apply(s, wd, mask);
    }
}

/// One event's effect: the directory's listing is no longer true.
fn apply(s: &mut State, wd: i32, mask: ReadFlags) {
    if mask.contains(ReadFlags::QUEUE_OVERFLOW) {
        s.epoch += 1;
        let keys: Vec<_> = s.slots.keys().copied().collect();
        for k in keys {
            drop_listing(s, k);
            if let Some(slot) = s.slots.get_mut(&k) {
                slot.changes += 1;
                slot.too_big = false;
            }
        }
        return;
    }
    let Some(&key) = s.by_wd.get(&wd) else {
        return;
    };
    drop_listing(s, key);
    if mask.contains(ReadFlags::IGNORED) {
        // The directory is gone (or its watch removed): so is its slot.
        if let Some(slot) = s.slots.remove(&key) {
            s.by_wd.remove(&slot.wd);
        }
        return;
    }
    if let Some(slot) = s.slots.get_mut(&key) {
        slot.changes += 1;
        slot.too_big = false;
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use rustix::fs::{Mode, OFlags, fstat, openat};

    use super::*;

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn scratch(tag: &str) -> Dir {
        let p = std::env::temp_dir().join(format!("co9p-listing-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }

    fn open(p: &std::path::Path) -> (OwnedFd, Identity) {
        let fd = openat(
            rustix::fs::CWD,
            p,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
        let st = fstat(&fd).unwrap();
        let id = Identity::of(fd.as_fd(), &st);
        (fd, id)
    }

    #[test]
    fn a_change_during_the_read_is_not_kept() {
        let d = scratch("race");
        let l = Listings::new(true);
        let (fd, id) = open(&d.0);
        let Some(t) = l.begin(&id, fd.as_fd()) else {
            eprintln!("SKIP: {} keeps no listings", d.0.display());
            return;
        };
        // The read that fills the listing is under way; a file appears meanwhile.
        std::fs::write(d.0.join("meanwhile"), b"").unwrap();
        l.keep(t, Vec::new());
        assert_eq!(l.kept(), 0, "a listing read across a change is not kept");
        assert!(l.current(&id).is_none());
        // Read again with nothing changing: kept.
        let t = l.begin(&id, fd.as_fd()).expect("still watched");
        l.keep(t, Vec::new());
        assert_eq!(l.kept(), 1);
        assert!(l.current(&id).is_some());
        // And dropped by the next change.
        std::fs::remove_file(d.0.join("meanwhile")).unwrap();
        assert!(l.current(&id).is_none());
    }

    #[test]
    fn an_overflow_drops_every_listing_and_every_ticket() {
        let d = scratch("overflow");
        std::fs::create_dir(d.0.join("a")).unwrap();
        std::fs::create_dir(d.0.join("b")).unwrap();
        let l = Listings::new(true);
        let (fa, ia) = open(&d.0.join("a"));
        let (fb, ib) = open(&d.0.join("b"));
        let Some(t) = l.begin(&ia, fa.as_fd()) else {
            eprintln!("SKIP: {} keeps no listings", d.0.display());
            return;
        };
        l.keep(t, Vec::new());
        let pending = l.begin(&ib, fb.as_fd()).unwrap();
        assert_eq!(l.kept(), 1);
        apply(
            &mut l.state.lock_unpoisoned(),
            -1,
            ReadFlags::QUEUE_OVERFLOW,
        );
        assert_eq!(l.kept(), 0, "an overflow drops what is kept");
        l.keep(pending, Vec::new());
        assert_eq!(l.kept(), 0, "and what was being read when it came");
    }

    #[test]
    fn watched_directories_are_bounded() {
        let d = scratch("bounded");
        let l = Listings::new(true);
        let mut first = None;
        for i in 0..MAX_DIRS + 10 {
            let p = d.0.join(format!("d{i}"));
            std::fs::create_dir(&p).unwrap();
            let (fd, id) = open(&p);
            let Some(t) = l.begin(&id, fd.as_fd()) else {
                eprintln!("SKIP: {} keeps no listings", d.0.display());
                return;
            };
            l.keep(t, Vec::new());
            first.get_or_insert(id);
        }
        let s = l.state.lock_unpoisoned();
        assert_eq!(s.slots.len(), MAX_DIRS);
        assert_eq!(s.by_wd.len(), MAX_DIRS);
        drop(s);
        assert!(
            l.current(&first.unwrap()).is_none(),
            "the least recently used went first"
        );
    }

    #[test]
    fn a_cookie_is_found_from_the_hint_or_by_search() {
        let e = |next: u64| DirEntry {
            qid: crate::protocol::Qid::default(),
            next,
            ty: 8,
            name: b"x".to_vec(),
        };
        let l = Listing {
            serial: 1,
            entries: vec![e(5), e(9), e(2), e(40)],
        };
        assert_eq!(l.start(0, Some(3)), Some(0), "cookie 0 is the start");
        assert_eq!(l.start(2, Some(3)), Some(3), "the hint");
        assert_eq!(l.start(9, Some(3)), Some(2), "a wrong hint: searched");
        assert_eq!(l.start(40, None), Some(4), "the end");
        assert_eq!(l.start(7, None), None, "no entry ends there");
    }
}
