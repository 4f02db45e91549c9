//! `FaultyFs<F>`: any filesystem behind a hook that adds virtual latency, stalls and
//! faults, each drawn from the run's filesystem RNG stream.
//!
//! Faults before the effect (the operation never happens) and after it (it happened, but
//! the caller is told EIO) are recorded separately, with the coroutine that was running, so
//! the checks can tell "no effect" from "effect and an error" when judging a reply.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use co9p::co::Executor;
use co9p::fs::FsResult;
use co9p::fs::hooked::{Hook, HookedFs, OpKind};
use co9p::protocol::Errno;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::executor::SimExecutor;
use crate::journal::{Event, Journal};
pub use crate::journal::{FsEvent, Outcome};

/// Which faults a run switches on (swarm testing: each seed picks a subset).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct FaultConfig {
    /// Heavy-tailed virtual latency before operations.
    pub latency: bool,
    /// EIO/ENOSPC/EINTR before the effect.
    pub errors_before: bool,
    /// EIO after the effect of a mutating operation.
    pub errors_after: bool,
    /// Reads and writes move fewer bytes than asked.
    pub short_io: bool,
    /// Some operations wait until their request is flushed.
    pub stall: bool,
    /// Probability of each fault where it applies.
    pub rate: f64,
}

impl FaultConfig {
    pub fn none() -> Self {
        FaultConfig::default()
    }

    /// A random subset of faults, from the faults stream.
    pub fn swarm(rng: &mut ChaCha8Rng) -> Self {
        FaultConfig {
            latency: rng.random_bool(0.6),
            errors_before: rng.random_bool(0.4),
            errors_after: rng.random_bool(0.3),
            short_io: rng.random_bool(0.3),
            stall: rng.random_bool(0.3),
            rate: [0.01, 0.05, 0.15][rng.random_range(0..3)],
        }
    }
}

/// `3`, or `-` for no coroutine.
fn task_id(t: Option<u64>) -> String {
    t.map_or("-".into(), |t| t.to_string())
}

/// `ok`, `err` (the backend refused), `fault-before EIO` (never happened), `fault-after
/// EIO` (happened, then reported as failed).
pub fn outcome_text(o: Outcome) -> String {
    match o {
        Outcome::Done { ok: true } => "ok".into(),
        Outcome::Done { ok: false } => "err".into(),
        Outcome::FaultBefore(e) => format!("fault-before {}", errno_name(e)),
        Outcome::FaultAfter(e) => format!("fault-after {}", errno_name(e)),
    }
}

fn errno_name(e: Errno) -> String {
    e.name().map_or_else(|| e.0.to_string(), str::to_string)
}

/// The hook itself.
pub struct FaultHook {
    ex: SimExecutor,
    cfg: FaultConfig,
    /// While false, no fault is injected (the heal phase).
    enabled: Arc<std::sync::atomic::AtomicBool>,
    rng: Mutex<ChaCha8Rng>,
    journal: Journal,
    /// The length `io_len` let through, per coroutine, until its call is logged.
    io: Mutex<std::collections::BTreeMap<Option<u64>, usize>>,
}

pub type FaultyFs<F> = HookedFs<F, FaultHook>;

impl FaultHook {
    pub fn new(ex: SimExecutor, cfg: FaultConfig, seed: u64, journal: Journal) -> Self {
        FaultHook {
            ex,
            cfg,
            enabled: Arc::new(std::sync::atomic::AtomicBool::new(true)),
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
            journal,
            io: Mutex::default(),
        }
    }

    pub fn config(&self) -> FaultConfig {
        self.cfg
    }

    /// A handle that switches faults off (heal phase) and back on.
    pub fn switch(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.enabled.clone()
    }

    fn on(&self) -> bool {
        self.enabled.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn chance(&self, p: f64) -> bool {
        self.on() && self.rng.lock().unwrap().random_bool(p.clamp(0.0, 1.0))
    }

    fn push(&self, op: OpKind, outcome: Outcome) {
        let task = self.ex.current();
        let code = match outcome {
            Outcome::FaultBefore(e) => e.0 as u8,
            Outcome::Done { ok } => 200 + ok as u8,
            Outcome::FaultAfter(e) => 100 + e.0 as u8,
        };
        self.ex.timeline(|| crate::timeline::Kind::Fs {
            op: format!("{op:?}"),
            outcome: outcome_text(outcome),
            fault: match outcome {
                Outcome::FaultBefore(_) => Some(true),
                Outcome::FaultAfter(_) => Some(false),
                Outcome::Done { .. } => None,
            },
            ok: matches!(outcome, Outcome::Done { ok: true }),
        });
        self.ex.record_line(b'F', &[op as u8, code], || {
            format!("fs task={} {op:?} {}", task_id(task), outcome_text(outcome))
        });
        let len = self.io.lock().unwrap().remove(&task);
        self.journal.push(Event::Fs(FsEvent {
            task,
            op,
            outcome,
            len,
        }));
    }

    /// Pareto-like latency: mostly tens of microseconds, now and then tens of milliseconds.
    fn latency(&self) -> Duration {
        let u: f64 = self.rng.lock().unwrap().random_range(0.001..1.0);
        let micros = (20.0 * u.powf(-1.2)).min(50_000.0);
        Duration::from_micros(micros as u64)
    }
}

impl Hook for FaultHook {
    async fn before(&self, op: OpKind) -> FsResult<()> {
        if self.cfg.latency && self.chance(0.5) {
            let d = self.latency();
            self.ex.timeline(|| crate::timeline::Kind::Latency { d });
            self.ex.sleep(d).await;
        }
        if self.cfg.stall
            && matches!(op, OpKind::Read | OpKind::Write | OpKind::Readdir)
            && self.chance(self.cfg.rate / 2.0)
        {
            // (The task is read before the executor's lock is taken for the line.)
            let task = task_id(self.ex.current());
            self.ex.record_line(b'W', &[op as u8], || {
                format!("fs task={task} {op:?} stall (until flushed)")
            });
            self.ex.timeline(|| crate::timeline::Kind::Stall {
                op: format!("{op:?}"),
            });
            self.journal.push(Event::Stall(self.ex.current()));
            // Only a flush (dropping this request) ends it.
            std::future::pending::<()>().await;
        }
        if self.cfg.errors_before && self.chance(self.cfg.rate) {
            let choices: &[Errno] = if op.is_mutating() {
                &[Errno::EIO, Errno::ENOSPC, Errno::EINTR]
            } else {
                &[Errno::EIO, Errno::EINTR]
            };
            let e = choices[self.rng.lock().unwrap().random_range(0..choices.len())];
            self.push(op, Outcome::FaultBefore(e));
            return Err(e);
        }
        Ok(())
    }

    fn after(&self, op: OpKind, succeeded: bool) -> Option<Errno> {
        if succeeded && op.is_mutating() && self.cfg.errors_after && self.chance(self.cfg.rate) {
            self.push(op, Outcome::FaultAfter(Errno::EIO));
            return Some(Errno::EIO);
        }
        self.push(op, Outcome::Done { ok: succeeded });
        None
    }

    fn io_len(&self, op: OpKind, len: usize) -> usize {
        let n = if self.cfg.short_io && len > 1 && self.chance(self.cfg.rate) {
            let n = self.rng.lock().unwrap().random_range(1..len);
            // (The task is read before the executor's lock is taken for the line.)
            let task = task_id(self.ex.current());
            self.ex.record_line(b'I', &[op as u8], || {
                format!("fs task={task} {op:?} short-io {n} of {len}")
            });
            self.ex.timeline(|| crate::timeline::Kind::ShortIo {
                op: format!("{op:?}"),
            });
            n
        } else {
            len
        };
        self.io.lock().unwrap().insert(self.ex.current(), n);
        n
    }
}
