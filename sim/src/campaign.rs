//! Seed campaigns: runs, determinism checks (each seed twice, hashes compared, the first
//! differing event reported), failure reports with a replay command, a decoded trace
//! file, and shrinking to a smaller failing run.

use std::path::PathBuf;

use crate::link::Transport;
use crate::world::{Report, RunConfig, Scheduler, World};

/// One seed, run once or twice (`determinism`).
pub fn run_seed(cfg: &RunConfig, determinism: bool) -> (Report, Option<String>) {
    let a = World::run(cfg.clone());
    if !determinism {
        return (a, None);
    }
    let b = World::run(cfg.clone());
    if a.hash == b.hash && a.steps == b.steps {
        return (a, None);
    }
    // Run both again with the event log and find where they part.
    let logged = RunConfig {
        log: true,
        ..cfg.clone()
    };
    let (x, y) = (World::run(logged.clone()), World::run(logged));
    let at = x
        .events
        .iter()
        .zip(&y.events)
        .position(|(p, q)| p != q)
        .unwrap_or(x.events.len().min(y.events.len()));
    let msg = format!(
        "nondeterminism: hash {:016x} then {:016x}; first differing event #{at}: {:?} vs {:?}",
        a.hash,
        b.hash,
        x.events.get(at),
        y.events.get(at)
    );
    (a, Some(msg))
}

/// The exact command that replays `cfg`.
pub fn replay_command(cfg: &RunConfig) -> String {
    format!(
        "co9p-sim run --seed {} --clients {} --ops {} --scheduler {} --transport {}{}",
        cfg.seed,
        cfg.clients,
        cfg.ops,
        match cfg.scheduler {
            Scheduler::Random => "random",
            Scheduler::Pct => "pct",
        },
        match cfg.transport {
            Transport::Direct => "direct",
            Transport::Virtio => "virtio",
            Transport::Swarm => "swarm",
        },
        if cfg.pipelined_clunk {
            ""
        } else {
            " --serial-clunk"
        }
    ) + &format!(
        " --fs {}{}",
        match cfg.fs {
            crate::world::FsChoice::Mem => "mem",
            crate::world::FsChoice::Host => "host",
            crate::world::FsChoice::Swarm => "swarm",
        },
        cfg.force
            .iter()
            .map(|k| format!(" --knob {k}"))
            .collect::<String>()
    )
}

/// Writes the decoded trace of `cfg` (one line per scheduling event, PDU and
/// filesystem call) and returns its path.
pub fn write_trace(cfg: &RunConfig, dir: &std::path::Path) -> std::io::Result<PathBuf> {
    let r = World::run(RunConfig {
        log: true,
        ..cfg.clone()
    });
    let path = dir.join(format!("co9p-sim-seed-{}.trace", cfg.seed));
    let mut text = format!(
        "# {}\n# {}\n# knobs {}\n",
        replay_command(cfg),
        r.line(),
        r.knobs
    );
    if let Some(f) = &r.failure {
        text.push_str(&format!("# FAILED {}: {}\n", f.check, f.detail));
    }
    for e in &r.events {
        text.push_str(e);
        text.push('\n');
    }
    std::fs::write(&path, text)?;
    Ok(path)
}

/// Looks for a smaller run of the same seed failing the same check: fewer operations
/// first (the run's prefix stays the same), then fewer clients.
pub fn shrink(cfg: &RunConfig, check: &str) -> RunConfig {
    let fails = |c: &RunConfig| {
        World::run(c.clone())
            .failure
            .is_some_and(|f| f.check == check)
    };
    let mut best = cfg.clone();
    loop {
        let mut improved = false;
        for clients in (1..=best.clients).rev() {
            let mut lo = 1;
            let mut hi = best.ops;
            let try_cfg = |ops| RunConfig {
                clients,
                ops,
                ..best.clone()
            };
            if !fails(&try_cfg(hi)) {
                continue;
            }
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                if fails(&try_cfg(mid)) {
                    hi = mid;
                } else {
                    lo = mid + 1;
                }
            }
            if clients < best.clients || hi < best.ops {
                best = try_cfg(hi);
                improved = true;
                break;
            }
        }
        if !improved {
            return best;
        }
    }
}
