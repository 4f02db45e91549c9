//! Loom models of the coroutine locks (run with
//! `RUSTFLAGS="--cfg loom" cargo test --release --test loom`).
//!
//! Futures are driven by `loom::future::block_on` on loom threads, or polled by hand with a
//! no-op waker where a model needs a waiter queued at a known point.
#![cfg(loom)]

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Waker};

use co9p::co::{CoMutex, CoQueue, CoRwLock, yield_now};
use loom::future::block_on;
use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::thread;

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b.check(f);
}

type BoxFut = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A future that takes the mutex on its first poll and releases it on its second: a lock
/// holder that can be handed to another thread.
fn holder<T: Send + 'static>(m: &Arc<CoMutex<T>>) -> BoxFut {
    let m = m.clone();
    let mut f: BoxFut = Box::pin(async move {
        let _g = m.lock().await;
        yield_now().await;
    });
    assert!(!poll_once(&mut f));
    f
}

/// Polls once with a no-op waker (the model wakes nobody through it; it only needs a place in
/// the queue). Returns whether the future completed.
fn poll_once(f: &mut BoxFut) -> bool {
    f.as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
        .is_ready()
}

/// Two threads and the main thread lock one mutex; never two holders, no lost update.
#[test]
fn mutex_mutual_exclusion() {
    model(|| {
        let m = Arc::new(CoMutex::new(0usize));
        let inside = Arc::new(AtomicBool::new(false));
        let worker = |m: Arc<CoMutex<usize>>, inside: Arc<AtomicBool>| {
            move || {
                block_on(async {
                    let mut g = m.lock().await;
                    assert!(!inside.swap(true, Ordering::SeqCst));
                    *g += 1;
                    inside.store(false, Ordering::SeqCst);
                })
            }
        };
        let t1 = thread::spawn(worker(m.clone(), inside.clone()));
        let t2 = thread::spawn(worker(m.clone(), inside.clone()));
        worker(m.clone(), inside)();
        t1.join().unwrap();
        t2.join().unwrap();
        assert_eq!(*m.try_lock().unwrap(), 3);
    });
}

/// Waiters queued B then C get the lock in that order, and while the holder unlocks on another
/// thread nobody can barge in with `try_lock`.
#[test]
fn mutex_fifo_handoff_no_barging() {
    model(|| {
        let m = Arc::new(CoMutex::new(Vec::new()));
        let mut holder = holder(&m);
        let mk = |tag| -> BoxFut {
            let m = m.clone();
            Box::pin(async move { m.lock().await.push(tag) })
        };
        let (mut b, mut c) = (mk('b'), mk('c'));
        assert!(!poll_once(&mut b));
        assert!(!poll_once(&mut c));
        let t = thread::spawn(move || assert!(poll_once(&mut holder)));
        assert!(m.try_lock().is_none(), "a newcomer barged past the queue");
        t.join().unwrap();
        assert!(!poll_once(&mut c), "c must not overtake b");
        assert!(poll_once(&mut b));
        assert!(poll_once(&mut c));
        assert_eq!(*m.try_lock().unwrap(), ['b', 'c']);
    });
}

/// A queued waiter is cancelled while the holder unlocks concurrently: whether the lock had
/// reached it or not, the next waiter gets it, and afterwards the lock is free.
#[test]
fn mutex_cancel_while_queued_or_after_handoff_passes_lock_on() {
    model(|| {
        let m = Arc::new(CoMutex::new(0));
        let mut holder = holder(&m);
        let mk = || -> BoxFut {
            let m = m.clone();
            Box::pin(async move { *m.lock().await += 1 })
        };
        let (mut b, mut c) = (mk(), mk());
        assert!(!poll_once(&mut b));
        assert!(!poll_once(&mut c));
        let unlock = thread::spawn(move || assert!(poll_once(&mut holder)));
        let cancel = thread::spawn(move || drop(b));
        unlock.join().unwrap();
        cancel.join().unwrap();
        assert!(poll_once(&mut c), "the lock must reach c");
        assert_eq!(*m.try_lock().expect("lock free at the end"), 1);
    });
}

/// The only waiter is cancelled while the holder unlocks: the lock ends up free.
#[test]
fn mutex_sole_waiter_cancel_frees_lock() {
    model(|| {
        let m = Arc::new(CoMutex::new(()));
        let mut holder = holder(&m);
        let m2 = m.clone();
        let mut b: BoxFut = Box::pin(async move { drop(m2.lock().await) });
        assert!(!poll_once(&mut b));
        let unlock = thread::spawn(move || assert!(poll_once(&mut holder)));
        drop(b);
        unlock.join().unwrap();
        assert!(!m.is_locked());
        assert!(m.try_lock().is_some());
    });
}

/// CoQueue: a waiter checking a flag under the mutex and a setter calling `next` never lose
/// the wake-up (loom reports a deadlock if the waiter sleeps forever).
#[test]
fn queue_no_lost_wakeup() {
    model(|| {
        let m = Arc::new(CoMutex::new(false));
        let q = Arc::new(CoQueue::new());
        let (m2, q2) = (m.clone(), q.clone());
        let waiter = thread::spawn(move || {
            block_on(async {
                let mut g = m2.lock().await;
                while !*g {
                    g = q2.wait(g).await;
                }
            })
        });
        block_on(async {
            *m.lock().await = true;
            q.next();
        });
        waiter.join().unwrap();
    });
}

/// Two waiters, one `next`, and one waiter cancelled concurrently: the wake-up is not
/// swallowed by the cancelled waiter, so the survivor finishes.
#[test]
fn queue_cancelled_waiter_passes_wakeup_on() {
    model(|| {
        let m = Arc::new(CoMutex::new(()));
        let q = Arc::new(CoQueue::new());
        let mk = || -> BoxFut {
            let (m, q) = (m.clone(), q.clone());
            Box::pin(async move { drop(q.wait(m.lock().await).await) })
        };
        let (mut a, mut b) = (mk(), mk());
        assert!(!poll_once(&mut a));
        assert!(!poll_once(&mut b));
        let q2 = q.clone();
        let waker = thread::spawn(move || assert!(q2.next()));
        drop(a);
        waker.join().unwrap();
        assert!(
            q.is_empty(),
            "b was woken, whether or not a was picked first"
        );
        assert!(poll_once(&mut b));
    });
}

/// A reader holds the lock, a writer queues, then a second reader arrives: the writer goes
/// first (no starvation), and the lock is released cleanly.
#[test]
fn rwlock_writer_not_starved() {
    model(|| {
        let l = Arc::new(CoRwLock::new(Vec::new()));
        let l1 = l.clone();
        let mut r1: BoxFut = Box::pin(async move {
            let _r = l1.read().await;
            yield_now().await;
        });
        assert!(!poll_once(&mut r1));
        let log = Arc::new(AtomicUsize::new(0));
        let (l2, log2) = (l.clone(), log.clone());
        let mut w: BoxFut = Box::pin(async move {
            let mut g = l2.write().await;
            g.push('w');
            log2.fetch_add(1, Ordering::SeqCst);
        });
        assert!(!poll_once(&mut w));
        let (l3, log3) = (l.clone(), log.clone());
        let reader = thread::spawn(move || {
            block_on(async {
                let r = l3.read().await;
                // The writer must have finished before any later reader gets in.
                assert_eq!(log3.load(Ordering::SeqCst), 1);
                assert_eq!(*r, ['w']);
            })
        });
        let releaser = thread::spawn(move || assert!(poll_once(&mut r1)));
        block_on(w);
        releaser.join().unwrap();
        reader.join().unwrap();
        assert!(l.try_write().is_some());
    });
}

/// Upgrade and downgrade racing a writer and a reader: no deadlock, both writes land, and
/// the downgraded guard sees at least its own write.
#[test]
fn rwlock_upgrade_downgrade() {
    model(|| {
        let l = Arc::new(CoRwLock::new(0usize));
        let l2 = l.clone();
        let up = thread::spawn(move || {
            block_on(async {
                let r = l2.read().await;
                let mut w = r.upgrade().await;
                *w += 1;
                let r = w.downgrade();
                assert!(*r >= 1);
            })
        });
        let l3 = l.clone();
        let writer = thread::spawn(move || {
            block_on(async { *l3.write().await += 10 });
        });
        block_on(async {
            let r = l.read().await;
            assert!([0, 1, 10, 11].contains(&*r));
        });
        up.join().unwrap();
        writer.join().unwrap();
        assert_eq!(*l.try_read().unwrap(), 11);
    });
}
