//! `SimExecutor`: a single-threaded, seeded scheduler with virtual time.
//!
//! Every `.await` that returns `Pending` is a scheduling point: when several coroutines are
//! runnable, the scheduler picks the next one with its own seeded RNG, either uniformly
//! (`random`) or by PCT (randomized priorities with a few priority-change points, which
//! finds bugs of small depth with a known probability). Time is virtual: `sleep` registers
//! a timer, and when nothing is runnable the clock jumps to the next timer. No OS threads,
//! no wall clock, no hash-map order: the same seed gives the same run.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use co9p::co::Executor;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::timeline::{By, Ev, Kind, Pend};
use crate::trace::Trace;

/// One line of the decoded event log: when it happened (scheduling step, virtual time),
/// what kind of event it is (the kind byte the hash folds in) and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub step: u64,
    pub at: Duration,
    pub kind: u8,
    pub text: String,
}

/// How the next runnable coroutine is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Uniformly at random among the runnable ones.
    Random,
    /// PCT with the given depth (1..=3): priorities, and `depth - 1` change points spread
    /// over `horizon` steps.
    Pct { depth: u32, horizon: u64 },
}

type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

struct Task {
    fut: Option<BoxFuture>,
    queued: bool,
    priority: u64,
}

struct Sched {
    tasks: BTreeMap<u64, Task>,
    runnable: Vec<u64>,
    timers: BTreeMap<(Duration, u64), Waker>,
    timer_seq: u64,
    now: Duration,
    next_id: u64,
    rng: ChaCha8Rng,
    policy: Policy,
    change_points: Vec<u64>,
    low_priority: u64,
    steps: u64,
    trace: Trace,
    current: Option<u64>,
    last_spawned: Option<u64>,
    /// Decoded events, when asked for (trace files, determinism diffs).
    log: Option<Vec<LogLine>>,
    /// Chance that a reply's delivery is a scheduling point ([`Executor::before_reply`]).
    reply_yield: f64,
    /// Coroutines that reached the reply point: their handler finished.
    handled: std::collections::BTreeSet<u64>,
    /// The same, in the order they got there, until the world takes them.
    handled_log: Vec<u64>,
    /// Timeline events, when asked for (never hashed: they only watch).
    tl: Option<Vec<Ev>>,
    /// The timer the task being polled set, if any (for the timeline).
    slept: Option<Duration>,
}

impl Sched {
    fn note(&mut self, kind: u8, payload: &[u8], line: impl FnOnce() -> String) {
        self.trace.record(kind, payload);
        if let Some(log) = &mut self.log {
            log.push(LogLine {
                step: self.steps,
                at: self.now,
                kind,
                text: line(),
            });
        }
    }

    fn tl(&mut self, kind: impl FnOnce() -> Kind) {
        if let Some(tl) = &mut self.tl {
            tl.push(Ev {
                step: self.steps,
                at: self.now,
                task: self.current,
                kind: kind(),
            });
        }
    }
}

/// No task is being polled (the world runs).
const NOBODY: u64 = u64::MAX;
/// Timers are firing.
const TIMER: u64 = u64::MAX - 1;

/// Task ids woken since the scheduler last looked, in wake order, each with whoever woke
/// it (the task being polled then, a timer, or the world).
struct Woken {
    list: Mutex<Vec<(u64, u64)>>,
    by: AtomicU64,
}

impl Default for Woken {
    fn default() -> Self {
        Woken {
            list: Mutex::default(),
            by: AtomicU64::new(NOBODY),
        }
    }
}

struct TaskWaker {
    id: u64,
    woken: Arc<Woken>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        let by = self.woken.by.load(Ordering::Relaxed);
        lock(&self.woken.list).push((self.id, by));
    }
}

/// The simulator's executor (a cheap, cloneable handle).
#[derive(Clone)]
pub struct SimExecutor {
    sched: Arc<Mutex<Sched>>,
    woken: Arc<Woken>,
}

/// Why [`SimExecutor::run`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    /// Nothing runnable and no timer: every coroutine is finished or blocked for good.
    Idle,
    /// The step budget ran out.
    Budget,
    /// The stop condition became true.
    Stopped,
}

impl SimExecutor {
    pub fn new(seed: u64, policy: Policy) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let change_points = match policy {
            Policy::Random => Vec::new(),
            Policy::Pct { depth, horizon } => {
                let mut v: Vec<u64> = (1..depth.max(1))
                    .map(|_| rng.random_range(0..horizon.max(1)))
                    .collect();
                v.sort_unstable();
                v
            }
        };
        let sched = Sched {
            tasks: BTreeMap::new(),
            runnable: Vec::new(),
            timers: BTreeMap::new(),
            timer_seq: 0,
            now: Duration::ZERO,
            next_id: 0,
            rng,
            policy,
            change_points,
            low_priority: 1000,
            steps: 0,
            trace: Trace::default(),
            current: None,
            last_spawned: None,
            log: None,
            reply_yield: 0.0,
            handled: Default::default(),
            handled_log: Vec::new(),
            tl: None,
            slept: None,
        };
        SimExecutor {
            sched: Arc::new(Mutex::new(sched)),
            woken: Arc::default(),
        }
    }

    /// Polls coroutines until `stop` says so, nothing can run, or `max_steps` polls.
    pub fn run(&self, max_steps: u64, mut stop: impl FnMut() -> bool) -> RunEnd {
        let mut budget = max_steps;
        loop {
            if stop() {
                return RunEnd::Stopped;
            }
            if budget == 0 {
                return RunEnd::Budget;
            }
            let Some((id, mut fut)) = self.pick() else {
                if self.fire_next_timer() {
                    continue;
                }
                return RunEnd::Idle;
            };
            budget -= 1;
            let waker = Waker::from(Arc::new(TaskWaker {
                id,
                woken: self.woken.clone(),
            }));
            let mut cx = Context::from_waker(&waker);
            self.woken.by.store(id, Ordering::Relaxed);
            let done = fut.as_mut().poll(&mut cx).is_ready();
            self.woken.by.store(NOBODY, Ordering::Relaxed);
            let mut s = lock(&self.sched);
            if s.tl.is_some() && !done {
                let slept = s.slept.take();
                let yielded = lock(&self.woken.list).contains(&(id, id));
                s.tl(|| Kind::Pending {
                    task: id,
                    how: match (yielded, slept) {
                        (true, _) => Pend::Yield,
                        (false, Some(until)) => Pend::Sleep(until),
                        (false, None) => Pend::Wait,
                    },
                });
            }
            s.slept = None;
            if done {
                s.tl(|| Kind::Done { task: id });
            }
            s.current = None;
            if done {
                s.tasks.remove(&id);
                s.note(b'D', &id.to_le_bytes(), || format!("done task={id}"));
            } else if let Some(t) = s.tasks.get_mut(&id) {
                t.fut = Some(fut);
            }
        }
    }

    /// Chooses the next coroutine and takes its future out to poll it unlocked.
    fn pick(&self) -> Option<(u64, BoxFuture)> {
        let woken = std::mem::take(&mut *lock(&self.woken.list));
        let mut s = lock(&self.sched);
        for (id, by) in woken {
            if by != id {
                s.tl(|| Kind::Wake {
                    task: id,
                    by: match by {
                        NOBODY => By::World,
                        TIMER => By::Timer,
                        t => By::Task(t),
                    },
                });
            }
            if let Some(t) = s.tasks.get_mut(&id)
                && !t.queued
            {
                t.queued = true;
                s.runnable.push(id);
            }
        }
        if s.runnable.is_empty() {
            return None;
        }
        let idx = match s.policy {
            Policy::Random => {
                let n = s.runnable.len();
                s.rng.random_range(0..n)
            }
            Policy::Pct { .. } => {
                let s = &*s;
                (0..s.runnable.len())
                    .max_by_key(|&i| s.tasks[&s.runnable[i]].priority)
                    .expect("non-empty")
            }
        };
        let id = s.runnable.swap_remove(idx);
        s.steps += 1;
        let step = s.steps;
        if s.change_points.first() == Some(&step) {
            // PCT: the running task drops below every other one.
            s.change_points.remove(0);
            s.low_priority = s.low_priority.saturating_sub(1);
            let low = s.low_priority;
            if let Some(t) = s.tasks.get_mut(&id) {
                t.priority = low;
            }
        }
        let n = s.runnable.len() + 1;
        s.note(b'S', &id.to_le_bytes(), || {
            format!("sched task={id} of={n}")
        });
        s.current = Some(id);
        s.tl(|| Kind::Poll { task: id, of: n });
        let t = s.tasks.get_mut(&id).expect("runnable tasks exist");
        t.queued = false;
        let fut = t.fut.take().expect("a task is not polled re-entrantly");
        Some((id, fut))
    }

    /// Advances virtual time to the earliest timer and wakes everything due then.
    fn fire_next_timer(&self) -> bool {
        let due: Vec<Waker> = {
            let mut s = lock(&self.sched);
            let Some((&(at, _), _)) = s.timers.first_key_value() else {
                return false;
            };
            s.now = s.now.max(at);
            let now = s.now;
            s.note(b'T', &(now.as_nanos() as u64).to_le_bytes(), || {
                format!("time {now:?}")
            });
            s.tl(|| Kind::Time);
            let later = s.timers.split_off(&(now, u64::MAX));
            std::mem::replace(&mut s.timers, later)
                .into_values()
                .collect()
        };
        self.woken.by.store(TIMER, Ordering::Relaxed);
        due.into_iter().for_each(Waker::wake);
        self.woken.by.store(NOBODY, Ordering::Relaxed);
        true
    }

    /// Folds an event of the caller's (a PDU, a filesystem call) into the trace.
    pub fn record(&self, kind: u8, payload: &[u8]) {
        let mut s = lock(&self.sched);
        s.note(kind, payload, || {
            format!("event {} {:02x?}", kind as char, payload)
        });
    }

    /// Like [`record`](Self::record), with a readable line for the event log.
    pub fn record_line(&self, kind: u8, payload: &[u8], line: impl FnOnce() -> String) {
        lock(&self.sched).note(kind, payload, line);
    }

    /// Makes a reply's delivery a scheduling point with chance `p` (drawn from the
    /// scheduler's stream): a flush may then take the session's registry between a
    /// request's effect and its reply, as another thread may in production.
    pub fn set_reply_yield(&self, p: f64) {
        lock(&self.sched).reply_yield = p;
    }

    /// Whether coroutine `id` reached the reply point (its handler finished and has a
    /// reply to send).
    pub fn handler_done(&self, id: u64) -> bool {
        lock(&self.sched).handled.contains(&id)
    }

    /// The coroutines that reached the reply point since the last call, in order.
    pub fn take_handled(&self) -> Vec<u64> {
        std::mem::take(&mut lock(&self.sched).handled_log)
    }

    /// Starts keeping the decoded event log.
    pub fn keep_log(&self) {
        lock(&self.sched).log = Some(Vec::new());
    }

    /// The decoded event log so far (empty unless [`keep_log`](Self::keep_log)).
    pub fn take_log(&self) -> Vec<LogLine> {
        lock(&self.sched).log.take().unwrap_or_default()
    }

    /// Starts keeping the timeline's events.
    pub fn keep_timeline(&self) {
        lock(&self.sched).tl = Some(Vec::new());
    }

    /// Whether the timeline's events are kept.
    pub fn timeline_on(&self) -> bool {
        lock(&self.sched).tl.is_some()
    }

    /// Adds an event of the caller's to the timeline (if kept), stamped with the step,
    /// the virtual time and the coroutine being polled.
    pub fn timeline(&self, kind: impl FnOnce() -> Kind) {
        lock(&self.sched).tl(kind);
    }

    /// The timeline's events so far.
    pub fn take_timeline(&self) -> Vec<Ev> {
        lock(&self.sched).tl.take().unwrap_or_default()
    }

    /// Virtual time now.
    pub fn vtime(&self) -> Duration {
        lock(&self.sched).now
    }

    pub fn trace(&self) -> Trace {
        lock(&self.sched).trace
    }

    pub fn steps(&self) -> u64 {
        lock(&self.sched).steps
    }

    /// The coroutine being polled now, if any.
    pub fn current(&self) -> Option<u64> {
        lock(&self.sched).current
    }

    /// The id the next coroutine spawned will get (ids are consecutive).
    pub fn next_task(&self) -> u64 {
        lock(&self.sched).next_id
    }

    /// The coroutine spawned most recently.
    pub fn last_spawned(&self) -> Option<u64> {
        lock(&self.sched).last_spawned
    }

    /// Coroutines not finished (running, runnable or blocked).
    pub fn live_tasks(&self) -> usize {
        lock(&self.sched).tasks.len()
    }

    /// Whether coroutine `id` is woken and waiting for its turn (or being polled).
    pub fn is_runnable(&self, id: u64) -> bool {
        let s = lock(&self.sched);
        s.current == Some(id)
            || s.tasks.get(&id).is_some_and(|t| t.queued)
            || lock(&self.woken.list).iter().any(|(t, _)| *t == id)
    }

    /// Whether coroutine `id` is still alive.
    pub fn has_task(&self, id: u64) -> bool {
        lock(&self.sched).tasks.contains_key(&id)
    }

    pub fn pending_timers(&self) -> usize {
        lock(&self.sched).timers.len()
    }

    /// Drops every coroutine (end of a run): their destructors run here, deterministically.
    pub fn clear(&self) {
        let tasks = std::mem::take(&mut lock(&self.sched).tasks);
        drop(tasks);
    }
}

impl Executor for SimExecutor {
    fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let mut s = lock(&self.sched);
        let id = s.next_id;
        s.next_id += 1;
        let priority = match s.policy {
            Policy::Random => 0,
            // Fresh tasks get random priorities above every lowered one.
            Policy::Pct { .. } => 1_000_000 + s.rng.random_range(0..1_000_000u64),
        };
        s.tasks.insert(
            id,
            Task {
                fut: Some(Box::pin(fut)),
                queued: true,
                priority,
            },
        );
        s.runnable.push(id);
        s.last_spawned = Some(id);
        s.tl(|| Kind::Spawn { task: id });
        s.note(b'N', &id.to_le_bytes(), || format!("spawn task={id}"));
    }

    fn yield_now(&self) -> impl Future<Output = ()> + Send + 'static {
        co9p::co::yield_now()
    }

    fn sleep(&self, d: Duration) -> impl Future<Output = ()> + Send + 'static {
        let deadline = self.now() + d;
        SimSleep {
            exec: self.clone(),
            deadline,
            registered: false,
        }
    }

    fn now(&self) -> Duration {
        lock(&self.sched).now
    }

    fn before_reply(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut s = lock(&self.sched);
        if let Some(t) = s.current {
            s.handled.insert(t);
            s.handled_log.push(t);
        }
        let p = s.reply_yield;
        let y = p >= 1.0 || (p > 0.0 && s.rng.random_bool(p));
        if y {
            s.note(b'Y', &[], || "reply point".into());
        }
        MaybeYield(y.then(co9p::co::yield_now))
    }
}

/// A yield, or nothing.
struct MaybeYield(Option<co9p::co::YieldNow>);

impl Future for MaybeYield {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match &mut self.0 {
            Some(y) => Pin::new(y).poll(cx),
            None => Poll::Ready(()),
        }
    }
}

/// A virtual-time timer.
struct SimSleep {
    exec: SimExecutor,
    deadline: Duration,
    registered: bool,
}

impl Future for SimSleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut s = lock(&self.exec.sched);
        if s.now >= self.deadline {
            return Poll::Ready(());
        }
        if !self.registered {
            let seq = s.timer_seq;
            s.timer_seq += 1;
            s.timers.insert((self.deadline, seq), cx.waker().clone());
            s.slept = Some(self.deadline);
            drop(s);
            self.registered = true;
        }
        Poll::Pending
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn run_schedule(seed: u64, policy: Policy) -> (Vec<u64>, u64) {
        let ex = SimExecutor::new(seed, policy);
        let log = Arc::new(Mutex::new(Vec::new()));
        for i in 0..4u64 {
            let (ex2, log) = (ex.clone(), log.clone());
            ex.spawn(async move {
                for _ in 0..3 {
                    log.lock().unwrap().push(i);
                    ex2.yield_now().await;
                }
            });
        }
        assert_eq!(ex.run(10_000, || false), RunEnd::Idle);
        let v = log.lock().unwrap().clone();
        (v, ex.trace().hash())
    }

    #[test]
    fn same_seed_same_schedule_other_seed_other_schedule() {
        for policy in [
            Policy::Random,
            Policy::Pct {
                depth: 2,
                horizon: 20,
            },
        ] {
            let a = run_schedule(1, policy);
            assert_eq!(a, run_schedule(1, policy));
            assert_eq!(a.0.len(), 12);
            let differs = (2..20).any(|s| run_schedule(s, policy).0 != a.0);
            assert!(differs, "{policy:?}: seeds should change the interleaving");
        }
    }

    #[test]
    fn virtual_time_jumps_to_timers() {
        let ex = SimExecutor::new(0, Policy::Random);
        let hit = Arc::new(AtomicU64::new(0));
        let (ex2, hit2) = (ex.clone(), hit.clone());
        ex.spawn(async move {
            ex2.sleep(Duration::from_secs(3600)).await;
            hit2.store(ex2.now().as_secs(), Ordering::SeqCst);
        });
        assert_eq!(ex.run(100, || false), RunEnd::Idle);
        assert_eq!(hit.load(Ordering::SeqCst), 3600);
        assert_eq!(ex.now(), Duration::from_secs(3600));
    }

    #[test]
    fn blocked_forever_is_idle_not_a_hang() {
        let ex = SimExecutor::new(0, Policy::Random);
        ex.spawn(std::future::pending());
        assert_eq!(ex.run(100, || false), RunEnd::Idle);
        assert_eq!(ex.live_tasks(), 1);
    }
}
