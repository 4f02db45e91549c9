//! `co9p-bench`: a 9P2000.L load generator for any server, over tcp or a unix socket.
//!
//! N connections, each with several requests in flight (`--depth`), one thread per
//! connection, blocking std sockets and the `co9p::protocol` codec. Each workload runs for
//! `--secs` seconds or `--ops` operations, whichever comes first, and reports operations per
//! second and p50/p99 latency of one operation. `--vs ADDR` runs every workload against a
//! second server in the same invocation and prints the ratio.
//!
//! The fixtures are made through the protocol under `co9p-bench.<pid>.<a|b>/` in the export
//! (a data file, a directory of `--entries` files) and removed at the end.
//!
//! ```text
//! co9p-bench --addr tcp:127.0.0.1:5640 --aname /srv/a --vs tcp:127.0.0.1:5641 --vs-aname /srv/b
//! ```

use std::io::{BufReader, BufWriter, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use co9p::protocol::*;

#[derive(Parser, Clone)]
#[command(name = "co9p-bench", about = "9P2000.L load generator (tcp or unix)")]
struct Args {
    /// The server: tcp:HOST:PORT or unix:PATH.
    #[arg(long)]
    addr: String,
    /// Attach name for --addr (diod wants the exported path).
    #[arg(long, default_value = "")]
    aname: String,
    /// A second server to run the same workloads against; ratios are first / second.
    #[arg(long)]
    vs: Option<String>,
    /// Attach name for --vs.
    #[arg(long, default_value = "")]
    vs_aname: String,
    /// Workloads to run, comma separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = Workload::ALL)]
    workloads: Vec<Workload>,
    /// Concurrent connections.
    #[arg(long, default_value_t = 4)]
    conns: usize,
    /// Requests in flight per connection.
    #[arg(long, default_value_t = 8)]
    depth: usize,
    /// Seconds per workload and server.
    #[arg(long, default_value_t = 3.0)]
    secs: f64,
    /// At most this many operations per workload and server.
    #[arg(long, default_value_t = 2_000_000)]
    ops: u64,
    /// msize to ask for (servers may agree to less: diod caps it at 64 KiB).
    #[arg(long, default_value_t = 1024 * 1024 + 4096)]
    msize: u32,
    /// Size of the data file read by read4k/read1m, in MiB.
    #[arg(long, default_value_t = 64)]
    file_mib: u64,
    /// Entries in the directory listed by readdir.
    #[arg(long, default_value_t = 10_000)]
    entries: u32,
    /// Leave the fixtures in the export.
    #[arg(long)]
    keep: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Workload {
    /// Tgetattr of one file.
    Getattr,
    /// Twalk of two names from the root, then Tclunk.
    Walk,
    /// Twalk, Tlcreate, Tremove of a fresh name in one directory.
    Create,
    /// Tread of 4 KiB at a random aligned offset of the data file.
    Read4k,
    /// 1 MiB read sequentially (in msize-sized Treads), moving through the data file.
    Read1m,
    /// Open a directory of --entries files, Treaddir to the end, clunk.
    Readdir,
}

impl Workload {
    const ALL: [Workload; 6] = [
        Workload::Getattr,
        Workload::Walk,
        Workload::Create,
        Workload::Read4k,
        Workload::Read1m,
        Workload::Readdir,
    ];
    fn name(self) -> &'static str {
        match self {
            Workload::Getattr => "getattr",
            Workload::Walk => "walk+clunk",
            Workload::Create => "create+remove",
            Workload::Read4k => "read 4KiB rand",
            Workload::Read1m => "read 1MiB seq",
            Workload::Readdir => "readdir",
        }
    }
}

type Res<T> = Result<T, String>;
const MIB: u64 = 1024 * 1024;
const IO_TIMEOUT: Duration = Duration::from_secs(30);
// Fids every connection sets up; slot fids start at SLOT_FID.
const ROOT: Fid = Fid(0);
const DIR: Fid = Fid(1);
const DATA: Fid = Fid(2);
const DATA_OPEN: Fid = Fid(3);
const CHURN: Fid = Fid(4);
const MANY: Fid = Fid(5);
const SLOT_FID: u32 = 100;

/// One 9P connection: buffered halves of a socket and a reusable frame buffer.
struct Conn {
    r: BufReader<Box<dyn Read + Send>>,
    w: BufWriter<Box<dyn Write + Send>>,
    msize: u32,
    frame: Vec<u8>,
    scratch: Vec<u8>,
}

impl Conn {
    fn connect(addr: &str) -> Res<Conn> {
        let (r, w): (Box<dyn Read + Send>, Box<dyn Write + Send>) =
            if let Some(a) = addr.strip_prefix("tcp:") {
                let s = TcpStream::connect(a).map_err(|e| format!("connect {addr}: {e}"))?;
                s.set_nodelay(true).map_err(|e| e.to_string())?;
                s.set_read_timeout(Some(IO_TIMEOUT))
                    .map_err(|e| e.to_string())?;
                (
                    Box::new(s.try_clone().map_err(|e| e.to_string())?),
                    Box::new(s),
                )
            } else if let Some(p) = addr.strip_prefix("unix:") {
                let s = UnixStream::connect(p).map_err(|e| format!("connect {addr}: {e}"))?;
                s.set_read_timeout(Some(IO_TIMEOUT))
                    .map_err(|e| e.to_string())?;
                (
                    Box::new(s.try_clone().map_err(|e| e.to_string())?),
                    Box::new(s),
                )
            } else {
                return Err(format!("address {addr}: want tcp:HOST:PORT or unix:PATH"));
            };
        Ok(Conn {
            r: BufReader::with_capacity(256 * 1024, r),
            w: BufWriter::with_capacity(64 * 1024, w),
            msize: 8192,
            frame: Vec::new(),
            scratch: Vec::new(),
        })
    }

    /// Version and attach (fid 0 = the root).
    fn handshake(addr: &str, aname: &str, msize: u32) -> Res<Conn> {
        let mut c = Conn::connect(addr)?;
        c.msize = msize;
        let v = Tmessage::Version {
            msize,
            version: VERSION_9P2000_L.into(),
        };
        match c.rpc_tagged(Tag::NOTAG, v)? {
            Rmessage::Version { msize, version } if version.as_bytes() == b"9P2000.L" => {
                c.msize = msize
            }
            r => return Err(format!("Tversion: {r:?}")),
        }
        c.rpc(Tmessage::Attach {
            fid: ROOT,
            afid: Fid::NOFID,
            uname: "root".into(),
            aname: aname.into(),
            n_uname: 0,
        })?;
        Ok(c)
    }

    fn send(&mut self, tag: Tag, msg: Tmessage) -> Res<()> {
        let req = Request::new(tag, msg);
        self.scratch.resize(req.encoded_len(), 0);
        req.encode(&mut self.scratch).map_err(|e| e.to_string())?;
        self.w.write_all(&self.scratch).map_err(|e| e.to_string())
    }

    fn flush(&mut self) -> Res<()> {
        self.w.flush().map_err(|e| format!("send: {e}"))
    }

    /// Reads one reply frame into `self.frame`; returns its tag.
    fn recv(&mut self) -> Res<Tag> {
        if self.r.buffer().is_empty() {
            self.flush()?;
        }
        let mut size = [0u8; 4];
        self.r
            .read_exact(&mut size)
            .map_err(|e| format!("recv: {e}"))?;
        let n = frame_size(size) as usize;
        if n < HEADER_LEN || n > self.msize as usize {
            return Err(format!("reply of {n} bytes (msize {})", self.msize));
        }
        self.frame.resize(n, 0);
        self.frame[..4].copy_from_slice(&size);
        self.r
            .read_exact(&mut self.frame[4..])
            .map_err(|e| format!("recv: {e}"))?;
        Ok(Tag(u16::from_le_bytes([self.frame[5], self.frame[6]])))
    }

    /// Decodes the frame in hand; an Rlerror becomes an error.
    fn decoded(&self) -> Res<Rmessage> {
        match Reply::decode(&self.frame, self.msize) {
            Ok(Pdu {
                msg: Rmessage::Lerror { ecode },
                ..
            }) => Err(format!("Rlerror {:?}", ecode)),
            Ok(r) => Ok(r.msg),
            Err(e) => Err(format!("bad reply: {e}")),
        }
    }

    /// The byte count of the Rread in hand, without copying its data out.
    fn read_count(&self) -> Res<u32> {
        if self.frame[4] != 117 {
            return self
                .decoded()
                .and_then(|r| Err(format!("want Rread, got {r:?}")));
        }
        let mut r = Reader::new(&self.frame[HEADER_LEN..]);
        let count = u32::decode(&mut r).map_err(|e| e.to_string())?;
        if count as usize != self.frame.len() - PAYLOAD_HEADER_LEN {
            return Err("Rread count does not match its frame".into());
        }
        Ok(count)
    }

    fn rpc_tagged(&mut self, tag: Tag, msg: Tmessage) -> Res<Rmessage> {
        let what = msg.name();
        self.send(tag, msg)?;
        let got = self.recv()?;
        if got != tag {
            return Err(format!("reply tag {got:?}, want {tag:?}"));
        }
        self.decoded().map_err(|e| format!("{what}: {e}"))
    }

    fn rpc(&mut self, msg: Tmessage) -> Res<Rmessage> {
        self.rpc_tagged(Tag(1), msg)
    }

    /// Sends every message with up to 64 in flight; fails on the first error reply.
    fn batch(&mut self, msgs: impl IntoIterator<Item = Tmessage>) -> Res<()> {
        let mut inflight = 0;
        for (i, m) in msgs.into_iter().enumerate() {
            if inflight == 64 {
                self.recv()?;
                self.decoded()?;
                inflight -= 1;
            }
            self.send(Tag((i % 4096) as u16), m)?;
            inflight += 1;
        }
        for _ in 0..inflight {
            self.recv()?;
            self.decoded()?;
        }
        Ok(())
    }

    fn walk(&mut self, fid: Fid, newfid: Fid, path: &[&str]) -> Res<()> {
        let wnames = path.iter().map(|&n| n.into()).collect();
        match self.rpc(Tmessage::Walk {
            fid,
            newfid,
            wnames,
        })? {
            Rmessage::Walk { wqids } if wqids.len() == path.len() => Ok(()),
            r => Err(format!("walk {path:?}: {r:?}")),
        }
    }

    fn clunk(&mut self, fid: Fid) -> Res<()> {
        self.rpc(Tmessage::Clunk { fid }).map(drop)
    }
}

fn getattr_basic(fid: Fid) -> Tmessage {
    Tmessage::Getattr {
        fid,
        request_mask: GetattrMask::BASIC,
    }
}

/// One server under test.
struct Side {
    label: &'static str,
    addr: String,
    aname: String,
    dir: String,
    msize: u32,
}

impl Side {
    /// A connection with the per-connection fids of `w` set up.
    fn open(&self, args: &Args, w: Option<Workload>) -> Res<Conn> {
        let mut c = Conn::handshake(&self.addr, &self.aname, args.msize)?;
        c.walk(ROOT, DIR, &[&self.dir])?;
        match w {
            Some(Workload::Getattr) => c.walk(DIR, DATA, &["data"])?,
            Some(Workload::Read4k | Workload::Read1m) => {
                c.walk(DIR, DATA_OPEN, &["data"])?;
                c.rpc(Tmessage::Lopen {
                    fid: DATA_OPEN,
                    flags: OpenFlags::RDONLY,
                })?;
            }
            Some(Workload::Create) => c.walk(DIR, CHURN, &["churn"])?,
            Some(Workload::Readdir) => c.walk(DIR, MANY, &["many"])?,
            Some(Workload::Walk) | None => {}
        }
        Ok(c)
    }

    /// Makes the fixtures the chosen workloads read.
    fn setup(&mut self, args: &Args) -> Res<()> {
        let mut c = Conn::handshake(&self.addr, &self.aname, args.msize)?;
        self.msize = c.msize;
        let mkdir = |c: &mut Conn, dfid: Fid, name: &str| {
            c.rpc(Tmessage::Mkdir {
                dfid,
                name: name.into(),
                mode: 0o755,
                gid: 0,
            })
            .map(drop)
        };
        mkdir(&mut c, ROOT, &self.dir)?;
        c.walk(ROOT, DIR, &[&self.dir])?;
        mkdir(&mut c, DIR, "churn")?;
        mkdir(&mut c, DIR, "many")?;
        // The data file, written in msize-sized pipelined Twrites.
        c.walk(DIR, Fid(10), &[])?;
        c.rpc(Tmessage::Lcreate {
            fid: Fid(10),
            name: "data".into(),
            flags: OpenFlags::WRONLY,
            mode: 0o644,
            gid: 0,
        })?;
        let wants_data = args
            .workloads
            .iter()
            .any(|w| matches!(w, Workload::Read4k | Workload::Read1m));
        let size = if wants_data { args.file_mib * MIB } else { 0 };
        let chunk = (c.msize as usize - TWRITE_HEADER_LEN - 64).min(MIB as usize);
        let mut pattern = vec![0u8; chunk];
        for (i, b) in pattern.iter_mut().enumerate() {
            *b = (i * 7 + i / 251) as u8;
        }
        let writes = (0..size).step_by(chunk).map(|off| Tmessage::Write {
            fid: Fid(10),
            offset: off,
            data: Data(pattern[..chunk.min((size - off) as usize)].to_vec()),
        });
        c.batch(writes)?;
        c.clunk(Fid(10))?;
        // The directory to list: --entries empty files.
        if args.workloads.contains(&Workload::Readdir) {
            c.walk(DIR, MANY, &["many"])?;
            // 64 files at a time: their walks, then their creates, then their clunks.
            for group in (0..args.entries).collect::<Vec<_>>().chunks(64) {
                let fid = |i: u32| Fid(1000 + i % 64);
                c.batch(group.iter().map(|&i| Tmessage::Walk {
                    fid: MANY,
                    newfid: fid(i),
                    wnames: vec![],
                }))?;
                c.batch(group.iter().map(|&i| Tmessage::Lcreate {
                    fid: fid(i),
                    name: format!("entry{i:05}").as_str().into(),
                    flags: OpenFlags::WRONLY,
                    mode: 0o644,
                    gid: 0,
                }))?;
                c.batch(group.iter().map(|&i| Tmessage::Clunk { fid: fid(i) }))?;
            }
        }
        Ok(())
    }

    /// Removes the fixtures with Twalk + Tremove (diod has no Tunlinkat).
    fn cleanup(&self, args: &Args) -> Res<()> {
        let mut c = Conn::handshake(&self.addr, &self.aname, args.msize)?;
        c.walk(ROOT, DIR, &[&self.dir])?;
        c.walk(DIR, MANY, &["many"])?;
        let entries = if args.workloads.contains(&Workload::Readdir) {
            args.entries
        } else {
            0
        };
        let fid = |i: u32| Fid(1000 + i % 64);
        for group in (0..entries).collect::<Vec<_>>().chunks(64) {
            c.batch(group.iter().map(|&i| Tmessage::Walk {
                fid: MANY,
                newfid: fid(i),
                wnames: vec![format!("entry{i:05}").as_str().into()],
            }))?;
            c.batch(group.iter().map(|&i| Tmessage::Remove { fid: fid(i) }))?;
        }
        c.rpc(Tmessage::Remove { fid: MANY })?;
        for name in ["churn", "data"] {
            c.walk(DIR, Fid(10), &[name])?;
            c.rpc(Tmessage::Remove { fid: Fid(10) })?;
        }
        c.rpc(Tmessage::Remove { fid: DIR })?;
        Ok(())
    }
}

/// A slot: one chain of requests in flight on a connection, one operation at a time.
struct Slot {
    fid: Fid,
    /// Requests of the current operation answered so far.
    step: u32,
    /// Operations completed.
    done: u64,
    started: Instant,
    rng: u64,
    /// read1m: bytes of the current MiB read so far; readdir: the cookie to go on from.
    pos: u64,
    /// readdir: the listing reached its end and the clunk is in flight.
    closing: bool,
}

/// What one connection measured.
#[derive(Default)]
struct Tally {
    ops: u64,
    bytes: u64,
    entries: u64,
    lat_ns: Vec<u64>,
}

/// The next request of `slot`'s operation, or `None` when the operation is complete. Called
/// with `first` at the start of an operation, else with the previous reply in `c.frame`
/// (which must not be an error).
fn step(
    w: Workload,
    c: &Conn,
    s: &mut Slot,
    first: bool,
    file_size: u64,
    t: &mut Tally,
) -> Res<Option<Tmessage>> {
    let n = if first { 0 } else { s.step + 1 };
    s.step = n;
    if first {
        s.pos = 0;
        s.closing = false;
    } else {
        match w {
            Workload::Read4k | Workload::Read1m => {
                let got = c.read_count()? as u64;
                t.bytes += got;
                s.pos += got;
                if got == 0 {
                    return Err("short file: Rread of 0 bytes".into());
                }
            }
            Workload::Readdir if n >= 3 && !s.closing => match c.decoded()? {
                Rmessage::Readdir { entries } => {
                    t.entries += entries.0.len() as u64;
                    match entries.0.last() {
                        Some(d) => s.pos = d.offset,
                        None => s.closing = true,
                    }
                }
                r => return Err(format!("want Rreaddir, got {r:?}")),
            },
            _ => {
                c.decoded()?;
            }
        }
    }
    let msg = match (w, n) {
        (Workload::Getattr, 0) => getattr_basic(DATA),
        (Workload::Walk, 0) => Tmessage::Walk {
            fid: DIR,
            newfid: s.fid,
            wnames: vec!["many".into(), "..".into()],
        },
        (Workload::Walk, 1) => Tmessage::Clunk { fid: s.fid },
        (Workload::Create, 0) => Tmessage::Walk {
            fid: CHURN,
            newfid: s.fid,
            wnames: vec![],
        },
        (Workload::Create, 1) => Tmessage::Lcreate {
            fid: s.fid,
            name: format!("f{}_{}", s.fid.0, s.done).as_str().into(),
            flags: OpenFlags::WRONLY,
            mode: 0o644,
            gid: 0,
        },
        // Tremove rather than Tclunk + Tunlinkat: diod has no Tunlinkat.
        (Workload::Create, 2) => Tmessage::Remove { fid: s.fid },
        (Workload::Read4k, 0) => {
            s.rng ^= s.rng << 13;
            s.rng ^= s.rng >> 7;
            s.rng ^= s.rng << 17;
            Tmessage::Read {
                fid: DATA_OPEN,
                offset: (s.rng % (file_size / 4096)) * 4096,
                count: 4096,
            }
        }
        (Workload::Read1m, _) if s.pos < MIB => {
            // Each operation reads one MiB, in msize-sized Treads, at a MiB that moves
            // through the file.
            let base = ((s.fid.0 as u64 * 7919 + s.done) % (file_size / MIB)) * MIB;
            let chunk = (c.msize as u64 - 24).min(MIB - s.pos);
            Tmessage::Read {
                fid: DATA_OPEN,
                offset: base + s.pos,
                count: chunk as u32,
            }
        }
        (Workload::Readdir, 0) => Tmessage::Walk {
            fid: MANY,
            newfid: s.fid,
            wnames: vec![],
        },
        (Workload::Readdir, 1) => Tmessage::Lopen {
            fid: s.fid,
            flags: OpenFlags::RDONLY | OpenFlags::DIRECTORY,
        },
        (Workload::Readdir, _) if s.closing && n > 2 && s.pos != u64::MAX => {
            s.pos = u64::MAX;
            Tmessage::Clunk { fid: s.fid }
        }
        (Workload::Readdir, _) if !s.closing => Tmessage::Readdir {
            fid: s.fid,
            offset: s.pos,
            count: c.msize - 24,
        },
        _ => return Ok(None),
    };
    Ok(Some(msg))
}

/// Runs `w` on one connection until the deadline or the shared op budget is spent.
fn drive(
    w: Workload,
    mut c: Conn,
    depth: usize,
    file_size: u64,
    deadline: Instant,
    budget: &AtomicU64,
    conn_no: usize,
) -> Res<Tally> {
    let mut t = Tally::default();
    let mut slots: Vec<Slot> = (0..depth)
        .map(|i| {
            let k = (conn_no * depth + i) as u64;
            Slot {
                fid: Fid(SLOT_FID + k as u32),
                step: 0,
                done: 0,
                started: Instant::now(),
                rng: 0x9e37_79b9_7f4a_7c15 ^ (k + 1).wrapping_mul(0x2545_f491_4f6c_dd1d),
                pos: 0,
                closing: false,
            }
        })
        .collect();
    // Spends one op of the shared budget; false once it is gone.
    let take = || {
        budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1))
            .is_ok()
    };
    let mut inflight = 0;
    for (i, s) in slots.iter_mut().enumerate() {
        if !take() {
            break;
        }
        s.started = Instant::now();
        let m = step(w, &c, s, true, file_size, &mut t)?.expect("an op has a request");
        c.send(Tag(i as u16), m)?;
        inflight += 1;
    }
    while inflight > 0 {
        let tag = c.recv()?;
        let s = slots
            .get_mut(tag.0 as usize)
            .ok_or_else(|| format!("reply with unknown tag {}", tag.0))?;
        if let Some(m) = step(w, &c, s, false, file_size, &mut t)? {
            c.send(tag, m)?;
            continue;
        }
        t.ops += 1;
        s.done += 1;
        t.lat_ns.push(s.started.elapsed().as_nanos() as u64);
        if Instant::now() < deadline && take() {
            s.started = Instant::now();
            let m = step(w, &c, s, true, file_size, &mut t)?.expect("an op has a request");
            c.send(tag, m)?;
        } else {
            inflight -= 1;
        }
    }
    Ok(t)
}

/// One workload's figures.
struct Figures {
    ops_s: f64,
    mib_s: f64,
    p50_us: f64,
    p99_us: f64,
    ops: u64,
    entries: u64,
}

fn run(side: &Side, args: &Args, w: Workload) -> Res<Figures> {
    let conns = (0..args.conns)
        .map(|_| side.open(args, Some(w)))
        .collect::<Res<Vec<_>>>()?;
    let budget = Arc::new(AtomicU64::new(args.ops));
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(args.secs);
    let file_size = args.file_mib * MIB;
    let tallies: Vec<Res<Tally>> = std::thread::scope(|sc| {
        let hs: Vec<_> = conns
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let budget = &budget;
                sc.spawn(move || drive(w, c, args.depth, file_size, deadline, budget, i))
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("thread panicked".into())))
            .collect()
    });
    let secs = start.elapsed().as_secs_f64();
    let mut all = Tally::default();
    for t in tallies {
        let t = t?;
        all.ops += t.ops;
        all.bytes += t.bytes;
        all.entries += t.entries;
        all.lat_ns.extend(t.lat_ns);
    }
    all.lat_ns.sort_unstable();
    let pct = |p: f64| {
        let v = &all.lat_ns;
        if v.is_empty() {
            0.0
        } else {
            v[((v.len() - 1) as f64 * p) as usize] as f64 / 1e3
        }
    };
    Ok(Figures {
        ops_s: all.ops as f64 / secs,
        mib_s: all.bytes as f64 / MIB as f64 / secs,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        ops: all.ops,
        entries: all.entries,
    })
}

/// memcpy bandwidth (MiB/s) of 1 MiB copies: one hot source, and sources spread over
/// `file` bytes (as a server copying from the page cache sees them).
fn memcpy_mib_s(file: u64) -> (f64, f64) {
    let src = vec![1u8; file.max(MIB) as usize];
    let mut dst = vec![0u8; MIB as usize];
    let mut bench = |spread: bool| {
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < Duration::from_millis(400) {
            for _ in 0..16 {
                let off = if spread {
                    (n % (src.len() as u64 / MIB)) * MIB
                } else {
                    0
                } as usize;
                dst.copy_from_slice(&src[off..off + MIB as usize]);
                std::hint::black_box(&mut dst);
                n += 1;
            }
        }
        n as f64 / start.elapsed().as_secs_f64()
    };
    (bench(false), bench(true))
}

fn main() -> ExitCode {
    let args = Args::parse();
    match bench(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("co9p-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn bench(args: &Args) -> Res<()> {
    if args.depth == 0 || args.conns == 0 || args.conns * args.depth > 4000 {
        return Err("want 1 <= conns * depth <= 4000".into());
    }
    if args.file_mib == 0 {
        return Err("--file-mib must be at least 1".into());
    }
    let pid = std::process::id();
    let mut sides = vec![Side {
        label: "A",
        addr: args.addr.clone(),
        aname: args.aname.clone(),
        dir: format!("co9p-bench.{pid}.a"),
        msize: 0,
    }];
    if let Some(vs) = &args.vs {
        sides.push(Side {
            label: "B",
            addr: vs.clone(),
            aname: args.vs_aname.clone(),
            dir: format!("co9p-bench.{pid}.b"),
            msize: 0,
        });
    }
    for s in sides.iter_mut() {
        let t = Instant::now();
        s.setup(args)
            .map_err(|e| format!("{} setup: {e}", s.addr))?;
        println!(
            "{}: {} aname={:?} msize={} (asked {}), fixtures {} in {:.1}s",
            s.label,
            s.addr,
            s.aname,
            s.msize,
            args.msize,
            s.dir,
            t.elapsed().as_secs_f64()
        );
    }
    println!(
        "{} connections x {} in flight, {}s or {} ops per workload",
        args.conns, args.depth, args.secs, args.ops
    );
    let mut results = Vec::new();
    let mut failure = None;
    for &w in &args.workloads {
        let mut row = Vec::new();
        for s in &sides {
            match run(s, args, w) {
                Ok(f) => row.push(Some(f)),
                Err(e) => {
                    eprintln!("{} {}: {e}", s.label, w.name());
                    failure.get_or_insert(format!("{} {}: {e}", s.label, w.name()));
                    row.push(None);
                }
            }
        }
        print_row(w, &row);
        results.push((w, row));
    }
    if args.workloads.contains(&Workload::Read1m) {
        let (hot, spread) = memcpy_mib_s(args.file_mib * MIB);
        println!(
            "memcpy 1 MiB: {hot:.0} MiB/s (same source), {spread:.0} MiB/s (sources across {} MiB)",
            args.file_mib
        );
        for (w, row) in &results {
            if *w == Workload::Read1m {
                for (s, f) in sides.iter().zip(row) {
                    if let Some(f) = f {
                        println!(
                            "{}: read 1MiB seq at {:.0} MiB/s = {:.0}% of memcpy (same source), {:.0}% (spread)",
                            s.label,
                            f.mib_s,
                            100.0 * f.mib_s / hot,
                            100.0 * f.mib_s / spread
                        );
                    }
                }
            }
        }
    }
    if !args.keep {
        for s in &sides {
            s.cleanup(args)
                .map_err(|e| format!("{} cleanup: {e}", s.addr))?;
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn print_row(w: Workload, row: &[Option<Figures>]) {
    let mut line = format!("{:<15}", w.name());
    for (f, label) in row.iter().zip(["A", "B"]) {
        match f {
            Some(f) => {
                line += &format!(
                    " | {label} {:>9.0} ops/s p50 {:>7.1}us p99 {:>8.1}us",
                    f.ops_s, f.p50_us, f.p99_us
                );
                if f.mib_s > 0.0 {
                    line += &format!(" {:>6.0} MiB/s", f.mib_s);
                }
                if w == Workload::Readdir && f.ops > 0 {
                    line += &format!(" {} entries/listing", f.entries / f.ops);
                }
            }
            None => line += &format!(" | {label} failed"),
        }
    }
    if let [Some(a), Some(b)] = row {
        if b.ops_s > 0.0 {
            line += &format!(" | A/B {:.2}x", a.ops_s / b.ops_s);
        }
    }
    println!("{line}");
}
