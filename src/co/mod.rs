//! The coroutine runtime: the [`Executor`] contract and the locks request handlers share.
//!
//! co9p's request handlers are `async` functions ("coroutines", as in QEMU's VirtFS): each
//! reads as straight-line code, and every `.await` is a point where the executor may run
//! something else. This module knows nothing about 9P. It provides
//!
//! - [`Executor`]: what the server needs from a scheduler (spawn, yield, sleep, time), so the
//!   same handlers run on the production [`pool::ThreadPool`] and in the deterministic
//!   simulator, where `sleep` and `now` are virtual;
//! - [`CoMutex`], [`CoQueue`] and [`CoRwLock`]: QEMU's coroutine locks, thread-safe and built
//!   on [`std::task::Waker`] only, so they work on any executor. All are FIFO and
//!   cancellation-safe, since a flushed request is cancelled by dropping its future;
//! - [`yield_now`], [`spawn_handle`] / [`JoinHandle`] and [`block_on`], small helpers that
//!   work with any executor;
//! - [`Latch`]: a countdown that opens once, awaited by a coroutine or blocked on by a
//!   thread (a closing session's requests counting down).
//!
//! [`sync`] swaps std's atomics and mutex for loom's under `cfg(loom)`; the locks use nothing
//! else, so `tests/loom.rs` model-checks the real code.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

mod join;
mod latch;
mod mutex;
mod queue;
mod rwlock;
pub mod sync;
mod waitlist;

#[cfg(not(loom))]
mod block_on;
#[cfg(not(loom))]
pub mod pool;
#[cfg(not(loom))]
mod task;
#[cfg(not(loom))]
mod timer;
#[cfg(not(loom))]
mod worker;

#[cfg(not(loom))]
pub use block_on::{block_on, block_on_timeout};
pub use join::{JoinError, JoinHandle, spawn_handle};
pub use latch::{Latch, LatchWait};
pub use mutex::{CoMutex, CoMutexGuard, CoMutexLock};
#[cfg(not(loom))]
pub use pool::{PoolHandle, ThreadPool};
pub use queue::{CoQueue, CoQueueWait};
pub use rwlock::{CoRwLock, CoRwLockRead, CoRwLockReadGuard, CoRwLockWrite, CoRwLockWriteGuard};
#[cfg(not(loom))]
pub use timer::Sleep;

/// Whether a coroutine about to wait for a lock held elsewhere may spin a moment first (see
/// [`CoMutex`]'s `lock`): on a pool thread with nothing else to run. Under loom, always, so
/// the models cover the spin.
#[cfg(not(loom))]
#[inline]
pub(crate) fn may_spin() -> bool {
    worker::may_spin()
}

#[cfg(loom)]
#[inline]
pub(crate) fn may_spin() -> bool {
    true
}

/// What the server needs from a scheduler of coroutines.
///
/// Implemented by the production [`ThreadPool`]'s [`PoolHandle`] and by the simulator's
/// seeded executor. It is a cheap handle (`Clone`), shareable across threads, and every future
/// it runs is `Send`, because the production pool may resume a coroutine on any of its
/// threads.
pub trait Executor: Clone + Send + Sync + 'static {
    /// Starts `fut` as an independent coroutine. Its output is discarded; use
    /// [`spawn_handle`] to get it back.
    fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static;

    /// One scheduling point: lets every other runnable coroutine go first. The simulator
    /// uses it to explore interleavings.
    fn yield_now(&self) -> impl Future<Output = ()> + Send + 'static;

    /// Completes after `d` has elapsed on this executor's clock (virtual in the simulator,
    /// so tests with timeouts take no real time).
    fn sleep(&self, d: Duration) -> impl Future<Output = ()> + Send + 'static;

    /// Monotonic time since the executor started (virtual in the simulator).
    fn now(&self) -> Duration;

    /// Calls `f`, letting the calling thread lend a hand: where the executor can, the
    /// coroutines `f` spawns are first polled right here, before `run_here` returns, as far
    /// as they go without waiting; whatever then still waits resumes on the executor as
    /// usual. A transport calls it for a request that nothing else is queued behind, so a
    /// request that needs no wait is served on the thread that read it, with no hand-off
    /// to another thread and back (two context switches). By default it only calls `f`.
    fn run_here<R>(&self, f: impl FnOnce() -> R) -> R {
        f()
    }

    /// The moment between a request's handler finishing and its reply going out. In
    /// production nothing happens here (the default is ready at once, and costs nothing);
    /// the simulator makes it a scheduling point, so that what another thread may do in
    /// that window — a Tflush taking the session's registry first, a Tclunk the request
    /// held up replying first — is explored too.
    fn before_reply(&self) -> impl Future<Output = ()> + Send + 'static {
        std::future::ready(())
    }
}

/// Yields once: wakes itself and returns `Pending`, then completes on the next poll.
///
/// Works on any executor, since it relies only on the waker; an executor that polls woken
/// tasks in FIFO order thereby runs every other runnable task first.
#[inline]
pub fn yield_now() -> YieldNow {
    YieldNow { yielded: false }
}

/// The future returned by [`yield_now`].
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct YieldNow {
    yielded: bool,
}

impl Future for YieldNow {
    type Output = ();

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.yielded {
            return Poll::Ready(());
        }
        self.yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
