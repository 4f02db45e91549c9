//! One connection's reading side: a state machine that a thread drives each time the socket
//! is readable ([`ConnReader::on_ready`]), taking whole frames and submitting them to the
//! connection's [`Session`].
//!
//! A thread that drives many connections (the reader pool, `pool`) never blocks in it: its
//! reads are `MSG_DONTWAIT` (the socket itself stays blocking, since its writer thread,
//! sharing the open file, sends with blocking calls). A thread with one connection
//! ([`run_connection`](super::run_connection)) waits in its reads.
//!
//! Bytes are read into the driving thread's scratch buffer, not one per connection: frames
//! wholly in it are copied out to their own buffers and submitted, and what is left (part of
//! a frame, or whole frames that backpressure holds back) is kept by the connection in a
//! buffer of just that size. An idle connection holds no read buffer at all. A frame larger
//! than the scratch buffer is read straight into its own.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rustix::net::{RecvFlags, recv};

use super::out::OutQueue;
use super::{Conn, INFLIGHT_BYTES, StreamResponder};
use crate::co::{Executor, Latch};
use crate::fs::Filesystem;
use crate::protocol::{HEADER_LEN, Ttype, frame_size};
use crate::server::Session;

/// A pool thread's read buffer: room for a burst of pipelined frames, of any of its
/// connections.
pub(super) const SCRATCH: usize = 64 * 1024;

/// The read buffer of a thread that reads one connection. Kept small, since each such
/// connection holds one idle or not (the pages a zeroed buffer touches are resident).
pub(super) const SCRATCH_ALONE: usize = 16 * 1024;

/// Reads one wake-up may make while the socket keeps filling the buffer, before the thread
/// turns to its other connections (the socket is still readable, so it comes back).
const READS_PER_WAKE: usize = 16;

/// The most a request may move (its frame and its reply) to be served by the reading thread
/// while other frames wait behind it.
const INLINE_MAX: usize = 32 * 1024;

/// How long a connection held back by backpressure waits before it looks again.
pub(super) const PAUSE: Duration = Duration::from_micros(200);

/// Message types whose reply is as large as the count they ask (up to msize).
const TREADDIR: u8 = Ttype::Readdir as u8;
const TREAD: u8 = Ttype::Read as u8;

/// How the thread driving a connection does it.
#[derive(Debug, Clone, Copy)]
pub(super) enum Drive {
    /// The thread has this connection alone: it waits in a blocking read.
    Alone,
    /// The thread serves other connections too (`others_ready`: some wait for it now);
    /// it never waits in a read.
    Shared { others_ready: bool },
}

/// What a connection needs next from the thread driving it.
#[derive(Debug)]
pub(super) enum Step {
    /// All it read is taken: call again when the socket is readable (never with
    /// [`Drive::Alone`], which waits in its read instead).
    Idle,
    /// Backpressure: a whole frame waits until requests in flight end or replies are
    /// written. Call again after [`PAUSE`], readable or not.
    Paused,
    /// The connection is over: the peer closed it (`Ok`), or sent what cannot be served, or
    /// the socket failed.
    Closed(io::Result<()>),
}

/// A connection's reading side (see the module's documentation).
pub(super) struct ConnReader<F: Filesystem, E: Executor> {
    pub(super) conn: Conn,
    pub(super) session: Session<F, E, StreamResponder>,
    pub(super) out: Arc<OutQueue>,
    /// What the requests in flight count against [`INFLIGHT_BYTES`].
    held: Arc<AtomicUsize>,
    /// Bytes read and not taken yet (part of a frame, or whole frames held back), shorter
    /// than the driving thread's buffer; empty, with nothing allocated, when there are none.
    pending: Vec<u8>,
    /// A frame longer than the driving thread's buffer, read straight into its own, and how much
    /// of it has come.
    big: Option<(Vec<u8>, usize)>,
    /// A whole frame that backpressure holds back; submitted before anything else.
    held_back: Option<Vec<u8>>,
}

impl<F: Filesystem, E: Executor> ConnReader<F, E> {
    pub(super) fn new(
        conn: Conn,
        session: Session<F, E, StreamResponder>,
        out: Arc<OutQueue>,
    ) -> Self {
        ConnReader {
            conn,
            session,
            out,
            held: Arc::new(AtomicUsize::new(0)),
            pending: Vec::new(),
            big: None,
            held_back: None,
        }
    }

    /// Takes what the socket has, and serves every whole frame it can. `scratch` is the
    /// driving thread's buffer (the same for every call); `drive` says whether the thread has
    /// this connection alone (and may wait in a read for more) or serves others too.
    pub(super) fn on_ready(&mut self, scratch: &mut [u8], drive: Drive) -> Step {
        let (others_ready, wait) = match drive {
            Drive::Alone => (false, true),
            Drive::Shared { others_ready } => (others_ready, false),
        };
        // A thread with this connection alone reads with a blocking call: one syscall per
        // wake-up, where waiting in epoll (or poll) and then reading takes two.
        let flags = if wait {
            RecvFlags::empty()
        } else {
            RecvFlags::DONTWAIT
        };
        let out = self.out.clone();
        // The requests served on this thread reply together when the burst ends: before
        // this returns (the thread may turn to another connection, or wait), or before a
        // pause; one `sendmsg` for all of them.
        let mut burst = Burst {
            out: &out,
            on: false,
        };
        let pending = std::mem::take(&mut self.pending);
        let (mut pos, mut end) = (0, pending.len());
        scratch[..end].copy_from_slice(&pending);
        drop(pending);
        let mut reads = 0;
        // The last read filled what it was offered: more may be waiting.
        let mut maybe_more = true;
        let step = loop {
            if let Some(frame) = self.held_back.take() {
                let behind = has_whole_frame(&scratch[pos..end]);
                match self.offer(frame, behind, others_ready, &mut burst) {
                    Ok(true) => continue,
                    Ok(false) => break Step::Paused,
                    Err(e) => break Step::Closed(Err(e)),
                }
            }
            if let Some((frame, got)) = &mut self.big {
                if *got < frame.len() {
                    if !wait && (!maybe_more || reads == READS_PER_WAKE) {
                        break Step::Idle;
                    }
                    burst.end();
                    let want = frame.len() - *got;
                    match recv_with(&self.conn, &mut frame[*got..], flags) {
                        Ok(0) => break Step::Closed(Err(mid_frame_eof())),
                        Ok(n) => {
                            *got += n;
                            reads += 1;
                            maybe_more = n == want;
                            continue;
                        }
                        Err(rustix::io::Errno::AGAIN) => break Step::Idle,
                        Err(rustix::io::Errno::INTR) => continue,
                        Err(e) => break Step::Closed(Err(e.into())),
                    }
                }
                let (frame, _) = self.big.take().expect("just matched");
                self.held_back = Some(frame);
                continue;
            }
            if end - pos >= 4 {
                let len = frame_size(scratch[pos..pos + 4].try_into().expect("4 bytes")) as usize;
                if len < HEADER_LEN || len > self.session.frame_limit() as usize {
                    // Cannot be answered (no tag yet) nor skipped safely: close, per the
                    // protocol.
                    break Step::Closed(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("frame size {len} out of bounds"),
                    )));
                }
                if end - pos >= len {
                    self.held_back = Some(scratch[pos..pos + len].to_vec());
                    pos += len;
                    continue;
                }
                if len > scratch.len() {
                    let mut frame = vec![0u8; len];
                    frame[..end - pos].copy_from_slice(&scratch[pos..end]);
                    self.big = Some((frame, end - pos));
                    (pos, end) = (0, 0);
                    continue;
                }
            }
            // No whole frame left here: the burst's replies go out before anything else.
            burst.end();
            if !wait && (!maybe_more || reads == READS_PER_WAKE) {
                break Step::Idle;
            }
            scratch.copy_within(pos..end, 0);
            (pos, end) = (0, end - pos);
            let want = scratch.len() - end;
            match recv_with(&self.conn, &mut scratch[end..], flags) {
                Ok(0) if end == 0 => break Step::Closed(Ok(())),
                Ok(0) => break Step::Closed(Err(mid_frame_eof())),
                Ok(n) => {
                    end += n;
                    reads += 1;
                    maybe_more = n == want;
                }
                Err(rustix::io::Errno::AGAIN) => break Step::Idle,
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => break Step::Closed(Err(e.into())),
            }
        };
        if !matches!(step, Step::Closed(_)) {
            // Kept until the next call: at most a frame's beginning, or frames held back.
            self.pending = scratch[pos..end].to_vec();
        }
        step
    }

    /// Submits `frame` unless backpressure holds it back (then keeps it, and says so).
    /// `behind`: whole frames of this connection wait after it.
    fn offer(
        &mut self,
        frame: Vec<u8>,
        behind: bool,
        others_ready: bool,
        burst: &mut Burst<'_>,
    ) -> io::Result<bool> {
        // Do not take more work than the session may hold, nor more bytes in flight than
        // the budget (one request alone always goes), nor while the client leaves its
        // replies unread.
        let charge = charge_of(&frame, self.session.frame_limit());
        let must_wait = || {
            let held = self.held.load(Ordering::Acquire);
            self.session.is_full()
                || self.out.is_backlogged()
                || held.saturating_add(charge) > INFLIGHT_BYTES && held > 0
        };
        if must_wait() {
            // The burst's own replies may be what fills the backlog.
            burst.end();
            if must_wait() {
                self.held_back = Some(frame);
                return Ok(false);
            }
        }
        self.held.fetch_add(charge, Ordering::AcqRel);
        // Here, or on the executor: a request that may take long (a flush to disk, in the
        // kernel) or moves much data (which the executor's threads copy in parallel) goes
        // to the executor when frames, of this connection or others, wait behind it.
        let here =
            frame[4] != Ttype::Fsync as u8 && (charge <= INLINE_MAX || !(behind || others_ready));
        if here {
            burst.begin();
        }
        let responder = StreamResponder {
            out: self.out.clone(),
            buf: self.out.buffer(),
            inline: here,
            charge,
            held: self.held.clone(),
            mapped: None,
        };
        let submitted = if here {
            self.session
                .executor()
                .run_here(|| self.session.submit(&frame, responder))
        } else {
            self.session.submit(&frame, responder)
        };
        submitted.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        Ok(true)
    }

    /// Ends the connection after its last [`Step::Closed`]: cancels what is left, lets
    /// the replies of requests that finish anyway go out while the socket lives, then
    /// ends the writer. Blocks (up to 2 s for the requests, and for the writer thread).
    pub(super) fn finish(self, result: &io::Result<()>) {
        let latch = self.session.close();
        self.finish_after(&latch, result);
    }

    /// [`finish`](Self::finish) at once if that cannot block: no request still running
    /// and no writer thread. Otherwise gives the reader back, its requests cancelled, with
    /// what to wait for before [`finish_after`](Self::finish_after).
    pub(super) fn try_finish(self, result: &io::Result<()>) -> Option<(Self, Arc<Latch>)> {
        let latch = self.session.close();
        if latch.is_open() && !self.out.has_writer() {
            self.finish_writer(result);
            return None;
        }
        Some((self, latch))
    }

    /// The end of [`finish`](Self::finish), once the requests were cancelled (`latch`
    /// opens as the last of them ends).
    pub(super) fn finish_after(self, latch: &Latch, result: &io::Result<()>) {
        if !latch.wait_timeout(Duration::from_secs(2)) {
            tracing::warn!(
                requests = self.session.inflight(),
                "requests of a closed connection still running after 2 s; not waiting for them"
            );
        }
        self.finish_writer(result);
    }

    fn finish_writer(&self, result: &io::Result<()>) {
        self.out.close();
        if result.is_err() {
            // A broken frame or a failed read: nothing more is owed, and a writer blocked
            // on a client that does not read must not keep this thread waiting.
            self.out.shutdown();
        }
        self.out.join_writer();
    }
}

/// A read: the bytes read (0 at the end of the stream), or (`DONTWAIT`) `AGAIN`.
fn recv_with(conn: &Conn, buf: &mut [u8], flags: RecvFlags) -> rustix::io::Result<usize> {
    recv(conn, buf, flags).map(|(n, _)| n)
}

fn mid_frame_eof() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the peer closed the connection in the middle of a frame",
    )
}

/// The bytes a request may hold while in flight: its frame, and for a `Tread`/`Treaddir`
/// the reply it asks for (`size[4] type[1] tag[2] fid[4] offset[8] count[4]`).
fn charge_of(frame: &[u8], msize: u32) -> usize {
    let reply = match frame.get(4) {
        Some(&TREAD) | Some(&TREADDIR) if frame.len() >= 23 => {
            u32::from_le_bytes([frame[19], frame[20], frame[21], frame[22]]).min(msize)
        }
        _ => 0,
    };
    frame.len() + reply as usize
}

/// Whether `buf` starts with a whole frame (its size field and all it declares).
fn has_whole_frame(buf: &[u8]) -> bool {
    buf.get(..4)
        .is_some_and(|p| buf.len() >= frame_size(p.try_into().expect("4 bytes")) as usize)
}

/// The run of requests served on the reading thread, whose replies wait for its end
/// ([`OutQueue::begin_inline`]); it ends (and the replies go out) when dropped, too.
struct Burst<'a> {
    out: &'a OutQueue,
    on: bool,
}

impl Burst<'_> {
    fn begin(&mut self) {
        if !self.on {
            self.out.begin_inline();
            self.on = true;
        }
    }

    fn end(&mut self) {
        if self.on {
            self.out.end_inline();
            self.on = false;
        }
    }
}

impl Drop for Burst<'_> {
    fn drop(&mut self) {
        self.end();
    }
}
