//! Virtual hardware for tests and simulation: a guest with RAM and the *driver* side of
//! the split virtqueue, talking to a device only through its MMIO registers and the rings
//! in guest memory, as a guest kernel would. No threads, no clock: the caller runs the
//! device's executor between [`VirtualGuest::kick`] and [`VirtualGuest::poll_used`].
//!
//! - [`GuestRam`]: guest memory (`GuestMemoryMmap`) with a page allocator for buffers.
//! - [`IrqLine`]: the interrupt line; counts how often the device raised it.
//! - [`VirtualGuest`]: brings the device up through the registers ([`VirtualGuest::boot`]:
//!   reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK read back, queue set-up, DRIVER_OK),
//!   sends requests as descriptor chains laid out as Linux's 9pnet_virtio does
//!   ([`Layout`]; optionally through an indirect table), kicks, and collects replies from
//!   the used ring. [`VirtualGuest::inject`] and friends put raw, hostile chains and ring
//!   indices in front of the device.
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use co9p::transport::virtio::{DeviceConfig, Virtio9p, harness::*};
//! # fn demo<F: co9p::fs::Filesystem>(fs: Arc<F>) {
//! let pool = co9p::co::ThreadPool::new(0);
//! let dev = Arc::new(Virtio9p::new(DeviceConfig::new("share"), fs, pool.handle()).unwrap());
//! let mut guest = VirtualGuest::with_device(dev, 16 << 20);
//! guest.boot(&BootOptions::default()).unwrap();
//! # }
//! ```

mod queue;
mod ram;

pub use queue::{Completion, Layout, RawDesc};
pub use ram::{GuestRam, PAGE};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use virtio_queue::QueueState;

use super::mmio::{self, MmioDevice, MmioFront};
use super::{
    DEVICE_FEATURES, Notifier, STATUS_ACKNOWLEDGE, STATUS_DRIVER, STATUS_DRIVER_OK, STATUS_FAILED,
    STATUS_FEATURES_OK, Virtio9p,
};
use crate::co::Executor;
use crate::fs::Filesystem;
use queue::DriverQueue;

/// The device's interrupt line, as the guest sees it.
#[derive(Default)]
pub struct IrqLine {
    raised: AtomicU64,
}

impl IrqLine {
    /// A line that has not been raised.
    pub fn new() -> Arc<Self> {
        Arc::new(IrqLine::default())
    }

    /// The callback to give the device.
    pub fn notifier(self: &Arc<Self>) -> Notifier {
        let me = self.clone();
        Arc::new(move || {
            me.raised.fetch_add(1, Ordering::AcqRel);
        })
    }

    /// How many times the device raised the line.
    pub fn count(&self) -> u64 {
        self.raised.load(Ordering::Acquire)
    }
}

/// How [`VirtualGuest::boot`] sets the device up.
#[derive(Debug, Clone)]
pub struct BootOptions {
    /// Features the driver wants; it acks those the device offers (plus `extra_features`).
    pub features: u64,
    /// Acked even if the device does not offer them (to test FEATURES_OK refusal).
    pub extra_features: u64,
    /// The queue size to set (at most QueueNumMax).
    pub queue_size: u16,
}

impl Default for BootOptions {
    fn default() -> Self {
        BootOptions {
            features: DEVICE_FEATURES,
            extra_features: 0,
            queue_size: 128,
        }
    }
}

/// Why [`VirtualGuest::boot`] failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootError {
    /// The magic register does not say "virt".
    NotVirtio,
    /// The device did not latch FEATURES_OK.
    FeaturesRefused,
    /// QueueNumMax is 0 or smaller than the requested size.
    QueueTooSmall(u32),
    /// The device set NEEDS_RESET (or refused DRIVER_OK) at activation.
    DeviceFailed(u8),
    /// Guest RAM has no room for the rings.
    OutOfRam,
}

/// A guest driving one virtio-9p device through MMIO registers and guest RAM.
pub struct VirtualGuest<D: MmioDevice> {
    /// The device, behind its MMIO registers.
    pub dev: D,
    /// The guest's memory.
    pub ram: GuestRam,
    /// The device's interrupt line.
    pub irq: Arc<IrqLine>,
    queue: Option<DriverQueue>,
    features: u64,
}

impl<F: Filesystem, E: Executor> VirtualGuest<MmioFront<F, E>> {
    /// Guest RAM of `ram_size` bytes and an MMIO front for `device` wired to it.
    pub fn with_device(device: Arc<Virtio9p<F, E>>, ram_size: usize) -> Self {
        let ram = GuestRam::new(ram_size);
        let irq = IrqLine::new();
        let front = MmioFront::new(device, ram.memory().clone(), irq.notifier());
        VirtualGuest::new(front, ram, irq)
    }

    /// The virtio-9p device.
    pub fn device(&self) -> &Arc<Virtio9p<F, E>> {
        self.dev.device()
    }

    /// Moves guest RAM to a new host mapping with the same contents ([`GuestRam::remap`])
    /// and gives it to the device, as vhost-user's SET_MEM_TABLE does. The MMIO front keeps
    /// activating the device on the memory it was built with: after a reboot, call
    /// [`Self::resync_memory`].
    pub fn remap_memory(&mut self) {
        let mem = self.ram.remap();
        self.device().set_memory(mem);
    }

    /// Gives the device the guest's current RAM mapping (after a boot that activated it on
    /// the front's).
    pub fn resync_memory(&self) {
        self.device().set_memory(self.ram.memory().clone());
    }
}

impl<D: MmioDevice> VirtualGuest<D> {
    /// A guest for `dev`, whose front must use `ram`'s memory and `irq`'s notifier.
    pub fn new(dev: D, ram: GuestRam, irq: Arc<IrqLine>) -> Self {
        VirtualGuest {
            dev,
            ram,
            irq,
            queue: None,
            features: 0,
        }
    }

    /// Reads the 32-bit register at `offset`.
    pub fn read32(&self, offset: u64) -> u32 {
        let mut b = [0u8; 4];
        self.dev.read(offset, &mut b);
        u32::from_le_bytes(b)
    }

    /// Writes the 32-bit register at `offset`.
    pub fn write32(&self, offset: u64, v: u32) {
        self.dev.write(offset, &v.to_le_bytes());
    }

    /// The device status register.
    pub fn status(&self) -> u8 {
        self.read32(mmio::STATUS) as u8
    }

    /// Writes the device status register.
    pub fn set_status(&self, s: u8) {
        self.write32(mmio::STATUS, u32::from(s));
    }

    /// Reads `len` bytes of configuration space from `offset`, a byte at a time.
    pub fn read_config(&self, offset: u64, len: usize) -> Vec<u8> {
        (0..len as u64)
            .map(|i| {
                let mut b = [0u8];
                self.dev.read(mmio::CONFIG + offset + i, &mut b);
                b[0]
            })
            .collect()
    }

    /// The mount tag, as Linux reads it: `le16 tag_len` then the bytes.
    pub fn mount_tag(&self) -> Vec<u8> {
        let len = self.read_config(0, 2);
        let len = u16::from_le_bytes([len[0], len[1]]);
        self.read_config(2, len as usize)
    }

    /// The 64 feature bits the device offers, read word by word.
    pub fn device_features(&self) -> u64 {
        self.write32(mmio::DEVICE_FEATURES_SEL, 0);
        let lo = self.read32(mmio::DEVICE_FEATURES);
        self.write32(mmio::DEVICE_FEATURES_SEL, 1);
        let hi = self.read32(mmio::DEVICE_FEATURES);
        u64::from(lo) | (u64::from(hi) << 32)
    }

    /// Acknowledges the feature bits `f`, word by word.
    pub fn write_driver_features(&self, f: u64) {
        self.write32(mmio::DRIVER_FEATURES_SEL, 0);
        self.write32(mmio::DRIVER_FEATURES, f as u32);
        self.write32(mmio::DRIVER_FEATURES_SEL, 1);
        self.write32(mmio::DRIVER_FEATURES, (f >> 32) as u32);
    }

    /// The features both sides agreed on at the last boot.
    pub fn features(&self) -> u64 {
        self.features
    }

    /// Brings the device up the way a virtio-mmio driver does (virtio 1.2 §3.1.1 and
    /// §4.2.3.2), laying the queue out in guest RAM. Any queue of an earlier boot is
    /// forgotten (its buffers stay allocated).
    pub fn boot(&mut self, opts: &BootOptions) -> Result<u64, BootError> {
        if self.read32(mmio::MAGIC_VALUE) != mmio::MAGIC
            || self.read32(mmio::VERSION) != 2
            || self.read32(mmio::DEVICE_ID) != super::DEVICE_ID
        {
            return Err(BootError::NotVirtio);
        }
        self.queue = None;
        // The status reads back as written (virtio 1.x: only the device's NEEDS_RESET and a
        // refused FEATURES_OK may differ, and neither applies to these steps).
        for status in [0, STATUS_ACKNOWLEDGE, STATUS_ACKNOWLEDGE | STATUS_DRIVER] {
            self.set_status(status);
            if self.status() != status {
                return Err(BootError::DeviceFailed(self.status()));
            }
        }
        let offered = self.device_features();
        let acked = (offered & opts.features) | opts.extra_features;
        self.write_driver_features(acked);
        self.set_status(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
        if self.status() & STATUS_FEATURES_OK == 0 {
            self.set_status(self.status() | STATUS_FAILED);
            return Err(BootError::FeaturesRefused);
        }
        self.write32(mmio::QUEUE_SEL, 0);
        if self.read32(mmio::QUEUE_READY) != 0 {
            return Err(BootError::DeviceFailed(self.status()));
        }
        let max = self.read32(mmio::QUEUE_NUM_MAX);
        if max == 0 || max < u32::from(opts.queue_size) {
            return Err(BootError::QueueTooSmall(max));
        }
        let q = DriverQueue::new(
            &mut self.ram,
            opts.queue_size,
            acked & super::F_RING_EVENT_IDX != 0,
        )
        .ok_or(BootError::OutOfRam)?;
        self.write32(mmio::QUEUE_NUM, u32::from(opts.queue_size));
        let regs = [
            (mmio::QUEUE_DESC_LOW, q.desc.0),
            (mmio::QUEUE_DRIVER_LOW, q.avail.0),
            (mmio::QUEUE_DEVICE_LOW, q.used.0),
        ];
        for (reg, addr) in regs {
            self.write32(reg, addr as u32);
            self.write32(reg + 4, (addr >> 32) as u32);
        }
        self.write32(mmio::QUEUE_READY, 1);
        self.set_status(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK);
        let s = self.status();
        if s != STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK {
            return Err(BootError::DeviceFailed(s));
        }
        self.queue = Some(q);
        self.features = acked;
        Ok(acked)
    }

    /// Resets the device (status 0) and forgets the queue; buffers of chains still in
    /// flight are freed.
    pub fn reset(&mut self) {
        self.set_status(0);
        self.forget_queue();
    }

    /// Forgets the queue without touching the device (a vhost-user frontend tells the
    /// device otherwise): its rings and the buffers of chains still in flight are freed.
    pub fn forget_queue(&mut self) {
        if let Some(q) = self.queue.take() {
            q.release(&mut self.ram);
        }
    }

    /// Lays a fresh ring of `size` out in guest RAM for a device that is handed it whole
    /// (vhost-user's `SET_VRING_*`, [`Virtio9p::start_queue`]) rather than set up through
    /// its registers, with `features` agreed; returns it as [`Self::ring`] does. Any queue
    /// of an earlier boot is forgotten (its buffers stay allocated).
    pub fn lay_out_ring(&mut self, size: u16, features: u64) -> Option<QueueState> {
        let q = DriverQueue::new(&mut self.ram, size, features & super::F_RING_EVENT_IDX != 0)?;
        self.queue = Some(q);
        self.features = features;
        self.ring()
    }

    /// The driver's ring as a vhost-user frontend hands it over: its size and addresses,
    /// `next_avail` at the chains the driver has published and `next_used` at the used
    /// ring's index in guest RAM; `ready` and `event_idx_enabled` as the driver set them
    /// up, `max_size` its size. `None` before a boot.
    pub fn ring(&self) -> Option<QueueState> {
        use vm_memory::{Bytes, GuestAddress};
        let q = self.queue.as_ref()?;
        let used: u16 = self
            .ram
            .memory()
            .read_obj(GuestAddress(q.used.0 + 2))
            .map(u16::from_le)
            .unwrap_or(0);
        Some(QueueState {
            max_size: q.size,
            next_avail: q.published(),
            next_used: used,
            event_idx_enabled: self.features & super::F_RING_EVENT_IDX != 0,
            size: q.size,
            ready: true,
            desc_table: q.desc.0,
            avail_ring: q.avail.0,
            used_ring: q.used.0,
        })
    }

    fn q(&mut self) -> &mut DriverQueue {
        self.queue.as_mut().expect("boot the guest first")
    }

    /// Sends `frame` as one chain in `layout` (through an indirect table if `indirect`),
    /// without kicking. Returns the head index, or `None` if descriptors or RAM ran out.
    pub fn submit(&mut self, frame: &[u8], layout: Layout, indirect: bool) -> Option<u16> {
        let q = self.queue.as_mut().expect("boot the guest first");
        q.submit(&mut self.ram, frame, layout, indirect)
    }

    /// Puts raw descriptors in front of the device (see [`RawDesc`]); no buffers are
    /// allocated or freed for them. Returns the head index.
    pub fn inject(&mut self, descs: &[RawDesc]) -> Option<u16> {
        let q = self.queue.as_mut().expect("boot the guest first");
        q.inject(&self.ram, descs)
    }

    /// Writes raw descriptors as an indirect table in fresh RAM; returns its address and
    /// byte length, for a [`RawDesc::indirect`].
    pub fn indirect_table(&mut self, descs: &[RawDesc]) -> Option<(u64, u32)> {
        let q = self.queue.as_mut().expect("boot the guest first");
        q.raw_table(&mut self.ram, descs)
    }

    /// Publishes an arbitrary head index in the available ring (hostile).
    pub fn push_avail_raw(&mut self, head: u16) {
        let ram = self.ram.memory().clone();
        self.q().publish(&ram, head);
    }

    /// Overwrites the available ring's index (hostile: e.g. more than a queue ahead).
    pub fn set_avail_idx_raw(&mut self, idx: u16) {
        let ram = self.ram.memory().clone();
        self.q().set_avail_idx(&ram, idx);
    }

    /// Allocates a buffer in guest RAM (for raw chains).
    pub fn alloc(&mut self, len: u64) -> Option<u64> {
        self.ram.alloc(len).map(|a| a.0)
    }

    /// Frees a buffer [`Self::alloc`] gave for `len` bytes.
    pub fn free(&mut self, addr: u64, len: u64) {
        self.ram.free(vm_memory::GuestAddress(addr), len);
    }

    /// Writes bytes into guest RAM.
    pub fn write_ram(&self, addr: u64, data: &[u8]) {
        use vm_memory::{Bytes, GuestAddress};
        let _ = self.ram.memory().write_slice(data, GuestAddress(addr));
    }

    /// Reads bytes from guest RAM (zeros where there is none).
    pub fn read_ram(&self, addr: u64, len: usize) -> Vec<u8> {
        use vm_memory::{Bytes, GuestAddress};
        let mut v = vec![0u8; len];
        let _ = self.ram.memory().read_slice(&mut v, GuestAddress(addr));
        v
    }

    /// Notifies the queue (QueueNotify = 0).
    pub fn kick(&mut self) {
        self.write32(mmio::QUEUE_NOTIFY, 0);
    }

    /// Whether the device asked to be notified about what was published since the last
    /// call (`avail_event` with RING_EVENT_IDX, else the used ring's NO_NOTIFY flag).
    pub fn needs_kick(&mut self) -> bool {
        let ram = self.ram.memory().clone();
        self.q().needs_kick(&ram)
    }

    /// Reads and acknowledges the interrupt status.
    pub fn take_interrupt(&self) -> u32 {
        let s = self.read32(mmio::INTERRUPT_STATUS);
        if s != 0 {
            self.write32(mmio::INTERRUPT_ACK, s);
        }
        s
    }

    /// New used entries, each with the reply bytes read back from its writable buffers;
    /// their descriptors and buffers are freed.
    pub fn poll_used(&mut self) -> Vec<Completion> {
        let Some(q) = self.queue.as_mut() else {
            return Vec::new();
        };
        q.poll_used(&mut self.ram)
    }

    /// Whether [`Self::poll_used`] copies reply bytes out of guest RAM (default: yes).
    /// Benchmarks turn it off to time the device, not the guest reading its replies.
    pub fn set_copy_replies(&mut self, copy: bool) {
        if let Some(q) = self.queue.as_mut() {
            q.copy_replies = copy;
        }
    }

    /// Chains submitted or injected and not yet seen in the used ring.
    pub fn in_flight(&self) -> usize {
        self.queue.as_ref().map_or(0, |q| q.in_flight())
    }

    /// Used entries that named no chain in flight (a duplicate or invented completion).
    pub fn unexpected_used(&self) -> u64 {
        self.queue.as_ref().map_or(0, |q| q.unexpected)
    }

    /// Free descriptor slots.
    pub fn free_descriptors(&self) -> usize {
        self.queue.as_ref().map_or(0, |q| q.free_descriptors())
    }
}
