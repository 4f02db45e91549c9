//! [`CoQueue`]: a condition variable for coroutines holding a [`CoMutex`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::mutex::{CoMutex, CoMutexGuard, CoMutexLock};
use super::sync::{LockExt, Mutex};
use super::waitlist::{Cancelled, WaitList, wake_all};

/// A queue of coroutines waiting for a condition protected by a [`CoMutex`], as QEMU's
/// `CoQueue`.
///
/// [`wait`](CoQueue::wait) enqueues the caller *before* it releases the mutex, so a
/// [`next`](CoQueue::next) issued by whoever takes the mutex afterwards always finds it: no
/// wake-up is lost between checking the condition and sleeping. Woken waiters re-take the
/// mutex (FIFO, like every [`CoMutex`] waiter) before `wait` returns.
///
/// Cancellation: a waiter dropped while queued simply leaves the queue. A waiter dropped after
/// [`next`](CoQueue::next) picked it, but before it ran, passes that wake-up on to the next
/// waiter, so "wake one" is never swallowed by a cancelled request. A waiter woken by
/// [`restart_all`](CoQueue::restart_all) passes nothing on: everyone queued at that moment
/// was woken anyway, and waking a later arrival would be a spurious wake-up.
pub struct CoQueue {
    /// The kind records how a waiter was woken: `true` by `next` (pass on if cancelled).
    waiters: Mutex<WaitList<bool>>,
}

impl CoQueue {
    /// Creates an empty queue.
    pub fn new() -> Self {
        Self {
            waiters: Mutex::new(WaitList::new()),
        }
    }

    /// Releases `guard`'s mutex, waits for [`next`](Self::next) or
    /// [`restart_all`](Self::restart_all), then re-takes the mutex and returns the new guard.
    ///
    /// The caller is enqueued when the future is first polled, atomically with respect to
    /// anyone who takes the mutex after it is released.
    pub fn wait<'a, T>(&'a self, guard: CoMutexGuard<'a, T>) -> CoQueueWait<'a, T> {
        CoQueueWait {
            queue: self,
            state: WaitState::Start(Some(guard)),
        }
    }

    /// Wakes the first waiter; returns whether there was one.
    pub fn next(&self) -> bool {
        let waker = self.waiters.lock_unpoisoned().grant_front_as(true);
        let woke = waker.is_some();
        wake_all(waker);
        woke
    }

    /// Wakes every waiter queued now; returns how many.
    pub fn restart_all(&self) -> usize {
        let mut wakers = Vec::new();
        {
            let mut w = self.waiters.lock_unpoisoned();
            while let Some(waker) = w.grant_front_as(false) {
                wakers.push(waker);
            }
        }
        let n = wakers.len();
        wake_all(wakers);
        n
    }

    /// Whether nobody is waiting (waiters already woken do not count).
    pub fn is_empty(&self) -> bool {
        self.waiters.lock_unpoisoned().is_empty()
    }
}

impl Default for CoQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for CoQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CoQueue")
            .field("empty", &self.is_empty())
            .finish()
    }
}

enum WaitState<'a, T> {
    /// Not yet polled: still holding the mutex.
    Start(Option<CoMutexGuard<'a, T>>),
    /// Queued with this ticket; the mutex is released.
    Waiting(u64, &'a CoMutex<T>),
    /// Woken; taking the mutex back.
    Relocking(CoMutexLock<'a, T>),
}

/// The future returned by [`CoQueue::wait`].
#[must_use = "futures do nothing unless awaited"]
pub struct CoQueueWait<'a, T> {
    queue: &'a CoQueue,
    state: WaitState<'a, T>,
}

impl<'a, T> Future for CoQueueWait<'a, T> {
    type Output = CoMutexGuard<'a, T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                WaitState::Start(guard) => {
                    let guard = guard.take().expect("CoQueueWait polled after completion");
                    let id = this
                        .queue
                        .waiters
                        .lock_unpoisoned()
                        .push(false, Some(cx.waker()));
                    let mutex = guard.mutex;
                    drop(guard);
                    this.state = WaitState::Waiting(id, mutex);
                    return Poll::Pending;
                }
                WaitState::Waiting(id, mutex) => {
                    let (id, mutex) = (*id, *mutex);
                    if this
                        .queue
                        .waiters
                        .lock_unpoisoned()
                        .poll_grant(id, cx.waker())
                        .is_none()
                    {
                        return Poll::Pending;
                    }
                    this.state = WaitState::Relocking(mutex.lock());
                }
                WaitState::Relocking(fut) => return Pin::new(fut).poll(cx),
            }
        }
    }
}

impl<T> Drop for CoQueueWait<'_, T> {
    fn drop(&mut self) {
        if let WaitState::Waiting(id, _) = self.state {
            let cancelled = self.queue.waiters.lock_unpoisoned().cancel(id);
            if cancelled == Some(Cancelled::Granted(true)) {
                self.queue.next();
            }
        }
    }
}
