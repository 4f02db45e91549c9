//! The synchronisation primitives the `co` module is built from.
//!
//! Everything in [`crate::co`] that must be model-checked imports its atomics, `Arc` and
//! `Mutex` from here instead of from `std`. Under `RUSTFLAGS="--cfg loom"` these names resolve
//! to loom's instrumented versions, so `tests/loom.rs` explores every interleaving of the real
//! code rather than of a copy.

#[cfg(loom)]
pub use loom::hint::spin_loop;
#[cfg(loom)]
pub use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
#[cfg(loom)]
pub use loom::sync::{Arc, Mutex, MutexGuard};

#[cfg(not(loom))]
pub use std::hint::spin_loop;
#[cfg(not(loom))]
pub use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
#[cfg(not(loom))]
pub use std::sync::{Arc, Mutex, MutexGuard};

/// Locking that carries on past poison, for every mutex of the crate (std's, and loom's
/// under loom).
///
/// Every critical section in co9p keeps its data consistent at each step (short bookkeeping:
/// waiter queues, counters, tables checked before they change), so a mutex a panicking
/// holder poisoned still holds consistent data; refusing it would turn one contained panic
/// (a handler's is caught and counted) into a dead lock for every later user.
pub(crate) trait LockExt {
    /// What locking gives.
    type Guard<'a>
    where
        Self: 'a;
    /// Locks, ignoring poison.
    fn lock_unpoisoned(&self) -> Self::Guard<'_>;
}

/// `LockExt` for the `Mutex` of `$sync` (std's or loom's, whose guards differ).
macro_rules! lock_ext {
    ($($sync:ident)::+) => {
        impl<T> LockExt for $($sync)::+::Mutex<T> {
            type Guard<'a>
                = $($sync)::+::MutexGuard<'a, T>
            where
                Self: 'a;
            #[inline]
            fn lock_unpoisoned(&self) -> Self::Guard<'_> {
                self.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
            }
        }
    };
}

lock_ext!(std::sync);
#[cfg(loom)]
lock_ext!(loom::sync);

/// An `UnsafeCell` with the same interface under std and loom.
///
/// Loom's cell tracks accesses through closures; the lock guards hand out plain references,
/// so under loom the pointer is taken with `with_mut` and escapes the tracking. Mutual
/// exclusion is still checked by the loom models through the lock's atomics and by explicit
/// "inside" flags in the tests.
pub(crate) struct UnsafeCell<T> {
    #[cfg(loom)]
    inner: loom::cell::UnsafeCell<T>,
    #[cfg(not(loom))]
    inner: core::cell::UnsafeCell<T>,
}

impl<T> UnsafeCell<T> {
    pub(crate) fn new(value: T) -> Self {
        Self {
            #[cfg(loom)]
            inner: loom::cell::UnsafeCell::new(value),
            #[cfg(not(loom))]
            inner: core::cell::UnsafeCell::new(value),
        }
    }

    pub(crate) fn into_inner(self) -> T {
        self.inner.into_inner()
    }

    /// A pointer for shared reads (loom records a read access); the caller upholds the
    /// aliasing rules.
    pub(crate) fn get_shared(&self) -> *const T {
        #[cfg(loom)]
        {
            self.inner.with(|p| p)
        }
        #[cfg(not(loom))]
        {
            self.inner.get()
        }
    }

    /// A pointer for exclusive access (loom records a write access); the caller upholds the
    /// aliasing rules.
    pub(crate) fn get(&self) -> *mut T {
        #[cfg(loom)]
        {
            self.inner.with_mut(|p| p)
        }
        #[cfg(not(loom))]
        {
            self.inner.get()
        }
    }
}
