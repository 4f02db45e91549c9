//! Qids from host inodes: paths unique across host devices, versions from mtime and size.
//!
//! **Paths** are remapped as QEMU's `multidevs=remap` does: each host device met gets a
//! 16-bit prefix (the export's own device gets 0, so its qid paths are its inode numbers),
//! and a file's path is `prefix << 48 | ino` when `ino` fits in 48 bits. Inode numbers that
//! do not fit, and devices past the 65 535th, go to a full `(dev, ino) → counter` table under
//! the reserved prefix `0xffff`. So two files have the same qid path only if they have the
//! same `(st_dev, st_ino)`. Both tables only grow (as QEMU's); the full table holds one
//! entry per such inode ever seen.
//!
//! **Versions** are `mtime_sec ^ (size << 8) ^ mtime_nsec`, truncated to 32 bits: QEMU's
//! `st_mtime ^ (st_size << 8)` plus the nanoseconds, so writes within one second change
//! the version too.

use std::collections::HashMap;
use std::sync::Mutex;

use rustix::fs::Stat;

use crate::co::sync::LockExt;
use crate::protocol::{Attr, GetattrMask, Qid, QidType, Timespec};

const INO_BITS: u32 = 48;
const FULL_PREFIX: u64 = 0xffff;

#[derive(Debug)]
pub(super) struct QidMap {
    /// The export's device: prefix 0, no lock needed.
    root_dev: u64,
    tables: Mutex<Tables>,
}

#[derive(Debug, Default)]
struct Tables {
    prefixes: HashMap<u64, u64>,
    full: HashMap<(u64, u64), u64>,
}

impl QidMap {
    pub(super) fn new(root_dev: u64) -> QidMap {
        let mut prefixes = HashMap::new();
        prefixes.insert(root_dev, 0);
        QidMap {
            root_dev,
            tables: Mutex::new(Tables {
                prefixes,
                full: HashMap::new(),
            }),
        }
    }

    /// The qid path of host inode `(dev, ino)`.
    pub(super) fn path(&self, dev: u64, ino: u64) -> u64 {
        let fits = ino >> INO_BITS == 0;
        if fits && dev == self.root_dev {
            return ino;
        }
        let mut t = self.tables.lock_unpoisoned();
        if fits {
            if let Some(&p) = t.prefixes.get(&dev) {
                return p << INO_BITS | ino;
            }
            let next = t.prefixes.len() as u64;
            if next < FULL_PREFIX {
                t.prefixes.insert(dev, next);
                return next << INO_BITS | ino;
            }
        }
        let next = t.full.len() as u64;
        let n = *t.full.entry((dev, ino)).or_insert(next);
        FULL_PREFIX << INO_BITS | n
    }
}

/// The qid type for a host `st_mode`.
pub(super) fn qid_type(mode: u32) -> QidType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => QidType::DIR,
        libc::S_IFLNK => QidType::SYMLINK,
        _ => QidType::FILE,
    }
}

/// The qid version of a stat (see the module doc).
// `Stat` field widths differ between architectures.
#[allow(clippy::unnecessary_cast)]
pub(super) fn qid_version(st: &Stat) -> u32 {
    version_of(
        st.st_mtime as i64,
        st.st_mtime_nsec as u64,
        st.st_size as u64,
    )
}

/// The qid version from a modification time and a size (from `fstat` or `statx`).
pub(super) fn version_of(mtime: i64, mtime_nsec: u64, size: u64) -> u32 {
    (mtime as u64 ^ size << 8 ^ mtime_nsec) as u32
}

/// `Rgetattr`'s fields from a host stat; `mode` is the mode the guest sees.
pub(super) fn attr_from_stat(st: &Stat, qid: Qid) -> Attr {
    let ts = |sec: i64, nsec: u64| Timespec {
        sec: sec as u64,
        nsec,
    };
    Attr {
        valid: GetattrMask::BASIC,
        qid,
        mode: st.st_mode,
        uid: st.st_uid,
        gid: st.st_gid,
        nlink: st.st_nlink,
        rdev: st.st_rdev,
        size: st.st_size as u64,
        blksize: st.st_blksize as u64,
        blocks: st.st_blocks as u64,
        atime: ts(st.st_atime, st.st_atime_nsec),
        mtime: ts(st.st_mtime, st.st_mtime_nsec),
        ctime: ts(st.st_ctime, st.st_ctime_nsec),
        ..Attr::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_unique_across_devices() {
        let m = QidMap::new(7);
        assert_eq!(m.path(7, 42), 42);
        let a = m.path(8, 42);
        let b = m.path(9, 42);
        assert_ne!(a, 42);
        assert_ne!(a, b);
        assert_eq!(m.path(8, 42), a, "stable");
        // Inodes past 48 bits go to the full table, still unique.
        let big = 1u64 << 50;
        let c = m.path(7, big);
        let d = m.path(7, big + 1);
        let e = m.path(8, big);
        assert!(c != d && d != e && c != e);
        assert_eq!(m.path(7, big), c);
        assert_eq!(c >> INO_BITS, FULL_PREFIX);
    }
}
