//! HostFs next to the raw syscalls it needs (the floor), in the same run, on a tmpfs
//! (`/dev/shm`) when there is one, else the temp dir. Prints ns/op and the ratio; no
//! timed assertions. `cargo bench --bench hostfs`.

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use co9p::fs::host::{HostFs, HostOptions};
use co9p::fs::{Creds, Filesystem, Name};
use co9p::protocol::OpenFlags;
use rustix::fs::{CWD, Mode, OFlags, fstat, openat, unlinkat};

fn now<F: Future>(fut: F) -> F::Output {
    match pin!(fut).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => unreachable!("HostFs never waits"),
    }
}

/// ns per iteration of `f`, best of 5 runs of `n`.
fn time(n: usize, mut f: impl FnMut(usize)) -> f64 {
    (0..5)
        .map(|_| {
            let t = Instant::now();
            for i in 0..n {
                f(i);
            }
            t.elapsed().as_nanos() as f64 / n as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn row(what: &str, fs: f64, raw: f64) {
    println!("{what:<22} {fs:>10.0} {raw:>10.0} {:>7.2}x", fs / raw);
}

fn main() {
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        std::path::PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("co9p-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("small"), vec![7u8; 4096]).unwrap();
    std::fs::write(dir.join("big"), vec![7u8; 1 << 20]).unwrap();
    let fs = HostFs::new(&dir, HostOptions::default()).unwrap();
    let (root, _) = now(fs.root()).unwrap();
    let small = Name::new(b"small").unwrap();
    let big = Name::new(b"big").unwrap();
    let dirfd = openat(CWD, &dir, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
    println!("HostFs on {} (ns/op)", dir.display());
    println!("{:<22} {:>10} {:>10} {:>8}", "op", "HostFs", "raw", "ratio");

    let (node, _) = now(fs.lookup(&root, &small)).unwrap();
    let rawnode = openat(
        &dirfd,
        "small",
        OFlags::PATH | OFlags::NOFOLLOW,
        Mode::empty(),
    )
    .unwrap();
    row(
        "getattr",
        time(200_000, |_| {
            black_box(now(fs.getattr(&node)).unwrap());
        }),
        time(200_000, |_| {
            black_box(fstat(&rawnode).unwrap());
        }),
    );
    row(
        "lookup+drop",
        time(100_000, |_| {
            black_box(now(fs.lookup(&root, &small)).unwrap());
        }),
        time(100_000, |_| {
            let fd = openat(
                &dirfd,
                "small",
                OFlags::PATH | OFlags::NOFOLLOW,
                Mode::empty(),
            );
            black_box(fstat(fd.as_ref().unwrap()).unwrap());
        }),
    );
    let f = now(fs.open(&node, OpenFlags::RDONLY)).unwrap();
    let rf = openat(&dirfd, "small", OFlags::RDONLY, Mode::empty()).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    row(
        "read 4 KiB",
        time(200_000, |_| {
            assert_eq!(now(fs.read(&f, 0, &mut buf[..4096])).unwrap(), 4096);
        }),
        time(200_000, |_| {
            assert_eq!(rustix::io::pread(&rf, &mut buf[..4096], 0).unwrap(), 4096);
        }),
    );
    let (bnode, _) = now(fs.lookup(&root, &big)).unwrap();
    let bf = now(fs.open(&bnode, OpenFlags::RDONLY)).unwrap();
    let rbf = openat(&dirfd, "big", OFlags::RDONLY, Mode::empty()).unwrap();
    row(
        "read 1 MiB",
        time(2_000, |_| {
            assert_eq!(now(fs.read(&bf, 0, &mut buf)).unwrap(), 1 << 20);
        }),
        time(2_000, |_| {
            assert_eq!(rustix::io::pread(&rbf, &mut buf, 0).unwrap(), 1 << 20);
        }),
    );
    let creds = Creds::default();
    let tmp = Name::new(b"tmp").unwrap();
    row(
        "create+unlink",
        time(20_000, |_| {
            let made = now(fs.create(&root, &tmp, OpenFlags::RDWR, 0o644, creds)).unwrap();
            drop(made);
            now(fs.unlink(&root, &tmp, false)).unwrap();
        }),
        time(20_000, |_| {
            let fd = openat(
                &dirfd,
                "tmp",
                OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o644),
            )
            .unwrap();
            rustix::fs::fchown(
                &fd,
                Some(rustix::fs::Uid::ROOT),
                Some(rustix::fs::Gid::ROOT),
            )
            .ok();
            drop(fd);
            unlinkat(&dirfd, "tmp", rustix::fs::AtFlags::empty()).unwrap();
        }),
    );
    drop((f, bf, node, bnode, root, fs));
    std::fs::remove_dir_all(&dir).unwrap();
}
