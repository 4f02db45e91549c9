//! A client that sends requests but leaves its replies unread: the server stops reading from
//! it instead of queueing replies without limit, and once the client reads again it gets
//! every reply, whole. (Alone in its file: it measures this process's memory.)

mod client;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use client::Link;
use client::fixture::{TcpServer, test_fs};
use co9p::protocol::*;
use co9p::server::Config;

/// Resident memory of this process, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/self/status");
    kb * 1024
}

#[test]
fn a_client_leaving_replies_unread_is_paused_then_gets_every_one() {
    const N: u16 = 8000;
    const COUNT: u32 = 64 * 1024;
    let (fs, _) = test_fs();
    let server = TcpServer::start(fs, Config::default());
    let mut c = server.connect();
    c.version(COUNT + 4096);
    c.attach(Fid(0), "").unwrap();
    let f = c.walk_path(Fid(0), "").unwrap();
    c.lcreate(f, "big", OpenFlags::RDWR, 0o644).unwrap();
    let data: Vec<u8> = (0..COUNT).map(|i| (i % 251) as u8).collect();
    assert_eq!(c.write(f, 0, &data).unwrap(), COUNT);

    // 8000 reads of 64 KiB (500 MiB of replies), sent from another thread (its writes may
    // block once the server stops reading), none read yet.
    let before = rss();
    let mut out = c.link.0.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        use std::io::Write;
        for t in 1..=N {
            let read = Tmessage::Read {
                fid: f,
                offset: 0,
                count: COUNT,
            };
            out.write_all(&Request::new(Tag(t), read).to_bytes().unwrap())
                .unwrap();
        }
    });
    let tags: Vec<Tag> = (1..=N).map(Tag).collect();
    std::thread::sleep(Duration::from_secs(1));
    let grown = rss().saturating_sub(before);
    // Without the pause, the server would hold every reply it could make: 500 MiB. With
    // it, what waits is bounded by the unread-reply limit (16 MiB) plus the requests
    // already in flight when the limit was hit (at most the session's 1024 of 64 KiB).
    assert!(
        grown < 160 << 20,
        "the server queued {} MiB of unread replies",
        grown >> 20
    );

    // Now read: every request answered exactly once, whole.
    let mut pending: BTreeSet<u16> = tags.iter().map(|t| t.0).collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !pending.is_empty() {
        assert!(
            Instant::now() < deadline,
            "{} replies never came",
            pending.len()
        );
        let frame = c.link.recv().expect("a reply");
        assert_eq!(frame.len(), PAYLOAD_HEADER_LEN + COUNT as usize);
        assert_eq!(frame[4], 117, "Rread");
        let tag = u16::from_le_bytes([frame[5], frame[6]]);
        assert!(
            pending.remove(&tag),
            "a reply for tag {tag} twice, or never asked"
        );
        assert_eq!(&frame[PAYLOAD_HEADER_LEN..], &data[..]);
    }
    sender.join().unwrap();
    // The connection is still in order (tags from here on are the client's own, above N).
    c.clunk(f).unwrap();
}
