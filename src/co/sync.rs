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

/// Locks `m`, ignoring poison.
///
/// The internal mutexes of `co` only guard short, non-panicking bookkeeping (waiter queues,
/// counters), so a poisoned lock still holds consistent data; refusing it would turn one
/// contained panic into a dead lock for every later user.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

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
