//! co9p's coroutine runtime against tokio's current-thread runtime, side by side.
//!
//! A plain bench main (no criterion): each case runs a batch of operations several times and
//! keeps the median, then a table prints ns/op for both and the ratio (co9p / tokio, lower is
//! better). Run: `cargo bench --bench co`. Figures only; nothing here asserts timings.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use co9p::co::{CoMutex, CoQueue, Executor, ThreadPool, yield_now};

const SAMPLES: usize = 11;

/// Median ns per operation of `run`, which performs `ops` operations per call.
///
/// With `--once` (for instruction counting under callgrind) `run` is called once, and with
/// `--only-co9p` the tokio side is skipped (`measure_tokio`), so the count is ours alone.
fn measure(ops: usize, mut run: impl FnMut()) -> f64 {
    if flag("--once") {
        let t = Instant::now();
        run();
        return t.elapsed().as_nanos() as f64 / ops as f64;
    }
    run(); // warm up
    let mut v: Vec<f64> = (0..SAMPLES)
        .map(|_| {
            let t = Instant::now();
            run();
            t.elapsed().as_nanos() as f64 / ops as f64
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[SAMPLES / 2]
}

/// Whether `name` was passed on the command line.
fn flag(name: &str) -> bool {
    std::env::args().any(|a| a == name)
}

/// `measure` for the tokio side, skipped (NaN) under `--only-co9p`.
fn measure_tokio(ops: usize, run: impl FnMut()) -> f64 {
    if flag("--only-co9p") {
        return f64::NAN;
    }
    measure(ops, run)
}

fn tokio_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

/// Spawn tasks that only bump a counter and let them complete, `batch` in flight at a time;
/// ns per task.
fn lifecycle(batch: usize) -> (f64, f64) {
    const N: usize = 10_000;
    let pool = ThreadPool::new(0);
    let ex = pool.handle();
    let done = Arc::new(AtomicUsize::new(0));
    let ours = measure(N, || {
        done.store(0, Ordering::Relaxed);
        pool.block_on(async {
            for round in 1..=N / batch {
                for _ in 0..batch {
                    let d = done.clone();
                    ex.spawn(async move {
                        d.fetch_add(1, Ordering::Relaxed);
                    });
                }
                while done.load(Ordering::Relaxed) < round * batch {
                    yield_now().await;
                }
            }
        })
    });
    let rt = tokio_rt();
    let theirs = measure_tokio(N, || {
        done.store(0, Ordering::Relaxed);
        rt.block_on(async {
            for round in 1..=N / batch {
                for _ in 0..batch {
                    let d = done.clone();
                    tokio::spawn(async move {
                        d.fetch_add(1, Ordering::Relaxed);
                    });
                }
                while done.load(Ordering::Relaxed) < round * batch {
                    tokio::task::yield_now().await;
                }
            }
        })
    });
    (ours, theirs)
}

/// One task yielding in a loop; ns per yield (wake, requeue, re-poll).
fn yields() -> (f64, f64) {
    const N: usize = 100_000;
    let pool = ThreadPool::new(0);
    let ours = measure(N, || {
        let h = pool.spawn_handle(async {
            for _ in 0..N {
                yield_now().await;
            }
        });
        pool.block_on(h).unwrap();
    });
    let rt = tokio_rt();
    let theirs = measure_tokio(N, || {
        rt.block_on(async {
            tokio::spawn(async {
                for _ in 0..N {
                    tokio::task::yield_now().await;
                }
            })
            .await
            .unwrap()
        })
    });
    (ours, theirs)
}

/// Lock and unlock a mutex nobody else wants, inside a task; ns per lock+unlock.
fn uncontended() -> (f64, f64) {
    const N: usize = 1_000_000;
    let pool = ThreadPool::new(0);
    let m = CoMutex::new(0u64);
    let ours = measure(N, || {
        pool.block_on(async {
            for _ in 0..N {
                *black_box(&m).lock().await += 1;
            }
        })
    });
    let rt = tokio_rt();
    let tm = tokio::sync::Mutex::new(0u64);
    let theirs = measure_tokio(N, || {
        rt.block_on(async {
            for _ in 0..N {
                *black_box(&tm).lock().await += 1;
            }
        })
    });
    (ours, theirs)
}

/// Two threads, each running its own single-thread executor with one task, hammer one mutex;
/// ns per lock+unlock (total time / total acquisitions). Both start at a barrier, so the
/// run is contended from the first lock (otherwise one thread may be done before the other
/// has started).
fn contended() -> (f64, f64) {
    const N: usize = 200_000;
    let ours = measure(2 * N, || {
        let m = Arc::new(CoMutex::new(0u64));
        let start = Arc::new(std::sync::Barrier::new(2));
        let ts: Vec<_> = (0..2)
            .map(|_| {
                let (m, start) = (m.clone(), start.clone());
                std::thread::spawn(move || {
                    let pool = ThreadPool::new(0);
                    start.wait();
                    pool.block_on(async {
                        for _ in 0..N {
                            *m.lock().await += 1;
                        }
                    })
                })
            })
            .collect();
        ts.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(*m.try_lock().unwrap(), 2 * N as u64);
    });
    let theirs = measure_tokio(2 * N, || {
        let m = Arc::new(tokio::sync::Mutex::new(0u64));
        let start = Arc::new(std::sync::Barrier::new(2));
        let ts: Vec<_> = (0..2)
            .map(|_| {
                let (m, start) = (m.clone(), start.clone());
                std::thread::spawn(move || {
                    let rt = tokio_rt();
                    start.wait();
                    rt.block_on(async {
                        for _ in 0..N {
                            *m.lock().await += 1;
                        }
                    })
                })
            })
            .collect();
        ts.into_iter().for_each(|t| t.join().unwrap());
    });
    (ours, theirs)
}

/// Two tasks on one thread take turns: ours with CoMutex + CoQueue (wait/next), tokio with
/// two `Notify`s; ns per round trip (two hand-overs).
fn ping_pong() -> (f64, f64) {
    const N: usize = 50_000;
    let pool = ThreadPool::new(0);
    let ours = measure(N, || {
        let state = Arc::new((CoMutex::new(0usize), CoQueue::new()));
        let players: Vec<_> = (0..2)
            .map(|me| {
                let state = state.clone();
                pool.spawn_handle(async move {
                    let (m, q) = (&state.0, &state.1);
                    for _ in 0..N {
                        let mut g = m.lock().await;
                        while *g % 2 != me {
                            g = q.wait(g).await;
                        }
                        *g += 1;
                        q.next();
                    }
                })
            })
            .collect();
        for p in players {
            pool.block_on(p).unwrap();
        }
    });
    let rt = tokio_rt();
    let theirs = measure_tokio(N, || {
        rt.block_on(async {
            let ab = Arc::new(tokio::sync::Notify::new());
            let ba = Arc::new(tokio::sync::Notify::new());
            let (ab2, ba2) = (ab.clone(), ba.clone());
            let a = tokio::spawn(async move {
                for _ in 0..N {
                    ab2.notify_one();
                    ba2.notified().await;
                }
            });
            let b = tokio::spawn(async move {
                for _ in 0..N {
                    ab.notified().await;
                    ba.notify_one();
                }
            });
            a.await.unwrap();
            b.await.unwrap();
        })
    });
    (ours, theirs)
}

/// A bench case: name, target, and the measurement giving (co9p, tokio) ns/op.
type Case = (&'static str, &'static str, fn() -> (f64, f64));

fn main() {
    // `cargo test --benches` runs bench mains with `--bench` absent: keep that quick.
    if !std::env::args().any(|a| a == "--bench") {
        println!("co bench: pass --bench (cargo bench) to run");
        return;
    }
    let cases: [Case; 6] = [
        ("spawn→complete, 100 in flight", "≤ 50", || {
            lifecycle(100)
        }),
        ("spawn→complete, 10k in flight", "≤ 50", || {
            lifecycle(10_000)
        }),
        ("yield round trip", "≤ 20", yields),
        ("uncontended lock/unlock", "≤ 10", uncontended),
        ("contended lock, 2 threads", "-", contended),
        ("CoQueue ping-pong (tokio: Notify)", "-", ping_pong),
    ];
    // An optional filter word (`cargo bench --bench co -- yield`) runs matching cases only.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let rows: Vec<_> = cases
        .iter()
        .filter(|(name, _, _)| filter.iter().all(|f| name.contains(f.as_str())))
        .map(|(name, target, f)| {
            let (ours, theirs) = f();
            println!("{name}: co9p {ours:.1} ns/op, tokio {theirs:.1} ns/op");
            (name, target, ours, theirs)
        })
        .collect();
    println!();
    println!(
        "{:<36} {:>12} {:>12} {:>8} {:>10}",
        "case", "co9p ns/op", "tokio ns/op", "ratio", "target"
    );
    for (name, target, ours, theirs) in rows {
        println!(
            "{name:<36} {ours:>12.1} {theirs:>12.1} {:>7.2}x {target:>10}",
            ours / theirs
        );
    }
}
