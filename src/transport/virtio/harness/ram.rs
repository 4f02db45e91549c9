//! Guest RAM for the virtual guest, with a page allocator for driver buffers.

use std::sync::Arc;

use vm_memory::{GuestAddress, GuestMemoryMmap};

/// The allocation granule (and the "page" of the zero-copy layouts).
pub const PAGE: u64 = 4096;

/// Guest RAM `[0, size)` plus a next-fit page allocator over it. Page 0 is never handed out
/// (a zero address means "unset" to virtio-queue).
pub struct GuestRam {
    mem: Arc<GuestMemoryMmap>,
    used: Vec<bool>,
    cursor: usize,
    free: usize,
}

impl GuestRam {
    /// `size` bytes of RAM (rounded up to whole pages), all zero.
    pub fn new(size: usize) -> Self {
        let pages = (size as u64).div_ceil(PAGE).max(2) as usize;
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), pages * PAGE as usize)])
            .expect("mapping guest RAM");
        let mut used = vec![false; pages];
        used[0] = true;
        GuestRam {
            mem: Arc::new(mem),
            used,
            cursor: 1,
            free: pages - 1,
        }
    }

    pub fn memory(&self) -> &Arc<GuestMemoryMmap> {
        &self.mem
    }

    /// Bytes of RAM.
    pub fn size(&self) -> u64 {
        self.used.len() as u64 * PAGE
    }

    /// Pages not allocated.
    pub fn free_pages(&self) -> usize {
        self.free
    }

    /// Allocates `len` bytes (at least one page, page-aligned, contiguous); `None` when no
    /// run of free pages is long enough.
    pub fn alloc(&mut self, len: u64) -> Option<GuestAddress> {
        let n = len.div_ceil(PAGE).max(1) as usize;
        let total = self.used.len();
        if n > self.free {
            return None;
        }
        // Next-fit from the cursor, wrapping once.
        let mut start = self.cursor;
        let mut scanned = 0;
        while scanned < total {
            if start + n > total {
                scanned += total - start;
                start = 1;
                continue;
            }
            match self.used[start..start + n].iter().rposition(|u| *u) {
                None => {
                    self.used[start..start + n].fill(true);
                    self.free -= n;
                    self.cursor = start + n;
                    return Some(GuestAddress(start as u64 * PAGE));
                }
                Some(i) => {
                    scanned += i + 1;
                    start += i + 1;
                }
            }
        }
        None
    }

    /// Frees what [`Self::alloc`] returned for `len` bytes.
    pub fn free(&mut self, addr: GuestAddress, len: u64) {
        let first = (addr.0 / PAGE) as usize;
        let n = len.div_ceil(PAGE).max(1) as usize;
        // Page 0 is never allocated, so never freed.
        for u in self.used.iter_mut().skip(first.max(1)).take(n) {
            if *u {
                *u = false;
                self.free += 1;
            }
        }
    }
}
