//! The sandbox is the kernel's: with our resolver bypassed (this test makes the raw calls a
//! resolver bug would make), Landlock refuses every way out of the export; a syscall outside
//! the seccomp allow-list kills the process. Each case runs in a child process (this test
//! binary again, `CO9P_SANDBOX_CHILD` naming the case), since a sandbox cannot be undone.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

use co9p::sandbox::{Confinement, Enforcement, Profile, SandboxError, SeccompMode};
use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;

const CHILD: &str = "CO9P_SANDBOX_CHILD";
const BASE: &str = "CO9P_SANDBOX_BASE";
const SECRET: &[u8] = b"beside the export, never to be reached\n";

/// Whether this process is the child running `case`.
fn is_child(case: &str) -> bool {
    std::env::var(CHILD).as_deref() == Ok(case)
}

/// Runs `case` of this binary in a child process; its status and output.
fn in_child(case: &str, env: &[(&str, &Path)]) -> (ExitStatus, String) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", case, "--nocapture", "--test-threads=1"])
        .env(CHILD, case)
        .envs(env.iter().map(|(k, v)| (*k, v.as_os_str())))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status, text)
}

/// Prints the child's skip line, if it skipped; whether it did.
fn skipped(out: &str) -> bool {
    match out.lines().find(|l| l.contains("SKIPPED:")) {
        Some(l) => {
            println!("{}", l.trim());
            true
        }
        None => false,
    }
}

/// `<tmp>/co9p-sandbox-<pid>-<case>/{export/{inside, dir/}, secret}`.
fn base(case: &str) -> PathBuf {
    let base = std::env::temp_dir().join(format!("co9p-sandbox-{}-{case}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(base.join("export/dir")).unwrap();
    std::fs::write(base.join("export/inside"), b"inside").unwrap();
    std::fs::write(base.join("secret"), SECRET).unwrap();
    base
}

fn open(dir: &OwnedFd, path: &str, flags: OFlags) -> Result<OwnedFd, Errno> {
    rustix::fs::openat(
        dir,
        path,
        flags | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
}

/// A refusal by Landlock: `EACCES`, or `EXDEV` for a rename or link across its rules.
fn refused<T: std::fmt::Debug>(what: &str, r: Result<T, Errno>) {
    match r {
        Err(Errno::ACCESS) | Err(Errno::XDEV) => println!("refused by the kernel: {what}"),
        other => panic!("{what}: not refused: {other:?}"),
    }
}

/// Polls a HostFs future once (HostFs never waits).
fn now<F: std::future::Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    match fut
        .as_mut()
        .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
    {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => panic!("a HostFs future waited"),
    }
}

const ESCAPE: &str = "landlock_refuses_what_a_resolver_bug_would_reach";

#[test]
fn landlock_refuses_what_a_resolver_bug_would_reach() {
    if is_child(ESCAPE) {
        return escape_child(&PathBuf::from(std::env::var_os(BASE).unwrap()));
    }
    let base = base("escape");
    let (status, out) = in_child(ESCAPE, &[(BASE, &base)]);
    if !skipped(&out) {
        assert!(status.success(), "{out}");
        assert!(out.contains("HostFs works under the sandbox"), "{out}");
        assert!(!out.contains("not refused"), "{out}");
        // Nothing happened outside the export.
        assert_eq!(std::fs::read(base.join("secret")).unwrap(), SECRET);
        let mut names: Vec<_> = std::fs::read_dir(&base)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["export", "secret"], "{out}");
    }
    std::fs::remove_dir_all(&base).unwrap();
}

fn escape_child(base: &Path) {
    use co9p::fs::host::{HostFs, HostOptions};
    use co9p::fs::{Creds, Filesystem, Name};
    use co9p::protocol::OpenFlags as P9;
    let export = base.join("export");
    let fs = HostFs::new(&export, HostOptions::default()).unwrap();
    let ex = rustix::fs::open(&export, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
    // Without the sandbox, the bypass does escape: the test would see a resolver bug.
    drop(open(&ex, "../secret", OFlags::RDONLY).expect("the escape works unconfined"));

    let confinement = Confinement {
        export: Some(export.clone()),
        ..Confinement::default()
    };
    match co9p::sandbox::landlock(&confinement).unwrap() {
        Enforcement::None => {
            println!("SKIPPED: the kernel has no Landlock (enabled)");
            return;
        }
        e => println!("landlock: {e:?}"),
    }

    // What a resolver bug would do: `..` out of the export, then open, create, remove,
    // rename or link there.
    refused("open ../secret", open(&ex, "../secret", OFlags::RDONLY));
    let up = open(&ex, "..", OFlags::PATH | OFlags::DIRECTORY).expect("O_PATH is not an open");
    refused("open secret beside", open(&up, "secret", OFlags::RDONLY));
    refused("write secret", open(&up, "secret", OFlags::WRONLY));
    refused(
        "list the parent",
        open(&up, ".", OFlags::RDONLY | OFlags::DIRECTORY),
    );
    // HostFs's reopen: an O_PATH descriptor through /proc/self/fd/N.
    let s = open(&up, "secret", OFlags::PATH).unwrap();
    refused(
        "reopen /proc/self/fd/N of the secret",
        rustix::fs::open(
            format!("/proc/self/fd/{}", s.as_raw_fd()),
            OFlags::RDONLY,
            Mode::empty(),
        ),
    );
    refused(
        "create beside",
        open(&up, "planted", OFlags::CREATE | OFlags::WRONLY),
    );
    refused(
        "mkdir beside",
        rustix::fs::mkdirat(&up, "d", Mode::from_raw_mode(0o755)),
    );
    refused("symlink beside", rustix::fs::symlinkat("/", &up, "l"));
    refused(
        "unlink the secret",
        rustix::fs::unlinkat(&up, "secret", AtFlags::empty()),
    );
    refused(
        "rename a file out",
        rustix::fs::renameat(&ex, "inside", &up, "moved"),
    );
    refused(
        "rename the secret in",
        rustix::fs::renameat(&up, "secret", &ex, "stolen"),
    );
    refused(
        "link a file out",
        rustix::fs::linkat(&ex, "inside", &up, "linked", AtFlags::empty()),
    );
    refused(
        "link the secret in",
        rustix::fs::linkat(&up, "secret", &ex, "stolen", AtFlags::empty()),
    );
    let path = CString::new(base.join("secret").as_os_str().as_encoded_bytes()).unwrap();
    refused(
        "open by absolute path",
        rustix::fs::open(path.as_c_str(), OFlags::RDONLY, Mode::empty()),
    );
    refused(
        "open /etc/passwd",
        rustix::fs::open("/etc/passwd", OFlags::RDONLY, Mode::empty()),
    );

    // The export itself is served as before, reopens through /proc included.
    let name = |s: &str| Name::new(s.as_bytes()).unwrap();
    let creds = Creds { uid: 0, gid: 0 };
    let (r, _) = now(fs.root()).unwrap();
    let (n, _) = now(fs.lookup(&r, &name("inside"))).unwrap();
    let f = now(fs.open(&n, P9::RDWR)).unwrap();
    let mut buf = [0u8; 6];
    let got = now(fs.read_vectored(&f, 0, &mut [std::io::IoSliceMut::new(&mut buf)])).unwrap();
    assert_eq!(&buf[..got], b"inside");
    let (_, nf, _) = now(fs.create(&r, &name("new"), P9::RDWR, 0o644, creds)).unwrap();
    assert_eq!(
        now(fs.write_vectored(&nf, 0, &[std::io::IoSlice::new(b"hello")])).unwrap(),
        5
    );
    let (d, _) = now(fs.lookup(&r, &name("dir"))).unwrap();
    now(fs.rename(&r, &name("new"), &d, &name("moved"))).unwrap();
    now(fs.link(&n, &d, &name("hard"))).unwrap();
    now(fs.symlink(&d, &name("sym"), b"/etc/passwd", creds)).unwrap();
    now(fs.mkdir(&d, &name("sub"), 0o755, creds)).unwrap();
    now(fs.unlink(&d, &name("sub"), true)).unwrap();
    assert!(export.join("dir/moved").exists() && export.join("dir/hard").exists());
    println!("HostFs works under the sandbox");
}

const KILL: &str = "seccomp_kills_a_syscall_outside_the_list";

#[test]
fn seccomp_kills_a_syscall_outside_the_list() {
    if is_child(KILL) {
        return seccomp_child(Profile::Serve, SeccompMode::Kill);
    }
    let (status, out) = in_child(KILL, &[]);
    if skipped(&out) {
        return;
    }
    assert!(out.contains("allowed calls work"), "{out}");
    assert!(!out.contains("survived"), "{out}");
    assert_eq!(status.signal(), Some(libc::SIGSYS), "{status:?}: {out}");
}

const LOG: &str = "seccomp_log_mode_lets_it_run";

#[test]
fn seccomp_log_mode_lets_it_run() {
    if is_child(LOG) {
        return seccomp_child(Profile::Serve, SeccompMode::Log);
    }
    let (status, out) = in_child(LOG, &[]);
    if skipped(&out) {
        return;
    }
    assert!(status.success(), "{out}");
    assert!(out.contains("survived"), "{out}");
}

const VHOST: &str = "seccomp_vhost_user_profile_binds_its_socket";

#[test]
fn seccomp_vhost_user_profile_binds_its_socket() {
    if is_child(VHOST) {
        return seccomp_child(Profile::VhostUser, SeccompMode::Kill);
    }
    let (status, out) = in_child(VHOST, &[]);
    if skipped(&out) {
        return;
    }
    // The vhost-user daemon may make its socket; mount is still fatal.
    assert!(out.contains("a socket made"), "{out}");
    assert_eq!(status.signal(), Some(libc::SIGSYS), "{status:?}: {out}");
}

fn seccomp_child(profile: Profile, mode: SeccompMode) {
    match co9p::sandbox::seccomp(profile, mode) {
        Err(SandboxError::Unsupported(what)) => {
            println!("SKIPPED: {what} is not supported here");
            return;
        }
        r => r.unwrap(),
    }
    // What the server does: files, threads, time.
    let f = rustix::fs::open("/proc/self/status", OFlags::RDONLY, Mode::empty()).unwrap();
    let mut buf = [0u8; 64];
    assert!(rustix::io::read(&f, &mut buf).unwrap() > 0);
    std::thread::spawn(|| std::thread::sleep(std::time::Duration::from_millis(1)))
        .join()
        .unwrap();
    println!("allowed calls work");
    // SAFETY: socket(2) and mount(2) with arguments that change nothing: an unbound
    // socket, and a mount of null paths (EFAULT, if it ran at all).
    unsafe {
        if profile == Profile::VhostUser {
            let s = libc::syscall(libc::SYS_socket, libc::AF_UNIX, libc::SOCK_STREAM, 0);
            assert!(s >= 0);
            println!("a socket made");
        } else {
            libc::syscall(libc::SYS_socket, libc::AF_INET, libc::SOCK_STREAM, 0);
        }
        libc::syscall(libc::SYS_mount, 0, 0, 0, 0, 0);
    }
    println!("survived");
}

#[test]
fn the_server_runs_confined() {
    // `co9p serve` with its defaults: every thread under the seccomp filter, no new
    // privileges; and `--seccomp none` leaves it off.
    let base = base("server");
    let export = base.join("export");
    for (extra, filtered) in [(&[][..], true), (&["--seccomp", "none"][..], false)] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_co9p"))
            .args(["serve", "--listen", "tcp:127.0.0.1:0", "--export"])
            .arg(&export)
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .map(|v| v.trim().to_string())
        };
        if field("Seccomp:").is_none() {
            println!("SKIPPED: /proc shows no seccomp state");
        } else if filtered && !line.contains("seccomp") {
            println!("SKIPPED: no seccomp here ({})", line.trim());
        } else {
            let want = if filtered { "2" } else { "0" };
            for task in std::fs::read_dir(format!("/proc/{}/task", child.id())).unwrap() {
                let s = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
                let v = s.lines().find_map(|l| l.strip_prefix("Seccomp:")).unwrap();
                assert_eq!(v.trim(), want, "{line}");
            }
            assert_eq!(field("NoNewPrivs:").as_deref(), Some("1"), "{line}");
        }
        // SAFETY: a plain kill(2) of our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        assert!(child.wait().unwrap().success());
    }
    std::fs::remove_dir_all(&base).unwrap();
}
