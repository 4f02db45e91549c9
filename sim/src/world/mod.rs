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

use co9p::fs::{Creds, Name};
use co9p::protocol::Tag;
use co9p::server::{Config, Latch, Session};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::backend::SimFs;
use crate::executor::{Policy, RunEnd, SimExecutor};
use crate::faulty::{FaultHook, FaultyFs};
use crate::guest::Guest;
use crate::journal::Journal;
use crate::knobs::Feature;
use crate::link::{Link, Transport, VirtioDev};
use crate::locks::LockSwarm;
use crate::model::{Backend, Model};
use crate::oracle::Req;
pub use crate::oracle::Violation;
use crate::script::Move;
use crate::timeline::Kind as TlKind;

mod config;
mod finish;
mod hostile;
mod judge;
mod reply;
mod send;
mod swarm;
mod workload;
use config::Planted;
pub use config::{FsChoice, KNOBS, Plant, Report, RunConfig, Scheduler};
pub use swarm::stream_seed;
use swarm::{FAULTS, FS, HOSTILE, Knobs, LINK, LOCKS, SCHED, WORKLOAD};

pub type Fs = FaultyFs<SimFs>;

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
    /// Lock owners of files whose fid a tombstoned Tclunk/Tremove took: zombies until the
    /// requests behind it are judged.
    lingering: BTreeMap<usize, u64>,
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
            Backend::Mem => match knobs.limits {
                Some(l) => SimFs::mem_with(co9p::fs::mem::Limits {
                    max_file_size: l.max_file_size,
                    max_links: l.max_links,
                    ..Default::default()
                }),
                None => SimFs::mem(),
            },
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
        let mut model = Model::new(backend.backend());
        if let Some(l) = knobs.limits {
            model.max_file_size = l.max_file_size;
            model.max_links = l.max_links;
        }
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
            export_name: crate::oracle::EXPORT_NAME.to_vec(),
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
            lingering: BTreeMap::new(),
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
                let seed = w.lrng.random::<u64>();
                let d = VirtioDev::new(
                    w.devices.len(),
                    w.fs.clone(),
                    w.ex.clone(),
                    &w.config,
                    w.journal.clone(),
                    batch,
                    event_idx,
                    seed,
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
}
