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
        let socket = socket_path("dev");
        let queue = dc.queue_max_size;
        let device = Arc::new(Virtio9p::new(dc, fs, pool.handle()).expect("device config"));
        let opts = ServeOptions {
            socket_path: socket.clone(),
            persistent,
            stop_timeout: Duration::from_secs(10),
            max_queue_size: queue,
            stop: None,
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

pub struct VhostUser<F: Filesystem> {
    pub guest: VirtualGuest<Arc<VhostFront>>,
    pub daemon: Daemon<F>,
    /// Use the zero-copy layouts for large reads and writes (as Linux does).
    pub zero_copy: bool,
    pub indirect: bool,
    /// Every used entry seen, in order.
    pub completions: Vec<Completion>,
    pub replies: VecDeque<Vec<u8>>,
    msize: u32,
    // Last: the pool outlives the daemon's device and the guest.
    pub pool: ThreadPool,
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
            guest,
            daemon,
            zero_copy: true,
            indirect: false,
            completions: Vec::new(),
            replies: VecDeque::new(),
            msize: 8192,
            pool,
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

    /// Waits until `n` more used entries have arrived (bounded); whether they did.
    pub fn wait_used(&mut self, n: usize) -> bool {
        let deadline = Instant::now() + REPLY_TIMEOUT;
        let mut seen = 0;
        loop {
            seen += self.collect();
            if seen >= n {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            self.front().wait_interrupt(Duration::from_millis(50));
            let _ = self.guest.take_interrupt();
        }
    }
}

impl<F: Filesystem> Drop for VhostUser<F> {
    /// The frontend goes away; the daemon resets the device and returns (bounded).
    fn drop(&mut self) {
        self.front().disconnect();
        if self.daemon.thread.is_some() {
            let _ = self.daemon.join();
        }
    }
}

impl<F: Filesystem> Link for VhostUser<F> {
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
