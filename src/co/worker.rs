//! The run loop shared by the pool's threads, [`ThreadPool::block_on`] and
//! [`ThreadPool::run_until_idle`](super::pool::ThreadPool::run_until_idle).
//!
//! Each thread running the loop has a private FIFO (no atomics, no locks); a task woken or
//! spawned on such a thread goes there, which keeps a coroutine's yield round trip and a
//! spawn from a request handler cheap. The shared state (behind one mutex) holds the injection
//! queue for wake-ups from other threads, the timer heap and the idle count. Balance: when some
//! thread is idle, new work is injected instead of kept local, and a busy thread hands half its
//! FIFO over, so a coroutine blocked in a filesystem call does not hold up queued work.
//!
//! [`ThreadPool::block_on`]: super::pool::ThreadPool::block_on

use std::cell::{Cell, RefCell};
use std::collections::{BinaryHeap, VecDeque};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::Waker;
use std::time::Instant;

use super::sync::LockExt;
use super::task::{CACHE_BYTES, HELPER_CACHE_BYTES, Header, RunOutcome, TaskCache, TaskRef};
use super::timer::Timer;

/// Check the shared queue every this many local tasks, so injected work is not starved.
const GLOBAL_CHECK_INTERVAL: u32 = 61;
/// How many injected tasks a thread takes at once when nobody is idle.
const GLOBAL_BATCH: usize = 32;

/// State shared by every thread and handle of one pool.
pub(crate) struct Shared {
    global: Mutex<Global>,
    cv: Condvar,
    /// Hint: queued tasks plus timers in `global` (skip the lock when zero).
    work_hint: AtomicUsize,
    /// Hint: threads parked in `global`'s condvar (share work when non-zero).
    idle_hint: AtomicUsize,
    pub(crate) panics: AtomicU64,
    pub(crate) start: Instant,
}

struct Global {
    queue: VecDeque<TaskRef>,
    timers: BinaryHeap<Timer>,
    timer_seq: u64,
    idle: usize,
    shutdown: bool,
}

impl Global {
    fn publish(&self, shared: &Shared) {
        shared
            .work_hint
            .store(self.queue.len() + self.timers.len(), Ordering::Relaxed);
    }

    /// Removes the timers due at `now` and returns their wakers.
    fn take_due(&mut self, now: Instant) -> Vec<Waker> {
        let mut due = Vec::new();
        while self.timers.peek().is_some_and(|t| t.deadline <= now) {
            due.extend(self.timers.pop().and_then(Timer::fire));
        }
        due
    }
}

/// What a parked thread is waiting for.
#[derive(Clone, Copy)]
pub(crate) enum Park<'a> {
    /// A pool thread: work, or shutdown.
    Thread,
    /// `run_until_idle`: give up when nothing is queued and no timer is pending.
    Idle,
    /// `block_on`: work, or the root future's wake-up flag.
    Root(&'a AtomicBool),
}

impl Shared {
    pub(crate) fn new() -> Self {
        Self {
            global: Mutex::new(Global {
                queue: VecDeque::new(),
                timers: BinaryHeap::new(),
                timer_seq: 0,
                idle: 0,
                shutdown: false,
            }),
            cv: Condvar::new(),
            work_hint: AtomicUsize::new(0),
            idle_hint: AtomicUsize::new(0),
            panics: AtomicU64::new(0),
            start: Instant::now(),
        }
    }

    fn global(&self) -> MutexGuard<'_, Global> {
        self.global.lock_unpoisoned()
    }

    /// Spawns `fut` on the pool `shared`: with one look at this thread's worker, the task's
    /// cell comes from that worker's cache and the task goes on its FIFO (when it runs this
    /// pool and nobody is idle), otherwise on the shared queue.
    #[inline]
    pub(crate) fn spawn<F>(shared: &Arc<Shared>, fut: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let task = CURRENT.with(|cur| {
            // SAFETY: CURRENT points at a live Worker on this thread's stack (see `enter`).
            let w = unsafe { cur.get().as_ref() };
            keep_local(w, Arc::as_ptr(shared), TaskRef::new(fut, shared, w))
        });
        if let Some(task) = task {
            shared.inject(task);
        }
    }

    /// Queues a runnable task: on this thread's FIFO when it runs this pool and nobody is
    /// idle, otherwise on the shared queue.
    #[inline]
    pub(crate) fn schedule(task: TaskRef) {
        let shared = Arc::as_ptr(&task.header().shared);
        // SAFETY: CURRENT points at a live Worker on this thread's stack (see `enter`).
        let task = CURRENT.with(|cur| keep_local(unsafe { cur.get().as_ref() }, shared, task));
        if let Some(task) = task {
            let shared = task.header().shared.clone();
            shared.inject(task);
        }
    }

    /// Puts a task on the shared queue; after shutdown, drops its future instead.
    pub(crate) fn inject(&self, task: TaskRef) {
        let mut g = self.global();
        if g.shutdown {
            drop(g);
            task.cancel();
            return;
        }
        g.queue.push_back(task);
        g.publish(self);
        let wake = g.idle > 0;
        drop(g);
        if wake {
            self.cv.notify_one();
        }
    }

    pub(crate) fn add_timer(&self, deadline: Instant, timer: impl FnOnce(u64) -> Timer) {
        let mut g = self.global();
        let seq = g.timer_seq;
        g.timer_seq += 1;
        let earliest = g.timers.peek().is_none_or(|t| deadline < t.deadline);
        g.timers.push(timer(seq));
        g.publish(self);
        let wake = earliest && g.idle > 0;
        drop(g);
        if wake {
            // A parked thread may be sleeping past the new deadline.
            self.cv.notify_all();
        }
    }

    /// Pops a task from the shared queue, firing due timers on the way. When nobody is
    /// idle, a batch moves to `local` too, so injected tasks and the caller's own take turns
    /// in FIFO order (a yield then really lets every runnable task go first).
    fn pop_global(&self, local: &RefCell<VecDeque<TaskRef>>) -> Option<TaskRef> {
        let mut g = self.global();
        let due = if g.timers.is_empty() {
            Vec::new()
        } else {
            g.take_due(Instant::now())
        };
        let task = g.queue.pop_front();
        if g.idle == 0 && !g.queue.is_empty() {
            let n = g.queue.len().min(GLOBAL_BATCH);
            local.borrow_mut().extend(g.queue.drain(..n));
        }
        g.publish(self);
        drop(g);
        due.into_iter().for_each(Waker::wake);
        task
    }

    /// Waits until there may be work. Returns `false` when the caller should stop.
    pub(crate) fn park(&self, mode: Park<'_>) -> bool {
        let mut g = self.global();
        loop {
            if g.shutdown && !matches!(mode, Park::Root(_)) {
                return false;
            }
            if let Park::Root(flag) = mode
                && flag.load(Ordering::Acquire)
            {
                return true;
            }
            if !g.queue.is_empty() {
                return true;
            }
            let now = Instant::now();
            let due = g.take_due(now);
            if !due.is_empty() {
                g.publish(self);
                drop(g);
                due.into_iter().for_each(Waker::wake);
                return true;
            }
            let next = g.timers.peek().map(|t| t.deadline);
            if next.is_none() && matches!(mode, Park::Idle) {
                return false;
            }
            g.idle += 1;
            self.idle_hint.store(g.idle, Ordering::Relaxed);
            g = match next {
                Some(d) => {
                    let r = self.cv.wait_timeout(g, d - now);
                    r.unwrap_or_else(|e| e.into_inner()).0
                }
                None => self.cv.wait(g).unwrap_or_else(|e| e.into_inner()),
            };
            g.idle -= 1;
            self.idle_hint.store(g.idle, Ordering::Relaxed);
        }
    }

    /// Wakes every parked thread; used for the root future's waker and for shutdown.
    pub(crate) fn notify_all(&self) {
        // Under the lock, a thread is either before its check of what it waits for (and
        // will see the caller's change) or parked and counted; only then is the (always
        // syscalling) condvar worth touching.
        let idle = self.global().idle;
        if idle > 0 {
            self.cv.notify_all();
        }
    }

    /// Marks the pool shut down and drops every queued task and timer.
    pub(crate) fn shutdown(&self) {
        let (queue, timers) = {
            let mut g = self.global();
            g.shutdown = true;
            g.publish(self);
            (std::mem::take(&mut g.queue), std::mem::take(&mut g.timers))
        };
        self.cv.notify_all();
        queue.into_iter().for_each(TaskRef::cancel);
        // A sleeping task is held by nothing but its timer's waker, which its own `Sleep`
        // holds too (and the `Sleep` holds this pool): dropping the heap alone would leave
        // that cycle alive. Taking each waker out drops the last reference to its task, and
        // with it the task's future.
        timers.into_iter().for_each(|t| drop(t.fire()));
    }
}

/// Keeps `task` on `w`'s FIFO when `w` is this thread's worker of the pool `shared` (and
/// nobody is idle); otherwise returns it, for the shared queue.
#[inline]
fn keep_local(w: Option<&Worker>, shared: *const Shared, task: TaskRef) -> Option<TaskRef> {
    match w {
        Some(w) if ptr::eq(w.shared, shared) => w.push_local(task),
        _ => Some(task),
    }
}

thread_local! {
    /// The worker running on this thread, if any.
    static CURRENT: Cell<*const Worker> = const { Cell::new(ptr::null()) };
}

/// If this thread's worker is polling `task` right now, notes that the task woke itself (it
/// is requeued after the poll) and returns `true`; the state word is then left alone.
#[inline]
pub(crate) fn wake_self(task: *const Header) -> bool {
    CURRENT
        .try_with(|cur| {
            // SAFETY: CURRENT points at a live Worker on this thread's stack (see `enter`).
            match unsafe { cur.get().as_ref() } {
                Some(w) if ptr::eq(w.running.get(), task) => {
                    w.woke_self.set(true);
                    true
                }
                _ => false,
            }
        })
        .unwrap_or(false)
}

/// Whether the calling thread may busy-wait a moment for a lock held elsewhere: it runs a
/// pool's loop (not a helper, which has a transport's work to get back to) and nothing else
/// is queued for it, so spinning delays no other coroutine. On a thread that runs no pool
/// (the simulator's executor, a foreign runtime) it never does: there a lock's holder may
/// well be a coroutine of the same thread, which no amount of spinning lets run.
#[inline]
pub(crate) fn may_spin() -> bool {
    with_worker(|w| !w.helper && w.nothing_else_runnable()).unwrap_or(false)
}

thread_local! {
    /// The task cache of this thread's last worker, kept between workers (one `block_on`
    /// after another) so the next one starts warm.
    static IDLE_CACHE: RefCell<TaskCache> = const { RefCell::new(TaskCache::new()) };
}

/// Runs `f` on the worker running on this thread, if any (for its task cache).
#[inline]
fn with_worker<R>(f: impl FnOnce(&Worker) -> R) -> Option<R> {
    let w = CURRENT.try_with(Cell::get).ok()?;
    // SAFETY: CURRENT points at a live Worker on this thread's stack while it is set (see
    // `enter`), and the borrow does not outlive this call.
    unsafe { w.as_ref() }.map(f)
}

/// Offers the block of a finished task to the cache of this thread's worker through `put`,
/// if this thread runs a pool's loop (so other threads do not hoard blocks); `false` if not
/// taken.
#[inline]
pub(crate) fn recycle(put: impl FnOnce(&mut TaskCache) -> bool) -> bool {
    with_worker(|w| w.cache.try_borrow_mut().is_ok_and(|mut c| put(&mut c))) == Some(true)
}

/// One thread's view of the pool while it runs the loop.
pub(crate) struct Worker {
    shared: *const Shared,
    local: RefCell<VecDeque<TaskRef>>,
    tick: Cell<u32>,
    /// The task being polled (null between polls), and whether it woke itself meanwhile.
    running: Cell<*const Header>,
    woke_self: Cell<bool>,
    /// Polls made (a task polled again at once after a yield counts each time).
    polls: Cell<usize>,
    /// Blocks of tasks that finished here, for the next spawns here (see [`TaskCache`]);
    /// freed when the worker ends (the thread exits, or `block_on` returns).
    cache: RefCell<TaskCache>,
    /// A helper (see [`PoolHandle::run_here`](super::PoolHandle)) keeps everything local:
    /// it is about to run it itself, so waking an idle thread for it would only add a
    /// hand-off.
    helper: bool,
}

/// Restores the previous worker (nested `block_on`) and hands our leftover tasks back.
pub(crate) struct Entered<'a> {
    worker: &'a Worker,
    shared: &'a Shared,
    prev: *const Worker,
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.prev));
        let leftover = std::mem::take(&mut *self.worker.local.borrow_mut());
        leftover.into_iter().for_each(|t| self.shared.inject(t));
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Hands the cache to the thread for its next worker; freed if the thread is ending.
        let cache = self.cache.get_mut().take_all();
        let _ = IDLE_CACHE.try_with(|c| {
            if let Ok(mut c) = c.try_borrow_mut() {
                // Usually the thread holds none (this worker took it): a move, not a copy.
                if c.is_empty() {
                    *c = cache;
                } else {
                    c.absorb(cache);
                }
            }
        });
    }
}

impl Worker {
    pub(crate) fn new(shared: &Shared) -> Self {
        Self {
            shared,
            local: RefCell::new(VecDeque::new()),
            tick: Cell::new(0),
            running: Cell::new(ptr::null()),
            woke_self: Cell::new(false),
            polls: Cell::new(0),
            cache: RefCell::new(
                IDLE_CACHE
                    .try_with(|c| c.try_borrow_mut().map(|mut c| c.take_all()))
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or_else(TaskCache::new),
            ),
            helper: false,
        }
        .with_cache_limit(CACHE_BYTES)
    }

    fn with_cache_limit(mut self, limit: usize) -> Self {
        self.cache.get_mut().set_limit(limit);
        self
    }

    /// A worker for a thread that is not the pool's, lending a hand for a moment.
    pub(crate) fn helper(shared: &Shared) -> Self {
        let mut w = Self::new(shared).with_cache_limit(HELPER_CACHE_BYTES);
        w.helper = true;
        w
    }

    /// Whether this thread is running some pool's loop already.
    pub(crate) fn current_is_some() -> bool {
        CURRENT.try_with(|c| !c.get().is_null()).unwrap_or(true)
    }

    /// Runs tasks from this thread's own FIFO only, at most `budget` polls.
    pub(crate) fn drain_local(&self, shared: &Shared, budget: usize) {
        for _ in 0..budget {
            let Some(t) = self.local.borrow_mut().pop_front() else {
                return;
            };
            self.run(t, shared);
        }
    }

    /// A free block of size class `class` from this worker's cache, if there is one.
    #[inline]
    pub(crate) fn cache_take(&self, class: usize) -> Option<NonNull<Header>> {
        self.cache.try_borrow_mut().ok()?.take(class)
    }

    /// Keeps the block of a finished task for this worker's next spawns; `false` if full.
    #[inline]
    pub(crate) fn cache_put(&self, block: NonNull<Header>, class: usize) -> bool {
        self.cache
            .try_borrow_mut()
            .is_ok_and(|mut c| c.put(block, class))
    }

    /// Called by [`TaskRef::run`] around the poll of `task`.
    #[inline]
    pub(crate) fn begin_poll(&self, task: *const Header) {
        self.running.set(task);
        self.woke_self.set(false);
        self.polls.set(self.polls.get() + 1);
    }

    /// Ends the poll begun by `begin_poll`; says whether the task woke itself meanwhile.
    #[inline]
    pub(crate) fn end_poll(&self) -> bool {
        self.running.set(ptr::null());
        self.woke_self.get()
    }

    /// Makes this the thread's current worker until the returned guard drops.
    pub(crate) fn enter<'a>(&'a self, shared: &'a Shared) -> Entered<'a> {
        let prev = CURRENT.with(|c| c.replace(self));
        Entered {
            worker: self,
            shared,
            prev,
        }
    }

    /// Keeps `task` local unless another thread is idle; returns it if it must be injected.
    #[inline]
    fn push_local(&self, task: TaskRef) -> Option<TaskRef> {
        // SAFETY: the worker never outlives its pool's `Shared` (it borrows it in `enter`).
        if !self.helper && unsafe { (*self.shared).idle_hint.load(Ordering::Relaxed) } != 0 {
            return Some(task);
        }
        self.local.borrow_mut().push_back(task);
        None
    }

    /// The next task to run, or `None` when nothing is runnable right now.
    #[inline]
    pub(crate) fn pop(&self, shared: &Shared) -> Option<TaskRef> {
        let tick = self.tick.get().wrapping_add(1);
        self.tick.set(tick);
        let hint = shared.work_hint.load(Ordering::Relaxed) != 0;
        if hint
            && tick % GLOBAL_CHECK_INTERVAL == 0
            && let Some(t) = shared.pop_global(&self.local)
        {
            return Some(t);
        }
        let mut local = self.local.borrow_mut();
        if let Some(t) = local.pop_front() {
            if local.len() > 1 && shared.idle_hint.load(Ordering::Relaxed) != 0 {
                let keep = local.len() / 2;
                let half = local.split_off(keep);
                drop(local);
                half.into_iter().for_each(|t| shared.inject(t));
            }
            return Some(t);
        }
        drop(local);
        if hint {
            shared.pop_global(&self.local)
        } else {
            None
        }
    }

    /// Whether no other task is queued for this thread, locally or in the shared queue.
    #[inline]
    pub(crate) fn nothing_else_runnable(&self) -> bool {
        // SAFETY: the worker never outlives its pool's `Shared` (it borrows it in `enter`).
        let hint = unsafe { (*self.shared).work_hint.load(Ordering::Relaxed) };
        hint == 0 && self.local.borrow().is_empty()
    }

    /// How many tasks are queued for this thread (an estimate including the shared queue).
    #[inline]
    pub(crate) fn runnable(&self, shared: &Shared) -> usize {
        self.local.borrow().len() + shared.work_hint.load(Ordering::Relaxed)
    }

    /// Polls one task and deals with the outcome.
    #[inline]
    pub(crate) fn run(&self, task: TaskRef, shared: &Shared) {
        match task.run(self) {
            RunOutcome::Parked => {}
            RunOutcome::Requeue(t) => {
                if let Some(t) = self.push_local(t) {
                    shared.inject(t);
                }
            }
            RunOutcome::Panicked(payload) => {
                let n = shared.panics.fetch_add(1, Ordering::Relaxed) + 1;
                let msg = payload
                    .downcast_ref::<&str>()
                    .copied()
                    .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                    .unwrap_or("<non-string panic payload>");
                tracing::error!(panic = msg, total = n, "coroutine panicked; task dropped");
            }
        }
    }

    /// Runs tasks until none is runnable; returns how many polls that took.
    pub(crate) fn drain(&self, shared: &Shared) -> usize {
        let before = self.polls.get();
        while let Some(t) = self.pop(shared) {
            self.run(t, shared);
        }
        self.polls.get() - before
    }
}

/// The body of a pool thread.
pub(crate) fn thread_main(shared: Arc<Shared>) {
    let worker = Worker::new(&shared);
    let _entered = worker.enter(&shared);
    loop {
        worker.drain(&shared);
        if !shared.park(Park::Thread) {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `n` tasks that finish at once on `worker`, all spawned before any runs, so each
    /// finished block is offered to the cache; returns the bytes the cache then keeps.
    fn cache_after_finishing(worker: &Worker, shared: &Arc<Shared>, n: usize) -> usize {
        let _entered = worker.enter(shared);
        for _ in 0..n {
            Shared::spawn(shared, async {});
        }
        worker.drain_local(shared, n);
        worker.cache.borrow().bytes()
    }

    #[test]
    fn a_helper_keeps_a_small_cache_and_a_pool_worker_a_large_one() {
        let shared = Arc::new(Shared::new());
        let helper = Worker::helper(&shared);
        let kept = cache_after_finishing(&helper, &shared, 1000);
        assert!(kept > 0, "the helper keeps some blocks");
        assert!(kept <= HELPER_CACHE_BYTES, "helper keeps {kept} bytes");
        // Nothing was left unrun.
        assert!(helper.local.borrow().is_empty());
        drop(helper);
        let worker = Worker::new(&shared);
        // Not idle: no thread is parked, so spawns stay local.
        let kept = cache_after_finishing(&worker, &shared, 1000);
        assert!(
            kept > HELPER_CACHE_BYTES,
            "a pool worker keeps {kept} bytes"
        );
        assert!(kept <= CACHE_BYTES);
    }
}
