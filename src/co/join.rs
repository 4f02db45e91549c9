//! Spawning with a handle to the result, on any [`Executor`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use super::Executor;
use super::sync::{Arc, LockExt, Mutex};

/// Why a [`JoinHandle`] has no output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinError {
    /// The coroutine panicked.
    Panicked,
    /// The coroutine was dropped unfinished (its executor shut down).
    Cancelled,
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JoinError::Panicked => "coroutine panicked",
            JoinError::Cancelled => "coroutine was dropped before it finished",
        })
    }
}

impl std::error::Error for JoinError {}

enum Slot<T> {
    Running(Option<Waker>),
    Done(Result<T, JoinError>),
    Taken,
}

/// Resolves to the output of a coroutine spawned with [`spawn_handle`].
///
/// Dropping the handle detaches the coroutine; it keeps running.
#[must_use = "dropping a JoinHandle detaches the coroutine"]
pub struct JoinHandle<T> {
    slot: Arc<Mutex<Slot<T>>>,
}

impl<T> JoinHandle<T> {
    /// Whether the coroutine has finished (or died).
    pub fn is_finished(&self) -> bool {
        !matches!(*self.slot.lock_unpoisoned(), Slot::Running(_))
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, JoinError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut slot = self.slot.lock_unpoisoned();
        match std::mem::replace(&mut *slot, Slot::Taken) {
            Slot::Done(out) => Poll::Ready(out),
            Slot::Running(_) => {
                *slot = Slot::Running(Some(cx.waker().clone()));
                Poll::Pending
            }
            Slot::Taken => panic!("JoinHandle polled after completion"),
        }
    }
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("finished", &self.is_finished())
            .finish()
    }
}

/// Lives inside the spawned coroutine; reports its end, whichever way it comes.
struct Reporter<T> {
    slot: Arc<Mutex<Slot<T>>>,
}

impl<T> Reporter<T> {
    fn finish(&self, out: Result<T, JoinError>) {
        let waker = {
            let mut slot = self.slot.lock_unpoisoned();
            match std::mem::replace(&mut *slot, Slot::Done(out)) {
                Slot::Running(w) => w,
                // Already reported: keep the first outcome.
                other => {
                    *slot = other;
                    None
                }
            }
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Drop for Reporter<T> {
    fn drop(&mut self) {
        // Reached without `finish` only if the coroutine unwound or was dropped unfinished.
        let err = if std::thread::panicking() {
            JoinError::Panicked
        } else {
            JoinError::Cancelled
        };
        self.finish(Err(err));
    }
}

/// Spawns `fut` on `ex` and returns a handle to its output.
///
/// Works with every [`Executor`], since it only wraps the future; useful in tests and for
/// callers that need a result back from a coroutine.
pub fn spawn_handle<E, F>(ex: &E, fut: F) -> JoinHandle<F::Output>
where
    E: Executor,
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let slot = Arc::new(Mutex::new(Slot::Running(None)));
    let reporter = Reporter { slot: slot.clone() };
    ex.spawn(async move {
        let out = fut.await;
        reporter.finish(Ok(out));
    });
    JoinHandle { slot }
}
