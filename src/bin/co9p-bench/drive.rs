//! Running a workload: pipelined slots per connection, tallies, figures.

use super::*;

/// A slot: one chain of requests in flight on a connection, one operation at a time.
pub(super) struct Slot {
    pub(super) fid: Fid,
    /// Requests of the current operation answered so far.
    pub(super) step: u32,
    /// Operations completed.
    pub(super) done: u64,
    pub(super) started: Instant,
    pub(super) rng: u64,
    /// read1m: bytes of the current MiB read so far; readdir: the cookie to go on from.
    pub(super) pos: u64,
    /// readdir: the listing reached its end and the clunk is in flight.
    pub(super) closing: bool,
}

/// What one connection measured.
#[derive(Default)]
pub(super) struct Tally {
    pub(super) ops: u64,
    pub(super) bytes: u64,
    pub(super) entries: u64,
    pub(super) lat_ns: Vec<u64>,
}

/// The next request of `slot`'s operation, or `None` when the operation is complete. Called
/// with `first` at the start of an operation, else with the previous reply in `c.frame`
/// (which must not be an error).
pub(super) fn step(
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
            wnames: vec!["walk".into(), "leaf".into()],
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
pub(super) fn drive(
    w: Workload,
    c: &mut Conn,
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
        let m = step(w, c, s, true, file_size, &mut t)?.expect("an op has a request");
        c.send(Tag(i as u16), m)?;
        inflight += 1;
    }
    while inflight > 0 {
        let tag = c.recv()?;
        let s = slots
            .get_mut(tag.0 as usize)
            .ok_or_else(|| format!("reply with unknown tag {}", tag.0))?;
        if let Some(m) = step(w, c, s, false, file_size, &mut t)? {
            c.send(tag, m)?;
            continue;
        }
        t.ops += 1;
        s.done += 1;
        t.lat_ns.push(s.started.elapsed().as_nanos() as u64);
        if Instant::now() < deadline && take() {
            s.started = Instant::now();
            let m = step(w, c, s, true, file_size, &mut t)?.expect("an op has a request");
            c.send(tag, m)?;
        } else {
            inflight -= 1;
        }
    }
    Ok(t)
}

/// One workload's figures.
pub(super) struct Figures {
    pub(super) ops_s: f64,
    pub(super) mib_s: f64,
    pub(super) p50_us: f64,
    pub(super) p99_us: f64,
    pub(super) ops: u64,
    pub(super) entries: u64,
}

pub(super) fn run(side: &Side, args: &Args, w: Workload) -> Res<Figures> {
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
                sc.spawn(move || {
                    let mut c = c;
                    drive(w, &mut c, args.depth, file_size, deadline, budget, i)
                })
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
