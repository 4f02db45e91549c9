//! [`block_on`]: drive one future on the calling thread, outside any executor.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

struct ThreadWake {
    thread: Thread,
    woken: AtomicBool,
}

impl Wake for ThreadWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.thread.unpark();
    }
}

/// Runs `fut` to completion on the calling thread, parking it while the future waits.
///
/// For tests and the CLI: the future's wake-ups come from elsewhere (another executor's
/// threads, a [`JoinHandle`](super::JoinHandle)); this runs nothing else. To also run a
/// pool's tasks on this thread, use [`ThreadPool::block_on`](super::ThreadPool::block_on).
pub fn block_on<F: Future>(fut: F) -> F::Output {
    drive(fut, None).expect("no deadline")
}

/// Like [`block_on`], but gives up after `timeout`: `None` if the future had not completed
/// by then (it is dropped). For shutdown paths that must not hang on a stuck request.
pub fn block_on_timeout<F: Future>(fut: F, timeout: Duration) -> Option<F::Output> {
    drive(fut, Some(Instant::now() + timeout))
}

/// Polls `fut` on this thread, parking between wake-ups, until it completes or `deadline`
/// passes.
fn drive<F: Future>(fut: F, deadline: Option<Instant>) -> Option<F::Output> {
    let mut fut = pin!(fut);
    let wake = Arc::new(ThreadWake {
        thread: thread::current(),
        woken: AtomicBool::new(false),
    });
    let waker = Waker::from(wake.clone());
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return Some(out);
        }
        while !wake.woken.swap(false, Ordering::Acquire) {
            match deadline {
                None => thread::park(),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return None;
                    }
                    thread::park_timeout(left);
                }
            }
        }
    }
}
