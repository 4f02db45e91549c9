//! The vhost-user path next to the in-process device, in one run: the same harness guest,
//! the same requests, the same chain layouts, once through an MMIO front on the bench
//! thread (the device polled right there, as a VMM's vCPU thread would run it) and once
//! through co9p's vhost-user daemon in this process (a real unix socket, shared memfd RAM,
//! kick and call eventfds, the daemon's ring worker and a pool of two threads).
//!
//! Figures: Tgetattr PDUs/s one at a time and 64 per kick, and 1 MiB Tread bandwidth
//! (Linux's zero-copy layout), with the vhost-user / in-process ratio. Plain `main`
//! printing figures; no timed assertions.
//!
//! Run: `cargo bench --bench vhost_user`

#[path = "../tests/client/vhost_front.rs"]
mod vhost_front;

use std::sync::Arc;
use std::time::{Duration, Instant};

use co9p::co::ThreadPool;
use co9p::fs::MemFs;
use co9p::protocol::*;
use co9p::server::Config;
use co9p::transport::vhost_user::{ServeOptions, serve};
use co9p::transport::virtio::harness::{BootOptions, Completion, Layout, VirtualGuest};
use co9p::transport::virtio::mmio::MmioDevice;
use co9p::transport::virtio::{DeviceConfig, Virtio9p};

const MIB: usize = 1 << 20;
const MSIZE: u32 = (MIB + 4096) as u32;
const QUEUE: u16 = 512;

/// How a rig waits for `n` used entries.
type Wait<D> = Box<dyn FnMut(&mut VirtualGuest<D>, usize) -> Vec<Completion>>;

/// A booted guest and how to wait for its used entries.
struct Rig<D: MmioDevice> {
    guest: VirtualGuest<D>,
    wait: Wait<D>,
}

impl<D: MmioDevice> Rig<D> {
    fn round(&mut self, frames: &[Vec<u8>], layout: Layout) -> Vec<Completion> {
        for f in frames {
            self.guest
                .submit(f, layout, false)
                .expect("room in the queue");
        }
        self.guest.kick();
        (self.wait)(&mut self.guest, frames.len())
    }

    fn rpc(&mut self, msg: Tmessage, layout: Layout) -> Rmessage {
        let frame = Request::new(Tag(1), msg).to_bytes().unwrap();
        let done = self.round(&[frame], layout);
        Reply::decode(&done[0].reply, u32::MAX).unwrap().msg
    }

    /// Tversion, Tattach, and a 1 MiB file at fid 1.
    fn setup(&mut self, data: &[u8]) {
        let plain = Layout::Plain { room: MSIZE };
        self.rpc(
            Tmessage::Version {
                msize: MSIZE,
                version: VERSION_9P2000_L.into(),
            },
            plain,
        );
        self.rpc(
            Tmessage::Attach {
                fid: Fid(0),
                afid: Fid::NOFID,
                uname: "root".into(),
                aname: "".into(),
                n_uname: 0,
            },
            plain,
        );
        self.rpc(
            Tmessage::Walk {
                fid: Fid(0),
                newfid: Fid(1),
                wnames: vec![],
            },
            plain,
        );
        self.rpc(
            Tmessage::Lcreate {
                fid: Fid(1),
                name: "big".into(),
                flags: OpenFlags::RDWR,
                mode: 0o644,
                gid: 0,
            },
            plain,
        );
        let w = self.rpc(
            Tmessage::Write {
                fid: Fid(1),
                offset: 0,
                data: Data(data.to_vec()),
            },
            plain,
        );
        assert_eq!(w, Rmessage::Write { count: MIB as u32 });
    }
}

fn device_config() -> DeviceConfig {
    let mut dc = DeviceConfig::new("bench");
    dc.server = Config {
        max_msize: MSIZE,
        ..Config::default()
    };
    dc.queue_max_size = QUEUE;
    dc
}

fn boot<D: MmioDevice>(guest: &mut VirtualGuest<D>) {
    let opts = BootOptions {
        queue_size: QUEUE,
        ..BootOptions::default()
    };
    guest.boot(&opts).expect("boot");
}

/// Times `rounds` rounds of `batch` Tgetattr; PDUs/s.
fn getattr<D: MmioDevice>(rig: &mut Rig<D>, batch: usize, rounds: usize) -> f64 {
    let frame = Request::new(
        Tag(7),
        Tmessage::Getattr {
            fid: Fid(0),
            request_mask: GetattrMask::ALL,
        },
    )
    .to_bytes()
    .unwrap();
    let frames = vec![frame; batch];
    let layout = Layout::Plain { room: 512 };
    for _ in 0..rounds / 10 {
        rig.round(&frames, layout);
    }
    let t = Instant::now();
    let mut n = 0;
    for _ in 0..rounds {
        n += rig.round(&frames, layout).len();
    }
    assert_eq!(n, rounds * batch);
    n as f64 / t.elapsed().as_secs_f64()
}

/// Times `iters` 1 MiB Treads, one at a time; MB/s.
fn read<D: MmioDevice>(rig: &mut Rig<D>, data: &[u8], iters: usize) -> f64 {
    let frame = Request::new(
        Tag(5),
        Tmessage::Read {
            fid: Fid(1),
            offset: 0,
            count: MIB as u32,
        },
    )
    .to_bytes()
    .unwrap();
    let layout = Layout::ZeroCopyRead {
        data: MIB as u32,
        skew: 0,
    };
    // Once with the reply copied out: the data arrives whole.
    rig.guest.set_copy_replies(true);
    let done = rig.round(std::slice::from_ref(&frame), layout);
    assert_eq!(done[0].len as usize, 11 + MIB);
    assert_eq!(&done[0].reply[11..], data);
    rig.guest.set_copy_replies(false);
    for _ in 0..iters / 10 {
        rig.round(std::slice::from_ref(&frame), layout);
    }
    let t = Instant::now();
    for _ in 0..iters {
        rig.round(std::slice::from_ref(&frame), layout);
    }
    (iters * MIB) as f64 / t.elapsed().as_secs_f64() / 1e6
}

fn scale() -> usize {
    std::env::var("CO9P_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1usize)
        .max(1)
}

fn main() {
    let data: Vec<u8> = (0..MIB).map(|i| (i * 31 + i / 4096) as u8).collect();

    // In process: the MMIO front, the device polled on this thread.
    let pool0 = ThreadPool::new(0);
    let dev =
        Arc::new(Virtio9p::new(device_config(), Arc::new(MemFs::new()), pool0.handle()).unwrap());
    let mut guest = VirtualGuest::with_device(dev, 64 * MIB);
    boot(&mut guest);
    let mut local = Rig {
        guest,
        wait: Box::new(move |g, _| {
            pool0.run_until_idle();
            g.poll_used()
        }),
    };
    local.setup(&data);

    // vhost-user: the daemon on its own threads, the guest through a socket.
    let pool = ThreadPool::new(2);
    let socket = std::env::temp_dir().join(format!("co9p-bench-vhost-{}.sock", std::process::id()));
    let device =
        Arc::new(Virtio9p::new(device_config(), Arc::new(MemFs::new()), pool.handle()).unwrap());
    let opts = ServeOptions {
        socket_path: socket.clone(),
        persistent: false,
        stop_timeout: Duration::from_secs(10),
        max_queue_size: QUEUE,
        stop: None,
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let ex = pool.handle();
    let daemon = std::thread::spawn(move || {
        serve(device, ex, &opts, || {
            let _ = tx.send(());
        })
    });
    rx.recv_timeout(Duration::from_secs(10)).expect("listening");
    let mut guest = vhost_front::guest(&socket, 64 * MIB, QUEUE);
    boot(&mut guest);
    let mut remote = Rig {
        guest,
        wait: Box::new(|g, n| {
            let mut done = Vec::with_capacity(n);
            while done.len() < n {
                done.extend(g.poll_used());
                if done.len() < n {
                    g.dev.wait_interrupt(Duration::from_millis(100));
                    let _ = g.take_interrupt();
                }
            }
            done
        }),
    };
    remote.setup(&data);

    let s = scale();
    println!("(same run; vhost-user: daemon ring worker + 2 pool threads; in process: one thread)");
    for batch in [1usize, 64] {
        let rounds = 100_000 / batch / s;
        let a = getattr(&mut local, batch, rounds);
        let b = getattr(&mut remote, batch, rounds);
        println!(
            "Tgetattr, {batch:>2} per kick: in process {a:>9.0} PDUs/s, vhost-user {b:>9.0} PDUs/s ({:.2}x)",
            b / a
        );
    }
    let iters = 1000 / s;
    let a = read(&mut local, &data, iters);
    let b = read(&mut remote, &data, iters);
    println!(
        "1 MiB Tread (zero-copy layout): in process {a:>7.0} MB/s, vhost-user {b:>7.0} MB/s ({:.2}x)",
        b / a
    );
    remote.guest.dev.disconnect();
    drop(remote);
    daemon.join().unwrap().expect("the daemon ends cleanly");
    pool.shutdown();
}
