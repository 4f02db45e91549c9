//! A connection's sending side.
//!
//! Replies go out in completion order. The reader writes the replies of the requests it
//! served itself when its burst ends, with a non-blocking send: no hand-off to another
//! thread (a futex wake and two context switches per reply). Replies finished on the
//! executor go to the connection's writer thread, started the first time one does (an
//! executor thread never writes: it must never block on a client). Replies finished
//! while some thread is writing are queued, and that thread writes them too before it
//! lets go, several to a `sendmsg`. When the socket is full (a slow or stalled client),
//! the reader hands the rest to the writer thread too, which waits on the socket.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;

use std::os::fd::{AsFd, AsRawFd};

use super::Conn;
use super::frame::Frame;
use crate::co::sync::LockExt;
use crate::fs::MappedBytes;

/// Spare reply buffers kept per connection (each up to msize).
const SPARE_BUFFERS: usize = 4;
/// Frames written per `sendmsg` at most (well under the kernel's `IOV_MAX`).
const BATCH: usize = 64;
/// The reader stops taking requests while this many replies wait to be written...
const BACKLOG_FRAMES: usize = 256;
/// ...or this many bytes: a client that sends requests but does not read its replies
/// cannot make the server hold an unbounded amount of them.
const BACKLOG_BYTES: usize = 16 << 20;

/// Encoded replies waiting to be written, and spare reply buffers.
pub(super) struct OutQueue {
    state: Mutex<OutState>,
    cond: Condvar,
    sock: Conn,
    /// The writer thread, started the first time something is handed to it: a connection
    /// whose replies all go out from the threads that made them (an idle one, or one of
    /// small requests the reader serves itself) never has one.
    writer: Mutex<Option<JoinHandle<()>>>,
    me: Weak<OutQueue>,
}

#[derive(Default)]
struct OutState {
    frames: VecDeque<Frame>,
    /// Bytes of the front frame already written.
    sent: usize,
    /// Bytes of the queued frames.
    bytes: usize,
    spare: Vec<Vec<u8>>,
    /// Some thread is writing, and writes whatever is queued before it lets go; so frames
    /// are queued only while `owned`, or while the reader serves a request (`inline`).
    owned: bool,
    /// The reader is serving a request itself and writes its reply when done.
    inline: bool,
    /// The owner is the writer thread: a non-blocking send found the socket full.
    handed_off: bool,
    /// No more frames are taken (the connection is ending, or the peer is gone).
    closed: bool,
}

/// Where a send stopped: the index of the first frame not wholly written, and how much of
/// it was.
struct Stopped(usize, usize);

impl OutQueue {
    pub(super) fn new(sock: Conn) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            state: Mutex::default(),
            cond: Condvar::new(),
            sock,
            writer: Mutex::new(None),
            me: me.clone(),
        })
    }

    /// Starts the writer thread if it is not running yet. Called with the state unlocked,
    /// after handing it something (it finds the work when it first looks). If no thread can
    /// be made, the connection cannot be served without blocking an executor thread: it is
    /// closed, as when the peer is gone.
    fn ensure_writer(&self) {
        let mut slot = self.writer.lock_unpoisoned();
        if slot.is_some() {
            return;
        }
        let Some(me) = self.me.upgrade() else { return };
        match std::thread::Builder::new()
            .name("co9p-writer".into())
            .spawn(move || me.run_writer())
        {
            Ok(t) => *slot = Some(t),
            Err(e) => {
                drop(slot);
                tracing::warn!("cannot start a connection's writer thread: {e}; closing it");
                let mut s = self.lock();
                s.frames.clear();
                s.bytes = 0;
                s.closed = true;
                s.owned = false;
                s.handed_off = false;
                self.sock.shutdown();
            }
        }
    }

    /// Whether a writer thread was started (and not joined yet).
    pub(super) fn has_writer(&self) -> bool {
        self.writer.lock_unpoisoned().is_some()
    }

    /// Waits for the writer thread, if one was started (call after [`close`](Self::close)).
    pub(super) fn join_writer(&self) {
        let t = self.writer.lock_unpoisoned().take();
        if let Some(t) = t {
            let _ = t.join();
        }
    }

    fn lock(&self) -> MutexGuard<'_, OutState> {
        self.state.lock_unpoisoned()
    }

    /// A buffer for a new reply: a recycled one if there is one.
    pub(super) fn buffer(&self) -> Vec<u8> {
        self.lock().spare.pop().unwrap_or_default()
    }

    /// Whether so much is waiting to be written that the reader should pause.
    pub(super) fn is_backlogged(&self) -> bool {
        let s = self.lock();
        s.frames.len() >= BACKLOG_FRAMES || s.bytes >= BACKLOG_BYTES
    }

    /// Queues one frame (the prefix of `buf`) for whoever writes: the thread writing now,
    /// or the reader when the frame is the reply of a request it is serving itself (`inline`,
    /// within [`begin_inline`](Self::begin_inline) / [`end_inline`](Self::end_inline)), or
    /// else the writer thread, woken for it.
    pub(super) fn push(&self, buf: Vec<u8>, inline: bool) {
        self.push_frame(Frame::owned(buf), inline);
    }

    /// Queues a frame whose header is the prefix of `head` and whose data is `tail`, sent
    /// from the file's mapping (as [`push`](Self::push) otherwise).
    pub(super) fn push_mapped(&self, head: Vec<u8>, tail: MappedBytes, inline: bool) {
        self.push_frame(Frame::mapped(head, tail), inline);
    }

    fn push_frame(&self, frame: Frame, inline: bool) {
        let mut s = self.lock();
        if s.closed {
            return;
        }
        s.bytes += frame.len();
        s.frames.push_back(frame);
        if s.owned || (inline && s.inline) {
            return;
        }
        s.owned = true;
        s.handed_off = true;
        self.cond.notify_all();
        drop(s);
        self.ensure_writer();
    }

    /// The reader is about to serve a request itself: that request's reply, if it comes
    /// before [`end_inline`](Self::end_inline), waits for the reader, which writes it then
    /// with no wake-up of the writer thread. Replies of other requests are not held.
    pub(super) fn begin_inline(&self) {
        self.lock().inline = true;
    }

    /// Ends what [`begin_inline`](Self::begin_inline) began: writes what waits for the
    /// reader (if nobody else is writing), without blocking; whatever the socket does not
    /// take goes to the writer thread.
    pub(super) fn end_inline(&self) {
        let mut s = self.lock();
        s.inline = false;
        if s.owned || s.frames.is_empty() {
            return;
        }
        s.owned = true;
        self.write_queued(s, SendFlags::DONTWAIT);
    }

    /// Takes no more frames; the writer thread ends once nobody is writing.
    pub(super) fn close(&self) {
        self.lock().closed = true;
        self.cond.notify_all();
    }

    /// Shuts the socket down both ways: a writer blocked on it returns.
    pub(super) fn shutdown(&self) {
        self.sock.shutdown();
    }

    /// The writer thread's body: writes whatever is handed to it, with blocking sends,
    /// until the queue is closed and nobody is writing.
    pub(super) fn run_writer(&self) {
        let mut s = self.lock();
        loop {
            if s.handed_off {
                self.write_queued(s, SendFlags::empty());
                s = self.lock();
                continue;
            }
            if s.closed && !s.owned {
                return;
            }
            s = self.cond.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Writes the queue out; the caller owns the sending side. Returns having let go of it,
    /// or (non-blocking, socket full) having handed it to the writer thread.
    fn write_queued<'a>(&'a self, mut s: MutexGuard<'a, OutState>, flags: SendFlags) {
        let mut batch = Vec::with_capacity(BATCH.min(s.frames.len()));
        loop {
            if s.frames.is_empty() {
                s.owned = false;
                s.handed_off = false;
                if s.closed {
                    self.cond.notify_all();
                }
                return;
            }
            let n = s.frames.len().min(BATCH);
            batch.extend(s.frames.drain(..n));
            let skip = std::mem::take(&mut s.sent);
            drop(s);
            let res = self.send(&mut batch, skip, flags);
            s = self.lock();
            let done = match res {
                Ok(None) => batch.len(),
                Ok(Some(Stopped(i, off))) => {
                    // Socket full: the unwritten frames go back in front, for the writer
                    // thread, which waits until the client reads.
                    for f in batch.drain(i..).rev() {
                        s.frames.push_front(f);
                    }
                    s.sent = off;
                    s.handed_off = true;
                    self.cond.notify_all();
                    i
                }
                Err(e) => {
                    // The peer is gone: the reader notices too and ends the session.
                    tracing::debug!("writing replies failed: {e}");
                    s.frames.clear();
                    s.bytes = 0;
                    s.closed = true;
                    s.owned = false;
                    s.handed_off = false;
                    self.sock.shutdown();
                    self.cond.notify_all();
                    return;
                }
            };
            for f in batch.drain(..done) {
                s.bytes -= f.len();
                if s.spare.len() < SPARE_BUFFERS {
                    s.spare.push(f.into_buf());
                }
            }
            if s.handed_off && flags.contains(SendFlags::DONTWAIT) {
                drop(s);
                self.ensure_writer();
                return;
            }
        }
    }

    /// Writes the frames of `batch`, the first from byte `skip`; with `DONTWAIT`, stops
    /// where the socket is full.
    fn send(
        &self,
        batch: &mut [Frame],
        skip: usize,
        flags: SendFlags,
    ) -> io::Result<Option<Stopped>> {
        let (mut i, mut off) = (0, skip);
        let mut iov = Vec::with_capacity(2 * batch.len());
        // After a fault, frame i goes alone until it is out (see EFAULT below).
        let mut alone = false;
        loop {
            while i < batch.len() && off >= batch[i].len() {
                i += 1;
                off = 0;
                alone = false;
            }
            if i == batch.len() {
                return Ok(None);
            }
            iov.clear();
            if batch[i].iovecs(off, &mut iov) && !alone {
                for f in &batch[i + 1..] {
                    if !f.iovecs(0, &mut iov) {
                        break;
                    }
                }
            }
            let mut n = match sendmsg(&self.sock, &iov, flags) {
                Ok(n) => n,
                Err(e) => match e.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::EAGAIN) => return Ok(Some(Stopped(i, off))),
                    // Nothing was sent: the kernel refused the first chunk of the send,
                    // in which some frame's mapped tail faulted (its file was shrunk
                    // since). Frame i goes alone, then, if it faults alone, its tail is
                    // the one (a frame without one cannot fault: a real error).
                    Some(libc::EFAULT) if !alone => {
                        alone = true;
                        continue;
                    }
                    Some(libc::EFAULT) if batch[i].on_fault() => continue,
                    _ => return Err(e),
                },
            };
            // Advance past what went out.
            while n > 0 && i < batch.len() {
                let k = n.min(batch[i].len() - off);
                off += k;
                n -= k;
                if off == batch[i].len() {
                    i += 1;
                    off = 0;
                    alone = false;
                }
            }
        }
    }
}

/// How a send waits: `DONTWAIT` or not (`MSG_NOSIGNAL` always: a gone peer is an error,
/// not a signal).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct SendFlags(libc::c_int);

impl SendFlags {
    pub(super) const DONTWAIT: SendFlags = SendFlags(libc::MSG_DONTWAIT);

    pub(super) const fn empty() -> SendFlags {
        SendFlags(0)
    }

    fn contains(self, other: SendFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

/// `sendmsg` of `iov` on `sock`. Not rustix's: its `IoSlice`s are `&[u8]`, and a mapped
/// tail must never become one (see [`MappedBytes`]); the kernel reads it, this process
/// does not.
fn sendmsg(sock: &Conn, iov: &[libc::iovec], flags: SendFlags) -> io::Result<usize> {
    // SAFETY: msghdr is plain data; all-zero is "no name, no control data".
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_ptr().cast_mut();
    msg.msg_iovlen = iov.len() as _;
    // SAFETY: every iovec names memory that stays valid for the call: an owned frame's
    // buffer (borrowed by `batch` for the whole send) or a mapping held by its frame's
    // MappedBytes; the kernel only reads them. The descriptor is the live socket.
    let r = unsafe { libc::sendmsg(sock.as_fd().as_raw_fd(), &msg, flags.0 | libc::MSG_NOSIGNAL) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::net::UnixStream;

    /// A frame of `len` bytes (size prefix included) whose body is `seq` repeated.
    fn frame(seq: u8, len: usize) -> Vec<u8> {
        let mut f = vec![seq; len];
        f[..4].copy_from_slice(&(len as u32).to_le_bytes());
        f
    }

    fn read_frame(r: &mut impl Read) -> Vec<u8> {
        let mut size = [0u8; 4];
        r.read_exact(&mut size).unwrap();
        let mut f = vec![0u8; u32::from_le_bytes(size) as usize];
        f[..4].copy_from_slice(&size);
        r.read_exact(&mut f[4..]).unwrap();
        f
    }

    fn queue() -> (Arc<OutQueue>, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        (OutQueue::new(Conn::Unix(a)), b)
    }

    #[test]
    fn replies_of_the_readers_own_request_wait_for_it_and_others_do_not() {
        let (out, mut peer) = queue();
        out.begin_inline();
        for seq in 0..5 {
            out.push(frame(seq, 100 + seq as usize), true);
        }
        // Held for the reader: nothing written yet.
        peer.set_nonblocking(true).unwrap();
        let mut probe = [0u8; 1];
        assert!(
            peer.read(&mut probe).is_err(),
            "an inline reply went out early"
        );
        peer.set_nonblocking(false).unwrap();
        out.end_inline();
        for seq in 0..5 {
            assert_eq!(read_frame(&mut peer), frame(seq, 100 + seq as usize));
        }
        // All went out from the reader: no writer thread was needed, so none was started.
        assert!(out.writer.lock_unpoisoned().is_none());
        // A reply of a pool request during the reader's window goes out at once.
        out.begin_inline();
        out.push(frame(9, 64), false);
        assert_eq!(read_frame(&mut peer), frame(9, 64));
        assert!(
            out.writer.lock_unpoisoned().is_some(),
            "the writer thread wrote it"
        );
        out.end_inline();
        out.close();
        out.join_writer();
    }

    #[test]
    fn a_full_socket_hands_the_rest_to_the_writer_thread_and_the_reader_pauses() {
        let (out, mut peer) = queue();
        const N: u8 = 200;
        const LEN: usize = 100_000;
        // The peer reads nothing yet: far more than the socket buffer is pushed, as the
        // reader's own replies (non-blocking sends), then as pool replies (the writer
        // thread's blocking ones).
        out.begin_inline();
        for seq in 0..N / 2 {
            out.push(frame(seq, LEN), true);
        }
        out.end_inline();
        assert!(
            out.lock().handed_off,
            "the writer thread owns the socket now"
        );
        for seq in N / 2..N {
            out.push(frame(seq, LEN), false);
        }
        // Nobody blocked, and the backlog (most of 20 MB) tells the reader to pause.
        assert!(out.is_backlogged());
        for seq in 0..N {
            let f = read_frame(&mut peer);
            assert_eq!(f.len(), LEN);
            assert!(
                f[4..].iter().all(|&b| b == seq),
                "frame {seq} damaged or out of order"
            );
        }
        assert!(!out.is_backlogged());
        out.close();
        out.join_writer();
    }

    #[test]
    fn a_gone_peer_closes_the_queue_and_frees_what_was_queued() {
        let (out, peer) = queue();
        drop(peer);
        out.push(frame(1, 64), false);
        // The writer thread's send fails: the queue closes and drops its frames, and the
        // writer thread, nobody writing, ends.
        out.join_writer();
        assert!(out.lock().closed);
        out.push(frame(2, 64), false);
        assert_eq!(out.lock().frames.len(), 0);
        assert_eq!(out.lock().bytes, 0);
    }

    /// A file of `len` bytes whose byte i is `i % 251`, open for reading and mapped whole.
    fn mapped_file(tag: &str, len: usize) -> (std::fs::File, Arc<crate::fs::FileMap>) {
        let path = std::env::temp_dir().join(format!("co9p-out-{tag}-{}", std::process::id()));
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        let map = Arc::new(crate::fs::FileMap::new(&f, 0, len).unwrap());
        (f, map)
    }

    /// A header of `head` bytes (size field, then `0xee`s) for a frame with `tail` more.
    fn header(head: usize, tail: usize) -> Vec<u8> {
        let mut h = vec![0xee; head];
        h[..4].copy_from_slice(&((head + tail) as u32).to_le_bytes());
        h
    }

    fn pattern(range: std::ops::Range<usize>) -> Vec<u8> {
        range.map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn a_mapped_tail_goes_out_after_its_header_and_before_the_next_frame() {
        let (_f, map) = mapped_file("tail", 200_000);
        let (out, mut peer) = queue();
        let tail = MappedBytes::new(map, 1000, 150_000).unwrap();
        out.push_mapped(header(11, 150_000), tail, false);
        out.push(frame(9, 64), false);
        let mut want = header(11, 150_000);
        want.extend(pattern(1000..151_000));
        assert_eq!(read_frame(&mut peer), want);
        assert_eq!(read_frame(&mut peer), frame(9, 64));
        out.close();
        out.join_writer();
        assert_eq!(out.lock().bytes, 0);
    }

    #[test]
    fn a_file_shrunk_before_its_mapped_tail_is_sent_gives_zeros_past_its_new_end() {
        for new_len in [50_000u64, 0] {
            let (f, map) = mapped_file("shrunk", 200_000);
            let tail = MappedBytes::new(map, 1000, 150_000).unwrap();
            // Cut after the read mapped the range, before the send.
            f.set_len(new_len).unwrap();
            let (out, mut peer) = queue();
            // In one send, after a frame of its own: the kernel may refuse a chunk that
            // holds both, which is no reason to lose the first.
            out.begin_inline();
            out.push(frame(8, 100), true);
            out.push_mapped(header(11, 150_000), tail, true);
            out.push(frame(9, 64), true);
            out.end_inline();
            assert_eq!(read_frame(&mut peer), frame(8, 100));
            let mut want = header(11, 150_000);
            let kept = (new_len as usize).saturating_sub(1000);
            want.extend(pattern(1000..1000 + kept));
            want.resize(11 + 150_000, 0);
            // Same length, the kept bytes, zeros after them; and the stream still in step.
            assert_eq!(read_frame(&mut peer), want, "shrunk to {new_len}");
            assert_eq!(read_frame(&mut peer), frame(9, 64));
            out.close();
            out.join_writer();
        }
    }
}
