//! One simulated run: a seed, the device (the production `Session` code on the
//! simulator's executor over a faulty MemFs or HostFs), several guest clients, and the
//! checks.
//!
//! The run goes through phases: the workload (requests, flushes, Tversions and client
//! resets interleaved with scheduling steps, faults on), the heal phase (faults off,
//! stalled requests flushed; everything must be answered within a bound), the drain
//! (every client clunks every fid) and the end (sessions closed, leak and final-state
//! checks). After every scheduling step the journal is drained and judged.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use co9p::fs::host::SecurityModel;
use co9p::fs::{Creds, Name};
use co9p::protocol::{Tag, Tmessage};
use co9p::server::{Config, Latch, Session};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::backend::{SimFs, host_support};
use crate::executor::{Policy, RunEnd, SimExecutor};
use crate::faulty::{FaultConfig, FaultHook, FaultyFs};
use crate::guest::{ALL_OPS, Guest, OpKind, Uses};
use crate::journal::Journal;
use crate::knobs::{Feature, Off};
use crate::link::{Link, Transport, VirtioDev};
use crate::locks::LockSwarm;
use crate::model::{Backend, Model};
pub use crate::oracle::Violation;
use crate::oracle::{Req, Show};
use crate::script::{Move, Target};
use crate::timeline::Kind as TlKind;

mod finish;
mod hostile;
mod judge;
mod send;

pub type Fs = FaultyFs<SimFs>;

/// Which scheduler a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scheduler {
    Random,
    Pct,
}

/// Which backend a run serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FsChoice {
    /// MemFs, in memory.
    Mem,
    /// HostFs on a scratch directory (tmpfs where there is one), each seed in one of the
    /// security models this machine supports.
    Host,
    /// A quarter of the seeds on HostFs (where this machine supports it), the rest MemFs.
    Swarm,
}

/// Knobs a run can force on (the swarm draws each per seed otherwise).
pub const KNOBS: [&str; 7] = [
    "hostile",
    "contention",
    "gaps",
    "dirs",
    "nonroot",
    "reply-yield",
    "reclaim",
];

impl Scheduler {
    pub fn name(self) -> &'static str {
        match self {
            Scheduler::Random => "random",
            Scheduler::Pct => "pct",
        }
    }
    pub fn from_name(s: &str) -> Option<Scheduler> {
        [Scheduler::Random, Scheduler::Pct]
            .into_iter()
            .find(|x| x.name() == s)
    }
}

/// A bug planted in the device through its test-only hook (`co9p`'s feature
/// `planted-bugs`, which production builds lack), to show what the simulator makes of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Plant {
    /// Tclunk/Tremove no longer wait for the requests that arrived before them on their fid.
    ClunkSkipsBarrier,
}

impl Plant {
    /// Whether this build can plant bugs.
    pub const AVAILABLE: bool = cfg!(feature = "planted-bugs");

    pub fn name(self) -> &'static str {
        match self {
            Plant::ClunkSkipsBarrier => "clunk-skips-barrier",
        }
    }
    pub fn from_name(s: &str) -> Option<Plant> {
        [Plant::ClunkSkipsBarrier]
            .into_iter()
            .find(|x| x.name() == s)
    }
}

/// Arms the planted bug on this thread for the life of the guard (a run is one thread).
struct Planted;

impl Planted {
    fn arm(plant: Option<Plant>) -> Planted {
        #[cfg(feature = "planted-bugs")]
        co9p::planted::set_clunk_skips_barrier(plant == Some(Plant::ClunkSkipsBarrier));
        #[cfg(not(feature = "planted-bugs"))]
        assert!(
            plant.is_none(),
            "this build of co9p-sim has no planted bugs (feature planted-bugs)"
        );
        Planted
    }
}

impl Drop for Planted {
    fn drop(&mut self) {
        #[cfg(feature = "planted-bugs")]
        co9p::planted::set_clunk_skips_barrier(false);
    }
}

/// What one run is.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub seed: u64,
    pub clients: usize,
    /// Workload requests to send (setup, flushes, drain not counted).
    pub ops: u64,
    pub scheduler: Scheduler,
    /// Keep the decoded event log (trace files, determinism diffs, snapshots).
    pub log: bool,
    /// Clients pipeline a Tclunk behind other requests on the same fid (on by default;
    /// this found the clunk-overtakes-write bug, fixed in the server; `Plant::ClunkSkipsBarrier`
    /// plants it again in tests).
    pub pipelined_clunk: bool,
    /// How clients reach the device (direct calls, virtqueues, or a per-seed mix).
    pub transport: Transport,
    /// Which backend serves the tree.
    pub fs: FsChoice,
    /// Knobs forced on in every seed (names from [`KNOBS`]).
    pub force: Vec<String>,
    /// Swarm features and operation kinds switched off, whatever the seed draws.
    pub off: Off,
    /// A recorded workload to replay instead of drawing one (shrinking, `--replay`).
    pub script: Option<Arc<Vec<Move>>>,
    /// Keep the workload's moves in the report (to replay or shrink them).
    pub record: bool,
    /// Keep what the timeline draws (see [`crate::timeline`]).
    pub timeline: bool,
    /// A bug planted in the device (tests; see [`Plant`]).
    pub plant: Option<Plant>,
}

impl RunConfig {
    pub fn new(seed: u64) -> Self {
        RunConfig {
            seed,
            clients: 3,
            ops: 200,
            scheduler: Scheduler::Random,
            log: false,
            pipelined_clunk: true,
            transport: Transport::Swarm,
            fs: FsChoice::Mem,
            force: Vec::new(),
            off: Off::new(),
            script: None,
            record: false,
            timeline: false,
            plant: None,
        }
    }

    fn forced(&self, knob: &str) -> bool {
        self.force.iter().any(|k| k == knob)
    }
}

/// What a run reports.
#[derive(Debug, Clone)]
pub struct Report {
    pub seed: u64,
    pub hash: u64,
    pub steps: u64,
    pub vtime: std::time::Duration,
    /// 9P requests answered (every kind).
    pub ops: u64,
    pub failure: Option<Violation>,
    /// Decoded PDUs, one per line (with `log`).
    pub pdus: Vec<String>,
    /// Every event: scheduling, PDUs, filesystem calls (with `log`).
    pub events: Vec<crate::executor::LogLine>,
    /// The swarm choices of this seed.
    pub knobs: String,
    /// Requests sent (every kind, setup, flushes and the drain's clunks included).
    pub requests: u64,
    /// The workload's moves (with `record`).
    pub moves: Vec<Move>,
    /// What the timeline draws (with `timeline`).
    pub timeline: Option<crate::timeline::Timeline>,
    /// The features this run has on (what shrinking may switch off).
    pub uses: Vec<Feature>,
}

impl Report {
    pub fn line(&self) -> String {
        format!(
            "seed={} hash={:016x} steps={} vtime={:.6}s ops={}",
            self.seed,
            self.hash,
            self.steps,
            self.vtime.as_secs_f64(),
            self.ops
        )
    }
}

/// The independent random streams of a run, each seeded from the run seed.
pub fn stream_seed(seed: u64, stream: u64) -> u64 {
    // SplitMix64 of (seed, stream): a fixed, well-mixed function.
    let mut z = seed ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const SCHED: u64 = 1;
const FS: u64 = 2;
const WORKLOAD: u64 = 3;
const FAULTS: u64 = 4;
const LOCKS: u64 = 5;
const LINK: u64 = 6;
/// The knobs added with the hostile clients, HostFs and the rest (their own stream, so
/// drawing them shifts nothing else).
const KNOBS_STREAM: u64 = 7;
/// Hostile requests (their own stream: switching them on leaves the polite workload's
/// draws where they were).
const HOSTILE: u64 = 8;

/// The swarm choices: which operations and which faults this seed switches on.
#[derive(Debug, Clone)]
pub(crate) struct Knobs {
    ops: Vec<OpKind>,
    faults: FaultConfig,
    flush: f64,
    version: f64,
    reset: f64,
    depth: usize,
    locks: bool,
    backend: Backend,
    /// Requests a client sends that a polite client would not (per move).
    hostile: f64,
    /// Most requests on few fids and few names.
    contention: bool,
    /// Shrink a file, grow it past the old end, read the gap back.
    gaps: bool,
    /// Directories made, walked into, renamed across directories, then `..` walked and
    /// listed from inside.
    dirs: bool,
    /// The uid and gid each client attaches as.
    uids: Vec<(u32, u32)>,
    /// Chance that delivering a reply is a scheduling point.
    reply_yield: f64,
    /// HostFs: chance per move that every idle descriptor is closed (reopened by name).
    reclaim: f64,
}

impl Knobs {
    fn draw(cfg: &RunConfig, frng: &mut ChaCha8Rng, wrng: &mut ChaCha8Rng) -> Knobs {
        let mut ops: Vec<OpKind> = ALL_OPS
            .iter()
            .copied()
            .filter(|_| wrng.random_bool(0.7))
            .collect();
        for must in [OpKind::Walk, OpKind::Clunk] {
            if !ops.contains(&must) {
                ops.push(must);
            }
        }
        let faults = FaultConfig::swarm(frng);
        let mut k = ChaCha8Rng::seed_from_u64(stream_seed(cfg.seed, KNOBS_STREAM));
        let host = host_support();
        // Drawn whatever `--fs` says, so forcing a backend leaves the other knobs be.
        let host_share = k.random_bool(0.25);
        let on_host = match cfg.fs {
            FsChoice::Mem => false,
            FsChoice::Host => true,
            FsChoice::Swarm => host_share,
        } && !host.models.is_empty();
        let pick = k.random_range(0..3usize);
        let model = host
            .models
            .get(pick % host.models.len().max(1))
            .copied()
            .unwrap_or(SecurityModel::None);
        let backend = if on_host {
            Backend::Host(model)
        } else {
            Backend::Mem
        };
        let forced = |name: &str, drawn: bool| drawn || cfg.forced(name);
        let nonroot = forced("nonroot", k.random_bool(0.5));
        let uids = (0..cfg.clients)
            .map(|i| {
                if nonroot && k.random_bool(0.7) {
                    (1000 + i as u32, [0, 100][k.random_range(0..2)])
                } else {
                    (0, 0)
                }
            })
            .collect();
        let hostile = if forced("hostile", k.random_bool(0.3)) {
            [0.03, 0.1][k.random_range(0..2)]
        } else {
            0.0
        };
        let contention = forced("contention", k.random_bool(0.25));
        let gaps = forced("gaps", k.random_bool(0.3));
        let dirs = forced("dirs", k.random_bool(0.3));
        let reply_yield = if forced("reply-yield", k.random_bool(0.6)) {
            [0.3, 1.0][k.random_range(0..2)]
        } else {
            0.0
        };
        let reclaim = if on_host && forced("reclaim", k.random_bool(0.5)) {
            0.02
        } else {
            0.0
        };
        // A knob brings the request kinds its sequences are made of.
        let mut need = Vec::new();
        if gaps {
            need.extend([OpKind::Setattr, OpKind::Write, OpKind::Read, OpKind::Open]);
        }
        if dirs {
            need.extend([OpKind::Mkdir, OpKind::Rename, OpKind::Readdir, OpKind::Open]);
        }
        if nonroot {
            need.extend([OpKind::Create, OpKind::Write, OpKind::Setattr, OpKind::Open]);
        }
        for kind in need {
            if !ops.contains(&kind) {
                ops.push(kind);
            }
        }
        Knobs {
            ops,
            faults,
            flush: [0.0, 0.03, 0.1][frng.random_range(0..3)],
            version: [0.0, 0.0, 0.005][frng.random_range(0..3)],
            reset: [0.0, 0.0, 0.004][frng.random_range(0..3)],
            depth: if contention {
                4
            } else {
                wrng.random_range(1..=4)
            },
            locks: frng.random_bool(0.5),
            backend,
            hostile,
            contention,
            gaps,
            dirs,
            uids,
            reply_yield,
            reclaim,
        }
    }
}

impl Knobs {
    /// Switches `off` off.
    fn apply(&mut self, off: &Off) {
        for f in off {
            match *f {
                Feature::Latency => self.faults.latency = false,
                Feature::ErrorsBefore => self.faults.errors_before = false,
                Feature::ErrorsAfter => self.faults.errors_after = false,
                Feature::ShortIo => self.faults.short_io = false,
                Feature::Stall => self.faults.stall = false,
                Feature::Flush => self.flush = 0.0,
                Feature::Tversion => self.version = 0.0,
                Feature::Reset => self.reset = 0.0,
                Feature::LockSwarm => self.locks = false,
                Feature::FewSlots => {}
                Feature::Hostile => self.hostile = 0.0,
                Feature::Contention => self.contention = false,
                Feature::Gaps => self.gaps = false,
                Feature::Dirs => self.dirs = false,
                Feature::Nonroot => self.uids.iter_mut().for_each(|u| *u = (0, 0)),
                Feature::ReplyYield => self.reply_yield = 0.0,
                Feature::Reclaim => self.reclaim = 0.0,
                Feature::Op(k) => self.ops.retain(|o| *o != k),
            }
        }
    }

    /// Whether switching `f` off would change this seed's run at all.
    fn uses(&self, f: Feature, slots: usize) -> bool {
        match f {
            Feature::Latency => self.faults.latency,
            Feature::ErrorsBefore => self.faults.errors_before,
            Feature::ErrorsAfter => self.faults.errors_after,
            Feature::ShortIo => self.faults.short_io,
            Feature::Stall => self.faults.stall,
            Feature::Flush => self.flush > 0.0,
            Feature::Tversion => self.version > 0.0,
            Feature::Reset => self.reset > 0.0,
            Feature::LockSwarm => self.locks,
            Feature::FewSlots => slots < 1024,
            Feature::Hostile => self.hostile > 0.0,
            Feature::Contention => self.contention,
            Feature::Gaps => self.gaps,
            Feature::Dirs => self.dirs,
            Feature::Nonroot => self.uids.iter().any(|u| *u != (0, 0)),
            Feature::ReplyYield => self.reply_yield > 0.0,
            Feature::Reclaim => self.reclaim > 0.0,
            Feature::Op(k) => self.ops.contains(&k),
        }
    }
}

impl std::fmt::Display for Knobs {
    /// `ops=walk,read,... faults=latency,stall@5% flush=3% ... backend=mem hostile=0% ...`
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::knobs::{op_name, percent};
        let mut ops = self.ops.clone();
        ops.sort();
        let ops: Vec<&str> = ops.iter().map(|&k| op_name(k)).collect();
        let c = &self.faults;
        let faults: Vec<&str> = [
            (c.latency, "latency"),
            (c.errors_before, "errors-before"),
            (c.errors_after, "errors-after"),
            (c.short_io, "short-io"),
            (c.stall, "stall"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, n)| *n)
        .collect();
        let faults = if faults.is_empty() {
            "none".to_string()
        } else {
            format!("{}@{}", faults.join(","), percent(c.rate))
        };
        let on = |b: bool| if b { "on" } else { "off" };
        let uids: Vec<String> = self.uids.iter().map(|(u, g)| format!("{u}:{g}")).collect();
        write!(
            f,
            "ops={} faults={faults} flush={} tversion={} reset={} depth={} lock-swarm={} \
             backend={} hostile={} contention={} gaps={} dirs={} uids={} reply-yield={} \
             reclaim={}",
            ops.join(","),
            percent(self.flush),
            percent(self.version),
            percent(self.reset),
            self.depth,
            on(self.locks),
            crate::backend::model_name(self.backend),
            percent(self.hostile),
            on(self.contention),
            on(self.gaps),
            on(self.dirs),
            uids.join(","),
            percent(self.reply_yield),
            percent(self.reclaim),
        )
    }
}

struct Conn {
    link: Link,
    client: usize,
    open: bool,
    /// Opens when a closed connection has no request left.
    closing: Option<Arc<Latch>>,
    /// Lock owners of its files, released once `closing` opens.
    zombies: Vec<u64>,
    /// Largest reply allowed now.
    msize: u32,
}

pub struct World {
    cfg: RunConfig,
    knobs: Knobs,
    ex: SimExecutor,
    fs: Arc<Fs>,
    faults_on: Arc<AtomicBool>,
    journal: Journal,
    config: Arc<Config>,
    conns: Vec<Conn>,
    guests: Vec<Guest>,
    reqs: Vec<Req>,
    by_task: BTreeMap<u64, usize>,
    outstanding: BTreeMap<(usize, u16), usize>,
    /// Replies received whose judgement waits for requests they depend on (a Tclunk for
    /// the requests before it on its fid; a request sent behind a Tclunk for that clunk).
    pending: Vec<(usize, co9p::protocol::Rmessage)>,
    /// Requests not judged yet (in flight, or replied and waiting for judgement).
    unjudged: BTreeSet<usize>,
    /// The fid a Tclunk/Tremove took away, kept to judge the requests sent behind it.
    tombstones: BTreeMap<usize, crate::guest::MFid>,
    /// A Tversion in flight per connection: its request and the lock owners it closes.
    versions: BTreeMap<usize, (usize, Vec<u64>)>,
    model: Model,
    wrng: ChaCha8Rng,
    /// Hostile requests' draws.
    hrng: ChaCha8Rng,
    /// Transport choices: which clients are virtio guests, indirect tables.
    lrng: ChaCha8Rng,
    /// Virtio devices, and the device of each client on one.
    devices: Vec<VirtioDev>,
    client_dev: Vec<Option<usize>>,
    stalled: BTreeSet<u64>,
    locks: Option<LockSwarm>,
    sent: u64,
    answered: u64,
    actions: u64,
    failure: Option<Violation>,
    pdus: Vec<String>,
    /// Moves performed in the workload phase, and the moves kept (with `record`).
    nmoves: usize,
    moves: Vec<Move>,
    /// The move being performed, and the request each move sent (both ways).
    cur_move: Option<usize>,
    move_req: BTreeMap<usize, usize>,
    req_move: BTreeMap<usize, usize>,
}

/// Scheduling steps a run may take before it counts as a livelock.
const STEP_BUDGET: u64 = 2_000_000;

impl World {
    pub fn new(cfg: RunConfig) -> World {
        let mut frng = ChaCha8Rng::seed_from_u64(stream_seed(cfg.seed, FAULTS));
        let mut wrng = ChaCha8Rng::seed_from_u64(stream_seed(cfg.seed, WORKLOAD));
        let mut knobs = Knobs::draw(&cfg, &mut frng, &mut wrng);
        knobs.apply(&cfg.off);
        let policy = match cfg.scheduler {
            Scheduler::Random => Policy::Random,
            Scheduler::Pct => Policy::Pct {
                depth: 3,
                horizon: 20_000,
            },
        };
        let ex = SimExecutor::new(stream_seed(cfg.seed, SCHED), policy);
        ex.set_reply_yield(knobs.reply_yield);
        if cfg.log {
            ex.keep_log();
        }
        if cfg.timeline {
            ex.keep_timeline();
        }
        let journal = Journal::default();
        let hook = FaultHook::new(
            ex.clone(),
            knobs.faults,
            stream_seed(cfg.seed, FS),
            journal.clone(),
        );
        let faults_on = hook.switch();
        let mut failure = None;
        let backend = match knobs.backend {
            Backend::Mem => SimFs::mem(),
            Backend::Host(m) => match SimFs::host(m, &cfg.seed.to_string()) {
                Ok(fs) => fs,
                Err(e) => {
                    failure = Some(Violation {
                        check: "host backend",
                        detail: format!("no scratch directory for HostFs: {e}"),
                    });
                    SimFs::mem()
                }
            },
        };
        let model = Model::new(backend.backend());
        let fs = Arc::new(FaultyFs::new(backend, hook));
        let mut lrng = ChaCha8Rng::seed_from_u64(stream_seed(cfg.seed, LINK));
        // Some seeds give sessions very few request slots, so requests are refused for
        // lack of one (and Tflush and Tversion use their slot of slack).
        let mut slots = [2, 3, 1024, 1024][lrng.random_range(0..4)];
        if cfg.off.contains(&Feature::FewSlots) {
            slots = 1024;
        }
        let config = Arc::new(Config {
            max_msize: [8192, 65536][wrng.random_range(0..2)],
            max_inflight: slots,
            ..Config::default()
        });
        let locks = knobs
            .locks
            .then(|| LockSwarm::spawn(&ex, stream_seed(cfg.seed, LOCKS)));
        let hrng = ChaCha8Rng::seed_from_u64(stream_seed(cfg.seed, HOSTILE));
        let mut w = World {
            knobs,
            ex,
            fs,
            faults_on,
            journal,
            config,
            conns: Vec::new(),
            guests: Vec::new(),
            reqs: Vec::new(),
            by_task: BTreeMap::new(),
            outstanding: BTreeMap::new(),
            pending: Vec::new(),
            unjudged: BTreeSet::new(),
            tombstones: BTreeMap::new(),
            versions: BTreeMap::new(),
            model,
            wrng,
            hrng,
            lrng,
            devices: Vec::new(),
            client_dev: Vec::new(),
            stalled: BTreeSet::new(),
            locks,
            sent: 0,
            answered: 0,
            actions: 0,
            failure,
            pdus: Vec::new(),
            nmoves: 0,
            moves: Vec::new(),
            cur_move: None,
            move_req: BTreeMap::new(),
            req_move: BTreeMap::new(),
            cfg,
        };
        w.setup_tree();
        let share = match w.cfg.transport {
            Transport::Direct => 0.0,
            Transport::Virtio => 1.0,
            Transport::Swarm => [0.0, 0.5, 1.0][w.lrng.random_range(0..3)],
        };
        for id in 0..w.cfg.clients {
            let dev = if w.lrng.random_bool(share) {
                let batch = [1, 1, 2, 4][w.lrng.random_range(0..4)];
                let event_idx = w.lrng.random_bool(0.8);
                let d = VirtioDev::new(
                    w.devices.len(),
                    w.fs.clone(),
                    w.ex.clone(),
                    &w.config,
                    w.journal.clone(),
                    batch,
                    event_idx,
                );
                match d {
                    Ok(d) => {
                        w.devices.push(d);
                        Some(w.devices.len() - 1)
                    }
                    Err(e) => {
                        w.fail("virtio boot", e);
                        None
                    }
                }
            } else {
                None
            };
            w.client_dev.push(dev);
            let conn = w.connect(id);
            let msize = [4096, 5000, 8192, 65536][w.wrng.random_range(0..4)];
            let mut g = Guest::new(id, conn, msize, w.knobs.depth);
            g.pipelined_clunk = w.cfg.pipelined_clunk;
            (g.uid, g.gid) = w.knobs.uids[id];
            g.contention = w.knobs.contention;
            g.gaps = w.knobs.gaps;
            g.dirs = w.knobs.dirs;
            w.guests.push(g);
        }
        w
    }

    /// Runs the whole seed.
    pub fn run(cfg: RunConfig) -> Report {
        let _planted = Planted::arm(cfg.plant);
        let mut w = World::new(cfg);
        w.ex.timeline(|| TlKind::Phase("workload"));
        if w.failure.is_none() {
            w.workload();
        }
        if w.failure.is_none() {
            w.ex.timeline(|| TlKind::Phase("heal"));
            w.heal();
        }
        if w.failure.is_none() {
            w.ex.timeline(|| TlKind::Phase("drain"));
            w.drain();
        }
        if w.failure.is_none() {
            w.ex.timeline(|| TlKind::Phase("end"));
            w.end();
        }
        w.report()
    }

    fn report(self) -> Report {
        let events = self.ex.take_log();
        let timeline = self.cfg.timeline.then(|| self.timeline());
        let knobs = self.knobs_line();
        self.ex.clear();
        Report {
            seed: self.cfg.seed,
            hash: self.ex.trace().hash(),
            steps: self.ex.steps(),
            vtime: self.ex.vtime(),
            ops: self.answered,
            failure: self.failure,
            pdus: self.pdus,
            events,
            knobs,
            requests: self.reqs.len() as u64,
            uses: crate::knobs::all_features()
                .into_iter()
                .filter(|f| self.knobs.uses(*f, self.config.max_inflight))
                .collect(),
            moves: self.moves,
            timeline,
        }
    }

    /// The seed's swarm choices, readable: `ops=... faults=... slots=1024 ...`.
    fn knobs_line(&self) -> String {
        let list = |v: Vec<String>| {
            if v.is_empty() {
                "none".into()
            } else {
                v.join(",")
            }
        };
        let virtio: Vec<String> = (self.client_dev.iter().enumerate())
            .filter(|(_, d)| d.is_some())
            .map(|(c, _)| format!("c{c}"))
            .collect();
        let msizes: Vec<String> = self
            .guests
            .iter()
            .map(|g| g.want_msize.to_string())
            .collect();
        format!(
            "{} slots={} server-msize={} client-msize={} virtio={} off={}",
            self.knobs,
            self.config.max_inflight,
            self.config.max_msize,
            list(msizes),
            list(virtio),
            crate::knobs::off_list(&self.cfg.off)
        )
    }

    /// What the timeline page draws of this run.
    fn timeline(&self) -> crate::timeline::Timeline {
        let events = self.ex.take_timeline();
        let reqs = self
            .reqs
            .iter()
            .map(|r| crate::timeline::TlReq {
                client: r.client,
                task: r.task,
                text: format!(
                    "{}",
                    co9p::protocol::Request::new(Tag(r.tag), r.msg.clone())
                ),
            })
            .collect();
        let named_tasks = self
            .locks
            .as_ref()
            .map(|l| l.task_names())
            .unwrap_or_default();
        let mut subtitle = vec![
            format!("knobs: {}", self.knobs_line()),
            format!(
                "steps={} vtime={} requests={} answered={}",
                self.ex.steps(),
                crate::trace::vtime(self.ex.vtime()),
                self.reqs.len(),
                self.answered
            ),
        ];
        if let Some(f) = &self.failure {
            subtitle.push(format!("FAILED {}: {}", f.check, f.detail));
        }
        crate::timeline::Timeline {
            title: format!("co9p-sim seed {}", self.cfg.seed),
            subtitle,
            clients: self.guests.len(),
            client_dev: self.client_dev.clone(),
            reqs,
            named_tasks,
            events,
        }
    }

    fn fail(&mut self, check: &'static str, detail: String) {
        if self.failure.is_none() {
            self.ex.timeline(|| TlKind::Failed {
                check: check.to_string(),
                detail: detail.clone(),
            });
            self.ex.record_line(b'!', check.as_bytes(), || {
                format!("FAILED {check}: {detail}")
            });
            if self.cfg.log {
                let tree = self.model.render();
                let ids: Vec<String> = (0..self.model.nodes.len())
                    .filter_map(|i| self.model.node(i).ino.map(|q| format!("{i}:{q:#x}")))
                    .collect();
                self.ex.record_line(b'!', &[], || {
                    format!(
                        "# the model's tree now (node:qid {}):\n{tree}",
                        ids.join(" ")
                    )
                });
            }
            self.failure = Some(Violation { check, detail });
        }
    }

    /// [`World::fail`] with a check's own report of what failed.
    fn violated(&mut self, v: Violation) {
        self.fail(v.check, v.detail);
    }

    /// `/shared` and one private directory per client, made before the run; the model
    /// learns the root's owner and mode (a scratch directory's are the host's).
    fn setup_tree(&mut self) {
        use co9p::fs::Filesystem;
        let fs = &self.fs.inner;
        let (root, qid) = co9p::co::block_on(fs.root()).expect("root");
        self.model.learn_ino(crate::model::ROOT, qid.path);
        if let Ok(a) = co9p::co::block_on(fs.getattr(&root)) {
            let r = &mut self.model.nodes[crate::model::ROOT];
            (r.mode, r.uid, r.gid) = (a.mode, a.uid, a.gid);
        }
        let mut names = vec!["shared".to_string()];
        names.extend((0..self.cfg.clients).map(|i| format!("c{i}")));
        for n in names {
            let name = Name::new(n.as_bytes()).expect("valid name");
            let qid = co9p::co::block_on(fs.mkdir(&root, &name, 0o755, Creds::default()));
            let Ok(qid) = qid else {
                return self.fail("setup", format!("mkdir {n}: {qid:?}"));
            };
            let id = self
                .model
                .mkdir(crate::model::ROOT, n.as_bytes(), 0o755, Default::default())
                .expect("model mkdir");
            self.model.learn_ino(id, qid.path);
        }
    }

    fn connect(&mut self, client: usize) -> usize {
        let link = match self.client_dev[client] {
            Some(dev) => {
                self.devices[dev].conn = self.conns.len();
                Link::Virtio {
                    dev,
                    session: self.devices[dev].session(),
                }
            }
            None => Link::Direct(Session::new(
                self.fs.clone(),
                self.ex.clone(),
                self.config.clone(),
            )),
        };
        self.conns.push(Conn {
            link,
            client,
            open: true,
            closing: None,
            zombies: Vec::new(),
            msize: self.config.max_msize,
        });
        self.conns.len() - 1
    }

    // ---- the workload phase ----

    fn workload(&mut self) {
        if let Some(script) = self.cfg.script.clone() {
            for (i, m) in script.iter().enumerate() {
                if self.failure.is_some() {
                    break;
                }
                self.actions += 1;
                self.perform(i, m);
            }
            return;
        }
        while self.failure.is_none() && self.sent < self.cfg.ops {
            self.actions += 1;
            if self.actions > 200 * self.cfg.ops + 10_000 {
                let detail = format!(
                    "{} of {} requests sent after {} moves; outstanding {:?}",
                    self.sent,
                    self.cfg.ops,
                    self.actions,
                    self.outstanding
                        .values()
                        .take(6)
                        .map(|&r| Show(&self.reqs[r].msg).to_string())
                        .collect::<Vec<_>>()
                );
                self.fail("progress", detail);
                break;
            }
            if self.knobs.reclaim > 0.0 && self.hrng.random_bool(self.knobs.reclaim) {
                self.perform(self.nmoves, &Move::Reclaim);
                self.nmoves += 1;
                if self.cfg.record {
                    self.moves.push(Move::Reclaim);
                }
            }
            if !self.devices.is_empty() {
                self.perform(self.nmoves, &Move::Virtio);
                self.nmoves += 1;
                if self.cfg.record {
                    self.moves.push(Move::Virtio);
                }
            }
            // The second half of a race goes right after the first.
            let urgent = (0..self.guests.len()).find(|&g| self.guests[g].urgent());
            let m = if let Some(g) = urgent {
                let m = self.choose(g);
                if m.is_none() {
                    self.guests[g].plan.pop_front();
                }
                m
            } else if self.wrng.random_bool(0.45) {
                let g = self.wrng.random_range(0..self.guests.len());
                self.choose(g)
            } else {
                Some(Move::Steps(self.wrng.random_range(1..=8)))
            };
            if let Some(m) = m {
                self.perform(self.nmoves, &m);
                self.nmoves += 1;
                if self.cfg.record {
                    self.moves.push(m);
                }
            }
        }
    }

    /// What flushing `oldtag` (`None`: its own tag) of guest `g` aims at, as a move.
    fn target_of(&self, g: usize, oldtag: Option<u16>) -> Target {
        let Some(t) = oldtag else {
            return Target::Own;
        };
        self.outstanding
            .get(&(self.guests[g].conn, t))
            .and_then(|r| self.req_move.get(r))
            .map_or(Target::Tag(t), |&m| Target::Move(m))
    }

    /// The next move of guest `g`, drawn: maybe a flush, a Tversion, a reset, or its next
    /// request; `None` if nothing fits now.
    fn choose(&mut self, g: usize) -> Option<Move> {
        if self.guests[g].versioning {
            // A client may flush its Tversion too: Rversion must still come first.
            if self.wrng.random_bool(self.knobs.flush) {
                let target = self.target_of(g, Some(Tag::NOTAG.0));
                return Some(Move::Flush { client: g, target });
            }
            return None;
        }
        let conn = self.guests[g].conn;
        let mine: Vec<u16> = self
            .outstanding
            .iter()
            .filter(|((c, _), _)| *c == conn)
            .map(|((_, t), _)| *t)
            .collect();
        let r: f64 = self.wrng.random();
        if r < self.knobs.flush && self.guests[g].msize != 0 {
            let oldtag = match self.wrng.random_range(0..10) {
                0 => None, // itself
                1 => Some(self.wrng.random_range(1..=200)),
                _ if !mine.is_empty() => Some(mine[self.wrng.random_range(0..mine.len())]),
                _ => Some(self.wrng.random_range(1..=200)),
            };
            let target = self.target_of(g, oldtag);
            return Some(Move::Flush { client: g, target });
        }
        let r = r - self.knobs.flush;
        if r < self.knobs.version && self.guests[g].msize != 0 {
            return Some(Move::Version(g));
        }
        let r = r - self.knobs.version;
        if r < self.knobs.reset {
            return Some(Move::Reset(g));
        }
        let guest = &self.guests[g];
        if guest.inflight >= guest.depth {
            return None;
        }
        if guest.setup().is_some() {
            return (guest.inflight == 0).then_some(Move::Setup(g));
        }
        if self.knobs.hostile > 0.0 && self.hrng.random_bool(self.knobs.hostile) {
            // What the hostile request is comes from the hostile stream, from here on.
            let at = self.hrng.get_word_pos();
            return Some(Move::Hostile { client: g, at });
        }
        let ops = self.knobs.ops.clone();
        let (msg, uses) = self.guests[g].next_op(&mut self.wrng, &ops, &self.model)?;
        self.guests[g].can_use(&uses).then_some(Move::Send {
            client: g,
            msg,
            uses,
        })
    }

    /// Performs move `i` (of the script, or the `i`-th drawn). A move that does not fit
    /// the run as it is now (a replayed subset of a run's moves) does nothing.
    fn perform(&mut self, i: usize, m: &Move) {
        if m.client().is_some_and(|g| g >= self.guests.len()) {
            return;
        }
        self.cur_move = Some(i);
        match m {
            Move::Steps(n) => {
                if *n > 0 && self.steps(*n) == RunEnd::Idle {
                    self.on_idle(false);
                }
            }
            &Move::Setup(g) => {
                let guest = &self.guests[g];
                if !guest.versioning
                    && guest.inflight == 0
                    && guest.depth > 0
                    && let Some((msg, uses)) = guest.setup()
                {
                    self.send(g, msg, uses);
                }
            }
            Move::Send { client, msg, uses } => {
                let guest = &self.guests[*client];
                if !guest.versioning
                    && guest.inflight < guest.depth
                    && guest.setup().is_none()
                    && guest.can_use(uses)
                {
                    self.sent += 1;
                    self.send(*client, msg.clone(), uses.clone());
                }
            }
            Move::Flush { client, target } => {
                let g = *client;
                let conn = self.guests[g].conn;
                let oldtag = match *target {
                    Target::Own => Some(None),
                    Target::Tag(t) => Some(Some(t)),
                    // Only while the request that move sent is in flight on this connection.
                    Target::Move(k) => self.move_req.get(&k).and_then(|&r| {
                        let tag = self.reqs[r].tag;
                        (self.outstanding.get(&(conn, tag)) == Some(&r)).then_some(Some(tag))
                    }),
                };
                if let Some(oldtag) = oldtag {
                    let guest = &self.guests[g];
                    if guest.versioning {
                        if oldtag == Some(Tag::NOTAG.0) {
                            self.flush(g, oldtag);
                        }
                    } else if guest.msize != 0 {
                        self.flush(g, oldtag);
                    }
                }
            }
            &Move::Version(g) => {
                if !self.guests[g].versioning && self.guests[g].msize != 0 {
                    self.version(g);
                }
            }
            &Move::Reset(g) => {
                if !self.guests[g].versioning {
                    self.reset(g);
                }
            }
            &Move::Hostile { client: g, at } => {
                let guest = &self.guests[g];
                if !guest.versioning && guest.inflight < guest.depth && guest.setup().is_none() {
                    self.hrng.set_word_pos(at);
                    if self.hostile(g) {
                        self.sent += 1;
                    }
                }
            }
            Move::Virtio => self.virtio_moves(),
            Move::Reclaim => {
                let n = self.fs.inner.reclaim();
                self.ex
                    .record_line(b'K', &(n as u64).to_le_bytes(), || format!("reclaim {n}"));
            }
        }
        self.cur_move = None;
    }

    /// The virtual guests' drivers at their own pace: a late kick for chains published
    /// earlier, an interrupt handled some time after it came.
    fn virtio_moves(&mut self) {
        for d in 0..self.devices.len() {
            if !self.devices[d].unkicked.is_empty() && self.lrng.random_bool(0.5) {
                self.kick(d);
            }
            if self.devices[d].irq_pending && self.lrng.random_bool(0.6) {
                self.handle_irq(d);
            }
        }
        self.after_step();
    }

    /// Kicks every device with chains waiting and handles every pending interrupt (a
    /// driver gets to both eventually); whether there was anything to do.
    fn flush_virtio(&mut self) -> bool {
        let mut any = false;
        for d in 0..self.devices.len() {
            if !self.devices[d].unkicked.is_empty() {
                self.kick(d);
                any = true;
            }
            if self.devices[d].irq_pending {
                self.handle_irq(d);
                any = true;
            }
        }
        if any {
            self.after_step();
        }
        any
    }

    fn handle_irq(&mut self, d: usize) {
        match self.devices[d].on_interrupt() {
            Ok(done) => done.into_iter().for_each(|x| self.on_used(d, x)),
            Err(e) => self.fail("virtio used ring", e),
        }
    }

    /// Sends one request of guest `g` on its connection.
    fn send(&mut self, g: usize, msg: Tmessage, uses: Uses) -> usize {
        if matches!(msg, Tmessage::Version { .. }) {
            return self.version_with(g, msg);
        }
        let tag = self.guests[g].tag();
        self.submit(g, tag, msg, uses)
    }
}
