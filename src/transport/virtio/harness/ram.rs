//! Guest RAM for the virtual guest, with a page allocator for driver buffers.

use std::sync::Arc;

use vm_memory::{GuestAddress, GuestMemoryMmap};

/// The allocation granule (and the "page" of the zero-copy layouts).
pub const PAGE: u64 = 4096;

/// Guest RAM `[0, size)` plus a first-fit page allocator over it (lowest free run first,
/// so freed buffers are reused soon, as a guest's hot buffers are). Page 0 is never handed
/// out (a zero address means "unset" to virtio-queue).
pub struct GuestRam {
    mem: Arc<GuestMemoryMmap>,
    /// Where each memory region starts and how long it is (kept for [`Self::remap`]).
    regions: Vec<(GuestAddress, usize)>,
    used: Vec<bool>,
    /// No free page below this one.
    cursor: usize,
    free: usize,
}

impl GuestRam {
    /// `size` bytes of RAM (rounded up to whole pages), all zero.
    pub fn new(size: usize) -> Self {
        Self::with_cuts(size, &[])
    }

    /// `size` bytes of RAM (rounded up to whole pages) in several memory regions that touch
    /// in guest memory but are mapped apart on the host, as a VMM's memory slots may be: a
    /// new region starts at each address of `cuts` (any byte; those outside the RAM are
    /// ignored). A buffer the allocator hands out may then span regions, and a device must
    /// follow it from one mapping into the next.
    pub fn with_cuts(size: usize, cuts: &[u64]) -> Self {
        let pages = (size as u64).div_ceil(PAGE).max(2) as usize;
        let end = pages as u64 * PAGE;
        let mut starts: Vec<u64> = cuts.iter().copied().filter(|&c| c > 0 && c < end).collect();
        starts.push(0);
        starts.sort_unstable();
        starts.dedup();
        let regions: Vec<(GuestAddress, usize)> = starts
            .iter()
            .zip(starts.iter().skip(1).chain([&end]))
            .map(|(&a, &b)| (GuestAddress(a), (b - a) as usize))
            .collect();
        let mem = GuestMemoryMmap::<()>::from_ranges(&regions).expect("mapping guest RAM");
        let mut used = vec![false; pages];
        used[0] = true;
        GuestRam {
            mem: Arc::new(mem),
            regions,
            used,
            cursor: 1,
            free: pages - 1,
        }
    }

    /// RAM over memory made elsewhere (one region from address 0, e.g. a shared memfd a
    /// vhost-user backend maps too); it is not cleared.
    pub fn with_memory(mem: Arc<GuestMemoryMmap>) -> Self {
        use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
        let size = mem.last_addr().0 + 1;
        let pages = (size / PAGE).max(2) as usize;
        let mut used = vec![false; pages];
        used[0] = true;
        let regions = mem
            .iter()
            .map(|r| (r.start_addr(), r.len() as usize))
            .collect();
        GuestRam {
            mem,
            regions,
            used,
            cursor: 1,
            free: pages - 1,
        }
    }

    /// The guest memory, as the device maps it.
    pub fn memory(&self) -> &Arc<GuestMemoryMmap> {
        &self.mem
    }

    /// Moves the RAM to a new host mapping with the same contents (every allocated page,
    /// and page 0), as a VMM does when it changes its memory table, and returns it for the
    /// device ([`Virtio9p::set_memory`](crate::transport::virtio::Virtio9p::set_memory)).
    /// The old mapping is no longer the guest's: what is written there from now on is not
    /// seen, so a device that kept it would read stale rings. Only sound while the device
    /// has no chain in flight (a running request keeps the mapping it was given).
    pub fn remap(&mut self) -> Arc<GuestMemoryMmap> {
        use vm_memory::Bytes;
        let new = GuestMemoryMmap::<()>::from_ranges(&self.regions).expect("mapping guest RAM");
        let mut page = vec![0u8; PAGE as usize];
        for (i, _) in self.used.iter().enumerate().filter(|(_, u)| **u) {
            let at = GuestAddress(i as u64 * PAGE);
            self.mem
                .read_slice(&mut page, at)
                .expect("a page of guest RAM");
            new.write_slice(&page, at).expect("a page of guest RAM");
        }
        self.mem = Arc::new(new);
        self.mem.clone()
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
        // First fit, from the lowest page that may be free.
        let mut start = self.cursor;
        while start + n <= total {
            match self.used[start..start + n].iter().rposition(|u| *u) {
                None => {
                    self.used[start..start + n].fill(true);
                    self.free -= n;
                    if start == self.cursor {
                        self.cursor = start + n;
                    }
                    return Some(GuestAddress(start as u64 * PAGE));
                }
                Some(i) => start += i + 1,
            }
        }
        None
    }

    /// Frees what [`Self::alloc`] returned for `len` bytes.
    pub fn free(&mut self, addr: GuestAddress, len: u64) {
        let first = (addr.0 / PAGE) as usize;
        let n = len.div_ceil(PAGE).max(1) as usize;
        // Page 0 is never allocated, so never freed.
        let first = first.max(1);
        for u in self.used.iter_mut().skip(first).take(n) {
            if *u {
                *u = false;
                self.free += 1;
            }
        }
        self.cursor = self.cursor.min(first);
    }
}
