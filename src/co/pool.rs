//! The production executor: a small pool of OS threads running coroutines.

use std::fmt;
use std::future::Future;
use std::ops::Deref;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant};

use super::join::{JoinHandle, spawn_handle};
use super::timer::Sleep;
use super::worker::{Park, Shared, Worker, thread_main};
use super::{Executor, yield_now};

/// A pool of OS threads that run coroutines, owning those threads.
///
/// Why threads and not an event loop per request: request handlers make blocking filesystem
/// syscalls *in place*, on the pool thread, instead of hopping to a worker thread and back for
/// each operation as QEMU does (two context switches per request). A handler blocked in a
/// syscall blocks only its own thread; other threads pick up queued work.
///
/// The pool can also have zero threads: then nothing runs except inside
/// [`block_on`](Self::block_on) and [`run_until_idle`](Self::run_until_idle) on the calling
/// thread, which makes tests deterministic and lets benchmarks measure the run loop alone.
///
/// Dropping the pool (or [`shutdown`](Self::shutdown)) stops and joins its threads and drops
/// every queued task. A task parked on a waker held elsewhere is dropped when that waker is
/// woken (or dropped) after shutdown. A panicking coroutine is caught, logged with
/// `tracing::error!` and counted ([`PoolHandle::panics`]); the pool carries on.
pub struct ThreadPool {
    handle: PoolHandle,
    threads: Vec<thread::JoinHandle<()>>,
}

impl ThreadPool {
    /// Starts a pool with `threads` OS threads (0: run only on the caller's thread).
    pub fn new(threads: usize) -> Self {
        let shared = Arc::new(Shared::new());
        let threads = (0..threads)
            .map(|i| {
                let shared = shared.clone();
                thread::Builder::new()
                    .name(format!("co-pool-{i}"))
                    .spawn(move || thread_main(shared))
                    .expect("spawning a pool thread")
            })
            .collect();
        Self {
            handle: PoolHandle { shared },
            threads,
        }
    }

    /// A cloneable handle for spawning; it does not keep the threads alive.
    pub fn handle(&self) -> PoolHandle {
        self.handle.clone()
    }

    /// Runs `fut` to completion on the calling thread, which meanwhile also runs pool tasks.
    ///
    /// `fut` need not be `Send`: it never leaves this thread.
    pub fn block_on<F: Future>(&self, fut: F) -> F::Output {
        let shared = &*self.handle.shared;
        let mut fut = pin!(fut);
        let root = Arc::new(RootWake {
            woken: AtomicBool::new(true),
            shared: self.handle.shared.clone(),
        });
        let waker = Waker::from(root.clone());
        let mut cx = Context::from_waker(&waker);
        let worker = Worker::new(shared);
        let _entered = worker.enter(shared);
        loop {
            if root.woken.load(Ordering::Relaxed) && root.woken.swap(false, Ordering::AcqRel) {
                if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
                    return out;
                }
            }
            // Every task runnable now goes once before the root is polled again, so a yield
            // in the root lets the others run, as it does in a task.
            let mut ran = false;
            for _ in 0..worker.runnable(shared).max(1) {
                let Some(t) = worker.pop(shared) else { break };
                worker.run(t, shared);
                ran = true;
            }
            if !ran {
                shared.park(Park::Root(&root.woken));
            }
        }
    }

    /// Runs tasks on the calling thread until none is runnable and no timer is pending
    /// (waiting for timers as needed); returns how many polls it made.
    ///
    /// Meant for a pool with no threads of its own, in tests and benchmarks.
    pub fn run_until_idle(&self) -> usize {
        let shared = &*self.handle.shared;
        let worker = Worker::new(shared);
        let _entered = worker.enter(shared);
        let mut polls = 0;
        loop {
            polls += worker.drain(shared);
            if !shared.park(Park::Idle) {
                return polls;
            }
        }
    }

    /// Stops the threads, joins them and drops every queued task.
    pub fn shutdown(mut self) {
        self.shutdown_inner();
    }

    fn shutdown_inner(&mut self) {
        self.handle.shared.shutdown();
        let me = thread::current().id();
        for t in self.threads.drain(..) {
            // Dropping the pool from one of its own coroutines must not join itself.
            if t.thread().id() != me {
                let _ = t.join();
            }
        }
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shutdown_inner();
    }
}

impl Deref for ThreadPool {
    type Target = PoolHandle;
    fn deref(&self) -> &PoolHandle {
        &self.handle
    }
}

impl fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadPool")
            .field("threads", &self.threads.len())
            .field("panics", &self.panics())
            .finish()
    }
}

/// Wakes `block_on`'s root future: sets its flag and rouses parked threads.
struct RootWake {
    woken: AtomicBool,
    shared: Arc<Shared>,
}

impl Wake for RootWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        if !self.woken.swap(true, Ordering::AcqRel) {
            self.shared.notify_all();
        }
    }
}

/// A handle to a [`ThreadPool`]: the [`Executor`] that code spawning coroutines holds.
///
/// Spawning after the pool shut down drops the future at once.
#[derive(Clone)]
pub struct PoolHandle {
    shared: Arc<Shared>,
}

impl PoolHandle {
    /// Spawns `fut` and returns a handle that resolves to its output.
    pub fn spawn_handle<F>(&self, fut: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        spawn_handle(self, fut)
    }

    /// How many coroutines have panicked (and been dropped) on this pool.
    pub fn panics(&self) -> u64 {
        self.shared.panics.load(Ordering::Relaxed)
    }
}

impl Executor for PoolHandle {
    fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        Shared::spawn(&self.shared, fut);
    }

    fn yield_now(&self) -> impl Future<Output = ()> + Send + 'static {
        yield_now()
    }

    fn sleep(&self, d: Duration) -> impl Future<Output = ()> + Send + 'static {
        Sleep::new(self.shared.clone(), Instant::now() + d)
    }

    fn now(&self) -> Duration {
        self.shared.start.elapsed()
    }

    /// On a thread that is not already running this pool's loop, the calling thread acts as
    /// a helper worker for the duration: what `f` spawns (and what those wake) stays on its
    /// FIFO and is polled here, up to `HELPER_POLLS` (16) polls; leftovers go to the pool.
    fn run_here<R>(&self, f: impl FnOnce() -> R) -> R {
        if Worker::current_is_some() {
            return f();
        }
        HELPER.with(|slot| {
            let Ok(mut slot) = slot.try_borrow_mut() else {
                return f();
            };
            // One helper per thread, kept between calls: its FIFO keeps its capacity and its
            // task cache stays warm, so lending a hand costs no allocation.
            if !slot
                .as_ref()
                .is_some_and(|h| Arc::ptr_eq(&h.shared, &self.shared))
            {
                *slot = None;
                *slot = Some(Box::new(Helper {
                    worker: Worker::helper(&self.shared),
                    shared: self.shared.clone(),
                }));
            }
            let h = slot.as_ref().expect("just set");
            let _entered = h.worker.enter(&h.shared);
            let out = f();
            h.worker.drain_local(&h.shared, HELPER_POLLS);
            out
        })
    }
}

/// A thread's helper worker for [`PoolHandle::run_here`], with the pool it helps (which the
/// worker points into, so it lives as long).
struct Helper {
    worker: Worker,
    shared: Arc<Shared>,
}

thread_local! {
    static HELPER: std::cell::RefCell<Option<Box<Helper>>> = const { std::cell::RefCell::new(None) };
}

/// How many polls a [`PoolHandle::run_here`] helper makes before it hands what is left to
/// the pool: enough for a request's coroutine and the few it wakes, little enough that a
/// coroutine yielding in a loop cannot keep the helper's thread (a transport's reader)
/// from its own work.
const HELPER_POLLS: usize = 16;

impl fmt::Debug for PoolHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolHandle")
            .field("panics", &self.panics())
            .finish()
    }
}
