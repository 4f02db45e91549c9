//! 9P over a byte stream (tcp or unix socket): each PDU is its own size-prefixed frame.
//!
//! One reader thread per connection reads whole frames and submits them to the
//! connection's [`Session`]. Each request is started on the reader thread itself
//! ([`Executor::run_here`]), so one that needs no wait is served without a hand-off to
//! another thread and back; one that waits (a lock, a fid's barrier) resumes on the
//! executor. The frames one read brought in (a pipelined burst) are served one after
//! another, and their replies go out together, in one `sendmsg`, when the burst ends. The
//! exceptions go to the executor at once when frames wait behind them: `Tfsync` (it may
//! take long in the kernel) and requests that move more than 32 KiB, `INLINE_MAX` (the
//! executor's threads copy them in parallel). The cost: a request whose syscall blocks in
//! the kernel for long holds up the frames read after it on the same connection.
//!
//! Replies go out in completion order. The reader writes those of the requests it served
//! with a non-blocking send; replies finished on the executor, and whatever a full socket
//! did not take, go to the connection's writer thread (`out`; started the first time it
//! is needed), so a slow client never blocks an executor thread. The reader stops
//! reading (backpressure) while the session has its limit of requests in flight, while the
//! requests in flight may need more than [`INFLIGHT_BYTES`] (each counts its frame and, for
//! a `Tread`/`Treaddir`, its count up to msize), or while too many replies wait to be
//! written. A closed connection cancels its requests and drops its fids, which closes their
//! files and releases their locks.
//!
//! Each accepted connection gets an id (`conn=N` in the logs and `--trace` lines); its
//! acceptance and its end are logged at info with the peer (a tcp address, or a unix
//! peer's pid and uid).
//!
//! A unix socket path is taken only if nothing answers there: [`Listener::bind_with`]
//! connects first, refuses a live socket, and replaces only a stale one (or nothing).

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::co::Executor;
use crate::co::sync::LockExt;
use crate::fs::{Filesystem, MappedBytes};
use crate::protocol::{
    HEADER_LEN, PAYLOAD_HEADER_LEN, PayloadReply, Reply, Tag, Ttype, encode_payload_header,
    frame_size,
};
use crate::server::{Config, Responder, Session};

mod frame;
mod out;
use out::OutQueue;

/// The bytes the requests of one connection may hold in flight before its reader waits:
/// each counts its frame, and a `Tread`/`Treaddir` also the reply it may build (its count,
/// up to msize). With the replies left unwritten (16 MiB) and one frame being read, this
/// bounds the memory a client can make a connection hold, whatever it asks.
pub const INFLIGHT_BYTES: usize = 64 << 20;

/// Where to listen: `tcp:HOST:PORT` or `unix:PATH`. Shown (`Display`) as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// A tcp address, `HOST:PORT`.
    Tcp(String),
    /// A unix socket path.
    Unix(PathBuf),
}

impl std::str::FromStr for ListenAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(rest) = s.strip_prefix("tcp:") {
            match rest.rsplit_once(':') {
                Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                    Ok(ListenAddr::Tcp(rest.to_string()))
                }
                _ => Err("expected tcp:HOST:PORT (a host and a port number)".into()),
            }
        } else if let Some(rest) = s.strip_prefix("unix:") {
            if rest.is_empty() {
                return Err("expected unix:PATH (the path is empty)".into());
            }
            Ok(ListenAddr::Unix(PathBuf::from(rest)))
        } else {
            Err("expected tcp:HOST:PORT or unix:PATH".into())
        }
    }
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddr::Tcp(a) => write!(f, "tcp:{a}"),
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// How a unix socket is made: its mode and group (for a VMM running as another user).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnixSocketOptions {
    /// Permission bits set on the socket after it is bound (else the umask's).
    pub mode: Option<u32>,
    /// Group given to the socket after it is bound.
    pub group: Option<u32>,
}

/// A bound listener.
pub enum Listener {
    /// A tcp listener.
    Tcp(TcpListener),
    /// A unix socket listener and its path (removed when dropped).
    Unix(UnixListener, PathBuf),
}

impl Listener {
    /// Binds `addr` (a unix socket with default options; see [`bind_with`](Self::bind_with)).
    pub fn bind(addr: &ListenAddr) -> io::Result<Listener> {
        Self::bind_with(addr, &UnixSocketOptions::default())
    }

    /// Binds `addr`. A unix socket path must be free or hold a stale socket (one nobody
    /// answers on, left by a server that died), which is replaced; a live socket is refused
    /// (`AddrInUse`), and so is a path that is not a socket (`AlreadyExists`).
    pub fn bind_with(addr: &ListenAddr, unix: &UnixSocketOptions) -> io::Result<Listener> {
        match addr {
            ListenAddr::Tcp(a) => Ok(Listener::Tcp(TcpListener::bind(a)?)),
            ListenAddr::Unix(p) => {
                use std::os::unix::fs::FileTypeExt;
                match std::fs::symlink_metadata(p) {
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                    Ok(m) if !m.file_type().is_socket() => {
                        return Err(io::Error::new(
                            io::ErrorKind::AlreadyExists,
                            "the path exists and is not a socket",
                        ));
                    }
                    Ok(_) => match UnixStream::connect(p) {
                        Ok(_) => {
                            return Err(io::Error::new(
                                io::ErrorKind::AddrInUse,
                                "a server is already listening on that socket",
                            ));
                        }
                        // Nobody listens: a dead server's socket.
                        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                            std::fs::remove_file(p)?;
                        }
                        Err(e) => return Err(e),
                    },
                }
                let l = UnixListener::bind(p)?;
                // Dropped (and the path removed) if setting its mode or group fails.
                let l = Listener::Unix(l, p.clone());
                if let Some(mode) = unix.mode {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))?;
                }
                if let Some(gid) = unix.group {
                    std::os::unix::fs::lchown(p, None, Some(gid))?;
                }
                Ok(l)
            }
        }
    }

    /// The address actually bound, in `--listen` form (a tcp port 0 is resolved).
    pub fn local_addr(&self) -> String {
        match self {
            Listener::Tcp(l) => l
                .local_addr()
                .map(|a| format!("tcp:{a}"))
                .unwrap_or_else(|_| "tcp:?".into()),
            Listener::Unix(_, p) => format!("unix:{}", p.display()),
        }
    }

    fn set_nonblocking(&self, nb: bool) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.set_nonblocking(nb),
            Listener::Unix(l, _) => l.set_nonblocking(nb),
        }
    }

    /// Waits up to `timeout` for a connection to be ready to accept.
    fn wait_readable(&self, timeout: Duration) -> io::Result<bool> {
        use rustix::event::{PollFd, PollFlags, Timespec, poll};
        let ts = Timespec {
            tv_sec: timeout.as_secs() as i64,
            tv_nsec: timeout.subsec_nanos() as i64,
        };
        let n = match self {
            Listener::Tcp(l) => poll(&mut [PollFd::new(l, PollFlags::IN)], Some(&ts)),
            Listener::Unix(l, _) => poll(&mut [PollFd::new(l, PollFlags::IN)], Some(&ts)),
        };
        match n {
            Ok(n) => Ok(n > 0),
            Err(rustix::io::Errno::INTR) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Accepts a connection; with it, its peer for the logs: `tcp:ADDR`, or the pid and
    /// uid of a unix peer.
    fn accept(&self) -> io::Result<(Conn, String)> {
        match self {
            Listener::Tcp(l) => {
                let (s, peer) = l.accept()?;
                s.set_nodelay(true)?;
                Ok((Conn::Tcp(s), format!("tcp:{peer}")))
            }
            Listener::Unix(l, _) => {
                let s = l.accept()?.0;
                let peer = match rustix::net::sockopt::socket_peercred(&s) {
                    Ok(c) => format!("unix pid={} uid={}", c.pid.as_raw_nonzero(), c.uid.as_raw()),
                    Err(_) => "unix".to_string(),
                };
                Ok((Conn::Unix(s), peer))
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, p) = self {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// A connected socket of either kind.
pub enum Conn {
    /// A tcp connection.
    Tcp(TcpStream),
    /// A unix socket connection.
    Unix(UnixStream),
}

impl Conn {
    fn try_clone(&self) -> io::Result<Conn> {
        Ok(match self {
            Conn::Tcp(s) => Conn::Tcp(s.try_clone()?),
            Conn::Unix(s) => Conn::Unix(s.try_clone()?),
        })
    }

    fn shutdown(&self) {
        let _ = match self {
            Conn::Tcp(s) => s.shutdown(Shutdown::Both),
            Conn::Unix(s) => s.shutdown(Shutdown::Both),
        };
    }

    fn set_nonblocking(&self, nb: bool) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.set_nonblocking(nb),
            Conn::Unix(s) => s.set_nonblocking(nb),
        }
    }
}

impl std::os::fd::AsFd for Conn {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            Conn::Tcp(s) => s.as_fd(),
            Conn::Unix(s) => s.as_fd(),
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.read(buf),
            Conn::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.write(buf),
            Conn::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.flush(),
            Conn::Unix(s) => s.flush(),
        }
    }
}

/// A stream request's reply path: the frame is built in its own buffer (the payload of an
/// Rread straight after the header room) and queued whole.
pub struct StreamResponder {
    out: Arc<OutQueue>,
    buf: Vec<u8>,
    /// The request is served by the reader itself (see [`OutQueue::begin_inline`]).
    inline: bool,
    /// What the request counts against [`INFLIGHT_BYTES`], given back when it ends.
    charge: usize,
    held: Arc<AtomicUsize>,
    /// An `Rread`'s data, sent from the file's mapping after the header in `buf`.
    mapped: Option<MappedBytes>,
}

impl Drop for StreamResponder {
    fn drop(&mut self) {
        self.held.fetch_sub(self.charge, Ordering::AcqRel);
    }
}

/// The reader's buffer: room for a burst of small pipelined frames (a frame larger than
/// what is left is read straight into its own buffer). Every connection holds it, idle or
/// not, so it is kept small: at 64 KiB an idle connection cost 88 KiB, at 16 KiB 39 KiB.
const READ_BUFFER: usize = 16 * 1024;

/// The most a request may move (its frame and its reply) to be served by the reader
/// while frames wait behind it.
const INLINE_MAX: usize = 32 * 1024;

/// Message types whose reply is as large as the count they ask (up to msize).
const TREADDIR: u8 = Ttype::Readdir as u8;
const TREAD: u8 = Ttype::Read as u8;

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

impl Responder for StreamResponder {
    fn payload(&mut self, max: usize) -> Vec<std::io::IoSliceMut<'_>> {
        let need = PAYLOAD_HEADER_LEN + max;
        if self.buf.len() < need {
            self.buf.resize(need, 0);
        }
        vec![std::io::IoSliceMut::new(
            &mut self.buf[PAYLOAD_HEADER_LEN..need],
        )]
    }

    fn send_payload(mut self, kind: PayloadReply, tag: Tag, count: u32) {
        if let Some(tail) = self.mapped.take() {
            if self.buf.len() < PAYLOAD_HEADER_LEN {
                self.buf.resize(PAYLOAD_HEADER_LEN, 0);
            }
            // The handler's count is the tail's length; the header says what is sent.
            let tail = tail.at_most(count as usize);
            let count = tail.len() as u32;
            if encode_payload_header(kind, tag, count, &mut self.buf).is_ok() {
                self.out
                    .push_mapped(std::mem::take(&mut self.buf), tail, self.inline);
            }
            return;
        }
        let need = PAYLOAD_HEADER_LEN + count as usize;
        if self.buf.len() < need {
            self.buf.resize(need, 0);
        }
        if encode_payload_header(kind, tag, count, &mut self.buf).is_ok() {
            self.out.push(std::mem::take(&mut self.buf), self.inline);
        }
    }

    fn takes_mapped(&self) -> bool {
        true
    }

    fn take_mapped(&mut self, data: MappedBytes) {
        self.mapped = Some(data);
    }

    fn send(mut self, reply: &Reply) {
        let need = reply.encoded_len();
        if self.buf.len() < need {
            self.buf.resize(need, 0);
        }
        if reply.encode(&mut self.buf).is_ok() {
            self.out.push(std::mem::take(&mut self.buf), self.inline);
        }
    }
}

/// Counters a running server keeps, for logs and tests.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections accepted so far.
    pub connections: AtomicU64,
    /// Connections open now.
    pub active: AtomicU64,
}

/// Serves 9P sessions over accepted connections until `stop` is set.
pub struct StreamServer<F: Filesystem, E: Executor> {
    fs: Arc<F>,
    ex: E,
    config: Arc<Config>,
    /// Its counters.
    pub stats: Arc<Stats>,
    conns: Arc<Mutex<Vec<(u64, Conn)>>>,
}

impl<F: Filesystem, E: Executor> StreamServer<F, E> {
    /// A server of `fs`, running handlers on `ex`, each session with `config`.
    pub fn new(fs: Arc<F>, ex: E, config: Config) -> Self {
        StreamServer {
            fs,
            ex,
            config: Arc::new(config),
            stats: Arc::new(Stats::default()),
            conns: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Accepts connections until `stop` becomes true (checked every 50 ms), then shuts
    /// every connection down and waits for their threads.
    pub fn serve(&self, listener: &Listener, stop: &AtomicBool) -> io::Result<()> {
        listener.set_nonblocking(true)?;
        let mut threads = Vec::new();
        let mut next_id = 0u64;
        while !stop.load(Ordering::Relaxed) {
            // Poll with a timeout rather than sleep between tries: a connection is accepted
            // the moment it arrives, and `stop` is still seen within 50 ms.
            if !listener.wait_readable(Duration::from_millis(50))? {
                continue;
            }
            match listener.accept() {
                Ok((conn, peer)) => {
                    conn.set_nonblocking(false)?;
                    next_id += 1;
                    let id = next_id;
                    tracing::info!(conn = id, peer = %peer, "connection accepted");
                    if let Ok(c) = conn.try_clone() {
                        self.conns.lock_unpoisoned().push((id, c));
                    }
                    let session =
                        Session::new(self.fs.clone(), self.ex.clone(), self.config.clone());
                    session.set_id(id);
                    let stats = self.stats.clone();
                    let conns = self.conns.clone();
                    stats.connections.fetch_add(1, Ordering::Relaxed);
                    stats.active.fetch_add(1, Ordering::Relaxed);
                    threads.push(std::thread::spawn(move || {
                        match run_connection(conn, session) {
                            Ok(()) => tracing::info!(conn = id, peer = %peer, "connection closed"),
                            Err(e) => tracing::info!(
                                conn = id,
                                peer = %peer,
                                error = %e,
                                "connection closed on an error"
                            ),
                        }
                        conns.lock_unpoisoned().retain(|(i, _)| *i != id);
                        stats.active.fetch_sub(1, Ordering::Relaxed);
                    }));
                    threads.retain(|t| !t.is_finished());
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        for (_, c) in self.conns.lock_unpoisoned().iter() {
            c.shutdown();
        }
        for t in threads {
            let _ = t.join();
        }
        Ok(())
    }
}

/// Runs one connection to its end.
pub fn run_connection<F: Filesystem, E: Executor>(
    conn: Conn,
    session: Session<F, E, StreamResponder>,
) -> io::Result<()> {
    let out = OutQueue::new(conn.try_clone()?);
    let result = read_loop(conn, &session, &out);
    // Cancel what is left; replies of requests that finish anyway are still written out
    // if the socket lives, then the writer ends.
    let latch = session.close();
    if !latch.wait_timeout(Duration::from_secs(2)) {
        tracing::warn!(
            requests = session.inflight(),
            "requests of a closed connection still running after 2 s; not waiting for them"
        );
    }
    out.close();
    if result.is_err() {
        // A broken frame or a failed read: nothing more is owed, and a writer blocked on a
        // client that does not read must not keep this thread waiting.
        out.shutdown();
    }
    out.join_writer();
    result
}

fn read_loop<F: Filesystem, E: Executor>(
    conn: Conn,
    session: &Session<F, E, StreamResponder>,
    out: &Arc<OutQueue>,
) -> io::Result<()> {
    // Buffered: a frame's size and body, and pipelined frames, come in one read.
    let mut conn = io::BufReader::with_capacity(READ_BUFFER, conn);
    let held = Arc::new(AtomicUsize::new(0));
    // Every request is started on this thread ([`Executor::run_here`]): one that needs no
    // wait is served with no hand-off to another thread and back. A burst of pipelined
    // frames that one read brought in is served here one after another, and its replies
    // go out together when the burst ends (one `sendmsg` for all of them), before this
    // thread can wait for anything: the socket, or the backpressure below.
    let mut burst = Burst { out, on: false };
    loop {
        if !has_whole_frame(conn.buffer()) {
            burst.end();
        }
        let mut size = [0u8; 4];
        match conn.read_exact(&mut size) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let len = frame_size(size);
        if (len as usize) < HEADER_LEN || len > session.frame_limit() {
            // Cannot be answered (no tag yet) nor skipped safely: close, per the protocol.
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("frame size {len} out of bounds"),
            ));
        }
        let mut frame = vec![0u8; len as usize];
        frame[..4].copy_from_slice(&size);
        conn.read_exact(&mut frame[4..])?;
        // Backpressure: do not take more work than the session may hold, nor more bytes
        // in flight than the budget (one request alone always goes), nor while the client
        // leaves its replies unread.
        let charge = charge_of(&frame, session.frame_limit());
        let must_wait = || {
            session.is_full()
                || out.is_backlogged()
                || held.load(Ordering::Acquire).saturating_add(charge) > INFLIGHT_BYTES
                    && held.load(Ordering::Acquire) > 0
        };
        if must_wait() {
            // The burst's own replies may be what fills the backlog.
            burst.end();
            while must_wait() {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        held.fetch_add(charge, Ordering::AcqRel);
        // Here, or on the executor: a request that may take long (a flush to disk, in the
        // kernel) or moves much data (which the executor's threads copy in parallel) goes
        // to the executor when frames wait behind it.
        let here = frame[4] != Ttype::Fsync as u8
            && (charge <= INLINE_MAX || !has_whole_frame(conn.buffer()));
        if here {
            burst.begin();
        }
        let responder = StreamResponder {
            out: out.clone(),
            buf: out.buffer(),
            inline: here,
            charge,
            held: held.clone(),
            mapped: None,
        };
        let submitted = if here {
            session
                .executor()
                .run_here(|| session.submit(&frame, responder))
        } else {
            session.submit(&frame, responder)
        };
        if let Err(e) = submitted {
            return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string()));
        }
    }
}

/// Whether `buf` starts with a whole frame (its size field and all it declares).
fn has_whole_frame(buf: &[u8]) -> bool {
    buf.get(..4)
        .is_some_and(|p| buf.len() >= frame_size(p.try_into().expect("4 bytes")) as usize)
}

/// The reader's run of requests served on its own thread, whose replies wait for its end
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
