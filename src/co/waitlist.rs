//! The FIFO of parked futures shared by [`CoMutex`](super::CoMutex),
//! [`CoQueue`](super::CoQueue) and [`CoRwLock`](super::CoRwLock).
//!
//! A waiter is identified by a ticket number rather than by an address, so a future may move
//! between polls and may be dropped at any time. Waking is two-step: the waker of the head is
//! *granted* (moved to a small side list, together with whatever it was granted) and woken
//! after the caller's lock is released; the future then collects its grant on its next poll.
//! A future dropped between the two steps finds its grant in [`WaitList::cancel`] and must pass
//! on what it was given, which is what makes every primitive cancellation-safe.

use std::collections::VecDeque;
use std::task::Waker;

struct Waiter<K> {
    id: u64,
    kind: K,
    waker: Option<Waker>,
}

/// What [`WaitList::cancel`] found for a ticket.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Cancelled<K> {
    /// The ticket had been granted with this kind; the caller owns what it was granted.
    Granted(K),
    /// The ticket was still queued and has been removed.
    Removed(K),
}

/// A FIFO of waiting futures, each with a kind (`()` for a mutex, read/write for a rwlock).
pub(crate) struct WaitList<K> {
    queue: VecDeque<Waiter<K>>,
    granted: Vec<(u64, K)>,
    next_id: u64,
}

impl<K: Copy> WaitList<K> {
    pub(crate) const fn new() -> Self {
        Self {
            queue: VecDeque::new(),
            granted: Vec::new(),
            next_id: 0,
        }
    }

    /// Queues a waiter at the tail and returns its ticket. `waker` may be `None` for a
    /// waiter enqueued eagerly before it was ever polled.
    pub(crate) fn push(&mut self, kind: K, waker: Option<&Waker>) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.queue.push_back(Waiter {
            id,
            kind,
            waker: waker.cloned(),
        });
        id
    }

    /// The kind of the head waiter.
    pub(crate) fn front(&self) -> Option<K> {
        self.queue.front().map(|w| w.kind)
    }

    /// Whether no waiter is queued (granted waiters do not count).
    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Grants the head waiter, recording `kind` as what it was given, and returns its waker
    /// for the caller to wake once its own lock is released.
    pub(crate) fn grant_front_as(&mut self, kind: K) -> Option<Option<Waker>> {
        let w = self.queue.pop_front()?;
        self.granted.push((w.id, kind));
        Some(w.waker)
    }

    /// Grants the head waiter with the kind it queued with.
    pub(crate) fn grant_front(&mut self) -> Option<Option<Waker>> {
        let kind = self.front()?;
        self.grant_front_as(kind)
    }

    /// The poll step of every waiting future: collects the grant for `id` if there is one,
    /// otherwise refreshes the stored waker so the right task is woken later.
    pub(crate) fn poll_grant(&mut self, id: u64, waker: &Waker) -> Option<K> {
        if let Some(i) = self.granted.iter().position(|&(g, _)| g == id) {
            return Some(self.granted.swap_remove(i).1);
        }
        if let Some(w) = self.queue.iter_mut().find(|w| w.id == id) {
            match &mut w.waker {
                Some(old) if old.will_wake(waker) => {}
                slot => *slot = Some(waker.clone()),
            }
        }
        None
    }

    /// Forgets ticket `id` because its future was dropped; says whether it had been granted.
    pub(crate) fn cancel(&mut self, id: u64) -> Option<Cancelled<K>> {
        if let Some(i) = self.granted.iter().position(|&(g, _)| g == id) {
            return Some(Cancelled::Granted(self.granted.swap_remove(i).1));
        }
        let i = self.queue.iter().position(|w| w.id == id)?;
        self.queue.remove(i).map(|w| Cancelled::Removed(w.kind))
    }
}

/// Wakes every waker in `wakers`; called after the lock that produced them is released.
pub(crate) fn wake_all(wakers: impl IntoIterator<Item = Option<Waker>>) {
    for w in wakers.into_iter().flatten() {
        w.wake();
    }
}
