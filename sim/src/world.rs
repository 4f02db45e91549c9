//! One simulated run: a seed, the device (the production `Session` code on the
//! simulator's executor over a faulty MemFs), several guest clients, and the checks.
//!
//! The run goes through phases: the workload (requests, flushes, Tversions and client
//! resets interleaved with scheduling steps, faults on), the heal phase (faults off,
//! stalled requests flushed; everything must be answered within a bound), the drain
//! (every client clunks every fid) and the end (sessions closed, leak and final-state
//! checks). After every scheduling step the journal is drained and judged.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use co9p::fs::{Creds, MemFs, Name};
use co9p::protocol::{Tag, Tmessage};
use co9p::server::{Config, Latch, Session};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::executor::{Policy, RunEnd, SimExecutor};
use crate::faulty::{FaultConfig, FaultHook, FaultyFs};
use crate::guest::{ALL_OPS, Guest, OpKind, Uses};
use crate::journal::Journal;
use crate::link::{Link, Transport, VirtioDev};
use crate::locks::LockSwarm;
use crate::model::Model;
use crate::oracle::{Req, Show};

mod finish;
mod judge;
mod send;

type Fs = FaultyFs<MemFs>;

/// Which scheduler a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scheduler {
    Random,
    Pct,
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
    /// this found the clunk-overtakes-write bug, seed 184, fixed in the server).
    pub pipelined_clunk: bool,
    /// How clients reach the device (direct calls, virtqueues, or a per-seed mix).
    pub transport: Transport,
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
        }
    }
}

/// A failed check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub check: &'static str,
    pub detail: String,
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
    pub failure: Option<Failure>,
    /// Decoded PDUs, one per line (with `log`).
    pub pdus: Vec<String>,
    /// Every event: scheduling, PDUs, filesystem calls (with `log`).
    pub events: Vec<String>,
    /// The swarm choices of this seed.
    pub knobs: String,
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

/// The swarm choices: which operations and which faults this seed switches on.
#[derive(Debug, Clone)]
struct Knobs {
    ops: Vec<OpKind>,
    faults: FaultConfig,
    flush: f64,
    version: f64,
    reset: f64,
    depth: usize,
    locks: bool,
}

impl Knobs {
    fn draw(frng: &mut ChaCha8Rng, wrng: &mut ChaCha8Rng) -> Knobs {
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
        Knobs {
            ops,
            faults,
            flush: [0.0, 0.03, 0.1][frng.random_range(0..3)],
            version: [0.0, 0.0, 0.005][frng.random_range(0..3)],
            reset: [0.0, 0.0, 0.004][frng.random_range(0..3)],
            depth: wrng.random_range(1..=4),
            locks: frng.random_bool(0.5),
        }
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
    /// A Tversion in flight per connection: its request and the lock owners it closes.
    versions: BTreeMap<usize, (usize, Vec<u64>)>,
    model: Model,
    wrng: ChaCha8Rng,
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
    failure: Option<Failure>,
    pdus: Vec<String>,
}

/// Scheduling steps a run may take before it counts as a livelock.
const STEP_BUDGET: u64 = 2_000_000;

impl World {
    pub fn new(cfg: RunConfig) -> World {
        let mut frng = ChaCha8Rng::seed_from_u64(stream_seed(cfg.seed, FAULTS));
        let mut wrng = ChaCha8Rng::seed_from_u64(stream_seed(cfg.seed, WORKLOAD));
        let knobs = Knobs::draw(&mut frng, &mut wrng);
        let policy = match cfg.scheduler {
            Scheduler::Random => Policy::Random,
            Scheduler::Pct => Policy::Pct {
                depth: 3,
                horizon: 20_000,
            },
        };
        let ex = SimExecutor::new(stream_seed(cfg.seed, SCHED), policy);
        if cfg.log {
            ex.keep_log();
        }
        let journal = Journal::default();
        let hook = FaultHook::new(
            ex.clone(),
            knobs.faults,
            stream_seed(cfg.seed, FS),
            journal.clone(),
        );
        let faults_on = hook.switch();
        let fs = Arc::new(FaultyFs::new(MemFs::new(), hook));
        let mut lrng = ChaCha8Rng::seed_from_u64(stream_seed(cfg.seed, LINK));
        // Some seeds give sessions very few request slots, so requests are refused for
        // lack of one (and Tflush and Tversion use their slot of slack).
        let slots = [2, 3, 1024, 1024][lrng.random_range(0..4)];
        let config = Arc::new(Config {
            max_msize: [8192, 65536][wrng.random_range(0..2)],
            max_inflight: slots,
            ..Config::default()
        });
        let locks = knobs
            .locks
            .then(|| LockSwarm::spawn(&ex, stream_seed(cfg.seed, LOCKS)));
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
            versions: BTreeMap::new(),
            model: Model::new(),
            wrng,
            lrng,
            devices: Vec::new(),
            client_dev: Vec::new(),
            stalled: BTreeSet::new(),
            locks,
            sent: 0,
            answered: 0,
            actions: 0,
            failure: None,
            pdus: Vec::new(),
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
                let d = VirtioDev::new(
                    w.devices.len(),
                    w.fs.clone(),
                    w.ex.clone(),
                    &w.config,
                    w.journal.clone(),
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
            w.guests.push(g);
        }
        w
    }

    /// Runs the whole seed.
    pub fn run(cfg: RunConfig) -> Report {
        let mut w = World::new(cfg);
        w.workload();
        if w.failure.is_none() {
            w.heal();
        }
        if w.failure.is_none() {
            w.drain();
        }
        if w.failure.is_none() {
            w.end();
        }
        w.report()
    }

    fn report(self) -> Report {
        let events = self.ex.take_log();
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
            knobs: format!(
                "{:?} slots {} virtio clients {:?}",
                self.knobs,
                self.config.max_inflight,
                self.client_dev
                    .iter()
                    .enumerate()
                    .filter(|(_, d)| d.is_some())
                    .map(|(c, _)| c)
                    .collect::<Vec<_>>()
            ),
        }
    }

    fn fail(&mut self, check: &'static str, detail: String) {
        if self.failure.is_none() {
            self.ex.record_line(b'!', check.as_bytes(), || {
                format!("FAILED {check}: {detail}")
            });
            self.failure = Some(Failure { check, detail });
        }
    }

    /// `/shared` and one private directory per client, made before the run.
    fn setup_tree(&mut self) {
        let mem = &self.fs.inner;
        let (root, _) = co9p::co::block_on(co9p::fs::Filesystem::root(mem)).expect("root");
        let mut names = vec!["shared".to_string()];
        names.extend((0..self.cfg.clients).map(|i| format!("c{i}")));
        for n in names {
            let name = Name::new(n.as_bytes()).expect("valid name");
            let qid = co9p::co::block_on(co9p::fs::Filesystem::mkdir(
                mem,
                &root,
                &name,
                0o755,
                Creds::default(),
            ))
            .expect("mkdir");
            let id = self
                .model
                .mkdir(crate::model::ROOT, n.as_bytes(), 0o755)
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
            if self.wrng.random_bool(0.45) {
                let g = self.wrng.random_range(0..self.guests.len());
                self.act(g);
            } else {
                let n = self.wrng.random_range(1..=8);
                if self.steps(n) == RunEnd::Idle {
                    self.on_idle(false);
                }
            }
        }
    }

    /// One move of guest `g`: maybe a flush, a Tversion, a reset, or its next request.
    fn act(&mut self, g: usize) {
        if self.guests[g].versioning {
            // A client may flush its Tversion too: Rversion must still come first.
            if self.wrng.random_bool(self.knobs.flush) {
                self.flush(g, Some(Tag::NOTAG.0));
            }
            return;
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
            self.flush(g, oldtag);
            return;
        }
        let r = r - self.knobs.flush;
        if r < self.knobs.version && self.guests[g].msize != 0 {
            self.version(g);
            return;
        }
        let r = r - self.knobs.version;
        if r < self.knobs.reset {
            self.reset(g);
            return;
        }
        let guest = &self.guests[g];
        if guest.inflight >= guest.depth {
            return;
        }
        if let Some((msg, uses)) = guest.setup() {
            if guest.inflight == 0 {
                self.send(g, msg, uses);
            }
            return;
        }
        let ops = self.knobs.ops.clone();
        let Some((msg, uses)) = self.guests[g].next_op(&mut self.wrng, &ops, &self.model) else {
            return;
        };
        if self.guests[g].can_use(&uses) {
            self.sent += 1;
            self.send(g, msg, uses);
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
