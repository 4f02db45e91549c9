//! QEMU's tests/unit/test-coroutine.c, carried over where they mean something for futures.
//!
//! QEMU enters coroutines by hand; here a thread-less `ThreadPool` runs them on the test
//! thread (`run_until_idle`, `block_on`), or `Manual` polls them one step at a time.

#[macro_use]
mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use co9p::co::{CoMutex, CoRwLock, Executor, PoolHandle, ThreadPool, spawn_handle, yield_now};
use common::Manual;

/// Test_yield: a coroutine that yields N times is entered N+1 times.
#[test]
fn yield_n_times_takes_n_plus_one_polls() {
    let pool = ThreadPool::new(0);
    let done = Arc::new(AtomicUsize::new(0));
    let d = done.clone();
    pool.spawn(async move {
        for _ in 0..5 {
            yield_now().await;
        }
        d.fetch_add(1, Ordering::SeqCst);
    });
    assert_eq!(pool.run_until_idle(), 6);
    assert_eq!(done.load(Ordering::SeqCst), 1);
}

/// Test_order: yields interleave runnable coroutines round-robin, in spawn order.
#[test]
fn yields_interleave_in_spawn_order() {
    let pool = ThreadPool::new(0);
    let log = Arc::new(Mutex::new(Vec::new()));
    for name in ["a", "b", "c"] {
        let (log, ex) = (log.clone(), pool.handle());
        pool.spawn(async move {
            for i in 0..3 {
                log.lock().unwrap().push(format!("{name}{i}"));
                ex.yield_now().await;
            }
        });
    }
    pool.run_until_idle();
    let log = log.lock().unwrap();
    assert_eq!(*log, ["a0", "b0", "c0", "a1", "b1", "c1", "a2", "b2", "c2"]);
}

/// Test_nesting: coroutines started from coroutines, 128 deep, each waiting for its child.
#[test]
fn nested_spawns_128_deep() {
    fn nest(ex: PoolHandle, depth: usize, max: Arc<AtomicUsize>) -> co9p::co::JoinHandle<usize> {
        let ex2 = ex.clone();
        spawn_handle(&ex, async move {
            max.fetch_max(depth, Ordering::SeqCst);
            if depth == 128 {
                depth
            } else {
                nest(ex2, depth + 1, max).await.unwrap()
            }
        })
    }
    let pool = ThreadPool::new(0);
    let max = Arc::new(AtomicUsize::new(0));
    let deepest = pool.block_on(nest(pool.handle(), 1, max.clone()));
    assert_eq!(deepest, Ok(128));
    assert_eq!(max.load(Ordering::SeqCst), 128);
}

/// Test_lifecycle: many coroutines created and finished; each future is destroyed once done.
#[test]
fn finished_coroutines_are_destroyed() {
    struct Live(Arc<AtomicUsize>);
    impl Drop for Live {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }
    let pool = ThreadPool::new(0);
    let live = Arc::new(AtomicUsize::new(0));
    for _ in 0..1000 {
        live.fetch_add(1, Ordering::SeqCst);
        let token = Live(live.clone());
        pool.spawn(async move {
            yield_now().await;
            drop(token);
        });
    }
    assert_eq!(live.load(Ordering::SeqCst), 1000);
    assert_eq!(pool.run_until_idle(), 2000);
    assert_eq!(live.load(Ordering::SeqCst), 0);
}

/// Test_co_mutex: coroutines that yield while holding the lock still take turns, in order.
#[test]
fn co_mutex_held_across_yields_serialises_coroutines() {
    let pool = ThreadPool::new(0);
    let m = Arc::new(CoMutex::new(Vec::new()));
    for id in 0..3 {
        let m = m.clone();
        pool.spawn(async move {
            for round in 0..2 {
                let mut g = m.lock().await;
                g.push((id, round, "in"));
                yield_now().await;
                g.push((id, round, "out"));
            }
        });
    }
    pool.run_until_idle();
    let log = m.try_lock().unwrap().clone();
    assert_eq!(log.len(), 12);
    for pair in log.chunks(2) {
        assert_eq!(
            (pair[0].0, pair[0].1),
            (pair[1].0, pair[1].1),
            "no overlap: {log:?}"
        );
        assert_eq!((pair[0].2, pair[1].2), ("in", "out"));
    }
    // FIFO hand-off: each waiter queued behind the holder gets the next turn.
    let turns: Vec<_> = log.iter().step_by(2).map(|e| e.0).collect();
    assert_eq!(turns, [0, 1, 2, 0, 1, 2]);
}

/// Test_co_mutex_lockable: the lock works through a generic "lockable" interface, here a
/// function generic over anything that derefs to the protected value.
#[test]
fn co_mutex_guard_is_a_generic_lockable() {
    fn bump(mut v: impl std::ops::DerefMut<Target = u32>) {
        *v += 1;
    }
    let m = CoMutex::new(0u32);
    bump(m.try_lock().unwrap());
    co9p::co::block_on(async { bump(m.lock().await) });
    assert!(!m.is_locked());
    assert_eq!(m.into_inner(), 2);
}

/// Test_co_rwlock_upgrade: a reader that yields and then upgrades goes behind a writer that
/// queued meanwhile; the writer finishes first, then the upgrade completes.
#[test]
fn co_rwlock_upgrade_queues_behind_waiting_writer() {
    let l = CoRwLock::new(Vec::new());
    let mut c1 = Manual::new(async {
        let r = l.read().await;
        yield_now().await;
        let mut w = r.upgrade().await;
        w.push("c1");
    });
    let mut c2 = Manual::new(async {
        let mut w = l.write().await;
        w.push("c2");
        yield_now().await;
    });
    assert!(!c1.step()); // read lock taken, yielded
    assert!(!c2.step()); // queued behind the reader
    assert!(!c1.step()); // upgrade: gives up the read lock, queues behind c2
    assert!(!c1.done());
    assert!(c2.woken());
    assert!(!c2.step()); // writes, yields holding the lock
    assert!(c2.step()); // releases: c1's upgrade is granted
    assert!(c1.woken());
    assert!(c1.step());
    assert_eq!(*l.try_read().unwrap(), ["c2", "c1"]);
}

/// Test_co_rwlock_downgrade: with readers and writers queued behind a reader, a writer that
/// downgrades lets the reader behind it in and nothing hangs.
#[test]
fn co_rwlock_downgrade_does_not_hang() {
    let l = CoRwLock::new(Vec::new());
    let log = std::cell::RefCell::new(Vec::new());
    let say = |s: &'static str| log.borrow_mut().push(s);
    let mut c1 = Manual::new(async {
        let r = l.read().await;
        yield_now().await;
        drop(r);
        say("c1 unlock");
        yield_now().await;
    });
    let mut c2 = Manual::new(async {
        let w = l.write().await;
        say("c2 wrlock");
        let r = w.downgrade();
        say("c2 downgrade");
        yield_now().await;
        drop(r);
        say("c2 unlock");
    });
    let mut c3 = Manual::new(async {
        let r = l.read().await;
        say("c3 rdlock");
        drop(r);
    });
    let mut c4 = Manual::new(async {
        let mut w = l.write().await;
        w.push("c4");
        say("c4 wrlock");
    });
    pending!(c1, c2, c3, c4);
    assert!(!c1.step()); // unlock, yield
    assert!(c2.woken() && !c3.woken() && !c4.woken());
    assert!(!c2.step()); // write, downgrade, yield holding a read lock
    assert!(c3.woken(), "downgrade admits the reader queued next");
    assert!(!c4.woken());
    assert!(c3.step());
    assert!(c2.step());
    assert!(c4.woken());
    assert!(c4.step());
    assert!(c1.step());
    assert_eq!(
        *log.borrow(),
        [
            "c1 unlock",
            "c2 wrlock",
            "c2 downgrade",
            "c3 rdlock",
            "c2 unlock",
            "c4 wrlock"
        ]
    );
}
