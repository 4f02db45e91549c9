//! `--sweep OUT`: how cost grows. Runs these series against each server and writes
//! `OUT/sweep.csv` (every point) and one SVG per figure:
//!
//! - `sweep-conns.svg`: Tgetattr operations/s against connections (1 in flight each),
//!   1…`--sweep-max-conns`.
//! - `sweep-fids.svg`: µs per Tgetattr and per Twalk+Tclunk (1 in flight, one connection)
//!   against the fids that connection's session holds, 4…`--sweep-max-fids` (each held fid
//!   walked to a file of its own).
//! - `sweep-dir.svg`: ns per entry of listing a whole directory (Twalk, Tlopen, Treaddir to
//!   the end, Tclunk) and µs per lookup (Twalk of one random name + Tclunk) against the
//!   directory's entries, 10…`--sweep-max-entries`.
//! - `sweep-mem.svg` (with `--server-pid`): the server's resident memory (VmRSS) per idle
//!   connection (version + attach, nothing else) and per held fid.
//!
//! Each point runs `--rounds` times `--secs` seconds (at least one operation each) and
//! keeps the best round: on a shared machine the others' load only ever makes a round
//! worse. With `--server-pid`, the series of cost per operation also have the server's own
//! CPU time per operation (`*_cpu_*`, from its threads' schedstat), which waiting for a
//! busy machine's CPUs does not inflate. `--fixture-dir` (the local
//! path of what `--aname` attaches to) makes the big directory's files with local syscalls
//! instead of through 9P: much faster at a million entries.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plotters::coord::ranged1d::ValueFormatter;
use plotters::prelude::*;

use super::*;

/// Fid of the `fids` fixture directory, on the connection that holds fids.
const FIDS: Fid = Fid(7);
/// Fid the lookup series walks to (and clunks).
const LOOKED: Fid = Fid(8);
/// Held fids are numbered from here.
const HELD: u32 = 20_000;
/// The fids a measuring connection has besides the held ones: root, the bench directory,
/// the data file, the fids directory, and the one Twalk+Tclunk makes and drops.
const BASE_FIDS: usize = 5;

/// One server of the sweep.
struct Server {
    side: Side,
    name: String,
    pid: Option<u32>,
    fixture: Option<PathBuf>,
}

/// One measured point.
struct Point {
    series: &'static str,
    server: String,
    x: f64,
    y: f64,
}

/// 1, 4, 16, … up to `max` (and `max` itself); `from` is the first.
fn points(from: u64, factor: u64, max: u64) -> Vec<u64> {
    let mut v = Vec::new();
    let mut x = from;
    while x < max {
        v.push(x);
        x *= factor;
    }
    v.push(max);
    v
}

/// The resident memory of process `pid`, in bytes (VmRSS).
fn rss(pid: u32) -> Res<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| format!("/proc/{pid}/status: no VmRSS"))
}

fn big_name(i: u64) -> String {
    format!("e{i:07}")
}

fn fid_name(i: u64) -> String {
    format!("f{i:05}")
}

/// Fills `dir_name` (in the bench directory, fid `DIR` of `c`) up to `to` entries from
/// `from`: locally when the server's export is at hand, else through 9P.
fn grow(
    s: &Server,
    c: &mut Conn,
    dir_name: &str,
    range: std::ops::Range<u64>,
    name: fn(u64) -> String,
) -> Res<()> {
    if let Some(root) = &s.fixture {
        let dir = root.join(&s.side.dir).join(dir_name);
        for i in range {
            let p = dir.join(name(i));
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&p)
                .map_err(|e| format!("{}: {e}", p.display()))?;
        }
        return Ok(());
    }
    c.walk(DIR, Fid(900), &[dir_name])?;
    let r = c.files(FilesOp::Create, Fid(900), range, name);
    c.clunk(Fid(900))?;
    r
}

/// Empties and removes `dir_name` (`n` entries named by `name`).
fn shrink(s: &Server, c: &mut Conn, dir_name: &str, n: u64, name: fn(u64) -> String) -> Res<()> {
    if let Some(root) = &s.fixture {
        let dir = root.join(&s.side.dir).join(dir_name);
        for i in 0..n {
            let p = dir.join(name(i));
            std::fs::remove_file(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        }
    } else {
        c.walk(DIR, Fid(900), &[dir_name])?;
        c.files(FilesOp::Remove, Fid(900), 0..n, name)?;
        c.clunk(Fid(900))?;
    }
    Ok(())
}

/// Runs `w` on `c` with one request in flight for `secs`; (operations, seconds, tally).
fn timed(c: &mut Conn, w: Workload, secs: f64) -> Res<(u64, f64, Tally)> {
    let budget = AtomicU64::new(u64::MAX);
    let start = Instant::now();
    let t = drive(
        w,
        c,
        1,
        MIB,
        start + Duration::from_secs_f64(secs),
        &budget,
        0,
    )?;
    Ok((t.ops, start.elapsed().as_secs_f64(), t))
}

/// CPU time the threads of process `pid` have used, in ns (their schedstat), if known.
fn cpu_ns(pid: Option<u32>) -> Option<u64> {
    let pid = pid?;
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut sum = 0;
    for t in tasks.flatten() {
        if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
            sum += s.split(' ').next()?.parse::<u64>().ok()?;
        }
    }
    Some(sum)
}

/// CPU time process `pid` has used, in ns, counting threads that have ended (its
/// utime + stime: clock-tick resolution).
fn process_cpu_ns(pid: Option<u32>) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid?)).ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let f: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(ticks * 1_000_000_000 / hz)
}

/// The lowest of `rounds` runs of `f` (wall time per operation, and the server's CPU time
/// per operation where known), each taken on its own.
fn lowest(rounds: u32, mut f: impl FnMut() -> Res<(f64, Option<f64>)>) -> Res<(f64, Option<f64>)> {
    let (mut wall, mut cpu) = (f64::INFINITY, None::<f64>);
    for _ in 0..rounds.max(1) {
        let (w, c) = f()?;
        wall = wall.min(w);
        cpu = match (cpu, c) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    Ok((wall, cpu))
}

/// The best of `rounds` runs of `f`: the highest if `high`, else the lowest.
fn best(rounds: u32, high: bool, mut f: impl FnMut() -> Res<f64>) -> Res<f64> {
    let mut b: Option<f64> = None;
    for _ in 0..rounds.max(1) {
        let y = f()?;
        b = Some(match b {
            Some(b) if (high && b >= y) || (!high && b <= y) => b,
            _ => y,
        });
    }
    Ok(b.unwrap_or(0.0))
}

/// The sweep's entry point.
pub(super) fn sweep(args: &Args, out: &Path) -> Res<()> {
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let pid = std::process::id();
    let mut a = args.clone();
    a.workloads = vec![Workload::Getattr, Workload::Walk];
    a.entries = 0;
    a.ops = u64::MAX;
    let mut servers = vec![Server {
        side: Side {
            label: "A",
            addr: args.addr.clone(),
            aname: args.aname.clone(),
            dir: format!("co9p-bench.{pid}.a"),
            msize: 0,
        },
        name: args.name.clone(),
        pid: args.server_pid,
        fixture: args.fixture_dir.clone(),
    }];
    if let Some(vs) = &args.vs {
        servers.push(Server {
            side: Side {
                label: "B",
                addr: vs.clone(),
                aname: args.vs_aname.clone(),
                dir: format!("co9p-bench.{pid}.b"),
                msize: 0,
            },
            name: args.vs_name.clone(),
            pid: args.vs_server_pid,
            fixture: args.vs_fixture_dir.clone(),
        });
    }
    let mut pts = Vec::new();
    for s in servers.iter_mut() {
        s.side
            .setup(&a)
            .map_err(|e| format!("{} setup: {e}", s.name))?;
        println!(
            "{}: {} aname={:?} msize={}",
            s.name, s.side.addr, s.side.aname, s.side.msize
        );
        let r = sweep_one(s, &a, &mut pts);
        let c = s.side.cleanup(&a);
        r.map_err(|e| format!("{}: {e}", s.name))?;
        c.map_err(|e| format!("{} cleanup: {e}", s.name))?;
    }
    let mut csv = String::from("series,server,x,y\n");
    for p in &pts {
        let _ = writeln!(csv, "{},{},{},{}", p.series, p.server, p.x, p.y);
    }
    let path = out.join("sweep.csv");
    std::fs::write(&path, csv).map_err(|e| format!("{}: {e}", path.display()))?;
    println!("wrote {}", path.display());
    let names: Vec<String> = servers.iter().map(|s| s.name.clone()).collect();
    let fig = |file: &str, panels: &[Panel]| -> Res<()> {
        let path = out.join(file);
        draw(&path, panels, &pts, &names).map_err(|e| format!("{}: {e}", path.display()))?;
        println!("wrote {}", path.display());
        Ok(())
    };
    fig(
        "sweep-conns.svg",
        &[
            Panel {
                series: &[("conns_getattr_ops_s", "")],
                title: "Tgetattr, 1 in flight per connection",
                x: "connections",
                y: "operations/s",
                log_y: false,
            },
            Panel {
                series: &[("conns_getattr_cpu_us", "")],
                title: "server CPU per Tgetattr",
                x: "connections",
                y: "µs of server CPU per request",
                log_y: false,
            },
        ],
    )?;
    fig(
        "sweep-fids.svg",
        &[
            Panel {
                series: &[
                    ("fids_getattr_us", " (wall)"),
                    ("fids_getattr_cpu_us", " (server CPU)"),
                ],
                title: "Tgetattr, 1 in flight",
                x: "fids held by the session",
                y: "µs per request",
                log_y: false,
            },
            Panel {
                series: &[
                    ("fids_walk_clunk_us", " (wall)"),
                    ("fids_walk_clunk_cpu_us", " (server CPU)"),
                ],
                title: "Twalk (2 names) + Tclunk, 1 in flight",
                x: "fids held by the session",
                y: "µs per walk+clunk",
                log_y: false,
            },
        ],
    )?;
    fig(
        "sweep-dir.svg",
        &[
            Panel {
                series: &[
                    ("dir_readdir_ns_per_entry", " (wall)"),
                    ("dir_readdir_cpu_ns_per_entry", " (server CPU)"),
                ],
                title: "whole listing (walk, open, readdir…, clunk)",
                x: "entries in the directory",
                y: "ns per entry listed",
                log_y: true,
            },
            Panel {
                series: &[
                    ("dir_lookup_us", " (wall)"),
                    ("dir_lookup_cpu_us", " (server CPU)"),
                ],
                title: "lookup: Twalk of 1 random name + Tclunk",
                x: "entries in the directory",
                y: "µs per lookup",
                log_y: false,
            },
        ],
    )?;
    if pts.iter().any(|p| p.series.starts_with("mem_")) {
        fig(
            "sweep-mem.svg",
            &[
                Panel {
                    series: &[("mem_conn_kib", "")],
                    title: "server RSS per idle connection",
                    x: "idle connections",
                    y: "KiB per connection",
                    log_y: false,
                },
                Panel {
                    series: &[("mem_fid_kib", "")],
                    title: "server RSS per held fid",
                    x: "fids held by the session",
                    y: "KiB per fid",
                    log_y: false,
                },
            ],
        )?;
    }
    Ok(())
}

/// Every series against one server.
fn sweep_one(s: &Server, a: &Args, pts: &mut Vec<Point>) -> Res<()> {
    let mut add = |series: &'static str, x: u64, y: f64| {
        println!("  {series:<26} x={x:<8} {y:>12.2}");
        pts.push(Point {
            series,
            server: s.name.clone(),
            x: x as f64,
            y,
        });
    };
    // Memory per idle connection, first: threads the connections series starts and ends
    // leave their stacks in the C library's cache, resident, for the next ones to reuse.
    if let Some(pid) = s.pid {
        for n in points(4, 4, a.sweep_max_conns as u64) {
            std::thread::sleep(Duration::from_millis(300));
            let before = rss(pid)?;
            let conns = (0..n)
                .map(|_| Conn::handshake(&s.side.addr, &s.side.aname, a.msize))
                .collect::<Res<Vec<_>>>()?;
            std::thread::sleep(Duration::from_millis(300));
            let after = rss(pid)?;
            drop(conns);
            add(
                "mem_conn_kib",
                n,
                after.saturating_sub(before) as f64 / 1024.0 / n as f64,
            );
        }
    }
    // Operations/s against connections.
    for n in points(1, 2, a.sweep_max_conns as u64) {
        let mut b = a.clone();
        b.conns = n as usize;
        b.depth = 1;
        let mut cpu = None::<f64>;
        let y = best(a.rounds, true, || {
            // Connections' threads end with them: count the whole process's time.
            let cpu0 = process_cpu_ns(s.pid);
            let f = run(&s.side, &b, Workload::Getattr)?;
            if let Some(c) = process_cpu_ns(s.pid)
                .zip(cpu0)
                .map(|(b, a)| (b - a) as f64 / 1e3)
            {
                let per = c / f.ops.max(1) as f64;
                cpu = Some(cpu.map_or(per, |c| c.min(per)));
            }
            Ok(f.ops_s)
        })?;
        add("conns_getattr_ops_s", n, y);
        if let Some(y) = cpu {
            add("conns_getattr_cpu_us", n, y);
        }
    }
    // Held fids: cost per request and memory per fid.
    let mut admin = Conn::handshake(&s.side.addr, &s.side.aname, a.msize)?;
    admin.walk(ROOT, DIR, &[&s.side.dir])?;
    admin.rpc(Tmessage::Mkdir {
        dfid: DIR,
        name: "fids".into(),
        mode: 0o755,
        gid: 0,
    })?;
    if let Some(root) = &s.fixture {
        let d = root.join(&s.side.dir).join("fids");
        if !d.is_dir() {
            return Err(format!(
                "--fixture-dir: {} is not there: give the local path of what the aname attaches to",
                d.display()
            ));
        }
    }
    let limit = a.sweep_max_fids.max(BASE_FIDS + 1);
    let held_max = (limit - BASE_FIDS) as u64;
    let r = (|| -> Res<()> {
        grow(s, &mut admin, "fids", 0..held_max, fid_name)?;
        let mut c = s.side.open(a, Some(Workload::Getattr))?;
        c.walk(DIR, FIDS, &["fids"])?;
        timed(&mut c, Workload::Getattr, a.secs.min(0.2))?;
        timed(&mut c, Workload::Walk, a.secs.min(0.2))?;
        let rss0 = s.pid.map(rss).transpose()?;
        let mut held = 0u64;
        for total in points(4, 4, limit as u64) {
            let want = total.saturating_sub(BASE_FIDS as u64);
            c.batch((held..want).map(|i| Tmessage::Walk {
                fid: FIDS,
                newfid: Fid(HELD + i as u32),
                wnames: vec![fid_name(i).as_str().into()],
            }))?;
            held = want;
            if let (Some(pid), Some(rss0), true) = (s.pid, rss0, held > 0) {
                let per = rss(pid)?.saturating_sub(rss0) as f64 / 1024.0 / held as f64;
                add("mem_fid_kib", total, per);
            }
            let mut us = |w| {
                lowest(a.rounds, || {
                    let cpu0 = cpu_ns(s.pid);
                    let (ops, secs, _) = timed(&mut c, w, a.secs)?;
                    let cpu = cpu_ns(s.pid).zip(cpu0).map(|(b, a)| (b - a) as f64 / 1e3);
                    Ok((secs * 1e6 / ops as f64, cpu.map(|c| c / ops as f64)))
                })
            };
            let (getattr, cpu) = us(Workload::Getattr)?;
            add("fids_getattr_us", total, getattr);
            if let Some(y) = cpu {
                add("fids_getattr_cpu_us", total, y);
            }
            let (walk, cpu) = us(Workload::Walk)?;
            add("fids_walk_clunk_us", total, walk);
            if let Some(y) = cpu {
                add("fids_walk_clunk_cpu_us", total, y);
            }
        }
        Ok(())
    })();
    let r2 = shrink(s, &mut admin, "fids", held_max, fid_name);
    admin.walk(DIR, Fid(901), &["fids"])?;
    admin.rpc(Tmessage::Remove { fid: Fid(901) })?;
    r?;
    r2?;
    // Directory size: readdir and lookup.
    let mut c = s.side.open(a, None)?;
    c.walk(DIR, MANY, &["many"])?;
    let mut have = 0u64;
    let r = (|| -> Res<()> {
        for n in points(10, 10, a.sweep_max_entries) {
            grow(s, &mut admin, "many", have..n, big_name)?;
            have = n;
            let (ns, cpu) = lowest(a.rounds, || {
                let cpu0 = cpu_ns(s.pid);
                let (ops, secs, t) = timed(&mut c, Workload::Readdir, a.secs)?;
                let cpu = cpu_ns(s.pid).zip(cpu0).map(|(b, a)| (b - a) as f64);
                let per = t.entries / ops.max(1);
                if per < n {
                    return Err(format!("a listing of {n} entries gave {per}"));
                }
                let e = t.entries as f64;
                Ok((secs * 1e9 / e, cpu.map(|c| c / e)))
            })?;
            add("dir_readdir_ns_per_entry", n, ns);
            if let Some(y) = cpu {
                add("dir_readdir_cpu_ns_per_entry", n, y);
            }
            let mut rng = 0x2545_f491_4f6c_dd1du64;
            let (us, cpu) = lowest(a.rounds, || {
                let cpu0 = cpu_ns(s.pid);
                let start = Instant::now();
                let mut ops = 0u64;
                while ops == 0 || start.elapsed().as_secs_f64() < a.secs {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    c.walk(MANY, LOOKED, &[&big_name(rng % n)])?;
                    c.clunk(LOOKED)?;
                    ops += 1;
                }
                let cpu = cpu_ns(s.pid).zip(cpu0).map(|(b, a)| (b - a) as f64 / 1e3);
                Ok((
                    start.elapsed().as_secs_f64() * 1e6 / ops as f64,
                    cpu.map(|c| c / ops as f64),
                ))
            })?;
            add("dir_lookup_us", n, us);
            if let Some(y) = cpu {
                add("dir_lookup_cpu_us", n, y);
            }
        }
        Ok(())
    })();
    drop(c);
    let r2 = shrink(s, &mut admin, "many", have, big_name);
    r?;
    r2
}

/// One panel of a figure: a series, a line per server.
struct Panel {
    /// Each series drawn, with what follows the server's name in the legend.
    series: &'static [(&'static str, &'static str)],
    title: &'static str,
    x: &'static str,
    y: &'static str,
    /// A log y axis (for costs that span decades).
    log_y: bool,
}

const COLORS: [RGBColor; 4] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x94, 0x67, 0xbd),
];

/// Draws `panels` side by side into an SVG at `path`: log x, linear y from 0.
fn draw(
    path: &Path,
    panels: &[Panel],
    pts: &[Point],
    servers: &[String],
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (520 * panels.len() as u32, 400)).into_drawing_area();
    root.fill(&WHITE)?;
    let areas = root.split_evenly((1, panels.len()));
    for (area, p) in areas.iter().zip(panels) {
        let of = |series: &str, server: &str| -> Vec<(f64, f64)> {
            pts.iter()
                .filter(|q| q.series == series && q.server == server)
                .map(|q| (q.x, q.y))
                .collect()
        };
        let all: Vec<(f64, f64)> = servers
            .iter()
            .flat_map(|s| p.series.iter().flat_map(|(series, _)| of(series, s)))
            .collect();
        if all.is_empty() {
            continue;
        }
        let xmin = all.iter().map(|q| q.0).fold(f64::INFINITY, f64::min);
        let xmax = all.iter().map(|q| q.0).fold(0.0, f64::max);
        let ymax = all.iter().map(|q| q.1).fold(0.0, f64::max);
        let ymin = all.iter().map(|q| q.1).fold(f64::INFINITY, f64::min);
        let builder = |area| {
            let mut b = ChartBuilder::on(area);
            b.caption(p.title, ("sans-serif", 16))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(64);
            b
        };
        let x = (xmin * 0.8..xmax * 1.25).log_scale();
        if p.log_y {
            let y = ((ymin * 0.7).max(1e-9)..(ymax * 1.4).max(1e-8)).log_scale();
            let chart = builder(area).build_cartesian_2d(x, y)?;
            lines(chart, p, servers, &of)?;
        } else {
            let chart = builder(area).build_cartesian_2d(x, 0.0..(ymax * 1.15).max(1e-9))?;
            lines(chart, p, servers, &of)?;
        }
    }
    root.present()?;
    Ok(())
}

/// The points of a series (first) for a server (second).
type PointsOf<'p> = dyn Fn(&str, &str) -> Vec<(f64, f64)> + 'p;

/// The mesh, a line per server and series, and the legend of one panel.
fn lines<'a, Y>(
    mut chart: ChartContext<'a, SVGBackend<'a>, Cartesian2d<LogCoord<f64>, Y>>,
    p: &Panel,
    servers: &[String],
    of: &PointsOf<'_>,
) -> Result<(), String>
where
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .x_desc(p.x)
        .y_desc(p.y)
        .x_label_formatter(&|x| format!("{}", x.round()))
        .draw()
        .map_err(|e| e.to_string())?;
    {
        for (i, s) in servers.iter().enumerate() {
            for (k, (series, suffix)) in p.series.iter().enumerate() {
                let line = of(series, s);
                if line.is_empty() {
                    continue;
                }
                // The server's colour; its second series (server CPU) paler.
                let color = COLORS[i % COLORS.len()].mix(if k == 0 { 1.0 } else { 0.45 });
                chart
                    .draw_series(LineSeries::new(line.iter().copied(), color.stroke_width(2)))
                    .map_err(|e| e.to_string())?
                    .label(format!("{s}{suffix}"))
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                    });
                chart
                    .draw_series(line.iter().map(|&q| Circle::new(q, 3, color.filled())))
                    .map_err(|e| e.to_string())?;
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}
