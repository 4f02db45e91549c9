//! The virtio-mmio register front (virtio 1.2 §4.2.2, "MMIO Device Register Layout",
//! version 2): a VMM with an MMIO bus maps [`MmioFront`] at the device's window and forwards
//! every access to [`MmioDevice::read`] / [`MmioDevice::write`].
//!
//! Registers are 32-bit and accessed with 4-byte, aligned accesses; other accesses to them
//! read as 0 and are ignored on write. The configuration space at `0x100` takes any width.
//! Writing `DRIVER_OK` to Status activates the device on the memory and interrupt line the
//! front was built with.

use std::sync::{Arc, Mutex};

use vm_memory::GuestMemoryMmap;

use super::{Notifier, STATUS_DRIVER_OK, Virtio9p};
use crate::co::Executor;
use crate::co::sync::LockExt;
use crate::fs::Filesystem;

/// Register offset: magic value "virt".
pub const MAGIC_VALUE: u64 = 0x000;
/// Register offset: device version (2).
pub const VERSION: u64 = 0x004;
/// Register offset: virtio device id.
pub const DEVICE_ID: u64 = 0x008;
/// Register offset: vendor id.
pub const VENDOR_ID: u64 = 0x00c;
/// Register offset: device features, the 32 bits `DEVICE_FEATURES_SEL` selects.
pub const DEVICE_FEATURES: u64 = 0x010;
/// Register offset: selects the word `DEVICE_FEATURES` shows.
pub const DEVICE_FEATURES_SEL: u64 = 0x014;
/// Register offset: driver features, the 32 bits `DRIVER_FEATURES_SEL` selects.
pub const DRIVER_FEATURES: u64 = 0x020;
/// Register offset: selects the word `DRIVER_FEATURES` sets.
pub const DRIVER_FEATURES_SEL: u64 = 0x024;
/// Register offset: selects the queue the `QUEUE_*` registers concern.
pub const QUEUE_SEL: u64 = 0x030;
/// Register offset: largest queue size the device takes.
pub const QUEUE_NUM_MAX: u64 = 0x034;
/// Register offset: queue size the driver chose.
pub const QUEUE_NUM: u64 = 0x038;
/// Register offset: queue ready.
pub const QUEUE_READY: u64 = 0x044;
/// Register offset: queue notification (the kick).
pub const QUEUE_NOTIFY: u64 = 0x050;
/// Register offset: interrupt status.
pub const INTERRUPT_STATUS: u64 = 0x060;
/// Register offset: interrupt acknowledge.
pub const INTERRUPT_ACK: u64 = 0x064;
/// Register offset: device status.
pub const STATUS: u64 = 0x070;
/// Register offset: descriptor table address, low 32 bits.
pub const QUEUE_DESC_LOW: u64 = 0x080;
/// Register offset: descriptor table address, high 32 bits.
pub const QUEUE_DESC_HIGH: u64 = 0x084;
/// Register offset: available ring address, low 32 bits.
pub const QUEUE_DRIVER_LOW: u64 = 0x090;
/// Register offset: available ring address, high 32 bits.
pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
/// Register offset: used ring address, low 32 bits.
pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
/// Register offset: used ring address, high 32 bits.
pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
/// Register offset: configuration generation.
pub const CONFIG_GENERATION: u64 = 0x0fc;
/// Where the device configuration space starts.
pub const CONFIG: u64 = 0x100;

/// "virt" in little-endian.
pub const MAGIC: u32 = 0x7472_6976;
/// co9p's vendor id: "co9p" in little-endian.
pub const VENDOR: u32 = 0x7039_6f63;

/// Anything mapped on an MMIO bus.
pub trait MmioDevice {
    /// A read of `data.len()` bytes at `offset`.
    fn read(&self, offset: u64, data: &mut [u8]);
    /// A write of `data` at `offset`.
    fn write(&self, offset: u64, data: &[u8]);
}

impl<T: MmioDevice + ?Sized> MmioDevice for Arc<T> {
    fn read(&self, offset: u64, data: &mut [u8]) {
        (**self).read(offset, data)
    }
    fn write(&self, offset: u64, data: &[u8]) {
        (**self).write(offset, data)
    }
}

#[derive(Default)]
struct Selectors {
    device_features: u32,
    driver_features: u32,
    queue: u32,
}

/// A [`Virtio9p`] behind the virtio-mmio registers.
pub struct MmioFront<F: Filesystem, E: Executor> {
    device: Arc<Virtio9p<F, E>>,
    mem: Arc<GuestMemoryMmap>,
    notifier: Notifier,
    sel: Mutex<Selectors>,
}

impl<F: Filesystem, E: Executor> MmioFront<F, E> {
    /// `notifier` raises the device's interrupt line; `mem` is the guest's RAM.
    pub fn new(device: Arc<Virtio9p<F, E>>, mem: Arc<GuestMemoryMmap>, notifier: Notifier) -> Self {
        MmioFront {
            device,
            mem,
            notifier,
            sel: Mutex::new(Selectors::default()),
        }
    }

    /// The device behind the registers.
    pub fn device(&self) -> &Arc<Virtio9p<F, E>> {
        &self.device
    }

    fn sel(&self) -> std::sync::MutexGuard<'_, Selectors> {
        self.sel.lock_unpoisoned()
    }

    fn read_reg(&self, offset: u64) -> u32 {
        let d = &self.device;
        let queue0 = self.sel().queue == 0;
        match offset {
            MAGIC_VALUE => MAGIC,
            VERSION => 2,
            DEVICE_ID => d.device_id(),
            VENDOR_ID => VENDOR,
            DEVICE_FEATURES => match self.sel().device_features {
                0 => d.device_features() as u32,
                1 => (d.device_features() >> 32) as u32,
                _ => 0,
            },
            QUEUE_NUM_MAX if queue0 => u32::from(d.queue_config().max_size),
            QUEUE_READY if queue0 => u32::from(d.queue_config().ready),
            INTERRUPT_STATUS => d.interrupt_status(),
            STATUS => u32::from(d.status()),
            CONFIG_GENERATION => d.config_generation(),
            _ => 0,
        }
    }

    fn write_reg(&self, offset: u64, v: u32) {
        let d = &self.device;
        let queue0 = self.sel().queue == 0;
        let q = d.queue_config();
        let low = |old: u64| (old & !0xffff_ffff) | u64::from(v);
        let high = |old: u64| (old & 0xffff_ffff) | (u64::from(v) << 32);
        match offset {
            DEVICE_FEATURES_SEL => self.sel().device_features = v,
            DRIVER_FEATURES_SEL => self.sel().driver_features = v,
            DRIVER_FEATURES => {
                let old = d.driver_features();
                match self.sel().driver_features {
                    0 => d.set_driver_features(low(old)),
                    1 => d.set_driver_features(high(old)),
                    _ => {}
                }
            }
            QUEUE_SEL => self.sel().queue = v,
            QUEUE_NUM if queue0 => {
                if let Ok(n) = u16::try_from(v) {
                    d.set_queue_size(n)
                }
            }
            QUEUE_READY if queue0 => d.set_queue_ready(v == 1),
            QUEUE_DESC_LOW if queue0 => d.set_queue_desc_table(low(q.desc_table)),
            QUEUE_DESC_HIGH if queue0 => d.set_queue_desc_table(high(q.desc_table)),
            QUEUE_DRIVER_LOW if queue0 => d.set_queue_avail_ring(low(q.avail_ring)),
            QUEUE_DRIVER_HIGH if queue0 => d.set_queue_avail_ring(high(q.avail_ring)),
            QUEUE_DEVICE_LOW if queue0 => d.set_queue_used_ring(low(q.used_ring)),
            QUEUE_DEVICE_HIGH if queue0 => d.set_queue_used_ring(high(q.used_ring)),
            QUEUE_NOTIFY if v == 0 => d.handle_kick(),
            INTERRUPT_ACK => d.ack_interrupt(v),
            STATUS => {
                let Ok(s) = u8::try_from(v) else { return };
                let was_ok = d.status() & STATUS_DRIVER_OK != 0;
                d.set_status(s);
                if !was_ok && d.status() & STATUS_DRIVER_OK != 0 {
                    // A bad queue sets NEEDS_RESET inside; nothing else to do here.
                    let _ = d.activate(self.mem.clone(), self.notifier.clone());
                }
            }
            _ => {}
        }
    }
}

impl<F: Filesystem, E: Executor> MmioDevice for MmioFront<F, E> {
    fn read(&self, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG {
            return self.device.read_config(offset - CONFIG, data);
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
        if offset >= CONFIG {
            return self.device.write_config(offset - CONFIG, data);
        }
        if let Ok(b) = <[u8; 4]>::try_from(data) {
            if offset % 4 == 0 {
                self.write_reg(offset, u32::from_le_bytes(b));
            }
        }
    }
}
