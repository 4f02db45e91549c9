//! Connections that go away: a closed connection cancels its requests and frees its fids,
//! open files and locks. Checked on real host files, where a leak would show as file
//! descriptors left open in this process.

mod client;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use client::fixture::TcpServer;
use co9p::fs::HostFs;
use co9p::fs::host::HostOptions;
use co9p::protocol::*;
use co9p::server::Config;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn temp_export(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("co9p-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("data"), vec![1u8; 64 * 1024]).unwrap();
    dir
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_thousand_abrupt_disconnects_leak_nothing() {
    let dir = temp_export("lifecycle");
    let fs = HostFs::new(&dir, HostOptions::default()).unwrap();
    let server = TcpServer::start(std::sync::Arc::new(fs), Config::default());
    // Warm up: one full session, so lazily opened things (e.g. /proc/self/fd) exist and
    // `data`'s node sits in HostFs's lookup cache, as it will after every connection.
    {
        let mut c = server.connect();
        c.version(65536);
        c.attach(Fid(0), "").unwrap();
        c.walk(Fid(0), Fid(1), &["data"]).unwrap();
    }
    wait_until("the warm-up connection to end", || {
        server.stats.active.load(Ordering::SeqCst) == 0
    });
    let baseline = open_fds();
    let connections = 1000;
    for i in 0..connections {
        // A disconnect is noticed and cleaned up asynchronously; the next connection's lock
        // below proves the previous one's was released once its connection ended.
        wait_until("the previous connection to end", || {
            server.stats.active.load(Ordering::SeqCst) == 0
        });
        let mut c = server.connect();
        c.version(65536);
        c.attach(Fid(0), "").unwrap();
        c.walk(Fid(0), Fid(1), &["data"]).unwrap();
        c.lopen(Fid(1), OpenFlags::RDWR).unwrap();
        // A lock held by this connection, and requests still in flight when it goes.
        let r = c.call(Tmessage::Lock {
            fid: Fid(1),
            lock_type: LockType::Write,
            flags: LockFlags(0),
            start: 0,
            length: 0,
            proc_id: i,
            client_id: "x".into(),
        });
        assert_eq!(
            r,
            Ok(Rmessage::Lock {
                status: LockStatus::Success
            }),
            "connection {i}: the previous connection's lock was released"
        );
        for k in 0..8 {
            c.send(Tmessage::Read {
                fid: Fid(1),
                offset: k * 4096,
                count: 4096,
            });
        }
        c.walk(Fid(0), Fid(2), &[]).unwrap_or_default();
        drop(c); // the socket closes with reads in flight
    }
    wait_until("every connection to end", || {
        server.stats.active.load(Ordering::SeqCst) == 0
    });
    assert_eq!(
        server.stats.connections.load(Ordering::SeqCst),
        connections as u64 + 1
    );
    wait_until("descriptors to come back", || open_fds() <= baseline);
    assert_eq!(open_fds(), baseline, "file descriptors leaked");
    drop(server);
    std::fs::remove_dir_all(&dir).unwrap();
}
