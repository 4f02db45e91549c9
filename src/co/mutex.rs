//! [`CoMutex`]: a fair mutex for coroutines.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::task::{Context, Poll};

use super::may_spin;
use super::sync::{AtomicUsize, LockExt, Mutex, Ordering, UnsafeCell, spin_loop};
use super::waitlist::{Cancelled, WaitList, wake_all};

/// The lock is held.
const LOCKED: usize = 1;
/// The waiter queue is non-empty; unlock must take the slow path and hand the lock over.
const QUEUED: usize = 2;

/// How many pauses (`spin_loop`) a locker spends at most looking at a lock held by another
/// thread before it queues and sleeps (see [`CoMutexLock::spin`]): QEMU's
/// `qemu_co_mutex_lock` spins up to 1000 times, a pause each.
#[cfg(not(loom))]
const SPIN_PAUSES: u32 = 1000;
/// The longest gap, in pauses, between two looks at the lock while spinning.
#[cfg(not(loom))]
const SPIN_GAP_MAX: u32 = 16;
/// Under loom two looks are enough to cover both outcomes of the spin (the lock freed
/// meanwhile, or not) without multiplying the interleavings to explore.
#[cfg(loom)]
const SPIN_PAUSES: u32 = 2;
#[cfg(loom)]
const SPIN_GAP_MAX: u32 = 1;

/// A mutex whose `lock` is a future, so a coroutine that must wait gives its thread to others.
///
/// Why not `std::sync::Mutex`: a request handler holding a lock across a filesystem call would
/// block the pool thread, and every other coroutine on it. Why not barging like most mutexes:
/// 9P ordering guarantees (e.g. a Tclunk barrier) need the first waiter to be the next owner,
/// so once anyone waits, unlock hands ownership *directly* to the head waiter (FIFO) and a
/// newcomer cannot sneak in between.
///
/// The uncontended path is a single compare-and-swap on an atomic word; only contention takes
/// the internal waiter list's lock. A locker that finds the lock held but nobody queued spins
/// a moment first when its thread has nothing else to run (QEMU's CoMutex does the same):
/// a critical section is usually far shorter than queueing, sleeping and being woken on
/// another thread. It takes the lock only when it is free and nobody is queued, so the
/// spin never barges past a waiter. It is built on [`std::task::Waker`] alone, so it works on
/// any executor.
///
/// Cancellation safety: dropping a [`CoMutexLock`] future while it is queued removes it from
/// the queue; dropping it after the lock was handed to it but before it ran passes the lock on
/// to the next waiter (or releases it).
// `repr(C)`, data right after the state word: a small value then shares the state's cache
// line, so passing the lock to another thread moves one line instead of two (Rust's own
// layout put the waiter list in between).
#[repr(C)]
pub struct CoMutex<T> {
    state: AtomicUsize,
    data: UnsafeCell<T>,
    waiters: Mutex<WaitList<()>>,
}

// SAFETY: the lock gives exclusive access to `data`, so sharing the mutex only requires that
// the value can be sent to whichever thread holds the lock.
unsafe impl<T: Send> Send for CoMutex<T> {}
// SAFETY: as above: only the holder of the lock reaches `data`, one thread at a time.
unsafe impl<T: Send> Sync for CoMutex<T> {}

impl<T> CoMutex<T> {
    /// Creates an unlocked mutex holding `value`.
    pub fn new(value: T) -> Self {
        Self {
            state: AtomicUsize::new(0),
            waiters: Mutex::new(WaitList::new()),
            data: UnsafeCell::new(value),
        }
    }

    /// Takes the lock if it is free and nobody is queued; never waits.
    #[inline]
    pub fn try_lock(&self) -> Option<CoMutexGuard<'_, T>> {
        self.try_lock_raw().then(|| CoMutexGuard::new(self))
    }

    /// `try_lock` without the guard: whether the lock is now ours.
    #[inline]
    fn try_lock_raw(&self) -> bool {
        self.state
            .compare_exchange(0, LOCKED, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// Returns a future that resolves to a guard once the lock is ours, in FIFO order.
    #[inline]
    pub fn lock(&self) -> CoMutexLock<'_, T> {
        CoMutexLock {
            mutex: self,
            ticket: None,
        }
    }

    /// Whether someone holds the lock (a snapshot, for assertions and diagnostics).
    pub fn is_locked(&self) -> bool {
        self.state.load(Ordering::Relaxed) & LOCKED != 0
    }

    /// Direct access when the mutex is not shared: `&mut self` proves nobody holds the lock.
    pub fn get_mut(&mut self) -> &mut T {
        // SAFETY: `&mut self` excludes every guard.
        unsafe { &mut *self.data.get() }
    }

    /// Consumes the mutex and returns its value.
    pub fn into_inner(self) -> T {
        self.data.into_inner()
    }

    /// Queues the caller, or takes the lock if it became free meanwhile (`None`).
    fn enqueue(&self, cx: &Context<'_>) -> Option<u64> {
        let mut w = self.waiters.lock_unpoisoned();
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            let (new, take) = if s == 0 {
                (LOCKED, true)
            } else {
                (s | QUEUED, false)
            };
            match self
                .state
                .compare_exchange_weak(s, new, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) if take => return None,
                Ok(_) => return Some(w.push((), Some(cx.waker()))),
                Err(now) => s = now,
            }
        }
    }

    /// Releases the lock: fast CAS when nobody waits, otherwise FIFO hand-off.
    #[inline]
    fn unlock(&self) {
        if self
            .state
            .compare_exchange(LOCKED, 0, Ordering::Release, Ordering::Relaxed)
            .is_err()
        {
            self.unlock_slow();
        }
    }

    #[cold]
    fn unlock_slow(&self) {
        let mut w = self.waiters.lock_unpoisoned();
        match w.grant_front() {
            Some(waker) => {
                // Ownership moves to the head waiter without the lock ever being free.
                if w.is_empty() {
                    self.state.store(LOCKED, Ordering::Relaxed);
                }
                drop(w);
                wake_all([waker]);
            }
            None => self.state.store(0, Ordering::Release),
        }
    }
}

impl<T: Default> Default for CoMutex<T> {
    fn default() -> Self {
        Self::new(T::default())
    }
}

impl<T> fmt::Debug for CoMutex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CoMutex")
            .field("locked", &self.is_locked())
            .finish_non_exhaustive()
    }
}

/// The future returned by [`CoMutex::lock`].
#[must_use = "futures do nothing unless awaited"]
pub struct CoMutexLock<'a, T> {
    mutex: &'a CoMutex<T>,
    /// Our place in the waiter queue once we had to wait.
    ticket: Option<u64>,
}

impl<'a, T> Future for CoMutexLock<'a, T> {
    type Output = CoMutexGuard<'a, T>;

    /// The uncontended case (one CAS) is inlined into the caller; waiting is out of line.
    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.ticket.is_none()
            && let Some(g) = self.mutex.try_lock()
        {
            return Poll::Ready(g);
        }
        self.poll_slow(cx)
    }
}

impl<'a, T> CoMutexLock<'a, T> {
    #[inline(never)]
    fn poll_slow(&mut self, cx: &Context<'_>) -> Poll<CoMutexGuard<'a, T>> {
        let mutex = self.mutex;
        match self.ticket {
            None if Self::spin(mutex) => Poll::Ready(CoMutexGuard::new(mutex)),
            None => match mutex.enqueue(cx) {
                None => Poll::Ready(CoMutexGuard::new(mutex)),
                Some(id) => {
                    self.ticket = Some(id);
                    Poll::Pending
                }
            },
            Some(id) => match mutex.waiters.lock_unpoisoned().poll_grant(id, cx.waker()) {
                Some(()) => {
                    self.ticket = None;
                    Poll::Ready(CoMutexGuard::new(mutex))
                }
                None => Poll::Pending,
            },
        }
    }

    /// Before queueing: waits up to [`SPIN_PAUSES`] pauses for the lock to come free while it
    /// is held with nobody queued, then takes it as `try_lock` does; `true` if taken.
    ///
    /// Why: without it, each hand-off between threads puts the locker to sleep and makes
    /// the unlocker wake it through its executor (a futex wake, then a context switch),
    /// microseconds against a critical section of nanoseconds. Why only then: once someone
    /// is queued the lock goes to them (FIFO), and a thread with other coroutines to run,
    /// or whose own coroutine may hold the lock, must not be kept from them (`may_spin`).
    ///
    /// The gap between looks doubles up to [`SPIN_GAP_MAX`] pauses: every look pulls the
    /// lock's cache line away from the holder, whose next lock or unlock must then fetch it
    /// back, so looking at every pause would slow down the very holder we wait for.
    #[inline(never)]
    fn spin(mutex: &CoMutex<T>) -> bool {
        let (mut paused, mut gap) = (0, 1);
        while paused < SPIN_PAUSES {
            let s = mutex.state.load(Ordering::Relaxed);
            if s == 0 {
                if mutex.try_lock_raw() {
                    return true;
                }
            } else if s & QUEUED != 0 || !may_spin() {
                return false;
            }
            for _ in 0..gap {
                spin_loop();
            }
            paused += gap;
            gap = (gap * 2).min(SPIN_GAP_MAX);
        }
        false
    }

    /// Leaves the queue (our future is dropped while waiting).
    #[cold]
    fn cancel(&self, id: u64) {
        let mut w = self.mutex.waiters.lock_unpoisoned();
        match w.cancel(id) {
            // The lock was handed to us but we will never run: pass it on.
            Some(Cancelled::Granted(())) => {
                drop(w);
                self.mutex.unlock();
            }
            Some(Cancelled::Removed(())) if w.is_empty() => {
                self.mutex.state.fetch_and(!QUEUED, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

impl<T> Drop for CoMutexLock<'_, T> {
    #[inline]
    fn drop(&mut self) {
        if let Some(id) = self.ticket {
            self.cancel(id);
        }
    }
}

/// Proof of holding a [`CoMutex`]; unlocks (handing over to the next waiter) on drop.
pub struct CoMutexGuard<'a, T> {
    pub(crate) mutex: &'a CoMutex<T>,
    /// Opt out of the auto traits; they are implemented below with the right bounds.
    _not_auto: PhantomData<*mut T>,
}

// SAFETY: a guard gives `&mut T`, so moving it needs `T: Send` and sharing it needs `T: Sync`;
// the lock itself has no thread affinity.
unsafe impl<T: Send> Send for CoMutexGuard<'_, T> {}
// SAFETY: a shared guard only gives `&T`.
unsafe impl<T: Sync> Sync for CoMutexGuard<'_, T> {}

impl<'a, T> CoMutexGuard<'a, T> {
    #[inline]
    fn new(mutex: &'a CoMutex<T>) -> Self {
        Self {
            mutex,
            _not_auto: PhantomData,
        }
    }
}

impl<T> Deref for CoMutexGuard<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: the guard proves we hold the lock.
        unsafe { &*self.mutex.data.get_shared() }
    }
}

impl<T> DerefMut for CoMutexGuard<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard proves we hold the lock, and `&mut self` that nobody else borrows it.
        unsafe { &mut *self.mutex.data.get() }
    }
}

impl<T> Drop for CoMutexGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        self.mutex.unlock();
    }
}

impl<T: fmt::Debug> fmt::Debug for CoMutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}
