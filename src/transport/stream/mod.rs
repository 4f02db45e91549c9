//! 9P over a byte stream (tcp or unix socket): each PDU is its own size-prefixed frame.
//!
//! The first connections ([`DEDICATED`]) each get a reader thread that waits in a blocking
//! read; the others share a few reader threads (`pool`, one per CPU), each waiting in
//! `epoll` on many connections. Either kind, when a connection is readable, takes its
//! whole frames and submits them to its [`Session`] (`reader`). Each request is started on the reader thread itself
//! ([`Executor::run_here`]), so one that needs no wait is served without a hand-off to
//! another thread and back; one that waits (a lock, a fid's barrier) resumes on the
//! executor. The frames one read brought in (a pipelined burst) are served one after
//! another, and their replies go out together, in one `sendmsg`, when the burst ends. The
//! exceptions go to the executor at once when frames wait behind them (of the same
//! connection or of another the thread serves): `Tfsync` (it may take long in the
//! kernel) and requests that move more than 32 KiB (the executor's threads copy them in
//! parallel). The cost: a request whose syscall blocks in the kernel for long holds up
//! the frames read after it by the same thread.
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
use crate::protocol::{PAYLOAD_HEADER_LEN, PayloadReply, Reply, Tag, encode_payload_header};
use crate::server::{Config, Responder, Session};

mod frame;
mod out;
mod pool;
mod reader;
use out::OutQueue;
use pool::{OnEnd, ReaderPool};
use reader::{ConnReader, Drive, PAUSE, SCRATCH_ALONE, Step};

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

/// Connections that get a reading thread of their own (see [`StreamServer::with_dedicated`]):
/// a thread waiting in its read takes one syscall per wake-up where a pool thread takes two
/// (epoll, then the read), about 1.5 µs more per request; past a few connections, a thread
/// each costs more (more switches, colder caches) and holds 25 KiB per idle connection,
/// where the pool holds 1.5.
pub const DEDICATED: usize = 8;

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
    readers: usize,
    dedicated: usize,
    /// Connections that have a thread of their own now.
    alone_now: Arc<AtomicUsize>,
    /// Its counters.
    pub stats: Arc<Stats>,
    conns: Arc<Mutex<Vec<(u64, Conn)>>>,
}

impl<F: Filesystem, E: Executor> StreamServer<F, E> {
    /// A server of `fs`, running handlers on `ex`, each session with `config`, its
    /// connections read by as many threads as the machine has CPUs (at most 16).
    pub fn new(fs: Arc<F>, ex: E, config: Config) -> Self {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        StreamServer {
            fs,
            ex,
            config: Arc::new(config),
            readers: cpus.min(16),
            dedicated: DEDICATED,
            alone_now: Arc::new(AtomicUsize::new(0)),
            stats: Arc::new(Stats::default()),
            conns: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Sets how many threads of the pool read the connections beyond the dedicated ones
    /// (each waits on many; at least 1).
    pub fn with_readers(mut self, threads: usize) -> Self {
        self.readers = threads.max(1);
        self
    }

    /// Sets how many connections at most get a reading thread of their own (the first
    /// ones; as one ends, the next new one takes its place). 0: the pool reads them all.
    pub fn with_dedicated(mut self, connections: usize) -> Self {
        self.dedicated = connections;
        self
    }

    /// Accepts connections until `stop` becomes true (checked every 50 ms), then shuts
    /// every connection down and waits until each has ended.
    pub fn serve(&self, listener: &Listener, stop: &AtomicBool) -> io::Result<()> {
        listener.set_nonblocking(true)?;
        let pool = ReaderPool::new(self.readers)?;
        let mut alone = Vec::new();
        let result = self.accept_until(listener, stop, &pool, &mut alone);
        for (_, c) in self.conns.lock_unpoisoned().iter() {
            c.shutdown();
        }
        pool.join();
        for t in alone {
            let _ = t.join();
        }
        result
    }

    fn accept_until(
        &self,
        listener: &Listener,
        stop: &AtomicBool,
        pool: &ReaderPool<F, E>,
        alone: &mut Vec<std::thread::JoinHandle<()>>,
    ) -> io::Result<()> {
        let mut next_id = 0u64;
        while !stop.load(Ordering::Relaxed) {
            // Poll with a timeout rather than sleep between tries: a connection is accepted
            // the moment it arrives, and `stop` is still seen within 50 ms.
            if !listener.wait_readable(Duration::from_millis(50))? {
                continue;
            }
            match listener.accept() {
                Ok((conn, peer)) => {
                    next_id += 1;
                    alone.retain(|t| !t.is_finished());
                    if let Err(e) = self.start(conn, next_id, peer, pool, alone) {
                        tracing::warn!(conn = next_id, "cannot serve a connection: {e}");
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        Ok(())
    }

    /// Starts serving an accepted connection: on a thread of its own while fewer than
    /// `dedicated` connections have one, else in the reader pool.
    fn start(
        &self,
        conn: Conn,
        id: u64,
        peer: String,
        pool: &ReaderPool<F, E>,
        alone: &mut Vec<std::thread::JoinHandle<()>>,
    ) -> io::Result<()> {
        // Blocking: its writer thread waits in `sendmsg`, and so may a thread reading it
        // alone (the pool's reads say MSG_DONTWAIT).
        conn.set_nonblocking(false)?;
        let out = OutQueue::new(conn.try_clone()?);
        let listed = conn.try_clone()?;
        tracing::info!(conn = id, peer = %peer, "connection accepted");
        self.conns.lock_unpoisoned().push((id, listed));
        let session = Session::new(self.fs.clone(), self.ex.clone(), self.config.clone());
        session.set_id(id);
        let stats = self.stats.clone();
        let conns = self.conns.clone();
        stats.connections.fetch_add(1, Ordering::Relaxed);
        stats.active.fetch_add(1, Ordering::Relaxed);
        let on_end: OnEnd = Box::new(move |result: &io::Result<()>| {
            match result {
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
        });
        let reader = ConnReader::new(conn, session, out);
        // Only this thread adds to `alone_now`, so the check and the add cannot race.
        if self.alone_now.load(Ordering::Acquire) >= self.dedicated {
            pool.add(reader, on_end);
            return Ok(());
        }
        self.alone_now.fetch_add(1, Ordering::AcqRel);
        // If no thread can be made, the connection goes to the pool.
        let alone_now = self.alone_now.clone();
        let body = move |(mut reader, on_end): (ConnReader<F, E>, OnEnd)| {
            let result = drive_alone(&mut reader);
            reader.finish(&result);
            // Its place goes to the next connection before this one is counted as ended.
            alone_now.fetch_sub(1, Ordering::AcqRel);
            on_end(&result);
        };
        match spawn_with(format!("co9p-conn-{id}"), (reader, on_end), body) {
            Ok(t) => alone.push(t),
            Err((reader, on_end)) => {
                self.alone_now.fetch_sub(1, Ordering::AcqRel);
                pool.add(reader, on_end);
            }
        }
        Ok(())
    }
}

/// Runs `f(job)` on a new thread named `name`; if no thread can be made, gives `job` back
/// (`std::thread::Builder::spawn` drops its closure, and what it owns, when it fails).
fn spawn_with<T: Send + 'static>(
    name: String,
    job: T,
    f: impl FnOnce(T) + Send + 'static,
) -> Result<std::thread::JoinHandle<()>, T> {
    let slot = Arc::new(Mutex::new(Some(job)));
    let mine = slot.clone();
    let spawned = std::thread::Builder::new().name(name).spawn(move || {
        if let Some(job) = mine.lock_unpoisoned().take() {
            f(job);
        }
    });
    spawned.map_err(|_| slot.lock_unpoisoned().take().expect("no thread took it"))
}

/// Runs one connection to its end on the calling thread, which waits in its reads (a
/// server of many connections uses [`StreamServer`], whose threads each read many).
pub fn run_connection<F: Filesystem, E: Executor>(
    conn: Conn,
    session: Session<F, E, StreamResponder>,
) -> io::Result<()> {
    conn.set_nonblocking(false)?;
    let out = OutQueue::new(conn.try_clone()?);
    let mut reader = ConnReader::new(conn, session, out);
    let result = drive_alone(&mut reader);
    reader.finish(&result);
    result
}

/// Drives a connection on the calling thread until it closes.
fn drive_alone<F: Filesystem, E: Executor>(reader: &mut ConnReader<F, E>) -> io::Result<()> {
    use rustix::event::{PollFd, PollFlags, poll};
    let mut scratch = vec![0u8; SCRATCH_ALONE];
    loop {
        match reader.on_ready(&mut scratch, Drive::Alone) {
            // Only if the socket was made non-blocking behind our back: wait for it.
            Step::Idle => match poll(&mut [PollFd::new(&reader.conn, PollFlags::IN)], None) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            },
            Step::Paused => std::thread::sleep(PAUSE),
            Step::Closed(r) => return r,
        }
    }
}
