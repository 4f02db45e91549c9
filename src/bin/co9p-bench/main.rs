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
#[command(
    name = "co9p-bench",
    version,
    about = "9P2000.L load generator (tcp or unix)"
)]
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
    /// A local directory on the filesystem the servers export (e.g. the export itself):
    /// the create workload's row is followed by the rate of the bare syscalls there, with
    /// --conns threads and no 9P in the way: the ceiling any server is bounded by.
    #[arg(long)]
    ceiling_dir: Option<std::path::PathBuf>,
    /// How cost grows: instead of the workloads, sweep connections, held fids, directory
    /// size (and with --server-pid memory) and write sweep.csv and SVG curves into DIR.
    #[arg(long, value_name = "DIR")]
    sweep: Option<std::path::PathBuf>,
    /// The --addr server's process id, for the sweep's memory series (its VmRSS).
    #[arg(long)]
    server_pid: Option<u32>,
    /// The --vs server's process id.
    #[arg(long)]
    vs_server_pid: Option<u32>,
    /// The local path of what --aname attaches to: the sweep makes its big directories
    /// there with local syscalls rather than through 9P.
    #[arg(long)]
    fixture_dir: Option<std::path::PathBuf>,
    /// The local path of what --vs-aname attaches to.
    #[arg(long)]
    vs_fixture_dir: Option<std::path::PathBuf>,
    /// The --addr server's name in the sweep's files.
    #[arg(long, default_value = "A")]
    name: String,
    /// The --vs server's name in the sweep's files.
    #[arg(long, default_value = "B")]
    vs_name: String,
    /// The sweep's most connections (points 1, 2, 4, … up to it).
    #[arg(long, default_value_t = 256)]
    sweep_max_conns: usize,
    /// The sweep's most fids in one session (points 4, 16, 64, … up to it).
    #[arg(long, default_value_t = 16_384)]
    sweep_max_fids: usize,
    /// The sweep's largest directory (points 10, 100, … up to it).
    #[arg(long, default_value_t = 1_000_000)]
    sweep_max_entries: u64,
    /// Rounds per sweep point; the best is kept.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Workload {
    /// Tgetattr of one file.
    Getattr,
    /// Twalk of two names (a directory, a file in it), then Tclunk: a path lookup as the
    /// Linux client makes it (downwards; it resolves `..` in its own dcache).
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

mod ceiling;
mod conn;
mod drive;
mod side;
mod sweep;

use conn::*;
use drive::*;
use side::*;

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
    if let Some(out) = &args.sweep {
        if args.sweep_max_conns == 0 || args.sweep_max_conns > 4000 || args.sweep_max_entries < 10 {
            return Err("want 1 <= --sweep-max-conns <= 4000, --sweep-max-entries >= 10".into());
        }
        return sweep::sweep(args, out);
    }
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
        if let (Workload::Create, Some(dir)) = (w, &args.ceiling_dir) {
            let ceil = ceiling::create_ops_s(dir, args.conns)?;
            let of = |f: &Option<Figures>| {
                f.as_ref()
                    .map(|f| format!("{:.0}%", 100.0 * f.ops_s / ceil))
                    .unwrap_or_else(|| "-".into())
            };
            let shares: Vec<String> = sides
                .iter()
                .zip(&row)
                .map(|(s, f)| format!("{} {}", s.label, of(f)))
                .collect();
            println!(
                "  ceiling: bare openat+fstat+unlinkat+close in {}, {} threads, no 9P: {ceil:.0} ops/s ({} of it)",
                dir.display(),
                args.conns,
                shares.join(", ")
            );
        }
        results.push((w, row));
    }
    if args.workloads.contains(&Workload::Read1m) {
        let (hot, spread) = memcpy_mib_s(args.file_mib * MIB);
        println!(
            "memcpy 1 MiB: {hot:.0} MiB/s (same source), {spread:.0} MiB/s (sources across {} MiB)",
            args.file_mib
        );
        let sock = ceiling::socket_mib_s(&args.addr, args.conns)?;
        println!(
            "  ceiling: 1 MiB messages over {} loopback {} sockets at once, no 9P: {sock:.0} MiB/s = {:.0}% of memcpy (same source), {:.0}% (spread)",
            args.conns,
            args.addr.split(':').next().unwrap_or("tcp"),
            100.0 * sock / hot,
            100.0 * sock / spread
        );
        if let Some(dir) = &args.ceiling_dir {
            for (how, what) in [
                (ceiling::FileSend::Copy, "pread+write"),
                (ceiling::FileSend::Sendfile, "sendfile"),
                (ceiling::FileSend::Mmap, "write from mmap"),
            ] {
                let r =
                    ceiling::file_socket_mib_s(dir, &args.addr, args.conns, args.file_mib, how)?;
                println!(
                    "  ceiling: 1 MiB pieces of a {} MiB file in {} over {} loopback sockets by {what}, no 9P: {r:.0} MiB/s = {:.0}% of the socket ceiling",
                    args.file_mib,
                    dir.display(),
                    args.conns,
                    100.0 * r / sock
                );
            }
        }
        for (w, row) in &results {
            if *w == Workload::Read1m {
                for (s, f) in sides.iter().zip(row) {
                    if let Some(f) = f {
                        println!(
                            "{}: read 1MiB seq at {:.0} MiB/s = {:.0}% of memcpy (same source), {:.0}% (spread), {:.0}% of the socket ceiling",
                            s.label,
                            f.mib_s,
                            100.0 * f.mib_s / hot,
                            100.0 * f.mib_s / spread,
                            100.0 * f.mib_s / sock
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
