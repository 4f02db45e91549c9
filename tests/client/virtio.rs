//! The virtio link: frames travel as descriptor chains through a virtio-9p device, driven
//! by the harness guest (MMIO registers, split virtqueue in guest RAM), with the device's
//! executor run on the test's thread inside `recv` (deterministic, like `InProcess`).
//!
//! Chains are laid out as Linux's 9pnet_virtio does: a `Tread`/`Treaddir` of more than
//! 1024 bytes gets the zero-copy layout (an 11-byte writable header buffer, then data
//! pages), a `Twrite` of more than 1024 bytes a 23-byte readable header then payload pages;
//! everything else one readable buffer and one writable buffer of msize.
//!
//! ```ignore
//! let mut c = Client::new(client::virtio::Virtio::new(Arc::new(MemFs::new()), Config::default()));
//! c.attach_root();
//! ```
#![allow(dead_code)]

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use co9p::co::{PoolHandle, ThreadPool};
use co9p::fs::hooked::{Hook, HookedFs, OpKind};
use co9p::fs::{Filesystem, FsResult, MemFs};
use co9p::protocol::{HEADER_LEN, TWRITE_HEADER_LEN};
use co9p::server::Config;
use co9p::transport::virtio::harness::{BootOptions, Completion, Layout, VirtualGuest};
use co9p::transport::virtio::mmio::MmioFront;
use co9p::transport::virtio::{DeviceConfig, Virtio9p};

use super::Link;

/// Linux switches to zero-copy above this many bytes.
const ZC_THRESHOLD: u32 = 1024;
/// Linux's reply room for a zero-copy `Twrite` (`P9_ZC_HDR_SZ`).
const ZC_HDR_ROOM: u32 = 4096;

/// Blocks writes while set, until the request is flushed (QEMU's synth "should_block").
#[derive(Default)]
pub struct Gate {
    pub block_writes: AtomicBool,
}

impl Hook for Gate {
    fn before(&self, op: OpKind) -> impl Future<Output = FsResult<()>> + Send {
        let block = op == OpKind::Write && self.block_writes.load(Ordering::SeqCst);
        async move {
            if block {
                std::future::pending::<()>().await;
            }
            Ok(())
        }
    }
}

/// MemFs behind a [`Gate`].
pub type GatedFs = HookedFs<MemFs, Gate>;

pub struct Virtio<F: Filesystem> {
    pub pool: ThreadPool,
    pub guest: VirtualGuest<MmioFront<F, PoolHandle>>,
    /// Send every chain through an indirect table.
    pub indirect: bool,
    /// Use the zero-copy layouts for large reads and writes (as Linux does).
    pub zero_copy: bool,
    /// Every used entry seen, in order (including length-0 ones).
    pub completions: Vec<Completion>,
    msize: u32,
    /// Replies received and not yet taken by `recv`.
    pub replies: VecDeque<Vec<u8>>,
}

impl<F: Filesystem> Virtio<F> {
    /// A device with tag "co9p", booted with every feature, 32 MiB of guest RAM.
    pub fn new(fs: Arc<F>, config: Config) -> Self {
        let mut dc = DeviceConfig::new("co9p");
        dc.server = config;
        Self::with(fs, dc, 32 << 20, &BootOptions::default())
    }

    pub fn with(fs: Arc<F>, dc: DeviceConfig, ram: usize, boot: &BootOptions) -> Self {
        let pool = ThreadPool::new(0);
        let dev = Arc::new(Virtio9p::new(dc, fs, pool.handle()).expect("device config"));
        let mut guest = VirtualGuest::with_device(dev, ram);
        guest.boot(boot).expect("boot");
        Virtio {
            pool,
            guest,
            indirect: false,
            zero_copy: true,
            completions: Vec::new(),
            msize: 8192,
            replies: VecDeque::new(),
        }
    }

    pub fn device(&self) -> &Arc<Virtio9p<F, PoolHandle>> {
        self.guest.device()
    }

    /// The layout Linux would use for `frame`.
    pub fn layout_for(&self, frame: &[u8]) -> Layout {
        linux_layout(frame, self.msize, self.zero_copy)
    }

    /// Every chain is accounted for: none in flight, no used entry for a chain nobody
    /// posted, every chain the device popped completed, and no NEEDS_RESET. `Err` says
    /// which is not so.
    pub fn settled(&self) -> Result<(), String> {
        let in_flight = self.guest.in_flight();
        let unexpected = self.guest.unexpected_used();
        let s = self.device().stats();
        let status = self.device().status();
        if in_flight != 0 || unexpected != 0 || s.popped != s.completed {
            return Err(format!(
                "{in_flight} chains in flight, {unexpected} unexpected used entries, {} popped, {} completed",
                s.popped, s.completed
            ));
        }
        if status & co9p::transport::virtio::STATUS_NEEDS_RESET != 0 {
            return Err(format!("device status {status:#x}: NEEDS_RESET"));
        }
        Ok(())
    }

    /// Runs the device until idle and collects what the used ring holds.
    pub fn collect(&mut self) -> usize {
        self.pool.run_until_idle();
        let done = self.guest.poll_used();
        let n = done.len();
        for c in done {
            if c.len > 0 {
                // Learn msize from an Rversion, to size later reply buffers as Linux does.
                if c.reply.len() >= 11 && c.reply[4] == 101 {
                    self.msize =
                        u32::from_le_bytes([c.reply[7], c.reply[8], c.reply[9], c.reply[10]]);
                }
                self.replies.push_back(c.reply.clone());
            }
            self.completions.push(c);
        }
        n
    }
}

impl<F: Filesystem> Link for Virtio<F> {
    fn send(&mut self, frame: Vec<u8>) {
        let layout = self.layout_for(&frame);
        self.guest
            .submit(&frame, layout, self.indirect)
            .expect("queue or guest RAM full");
        self.guest.kick();
    }

    fn recv(&mut self) -> Option<Vec<u8>> {
        if self.replies.is_empty() {
            self.collect();
        }
        self.replies.pop_front()
    }
}

/// The chain layout Linux's 9pnet_virtio uses for `frame` at `msize`: zero-copy for large
/// reads and writes (when `zero_copy`), else one readable and one writable buffer.
pub fn linux_layout(frame: &[u8], msize: u32, zero_copy: bool) -> Layout {
    let plain = Layout::Plain { room: msize };
    if !zero_copy || frame.len() < HEADER_LEN {
        return plain;
    }
    let count = |at: usize| {
        frame
            .get(at..at + 4)
            .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    match frame[4] {
        // Tread, Treaddir: fid[4] offset[8] count[4].
        116 | 40 if count(19) > ZC_THRESHOLD => Layout::ZeroCopyRead {
            data: count(19).min(msize.saturating_sub(11)),
            skew: 0,
        },
        118 if frame.len() - TWRITE_HEADER_LEN > ZC_THRESHOLD as usize => Layout::ZeroCopyWrite {
            header: TWRITE_HEADER_LEN as u32,
            room: ZC_HDR_ROOM,
            apart: true,
        },
        _ => plain,
    }
}
