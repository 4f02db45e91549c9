//! The CLI: arguments (clap) and `co9p serve`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use clap::{Parser, Subcommand, ValueEnum};
use co9p::co::ThreadPool;
use co9p::fs::host::{HostOptions, SecurityModel};
use co9p::fs::{Filesystem, HostFs, MemFs};
use co9p::server::Config;
use co9p::transport::stream::{ListenAddr, Listener, StreamServer};

#[derive(Parser)]
#[command(name = "co9p", version, about = "A 9P2000.L file server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve a directory to 9P2000.L clients over tcp or a unix socket.
    Serve(ServeArgs),
    /// Serve a directory as a virtio-9p device to a vhost-user frontend (a VMM such as
    /// QEMU), for a guest to mount with `-t 9p -o trans=virtio TAG`.
    VhostUser(crate::vhost::VhostUserArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// The export directory's real files, confined beneath it.
    Host,
    /// An in-memory filesystem (starts empty; contents vanish at exit).
    Mem,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// The directory to export (also accepted as the attach name).
    #[arg(long)]
    export: PathBuf,
    /// Where to listen: tcp:HOST:PORT or unix:PATH.
    #[arg(long)]
    listen: ListenAddr,
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
    /// Executor threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

pub fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => match serve(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("co9p: {e}");
                ExitCode::FAILURE
            }
        },
        Command::VhostUser(args) => match crate::vhost::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("co9p: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn serve(args: ServeArgs) -> Result<(), String> {
    if args.msize < co9p::protocol::MIN_MSIZE {
        return Err(format!(
            "--msize must be at least {}",
            co9p::protocol::MIN_MSIZE
        ));
    }
    let config = Config {
        max_msize: args.msize,
        readonly: args.readonly,
        trace: args.trace,
        // Clients such as diod's send the exported path as the aname.
        export_name: std::fs::canonicalize(&args.export)
            .unwrap_or_else(|_| args.export.clone())
            .as_os_str()
            .as_encoded_bytes()
            .to_vec(),
        ..Config::default()
    };
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())
            .map_err(|e| format!("signal handler: {e}"))?;
    }
    let listener = Listener::bind(&args.listen)
        .map_err(|e| format!("cannot listen on {:?}: {e}", args.listen))?;
    let label = match args.backend {
        Backend::Host => format!("host backend, security model {}", args.security_model),
        Backend::Mem => "mem backend".to_string(),
    };
    println!(
        "co9p: serving {} ({label}) on {}",
        args.export.display(),
        listener.local_addr()
    );
    match args.backend {
        Backend::Host => {
            let opts = HostOptions {
                security_model: args.security_model,
                readonly: args.readonly,
                ..HostOptions::default()
            };
            let fs = HostFs::new(&args.export, opts)
                .map_err(|e| format!("cannot export {}: {e}", args.export.display()))?;
            run(Arc::new(fs), &args, config, &listener, &stop)?;
        }
        Backend::Mem => run(
            Arc::new(MemFs::with_clock(co9p::fs::mem::system_clock())),
            &args,
            config,
            &listener,
            &stop,
        )?,
    }
    drop(listener);
    eprintln!("co9p: stopped");
    Ok(())
}

/// Serves until SIGINT/SIGTERM, on a pool of `--threads` threads.
fn run<F: Filesystem>(
    fs: Arc<F>,
    args: &ServeArgs,
    config: Config,
    listener: &Listener,
    stop: &AtomicBool,
) -> Result<(), String> {
    let pool = ThreadPool::new(args.threads.max(1));
    let server = StreamServer::new(fs, pool.handle(), config);
    tracing::info!(export = %args.export.display(), addr = %listener.local_addr(), "listening");
    let result = server.serve(listener, stop).map_err(|e| e.to_string());
    pool.shutdown();
    result
}
