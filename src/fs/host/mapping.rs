//! An open file's shared mapping, for reads a stream transport sends straight from the page
//! cache ([`Filesystem::map_read`](crate::fs::Filesystem::map_read)).
//!
//! One mapping per open file, made at its first large read and kept while reads fall in
//! it: faulting its pages in is paid once, not per read. It is a window of [`WINDOW`]
//! bytes from a multiple of half that, so every read of up to half a window finds one
//! that holds it whole, and a file read from start to end is mapped again every half
//! window. A window, not the whole file: the page tables of a mapping grow with what is
//! read through it (8 bytes per 4 KiB page) and last as long as it does, so a client
//! reading a huge file through one fid would otherwise make the server hold page tables
//! in proportion to the file. A read is cut at the file's size as `fstat` gives it now,
//! so no range handed out lies past the end when it is made (a file shrunk *after* that
//! is the transport's case, see [`MappedBytes`]).

use std::os::fd::BorrowedFd;
use std::sync::{Arc, Mutex};

use rustix::fs::fstat;

use crate::co::sync::LockExt;
use crate::fs::{FileMap, FsResult, MappedBytes};

/// Reads smaller than this are copied (`pread`): their copy is cheap, and a mapping's
/// page faults and its lock would cost more.
const MAP_MIN: usize = 64 * 1024;
/// The bytes one mapping covers (at most 256 KiB of page tables once all read), from a
/// multiple of half of it. Reads larger than half a window are copied.
const WINDOW: u64 = 128 << 20;

/// The mapping of one open file, made on demand.
#[derive(Default)]
pub(super) struct MapSlot(Mutex<Slot>);

#[derive(Default)]
enum Slot {
    #[default]
    None,
    Mapped(Arc<FileMap>),
    /// `mmap` refused this file (a filesystem without it): it is read from now on.
    Refused,
}

impl MapSlot {
    /// `count` bytes from `offset` of the file open as `fd`, fewer where it ends; `None`
    /// to read them instead (a small read, a range at or past the end, a file that cannot
    /// be mapped).
    pub(super) fn range(
        &self,
        fd: BorrowedFd<'_>,
        offset: u64,
        count: usize,
    ) -> Option<FsResult<MappedBytes>> {
        if count < MAP_MIN || count as u64 > WINDOW / 2 {
            return None;
        }
        let size = match fstat(fd) {
            Ok(st) => st.st_size as u64,
            Err(e) => return Some(Err(super::errno(e))),
        };
        if offset >= size {
            return None;
        }
        let end = size.min(offset.saturating_add(count as u64));
        let mut slot = self.0.lock_unpoisoned();
        let map = match &*slot {
            Slot::Refused => return None,
            Slot::Mapped(m) if m.covers(offset, end) => m.clone(),
            _ => {
                let from = offset / (WINDOW / 2) * (WINDOW / 2);
                match FileMap::new(fd, from, WINDOW as usize) {
                    Ok(m) => {
                        let m = Arc::new(m);
                        *slot = Slot::Mapped(m.clone());
                        m
                    }
                    Err(e) => {
                        tracing::debug!("mmap of an open file refused ({e}); reading it");
                        *slot = Slot::Refused;
                        return None;
                    }
                }
            }
        };
        drop(slot);
        MappedBytes::new(map, offset, (end - offset) as usize).map(Ok)
    }
}
