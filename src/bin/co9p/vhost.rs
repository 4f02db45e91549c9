//! `co9p vhost-user`: the virtio-9p device as a vhost-user backend process, with a command
//! line modelled on virtiofsd's (`--socket-path`, `--shared-dir`, `--thread-pool-size`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use co9p::co::ThreadPool;
use co9p::fs::host::{HostOptions, SecurityModel};
use co9p::fs::{Filesystem, HostFs, MemFs};
use co9p::server::Config;
use co9p::transport::vhost_user::{ServeOptions, serve};
use co9p::transport::virtio::{DeviceConfig, Virtio9p};

use crate::cli::Backend;

/// Most executor threads `--threads` accepts.
const MAX_THREADS: usize = 256;

#[derive(clap::Args)]
pub struct VhostUserArgs {
    /// The unix socket the VMM (the vhost-user frontend) connects to.
    #[arg(long)]
    socket_path: PathBuf,
    /// The directory to export.
    #[arg(long, visible_alias = "shared-dir")]
    export: PathBuf,
    /// The mount tag the guest mounts (`mount -t 9p -o trans=virtio TAG /mnt`).
    #[arg(long)]
    tag: String,
    /// Which filesystem backs the export.
    #[arg(long, value_enum, default_value_t = Backend::Host)]
    backend: Backend,
    /// How guest ownership and modes map to host files (host backend), as QEMU's
    /// `security_model`: passthrough, mapped-xattr or none.
    #[arg(long, default_value = "none")]
    security_model: SecurityModel,
    /// Largest msize to agree to, in bytes.
    #[arg(long, default_value_t = 512 * 1024)]
    msize: u32,
    /// Refuse every change (EROFS).
    #[arg(long)]
    readonly: bool,
    /// Print one decoded line per PDU to stderr.
    #[arg(long)]
    trace: bool,
    /// Executor threads (1 to 256).
    #[arg(long, visible_alias = "thread-pool-size", default_value_t = 2)]
    threads: usize,
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
}

pub fn run(args: VhostUserArgs) -> Result<(), String> {
    if args.msize < co9p::protocol::MIN_MSIZE {
        return Err(format!(
            "--msize must be at least {}",
            co9p::protocol::MIN_MSIZE
        ));
    }
    if !(1..=MAX_THREADS).contains(&args.threads) {
        return Err(format!("--threads must be from 1 to {MAX_THREADS}"));
    }
    if !args.queue_size.is_power_of_two() || args.queue_size > 32768 {
        return Err("--queue-size must be a power of two up to 32768".into());
    }
    let export_name = std::fs::canonicalize(&args.export)
        .map_err(|e| format!("cannot export {}: {e}", args.export.display()))?
        .into_os_string()
        .into_encoded_bytes();
    let server = Config {
        max_msize: args.msize,
        readonly: args.readonly,
        trace: args.trace,
        // A full ring of requests must find room in the session.
        max_inflight: Config::default()
            .max_inflight
            .max(usize::from(args.queue_size)),
        export_name,
        ..Config::default()
    };
    let mut device = DeviceConfig::new(args.tag.as_bytes());
    device.server = server;
    device.queue_max_size = args.queue_size;
    match args.backend {
        Backend::Host => {
            let opts = HostOptions {
                security_model: args.security_model,
                readonly: args.readonly,
                ..HostOptions::default()
            };
            let fs = HostFs::new(&args.export, opts)
                .map_err(|e| format!("cannot export {}: {e}", args.export.display()))?;
            run_device(Arc::new(fs), device, &args)
        }
        Backend::Mem => run_device(
            Arc::new(MemFs::with_clock(co9p::fs::mem::system_clock())),
            device,
            &args,
        ),
    }
}

fn run_device<F: Filesystem>(
    fs: Arc<F>,
    config: DeviceConfig,
    args: &VhostUserArgs,
) -> Result<(), String> {
    let pool = ThreadPool::new(args.threads);
    let device = Virtio9p::new(config, fs, pool.handle()).map_err(|e| e.to_string())?;
    let opts = ServeOptions {
        socket_path: args.socket_path.clone(),
        persistent: args.persistent,
        stop_timeout: Duration::from_secs(args.stop_timeout),
        max_queue_size: args.queue_size,
        stop: None,
    };
    let label = match args.backend {
        Backend::Host => format!("host backend, security model {}", args.security_model),
        Backend::Mem => "mem backend".to_string(),
    };
    let result = serve(Arc::new(device), pool.handle(), &opts, || {
        println!(
            "co9p: vhost-user device, tag {}, serving {} ({label}) on unix:{}",
            args.tag,
            args.export.display(),
            args.socket_path.display()
        );
    });
    pool.shutdown();
    result.map_err(|e| e.to_string())
}
