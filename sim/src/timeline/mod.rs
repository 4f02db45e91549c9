//! The timeline: one self-contained HTML page (inline script and style, nothing fetched)
//! that draws a run over its scheduling steps and virtual time, a lane per client and
//! lanes for the request coroutines, so an interleaving can be seen.
//!
//! What it shows, and where it comes from:
//! - client lanes: each request sent (`->`), each reply (`<-`), flushes, Tversions, client
//!   resets, and for virtio clients the kicks and the device's interrupts (the world);
//! - coroutine lanes (one bar per request coroutine, packed into rows per client; other
//!   coroutines, such as the lock swarm's, below): its polls, its waits between a `Pending`
//!   poll and the wake-up, and who woke it, drawn as an arrow from the waker's lane — the
//!   hand-off of a `CoMutex`/`CoRwLock`/`CoQueue` or of the fid barrier shows up this way,
//!   since the locks themselves (in `co9p::co`) are not instrumented; yields (a coroutine
//!   that woke itself), virtual sleeps (filesystem latency), stalls until a flush, each
//!   filesystem call with its outcome and injected fault, cancellation by a flush, a
//!   Tversion or a reset (the executor and the fault hook);
//! - the failed check, as a red line where it was found.
//!
//! Hovering an item shows its decoded PDU or event. Events are watched, never hashed:
//! keeping them changes nothing in the run.
//!
//! This file holds what is collected (the events, the requests); `layout.rs` lays a run
//! out on lanes and `html.rs` writes the page.

use std::collections::BTreeMap;
use std::time::Duration;

/// Who woke a coroutine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    /// The coroutine being polled then (a lock or barrier hand-off, a queue, a latch).
    Task(u64),
    /// A virtual-time timer.
    Timer,
    /// The world, between steps (a flush, a reset, a reply read).
    World,
}

/// Why a poll returned `Pending`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pend {
    /// It woke itself first: a yield.
    Yield,
    /// It set a timer for this virtual time.
    Sleep(Duration),
    /// Anything else: a lock, a barrier, a queue, a stall, a latch.
    Wait,
}

/// One timeline event.
#[derive(Debug, Clone)]
pub enum Kind {
    Spawn {
        task: u64,
    },
    Poll {
        task: u64,
        /// Runnable coroutines it was chosen from.
        of: usize,
    },
    Pending {
        task: u64,
        how: Pend,
    },
    Done {
        task: u64,
    },
    Wake {
        task: u64,
        by: By,
    },
    /// Virtual time jumped to the next timer.
    Time,
    Send {
        req: usize,
        client: usize,
        text: String,
    },
    Reply {
        req: usize,
        client: usize,
        text: String,
    },
    /// A request cancelled: by a flush, a Tversion or a reset (`why`).
    Cancel {
        req: usize,
        why: &'static str,
    },
    Fs {
        op: String,
        outcome: String,
        /// `None`: done; `Some(true)`: a fault before the effect; `Some(false)`: after.
        fault: Option<bool>,
        ok: bool,
    },
    Latency {
        d: Duration,
    },
    Stall {
        op: String,
    },
    ShortIo {
        op: String,
    },
    Kick {
        dev: usize,
    },
    Irq {
        dev: usize,
    },
    Reset {
        client: usize,
    },
    Phase(&'static str),
    Failed {
        check: String,
        detail: String,
    },
}

/// An event, stamped with the scheduling step, the virtual time and the coroutine being
/// polled when it happened.
#[derive(Debug, Clone)]
pub struct Ev {
    pub step: u64,
    pub at: Duration,
    pub task: Option<u64>,
    pub kind: Kind,
}

/// A request of the run, as the timeline names it.
#[derive(Debug, Clone)]
pub struct TlReq {
    pub client: usize,
    pub task: Option<u64>,
    pub text: String,
}

/// Everything a timeline page draws.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    pub title: String,
    pub subtitle: Vec<String>,
    pub clients: usize,
    /// The virtio device of each client, if it is a guest on one.
    pub client_dev: Vec<Option<usize>>,
    pub reqs: Vec<TlReq>,
    /// Names of coroutines that run no request (the lock swarm's).
    pub named_tasks: BTreeMap<u64, String>,
    pub events: Vec<Ev>,
}

mod html;
mod layout;
pub use html::render_html;
