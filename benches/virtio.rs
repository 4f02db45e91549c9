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
use co9p::transport::virtio::harness::{BootOptions, Layout, VirtualGuest};
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
        let rounds = 200_000 / batch;
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
        .submit(&read, Layout::ZeroCopyRead { data: MIB as u32 }, false)
        .unwrap();
    rig.guest.kick();
    rig.pool.run_until_idle();
    let done = rig.guest.poll_used();
    assert_eq!(done[0].len as usize, 11 + MIB);
    assert_eq!(&done[0].reply[11..], &data[..]);
    rig.guest.set_copy_replies(false);

    let iters = 2000;
    let mut results = Vec::new();
    for (name, layout, indirect) in [
        (
            "zero-copy pages",
            Layout::ZeroCopyRead { data: MIB as u32 },
            false,
        ),
        (
            "zero-copy pages, indirect",
            Layout::ZeroCopyRead { data: MIB as u32 },
            true,
        ),
        ("one msize buffer", Layout::Plain { room: msize }, false),
    ] {
        let run = |rig: &mut Rig, n: usize| {
            for _ in 0..n {
                rig.guest.submit(&read, layout, indirect).unwrap();
                rig.guest.kick();
                rig.pool.run_until_idle();
                let d = rig.guest.poll_used();
                assert_eq!(d[0].len as usize, 11 + MIB);
            }
        };
        run(&mut rig, 100);
        let t = Instant::now();
        run(&mut rig, iters);
        let dt = t.elapsed().as_secs_f64();
        // Where the time goes: guest building the chain, device walking it (kick), the
        // request running (filesystem copy into guest pages, reply), guest collecting.
        let mut phase = [0f64; 4];
        for _ in 0..200 {
            let t0 = Instant::now();
            rig.guest.submit(&read, layout, indirect).unwrap();
            let t1 = Instant::now();
            rig.guest.kick();
            let t2 = Instant::now();
            rig.pool.run_until_idle();
            let t3 = Instant::now();
            rig.guest.poll_used();
            let t4 = Instant::now();
            for (p, d) in phase.iter_mut().zip([t1 - t0, t2 - t1, t3 - t2, t4 - t3]) {
                *p += d.as_secs_f64() * 1e6 / 200.0;
            }
        }
        println!(
            "  {name}: guest submit {:.1} us, kick/walk {:.1} us, run {:.1} us, guest collect {:.1} us",
            phase[0], phase[1], phase[2], phase[3]
        );
        results.push((name, (iters * MIB) as f64 / dt / 1e6));
    }

    // The same 1 MiB, memcpy'd into a guest buffer of the same RAM, same run.
    let dst = rig.guest.alloc(MIB as u64).unwrap();
    let mem = rig.guest.ram.memory().clone();
    let host = mem.get_host_address(GuestAddress(dst)).unwrap();
    let copy = |n: usize| {
        for _ in 0..n {
            // SAFETY: `dst..dst + 1 MiB` is an allocation inside the (single) guest RAM
            // region, which stays mapped while `mem` lives; nothing else touches it.
            let out = unsafe { std::slice::from_raw_parts_mut(host, MIB) };
            out.copy_from_slice(black_box(&data));
            black_box(&out[..1]);
        }
    };
    copy(100);
    let t = Instant::now();
    copy(iters);
    let memcpy = (iters * MIB) as f64 / t.elapsed().as_secs_f64() / 1e6;
    println!("memcpy 1 MiB into guest RAM:           {memcpy:>8.0} MB/s");
    for (name, mbs) in results {
        println!(
            "Tread 1 MiB, {name:<26}{mbs:>8.0} MB/s  ({:.0} % of memcpy)",
            100.0 * mbs / memcpy
        );
    }
}

fn main() {
    getattr_rate();
    read_bandwidth();
}
