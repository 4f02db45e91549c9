//! virtio-9p through the virtual guest: request rate and bulk-read bandwidth.
//!
//! The device runs on a zero-thread pool driven by the bench thread, so the figures are
//! the whole request path on one core: chain building by the guest, kick, chain walk and
//! checks, decode, handler, reply into guest memory, used ring, interrupt, guest
//! collection. Plain `main` printing figures; no timed assertions.
//!
//! Run: `cargo bench --bench virtio`

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use co9p::co::{PoolHandle, ThreadPool};
use co9p::fs::MemFs;
use co9p::protocol::*;
use co9p::server::Config;
use co9p::transport::virtio::harness::{BootOptions, Layout, RawDesc, VirtualGuest};
use co9p::transport::virtio::mmio::MmioFront;
use co9p::transport::virtio::{DeviceConfig, Virtio9p};
use vm_memory::{GuestAddress, GuestMemoryBackend};

const MIB: usize = 1 << 20;

type Guest = VirtualGuest<MmioFront<MemFs, PoolHandle>>;

struct Rig {
    pool: ThreadPool,
    guest: Guest,
    msize: u32,
}

impl Rig {
    fn new(msize: u32, queue: u16) -> Rig {
        let pool = ThreadPool::new(0);
        let mut dc = DeviceConfig::new("bench");
        dc.server = Config {
            max_msize: msize,
            ..Config::default()
        };
        dc.queue_max_size = queue;
        let dev = Arc::new(Virtio9p::new(dc, Arc::new(MemFs::new()), pool.handle()).unwrap());
        let mut guest = VirtualGuest::with_device(dev, 64 * MIB);
        let opts = BootOptions {
            queue_size: queue,
            ..BootOptions::default()
        };
        guest.boot(&opts).unwrap();
        let mut rig = Rig { pool, guest, msize };
        rig.rpc(
            Tag::NOTAG,
            Tmessage::Version {
                msize,
                version: VERSION_9P2000_L.into(),
            },
        );
        rig.rpc(
            Tag(1),
            Tmessage::Attach {
                fid: Fid(0),
                afid: Fid::NOFID,
                uname: "root".into(),
                aname: "".into(),
                n_uname: 0,
            },
        );
        rig
    }

    fn rpc(&mut self, tag: Tag, msg: Tmessage) -> Rmessage {
        let frame = Request::new(tag, msg).to_bytes().unwrap();
        let layout = Layout::Plain { room: self.msize };
        self.guest.submit(&frame, layout, false).unwrap();
        self.guest.kick();
        self.pool.run_until_idle();
        let done = self.guest.poll_used();
        Reply::decode(&done[0].reply, u32::MAX).unwrap().msg
    }
}

fn getattr_rate() {
    let mut rig = Rig::new(8192, 256);
    rig.guest.set_copy_replies(false);
    let frame = Request::new(
        Tag(7),
        Tmessage::Getattr {
            fid: Fid(0),
            request_mask: GetattrMask::ALL,
        },
    )
    .to_bytes()
    .unwrap();
    for batch in [1usize, 64] {
        let rounds = 200_000 / batch / scale();
        let run = |rig: &mut Rig, rounds: usize| {
            let mut n = 0;
            for _ in 0..rounds {
                for _ in 0..batch {
                    rig.guest
                        .submit(&frame, Layout::Plain { room: 512 }, false)
                        .unwrap();
                }
                rig.guest.kick();
                rig.pool.run_until_idle();
                n += rig.guest.poll_used().len();
            }
            n
        };
        run(&mut rig, rounds / 10);
        let t = Instant::now();
        let n = run(&mut rig, rounds);
        let dt = t.elapsed().as_secs_f64();
        assert_eq!(n, rounds * batch);
        println!(
            "Tgetattr, {batch:>2} per kick: {:>9.0} PDUs/s ({:.2} us each)",
            n as f64 / dt,
            dt * 1e6 / n as f64
        );
    }
}

fn read_bandwidth() {
    let msize = (MIB + 4096) as u32;
    let mut rig = Rig::new(msize, 512);
    // A 1 MiB file in MemFs.
    rig.rpc(
        Tag(2),
        Tmessage::Walk {
            fid: Fid(0),
            newfid: Fid(1),
            wnames: vec![],
        },
    );
    rig.rpc(
        Tag(3),
        Tmessage::Lcreate {
            fid: Fid(1),
            name: "big".into(),
            flags: OpenFlags::RDWR,
            mode: 0o644,
            gid: 0,
        },
    );
    let data: Vec<u8> = (0..MIB).map(|i| (i * 31 + i / 4096) as u8).collect();
    let w = rig.rpc(
        Tag(4),
        Tmessage::Write {
            fid: Fid(1),
            offset: 0,
            data: Data(data.clone()),
        },
    );
    assert_eq!(w, Rmessage::Write { count: MIB as u32 });
    let read = Request::new(
        Tag(5),
        Tmessage::Read {
            fid: Fid(1),
            offset: 0,
            count: MIB as u32,
        },
    )
    .to_bytes()
    .unwrap();
    // Check once, with the reply copied out, that the data arrived whole.
    rig.guest
        .submit(
            &read,
            Layout::ZeroCopyRead {
                data: MIB as u32,
                skew: 0,
            },
            false,
        )
        .unwrap();
    rig.guest.kick();
    rig.pool.run_until_idle();
    let done = rig.guest.poll_used();
    assert_eq!(done[0].len as usize, 11 + MIB);
    assert_eq!(&done[0].reply[11..], &data[..]);
    rig.guest.set_copy_replies(false);

    let iters = 2000 / scale();
    let mem = rig.guest.ram.memory().clone();
    let mbs = |secs: f64| (iters * MIB) as f64 / secs / 1e6;

    // 1. The device alone. Fixed guest buffers laid out as Linux lays a zero-copy read
    //    (the request, an 11-byte header buffer, 256 separate data pages), taken once:
    //    every read lands in the same pages, and the memcpy baseline copies into those
    //    same pages, so the two differ only by what the device does. Timed from the kick
    //    to the used entry: chain walk and checks, decode, handler, MemFs copy into guest
    //    pages, reply header, used ring, interrupt.
    //
    //    The pages are either contiguous in guest memory (the device merges them into one
    //    buffer), or scattered: every other page of a 2 MiB area, in reverse order, so no
    //    two are adjacent and nothing merges.
    let req = rig.guest.alloc(4096).unwrap();
    rig.guest.write_ram(req, &read);
    let hdr = rig.guest.alloc(4096).unwrap();
    let contiguous_pages: Vec<u64> = (0..MIB / 4096)
        .map(|_| rig.guest.alloc(4096).unwrap())
        .collect();
    assert!(contiguous_pages.windows(2).all(|w| w[1] == w[0] + 4096));
    let area = rig.guest.alloc(2 * MIB as u64).unwrap();
    let scattered_pages: Vec<u64> = (0..MIB as u64 / 4096)
        .rev()
        .map(|i| area + 8192 * i + 4096)
        .collect();
    let chain_over = |pages: &[u64]| {
        let mut chain = vec![
            RawDesc::readable(req, read.len() as u32),
            RawDesc::writable(hdr, 11),
        ];
        chain.extend(pages.iter().map(|&p| RawDesc::writable(p, 4096)));
        let last = chain.len() - 1;
        for (i, d) in chain.iter_mut().enumerate().take(last) {
            *d = d.then(i as u16 + 1);
        }
        chain
    };
    let chain = chain_over(&contiguous_pages);
    let scattered = chain_over(&scattered_pages);
    let (table, table_len) = rig.guest.indirect_table(&chain).unwrap();
    let (stable, stable_len) = rig.guest.indirect_table(&scattered).unwrap();
    let big = rig.guest.alloc((MIB + 4096) as u64).unwrap();
    let variants: [(&str, Vec<RawDesc>, &[u64]); 5] = [
        ("256 contiguous pages", chain.clone(), &contiguous_pages),
        (
            "the same, indirect table",
            vec![RawDesc::indirect(table, table_len)],
            &contiguous_pages,
        ),
        ("256 scattered pages", scattered.clone(), &scattered_pages),
        (
            "the same, indirect table",
            vec![RawDesc::indirect(stable, stable_len)],
            &scattered_pages,
        ),
        (
            "one 1 MiB buffer",
            vec![
                RawDesc::readable(req, read.len() as u32).then(1),
                RawDesc::writable(big, (11 + MIB) as u32),
            ],
            &contiguous_pages,
        ),
    ];
    // The baselines: the same 1 MiB memcpy'd into the same 256 pages (one copy per page),
    // and into one contiguous buffer. Each iteration times the device read and both copies
    // in turn, so the machine's noise falls on all three alike.
    let host = |a: u64, len: usize| {
        let p = mem.get_host_address(GuestAddress(a)).unwrap();
        // SAFETY: `a..a + len` is an allocation inside the single guest RAM region, mapped
        // while `mem` lives; nothing else touches it during the copies.
        unsafe { std::slice::from_raw_parts_mut(p, len) }
    };
    let into_pages = |pages: &[u64]| {
        for (i, &p) in pages.iter().enumerate() {
            host(p, 4096).copy_from_slice(black_box(&data[i * 4096..(i + 1) * 4096]));
        }
    };
    let contiguous = || {
        let out = host(big, MIB);
        out.copy_from_slice(black_box(&data));
        black_box(&out[..1]);
    };
    let time = |f: &mut dyn FnMut()| {
        let t = Instant::now();
        f();
        t.elapsed().as_secs_f64()
    };
    // Once each, checked: the read fills the pages with the file's bytes.
    for (_, descs, pages) in &variants[..4] {
        for &p in *pages {
            rig.guest.write_ram(p, &[0u8; 4096]);
        }
        rig.guest.inject(descs).unwrap();
        rig.guest.kick();
        rig.pool.run_until_idle();
        assert_eq!(rig.guest.poll_used()[0].len as usize, 11 + MIB);
        for (i, &p) in pages.iter().enumerate() {
            assert_eq!(
                rig.guest.read_ram(p, 4096),
                &data[i * 4096..(i + 1) * 4096],
                "page {i} of the read holds the file's bytes"
            );
        }
    }
    let mut walk = BareWalk::new(chain.len() as u16);
    println!(
        "Tread 1 MiB from MemFs, timed from kick to used entry, each next to memcpys of 1 MiB:"
    );
    for (name, descs, pages) in &variants {
        let mut run = |rig: &mut Rig, n: usize| {
            let mut secs = [0f64; 6];
            for _ in 0..n {
                rig.guest.inject(descs).unwrap();
                let t = Instant::now();
                rig.guest.kick();
                let kicked = t.elapsed().as_secs_f64();
                rig.pool.run_until_idle();
                secs[0] += t.elapsed().as_secs_f64();
                secs[4] += kicked;
                let d = rig.guest.poll_used();
                assert_eq!(d[0].len as usize, 11 + MIB);
                secs[1] += time(&mut || into_pages(pages));
                secs[2] += time(&mut || contiguous());
                secs[3] += time(&mut || walk.walk());
                secs[5] += time(&mut || {
                    walk.parse(Vec::with_capacity(300));
                });
            }
            secs
        };
        run(&mut rig, 100);
        let [dev, pages_s, contig_s, walk_s, kick_s, parse_s] = run(&mut rig, iters);
        println!(
            "  device, {name:<26} {:>7.0} MB/s = {:>3.0} % of memcpy into the same 256 pages ({:.0} MB/s), {:>3.0} % of a contiguous memcpy ({:.0} MB/s)",
            mbs(dev),
            100.0 * pages_s / dev,
            mbs(pages_s),
            100.0 * contig_s / dev,
            mbs(contig_s)
        );
        let us = |x: f64| x * 1e6 / iters as f64;
        println!(
            "    the device's time: {:.1} us in the kick (walk, checks, dispatch), {:.1} us running the request; the memcpy into the pages: {:.1} us",
            us(kick_s),
            us(dev - kick_s),
            us(pages_s)
        );
        if descs.len() > 2 {
            // What a device bound to virtio-queue's walk could reach at best: the walk
            // itself plus the copy into the same pages, and nothing else.
            println!(
                "    virtio-queue's own walk of a {}-descriptor chain takes {:.1} us (the device's walk and checks: {:.1} us); that walk + memcpy into the pages = {:.0} % of a contiguous memcpy (the device: {:.0} %)",
                chain.len(),
                us(walk_s),
                us(parse_s),
                100.0 * contig_s / (walk_s + pages_s),
                100.0 * contig_s / dev
            );
        }
    }
    let contiguous = mbs(time(&mut || {
        for _ in 0..iters {
            contiguous()
        }
    }));

    // 2. Through the harness driver, as a guest runs it: every read builds a fresh chain
    //    over freshly allocated pages (the allocator walks all of guest RAM), and reaps it.
    rig.guest.set_copy_replies(false);
    for (name, layout, indirect) in [
        (
            "zero-copy pages",
            Layout::ZeroCopyRead {
                data: MIB as u32,
                skew: 0,
            },
            false,
        ),
        (
            "zero-copy pages, indirect",
            Layout::ZeroCopyRead {
                data: MIB as u32,
                skew: 0,
            },
            true,
        ),
        ("one msize buffer", Layout::Plain { room: msize }, false),
    ] {
        let run = |rig: &mut Rig, n: usize| {
            // guest submit, kick (chain walk), run (the request), guest collect
            let mut phase = [0f64; 4];
            for _ in 0..n {
                let t0 = Instant::now();
                rig.guest.submit(&read, layout, indirect).unwrap();
                let t1 = Instant::now();
                rig.guest.kick();
                let t2 = Instant::now();
                rig.pool.run_until_idle();
                let t3 = Instant::now();
                let d = rig.guest.poll_used();
                let t4 = Instant::now();
                assert_eq!(d[0].len as usize, 11 + MIB);
                for (p, d) in phase.iter_mut().zip([t1 - t0, t2 - t1, t3 - t2, t4 - t3]) {
                    *p += d.as_secs_f64();
                }
            }
            phase
        };
        run(&mut rig, 100);
        let p = run(&mut rig, iters);
        let us = |x: f64| x * 1e6 / iters as f64;
        println!(
            "Tread 1 MiB through the driver, {name:<26} {:>7.0} MB/s ({:.0} % of contiguous memcpy); per read: guest submit {:.1} us, kick/walk {:.1} us, run {:.1} us, guest collect {:.1} us",
            mbs(p.iter().sum()),
            100.0 * mbs(p.iter().sum()) / contiguous,
            us(p[0]),
            us(p[1]),
            us(p[2]),
            us(p[3])
        );
    }
}

/// A split queue in its own guest memory holding one chain of `len` descriptors (as long
/// as the zero-copy read's), walked with virtio-queue's iterator and nothing else: the floor
/// under any device that walks chains with it, as the issue asks (`Queue::iter`).
struct BareWalk {
    mem: vm_memory::GuestMemoryMmap,
    queue: virtio_queue::Queue,
}

impl BareWalk {
    fn new(len: u16) -> BareWalk {
        use virtio_queue::desc::RawDescriptor;
        use virtio_queue::desc::split::Descriptor;
        use virtio_queue::mock::MockSplitQueue;
        let mem =
            vm_memory::GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 4 * MIB)]).unwrap();
        let queue = {
            let mq = MockSplitQueue::create(&mem, GuestAddress(0), 512);
            // Buffers as the read's: a request, an 11-byte header, then pages.
            let descs: Vec<RawDescriptor> = (0..len)
                .map(|i| {
                    let (addr, size, flags) = match i {
                        0 => (0x20_0000, 64, 0),
                        1 => (0x20_1000, 11, 2),
                        _ => (0x20_0000 + 4096 * u64::from(i), 4096, 2),
                    };
                    // Flag 2: VRING_DESC_F_WRITE.
                    RawDescriptor::from(Descriptor::new(addr, size, flags, 0))
                })
                .collect();
            mq.build_desc_chain(&descs).unwrap();
            mq.create_queue::<virtio_queue::Queue>().unwrap()
        };
        BareWalk { mem, queue }
    }

    /// Walks and checks the chain as the device does ([`chain::parse`]), with the buffers
    /// merged where contiguous.
    fn parse(&mut self, spare: Vec<co9p::transport::virtio::chain::Region>) -> usize {
        use virtio_queue::QueueT;
        let c = co9p::transport::virtio::chain::parse(
            0,
            &self.mem,
            GuestAddress(self.queue.desc_table()),
            self.queue.size(),
            spare,
        );
        black_box(c.writable.len())
    }

    /// Walks the chain once more (rewinding the queue to it first).
    fn walk(&mut self) {
        use virtio_queue::{QueueOwnedT, QueueT};
        self.queue.set_next_avail(0);
        let chain = self.queue.iter(&self.mem).unwrap().next().unwrap();
        let mut bytes = 0u64;
        for d in chain {
            bytes += u64::from(d.len());
        }
        black_box(bytes);
    }
}

/// `CO9P_BENCH_SCALE=N` divides every iteration count by N (for profiling under valgrind).
fn scale() -> usize {
    std::env::var("CO9P_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1usize)
        .max(1)
}

/// `cargo bench --bench virtio -- getattr` (or `read`) runs only that part.
fn main() {
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wanted = |part: &str| only.is_empty() || only.iter().any(|o| part.contains(o.as_str()));
    if wanted("getattr") {
        getattr_rate();
    }
    if wanted("read") {
        read_bandwidth();
    }
}
