//! The journal: one ordered log of what the device did that the checks must see — each
//! filesystem call (from the fault hook, with the coroutine that made it) and each reply
//! frame (from the responders) — in the exact order it happened.

use std::sync::{Arc, Mutex, MutexGuard};

use co9p::fs::hooked::OpKind;
use co9p::protocol::{Errno, PAYLOAD_HEADER_LEN, PayloadReply, Reply, Tag, encode_payload_header};
use co9p::server::Responder;

/// One filesystem call as the hook saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsEvent {
    /// The simulator coroutine that made the call.
    pub task: Option<u64>,
    pub op: OpKind,
    pub outcome: Outcome,
    /// For reads and writes: the byte count the hook let through (short I/O).
    pub len: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Failed by the hook before it happened.
    FaultBefore(Errno),
    /// Happened (or was refused by the backend itself, `ok == false`).
    Done { ok: bool },
    /// Happened, then reported as failed.
    FaultAfter(Errno),
}

impl Outcome {
    /// Whether the backend ran the operation.
    pub fn ran(self) -> bool {
        !matches!(self, Outcome::FaultBefore(_))
    }
}

#[derive(Debug, Clone)]
pub enum Event {
    Fs(FsEvent),
    /// A coroutine parked in the hook until its request is flushed.
    Stall(Option<u64>),
    /// The reply frame of request `req` (the world's index) on connection `conn`.
    Reply {
        conn: usize,
        req: usize,
        frame: Vec<u8>,
    },
    /// Virtio device `n` raised its interrupt (its replies are in the used ring).
    Irq(usize),
}

/// Shared, append-only; the world drains it after every scheduling step.
#[derive(Clone, Default)]
pub struct Journal(Arc<Mutex<Vec<Event>>>);

impl Journal {
    pub fn push(&self, e: Event) {
        lock(&self.0).push(e);
    }
    pub fn drain(&self) -> Vec<Event> {
        std::mem::take(&mut *lock(&self.0))
    }
    pub fn is_empty(&self) -> bool {
        lock(&self.0).is_empty()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The in-process link: replies are encoded into the journal, tagged with the connection
/// and the request they answer (each request has its own responder, as each virtio chain
/// does), so a reply is attributed to its request, not guessed from its tag.
pub struct SimResponder {
    pub journal: Journal,
    pub conn: usize,
    pub req: usize,
    buf: Vec<u8>,
}

impl SimResponder {
    pub fn new(journal: Journal, conn: usize, req: usize) -> Self {
        SimResponder {
            journal,
            conn,
            req,
            buf: Vec::new(),
        }
    }
}

impl Responder for SimResponder {
    fn payload(&mut self, max: usize) -> Vec<std::io::IoSliceMut<'_>> {
        self.buf.resize(PAYLOAD_HEADER_LEN + max, 0);
        vec![std::io::IoSliceMut::new(
            &mut self.buf[PAYLOAD_HEADER_LEN..],
        )]
    }
    fn send_payload(mut self, kind: PayloadReply, tag: Tag, count: u32) {
        self.buf.truncate(PAYLOAD_HEADER_LEN + count as usize);
        // A count larger than the room would be a server bug; keep the frame as sent.
        if encode_payload_header(kind, tag, count, &mut self.buf).is_err() {
            self.buf.clear();
        }
        let frame = std::mem::take(&mut self.buf);
        self.journal.push(Event::Reply {
            conn: self.conn,
            req: self.req,
            frame,
        });
    }
    fn send(self, reply: &Reply) {
        let frame = reply.to_bytes().unwrap_or_default();
        self.journal.push(Event::Reply {
            conn: self.conn,
            req: self.req,
            frame,
        });
    }
}
