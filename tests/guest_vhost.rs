//! A real Linux guest on co9p's vhost-user daemon: boots the guest kit (tests/guest/) under
//! Debian forky's QEMU (fetched privately by tests/guest/forky.sh; vhost-user 9p needs
//! QEMU's generic `vhost-user-test-device-pci`, which bookworm's QEMU lacks), with the
//! share on `co9p vhost-user` (boot.sh's `co9p-vhost`), and runs the small checking workload
//! (4 MiB, 100 files, the semantics checks; no tree, no tar) over trans=virtio.
//!
//! - `linux_guest_on_co9p_vhost_user_passes_the_workload`: one boot, the workload, and the
//!   daemon, left running by boot.sh, exits by itself with status 0 once QEMU is gone.
//! - `linux_guest_reboots_mid_io_and_co9p_vhost_user_keeps_serving`: the guest's first boot
//!   writes a marker into the share, starts writes, reads and creates on it and runs
//!   `reboot -f` in the middle of them (a device reset, the vhost-user connection stays);
//!   the second boot finds the marker, mounts again and passes the workload, on the same
//!   daemon, which then exits by itself with status 0.
//!
//! About 15 s and 30 s once forky's QEMU is cached (its first fetch: ~45 MB of packages).
//! The two boots never run at once. Skipped, with `SKIPPED: <reason>` printed, where
//! forky.sh cannot provide QEMU (exit 77: no apt, no route to the mirror) or the kit cannot
//! be built (no kernel package). `CO9P_GUEST=1` turns a skip into a failure; `CO9P_GUEST=0`
//! skips on purpose.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};

/// Seconds forky.sh may take (a first fetch downloads ~45 MB; a cached run takes < 1 s).
const FORKY_TIMEOUT: u32 = 900;
/// Seconds kit.sh may take (a first build downloads the kernel package, ~70 MB).
const KIT_TIMEOUT: u32 = 600;

/// What both tests boot: forky's QEMU and the kit directory.
struct Guest {
    qemu: PathBuf,
    work: PathBuf,
}

/// One guest at a time (the tests of this file run in parallel threads otherwise).
static BOOTS: Mutex<()> = Mutex::new(());
/// forky.sh and kit.sh, run once for both tests: the guest or why it cannot run.
static GUEST: OnceLock<Result<Guest, String>> = OnceLock::new();

fn skip(reason: &str) {
    assert!(
        std::env::var("CO9P_GUEST").as_deref() != Ok("1"),
        "CO9P_GUEST=1 but the vhost-user guest test cannot run: {reason}"
    );
    println!("SKIPPED: {reason}");
}

fn guest_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/guest")
}

/// `timeout -k 10 SECS script`: the script and everything it started (its process group)
/// are killed once SECS have passed.
fn run_bounded(secs: u32, script: &str, envs: &[(&str, &OsStr)]) -> Output {
    let mut cmd = Command::new("timeout");
    cmd.args(["-k", "10", &secs.to_string()])
        .arg(guest_dir().join(script));
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output()
        .unwrap_or_else(|e| panic!("run tests/guest/{script}: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A script's stderr as one line: the reason it gives for a skip.
fn one_line(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines.join("; ")
}

/// Fetches forky's QEMU and builds the kit; `Err` is a reason to skip. Anything else that
/// goes wrong fails the test.
fn prepare() -> Result<Guest, String> {
    if !cfg!(all(target_os = "linux", target_arch = "x86_64")) {
        return Err("not x86_64 Linux".into());
    }
    let forky = run_bounded(FORKY_TIMEOUT, "forky.sh", &[]);
    if forky.status.code() == Some(77) {
        return Err(one_line(&forky.stderr));
    }
    assert!(
        forky.status.success(),
        "forky.sh failed ({}; 124 is its {FORKY_TIMEOUT} s bound):\n{}",
        forky.status,
        text(&forky)
    );
    let bin = String::from_utf8_lossy(&forky.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    let qemu = Path::new(&bin).join("qemu-system-x86_64");
    assert!(
        qemu.is_file(),
        "forky.sh printed {bin:?}, which holds no qemu-system-x86_64:\n{}",
        text(&forky)
    );

    // The kit guest_smoke.rs builds too (kit.sh refreshes the initramfs: cheap).
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("guest-kit");
    let kit = run_bounded(KIT_TIMEOUT, "kit.sh", &[("WORK", work.as_os_str())]);
    if kit.status.code() == Some(77) {
        return Err(one_line(&kit.stderr));
    }
    assert!(kit.status.success(), "kit.sh failed:\n{}", text(&kit));
    Ok(Guest { qemu, work })
}

/// Boots the guest on `co9p vhost-user` (REBOOT=`reboot`: "0" or "1"), and returns
/// boot.sh's stdout once it has passed: the workload done, no CHECK failed, the daemon gone
/// by itself with status 0.
fn boot(run: &str, reboot: &str, timeout: u32) -> Option<String> {
    if std::env::var("CO9P_GUEST").as_deref() == Ok("0") {
        skip("CO9P_GUEST=0");
        return None;
    }
    let _one_at_a_time = BOOTS.lock().unwrap_or_else(|e| e.into_inner());
    let guest = match GUEST.get_or_init(prepare) {
        Ok(guest) => guest,
        Err(reason) => {
            skip(reason);
            return None;
        }
    };
    let out_dir = guest.work.join(run);
    let timeout_s = timeout.to_string();
    let out = run_bounded(
        timeout + 60,
        "boot.sh",
        &[
            ("WORK", guest.work.as_os_str()),
            ("OUT", out_dir.as_os_str()),
            ("QEMU", guest.qemu.as_os_str()),
            ("CO9P", OsStr::new(env!("CARGO_BIN_EXE_co9p"))),
            ("SERVERS", OsStr::new("co9p-vhost")),
            ("MB", OsStr::new("4")),
            ("FILES", OsStr::new("100")),
            ("TREE", OsStr::new("0")),
            ("TAR", OsStr::new("0")),
            ("REBOOT", OsStr::new(reboot)),
            ("TIMEOUT", OsStr::new(&timeout_s)),
            ("DAEMON_WAIT", OsStr::new("20")),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    println!("{stdout}");
    let log = out_dir.join("server-co9p-vhost.log");
    let context = format!(
        "(console: {}, daemon log: {})\n{stdout}{}",
        out_dir.join("console.log").display(),
        log.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let failed: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("CHECK FAIL"))
        .collect();
    assert!(failed.is_empty(), "checks failed: {failed:?} {context}");
    assert!(
        stdout.lines().any(|l| l == "WORKLOAD done"),
        "the workload did not complete {context}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l == "CHECK ok co9p-vhost: daemon exits by itself after QEMU, status 0"),
        "the daemon did not exit by itself with status 0 {context}"
    );
    assert!(
        !stdout.lines().any(|l| l.contains("panicked")),
        "the daemon panicked {context}"
    );
    assert!(out.status.success(), "boot.sh: {} {context}", out.status);
    Some(stdout)
}

fn checks_ok(stdout: &str) -> usize {
    stdout
        .lines()
        .filter(|l| l.starts_with("CHECK ok co9p-vhost: "))
        .count()
}

#[test]
fn linux_guest_on_co9p_vhost_user_passes_the_workload() {
    let Some(stdout) = boot("vhost", "0", 150) else {
        return;
    };
    // The workload's checks (19 at this size), the umount, the daemon's exit.
    let checks = checks_ok(&stdout);
    assert!(checks >= 21, "only {checks} checks passed");
}

#[test]
fn linux_guest_reboots_mid_io_and_co9p_vhost_user_keeps_serving() {
    let Some(stdout) = boot("vhost-reboot", "1", 240) else {
        return;
    };
    let lines: Vec<&str> = stdout.lines().collect();
    let boots = lines.iter().filter(|l| **l == "GUEST init").count();
    assert_eq!(boots, 2, "the guest booted {boots} times, not twice");
    let reboot = lines.iter().position(|l| *l == "GUEST reboot -f mid-I/O");
    let rebooted = lines.iter().position(|l| *l == "GUEST rebooted");
    assert!(
        matches!((reboot, rebooted), (Some(a), Some(b)) if a < b),
        "no reboot mid-I/O then second boot in the output"
    );
    // What the first boot wrote was read back after the reset, on the same daemon.
    assert!(lines.contains(&"CHECK ok co9p-vhost: marker kept across the reboot"));
    assert!(lines.contains(&"CHECK ok co9p-vhost: the first boot's files removed"));
    // The marker's two, the workload's 19, the umount, the daemon's exit.
    let checks = checks_ok(&stdout);
    assert!(checks >= 23, "only {checks} checks passed");
}
