//! Wakers and handles of the runtime, polled by hand: a future polled again with another
//! waker wakes that one (the task that polled last), a join handle says when its coroutine
//! is done, dropping a pool drops what it still holds, wakes of a task already queued
//! queue it once, a `block_on` parked for its root wakes when another thread wakes it, and a
//! timer armed outside the pool wakes its parked thread. Each assertion is an ordering
//! the runtime guarantees, not a timing: waits are bounded only to turn a bug into a
//! failure instead of a hang.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use co9p::co::{CoMutex, CoQueue, Executor, ThreadPool, yield_now};

/// A waker that counts its wakes.
#[derive(Default)]
struct Count(AtomicUsize);
impl Wake for Count {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn counting() -> (Arc<Count>, Waker) {
    let c = Arc::new(Count::default());
    (c.clone(), Waker::from(c))
}

/// Waits (bounded) until `cond` holds.
fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_lock_waiter_polled_with_a_new_waker_wakes_the_new_one() {
    let m = CoMutex::new(0u32);
    let (_, noop) = counting();
    let mut held = pin!(m.lock());
    let Poll::Ready(guard) = held.as_mut().poll(&mut Context::from_waker(&noop)) else {
        panic!("a free mutex is taken at once");
    };
    let mut waiter = pin!(m.lock());
    let (a, wa) = counting();
    let (b, wb) = counting();
    assert!(
        waiter
            .as_mut()
            .poll(&mut Context::from_waker(&wa))
            .is_pending()
    );
    assert!(
        waiter
            .as_mut()
            .poll(&mut Context::from_waker(&wb))
            .is_pending()
    );
    drop(guard);
    assert_eq!(
        b.0.load(Ordering::SeqCst),
        1,
        "the waker of the last poll is woken"
    );
    assert_eq!(a.0.load(Ordering::SeqCst), 0, "the replaced waker is not");
    assert!(
        waiter
            .as_mut()
            .poll(&mut Context::from_waker(&wb))
            .is_ready()
    );
}

#[test]
fn a_queue_waiter_polled_with_a_new_waker_wakes_the_new_one() {
    let m = CoMutex::new(());
    let q = CoQueue::new();
    let (_, noop) = counting();
    let Poll::Ready(guard) = pin!(m.lock()).poll(&mut Context::from_waker(&noop)) else {
        panic!("a free mutex is taken at once");
    };
    let mut wait = pin!(q.wait(guard));
    let (a, wa) = counting();
    let (b, wb) = counting();
    assert!(
        wait.as_mut()
            .poll(&mut Context::from_waker(&wa))
            .is_pending()
    );
    assert!(
        wait.as_mut()
            .poll(&mut Context::from_waker(&wb))
            .is_pending()
    );
    assert!(q.next(), "one waiter to restart");
    assert!(
        b.0.load(Ordering::SeqCst) >= 1,
        "the waker of the last poll is woken"
    );
    assert_eq!(a.0.load(Ordering::SeqCst), 0, "the replaced waker is not");
}

#[test]
fn a_sleep_polled_with_a_new_waker_wakes_the_new_one() {
    let pool = ThreadPool::new(1);
    let mut sleep = pin!(pool.handle().sleep(Duration::from_millis(20)));
    let (a, wa) = counting();
    let (b, wb) = counting();
    assert!(
        sleep
            .as_mut()
            .poll(&mut Context::from_waker(&wa))
            .is_pending()
    );
    assert!(
        sleep
            .as_mut()
            .poll(&mut Context::from_waker(&wb))
            .is_pending()
    );
    eventually("the sleep's last waker is woken", || {
        b.0.load(Ordering::SeqCst) >= 1
    });
    assert_eq!(a.0.load(Ordering::SeqCst), 0, "the replaced waker is not");
    assert!(
        sleep
            .as_mut()
            .poll(&mut Context::from_waker(&wb))
            .is_ready()
    );
}

#[test]
fn a_join_handle_is_finished_once_its_coroutine_returned() {
    let pool = ThreadPool::new(1);
    let gate = Arc::new(CoQueue::new());
    let m = Arc::new(CoMutex::new(false));
    let (g2, m2) = (gate.clone(), m.clone());
    let h = pool.spawn_handle(async move {
        let mut open = m2.lock().await;
        while !*open {
            open = g2.wait(open).await;
        }
        7u32
    });
    eventually("the coroutine waits at the gate", || !gate.is_empty());
    assert!(!h.is_finished(), "still waiting at the gate");
    *pool.block_on(m.lock()) = true;
    assert!(gate.next());
    eventually("the coroutine returns", || h.is_finished());
    assert_eq!(pool.block_on(h), Ok(7));
}

#[test]
fn dropping_a_pool_drops_the_coroutines_it_still_holds() {
    // No threads: the calling thread runs everything in `block_on`, so when the loop below
    // sees all three asleep, each has finished the poll that armed its timer.
    let pool = ThreadPool::new(0);
    let token = Arc::new(());
    let asleep = Arc::new(AtomicUsize::new(0));
    for _ in 0..3 {
        let (t, ex, asleep) = (token.clone(), pool.handle(), asleep.clone());
        pool.spawn(async move {
            let _t = t;
            asleep.fetch_add(1, Ordering::SeqCst);
            ex.sleep(Duration::from_secs(3600)).await;
        });
    }
    pool.block_on(async {
        while asleep.load(Ordering::SeqCst) < 3 {
            yield_now().await;
        }
        yield_now().await;
    });
    assert_eq!(Arc::strong_count(&token), 4, "three coroutines asleep");
    drop(pool);
    assert_eq!(
        Arc::strong_count(&token),
        1,
        "the pool's drop dropped its sleeping coroutines"
    );
}

/// A task that stays pending until `done`, counting its polls and keeping its last waker.
fn parked_task(
    polls: Arc<AtomicUsize>,
    kept: Arc<std::sync::Mutex<Option<Waker>>>,
    done: Arc<std::sync::atomic::AtomicBool>,
) -> impl Future<Output = ()> + Send + 'static {
    std::future::poll_fn(move |cx| {
        polls.fetch_add(1, Ordering::SeqCst);
        *kept.lock().unwrap() = Some(cx.waker().clone());
        if done.load(Ordering::SeqCst) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
}

/// Lets every task queued now run: `block_on` runs each runnable task once before it polls
/// its root again, and the root yields a few times.
fn drain(pool: &ThreadPool) {
    pool.block_on(async {
        for _ in 0..4 {
            yield_now().await;
        }
    });
}

#[test]
fn wakes_of_a_task_already_scheduled_queue_it_once() {
    // No pool threads: tasks run only inside `block_on`, on this thread, so between drains
    // nothing runs and the wakes below all find the task queued or parked, never running.
    let pool = ThreadPool::new(0);
    let polls = Arc::new(AtomicUsize::new(0));
    let kept = Arc::new(std::sync::Mutex::new(None));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let h = pool.spawn_handle(parked_task(polls.clone(), kept.clone(), done.clone()));
    drain(&pool);
    assert_eq!(
        polls.load(Ordering::SeqCst),
        1,
        "a spawned task is polled once"
    );
    let waker = kept
        .lock()
        .unwrap()
        .clone()
        .expect("the task kept its waker");

    // Three wakes while it waits: the first queues it, the others find it queued.
    let owned = waker.clone();
    waker.wake_by_ref();
    waker.wake_by_ref();
    owned.wake();
    drain(&pool);
    assert_eq!(
        polls.load(Ordering::SeqCst),
        2,
        "wakes of a task already queued must not queue it again"
    );

    // Woken again after that poll: polled once more.
    waker.wake_by_ref();
    drain(&pool);
    assert_eq!(polls.load(Ordering::SeqCst), 3);

    done.store(true, Ordering::SeqCst);
    waker.wake();
    assert_eq!(pool.block_on(h), Ok(()));
    assert_eq!(polls.load(Ordering::SeqCst), 4);
    assert_eq!(pool.panics(), 0);
}

#[test]
fn a_block_on_parked_for_its_root_wakes_when_another_thread_wakes_the_root() {
    // block_on's thread parks when nothing is runnable (no timers, so with no deadline):
    // only the root's waker, used here from a thread outside the pool, can wake it.
    let kept: Arc<std::sync::Mutex<Option<Waker>>> = Arc::new(std::sync::Mutex::new(None));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (k, d) = (kept.clone(), done.clone());
    let (tx, rx) = std::sync::mpsc::channel();
    let runner = std::thread::spawn(move || {
        let pool = ThreadPool::new(0);
        let out = pool.block_on(std::future::poll_fn(move |cx| {
            *k.lock().unwrap() = Some(cx.waker().clone());
            if d.load(Ordering::SeqCst) {
                Poll::Ready(7)
            } else {
                Poll::Pending
            }
        }));
        let _ = tx.send(out);
    });
    eventually("the root was polled", || kept.lock().unwrap().is_some());
    // Most likely parked by now; a wake that comes earlier must work as well.
    std::thread::sleep(Duration::from_millis(20));
    done.store(true, Ordering::SeqCst);
    kept.lock().unwrap().take().unwrap().wake();
    let out = rx.recv_timeout(Duration::from_secs(20));
    assert_eq!(out, Ok(7), "the parked block_on never saw its root woken");
    runner.join().unwrap();
}

/// A timer armed from a thread outside the pool while the pool's one thread is parked with
/// nothing to do (so with no deadline to wake at) must wake that thread: only pool threads
/// fire timers, and the armer here runs nothing of the pool's. (If the pool's thread has not
/// parked yet when the timer is armed, it finds the timer before it parks: the test holds
/// either way; the pause only makes the parked case the likely one.)
#[test]
fn a_timer_armed_outside_the_pool_wakes_its_parked_thread() {
    let pool = ThreadPool::new(1);
    let ex = pool.handle();
    std::thread::sleep(Duration::from_millis(50));
    let fired =
        co9p::co::block_on_timeout(ex.sleep(Duration::from_millis(1)), Duration::from_secs(60));
    assert!(
        fired.is_some(),
        "the timer never fired: its pool's parked thread was not woken"
    );
}

/// On its first poll, asks another thread to wake it (by value, so that waker's reference
/// is gone before the poll returns) and waits for that; on later polls keeps the waker for
/// the test to wake it. Counts its polls.
struct WokenDuringPoll {
    polls: Arc<AtomicUsize>,
    parked: Arc<std::sync::Mutex<Option<Waker>>>,
}

impl Future for WokenDuringPoll {
    type Output = ();
    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.polls.fetch_add(1, Ordering::SeqCst) {
            0 => {
                let w = cx.waker().clone();
                std::thread::spawn(move || w.wake()).join().unwrap();
                Poll::Pending
            }
            1 => {
                *self.parked.lock().unwrap() = Some(cx.waker().clone());
                Poll::Pending
            }
            _ => Poll::Ready(()),
        }
    }
}

/// A wake-up from another thread landing while the task's poll runs, its waker gone by the
/// time the poll returns (the worker's reference is then the only one): the task is polled
/// again exactly once, not lost and not queued twice. One thread runs everything
/// (`run_until_idle`), so the count of polls is exact.
#[test]
fn a_wake_from_another_thread_during_the_poll_queues_the_task_exactly_once() {
    let pool = ThreadPool::new(0);
    let polls = Arc::new(AtomicUsize::new(0));
    let parked = Arc::new(std::sync::Mutex::new(None));
    pool.spawn(WokenDuringPoll {
        polls: polls.clone(),
        parked: parked.clone(),
    });
    pool.run_until_idle();
    assert_eq!(
        polls.load(Ordering::SeqCst),
        2,
        "polled once more after the wake-up (1: it was lost; 3: queued twice)"
    );
    let w = parked
        .lock()
        .unwrap()
        .take()
        .expect("the second poll kept its waker");
    w.wake();
    pool.run_until_idle();
    assert_eq!(polls.load(Ordering::SeqCst), 3);
}

/// A timer armed from outside the pool that is due before the one its parked thread sleeps
/// toward must wake that thread (which would otherwise sleep an hour).
#[test]
fn an_earlier_timer_wakes_a_thread_sleeping_toward_a_later_one() {
    let pool = ThreadPool::new(1);
    let ex = pool.handle();
    let far = ex.clone();
    ex.spawn(async move { far.sleep(Duration::from_secs(3600)).await });
    // The pool's thread now sleeps toward the far timer (or is about to: then it finds
    // the near one before it parks, and the test holds either way).
    std::thread::sleep(Duration::from_millis(50));
    let fired =
        co9p::co::block_on_timeout(ex.sleep(Duration::from_millis(1)), Duration::from_secs(60));
    assert!(
        fired.is_some(),
        "the near timer waited for the far one: its thread was not woken"
    );
}

/// `block_on_timeout` gives up on a future that never completes, and says so (`None`);
/// one already complete it returns at once, however short the time.
#[test]
fn block_on_timeout_gives_up_on_a_future_that_never_completes() {
    assert_eq!(
        co9p::co::block_on_timeout(std::future::pending::<u8>(), Duration::from_millis(20)),
        None
    );
    assert_eq!(
        co9p::co::block_on_timeout(std::future::ready(7u8), Duration::ZERO),
        Some(7)
    );
}

/// A running task that wakes another task by reference schedules that task (it is not
/// taken for the running task waking itself). One thread runs everything.
#[test]
fn a_wake_by_ref_of_another_task_during_a_poll_schedules_that_task() {
    let pool = ThreadPool::new(0);
    let polls = Arc::new(AtomicUsize::new(0));
    let kept = Arc::new(std::sync::Mutex::new(None));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    pool.spawn(parked_task(polls.clone(), kept.clone(), done.clone()));
    pool.run_until_idle();
    assert_eq!(polls.load(Ordering::SeqCst), 1);
    done.store(true, Ordering::SeqCst);
    let k = kept.clone();
    pool.spawn(async move {
        k.lock().unwrap().as_ref().unwrap().wake_by_ref();
    });
    pool.run_until_idle();
    assert_eq!(polls.load(Ordering::SeqCst), 2, "the woken task ran again");
}
