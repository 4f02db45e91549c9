//! `co9p-sim`: run one seed, or a campaign of seeds, against the co9p device.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};
use co9p_sim::campaign::{replay_command, run_seed, shrink, write_trace};
use co9p_sim::link::Transport;
use co9p_sim::world::{FsChoice, KNOBS, RunConfig, Scheduler};

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
    /// Run one seed (--seed) or a campaign (--seeds COUNT [--from S]).
    Run(RunArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// Run exactly this seed.
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Run this many seeds.
    #[arg(long)]
    seeds: Option<u64>,
    /// First seed of a campaign.
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// Guest clients per run.
    #[arg(long, default_value_t = 3)]
    clients: usize,
    /// Workload requests per run.
    #[arg(long, default_value_t = 200)]
    ops: u64,
    #[arg(long, value_enum, default_value_t = Scheduler::Random)]
    scheduler: Scheduler,
    /// Run each seed twice and compare trace hashes.
    #[arg(long)]
    check_determinism: bool,
    /// Where failing runs' decoded traces go.
    #[arg(long, default_value = ".")]
    trace_dir: std::path::PathBuf,
    /// Do not search for a smaller failing run.
    #[arg(long)]
    no_shrink: bool,
    /// Write the decoded trace of every seed run (not only failing ones).
    #[arg(long)]
    trace: bool,
    /// Clients never send a Tclunk while other requests on its fid are in flight (they
    /// do by default, which is how seed 184 found the clunk-overtakes-write bug).
    #[arg(long)]
    serial_clunk: bool,
    /// How clients reach the device: direct session calls, virtio guests driving
    /// virtqueues, or a per-seed mix (swarm).
    #[arg(long, value_enum, default_value_t = Transport::Swarm)]
    transport: Transport,
    /// Keep going after a failing seed (campaigns).
    #[arg(long)]
    keep_going: bool,
    /// Which backend serves the tree: MemFs, HostFs on a scratch directory (tmpfs where
    /// available, each seed in one of the security models this machine supports), or a
    /// quarter of the seeds on HostFs (swarm).
    #[arg(long, value_enum, default_value_t = FsChoice::Swarm)]
    fs: FsChoice,
    /// Force a swarm knob on in every seed (repeatable): hostile, contention, gaps, dirs,
    /// nonroot, reply-yield, reclaim.
    #[arg(long = "knob", value_parser = clap::builder::PossibleValuesParser::new(KNOBS))]
    knobs: Vec<String>,
}

fn main() -> ExitCode {
    let Cmd::Run(a) = Cli::parse().cmd;
    let (from, count) = match (a.seed, a.seeds) {
        (Some(s), _) => (s, 1),
        (None, Some(n)) => (a.from, n),
        (None, None) => (a.from, 1),
    };
    if a.fs != FsChoice::Mem
        && let Some(note) = &co9p_sim::backend::host_support().note
    {
        eprintln!("co9p-sim: {note}");
    }
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
    let (mut ops, mut vtime, mut failed) = (0u64, 0f64, 0u64);
    for seed in from..from + count {
        let cfg = RunConfig {
            seed,
            clients: a.clients,
            ops: a.ops,
            scheduler: a.scheduler,
            log: false,
            pipelined_clunk: !a.serial_clunk,
            transport: a.transport,
            fs: a.fs,
            force: a.knobs.clone(),
        };
        let (report, nondet) = run_seed(&cfg, a.check_determinism);
        bar.suspend(|| println!("{}", report.line()));
        bar.inc(1);
        ops += report.ops;
        vtime += report.vtime.as_secs_f64();
        let failure = match (&report.failure, nondet) {
            (Some(f), _) => Some((f.check, format!("{}: {}", f.check, f.detail))),
            (None, Some(n)) => Some(("determinism", n)),
            (None, None) => None,
        };
        if a.trace && failure.is_none() {
            match write_trace(&cfg, &a.trace_dir) {
                Ok(p) => bar.suspend(|| eprintln!("trace: {}", p.display())),
                Err(e) => bar.suspend(|| eprintln!("trace: not written: {e}")),
            }
        }
        let Some((check, text)) = failure else {
            continue;
        };
        failed += 1;
        bar.suspend(|| {
            eprintln!("FAILED seed={seed} {text}");
            eprintln!("replay: {}", replay_command(&cfg));
            match write_trace(&cfg, &a.trace_dir) {
                Ok(p) => eprintln!("trace: {}", p.display()),
                Err(e) => eprintln!("trace: not written: {e}"),
            }
            if !a.no_shrink && check != "determinism" {
                let small = shrink(&cfg, check);
                eprintln!("shrunk: {}", replay_command(&small));
            }
        });
        if !a.keep_going {
            break;
        }
    }
    bar.finish_and_clear();
    let wall = started.elapsed().as_secs_f64();
    if count > 1 {
        eprintln!(
            "{count} seeds in {wall:.2}s: {:.1} seeds/s, {:.0} 9p ops/s, virtual/wall {:.2}, {failed} failed",
            count as f64 / wall,
            ops as f64 / wall,
            vtime / wall
        );
    }
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
