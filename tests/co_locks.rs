//! CoMutex, CoQueue and CoRwLock behaviour, stepped by hand so every interleaving is explicit.

#[macro_use]
mod common;

use co9p::co::{CoMutex, CoQueue, CoRwLock, Latch};
use common::Manual;
use std::cell::RefCell;

// ---- CoMutex ----

#[test]
fn mutex_try_lock_excludes_and_unlock_frees() {
    let m = CoMutex::new(5);
    let mut g = m.try_lock().expect("free mutex");
    *g += 1;
    assert!(m.is_locked());
    assert!(m.try_lock().is_none());
    drop(g);
    assert!(!m.is_locked());
    assert_eq!(*m.try_lock().unwrap(), 6);
    assert_eq!(m.into_inner(), 6);
}

#[test]
fn mutex_hands_over_in_fifo_order_without_barging() {
    let m = CoMutex::new(Vec::new());
    let order = RefCell::new(Vec::new());
    let holder = m.try_lock().unwrap();
    let mut waiters: Vec<_> = (0..3)
        .map(|i| {
            let (m, order) = (&m, &order);
            Manual::new(async move {
                let mut g = m.lock().await;
                g.push(i);
                order.borrow_mut().push(i);
            })
        })
        .collect();
    // Queue them in reverse, so FIFO order is 2, 1, 0.
    for w in waiters.iter_mut().rev() {
        assert!(!w.step());
    }
    drop(holder);
    // The lock went straight to waiter 2: nobody can barge in, though it has not run yet.
    assert!(m.try_lock().is_none());
    assert!(waiters[2].woken());
    assert!(!waiters[1].woken() && !waiters[0].woken());
    assert!(waiters[2].step());
    assert!(waiters[1].woken());
    assert!(waiters[1].step());
    assert!(waiters[0].step());
    assert_eq!(*order.borrow(), [2, 1, 0]);
    assert_eq!(*m.try_lock().unwrap(), [2, 1, 0]);
}

#[test]
fn mutex_waiter_cancelled_while_queued_leaves_the_queue() {
    let m = CoMutex::new(());
    let holder = m.try_lock().unwrap();
    let mut a = Manual::new(m.lock());
    let mut b = Manual::new(m.lock());
    pending!(a, b);
    a.cancel();
    drop(holder);
    assert!(b.woken(), "the lock skips the cancelled waiter");
    assert!(b.step());
    drop(b.out.take());
    assert!(m.try_lock().is_some());
}

#[test]
fn mutex_waiter_cancelled_after_handoff_passes_the_lock_on() {
    let m = CoMutex::new(());
    let holder = m.try_lock().unwrap();
    let mut a = Manual::new(m.lock());
    let mut b = Manual::new(m.lock());
    pending!(a, b);
    drop(holder);
    assert!(a.woken());
    assert!(!b.woken());
    a.cancel(); // granted but never ran
    assert!(b.woken());
    assert!(b.step());
    assert!(m.try_lock().is_none());
    drop(b.out.take());
    assert!(m.try_lock().is_some());
}

#[test]
fn mutex_last_waiter_cancelled_after_handoff_frees_the_lock() {
    let m = CoMutex::new(());
    let holder = m.try_lock().unwrap();
    let mut a = Manual::new(m.lock());
    assert!(!a.step());
    drop(holder);
    a.cancel();
    assert!(!m.is_locked());
    assert!(m.try_lock().is_some());
}

// ---- CoQueue ----

#[test]
fn queue_wait_releases_the_mutex_and_retakes_it_after_next() {
    let m = CoMutex::new(false);
    let q = CoQueue::new();
    let mut waiter = Manual::new(async {
        let mut g = m.lock().await;
        while !*g {
            g = q.wait(g).await;
        }
        "saw it"
    });
    assert!(!waiter.step());
    assert!(!q.is_empty());
    // The waiter released the mutex while waiting.
    let mut g = m.try_lock().expect("wait released the mutex");
    *g = true;
    assert!(q.next());
    assert!(q.is_empty());
    assert!(waiter.woken());
    // Woken, but the mutex is still ours: it must wait for it.
    assert!(!waiter.step());
    drop(g);
    assert!(waiter.woken());
    assert!(waiter.step());
    assert_eq!(waiter.out, Some("saw it"));
}

#[test]
fn queue_next_on_empty_queue_wakes_nobody() {
    let q = CoQueue::new();
    assert!(q.is_empty());
    assert!(!q.next());
    assert_eq!(q.restart_all(), 0);
}

#[test]
fn queue_next_wakes_in_fifo_order_and_restart_all_wakes_everyone() {
    let m = CoMutex::new(());
    let q = CoQueue::new();
    let mut ws: Vec<_> = (0..4)
        .map(|_| Manual::new(async { drop(q.wait(m.lock().await).await) }))
        .collect();
    for w in &mut ws {
        assert!(!w.step());
    }
    assert!(q.next());
    assert!(ws[0].woken() && !ws[1].woken());
    assert_eq!(q.restart_all(), 3);
    assert!(q.is_empty());
    for w in &mut ws {
        assert!(w.step());
    }
}

#[test]
fn queue_waiter_cancelled_while_waiting_leaves_the_queue() {
    let m = CoMutex::new(());
    let q = CoQueue::new();
    let mut w = Manual::new(async { drop(q.wait(m.lock().await).await) });
    assert!(!w.step());
    w.cancel();
    assert!(q.is_empty());
    assert!(!q.next());
    assert!(m.try_lock().is_some());
}

#[test]
fn queue_waiter_cancelled_after_next_passes_the_wakeup_on() {
    let m = CoMutex::new(());
    let q = CoQueue::new();
    let mut a = Manual::new(async { drop(q.wait(m.lock().await).await) });
    let mut b = Manual::new(async { drop(q.wait(m.lock().await).await) });
    pending!(a, b);
    assert!(q.next());
    a.cancel();
    assert!(b.woken(), "the wake-up went on to b");
    assert!(b.step());
}

#[test]
fn queue_waiter_cancelled_after_restart_all_passes_nothing_on() {
    let m = CoMutex::new(());
    let q = CoQueue::new();
    let mut a = Manual::new(async { drop(q.wait(m.lock().await).await) });
    assert!(!a.step());
    assert_eq!(q.restart_all(), 1);
    let mut late = Manual::new(async { drop(q.wait(m.lock().await).await) });
    assert!(!late.step());
    a.cancel();
    assert!(!late.woken());
    assert!(!q.is_empty());
}

// ---- CoRwLock ----

#[test]
fn rwlock_readers_share_and_writer_excludes() {
    let l = CoRwLock::new(1);
    let r1 = l.try_read().unwrap();
    let r2 = l.try_read().unwrap();
    assert_eq!(*r1 + *r2, 2);
    assert!(l.try_write().is_none());
    drop((r1, r2));
    let mut w = l.try_write().unwrap();
    *w = 7;
    assert!(l.try_read().is_none());
    drop(w);
    assert_eq!(*l.try_read().unwrap(), 7);
}

#[test]
fn rwlock_queued_writer_blocks_later_readers_then_readers_enter_together() {
    let l = CoRwLock::new(0);
    let r = l.try_read().unwrap();
    let mut w = Manual::new(async { *l.write().await += 1 });
    assert!(!w.step());
    assert!(l.try_read().is_none(), "a queued writer blocks new readers");
    let mut readers: Vec<_> = (0..3)
        .map(|_| Manual::new(async { *l.read().await }))
        .collect();
    for rd in &mut readers {
        assert!(!rd.step());
    }
    drop(r);
    assert!(w.woken());
    assert!(w.step());
    for rd in &mut readers {
        assert!(rd.woken());
    }
    // All three were admitted at once: each holds the lock before any releases it.
    let guards: Vec<_> = (0..3).map(|_| l.try_read()).collect();
    assert!(guards.iter().all(Option::is_some));
    for rd in &mut readers {
        assert!(rd.step());
        assert_eq!(rd.out, Some(1));
    }
}

#[test]
fn rwlock_cancelled_writer_lets_readers_behind_it_in() {
    let l = CoRwLock::new(());
    let r = l.try_read().unwrap();
    let mut w = Manual::new(l.write());
    let mut rd = Manual::new(l.read());
    pending!(w, rd);
    w.cancel();
    assert!(rd.woken());
    assert!(rd.step());
    drop(r);
}

#[test]
fn rwlock_writer_cancelled_after_grant_passes_it_on() {
    let l = CoRwLock::new(());
    let r = l.try_read().unwrap();
    let mut w1 = Manual::new(l.write());
    let mut w2 = Manual::new(l.write());
    pending!(w1, w2);
    drop(r);
    assert!(w1.woken());
    w1.cancel();
    assert!(w2.woken());
    assert!(w2.step());
    assert!(l.try_read().is_none());
    drop(w2.out.take());
    assert!(l.try_write().is_some());
}

#[test]
fn rwlock_sole_reader_upgrades_at_once_and_downgrade_admits_readers() {
    let l = CoRwLock::new(1);
    let r = l.try_read().unwrap();
    let mut up = Manual::new(r.upgrade());
    assert!(up.step(), "sole reader, nobody queued: immediate");
    let mut w = up.out.take().unwrap();
    *w = 2;
    let mut rd = Manual::new(async { *l.read().await });
    assert!(!rd.step());
    let r = w.downgrade();
    assert!(rd.woken());
    assert!(rd.step());
    assert_eq!(rd.out, Some(2));
    assert!(l.try_write().is_none());
    drop(r);
    assert!(l.try_write().is_some());
}

#[test]
fn rwlock_upgrade_waits_for_other_readers() {
    let l = CoRwLock::new(0);
    let other = l.try_read().unwrap();
    let mine = l.try_read().unwrap();
    let mut up = Manual::new(async { *mine.upgrade().await += 1 });
    assert!(!up.step());
    drop(other);
    assert!(up.woken());
    assert!(up.step());
    assert_eq!(*l.try_read().unwrap(), 1);
}

#[test]
fn rwlock_upgrade_dropped_while_queued_releases_everything() {
    let l = CoRwLock::new(());
    let other = l.try_read().unwrap();
    let mine = l.try_read().unwrap();
    let up = mine.upgrade();
    drop(up);
    drop(other);
    assert!(l.try_write().is_some());
}

#[test]
fn latch_blocks_a_thread_until_its_last_count_down() {
    let latch = std::sync::Arc::new(Latch::new(2));
    // Closed: a wait that may not block answers that it did not open.
    assert!(!latch.wait_timeout(std::time::Duration::ZERO));
    let waiter = {
        let latch = latch.clone();
        // The minute is only a bound against hanging: the count-downs below open it.
        std::thread::spawn(move || latch.wait_timeout(std::time::Duration::from_secs(60)))
    };
    latch.count_down();
    assert!(!latch.is_open());
    assert!(!latch.wait_timeout(std::time::Duration::ZERO));
    latch.count_down();
    assert!(waiter.join().unwrap(), "the waiter saw the latch open");
    assert!(latch.wait_timeout(std::time::Duration::ZERO));
}
