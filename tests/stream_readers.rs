//! The stream server's readers: the first connections get a thread each, the rest share a
//! pool of a few threads. One pool thread serves many connections at once without a thread
//! per connection; a connection held back (its requests in flight at the session's limit)
//! does not hold up the others of its thread; a connection that ends gives its own thread's
//! place to the next; frames that arrive a byte at a time, or larger than a thread's read
//! buffer, are served whole either way.

mod client;

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use client::fixture::{TcpServer, test_fs};
use co9p::fs::hooked::{Hook, HookedFs, OpKind};
use co9p::fs::{FsResult, MemFs};
use co9p::protocol::*;
use co9p::server::Config;

/// Threads of this process now.
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

#[test]
fn one_reader_thread_serves_many_connections_at_once() {
    const CONNS: usize = 64;
    const EACH: u16 = 8;
    let (fs, _) = test_fs();
    let server = TcpServer::start_with_readers(fs, Config::default(), Some((1, 0)));
    // The server's own threads are all up once it has served one connection.
    let mut first = server.connect();
    first.version(8192);
    first.attach(Fid(0), "").unwrap();
    let before = threads();
    let mut clients: Vec<_> = (0..CONNS)
        .map(|_| {
            let mut c = server.connect();
            c.version(8192);
            c.attach(Fid(0), "").unwrap();
            c
        })
        .collect();
    assert_eq!(server.stats.active.load(Ordering::SeqCst), CONNS as u64 + 1);
    // A thread per connection would have added 64; other tests of this file, running
    // beside this one, start a handful of their own.
    let grown = threads().saturating_sub(before);
    assert!(
        grown < CONNS / 2,
        "{grown} threads more for {CONNS} idle connections"
    );
    // Every connection pipelines its requests before any reply is read: the one thread
    // finds many connections ready at once.
    let tags: Vec<Vec<Tag>> = clients
        .iter_mut()
        .map(|c| {
            (0..EACH)
                .map(|_| {
                    c.send(Tmessage::Getattr {
                        fid: Fid(0),
                        request_mask: GetattrMask::ALL,
                    })
                })
                .collect()
        })
        .collect();
    for (c, tags) in clients.iter_mut().zip(tags) {
        for tag in tags {
            match c.reply(tag) {
                Some(Rmessage::Getattr { attr: a }) => assert_eq!(a.mode & 0o170000, 0o040000),
                other => panic!("tag {tag:?}: {other:?}"),
            }
        }
    }
}

/// Holds every write until the gate opens, counting those that came.
#[derive(Clone, Default)]
struct Gate {
    entered: Arc<AtomicUsize>,
    /// Open yet, and the writes waiting.
    state: Arc<Mutex<(bool, Vec<Waker>)>>,
}

impl Gate {
    fn open(&self) {
        let mut s = self.state.lock().unwrap();
        s.0 = true;
        for w in s.1.drain(..) {
            w.wake();
        }
    }
}

impl Hook for Gate {
    async fn before(&self, op: OpKind) -> FsResult<()> {
        if op == OpKind::Write {
            self.entered.fetch_add(1, Ordering::SeqCst);
            std::future::poll_fn(|cx| {
                let mut s = self.state.lock().unwrap();
                if s.0 {
                    return Poll::Ready(());
                }
                s.1.push(cx.waker().clone());
                Poll::Pending
            })
            .await;
        }
        Ok(())
    }
}

#[test]
fn a_connection_held_back_does_not_hold_up_the_others_on_its_thread() {
    const SLOTS: usize = 4;
    let gate = Gate::default();
    let fs = Arc::new(HookedFs::new(MemFs::new(), gate.clone()));
    let config = Config {
        max_inflight: SLOTS,
        ..Config::default()
    };
    let server = TcpServer::start_with_readers(fs, config, Some((1, 0)));
    let mut a = server.connect();
    a.version(8192);
    a.attach(Fid(0), "").unwrap();
    let f = a.walk_path(Fid(0), "").unwrap();
    a.lcreate(f, "f", OpenFlags::RDWR, 0o644).unwrap();
    let mut b = server.connect();
    b.version(8192);
    b.attach(Fid(0), "").unwrap();
    b.link
        .0
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();

    // A fills its session's slots with writes that wait at the gate, and asks more behind
    // them, all in one send: the server holds A's further frames back.
    let mut burst = Vec::new();
    for t in 0..2 * SLOTS as u16 {
        let msg = if (t as usize) < SLOTS {
            Tmessage::Write {
                fid: f,
                offset: u64::from(t) * 10,
                data: Data(vec![b'0' + t as u8; 10]),
            }
        } else {
            Tmessage::Getattr {
                fid: f,
                request_mask: GetattrMask::ALL,
            }
        };
        burst.extend(Request::new(Tag(100 + t), msg).to_bytes().unwrap());
    }
    a.link.0.write_all(&burst).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while gate.entered.load(Ordering::SeqCst) < SLOTS {
        assert!(
            Instant::now() < deadline,
            "A's writes never reached the gate"
        );
        std::thread::sleep(Duration::from_millis(1));
    }

    // B, on the same reader thread, is served meanwhile.
    for _ in 0..50 {
        assert_eq!(b.getattr(Fid(0)).unwrap().mode & 0o170000, 0o040000);
    }
    assert_eq!(
        gate.entered.load(Ordering::SeqCst),
        SLOTS,
        "A's writes are still at the gate: its session stayed full"
    );

    // The gate opens: A gets every reply, its writes in the file.
    gate.open();
    for t in 0..2 * SLOTS as u16 {
        match a.reply(Tag(100 + t)) {
            Some(Rmessage::Write { count }) => assert_eq!(count, 10),
            // A held-back Tgetattr is submitted once a write has freed its slot, and may
            // run while the other writes still go: at least one write is in the file.
            Some(Rmessage::Getattr { attr }) => {
                assert!(t as usize >= SLOTS, "tag {}: a held-back Tgetattr", 100 + t);
                assert!((10..=40).contains(&attr.size), "size {}", attr.size);
            }
            other => panic!("tag {}: {other:?}", 100 + t),
        }
    }
    let data = a.read(f, 0, 100).unwrap();
    let want: Vec<u8> = (0..SLOTS as u8).flat_map(|t| [b'0' + t; 10]).collect();
    assert_eq!(data, want);
}

#[test]
fn frames_that_come_a_byte_at_a_time_or_larger_than_a_read_buffer_are_served_whole() {
    // Read by the pool, then by a thread of its own.
    for dedicated in [0, 1] {
        let (fs, _) = test_fs();
        let server = TcpServer::start_with_readers(fs, Config::default(), Some((1, dedicated)));
        dribbled_and_big_frames(&server);
    }
}

fn dribbled_and_big_frames(server: &TcpServer) {
    const BIG: usize = 300 * 1024;
    let mut c = server.connect();
    c.link.0.set_nodelay(true).unwrap();
    c.version(512 * 1024);
    c.attach(Fid(0), "").unwrap();
    let f = c.walk_path(Fid(0), "").unwrap();
    c.lcreate(f, "big", OpenFlags::RDWR, 0o644).unwrap();

    // A write of 300 KiB, in pieces of 7 000 bytes (the first with the header)...
    let data: Vec<u8> = (0..BIG).map(|i| (i % 253) as u8).collect();
    let write = Request::new(
        Tag(1),
        Tmessage::Write {
            fid: f,
            offset: 0,
            data: Data(data.clone()),
        },
    )
    .to_bytes()
    .unwrap();
    for piece in write.chunks(7000) {
        c.link.0.write_all(piece).unwrap();
    }
    // ...then a Tgetattr a byte at a time, and a Tread of it all in one go.
    let getattr = Request::new(
        Tag(2),
        Tmessage::Getattr {
            fid: f,
            request_mask: GetattrMask::ALL,
        },
    )
    .to_bytes()
    .unwrap();
    for byte in &getattr {
        c.link.0.write_all(std::slice::from_ref(byte)).unwrap();
    }
    c.send_tagged(
        Tag(3),
        Tmessage::Read {
            fid: f,
            offset: 0,
            count: BIG as u32,
        },
    );
    match c.reply(Tag(1)) {
        Some(Rmessage::Write { count }) => assert_eq!(count as usize, BIG),
        other => panic!("{other:?}"),
    }
    match c.reply(Tag(2)) {
        Some(Rmessage::Getattr { attr: a }) => assert_eq!(a.size, BIG as u64),
        other => panic!("{other:?}"),
    }
    match c.reply(Tag(3)) {
        Some(Rmessage::Read { data: got }) => assert!(got.0 == data, "the read differs"),
        other => panic!("{other:?}"),
    }
}

/// This process's threads whose name starts with `prefix`.
fn threads_named(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim_end().to_string())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

#[test]
fn the_first_connections_get_a_thread_each_and_an_ended_ones_goes_to_the_next() {
    const DEDICATED: usize = 2;
    let (fs, _) = test_fs();
    let server = TcpServer::start_with_readers(fs, Config::default(), Some((1, DEDICATED)));
    let open = |n: usize| -> Vec<_> {
        (0..n)
            .map(|_| {
                let mut c = server.connect();
                c.version(8192);
                c.attach(Fid(0), "").unwrap();
                c
            })
            .collect()
    };
    // Six connections: the first two (ids 1 and 2) on threads of their own, the others in
    // the pool; all served.
    let mut clients = open(6);
    let mut own = threads_named("co9p-conn-");
    own.sort();
    assert_eq!(own, ["co9p-conn-1", "co9p-conn-2"]);
    for c in &mut clients {
        assert_eq!(c.getattr(Fid(0)).unwrap().mode & 0o170000, 0o040000);
    }
    // The first ends: its thread ends with it, and the next connection (id 7) takes its
    // place; one in the pool ending changes nothing.
    drop(clients.remove(0));
    drop(clients.remove(3));
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.stats.active.load(Ordering::SeqCst) != 4 {
        assert!(Instant::now() < deadline, "the connections never ended");
        std::thread::sleep(Duration::from_millis(1));
    }
    clients.extend(open(1));
    // (The first one's thread may still be on its way out.)
    while threads_named("co9p-conn-1").contains(&"co9p-conn-1".to_string()) {
        assert!(
            Instant::now() < deadline,
            "the first connection's thread never ended"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut own = threads_named("co9p-conn-");
    own.sort();
    assert_eq!(own, ["co9p-conn-2", "co9p-conn-7"]);
    for c in &mut clients {
        assert_eq!(c.getattr(Fid(0)).unwrap().mode & 0o170000, 0o040000);
    }
}
