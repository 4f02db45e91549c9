//! Handing the ring over whole, for a transport whose driver side does not set the queue up
//! register by register: vhost-user's frontend hands the device a ring's addresses, size and
//! indices (and the driver's features) in a few messages, takes the ring back when it stops
//! it (`GET_VRING_BASE`), and may replace the guest memory table while the device runs.
//!
//! The same device core serves both ways in: [`Virtio9p::start_queue`] is
//! `FEATURES_OK` + queue set-up + `DRIVER_OK` + [`Virtio9p::activate`] in one step, and
//! [`Virtio9p::stop_queue`] is the inverse that keeps the session (a ring stopped and
//! restarted keeps its fids, as a vhost device keeps its state across a stop).

use std::sync::Arc;
use std::time::Duration;

use virtio_queue::{Queue, QueueState, QueueT};
use vm_memory::GuestMemoryMmap;

use super::{
    ActivateError, DEVICE_FEATURES, F_RING_EVENT_IDX, F_VERSION_1, Notifier, STATUS_ACKNOWLEDGE,
    STATUS_DRIVER, STATUS_DRIVER_OK, STATUS_FEATURES_OK, Virtio9p,
};
use crate::co::Executor;
use crate::fs::Filesystem;

/// How a [`Virtio9p::stop_queue`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Every chain popped had been completed: the ring is the driver's again, and `ring`
    /// holds the indices to resume from.
    Drained {
        /// Where the driver's ring stands.
        ring: QueueState,
    },
    /// Requests were still running when the time ran out: the device was reset (their
    /// chains will never be completed, and nothing of them touches guest memory any more,
    /// but for a read already copying, see [`Virtio9p::reset`]).
    Reset {
        /// Where the driver's ring stands.
        ring: QueueState,
    },
    /// The queue was not running.
    Idle,
}

impl<F: Filesystem, E: Executor> Virtio9p<F, E> {
    /// Starts the device with a ring handed over whole: the driver's acknowledged
    /// `features` (refused as `FEATURES_OK` would refuse them), the ring's `state`
    /// (addresses, size, `next_avail`, `next_used`; its `max_size` and `event_idx_enabled`
    /// are the device's and the features' to decide), guest memory and the interrupt.
    ///
    /// Works on a reset device, and on one whose ring [`Self::stop_queue`] stopped: then
    /// the session, its fids and the negotiated msize carry over.
    pub fn start_queue(
        &self,
        features: u64,
        state: QueueState,
        mem: Arc<GuestMemoryMmap>,
        notifier: Notifier,
    ) -> Result<(), ActivateError> {
        if features & !DEVICE_FEATURES != 0 || features & F_VERSION_1 == 0 {
            return Err(ActivateError::BadFeatures);
        }
        let fail = {
            let mut st = self.core.lock();
            if st.active && !st.paused {
                return Err(ActivateError::AlreadyActive);
            }
            let state = QueueState {
                max_size: st.queue.max_size(),
                event_idx_enabled: features & F_RING_EVENT_IDX != 0,
                ready: true,
                ..state
            };
            let queue = Queue::try_from(state).map_err(|_| ActivateError::BadQueue)?;
            self.set_acked_features(features);
            st.status = STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK;
            st.notifier = Some(notifier);
            st.queue = queue;
            st.paused = false;
            if st.queue.is_valid(&*mem) {
                st.mem = Some(mem);
                st.active = true;
                return Ok(());
            }
            self.core.fail(&mut st)
        };
        if let Some(n) = fail {
            n();
        }
        Err(ActivateError::BadQueue)
    }

    /// Stops popping chains and waits, up to `timeout`, until every chain already popped
    /// has been completed: from then on nothing of this device touches guest memory or the
    /// ring until [`Self::start_queue`]. Returns the ring's state to resume from. A request
    /// still running when the time runs out (a filesystem call that hangs) resets the
    /// device rather than let it write into a ring the driver has taken back.
    pub fn stop_queue(&self, timeout: Duration) -> Stopped {
        let ring = {
            let mut st = self.core.lock();
            if !st.active {
                return Stopped::Idle;
            }
            st.paused = true;
            let (st, waited) = self
                .core
                .idle
                .wait_timeout_while(st, timeout, |st| st.in_flight > 0)
                .unwrap_or_else(|p| p.into_inner());
            if !waited.timed_out() {
                return Stopped::Drained {
                    ring: st.queue.state(),
                };
            }
            st.queue.state()
        };
        drop(self.reset());
        Stopped::Reset { ring }
    }

    /// Replaces guest memory (a new memory table). Chains popped from now on, the used
    /// ring and reply headers use it; a request already running keeps the mapping it was
    /// given, which stays mapped until it ends.
    pub fn set_memory(&self, mem: Arc<GuestMemoryMmap>) {
        let mut st = self.core.lock();
        if st.active {
            st.mem = Some(mem);
        }
    }

    /// Whether [`Self::stop_queue`] has stopped the ring (popping nothing) and it has not
    /// been started again.
    pub fn is_stopped(&self) -> bool {
        let st = self.core.lock();
        st.active && st.paused
    }

    /// Requests of the current ring popped and not yet completed.
    pub fn in_flight(&self) -> usize {
        self.core.lock().in_flight
    }
}
