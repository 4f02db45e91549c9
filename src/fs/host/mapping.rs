//! An open file's shared mapping, for reads a stream transport sends straight from the page
//! cache ([`Filesystem::map_read`](crate::fs::Filesystem::map_read)).
//!
//! One mapping per open file, made at its first large read and kept: faulting its pages in
//! is paid once, not per read. It covers the file's size rounded up to [`MAP_STEP`], so a
//! growing file is mapped again only every so often; a read is cut at the file's size as
//! `fstat` gives it now, so no range handed out lies past the end when it is made (a file
//! shrunk *after* that is the transport's case, see [`MappedBytes`]).

use std::os::fd::BorrowedFd;
use std::sync::{Arc, Mutex};

use rustix::fs::fstat;

use crate::co::sync::LockExt;
use crate::fs::{FileMap, FsResult, MappedBytes};

/// Reads smaller than this are copied (`pread`): their copy is cheap, and a mapping's
/// page faults and its lock would cost more.
pub(crate) const MAP_MIN: usize = 64 * 1024;
/// Mappings cover the file's size rounded up to a multiple of this.
const MAP_STEP: u64 = 64 << 20;
/// Files larger than this are read, not mapped (address space is plentiful on 64-bit
/// hosts, but not endless: 16 TiB of it per file at most).
const MAP_MAX: u64 = 16 << 40;

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
        if count < MAP_MIN {
            return None;
        }
        let size = match fstat(fd) {
            Ok(st) => st.st_size as u64,
            Err(e) => return Some(Err(super::errno(e))),
        };
        if offset >= size || size > MAP_MAX {
            return None;
        }
        let end = size.min(offset.saturating_add(count as u64));
        let mut slot = self.0.lock_unpoisoned();
        let map = match &*slot {
            Slot::Refused => return None,
            Slot::Mapped(m) if m.len() as u64 >= end => m.clone(),
            _ => {
                let len = size.div_ceil(MAP_STEP) * MAP_STEP;
                match FileMap::new(fd, len as usize) {
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
        MappedBytes::new(map, offset as usize, (end - offset) as usize).map(Ok)
    }
}
