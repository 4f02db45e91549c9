//! 9P over a byte stream (tcp or unix socket): each PDU is its own size-prefixed frame.
//!
//! One reader thread per connection reads whole frames and submits them to the
//! connection's [`Session`]. A request with nothing queued behind it in the read buffer is
//! started on the reader thread itself ([`Executor::run_here`]), so one that needs no wait
//! is served without a hand-off to another thread; pipelined requests run concurrently on
//! the executor. Replies go out in completion order, written by the thread that finished
//! them when the socket is free, or by the connection's writer thread when the socket is
//! full (`out`), so a slow client never blocks an executor thread. The reader stops
//! reading (backpressure) while the session has its limit of requests in flight or too
//! many replies wait to be written. A closed connection cancels its requests and drops its fids, which closes their
//! files and releases their locks.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::co::Executor;
use crate::fs::Filesystem;
use crate::protocol::{
    HEADER_LEN, PAYLOAD_HEADER_LEN, PayloadReply, Reply, Tag, encode_payload_header, frame_size,
};
use crate::server::{Config, Responder, Session};

mod out;
use out::OutQueue;

/// Where to listen: `tcp:HOST:PORT` or `unix:PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Tcp(String),
    Unix(PathBuf),
}

impl std::str::FromStr for ListenAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(rest) = s.strip_prefix("tcp:") {
            Ok(ListenAddr::Tcp(rest.to_string()))
        } else if let Some(rest) = s.strip_prefix("unix:") {
            Ok(ListenAddr::Unix(PathBuf::from(rest)))
        } else {
            Err(format!("expected tcp:HOST:PORT or unix:PATH, got {s:?}"))
        }
    }
}

/// A bound listener.
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

impl Listener {
    pub fn bind(addr: &ListenAddr) -> io::Result<Listener> {
        match addr {
            ListenAddr::Tcp(a) => Ok(Listener::Tcp(TcpListener::bind(a)?)),
            ListenAddr::Unix(p) => {
                // A stale socket file from a previous run would make bind fail.
                if std::fs::symlink_metadata(p).is_ok_and(|m| {
                    use std::os::unix::fs::FileTypeExt;
                    m.file_type().is_socket()
                }) {
                    let _ = std::fs::remove_file(p);
                }
                Ok(Listener::Unix(UnixListener::bind(p)?, p.clone()))
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

    fn accept(&self) -> io::Result<Conn> {
        match self {
            Listener::Tcp(l) => {
                let (s, _) = l.accept()?;
                s.set_nodelay(true)?;
                Ok(Conn::Tcp(s))
            }
            Listener::Unix(l, _) => Ok(Conn::Unix(l.accept()?.0)),
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
    Tcp(TcpStream),
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
        let need = PAYLOAD_HEADER_LEN + count as usize;
        if self.buf.len() < need {
            self.buf.resize(need, 0);
        }
        if encode_payload_header(kind, tag, count, &mut self.buf).is_ok() {
            self.out.push(std::mem::take(&mut self.buf), self.inline);
        }
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
    pub connections: AtomicU64,
    pub active: AtomicU64,
}

/// Serves 9P sessions over accepted connections until `stop` is set.
pub struct StreamServer<F: Filesystem, E: Executor> {
    fs: Arc<F>,
    ex: E,
    config: Arc<Config>,
    pub stats: Arc<Stats>,
    conns: Arc<Mutex<Vec<(u64, Conn)>>>,
}

impl<F: Filesystem, E: Executor> StreamServer<F, E> {
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
                Ok(conn) => {
                    conn.set_nonblocking(false)?;
                    next_id += 1;
                    let id = next_id;
                    if let Ok(c) = conn.try_clone() {
                        self.conns
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push((id, c));
                    }
                    let session =
                        Session::new(self.fs.clone(), self.ex.clone(), self.config.clone());
                    let stats = self.stats.clone();
                    let conns = self.conns.clone();
                    stats.connections.fetch_add(1, Ordering::Relaxed);
                    stats.active.fetch_add(1, Ordering::Relaxed);
                    threads.push(std::thread::spawn(move || {
                        if let Err(e) = run_connection(conn, session) {
                            tracing::debug!("connection {id} ended: {e}");
                        }
                        conns
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .retain(|(i, _)| *i != id);
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
        for (_, c) in self.conns.lock().unwrap_or_else(|p| p.into_inner()).iter() {
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
    let out = Arc::new(OutQueue::new(conn.try_clone()?));
    let writer_out = out.clone();
    let writer = std::thread::spawn(move || writer_out.run_writer());
    let result = read_loop(conn, &session, &out);
    // Cancel what is left; replies of requests that finish anyway are still written out
    // if the socket lives, then the writer ends.
    let latch = session.close();
    let mut waited = 0;
    while !latch.is_open() && waited < 2000 {
        std::thread::sleep(Duration::from_millis(1));
        waited += 1;
    }
    out.close();
    if result.is_err() {
        // A broken frame or a failed read: nothing more is owed, and a writer blocked on a
        // client that does not read must not keep this thread waiting.
        out.shutdown();
    }
    let _ = writer.join();
    result
}

fn read_loop<F: Filesystem, E: Executor>(
    conn: Conn,
    session: &Session<F, E, StreamResponder>,
    out: &Arc<OutQueue>,
) -> io::Result<()> {
    // Buffered: a frame's size and body, and pipelined frames, come in one read.
    let mut conn = io::BufReader::with_capacity(64 * 1024, conn);
    loop {
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
        // Backpressure: do not take more work than the session may hold, nor while the
        // client leaves its replies unread.
        while session.is_full() || out.is_backlogged() {
            std::thread::sleep(Duration::from_micros(200));
        }
        // Nothing more to read yet: serve this one here while the client waits, and write
        // its reply from here too if nobody else is writing.
        let inline = conn.buffer().is_empty();
        let responder = StreamResponder {
            out: out.clone(),
            buf: out.buffer(),
            inline,
        };
        let submitted = if inline {
            out.begin_inline();
            let r = session
                .executor()
                .run_here(|| session.submit(&frame, responder));
            out.end_inline();
            r
        } else {
            session.submit(&frame, responder)
        };
        if let Err(e) = submitted {
            return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string()));
        }
    }
}
