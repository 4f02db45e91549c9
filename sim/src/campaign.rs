//! Seed campaigns: runs (on several threads, reported in seed order), determinism checks
//! (each seed twice, hashes compared, the first differing event reported), failure
//! reports with a replay command, a decoded trace file and a timeline page, and shrinking
//! to a smaller run failing the same check.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::executor::LogLine;
use crate::knobs::{Feature, off_list};
use crate::link::Transport;
use crate::script::{Move, repro_text, subset};
use crate::world::{Report, RunConfig, World};

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
    let show = |e: Option<&LogLine>| e.map_or("(none)".to_string(), log_line);
    let msg = format!(
        "nondeterminism: hash {:016x} then {:016x}; first differing event #{at}: {} vs {}",
        a.hash,
        b.hash,
        show(x.events.get(at)),
        show(y.events.get(at))
    );
    (a, Some(msg))
}

/// The exact command that replays `cfg` (a drawn workload; a scripted one replays from its
/// repro file, see [`write_repro`]).
pub fn replay_command(cfg: &RunConfig) -> String {
    let mut s = format!(
        "co9p-sim run --seed {} --clients {} --ops {} --scheduler {} --transport {}",
        cfg.seed,
        cfg.clients,
        cfg.ops,
        cfg.scheduler.name(),
        cfg.transport.name(),
    );
    if !cfg.pipelined_clunk {
        s.push_str(" --serial-clunk");
    }
    s.push_str(match cfg.fs {
        crate::world::FsChoice::Mem => " --fs mem",
        crate::world::FsChoice::Host => " --fs host",
        crate::world::FsChoice::Swarm => " --fs swarm",
    });
    for k in &cfg.force {
        s.push_str(&format!(" --knob {k}"));
    }
    if !cfg.off.is_empty() {
        s.push_str(&format!(" --off {}", off_list(&cfg.off)));
    }
    if let Some(p) = cfg.plant {
        s.push_str(&format!(" --plant {}", p.name()));
    }
    s
}

/// The replay command of `cfg`, naming its repro file if it has a script.
pub fn replay_of(cfg: &RunConfig, repro: Option<&Path>) -> String {
    match (&cfg.script, repro) {
        (Some(_), Some(p)) => format!("co9p-sim run --replay {}", p.display()),
        _ => replay_command(cfg),
    }
}

/// The legend at the top of every trace file.
pub const LEGEND: &str = "\
# Each line: <virtual time> #<scheduling step> <event>. The hash folds in every event.
#   cN conn=M -> Tmsg ...   client N sends a request on its connection M (client view:
#   cN conn=M <- Rmsg ...     -> request, <- reply); the protocol's one-line form, modes octal
#   cN close conn=M         client N resets: connection M closes with requests in flight
#   fs task=K Op ok|err     coroutine K's filesystem call ran (err: the backend refused it)
#   fs task=K Op fault-before E   injected: failed with E, never happened
#   fs task=K Op fault-after E    injected: happened, then reported as E
#   fs task=K Op stall      injected: waits until its request is flushed
#   fs task=K Op short-io N of M  injected: moves N of the M bytes asked
#   time 1.2ms              virtual time jumps to the next timer (latency, sleeps)
#   virtio dev=D ...        a virtio guest's driver: kicks (chains published), interrupts
#                           and used entries read (`used head=H len=L`)
#   reply point / reclaim   a reply's delivery made a scheduling point; HostFs descriptors
#                           reclaimed
#   sched t3 t5x4 +9 -2     scheduling since the last line: t3 = coroutine 3 polled, x4 =
#                           four times in a row, +9 = coroutine 9 spawned, -2 = 2 finished
#                           (--trace-sched: one line per step, `sched task=3 of=5`)
#   FAILED check: detail    the check that failed, where it failed
";

/// `0.000123456s #1234 text`.
pub fn log_line(l: &LogLine) -> String {
    format!("{} #{} {}", crate::trace::vtime(l.at), l.step, l.text)
}

/// The trace file's text: header, legend, then the events (scheduling compacted unless
/// `full_sched`).
pub fn trace_text(cfg: &RunConfig, r: &Report, replay: &str, full_sched: bool) -> String {
    let mut text = format!(
        "# co9p-sim trace\n# replay: {replay}\n# result: {}\n# knobs: {}\n",
        r.line(),
        r.knobs
    );
    if cfg.script.is_some() {
        text.push_str("# workload: replayed from the repro file's moves\n");
    }
    if let Some(f) = &r.failure {
        text.push_str(&format!("# FAILED {}: {}\n", f.check, f.detail));
    }
    text.push_str(LEGEND);
    let mut sched: Vec<String> = Vec::new();
    let mut sched_at: Option<&LogLine> = None;
    let flush = |text: &mut String, sched: &mut Vec<String>, at: Option<&LogLine>| {
        if let Some(at) = at
            && !sched.is_empty()
        {
            text.push_str(&format!(
                "{} #{} sched {}\n",
                crate::trace::vtime(at.at),
                at.step,
                sched.join(" ")
            ));
        }
        sched.clear();
    };
    for e in &r.events {
        let compact = match (full_sched, e.kind) {
            (false, b'S') => e
                .text
                .strip_prefix("sched task=")
                .and_then(|t| t.split(' ').next())
                .map(|t| format!("t{t}")),
            (false, b'N') => e.text.strip_prefix("spawn task=").map(|t| format!("+{t}")),
            (false, b'D') => e.text.strip_prefix("done task=").map(|t| format!("-{t}")),
            _ => None,
        };
        match compact {
            Some(c) => {
                if sched_at.is_none() {
                    sched_at = Some(e);
                }
                // `t3 t3 t3` reads as `t3x3`.
                match sched.last_mut() {
                    Some(last)
                        if last.split('x').next() == Some(c.as_str()) && c.starts_with('t') =>
                    {
                        let n: u64 = last
                            .split('x')
                            .nth(1)
                            .and_then(|n| n.parse().ok())
                            .unwrap_or(1);
                        *last = format!("{c}x{}", n + 1);
                    }
                    _ => sched.push(c),
                }
            }
            None => {
                flush(&mut text, &mut sched, sched_at.take());
                text.push_str(&log_line(e));
                text.push('\n');
            }
        }
    }
    flush(&mut text, &mut sched, sched_at.take());
    text
}

/// Runs `cfg` with its event log and writes its decoded trace to `path`.
pub fn write_trace(
    cfg: &RunConfig,
    path: &Path,
    replay: &str,
    full_sched: bool,
) -> std::io::Result<Report> {
    let r = World::run(RunConfig {
        log: true,
        ..cfg.clone()
    });
    std::fs::write(path, trace_text(cfg, &r, replay, full_sched))?;
    Ok(r)
}

/// Runs `cfg` keeping its timeline and writes the page to `path`.
pub fn write_timeline(cfg: &RunConfig, path: &Path, replay: &str) -> std::io::Result<Report> {
    let r = World::run(RunConfig {
        timeline: true,
        ..cfg.clone()
    });
    let mut tl = r.timeline.clone().unwrap_or_default();
    tl.subtitle.insert(0, format!("replay: {replay}"));
    tl.subtitle.insert(1, r.line());
    std::fs::write(path, crate::timeline::render_html(&tl))?;
    Ok(r)
}

/// Writes `cfg` (with its moves) as a repro file.
pub fn write_repro(cfg: &RunConfig, path: &Path, header: &[String]) -> std::io::Result<()> {
    std::fs::write(path, repro_text(cfg, header))
}

/// Where the files of seed `seed` go: `DIR/co9p-sim-seed-N{suffix}`.
pub fn seed_path(dir: &Path, seed: u64, suffix: &str) -> PathBuf {
    dir.join(format!("co9p-sim-seed-{seed}{suffix}"))
}

// ---- shrinking ----

/// How big a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    pub clients: usize,
    /// Requests sent, every kind.
    pub requests: u64,
    pub steps: u64,
}

impl Size {
    pub fn of(cfg: &RunConfig, r: &Report) -> Size {
        Size {
            clients: cfg.clients,
            requests: r.requests,
            steps: r.steps,
        }
    }
}

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} clients, {} requests, {} steps",
            self.clients, self.requests, self.steps
        )
    }
}

/// What shrinking found.
#[derive(Debug, Clone)]
pub struct Shrunk {
    /// The smallest run found failing the same check (a script of moves, if it got that
    /// far).
    pub cfg: RunConfig,
    pub before: Size,
    pub after: Size,
    /// Runs it took (as one thread would have run them).
    pub runs: u64,
    /// Whether the budget ran out before the search was done.
    pub exhausted: bool,
    /// The smaller run's report.
    pub report: Report,
}

/// Runs candidate configurations, in parallel batches of `jobs`, and returns the first
/// (in order) that fails `check` with its report — exactly what one thread trying them in
/// order would return, runs counted the same way, whatever `jobs` is.
struct Search {
    check: String,
    jobs: usize,
    budget: u64,
    runs: u64,
}

impl Search {
    fn fails(&self, r: &Report) -> bool {
        r.failure.as_ref().is_some_and(|f| f.check == self.check)
    }

    fn exhausted(&self) -> bool {
        self.runs >= self.budget
    }

    fn first(&mut self, cands: &[RunConfig]) -> Option<(usize, Report)> {
        let mut i = 0;
        while i < cands.len() {
            let n = self
                .jobs
                .min(cands.len() - i)
                .min((self.budget - self.runs.min(self.budget)) as usize);
            if n == 0 {
                return None;
            }
            let reports = run_all(&cands[i..i + n], self.jobs);
            for (k, r) in reports.into_iter().enumerate() {
                self.runs += 1;
                if self.fails(&r) {
                    return Some((i + k, r));
                }
            }
            i += n;
        }
        None
    }

    fn one(&mut self, cfg: &RunConfig) -> Option<Report> {
        self.first(std::slice::from_ref(cfg)).map(|(_, r)| r)
    }
}

/// Runs each configuration (on up to `jobs` threads); reports in the same order.
pub fn run_all(cfgs: &[RunConfig], jobs: usize) -> Vec<Report> {
    if jobs <= 1 || cfgs.len() <= 1 {
        return cfgs.iter().map(|c| World::run(c.clone())).collect();
    }
    let next = AtomicU64::new(0);
    let mut out: Vec<Option<Report>> = vec![None; cfgs.len()];
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..jobs.min(cfgs.len()) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    if i >= cfgs.len() {
                        break;
                    }
                    let r = World::run(cfgs[i].clone());
                    results.lock().unwrap().push((i, r));
                }
            });
        }
    });
    for (i, r) in results.into_inner().unwrap() {
        out[i] = Some(r);
    }
    out.into_iter()
        .map(|r| r.expect("every run done"))
        .collect()
}

/// Looks for a smaller run failing the same `check` as `cfg` (whose report is `failed`):
/// first fewer clients, direct links, faults, swarm features and operation kinds switched
/// off and fewer requests, each a run drawn from the same seed; then the workload of the
/// best run so far, recorded as moves, cut to the shortest failing prefix and reduced by
/// delta debugging (whole chunks of moves deleted while the check still fails, down to
/// single moves); then features again. Deterministic, and bounded: at most `budget` runs.
pub fn shrink(cfg: &RunConfig, failed: &Report, budget: u64, jobs: usize) -> Shrunk {
    let check = failed
        .failure
        .as_ref()
        .map(|f| f.check.to_string())
        .unwrap_or_default();
    let mut s = Search {
        check,
        jobs: jobs.max(1),
        budget,
        runs: 0,
    };
    let before = Size::of(cfg, failed);
    let mut best = RunConfig {
        log: false,
        timeline: false,
        record: false,
        ..cfg.clone()
    };
    let mut best_report = failed.clone();
    if best.script.is_none() {
        // Fewer clients, smallest first.
        let cands: Vec<RunConfig> = (1..best.clients)
            .map(|clients| RunConfig {
                clients,
                ..best.clone()
            })
            .collect();
        if let Some((k, r)) = s.first(&cands) {
            best = cands[k].clone();
            best_report = r;
        }
        // Direct links (no virtqueues).
        if best.transport != Transport::Direct {
            let c = RunConfig {
                transport: Transport::Direct,
                ..best.clone()
            };
            if let Some(r) = s.one(&c) {
                best = c;
                best_report = r;
            }
        }
        features_off(&mut s, &mut best, &mut best_report);
        // Fewer requests: the smallest --ops that still fails (a shorter workload).
        let (mut lo, mut hi) = (0, best.ops);
        while lo < hi && !s.exhausted() {
            let mid = lo + (hi - lo) / 2;
            let c = RunConfig {
                ops: mid,
                ..best.clone()
            };
            match s.one(&c) {
                Some(r) => {
                    hi = mid;
                    best = c;
                    best_report = r;
                }
                None => lo = mid + 1,
            }
        }
    }

    // The workload as moves: record it, check the replay fails the same way, then cut.
    let moves: Vec<Move> = match &best.script {
        Some(m) => m.as_ref().clone(),
        None => {
            let rec = World::run(RunConfig {
                record: true,
                ..best.clone()
            });
            rec.moves
        }
    };
    let mut base = best.clone();
    let scripted = |base: &RunConfig, moves: Vec<Move>| RunConfig {
        script: Some(Arc::new(moves)),
        record: false,
        ..base.clone()
    };
    if !s.exhausted()
        && let Some(r) = s.one(&scripted(&base, moves.clone()))
    {
        best = scripted(&base, moves.clone());
        best_report = r;
        let mut moves = moves;
        // The shortest failing prefix.
        let (mut lo, mut hi) = (0, moves.len());
        while lo < hi && !s.exhausted() {
            let mid = lo + (hi - lo) / 2;
            let c = scripted(&base, moves[..mid].to_vec());
            match s.one(&c) {
                Some(r) => {
                    hi = mid;
                    best_report = r;
                    best = c;
                }
                None => lo = mid + 1,
            }
        }
        moves.truncate(hi);
        // Delta debugging: delete chunks of moves, halving the chunk size down to single
        // moves; a deletion after which the check still fails is kept, and the pass goes
        // on from there.
        // Deletions change the run, so others may become possible: passes go on while
        // one deletes something.
        // Switching features off after the moves were cut may let more moves go: the cuts
        // and the switches take turns while the switches change something.
        loop {
            let mut chunk = moves.len().div_ceil(2).max(1);
            let mut deleted = false;
            loop {
                let mut i = 0;
                while i < moves.len() && !s.exhausted() {
                    let starts: Vec<usize> = (i..moves.len()).step_by(chunk).collect();
                    let cands: Vec<(Vec<Move>, RunConfig)> = starts
                        .iter()
                        .map(|&at| {
                            let keep: Vec<bool> = (0..moves.len())
                                .map(|j| j < at || j >= at + chunk)
                                .collect();
                            let m = subset(&moves, &keep);
                            let c = scripted(&base, m.clone());
                            (m, c)
                        })
                        .collect();
                    let cfgs: Vec<RunConfig> = cands.iter().map(|(_, c)| c.clone()).collect();
                    match s.first(&cfgs) {
                        Some((k, r)) => {
                            i = starts[k];
                            deleted = true;
                            moves = cands[k].0.clone();
                            best = cands[k].1.clone();
                            best_report = r;
                        }
                        None => break,
                    }
                }
                if s.exhausted() || moves.is_empty() {
                    break;
                }
                if chunk == 1 {
                    if !deleted {
                        break;
                    }
                    deleted = false;
                    chunk = moves.len().div_ceil(2).max(1);
                    continue;
                }
                chunk = chunk.div_ceil(2);
            }
            // Single moves made smaller: fewer steps in each `steps` move.
            for i in 0..moves.len() {
                if s.exhausted() {
                    break;
                }
                let Move::Steps(k) = moves[i] else {
                    continue;
                };
                let cands: Vec<RunConfig> = (0..k.min(3))
                    .map(|less| {
                        let mut m = moves.clone();
                        m[i] = Move::Steps(less);
                        scripted(&base, m)
                    })
                    .collect();
                if let Some((j, r)) = s.first(&cands) {
                    moves[i] = Move::Steps(j as u64);
                    best = scripted(&base, moves.clone());
                    best_report = r;
                }
            }
            let switched = best.off.len();
            features_off(&mut s, &mut best, &mut best_report);
            if best.off.len() == switched || s.exhausted() {
                break;
            }
            base.off = best.off.clone();
        }
    }
    let after = Size::of(&best, &best_report);
    Shrunk {
        cfg: best,
        before,
        after,
        runs: s.runs,
        exhausted: s.exhausted(),
        report: best_report,
    }
}

/// Switches off, one at a time in a fixed order, each feature the run has on, keeping each
/// switch after which the check still fails.
fn features_off(s: &mut Search, best: &mut RunConfig, best_report: &mut Report) {
    // A replayed workload draws no requests, flushes, Tversions or resets: only the
    // faults and the lock swarm still matter.
    let workload_only = |f: &Feature| {
        matches!(
            f,
            Feature::Op(_)
                | Feature::Flush
                | Feature::Tversion
                | Feature::Reset
                | Feature::Hostile
                | Feature::Reclaim
                | Feature::Contention
                | Feature::Gaps
                | Feature::Dirs
        )
    };
    let mut todo: Vec<Feature> = best_report
        .uses
        .iter()
        .copied()
        .filter(|f| !(best.off.contains(f) || best.script.is_some() && workload_only(f)))
        .collect();
    while !todo.is_empty() && !s.exhausted() {
        let cands: Vec<RunConfig> = todo
            .iter()
            .map(|f| {
                let mut c = best.clone();
                c.off.insert(*f);
                c
            })
            .collect();
        match s.first(&cands) {
            Some((k, r)) => {
                *best = cands[k].clone();
                *best_report = r;
                todo.drain(..=k);
            }
            None => break,
        }
    }
}

// ---- campaigns ----

/// One seed's outcome in a campaign.
pub struct SeedResult {
    pub cfg: RunConfig,
    pub report: Report,
    /// A determinism failure (the hashes of two runs differed).
    pub nondet: Option<String>,
}

impl SeedResult {
    /// The failed check and its text, if the seed failed.
    pub fn failure(&self) -> Option<(String, String)> {
        match (&self.report.failure, &self.nondet) {
            (Some(f), _) => Some((f.check.to_string(), format!("{}: {}", f.check, f.detail))),
            (None, Some(n)) => Some(("determinism".into(), n.clone())),
            (None, None) => None,
        }
    }
}

/// Runs the seeds `from..from + count` with `cfg_of(seed)`, on `jobs` threads, and hands
/// each result to `on` in seed order. Without `keep_going`, it stops after the first
/// failing seed: the seeds handed over are exactly those one thread would have run (later
/// seeds some thread ran meanwhile are dropped). Returns the seeds handed over.
pub fn campaign(
    from: u64,
    count: u64,
    jobs: usize,
    keep_going: bool,
    determinism: bool,
    cfg_of: &(dyn Fn(u64) -> RunConfig + Sync),
    on: &mut dyn FnMut(SeedResult),
) -> u64 {
    let run = |i: u64| {
        let cfg = cfg_of(from + i);
        let (report, nondet) = run_seed(&cfg, determinism);
        SeedResult {
            cfg,
            report,
            nondet,
        }
    };
    if jobs <= 1 {
        for i in 0..count {
            let r = run(i);
            let failed = r.failure().is_some();
            on(r);
            if failed && !keep_going {
                return i + 1;
            }
        }
        return count;
    }
    let next = AtomicU64::new(0);
    let stop = AtomicU64::new(u64::MAX);
    let (tx, rx) = std::sync::mpsc::channel::<(u64, SeedResult)>();
    let mut handed = 0;
    std::thread::scope(|sc| {
        for _ in 0..jobs {
            let tx = tx.clone();
            let (next, stop, run) = (&next, &stop, &run);
            sc.spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count || i > stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let r = run(i);
                    if r.failure().is_some() && !keep_going {
                        stop.fetch_min(i, Ordering::Relaxed);
                    }
                    if tx.send((i, r)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        let mut waiting: BTreeMap<u64, SeedResult> = BTreeMap::new();
        let mut done = false;
        for (i, r) in rx.iter() {
            if done {
                continue;
            }
            waiting.insert(i, r);
            while let Some(r) = waiting.remove(&handed) {
                let failed = r.failure().is_some();
                on(r);
                handed += 1;
                if failed && !keep_going {
                    done = true;
                    stop.fetch_min(handed - 1, Ordering::Relaxed);
                    break;
                }
            }
        }
    });
    handed
}
