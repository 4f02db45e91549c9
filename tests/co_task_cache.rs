//! The pool's task-block cache, seen by the allocator: a thread's workers hand their cached
//! blocks to one another (a helper replaced by another pool's, a `block_on` ending), and
//! every block must be freed exactly once, by the last cache holding it, by the time the
//! thread has ended. A block kept by two caches is freed twice; a cache that never frees
//! leaks. Neither changes what any task computes, so only the allocator can tell. (A
//! block reused while a waker of its finished task lives does: the waker's drop would count
//! down the new task's references.)
//!
//! One test per binary: the allocator's counts are global.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};

use co9p::co::{Executor, ThreadPool, yield_now};

/// Passes everything to the system allocator, except allocations shaped like a task block
/// (16-aligned, a power of two from 64 B to 4 KiB), which get a header word in front saying
/// whether they are live. While `QUARANTINE` is on, freed blocks are never given back, so
/// their memory is never reused and a second free always finds its header dead.
struct Checking;

#[global_allocator]
static ALLOCATOR: Checking = Checking;

const HEADER: usize = 16;
const LIVE: u64 = 0x11fe_b10c_11fe_b10c;
const DEAD: u64 = 0xdead_b10c_dead_b10c;
static QUARANTINE: AtomicBool = AtomicBool::new(false);
static LIVE_BLOCKS: AtomicIsize = AtomicIsize::new(0);
static BAD_FREES: AtomicUsize = AtomicUsize::new(0);

fn block_shaped(l: Layout) -> bool {
    l.align() == 16 && l.size().is_power_of_two() && (64..=4096).contains(&l.size())
}

fn with_header(l: Layout) -> Layout {
    Layout::from_size_align(l.size() + HEADER, 16).expect("at most 4 KiB + 16")
}

// SAFETY: every allocation comes from `System` with a layout at least as large and as
// aligned as asked (a block-shaped one 16 bytes larger, handed out 16 bytes in, which keeps
// its 16-byte alignment), and `dealloc` undoes exactly what `alloc` did for that layout.
unsafe impl GlobalAlloc for Checking {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if !block_shaped(l) {
            // SAFETY: the caller's layout has a non-zero size, as `GlobalAlloc` requires.
            return unsafe { System.alloc(l) };
        }
        // SAFETY: a non-zero size.
        let p = unsafe { System.alloc(with_header(l)) };
        if p.is_null() {
            return p;
        }
        // SAFETY: `p` is a fresh, 16-aligned allocation of at least 16 + 64 bytes.
        unsafe { p.cast::<u64>().write(LIVE) };
        LIVE_BLOCKS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: within the allocation.
        unsafe { p.add(HEADER) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, l: Layout) {
        if !block_shaped(l) {
            // SAFETY: allocated by `System` with this layout (see `alloc`).
            return unsafe { System.dealloc(ptr, l) };
        }
        // SAFETY: a block-shaped allocation starts `HEADER` bytes before what was handed
        // out; its memory is still ours even if this is a second free, since a freed block
        // is never given back while quarantined (and a double free is what this looks for).
        let p = unsafe { ptr.sub(HEADER) };
        // SAFETY: as above, the header word is in the allocation and aligned.
        if unsafe { p.cast::<u64>().read() } != LIVE {
            BAD_FREES.fetch_add(1, Ordering::SeqCst);
            return;
        }
        // SAFETY: as above.
        unsafe { p.cast::<u64>().write(DEAD) };
        LIVE_BLOCKS.fetch_sub(1, Ordering::SeqCst);
        if !QUARANTINE.load(Ordering::SeqCst) {
            // SAFETY: allocated by `System` with this layout in `alloc`.
            unsafe { System.dealloc(p, with_header(l)) };
        }
    }
}

/// Spawns `n` tasks that yield once on `ex`, inside `ex.run_here`: the calling thread's
/// helper worker runs them to completion and keeps their blocks.
fn run_tasks_here(ex: &co9p::co::PoolHandle, n: usize) {
    ex.run_here(|| {
        for _ in 0..n {
            ex.spawn(async { yield_now().await });
        }
    });
}

#[test]
fn task_blocks_handed_between_a_threads_workers_are_freed_once_and_all() {
    QUARANTINE.store(true, Ordering::SeqCst);
    let before = LIVE_BLOCKS.load(Ordering::SeqCst);
    std::thread::spawn(move || {
        // Pools without threads of their own: every task runs, finishes and is cached on
        // this thread.
        let a = ThreadPool::new(0);
        run_tasks_here(&a.handle(), 8);
        assert!(
            LIVE_BLOCKS.load(Ordering::SeqCst) > before,
            "the helper keeps the blocks of the tasks it finished"
        );
        // A `block_on` worker caches blocks of its own and leaves them to the thread when
        // it returns.
        let b = ThreadPool::new(0);
        b.block_on(async {
            let hs: Vec<_> = (0..8)
                .map(|_| b.handle().spawn_handle(async { yield_now().await }))
                .collect();
            for h in hs {
                h.await.expect("a task that only yields");
            }
        });
        // A helper for another pool replaces `a`'s: the old helper's blocks join those the
        // thread already holds (`TaskCache::absorb`), and the new helper takes them all.
        let c = ThreadPool::new(0);
        run_tasks_here(&c.handle(), 8);
        // Wakers that outlive their tasks. The block of a finished task is its wakers' as
        // long as one lives: a task spawned meanwhile must get another block (a waker
        // dropped then would count down the new task's references). The last waker,
        // dropped outside any worker, frees the block (no cache takes it there).
        let d = ThreadPool::new(0);
        let kept: [Arc<Mutex<Option<Waker>>>; 2] = Default::default();
        d.block_on(async {
            for slot in &kept {
                let slot = slot.clone();
                let keep = std::future::poll_fn(move |cx| {
                    *slot.lock().expect("not poisoned") = Some(cx.waker().clone());
                    Poll::Ready(())
                });
                d.handle()
                    .spawn_handle(keep)
                    .await
                    .expect("a task that keeps its waker");
            }
            let next = d.handle().spawn_handle(async {
                yield_now().await;
                7
            });
            drop(kept[0].lock().expect("not poisoned").take());
            assert_eq!(
                next.await,
                Ok(7),
                "a task spawned while a finished one's waker lived"
            );
        });
        drop(kept[1].lock().expect("not poisoned").take());
        drop((a, b, c, d));
    })
    .join()
    .expect("the thread ran its pools");
    assert_eq!(
        BAD_FREES.load(Ordering::SeqCst),
        0,
        "a task block was freed twice"
    );
    assert_eq!(
        LIVE_BLOCKS.load(Ordering::SeqCst),
        before,
        "task blocks outlived the thread whose caches held them"
    );
}
