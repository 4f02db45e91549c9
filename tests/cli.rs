//! The `co9p` command as a user meets it: each bad usage gets its exit status and one clear
//! line, checked before anything is printed or bound; a served socket is never taken over;
//! logs say who connected and what they attached; no client can make the server allocate
//! beyond the msize cap. (The binary runs with its default sandbox: Landlock and seccomp
//! where the kernel has them.)

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use co9p::protocol::*;

fn co9p() -> Command {
    Command::new(env!("CARGO_BIN_EXE_co9p"))
}

/// A fresh directory under the system's temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "co9p-cli-{}-{}-{tag}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(p.join("export")).unwrap();
        TempDir(p)
    }
    fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }
    fn export(&self) -> String {
        self.path("export").to_str().unwrap().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs `cmd` to its end (it must end within 30 s: a failure to start never serves).
fn finish(mut cmd: Command) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("{cmd:?} did not end");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    Output {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn run(args: &[&str]) -> Output {
    let mut cmd = co9p();
    cmd.args(args);
    finish(cmd)
}

/// A refused command line: `code`, nothing on stdout, and stderr saying `needle`.
fn refused(args: &[&str], code: i32, needle: &str) -> String {
    let out = run(args);
    assert_eq!(
        out.status.code(),
        Some(code),
        "{args:?}: stderr {:?}",
        out.stderr
    );
    assert_eq!(out.stdout, "", "{args:?} printed before failing");
    assert!(
        out.stderr.contains(needle),
        "{args:?}: {:?} lacks {needle:?}",
        out.stderr
    );
    out.stderr
}

/// Our own refusals are one line, `co9p: ...`, with no Rust Debug forms.
fn one_line(stderr: &str) {
    let lines: Vec<_> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr:?}");
    assert!(lines[0].starts_with("co9p: "), "{stderr:?}");
    for debug in ["Tcp(", "Unix(", "Os {", "kind:", "\"/"] {
        assert!(!stderr.contains(debug), "Debug form in {stderr:?}");
    }
}

/// A running `co9p` (started and ready: its start-up line read), stopped with SIGINT.
struct Server {
    child: Child,
    line: String,
    log: PathBuf,
}

impl Server {
    fn start(args: &[&str], log: PathBuf) -> Server {
        Self::start_env(args, log, &[])
    }

    fn start_env(args: &[&str], log: PathBuf, env: &[(&str, &str)]) -> Server {
        let mut child = co9p()
            .args(args)
            .envs(env.iter().copied())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        if line.is_empty() {
            let _ = child.wait();
            panic!(
                "{args:?} did not start: {}",
                std::fs::read_to_string(&log).unwrap()
            );
        }
        Server { child, line, log }
    }

    /// The address it serves, from `... on ADDR`.
    fn addr(&self) -> String {
        self.line.trim().rsplit(" on ").next().unwrap().to_string()
    }

    fn tcp(&self) -> std::net::TcpStream {
        let a = self.addr();
        std::net::TcpStream::connect(a.strip_prefix("tcp:").unwrap()).unwrap()
    }

    /// SIGINT, then its exit status and everything it logged.
    fn stop(mut self) -> (ExitStatus, String) {
        // SAFETY: a plain kill(2) of our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let status = self.child.wait().unwrap();
        (status, std::fs::read_to_string(&self.log).unwrap())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request, one reply, over a socket.
fn rpc<S: Read + Write>(s: &mut S, tag: u16, msg: Tmessage, msize: u32) -> Rmessage {
    s.write_all(&Request::new(Tag(tag), msg).to_bytes().unwrap())
        .unwrap();
    let mut size = [0u8; 4];
    s.read_exact(&mut size).unwrap();
    let mut frame = vec![0u8; u32::from_le_bytes(size) as usize];
    frame[..4].copy_from_slice(&size);
    s.read_exact(&mut frame[4..]).unwrap();
    let reply = Reply::decode(&frame, msize).unwrap();
    assert_eq!(reply.tag, Tag(tag));
    reply.msg
}

fn version<S: Read + Write>(s: &mut S, msize: u32) -> u32 {
    match rpc(
        s,
        Tag::NOTAG.0,
        Tmessage::Version {
            msize,
            version: "9P2000.L".into(),
        },
        u32::MAX,
    ) {
        Rmessage::Version { msize, .. } => msize,
        r => panic!("{r:?}"),
    }
}

fn attach<S: Read + Write>(s: &mut S, aname: &str, msize: u32) -> Rmessage {
    rpc(
        s,
        1,
        Tmessage::Attach {
            fid: Fid(0),
            afid: Fid::NOFID,
            uname: "tester".into(),
            aname: aname.into(),
            n_uname: 1000,
        },
        msize,
    )
}

#[test]
fn every_binary_has_version() {
    for bin in [env!("CARGO_BIN_EXE_co9p"), env!("CARGO_BIN_EXE_co9p-bench")] {
        let out = finish({
            let mut c = Command::new(bin);
            c.arg("--version");
            c
        });
        assert!(out.status.success(), "{bin}");
        assert!(
            out.stdout.starts_with("co9p") && out.stdout.contains(env!("CARGO_PKG_VERSION")),
            "{bin}: {:?}",
            out.stdout
        );
    }
}

#[test]
fn help_documents_the_exit_status() {
    let out = run(&["serve", "--help"]);
    assert!(out.status.success());
    for s in [
        "Exit status:",
        "--sandbox",
        "--seccomp",
        "--log-level",
        "--socket-mode",
    ] {
        assert!(out.stdout.contains(s), "{s} missing from serve --help");
    }
}

#[test]
fn out_of_range_values_are_usage_errors() {
    let t = TempDir::new("range");
    let e = t.export();
    let l = "tcp:127.0.0.1:0";
    refused(
        &[
            "serve",
            "--export",
            &e,
            "--listen",
            l,
            "--msize",
            "4294967295",
        ],
        2,
        "4096..=4194304",
    );
    refused(
        &["serve", "--export", &e, "--listen", l, "--msize", "4095"],
        2,
        "4096..=4194304",
    );
    refused(
        &[
            "serve",
            "--export",
            &e,
            "--listen",
            l,
            "--threads",
            "100000",
        ],
        2,
        "1..=256",
    );
    refused(
        &["serve", "--export", &e, "--listen", l, "--threads", "0"],
        2,
        "1..=256",
    );
    refused(
        &["serve", "--export", &e, "--listen", l, "--readers", "0"],
        2,
        "1..=256",
    );
    refused(
        &[
            "serve",
            "--export",
            &e,
            "--listen",
            l,
            "--dedicated-readers",
            "257",
        ],
        2,
        "0..=256",
    );
    refused(
        &["serve", "--export", "", "--listen", l],
        2,
        "a value is required for '--export",
    );
    refused(
        &["serve", "--export", &e, "--listen", l, "--sandbox", "jail"],
        2,
        "--sandbox",
    );
    refused(
        &["serve", "--export", &e, "--listen", l, "--seccomp", "trap"],
        2,
        "--seccomp",
    );
}

#[test]
fn bad_listen_addresses_are_usage_errors() {
    let t = TempDir::new("listen");
    let e = t.export();
    refused(
        &["serve", "--export", &e, "--listen", "unix:"],
        2,
        "the path is empty",
    );
    refused(
        &["serve", "--export", &e, "--listen", "tcp:5640"],
        2,
        "expected tcp:HOST:PORT",
    );
    refused(
        &["serve", "--export", &e, "--listen", "tcp:127.0.0.1:99999"],
        2,
        "expected tcp:HOST:PORT",
    );
    refused(
        &["serve", "--export", &e, "--listen", "/tmp/sock"],
        2,
        "expected tcp:HOST:PORT or unix:PATH",
    );
}

#[test]
fn export_rules() {
    let t = TempDir::new("export");
    let l = "tcp:127.0.0.1:0";
    // Missing: checked before anything is printed or bound.
    let err = refused(
        &["serve", "--export", "/nonexistent/co9p", "--listen", l],
        1,
        "co9p: cannot export /nonexistent/co9p: No such file or directory",
    );
    one_line(&err);
    std::fs::write(t.path("file"), b"x").unwrap();
    let f = t.path("file");
    let err = refused(
        &["serve", "--export", f.to_str().unwrap(), "--listen", l],
        1,
        "not a directory",
    );
    one_line(&err);
    // The host backend needs --export; the mem backend takes none.
    one_line(&refused(
        &["serve", "--listen", l],
        2,
        "--export DIR is required with the host backend",
    ));
    one_line(&refused(
        &[
            "serve",
            "--backend",
            "mem",
            "--export",
            "/nonexistent",
            "--listen",
            l,
        ],
        2,
        "--export is for the host backend",
    ));
    let s = Server::start(
        &["serve", "--backend", "mem", "--listen", l],
        t.path("mem.log"),
    );
    assert!(s.line.contains("mem backend"), "{}", s.line);
    let mut c = s.tcp();
    let msize = version(&mut c, 65536);
    assert!(matches!(attach(&mut c, "", msize), Rmessage::Attach { .. }));
    let (status, _) = s.stop();
    assert!(status.success());
}

#[test]
fn an_address_in_use_is_shown_as_written() {
    let t = TempDir::new("inuse");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("tcp:{}", taken.local_addr().unwrap());
    let err = refused(
        &["serve", "--export", &t.export(), "--listen", &addr],
        1,
        &format!("co9p: cannot listen on {addr}: Address already in use"),
    );
    one_line(&err);
}

#[test]
fn a_served_unix_socket_is_refused_and_keeps_its_server() {
    let t = TempDir::new("served");
    let sock = t.path("s.sock");
    let listen = format!("unix:{}", sock.display());
    let first = Server::start(
        &["serve", "--export", &t.export(), "--listen", &listen],
        t.path("first.log"),
    );
    let err = refused(
        &["serve", "--export", &t.export(), "--listen", &listen],
        1,
        &format!("co9p: cannot listen on {listen}: a server is already listening"),
    );
    one_line(&err);
    // The first server still answers on its socket.
    let mut c = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    assert_eq!(version(&mut c, 8192), 8192);
    drop(c);
    let (status, log) = first.stop();
    assert!(status.success(), "{log}");
    assert!(log.contains("peer=unix pid="), "{log}");
}

#[test]
fn a_stale_unix_socket_is_replaced_and_a_file_never() {
    let t = TempDir::new("stale");
    let sock = t.path("s.sock");
    // A socket nobody listens on any more (std leaves the file behind).
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(
        std::fs::symlink_metadata(&sock)
            .unwrap()
            .file_type()
            .is_socket()
    );
    let listen = format!("unix:{}", sock.display());
    let s = Server::start(
        &[
            "serve",
            "--export",
            &t.export(),
            "--listen",
            &listen,
            "--socket-mode",
            "660",
            "--socket-group",
            &egid().to_string(),
        ],
        t.path("s.log"),
    );
    let meta = std::fs::symlink_metadata(&sock).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o660);
    assert_eq!(meta.gid(), egid());
    let mut c = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    assert_eq!(version(&mut c, 8192), 8192);
    drop(c);
    assert!(s.stop().0.success());

    let file = t.path("file");
    std::fs::write(&file, b"precious").unwrap();
    let err = refused(
        &[
            "serve",
            "--export",
            &t.export(),
            "--listen",
            &format!("unix:{}", file.display()),
        ],
        1,
        "exists and is not a socket",
    );
    one_line(&err);
    assert_eq!(std::fs::read(&file).unwrap(), b"precious");
}

#[test]
fn socket_options_are_checked() {
    let t = TempDir::new("sockopt");
    let e = t.export();
    one_line(&refused(
        &[
            "serve",
            "--export",
            &e,
            "--listen",
            "tcp:127.0.0.1:0",
            "--socket-mode",
            "600",
        ],
        2,
        "--socket-mode and --socket-group are for a unix: socket",
    ));
    let l = format!("unix:{}", t.path("s.sock").display());
    refused(
        &[
            "serve",
            "--export",
            &e,
            "--listen",
            &l,
            "--socket-mode",
            "999",
        ],
        2,
        "expected an octal mode",
    );
    refused(
        &[
            "serve",
            "--export",
            &e,
            "--listen",
            &l,
            "--socket-group",
            "no-such-group-co9p",
        ],
        2,
        "no such group",
    );
}

#[test]
fn vhost_user_socket_rules() {
    let t = TempDir::new("vhost");
    let sock = t.path("v.sock");
    let s = sock.to_str().unwrap();
    refused(
        &[
            "vhost-user",
            "--socket-path",
            "",
            "--tag",
            "t",
            "--backend",
            "mem",
        ],
        2,
        "a value is required for '--socket-path",
    );
    refused(
        &[
            "vhost-user",
            "--socket-path",
            s,
            "--tag",
            "t",
            "--queue-size",
            "1000",
            "--backend",
            "mem",
        ],
        2,
        "power of two",
    );
    // Another daemon holds the socket's lock: refused, the socket left alone.
    let lock = std::fs::File::create(t.path("v.sock.lock")).unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).unwrap();
    one_line(&refused(
        &[
            "vhost-user",
            "--socket-path",
            s,
            "--tag",
            "t",
            "--backend",
            "mem",
        ],
        1,
        "already served by another co9p",
    ));
    drop(lock);
    std::fs::write(&sock, b"precious").unwrap();
    one_line(&refused(
        &[
            "vhost-user",
            "--socket-path",
            s,
            "--tag",
            "t",
            "--backend",
            "mem",
        ],
        1,
        "exists and is not a socket",
    ));
    assert_eq!(std::fs::read(&sock).unwrap(), b"precious");
    std::fs::remove_file(&sock).unwrap();
    // A dead daemon's socket is replaced; the mode is set before the VMM is told.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    let d = Server::start(
        &[
            "vhost-user",
            "--socket-path",
            s,
            "--tag",
            "t",
            "--export",
            &t.export(),
            "--socket-mode",
            "600",
        ],
        t.path("d.log"),
    );
    assert!(d.line.contains("tag t"), "{}", d.line);
    let meta = std::fs::symlink_metadata(&sock).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
}

#[test]
fn a_huge_msize_and_read_stay_within_the_cap() {
    let t = TempDir::new("msize");
    let big = vec![7u8; 5 << 20];
    std::fs::write(t.path("export/big"), &big).unwrap();
    let s = Server::start(
        &[
            "serve",
            "--export",
            &t.export(),
            "--listen",
            "tcp:127.0.0.1:0",
            "--msize",
            "4194304",
        ],
        t.path("s.log"),
    );
    let mut c = s.tcp();
    let msize = version(&mut c, u32::MAX);
    assert_eq!(msize, co9p::server::MAX_MSIZE);
    assert!(matches!(attach(&mut c, "", msize), Rmessage::Attach { .. }));
    let walked = rpc(
        &mut c,
        2,
        Tmessage::Walk {
            fid: Fid(0),
            newfid: Fid(1),
            wnames: vec!["big".into()],
        },
        msize,
    );
    assert!(matches!(walked, Rmessage::Walk { .. }), "{walked:?}");
    let opened = rpc(
        &mut c,
        3,
        Tmessage::Lopen {
            fid: Fid(1),
            flags: OpenFlags::RDONLY,
        },
        msize,
    );
    assert!(matches!(opened, Rmessage::Lopen { .. }), "{opened:?}");
    let read = rpc(
        &mut c,
        4,
        Tmessage::Read {
            fid: Fid(1),
            offset: 0,
            count: 0xFFFF_FFF0,
        },
        msize,
    );
    match read {
        Rmessage::Read { data } => assert_eq!(data.0.len(), msize as usize - 11),
        r => panic!("{r:?}"),
    }
    // And it still serves.
    assert_eq!(version(&mut c, 8192), 8192);
    drop(c);
    assert!(s.stop().0.success());
}

#[test]
fn the_library_caps_msize_whatever_the_config_says() {
    use co9p::co::ThreadPool;
    use co9p::fs::MemFs;
    use co9p::server::{Config, MAX_MSIZE};
    use co9p::transport::stream::{ListenAddr, Listener, StreamServer};
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    let listener = Listener::bind(&ListenAddr::Tcp("127.0.0.1:0".into())).unwrap();
    let addr = listener.local_addr();
    let pool = ThreadPool::new(1);
    let config = Config {
        max_msize: u32::MAX,
        ..Config::default()
    };
    let server = StreamServer::new(Arc::new(MemFs::new()), pool.handle(), config);
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let t = std::thread::spawn(move || server.serve(&listener, &stop2).unwrap());
    let mut c = std::net::TcpStream::connect(addr.strip_prefix("tcp:").unwrap()).unwrap();
    assert_eq!(version(&mut c, u32::MAX), MAX_MSIZE);
    // A frame beyond the cap is never read into memory: the connection is closed.
    c.write_all(&(MAX_MSIZE + 1).to_le_bytes()).unwrap();
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest);
    assert!(rest.is_empty());
    stop.store(true, Ordering::SeqCst);
    t.join().unwrap();
    pool.shutdown();
}

/// The log lines of a stderr capture that come from the server's logger.
fn log_lines(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.contains("co9p::")).collect()
}

/// `2026-01-31T12:34:56.123456Z` at the start of a line.
fn timestamped(line: &str) -> bool {
    let b = line.as_bytes();
    b.len() > 20 && b[4] == b'-' && b[7] == b'-' && b[10] == b'T' && line[..27].ends_with('Z')
}

#[test]
fn sessions_are_logged_with_peer_connection_and_attach() {
    let t = TempDir::new("logs");
    std::fs::create_dir(t.path("export/sub")).unwrap();
    let s = Server::start(
        &[
            "serve",
            "--export",
            &t.export(),
            "--listen",
            "tcp:127.0.0.1:0",
        ],
        t.path("s.log"),
    );
    let mut c = s.tcp();
    let peer = c.local_addr().unwrap().to_string();
    let msize = version(&mut c, 8192);
    assert!(matches!(
        attach(&mut c, "sub", msize),
        Rmessage::Attach { .. }
    ));
    drop(c);
    let mut c = s.tcp();
    version(&mut c, 8192);
    assert!(matches!(
        attach(&mut c, "nope", msize),
        Rmessage::Lerror { .. }
    ));
    drop(c);
    // No pause needed: stopping joins every connection's thread, and each logs its close
    // (the client's, or the shutdown's) before it ends.
    let (status, log) = s.stop();
    assert!(status.success());
    assert!(!log.contains('\x1b'), "colour codes in a log file: {log:?}");
    let lines = log_lines(&log);
    assert!(lines.iter().all(|l| timestamped(l)), "{log}");
    let has = |needles: &[&str]| lines.iter().any(|l| needles.iter().all(|n| l.contains(n)));
    assert!(
        has(&[
            "INFO",
            "connection accepted",
            "conn=1",
            &format!("peer=tcp:{peer}")
        ]),
        "{log}"
    );
    assert!(
        has(&[
            "INFO",
            "attach",
            "conn=1",
            "uname=tester",
            "n_uname=1000",
            "aname=sub",
            "result=ok"
        ]),
        "{log}"
    );
    assert!(
        has(&["attach", "conn=2", "aname=nope", "result=2 (ENOENT)"]),
        "{log}"
    );
    assert!(has(&["connection closed", "conn=1"]), "{log}");
    assert!(has(&["connection closed", "conn=2"]), "{log}");
    assert!(has(&["INFO", "stopped"]), "{log}");
}

#[test]
fn log_level_and_trace_lines() {
    let t = TempDir::new("trace");
    let s = Server::start(
        &[
            "serve",
            "--export",
            &t.export(),
            "--listen",
            "tcp:127.0.0.1:0",
            "--log-level",
            "warn",
            "--trace",
        ],
        t.path("s.log"),
    );
    let mut a = s.tcp();
    version(&mut a, 8192);
    let mut b = s.tcp();
    version(&mut b, 16384);
    drop((a, b));
    // No pause needed: stopping joins every connection's thread, whose lines are written
    // before it ends.
    let (status, log) = s.stop();
    assert!(status.success());
    let lines = log_lines(&log);
    // warn: no info lines but the PDU trace, which --trace asks for.
    assert!(!log.contains("connection accepted"), "{log}");
    let pdu: Vec<_> = lines.iter().filter(|l| l.contains("co9p::pdu")).collect();
    assert!(pdu.iter().all(|l| timestamped(l)), "{log}");
    for want in [
        "conn=1 -> Tversion tag=65535 msize=8192",
        "conn=1 <- Rversion tag=65535 msize=8192",
        "conn=2 -> Tversion tag=65535 msize=16384",
        "conn=2 <- Rversion tag=65535 msize=16384",
    ] {
        assert!(pdu.iter().any(|l| l.contains(want)), "{want} not in {log}");
    }
    // RUST_LOG must be valid when used.
    let out = finish({
        let mut c = co9p();
        c.args([
            "serve",
            "--export",
            &t.export(),
            "--listen",
            "tcp:127.0.0.1:0",
        ])
        .env("RUST_LOG", "co9p=[");
        c
    });
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(
        out.stderr.starts_with("co9p: RUST_LOG=co9p=["),
        "{}",
        out.stderr
    );
}

#[test]
fn the_attach_name_rules() {
    // "", "/" and the exported path name the root; any other name is a path beneath it.
    let t = TempDir::new("aname");
    std::fs::create_dir_all(t.path("export/sub/deeper")).unwrap();
    std::fs::write(t.path("export/file"), b"x").unwrap();
    let s = Server::start(
        &[
            "serve",
            "--export",
            &t.export(),
            "--listen",
            "tcp:127.0.0.1:0",
        ],
        t.path("s.log"),
    );
    let canonical = std::fs::canonicalize(t.path("export")).unwrap();
    let full_sub = format!("{}/sub", canonical.display());
    let cases: &[(&str, bool)] = &[
        ("", true),
        ("/", true),
        (canonical.to_str().unwrap(), true),
        ("sub", true),
        ("/sub", true),
        ("sub/deeper", true),
        ("nope", false),
        ("file", false),
        ("..", false),
        (&full_sub, false),
    ];
    for (aname, ok) in cases {
        let mut c = s.tcp();
        let msize = version(&mut c, 8192);
        let r = attach(&mut c, aname, msize);
        assert_eq!(
            matches!(r, Rmessage::Attach { .. }),
            *ok,
            "aname {aname:?}: {r:?}"
        );
    }
    assert!(s.stop().0.success());
}

fn egid() -> u32 {
    // SAFETY: getegid has no preconditions and cannot fail.
    unsafe { libc::getegid() }
}
