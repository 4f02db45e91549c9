//! The pool's task cell: one allocation per spawned coroutine, with a thin waker.
//!
//! A task is one heap cell, `Cell<F>`, whose first field is a non-generic [`Header`] with a
//! reference count. Queues and wakers hold a type-erased pointer to that header and reach the
//! future through a per-type vtable, so a waker is one pointer (no boxing of the future
//! separately from its bookkeeping, no `Arc<dyn>` fat pointers).
//!
//! Cells come in power-of-two size classes, and a finished task's cell goes to the cache of
//! the pool thread it finished on ([`TaskCache`]), so in steady state a spawn there reuses a
//! block: no malloc, no free, and no clone of the pool handle the block still holds.
//! While the running worker holds the only reference, nobody else can reach the task, so the
//! run loop skips the atomic read-modify-writes (see [`TaskRef::run`] and `release`).
//!
//! The state word has three bits. `SCHEDULED`: a reference is (or is about to be) in a run
//! queue. `RUNNING`: a worker is polling it; a wake-up meanwhile only sets `SCHEDULED` and the
//! worker re-queues the task after the poll. `COMPLETE`: the future is gone.

use std::alloc::{Layout, alloc, dealloc, handle_alloc_error};
use std::any::Any;
use std::cell::UnsafeCell;
use std::future::Future;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::ptr::{self, NonNull};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering, fence};
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};

use super::worker::{Shared, Worker, recycle, wake_self};

const SCHEDULED: usize = 1;
const RUNNING: usize = 2;
const COMPLETE: usize = 4;

/// Smallest cell block; blocks come in power-of-two classes from here.
const MIN_BLOCK: usize = 64;
/// Number of size classes (64 B to 4 KiB); larger futures get an exact allocation.
const CLASSES: usize = 7;
/// At most this many bytes of free blocks stay in one worker's cache.
pub(crate) const CACHE_BYTES: usize = 1 << 20;

/// The cache class of a cell with layout `l`, if it fits one.
const fn class_of(l: Layout) -> Option<usize> {
    if l.align() > 16 || l.size() > MIN_BLOCK << (CLASSES - 1) {
        return None;
    }
    let size = if l.size() < MIN_BLOCK {
        MIN_BLOCK
    } else {
        l.size().next_power_of_two()
    };
    Some((size.trailing_zeros() - MIN_BLOCK.trailing_zeros()) as usize)
}

/// The layout of every block of class `k`.
const fn class_layout(k: usize) -> Layout {
    match Layout::from_size_align(MIN_BLOCK << k, 16) {
        Ok(l) => l,
        Err(_) => panic!("bad size class"),
    }
}

pub(crate) struct Header {
    state: AtomicUsize,
    /// References: queue entries, the running worker's, and wakers.
    refs: AtomicUsize,
    vtable: &'static TaskVTable,
    /// Counted; stays in the block while it sits in a worker's cache (see [`TaskCache`]).
    pub(crate) shared: Arc<Shared>,
}

struct TaskVTable {
    poll: unsafe fn(NonNull<Header>, &mut Context<'_>) -> Poll<()>,
    drop_future: unsafe fn(NonNull<Header>),
    /// The cell's allocation, and its class in a worker's cache (`None`: not cached).
    layout: Layout,
    class: Option<usize>,
}

#[repr(C)]
struct Cell<F> {
    header: Header,
    future: UnsafeCell<Option<F>>,
}

struct VTable<F>(PhantomData<F>);

impl<F: Future<Output = ()> + Send + 'static> VTable<F> {
    const CLASS: Option<usize> = class_of(Layout::new::<Cell<F>>());
    const VTABLE: TaskVTable = TaskVTable {
        poll: Self::poll,
        drop_future: Self::drop_future,
        layout: match Self::CLASS {
            Some(k) => class_layout(k),
            None => Layout::new::<Cell<F>>(),
        },
        class: Self::CLASS,
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
        // SAFETY: the future lives in its heap cell until dropped there; it is never moved.
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
}

/// Most polls in a row of a task that keeps waking itself while nothing else is runnable
/// (see [`TaskRef::run`]).
const REPOLL_LIMIT: u32 = 64;

/// Free cell blocks of one worker (a pool thread's loop, or a `block_on`), by size class,
/// for its next spawns.
///
/// Every block keeps the header of the task that last used it, with its counted handle to
/// that task's pool, so a spawn on the same pool that reuses a block neither allocates nor
/// touches the pool's reference count. Only workers keep blocks, at most [`CACHE_BYTES`]
/// each, until they end; a pool's `Shared` (small once shut down) may thus outlive the pool
/// while a worker caches blocks of its tasks.
pub(crate) struct TaskCache {
    free: [Vec<NonNull<Header>>; CLASSES],
    bytes: usize,
    /// At most this many bytes of blocks are kept.
    limit: usize,
}

/// The cache limit of a helper worker (see `PoolHandle::run_here`): each of a transport's
/// reader threads (one per connection, for the first few) runs one, so each keeps only a
/// few blocks.
pub(crate) const HELPER_CACHE_BYTES: usize = 16 << 10;

impl TaskCache {
    pub(crate) const fn new() -> Self {
        Self {
            free: [const { Vec::new() }; CLASSES],
            bytes: 0,
            limit: CACHE_BYTES,
        }
    }

    /// Lowers (or raises) the most this cache keeps; blocks above it are freed.
    pub(crate) fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
        for (k, blocks) in self.free.iter_mut().enumerate() {
            while self.bytes > limit {
                let Some(block) = blocks.pop() else { break };
                self.bytes -= MIN_BLOCK << k;
                // SAFETY: as in `drop`: a cached block is ours alone, its future gone.
                unsafe {
                    ptr::drop_in_place(&raw mut (*block.as_ptr()).shared);
                    dealloc(block.as_ptr().cast(), class_layout(k));
                }
            }
        }
    }

    /// Keeps the block of a finished task whose future is gone; `false` when full.
    #[inline]
    pub(crate) fn put(&mut self, block: NonNull<Header>, class: usize) -> bool {
        let size = MIN_BLOCK << class;
        if self.bytes + size > self.limit {
            return false;
        }
        self.free[class].push(block);
        self.bytes += size;
        true
    }

    /// Bytes of blocks kept.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    /// Everything this cache holds, leaving it empty.
    pub(crate) fn take_all(&mut self) -> TaskCache {
        std::mem::replace(self, TaskCache::new())
    }

    /// Takes over `other`'s blocks, as many as fit; the rest are freed with `other`.
    pub(crate) fn absorb(&mut self, mut other: TaskCache) {
        for (k, blocks) in other.free.iter_mut().enumerate() {
            while let Some(b) = blocks.pop() {
                if !self.put(b, k) {
                    // Full: `other` frees this one and the rest when it drops.
                    blocks.push(b);
                    return;
                }
            }
        }
    }

    #[inline]
    pub(crate) fn take(&mut self, class: usize) -> Option<NonNull<Header>> {
        let block = self.free[class].pop()?;
        self.bytes -= MIN_BLOCK << class;
        Some(block)
    }
}

impl Drop for TaskCache {
    fn drop(&mut self) {
        for (k, blocks) in self.free.iter_mut().enumerate() {
            for block in blocks.drain(..) {
                // SAFETY: a cached block is an allocation of `class_layout(k)` whose header
                // is initialised and whose future is gone; nobody else refers to it.
                unsafe {
                    ptr::drop_in_place(&raw mut (*block.as_ptr()).shared);
                    dealloc(block.as_ptr().cast(), class_layout(k));
                }
            }
        }
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
    /// Makes a task of the pool `shared` for `fut`, already marked scheduled; the caller
    /// queues it. The cell is a block from `worker`'s cache (the one running on this thread,
    /// if any) when one of its class is free
    /// (whose pool handle is usually `shared` already), otherwise a new allocation.
    #[inline]
    pub(crate) fn new<F>(fut: F, shared: &Arc<Shared>, worker: Option<&Worker>) -> TaskRef
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let vtable = &VTable::<F>::VTABLE;
        let header = match vtable.class.and_then(|k| worker?.cache_take(k)) {
            Some(block) => {
                let h = block.as_ptr();
                // SAFETY: a cached block is ours alone, of `Cell<F>`'s class (so of its size
                // and alignment or more), with an initialised header whose other fields are
                // plain data.
                unsafe {
                    (&raw mut (*h).state).write(AtomicUsize::new(SCHEDULED));
                    (&raw mut (*h).refs).write(AtomicUsize::new(1));
                    (&raw mut (*h).vtable).write(vtable);
                    if !Arc::ptr_eq(&(*h).shared, shared) {
                        (*h).shared = shared.clone();
                    }
                }
                block
            }
            None => {
                // SAFETY: `vtable.layout` has a non-zero size (it holds a header).
                let h = unsafe { alloc(vtable.layout) }.cast::<Header>();
                let Some(block) = NonNull::new(h) else {
                    handle_alloc_error(vtable.layout)
                };
                // SAFETY: fresh memory of `Cell<F>`'s size and alignment (or more).
                unsafe {
                    h.write(Header {
                        state: AtomicUsize::new(SCHEDULED),
                        refs: AtomicUsize::new(1),
                        vtable,
                        shared: shared.clone(),
                    })
                };
                block
            }
        };
        // SAFETY: the block fits a `Cell<F>` and its header is initialised above.
        unsafe {
            (&raw mut (*header.cast::<Cell<F>>().as_ptr()).future).write(UnsafeCell::new(Some(fut)))
        };
        TaskRef(header)
    }

    #[inline]
    pub(crate) fn header(&self) -> &Header {
        // SAFETY: we own a reference, so the cell is alive.
        unsafe { self.0.as_ref() }
    }

    /// Polls the task once on `worker`. Panics are caught here: the future is dropped and
    /// reported.
    ///
    /// While our reference is the only one, no other thread can reach the task, so the state
    /// is then written with plain stores; a wake-up of the task by itself during its own
    /// poll (a yield) is noted by the worker instead of in the state word.
    #[inline]
    pub(crate) fn run(self, worker: &Worker) -> RunOutcome {
        let h = self.header();
        if h.refs.load(Ordering::Acquire) == 1 {
            h.state.store(RUNNING, Ordering::Relaxed);
        } else {
            h.state.swap(RUNNING, Ordering::AcqRel);
        }
        // A waker that borrows our reference: cloning it counts, using it by ref does not.
        // SAFETY: the vtable's functions treat the pointer as a counted task reference.
        let waker = ManuallyDrop::new(unsafe { Waker::from_raw(raw_waker(self.0)) });
        let mut cx = Context::from_waker(&waker);
        let (vt, ptr) = (h.vtable, self.0);
        // A task that woke itself (a yield) while nothing else is runnable on this thread
        // is polled again at once: requeueing it would only bring it straight back. The
        // bound keeps a `block_on` root (not a task) from waiting long.
        let mut again = 0;
        let (res, woke_self) = loop {
            worker.begin_poll(ptr.as_ptr());
            // SAFETY: RUNNING gives us exclusive access to the future.
            let res = catch_unwind(AssertUnwindSafe(|| unsafe { (vt.poll)(ptr, &mut cx) }));
            let woke_self = worker.end_poll();
            if woke_self
                && again < REPOLL_LIMIT
                && matches!(res, Ok(Poll::Pending))
                && worker.nothing_else_runnable()
            {
                again += 1;
                continue;
            }
            break (res, woke_self);
        };
        match res {
            Ok(Poll::Ready(())) => {
                h.state.store(COMPLETE, Ordering::Release);
                self.release_finished(worker);
                RunOutcome::Parked
            }
            Ok(Poll::Pending) => {
                let requeue = if h.refs.load(Ordering::Acquire) == 1 {
                    // Ours is the only reference (any other was dropped, after its wake-up,
                    // with Release): nobody else can touch the state now.
                    let scheduled = woke_self || h.state.load(Ordering::Relaxed) & SCHEDULED != 0;
                    let next = if scheduled { SCHEDULED } else { 0 };
                    h.state.store(next, Ordering::Relaxed);
                    scheduled
                } else if woke_self {
                    // Others may only add SCHEDULED meanwhile, which this sets anyway.
                    h.state.swap(SCHEDULED, Ordering::AcqRel);
                    true
                } else {
                    h.state.fetch_and(!RUNNING, Ordering::AcqRel) & SCHEDULED != 0
                };
                if requeue {
                    RunOutcome::Requeue(self)
                } else {
                    RunOutcome::Parked
                }
            }
            Err(payload) => {
                // The future may be in any state; dropping it may panic again, which we ignore.
                // SAFETY: this worker still holds the RUNNING bit, so it has the future alone;
                // COMPLETE, stored next, keeps anyone from polling or dropping it again.
                let _ = catch_unwind(AssertUnwindSafe(|| unsafe { (vt.drop_future)(ptr) }));
                h.state.store(COMPLETE, Ordering::Release);
                RunOutcome::Panicked(payload)
            }
        }
    }

    /// Gives up the running worker's reference to a task whose future is gone (it completed
    /// in this poll); the last reference puts the block straight into `worker`'s cache,
    /// without finding the worker again through the thread-local.
    #[inline]
    fn release_finished(self, worker: &Worker) {
        let ptr = ManuallyDrop::new(self).0;
        // SAFETY: we owned one reference (as in `release`).
        let h = unsafe { ptr.as_ref() };
        if h.refs.load(Ordering::Acquire) != 1 {
            if h.refs.fetch_sub(1, Ordering::Release) != 1 {
                return;
            }
            fence(Ordering::Acquire);
        }
        let vt = h.vtable;
        if let Some(k) = vt.class
            && worker.cache_put(ptr, k)
        {
            return;
        }
        // SAFETY: that was the last reference, and the future was dropped when it completed.
        unsafe { free_slow(ptr, vt.layout) }
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
    #[inline]
    fn drop(&mut self) {
        // SAFETY: we own one reference.
        unsafe { release(self.0) }
    }
}

/// Adds a reference to the task at `ptr`.
///
/// # Safety
/// The caller holds (or borrows) a reference, so the count is > 0.
#[inline]
unsafe fn acquire(ptr: NonNull<Header>) {
    // SAFETY: the caller's reference keeps the cell alive.
    let prev = unsafe { ptr.as_ref() }.refs.fetch_add(1, Ordering::Relaxed);
    if prev > isize::MAX as usize {
        // As `Arc`: a leak of that many wakers is a bug we must not let wrap around.
        std::process::abort();
    }
}

/// Gives up one reference; the last one drops the future (if still there) and frees the
/// cell or hands it to this thread's cache.
///
/// # Safety
/// The caller owns one reference to the task at `ptr` and does not use it afterwards.
#[inline]
unsafe fn release(ptr: NonNull<Header>) {
    // SAFETY: our reference keeps the cell alive until we give it up.
    let h = unsafe { ptr.as_ref() };
    // A count of 1 that we own is the last reference: nobody can clone it behind our back,
    // and every other holder's drop (Release) happened before this load (Acquire), so the
    // cell is ours without a read-modify-write.
    if h.refs.load(Ordering::Acquire) != 1 {
        if h.refs.fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        fence(Ordering::Acquire);
    }
    // SAFETY: that was the last reference.
    unsafe { free(ptr) }
}

/// # Safety
/// No reference to the task at `ptr` is left.
#[cold]
#[inline(never)]
unsafe fn free_slow(ptr: NonNull<Header>, layout: Layout) {
    // SAFETY: the caller's guarantee; the future is gone, so only the header needs dropping.
    unsafe {
        ptr::drop_in_place(&raw mut (*ptr.as_ptr()).shared);
        dealloc(ptr.as_ptr().cast(), layout);
    }
}

/// # Safety
/// No reference to the task at `ptr` is left.
#[inline]
unsafe fn free(ptr: NonNull<Header>) {
    // SAFETY: the cell is ours alone now.
    let h = unsafe { ptr.as_ref() };
    let vt = h.vtable;
    // SAFETY: no reference left, so nobody polls the future. Dropping it may run any code
    // (and panic, which leaks the cell, as `Arc` would), so do it before caching the block.
    unsafe { (vt.drop_future)(ptr) };
    if let Some(k) = vt.class
        && recycle(|cache| cache.put(ptr, k))
    {
        return;
    }
    // SAFETY: as above.
    unsafe { free_slow(ptr, vt.layout) }
}

static WAKER_VTABLE: RawWakerVTable =
    RawWakerVTable::new(waker_clone, waker_wake, waker_wake_by_ref, waker_drop);

fn raw_waker(ptr: NonNull<Header>) -> RawWaker {
    RawWaker::new(ptr.as_ptr() as *const (), &WAKER_VTABLE)
}

#[inline]
unsafe fn waker_clone(p: *const ()) -> RawWaker {
    // SAFETY: a waker's data pointer is always the non-null header of its task (raw_waker).
    let ptr = unsafe { NonNull::new_unchecked(p as *mut Header) };
    // SAFETY: the waker being cloned holds or borrows a reference.
    unsafe { acquire(ptr) };
    raw_waker(ptr)
}

#[inline]
unsafe fn waker_wake(p: *const ()) {
    // SAFETY: the waker's non-null header; waking by value hands its reference to `task`.
    let task = TaskRef(unsafe { NonNull::new_unchecked(p as *mut Header) });
    if TaskRef::transition_to_scheduled(task.header()) {
        Shared::schedule(task);
    }
}

#[inline]
unsafe fn waker_wake_by_ref(p: *const ()) {
    // SAFETY: the waker's non-null header (raw_waker).
    let ptr = unsafe { NonNull::new_unchecked(p as *mut Header) };
    // A task waking itself while it runs (a yield): the worker requeues it after the poll.
    if wake_self(ptr.as_ptr()) {
        return;
    }
    // SAFETY: the waker holds or borrows a reference, so the header is alive.
    let h = unsafe { ptr.as_ref() };
    if TaskRef::transition_to_scheduled(h) {
        // SAFETY: the waker holds or borrows a reference.
        unsafe { acquire(ptr) };
        Shared::schedule(TaskRef(ptr));
    }
}

#[inline]
unsafe fn waker_drop(p: *const ()) {
    // SAFETY: the waker's non-null header; dropping the waker gives back its reference.
    drop(TaskRef(unsafe { NonNull::new_unchecked(p as *mut Header) }));
}
