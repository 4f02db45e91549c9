//! co9p's coroutine runtime against tokio's current-thread runtime, side by side.
//!
//! A plain bench main (no criterion): each case runs a batch of operations several times and
//! keeps the median, then a table prints ns/op for both and the ratio (co9p / tokio, lower is
//! better). Run: `cargo bench --bench co`. Figures only; nothing here asserts timings.
//!
//! Two more cases take the shape of QEMU's own CoMutex benchmarks in
//! tests/unit/test-aio-multithread.c (`/aio/multi/mutex/handoff` and `.../contended`), so the
//! figures compare with what that test prints: see [`qemu_shaped`]. With
//! `CO9P_QEMU_AIO_TEST=/path/to/test-aio-multithread` (QEMU's test binary, built from QEMU's
//! source) each round runs QEMU's case right after ours, so both are measured in one window.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

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

/// How many AioContexts (each an iothread) QEMU's test-aio-multithread starts for every
/// case, busy or not; a single-thread [`ThreadPool`] is co9p's counterpart of one.
const CONTEXTS: usize = 5;

/// One of QEMU's CoMutex cases: `coroutines` coroutines, one on each of the first contexts,
/// each looping `lock; counter += 1; unlock; ops += 1` until told to stop, for `secs` seconds
/// (QEMU's quick mode: 3 s for the hand-off, 1 s for the contended case). An operation is
/// one lock/unlock by any coroutine; the rate is all of them over the run's wall time, as
/// QEMU's "N iterations/second".
struct QemuCase {
    name: &'static str,
    /// The test path in QEMU's binary.
    path: &'static str,
    coroutines: usize,
    secs: f64,
}

/// QEMU's hand-off case (2 coroutines, so the lock goes back and forth between two threads
/// and every contended lock meets an unlock in progress) and its contended one (5, so a
/// queue of waiters forms).
const QEMU_CASES: [QemuCase; 2] = [
    QemuCase {
        name: "QEMU-shaped mutex hand-off, 2 threads",
        path: "/aio/multi/mutex/handoff",
        coroutines: 2,
        secs: 3.0,
    },
    QemuCase {
        name: "QEMU-shaped mutex contended, 5 threads",
        path: "/aio/multi/mutex/contended",
        coroutines: 5,
        secs: 1.0,
    },
];

/// The value after `name` on the command line (`--rounds 7`), if any.
fn arg_value<T: std::str::FromStr>(name: &str) -> Option<T> {
    let args: Vec<String> = std::env::args().collect();
    let i = args.iter().position(|a| a == name)?;
    args.get(i + 1)?.parse().ok()
}

/// Pins thread `tid` (0: the calling thread) to CPU `cpu`, counted modulo the CPUs this
/// process may use.
///
/// Why pin: on two cores the scheduler often runs both looping threads of the hand-off on
/// one core, taking turns a time slice each; the lock then never changes hands while
/// someone waits for it (co9p counted no wait at all in such runs) and the figure is one
/// thread's uncontended rate, swinging with whatever else the machine runs. Pinned to
/// different cores, the two really hand the lock back and forth.
fn pin(tid: libc::pid_t, cpu: usize) {
    // SAFETY: both sets are plain bit sets owned by this frame; the calls only read or
    // fill them.
    unsafe {
        let mut allowed: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut allowed) != 0 {
            return;
        }
        let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &allowed))
            .collect();
        if cpus.is_empty() {
            return;
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpus[cpu % cpus.len()], &mut set);
        libc::sched_setaffinity(tid, size_of::<libc::cpu_set_t>(), &set);
    }
}

/// What a QEMU-shaped run's coroutines share, laid out as QEMU's test lays out its globals
/// (its `comutex`, `counter` and `atomic_counter` share one cache line, `now_stopping` is in
/// the next): the counters bumped on every operation sit in the lock's line, so an operation
/// moves one contended line between the threads, not two; the stop flag, read on every
/// operation and written once, has a line of its own.
#[repr(C, align(64))]
struct MutexRun {
    /// Bumped after each unlock; equals the counter at the end (QEMU's `atomic_counter`).
    after: AtomicU64,
    running: AtomicUsize,
    /// Locks that had to wait (their future was pending at least once): how often the lock
    /// really changed hands between threads rather than being retaken by its last owner.
    waited: AtomicU64,
    counter: CoMutex<u64>,
    stop: StopFlag,
}

/// The stop flag on a cache line of its own.
#[repr(align(64))]
struct StopFlag(AtomicBool);

impl MutexRun {
    fn new(coroutines: usize) -> Arc<Self> {
        Arc::new(Self {
            counter: CoMutex::new(0),
            after: AtomicU64::new(0),
            stop: StopFlag(AtomicBool::new(false)),
            running: AtomicUsize::new(coroutines),
            waited: AtomicU64::new(0),
        })
    }

    /// Lets the coroutines run for `secs`, stops them, waits until all are out of their
    /// loops and returns operations per second of wall time, and the share of them that
    /// waited.
    fn finish(&self, start: Instant, secs: f64) -> (f64, f64) {
        std::thread::sleep(Duration::from_secs_f64(secs));
        self.stop.0.store(true, Ordering::Relaxed);
        let elapsed = start.elapsed().as_secs_f64();
        while self.running.load(Ordering::Acquire) > 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let n = *self.counter.try_lock().expect("everyone stopped");
        assert_eq!(n, self.after.load(Ordering::Relaxed), "a lost update");
        let waited = self.waited.load(Ordering::Relaxed) as f64 / n.max(1) as f64;
        (n as f64 / elapsed, waited)
    }
}

/// The loop of one QEMU-shaped coroutine.
async fn mutex_loop(run: Arc<MutexRun>, pin_cpu: Option<usize>) {
    if let Some(cpu) = pin_cpu {
        pin(0, cpu);
    }
    while !run.stop.0.load(Ordering::Relaxed) {
        let mut lock = std::pin::pin!(run.counter.lock());
        let mut waited = false;
        let mut g = std::future::poll_fn(|cx| {
            let p = lock.as_mut().poll(cx);
            waited |= p.is_pending();
            p
        })
        .await;
        *g += 1;
        drop(g);
        if waited {
            run.waited.fetch_add(1, Ordering::Relaxed);
        }
        run.after.fetch_add(1, Ordering::Relaxed);
    }
    run.running.fetch_sub(1, Ordering::Release);
}

/// co9p's run of `case`: [`CONTEXTS`] single-thread pools (QEMU's iothreads), one coroutine
/// spawned on each of the first `case.coroutines`; operations per second, and the share of
/// them that waited.
fn co9p_rate(case: &QemuCase, secs: f64, pin: bool) -> (f64, f64) {
    let pools: Vec<ThreadPool> = (0..CONTEXTS).map(|_| ThreadPool::new(1)).collect();
    let run = MutexRun::new(case.coroutines);
    let start = Instant::now();
    for (i, pool) in pools.iter().take(case.coroutines).enumerate() {
        pool.spawn(mutex_loop(run.clone(), pin.then_some(i)));
    }
    run.finish(start, secs)
}

/// The same with tokio: one current-thread runtime per coroutine, each on its own thread,
/// and `tokio::sync::Mutex` (fair too).
fn tokio_rate(case: &QemuCase, secs: f64, pin_threads: bool) -> f64 {
    let m = Arc::new(tokio::sync::Mutex::new(0u64));
    let run = MutexRun::new(case.coroutines);
    let start = Instant::now();
    let threads: Vec<_> = (0..case.coroutines)
        .map(|i| {
            let (m, run) = (m.clone(), run.clone());
            std::thread::spawn(move || {
                if pin_threads {
                    pin(0, i);
                }
                tokio_rt().block_on(async {
                    while !run.stop.0.load(Ordering::Relaxed) {
                        *m.lock().await += 1;
                        run.after.fetch_add(1, Ordering::Relaxed);
                    }
                });
                run.running.fetch_sub(1, Ordering::Release);
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(secs));
    run.stop.0.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    threads.into_iter().for_each(|t| t.join().unwrap());
    let n = *m.try_lock().unwrap();
    assert_eq!(n, run.after.load(Ordering::Relaxed));
    n as f64 / elapsed
}

/// QEMU's own figure for `case`: runs its test binary and reads "N iterations/second".
///
/// With `pin_threads`, its iothreads are pinned as co9p's pool threads are: the test starts
/// the main thread, then QEMU's RCU thread, then its [`CONTEXTS`] iothreads one after the
/// other (each started only once the previous one runs), so the newest [`CONTEXTS`] thread
/// ids are the iothreads in order, and iothread `i` goes to CPU `i`. They are pinned as
/// soon as all exist, before the coroutines have run for a millisecond of the case's
/// seconds.
fn qemu_rate(bin: &str, case: &QemuCase, pin_threads: bool) -> Option<f64> {
    let child = std::process::Command::new(bin)
        .args(["-p", case.path, "--verbose"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .ok()?;
    if pin_threads {
        let dir = format!("/proc/{}/task", child.id());
        for _ in 0..1000 {
            let mut tids: Vec<libc::pid_t> = std::fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect();
            if tids.len() >= 2 + CONTEXTS {
                tids.sort_unstable();
                for (i, &tid) in tids[tids.len() - CONTEXTS..].iter().enumerate() {
                    pin(tid, i);
                }
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    let out = child.wait_with_output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_suffix(" iterations/second"))
        .and_then(|l| l.trim_start_matches(['#', ' ']).parse().ok())
}

/// Median, lowest and highest of `v` (sorted in place); NaNs when empty.
fn summary(v: &mut [f64]) -> (f64, f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

/// The QEMU-shaped cases: `--rounds N` rounds (default 5), each running co9p's case, then
/// QEMU's (when `CO9P_QEMU_AIO_TEST` names its binary), then tokio's, so all three see the
/// same load; prints every round, then median ops/s, ns/op and the spread (highest minus
/// lowest over the median), and the median (and range) of the per-round co9p/QEMU ratios. `--secs S` overrides a case's duration. Where there are at
/// least as many CPUs as coroutines, the thread of coroutine (or iothread) `i` is pinned to
/// CPU `i` (see [`pin`]) in all three, unless `--no-pin`; with more coroutines than CPUs
/// (the contended case on two cores) pinning cannot give each its own core and would only
/// fix an uneven split, so the scheduler places them.
fn qemu_shaped(filter: &[String]) {
    let rounds: usize = arg_value("--rounds").unwrap_or(5);
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let qemu = std::env::var("CO9P_QEMU_AIO_TEST").ok();
    let mut rows = Vec::new();
    for case in QEMU_CASES
        .iter()
        .filter(|c| filter.iter().all(|f| c.name.contains(f.as_str())))
    {
        let secs = arg_value("--secs").unwrap_or(case.secs);
        let pin = !flag("--no-pin") && case.coroutines <= cpus;
        let (mut ours, mut theirs, mut tokio) = (Vec::new(), Vec::new(), Vec::new());
        // co9p over QEMU round by round: the two ran seconds apart, so a change of load on
        // the machine between rounds cancels out of each ratio.
        let mut ratios = Vec::new();
        for round in 1..=rounds {
            let (rate, waited) = co9p_rate(case, secs, pin);
            ours.push(rate);
            if let Some(q) = qemu.as_deref().and_then(|bin| qemu_rate(bin, case, pin)) {
                theirs.push(q);
                ratios.push(rate / q);
            }
            if !flag("--only-co9p") {
                tokio.push(tokio_rate(case, secs, pin));
            }
            println!(
                "{} round {round}: co9p {:.0} ops/s ({:.2}% waited), QEMU {:.0}, tokio {:.0}",
                case.name,
                ours[round - 1],
                100.0 * waited,
                theirs.last().copied().unwrap_or(f64::NAN),
                tokio.last().copied().unwrap_or(f64::NAN),
            );
        }
        rows.push((
            case.name,
            summary(&mut ours),
            summary(&mut theirs),
            summary(&mut tokio),
            summary(&mut ratios),
        ));
    }
    if rows.is_empty() {
        return;
    }
    println!();
    println!(
        "{:<40} {:>9} {:>11} {:>7} {:>11} {:>7} {:>17} {:>11}",
        "case (median of rounds)",
        "co9p ns",
        "co9p ops/s",
        "spread",
        "QEMU ops/s",
        "spread",
        "co9p/QEMU (range)",
        "tokio ops/s"
    );
    let spread = |(med, lo, hi): (f64, f64, f64)| 100.0 * (hi - lo) / med;
    for (name, o, q, t, r) in rows {
        let ratio = format!("{:.2}x ({:.2}-{:.2})", r.0, r.1, r.2);
        println!(
            "{name:<40} {:>9.1} {:>11.0} {:>6.1}% {:>11.0} {:>6.1}% {ratio:>17} {:>11.0}",
            1e9 / o.0,
            o.0,
            spread(o),
            q.0,
            spread(q),
            t.0
        );
    }
}

/// A bench case: name, target, and the measurement giving (co9p, tokio) ns/op.
type Case = (&'static str, &'static str, fn() -> (f64, f64));

fn main() {
    // `cargo test --benches` runs bench mains with `--bench` absent: keep that quick.
    if !std::env::args().any(|a| a == "--bench") {
        println!("co bench: pass --bench (cargo bench) to run");
        return;
    }
    let cases: [Case; 5] = [
        ("spawn→complete, 100 in flight", "≤ 50", || {
            lifecycle(100)
        }),
        ("spawn→complete, 10k in flight", "≤ 50", || {
            lifecycle(10_000)
        }),
        ("yield round trip", "≤ 20", yields),
        ("uncontended lock/unlock", "≤ 10", uncontended),
        ("CoQueue ping-pong (tokio: Notify)", "-", ping_pong),
    ];
    // An optional filter word (`cargo bench --bench co -- yield`) runs matching cases only;
    // the values of `--rounds` and `--secs` are no filter words.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let filter: Vec<String> = args
        .iter()
        .enumerate()
        .filter(|&(i, a)| {
            !a.starts_with('-')
                && (i == 0 || !matches!(args[i - 1].as_str(), "--rounds" | "--secs"))
        })
        .map(|(_, a)| a.clone())
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
    if !rows.is_empty() {
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
        println!();
    }
    qemu_shaped(&filter);
}
