//! The vhost-user link: co9p's vhost-user daemon ([`serve`]) runs in this process on a
//! real unix socket, and the harness guest drives it through a vhost-user frontend
//! ([`VhostFront`]): every request is a descriptor chain in shared guest RAM, kicked through
//! an eventfd, its reply read from the used ring after the call eventfd fires. The device
//! runs on a pool of its own threads, so replies arrive asynchronously; `recv` waits for
//! them, bounded.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use co9p::co::{PoolHandle, ThreadPool};
use co9p::fs::Filesystem;
use co9p::server::Config;
use co9p::transport::vhost_user::{ServeError, ServeOptions, serve};
use co9p::transport::virtio::harness::{BootOptions, Completion, VirtualGuest};
use co9p::transport::virtio::{DeviceConfig, Virtio9p};

use super::Link;
use super::vhost_front::{self, VhostFront};
use super::virtio::linux_layout;

/// How long a reply may take before `recv` gives up (a hang fails the test, never blocks it).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(20);

/// A fresh socket path in the temp dir.
pub fn socket_path(what: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    std::env::temp_dir().join(format!(
        "co9p-vhost-{what}-{}-{}.sock",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// The daemon running in a thread of this process.
pub struct Daemon<F: Filesystem> {
    pub device: Arc<Virtio9p<F, PoolHandle>>,
    pub socket: PathBuf,
    pub thread: Option<JoinHandle<Result<(), ServeError>>>,
}

impl<F: Filesystem> Daemon<F> {
    /// Starts `serve` on a new socket with a device over `fs`; returns once it listens.
    pub fn start(fs: Arc<F>, dc: DeviceConfig, pool: &ThreadPool, persistent: bool) -> Self {
        Self::start_with(fs, dc, pool, persistent, None)
    }

    /// [`Self::start`], with a stop flag for a persistent daemon.
    pub fn start_with(
        fs: Arc<F>,
        dc: DeviceConfig,
        pool: &ThreadPool,
        persistent: bool,
        stop: Option<Arc<std::sync::atomic::AtomicBool>>,
    ) -> Self {
        let socket = socket_path("dev");
        let queue = dc.queue_max_size;
        let device = Arc::new(Virtio9p::new(dc, fs, pool.handle()).expect("device config"));
        let opts = ServeOptions {
            socket_path: socket.clone(),
            persistent,
            stop_timeout: Duration::from_secs(10),
            max_queue_size: queue,
            stop,
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let (dev, ex) = (device.clone(), pool.handle());
        let thread = std::thread::spawn(move || {
            serve(dev, ex, &opts, || {
                let _ = tx.send(());
            })
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("the daemon listens");
        Daemon {
            device,
            socket,
            thread: Some(thread),
        }
    }

    /// Waits (bounded) for `serve` to return, and returns what it returned.
    pub fn join(&mut self) -> Result<(), ServeError> {
        let t = self.thread.take().expect("joined once");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !t.is_finished() {
            assert!(Instant::now() < deadline, "the daemon did not stop");
            std::thread::sleep(Duration::from_millis(5));
        }
        t.join().expect("the daemon thread panicked")
    }
}

/// A harness guest on a vhost-user backend, as a [`Link`].
pub struct Guest {
    pub guest: VirtualGuest<Arc<VhostFront>>,
    /// Use the zero-copy layouts for large reads and writes (as Linux does).
    pub zero_copy: bool,
    pub indirect: bool,
    /// Every used entry seen, in order.
    pub completions: Vec<Completion>,
    pub replies: VecDeque<Vec<u8>>,
    msize: u32,
}

impl Guest {
    /// A link over a booted guest.
    pub fn new(guest: VirtualGuest<Arc<VhostFront>>) -> Self {
        Guest {
            guest,
            zero_copy: true,
            indirect: false,
            completions: Vec::new(),
            replies: VecDeque::new(),
            msize: 8192,
        }
    }

    pub fn front(&self) -> &Arc<VhostFront> {
        &self.guest.dev
    }

    /// Collects what the used ring holds now.
    pub fn collect(&mut self) -> usize {
        let done = self.guest.poll_used();
        let n = done.len();
        for c in done {
            if c.len > 0 {
                if c.reply.len() >= 11 && c.reply[4] == 101 {
                    self.msize =
                        u32::from_le_bytes([c.reply[7], c.reply[8], c.reply[9], c.reply[10]]);
                }
                self.replies.push_back(c.reply.clone());
            }
            self.completions.push(c);
        }
        n
    }
}

impl Link for Guest {
    fn send(&mut self, frame: Vec<u8>) {
        let layout = linux_layout(&frame, self.msize, self.zero_copy);
        self.guest
            .submit(&frame, layout, self.indirect)
            .expect("queue or guest RAM full");
        self.guest.kick();
    }

    /// The next reply; `None` if nothing came within the timeout or nothing is in flight.
    fn recv(&mut self) -> Option<Vec<u8>> {
        let deadline = Instant::now() + REPLY_TIMEOUT;
        while self.replies.is_empty() {
            self.collect();
            if !self.replies.is_empty() || self.guest.in_flight() == 0 {
                break;
            }
            if Instant::now() >= deadline {
                break;
            }
            self.front().wait_interrupt(Duration::from_millis(50));
            let _ = self.guest.take_interrupt();
        }
        self.replies.pop_front()
    }

    fn settle(&mut self) {
        std::thread::sleep(Duration::from_millis(50));
        self.collect();
    }
}

/// A daemon in this process and a guest booted on it.
pub struct VhostUser<F: Filesystem> {
    pub link: Guest,
    pub daemon: Daemon<F>,
    // Last: the pool outlives the daemon's device and the guest.
    pub pool: ThreadPool,
}

impl<F: Filesystem> std::ops::Deref for VhostUser<F> {
    type Target = Guest;
    fn deref(&self) -> &Guest {
        &self.link
    }
}

impl<F: Filesystem> std::ops::DerefMut for VhostUser<F> {
    fn deref_mut(&mut self) -> &mut Guest {
        &mut self.link
    }
}

impl<F: Filesystem> VhostUser<F> {
    /// A daemon with tag "co9p" on a pool of two threads, and a guest with 32 MiB of shared
    /// RAM booted on it.
    pub fn new(fs: Arc<F>, config: Config) -> Self {
        let mut dc = DeviceConfig::new("co9p");
        dc.server = config;
        Self::with(fs, dc, false)
    }

    pub fn with(fs: Arc<F>, dc: DeviceConfig, persistent: bool) -> Self {
        let pool = ThreadPool::new(2);
        let queue = dc.queue_max_size;
        let daemon = Daemon::start(fs, dc, &pool, persistent);
        let mut guest = vhost_front::guest(&daemon.socket, 32 << 20, queue);
        guest.boot(&BootOptions::default()).expect("boot");
        VhostUser {
            link: Guest::new(guest),
            daemon,
            pool,
        }
    }

    /// Every chain is accounted for: none in flight, no used entry for a chain nobody
    /// posted, every chain the device popped completed, and no NEEDS_RESET.
    pub fn settled(&self) -> Result<(), String> {
        let in_flight = self.guest.in_flight();
        let unexpected = self.guest.unexpected_used();
        let s = self.daemon.device.stats();
        let status = self.daemon.device.status();
        if in_flight != 0 || unexpected != 0 || s.popped != s.completed {
            return Err(format!(
                "{in_flight} chains in flight, {unexpected} unexpected used entries, {} popped, {} completed",
                s.popped, s.completed
            ));
        }
        if status & co9p::transport::virtio::STATUS_NEEDS_RESET != 0 {
            return Err(format!("device status {status:#x}: NEEDS_RESET"));
        }
        Ok(())
    }
}

impl<F: Filesystem> Drop for VhostUser<F> {
    /// The frontend goes away; the daemon resets the device and returns (bounded).
    fn drop(&mut self) {
        self.link.front().disconnect();
        if self.daemon.thread.is_some() {
            let _ = self.daemon.join();
        }
    }
}

impl<F: Filesystem> Link for VhostUser<F> {
    fn send(&mut self, frame: Vec<u8>) {
        self.link.send(frame)
    }
    fn recv(&mut self) -> Option<Vec<u8>> {
        self.link.recv()
    }
    fn settle(&mut self) {
        self.link.settle()
    }
}
