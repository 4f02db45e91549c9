//! The CLI: arguments (clap), the checks made before anything is printed or bound, logging,
//! the sandbox, and `co9p serve`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use clap::{Parser, Subcommand, ValueEnum};
use co9p::co::ThreadPool;
use co9p::fs::host::{HostOptions, SecurityModel};
use co9p::fs::{Filesystem, HostFs, MemFs};
use co9p::sandbox::{Confinement, Enforcement, Profile, SeccompMode};
use co9p::server::{Config, MAX_MSIZE};
use co9p::transport::stream::{ListenAddr, Listener, StreamServer, UnixSocketOptions};

/// Most executor threads `--threads` accepts.
pub const MAX_THREADS: u16 = 256;

const EXIT_CODES: &str = "\
Exit status:
  0  stopped cleanly: serve on SIGINT or SIGTERM; vhost-user when its frontend leaves
     (without --persistent; SIGINT or SIGTERM end vhost-user by the signal)
  1  could not start or failed while serving (export missing, address in use, socket
     already served, a sandbox asked for but unavailable, ...)
  2  bad command line (unknown or conflicting options, a value out of range)";

#[derive(Parser)]
#[command(name = "co9p", version, about = "A 9P2000.L file server", after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve a directory to 9P2000.L clients over tcp or a unix socket.
    #[command(after_help = EXIT_CODES)]
    Serve(ServeArgs),
    /// Serve a directory as a virtio-9p device to a vhost-user frontend (a VMM such as
    /// QEMU), for a guest to mount with `-t 9p -o trans=virtio TAG`.
    #[command(after_help = EXIT_CODES)]
    VhostUser(crate::vhost::VhostUserArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// The export directory's real files, confined beneath it.
    Host,
    /// An in-memory filesystem (starts empty; contents vanish at exit; no --export).
    Mem,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SandboxArg {
    /// Landlock: files only beneath the export, no tcp bind/connect, no signals out.
    Landlock,
    /// No Landlock ruleset.
    None,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SeccompArg {
    /// A syscall outside the allow-list kills the process (SIGSYS).
    Kill,
    /// A syscall outside the allow-list is logged by the kernel (audit) and allowed.
    Log,
    /// No seccomp filter.
    None,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    Off,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

/// What both commands share: what is served, and how the process runs.
#[derive(clap::Args)]
pub struct Common {
    /// The directory to export (host backend; refused with --backend mem).
    #[arg(long, visible_alias = "shared-dir", value_name = "DIR")]
    pub export: Option<PathBuf>,
    /// Which filesystem backs the export.
    #[arg(long, value_enum, default_value_t = Backend::Host)]
    pub backend: Backend,
    /// How guest ownership and modes map to host files (host backend), as QEMU's
    /// `security_model`: passthrough, mapped-xattr or none.
    #[arg(long, default_value = "none")]
    pub security_model: SecurityModel,
    /// Largest msize to agree to, in bytes (4096 to 4194304).
    #[arg(long, value_name = "BYTES", default_value_t = 512 * 1024,
          value_parser = clap::value_parser!(u32).range(i64::from(co9p::protocol::MIN_MSIZE)..=i64::from(MAX_MSIZE)))]
    pub msize: u32,
    /// Refuse every change (EROFS); the sandbox then grants read access only.
    #[arg(long)]
    pub readonly: bool,
    /// Read every directory from the host at every listing (host backend). By default a
    /// whole listing is kept between opens and dropped by inotify when the directory
    /// changes, on local filesystems only; this is for an export changed where inotify
    /// cannot see.
    #[arg(long)]
    pub no_listing_cache: bool,
    /// Copy every read's data into its reply (host backend). By default a large read over
    /// a socket is sent straight from a shared mapping of the file, one copy fewer; a file
    /// shrunk on the host between the read and the send gives zeros for the bytes cut off.
    #[arg(long)]
    pub no_mapped_reads: bool,
    /// Log one decoded line per PDU (with the connection id and a timestamp).
    #[arg(long)]
    pub trace: bool,
    /// Executor threads (1 to 256).
    #[arg(long, visible_alias = "thread-pool-size", default_value_t = 2,
          value_parser = clap::value_parser!(u16).range(1..=i64::from(MAX_THREADS)))]
    pub threads: u16,
    /// Log level (else RUST_LOG, else info). Logs go to stderr.
    #[arg(long, value_enum)]
    pub log_level: Option<LogLevel>,
    /// Kernel confinement to the export [default: landlock where the kernel has it, with
    /// a logged fall-back; asked for explicitly, its absence is an error].
    #[arg(long, value_enum)]
    pub sandbox: Option<SandboxArg>,
    /// A seccomp allow-list of the syscalls the server makes [default: kill where the
    /// kernel has seccomp, with a logged fall-back].
    #[arg(long, value_enum)]
    pub seccomp: Option<SeccompArg>,
}

/// Options of a unix socket the server makes.
#[derive(clap::Args)]
pub struct SocketArgs {
    /// Permission bits of the unix socket, in octal (e.g. 660), so that a client running
    /// as another user can connect.
    #[arg(long, value_name = "OCTAL", value_parser = parse_mode)]
    pub socket_mode: Option<u32>,
    /// Group of the unix socket (a name or a number).
    #[arg(long, value_name = "GROUP", value_parser = parse_group)]
    pub socket_group: Option<u32>,
}

impl SocketArgs {
    pub fn options(&self) -> UnixSocketOptions {
        UnixSocketOptions {
            mode: self.socket_mode,
            group: self.socket_group,
        }
    }

    fn given(&self) -> bool {
        self.socket_mode.is_some() || self.socket_group.is_some()
    }
}

fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| "expected an octal mode up to 7777, e.g. 660".to_string())
}

fn parse_group(s: &str) -> Result<u32, String> {
    if let Ok(gid) = s.parse::<u32>() {
        return Ok(gid);
    }
    let name = std::ffi::CString::new(s).map_err(|_| "a group name has no NUL".to_string())?;
    // SAFETY: `libc::group` is plain C data (pointers and integers): all zeroes is valid.
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut out: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call, `buf` for its stated length.
    let rc = unsafe {
        libc::getgrnam_r(
            name.as_ptr(),
            &mut grp,
            buf.as_mut_ptr(),
            buf.len(),
            &mut out,
        )
    };
    if rc == 0 && !out.is_null() {
        Ok(grp.gr_gid)
    } else {
        Err("no such group".to_string())
    }
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Where to listen: tcp:HOST:PORT or unix:PATH.
    #[arg(long, value_name = "ADDR")]
    listen: ListenAddr,
    #[command(flatten)]
    socket: SocketArgs,
    /// Threads that read the connections, each waiting on many (1 to 256) [default: one
    /// per CPU, at most 16].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=i64::from(MAX_THREADS)))]
    readers: Option<u16>,
    /// Connections that get a reading thread of their own, which waits in its read (the
    /// first ones; 0 to 256): fewer syscalls per request; the others share the --readers
    /// threads.
    #[arg(long, default_value_t = co9p::transport::stream::DEDICATED as u16,
          value_parser = clap::value_parser!(u16).range(0..=i64::from(MAX_THREADS)))]
    dedicated_readers: u16,
    #[command(flatten)]
    common: Common,
}

/// Why the command stops with a failure: its message (one line) and exit status.
pub enum Failure {
    /// The command line is wrong: exit status 2.
    Usage(String),
    /// The system refused, or serving failed: exit status 1.
    Runtime(String),
}

impl Failure {
    fn report(self) -> u8 {
        let (msg, code) = match self {
            Failure::Usage(m) => (m, 2),
            Failure::Runtime(m) => (m, 1),
        };
        eprintln!("co9p: {msg}");
        code
    }

    fn exit(self) -> ExitCode {
        ExitCode::from(self.report())
    }

    /// Reports and ends the process at once (where no caller can be returned to).
    pub fn exit_now(self) -> ! {
        std::process::exit(i32::from(self.report()))
    }
}

/// An I/O error in one plain line, without Rust's `(os error N)` suffix.
pub fn plain(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::VhostUser(args) => crate::vhost::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => f.exit(),
    }
}

impl Common {
    /// The checks of the command line itself (exit status 2), made first.
    pub fn check(&self) -> Result<(), Failure> {
        match (self.backend, &self.export) {
            (Backend::Host, None) => Err(Failure::Usage(
                "--export DIR is required with the host backend".into(),
            )),
            (Backend::Mem, Some(_)) => Err(Failure::Usage(
                "--export is for the host backend (the mem backend serves no directory)".into(),
            )),
            _ => Ok(()),
        }
    }

    /// Starts logging to stderr: `--log-level`, else `RUST_LOG`, else info; `--trace`
    /// adds the PDU lines (target `co9p::pdu`). Colours only on a terminal.
    pub fn init_logging(&self) -> Result<(), Failure> {
        use tracing_subscriber::EnvFilter;
        let mut filter = match self.log_level {
            Some(level) => EnvFilter::new(format!("{level:?}").to_lowercase()),
            None => match std::env::var("RUST_LOG") {
                Ok(v) if !v.is_empty() => EnvFilter::try_new(&v)
                    .map_err(|e| Failure::Usage(format!("RUST_LOG={v}: {e}")))?,
                _ => EnvFilter::new("info"),
            },
        };
        if self.trace {
            filter = filter.add_directive("co9p::pdu=info".parse().expect("a valid directive"));
        }
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .init();
        Ok(())
    }

    /// The session configuration.
    pub fn config(&self) -> Config {
        Config {
            max_msize: self.msize,
            readonly: self.readonly,
            trace: self.trace,
            // Clients such as diod's send the exported path as the aname.
            export_name: self
                .export
                .as_ref()
                .and_then(|e| std::fs::canonicalize(e).ok())
                .map(|e| e.into_os_string().into_encoded_bytes())
                .unwrap_or_default(),
            ..Config::default()
        }
    }

    /// The export opened (host backend); checked before anything is bound.
    pub fn host_fs(&self) -> Result<HostFs, Failure> {
        let export = self
            .export
            .as_ref()
            .expect("checked: the host backend has --export");
        let cannot =
            |why: String| Failure::Runtime(format!("cannot export {}: {why}", export.display()));
        match std::fs::metadata(export) {
            Err(e) => return Err(cannot(plain(&e))),
            Ok(m) if !m.is_dir() => return Err(cannot("not a directory".into())),
            Ok(_) => {}
        }
        let opts = HostOptions {
            security_model: self.security_model,
            readonly: self.readonly,
            no_listing_cache: self.no_listing_cache,
            no_mapped_reads: self.no_mapped_reads,
            ..HostOptions::default()
        };
        HostFs::new(export, opts).map_err(|e| cannot(plain(&e)))
    }

    /// How the export is described in the start-up line.
    pub fn label(&self) -> String {
        let mut label = match self.backend {
            Backend::Host => format!("host backend, security model {}", self.security_model),
            Backend::Mem => "mem backend".to_string(),
        };
        if self.readonly {
            label.push_str(", read-only");
        }
        label
    }

    pub fn what(&self) -> String {
        match &self.export {
            Some(e) => e.display().to_string(),
            None => "an in-memory filesystem".into(),
        }
    }

    /// Confines the process (see `co9p::sandbox`): Landlock to `confinement`, seccomp to
    /// `profile`'s allow-list. Called before any server thread starts. Returns what is in
    /// force, for the start-up line.
    pub fn sandbox(
        &self,
        mut confinement: Confinement,
        profile: Profile,
    ) -> Result<String, Failure> {
        let mut on = Vec::new();
        confinement.readonly = self.readonly;
        let explicit = self.sandbox.is_some();
        match self.sandbox.unwrap_or(SandboxArg::Landlock) {
            SandboxArg::None => tracing::info!("sandbox: no landlock ruleset (--sandbox none)"),
            SandboxArg::Landlock => match co9p::sandbox::landlock(&confinement) {
                Ok(Enforcement::Full) => {
                    tracing::info!(export = %self.what(), "sandbox: landlock confines the process to the export");
                    on.push("landlock");
                }
                Ok(Enforcement::Partial) => {
                    tracing::warn!(
                        "sandbox: landlock partly enforced (the kernel's Landlock is older than this ruleset)"
                    );
                    on.push("landlock (partial)");
                }
                Ok(Enforcement::None) if explicit => {
                    return Err(Failure::Runtime(
                        "--sandbox landlock: the kernel has no Landlock (enabled); use --sandbox none to serve without it".into(),
                    ));
                }
                Ok(Enforcement::None) => {
                    tracing::warn!(
                        "sandbox: the kernel has no Landlock (enabled); serving without it"
                    );
                }
                Err(e) if explicit => {
                    return Err(Failure::Runtime(format!(
                        "--sandbox landlock: {e} (use --sandbox none to serve without it)"
                    )));
                }
                Err(e) => tracing::warn!("sandbox: {e}; serving without landlock"),
            },
        }
        let explicit = self.seccomp.is_some();
        let mode = match self.seccomp.unwrap_or(SeccompArg::Kill) {
            SeccompArg::None => None,
            SeccompArg::Kill => Some(SeccompMode::Kill),
            SeccompArg::Log => Some(SeccompMode::Log),
        };
        match mode {
            None => tracing::info!("sandbox: no seccomp filter (--seccomp none)"),
            Some(mode) => match co9p::sandbox::seccomp(profile, mode) {
                Ok(()) => {
                    let (shown, label) = match mode {
                        SeccompMode::Kill => ("kill", "seccomp"),
                        SeccompMode::Log => ("log", "seccomp log"),
                    };
                    tracing::info!(mode = shown, "sandbox: seccomp allow-list in force");
                    on.push(label);
                }
                Err(e) if !explicit => {
                    tracing::warn!("sandbox: {e}; serving without a seccomp filter")
                }
                Err(e) => {
                    return Err(Failure::Runtime(format!(
                        "--seccomp: {e} (use --seccomp none to serve without it)"
                    )));
                }
            },
        }
        Ok(if on.is_empty() {
            "no sandbox".into()
        } else {
            format!("sandbox {}", on.join(", "))
        })
    }
}

/// Registers SIGINT/SIGTERM to set the returned flag.
pub fn stop_flag() -> Result<Arc<AtomicBool>, Failure> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())
            .map_err(|e| Failure::Runtime(format!("signal handler: {}", plain(&e))))?;
    }
    Ok(stop)
}

fn serve(args: ServeArgs) -> Result<(), Failure> {
    let c = &args.common;
    c.check()?;
    if args.socket.given() && !matches!(args.listen, ListenAddr::Unix(_)) {
        return Err(Failure::Usage(
            "--socket-mode and --socket-group are for a unix: socket".into(),
        ));
    }
    c.init_logging()?;
    let config = c.config();
    let stop = stop_flag()?;
    match c.backend {
        Backend::Host => {
            let fs = c.host_fs()?;
            let export = c.export.clone();
            run(Arc::new(fs), &args, config, export, &stop)
        }
        Backend::Mem => run(
            Arc::new(MemFs::with_clock(co9p::fs::mem::system_clock())),
            &args,
            config,
            None,
            &stop,
        ),
    }
}

/// Binds, confines the process, and serves until SIGINT/SIGTERM on `--threads` threads.
fn run<F: Filesystem>(
    fs: Arc<F>,
    args: &ServeArgs,
    config: Config,
    export: Option<PathBuf>,
    stop: &AtomicBool,
) -> Result<(), Failure> {
    let c = &args.common;
    let listener = Listener::bind_with(&args.listen, &args.socket.options()).map_err(|e| {
        Failure::Runtime(format!("cannot listen on {}: {}", args.listen, plain(&e)))
    })?;
    let confinement = Confinement {
        export,
        ..Confinement::default()
    };
    let sandbox = c.sandbox(confinement, Profile::Serve)?;
    let pool = ThreadPool::new(usize::from(c.threads));
    let mut server = StreamServer::new(fs, pool.handle(), config)
        .with_dedicated(usize::from(args.dedicated_readers));
    if let Some(n) = args.readers {
        server = server.with_readers(usize::from(n));
    }
    println!(
        "co9p: serving {} ({}, {sandbox}) on {}",
        c.what(),
        c.label(),
        listener.local_addr()
    );
    tracing::info!(export = %c.what(), addr = %listener.local_addr(), "listening");
    let result = server
        .serve(&listener, stop)
        .map_err(|e| Failure::Runtime(format!("serving {}: {}", args.listen, plain(&e))));
    pool.shutdown();
    drop(listener);
    tracing::info!("stopped");
    result
}
