//! [`Latch`]: a countdown that opens once, awaited by a coroutine or blocked on by a thread.
//!
//! A closing session hands one out, counted down as its cancelled requests end; a coroutine
//! (a Tversion's) awaits [`Latch::wait`], a transport's own thread blocks in
//! [`Latch::wait_timeout`] on a condition variable, and the simulator looks at
//! [`Latch::is_open`]. Not model-checked: it uses
//! std's mutex and condition variable under loom too, so it works outside a loom model.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use super::sync::LockExt;

/// Opens once it has been counted down to zero.
pub struct Latch {
    count: AtomicUsize,
    /// The waker of the coroutine waiting (one at a time). Threads blocked in
    /// [`Latch::wait_timeout`] wait on `opened` under this mutex.
    waker: Mutex<Option<Waker>>,
    opened: Condvar,
}

impl Latch {
    /// A latch that opens after `count` calls of [`Self::count_down`] (at once if 0).
    pub fn new(count: usize) -> Self {
        Latch {
            count: AtomicUsize::new(count),
            waker: Mutex::new(None),
            opened: Condvar::new(),
        }
    }

    /// Counts one down; the last one opens the latch and wakes whoever waits.
    pub fn count_down(&self) {
        if self.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Under the mutex: a waiter checks `is_open` under it before it sleeps.
            let mut waker = self.waker.lock_unpoisoned();
            self.opened.notify_all();
            if let Some(w) = waker.take() {
                w.wake();
            }
        }
    }

    /// Whether the latch has been counted down to zero.
    pub fn is_open(&self) -> bool {
        self.count.load(Ordering::Acquire) == 0
    }

    /// Waits until the latch opens.
    pub fn wait(self: &Arc<Self>) -> LatchWait {
        LatchWait(self.clone())
    }

    /// Blocks the calling thread until the latch opens, at most `timeout`; whether it
    /// opened.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let guard = self.waker.lock_unpoisoned();
        let _guard = self
            .opened
            .wait_timeout_while(guard, timeout, |_| !self.is_open())
            .unwrap_or_else(|p| p.into_inner());
        self.is_open()
    }
}

/// The future of [`Latch::wait`].
pub struct LatchWait(Arc<Latch>);

impl Future for LatchWait {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.is_open() {
            return Poll::Ready(());
        }
        *self.0.waker.lock_unpoisoned() = Some(cx.waker().clone());
        if self.0.is_open() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}
