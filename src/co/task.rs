//! The pool's task cell: one allocation per spawned coroutine, with a thin waker.
//!
//! A task is an `Arc<Cell<F>>` whose first field is a non-generic [`Header`]. Queues and wakers
//! hold a type-erased pointer to that header and reach the future through a per-type vtable,
//! so spawning costs one allocation and a waker is one pointer (no boxing of the future
//! separately from its bookkeeping, no `Arc<dyn>` fat pointers).
//!
//! The state word has three bits. `SCHEDULED`: a reference is (or is about to be) in a run
//! queue. `RUNNING`: a worker is polling it; a wake-up meanwhile only sets `SCHEDULED` and the
//! worker re-queues the task after the poll. `COMPLETE`: the future is gone.

use std::any::Any;
use std::cell::UnsafeCell;
use std::future::Future;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};

use super::worker::Shared;

const SCHEDULED: usize = 1;
const RUNNING: usize = 2;
const COMPLETE: usize = 4;

pub(crate) struct Header {
    state: AtomicUsize,
    vtable: &'static TaskVTable,
    pub(crate) shared: Arc<Shared>,
}

struct TaskVTable {
    poll: unsafe fn(NonNull<Header>, &mut Context<'_>) -> Poll<()>,
    drop_future: unsafe fn(NonNull<Header>),
    inc: unsafe fn(NonNull<Header>),
    dec: unsafe fn(NonNull<Header>),
}

#[repr(C)]
struct Cell<F> {
    header: Header,
    future: UnsafeCell<Option<F>>,
}

struct VTable<F>(PhantomData<F>);

impl<F: Future<Output = ()> + Send + 'static> VTable<F> {
    const VTABLE: TaskVTable = TaskVTable {
        poll: Self::poll,
        drop_future: Self::drop_future,
        inc: Self::inc,
        dec: Self::dec,
    };

    /// # Safety
    /// The caller has exclusive access to the future (the `RUNNING` bit).
    unsafe fn poll(ptr: NonNull<Header>, cx: &mut Context<'_>) -> Poll<()> {
        // SAFETY: the header is the first field of a live `Cell<F>` (repr(C)), and the caller
        // guarantees exclusive access; the future never moves out of its heap cell.
        let slot = unsafe { &mut *ptr.cast::<Cell<F>>().as_ref().future.get() };
        let Some(fut) = slot.as_mut() else {
            return Poll::Ready(());
        };
        let res = unsafe { Pin::new_unchecked(fut) }.poll(cx);
        if res.is_ready() {
            // `take` first, so a panicking destructor cannot leave a half-dropped future.
            drop(slot.take());
        }
        res
    }

    /// # Safety
    /// As for `poll`.
    unsafe fn drop_future(ptr: NonNull<Header>) {
        // SAFETY: as in `poll`.
        let slot = unsafe { &mut *ptr.cast::<Cell<F>>().as_ref().future.get() };
        drop(slot.take());
    }

    unsafe fn inc(ptr: NonNull<Header>) {
        // SAFETY: `ptr` came from `Arc::into_raw` of a `Cell<F>` whose count is > 0.
        unsafe { Arc::increment_strong_count(ptr.cast::<Cell<F>>().as_ptr()) }
    }

    unsafe fn dec(ptr: NonNull<Header>) {
        // SAFETY: as in `inc`; the caller gives up one reference.
        unsafe { Arc::decrement_strong_count(ptr.cast::<Cell<F>>().as_ptr()) }
    }
}

/// An owned, counted reference to a task.
pub(crate) struct TaskRef(NonNull<Header>);

// SAFETY: the future is `Send`, and the header is only touched through atomics and `Arc`.
unsafe impl Send for TaskRef {}

/// How one poll of a task ended, for the worker's bookkeeping.
pub(crate) enum RunOutcome {
    /// Done, or waiting for a wake-up; nothing more to do.
    Parked,
    /// Woken while it ran: the reference must go back into a run queue.
    Requeue(TaskRef),
    /// The future panicked; it has been dropped.
    Panicked(Box<dyn Any + Send>),
}

impl TaskRef {
    /// Allocates a task for `fut`, already marked scheduled; the caller queues it.
    pub(crate) fn new<F>(fut: F, shared: Arc<Shared>) -> TaskRef
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let cell = Arc::new(Cell {
            header: Header {
                state: AtomicUsize::new(SCHEDULED),
                vtable: &VTable::<F>::VTABLE,
                shared,
            },
            future: UnsafeCell::new(Some(fut)),
        });
        // SAFETY: `Arc::into_raw` is never null.
        TaskRef(unsafe { NonNull::new_unchecked(Arc::into_raw(cell) as *mut Header) })
    }

    #[inline]
    pub(crate) fn header(&self) -> &Header {
        // SAFETY: we own a reference, so the cell is alive.
        unsafe { self.0.as_ref() }
    }

    /// Polls the task once. Panics are caught here: the future is dropped and reported.
    #[inline]
    pub(crate) fn run(self) -> RunOutcome {
        let h = self.header();
        h.state.swap(RUNNING, Ordering::AcqRel);
        // A waker that borrows our reference: cloning it counts, using it by ref does not.
        let waker = ManuallyDrop::new(unsafe { Waker::from_raw(raw_waker(self.0)) });
        let mut cx = Context::from_waker(&waker);
        let (vt, ptr) = (h.vtable, self.0);
        // SAFETY: RUNNING gives us exclusive access to the future.
        match catch_unwind(AssertUnwindSafe(|| unsafe { (vt.poll)(ptr, &mut cx) })) {
            Ok(Poll::Ready(())) => {
                h.state.store(COMPLETE, Ordering::Release);
                RunOutcome::Parked
            }
            Ok(Poll::Pending) => {
                let prev = h.state.fetch_and(!RUNNING, Ordering::AcqRel);
                if prev & SCHEDULED != 0 {
                    RunOutcome::Requeue(self)
                } else {
                    RunOutcome::Parked
                }
            }
            Err(payload) => {
                // The future may be in any state; dropping it may panic again, which we ignore.
                let _ = catch_unwind(AssertUnwindSafe(|| unsafe { (vt.drop_future)(ptr) }));
                h.state.store(COMPLETE, Ordering::Release);
                RunOutcome::Panicked(payload)
            }
        }
    }

    /// Drops the future without polling it (pool shut down). The caller holds the queued
    /// reference, so nobody is polling the task.
    pub(crate) fn cancel(self) {
        let h = self.header();
        let vt = h.vtable;
        // SAFETY: a queued task is not RUNNING, so we have exclusive access.
        let _ = catch_unwind(AssertUnwindSafe(|| unsafe { (vt.drop_future)(self.0) }));
        h.state.store(COMPLETE, Ordering::Release);
    }

    /// Marks the task scheduled; returns whether the caller must queue a new reference.
    #[inline]
    fn transition_to_scheduled(h: &Header) -> bool {
        h.state.fetch_or(SCHEDULED, Ordering::AcqRel) & (SCHEDULED | RUNNING | COMPLETE) == 0
    }
}

impl Drop for TaskRef {
    fn drop(&mut self) {
        let vt = self.header().vtable;
        // SAFETY: we own one reference.
        unsafe { (vt.dec)(self.0) }
    }
}

static WAKER_VTABLE: RawWakerVTable =
    RawWakerVTable::new(waker_clone, waker_wake, waker_wake_by_ref, waker_drop);

fn raw_waker(ptr: NonNull<Header>) -> RawWaker {
    RawWaker::new(ptr.as_ptr() as *const (), &WAKER_VTABLE)
}

#[inline]
unsafe fn waker_clone(p: *const ()) -> RawWaker {
    let ptr = unsafe { NonNull::new_unchecked(p as *mut Header) };
    unsafe { (ptr.as_ref().vtable.inc)(ptr) };
    raw_waker(ptr)
}

#[inline]
unsafe fn waker_wake(p: *const ()) {
    let task = TaskRef(unsafe { NonNull::new_unchecked(p as *mut Header) });
    if TaskRef::transition_to_scheduled(task.header()) {
        Shared::schedule(task);
    }
}

#[inline]
unsafe fn waker_wake_by_ref(p: *const ()) {
    let ptr = unsafe { NonNull::new_unchecked(p as *mut Header) };
    let h = unsafe { ptr.as_ref() };
    if TaskRef::transition_to_scheduled(h) {
        unsafe { (h.vtable.inc)(ptr) };
        Shared::schedule(TaskRef(ptr));
    }
}

#[inline]
unsafe fn waker_drop(p: *const ()) {
    drop(TaskRef(unsafe { NonNull::new_unchecked(p as *mut Header) }));
}
