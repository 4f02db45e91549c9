//! What one run is ([`RunConfig`]: its seed, its size and what it forces, the scheduler,
//! the transport and the backend it asks for, a bug planted in the device) and what it
//! reports ([`Report`]).

use std::sync::Arc;

use super::Violation;
use crate::knobs::{Feature, Off};
use crate::link::Transport;
use crate::script::Move;

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
pub const KNOBS: [&str; 8] = [
    "hostile",
    "contention",
    "gaps",
    "dirs",
    "nonroot",
    "reply-yield",
    "reclaim",
    "limits",
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
pub(super) struct Planted;

impl Planted {
    pub(super) fn arm(plant: Option<Plant>) -> Planted {
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

    pub(super) fn forced(&self, knob: &str) -> bool {
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
