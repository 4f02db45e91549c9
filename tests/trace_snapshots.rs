//! insta snapshots of decoded PDU traces of scripted sessions: what goes over the wire,
//! one line per PDU, for a reader to review when behaviour changes.

mod client;

use client::fixture::{Stall, in_process};
use client::{Client, InProcess, Link};
use co9p::protocol::*;
use co9p::server::Config;
use rand::{RngExt, SeedableRng};

/// A link that writes down every PDU it carries.
struct Recorder<L> {
    inner: L,
    lines: Vec<String>,
}

impl<L: Link> Link for Recorder<L> {
    fn send(&mut self, frame: Vec<u8>) {
        let line = match Request::decode(&frame, u32::MAX) {
            Ok(r) => r.to_string(),
            Err(e) => format!("(malformed request: {e})"),
        };
        self.lines.push(format!("-> {line}"));
        self.inner.send(frame);
    }
    fn recv(&mut self) -> Option<Vec<u8>> {
        let frame = self.inner.recv()?;
        let line = Reply::decode(&frame, u32::MAX)
            .map(|r| r.to_string())
            .unwrap_or_else(|e| format!("(malformed reply: {e})"));
        self.lines.push(format!("<- {line}"));
        Some(frame)
    }
    fn settle(&mut self) {
        self.inner.settle();
    }
}

type Rec = Client<Recorder<InProcess<client::fixture::TestFs>>>;

fn recorded() -> (Rec, Stall) {
    let (c, stall) = in_process(Config::default());
    (
        Client::new(Recorder {
            inner: c.link,
            lines: Vec::new(),
        }),
        stall,
    )
}

fn snapshot(name: &str, c: &Rec) {
    let text = c.link.lines.join("\n");
    insta::with_settings!({
        snapshot_path => concat!(env!("CARGO_MANIFEST_DIR"), "/snapshots"),
        prepend_module_to_snapshot => false,
    }, {
        insta::assert_snapshot!(name, text);
    });
}

#[test]
fn attach_walk_read() {
    let (mut c, _) = recorded();
    c.version(8192);
    c.attach(Fid(0), "").unwrap();
    c.mkdir(Fid(0), "etc", 0o755).unwrap();
    let d = c.walk_path(Fid(0), "etc").unwrap();
    c.lcreate(d, "motd", OpenFlags::WRONLY, 0o644).unwrap();
    c.write(d, 0, b"welcome to co9p\n").unwrap();
    c.clunk(d).unwrap();
    c.walk(Fid(0), Fid(1), &["etc", "motd"]).unwrap();
    c.lopen(Fid(1), OpenFlags::RDONLY).unwrap();
    assert_eq!(c.read(Fid(1), 0, 4096).unwrap(), b"welcome to co9p\n");
    assert_eq!(c.read(Fid(1), 16, 4096).unwrap(), b"");
    c.getattr(Fid(1)).unwrap();
    c.clunk(Fid(1)).unwrap();
    assert_eq!(
        c.walk(Fid(0), Fid(2), &["etc", "missing"]).unwrap().len(),
        1
    );
    snapshot("trace_attach_walk_read", &c);
}

#[test]
fn create_write_readdir() {
    let (mut c, _) = recorded();
    c.version(8192);
    c.attach(Fid(0), "").unwrap();
    c.mkdir(Fid(0), "d", 0o755).unwrap();
    for name in ["one", "two", "three"] {
        let f = c.walk_path(Fid(0), "d").unwrap();
        c.lcreate(f, name, OpenFlags::RDWR, 0o600).unwrap();
        c.write(f, 0, name.as_bytes()).unwrap();
        c.clunk(f).unwrap();
    }
    let d = c.walk_path(Fid(0), "d").unwrap();
    c.symlink(d, "link", "one").unwrap();
    c.lopen(d, OpenFlags::DIRECTORY).unwrap();
    let all = c.readdir_all(d, 128);
    assert_eq!(all.len(), 6);
    snapshot("trace_create_write_readdir", &c);
}

#[test]
fn flush_races_with_a_fixed_seed() {
    let (mut c, stall) = recorded();
    c.version(8192);
    c.attach(Fid(0), "").unwrap();
    let f = c.walk_path(Fid(0), "").unwrap();
    c.lcreate(f, "racy", OpenFlags::RDWR, 0o644).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2011);
    let mut size = 0u64;
    for round in 0..16u64 {
        // Each round picks: stall or not, run the write before the flush or not.
        let stalled = rng.random_bool(0.5);
        let early = rng.random_bool(0.5);
        stall.set(stalled);
        c.link.inner.batching = !early;
        let w = c.send(Tmessage::Write {
            fid: f,
            offset: round,
            data: Data(vec![b'a' + round as u8]),
        });
        let fl = c.send(Tmessage::Flush { oldtag: w });
        c.link.inner.batching = false;
        assert_eq!(c.reply(fl), Some(Rmessage::Flush {}));
        // A reply to the write exists exactly when it ran unstalled before the flush.
        assert_eq!(c.has_reply(w), early && !stalled, "round {round}");
        if c.has_reply(w) {
            c.reply(w);
            size = round + 1;
        }
        stall.set(false);
    }
    assert_eq!(c.getattr(f).unwrap().size, size);
    snapshot("trace_flush_races_seed_2011", &c);
}
