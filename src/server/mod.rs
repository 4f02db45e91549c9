//! The 9P2000.L device core: sessions, the fid table, one coroutine per request, Tflush.
//!
//! A transport owns a [`Session`] per connection (or per virtio device) and feeds it whole
//! frames with [`Session::submit`], each with a [`Responder`] that knows how to get that
//! request's reply back to the client. The session decodes the frame, registers the tag,
//! and spawns the request's handler as a coroutine on the [`Executor`]; handlers live in
//! `handlers/`, one file per family of messages (see `handlers/mod.rs` for the map).
//!
//! Limits (all in [`Config`]): msize between [`MIN_MSIZE`] and `max_msize` (default
//! 512 KiB, never above [`MAX_MSIZE`], whatever the configuration says), `max_fids` fids per session (default 16 384), `max_inflight` requests in flight
//! (default 1024; transports stop reading before it is reached), 16 names per walk, xattr
//! values up to [`XATTR_SIZE_MAX`] with at most `max_xattr_writes` (1024) pending at once.
//! An unknown fid is `ENOENT`, as QEMU answers.
//!
//! With [`Config::trace`], every PDU is logged as one decoded line through `tracing` (target
//! `co9p::pdu`, level info), prefixed with the session's id ([`Session::set_id`]).

mod fids;
mod handlers;
mod inflight;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::co::Executor;
use crate::fs::Filesystem;
use crate::protocol::{
    DecodeError, Errno, Fid, MIN_MSIZE, PAYLOAD_HEADER_LEN, PayloadReply, Pdu, Reply, Request,
    Rmessage, Tag, Tmessage,
};

pub use crate::co::Latch;

use fids::FidTable;
use inflight::{Cancellable, FlushOutcome, Inflight, RegisterError};

/// Largest xattr value a client may read or write through the server (Linux's limit).
pub const XATTR_SIZE_MAX: usize = 64 * 1024;

/// The hard cap on msize, whatever [`Config::max_msize`] says: no request frame and no
/// reply buffer (an `Rread` payload is allocated for the count the client asks, clamped
/// to msize) is ever larger, so no client can make the server allocate more per request.
pub const MAX_MSIZE: u32 = 4 << 20;

/// A session's configuration and limits.
#[derive(Debug, Clone)]
pub struct Config {
    /// Largest msize agreed to in Tversion (above [`MAX_MSIZE`] it counts as that).
    pub max_msize: u32,
    /// Most fids one session may hold.
    pub max_fids: usize,
    /// Most requests one session may have in flight.
    pub max_inflight: usize,
    /// Most fids at once holding a pending xattr value (Txattrcreate), each up to
    /// [`XATTR_SIZE_MAX`] bytes; one more is `ENOSPC`.
    pub max_xattr_writes: usize,
    /// Every mutating operation fails with `EROFS`.
    pub readonly: bool,
    /// An aname that also means the export root (the exported path), besides "" and "/".
    pub export_name: Vec<u8>,
    /// Log one decoded line per PDU (`tracing`, target `co9p::pdu`, level info).
    pub trace: bool,
}

impl Config {
    /// The largest msize a session agrees to: `max_msize`, capped at [`MAX_MSIZE`].
    pub fn msize_limit(&self) -> u32 {
        self.max_msize.min(MAX_MSIZE)
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_msize: 512 * 1024,
            max_fids: 16 * 1024,
            max_inflight: 1024,
            max_xattr_writes: 1024,
            readonly: false,
            export_name: Vec::new(),
            trace: false,
        }
    }
}

/// How one request's reply reaches the client. A transport makes one per request.
///
/// Dropping a responder without sending means "no reply" (a request flushed before it had
/// an effect); a transport that must still account for the request (virtio completes every
/// descriptor chain) does so in `Drop`.
pub trait Responder: Send + 'static {
    /// Room for an in-place `Rread`/`Rreaddir` payload of up to `max` bytes, as one or more
    /// buffers filled in order, so data can be read straight into the transport's buffer
    /// (the guest's scattered pages, for virtio). Their total may be less than `max` when
    /// the transport has less room.
    fn payload(&mut self, max: usize) -> Vec<std::io::IoSliceMut<'_>>;
    /// Sends the `Rread`/`Rreaddir` whose first `count` payload bytes are in place (or,
    /// for an `Rread`, are the bytes given to [`Self::take_mapped`]).
    fn send_payload(self, kind: PayloadReply, tag: Tag, count: u32);
    /// Whether this transport sends an `Rread`'s data from a file's mapping
    /// ([`Self::take_mapped`]) rather than having it copied into [`Self::payload`]: one
    /// that hands replies to the kernel (a socket), never one that copies them itself.
    /// Transports that copy keep the default: no.
    fn takes_mapped(&self) -> bool {
        false
    }
    /// The data of the `Rread` about to be sent with [`Self::send_payload`] (its count is
    /// `data.len()`); called only when [`Self::takes_mapped`] says yes.
    fn take_mapped(&mut self, data: crate::fs::MappedBytes) {
        let _ = data;
    }
    /// Sends any other reply.
    fn send(self, reply: &Reply);
    /// The data of a `Twrite` taken with [`Session::submit_write`], still in the
    /// transport's buffers (the guest's pages, for virtio), as slices in order. Transports
    /// that never call `submit_write` keep the default: none.
    fn write_data(&self) -> Vec<std::io::IoSlice<'_>> {
        Vec::new()
    }
}

/// What a request's coroutine runs: a decoded message, or a `Twrite` whose data stayed in
/// the transport's buffers.
pub(crate) enum Job {
    Msg(Tmessage),
    WriteInPlace { fid: Fid, offset: u64, count: u32 },
}

/// Why a frame could not be taken at all; the transport should close the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error("malformed frame without a usable header: {0}")]
    /// The frame is too short for a header, or its size field is wrong.
    Malformed(DecodeError),
}

/// Copies `data` into `bufs` in order; returns the bytes copied.
pub(crate) fn scatter(data: &[u8], bufs: &mut [std::io::IoSliceMut<'_>]) -> usize {
    let mut done = 0;
    for b in bufs.iter_mut() {
        let n = (data.len() - done).min(b.len());
        b[..n].copy_from_slice(&data[done..done + n]);
        done += n;
        if done == data.len() {
            break;
        }
    }
    done
}

/// What a handler produces.
pub(crate) enum Out {
    Msg(Rmessage),
    /// A payload reply whose data is already in the responder's buffer.
    Payload(PayloadReply, u32),
}

pub(crate) type HandlerResult = Result<Out, Errno>;

/// One 9P session: what a client connection (or a virtio device) talks to.
pub struct Session<F: Filesystem, E: Executor, R: Responder> {
    core: Arc<SessionCore<F, E, R>>,
}

impl<F: Filesystem, E: Executor, R: Responder> Clone for Session<F, E, R> {
    fn clone(&self) -> Self {
        Session {
            core: self.core.clone(),
        }
    }
}

/// The state a session's coroutines share.
pub(crate) struct SessionCore<F: Filesystem, E: Executor, R: Responder> {
    pub fs: Arc<F>,
    pub ex: E,
    pub config: Arc<Config>,
    /// Negotiated msize; 0 until a Tversion succeeds.
    msize: AtomicU32,
    /// The id the transport gave the session (its connection), for logs and traces.
    id: AtomicU64,
    pub fids: FidTable<F>,
    inflight: Inflight<R>,
    /// Pending xattr values (see [`Config::max_xattr_writes`]).
    pub xattr_writes: Arc<std::sync::atomic::AtomicUsize>,
    /// The export root's qid path, learnt at the first Tattach: `..` stops there.
    root_path: std::sync::OnceLock<u64>,
    /// Orders renames against the requests that act through a fid's recorded entry
    /// (QEMU's rename lock): Trename and Trenameat hold it exclusively from the rename to
    /// the fix of the fids' records; Tremove and Trename read a record and act on it
    /// under it, so they never act through a record a rename is about to move; Twalk,
    /// Tlcreate and Tattach hold it shared from finding an entry to recording it, so no
    /// rename of that entry falls between (its fix would miss the record not yet made).
    pub names: crate::co::CoRwLock<()>,
}

impl<F: Filesystem, E: Executor, R: Responder> Session<F, E, R> {
    /// A session serving `fs`, running its handlers on `ex`.
    pub fn new(fs: Arc<F>, ex: E, config: Arc<Config>) -> Self {
        let core = SessionCore {
            fids: FidTable::new(config.max_fids),
            inflight: Inflight::new(config.max_inflight),
            fs,
            ex,
            config,
            msize: AtomicU32::new(0),
            id: AtomicU64::new(0),
            root_path: std::sync::OnceLock::new(),
            xattr_writes: Arc::default(),
            names: crate::co::CoRwLock::new(()),
        };
        Session {
            core: Arc::new(core),
        }
    }

    /// Negotiated msize (0 before Tversion).
    pub fn msize(&self) -> u32 {
        self.core.msize.load(Ordering::Acquire)
    }

    /// Names the session in logs and `--trace` lines (`conn=ID`); a stream transport gives
    /// each connection its own.
    pub fn set_id(&self, id: u64) {
        self.core.id.store(id, Ordering::Relaxed);
    }

    /// The executor the session's coroutines run on.
    pub fn executor(&self) -> &E {
        &self.core.ex
    }

    /// The largest frame this session accepts now.
    pub fn frame_limit(&self) -> u32 {
        match self.msize() {
            0 => self.core.config.msize_limit(),
            m => m,
        }
    }

    /// Requests in flight (Tflush included).
    pub fn inflight(&self) -> usize {
        self.core.inflight.len()
    }

    /// Whether the transport should stop reading until some request ends.
    pub fn is_full(&self) -> bool {
        self.inflight() >= self.core.inflight.limit()
    }

    /// How many fids the session holds.
    pub fn fid_count(&self) -> usize {
        self.core.fids.len()
    }

    /// Takes one complete frame. Malformed frames with a readable header are answered with
    /// `Rlerror`; only a frame too short to carry a tag is refused.
    pub fn submit(&self, frame: &[u8], responder: R) -> Result<(), SubmitError> {
        let core = &self.core;
        let req = match Request::decode(frame, self.frame_limit()) {
            Ok(req) => req,
            Err(e) => {
                if core.config.trace {
                    core.trace(format_args!("-> (malformed: {e})"));
                }
                return match e.tag {
                    Some(tag) => {
                        core.send(responder, tag, Err(e.errno()));
                        Ok(())
                    }
                    None => Err(SubmitError::Malformed(e)),
                };
            }
        };
        if core.config.trace {
            core.trace(format_args!("-> {req}"));
        }
        let Request { tag, msg } = req;
        match msg {
            Tmessage::Flush { oldtag } => core.flush(tag, oldtag, responder),
            Tmessage::Version { msize, version } => {
                // Registered first: a refused Tversion (its tag in use, or no slot even with
                // the slack) changes nothing. Then the barrier takes effect, so requests
                // pipelined behind the Tversion already see the new session; its reply
                // waits until every earlier request has ended. Not cancellable: a flush of
                // it waits like any flush.
                if let Err(e) = core.inflight.register_version(tag) {
                    core.send(responder, tag, Err(register_errno(e)));
                    return Ok(());
                }
                let ended = core.inflight.cancel_all(Some(tag));
                core.fids.clear();
                let out = core.negotiate(msize, &version);
                let core2 = core.clone();
                core.ex.spawn(async move {
                    ended.wait().await;
                    core2.finish(tag, Some((responder, out)));
                });
            }
            msg => self.start(tag, Job::Msg(msg), responder),
        }
        Ok(())
    }

    /// Takes a `Twrite` whose header the transport decoded itself (`size[4] Twrite tag[2]
    /// fid[4] offset[8] count[4]`, with `size` checked against msize and equal to the
    /// header plus `count`) and whose `count` data bytes stay in its buffers, handed out by
    /// [`Responder::write_data`]: the data goes from there to the filesystem with no copy.
    pub fn submit_write(&self, tag: Tag, fid: Fid, offset: u64, count: u32, responder: R) {
        if self.core.config.trace {
            self.core.trace(format_args!(
                "-> Twrite tag={} fid={} offset={offset} count={count} (in place)",
                tag.0, fid.0
            ));
        }
        self.start(tag, Job::WriteInPlace { fid, offset, count }, responder);
    }

    /// Registers a request and spawns its coroutine.
    fn start(&self, tag: Tag, job: Job, responder: R) {
        let core = &self.core;
        {
            {
                let ctl = match core.inflight.register(tag) {
                    Ok(ctl) => ctl,
                    Err(e) => {
                        core.send(responder, tag, Err(register_errno(e)));
                        return;
                    }
                };
                // The request's place among those on its fid is taken now, in arrival order,
                // so a Tclunk can wait for the requests sent before it even if their
                // coroutines have not run yet. It is left when the handler is done, before
                // the request ends: the place holds the fid (its open file, and so its
                // locks), and whoever sees the request end (its client, or a closing
                // connection waiting for its requests) must find that hold gone.
                let arrival = primary_fid(&job)
                    .and_then(|fid| core.fids.get(fid).ok())
                    .map(|e| e.arrive());
                let number = arrival.as_ref().map(|a| a.number);
                let core2 = core.clone();
                core.ex.spawn(async move {
                    let mut responder = responder;
                    let out =
                        Cancellable::new(&ctl, core2.dispatch(job, number, &mut responder)).await;
                    drop(arrival);
                    match out {
                        Some(out) => {
                            core2.ex.before_reply().await;
                            core2.finish(tag, Some((responder, out)))
                        }
                        // Cancelled before it had an effect: no reply at all.
                        None => {
                            drop(responder);
                            core2.finish(tag, None);
                        }
                    }
                });
            }
        }
    }

    /// Ends the session (the connection closed): cancels every request and drops every fid
    /// (files close, locks are released, as each fid's last user ends). The returned latch
    /// opens when no request is left.
    pub fn close(&self) -> Arc<Latch> {
        let latch = self.core.inflight.cancel_all(None);
        self.core.fids.clear();
        latch
    }
}

/// The fid a request works on (whose barrier it takes).
fn primary_fid(job: &Job) -> Option<Fid> {
    match job {
        Job::Msg(msg) => msg.primary_fid(),
        Job::WriteInPlace { fid, .. } => Some(*fid),
    }
}

fn register_errno(e: RegisterError) -> Errno {
    match e {
        RegisterError::TagInUse => Errno::EPROTO,
        RegisterError::Full => Errno::EAGAIN,
    }
}

impl<F: Filesystem, E: Executor, R: Responder> SessionCore<F, E, R> {
    pub(crate) fn msize(&self) -> u32 {
        self.msize.load(Ordering::Acquire)
    }

    /// The session's id ([`Session::set_id`]).
    pub(crate) fn id(&self) -> u64 {
        self.id.load(Ordering::Relaxed)
    }

    /// The one way a PDU trace line goes out (callers check [`Config::trace`] first, so
    /// nothing is formatted without it).
    fn trace(&self, line: std::fmt::Arguments<'_>) {
        tracing::info!(target: "co9p::pdu", "conn={} {line}", self.id());
    }

    /// Sends a handler's result, keeping every reply within msize.
    fn send(&self, responder: R, tag: Tag, out: HandlerResult) {
        let limit = match self.msize() {
            0 => self.config.msize_limit(),
            m => m,
        } as usize;
        match out {
            Ok(Out::Payload(kind, count)) => {
                debug_assert!(PAYLOAD_HEADER_LEN + count as usize <= limit);
                if self.config.trace {
                    self.trace(format_args!(
                        "<- R{} tag={} count={count}",
                        if kind == PayloadReply::Read {
                            "read"
                        } else {
                            "readdir"
                        },
                        tag.0
                    ));
                }
                responder.send_payload(kind, tag, count);
            }
            Ok(Out::Msg(msg)) => {
                let mut reply = Pdu::new(tag, msg);
                if reply.encoded_len() > limit {
                    reply.msg = Rmessage::Lerror {
                        ecode: Errno::EMSGSIZE,
                    };
                }
                if self.config.trace {
                    self.trace(format_args!("<- {reply}"));
                }
                responder.send(&reply);
            }
            Err(ecode) => {
                let reply = Pdu::new(tag, Rmessage::Lerror { ecode });
                if self.config.trace {
                    self.trace(format_args!("<- {reply}"));
                }
                responder.send(&reply);
            }
        }
    }

    /// Ends request `tag` and answers the flushes that waited for it.
    /// Sends a request's reply (`None`: it was cancelled and has none) and ends it,
    /// answering the flushes that waited for it.
    fn finish(&self, tag: Tag, reply: Option<(R, HandlerResult)>) {
        self.inflight.finish(
            tag,
            || {
                if let Some((responder, out)) = reply {
                    self.send(responder, tag, out);
                }
            },
            &mut |ftag, responder| self.send(responder, ftag, Ok(Out::Msg(Rmessage::Flush {}))),
        );
    }

    /// Tflush: answered now if there is nothing to wait for, else parked on the request.
    fn flush(&self, tag: Tag, oldtag: Tag, responder: R) {
        match self.inflight.flush(tag, oldtag, responder) {
            Ok(FlushOutcome::AnswerNow(r)) => self.send(r, tag, Ok(Out::Msg(Rmessage::Flush {}))),
            Ok(FlushOutcome::Parked) => {}
            Err((e, r)) => self.send(r, tag, Err(register_errno(e))),
        }
    }
}

/// Checks a negotiated msize is sane for a configured maximum (itself capped at
/// [`MAX_MSIZE`]).
pub fn clamp_msize(client: u32, max: u32) -> Result<u32, Errno> {
    if client < MIN_MSIZE {
        return Err(Errno::EMSGSIZE);
    }
    Ok(client.min(max).min(MAX_MSIZE))
}
