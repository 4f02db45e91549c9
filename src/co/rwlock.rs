//! [`CoRwLock`]: a fair readers-writer lock for coroutines, with QEMU's upgrade/downgrade.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use super::sync::{LockExt, Mutex, UnsafeCell};
use super::waitlist::{Cancelled, WaitList, wake_all};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
}

/// The bookkeeping behind a [`CoRwLock`], as QEMU's `CoRwlock`: `owners` is the number of
/// readers, or -1 for a writer; `waiters` are the tickets in arrival order.
struct RwState {
    owners: isize,
    waiters: WaitList<Kind>,
}

impl RwState {
    /// Takes the lock at once if FIFO order allows it: nobody queued, and compatible owners.
    fn try_acquire(&mut self, kind: Kind) -> bool {
        if !self.waiters.is_empty() {
            return false;
        }
        match kind {
            Kind::Read if self.owners >= 0 => self.owners += 1,
            Kind::Write if self.owners == 0 => self.owners = -1,
            _ => return false,
        }
        true
    }

    fn release(&mut self, kind: Kind) {
        match kind {
            Kind::Read => {
                debug_assert!(self.owners > 0);
                self.owners -= 1;
            }
            Kind::Write => {
                debug_assert_eq!(self.owners, -1);
                self.owners = 0;
            }
        }
    }

    /// Grants the head of the queue while it is compatible with the current owners: a run of
    /// readers, or one writer. Granting here (rather than letting each woken reader wake the
    /// next, as QEMU does) keeps the chain intact when a woken reader is cancelled.
    fn admit(&mut self) -> Vec<Option<Waker>> {
        let mut wakers = Vec::new();
        loop {
            match self.waiters.front() {
                Some(Kind::Read) if self.owners >= 0 => self.owners += 1,
                Some(Kind::Write) if self.owners == 0 => self.owners = -1,
                _ => return wakers,
            }
            wakers.extend(self.waiters.grant_front());
        }
    }
}

/// A readers-writer lock whose acquisitions are futures, fair in arrival order.
///
/// Why fair: a stream of 9P reads must not starve a metadata update, so a queued writer blocks
/// every reader that arrives after it (QEMU's `CoRwlock` semantics). Readers queued behind a
/// writer are admitted together when it leaves.
///
/// [`CoRwLockReadGuard::upgrade`] and [`CoRwLockWriteGuard::downgrade`] follow
/// `qemu_co_rwlock_upgrade`/`downgrade`: an upgrade by the sole reader with nobody queued is
/// immediate; otherwise the reader gives up its read lock and queues as a writer *at the
/// tail*, so others may write in between (re-validate after upgrading). A downgrade is
/// immediate and admits the readers queued at the head.
///
/// Cancellation safety: a dropped acquisition leaves the queue (admitting whoever it was
/// blocking), and one dropped after being granted releases what it was granted.
pub struct CoRwLock<T> {
    state: Mutex<RwState>,
    data: UnsafeCell<T>,
}

// SAFETY: readers share `&T` across threads (needs `Sync`), a writer gets `&mut T` on any
// thread (needs `Send`).
unsafe impl<T: Send> Send for CoRwLock<T> {}
// SAFETY: as above: shared readers need `T: Sync`, a writer on another thread `T: Send`.
unsafe impl<T: Send + Sync> Sync for CoRwLock<T> {}

impl<T> CoRwLock<T> {
    /// Creates an unlocked lock holding `value`.
    pub fn new(value: T) -> Self {
        Self {
            state: Mutex::new(RwState {
                owners: 0,
                waiters: WaitList::new(),
            }),
            data: UnsafeCell::new(value),
        }
    }

    /// Shared access, after every writer queued before us.
    pub fn read(&self) -> CoRwLockRead<'_, T> {
        CoRwLockRead(Acquire::new(self, Kind::Read))
    }

    /// Exclusive access, after everyone queued before us.
    pub fn write(&self) -> CoRwLockWrite<'_, T> {
        CoRwLockWrite(Acquire::new(self, Kind::Write))
    }

    /// Shared access if available now without jumping the queue.
    pub fn try_read(&self) -> Option<CoRwLockReadGuard<'_, T>> {
        self.state
            .lock_unpoisoned()
            .try_acquire(Kind::Read)
            .then(|| CoRwLockReadGuard::new(self))
    }

    /// Exclusive access if available now.
    pub fn try_write(&self) -> Option<CoRwLockWriteGuard<'_, T>> {
        self.state
            .lock_unpoisoned()
            .try_acquire(Kind::Write)
            .then(|| CoRwLockWriteGuard::new(self))
    }

    /// Direct access when the lock is not shared.
    pub fn get_mut(&mut self) -> &mut T {
        // SAFETY: `&mut self` excludes every guard.
        unsafe { &mut *self.data.get() }
    }

    /// Consumes the lock and returns its value.
    pub fn into_inner(self) -> T {
        self.data.into_inner()
    }

    /// Releases `kind` and admits whoever that unblocks.
    fn release(&self, kind: Kind) {
        let wakers = {
            let mut st = self.state.lock_unpoisoned();
            st.release(kind);
            st.admit()
        };
        wake_all(wakers);
    }
}

impl<T: Default> Default for CoRwLock<T> {
    fn default() -> Self {
        Self::new(T::default())
    }
}

impl<T> fmt::Debug for CoRwLock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let owners = self.state.lock_unpoisoned().owners;
        f.debug_struct("CoRwLock")
            .field("owners", &owners)
            .finish_non_exhaustive()
    }
}

enum AcqState {
    Init,
    Queued(u64),
    /// Granted before being polled (an immediate upgrade).
    Held,
    Done,
}

/// The shared machinery of every rwlock acquisition future.
struct Acquire<'a, T> {
    lock: &'a CoRwLock<T>,
    kind: Kind,
    state: AcqState,
}

impl<'a, T> Acquire<'a, T> {
    fn new(lock: &'a CoRwLock<T>, kind: Kind) -> Self {
        Self {
            lock,
            kind,
            state: AcqState::Init,
        }
    }

    fn poll_acquire(&mut self, cx: &Context<'_>) -> Poll<()> {
        let granted = match self.state {
            AcqState::Init => {
                let mut st = self.lock.state.lock_unpoisoned();
                if st.try_acquire(self.kind) {
                    true
                } else {
                    self.state = AcqState::Queued(st.waiters.push(self.kind, Some(cx.waker())));
                    false
                }
            }
            AcqState::Queued(id) => self
                .lock
                .state
                .lock_unpoisoned()
                .waiters
                .poll_grant(id, cx.waker())
                .is_some(),
            AcqState::Held => true,
            AcqState::Done => panic!("CoRwLock future polled after completion"),
        };
        if granted {
            self.state = AcqState::Done;
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl<T> Drop for Acquire<'_, T> {
    fn drop(&mut self) {
        match self.state {
            AcqState::Held => self.lock.release(self.kind),
            AcqState::Queued(id) => {
                let wakers = {
                    let mut st = self.lock.state.lock_unpoisoned();
                    match st.waiters.cancel(id) {
                        Some(Cancelled::Granted(kind)) => st.release(kind),
                        Some(Cancelled::Removed(_)) | None => {}
                    }
                    // Leaving the queue may unblock those behind us, e.g. readers behind a
                    // cancelled writer.
                    st.admit()
                };
                wake_all(wakers);
            }
            AcqState::Init | AcqState::Done => {}
        }
    }
}

/// The future returned by [`CoRwLock::read`].
#[must_use = "futures do nothing unless awaited"]
pub struct CoRwLockRead<'a, T>(Acquire<'a, T>);

impl<'a, T> Future for CoRwLockRead<'a, T> {
    type Output = CoRwLockReadGuard<'a, T>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        this.0
            .poll_acquire(cx)
            .map(|()| CoRwLockReadGuard::new(this.0.lock))
    }
}

/// The future returned by [`CoRwLock::write`] and [`CoRwLockReadGuard::upgrade`].
#[must_use = "futures do nothing unless awaited"]
pub struct CoRwLockWrite<'a, T>(Acquire<'a, T>);

impl<'a, T> Future for CoRwLockWrite<'a, T> {
    type Output = CoRwLockWriteGuard<'a, T>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        this.0
            .poll_acquire(cx)
            .map(|()| CoRwLockWriteGuard::new(this.0.lock))
    }
}

/// Shared access to a [`CoRwLock`]; released on drop.
pub struct CoRwLockReadGuard<'a, T> {
    lock: &'a CoRwLock<T>,
    _not_auto: PhantomData<*const T>,
}

// SAFETY: a read guard only hands out `&T`.
unsafe impl<T: Sync> Send for CoRwLockReadGuard<'_, T> {}
// SAFETY: a read guard only hands out `&T`, shared or not.
unsafe impl<T: Sync> Sync for CoRwLockReadGuard<'_, T> {}

impl<'a, T> CoRwLockReadGuard<'a, T> {
    fn new(lock: &'a CoRwLock<T>) -> Self {
        Self {
            lock,
            _not_auto: PhantomData,
        }
    }

    /// Turns this read lock into a write lock, waiting for the other readers to leave.
    ///
    /// Immediate if we are the only reader and nobody is queued. Otherwise our read lock is
    /// released *now* and we queue as a writer at the tail (QEMU's semantics), so the data may
    /// change before the returned future resolves. Dropping the future is safe at any point.
    pub fn upgrade(self) -> CoRwLockWrite<'a, T> {
        let this = ManuallyDrop::new(self);
        let rw = this.lock;
        let mut acq = Acquire::new(rw, Kind::Write);
        let wakers = {
            let mut st = rw.state.lock_unpoisoned();
            if st.owners == 1 && st.waiters.is_empty() {
                st.owners = -1;
                acq.state = AcqState::Held;
                Vec::new()
            } else {
                st.owners -= 1;
                acq.state = AcqState::Queued(st.waiters.push(Kind::Write, None));
                st.admit()
            }
        };
        wake_all(wakers);
        CoRwLockWrite(acq)
    }
}

impl<T> Deref for CoRwLockReadGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard proves a read lock is held, so no writer exists.
        unsafe { &*self.lock.data.get_shared() }
    }
}

impl<T> Drop for CoRwLockReadGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.release(Kind::Read);
    }
}

/// Exclusive access to a [`CoRwLock`]; released on drop.
pub struct CoRwLockWriteGuard<'a, T> {
    lock: &'a CoRwLock<T>,
    _not_auto: PhantomData<*mut T>,
}

// SAFETY: as for a mutex guard.
unsafe impl<T: Send> Send for CoRwLockWriteGuard<'_, T> {}
// SAFETY: a shared write guard only gives `&T`.
unsafe impl<T: Sync> Sync for CoRwLockWriteGuard<'_, T> {}

impl<'a, T> CoRwLockWriteGuard<'a, T> {
    fn new(lock: &'a CoRwLock<T>) -> Self {
        Self {
            lock,
            _not_auto: PhantomData,
        }
    }

    /// Turns this write lock into a read lock without letting a writer in between, and admits
    /// the readers queued at the head (as `qemu_co_rwlock_downgrade`).
    pub fn downgrade(self) -> CoRwLockReadGuard<'a, T> {
        let this = ManuallyDrop::new(self);
        let rw = this.lock;
        let wakers = {
            let mut st = rw.state.lock_unpoisoned();
            debug_assert_eq!(st.owners, -1);
            st.owners = 1;
            st.admit()
        };
        wake_all(wakers);
        CoRwLockReadGuard::new(rw)
    }
}

impl<T> Deref for CoRwLockWriteGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard proves the write lock is held.
        unsafe { &*self.lock.data.get_shared() }
    }
}

impl<T> DerefMut for CoRwLockWriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard proves the write lock is held.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T> Drop for CoRwLockWriteGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.release(Kind::Write);
    }
}
