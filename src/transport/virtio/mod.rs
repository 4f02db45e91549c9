//! virtio-9p: the 9P2000.L device on a real split virtqueue in guest memory.
//!
//! [`Virtio9p`] is the device a VMM embeds: virtio device id 9, one request queue, features
//! `MOUNT_TAG`, `VERSION_1`, `RING_EVENT_IDX` and `INDIRECT_DESC`, and a configuration space
//! of `le16 tag_len` followed by the mount tag. Its API is transport-neutral (status,
//! features, queue set-up, [`activate`](Virtio9p::activate), [`handle_kick`](Virtio9p::handle_kick),
//! [`reset`](Virtio9p::reset)); [`mmio::MmioFront`] maps it onto the virtio-mmio (version 2)
//! register layout for a VMM with an MMIO bus, and `harness` (feature `testing`) is a virtual
//! guest (RAM plus the driver side of the virtqueue) for tests and the simulator.
//!
//! # A request's way
//!
//! A kick takes the queue lock, walks every available chain ([`chain::parse`] checks each:
//! loops, nested indirect tables, buffers outside guest memory, readable after writable),
//! and releases the lock; only then is each request read out of its readable buffers (as
//! one `Vec`, bounded by the negotiated msize) and submitted to the [`Session`]. A large
//! `Twrite` (1 KiB of data or more) is the exception: only its 23-byte header is read, and
//! the filesystem writes its data from the guest pages where they are (`IoSlice`s over
//! guest memory, no copy). Requests run concurrently on the executor
//! and complete in any order. Each reply is written into its chain's writable buffers by
//! its [`VirtioResponder`]; `Rread`/`Rreaddir` data goes straight into the guest pages
//! (the responder lends them to the filesystem as `IoSliceMut`s after the 11-byte header,
//! so the Linux client's zero-copy layout — an 11-byte header buffer then data pages — is
//! filled without an intermediate copy). Used-ring updates and interrupts are serialized by
//! the queue lock and suppressed as `RING_EVENT_IDX` asks.
//!
//! # Hostile chains
//!
//! No chain panics or spins the device. A chain that cannot be served gets an `Rlerror`
//! (`EPROTO` for a malformed chain, `EMSGSIZE` for a request larger than msize, with the
//! request's tag) when its 7-byte header is readable and 11 bytes of writable room exist,
//! and a used entry of length 0 otherwise; a request whose reply does not fit its room gets
//! `Rlerror(EMSGSIZE)`. Every chain popped is completed exactly once. When the queue itself
//! is unusable (available index more than a queue ahead, a head index out of range, rings
//! outside guest memory) the device sets `DEVICE_NEEDS_RESET`, raises a configuration
//! interrupt and pops nothing more until it is reset.
//!
//! # Reset
//!
//! [`Virtio9p::reset`] bumps an epoch under the queue lock, forgets the queue and the guest
//! memory, and closes the session (cancelling every request, dropping every fid); a reply
//! finishing later sees a stale epoch and touches neither the used ring nor guest memory.
//! One exception, by construction: an `Rread` whose filesystem read is *already copying*
//! into the lent guest pages when the reset happens finishes that copy (the pages stay
//! mapped: the responder holds the memory). A VMM that must not see that waits for the
//! latch `reset` returns, as QEMU waits for its in-flight PDUs on reset.

pub mod chain;
mod guest_mem;
mod handover;
#[cfg(feature = "testing")]
pub mod harness;
pub mod mmio;
mod request;
mod responder;
mod walk;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{GuestAddress, GuestMemoryMmap};

use crate::co::Executor;
use crate::co::sync::LockExt;
use crate::fs::Filesystem;
use crate::server::{Config, Latch, Session};

pub use handover::Stopped;
pub use responder::{
    INT_CONFIG, INT_USED, MIN_REPLY_ROOM, Notifier, STATUS_NEEDS_RESET, VirtioResponder,
};

use responder::QueueCore;

/// virtio device id of a 9P transport.
pub const DEVICE_ID: u32 = 9;
/// Feature bit: the configuration space carries a mount tag.
pub const F_MOUNT_TAG: u64 = 1; // bit 0
/// Feature bit: indirect descriptor tables.
pub const F_INDIRECT_DESC: u64 = 1 << 28;
/// Feature bit: `used_event`/`avail_event` notification suppression.
pub const F_RING_EVENT_IDX: u64 = 1 << 29;
/// Feature bit: a modern (virtio 1.x) device.
pub const F_VERSION_1: u64 = 1 << 32;
/// Everything this device offers.
pub const DEVICE_FEATURES: u64 = F_MOUNT_TAG | F_INDIRECT_DESC | F_RING_EVENT_IDX | F_VERSION_1;

/// Device status bits (virtio spec 2.1).
pub const STATUS_ACKNOWLEDGE: u8 = 1;
/// Device status bit: the driver knows how to drive the device.
pub const STATUS_DRIVER: u8 = 2;
/// Device status bit: the driver is ready.
pub const STATUS_DRIVER_OK: u8 = 4;
/// Device status bit: feature negotiation is done.
pub const STATUS_FEATURES_OK: u8 = 8;
/// Device status bit: the driver gave up.
pub const STATUS_FAILED: u8 = 128;

/// The queue size offered when none is configured (QEMU's virtio-9p uses 128 too).
pub const DEFAULT_QUEUE_SIZE: u16 = 128;

/// How to build a [`Virtio9p`].
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// The mount tag the guest mounts (`mount -t 9p TAG /mnt -o trans=virtio`): 1 to 65535
    /// bytes, not NUL-terminated on the wire.
    pub tag: Vec<u8>,
    /// The 9P server's limits (msize, fids, requests in flight). Keep `max_inflight` at
    /// least the queue size, or a full queue of requests gets `Rlerror(EAGAIN)`s.
    pub server: Config,
    /// The largest queue the driver may set up (QueueNumMax): a power of two up to 32768.
    pub queue_max_size: u16,
}

impl DeviceConfig {
    /// A configuration with mount tag `tag` and the default queue size.
    pub fn new(tag: impl Into<Vec<u8>>) -> Self {
        DeviceConfig {
            tag: tag.into(),
            server: Config::default(),
            queue_max_size: DEFAULT_QUEUE_SIZE,
        }
    }
}

/// Why a device could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    #[error("the mount tag must have 1 to 65535 bytes")]
    /// The mount tag is empty or longer than 65535 bytes.
    BadTag,
    #[error("the queue size must be a power of two from 1 to 32768")]
    /// The queue size is not a power of two from 1 to 32768.
    BadQueueSize,
}

/// Why [`Virtio9p::activate`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActivateError {
    #[error("the driver has not set DRIVER_OK after FEATURES_OK")]
    /// The driver has not finished bring-up.
    NotReady,
    #[error("the device is already active")]
    /// The device is already active.
    AlreadyActive,
    #[error("the queue is not ready or its rings are outside guest memory")]
    /// The queue is unusable.
    BadQueue,
    #[error("the driver acknowledged features the device does not offer, or not VERSION_1")]
    /// The negotiated features are unusable.
    BadFeatures,
}

/// A snapshot of the request queue's configuration, as the driver set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueConfig {
    /// Largest size the device takes.
    pub max_size: u16,
    /// Size the driver chose.
    pub size: u16,
    /// Whether the driver marked it ready.
    pub ready: bool,
    /// Guest address of the descriptor table.
    pub desc_table: u64,
    /// Guest address of the available ring.
    pub avail_ring: u64,
    /// Guest address of the used ring.
    pub used_ring: u64,
}

/// Counters for tests and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeviceStats {
    /// Chains taken from the available ring.
    pub popped: u64,
    /// Used entries added (in the current epoch or earlier ones).
    pub completed: u64,
}

/// The virtio-9p device. Cheap to share: wrap it in an `Arc` to call it from a vCPU thread
/// (MMIO accesses, kicks) while replies complete on executor threads.
pub struct Virtio9p<F: Filesystem, E: Executor> {
    core: Arc<QueueCore>,
    session: Mutex<Session<F, E, VirtioResponder>>,
    fs: Arc<F>,
    ex: E,
    server_config: Arc<Config>,
    config_space: Vec<u8>,
    driver_features: Mutex<u64>,
    /// The latch of the latest reset (see [`Self::reset_latch`]).
    last_reset: Mutex<Option<Arc<Latch>>>,
}

impl<F: Filesystem, E: Executor> Virtio9p<F, E> {
    /// A device in the reset state, exporting `fs`, running requests on `ex`.
    pub fn new(config: DeviceConfig, fs: Arc<F>, ex: E) -> Result<Self, DeviceError> {
        let tag_len = u16::try_from(config.tag.len()).map_err(|_| DeviceError::BadTag)?;
        if tag_len == 0 {
            return Err(DeviceError::BadTag);
        }
        let queue = Queue::new(config.queue_max_size).map_err(|_| DeviceError::BadQueueSize)?;
        let mut config_space = tag_len.to_le_bytes().to_vec();
        config_space.extend_from_slice(&config.tag);
        let server_config = Arc::new(config.server);
        Ok(Virtio9p {
            core: Arc::new(QueueCore::new(queue)),
            session: Mutex::new(Session::new(fs.clone(), ex.clone(), server_config.clone())),
            fs,
            ex,
            server_config,
            config_space,
            driver_features: Mutex::new(0),
            last_reset: Mutex::new(None),
        })
    }

    /// The virtio device id (9).
    pub fn device_id(&self) -> u32 {
        DEVICE_ID
    }

    /// The features the device offers.
    pub fn device_features(&self) -> u64 {
        DEVICE_FEATURES
    }

    /// The features the driver acknowledged.
    pub fn driver_features(&self) -> u64 {
        *self.driver_features.lock_unpoisoned()
    }

    /// The driver's feature acknowledgement; ignored unless the driver is negotiating
    /// (DRIVER set, FEATURES_OK not yet).
    pub fn set_driver_features(&self, features: u64) {
        let st = self.core.lock();
        if st.status & STATUS_DRIVER != 0 && st.status & STATUS_FEATURES_OK == 0 {
            self.set_acked_features(features);
        }
    }

    fn set_acked_features(&self, features: u64) {
        *self.driver_features.lock_unpoisoned() = features;
    }

    /// The configuration space: `le16 tag_len`, then the tag.
    pub fn config_space(&self) -> &[u8] {
        &self.config_space
    }

    /// Reads configuration space from `offset`; bytes beyond it read as 0.
    pub fn read_config(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = usize::try_from(offset)
                .ok()
                .and_then(|o| o.checked_add(i))
                .and_then(|o| self.config_space().get(o))
                .copied()
                .unwrap_or(0);
        }
    }

    /// The configuration space is read-only: writes are ignored.
    pub fn write_config(&self, _offset: u64, _data: &[u8]) {}

    /// The configuration generation: the space never changes, so always 0.
    pub fn config_generation(&self) -> u32 {
        0
    }

    /// The device status register.
    pub fn status(&self) -> u8 {
        self.core.lock().status
    }

    /// The driver writes the device status. 0 resets the device (see [`Self::reset`]).
    /// `FEATURES_OK` is not latched (the driver reads it back unset) if the driver acked
    /// features the device does not offer, or not `VERSION_1`; `DRIVER_OK` is not latched
    /// before `FEATURES_OK`. `NEEDS_RESET` is the device's and stays as it is. Setting
    /// `DRIVER_OK` does not start the queue: call [`Self::activate`] then (the MMIO front
    /// does).
    pub fn set_status(&self, status: u8) {
        if status == 0 {
            let _ = self.reset();
            return;
        }
        let mut st = self.core.lock();
        let old = st.status;
        let mut new = (status & !STATUS_NEEDS_RESET) | (old & STATUS_NEEDS_RESET);
        if new & STATUS_FEATURES_OK != 0 && old & STATUS_FEATURES_OK == 0 {
            let acked = self.driver_features();
            let ok = old & STATUS_DRIVER != 0
                && acked & !DEVICE_FEATURES == 0
                && acked & F_VERSION_1 != 0;
            if ok {
                st.queue.set_event_idx(acked & F_RING_EVENT_IDX != 0);
            } else {
                new &= !STATUS_FEATURES_OK;
            }
        }
        if new & STATUS_DRIVER_OK != 0 && new & STATUS_FEATURES_OK == 0 {
            new &= !STATUS_DRIVER_OK;
        }
        st.status = new;
    }

    /// The request queue's configuration.
    pub fn queue_config(&self) -> QueueConfig {
        let st = self.core.lock();
        let q = &st.queue;
        QueueConfig {
            max_size: q.max_size(),
            size: q.size(),
            ready: q.ready(),
            desc_table: q.desc_table(),
            avail_ring: q.avail_ring(),
            used_ring: q.used_ring(),
        }
    }

    /// Applies `f` to the queue while the driver may still configure it (before DRIVER_OK).
    fn configure_queue(&self, f: impl FnOnce(&mut Queue)) {
        let mut st = self.core.lock();
        if st.status & STATUS_DRIVER_OK == 0 && !st.active {
            f(&mut st.queue);
        }
    }

    /// QueueNum: ignored unless a power of two up to the maximum.
    pub fn set_queue_size(&self, size: u16) {
        self.configure_queue(|q| {
            let _ = q.try_set_size(size);
        });
    }

    /// QueueDesc: ignored unless 16-byte aligned.
    pub fn set_queue_desc_table(&self, addr: u64) {
        self.configure_queue(|q| {
            q.set_desc_table_address(Some(addr as u32), Some((addr >> 32) as u32))
        });
    }

    /// QueueDriver (the available ring): ignored unless 2-byte aligned.
    pub fn set_queue_avail_ring(&self, addr: u64) {
        self.configure_queue(|q| {
            q.set_avail_ring_address(Some(addr as u32), Some((addr >> 32) as u32))
        });
    }

    /// QueueDevice (the used ring): ignored unless 4-byte aligned.
    pub fn set_queue_used_ring(&self, addr: u64) {
        self.configure_queue(|q| {
            q.set_used_ring_address(Some(addr as u32), Some((addr >> 32) as u32))
        });
    }

    /// Marks the request queue ready or not (the driver's `QUEUE_READY` write).
    pub fn set_queue_ready(&self, ready: bool) {
        self.configure_queue(|q| q.set_ready(ready));
    }

    /// Starts the device on `mem` once the driver has set DRIVER_OK: from now on kicks are
    /// served and `notifier` raises the interrupt (for used buffers and for NEEDS_RESET).
    /// A queue that is not ready or lies outside `mem` sets NEEDS_RESET.
    pub fn activate(
        &self,
        mem: Arc<GuestMemoryMmap>,
        notifier: Notifier,
    ) -> Result<(), ActivateError> {
        let fail = {
            let mut st = self.core.lock();
            if st.active {
                return Err(ActivateError::AlreadyActive);
            }
            if st.status & STATUS_DRIVER_OK == 0 {
                return Err(ActivateError::NotReady);
            }
            st.notifier = Some(notifier);
            if !st.queue.is_valid(&*mem) {
                self.core.fail(&mut st)
            } else {
                st.mem = Some(mem);
                st.active = true;
                return Ok(());
            }
        };
        if let Some(n) = fail {
            n();
        }
        Err(ActivateError::BadQueue)
    }

    /// Whether the device is running (activated and not reset).
    pub fn is_active(&self) -> bool {
        self.core.lock().active
    }

    /// The interrupt status (bit 0: used buffers, bit 1: configuration change).
    pub fn interrupt_status(&self) -> u32 {
        self.core.interrupt_status.load(Ordering::Acquire)
    }

    /// The driver acknowledges the interrupt bits in `bits`.
    pub fn ack_interrupt(&self, bits: u32) {
        self.core
            .interrupt_status
            .fetch_and(!bits, Ordering::AcqRel);
    }

    /// Counters of the chains the device has seen.
    pub fn stats(&self) -> DeviceStats {
        DeviceStats {
            popped: self.core.popped.load(Ordering::Relaxed),
            completed: self.core.completed.load(Ordering::Relaxed),
        }
    }

    /// The current session (replaced at every reset), for inspection.
    pub fn session(&self) -> Session<F, E, VirtioResponder> {
        self.session.lock_unpoisoned().clone()
    }

    /// Resets the device (the driver wrote status 0): forgets the queue, the features and
    /// guest memory, cancels every request in flight and drops every fid. Replies of
    /// requests that finish later are discarded. The latch opens when the old session has
    /// no request left.
    pub fn reset(&self) -> Arc<Latch> {
        {
            let mut st = self.core.lock();
            st.epoch += 1;
            st.active = false;
            st.broken = false;
            st.paused = false;
            // Chains of the old epoch complete nothing now: nobody waits for them.
            st.in_flight = 0;
            self.core.idle.notify_all();
            st.status = 0;
            st.queue.reset();
            st.mem = None;
            st.notifier = None;
            *self.driver_features.lock_unpoisoned() = 0;
            self.core.interrupt_status.store(0, Ordering::Release);
        }
        let fresh = Session::new(self.fs.clone(), self.ex.clone(), self.server_config.clone());
        let old = std::mem::replace(&mut *self.session.lock_unpoisoned(), fresh);
        let latch = old.close();
        *self.last_reset.lock_unpoisoned() = Some(latch.clone());
        latch
    }

    /// The latch of the latest reset, however it came (a status write of 0 through the
    /// MMIO front, or [`Self::reset`]): it opens once every request that reset cancelled
    /// has finished, so nothing of the old session touches guest memory any more. A VMM
    /// waits on it before it unmaps the memory of a reset guest.
    pub fn reset_latch(&self) -> Option<Arc<Latch>> {
        self.last_reset.lock_unpoisoned().clone()
    }

    /// The driver notified the queue: serve every available chain. Returns at once if the
    /// device is not active or needs a reset.
    pub fn handle_kick(&self) {
        let session = self.session();
        loop {
            let mut broke = false;
            let mut notify = None;
            let (chains, mem, epoch) = {
                let mut st = self.core.lock();
                if !st.active || st.broken || st.paused {
                    return;
                }
                let Some(mem) = st.mem.clone() else { return };
                let epoch = st.epoch;
                let size = st.queue.size();
                let table = GuestAddress(st.queue.desc_table());
                let mut chains = Vec::new();
                if st.queue.disable_notification(&*mem).is_err() {
                    broke = true;
                } else {
                    let st = &mut *st;
                    match st.queue.iter(&*mem) {
                        Err(_) => broke = true,
                        Ok(mut iter) => {
                            while let Some(c) = iter.next() {
                                if c.head_index() >= size {
                                    // No used-ring slot can name it: leave it unpopped.
                                    iter.go_to_previous_position();
                                    broke = true;
                                    break;
                                }
                                let spare = st.spare.pop().unwrap_or_default();
                                chains.push(chain::parse(c.head_index(), &mem, table, size, spare));
                            }
                        }
                    }
                }
                if broke {
                    notify = self.core.fail(&mut st);
                }
                st.in_flight += chains.len();
                (chains, mem, epoch)
            };
            self.core
                .popped
                .fetch_add(chains.len() as u64, Ordering::Relaxed);
            for c in chains {
                self.dispatch(&session, &mem, epoch, c);
            }
            if broke {
                if let Some(n) = notify {
                    n();
                }
                return;
            }
            let (more, notify) = {
                let mut st = self.core.lock();
                if st.epoch != epoch || st.broken {
                    return;
                }
                match st.queue.enable_notification(&*mem) {
                    Ok(more) => (more, None),
                    Err(_) => (false, self.core.fail(&mut st)),
                }
            };
            if let Some(n) = notify {
                n();
            }
            if !more {
                return;
            }
        }
    }
}
