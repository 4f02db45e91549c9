//! The driver side of a split virtqueue laid out in guest RAM.

use std::collections::BTreeMap;
use std::sync::atomic::{Ordering, fence};

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::ram::{GuestRam, PAGE};
use crate::protocol::PAYLOAD_HEADER_LEN;

const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
const F_INDIRECT: u16 = 4;

/// One descriptor exactly as it will be written, for hostile chains.
///
/// In [`super::VirtualGuest::inject`], a `next` that indexes the slice passed (with `NEXT`
/// set) is translated to that descriptor's slot in the table; any other `next` (e.g.
/// `0xffff`) is written as is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawDesc {
    /// The buffer's guest address.
    pub addr: u64,
    /// Its length.
    pub len: u32,
    /// `NEXT`, `WRITE`, `INDIRECT`.
    pub flags: u16,
    /// The next descriptor's index, with `NEXT`.
    pub next: u16,
}

impl RawDesc {
    /// `VRING_DESC_F_NEXT`: the chain goes on at `next`.
    pub const NEXT: u16 = F_NEXT;
    /// `VRING_DESC_F_WRITE`: the device writes the buffer.
    pub const WRITE: u16 = F_WRITE;
    /// `VRING_DESC_F_INDIRECT`: the buffer is a table of descriptors.
    pub const INDIRECT: u16 = F_INDIRECT;

    /// A device-readable buffer.
    pub fn readable(addr: u64, len: u32) -> Self {
        RawDesc {
            addr,
            len,
            flags: 0,
            next: 0,
        }
    }

    /// A device-writable buffer.
    pub fn writable(addr: u64, len: u32) -> Self {
        RawDesc {
            addr,
            len,
            flags: F_WRITE,
            next: 0,
        }
    }

    /// A descriptor pointing at an indirect table of `len` bytes.
    pub fn indirect(addr: u64, len: u32) -> Self {
        RawDesc {
            addr,
            len,
            flags: F_INDIRECT,
            next: 0,
        }
    }

    /// Chains to descriptor `next` (sets `NEXT`).
    pub fn then(mut self, next: u16) -> Self {
        self.flags |= F_NEXT;
        self.next = next;
        self
    }

    fn bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.addr.to_le_bytes());
        b[8..12].copy_from_slice(&self.len.to_le_bytes());
        b[12..14].copy_from_slice(&self.flags.to_le_bytes());
        b[14..].copy_from_slice(&self.next.to_le_bytes());
        b
    }
}

/// How a request is laid out in a chain, after Linux's `net/9p/trans_virtio.c`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One readable buffer with the request, one writable buffer of `room` bytes (Linux
    /// gives msize).
    Plain {
        /// Bytes of room for the reply.
        room: u32,
    },
    /// Zero-copy `Tread`/`Treaddir`: the request readable; an 11-byte writable buffer for
    /// the reply header, then a `data`-byte buffer as one writable descriptor per page.
    ZeroCopyRead {
        /// Bytes of data asked for.
        data: u32,
        /// 0: the data buffer is page-aligned and contiguous (a kernel buffer). Otherwise
        /// it is laid out as a user buffer Linux pins: it begins `skew` bytes (modulo the
        /// page size) into its first page, so its first descriptor holds a page less
        /// `skew` bytes at most, and its pages lie apart in guest memory, so the device
        /// cannot merge them and a reply's data crosses from one buffer to the next.
        skew: u32,
    },
    /// Any message scattered over buffers of arbitrary sizes, as a driver may lay out any
    /// chain (a device must not assume the framing of a message from its descriptors,
    /// virtio 1.2 §2.7.4): the request in two readable buffers, cut `read_cut` bytes in
    /// (in one when that is not inside it), and `room` writable bytes in buffers of
    /// `write_cuts` bytes each, then the rest (zero sizes are skipped).
    Split {
        /// Where the request is cut.
        read_cut: u32,
        /// Sizes of the first writable buffers.
        write_cuts: [u32; 3],
        /// Bytes of room for the reply, in all.
        room: u32,
    },
    /// Zero-copy `Twrite`: the first `header` bytes of the request in one readable buffer,
    /// the rest in readable pages, one descriptor each; `room` writable bytes.
    ZeroCopyWrite {
        /// Bytes of the request before its data.
        header: u32,
        /// Bytes of room for the reply.
        room: u32,
        /// The data pages lie apart in guest memory (every other page), as a user buffer's
        /// pinned pages usually do, so the device gets the data in several slices; else
        /// they follow one another and the device may take them as one.
        apart: bool,
    },
}

/// One used-ring entry as the guest collects it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The head descriptor of the completed chain.
    pub head: u16,
    /// The length the device reported.
    pub len: u32,
    /// The first `len` bytes of the chain's writable buffers (empty for injected chains
    /// whose buffers are in an indirect table).
    pub reply: Vec<u8>,
}

struct Pending {
    slots: Vec<u16>,
    allocs: Vec<(GuestAddress, u64)>,
    writable: Vec<(u64, u32)>,
}

pub(super) struct DriverQueue {
    pub size: u16,
    pub desc: GuestAddress,
    pub avail: GuestAddress,
    pub used: GuestAddress,
    rings: Vec<(GuestAddress, u64)>,
    free: Vec<u16>,
    avail_idx: u16,
    kicked_at: u16,
    used_seen: u16,
    event_idx: bool,
    pending: BTreeMap<u16, Pending>,
    pub unexpected: u64,
    pub copy_replies: bool,
}

impl DriverQueue {
    pub(super) fn new(ram: &mut GuestRam, size: u16, event_idx: bool) -> Option<Self> {
        let n = u64::from(size);
        let lens = [16 * n, 6 + 2 * n, 6 + 8 * n];
        let mut rings = Vec::new();
        for len in lens {
            let Some(a) = ram.alloc(len) else {
                for (a, l) in rings {
                    ram.free(a, l);
                }
                return None;
            };
            let _ = ram.memory().write_slice(&vec![0u8; len as usize], a);
            rings.push((a, len));
        }
        Some(DriverQueue {
            size,
            desc: rings[0].0,
            avail: rings[1].0,
            used: rings[2].0,
            rings,
            free: (0..size).rev().collect(),
            avail_idx: 0,
            kicked_at: 0,
            used_seen: 0,
            event_idx,
            pending: BTreeMap::new(),
            unexpected: 0,
            copy_replies: true,
        })
    }

    /// The avail ring's index: how many chains the driver has published.
    pub(super) fn published(&self) -> u16 {
        self.avail_idx
    }

    pub(super) fn in_flight(&self) -> usize {
        self.pending.len()
    }

    pub(super) fn free_descriptors(&self) -> usize {
        self.free.len()
    }

    /// Frees the rings and every buffer still in flight.
    pub(super) fn release(self, ram: &mut GuestRam) {
        for p in self.pending.into_values() {
            for (a, l) in p.allocs {
                ram.free(a, l);
            }
        }
        for (a, l) in self.rings {
            ram.free(a, l);
        }
    }

    fn write_desc(mem: &GuestMemoryMmap, table: GuestAddress, i: u16, d: &RawDesc) {
        let _ = mem.write_slice(&d.bytes(), GuestAddress(table.0 + 16 * u64::from(i)));
    }

    /// Writes `descs[i]` into slot `slots[i]` of the table at `table`, each run of
    /// consecutive slots with one write (as a driver fills a 258-descriptor chain with one
    /// 4 KiB store burst, not 258 separate guest-memory accesses).
    fn write_descs(mem: &GuestMemoryMmap, table: GuestAddress, slots: &[u16], descs: &[RawDesc]) {
        let mut run = Vec::with_capacity(16 * descs.len());
        let mut start = 0;
        for (i, d) in descs.iter().enumerate() {
            run.extend_from_slice(&d.bytes());
            let last = i + 1 == descs.len() || slots[i + 1] != slots[i].wrapping_add(1);
            if last {
                let at = GuestAddress(table.0 + 16 * u64::from(slots[start]));
                let _ = mem.write_slice(&run, at);
                run.clear();
                start = i + 1;
            }
        }
    }

    /// Writes `descs` as a whole table at `at` (an indirect table), in one write.
    fn write_table(mem: &GuestMemoryMmap, at: GuestAddress, descs: &[RawDesc]) {
        let bytes: Vec<u8> = descs.iter().flat_map(|d| d.bytes()).collect();
        let _ = mem.write_slice(&bytes, at);
    }

    pub(super) fn publish(&mut self, mem: &GuestMemoryMmap, head: u16) {
        let slot = u64::from(self.avail_idx % self.size);
        let _ = mem.write_obj(head.to_le(), GuestAddress(self.avail.0 + 4 + 2 * slot));
        self.avail_idx = self.avail_idx.wrapping_add(1);
        fence(Ordering::SeqCst);
        let _ = mem.store(
            self.avail_idx.to_le(),
            GuestAddress(self.avail.0 + 2),
            Ordering::Release,
        );
    }

    pub(super) fn set_avail_idx(&mut self, mem: &GuestMemoryMmap, idx: u16) {
        self.avail_idx = idx;
        let _ = mem.store(
            idx.to_le(),
            GuestAddress(self.avail.0 + 2),
            Ordering::Release,
        );
    }

    pub(super) fn needs_kick(&mut self, mem: &GuestMemoryMmap) -> bool {
        fence(Ordering::SeqCst);
        let old = self.kicked_at;
        let new = self.avail_idx;
        self.kicked_at = new;
        if self.event_idx {
            let at = GuestAddress(self.used.0 + 4 + 8 * u64::from(self.size));
            let event: u16 = mem.read_obj(at).map(u16::from_le).unwrap_or(0);
            new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
        } else {
            let flags: u16 = mem.read_obj(self.used).map(u16::from_le).unwrap_or(0);
            flags & 1 == 0
        }
    }

    /// Lays `frame` out, writes the descriptors, and publishes the head.
    pub(super) fn submit(
        &mut self,
        ram: &mut GuestRam,
        frame: &[u8],
        layout: Layout,
        indirect: bool,
    ) -> Option<u16> {
        let mut allocs = Vec::new();
        let mut descs = Vec::new();
        let ok = Self::lay_out(ram, frame, layout, &mut allocs, &mut descs);
        let free_all = |ram: &mut GuestRam, allocs: &[(GuestAddress, u64)]| {
            for (a, l) in allocs {
                ram.free(*a, *l);
            }
        };
        if ok.is_none() {
            free_all(ram, &allocs);
            return None;
        }
        let n = descs.len();
        for (i, d) in descs.iter_mut().enumerate() {
            if i + 1 < n {
                *d = d.then(i as u16 + 1);
            }
        }
        let writable = descs
            .iter()
            .filter(|d| d.flags & F_WRITE != 0)
            .map(|d| (d.addr, d.len))
            .collect();
        let mem = ram.memory().clone();
        let slots = if indirect {
            let table_len = 16 * n as u64;
            let Some(table) = ram.alloc(table_len) else {
                free_all(ram, &allocs);
                return None;
            };
            allocs.push((table, table_len));
            Self::write_table(&mem, table, &descs);
            let Some(slot) = self.free.pop() else {
                free_all(ram, &allocs);
                return None;
            };
            let d = RawDesc::indirect(table.0, table_len as u32);
            Self::write_desc(&mem, self.desc, slot, &d);
            vec![slot]
        } else {
            if self.free.len() < n {
                free_all(ram, &allocs);
                return None;
            }
            let slots: Vec<u16> = (0..n).map(|_| self.free.pop().unwrap_or(0)).collect();
            for (i, d) in descs.iter_mut().enumerate() {
                if d.flags & F_NEXT != 0 {
                    d.next = slots[i + 1];
                }
            }
            Self::write_descs(&mem, self.desc, &slots, &descs);
            slots
        };
        let head = slots[0];
        self.pending.insert(
            head,
            Pending {
                slots,
                allocs,
                writable,
            },
        );
        self.publish(&mem, head);
        Some(head)
    }

    fn lay_out(
        ram: &mut GuestRam,
        frame: &[u8],
        layout: Layout,
        allocs: &mut Vec<(GuestAddress, u64)>,
        descs: &mut Vec<RawDesc>,
    ) -> Option<()> {
        let mut buf = |ram: &mut GuestRam, bytes: &[u8], len: u32, write: bool| -> Option<()> {
            let a = ram.alloc(u64::from(len))?;
            allocs.push((a, u64::from(len)));
            if !bytes.is_empty() {
                ram.memory().write_slice(bytes, a).ok()?;
            }
            descs.push(if write {
                RawDesc::writable(a.0, len)
            } else {
                RawDesc::readable(a.0, len)
            });
            Some(())
        };
        match layout {
            Layout::Plain { room } => {
                buf(ram, frame, frame.len() as u32, false)?;
                buf(ram, &[], room, true)?;
            }
            Layout::ZeroCopyRead { data, skew } => {
                buf(ram, frame, frame.len() as u32, false)?;
                buf(ram, &[], PAYLOAD_HEADER_LEN as u32, true)?;
                // The data buffer: one descriptor per page it touches. Skewed, it starts
                // `skew` bytes into its first page and takes every other page of its
                // allocation (pages apart, as a user buffer's pinned pages are).
                if data > 0 {
                    let skew = u64::from(skew) % PAGE;
                    let end = skew + u64::from(data);
                    let stride = if skew == 0 { 1 } else { 2 };
                    let len = ((end.div_ceil(PAGE) - 1) * stride + 1) * PAGE;
                    let a = ram.alloc(len)?;
                    allocs.push((a, len));
                    let mut off = skew;
                    while off < end {
                        let n = (end - off).min(PAGE - off % PAGE);
                        let at = a.0 + off / PAGE * stride * PAGE + off % PAGE;
                        descs.push(RawDesc::writable(at, n as u32));
                        off += n;
                    }
                }
            }
            Layout::Split {
                read_cut,
                write_cuts,
                room,
            } => {
                let cut = (read_cut as usize).min(frame.len());
                if cut > 0 && cut < frame.len() {
                    buf(ram, &frame[..cut], cut as u32, false)?;
                    buf(ram, &frame[cut..], (frame.len() - cut) as u32, false)?;
                } else {
                    buf(ram, frame, frame.len() as u32, false)?;
                }
                let mut left = room;
                for w in write_cuts {
                    let w = w.min(left);
                    if w > 0 {
                        buf(ram, &[], w, true)?;
                        left -= w;
                    }
                }
                if left > 0 {
                    buf(ram, &[], left, true)?;
                }
            }
            Layout::ZeroCopyWrite {
                header,
                room,
                apart,
            } => {
                let h = (header as usize).min(frame.len());
                buf(ram, &frame[..h], h as u32, false)?;
                // The reply's room first in memory (its descriptor still goes last).
                let reply = ram.alloc(u64::from(room))?;
                allocs.push((reply, u64::from(room)));
                let data = &frame[h..];
                if !data.is_empty() {
                    let pages = (data.len() as u64).div_ceil(PAGE);
                    let stride = if apart { 2 } else { 1 };
                    let len = ((pages - 1) * stride + 1) * PAGE;
                    let a = ram.alloc(len)?;
                    allocs.push((a, len));
                    for (i, chunk) in data.chunks(PAGE as usize).enumerate() {
                        let at = GuestAddress(a.0 + i as u64 * stride * PAGE);
                        ram.memory().write_slice(chunk, at).ok()?;
                        descs.push(RawDesc::readable(at.0, chunk.len() as u32));
                    }
                }
                descs.push(RawDesc::writable(reply.0, room));
            }
        }
        Some(())
    }

    /// Writes raw descriptors into free slots and publishes the first as a head.
    pub(super) fn inject(&mut self, ram: &GuestRam, descs: &[RawDesc]) -> Option<u16> {
        if descs.is_empty() || self.free.len() < descs.len() {
            return None;
        }
        let slots: Vec<u16> = (0..descs.len())
            .map(|_| self.free.pop().unwrap_or(0))
            .collect();
        let mem = ram.memory().clone();
        let table: Vec<RawDesc> = descs
            .iter()
            .map(|d| {
                let mut d = *d;
                if d.flags & F_NEXT != 0 && (d.next as usize) < descs.len() {
                    d.next = slots[d.next as usize];
                }
                d
            })
            .collect();
        Self::write_descs(&mem, self.desc, &slots, &table);
        let writable = descs
            .iter()
            .filter(|d| d.flags & (F_WRITE | F_INDIRECT) == F_WRITE)
            .map(|d| (d.addr, d.len))
            .collect();
        let head = slots[0];
        self.pending.insert(
            head,
            Pending {
                slots,
                allocs: Vec::new(),
                writable,
            },
        );
        self.publish(&mem, head);
        Some(head)
    }

    /// Writes raw descriptors as a table in fresh RAM (never freed by the queue).
    pub(super) fn raw_table(
        &mut self,
        ram: &mut GuestRam,
        descs: &[RawDesc],
    ) -> Option<(u64, u32)> {
        let len = 16 * descs.len() as u64;
        let a = ram.alloc(len)?;
        let mem = ram.memory().clone();
        Self::write_table(&mem, a, descs);
        Some((a.0, len as u32))
    }

    pub(super) fn poll_used(&mut self, ram: &mut GuestRam) -> Vec<Completion> {
        let mem = ram.memory().clone();
        let idx: u16 = mem
            .load(GuestAddress(self.used.0 + 2), Ordering::Acquire)
            .map(u16::from_le)
            .unwrap_or(self.used_seen);
        let mut out = Vec::new();
        while self.used_seen != idx {
            let slot = u64::from(self.used_seen % self.size);
            let at = GuestAddress(self.used.0 + 4 + 8 * slot);
            let mut elem = [0u8; 8];
            let _ = mem.read_slice(&mut elem, at);
            self.used_seen = self.used_seen.wrapping_add(1);
            let id = u32::from_le_bytes([elem[0], elem[1], elem[2], elem[3]]);
            let len = u32::from_le_bytes([elem[4], elem[5], elem[6], elem[7]]);
            let Some(p) = u16::try_from(id).ok().and_then(|h| self.pending.remove(&h)) else {
                self.unexpected += 1;
                continue;
            };
            let mut reply = Vec::new();
            let mut left = if self.copy_replies { len as usize } else { 0 };
            for &(addr, room) in &p.writable {
                if left == 0 {
                    break;
                }
                let n = left.min(room as usize);
                let start = reply.len();
                reply.resize(start + n, 0);
                if mem
                    .read_slice(&mut reply[start..], GuestAddress(addr))
                    .is_err()
                {
                    reply.truncate(start);
                    break;
                }
                left -= n;
            }
            for (a, l) in p.allocs {
                ram.free(a, l);
            }
            self.free.extend(p.slots.iter().rev());
            out.push(Completion {
                head: id as u16,
                len,
                reply,
            });
        }
        if self.event_idx {
            // used_event: interrupt me once the device passes what I have seen.
            let at = GuestAddress(self.avail.0 + 4 + 2 * u64::from(self.size));
            let _ = mem.store(self.used_seen.to_le(), at, Ordering::Release);
        }
        out
    }
}
