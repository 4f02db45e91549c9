//! A hostile guest against HostFs: a temp export with a secret file beside it, and every
//! way out that 9p servers have been broken by (QEMU CVE-2016-9602, CVE-2017-7471,
//! CVE-2021-20181, CVE-2023-2861; virtiofsd CVE-2020-35517; crosvm's `..` and `a/b`).

mod hostfs_common;

use std::os::unix::fs::{MetadataExt, symlink};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use co9p::fs::host::{HostFs, HostOptions, SecurityModel};
use co9p::fs::{Filesystem, Name};
use co9p::protocol::{Errno, OpenFlags, QidType, SetAttr, SetattrMask};
use hostfs_common::*;

const MODELS: [SecurityModel; 3] = [
    SecurityModel::Passthrough,
    SecurityModel::MappedXattr,
    SecurityModel::None,
];

/// Fails the whole test binary if a call blocks (a fifo opened for reading would).
fn watchdog(what: &'static str) -> Arc<AtomicBool> {
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    std::thread::spawn(move || {
        let start = Instant::now();
        while !d.load(Ordering::SeqCst) {
            if start.elapsed() > Duration::from_secs(20) {
                eprintln!("{what}: blocked");
                std::process::abort();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    done
}

#[test]
fn names_cannot_carry_paths() {
    for bad in [
        &b"../secret"[..],
        b"..",
        b".",
        b"a/b",
        b"/",
        b"/etc/passwd",
        b"a\0b",
        b"",
    ] {
        assert_eq!(
            Name::new(bad),
            Err(Errno::EINVAL),
            "{:?}",
            bad.escape_ascii().to_string()
        );
    }
    assert_eq!(Name::new(&[b'n'; 256]), Err(Errno::ENAMETOOLONG));
    // 255 bytes is a real name on the host
    let sb = Sandbox::new("names");
    let fs = sb.fs(SecurityModel::None);
    let (r, _) = root(&fs);
    let long = "n".repeat(255);
    now(fs.create(&r, &name(&long), OpenFlags::RDWR, 0o600, ROOT)).unwrap();
    assert!(sb.path(&long).exists());
    sb.assert_untouched();
}

#[test]
fn escaping_symlinks_are_never_followed() {
    let sb = Sandbox::new("symlinks");
    let abs = sb.secret.to_str().unwrap().to_string();
    symlink(&abs, sb.path("abs")).unwrap();
    symlink("../secret", sb.path("rel")).unwrap();
    symlink("..", sb.path("up")).unwrap();
    symlink("/", sb.path("slash")).unwrap();
    std::fs::create_dir(sb.path("d")).unwrap();
    symlink("../../secret", sb.path("d/rel2")).unwrap();
    let secret_meta = std::fs::metadata(&sb.secret).unwrap();
    for model in MODELS {
        let fs = sb.fs(model);
        let (r, _) = root(&fs);
        for (path, target) in [
            ("abs", abs.as_str()),
            ("rel", "../secret"),
            ("up", ".."),
            ("slash", "/"),
            ("d/rel2", "../../secret"),
        ] {
            let (l, q) = walk(&fs, path);
            assert_eq!(q.ty, QidType::SYMLINK, "{model} {path}: the link itself");
            for flags in [
                OpenFlags::RDONLY,
                OpenFlags::RDWR,
                OpenFlags::RDONLY | OpenFlags::DIRECTORY,
            ] {
                let e = now(fs.open(&l, flags)).err();
                assert!(
                    matches!(e, Some(Errno::ENXIO | Errno::ELOOP)),
                    "{model} {path}: {e:?}"
                );
            }
            assert_eq!(
                now(fs.readlink(&l)).unwrap(),
                target.as_bytes(),
                "text only"
            );
            let a = now(fs.getattr(&l)).unwrap();
            assert_eq!(a.mode & libc::S_IFMT, libc::S_IFLNK);
            assert_eq!(
                a.size,
                target.len() as u64,
                "the link's size, not the target's"
            );
            // nothing goes *through* a symlink node
            assert_eq!(
                now(fs.lookup(&l, &name("secret"))).err(),
                Some(Errno::ENOTDIR)
            );
            assert_eq!(now(fs.lookup(&l, &name("etc"))).err(), Some(Errno::ENOTDIR));
            assert_eq!(
                now(fs.create(&l, &name("x"), OpenFlags::RDWR, 0o600, ROOT)).err(),
                Some(Errno::ENOTDIR)
            );
            assert_eq!(
                now(fs.mkdir(&l, &name("x"), 0o700, ROOT)),
                Err(Errno::ENOTDIR)
            );
            assert_eq!(now(fs.parent(&l)).err(), Some(Errno::ENOTDIR));
            assert_eq!(
                now(fs.rename(&r, &name("d"), &l, &name("x"))),
                Err(Errno::ENOTDIR)
            );
            let trunc = SetAttr {
                valid: SetattrMask::SIZE,
                size: 0,
                ..SetAttr::default()
            };
            assert!(now(fs.setattr(&l, &trunc)).is_err());
            let chmod = SetAttr {
                valid: SetattrMask::MODE,
                mode: 0o777,
                ..SetAttr::default()
            };
            assert!(now(fs.setattr(&l, &chmod)).is_err());
            // times apply to the link itself
            let times = SetAttr {
                valid: SetattrMask::MTIME | SetattrMask::MTIME_SET,
                mtime: co9p::protocol::Timespec {
                    sec: 12345,
                    nsec: 0,
                },
                ..SetAttr::default()
            };
            now(fs.setattr(&l, &times)).unwrap();
            assert_eq!(
                std::fs::symlink_metadata(sb.path(path)).unwrap().mtime(),
                12345
            );
            let _ = now(fs.getxattr(&l, b"user.x"));
            assert!(now(fs.setxattr(&l, b"user.x", b"v", 0)).is_err());
            // a hard link to the node links the symlink, never its target
            let ln = format!("ln-{}", path.replace('/', "-"));
            now(fs.link(&l, &r, &name(&ln))).unwrap();
            let m = std::fs::symlink_metadata(sb.path(&ln)).unwrap();
            assert!(m.file_type().is_symlink(), "{model} {path}");
            now(fs.unlink(&r, &name(&ln), false)).unwrap();
        }
        drop(fs);
        let now_meta = std::fs::metadata(&sb.secret).unwrap();
        assert_eq!(now_meta.nlink(), 1, "no hard link to the secret");
        assert_eq!(
            now_meta.mtime(),
            secret_meta.mtime(),
            "secret's times untouched"
        );
        assert_eq!(now_meta.mode(), secret_meta.mode());
        sb.assert_untouched();
    }
}

#[test]
fn dotdot_never_leaves_the_root() {
    let sb = Sandbox::new("dotdot");
    std::fs::create_dir_all(sb.path("a/b/c")).unwrap();
    let fs = sb.fs(SecurityModel::None);
    let (r, rq) = root(&fs);
    let mut n = r.clone();
    for _ in 0..100 {
        let (p, q) = now(fs.parent(&n)).unwrap();
        assert_eq!(q.path, rq.path);
        n = p;
    }
    let (mut n, _) = walk(&fs, "a/b/c");
    for _ in 0..10 {
        n = now(fs.parent(&n)).unwrap().0;
    }
    assert_eq!(now(fs.getattr(&n)).unwrap().qid.path, rq.path);
    // `..` in the root's listing is the root
    let d = now(fs.open(&r, OpenFlags::RDONLY)).unwrap();
    let ents = now(fs.readdir(&d, 0, 100)).unwrap();
    assert_eq!(
        ents.iter().find(|e| e.name == b"..").unwrap().qid.path,
        rq.path
    );
}

#[test]
fn exporting_slash_keeps_root_parent_at_root() {
    // CVE-2017-7471: an export of "/" itself.
    let fs = HostFs::new(std::path::Path::new("/"), HostOptions::default()).unwrap();
    let (r, rq) = root(&fs);
    assert_eq!(now(fs.parent(&r)).unwrap().1.path, rq.path);
    let (etc, _) = now(fs.lookup(&r, &name("proc"))).unwrap();
    assert_eq!(now(fs.parent(&etc)).unwrap().1.path, rq.path);
}

#[test]
fn a_directory_moved_out_of_the_export_has_no_parent() {
    let sb = Sandbox::new("movedout");
    std::fs::create_dir_all(sb.path("a/b")).unwrap();
    let fs = sb.fs(SecurityModel::None);
    let (b, _) = walk(&fs, "a/b");
    // the host (not the guest: it cannot name anything outside) moves `a` out
    std::fs::rename(sb.path("a"), sb.base.join("moved")).unwrap();
    assert_eq!(now(fs.parent(&b)).err(), Some(Errno::EACCES));
    // the node itself still works (it is an inode), but it leads nowhere outside
    assert!(now(fs.getattr(&b)).is_ok());
    std::fs::remove_dir_all(sb.base.join("moved")).unwrap();
}

#[test]
fn paths_deeper_than_path_max_work_relative_to_fds() {
    let sb = Sandbox::new("deep");
    let fs = sb.fs(SecurityModel::None);
    let comp = "d".repeat(200);
    let levels = 30; // 30 × 201 bytes ≈ 6 KB > PATH_MAX (4096)
    let (mut n, _) = root(&fs);
    for _ in 0..levels {
        now(fs.mkdir(&n, &name(&comp), 0o755, ROOT)).unwrap();
        n = now(fs.lookup(&n, &name(&comp))).unwrap().0;
    }
    let (f, file, _) = now(fs.create(&n, &name("bottom"), OpenFlags::RDWR, 0o600, ROOT)).unwrap();
    now(fs.write(&file, 0, b"deep")).unwrap();
    drop(file);
    let g = now(fs.open(&f, OpenFlags::RDONLY)).unwrap();
    let mut buf = [0u8; 4];
    assert_eq!(now(fs.read(&g, 0, &mut buf)), Ok(4));
    assert_eq!(&buf, b"deep");
    let (_, rq) = root(&fs);
    let mut up = 0;
    let mut cur = n;
    loop {
        let (p, q) = now(fs.parent(&cur)).unwrap();
        up += 1;
        if q.path == rq.path {
            break;
        }
        cur = p;
    }
    assert_eq!(up, levels);
}

#[test]
fn special_files_are_never_opened() {
    let sb = Sandbox::new("special");
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        sb.path("fifo"),
        rustix::fs::Mode::from_raw_mode(0o666),
    )
    .unwrap();
    let _sock = std::os::unix::net::UnixListener::bind(sb.path("sock")).unwrap();
    let have_dev = rustix::fs::mknodat(
        rustix::fs::CWD,
        sb.path("null"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .is_ok();
    let done = watchdog("special_files_are_never_opened");
    for model in MODELS {
        let fs = sb.fs(model);
        let mut names = vec!["fifo", "sock"];
        if have_dev {
            names.push("null");
        }
        for n in names {
            let (node, _) = walk(&fs, n);
            for flags in [
                OpenFlags::RDONLY,
                OpenFlags::WRONLY,
                OpenFlags::RDWR | OpenFlags::NONBLOCK,
                OpenFlags::RDONLY | OpenFlags::TRUNC,
            ] {
                assert_eq!(
                    now(fs.open(&node, flags)).err(),
                    Some(Errno::ENXIO),
                    "{model} {n}"
                );
            }
            let trunc = SetAttr {
                valid: SetattrMask::SIZE,
                ..SetAttr::default()
            };
            assert_eq!(now(fs.setattr(&node, &trunc)), Err(Errno::EINVAL));
            assert!(now(fs.getattr(&node)).is_ok());
            let (r, _) = root(&fs);
            // create over an existing fifo never opens it
            assert_eq!(
                now(fs.create(&r, &name(n), OpenFlags::RDWR, 0o600, ROOT)).err(),
                Some(Errno::EEXIST)
            );
        }
    }
    done.store(true, Ordering::SeqCst);
}

#[test]
fn mknod_device_nodes_per_model() {
    let sb = Sandbox::new("mknod");
    let root_user = is_root_user();
    for model in MODELS {
        let fs = sb.fs(model);
        let (r, _) = root(&fs);
        let dev = format!("dev-{model}");
        let made = now(fs.mknod(&r, &name(&dev), libc::S_IFCHR | 0o600, (1, 3), ROOT));
        let host = std::fs::symlink_metadata(sb.path(&dev));
        match model {
            SecurityModel::MappedXattr => {
                made.unwrap();
                assert!(
                    host.unwrap().file_type().is_file(),
                    "a plain file on the host"
                );
                let (n, _) = walk(&fs, &dev);
                let a = now(fs.getattr(&n)).unwrap();
                assert_eq!(a.mode, libc::S_IFCHR | 0o600);
                assert_eq!(a.rdev, rustix::fs::makedev(1, 3));
                assert_eq!(now(fs.open(&n, OpenFlags::RDWR)).err(), Some(Errno::ENXIO));
            }
            _ if root_user => {
                made.unwrap();
                let (n, _) = walk(&fs, &dev);
                assert_eq!(
                    now(fs.getattr(&n)).unwrap().mode & libc::S_IFMT,
                    libc::S_IFCHR
                );
                assert_eq!(now(fs.open(&n, OpenFlags::RDWR)).err(), Some(Errno::ENXIO));
            }
            _ => {
                assert_eq!(made, Err(Errno::EPERM));
                assert!(host.is_err());
            }
        }
        for (suffix, ty) in [("fifo", libc::S_IFIFO), ("sock", libc::S_IFSOCK)] {
            let nm = format!("{suffix}-{model}");
            now(fs.mknod(&r, &name(&nm), ty | 0o644, (0, 0), ROOT)).unwrap();
            let (n, _) = walk(&fs, &nm);
            assert_eq!(now(fs.getattr(&n)).unwrap().mode & libc::S_IFMT, ty);
        }
        assert_eq!(
            now(fs.mknod(&r, &name("dir"), libc::S_IFDIR | 0o755, (0, 0), ROOT)),
            Err(Errno::EINVAL)
        );
    }
    sb.assert_untouched();
}

#[test]
fn rename_and_link_cannot_leave_the_export() {
    let sb = Sandbox::new("renamelink");
    std::fs::write(sb.path("f"), b"inside").unwrap();
    symlink(sb.base.to_str().unwrap(), sb.path("out")).unwrap();
    let fs = sb.fs(SecurityModel::None);
    let (r, _) = root(&fs);
    let (f, _) = walk(&fs, "f");
    let (out, _) = walk(&fs, "out");
    // The only directory handles are nodes from walks beneath the root; a link to a
    // directory outside is a symlink node, never a directory.
    assert_eq!(
        now(fs.rename(&r, &name("f"), &out, &name("f"))),
        Err(Errno::ENOTDIR)
    );
    assert_eq!(now(fs.link(&f, &out, &name("f"))), Err(Errno::ENOTDIR));
    assert_eq!(
        now(fs.symlink(&out, &name("s"), b"x", ROOT)),
        Err(Errno::ENOTDIR)
    );
    assert_eq!(
        now(fs.unlink(&out, &name("secret"), false)),
        Err(Errno::ENOTDIR)
    );
    // and the names themselves cannot climb
    assert!(Name::new(b"../f").is_err() && Name::new(b"..").is_err());
    // renaming the symlink itself moves the link, inside the export
    now(fs.rename(&r, &name("out"), &r, &name("out2"))).unwrap();
    assert!(
        std::fs::symlink_metadata(sb.path("out2"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    sb.assert_untouched();
}

/// A host thread swaps a directory with a symlink to `/` (atomic `RENAME_EXCHANGE`) while
/// the filesystem looks up, opens and creates through it. Zero accesses outside.
#[test]
fn swap_race_with_symlink_to_root() {
    let iters: usize = std::env::var("CO9P_RACE_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let sb = Sandbox::new("race");
    // The real directory mirrors the secret's path with harmless content.
    let secret_rel = secret_mirror(&sb);
    symlink("/", sb.path("b")).unwrap();
    let marker = format!("co9p-race-{}", std::process::id());
    let swapper = Swapper::start(sb.path("a"), sb.path("b"));

    let fs = sb.fs(SecurityModel::None);
    let (r, _) = root(&fs);
    let (mut via_dir, mut via_link, mut read_inside) = (0, 0, 0);
    for i in 0..iters {
        let (a, q) = now(fs.lookup(&r, &name("a"))).unwrap();
        if q.ty == QidType::SYMLINK {
            via_link += 1;
            assert_eq!(
                now(fs.open(&a, OpenFlags::RDONLY)).err(),
                Some(Errno::ENXIO)
            );
            assert!(now(fs.lookup(&a, &name("tmp"))).is_err());
            continue;
        }
        via_dir += 1;
        // walk the secret's absolute path below the node we got
        let mut n = a.clone();
        let mut ok = true;
        for c in secret_rel.iter() {
            match now(fs.lookup(&n, &name(c.to_str().unwrap()))) {
                Ok((next, _)) => n = next,
                Err(_) => {
                    ok = false;
                    break;
                }
            }
        }
        if ok {
            let f = now(fs.open(&n, OpenFlags::RDONLY)).unwrap();
            let mut buf = [0u8; 128];
            let len = now(fs.read(&f, 0, &mut buf)).unwrap();
            assert_eq!(&buf[..len], b"inside", "read the host's secret");
            read_inside += 1;
        }
        if i % 16 == 0 {
            let nm = format!("{marker}-{i}");
            if let Ok((_, _, _)) = now(fs.create(&a, &name(&nm), OpenFlags::RDWR, 0o600, ROOT)) {
                assert!(
                    !std::path::Path::new("/").join(&nm).exists(),
                    "created in /"
                );
            }
            let _ = now(fs.mkdir(&a, &name(&format!("{nm}-d")), 0o700, ROOT));
        }
    }
    let swaps = swapper.stop();
    eprintln!(
        "race: {iters} rounds, {swaps} swaps, {via_dir} via the dir ({read_inside} reads), {via_link} via the link"
    );
    // nothing was made in `/`
    let leaked: Vec<_> = std::fs::read_dir("/")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&marker))
        .map(|e| e.path())
        .collect();
    for p in &leaked {
        let _ = std::fs::remove_dir(p).or_else(|_| std::fs::remove_file(p));
    }
    assert!(leaked.is_empty(), "created outside the export: {leaked:?}");
    assert!(via_dir > 0 && via_link > 0, "the race did not interleave");
    sb.assert_untouched();
}
