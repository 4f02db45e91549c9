//! Per-request cost of the device core, in process: MemFs behind a session on a
//! zero-thread pool, no socket. Each figure is the median of several samples of many
//! requests, in ns per request: decode, dispatch, the handler coroutine, the filesystem
//! call and the reply's encoding. Run: `cargo bench --bench server`.

use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use co9p::co::{PoolHandle, ThreadPool};
use co9p::fs::MemFs;
use co9p::protocol::*;
use co9p::server::{Config, Responder, Session};

/// Keeps only the last reply, reusing one buffer, so the bench measures the server.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

struct SinkResponder {
    sink: Sink,
    buf: Vec<u8>,
}

impl Responder for SinkResponder {
    fn payload(&mut self, max: usize) -> Vec<std::io::IoSliceMut<'_>> {
        self.buf.resize(PAYLOAD_HEADER_LEN + max, 0);
        vec![std::io::IoSliceMut::new(
            &mut self.buf[PAYLOAD_HEADER_LEN..],
        )]
    }
    fn send_payload(mut self, kind: PayloadReply, tag: Tag, count: u32) {
        encode_payload_header(kind, tag, count, &mut self.buf).unwrap();
        self.buf.truncate(PAYLOAD_HEADER_LEN + count as usize);
        *self.sink.0.lock().unwrap() = self.buf;
    }
    fn send(self, reply: &Reply) {
        let mut out = self.sink.0.lock().unwrap();
        out.resize(reply.encoded_len(), 0);
        reply.encode(&mut out).unwrap();
    }
}

struct Bench {
    pool: ThreadPool,
    session: Session<MemFs, PoolHandle, SinkResponder>,
    sink: Sink,
}

impl Bench {
    fn new() -> Bench {
        let pool = ThreadPool::new(0);
        let session = Session::new(
            Arc::new(MemFs::new()),
            pool.handle(),
            Arc::new(Config::default()),
        );
        Bench {
            pool,
            session,
            sink: Sink::default(),
        }
    }

    fn rpc(&self, frame: &[u8]) -> Reply {
        self.submit(frame);
        Reply::decode(&self.sink.0.lock().unwrap(), u32::MAX).unwrap()
    }

    fn submit(&self, frame: &[u8]) {
        let r = SinkResponder {
            sink: self.sink.clone(),
            buf: Vec::new(),
        };
        self.session.submit(frame, r).unwrap();
        self.pool.run_until_idle();
    }
}

fn frame(tag: u16, msg: Tmessage) -> Vec<u8> {
    Request::new(Tag(tag), msg).to_bytes().unwrap()
}

/// Median ns per iteration of `f` over `samples` samples of `iters` iterations.
fn measure(samples: usize, iters: usize, mut f: impl FnMut()) -> f64 {
    let mut v: Vec<f64> = (0..samples)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            t.elapsed().as_nanos() as f64 / iters as f64
        })
        .collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let filter = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    let run = |name: &str| filter.as_deref().is_none_or(|f| name.contains(f));
    let b = Bench::new();
    let msize = 512 * 1024;
    b.rpc(&frame(
        0xffff,
        Tmessage::Version {
            msize,
            version: "9P2000.L".into(),
        },
    ));
    b.rpc(&frame(
        1,
        Tmessage::Attach {
            fid: Fid(0),
            afid: Fid::NOFID,
            uname: "".into(),
            aname: "".into(),
            n_uname: 0,
        },
    ));
    // A 4 KiB file and a directory of 2000 entries.
    b.rpc(&frame(
        1,
        Tmessage::Walk {
            fid: Fid(0),
            newfid: Fid(1),
            wnames: vec![],
        },
    ));
    b.rpc(&frame(
        1,
        Tmessage::Lcreate {
            fid: Fid(1),
            name: "file".into(),
            flags: OpenFlags::RDWR,
            mode: 0o644,
            gid: 0,
        },
    ));
    b.rpc(&frame(
        1,
        Tmessage::Write {
            fid: Fid(1),
            offset: 0,
            data: Data(vec![0x5a; 4096]),
        },
    ));
    b.rpc(&frame(
        1,
        Tmessage::Mkdir {
            dfid: Fid(0),
            name: "big".into(),
            mode: 0o755,
            gid: 0,
        },
    ));
    b.rpc(&frame(
        1,
        Tmessage::Walk {
            fid: Fid(0),
            newfid: Fid(2),
            wnames: vec!["big".into()],
        },
    ));
    for i in 0..2000 {
        b.rpc(&frame(
            1,
            Tmessage::Walk {
                fid: Fid(2),
                newfid: Fid(3),
                wnames: vec![],
            },
        ));
        let r = b.rpc(&frame(
            1,
            Tmessage::Lcreate {
                fid: Fid(3),
                name: format!("entry-{i:05}").as_str().into(),
                flags: OpenFlags::WRONLY,
                mode: 0o644,
                gid: 0,
            },
        ));
        assert!(matches!(r.msg, Rmessage::Lcreate { .. }));
        b.rpc(&frame(1, Tmessage::Clunk { fid: Fid(3) }));
    }
    b.rpc(&frame(
        1,
        Tmessage::Lopen {
            fid: Fid(2),
            flags: OpenFlags::DIRECTORY,
        },
    ));

    println!("{:<28} {:>12}", "request (MemFs, in process)", "ns/request");
    if run("getattr") {
        let f = frame(
            7,
            Tmessage::Getattr {
                fid: Fid(1),
                request_mask: GetattrMask::ALL,
            },
        );
        let ns = measure(15, 20_000, || b.submit(black_box(&f)));
        println!("{:<28} {:>12.0}", "Tgetattr", ns);
    }
    if run("walk") {
        let w = frame(
            7,
            Tmessage::Walk {
                fid: Fid(0),
                newfid: Fid(9),
                wnames: vec!["file".into()],
            },
        );
        let c = frame(8, Tmessage::Clunk { fid: Fid(9) });
        let ns = measure(15, 10_000, || {
            b.submit(black_box(&w));
            b.submit(black_box(&c));
        });
        println!("{:<28} {:>12.0}", "Twalk+Tclunk (pair)", ns);
    }
    if run("read") {
        let f = frame(
            7,
            Tmessage::Read {
                fid: Fid(1),
                offset: 0,
                count: 4096,
            },
        );
        let ns = measure(15, 10_000, || b.submit(black_box(&f)));
        assert_eq!(b.sink.0.lock().unwrap().len(), PAYLOAD_HEADER_LEN + 4096);
        println!("{:<28} {:>12.0}", "Tread 4 KiB", ns);
    }
    if run("readdir") {
        // The whole directory, in msize-sized replies as a client would read it.
        let ns = measure(11, 20, || {
            let mut offset = 0;
            let mut n = 0;
            loop {
                b.submit(&frame(
                    7,
                    Tmessage::Readdir {
                        fid: Fid(2),
                        offset,
                        count: msize - 11,
                    },
                ));
                // Walk the packed entries without decoding them: the client's cost is not
                // the server's.
                let reply = b.sink.0.lock().unwrap();
                let mut at = PAYLOAD_HEADER_LEN;
                let mut last = None;
                while at < reply.len() {
                    last = Some(u64::from_le_bytes(
                        reply[at + 13..at + 21].try_into().unwrap(),
                    ));
                    let name_len = u16::from_le_bytes([reply[at + 22], reply[at + 23]]) as usize;
                    at += 24 + name_len;
                    n += 1;
                }
                match last {
                    Some(o) => offset = o,
                    None => break,
                }
            }
            assert_eq!(n, 2002);
        });
        println!(
            "{:<28} {:>12.0}  ({:.3} ms; QEMU publishes 2.6 ms)",
            "readdir of 2000 entries",
            ns,
            ns / 1e6
        );
    }
}
