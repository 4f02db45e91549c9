//! A vhost-user *frontend* with virtio-mmio registers: what a VMM does for a vhost-user
//! device (QEMU's `vhost-user-test-device` maps virtio-pci registers the same way). The
//! harness guest ([`VirtualGuest`]) boots it through the registers exactly as it boots the
//! in-process device; register writes become vhost-user messages on a real unix socket
//! (rust-vmm's `vhost` frontend), guest RAM is a shared memfd the backend maps, the kick
//! and the interrupt are eventfds.
//!
//! Self-contained (no `super::`), so a bench can include it with `#[path]`.
#![allow(dead_code)]

use std::fs::File;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use co9p::transport::virtio::harness::{GuestRam, IrqLine, VirtualGuest};
use co9p::transport::virtio::mmio::{self, MmioDevice};
use co9p::transport::virtio::{INT_USED, STATUS_DRIVER_OK, STATUS_FEATURES_OK, STATUS_NEEDS_RESET};
use vhost::vhost_user::message::{
    VhostUserConfigFlags, VhostUserProtocolFeatures, VhostUserVirtioFeatures,
};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vm_memory::{FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

/// Guest RAM of `size` bytes at address 0, in a memfd mapped shared (as QEMU's
/// `memory-backend-memfd,share=on`), so a backend process can map the same pages.
pub fn shared_memory(size: usize) -> Arc<GuestMemoryMmap> {
    let fd = rustix::fs::memfd_create("co9p-guest-ram", rustix::fs::MemfdFlags::CLOEXEC)
        .expect("memfd_create");
    rustix::fs::ftruncate(&fd, size as u64).expect("ftruncate");
    let file = File::from(fd);
    let mem = GuestMemoryMmap::from_ranges_with_files([(
        GuestAddress(0),
        size,
        Some(FileOffset::new(file, 0)),
    )])
    .expect("mapping guest RAM");
    Arc::new(mem)
}

/// A second mapping of `mem`'s memfd (same guest addresses, other host addresses), as a
/// VMM has after it remaps guest RAM.
pub fn remap(mem: &GuestMemoryMmap) -> Arc<GuestMemoryMmap> {
    let ranges: Vec<_> = mem
        .iter()
        .map(|r| {
            let f = r.file_offset().expect("file-backed region");
            let file = f.file().try_clone().expect("dup");
            (
                r.start_addr(),
                r.len() as usize,
                Some(FileOffset::new(file, f.start())),
            )
        })
        .collect();
    Arc::new(GuestMemoryMmap::from_ranges_with_files(ranges).expect("remap"))
}

/// The memory table of `mem` with each region cut in two halves (two regions that touch).
pub fn split_regions(mem: &GuestMemoryMmap) -> Vec<VhostUserMemoryRegionInfo> {
    regions(mem)
        .into_iter()
        .flat_map(|r| {
            let half = (r.memory_size / 2) & !0xfff;
            let second = VhostUserMemoryRegionInfo {
                guest_phys_addr: r.guest_phys_addr + half,
                memory_size: r.memory_size - half,
                userspace_addr: r.userspace_addr + half,
                mmap_offset: r.mmap_offset + half,
                ..r
            };
            [
                VhostUserMemoryRegionInfo {
                    memory_size: half,
                    ..r
                },
                second,
            ]
        })
        .collect()
}

/// The memory table of `mem` as vhost-user messages carry it.
pub fn regions(mem: &GuestMemoryMmap) -> Vec<VhostUserMemoryRegionInfo> {
    mem.iter()
        .map(|r| VhostUserMemoryRegionInfo::from_guest_region(r).expect("file-backed region"))
        .collect()
}

/// What the registers hold, and the connection.
pub struct FrontState {
    pub fe: Frontend,
    status: u8,
    dev_sel: u32,
    drv_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    num: u16,
    desc: u64,
    avail: u64,
    used: u64,
    ready: bool,
    /// The ring was handed to the backend (DRIVER_OK) and not taken back.
    pub running: bool,
    irq: u32,
}

/// A vhost-user device behind virtio-mmio registers.
pub struct VhostFront {
    state: Mutex<FrontState>,
    pub kick: EventFd,
    pub call: EventFd,
    pub mem: Arc<GuestMemoryMmap>,
    /// Virtio features the backend offers (without the vhost-user protocol bit).
    pub device_features: u64,
    pub protocol: VhostUserProtocolFeatures,
    /// What QueueNumMax reads (vhost-user has no query for it: the VMM decides).
    pub queue_max: u16,
}

impl VhostFront {
    /// Connects to the backend at `socket`, takes ownership and negotiates the protocol.
    pub fn connect(socket: &Path, mem: Arc<GuestMemoryMmap>, queue_max: u16) -> Self {
        let mut fe = Frontend::connect(socket, 1).expect("connect to the vhost-user backend");
        fe.set_owner().expect("SET_OWNER");
        let offered = fe.get_features().expect("GET_FEATURES");
        let proto_bit = VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        assert_ne!(
            offered & proto_bit,
            0,
            "the backend offers protocol features"
        );
        let want = VhostUserProtocolFeatures::CONFIG
            | VhostUserProtocolFeatures::REPLY_ACK
            | VhostUserProtocolFeatures::RESET_DEVICE
            | VhostUserProtocolFeatures::MQ;
        let protocol = fe.get_protocol_features().expect("GET_PROTOCOL_FEATURES") & want;
        fe.set_protocol_features(protocol)
            .expect("SET_PROTOCOL_FEATURES");
        VhostFront {
            state: Mutex::new(FrontState {
                fe,
                status: 0,
                dev_sel: 0,
                drv_sel: 0,
                driver_features: 0,
                queue_sel: 0,
                num: 0,
                desc: 0,
                avail: 0,
                used: 0,
                ready: false,
                running: false,
                irq: 0,
            }),
            kick: EventFd::new(EFD_NONBLOCK).expect("eventfd"),
            call: EventFd::new(EFD_NONBLOCK).expect("eventfd"),
            mem,
            device_features: offered & !proto_bit,
            protocol,
            queue_max,
        }
    }

    /// The connection and register state, for tests that send messages of their own.
    pub fn lock(&self) -> MutexGuard<'_, FrontState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The host address of guest address `gpa` (vhost-user rings are given as frontend
    /// virtual addresses).
    fn host(&self, gpa: u64) -> u64 {
        let r = self.mem.iter().next().expect("one region");
        r.as_ptr() as u64 + gpa - r.start_addr().0
    }

    /// Hands the ring to the backend: memory table, ring, eventfds, enable.
    pub fn start_ring(&self, st: &mut FrontState, base: u16) -> vhost::Result<()> {
        st.fe.set_mem_table(&regions(&self.mem))?;
        st.fe.set_vring_num(0, st.num)?;
        st.fe.set_vring_addr(
            0,
            &VringConfigData {
                queue_max_size: self.queue_max,
                queue_size: st.num,
                flags: 0,
                desc_table_addr: self.host(st.desc),
                used_ring_addr: self.host(st.used),
                avail_ring_addr: self.host(st.avail),
                log_addr: None,
            },
        )?;
        st.fe.set_vring_base(0, base)?;
        st.fe.set_vring_call(0, &self.call)?;
        st.fe.set_vring_kick(0, &self.kick)?;
        st.fe.set_vring_enable(0, true)?;
        st.running = true;
        Ok(())
    }

    /// Takes the ring back (`GET_VRING_BASE`): the index to resume from.
    pub fn stop_ring(&self, st: &mut FrontState) -> vhost::Result<u32> {
        st.running = false;
        st.fe.get_vring_base(0)
    }

    fn set_status(&self, st: &mut FrontState, s: u8) {
        if s == 0 {
            if st.running {
                let _ = self.stop_ring(st);
            }
            if self
                .protocol
                .contains(VhostUserProtocolFeatures::RESET_DEVICE)
            {
                let _ = st.fe.reset_device();
            }
            st.status = 0;
            st.driver_features = 0;
            st.ready = false;
            st.irq = 0;
            return;
        }
        let old = st.status;
        let mut new = s;
        if new & STATUS_FEATURES_OK != 0 && old & STATUS_FEATURES_OK == 0 {
            let acked = st.driver_features;
            let ok = acked & !self.device_features == 0
                && st
                    .fe
                    .set_features(acked | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits())
                    .is_ok();
            if !ok {
                new &= !STATUS_FEATURES_OK;
            }
        }
        if new & STATUS_DRIVER_OK != 0 && old & STATUS_DRIVER_OK == 0 {
            if new & STATUS_FEATURES_OK == 0 {
                new &= !STATUS_DRIVER_OK;
            } else if self.start_ring(st, 0).is_err() {
                new |= STATUS_NEEDS_RESET;
            }
        }
        st.status = new;
    }

    fn read_reg(&self, offset: u64) -> u32 {
        let mut st = self.lock();
        match offset {
            mmio::MAGIC_VALUE => mmio::MAGIC,
            mmio::VERSION => 2,
            mmio::DEVICE_ID => co9p::transport::virtio::DEVICE_ID,
            mmio::VENDOR_ID => mmio::VENDOR,
            mmio::DEVICE_FEATURES => match st.dev_sel {
                0 => self.device_features as u32,
                1 => (self.device_features >> 32) as u32,
                _ => 0,
            },
            mmio::QUEUE_NUM_MAX if st.queue_sel == 0 => u32::from(self.queue_max),
            mmio::QUEUE_READY if st.queue_sel == 0 => u32::from(st.ready),
            mmio::INTERRUPT_STATUS => {
                if self.call.read().is_ok() {
                    st.irq |= INT_USED;
                }
                st.irq
            }
            mmio::STATUS => u32::from(st.status),
            _ => 0,
        }
    }

    fn write_reg(&self, offset: u64, v: u32) {
        let mut st = self.lock();
        let st = &mut *st;
        let low = |old: u64| (old & !0xffff_ffff) | u64::from(v);
        let high = |old: u64| (old & 0xffff_ffff) | (u64::from(v) << 32);
        let q0 = st.queue_sel == 0;
        match offset {
            mmio::DEVICE_FEATURES_SEL => st.dev_sel = v,
            mmio::DRIVER_FEATURES_SEL => st.drv_sel = v,
            mmio::DRIVER_FEATURES => match st.drv_sel {
                0 => st.driver_features = low(st.driver_features),
                1 => st.driver_features = high(st.driver_features),
                _ => {}
            },
            mmio::QUEUE_SEL => st.queue_sel = v,
            mmio::QUEUE_NUM if q0 => st.num = v as u16,
            mmio::QUEUE_READY if q0 => st.ready = v == 1,
            mmio::QUEUE_DESC_LOW if q0 => st.desc = low(st.desc),
            mmio::QUEUE_DESC_HIGH if q0 => st.desc = high(st.desc),
            mmio::QUEUE_DRIVER_LOW if q0 => st.avail = low(st.avail),
            mmio::QUEUE_DRIVER_HIGH if q0 => st.avail = high(st.avail),
            mmio::QUEUE_DEVICE_LOW if q0 => st.used = low(st.used),
            mmio::QUEUE_DEVICE_HIGH if q0 => st.used = high(st.used),
            mmio::QUEUE_NOTIFY if v == 0 => {
                let _ = self.kick.write(1);
            }
            mmio::INTERRUPT_ACK => st.irq &= !v,
            mmio::STATUS => {
                if let Ok(s) = u8::try_from(v) {
                    self.set_status(st, s);
                }
            }
            _ => {}
        }
    }

    /// Closes the connection (as a VMM that exits or is killed): the backend sees EOF.
    pub fn disconnect(&self) {
        use std::os::fd::{AsRawFd, BorrowedFd};
        let st = self.lock();
        // SAFETY: the frontend's socket stays open while `st` borrows it.
        let fd = unsafe { BorrowedFd::borrow_raw(st.fe.as_raw_fd()) };
        let _ = rustix::net::shutdown(fd, rustix::net::Shutdown::Both);
    }

    /// Waits until the backend signals the call eventfd (or `timeout` passes); whether
    /// it did. The signal is left for the interrupt status to see.
    pub fn wait_interrupt(&self, timeout: std::time::Duration) -> bool {
        use std::os::fd::{AsRawFd, BorrowedFd};
        // SAFETY: the eventfd lives as long as `self`, which outlives this call.
        let call = unsafe { BorrowedFd::borrow_raw(self.call.as_raw_fd()) };
        let mut fds = [rustix::event::PollFd::new(
            &call,
            rustix::event::PollFlags::IN,
        )];
        let ts = rustix::event::Timespec {
            tv_sec: timeout.as_secs() as i64,
            tv_nsec: i64::from(timeout.subsec_nanos()),
        };
        matches!(rustix::event::poll(&mut fds, Some(&ts)), Ok(n) if n > 0)
    }
}

impl MmioDevice for VhostFront {
    fn read(&self, offset: u64, data: &mut [u8]) {
        if offset >= mmio::CONFIG {
            let mut st = self.lock();
            let buf = vec![0u8; data.len()];
            if let Ok((_, payload)) = st.fe.get_config(
                (offset - mmio::CONFIG) as u32,
                data.len() as u32,
                VhostUserConfigFlags::empty(),
                &buf,
            ) {
                let n = payload.len().min(data.len());
                data[..n].copy_from_slice(&payload[..n]);
            }
            return;
        }
        let v = if data.len() == 4 && offset % 4 == 0 {
            self.read_reg(offset)
        } else {
            0
        };
        for (i, b) in data.iter_mut().enumerate() {
            *b = v.to_le_bytes().get(i).copied().unwrap_or(0);
        }
    }

    fn write(&self, offset: u64, data: &[u8]) {
        if offset >= mmio::CONFIG {
            return;
        }
        if let Ok(b) = <[u8; 4]>::try_from(data)
            && offset % 4 == 0
        {
            self.write_reg(offset, u32::from_le_bytes(b));
        }
    }
}

/// A harness guest on a vhost-user backend at `socket`: `ram` bytes of shared RAM.
pub fn guest(socket: &Path, ram: usize, queue_max: u16) -> VirtualGuest<Arc<VhostFront>> {
    let mem = shared_memory(ram);
    let front = Arc::new(VhostFront::connect(socket, mem.clone(), queue_max));
    VirtualGuest::new(front, GuestRam::with_memory(mem), IrqLine::new())
}

/// Open file descriptors of this process.
pub fn open_fds() -> usize {
    fd_targets().len()
}

/// What each open descriptor of this process refers to (for a leak's message).
pub fn fd_targets() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    let mut v: Vec<String> = dir
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|p| p.display().to_string())
        .collect();
    v.sort();
    v
}
