//! How a simulated client reaches the device.
//!
//! - [`Link::Direct`]: frames go straight into a `Session` and replies come back through
//!   the journal — the stream transport without its socket.
//! - [`Link::Virtio`]: a virtio-9p device ([`co9p::transport::virtio::Virtio9p`]) that a
//!   virtual guest brings up through its MMIO registers and drives over a split virtqueue in
//!   guest RAM (the harness), laying requests out as Linux's 9pnet_virtio does (plain, or
//!   zero-copy for large reads and writes, sometimes through indirect tables). The device's
//!   interrupt puts a marker in the journal; the world reads the used ring when it meets the
//!   marker, so a reply is judged exactly where the device signalled it. A used entry the
//!   device did not signal is a lost interrupt.
//!
//! A device reset (status 0 through MMIO) is the virtio form of a client reset: every
//! request in flight is cancelled, and the device is booted again through the registers.
//!
//! Some devices' drivers also misbehave (`driver.rs`): a wrong bring-up before the real one,
//! register writes while running, chains with less room than a reply header, and guest RAM
//! moved to a new host mapping between kicks.
//!
//! A third of the devices are vhost-user ones (`vhost.rs`): handed their ring whole rather
//! than set up through the registers, and now and then stopped and handed it again with
//! the session carrying over; their resets go through a ring stop that cannot wait.

mod driver;
mod vhost;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use co9p::protocol::{PAYLOAD_HEADER_LEN, Tmessage};
use co9p::server::{Config, Latch, Session};
use co9p::transport::virtio::harness::{
    BootOptions, GuestRam, IrqLine, Layout, PAGE, VirtualGuest,
};
use co9p::transport::virtio::mmio::MmioFront;
use co9p::transport::virtio::{DeviceConfig, DeviceStats, Virtio9p, VirtioResponder};

use crate::executor::SimExecutor;
use crate::journal::{Event, Journal, SimResponder};

type Fs = crate::world::Fs;

/// Which transport the clients of a run use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// Every client calls the session directly.
    Direct,
    /// Every client is a guest driving its own virtio-9p device.
    Virtio,
    /// Each seed draws a share of virtio clients (none, half, all).
    Swarm,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Direct => "direct",
            Transport::Virtio => "virtio",
            Transport::Swarm => "swarm",
        }
    }
    pub fn from_name(s: &str) -> Option<Transport> {
        [Transport::Direct, Transport::Virtio, Transport::Swarm]
            .into_iter()
            .find(|x| x.name() == s)
    }
}

/// A connection's session, as the checks see it.
pub enum Link {
    Direct(Session<Fs, SimExecutor, SimResponder>),
    /// The session of device `dev` while this connection lasted (until a reset).
    Virtio {
        dev: usize,
        session: Session<Fs, SimExecutor, VirtioResponder>,
    },
}

impl Link {
    pub fn fid_count(&self) -> usize {
        match self {
            Link::Direct(s) => s.fid_count(),
            Link::Virtio { session, .. } => session.fid_count(),
        }
    }

    /// The msize the session says it negotiated (what an embedder reads).
    pub fn msize(&self) -> u32 {
        match self {
            Link::Direct(s) => s.msize(),
            Link::Virtio { session, .. } => session.msize(),
        }
    }

    pub fn inflight(&self) -> usize {
        match self {
            Link::Direct(s) => s.inflight(),
            Link::Virtio { session, .. } => session.inflight(),
        }
    }

    /// Whether the session asks its transport to stop reading.
    pub fn is_full(&self) -> bool {
        match self {
            Link::Direct(s) => s.is_full(),
            Link::Virtio { session, .. } => session.is_full(),
        }
    }

    /// The request-slot limit the session was configured with.
    pub fn max_inflight(&self, server: &Config) -> usize {
        match self {
            Link::Direct(_) => server.max_inflight,
            Link::Virtio { .. } => virtio_max_inflight(server),
        }
    }
}

/// A virtio device's request slots: at least a queue's worth (see `DeviceConfig`).
fn virtio_max_inflight(server: &Config) -> usize {
    server.max_inflight.max(usize::from(QUEUE))
}

/// Guest RAM per device: the rings, and buffers for the requests in flight.
const RAM: usize = 64 << 20;
/// Queue size: room for every client's requests and flushes in flight.
const QUEUE: u16 = 256;
/// Linux sends reads, readdirs and writes above this through the zero-copy layouts.
const ZC_MIN: u32 = 1024;
/// Mixed into the seed for the stream of buffer skews.
const SKEW_STREAM: u64 = 0x5CE3_0000_0000_0001;
/// Mixed into the seed for the stream of scattered chains.
const SPLIT_STREAM: u64 = 0x5CE3_0000_0000_0002;
/// Mixed into the seed for where guest RAM's memory regions meet.
const REGION_STREAM: u64 = 0x5CE3_0000_0000_0003;
/// Mixed into the seed for the vhost-user devices' choices (`vhost.rs`).
const VHOST_STREAM: u64 = 0x5CE3_0000_0000_0004;

/// One virtio-9p device with the virtual guest that drives it.
///
/// The guest behaves as Linux's driver may: it publishes several chains before it kicks
/// (the requests of several threads between two notifications, [`Self::batch`]), may
/// kick late, kicks only when the device asked for it (`avail_event` with
/// RING_EVENT_IDX, which most devices negotiate, else the used ring's NO_NOTIFY flag),
/// and handles an interrupt when it gets to it — reading every used entry then and
/// asking, through `used_event`, for an interrupt at the next one. Kicks (and the ones
/// suppressed), used entries and interrupts go into the trace and its hash.
pub struct VirtioDev {
    pub guest: VirtualGuest<MmioFront<Fs, SimExecutor>>,
    /// Interrupts the device raised.
    pub interrupts: u64,
    /// The world's connection the device serves now.
    pub conn: usize,
    /// The request (the world's index) of each chain in flight, by head.
    heads: BTreeMap<u16, usize>,
    /// Chains published since the last kick (their requests, the world's indices).
    pub unkicked: Vec<usize>,
    /// The guest kicks once this many chains wait (or later, when the world says so).
    pub batch: usize,
    /// An interrupt came that the guest has not handled yet.
    pub irq_pending: bool,
    /// Whether the driver offers RING_EVENT_IDX.
    pub event_idx: bool,
    id: usize,
    ex: SimExecutor,
    /// This driver's own choices (misbehaviour), from the seed.
    rng: ChaCha8Rng,
    /// How often it brings the device up wrongly first, sends a chain with too little
    /// room before a request, writes registers it must not while running, moves RAM.
    misboot: f64,
    tiny: f64,
    poke: f64,
    remap: f64,
    /// Heads of the chains with too little room still in flight.
    tiny_heads: BTreeSet<u16>,
    /// Heads of the broken chains still in flight, with the page each one's request and
    /// room are in.
    wild_heads: BTreeMap<u16, u64>,
    /// Where in a page the data buffers of zero-copy reads begin: a stream of its own
    /// (so the draws above are the same with or without it); `None` for a driver whose
    /// buffers are page-aligned.
    skew: Option<ChaCha8Rng>,
    /// Which of the other chains are scattered over buffers of any size
    /// ([`Layout::Split`]): a stream of its own too; `None` for a driver that lays every
    /// message out in one buffer each way.
    split: Option<ChaCha8Rng>,
    /// Whether the device is a vhost-user one (`vhost.rs`): handed its ring whole, never
    /// set up through its registers.
    vhost: bool,
    /// How often a vhost device's ring is taken back and handed over again while nothing
    /// runs.
    handover: f64,
    /// The vhost-user frontend's choices: a stream of its own.
    hrng: ChaCha8Rng,
    /// The interrupt, as a frontend hands it to a vhost device.
    notifier: co9p::transport::virtio::Notifier,
    /// The device's counters at the last boot, when its ring stood at 0: from there the
    /// chains it took and completed must match the ring's two indices.
    stats_at_boot: DeviceStats,
}

/// One chain the device completed: the request it carried and the reply bytes (empty if
/// the request was cancelled before it had effect: the chain comes back without a reply).
pub struct Done {
    pub req: usize,
    pub frame: Vec<u8>,
}

impl VirtioDev {
    /// A device over `fs` on `ex`, its interrupt wired to a journal marker
    /// ([`Event::Irq`] with `id`), booted.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: usize,
        fs: Arc<Fs>,
        ex: SimExecutor,
        server: &Config,
        journal: Journal,
        batch: usize,
        event_idx: bool,
        seed: u64,
    ) -> Result<VirtioDev, String> {
        let config = DeviceConfig {
            server: Config {
                max_inflight: virtio_max_inflight(server),
                ..server.clone()
            },
            // More than the guest sets up: the device must use the size it is given.
            queue_max_size: 2 * QUEUE,
            ..DeviceConfig::new(format!("sim{id}"))
        };
        let device = Arc::new(Virtio9p::new(config, fs, ex.clone()).map_err(|e| e.to_string())?);
        // Half the devices see guest RAM as many memory regions that touch, near its
        // start where the rings and buffers are: rings, tables and buffers then cross
        // from one host mapping into another.
        let mut regions = ChaCha8Rng::seed_from_u64(seed ^ REGION_STREAM);
        let cuts: Vec<u64> = if regions.random_bool(0.5) {
            let mut at = 0;
            (0..32)
                .map(|_| {
                    at += regions.random_range(1..=24u64) * 1024;
                    at
                })
                .collect()
        } else {
            Vec::new()
        };
        let ram = GuestRam::with_cuts(RAM, &cuts);
        let notifier: co9p::transport::virtio::Notifier =
            Arc::new(move || journal.push(Event::Irq(id)));
        let front = MmioFront::new(device, ram.memory().clone(), notifier.clone());
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut often = |p: f64| if rng.random_bool(0.5) { p } else { 0.0 };
        let (misboot, tiny, poke, remap) = (often(0.5), often(0.1), often(0.02), often(0.02));
        let mut skew = ChaCha8Rng::seed_from_u64(seed ^ SKEW_STREAM);
        let skew = skew.random_bool(0.5).then_some(skew);
        let mut split = ChaCha8Rng::seed_from_u64(seed ^ SPLIT_STREAM);
        let split = split.random_bool(0.5).then_some(split);
        // A third of the devices are vhost-user ones; most of those have their ring taken
        // back and handed over again now and then.
        let mut hrng = ChaCha8Rng::seed_from_u64(seed ^ VHOST_STREAM);
        let vhost = hrng.random_bool(1.0 / 3.0);
        let handover = if hrng.random_bool(0.75) { 0.05 } else { 0.0 };
        let mut dev = VirtioDev {
            guest: VirtualGuest::new(front, ram, IrqLine::new()),
            interrupts: 0,
            conn: 0,
            heads: BTreeMap::new(),
            unkicked: Vec::new(),
            batch: batch.max(1),
            irq_pending: false,
            event_idx,
            id,
            ex,
            rng,
            misboot,
            tiny,
            poke,
            remap,
            tiny_heads: BTreeSet::new(),
            wild_heads: BTreeMap::new(),
            skew,
            split,
            vhost,
            handover,
            hrng,
            notifier,
            stats_at_boot: DeviceStats::default(),
        };
        dev.boot()?;
        Ok(dev)
    }

    /// Brings the device up through its registers, as a driver does at probe.
    pub fn boot(&mut self) -> Result<(), String> {
        if self.vhost {
            self.vhost_boot()?;
        } else {
            self.mmio_boot()?;
        }
        self.stats_at_boot = self.guest.device().stats();
        Ok(())
    }

    /// Boots through the MMIO registers, maybe after a wrong bring-up.
    fn mmio_boot(&mut self) -> Result<(), String> {
        if self.rng.random_bool(self.misboot) {
            self.misboot()?;
        }
        let mut opts = BootOptions {
            queue_size: QUEUE,
            ..BootOptions::default()
        };
        if !self.event_idx {
            opts.features &= !co9p::transport::virtio::F_RING_EVENT_IDX;
        }
        self.guest.boot(&opts).map_err(|e| format!("{e:?}"))?;
        self.check_identity(format!("sim{}", self.id).as_bytes())?;
        // The front activated the device on the RAM it was built with; RAM moved since.
        self.guest.resync_memory();
        Ok(())
    }

    /// The device's current session (a new one after every reset).
    pub fn session(&self) -> Session<Fs, SimExecutor, VirtioResponder> {
        self.guest.device().session()
    }

    /// Sends one request as Linux would lay it out for a session of `msize`, and kicks
    /// the device if it asked to be notified. The device reads the chain inside the kick.
    pub fn send(
        &mut self,
        req: usize,
        frame: &[u8],
        msg: &Tmessage,
        msize: u32,
        indirect: bool,
    ) -> Result<(), String> {
        if self.rng.random_bool(self.tiny) {
            if self.rng.random_bool(0.5) {
                self.send_tiny()?;
            } else {
                self.send_wild()?;
            }
        }
        // Half the skews near the page's end, so that even a short reply crosses.
        let skew = self.skew.as_mut().map_or(0, |r| {
            let page = PAGE as u32;
            if r.random_bool(0.5) {
                page - r.random_range(1..=256)
            } else {
                r.random_range(0..page)
            }
        });
        let mut layout = layout(frame, msg, msize, skew);
        // A third of the other chains scattered over buffers of any size, the reply's
        // header among them.
        if let (Layout::Plain { room }, Some(r)) = (layout, self.split.as_mut())
            && r.random_bool(0.3)
        {
            let read_cut = r.random_range(1..frame.len() as u32);
            let write_cuts = [(); 3].map(|()| [0, 1, 3, 4, 7, 11, 16, 100][r.random_range(0..8)]);
            layout = Layout::Split {
                read_cut,
                write_cuts,
                room,
            };
        }
        let Some(head) = self.guest.submit(frame, layout, indirect) else {
            return Err(format!(
                "no room for a chain ({} descriptors free, {} chains in flight)",
                self.guest.free_descriptors(),
                self.guest.in_flight()
            ));
        };
        self.heads.insert(head, req);
        self.unkicked.push(req);
        Ok(())
    }

    /// Whether the guest's batch is full (it kicks now).
    pub fn batch_full(&self) -> bool {
        self.unkicked.len() >= self.batch
    }

    /// Notifies the device of the chains published since the last kick, if it asked to
    /// be (the device reads them inside the notification). Returns the requests whose
    /// chains the device has read (none if it did not ask to be notified: it will read
    /// them when it next looks at the ring).
    pub fn kick(&mut self) -> Vec<usize> {
        if self.unkicked.is_empty() {
            return Vec::new();
        }
        let n = self.unkicked.len();
        let id = self.id;
        let wanted = self.guest.needs_kick();
        let payload = [id as u8, n as u8, wanted as u8];
        self.ex.record_line(b'K', &payload, || {
            format!(
                "virtio dev={id} {} chains {}",
                n,
                if wanted { "kick" } else { "kick suppressed" }
            )
        });
        if wanted {
            self.guest.kick();
            std::mem::take(&mut self.unkicked)
        } else {
            Vec::new()
        }
    }

    /// The device raised its interrupt.
    pub fn raise(&mut self) {
        self.interrupts += 1;
        self.irq_pending = true;
        let (id, n) = (self.id, self.interrupts);
        self.ex.record_line(b'I', &[id as u8], || {
            format!("virtio dev={id} interrupt #{n}")
        });
    }

    /// The guest handles the interrupt: acknowledges it and collects the replies the
    /// device has completed. Each reply must be exactly as long as the device said it is.
    pub fn on_interrupt(&mut self) -> Result<Vec<Done>, String> {
        self.irq_pending = false;
        // Writing InterruptACK clears the bits written (virtio-mmio); nothing runs between
        // the write and this read, so none may be set again yet.
        let acked = self.guest.take_interrupt();
        let left = self.guest.device().interrupt_status();
        if left & acked != 0 {
            return Err(format!(
                "interrupt status {left:#x} after the driver acknowledged {acked:#x}"
            ));
        }
        self.collect()
    }

    /// New used entries, each with its request.
    pub fn collect(&mut self) -> Result<Vec<Done>, String> {
        let mut done = Vec::new();
        for c in self.guest.poll_used() {
            let id = self.id;
            let mut payload = vec![id as u8];
            payload.extend_from_slice(&c.head.to_le_bytes());
            payload.extend_from_slice(&c.len.to_le_bytes());
            self.ex.record_line(b'U', &payload, || {
                format!("virtio dev={id} used head={} len={}", c.head, c.len)
            });
            if self.tiny_heads.remove(&c.head) {
                self.tiny_used(c.head, c.len)?;
                continue;
            }
            if let Some(page) = self.wild_heads.remove(&c.head) {
                self.wild_used(page, &c)?;
                continue;
            }
            let Some(req) = self.heads.remove(&c.head) else {
                return Err(format!("used entry of head {} names no request", c.head));
            };
            if c.reply.len() != c.len as usize {
                return Err(format!(
                    "used entry of head {} says {} bytes; its buffers hold {}",
                    c.head,
                    c.len,
                    c.reply.len()
                ));
            }
            done.push(Done {
                req,
                frame: c.reply,
            });
        }
        if self.guest.unexpected_used() != 0 {
            return Err(format!(
                "{} used entries named no chain in flight",
                self.guest.unexpected_used()
            ));
        }
        Ok(done)
    }

    /// Resets the device through its status register (every request in flight cancelled,
    /// every fid gone) and boots it again. The latch opens when the cancelled requests
    /// have finished.
    pub fn reset(&mut self) -> Result<Arc<Latch>, String> {
        if self.vhost {
            self.vhost_reset()?;
        } else {
            self.guest.reset();
        }
        self.heads.clear();
        self.tiny_heads.clear();
        self.forget_wild();
        self.unkicked.clear();
        self.irq_pending = false;
        let latch = self
            .guest
            .device()
            .reset_latch()
            .ok_or("a reset left no latch")?;
        self.boot()?;
        Ok(latch)
    }

    /// Resets the device for good (the end of the run).
    pub fn shut_down(&mut self) -> Result<Arc<Latch>, String> {
        if !self.tiny_heads.is_empty() {
            return Err(format!(
                "chains with too little room never came back: heads {:?}",
                self.tiny_heads
            ));
        }
        if !self.wild_heads.is_empty() {
            return Err(format!(
                "broken chains never came back: heads {:?}",
                self.wild_heads.keys()
            ));
        }
        self.guest.reset();
        self.heads.clear();
        self.unkicked.clear();
        self.irq_pending = false;
        self.guest
            .device()
            .reset_latch()
            .ok_or_else(|| "a reset left no latch".to_string())
    }
}

/// The chain layout Linux's 9pnet_virtio uses for `msg`: large reads and readdirs get an
/// 11-byte header buffer and data pages, large writes a small header and payload pages.
fn layout(frame: &[u8], msg: &Tmessage, msize: u32, skew: u32) -> Layout {
    let payload = u32::try_from(PAYLOAD_HEADER_LEN).unwrap_or(11);
    match msg {
        Tmessage::Read { count, .. } | Tmessage::Readdir { count, .. }
            if *count > ZC_MIN && msize > payload =>
        {
            Layout::ZeroCopyRead {
                data: (*count).min(msize - payload),
                skew,
            }
        }
        Tmessage::Write { data, .. } if data.0.len() > ZC_MIN as usize => Layout::ZeroCopyWrite {
            header: (frame.len() - data.0.len()) as u32,
            room: 4096.min(msize),
            // Most writes' pages lie apart, as a user buffer's pinned pages do (the device
            // gets the data in slices); where buffers are skewed, half follow one another.
            apart: skew == 0 || skew % 2 == 1,
        },
        _ => Layout::Plain { room: msize },
    }
}
