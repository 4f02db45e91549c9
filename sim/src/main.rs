//! `co9p-sim`: run one seed, a campaign of seeds, or a repro file, against the co9p device.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};
use co9p_sim::campaign::{
    SeedResult, campaign, replay_command, replay_of, shrink, write_repro, write_timeline,
    write_trace,
};
use co9p_sim::knobs::{Off, off_list, parse_off};
use co9p_sim::link::Transport;
use co9p_sim::script::parse_repro;
use co9p_sim::world::{FsChoice, KNOBS, Plant, RunConfig, Scheduler};

/// Most clients a run may have.
const MAX_CLIENTS: usize = 64;

#[derive(Parser)]
#[command(
    name = "co9p-sim",
    version,
    about = "Deterministic simulator for the co9p 9P2000.L device"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one seed (--seed), a campaign (--seeds COUNT [--from S]) or a repro file
    /// (--replay FILE).
    Run(RunArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// Run exactly this seed.
    #[arg(long, conflicts_with_all = ["seeds", "from", "replay"])]
    seed: Option<u64>,
    /// Run this many seeds (a campaign).
    #[arg(long, conflicts_with = "replay")]
    seeds: Option<u64>,
    /// First seed of a campaign (default 0). Seeds FROM..FROM+COUNT-1 run; split a large
    /// campaign across machines by giving each its own range.
    #[arg(long, conflicts_with = "replay")]
    from: Option<u64>,
    /// Replay a repro file (a shrunk run, written next to a failing seed's trace).
    #[arg(long, value_name = "FILE")]
    replay: Option<PathBuf>,
    /// Guest clients per run (1 to 64).
    #[arg(long, default_value_t = 3, conflicts_with = "replay")]
    clients: usize,
    /// Workload requests per run.
    #[arg(long, default_value_t = 200, conflicts_with = "replay")]
    ops: u64,
    #[arg(long, value_enum, default_value_t = Scheduler::Random, conflicts_with = "replay")]
    scheduler: Scheduler,
    /// How clients reach the device: direct session calls, virtio guests driving
    /// virtqueues, or a per-seed mix (swarm).
    #[arg(long, value_enum, default_value_t = Transport::Swarm, conflicts_with = "replay")]
    transport: Transport,
    /// Clients never send a Tclunk while other requests on its fid are in flight (they
    /// do by default: the server must order them).
    #[arg(long, conflicts_with = "replay")]
    serial_clunk: bool,
    /// Features switched off whatever the seed draws, comma-separated: latency,
    /// errors-before, errors-after, short-io, stall, flush, tversion, reset, lock-swarm,
    /// few-slots, hostile, contention, gaps, dirs, nonroot, reply-yield, reclaim, or an
    /// operation kind (attach, create, open, read, write, readdir, fsync, statfs, mkdir,
    /// mknod, symlink, readlink, link, rename, move, unlink, getattr, setattr, xattr-get,
    /// xattr-set, lock, getlock). Shrunk runs print theirs.
    #[arg(long, value_name = "LIST", value_parser = parse_off, conflicts_with = "replay")]
    off: Option<Off>,
    /// Which backend serves the tree: MemFs, HostFs on a scratch directory (tmpfs where
    /// available, each seed in one of the security models this machine supports), or a
    /// quarter of the seeds on HostFs (swarm).
    #[arg(long, value_enum, default_value_t = FsChoice::Swarm, conflicts_with = "replay")]
    fs: FsChoice,
    /// Force a swarm knob on in every seed (repeatable): hostile, contention, gaps, dirs,
    /// nonroot, reply-yield, reclaim.
    #[arg(long = "knob", value_parser = clap::builder::PossibleValuesParser::new(KNOBS), conflicts_with = "replay")]
    knobs: Vec<String>,
    /// Plant a bug in the device through its test-only hook (builds with the
    /// `planted-bugs` feature only).
    #[arg(long, value_enum, hide = true, conflicts_with = "replay")]
    plant: Option<Plant>,
    /// Run each seed twice and compare trace hashes.
    #[arg(long)]
    check_determinism: bool,
    /// Where failing runs' traces, timelines and repro files go (must exist).
    #[arg(long, default_value = ".")]
    trace_dir: PathBuf,
    /// Write the decoded trace of every seed run (not only failing ones).
    #[arg(long)]
    trace: bool,
    /// Traces print every scheduling step on its own line (default: compacted).
    #[arg(long)]
    trace_sched: bool,
    /// Write the run's timeline page (one run: --seed or --replay) to this file.
    #[arg(long, value_name = "FILE.html")]
    timeline: Option<PathBuf>,
    /// Do not write a timeline for failing seeds.
    #[arg(long)]
    no_timeline: bool,
    /// Do not search for a smaller failing run.
    #[arg(long)]
    no_shrink: bool,
    /// Most runs shrinking may take.
    #[arg(long, default_value_t = 2000, value_name = "RUNS")]
    shrink_budget: u64,
    /// Keep going after a failing seed (campaigns).
    #[arg(long)]
    keep_going: bool,
    /// Threads running seeds (default: the number of cores). Results and their order do
    /// not depend on it.
    #[arg(long)]
    jobs: Option<usize>,
}

fn bad(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("co9p-sim: error: {msg}");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let Cmd::Run(a) = Cli::parse().cmd;
    // The run every seed of the campaign shares.
    let base = match &a.replay {
        Some(path) => {
            let text = match std::fs::read_to_string(path) {
                Ok(t) => t,
                Err(e) => return bad(format!("--replay {}: {e}", path.display())),
            };
            match parse_repro(&text) {
                Ok(c) => c,
                Err(e) => return bad(format!("--replay {}: {e}", path.display())),
            }
        }
        None => RunConfig {
            clients: a.clients,
            ops: a.ops,
            scheduler: a.scheduler,
            pipelined_clunk: !a.serial_clunk,
            transport: a.transport,
            off: a.off.clone().unwrap_or_default(),
            plant: a.plant,
            fs: a.fs,
            force: a.knobs.clone(),
            ..RunConfig::new(0)
        },
    };
    if base.fs != FsChoice::Mem
        && let Some(note) = &co9p_sim::backend::host_support().note
    {
        eprintln!("co9p-sim: {note}");
    }
    if base.clients == 0 || base.clients > MAX_CLIENTS {
        return bad(format!(
            "--clients {}: a run has 1 to {MAX_CLIENTS} clients",
            base.clients
        ));
    }
    if base.plant.is_some() && !Plant::AVAILABLE {
        return bad("--plant: this build has no planted bugs (feature planted-bugs)");
    }
    let (from, count) = match (a.seed, a.seeds, &a.replay) {
        (Some(s), _, _) => (s, 1),
        (None, _, Some(_)) => (base.seed, 1),
        (None, Some(n), None) => (a.from.unwrap_or(0), n),
        (None, None, None) => (a.from.unwrap_or(0), 1),
    };
    if count == 0 {
        return bad("--seeds 0: a campaign runs at least one seed");
    }
    if from.checked_add(count - 1).is_none() {
        return bad(format!(
            "--from {from} --seeds {count}: the last seed would be past {}",
            u64::MAX
        ));
    }
    if a.jobs == Some(0) {
        return bad("--jobs 0: at least one thread runs seeds");
    }
    if a.timeline.is_some() && count > 1 {
        return bad("--timeline draws one run: give --seed N or --replay FILE");
    }
    match std::fs::metadata(&a.trace_dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return bad(format!(
                "--trace-dir {}: not a directory",
                a.trace_dir.display()
            ));
        }
        Err(e) => return bad(format!("--trace-dir {}: {e}", a.trace_dir.display())),
    }
    let jobs = a
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let stem = |seed: u64| {
        if base.script.is_some() {
            format!("{seed}.replay")
        } else {
            seed.to_string()
        }
    };
    let replay_path = a.replay.clone();
    let replay_line = |cfg: &RunConfig| replay_of(cfg, replay_path.as_deref());

    let bar = indicatif::ProgressBar::new(count);
    if count == 1 || !std::io::stderr().is_terminal() {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    } else {
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} seeds {per_sec} eta {eta} {msg}",
            )
            .expect("template"),
        );
    }
    let started = Instant::now();
    let (mut ops, mut vtime, mut write_errors) = (0u64, 0f64, 0u64);
    let mut failures: Vec<SeedResult> = Vec::new();
    let cfg_of = |seed: u64| RunConfig {
        seed,
        ..base.clone()
    };
    let run = campaign(
        from,
        count,
        jobs,
        a.keep_going,
        a.check_determinism,
        &cfg_of,
        &mut |r: SeedResult| {
            let line = match r.failure() {
                Some((_, text)) => format!("{} FAILED {text}", r.report.line()),
                None => r.report.line(),
            };
            bar.suspend(|| println!("{line}"));
            bar.inc(1);
            ops += r.report.ops;
            vtime += r.report.vtime.as_secs_f64();
            if r.failure().is_some() {
                failures.push(r);
            } else if a.trace {
                let path = a
                    .trace_dir
                    .join(format!("co9p-sim-seed-{}.trace", stem(r.cfg.seed)));
                let res = write_trace(&r.cfg, &path, &replay_line(&r.cfg), a.trace_sched);
                bar.suspend(|| match res {
                    Ok(_) => eprintln!("trace: {}", path.display()),
                    Err(e) => {
                        write_errors += 1;
                        eprintln!("trace: not written to {}: {e}", path.display());
                    }
                });
            }
        },
    );
    let wall = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    if count == 1
        && failures.is_empty()
        && let Some(path) = &a.timeline
    {
        let cfg = cfg_of(from);
        match write_timeline(&cfg, path, &replay_line(&cfg)) {
            Ok(_) => eprintln!("timeline: {}", path.display()),
            Err(e) => {
                write_errors += 1;
                eprintln!("timeline: not written to {}: {e}", path.display());
            }
        }
    }
    for f in &failures {
        write_errors += report_failure(&a, f, &stem(f.cfg.seed), jobs, &replay_line(&f.cfg));
    }
    if count > 1 {
        let failed = failures.len();
        let first = failures
            .first()
            .map(|f| format!(" (first: seed {})", f.cfg.seed))
            .unwrap_or_default();
        let last = from + run.max(1) - 1;
        eprintln!(
            "{run} of {count} seeds run ({from}..={last}) in {wall:.2}s on {jobs} threads: \
             {:.1} seeds/s, {:.0} 9p ops/s, virtual/wall {:.2}; {failed} failed{first}",
            run as f64 / wall,
            ops as f64 / wall,
            vtime / wall
        );
    }
    if !failures.is_empty() || write_errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Prints a failing seed's report and writes its files: the trace, the timeline, and the
/// shrunk run's repro file, trace and timeline. Returns how many files could not be
/// written.
fn report_failure(a: &RunArgs, f: &SeedResult, stem: &str, jobs: usize, replay: &str) -> u64 {
    let mut errors = 0;
    let mut wrote = |what: &str, path: &Path, res: std::io::Result<()>| match res {
        Ok(()) => eprintln!("{what}: {}", path.display()),
        Err(e) => {
            errors += 1;
            eprintln!("{what}: not written to {}: {e}", path.display());
        }
    };
    let (check, text) = f.failure().expect("a failure");
    let seed = f.cfg.seed;
    eprintln!("FAILED seed={seed} {text}");
    eprintln!("replay: {replay}");
    let dir = &a.trace_dir;
    let path = dir.join(format!("co9p-sim-seed-{stem}.trace"));
    wrote(
        "trace",
        &path,
        write_trace(&f.cfg, &path, replay, a.trace_sched).map(|_| ()),
    );
    if !a.no_timeline {
        let path = a
            .timeline
            .clone()
            .unwrap_or_else(|| dir.join(format!("co9p-sim-seed-{stem}.html")));
        wrote(
            "timeline",
            &path,
            write_timeline(&f.cfg, &path, replay).map(|_| ()),
        );
    }
    if a.no_shrink || check == "determinism" {
        return errors;
    }
    eprintln!("shrinking (at most {} runs)...", a.shrink_budget);
    let s = shrink(&f.cfg, &f.report, a.shrink_budget, jobs);
    let smaller = (s.after.requests, s.after.steps, s.after.clients)
        != (s.before.requests, s.before.steps, s.before.clients);
    if !smaller {
        eprintln!(
            "shrunk: no smaller run fails {check} ({} runs{})",
            s.runs,
            if s.exhausted { ", budget spent" } else { "" }
        );
        return errors;
    }
    eprintln!(
        "shrunk: {} -> {} ({} runs{}; off: {}; same check: {check})",
        s.before,
        s.after,
        s.runs,
        if s.exhausted { ", budget spent" } else { "" },
        off_list(&s.cfg.off)
    );
    let repro = dir.join(format!("co9p-sim-seed-{stem}.repro"));
    let header = vec![
        format!("shrunk from: {replay}"),
        format!("fails: {check}"),
        format!("{} -> {}", s.before, s.after),
        format!("result: {}", s.report.line()),
    ];
    let cmd = if s.cfg.script.is_some() {
        wrote("shrunk repro", &repro, write_repro(&s.cfg, &repro, &header));
        replay_of(&s.cfg, Some(&repro))
    } else {
        replay_command(&s.cfg)
    };
    eprintln!("shrunk replay: {cmd}");
    let path = dir.join(format!("co9p-sim-seed-{stem}.shrunk.trace"));
    wrote(
        "shrunk trace",
        &path,
        write_trace(&s.cfg, &path, &cmd, a.trace_sched).map(|_| ()),
    );
    if !a.no_timeline {
        let path = dir.join(format!("co9p-sim-seed-{stem}.shrunk.html"));
        wrote(
            "shrunk timeline",
            &path,
            write_timeline(&s.cfg, &path, &cmd).map(|_| ()),
        );
    }
    errors
}
