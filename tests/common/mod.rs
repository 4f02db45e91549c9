//! Test helpers: drive futures by hand, like QEMU's tests enter coroutines by hand.
#![allow(dead_code)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};

/// Counts wake-ups.
#[derive(Default)]
pub struct WakeCount(AtomicUsize);

impl Wake for WakeCount {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A future polled only when the test says so ("entering the coroutine").
pub struct Manual<'a, T> {
    fut: Option<Pin<Box<dyn Future<Output = T> + 'a>>>,
    wakes: Arc<WakeCount>,
    seen: usize,
    pub out: Option<T>,
}

impl<'a, T> Manual<'a, T> {
    pub fn new(fut: impl Future<Output = T> + 'a) -> Self {
        Self {
            fut: Some(Box::pin(fut)),
            wakes: Arc::default(),
            seen: 0,
            out: None,
        }
    }

    /// Polls once; returns whether the future has completed.
    pub fn step(&mut self) -> bool {
        if let Some(fut) = &mut self.fut {
            let waker = Waker::from(self.wakes.clone());
            if let Poll::Ready(v) = fut.as_mut().poll(&mut Context::from_waker(&waker)) {
                self.out = Some(v);
                self.fut = None;
            }
        }
        self.fut.is_none()
    }

    /// Whether the future was woken since the last call.
    pub fn woken(&mut self) -> bool {
        let n = self.wakes.0.load(Ordering::SeqCst);
        let woke = n != self.seen;
        self.seen = n;
        woke
    }

    pub fn done(&self) -> bool {
        self.fut.is_none()
    }

    /// Drops the future unfinished (a cancelled request).
    pub fn cancel(&mut self) {
        self.fut = None;
    }
}

/// Steps each `Manual` once, asserting it has to wait (it is now queued).
macro_rules! pending {
    ($($m:ident),+ $(,)?) => {
        $(assert!(!$m.step(), concat!(stringify!($m), " should have to wait"));)+
    };
}
