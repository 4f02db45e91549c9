//! The per-session registry of requests in flight, and how Tflush and Tversion wait on it.
//!
//! Every request but Tflush gets an entry keyed by its tag while its handler runs. A flush
//! marks the entry cancelled and parks itself on it; the request's own coroutine, when it
//! ends, sends its reply (if it has one), removes the entry and answers the parked flushes
//! in the order they came. So an Rflush can never overtake the reply it flushed, several
//! flushes of one tag are answered in order, and a flush of a flush simply waits in turn.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use crate::co::Latch;
use crate::co::sync::LockExt;
use crate::protocol::Tag;

/// A request's cancellation state, shared by its coroutine and by whoever flushes it.
#[derive(Default)]
pub(super) struct RequestCtl {
    cancelled: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl RequestCtl {
    /// Asks the request to stop; its coroutine notices at its next scheduling point.
    pub(super) fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
        if let Some(w) = self.waker.lock_unpoisoned().take() {
            w.wake();
        }
    }

    pub(super) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }
}

/// Runs a handler until it finishes or its request is cancelled.
///
/// Cancellation is observed *between* polls: when the request is cancelled the handler is
/// dropped at the await point where it was suspended. The filesystem contract (effects are
/// applied when an operation's future completes, and handlers do not await after their
/// effect) makes that point one where nothing has happened yet, so a cancelled request is
/// one that had no effect and gets no reply.
pub(super) struct Cancellable<'a, Fut> {
    ctl: &'a RequestCtl,
    fut: Option<Fut>,
}

impl<'a, Fut: Future> Cancellable<'a, Fut> {
    pub(super) fn new(ctl: &'a RequestCtl, fut: Fut) -> Self {
        Cancellable {
            ctl,
            fut: Some(fut),
        }
    }
}

impl<Fut: Future> Future for Cancellable<'_, Fut> {
    /// `None` when cancelled before the handler finished.
    type Output = Option<Fut::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: `fut` is structurally pinned: it is never moved out of `self`, only
        // polled in place through `Pin::new_unchecked` or dropped in place by assigning
        // `None` (dropping pinned data is allowed; moving it is not). `ctl` is a plain
        // reference and is not pinned.
        let this = unsafe { self.get_unchecked_mut() };
        if this.ctl.is_cancelled() {
            this.fut = None;
            return Poll::Ready(None);
        }
        {
            let mut w = this.ctl.waker.lock_unpoisoned();
            if !w.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *w = Some(cx.waker().clone());
            }
        }
        // A cancel between the check above and the waker store is caught here.
        if this.ctl.is_cancelled() {
            this.fut = None;
            return Poll::Ready(None);
        }
        let fut = this
            .fut
            .as_mut()
            .expect("Cancellable polled after completion");
        // SAFETY: see above; `fut` stays where it is until it is dropped.
        match unsafe { Pin::new_unchecked(fut) }.poll(cx) {
            Poll::Ready(out) => {
                this.fut = None;
                Poll::Ready(Some(out))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Something waiting for a request to end.
pub(super) enum Waiter<R> {
    /// A Tflush: answered with Rflush (through its responder) once the request has ended.
    Flush { tag: Tag, responder: R },
    /// A Tversion (or a closing session) counting requests down.
    Latch(Arc<Latch>),
}

struct Entry<R> {
    ctl: Arc<RequestCtl>,
    waiters: Vec<Waiter<R>>,
    /// A Tflush in flight has an entry too (so it can itself be flushed), but no handler.
    is_flush: bool,
}

/// Why a request could not be registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RegisterError {
    /// The tag is already in flight: a client bug or a hostile guest.
    TagInUse,
    /// The session's limit on requests in flight is reached.
    Full,
}

/// The registry itself.
pub(super) struct Inflight<R> {
    entries: Mutex<BTreeMap<Tag, Entry<R>>>,
    limit: usize,
}

/// What flushing a tag found.
pub(super) enum FlushOutcome<R> {
    /// Nothing to wait for (unknown, finished, or the flush's own tag): answer now.
    AnswerNow(R),
    /// Parked; the flushed request will answer it.
    Parked,
}

impl<R> Inflight<R> {
    pub(super) fn new(limit: usize) -> Self {
        Inflight {
            entries: Mutex::new(BTreeMap::new()),
            limit,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.entries.lock_unpoisoned().len()
    }

    pub(super) fn limit(&self) -> usize {
        self.limit
    }

    /// Registers a request with a handler.
    pub(super) fn register(&self, tag: Tag) -> Result<Arc<RequestCtl>, RegisterError> {
        self.insert(tag, self.limit)
    }

    /// Registers a Tversion, with one slot of slack as a Tflush has: the session's reset
    /// must not be refused because the requests it is about to cancel hold every slot.
    pub(super) fn register_version(&self, tag: Tag) -> Result<Arc<RequestCtl>, RegisterError> {
        self.insert(tag, self.limit + 1)
    }

    fn insert(&self, tag: Tag, cap: usize) -> Result<Arc<RequestCtl>, RegisterError> {
        let mut entries = self.entries.lock_unpoisoned();
        if entries.contains_key(&tag) {
            return Err(RegisterError::TagInUse);
        }
        if entries.len() >= cap {
            return Err(RegisterError::Full);
        }
        let ctl = Arc::new(RequestCtl::default());
        entries.insert(
            tag,
            Entry {
                ctl: ctl.clone(),
                waiters: Vec::new(),
                is_flush: false,
            },
        );
        Ok(ctl)
    }

    /// Handles Tflush `tag` of `oldtag`: cancels the old request and parks the flush on it,
    /// or hands the responder back to be answered at once.
    pub(super) fn flush(
        &self,
        tag: Tag,
        oldtag: Tag,
        responder: R,
    ) -> Result<FlushOutcome<R>, (RegisterError, R)> {
        let mut entries = self.entries.lock_unpoisoned();
        if entries.contains_key(&tag) {
            return Err((RegisterError::TagInUse, responder));
        }
        if oldtag == tag || !entries.contains_key(&oldtag) {
            return Ok(FlushOutcome::AnswerNow(responder));
        }
        if entries.len() > self.limit {
            // One slot of slack so a full session can still be flushed out of trouble.
            return Err((RegisterError::Full, responder));
        }
        let ctl = Arc::new(RequestCtl::default());
        entries.insert(
            tag,
            Entry {
                ctl,
                waiters: Vec::new(),
                is_flush: true,
            },
        );
        let old = entries.get_mut(&oldtag).expect("checked above");
        if !old.is_flush {
            old.ctl.cancel();
        }
        old.waiters.push(Waiter::Flush { tag, responder });
        Ok(FlushOutcome::Parked)
    }

    /// Ends the request `tag`: sends its reply with `reply` (if it has one), then answers
    /// what waited on it — `answer_flush` for each parked Tflush, in order, each of which
    /// is then ended in turn (a flush of that flush is answered right after it).
    ///
    /// All of it happens under the registry lock, which is what orders the wire: a Tflush
    /// of this tag either parked before (and is answered after the reply) or finds the tag
    /// gone (and is answered after everything here), and a new request reusing the tag
    /// (clients do so as soon as they see the reply) never finds the old entry.
    pub(super) fn finish(
        &self,
        tag: Tag,
        reply: impl FnOnce(),
        answer_flush: &mut dyn FnMut(Tag, R),
    ) {
        let mut entries = self.entries.lock_unpoisoned();
        let first = entries.remove(&tag);
        reply();
        let mut next: Vec<Vec<Waiter<R>>> = first.into_iter().map(|e| e.waiters).collect();
        while let Some(waiters) = next.pop() {
            // Answer in arrival order; each answered flush's own waiters come right after it.
            let mut after = Vec::new();
            for w in waiters {
                match w {
                    Waiter::Flush { tag, responder } => {
                        answer_flush(tag, responder);
                        if let Some(e) = entries.remove(&tag) {
                            after.push(e.waiters);
                        }
                    }
                    Waiter::Latch(l) => l.count_down(),
                }
            }
            next.extend(after.into_iter().rev());
        }
    }

    /// Cancels every request in flight but `except` (the Tversion doing this) and returns a
    /// latch that opens when all of them have ended.
    pub(super) fn cancel_all(&self, except: Option<Tag>) -> Arc<Latch> {
        let mut entries = self.entries.lock_unpoisoned();
        let n = entries.len() - except.map_or(0, |t| entries.contains_key(&t) as usize);
        let latch = Arc::new(Latch::new(n));
        for (_, e) in entries.iter_mut().filter(|(t, _)| Some(**t) != except) {
            if !e.is_flush {
                e.ctl.cancel();
            }
            e.waiters.push(Waiter::Latch(latch.clone()));
        }
        latch
    }
}
