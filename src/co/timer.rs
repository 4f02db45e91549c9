//! Timers of the thread pool: a deadline heap in the pool's shared state, and [`Sleep`].

use std::cmp::Ordering as CmpOrdering;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use super::sync::LockExt;
use super::worker::Shared;

/// One registered deadline. The entry is shared with its [`Sleep`] so the waker can be
/// refreshed without searching the heap.
pub(crate) struct Timer {
    pub(crate) deadline: Instant,
    seq: u64,
    entry: Arc<Mutex<Option<Waker>>>,
}

impl Timer {
    /// The waker to call when the deadline passes (`None` if the sleep was dropped).
    pub(crate) fn fire(self) -> Option<Waker> {
        self.entry.lock_unpoisoned().take()
    }
}

impl PartialEq for Timer {
    fn eq(&self, other: &Self) -> bool {
        (self.deadline, self.seq) == (other.deadline, other.seq)
    }
}
impl Eq for Timer {}
impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Timer {
    /// Reversed, so `BinaryHeap` (a max-heap) pops the earliest deadline first.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (other.deadline, other.seq).cmp(&(self.deadline, self.seq))
    }
}

/// The future returned by the pool's [`Executor::sleep`](super::Executor::sleep).
///
/// Completes once the deadline has passed, as seen by `Instant::now()` on its next poll; a
/// zero duration completes at once without yielding. Dropping it before the deadline only
/// leaves a dead entry in the heap until then.
#[must_use = "futures do nothing unless awaited"]
pub struct Sleep {
    shared: Arc<Shared>,
    deadline: Instant,
    entry: Option<Arc<Mutex<Option<Waker>>>>,
}

impl Sleep {
    pub(crate) fn new(shared: Arc<Shared>, deadline: Instant) -> Self {
        Self {
            shared,
            deadline,
            entry: None,
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if Instant::now() >= this.deadline {
            if let Some(e) = this.entry.take() {
                e.lock_unpoisoned().take();
            }
            return Poll::Ready(());
        }
        match &this.entry {
            Some(e) => {
                let mut slot = e.lock_unpoisoned();
                if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *slot = Some(cx.waker().clone());
                }
            }
            None => {
                let entry = Arc::new(Mutex::new(Some(cx.waker().clone())));
                this.entry = Some(entry.clone());
                this.shared.add_timer(this.deadline, |seq| Timer {
                    deadline: this.deadline,
                    seq,
                    entry,
                });
            }
        }
        Poll::Pending
    }
}

impl fmt::Debug for Sleep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sleep")
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}
