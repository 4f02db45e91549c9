//! The reply path: one [`VirtioResponder`] per descriptor chain, writing the reply into the
//! chain's writable buffers and completing it on the used ring exactly once.
//!
//! All used-ring updates go through [`QueueCore`]'s mutex together with the reset epoch:
//! a responder whose epoch is no longer current (the device was reset after its chain was
//! popped) completes nothing and writes nothing into guest memory.

use std::io::{IoSlice, IoSliceMut};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap};

use super::guest_mem::{Region, sub_regions, write_to};
use crate::co::sync::LockExt;
use crate::protocol::{
    Errno, HEADER_LEN, PAYLOAD_HEADER_LEN, PayloadReply, Pdu, Reply, Rmessage, Tag,
    encode_payload_header,
};
use crate::server::Responder;

/// What the device calls to raise its interrupt line (the VMM's irqfd, or a test counter).
/// Why it was raised is in the device's interrupt status (see [`INT_USED`], [`INT_CONFIG`]).
pub type Notifier = Arc<dyn Fn() + Send + Sync>;

/// Interrupt status bit: the used ring was updated.
pub const INT_USED: u32 = 1;
/// Interrupt status bit: the configuration (here: the device status, NEEDS_RESET) changed.
pub const INT_CONFIG: u32 = 2;
/// Device status bit: the device hit an error and needs a reset.
pub const STATUS_NEEDS_RESET: u8 = 64;

/// The queue and everything a completion needs, behind one mutex.
pub(crate) struct QueueState {
    pub queue: Queue,
    pub mem: Option<Arc<GuestMemoryMmap>>,
    pub notifier: Option<Notifier>,
    /// Bumped by every reset: responders of an older epoch are stale.
    pub epoch: u64,
    /// Activated (DRIVER_OK with memory) and not reset since.
    pub active: bool,
    /// The queue is unusable: nothing more is popped until reset.
    pub broken: bool,
    pub status: u8,
    /// No more chains are popped (a ring being stopped); completions still land.
    pub paused: bool,
    /// Chains of this epoch popped and not yet completed.
    pub in_flight: usize,
    /// Writable-buffer vectors of finished requests, for the next chains (see
    /// [`chain::parse`](super::chain::parse)).
    pub spare: Vec<Vec<Region>>,
}

/// Spare writable-buffer vectors kept per device.
const SPARE_VECS: usize = 16;
/// Vectors larger than this (a chain of that many buffers) are not kept.
const SPARE_VEC_MAX: usize = 1024;

impl QueueState {
    fn give_spare(&mut self, mut v: Vec<Region>) {
        if self.spare.len() < SPARE_VECS && v.capacity() <= SPARE_VEC_MAX {
            v.clear();
            self.spare.push(v);
        }
    }
}

/// Shared by the device and every responder.
pub(crate) struct QueueCore {
    pub state: Mutex<QueueState>,
    pub interrupt_status: AtomicU32,
    /// Chains popped and chains completed (used entries added), over the device's life.
    pub popped: AtomicU64,
    pub completed: AtomicU64,
    /// Signalled when `in_flight` drops to 0 (a stopping ring waits for it).
    pub idle: Condvar,
}

impl QueueCore {
    pub(crate) fn new(queue: Queue) -> Self {
        QueueCore {
            state: Mutex::new(QueueState {
                queue,
                mem: None,
                notifier: None,
                epoch: 0,
                active: false,
                broken: false,
                status: 0,
                paused: false,
                in_flight: 0,
                spare: Vec::new(),
            }),
            interrupt_status: AtomicU32::new(0),
            popped: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            idle: Condvar::new(),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock_unpoisoned()
    }

    /// Marks the device as needing a reset and returns the notifier to call (after the lock
    /// is released) for the configuration-change interrupt.
    pub(crate) fn fail(&self, st: &mut QueueState) -> Option<Notifier> {
        st.broken = true;
        if st.status & STATUS_NEEDS_RESET != 0 {
            return None;
        }
        st.status |= STATUS_NEEDS_RESET;
        self.interrupt_status.fetch_or(INT_CONFIG, Ordering::AcqRel);
        st.notifier.clone()
    }

    /// Writes `bytes` at the start of `writable` and adds the used entry, if `epoch` is
    /// still current; then raises the used-buffer interrupt when the driver wants one.
    /// `payload_len` extra bytes, already in place after `bytes`, count towards the length.
    pub(crate) fn complete(
        &self,
        epoch: u64,
        head: u16,
        writable: Vec<Region>,
        bytes: &[u8],
        payload_len: u32,
    ) {
        let notify = {
            let mut st = self.lock();
            if st.epoch != epoch || !st.active {
                return;
            }
            st.in_flight = st.in_flight.saturating_sub(1);
            if st.in_flight == 0 {
                self.idle.notify_all();
            }
            let Some(mem) = st.mem.clone() else { return };
            let written = write_to(&mem, &writable, bytes);
            st.give_spare(writable);
            let len = if written == bytes.len() {
                written as u32 + payload_len
            } else {
                0
            };
            match st.queue.add_used(&*mem, head, len) {
                Ok(()) => {
                    self.completed.fetch_add(1, Ordering::Relaxed);
                    match st.queue.needs_notification(&*mem) {
                        Ok(true) => {
                            self.interrupt_status.fetch_or(INT_USED, Ordering::AcqRel);
                            st.notifier.clone()
                        }
                        Ok(false) => None,
                        Err(_) => self.fail(&mut st),
                    }
                }
                Err(_) => self.fail(&mut st),
            }
        };
        if let Some(n) = notify {
            n();
        }
    }
}

/// How one popped chain's reply reaches the guest. Dropped unsent (a flushed request, or a
/// chain that cannot be answered), it still completes the chain with a used length of 0.
pub struct VirtioResponder {
    core: Arc<QueueCore>,
    /// Keeps the guest mapping alive for as long as slices into it may exist.
    mem: Arc<GuestMemoryMmap>,
    epoch: u64,
    head: u16,
    writable: Vec<Region>,
    /// A `Twrite`'s data left in the guest's readable buffers (see
    /// [`Responder::write_data`]).
    write_data: Vec<Region>,
    done: bool,
}

impl VirtioResponder {
    pub(crate) fn new(
        core: Arc<QueueCore>,
        mem: Arc<GuestMemoryMmap>,
        epoch: u64,
        head: u16,
        writable: Vec<Region>,
    ) -> Self {
        VirtioResponder {
            core,
            mem,
            epoch,
            head,
            writable,
            write_data: Vec::new(),
            done: false,
        }
    }

    /// The guest buffers holding the data of the `Twrite` this chain carries.
    pub(crate) fn set_write_data(&mut self, regions: Vec<Region>) {
        self.write_data = regions;
    }

    fn room(&self) -> u64 {
        self.writable.iter().map(|r| u64::from(r.len)).sum()
    }

    fn finish(&mut self, bytes: &[u8], payload_len: u32) {
        self.done = true;
        let writable = std::mem::take(&mut self.writable);
        self.core
            .complete(self.epoch, self.head, writable, bytes, payload_len);
    }

    /// Sends an `Rlerror` if it fits, else completes with length 0.
    pub(crate) fn send_error(mut self, tag: Tag, ecode: Errno) {
        let reply = Pdu::new(tag, Rmessage::Lerror { ecode });
        match reply.to_bytes() {
            Ok(b) if b.len() as u64 <= self.room() => self.finish(&b, 0),
            _ => self.finish(&[], 0),
        }
    }

    fn is_current(&self) -> bool {
        let st = self.core.lock();
        st.epoch == self.epoch && st.active
    }
}

impl Responder for VirtioResponder {
    /// The writable guest memory after the 11-byte reply header, as host slices.
    fn payload(&mut self, max: usize) -> Vec<IoSliceMut<'_>> {
        let mut out = Vec::new();
        // A reset device lends out nothing more.
        if !self.is_current() {
            return out;
        }
        out.reserve(self.writable.len());
        for r in sub_regions(&self.writable, PAYLOAD_HEADER_LEN as u64, max as u64) {
            let (start, take) = (r.addr, r.len);
            if let Some(ptr) = r.host_in(&self.mem) {
                // SAFETY: as below; the range lies in one region of this responder's mapping
                // (found so by `parse` with the same mapping, or looked up now).
                let slice = unsafe { std::slice::from_raw_parts_mut(ptr, take as usize) };
                out.push(IoSliceMut::new(slice));
                continue;
            }
            for s in self.mem.get_slices(start, take as usize) {
                let Ok(s) = s else { break };
                // SAFETY: `s` was produced by the guest memory map for a range that `parse`
                // checked lies inside guest memory, and the mapping stays valid while this
                // responder lives: it holds an `Arc` of the `GuestMemoryMmap`, whose regions
                // are immutable and unmapped only when the last `Arc` goes. The slices
                // borrow `self` mutably, so they cannot outlive the responder. The guest
                // gave these buffers to the device; if it writes them concurrently, that is
                // a guest bug, and the bytes involved are plain `u8`s with no invariants,
                // read back by no one on the host.
                let slice =
                    unsafe { std::slice::from_raw_parts_mut(s.ptr_guard_mut().as_ptr(), s.len()) };
                out.push(IoSliceMut::new(slice));
            }
        }
        out
    }

    /// The `Twrite` data in the chain's readable guest buffers, as host slices.
    fn write_data(&self) -> Vec<IoSlice<'_>> {
        let mut out = Vec::new();
        if !self.is_current() {
            return out;
        }
        out.reserve(self.write_data.len());
        for r in &self.write_data {
            if let Some(ptr) = r.host_in(&self.mem) {
                // SAFETY: as in `payload`: the range lies in one region of the mapping this
                // responder keeps alive (found by `parse` or now), and the slices borrow `self`. The guest handed these
                // buffers to the device to be read; if it changes them meanwhile, the file
                // gets whichever bytes were there, as with any DMA.
                let slice = unsafe { std::slice::from_raw_parts(ptr as *const u8, r.len as usize) };
                out.push(IoSlice::new(slice));
                continue;
            }
            for s in self.mem.get_slices(r.addr, r.len as usize) {
                let Ok(s) = s else { break };
                // SAFETY: as above, for a range that crosses regions.
                let slice = unsafe { std::slice::from_raw_parts(s.ptr_guard().as_ptr(), s.len()) };
                out.push(IoSlice::new(slice));
            }
        }
        out
    }

    fn send_payload(mut self, kind: PayloadReply, tag: Tag, count: u32) {
        let room = self.room();
        if (PAYLOAD_HEADER_LEN as u64 + u64::from(count)) > room {
            // Cannot happen with counts within `payload`'s room; answer safely anyway.
            return self.send_error(tag, Errno::EMSGSIZE);
        }
        let mut hdr = [0u8; PAYLOAD_HEADER_LEN];
        if encode_payload_header(kind, tag, count, &mut hdr).is_err() {
            return self.send_error(tag, Errno::EMSGSIZE);
        }
        self.finish(&hdr, count);
    }

    fn send(mut self, reply: &Reply) {
        match reply.to_bytes() {
            Ok(b) if b.len() as u64 <= self.room() => self.finish(&b, 0),
            _ => self.send_error(reply.tag, Errno::EMSGSIZE),
        }
    }
}

impl Drop for VirtioResponder {
    fn drop(&mut self) {
        if !self.done {
            self.finish(&[], 0);
        }
    }
}

/// The size of an `Rlerror`: the least writable room that can carry any reply.
pub const MIN_REPLY_ROOM: usize = HEADER_LEN + 4;
