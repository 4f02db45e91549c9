//! vhost-user: co9p as a device backend process, the way virtiofsd serves virtio-fs.
//!
//! A VMM (QEMU's `vhost-user-test-device-pci` with `virtio-id=9`, or any frontend built on
//! rust-vmm's `vhost` crate) connects to a unix socket, shares the guest's memory as file
//! descriptors, and hands over the request ring; a guest kernel then mounts
//! `-t 9p -o trans=virtio TAG`. The device is the in-process [`Virtio9p`] (chain walk and
//! checks, responder, zero-copy `Rread`/`Twrite`, EVENT_IDX, every chain completed once);
//! [`Vhost9p`] translates rust-vmm's `vhost-user-backend` calls into its ring hand-over API,
//! and [`serve`] runs frontends one at a time over [`VhostUserDaemon`].
//!
//! Lifecycle: one frontend at a time. When it disconnects (even killed mid-request), the
//! device is reset — its requests cancelled, its fids dropped — and the daemon waits, at
//! most [`ServeOptions::stop_timeout`], for every request to end before it lets go of the
//! guest's memory and eventfds; then it returns, or waits for the next frontend
//! ([`ServeOptions::persistent`]). A second daemon on the same socket is refused: each
//! holds an exclusive lock on `PATH.lock` while it runs.

mod backend;

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use vhost::vhost_user::Listener;
use vhost_user_backend::VhostUserDaemon;
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};

use crate::co::Executor;
use crate::fs::Filesystem;
use crate::transport::virtio::Virtio9p;

pub use backend::{Vhost9p, protocol_features};

/// How [`serve`] runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The unix socket the frontend connects to.
    pub socket_path: PathBuf,
    /// Wait for the next frontend after one disconnects (default: return).
    pub persistent: bool,
    /// How long a ring stop or a disconnect waits for running requests.
    pub stop_timeout: Duration,
    /// The largest ring the frontend may set up (the device's `queue_max_size`).
    pub max_queue_size: u16,
    /// Set to make a persistent daemon return once its current frontend (if any) leaves;
    /// a connection that is closed at once wakes one waiting for a frontend.
    pub stop: Option<Arc<AtomicBool>>,
}

/// Why [`serve`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0} is already served by another co9p (its lock {1} is held)")]
    /// Another daemon holds the socket's lock file.
    InUse(String, String),
    #[error("cannot lock {0}: {1}")]
    /// The socket's lock file could not be taken.
    Lock(String, std::io::Error),
    #[error("cannot listen on {0}: {1}")]
    /// The socket could not be bound.
    Listen(String, vhost::vhost_user::Error),
    #[error("vhost-user daemon: {0}")]
    /// The daemon failed while serving.
    Daemon(String),
}

/// The exclusive lock a running daemon holds on `PATH.lock` (released when dropped, or
/// when the process dies: a stale socket is then replaced, a live one never).
pub struct SocketLock {
    _file: File,
    path: PathBuf,
}

impl SocketLock {
    /// Takes the lock of `socket`, or says who holds it.
    pub fn take(socket: &Path) -> Result<SocketLock, ServeError> {
        let mut path = socket.as_os_str().to_owned();
        path.push(".lock");
        let path = PathBuf::from(path);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| ServeError::Lock(path.display().to_string(), e))?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(SocketLock { _file: file, path }),
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => Err(ServeError::InUse(
                socket.display().to_string(),
                path.display().to_string(),
            )),
            Err(e) => Err(ServeError::Lock(path.display().to_string(), e.into())),
        }
    }
}

impl Drop for SocketLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Serves `device` to vhost-user frontends on `opts.socket_path`, one at a time, until a
/// frontend disconnects (or, with `persistent`, forever). `ready` is called once the
/// socket listens.
pub fn serve<F: Filesystem, E: Executor>(
    device: Arc<Virtio9p<F, E>>,
    ex: E,
    opts: &ServeOptions,
    ready: impl FnOnce(),
) -> Result<(), ServeError> {
    let path = opts.socket_path.display().to_string();
    let _lock = SocketLock::take(&opts.socket_path)?;
    // Holding the lock, any socket file left at the path is a dead daemon's.
    let mut listener =
        Listener::new(&opts.socket_path, true).map_err(|e| ServeError::Listen(path.clone(), e))?;
    ready();
    loop {
        let backend = Arc::new(Vhost9p::new(
            device.clone(),
            ex.clone(),
            opts.max_queue_size,
            opts.stop_timeout,
        ));
        let outcome = serve_one(&backend, &mut listener);
        // The frontend is gone: its requests are cancelled and waited for before its
        // memory and eventfds are let go (dropping the daemon joins its worker thread).
        let latch = device.reset();
        if !latch.wait_timeout(opts.stop_timeout) {
            tracing::warn!("vhost-user: requests still running after the frontend left");
        }
        backend.disconnect();
        match outcome {
            Ok(()) => tracing::info!(socket = %path, "vhost-user frontend disconnected"),
            Err(e) if opts.persistent => tracing::warn!(socket = %path, "vhost-user: {e}"),
            Err(e) => return Err(e),
        }
        let stopped = opts
            .stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::Acquire));
        if !opts.persistent || stopped {
            return Ok(());
        }
    }
}

/// Accepts one frontend and serves it until it disconnects.
fn serve_one<F: Filesystem, E: Executor>(
    backend: &Arc<Vhost9p<F, E>>,
    listener: &mut Listener,
) -> Result<(), ServeError> {
    let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
    let mut daemon = VhostUserDaemon::new("co9p-vhost-user".into(), backend.clone(), mem)
        .map_err(|e| ServeError::Daemon(e.to_string()))?;
    daemon
        .start(listener)
        .map_err(|e| ServeError::Daemon(e.to_string()))?;
    tracing::info!(fd = listener.as_raw_fd(), "vhost-user frontend connected");
    let result = daemon.wait();
    // Also stops the ring worker, which may still hold the device's kick path.
    drop(daemon);
    backend.close_exit_events();
    match result {
        Ok(()) => Ok(()),
        Err(vhost_user_backend::Error::HandleRequest(
            vhost::vhost_user::Error::Disconnected | vhost::vhost_user::Error::PartialMessage,
        )) => Ok(()),
        Err(e) => Err(ServeError::Daemon(e.to_string())),
    }
}
