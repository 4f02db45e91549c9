//! [`Vhost9p`]: the virtio-9p device behind rust-vmm's `vhost-user-backend` trait.
//!
//! The device logic is [`Virtio9p`]'s, unchanged: this file only translates. The frontend's
//! ring set-up (`SET_VRING_NUM/ADDR/BASE/KICK/CALL`) is kept by the library in its own
//! `Vring`; at the first kick after a ring (re)starts, its state is handed to the device
//! ([`Virtio9p::start_queue`]), and `GET_VRING_BASE` hands it back
//! ([`Virtio9p::stop_queue`]: only once no request of the ring still touches guest memory).
//! A new memory table replaces the device's memory; the call eventfd is its interrupt.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost_user_backend::{VhostUserBackend, VringRwLock, VringT};
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    EventConsumer, EventFlag, EventNotifier, new_event_consumer_and_notifier,
};

use crate::co::Executor;
use crate::co::sync::LockExt;
use crate::fs::Filesystem;
use crate::transport::virtio::{DEVICE_FEATURES, Stopped, Virtio9p};

/// The one request queue's index (a kick on it is device event 0).
const REQUEST_QUEUE: u16 = 0;

/// Protocol features offered: the configuration space (GET_CONFIG: a generic frontend does
/// not know 9p's), acknowledged requests, memory slots added one at a time, device reset,
/// and the queue count (MQ), which generic frontends ask for.
pub fn protocol_features() -> VhostUserProtocolFeatures {
    VhostUserProtocolFeatures::CONFIG
        | VhostUserProtocolFeatures::MQ
        | VhostUserProtocolFeatures::REPLY_ACK
        | VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS
        | VhostUserProtocolFeatures::RESET_DEVICE
}

/// The vhost-user face of one [`Virtio9p`] device, for one frontend connection.
pub struct Vhost9p<F: Filesystem, E: Executor> {
    device: Arc<Virtio9p<F, E>>,
    ex: E,
    max_queue_size: u16,
    /// How long `GET_VRING_BASE` waits for running requests before it resets the device.
    stop_timeout: Duration,
    state: Mutex<State>,
}

/// What the frontend has told the backend so far.
#[derive(Default)]
struct State {
    /// The driver's features, without the vhost-user protocol bit.
    acked: u64,
    mem: Option<GuestMemoryAtomic<GuestMemoryMmap>>,
    /// Exit eventfds handed to the library's ring workers (see `exit_event`).
    exit_fds: Vec<RawFd>,
    /// The request ring, once a kick has started the device on it (kept to give its
    /// indices back when it stops). `None`: the next kick starts the device.
    running: Option<VringRwLock>,
}

impl<F: Filesystem, E: Executor> Vhost9p<F, E> {
    /// A backend serving `device`, whose queue may be up to `max_queue_size` entries (the
    /// device's own limit: [`DeviceConfig::queue_max_size`](crate::transport::virtio::DeviceConfig)).
    pub fn new(
        device: Arc<Virtio9p<F, E>>,
        ex: E,
        max_queue_size: u16,
        stop_timeout: Duration,
    ) -> Self {
        Vhost9p {
            device,
            ex,
            max_queue_size,
            stop_timeout,
            state: Mutex::new(State::default()),
        }
    }

    /// The device behind this backend.
    pub fn device(&self) -> &Arc<Virtio9p<F, E>> {
        &self.device
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock_unpoisoned()
    }

    /// Forgets the frontend: the ring's eventfds and the memory table are let go (the
    /// device keeps its session until it is reset).
    pub fn disconnect(&self) {
        let mut st = self.state();
        st.running = None;
        st.mem = None;
        st.acked = 0;
    }

    /// Closes the exit eventfds given to the ring workers. Call only once the daemon that
    /// used this backend is dropped (its workers joined).
    ///
    /// vhost-user-backend 0.24 (pinned exactly in Cargo.toml for this reason) registers
    /// the consumer half with `into_raw_fd` and never closes it: without this, every
    /// frontend connection would leak one descriptor.
    pub fn close_exit_events(&self) {
        for fd in std::mem::take(&mut self.state().exit_fds) {
            // SAFETY: `fd` is the consumer eventfd made in `exit_event`, whose ownership the
            // library took with `into_raw_fd` and dropped without closing; its one user, the
            // ring worker's epoll, is gone (the daemon was dropped and its workers joined),
            // and nothing else knows the number, so this is the only close.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }

    /// Starts the device on `vring` if it is not running yet; false if it cannot run.
    fn ensure_started(&self, vring: &VringRwLock) -> bool {
        let mut st = self.state();
        if st.running.is_some() {
            return true;
        }
        let Some(mem) = st.mem.as_ref().map(|m| m.memory().into_inner()) else {
            tracing::warn!("vhost-user: a kick before any memory table; ignored");
            return false;
        };
        let ring = vring.get_ref().get_queue().state();
        let call = vring.clone();
        let notifier: crate::transport::virtio::Notifier = Arc::new(move || {
            // A frontend that closed its call eventfd takes no interrupts; nothing to do.
            let _ = call.signal_used_queue();
        });
        match self.device.start_queue(st.acked, ring, mem, notifier) {
            Ok(()) => {
                st.running = Some(vring.clone());
                true
            }
            Err(e) => {
                tracing::warn!("vhost-user: cannot start the request queue: {e}");
                false
            }
        }
    }
}

impl<F: Filesystem, E: Executor> VhostUserBackend for Vhost9p<F, E> {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        1
    }

    fn max_queue_size(&self) -> usize {
        usize::from(self.max_queue_size)
    }

    fn features(&self) -> u64 {
        DEVICE_FEATURES | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    }

    fn acked_features(&self, features: u64) {
        self.state().acked = features & DEVICE_FEATURES;
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        protocol_features()
    }

    /// The driver reset the device (a guest reboot): every request is cancelled and every
    /// fid dropped; the next kick starts a fresh session on the new driver's ring.
    fn reset_device(&self) {
        self.state().running = None;
        let latch = self.device.reset();
        if !latch.wait_timeout(self.stop_timeout) {
            tracing::warn!("vhost-user: requests of the reset device are still running");
        }
    }

    /// The ring worker's way out: the library stops it through this when the connection
    /// ends (without one, its thread would never return).
    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        let (consumer, notifier) =
            new_event_consumer_and_notifier(EventFlag::NONBLOCK | EventFlag::CLOEXEC).ok()?;
        // The library turns the consumer into a bare descriptor it never closes: remember
        // it, to close once the worker is gone (see `close_exit_events`).
        self.state().exit_fds.push(consumer.as_raw_fd());
        Some((consumer, notifier))
    }

    /// EVENT_IDX comes with the features the device is started with.
    fn set_event_idx(&self, _enabled: bool) {}

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        // Bytes past the space read as 0; the library bounds `size` (256 bytes at most).
        let mut out = vec![0u8; size.min(4096) as usize];
        self.device.read_config(u64::from(offset), &mut out);
        out
    }

    /// The configuration space is read-only: writes are ignored, as in-process.
    fn set_config(&self, _offset: u32, _buf: &[u8]) -> std::io::Result<()> {
        Ok(())
    }

    fn update_memory(&self, mem: GuestMemoryAtomic<GuestMemoryMmap>) -> std::io::Result<()> {
        let snapshot = mem.memory().into_inner();
        self.state().mem = Some(mem);
        self.device.set_memory(snapshot);
        Ok(())
    }

    /// `GET_VRING_BASE`: answered only once no request of the ring touches guest memory;
    /// the ring's indices go back into the library's vring, which reports them.
    fn stop_vring(&self, queue_index: u32) -> std::io::Result<()> {
        if queue_index != u32::from(REQUEST_QUEUE) {
            return Ok(());
        }
        let Some(vring) = self.state().running.take() else {
            return Ok(());
        };
        let ring = match self.device.stop_queue(self.stop_timeout) {
            Stopped::Drained { ring } => ring,
            Stopped::Reset { ring } => {
                tracing::warn!("vhost-user: requests still running at ring stop; device reset");
                ring
            }
            Stopped::Idle => return Ok(()),
        };
        vring.set_queue_next_avail(ring.next_avail);
        vring.set_queue_next_used(ring.next_used);
        Ok(())
    }

    fn handle_event(
        &self,
        device_event: u16,
        evset: EventSet,
        vrings: &[VringRwLock],
        _thread_id: usize,
    ) -> std::io::Result<()> {
        if evset != EventSet::IN || device_event != REQUEST_QUEUE {
            return Err(std::io::Error::other(format!(
                "unexpected event {device_event} ({evset:?})"
            )));
        }
        let Some(vring) = vrings.first() else {
            return Ok(());
        };
        if self.ensure_started(vring) {
            // Requests that need no wait run right here, on the thread that took the kick.
            self.ex.run_here(|| self.device.handle_kick());
        }
        Ok(())
    }
}
