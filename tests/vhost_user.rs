//! The vhost-user daemon's life cycle, driven through rust-vmm's own vhost-user frontend
//! over a real unix socket and shared memfd guest RAM: a frontend killed mid-request, a
//! persistent daemon serving one frontend after another, the memory table replaced while
//! requests run, the ring stopped (`GET_VRING_BASE`) with a request in flight and started
//! again, a config space read through `GET_CONFIG`, and malformed messages. Nothing may
//! hang (every wait is bounded) and nothing may leak (descriptors are counted).
//!
//! (QEMU's qtest cases run through the daemon too: `tests/qtest.rs`, module `vhost_user`.)

mod client;

use std::future::Future;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use client::vhost::{Daemon, VhostUser};
use client::vhost_front::{self, fd_targets};
use client::{Client, Link};
use co9p::co::ThreadPool;
use co9p::fs::hooked::{Hook, HookedFs, OpKind};
use co9p::fs::{FsResult, MemFs};
use co9p::protocol::*;
use co9p::server::Config;
use co9p::transport::virtio::DeviceConfig;
use co9p::transport::virtio::harness::BootOptions;
use vhost::VhostBackend;
use vhost::vhost_user::VhostUserFrontend;

/// Holds every write until [`Gate::open`]: a request that stays in flight, then finishes.
#[derive(Default)]
struct Gate {
    open: AtomicBool,
    waiting: Mutex<Vec<Waker>>,
}

impl Gate {
    fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
        self.waiting.lock().unwrap().drain(..).for_each(Waker::wake);
    }
}

struct Opened<'a>(&'a Gate);

impl Future for Opened<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.open.load(Ordering::SeqCst) {
            return Poll::Ready(());
        }
        self.0.waiting.lock().unwrap().push(cx.waker().clone());
        if self.0.open.load(Ordering::SeqCst) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

#[derive(Clone, Default)]
struct Gated(Arc<Gate>);

impl Hook for Gated {
    async fn before(&self, op: OpKind) -> FsResult<()> {
        if op == OpKind::Write {
            Opened(&self.0).await;
        }
        Ok(())
    }
}

type Fs = HookedFs<MemFs, Gated>;

/// The tests here count this process's descriptors: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn gated() -> (Arc<Fs>, Arc<Gate>) {
    let g = Gated::default();
    (Arc::new(HookedFs::new(MemFs::new(), g.clone())), g.0)
}

fn device_config() -> DeviceConfig {
    let mut dc = DeviceConfig::new("co9p");
    dc.server = Config::default();
    dc
}

/// Opens a new file `name` in the root for writing at `fid`.
/// Waits until `cond` holds: something the daemon does on its own thread (pop a kicked
/// chain, stop a ring). The deadline only keeps a broken build from hanging.
fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "{what}: never");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn open_new<L: Link>(c: &mut Client<L>, fid: Fid, name: &str) {
    c.walk(Fid(0), fid, &[]).unwrap();
    c.lcreate(fid, name, OpenFlags::RDWR, 0o644).unwrap();
}

#[test]
fn a_frontend_killed_mid_request_cancels_it_and_the_daemon_exits_leaking_nothing() {
    let _serial = serial();
    let before = fd_targets();
    {
        let (fs, gate) = gated();
        let mut c = Client::new(VhostUser::with(fs.clone(), device_config(), false));
        c.attach_root();
        open_new(&mut c, Fid(1), "f");
        // A write that never finishes on its own: in flight when the frontend dies.
        let _tag = c.send(Tmessage::Write {
            fid: Fid(1),
            offset: 0,
            data: Data(vec![7; 100]),
        });
        // The gate holds it: once popped, it stays in flight.
        let device = c.link.daemon.device.clone();
        wait_until("the write in flight", || device.in_flight() == 1);
        // Killed: the socket closes under the daemon.
        c.link.front().disconnect();
        assert!(c.link.daemon.join().is_ok(), "a disconnect is a clean exit");
        // The write was cancelled before its effect, and the session is gone.
        assert_eq!(c.link.daemon.device.session().inflight(), 0);
        assert_eq!(c.link.daemon.device.session().fid_count(), 0);
        assert!(!c.link.daemon.device.is_active(), "the device was reset");
        gate.open();
        let data = co9p::co::block_on(async {
            use co9p::fs::Filesystem;
            let (root, _) = fs.root().await.unwrap();
            let (node, _) = fs
                .lookup(&root, &co9p::fs::Name::new(b"f").unwrap())
                .await
                .unwrap();
            fs.getattr(&node).await.unwrap().size
        });
        assert_eq!(data, 0, "the cancelled write had no effect");
    }
    assert_eq!(fd_targets(), before, "descriptors left behind");
}

#[test]
fn a_persistent_daemon_serves_one_frontend_after_another_with_a_fresh_session() {
    let _serial = serial();
    let before = fd_targets();
    {
        let pool = ThreadPool::new(2);
        let stop = Arc::new(AtomicBool::new(false));
        let mut daemon = Daemon::start_with(
            Arc::new(MemFs::new()),
            device_config(),
            &pool,
            true,
            Some(stop.clone()),
        );
        for round in 0..3 {
            let mut guest = vhost_front::guest(&daemon.socket, 8 << 20, 128);
            guest.boot(&BootOptions::default()).expect("boot");
            let mut c = Client::new(client::vhost::Guest::new(guest));
            c.attach_root();
            // Fids of the previous frontend are gone: fid 1 is free again.
            open_new(&mut c, Fid(1), &format!("f{round}"));
            assert_eq!(c.write(Fid(1), 0, b"hello").unwrap(), 5);
            c.link.front().disconnect();
            drop(c);
        }
        stop.store(true, Ordering::SeqCst);
        // Wakes the daemon waiting for a frontend.
        drop(UnixStream::connect(&daemon.socket).unwrap());
        assert!(daemon.join().is_ok());
        pool.shutdown();
    }
    assert_eq!(fd_targets(), before, "descriptors left behind");
}

#[test]
fn the_memory_table_replaced_while_running_is_the_one_used_next() {
    let _serial = serial();
    let mut c = Client::new(VhostUser::new(Arc::new(MemFs::new()), Config::default()));
    c.attach_root();
    open_new(&mut c, Fid(1), "f");
    assert_eq!(c.write(Fid(1), 0, b"before").unwrap(), 6);
    // A second mapping of the same memfd at another host address: the backend must map
    // the new table (SET_MEM_TABLE), and the rings are found through it.
    let front = c.link.front().clone();
    let remapped = vhost_front::remap(&front.mem);
    front
        .lock()
        .fe
        .set_mem_table(&vhost_front::regions(&remapped))
        .expect("SET_MEM_TABLE");
    assert_eq!(c.write(Fid(1), 6, b" after").unwrap(), 6);
    assert_eq!(c.read(Fid(1), 0, 100).unwrap(), b"before after");
    // And once more through a table with the region split in two.
    front
        .lock()
        .fe
        .set_mem_table(&vhost_front::split_regions(&remapped))
        .expect("SET_MEM_TABLE");
    let big = vec![0x5a; 8000];
    for round in 0..50u64 {
        assert_eq!(c.write(Fid(1), round * 8000, &big).unwrap(), 8000);
        assert_eq!(c.read(Fid(1), round * 8000, 8000).unwrap(), big);
    }
    drop(remapped);
}

#[test]
fn get_vring_base_waits_for_requests_in_flight_and_the_ring_restarts_where_it_stopped() {
    let _serial = serial();
    let (fs, gate) = gated();
    let mut c = Client::new(VhostUser::with(fs, device_config(), false));
    c.attach_root();
    open_new(&mut c, Fid(1), "f");
    let write = c.send(Tmessage::Write {
        fid: Fid(1),
        offset: 0,
        data: Data(b"in flight".to_vec()),
    });
    let device = c.link.daemon.device.clone();
    wait_until("the write in flight", || device.in_flight() == 1);
    let front = c.link.front().clone();
    // The frontend stops the ring: GET_VRING_BASE must not be answered while the write
    // still touches guest memory.
    let stopper = {
        let front = front.clone();
        std::thread::spawn(move || {
            let mut st = front.lock();
            front.stop_ring(&mut st).expect("GET_VRING_BASE")
        })
    };
    wait_until("the ring stopped", || device.is_stopped());
    assert!(!stopper.is_finished() || device.in_flight() == 0);
    gate.open();
    let base = stopper.join().unwrap();
    // By the time GET_VRING_BASE answered, the write's reply was in the used ring.
    assert_eq!(device.in_flight(), 0);
    c.link.collect();
    assert_eq!(c.reply(write), Some(Rmessage::Write { count: 9 }));
    let popped = device.stats().popped;
    assert_eq!(u64::from(base), popped, "next_avail is what was popped");
    // Restarted where it stopped: the session and its fids carried over.
    {
        let mut st = front.lock();
        front.start_ring(&mut st, base as u16).expect("restart");
    }
    assert_eq!(c.read(Fid(1), 0, 100).unwrap(), b"in flight");
    assert!(c.link.settled().is_ok(), "{:?}", c.link.settled());
}

#[test]
fn the_mount_tag_is_read_through_get_config() {
    let _serial = serial();
    let c = VhostUser::new(Arc::new(MemFs::new()), Config::default());
    assert_eq!(c.guest.mount_tag(), b"co9p");
    let (_, payload) = c
        .front()
        .lock()
        .fe
        .get_config(
            0,
            8,
            vhost::vhost_user::message::VhostUserConfigFlags::empty(),
            &[0; 8],
        )
        .unwrap();
    assert_eq!(&payload[..], &[4, 0, b'c', b'o', b'9', b'p', 0, 0]);
}

/// Sends `bytes` as a frontend would and says whether the daemon then closed the
/// connection (read gives EOF or a reset within the timeout).
fn closes_after(socket: &std::path::Path, bytes: &[u8], then_leave: bool) -> bool {
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(bytes);
    if then_leave {
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            // A reply to something that parsed: keep reading until the close.
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn malformed_messages_close_the_connection_and_the_daemon_serves_the_next_frontend() {
    let _serial = serial();
    let before = fd_targets();
    {
        let pool = ThreadPool::new(2);
        let stop = Arc::new(AtomicBool::new(false));
        let mut daemon = Daemon::start_with(
            Arc::new(MemFs::new()),
            device_config(),
            &pool,
            true,
            Some(stop.clone()),
        );
        let header = |code: u32, flags: u32, size: u32| {
            let mut h = code.to_le_bytes().to_vec();
            h.extend(flags.to_le_bytes());
            h.extend(size.to_le_bytes());
            h
        };
        let cases: Vec<Vec<u8>> = vec![
            // An unknown request code.
            header(0xffff, 1, 0),
            // A wrong version in the flags.
            header(1, 7, 0),
            // A size larger than any message.
            header(5, 1, 0x10_0000),
            // SET_MEM_TABLE that claims regions but sends no descriptors.
            [header(5, 1, 40), vec![1; 40]].concat(),
            // SET_VRING_NUM for a queue that does not exist.
            [
                header(8, 1, 8),
                7u32.to_le_bytes().to_vec(),
                64u32.to_le_bytes().to_vec(),
            ]
            .concat(),
            // Half a header, then the peer goes.
            vec![1, 0, 0],
            // Random garbage.
            (0..200u32).map(|i| (i * 37 + 11) as u8).collect(),
        ];
        for (i, bytes) in cases.iter().enumerate() {
            assert!(
                // (Case 5 is cut short: the daemon then sees the peer leave mid-message.)
                closes_after(&daemon.socket, bytes, i == 5),
                "case {i}: the daemon did not close the connection"
            );
        }
        // Still serving.
        let mut guest = vhost_front::guest(&daemon.socket, 8 << 20, 128);
        guest.boot(&BootOptions::default()).expect("boot");
        let mut c = Client::new(client::vhost::Guest::new(guest));
        c.attach_root();
        c.mkdir(Fid(0), "d", 0o755).unwrap();
        c.link.front().disconnect();
        drop(c);
        stop.store(true, Ordering::SeqCst);
        drop(UnixStream::connect(&daemon.socket).unwrap());
        assert!(daemon.join().is_ok());
        pool.shutdown();
    }
    assert_eq!(fd_targets(), before, "descriptors left behind");
}

#[test]
fn a_device_reset_mid_workload_leaves_the_daemon_serving_the_new_driver() {
    let _serial = serial();
    let mut c = Client::new(VhostUser::new(Arc::new(MemFs::new()), Config::default()));
    c.attach_root();
    c.mkdir(Fid(0), "old", 0o755).unwrap();
    open_new(&mut c, Fid(1), "f");
    // Requests in flight when the guest reboots (status 0: the frontend takes the ring back
    // and resets the device).
    for i in 0..12u64 {
        c.send(Tmessage::Write {
            fid: Fid(1),
            offset: i * 4096,
            data: Data(vec![1; 4096]),
        });
        c.send(Tmessage::Getattr {
            fid: Fid(0),
            request_mask: GetattrMask::ALL,
        });
    }
    c.link.guest.reset();
    c.link.replies.clear();
    let device = c.link.daemon.device.clone();
    assert_eq!(
        device.in_flight(),
        0,
        "nothing of the old ring is in flight"
    );
    // The new driver: a fresh ring, a fresh session.
    c.link
        .guest
        .boot(&BootOptions::default())
        .expect("boot again");
    let mut c = Client::new(c.link);
    c.attach_root();
    assert_eq!(
        device.session().fid_count(),
        1,
        "the old driver's fids are gone"
    );
    assert!(c.stat("old").is_ok(), "the files stay");
    c.mkdir(Fid(0), "new", 0o755).unwrap();
    assert!(c.link.settled().is_ok(), "{:?}", c.link.settled());
}

#[test]
fn a_second_daemon_on_a_served_socket_is_refused_and_the_first_keeps_it() {
    let _serial = serial();
    let pool = ThreadPool::new(2);
    let stop = Arc::new(AtomicBool::new(false));
    let mut first = Daemon::start_with(
        Arc::new(MemFs::new()),
        device_config(),
        &pool,
        true,
        Some(stop.clone()),
    );
    let device = Arc::new(
        co9p::transport::virtio::Virtio9p::new(
            device_config(),
            Arc::new(MemFs::new()),
            pool.handle(),
        )
        .unwrap(),
    );
    let opts = co9p::transport::vhost_user::ServeOptions {
        socket_path: first.socket.clone(),
        persistent: false,
        stop_timeout: Duration::from_secs(1),
        max_queue_size: 128,
        stop: None,
    };
    let second = co9p::transport::vhost_user::serve(device, pool.handle(), &opts, || {
        panic!("the second daemon must not listen")
    });
    assert!(
        matches!(
            second,
            Err(co9p::transport::vhost_user::ServeError::InUse(..))
        ),
        "{second:?}"
    );
    // The first still serves its socket.
    let mut guest = vhost_front::guest(&first.socket, 8 << 20, 128);
    guest.boot(&BootOptions::default()).expect("boot");
    let mut c = Client::new(client::vhost::Guest::new(guest));
    c.attach_root();
    c.link.front().disconnect();
    drop(c);
    stop.store(true, Ordering::SeqCst);
    drop(UnixStream::connect(&first.socket).unwrap());
    assert!(first.join().is_ok());
    pool.shutdown();
}
