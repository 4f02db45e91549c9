//! Guest memory as the device touches it: a checked guest buffer ([`Region`]), where a range
//! of guest memory is mapped in this process ([`host_range`]), and copies to and from a list
//! of buffers. The chain walk ([`super::walk`]) and the chain check ([`super::chain`]) both
//! find host addresses here; the request reader and the responder copy through here.

use vm_memory::{
    Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    MemoryRegionAddress,
};

/// One guest buffer `[addr, addr + len)`, already checked to lie inside guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// Where the buffer starts in guest memory.
    pub addr: GuestAddress,
    /// Its length in bytes.
    pub len: u32,
    /// Where the buffer is mapped in this process when it lies inside one memory region
    /// (found once, by [`parse`](super::chain::parse)), else 0. Valid while the
    /// `GuestMemoryMmap` it was found in lives: whoever turns it into a slice holds that
    /// memory.
    pub host: usize,
}

impl Region {
    /// The host address of `[addr, addr + len)` if it lies inside one region.
    fn host_ptr(&self) -> Option<*mut u8> {
        (self.host != 0).then_some(self.host as *mut u8)
    }

    /// The host address of this buffer in `mem`: the one found by
    /// [`parse`](super::chain::parse), or looked up.
    pub fn host_in(&self, mem: &GuestMemoryMmap) -> Option<*mut u8> {
        self.host_ptr()
            .or_else(|| host_range(mem, self.addr, self.len as usize))
    }
}

/// A guest memory region's bounds and where it is mapped.
#[derive(Clone, Copy)]
pub(super) struct RegionSpan {
    start: u64,
    len: u64,
    base: *mut u8,
}

impl RegionSpan {
    /// The region holding `addr`, if any.
    pub(super) fn of(mem: &GuestMemoryMmap, addr: GuestAddress) -> Option<RegionSpan> {
        let region = mem.find_region(addr)?;
        let base = region.get_host_address(MemoryRegionAddress(0)).ok()?;
        Some(RegionSpan {
            start: region.start_addr().raw_value(),
            len: region.len(),
            base,
        })
    }

    /// The host address of `[addr, addr + len)` if it lies inside this region.
    #[inline]
    pub(super) fn host(&self, addr: GuestAddress, len: u64) -> Option<*mut u8> {
        let off = addr.raw_value().checked_sub(self.start)?;
        if off.checked_add(len)? > self.len {
            return None;
        }
        // SAFETY: `off` is inside the region's mapping of `self.len` bytes from `base`.
        Some(unsafe { self.base.add(off as usize) })
    }
}

/// The host address of `[addr, addr + len)` when it lies inside one memory region (the
/// fast path; a range spanning regions gets `None` and takes vm-memory's slice iterator).
pub(super) fn host_range(mem: &GuestMemoryMmap, addr: GuestAddress, len: usize) -> Option<*mut u8> {
    RegionSpan::of(mem, addr)?.host(addr, len as u64)
}

/// Copies up to `buf.len()` bytes from the start of `regions` into `buf`; returns how many.
pub(super) fn read_from(mem: &GuestMemoryMmap, regions: &[Region], buf: &mut [u8]) -> usize {
    let mut done = 0;
    for r in regions {
        if done == buf.len() {
            break;
        }
        let n = (r.len as usize).min(buf.len() - done);
        if mem.read_slice(&mut buf[done..done + n], r.addr).is_err() {
            break;
        }
        done += n;
    }
    done
}

/// Copies `data` into `regions` from their start; returns the bytes written.
pub(super) fn write_to(mem: &GuestMemoryMmap, regions: &[Region], data: &[u8]) -> usize {
    let mut done = 0;
    for r in regions {
        if done == data.len() {
            break;
        }
        let n = (r.len as usize).min(data.len() - done);
        if mem.write_slice(&data[done..done + n], r.addr).is_err() {
            break;
        }
        done += n;
    }
    done
}

/// The part `[skip, skip + len)` of the bytes `regions` hold in order.
pub(super) fn sub_regions(
    regions: &[Region],
    mut skip: u64,
    mut len: u64,
) -> impl Iterator<Item = Region> + '_ {
    regions
        .iter()
        .map_while(move |r| {
            if len == 0 {
                return None;
            }
            let rlen = u64::from(r.len);
            if skip >= rlen {
                skip -= rlen;
                return Some(None);
            }
            let take = (rlen - skip).min(len);
            let addr = r.addr.checked_add(skip)?;
            let host = if r.host != 0 {
                r.host + skip as usize
            } else {
                0
            };
            len -= take;
            skip = 0;
            Some(Some(Region {
                addr,
                len: take as u32,
                host,
            }))
        })
        .flatten()
}
