//! Helpers for the HostFs tests: a temp export with a secret beside it, and `now`, which
//! polls a filesystem future exactly once (HostFs never waits, so one poll must finish).
#![allow(dead_code)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};

use co9p::fs::host::{HostFs, HostNode, HostOptions, SecurityModel};
use co9p::fs::{Creds, Filesystem, Name};
use co9p::protocol::Qid;

/// Runs a HostFs future: it must be ready at its first poll (no awaits inside).
pub fn now<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("a HostFs future waited"),
    }
}

pub fn name(s: &str) -> Name {
    Name::new(s.as_bytes()).unwrap()
}

pub const ROOT: Creds = Creds { uid: 0, gid: 0 };
pub const SECRET: &[u8] = b"the host's secret, never to be read through the export\n";

/// `<tmp>/co9p-hostfs-<pid>-<n>-<tag>/{export/, secret}`, removed on drop.
pub struct Sandbox {
    pub base: PathBuf,
    pub export: PathBuf,
    pub secret: PathBuf,
}

impl Sandbox {
    pub fn new(tag: &str) -> Sandbox {
        static N: AtomicUsize = AtomicUsize::new(0);
        let base = std::env::temp_dir().join(format!(
            "co9p-hostfs-{}-{}-{tag}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let export = base.join("export");
        std::fs::create_dir_all(&export).unwrap();
        let secret = base.join("secret");
        std::fs::write(&secret, SECRET).unwrap();
        Sandbox {
            base,
            export,
            secret,
        }
    }

    pub fn fs(&self, model: SecurityModel) -> HostFs {
        HostFs::new(
            &self.export,
            HostOptions {
                security_model: model,
                ..HostOptions::default()
            },
        )
        .unwrap()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.export.join(rel)
    }

    /// The secret is intact and nothing new appeared beside the export.
    pub fn assert_untouched(&self) {
        assert_eq!(
            std::fs::read(&self.secret).unwrap(),
            SECRET,
            "secret changed"
        );
        let mut names: Vec<_> = std::fs::read_dir(&self.base)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["export", "secret"],
            "files appeared outside the export"
        );
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

pub fn root(fs: &HostFs) -> (HostNode, Qid) {
    now(fs.root()).unwrap()
}

pub fn walk(fs: &HostFs, path: &str) -> (HostNode, Qid) {
    let (mut n, mut q) = root(fs);
    for c in Path::new(path).iter() {
        (n, q) = now(fs.lookup(&n, &name(c.to_str().unwrap()))).unwrap();
    }
    (n, q)
}

pub fn is_root_user() -> bool {
    rustix::process::geteuid().is_root()
}

/// Makes `a/<the secret's absolute path>` inside the export, holding `inside`; returns the
/// secret's path without its leading `/`.
pub fn secret_mirror(sb: &Sandbox) -> PathBuf {
    let secret_rel = sb.secret.strip_prefix("/").unwrap().to_path_buf();
    let mirror = sb.path("a").join(&secret_rel);
    std::fs::create_dir_all(mirror.parent().unwrap()).unwrap();
    std::fs::write(&mirror, b"inside").unwrap();
    secret_rel
}

/// A host thread exchanging two paths (`RENAME_EXCHANGE`) until [`Swapper::stop`].
pub struct Swapper {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    swaps: std::sync::Arc<AtomicUsize>,
    thread: std::thread::JoinHandle<()>,
}

impl Swapper {
    pub fn start(a: PathBuf, b: PathBuf) -> Swapper {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let swaps = std::sync::Arc::new(AtomicUsize::new(0));
        let thread = {
            let (stop, swaps) = (stop.clone(), swaps.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    rustix::fs::renameat_with(
                        rustix::fs::CWD,
                        &a,
                        rustix::fs::CWD,
                        &b,
                        rustix::fs::RenameFlags::EXCHANGE,
                    )
                    .unwrap();
                    swaps.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        Swapper {
            stop,
            swaps,
            thread,
        }
    }

    /// Stops the thread; returns how many exchanges it made.
    pub fn stop(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap();
        self.swaps.load(Ordering::Relaxed)
    }
}
