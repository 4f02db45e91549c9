//! A swarm of coroutines hammering the device's own coroutine locks on the simulator's
//! scheduler, next to the 9P clients: workers take a [`CoMutex`] (mutual exclusion, FIFO
//! hand-off: nobody may barge past a queued waiter), consumers wait on a [`CoQueue`] for
//! items producers add (no lost wake-up), and a canceller drops lock and wait futures at
//! random moments — queued, or just handed the lock — as a flushed request would.
//!
//! Violations are recorded as they happen; a worker still blocked when nothing can run
//! (no task, no timer) is a lost wake-up or a lock never passed on.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use co9p::co::{CoMutex, CoQueue, CoRwLock, Executor};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::executor::SimExecutor;

const NOBODY: usize = usize::MAX;

#[derive(Default)]
struct Shared {
    mutex: CoMutex<u64>,
    holder: AtomicUsize,
    /// Workers queued on the mutex (their lock future returned Pending), in order.
    queued: Mutex<Vec<usize>>,
    items: CoMutex<(usize, usize)>,
    /// The fid barrier's lock: readers share, a writer is alone.
    rw: CoRwLock<()>,
    readers: AtomicUsize,
    writer: AtomicBool,
    nonempty: CoQueue,
    /// Consumers inside `nonempty.wait` (queued, or woken and re-taking the mutex).
    waiting: AtomicUsize,
    violation: Mutex<Option<String>>,
    /// Workers not finished: id -> what it is doing.
    running: Mutex<BTreeMap<usize, &'static str>>,
    /// Cancel handles of attempts in progress.
    attempts: Mutex<BTreeMap<usize, Arc<CancelCtl>>>,
}

impl Shared {
    fn violate(&self, what: String) {
        let mut v = self.violation.lock().unwrap();
        if v.is_none() {
            *v = Some(what);
        }
    }
}

pub struct LockSwarm {
    shared: Arc<Shared>,
    ex: SimExecutor,
    /// Consumer coroutines (a producer never holds a wake-up between its steps: it adds
    /// an item and calls `next` in one poll).
    tasks: Vec<u64>,
    /// What each of its coroutines is (for the timeline).
    names: BTreeMap<u64, String>,
}

#[derive(Default)]
struct CancelCtl {
    cancelled: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl CancelCtl {
    fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
        if let Some(w) = self.waker.lock().unwrap().take() {
            w.wake();
        }
    }
}

/// Runs `fut` unless cancelled first (then it is dropped where it stands): `None`.
struct Cancellable<F> {
    ctl: Arc<CancelCtl>,
    fut: Option<Pin<Box<F>>>,
}

impl<F: Future> Future for Cancellable<F> {
    type Output = Option<F::Output>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.ctl.cancelled.load(Ordering::Acquire) {
            self.fut = None;
            return Poll::Ready(None);
        }
        *self.ctl.waker.lock().unwrap() = Some(cx.waker().clone());
        match self
            .fut
            .as_mut()
            .expect("polled after completion")
            .as_mut()
            .poll(cx)
        {
            Poll::Ready(v) => {
                self.fut = None;
                Poll::Ready(Some(v))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Watches one worker's lock future: records when it queues and checks FIFO when it
/// gets the lock.
struct Tracked<'a, F> {
    shared: &'a Shared,
    id: usize,
    fut: Pin<Box<F>>,
    queued: bool,
}

impl<F: Future> Future for Tracked<'_, F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let r = self.fut.as_mut().poll(cx);
        let (id, was_queued) = (self.id, self.queued);
        let sh = self.shared;
        match &r {
            Poll::Pending if !was_queued => {
                sh.queued.lock().unwrap().push(id);
                self.queued = true;
            }
            Poll::Pending => {}
            Poll::Ready(_) => {
                let mut q = sh.queued.lock().unwrap();
                if was_queued {
                    if q.first() != Some(&id) {
                        sh.violate(format!(
                            "CoMutex hand-off not FIFO: worker {id} got the lock, queue was {q:?}"
                        ));
                    }
                    q.retain(|&w| w != id);
                } else if !q.is_empty() {
                    sh.violate(format!(
                        "CoMutex barging: worker {id} took the lock while {q:?} were queued"
                    ));
                }
                drop(q);
                self.queued = false;
            }
        }
        r
    }
}

impl<F> Drop for Tracked<'_, F> {
    fn drop(&mut self) {
        if self.queued {
            self.shared.queued.lock().unwrap().retain(|&w| w != self.id);
        }
    }
}

impl LockSwarm {
    pub fn spawn(ex: &SimExecutor, seed: u64) -> LockSwarm {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let shared = Arc::new(Shared {
            holder: AtomicUsize::new(NOBODY),
            ..Shared::default()
        });
        let mut tasks = Vec::new();
        let mut names = BTreeMap::new();
        let mut name = |what: String| {
            if let Some(t) = ex.last_spawned() {
                names.insert(t, format!("lock swarm: {what}"));
            }
        };
        let workers = rng.random_range(2..=4);
        let producers = rng.random_range(1..=2);
        let consumers = rng.random_range(2..=4);
        let per = rng.random_range(3..=12usize);
        for id in 0..workers {
            shared.running.lock().unwrap().insert(id, "mutex");
            ex.spawn(worker(shared.clone(), ex.clone(), id, per));
            name(format!("CoMutex worker {id}"));
        }
        for r in 0..rng.random_range(2..=4) {
            let id = 300 + r;
            shared.running.lock().unwrap().insert(id, "rwlock");
            let seed = rng.random();
            ex.spawn(rw_worker(shared.clone(), ex.clone(), id, per, seed));
            name(format!("CoRwLock worker {id}"));
        }
        for p in 0..producers {
            let id = 100 + p;
            shared.running.lock().unwrap().insert(id, "producer");
            let pace = rng.random_range(0..30);
            ex.spawn(producer(shared.clone(), ex.clone(), id, per, pace));
            name(format!("CoQueue producer {id}"));
        }
        for c in 0..consumers {
            let id = 200 + c;
            shared.running.lock().unwrap().insert(id, "consumer");
            ex.spawn(consumer(shared.clone(), id));
            name(format!("CoQueue consumer {id}"));
            tasks.extend(ex.last_spawned());
        }
        let sh = shared.clone();
        let ex2 = ex.clone();
        // The canceller is a busy coroutine: every one of its steps is a scheduling point,
        // so a cancel can land between a hand-off and the new owner's first poll.
        let rounds = rng.random_range(100..1500u32);
        let p = [0.0, 0.02, 0.1, 0.3][rng.random_range(0..4)];
        ex.spawn(async move {
            for _ in 0..rounds {
                if rng.random_bool(0.02) {
                    let d = Duration::from_micros(rng.random_range(1..50));
                    ex2.sleep(d).await;
                } else {
                    ex2.yield_now().await;
                }
                if !rng.random_bool(p) {
                    continue;
                }
                // Half the time the head of the mutex queue: the next to be handed the
                // lock, so the cancel may land after the hand-off, before it runs.
                let head = sh.queued.lock().unwrap().first().copied();
                let at = sh.attempts.lock().unwrap();
                let pick = match head.and_then(|h| at.get(&h)) {
                    Some(c) if rng.random_bool(0.5) => Some(c.clone()),
                    _ if at.is_empty() => None,
                    _ => at.values().nth(rng.random_range(0..at.len())).cloned(),
                };
                drop(at);
                if let Some(c) = pick {
                    c.cancel();
                }
            }
        });
        name("canceller".into());
        LockSwarm {
            shared,
            ex: ex.clone(),
            tasks,
            names,
        }
    }

    /// What each of its coroutines is.
    pub fn task_names(&self) -> BTreeMap<u64, String> {
        self.names.clone()
    }

    /// The first broken rule seen so far; checked between scheduling steps. Beyond what
    /// the coroutines record themselves: items are there and someone waits on the
    /// CoQueue without being woken, while nobody who could take them (or wake a waiter)
    /// holds the mutex or is runnable — a wake-up was lost.
    pub fn violation(&self) -> Option<String> {
        if let Some(v) = self.shared.violation.lock().unwrap().clone() {
            return Some(v);
        }
        let sh = &self.shared;
        let items = sh.items.try_lock().map(|g| g.0)?;
        let waiting = sh.waiting.load(Ordering::Acquire);
        if waiting > 0
            && sh.nonempty.is_empty()
            && !self.tasks.iter().any(|&t| self.ex.is_runnable(t))
        {
            // The mutex is free and no consumer can run: those inside `wait` are queued.
            return Some(format!(
                "CoQueue::is_empty says nobody waits while {waiting} consumers are queued"
            ));
        }
        if items > 0
            && !sh.nonempty.is_empty()
            && !self.tasks.iter().any(|&t| self.ex.is_runnable(t))
        {
            return Some(format!(
                "CoQueue lost wake-up: {items} items, waiters asleep, nobody runnable"
            ));
        }
        None
    }

    /// With nothing runnable and no timer: a mutex worker or producer still waiting is
    /// stuck for good, and so is a consumer while items are there to take.
    pub fn stuck(&self) -> Option<String> {
        let r = self.shared.running.lock().unwrap();
        let items = self.shared.items.try_lock().map(|g| g.0);
        let blocked = r.values().any(|&k| k != "consumer")
            || (r.values().any(|&k| k == "consumer") && items != Some(0));
        blocked.then(|| {
            format!(
                "lost wake-up or lock never passed on: {r:?} blocked with nothing runnable \
                 (mutex locked={}, items={:?})",
                self.shared.mutex.is_locked(),
                self.shared.items.try_lock().map(|g| *g)
            )
        })
    }

    /// Ends the run: cancels the consumers still waiting for items.
    pub fn shutdown(&self) {
        let list: Vec<Arc<CancelCtl>> = self
            .shared
            .attempts
            .lock()
            .unwrap()
            .values()
            .cloned()
            .collect();
        for c in list {
            c.cancel();
        }
    }

    pub fn finished(&self) -> Option<String> {
        self.violation().or_else(|| self.stuck()).or_else(|| {
            (self.shared.holder.load(Ordering::Acquire) == NOBODY && self.shared.mutex.is_locked())
                .then(|| "CoMutex: is_locked with nobody holding it at the end".to_string())
        })
    }
}

fn attempt<F: Future>(sh: &Shared, id: usize, fut: F) -> Cancellable<F> {
    let ctl = Arc::new(CancelCtl::default());
    sh.attempts.lock().unwrap().insert(id, ctl.clone());
    Cancellable {
        ctl,
        fut: Some(Box::pin(fut)),
    }
}

async fn worker(sh: Arc<Shared>, ex: SimExecutor, id: usize, rounds: usize) {
    let mut done = 0;
    while done < rounds {
        let got = attempt(&sh, id, async {
            let tracked = Tracked {
                shared: &sh,
                id,
                fut: Box::pin(sh.mutex.lock()),
                queued: false,
            };
            let mut g = tracked.await;
            if !sh.mutex.is_locked() {
                sh.violate(format!("CoMutex: worker {id} holds it, is_locked says no"));
            }
            if sh.holder.swap(id, Ordering::AcqRel) != NOBODY {
                sh.violate(format!(
                    "CoMutex: worker {id} entered while another held it"
                ));
            }
            *g += 1;
            ex.yield_now().await;
            // Still locked however others queued or gave up meanwhile.
            if !sh.mutex.is_locked() {
                sh.violate(format!("CoMutex: worker {id} holds it, is_locked says no"));
            }
            if sh.holder.swap(NOBODY, Ordering::AcqRel) != id {
                sh.violate(format!("CoMutex: worker {id} was not alone inside"));
            }
        })
        .await;
        sh.attempts.lock().unwrap().remove(&id);
        if got.is_none() {
            // Cancelled inside: whoever held the lock is gone.
            let _ = sh
                .holder
                .compare_exchange(id, NOBODY, Ordering::AcqRel, Ordering::Acquire);
        }
        done += 1;
        ex.yield_now().await;
    }
    sh.running.lock().unwrap().remove(&id);
}

/// Runs a closure when dropped.
struct OnDrop<F: FnMut()>(F);

impl<F: FnMut()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        (self.0)()
    }
}

/// Takes the rwlock shared or exclusive, as requests and Tclunk take a fid's barrier.
async fn rw_worker(sh: Arc<Shared>, ex: SimExecutor, id: usize, rounds: usize, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for _ in 0..rounds {
        let write = rng.random_bool(0.3);
        let hold = rng.random_range(0..3);
        let _ = attempt(&sh, id, async {
            if write {
                let _g = sh.rw.write().await;
                if sh.writer.swap(true, Ordering::AcqRel) || sh.readers.load(Ordering::Acquire) > 0
                {
                    sh.violate(format!("CoRwLock: writer {id} not alone"));
                }
                // Cleared however this ends (a cancel drops us mid-way).
                let _out = OnDrop(|| sh.writer.store(false, Ordering::Release));
                for _ in 0..hold {
                    ex.yield_now().await;
                }
            } else {
                let _g = sh.rw.read().await;
                sh.readers.fetch_add(1, Ordering::AcqRel);
                if sh.writer.load(Ordering::Acquire) {
                    sh.violate(format!("CoRwLock: reader {id} inside with a writer"));
                }
                let _out = OnDrop(|| {
                    sh.readers.fetch_sub(1, Ordering::AcqRel);
                });
                for _ in 0..hold {
                    ex.yield_now().await;
                }
            }
        })
        .await;
        sh.attempts.lock().unwrap().remove(&id);
        ex.yield_now().await;
    }
    sh.running.lock().unwrap().remove(&id);
}

async fn producer(sh: Arc<Shared>, ex: SimExecutor, id: usize, n: usize, pace: u32) {
    for _ in 0..n {
        for _ in 0..pace {
            ex.yield_now().await;
        }
        let mut g = sh.items.lock().await;
        g.0 += 1;
        drop(g);
        if pace.is_multiple_of(3) {
            // Wake everyone: a count of 0 exactly when nobody was queued, and nobody left.
            let had = !sh.nonempty.is_empty();
            let n = sh.nonempty.restart_all();
            if (n > 0) != had || !sh.nonempty.is_empty() {
                sh.violate(format!(
                    "CoQueue::restart_all woke {n} with waiters={had}, empty after: {}",
                    sh.nonempty.is_empty()
                ));
            }
        } else {
            sh.nonempty.next();
        }
    }
    sh.running.lock().unwrap().remove(&id);
}

/// Takes items for ever, like a request waiting for work; a cancelled consumer is gone
/// for good (as a flushed request), so a wake-up it swallowed is lost for the others.
async fn consumer(sh: Arc<Shared>, id: usize) {
    loop {
        let r = attempt(&sh, id, async {
            let mut g = sh.items.lock().await;
            while g.0 == 0 {
                sh.waiting.fetch_add(1, Ordering::AcqRel);
                let _left = OnDrop(|| {
                    sh.waiting.fetch_sub(1, Ordering::AcqRel);
                });
                g = sh.nonempty.wait(g).await;
            }
            g.0 -= 1;
            g.1 += 1;
        })
        .await;
        sh.attempts.lock().unwrap().remove(&id);
        if r.is_none() {
            break;
        }
    }
    sh.running.lock().unwrap().remove(&id);
}
