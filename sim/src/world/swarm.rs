//! What a seed draws before anything runs: the independent random streams of a run, and
//! the swarm choices ([`Knobs`]: which operations, faults and features this seed switches
//! on), which shrinking switches off one by one.

use co9p::fs::host::SecurityModel;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{FsChoice, RunConfig};
use crate::backend::host_support;
use crate::faulty::FaultConfig;
use crate::guest::{ALL_OPS, OpKind};
use crate::knobs::{Feature, Off};
use crate::model::Backend;

/// The independent random streams of a run, each seeded from the run seed.
pub fn stream_seed(seed: u64, stream: u64) -> u64 {
    // SplitMix64 of (seed, stream): a fixed, well-mixed function.
    let mut z = seed ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

pub(super) const SCHED: u64 = 1;
pub(super) const FS: u64 = 2;
pub(super) const WORKLOAD: u64 = 3;
pub(super) const FAULTS: u64 = 4;
pub(super) const LOCKS: u64 = 5;
pub(super) const LINK: u64 = 6;
/// The knobs added with the hostile clients, HostFs and the rest (their own stream, so
/// drawing them shifts nothing else).
const KNOBS_STREAM: u64 = 7;
/// Hostile requests (their own stream: switching them on leaves the polite workload's
/// draws where they were).
pub(super) const HOSTILE: u64 = 8;

/// The swarm choices: which operations and which faults this seed switches on.
#[derive(Debug, Clone)]
pub(crate) struct Knobs {
    pub(super) ops: Vec<OpKind>,
    pub(super) faults: FaultConfig,
    pub(super) flush: f64,
    pub(super) version: f64,
    pub(super) reset: f64,
    pub(super) depth: usize,
    pub(super) locks: bool,
    pub(super) backend: Backend,
    /// Requests a client sends that a polite client would not (per move).
    pub(super) hostile: f64,
    /// Most requests on few fids and few names.
    pub(super) contention: bool,
    /// Shrink a file, grow it past the old end, read the gap back.
    pub(super) gaps: bool,
    /// Directories made, walked into, renamed across directories, then `..` walked and
    /// listed from inside.
    pub(super) dirs: bool,
    /// The uid and gid each client attaches as.
    pub(super) uids: Vec<(u32, u32)>,
    /// Chance that delivering a reply is a scheduling point.
    pub(super) reply_yield: f64,
    /// HostFs: chance per move that every idle descriptor is closed (reopened by name).
    pub(super) reclaim: f64,
    /// MemFs with limits the workload reaches (`None`: the defaults).
    pub(super) limits: Option<SmallLimits>,
}

/// MemFs limits small enough that writes, links, mkdirs and renames meet them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SmallLimits {
    pub max_file_size: u64,
    pub max_links: u64,
}

impl Knobs {
    pub(super) fn draw(cfg: &RunConfig, frng: &mut ChaCha8Rng, wrng: &mut ChaCha8Rng) -> Knobs {
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
        // The root holds `shared` and a directory per client: its link count starts at
        // 3 + clients, so a link limit there (or one above) leaves the root full, and
        // directory moves into it refused, while clients work in their directories.
        let limits = if !on_host && forced("limits", k.random_bool(0.25)) {
            Some(SmallLimits {
                max_file_size: [60, 4100, 8192][k.random_range(0..3)],
                max_links: 3 + cfg.clients as u64 + [0, 0, 0, 1][k.random_range(0..4)],
            })
        } else {
            None
        };
        // Directories moved across directories are what meet a full one.
        let dirs = dirs || limits.is_some();
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
        if limits.is_some() {
            need.extend([
                OpKind::Write,
                OpKind::Setattr,
                OpKind::Mkdir,
                OpKind::Rename,
                OpKind::Link,
            ]);
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
            limits,
        }
    }
}

impl Knobs {
    /// Switches `off` off.
    pub(super) fn apply(&mut self, off: &Off) {
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
                Feature::Limits => self.limits = None,
                Feature::Op(k) => self.ops.retain(|o| *o != k),
            }
        }
    }

    /// Whether switching `f` off would change this seed's run at all.
    pub(super) fn uses(&self, f: Feature, slots: usize) -> bool {
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
            Feature::Limits => self.limits.is_some(),
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
             reclaim={} limits={}",
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
            self.limits.map_or("off".to_string(), |l| format!(
                "size<={},links<={}",
                l.max_file_size, l.max_links
            )),
        )
    }
}
