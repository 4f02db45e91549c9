//! The reader pool: a few threads, each waiting in `epoll` on the sockets of many
//! connections and driving each one's [`ConnReader`] when it is readable.
//!
//! A thread per connection made the cost of a request grow with the number of connections
//! (10 µs of server CPU per Tgetattr at one connection, 25 at 256: a wake-up and two context
//! switches per request, among more threads, with colder caches). Here a thread that finds
//! several connections ready serves them all before it waits again, and an idle connection
//! costs no thread: no stack, no read buffer.
//!
//! A connection stays on the thread it was given (the one with the fewest), so its frames are
//! read in order by one thread. The cost of sharing: a request served on the reading thread
//! (small ones; see [`ConnReader::on_ready`]) that blocks in the kernel holds up the other
//! connections of that thread meanwhile, as it held up its own connection's frames before;
//! large ones go to the executor when other connections are ready.
//!
//! A connection held back by backpressure leaves the thread's epoll set and is looked at
//! again every [`PAUSE`]. A closed one is ended on the thread when nothing can block (no
//! request still running, no writer thread); otherwise on a thread of its own, which waits
//! for its requests and its writer.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rustix::event::epoll::{self, EventData, EventFlags};
use rustix::event::{EventfdFlags, Timespec, eventfd};

use super::reader::{ConnReader, Drive, PAUSE, SCRATCH, Step};
use super::spawn_with;
use crate::co::sync::LockExt;
use crate::co::{Executor, Latch};
use crate::fs::Filesystem;

/// Called once a connection has ended, with how it ended (for its log line and counters).
pub(super) type OnEnd = Box<dyn FnOnce(&io::Result<()>) + Send>;

/// The epoll token of a thread's wake-up eventfd (connections are numbered from 0).
const WAKE: u64 = u64::MAX;

/// Events taken per `epoll_wait`.
const EVENTS: usize = 256;

/// A connection handed to a reader thread.
struct Entry<F: Filesystem, E: Executor> {
    reader: ConnReader<F, E>,
    on_end: OnEnd,
    paused: bool,
}

/// What a reader thread shares with whoever hands it connections.
struct Inbox<F: Filesystem, E: Executor> {
    new: Mutex<Vec<Entry<F, E>>>,
    /// Written to wake the thread: a connection waits in `new`, or the pool stops.
    wake: OwnedFd,
    /// The connections the thread has (for placing new ones).
    load: AtomicUsize,
}

/// The reader threads.
pub(super) struct ReaderPool<F: Filesystem, E: Executor> {
    inboxes: Vec<Arc<Inbox<F, E>>>,
    threads: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl<F: Filesystem, E: Executor> ReaderPool<F, E> {
    /// Starts `threads` reader threads (at least one).
    pub(super) fn new(threads: usize) -> io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut pool = ReaderPool {
            inboxes: Vec::new(),
            threads: Vec::new(),
            stop: stop.clone(),
        };
        for i in 0..threads.max(1) {
            let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
            let wake = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
            epoll::add(&epoll, &wake, EventData::new_u64(WAKE), EventFlags::IN)?;
            let inbox = Arc::new(Inbox {
                new: Mutex::new(Vec::new()),
                wake,
                load: AtomicUsize::new(0),
            });
            let (me, stop) = (inbox.clone(), stop.clone());
            let t = std::thread::Builder::new()
                .name(format!("co9p-reader-{i}"))
                .spawn(move || run(&me, &epoll, &stop))?;
            pool.inboxes.push(inbox);
            pool.threads.push(t);
        }
        Ok(pool)
    }

    /// Hands a connection to the thread with the fewest; `on_end` runs once it has ended.
    pub(super) fn add(&self, reader: ConnReader<F, E>, on_end: OnEnd) {
        let inbox = self
            .inboxes
            .iter()
            .min_by_key(|i| i.load.load(Ordering::Relaxed))
            .expect("at least one thread");
        inbox.load.fetch_add(1, Ordering::Relaxed);
        inbox.new.lock_unpoisoned().push(Entry {
            reader,
            on_end,
            paused: false,
        });
        wake(inbox);
    }

    /// Lets each thread end once it has no connection left (shut them down first), and
    /// waits for them, and for the connections they were still ending.
    pub(super) fn join(self) {
        self.stop.store(true, Ordering::Release);
        for inbox in &self.inboxes {
            wake(inbox);
        }
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn wake<F: Filesystem, E: Executor>(inbox: &Inbox<F, E>) {
    // A full counter (2^64 - 2 wake-ups unread) cannot happen: the thread reads it at each
    // wake-up. Any other error leaves the thread to its next event.
    let _ = rustix::io::write(&inbox.wake, &1u64.to_ne_bytes());
}

/// A reader thread's connections, numbered by their epoll token.
struct Slots<F: Filesystem, E: Executor> {
    slots: Vec<Option<Entry<F, E>>>,
    free: Vec<usize>,
    live: usize,
}

impl<F: Filesystem, E: Executor> Slots<F, E> {
    fn insert(&mut self, e: Entry<F, E>) -> usize {
        self.live += 1;
        match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(e);
                i
            }
            None => {
                self.slots.push(Some(e));
                self.slots.len() - 1
            }
        }
    }

    fn remove(&mut self, i: usize) -> Option<Entry<F, E>> {
        let e = self.slots.get_mut(i)?.take()?;
        self.free.push(i);
        self.live -= 1;
        Some(e)
    }
}

/// A reader thread's body.
fn run<F: Filesystem, E: Executor>(inbox: &Inbox<F, E>, ep: &OwnedFd, stop: &AtomicBool) {
    let mut conns = Slots {
        slots: Vec::new(),
        free: Vec::new(),
        live: 0,
    };
    let mut paused: Vec<usize> = Vec::new();
    let mut ending: Vec<JoinHandle<()>> = Vec::new();
    let mut scratch = vec![0u8; SCRATCH];
    let mut events = Vec::with_capacity(EVENTS);
    let pause = Timespec {
        tv_sec: 0,
        tv_nsec: PAUSE.as_nanos() as i64,
    };
    loop {
        let new = std::mem::take(&mut *inbox.new.lock_unpoisoned());
        for entry in new {
            let i = conns.insert(entry);
            let e = conns.slots[i].as_ref().expect("just inserted");
            if let Err(err) = epoll::add(
                ep,
                e.reader.conn.as_fd(),
                EventData::new_u64(i as u64),
                EventFlags::IN,
            ) {
                let e = conns.remove(i).expect("just inserted");
                end(e, Err(err.into()), &mut ending, inbox);
            }
        }
        if conns.live == 0 && stop.load(Ordering::Acquire) {
            break;
        }
        events.clear();
        let timeout = (!paused.is_empty()).then_some(&pause);
        match epoll::wait(ep, spare(&mut events), timeout) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => {
                // Not expected of a valid epoll descriptor; do not spin on it.
                tracing::error!("epoll_wait failed: {e}");
                std::thread::sleep(PAUSE);
            }
        }
        let n = events.len();
        for (k, ev) in events.iter().enumerate() {
            let token = ev.data.u64();
            if token == WAKE {
                let mut b = [0u8; 8];
                let _ = rustix::io::read(&inbox.wake, &mut b);
                continue;
            }
            let i = token as usize;
            let Some(e) = conns.slots.get_mut(i).and_then(Option::as_mut) else {
                continue;
            };
            match e.reader.on_ready(
                &mut scratch,
                Drive::Shared {
                    others_ready: k + 1 < n,
                },
            ) {
                Step::Idle => {}
                Step::Paused => {
                    // Out of the epoll set while held back: readable, it would wake this
                    // thread again and again.
                    let _ = epoll::delete(ep, e.reader.conn.as_fd());
                    e.paused = true;
                    paused.push(i);
                }
                Step::Closed(r) => {
                    let _ = epoll::delete(ep, e.reader.conn.as_fd());
                    let e = conns.remove(i).expect("present");
                    end(e, r, &mut ending, inbox);
                }
            }
        }
        paused.retain(|&i| {
            let Some(e) = conns.slots.get_mut(i).and_then(Option::as_mut) else {
                return false;
            };
            match e.reader.on_ready(
                &mut scratch,
                Drive::Shared {
                    others_ready: false,
                },
            ) {
                Step::Paused => true,
                Step::Idle => {
                    e.paused = false;
                    let back = epoll::add(
                        ep,
                        e.reader.conn.as_fd(),
                        EventData::new_u64(i as u64),
                        EventFlags::IN,
                    );
                    if let Err(err) = back {
                        let e = conns.remove(i).expect("present");
                        end(e, Err(err.into()), &mut ending, inbox);
                    }
                    false
                }
                Step::Closed(r) => {
                    let e = conns.remove(i).expect("present");
                    end(e, r, &mut ending, inbox);
                    false
                }
            }
        });
        ending.retain(|t| !t.is_finished());
    }
    for t in ending {
        let _ = t.join();
    }
}

/// The spare capacity of `events`, for `epoll_wait` to fill.
fn spare(events: &mut Vec<epoll::Event>) -> rustix::buffer::SpareCapacity<'_, epoll::Event> {
    rustix::buffer::spare_capacity(events)
}

/// Ends a closed connection: here if nothing can block, else on a thread of its own.
fn end<F: Filesystem, E: Executor>(
    e: Entry<F, E>,
    result: io::Result<()>,
    ending: &mut Vec<JoinHandle<()>>,
    inbox: &Inbox<F, E>,
) {
    inbox.load.fetch_sub(1, Ordering::Relaxed);
    let Entry { reader, on_end, .. } = e;
    let Some((reader, latch)) = reader.try_finish(&result) else {
        on_end(&result);
        return;
    };
    // Requests still running, or a writer that may be blocked on the client: wait for
    // them elsewhere. If no thread can be made, here.
    let finish = |(reader, latch, on_end, result): Job<F, E>| {
        reader.finish_after(&latch, &result);
        on_end(&result);
    };
    match spawn_with(
        "co9p-closing".into(),
        (reader, latch, on_end, result),
        finish,
    ) {
        Ok(t) => ending.push(t),
        Err(job) => finish(job),
    }
}

/// A closed connection still to be ended: its reader, what its requests open, its
/// `on_end`, how it ended.
type Job<F, E> = (ConnReader<F, E>, Arc<Latch>, OnEnd, io::Result<()>);
