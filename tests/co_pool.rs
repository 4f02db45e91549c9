//! The production thread pool: threads, shutdown, panics, timers, and a multi-thread stress
//! test after QEMU's test-aio-multithread.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use co9p::co::{CoMutex, CoQueue, Executor, JoinError, ThreadPool, block_on, yield_now};

struct SetOnDrop(Arc<AtomicBool>);
impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[test]
fn spawn_handle_returns_output_from_pool_threads() {
    let pool = ThreadPool::new(2);
    let handles: Vec<_> = (0..50u64)
        .map(|i| {
            pool.spawn_handle(async move {
                yield_now().await;
                i * i
            })
        })
        .collect();
    let sum: u64 = handles.into_iter().map(|h| block_on(h).unwrap()).sum();
    assert_eq!(sum, (0..50u64).map(|i| i * i).sum::<u64>());
}

#[test]
fn block_on_runs_pool_tasks_on_the_calling_thread() {
    let pool = ThreadPool::new(0);
    let h = pool.spawn_handle(async { std::thread::current().id() });
    assert_eq!(pool.block_on(h), Ok(std::thread::current().id()));
}

#[test]
fn panicking_coroutine_is_contained_and_counted() {
    // No threads: the panic is caught and counted on this thread before `block_on` returns.
    let pool = ThreadPool::new(0);
    let bad = pool.spawn_handle(async {
        yield_now().await;
        panic!("boom");
    });
    assert_eq!(pool.block_on(bad), Err(JoinError::Panicked));
    assert_eq!(pool.panics(), 1);
    // The pool still works.
    assert_eq!(pool.block_on(pool.spawn_handle(async { 7 })), Ok(7));
}

#[test]
fn shutdown_drops_queued_tasks_and_later_spawns() {
    let pool = ThreadPool::new(0);
    let handle = pool.handle();
    let dropped = Arc::new(AtomicBool::new(false));
    let token = SetOnDrop(dropped.clone());
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    let join = pool.spawn_handle(async move {
        let _token = token;
        r.store(true, Ordering::SeqCst);
    });
    pool.shutdown();
    assert!(dropped.load(Ordering::SeqCst));
    assert!(!ran.load(Ordering::SeqCst));
    assert_eq!(block_on(join), Err(JoinError::Cancelled));

    let late = Arc::new(AtomicBool::new(false));
    let token = SetOnDrop(late.clone());
    handle.spawn(async move { drop(token) });
    assert!(
        late.load(Ordering::SeqCst),
        "spawn after shutdown drops the future"
    );
}

#[test]
fn parked_task_is_dropped_when_woken_after_shutdown() {
    let pool = ThreadPool::new(1);
    let m = Arc::new(CoMutex::new(false));
    let q = Arc::new(CoQueue::new());
    let dropped = Arc::new(AtomicBool::new(false));
    let (m2, q2, token) = (m.clone(), q.clone(), SetOnDrop(dropped.clone()));
    let started = pool.spawn_handle(async move {
        let _token = token;
        let mut g = m2.lock().await;
        while !*g {
            g = q2.wait(g).await;
        }
    });
    while q.is_empty() {
        std::thread::yield_now();
    }
    pool.shutdown();
    assert!(!dropped.load(Ordering::SeqCst));
    assert!(q.next());
    assert!(dropped.load(Ordering::SeqCst));
    assert_eq!(block_on(started), Err(JoinError::Cancelled));
}

/// A task woken after shutdown is dropped by that wake-up, even while another of its wakers
/// still exists (the wake-up's own reference is not the last one).
#[test]
fn task_woken_after_shutdown_is_dropped_then_though_another_waker_remains() {
    let pool = ThreadPool::new(1);
    let q = Arc::new(CoQueue::new());
    let m = Arc::new(CoMutex::new(()));
    let spare: Arc<std::sync::Mutex<Option<std::task::Waker>>> = Arc::default();
    let dropped = Arc::new(AtomicBool::new(false));
    let (q2, m2, spare2, token) = (
        q.clone(),
        m.clone(),
        spare.clone(),
        SetOnDrop(dropped.clone()),
    );
    pool.spawn(async move {
        let _token = token;
        std::future::poll_fn(|cx| {
            *spare2.lock().unwrap() = Some(cx.waker().clone());
            std::task::Poll::Ready(())
        })
        .await;
        let g = m2.lock().await;
        let _g = q2.wait(g).await;
    });
    while q.is_empty() {
        std::thread::yield_now();
    }
    pool.shutdown();
    assert!(spare.lock().unwrap().is_some());
    assert!(!dropped.load(Ordering::SeqCst));
    assert!(q.next());
    assert!(
        dropped.load(Ordering::SeqCst),
        "the wake-up after shutdown dropped the future"
    );
}

/// `shutdown` joins the pool's threads: a task running on one when it is called has
/// finished its poll by the time it returns.
#[test]
fn shutdown_returns_after_the_running_task_has_finished() {
    let pool = ThreadPool::new(1);
    let (started_tx, started) = std::sync::mpsc::channel();
    let finished = Arc::new(AtomicBool::new(false));
    let f = finished.clone();
    pool.spawn(async move {
        started_tx.send(()).unwrap();
        // Blocks the pool's thread: shutdown cannot stop this poll, only wait for it.
        std::thread::sleep(Duration::from_millis(100));
        f.store(true, Ordering::SeqCst);
    });
    started.recv().unwrap();
    pool.shutdown();
    assert!(finished.load(Ordering::SeqCst));
}

/// A task left pending with no waker anywhere (its future kept none, no handle holds it) can
/// never be woken: it is polled once and dropped, never requeued to spin.
#[test]
fn a_task_nobody_can_wake_is_polled_once_then_dropped() {
    let pool = ThreadPool::new(0);
    let polls = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicBool::new(false));
    let (p, flag) = (polls.clone(), SetOnDrop(dropped.clone()));
    pool.spawn(std::future::poll_fn(move |_cx| {
        let _keep = &flag;
        // Ends after 100 polls, so a pool that spins on it fails the test, not hangs it.
        if p.fetch_add(1, Ordering::SeqCst) + 1 >= 100 {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    }));
    assert_eq!(pool.run_until_idle(), 1, "one poll, then the pool is idle");
    assert_eq!(polls.load(Ordering::SeqCst), 1);
    assert!(
        dropped.load(Ordering::SeqCst),
        "the unwakeable task was dropped"
    );
}

/// `run_until_idle` runs every task to completion on the calling thread, waiting for timers,
/// and counts its polls: two for a task that yields once, two for one that sleeps.
#[test]
fn run_until_idle_runs_every_task_and_counts_its_polls() {
    let pool = ThreadPool::new(0);
    let done = Arc::new(AtomicUsize::new(0));
    for _ in 0..3 {
        let d = done.clone();
        pool.spawn(async move {
            yield_now().await;
            d.fetch_add(1, Ordering::SeqCst);
        });
    }
    // And one that sleeps, so the calling thread drains twice: before and after the timer.
    let (d, ex) = (done.clone(), pool.handle());
    pool.spawn(async move {
        ex.sleep(Duration::from_millis(1)).await;
        d.fetch_add(1, Ordering::SeqCst);
    });
    let polls = pool.run_until_idle();
    assert_eq!(done.load(Ordering::SeqCst), 4);
    assert_eq!(polls, 8, "two polls for each task");
}

#[test]
fn sleep_waits_at_least_its_duration_and_timers_fire_in_order() {
    let pool = ThreadPool::new(0);
    let ex = pool.handle();
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    for ms in [30u64, 10, 20] {
        let (ex, order) = (ex.clone(), order.clone());
        pool.spawn(async move {
            let t0 = ex.now();
            ex.sleep(Duration::from_millis(ms)).await;
            assert!(ex.now() - t0 >= Duration::from_millis(ms));
            order
                .lock()
                .unwrap()
                .push((t0 + Duration::from_millis(ms), ms));
        });
    }
    pool.run_until_idle();
    // In order of their deadlines. (Not necessarily 10, 20, 30: each task reads the clock
    // when it first runs, and a loaded machine may pause between two of them.)
    let order = order.lock().unwrap();
    assert_eq!(order.len(), 3);
    assert!(order.is_sorted(), "fired out of deadline order: {order:?}");
}

#[test]
fn sleep_on_pool_threads_wakes_parked_thread() {
    let pool = ThreadPool::new(2);
    let ex = pool.handle();
    let h = pool.spawn_handle(async move {
        ex.sleep(Duration::from_millis(5)).await;
        ex.now()
    });
    assert!(block_on(h).unwrap() >= Duration::from_millis(5));
}

#[test]
fn now_is_monotonic() {
    let pool = ThreadPool::new(0);
    let a = pool.now();
    let b = pool.now();
    assert!(b >= a);
}

#[test]
fn wake_from_foreign_thread_resumes_task_on_pool() {
    let pool = ThreadPool::new(2);
    let m = Arc::new(CoMutex::new(0));
    let outside = m.try_lock().unwrap();
    let m2 = m.clone();
    let h = pool.spawn_handle(async move { *m2.lock().await + 1 });
    std::thread::sleep(Duration::from_millis(5));
    assert!(!h.is_finished());
    drop(outside); // unlock from this (non-pool) thread hands over and wakes the task
    assert_eq!(block_on(h), Ok(1));
}

/// The task leaves a clone of its waker in a slot and returns `Pending`; another OS thread
/// takes it and wakes the task at once, so the wake often lands while the pool thread is
/// still finishing that poll (the task RUNNING, other references alive). Each wake must
/// bring exactly one more poll: a lost one would leave the task parked for good (this
/// test would never end), a spurious one would end the task before its last wake.
#[test]
fn wakes_racing_the_end_of_a_poll_from_another_thread_are_never_lost() {
    const ROUNDS: usize = 20_000;
    let pool = ThreadPool::new(1);
    let slot: Arc<std::sync::Mutex<Option<std::task::Waker>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let waker = {
        let (slot, done) = (slot.clone(), done.clone());
        std::thread::spawn(move || {
            let mut woken = 0;
            while !done.load(Ordering::SeqCst) {
                match slot.lock().expect("not poisoned").take() {
                    Some(w) => {
                        w.wake();
                        woken += 1;
                    }
                    None => std::hint::spin_loop(),
                }
            }
            woken
        })
    };
    let mut polls = 0;
    let task = pool.spawn_handle(std::future::poll_fn(move |cx| {
        polls += 1;
        if polls > ROUNDS {
            return std::task::Poll::Ready(polls);
        }
        *slot.lock().expect("not poisoned") = Some(cx.waker().clone());
        std::task::Poll::Pending
    }));
    assert_eq!(block_on(task), Ok(ROUNDS + 1));
    done.store(true, Ordering::SeqCst);
    let woken = waker.join().expect("the waking thread");
    assert_eq!(woken, ROUNDS, "polls, one per wake");
}

/// After QEMU's test-aio-multithread test_multi_co_mutex: many coroutines on several threads
/// hammer one CoMutex, yielding inside the critical section; the counter it protects must
/// equal an atomic counter kept alongside.
#[test]
fn stress_many_coroutines_one_mutex_several_threads() {
    const TASKS: usize = 64;
    const ROUNDS: usize = 200;
    let pool = ThreadPool::new(4);
    let m = Arc::new(CoMutex::new(0usize));
    let atomic = Arc::new(AtomicUsize::new(0));
    let inside = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..TASKS)
        .map(|i| {
            let (m, atomic, inside) = (m.clone(), atomic.clone(), inside.clone());
            pool.spawn_handle(async move {
                for r in 0..ROUNDS {
                    let mut g = m.lock().await;
                    assert!(!inside.swap(true, Ordering::SeqCst), "two holders");
                    *g += 1;
                    atomic.fetch_add(1, Ordering::Relaxed);
                    if (i + r) % 3 == 0 {
                        yield_now().await;
                    }
                    inside.store(false, Ordering::SeqCst);
                }
            })
        })
        .collect();
    for h in handles {
        block_on(h).unwrap();
    }
    assert_eq!(pool.panics(), 0);
    assert_eq!(atomic.load(Ordering::Relaxed), TASKS * ROUNDS);
    assert_eq!(*block_on(m.lock()), TASKS * ROUNDS);
}

/// Producers and consumers on several threads through a CoQueue: every item is consumed once
/// and nobody sleeps forever (no lost wake-up).
#[test]
fn stress_coqueue_producers_consumers() {
    const ITEMS: usize = 2000;
    let pool = ThreadPool::new(3);
    let state = Arc::new(CoMutex::new((Vec::<usize>::new(), 0usize, false)));
    let q = Arc::new(CoQueue::new());
    let consumers: Vec<_> = (0..4)
        .map(|_| {
            let (state, q) = (state.clone(), q.clone());
            pool.spawn_handle(async move {
                let mut got = 0;
                let mut g = state.lock().await;
                loop {
                    if g.0.pop().is_some() {
                        got += 1;
                        g.1 += 1;
                    } else if g.2 {
                        return got;
                    } else {
                        g = q.wait(g).await;
                    }
                }
            })
        })
        .collect();
    let producer = {
        let (state, q) = (state.clone(), q.clone());
        pool.spawn_handle(async move {
            for i in 0..ITEMS {
                state.lock().await.0.push(i);
                q.next();
                if i % 7 == 0 {
                    yield_now().await;
                }
            }
            state.lock().await.2 = true;
            q.restart_all();
        })
    };
    block_on(producer).unwrap();
    let total: usize = consumers.into_iter().map(|h| block_on(h).unwrap()).sum();
    assert_eq!(total, ITEMS);
    assert_eq!(block_on(state.lock()).1, ITEMS);
}

/// A task yielding while nothing else is runnable is polled again at once, but only a
/// bounded number of times: the `block_on` root (not a task) still gets its turn, and a
/// task spawned meanwhile by another thread runs before the yielder's next poll.
#[test]
fn a_lone_yielder_does_not_starve_the_root_or_new_tasks() {
    let pool = ThreadPool::new(0);
    let ex = pool.handle();
    let flag = Arc::new(AtomicBool::new(false));
    let polls = Arc::new(AtomicUsize::new(0));
    let (f, p) = (flag.clone(), polls.clone());
    let spinner = ex.spawn_handle(async move {
        while !f.load(Ordering::SeqCst) {
            p.fetch_add(1, Ordering::SeqCst);
            yield_now().await;
        }
    });
    pool.block_on(async {
        // The root yields once: the spinner runs a bounded burst, then the root goes on.
        yield_now().await;
        flag.store(true, Ordering::SeqCst);
    });
    pool.block_on(spinner).unwrap();
    let n = polls.load(Ordering::SeqCst);
    assert!(
        (1..=200).contains(&n),
        "the root waited {n} polls of the spinner"
    );

    // Work injected from another thread interrupts the burst.
    let flag = Arc::new(AtomicBool::new(false));
    let (f, p) = (flag.clone(), Arc::new(AtomicUsize::new(0)));
    let p2 = p.clone();
    let ex2 = pool.handle();
    let spinner = ex.spawn_handle(async move {
        while !f.load(Ordering::SeqCst) {
            p2.fetch_add(1, Ordering::SeqCst);
            yield_now().await;
        }
    });
    let p3 = p.clone();
    let setter = std::thread::spawn(move || {
        // Once the spinner is in its burst (not after a pause, which a loaded machine can
        // outlast before the spinner ever runs).
        while p3.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        ex2.spawn(async move { flag.store(true, Ordering::SeqCst) });
    });
    pool.block_on(spinner).unwrap();
    setter.join().unwrap();
    assert!(p.load(Ordering::SeqCst) > 0);
}

#[test]
fn run_here_polls_what_it_spawns_on_the_calling_thread_before_returning() {
    let pool = ThreadPool::new(1);
    let ex = pool.handle();
    // The pool's thread is then most likely parked (idle): even so the helper keeps what it
    // spawns for itself. (If it is not parked yet, the test holds all the same.)
    std::thread::sleep(Duration::from_millis(50));
    let ran_on = Arc::new(std::sync::Mutex::new(None));
    let r = ran_on.clone();
    let seen = ex.run_here(|| {
        ex.spawn(async move {
            // A yield, so the helper's own FIFO and its re-poll are exercised too.
            yield_now().await;
            *r.lock().unwrap() = Some(std::thread::current().id());
        });
        7
    });
    assert_eq!(seen, 7);
    assert_eq!(*ran_on.lock().unwrap(), Some(std::thread::current().id()));
}

#[test]
fn run_here_leaves_a_waiting_task_to_the_pool() {
    let pool = ThreadPool::new(1);
    let ex = pool.handle();
    let lock = Arc::new(CoMutex::new(0u32));
    let held = block_on(lock.lock());
    let (l, done) = (lock.clone(), Arc::new(std::sync::Mutex::new(None)));
    let d = done.clone();
    ex.run_here(|| {
        ex.spawn(async move {
            *l.lock().await += 1;
            *d.lock().unwrap() = Some(std::thread::current().id());
        })
    });
    // It could not finish here: the lock is ours.
    assert_eq!(*done.lock().unwrap(), None);
    drop(held);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while done.lock().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the task never resumed"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_ne!(*done.lock().unwrap(), Some(std::thread::current().id()));
    assert_eq!(*block_on(lock.lock()), 1);
}

#[test]
fn run_here_hands_a_task_that_keeps_yielding_to_the_pool() {
    // What the code guarantees, whatever the machine's load: the calling thread runs the
    // task at most 16 times (the helper's budget), each run polling it at most 65 times
    // (once, and up to 64 more while it only wakes itself), and the pool's thread does the
    // rest. How far the task got when `run_here` returned depends on how fast the pool's
    // thread ran meanwhile, so it is not asserted.
    const MOST_HERE: usize = 16 * (1 + 64);
    let pool = ThreadPool::new(1);
    let ex = pool.handle();
    let caller = std::thread::current().id();
    let (here, elsewhere) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (h2, e2) = (here.clone(), elsewhere.clone());
    let h = ex.run_here(|| {
        ex.spawn_handle(async move {
            for _ in 0..10_000 {
                if std::thread::current().id() == caller {
                    h2.fetch_add(1, Ordering::SeqCst);
                } else {
                    e2.fetch_add(1, Ordering::SeqCst);
                }
                yield_now().await;
            }
        })
    });
    let polled_here = here.load(Ordering::SeqCst);
    assert!(
        polled_here <= MOST_HERE,
        "the calling thread polled {polled_here} times"
    );
    block_on(h).unwrap();
    assert_eq!(here.load(Ordering::SeqCst), polled_here, "run_here is over");
    assert_eq!(
        polled_here + elsewhere.load(Ordering::SeqCst),
        10_000,
        "the pool's thread did the rest"
    );
}

#[test]
fn run_here_inside_a_coroutine_just_spawns() {
    let pool = ThreadPool::new(1);
    let ex = pool.handle();
    let ex2 = ex.clone();
    let inner = block_on(pool.spawn_handle(async move {
        let me = std::thread::current().id();
        let ex3 = ex2.clone();
        let h = ex2.run_here(|| ex3.spawn_handle(async { std::thread::current().id() }));
        (me, h.await.unwrap())
    }))
    .unwrap();
    // Both ran on the pool's one thread; nothing was polled re-entrantly.
    assert_eq!(inner.0, inner.1);
}

/// Inside a coroutine, `run_here` runs nothing itself (the thread is already the pool's):
/// what it spawned has not run when it returns.
#[test]
fn run_here_inside_a_coroutine_polls_nothing_before_returning() {
    let pool = ThreadPool::new(1);
    let ex = pool.handle();
    let ran = Arc::new(AtomicBool::new(false));
    let (ex2, r) = (ex.clone(), ran.clone());
    let seen = block_on(pool.spawn_handle(async move {
        let ex3 = ex2.clone();
        let h = ex2.run_here(move || {
            ex3.spawn_handle(async move {
                r.store(true, Ordering::SeqCst);
            })
        });
        let seen = h.is_finished();
        h.await.unwrap();
        seen
    }))
    .unwrap();
    assert!(!seen, "run_here polled the new task inside the coroutine");
    assert!(ran.load(Ordering::SeqCst));
}

/// A task of one pool woken by a coroutine running on another pool's thread runs on its
/// own pool's thread.
#[test]
fn a_task_woken_from_another_pools_thread_runs_on_its_own_pool() {
    let a = ThreadPool::new(1);
    let b = ThreadPool::new(1);
    let slot: Arc<std::sync::Mutex<Option<std::task::Waker>>> = Arc::default();
    let threads: Arc<std::sync::Mutex<Vec<std::thread::ThreadId>>> = Arc::default();
    let (s, t) = (slot.clone(), threads.clone());
    let mut polls = 0;
    let task_b = b.spawn_handle(std::future::poll_fn(move |cx| {
        t.lock().unwrap().push(std::thread::current().id());
        polls += 1;
        if polls == 1 {
            *s.lock().unwrap() = Some(cx.waker().clone());
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    }));
    let b_thread = block_on(b.spawn_handle(async { std::thread::current().id() })).unwrap();
    while slot.lock().unwrap().is_none() {
        std::thread::yield_now();
    }
    let s = slot.clone();
    block_on(a.spawn_handle(async move {
        s.lock().unwrap().take().unwrap().wake();
    }))
    .unwrap();
    block_on(task_b).unwrap();
    assert_eq!(*threads.lock().unwrap(), vec![b_thread, b_thread]);
}

/// One task whose future holds `N` bytes across a yield: it writes a pattern of its own
/// before the yield and reads it back after, so a block too small for the future (a task
/// cache handing out the wrong size class) shows as corrupted bytes or a crash.
async fn holds_bytes<const N: usize>(seed: u8) -> bool {
    let mut bytes = [0u8; N];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = seed.wrapping_add(i as u8);
    }
    yield_now().await;
    let bytes = std::hint::black_box(bytes);
    bytes
        .iter()
        .enumerate()
        .all(|(i, b)| *b == seed.wrapping_add(i as u8))
}

/// A 256-byte-aligned value held across a yield.
#[repr(align(256))]
struct OverAligned(u8);

/// A task whose small future must be 256-byte aligned: the task cache's blocks are only
/// 16-aligned, so such a future must get an allocation of its own, at its alignment.
async fn holds_over_aligned(seed: u8) -> bool {
    let v = OverAligned(seed);
    yield_now().await;
    let v = std::hint::black_box(&v);
    std::ptr::from_ref(v).addr() % 256 == 0 && v.0 == seed
}

/// Futures of every size class of the task cache (64 B to 4 KiB) and beyond, many rounds:
/// blocks of finished tasks are reused by later tasks of the same class, each of which must
/// find its own bytes intact after a yield while tasks of other sizes run around it.
#[test]
fn reused_task_blocks_hold_futures_of_every_size_intact() {
    let pool = ThreadPool::new(2);
    let ok = Arc::new(AtomicUsize::new(0));
    let mut spawned = 0;
    for round in 0..50u8 {
        let mut handles = Vec::new();
        macro_rules! size {
            ($($n:literal),*) => {$(
                let hits = ok.clone();
                handles.push(pool.spawn_handle(async move {
                    if holds_bytes::<$n>(round).await {
                        hits.fetch_add(1, Ordering::Relaxed);
                    }
                }));
                spawned += 1;
            )*};
        }
        size!(8, 40, 100, 200, 400, 900, 1500, 3000, 3900, 6000);
        for _ in 0..8 {
            let hits = ok.clone();
            handles.push(pool.spawn_handle(async move {
                if holds_over_aligned(round).await {
                    hits.fetch_add(1, Ordering::Relaxed);
                }
            }));
            spawned += 1;
        }
        for h in handles {
            block_on(h).unwrap();
        }
    }
    assert_eq!(ok.load(Ordering::Relaxed), spawned);
}
