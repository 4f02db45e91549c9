//! A driver that breaks the rules, and what the device must answer (virtio 1.2 §3.1.1 says
//! what a driver must do; the device documents what it does when one does not:
//! `Virtio9p::set_status`, `set_driver_features`, the queue setters, `activate`):
//!
//! - a wrong bring-up before the real one ([`VirtioDev::misboot`]): features acked before
//!   DRIVER (ignored), features the device does not offer or without VERSION_1
//!   (FEATURES_OK not latched), DRIVER_OK before FEATURES_OK (not latched, nothing served),
//!   features changed after FEATURES_OK (ignored), DRIVER_OK with no queue (NEEDS_RESET and
//!   a configuration interrupt, the queue's registers closed), DRIVER_OK written alone or
//!   FEATURES_OK after DRIVER was withdrawn (not latched), each ring address written a
//!   half at a time, a running queue broken by an available index a queue ahead (nothing
//!   served until the reset); each ends with a reset that must clear everything;
//! - register writes while running ([`VirtioDev::misbehave`]): queue size, addresses and
//!   readiness, features: all ignored after DRIVER_OK;
//! - a chain whose writable part is smaller than any reply ([`VirtioDev::send_tiny`]): it
//!   carries a Tclunk of a directory fid the client keeps, must come back used with length
//!   0 and never run (a run would take the fid away, which the model and the fid count see);
//! - broken chains ([`VirtioDev::send_wild`]): a writable buffer running off the end of
//!   guest RAM, a loop, a request cut shorter than its header says; the request (a Tclunk
//!   of the same fid, or a large Twrite) must not run, and the device answers
//!   `Rlerror(EPROTO)` in the room that is memory (a buffer that only crosses from one
//!   memory region into the next is memory, and ordinary chains do that all the time);
//! - guest RAM moved to a new host mapping between kicks, while the device has nothing in
//!   flight (`Virtio9p::set_memory`, as vhost-user's SET_MEM_TABLE): the old mapping is no
//!   longer the guest's, so a device that kept it would stop seeing requests.

use co9p::protocol::{Data, Fid, Request, Tag, Tmessage};
use co9p::transport::virtio::harness::{BootOptions, Completion, Layout, PAGE, RawDesc};
use co9p::transport::virtio::{
    ActivateError, F_VERSION_1, INT_CONFIG, STATUS_ACKNOWLEDGE as ACK, STATUS_DRIVER as DRIVER,
    STATUS_DRIVER_OK as DRIVER_OK, STATUS_FEATURES_OK as FEATURES_OK, STATUS_NEEDS_RESET, mmio,
};
use rand::RngExt;
use std::sync::Arc;

use super::{QUEUE, VirtioDev};

/// The tag of the chains with too little room (the guests' own tags are 1..=200).
const TINY_TAG: u16 = 0xfff0;
/// The tag of the broken chains ([`VirtioDev::send_wild`]).
const WILD_TAG: u16 = 0xfff1;
/// Where in a wild chain's page its good room starts (the request is before it).
const WILD_ROOM_AT: u64 = 2048;
/// Bytes of good room in a wild chain (more than an `Rlerror`, less than an `Rclunk` and
/// more: any reply fits).
const WILD_ROOM: u32 = 64;
/// A feature bit the device does not offer.
pub(super) const NOT_OFFERED: u64 = 1 << 40;

pub(super) fn expect(ok: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if ok { Ok(()) } else { Err(what()) }
}

impl VirtioDev {
    /// What the device shows a driver before any request: the features virtio-9p's
    /// specification lets it offer and this device documents (bit numbers from the
    /// specification, not the device's constants), and its mount tag in the configuration
    /// space (`le16 tag_len`, the tag, nothing after).
    pub(super) fn check_identity(&self, tag: &[u8]) -> Result<(), String> {
        const SPEC: u64 = 1 << 0 | 1 << 28 | 1 << 29 | 1 << 32; // MOUNT_TAG, INDIRECT_DESC, EVENT_IDX, VERSION_1
        let offered = self.guest.device_features();
        expect(offered == SPEC, || {
            format!("device offers {offered:#x}, documented {SPEC:#x}")
        })?;
        let cfg = self.guest.read_config(0, 2 + tag.len() + 4);
        let mut want = (tag.len() as u16).to_le_bytes().to_vec();
        want.extend_from_slice(tag);
        want.extend_from_slice(&[0; 4]);
        expect(cfg == want, || {
            format!("configuration space {cfg:02x?}, the tag {tag:?} wants {want:02x?}")
        })?;
        // A vendor ID a driver can tell apart from an absent register (virtio-mmio reads
        // 0 for those), and QueueReady as the driver left it: 1 for queue 0, 0 for the
        // queue 1 the device does not have, whose QueueNumMax is 0 (how a driver learns
        // a queue is absent).
        let g = &self.guest;
        let vendor = g.read32(mmio::VENDOR_ID);
        let ready0 = g.read32(mmio::QUEUE_READY);
        g.write32(mmio::QUEUE_SEL, 1);
        let ready1 = g.read32(mmio::QUEUE_READY);
        let max1 = g.read32(mmio::QUEUE_NUM_MAX);
        g.write32(mmio::QUEUE_SEL, 0);
        expect(vendor != 0 && (ready0, ready1, max1) == (1, 0, 0), || {
            format!(
                "after a boot: VendorID {vendor:#x}, QueueReady {ready0} (queue 0), {ready1} (queue 1), QueueNumMax {max1} (queue 1)"
            )
        })
    }

    /// One wrong bring-up, checked, then a reset that must leave the device as new.
    pub(super) fn misboot(&mut self) -> Result<(), String> {
        let kind = self.rng.random_range(0..9);
        if kind == 8 {
            return self.break_running_queue();
        }
        let g = &mut self.guest;
        g.set_status(0);
        g.set_status(ACK);
        let offered = g.device_features();
        match kind {
            5 => {
                // Registers of a queue the device does not have (a 9P device has one).
                let before = g.device().queue_config();
                g.write32(mmio::QUEUE_SEL, 1);
                let max = g.read32(mmio::QUEUE_NUM_MAX);
                for (reg, v) in [
                    (mmio::QUEUE_NUM, 2),
                    (mmio::QUEUE_DESC_LOW, 0x10),
                    (mmio::QUEUE_DESC_HIGH, 1),
                    (mmio::QUEUE_DRIVER_LOW, 0x20),
                    (mmio::QUEUE_DRIVER_HIGH, 1),
                    (mmio::QUEUE_DEVICE_LOW, 0x40),
                    (mmio::QUEUE_DEVICE_HIGH, 1),
                    (mmio::QUEUE_READY, 1),
                ] {
                    g.write32(reg, v);
                }
                g.write32(mmio::QUEUE_SEL, 0);
                let after = g.device().queue_config();
                expect(
                    max == 0 && format!("{before:?}") == format!("{after:?}"),
                    || {
                        format!(
                            "queue 1's registers: QueueNumMax {max}, queue 0 {before:?} -> {after:?}"
                        )
                    },
                )?;
                // Each of queue 0's three ring addresses written twice, each half on its
                // own (a driver may rewrite them before DRIVER_OK): each write replaces its
                // half, the high one too (guests put rings above 4 GiB).
                type Field = fn(&co9p::transport::virtio::QueueConfig) -> u64;
                let rings: [(&str, u64, u64, Field); 3] = [
                    (
                        "descriptor table",
                        mmio::QUEUE_DESC_LOW,
                        mmio::QUEUE_DESC_HIGH,
                        |c| c.desc_table,
                    ),
                    (
                        "available ring",
                        mmio::QUEUE_DRIVER_LOW,
                        mmio::QUEUE_DRIVER_HIGH,
                        |c| c.avail_ring,
                    ),
                    (
                        "used ring",
                        mmio::QUEUE_DEVICE_LOW,
                        mmio::QUEUE_DEVICE_HIGH,
                        |c| c.used_ring,
                    ),
                ];
                for (what, low, high, field) in rings {
                    let mut seen = Vec::new();
                    for (reg, v) in [(low, 0x1000), (high, 0x2), (low, 0x3000), (high, 0x5)] {
                        g.write32(reg, v);
                        seen.push(field(&g.device().queue_config()));
                    }
                    expect(
                        seen == [0x1000, 0x2_0000_1000, 0x2_0000_3000, 0x5_0000_3000],
                        || format!("{what} address after each half written: {seen:#x?}"),
                    )?;
                }
            }
            0 => {
                // Acked before DRIVER: ignored, so nothing is acked and FEATURES_OK (which
                // needs VERSION_1) is refused.
                g.write_driver_features(offered);
                g.set_status(ACK | DRIVER);
                g.set_status(ACK | DRIVER | FEATURES_OK);
                let s = g.status();
                expect(s & FEATURES_OK == 0, || {
                    format!("FEATURES_OK latched (status {s:#x}) with features acked before DRIVER")
                })?;
            }
            1 => {
                let bad =
                    [offered | NOT_OFFERED, offered & !F_VERSION_1][self.rng.random_range(0..2)];
                g.set_status(ACK | DRIVER);
                g.write_driver_features(bad);
                g.set_status(ACK | DRIVER | FEATURES_OK);
                let s = g.status();
                expect(s & FEATURES_OK == 0, || {
                    format!("FEATURES_OK latched (status {s:#x}) with features {bad:#x} acked")
                })?;
            }
            2 => {
                // DRIVER_OK before FEATURES_OK: not latched, the device stays inactive and
                // a kick is ignored.
                g.set_status(ACK | DRIVER);
                g.write_driver_features(offered);
                g.set_status(ACK | DRIVER | DRIVER_OK);
                g.kick();
                let s = g.status();
                let active = g.device().is_active();
                expect(s & DRIVER_OK == 0 && !active, || {
                    format!("DRIVER_OK before FEATURES_OK: status {s:#x}, active {active}")
                })?;
                // A VMM that starts the device itself before DRIVER_OK is refused.
                let mem = g.ram.memory().clone();
                let got = g.device().activate(mem, Arc::new(|| {}));
                let active = g.device().is_active();
                expect(got == Err(ActivateError::NotReady) && !active, || {
                    format!("activated before DRIVER_OK: {got:?}, active {active}")
                })?;
            }
            3 => {
                // Features changed after FEATURES_OK: ignored.
                g.set_status(ACK | DRIVER);
                g.write_driver_features(offered);
                g.set_status(ACK | DRIVER | FEATURES_OK);
                g.write_driver_features(F_VERSION_1 | NOT_OFFERED);
                let (s, acked) = (g.status(), g.device().driver_features());
                expect(s & FEATURES_OK != 0 && acked == offered, || {
                    format!("features rewritten after FEATURES_OK: status {s:#x}, acked {acked:#x}")
                })?;
            }
            6 => {
                // DRIVER_OK written alone, with nothing before it but ACKNOWLEDGE: not
                // latched (it needs FEATURES_OK).
                g.set_status(DRIVER_OK);
                let s = g.status();
                expect(s & DRIVER_OK == 0, || {
                    format!("DRIVER_OK latched (status {s:#x}) when written alone")
                })?;
            }
            7 => {
                // Good features acked, then DRIVER withdrawn (the status written back to
                // ACKNOWLEDGE) and FEATURES_OK written alone: refused, it needs DRIVER.
                g.set_status(ACK | DRIVER);
                g.write_driver_features(offered);
                g.set_status(ACK);
                g.set_status(FEATURES_OK);
                let s = g.status();
                expect(s & FEATURES_OK == 0, || {
                    format!("FEATURES_OK latched (status {s:#x}) without DRIVER")
                })?;
            }
            _ => {
                // DRIVER_OK with no queue set up: NEEDS_RESET and a configuration interrupt,
                // nothing served; the queue's registers are then closed like a running
                // device's (DRIVER_OK is set).
                g.set_status(ACK | DRIVER);
                g.write_driver_features(offered);
                g.set_status(ACK | DRIVER | FEATURES_OK);
                g.set_status(ACK | DRIVER | FEATURES_OK | DRIVER_OK);
                g.kick();
                let (s, int) = (g.status(), g.read32(mmio::INTERRUPT_STATUS));
                let active = g.device().is_active();
                expect(
                    s & STATUS_NEEDS_RESET != 0 && int & INT_CONFIG != 0 && !active,
                    || {
                        format!(
                            "DRIVER_OK with no queue: status {s:#x}, interrupt {int:#x}, active {active}"
                        )
                    },
                )?;
                let before = g.device().queue_config();
                g.write32(mmio::QUEUE_NUM, 4);
                g.write32(mmio::QUEUE_DESC_LOW, 0x1000);
                let after = g.device().queue_config();
                expect(format!("{before:?}") == format!("{after:?}"), || {
                    format!(
                        "queue registers written after DRIVER_OK failed: {before:?} -> {after:?}"
                    )
                })?;
            }
        }
        g.set_status(0);
        let (s, int) = (g.status(), g.read32(mmio::INTERRUPT_STATUS));
        let (acked, active) = (g.device().driver_features(), g.device().is_active());
        expect(s == 0 && int == 0 && acked == 0 && !active, || {
            format!(
                "after a reset: status {s:#x}, interrupt {int:#x}, features {acked:#x}, active {active}"
            )
        })
    }

    /// A misboot of its own kind: a good boot, then the available index written more
    /// than a queue ahead of the chains the device has read. The device must mark itself
    /// NEEDS_RESET, raise a configuration interrupt, and serve nothing more, even a good
    /// chain published behind the index set right again, until the reset that follows.
    fn break_running_queue(&mut self) -> Result<(), String> {
        let mut opts = BootOptions {
            queue_size: QUEUE,
            ..BootOptions::default()
        };
        if !self.event_idx {
            opts.features &= !co9p::transport::virtio::F_RING_EVENT_IDX;
        }
        let g = &mut self.guest;
        g.boot(&opts).map_err(|e| format!("{e:?}"))?;
        g.resync_memory();
        let dev = g.device().clone();
        let popped = dev.stats().popped;
        let published = g.ring().ok_or("no ring after a boot")?.next_avail;
        let active = dev.is_active();
        g.set_avail_idx_raw(published.wrapping_add(QUEUE + 1));
        g.kick();
        let (s, int) = (g.status(), g.read32(mmio::INTERRUPT_STATUS));
        expect(
            active && s & STATUS_NEEDS_RESET != 0 && int & INT_CONFIG != 0,
            || {
                format!(
                    "available index a queue ahead: active {active} after boot, then status \
                     {s:#x}, interrupt {int:#x}"
                )
            },
        )?;
        g.set_avail_idx_raw(published);
        let frame = Request::new(Tag(TINY_TAG), Tmessage::Clunk { fid: Fid(1) })
            .to_bytes()
            .map_err(|e| e.to_string())?;
        g.submit(&frame, Layout::Plain { room: 64 }, false)
            .ok_or("no room for a chain after a broken queue")?;
        g.kick();
        let now = dev.stats().popped;
        expect(now == popped, || {
            format!(
                "a queue needing a reset served a kick: {} chains taken",
                now - popped
            )
        })?;
        g.reset();
        let (s, int) = (g.status(), g.read32(mmio::INTERRUPT_STATUS));
        let active = dev.is_active();
        expect(s == 0 && int == 0 && !active, || {
            format!("after a reset: status {s:#x}, interrupt {int:#x}, active {active}")
        })
    }

    /// Sends a chain with less writable room than a reply header: a Tclunk of fid 1 (a
    /// directory every client keeps), which the device must complete with length 0
    /// without running it.
    pub(super) fn send_tiny(&mut self) -> Result<(), String> {
        let room = [0, 1, 6, 7, 10][self.rng.random_range(0..5)];
        let frame = Request::new(Tag(TINY_TAG), Tmessage::Clunk { fid: Fid(1) })
            .to_bytes()
            .map_err(|e| e.to_string())?;
        let indirect = self.rng.random_bool(0.25);
        let head = self
            .guest
            .submit(&frame, Layout::Plain { room }, indirect)
            .ok_or("no room for a chain with too little room")?;
        self.tiny_heads.insert(head);
        Ok(())
    }

    /// A chain with too little room came back: with nothing in it.
    pub(super) fn tiny_used(&self, head: u16, len: u32) -> Result<(), String> {
        expect(len == 0, || {
            format!(
                "a chain (head {head}) with less room than a reply header came back with {len} bytes"
            )
        })
    }

    /// A chain that is broken, with a request that must not run and good room for the
    /// answer. Not kicked: it goes with the next request. One of:
    /// - a Tclunk of fid 1 (a directory fid the client keeps) whose last writable buffer
    ///   starts inside guest RAM and ends past it;
    /// - the same Tclunk, its room descriptor naming itself as next (a loop);
    /// - a large Twrite on fid 1 whose readable part ends before the size its header
    ///   declares (it would fail with EBADF if it ran).
    pub(super) fn send_wild(&mut self) -> Result<(), String> {
        let kind = self.rng.random_range(0..3);
        let msg = if kind == 2 {
            // Large enough for the device's in-place path, small enough that the request
            // and the room share a page.
            let len = self.rng.random_range(1100..(WILD_ROOM_AT as usize - 23));
            Tmessage::Write {
                fid: Fid(1),
                offset: 0,
                data: Data(vec![0x5a; len]),
            }
        } else {
            Tmessage::Clunk { fid: Fid(1) }
        };
        let frame = Request::new(Tag(WILD_TAG), msg)
            .to_bytes()
            .map_err(|e| e.to_string())?;
        let page = self.guest.alloc(PAGE).ok_or("no RAM for a broken chain")?;
        let cut = if kind == 2 {
            frame.len() - self.rng.random_range(1..=64)
        } else {
            frame.len()
        };
        self.guest.write_ram(page, &frame[..cut]);
        let request = RawDesc::readable(page, cut as u32);
        let room = RawDesc::writable(page + WILD_ROOM_AT, WILD_ROOM);
        let descs = match kind {
            0 => {
                let end = self.guest.ram.size();
                let inside = self.rng.random_range(1..=64u64);
                let outside = self.rng.random_range(1..=64u32);
                vec![
                    request.then(1),
                    room.then(2),
                    RawDesc::writable(end - inside, inside as u32 + outside),
                ]
            }
            1 => vec![request.then(1), room.then(1)],
            _ => vec![request.then(1), room],
        };
        let Some(head) = self.guest.inject(&descs) else {
            self.guest.free(page, PAGE);
            return Err("no descriptors for a broken chain".into());
        };
        self.wild_heads.insert(head, page);
        Ok(())
    }

    /// A broken chain came back: with `Rlerror(EPROTO)` in its good room, never run.
    pub(super) fn wild_used(&mut self, page: u64, c: &Completion) -> Result<(), String> {
        self.guest.free(page, PAGE);
        let mut want = 11u32.to_le_bytes().to_vec();
        want.push(7); // Rlerror
        want.extend_from_slice(&WILD_TAG.to_le_bytes());
        want.extend_from_slice(&(libc::EPROTO as u32).to_le_bytes());
        expect(c.reply == want, || {
            format!(
                "a broken chain (head {}) came back with {:02x?}, not Rlerror(EPROTO) \
                 {want:02x?}",
                c.head, c.reply
            )
        })
    }

    /// Frees the pages of the broken chains a reset cancelled.
    pub(super) fn forget_wild(&mut self) {
        for (_, page) in std::mem::take(&mut self.wild_heads) {
            self.guest.free(page, PAGE);
        }
    }

    /// Between kicks: maybe register writes the device must ignore while running, maybe
    /// guest RAM moved to a new host mapping.
    pub fn misbehave(&mut self) -> Result<(), String> {
        self.check_in_flight_and_hand_over()?;
        if self.rng.random_bool(self.poke) && self.guest.device().is_active() {
            self.poke()?;
        }
        if self.rng.random_bool(self.remap)
            && self.guest.device().is_active()
            && self.guest.device().in_flight() == 0
        {
            let id = self.id;
            self.ex.record_line(b'M', &[id as u8], || {
                format!("virtio dev={id} memory remapped")
            });
            self.guest.remap_memory();
        }
        Ok(())
    }

    /// Queue and feature registers written while the device runs: all ignored.
    fn poke(&mut self) -> Result<(), String> {
        let g = &self.guest;
        let (q, s, acked) = (
            g.device().queue_config(),
            g.status(),
            g.device().driver_features(),
        );
        let (reg, v) = [
            (mmio::QUEUE_NUM, 2),
            (mmio::QUEUE_DESC_LOW, 0x10),
            (mmio::QUEUE_DRIVER_LOW, 0x20),
            (mmio::QUEUE_DEVICE_LOW, 0x40),
            (mmio::QUEUE_READY, 0),
            (mmio::DRIVER_FEATURES, 0),
        ][self.rng.random_range(0..6)];
        g.write32(mmio::DRIVER_FEATURES_SEL, 0);
        g.write32(reg, v);
        let (q2, s2, acked2) = (
            g.device().queue_config(),
            g.status(),
            g.device().driver_features(),
        );
        expect(
            format!("{q:?}") == format!("{q2:?}") && s == s2 && acked == acked2,
            || {
                format!(
                    "register {reg:#x} = {v:#x} while running changed the device: \
                     queue {q:?} -> {q2:?}, status {s:#x} -> {s2:#x}, features {acked:#x} -> {acked2:#x}"
                )
            },
        )
    }
}
