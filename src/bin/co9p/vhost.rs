//! `co9p vhost-user`: the virtio-9p device as a vhost-user backend process, with a command
//! line modelled on virtiofsd's (`--socket-path`, `--shared-dir`, `--thread-pool-size`).
//!
//! Before the sandbox, the socket path is checked: a daemon already serving it (holding
//! `PATH.lock`) is refused, a dead one's socket removed, and the lock file made, so that
//! the confined process needs only to make a socket in that directory and to open the lock
//! file again (which is all its Landlock ruleset grants there besides the export).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use co9p::co::ThreadPool;
use co9p::fs::{Filesystem, MemFs};
use co9p::sandbox::{Confinement, Profile};
use co9p::server::Config;
use co9p::transport::vhost_user::{ServeOptions, serve};
use co9p::transport::virtio::{DeviceConfig, Virtio9p};

use crate::cli::{Backend, Common, Failure, SocketArgs, plain};

#[derive(clap::Args)]
pub struct VhostUserArgs {
    /// The unix socket the VMM (the vhost-user frontend) connects to.
    #[arg(long, value_name = "PATH")]
    socket_path: PathBuf,
    #[command(flatten)]
    socket: SocketArgs,
    /// The mount tag the guest mounts (`mount -t 9p -o trans=virtio TAG /mnt`).
    #[arg(long)]
    tag: String,
    /// The largest request ring the frontend may set up: a power of two up to 32768.
    #[arg(long, default_value_t = 1024)]
    queue_size: u16,
    /// After a frontend disconnects, wait for the next one (default: exit).
    #[arg(long)]
    persistent: bool,
    /// Seconds a ring stop or a disconnect waits for running requests before it gives up
    /// on them (the device is reset).
    #[arg(long, default_value_t = 30)]
    stop_timeout: u64,
    #[command(flatten)]
    common: Common,
}

pub fn run(args: VhostUserArgs) -> Result<(), Failure> {
    let c = &args.common;
    c.check()?;
    if !args.queue_size.is_power_of_two() || args.queue_size > 32768 {
        return Err(Failure::Usage(
            "--queue-size must be a power of two up to 32768".into(),
        ));
    }
    if args.tag.is_empty() || args.tag.len() > usize::from(u16::MAX) {
        return Err(Failure::Usage("--tag must be 1 to 65535 bytes".into()));
    }
    c.init_logging()?;
    let server = Config {
        // A full ring of requests must find room in the session.
        max_inflight: Config::default()
            .max_inflight
            .max(usize::from(args.queue_size)),
        ..c.config()
    };
    let mut device = DeviceConfig::new(args.tag.as_bytes());
    device.server = server;
    device.queue_max_size = args.queue_size;
    match c.backend {
        Backend::Host => {
            let fs = c.host_fs()?;
            run_device(Arc::new(fs), device, &args)
        }
        Backend::Mem => run_device(
            Arc::new(MemFs::with_clock(co9p::fs::mem::system_clock())),
            device,
            &args,
        ),
    }
}

/// `PATH.lock`, the lock a running daemon holds (`transport::vhost_user::SocketLock`).
fn lock_path(socket: &Path) -> PathBuf {
    let mut p = socket.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

/// Refuses a socket another daemon serves, removes a dead one's, and leaves the lock file
/// in place (unlocked) for the daemon to take once confined.
fn prepare_socket(socket: &Path) -> Result<(), Failure> {
    use std::os::unix::fs::FileTypeExt;
    let shown = format!("unix:{}", socket.display());
    let lock = lock_path(socket);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock)
        .map_err(|e| Failure::Runtime(format!("cannot lock {}: {}", lock.display(), plain(&e))))?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
            return Err(Failure::Runtime(format!(
                "cannot listen on {shown}: already served by another co9p (it holds {})",
                lock.display()
            )));
        }
        Err(e) => {
            return Err(Failure::Runtime(format!(
                "cannot lock {}: {}",
                lock.display(),
                plain(&e.into())
            )));
        }
    }
    // Holding the lock, a socket left at the path is a dead daemon's.
    match std::fs::symlink_metadata(socket) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Failure::Runtime(format!(
            "cannot listen on {shown}: {}",
            plain(&e)
        ))),
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(socket)
            .map_err(|e| Failure::Runtime(format!("cannot listen on {shown}: {}", plain(&e)))),
        Ok(_) => Err(Failure::Runtime(format!(
            "cannot listen on {shown}: the path exists and is not a socket"
        ))),
    }
}

fn run_device<F: Filesystem>(
    fs: Arc<F>,
    config: DeviceConfig,
    args: &VhostUserArgs,
) -> Result<(), Failure> {
    let c = &args.common;
    prepare_socket(&args.socket_path)?;
    let dir = match args.socket_path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let confinement = Confinement {
        export: match c.backend {
            Backend::Host => c.export.clone(),
            Backend::Mem => None,
        },
        socket_dirs: vec![dir],
        writable_files: vec![lock_path(&args.socket_path)],
        ..Confinement::default()
    };
    // Before any thread starts: the pool's threads are confined too.
    let sandbox = c.sandbox(confinement, Profile::VhostUser)?;
    let pool = ThreadPool::new(usize::from(c.threads));
    let device = Virtio9p::new(config, fs, pool.handle())
        .map_err(|e| Failure::Runtime(format!("virtio-9p device: {e}")))?;
    let opts = ServeOptions {
        socket_path: args.socket_path.clone(),
        persistent: args.persistent,
        stop_timeout: Duration::from_secs(args.stop_timeout),
        max_queue_size: args.queue_size,
        stop: None,
    };
    let shown = format!("unix:{}", args.socket_path.display());
    let result = serve(Arc::new(device), pool.handle(), &opts, || {
        if let Err(e) = socket_options(&args.socket_path, &args.socket) {
            // Nothing is served yet: stop here rather than serve a socket the VMM
            // cannot reach.
            Failure::Runtime(format!("cannot set up {shown}: {}", plain(&e))).exit_now();
        }
        println!(
            "co9p: vhost-user device, tag {}, serving {} ({}, {sandbox}) on {shown}",
            args.tag,
            c.what(),
            c.label(),
        );
    });
    pool.shutdown();
    result.map_err(|e| Failure::Runtime(e.to_string()))
}

/// `--socket-mode` and `--socket-group`, set once the socket exists.
fn socket_options(path: &Path, s: &SocketArgs) -> std::io::Result<()> {
    let o = s.options();
    if let Some(mode) = o.mode {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    if let Some(gid) = o.group {
        std::os::unix::fs::lchown(path, None, Some(gid))?;
    }
    Ok(())
}
