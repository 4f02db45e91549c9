//! What the host itself can do, with no 9P server in the way: the ceilings a server's
//! figures are bounded by on this machine, measured in the same run as the servers.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{MIB, Res};

const RUN: Duration = Duration::from_millis(600);

/// MiB/s of 1 MiB messages over `streams` fresh loopback sockets of the kind `addr` names
/// (`tcp:` or `unix:`) at once, each from one thread to another: the most any server can
/// send that many client connections over such sockets.
pub fn socket_mib_s(addr: &str, streams: usize) -> Res<f64> {
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for _ in 0..streams.max(1) {
        let (mut rx, tx) = socket_pair(addr)?;
        let stop2 = stop.clone();
        threads.push(std::thread::spawn(move || {
            let mut tx = tx;
            let buf = vec![7u8; MIB as usize];
            while !stop2.load(Ordering::Relaxed) {
                if tx.write_all(&buf).is_err() {
                    return;
                }
            }
        }));
        let (stop3, received) = (stop.clone(), received.clone());
        threads.push(std::thread::spawn(move || {
            let mut buf = vec![0u8; MIB as usize];
            while !stop3.load(Ordering::Relaxed) {
                if rx.read_exact(&mut buf).is_err() {
                    return;
                }
                received.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let start = Instant::now();
    std::thread::sleep(RUN);
    let n = received.load(Ordering::Relaxed);
    let rate = n as f64 / start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    // Senders blocked on a full socket see it close when their reader drops it.
    for t in threads {
        let _ = t.join();
    }
    Ok(rate)
}

type Pair = (Box<dyn Read + Send>, Box<dyn Write + Send>);

/// A connected pair of loopback sockets of the kind `addr` names.
fn socket_pair(addr: &str) -> Res<Pair> {
    if addr.starts_with("unix:") {
        let (a, b) = UnixStream::pair().map_err(|e| e.to_string())?;
        return Ok((Box::new(a), Box::new(b)));
    }
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let a = TcpStream::connect(l.local_addr().map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let (b, _) = l.accept().map_err(|e| e.to_string())?;
    Ok((Box::new(a), Box::new(b)))
}

/// Creates and removes per second in `dir` by `threads` threads making the fewest calls a
/// server can make for Tlcreate + Tremove (`openat(O_CREAT|O_EXCL)`, `fstat`, `unlinkat`,
/// `close`), with no protocol, socket or client in the way.
pub fn create_ops_s(dir: &Path, threads: usize) -> Res<f64> {
    use rustix::fs::{AtFlags, Mode, OFlags, fstat, openat, unlinkat};
    let dirfd = rustix::fs::open(dir, OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let dirfd = Arc::new(dirfd);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let pid = std::process::id();
    let workers: Vec<_> = (0..threads.max(1))
        .map(|t| {
            let (dirfd, stop, done) = (dirfd.clone(), stop.clone(), done.clone());
            std::thread::spawn(move || -> Res<()> {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let name = format!("co9p-ceiling.{pid}.{t}.{i}");
                    let flags = OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC;
                    let fd = openat(&*dirfd, name.as_str(), flags, Mode::from_raw_mode(0o644))
                        .map_err(|e| format!("create {name}: {e}"))?;
                    std::hint::black_box(fstat(&fd).map_err(|e| e.to_string())?);
                    unlinkat(&*dirfd, name.as_str(), AtFlags::empty())
                        .map_err(|e| format!("unlink {name}: {e}"))?;
                    drop(fd);
                    i += 1;
                }
                done.fetch_add(i, Ordering::Relaxed);
                Ok(())
            })
        })
        .collect();
    let start = Instant::now();
    std::thread::sleep(RUN);
    stop.store(true, Ordering::Relaxed);
    let mut err = None;
    for w in workers {
        if let Err(e) = w
            .join()
            .map_err(|_| "ceiling thread panicked".to_string())
            .and_then(|r| r)
        {
            err.get_or_insert(e);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    match err {
        Some(e) => Err(e),
        None => Ok(done.load(Ordering::Relaxed) as f64 / secs),
    }
}

/// How a file-to-socket ceiling moves each MiB.
#[derive(Clone, Copy, Debug)]
pub enum FileSend {
    /// `pread` into a buffer, then `write` it: a copying server's fewest calls.
    Copy,
    /// `sendfile` from the file into the socket: no copy in the sender.
    Sendfile,
    /// `write` straight from a shared mapping of the file: one copy, page cache to socket.
    Mmap,
}

/// MiB/s of 1 MiB pieces of a `file_mib` MiB file in `dir` (on the exported filesystem)
/// sent over `streams` loopback sockets of the kind `addr` names, each sender moving
/// through the file as the read1m workload does, with no 9P in the way: what a server
/// that reads the file (`Copy`) or splices it (`Sendfile`) can reach at best here.
pub fn file_socket_mib_s(
    dir: &Path,
    addr: &str,
    streams: usize,
    file_mib: u64,
    how: FileSend,
) -> Res<f64> {
    use std::os::unix::fs::FileExt;
    let path = dir.join(format!("co9p-ceiling.{}.data", std::process::id()));
    let made = (|| -> std::io::Result<std::fs::File> {
        let mut f = std::fs::File::create_new(&path)?;
        let piece: Vec<u8> = (0..MIB).map(|i| (i % 251) as u8).collect();
        for _ in 0..file_mib.max(1) {
            f.write_all(&piece)?;
        }
        std::fs::File::open(&path)
    })();
    let _ = std::fs::remove_file(&path);
    let file = Arc::new(made.map_err(|e| format!("{}: {e}", path.display()))?);
    let map = Arc::new(Mapping::of(&file, file_mib.max(1) * MIB)?);
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for t in 0..streams.max(1) {
        let (mut rx, tx) = fd_pair(addr)?;
        let (stop2, file, map) = (stop.clone(), file.clone(), map.clone());
        threads.push(std::thread::spawn(move || {
            let mut tx = tx;
            let mut buf = vec![0u8; MIB as usize];
            let mut i = 0u64;
            while !stop2.load(Ordering::Relaxed) {
                let mut off = ((t as u64 * 7919 + i) % file_mib.max(1)) * MIB;
                i += 1;
                let sent = match how {
                    FileSend::Copy => file
                        .read_exact_at(&mut buf, off)
                        .and_then(|()| tx.write_all(&buf)),
                    FileSend::Sendfile => {
                        let end = off + MIB;
                        let mut r = Ok(());
                        while off < end {
                            let left = (end - off) as usize;
                            match rustix::fs::sendfile(&tx, &*file, Some(&mut off), left) {
                                Ok(0) => {
                                    r = Err(std::io::ErrorKind::WriteZero.into());
                                    break;
                                }
                                Ok(_) => {}
                                Err(e) => {
                                    r = Err(e.into());
                                    break;
                                }
                            }
                        }
                        r
                    }
                    FileSend::Mmap => tx.write_all(map.slice(off, MIB)),
                };
                if sent.is_err() {
                    return;
                }
            }
        }));
        let (stop3, received) = (stop.clone(), received.clone());
        threads.push(std::thread::spawn(move || {
            let mut buf = vec![0u8; MIB as usize];
            while !stop3.load(Ordering::Relaxed) {
                if rx.read_exact(&mut buf).is_err() {
                    return;
                }
                received.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let start = Instant::now();
    std::thread::sleep(RUN);
    let n = received.load(Ordering::Relaxed);
    let rate = n as f64 / start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    Ok(rate)
}

/// A connected pair of loopback sockets of the kind `addr` names, as files (so the sender
/// can also be handed to `sendfile`).
fn fd_pair(addr: &str) -> Res<(std::fs::File, std::fs::File)> {
    use std::os::fd::OwnedFd;
    let (a, b): (OwnedFd, OwnedFd) = if addr.starts_with("unix:") {
        let (a, b) = UnixStream::pair().map_err(|e| e.to_string())?;
        (a.into(), b.into())
    } else {
        let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let a = TcpStream::connect(l.local_addr().map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        let (b, _) = l.accept().map_err(|e| e.to_string())?;
        (a.into(), b.into())
    };
    Ok((a.into(), b.into()))
}

/// A read-only shared mapping of a whole file, for the mmap ceiling.
struct Mapping {
    ptr: *mut libc::c_void,
    len: usize,
}

// SAFETY: the mapping is read-only and only ever handed to write(2) as a source; no thread
// mutates it, and it is unmapped only when the last Arc is dropped.
unsafe impl Send for Mapping {}
// SAFETY: as above: shared reads only.
unsafe impl Sync for Mapping {}

impl Mapping {
    fn of(file: &std::fs::File, len: u64) -> Res<Mapping> {
        use std::os::fd::AsRawFd;
        let len = len as usize;
        // SAFETY: a fresh read-only shared mapping of a file we hold open; the address is
        // the kernel's choice, so no existing memory is replaced.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(format!("mmap: {}", std::io::Error::last_os_error()));
        }
        Ok(Mapping { ptr, len })
    }

    fn slice(&self, off: u64, len: u64) -> &[u8] {
        let (off, len) = (off as usize, len as usize);
        assert!(off + len <= self.len);
        // SAFETY: in bounds of the mapping (checked), which lives as long as `self`; the
        // file is never truncated while mapped (the ceiling made it and only reads it).
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>().add(off), len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `of` mapped; no slice outlives `self`.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}
