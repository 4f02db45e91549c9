//! `tests/hostfs_escape.rs`, the whole battery, again in a process confined as `co9p`
//! confines itself: the production Landlock ruleset and seccomp allow-list (the vhost-user
//! profile, since one case binds a unix socket) are applied before `main`, so before the
//! test harness starts any thread, and every case runs under them. HostFs keeps every
//! guarantee and every feature it is tested for (reopens through `/proc/self/fd`, device
//! nodes, renames, links, the swap races) with the sandbox on.
//!
//! The Landlock root here is one directory holding each case's export and the secret
//! beside it (the cases make both, and check the secret afterwards); that the kernel
//! refuses a way out of an export is `tests/sandbox.rs`'s case.

#[path = "hostfs_escape.rs"]
mod battery;

use std::path::PathBuf;
use std::sync::OnceLock;

use co9p::sandbox::{Confinement, Enforcement, Profile, SeccompMode};

/// What `confine` achieved, for the report below.
static CONFINED: OnceLock<Result<Enforcement, String>> = OnceLock::new();

/// Runs before `main`, on the only thread there is: Landlock confines the calling thread
/// and those it starts later, so it must come before the harness's threads.
#[used]
#[unsafe(link_section = ".init_array")]
static CONFINE: extern "C" fn() = confine;

extern "C" fn confine() {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sandbox-escape");
    let outcome = (|| {
        std::fs::create_dir_all(&root).map_err(|e| e.to_string())?;
        // SAFETY: before main, no other thread exists to read the environment.
        unsafe { std::env::set_var("TMPDIR", &root) };
        // Each case makes its HostFs once confined, which reads /proc/self/fd and the
        // umask in /proc/self/status (co9p makes its HostFs before the sandbox); the swap
        // race lists `/` to check nothing was made there (directories may be listed, no
        // file outside the root read).
        let c = Confinement {
            export: Some(root.clone()),
            readable: vec![PathBuf::from("/proc/self")],
            listable: vec![PathBuf::from("/")],
            ..Confinement::default()
        };
        let e = co9p::sandbox::landlock(&c).map_err(|e| e.to_string())?;
        co9p::sandbox::seccomp(Profile::VhostUser, SeccompMode::Kill).map_err(|e| e.to_string())?;
        Ok(e)
    })();
    let _ = CONFINED.set(outcome);
}

#[test]
fn the_battery_runs_confined() {
    match CONFINED.get().expect("the constructor ran") {
        Ok(Enforcement::None) => println!("SKIPPED: the kernel has no Landlock (enabled)"),
        Ok(e) => {
            println!("landlock {e:?} and seccomp in force for every case");
            // Confined indeed: nothing outside the root can be opened.
            assert!(std::fs::read("/etc/passwd").is_err());
        }
        Err(e) if e.contains("not supported") => println!("SKIPPED: {e}"),
        Err(e) => panic!("the sandbox could not be applied: {e}"),
    }
}
