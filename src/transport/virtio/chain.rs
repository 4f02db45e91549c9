//! Walking one descriptor chain and checking it before anything trusts it.
//!
//! The walk (`walk::Walk`) has the rules of virtio-queue's
//! [`DescriptorChain`](virtio_queue::DescriptorChain) iterator, which is lenient in a way a
//! device must not be: it simply *ends* when a descriptor cannot be read, when an indirect table sits inside an
//! indirect table, when a `next` index is out of range, or when its time-to-live runs out (a
//! loop). [`parse`] notices every one of those (the chain yielded nothing, or its last
//! descriptor still has `NEXT` set), checks that every buffer lies inside guest memory, and
//! that no device-readable buffer follows a device-writable one. Whatever it finds, it keeps
//! the usable buffers, so a bad chain can still be answered with an `Rlerror` when its header
//! and some writable room survived.

pub use super::guest_mem::Region;
use super::guest_mem::RegionSpan;
use super::walk::Walk;
use vm_memory::{Address, GuestAddress, GuestMemory, GuestMemoryMmap, Permissions};

/// Why a chain cannot be served as is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainError {
    /// The walk yielded no descriptor (unreadable head, empty or nested indirect table, head
    /// index beyond the queue).
    Empty,
    /// The walk stopped early: a loop, a `next` out of range, an unreadable descriptor, an
    /// indirect table inside an indirect table, or more than 4 GiB in total.
    Truncated,
    /// A device-readable buffer after a device-writable one.
    ReadableAfterWritable,
    /// A buffer (partly) outside guest memory.
    OutOfMemory,
}

/// A walked chain: its head, its readable and writable buffers in order, and the first
/// problem found (if any). With an error, `readable` keeps the buffers before the first bad
/// readable one and `writable` the in-memory writable ones, for a best-effort `Rlerror`.
#[derive(Debug, Clone)]
pub struct Chain {
    /// The index of the chain's head descriptor.
    pub head: u16,
    /// The device-readable buffers (the request), in order.
    pub readable: Vec<Region>,
    /// The device-writable buffers (room for the reply), in order.
    pub writable: Vec<Region>,
    /// Why the chain cannot be served as is, if it cannot.
    pub error: Option<ChainError>,
}

impl Chain {
    /// Bytes of the readable buffers.
    pub fn readable_len(&self) -> u64 {
        self.readable.iter().map(|r| u64::from(r.len)).sum()
    }

    /// Bytes of the writable buffers.
    pub fn writable_len(&self) -> u64 {
        self.writable.iter().map(|r| u64::from(r.len)).sum()
    }
}

/// Walks and checks the chain at `head` of the queue whose descriptor table of `queue_size`
/// entries is at `desc_table`. Never fails: problems are recorded in [`Chain::error`].
/// `spare` is an empty vector to collect the writable buffers in (one a finished request
/// gave back, so a long chain does not regrow a new one each time).
pub fn parse(
    head: u16,
    mem: &GuestMemoryMmap,
    desc_table: GuestAddress,
    queue_size: u16,
    spare: Vec<Region>,
) -> Chain {
    let mut writable = spare;
    writable.clear();
    let mut out = Chain {
        head,
        readable: Vec::with_capacity(4),
        writable,
        error: None,
    };
    // The memory region the last buffer was in: a chain's buffers are usually in one.
    let mut last: Option<RegionSpan> = None;
    let mut count = 0usize;
    let mut last_has_next = false;
    let mut readable_broken = false;
    let mut seen_writable = false;
    for desc in Walk::new(mem, desc_table, queue_size, head) {
        count += 1;
        last_has_next = desc.has_next();
        let (addr, len) = (desc.addr(), desc.len());
        let host = match last.and_then(|span| span.host(addr, u64::from(len))) {
            Some(p) => Some(p),
            None => look_up(mem, &mut last, addr, len),
        };
        let region = Region {
            addr,
            len,
            host: host.map_or(0, |p| p as usize),
        };
        let in_memory = host.is_some() || spans_regions(mem, addr, len);
        if !in_memory {
            out.error.get_or_insert(ChainError::OutOfMemory);
        }
        if desc.is_write_only() {
            seen_writable = true;
            if in_memory {
                push_merged(&mut out.writable, region, last);
            }
        } else {
            if seen_writable {
                out.error.get_or_insert(ChainError::ReadableAfterWritable);
                readable_broken = true;
            }
            if !in_memory {
                readable_broken = true;
            }
            if !readable_broken {
                push_merged(&mut out.readable, region, last);
            }
        }
    }
    if count == 0 {
        out.error = Some(ChainError::Empty);
    } else if last_has_next {
        out.error.get_or_insert(ChainError::Truncated);
    }
    out
}

/// The host address of `[addr, addr + len)` found in its memory region, which becomes `last`
/// (the first buffer of a chain, or one in another region than the buffer before it). Kept
/// out of `parse`'s loop, which then holds its state in registers.
#[inline(never)]
fn look_up(
    mem: &GuestMemoryMmap,
    last: &mut Option<RegionSpan>,
    addr: GuestAddress,
    len: u32,
) -> Option<*mut u8> {
    *last = RegionSpan::of(mem, addr);
    last.and_then(|span| span.host(addr, u64::from(len)))
}

/// Whether `[addr, addr + len)`, which lies inside no single region, is guest memory all the
/// same (across regions that touch).
#[cold]
#[inline(never)]
fn spans_regions(mem: &GuestMemoryMmap, addr: GuestAddress, len: u32) -> bool {
    GuestMemory::check_range(mem, addr, len as usize, Permissions::Read)
}

/// Appends `r` to `list`, or grows the last buffer of `list` by it when `r` continues that
/// buffer in guest memory and the two together lie in the memory region `span`. The Linux
/// driver gives one descriptor per 4 KiB page, and a guest's pages are often contiguous
/// (huge pages, a kernel buffer): merged, a 1 MiB read is one long copy rather than 256
/// short ones, which costs about 10 % less.
///
/// The merged buffer must be one host range of one mapping, so `span` must give the host
/// address already recorded for the previous buffer: a zero-length buffer at the very end of
/// one region has a host address one past that region's mapping, and must not be grown into
/// the next region even where the two touch in guest memory.
#[inline]
fn push_merged(list: &mut Vec<Region>, r: Region, span: Option<RegionSpan>) {
    if let (Some(prev), Some(span)) = (list.last_mut(), span)
        && prev.host != 0
        && r.host != 0
        && prev.addr.checked_add(u64::from(prev.len)) == Some(r.addr)
        && let Some(len) = prev.len.checked_add(r.len)
        && span.host(prev.addr, u64::from(len)) == Some(prev.host as *mut u8)
    {
        prev.len = len;
        return;
    }
    list.push(r);
}

#[cfg(test)]
mod tests {
    use super::super::guest_mem::host_range;
    use super::*;
    use vm_memory::Bytes;

    /// Writes `descs` (address, length, flags) as a chain from index 0 of a table at `at`.
    fn table(mem: &GuestMemoryMmap, at: u64, descs: &[(u64, u32, u16)]) {
        for (i, &(addr, len, flags)) in descs.iter().enumerate() {
            let next = (i + 1 < descs.len()) as u16;
            let mut b = addr.to_le_bytes().to_vec();
            b.extend(len.to_le_bytes());
            b.extend((flags | next).to_le_bytes());
            b.extend((i as u16 + 1).to_le_bytes());
            mem.write_slice(&b, GuestAddress(at + 16 * i as u64))
                .unwrap();
        }
    }

    /// VRING_DESC_F_WRITE.
    const W: u16 = 2;

    /// Two regions that touch in guest memory, [0, 64 KiB) and [64 KiB, 128 KiB).
    fn two_touching_regions() -> GuestMemoryMmap {
        GuestMemoryMmap::<()>::from_ranges(&[
            (GuestAddress(0), 0x1_0000),
            (GuestAddress(0x1_0000), 0x1_0000),
        ])
        .unwrap()
    }

    /// Each non-empty buffer of `c` is one host range: its host address is the one guest
    /// memory gives for it whole. (An empty buffer's own address may be one past its
    /// region: no byte is there.)
    fn assert_host_ranges(mem: &GuestMemoryMmap, c: &Chain) {
        for r in c.readable.iter().chain(&c.writable).filter(|r| r.len > 0) {
            let whole = host_range(mem, r.addr, r.len as usize);
            assert_eq!(Some(r.host as *mut u8), whole, "{r:?}");
        }
    }

    #[test]
    fn contiguous_buffers_in_one_region_are_merged_and_no_others() {
        let mem = two_touching_regions();
        table(
            &mem,
            0,
            &[
                (0x1000, 100, 0),
                (0x1064, 28, 0),     // continues the first: merged
                (0x2000, 11, W),     // the reply header
                (0x3000, 4096, W),   // not after the header: a new buffer
                (0x4000, 4096, W),   // continues: merged
                (0xf000, 4096, W),   // a gap: a new buffer
                (0x1_0000, 4096, W), // continues in guest memory, but in the next region
                (0x1_1000, 0, W),    // empty, merged
                (0x1_1000, 4096, W), // continues: merged
            ],
        );
        let c = parse(0, &mem, GuestAddress(0), 16, Vec::new());
        assert_eq!(c.error, None);
        let spans = |rs: &[Region]| rs.iter().map(|r| (r.addr.0, r.len)).collect::<Vec<_>>();
        assert_eq!(spans(&c.readable), [(0x1000, 128)]);
        assert_eq!(
            spans(&c.writable),
            [
                (0x2000, 11),
                (0x3000, 8192),
                (0xf000, 4096),
                (0x1_0000, 8192)
            ]
        );
        assert_host_ranges(&mem, &c);
        assert_eq!(
            (c.readable_len(), c.writable_len()),
            (128, 11 + 3 * 4096 + 8192)
        );
    }

    /// An empty buffer at the very end of one region has a host address one past that
    /// region's mapping; a buffer starting the next region (which touches it in guest
    /// memory) must not be merged into it, or its bytes would go past the first mapping.
    #[test]
    fn an_empty_buffer_at_a_regions_end_is_not_grown_into_the_next_region() {
        let mem = two_touching_regions();
        for (first, second) in [(W, W), (0, 0)] {
            table(
                &mem,
                0,
                &[
                    (0x1000, 7, 0),
                    (0x1_0000, 0, first),
                    (0x1_0000, 0x8000, second),
                ],
            );
            let c = parse(0, &mem, GuestAddress(0), 16, Vec::new());
            assert_host_ranges(&mem, &c);
            let lens = |rs: &[Region]| rs.iter().map(|r| r.len).sum::<u32>();
            assert_eq!(lens(&c.readable) + lens(&c.writable), 7 + 0x8000);
        }
    }
}
