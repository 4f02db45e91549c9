//! Devices brought up the vhost-user way: never through their registers, but handed the
//! ring whole (`SET_VRING_NUM`/`ADDR`/`BASE` and the acked features:
//! `Virtio9p::start_queue`), taken back whole (`GET_VRING_BASE`: `Virtio9p::stop_queue`)
//! and handed it again, the session carrying over, as a VMM does around a migration or a
//! memory hot-plug. What each step must do is stated from the driver's side of the ring,
//! not read from the device's counters:
//!
//! - the frontend hands over only what its messages carry: no maximum size (the device's
//!   own), no readiness and no EVENT_IDX flag (the features decide), so the device must
//!   fill them in itself;
//! - a ring taken back stands where the driver's ring in guest RAM says: `next_used` at
//!   the used ring's index, `next_avail` at the chains the driver published (every one of
//!   them was kicked, so the device read it);
//! - requests the driver kicked and the used ring does not show yet are what the device
//!   has in flight; with none, a stop drains at once; with some, a stop that cannot wait
//!   (the simulation has one thread) resets the device rather than hand back a ring it
//!   still writes into;
//! - a start while the ring runs, or with features the device does not offer or without
//!   VERSION_1, is refused and changes nothing.

use std::time::Duration;

use co9p::transport::virtio::{
    ActivateError, DEVICE_FEATURES, F_RING_EVENT_IDX, F_VERSION_1, STATUS_ACKNOWLEDGE,
    STATUS_DRIVER, STATUS_DRIVER_OK, STATUS_FEATURES_OK, Stopped,
};
use rand::RngExt;
use virtio_queue::QueueState;

use super::driver::{NOT_OFFERED, expect};
use super::{QUEUE, VirtioDev};

/// The ring as a vhost-user frontend's messages carry it: no maximum size, no readiness,
/// and the opposite of the driver's EVENT_IDX flag (the device must take it from the
/// features, so a device that took it from here would break the ring's notifications).
fn as_frontend_sends(ring: QueueState) -> QueueState {
    QueueState {
        max_size: 0,
        ready: false,
        event_idx_enabled: !ring.event_idx_enabled,
        ..ring
    }
}

/// Whether `got` names the same rings as `want` (size and the three addresses).
fn same_rings(got: &QueueState, want: &QueueState) -> bool {
    (got.size, got.desc_table, got.avail_ring, got.used_ring)
        == (want.size, want.desc_table, want.avail_ring, want.used_ring)
}

impl VirtioDev {
    /// Lays a ring out and hands it to the device whole (the device is new or reset).
    pub(super) fn vhost_boot(&mut self) -> Result<(), String> {
        let mut features = DEVICE_FEATURES;
        if !self.event_idx {
            features &= !F_RING_EVENT_IDX;
        }
        let ring = self
            .guest
            .lay_out_ring(QUEUE, features)
            .ok_or("no room in guest RAM for the rings")?;
        if self.hrng.random_bool(0.3) {
            self.refused_start(features, ring)?;
        }
        let mem = self.guest.ram.memory().clone();
        let dev = self.guest.device().clone();
        dev.start_queue(
            features,
            as_frontend_sends(ring),
            mem,
            self.notifier.clone(),
        )
        .map_err(|e| format!("a ring handed to a reset device: {e}"))?;
        self.note_vhost(0, "ring handed over");
        // A ring handed over whole is a whole bring-up: the status reads as after one.
        let status = dev.status();
        let booted = STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK;
        expect(status == booted, || {
            format!("status {status:#x} after a ring was handed over, {booted:#x} wanted")
        })?;
        self.check_identity(format!("sim{}", self.id).as_bytes())
    }

    /// A start the device must refuse, changing nothing: features it does not offer or
    /// without VERSION_1.
    fn refused_start(&mut self, features: u64, ring: QueueState) -> Result<(), String> {
        let bad = if self.hrng.random_bool(0.5) {
            features | NOT_OFFERED
        } else {
            features & !F_VERSION_1
        };
        let dev = self.guest.device().clone();
        let (active, stopped) = (dev.is_active(), dev.is_stopped());
        let got = dev.start_queue(
            bad,
            as_frontend_sends(ring),
            self.guest.ram.memory().clone(),
            self.notifier.clone(),
        );
        expect(
            got == Err(ActivateError::BadFeatures)
                && (dev.is_active(), dev.is_stopped()) == (active, stopped),
            || format!("a ring handed over with features {bad:#x}: {got:?}"),
        )
    }

    /// What the device must have in flight, from the driver's side: chains published (all
    /// kicked, so all read) that the used ring does not show yet. `None` while chains wait
    /// for a kick (the device has not read them).
    fn driver_in_flight(&self) -> Option<(QueueState, u16)> {
        if !self.unkicked.is_empty() {
            return None;
        }
        let ring = self.guest.ring()?;
        Some((ring, ring.next_avail.wrapping_sub(ring.next_used)))
    }

    /// Between kicks: the device's count of requests in flight agrees with the driver's
    /// ring; on a vhost device, maybe the ring is taken back and handed over again.
    pub(super) fn check_in_flight_and_hand_over(&mut self) -> Result<(), String> {
        let dev = self.guest.device().clone();
        if !dev.is_active() {
            return Ok(());
        }
        let Some((driver, running)) = self.driver_in_flight() else {
            return Ok(());
        };
        let counted = dev.in_flight();
        expect(counted == usize::from(running), || {
            format!(
                "the device counts {counted} requests in flight; the driver's ring shows \
                 {running} (published {}, used {})",
                driver.next_avail, driver.next_used
            )
        })?;
        // Every chain published since the boot was taken, every used entry counted.
        let (now, then) = (dev.stats(), self.stats_at_boot);
        let took = now.popped.wrapping_sub(then.popped) as u16;
        let done = now.completed.wrapping_sub(then.completed) as u16;
        expect(
            took == driver.next_avail && done == driver.next_used,
            || {
                format!(
                    "the device counts {took} chains taken and {done} completed since its boot; \
                 the driver's ring shows {} published and {} used",
                    driver.next_avail, driver.next_used
                )
            },
        )?;
        if !self.vhost || running != 0 || !self.hrng.random_bool(self.handover) {
            return Ok(());
        }
        self.hand_over(driver)
    }

    /// The ring taken back (`GET_VRING_BASE`) while nothing runs, maybe guest RAM moved
    /// (`SET_MEM_TABLE`), and the ring handed over again where it stood: the session, its
    /// fids and msize carry over (the model sees every fid still work).
    fn hand_over(&mut self, driver: QueueState) -> Result<(), String> {
        let dev = self.guest.device().clone();
        let features = self.guest.features();
        if self.hrng.random_bool(0.3) {
            // A second start while the ring runs: refused. The ring it names (two entries)
            // would break the device if it were taken.
            let bogus = QueueState {
                size: 2,
                ..as_frontend_sends(driver)
            };
            let got = dev.start_queue(
                features,
                bogus,
                self.guest.ram.memory().clone(),
                self.notifier.clone(),
            );
            expect(got == Err(ActivateError::AlreadyActive), || {
                format!("a ring handed over while the ring runs: {got:?}")
            })?;
        }
        let ring = match dev.stop_queue(Duration::ZERO) {
            Stopped::Drained { ring } => ring,
            other => {
                return Err(format!(
                    "a ring stopped with nothing in flight came back {other:?}"
                ));
            }
        };
        expect(
            same_rings(&ring, &driver)
                && (ring.next_avail, ring.next_used) == (driver.next_avail, driver.next_used)
                && dev.is_stopped(),
            || {
                format!(
                    "a ring taken back: {ring:?}, the driver's {driver:?}, stopped {}",
                    dev.is_stopped()
                )
            },
        )?;
        self.note_vhost(1, "ring taken back");
        if self.hrng.random_bool(0.5) {
            self.guest.remap_memory();
            self.note_vhost(2, "memory remapped while stopped");
        }
        if self.hrng.random_bool(0.3) {
            self.refused_start(features, driver)?;
        }
        let resume = QueueState {
            next_avail: ring.next_avail,
            next_used: ring.next_used,
            ..as_frontend_sends(driver)
        };
        dev.start_queue(
            features,
            resume,
            self.guest.ram.memory().clone(),
            self.notifier.clone(),
        )
        .map_err(|e| format!("a stopped ring handed over again: {e}"))?;
        expect(!dev.is_stopped() && dev.is_active(), || {
            "a ring handed over again is not running".to_string()
        })?;
        self.note_vhost(0, "ring handed over");
        Ok(())
    }

    /// A guest reboot under vhost-user: the frontend takes the ring back. With requests
    /// running the device cannot wait here, so it must reset itself; with none the ring
    /// comes back drained and the frontend resets the device.
    pub(super) fn vhost_reset(&mut self) -> Result<(), String> {
        let dev = self.guest.device().clone();
        let driver = self.guest.ring().ok_or("a vhost device without a ring")?;
        let running = self.driver_in_flight().map(|(_, n)| n);
        let before = dev.in_flight();
        let stopped = dev.stop_queue(Duration::ZERO);
        let what = if matches!(stopped, Stopped::Reset { .. }) {
            "ring taken back, the device reset itself"
        } else {
            "ring taken back drained, device reset"
        };
        let ok = match (before, stopped) {
            (0, Stopped::Drained { ring }) => {
                drop(dev.reset());
                same_rings(&ring, &driver)
                    && ring.next_used == driver.next_used
                    && ring.next_avail == ring.next_used
                    && running.is_none_or(|n| n == 0)
            }
            (n, Stopped::Reset { ring }) => {
                n > 0
                    && same_rings(&ring, &driver)
                    && ring.next_used == driver.next_used
                    && running.is_none_or(|r| usize::from(r) == n)
            }
            _ => false,
        };
        expect(ok && !dev.is_active(), || {
            format!(
                "a ring taken back at a reset with {before} requests running (the driver's \
                 ring shows {running:?}): {stopped:?}; the driver's {driver:?}"
            )
        })?;
        self.note_vhost(3, what);
        self.guest.forget_queue();
        Ok(())
    }

    fn note_vhost(&self, kind: u8, what: &str) {
        let id = self.id;
        self.ex.record_line(b'H', &[id as u8, kind], || {
            format!("virtio dev={id} vhost: {what}")
        });
    }
}
