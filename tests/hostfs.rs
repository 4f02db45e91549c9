//! HostFs on real files: every trait operation against a temp export.

mod hostfs_common;

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use co9p::fs::host::{HostFs, HostOptions, SecurityModel};
use co9p::fs::{Creds, Filesystem, LockOutcome, LockRequest};
use co9p::protocol::{Errno, LockType, OpenFlags, QidType, SetAttr, SetattrMask, Timespec};
use hostfs_common::*;

const RW: OpenFlags = OpenFlags::RDWR;

#[test]
fn create_write_read_getattr() {
    let sb = Sandbox::new("rw");
    let fs = sb.fs(SecurityModel::None);
    let (r, _) = root(&fs);
    let (node, file, qid) = now(fs.create(&r, &name("f"), RW, 0o644, ROOT)).unwrap();
    assert_eq!(qid.ty, QidType::FILE);
    assert_eq!(now(fs.write(&file, 0, b"hello world")), Ok(11));
    let mut buf = [0u8; 32];
    assert_eq!(now(fs.read(&file, 6, &mut buf)), Ok(5));
    assert_eq!(&buf[..5], b"world");
    let a = now(fs.getattr(&node)).unwrap();
    assert_eq!(a.size, 11);
    assert_eq!(a.mode, libc::S_IFREG | 0o644);
    assert_eq!(a.qid.path, qid.path);
    assert_eq!(std::fs::read(sb.path("f")).unwrap(), b"hello world");
    // create never opens an existing name
    assert_eq!(
        now(fs.create(&r, &name("f"), RW, 0o644, ROOT)).err(),
        Some(Errno::EEXIST)
    );
    // a fresh open, lookup, vectored I/O
    let (n2, q2) = now(fs.lookup(&r, &name("f"))).unwrap();
    assert_eq!(q2.path, qid.path);
    let f2 = now(fs.open(&n2, OpenFlags::RDONLY)).unwrap();
    let (mut a1, mut a2) = ([0u8; 5], [0u8; 6]);
    let mut bufs = [
        std::io::IoSliceMut::new(&mut a1),
        std::io::IoSliceMut::new(&mut a2),
    ];
    assert_eq!(now(fs.read_vectored(&f2, 0, &mut bufs)), Ok(11));
    assert_eq!((&a1, &a2), (b"hello", b" world"));
    assert!(now(fs.write(&f2, 0, b"x")).is_err(), "read-only open");
    assert_eq!(now(fs.fsync(&file, false)), Ok(()));
    assert_eq!(now(fs.fsync(&file, true)), Ok(()));
}

#[test]
fn open_flags_append_and_trunc() {
    let sb = Sandbox::new("flags");
    std::fs::write(sb.path("f"), b"0123456789").unwrap();
    let fs = sb.fs(SecurityModel::None);
    let (n, _) = walk(&fs, "f");
    let f = now(fs.open(&n, OpenFlags::WRONLY | OpenFlags::APPEND)).unwrap();
    assert_eq!(now(fs.write(&f, 0, b"ab")), Ok(2));
    assert_eq!(std::fs::read(sb.path("f")).unwrap(), b"0123456789ab");
    let _t = now(fs.open(&n, OpenFlags::WRONLY | OpenFlags::TRUNC | OpenFlags::DIRECT)).unwrap();
    assert_eq!(std::fs::metadata(sb.path("f")).unwrap().len(), 0);
    // a directory opens read-only and cannot be read as data
    let (r, _) = root(&fs);
    let d = now(fs.open(&r, OpenFlags::RDONLY)).unwrap();
    assert_eq!(now(fs.read(&d, 0, &mut [0u8; 4])), Err(Errno::EISDIR));
    assert!(now(fs.open(&r, OpenFlags::RDWR)).is_err());
    assert_eq!(now(fs.open(&n, OpenFlags(3))).err(), Some(Errno::EINVAL));
}

#[test]
fn readdir_has_dots_and_resumable_cookies() {
    let sb = Sandbox::new("readdir");
    for i in 0..60 {
        std::fs::write(sb.path(&format!("file{i:02}")), b"").unwrap();
    }
    std::fs::create_dir(sb.path("sub")).unwrap();
    let fs = sb.fs(SecurityModel::None);
    let (r, rq) = root(&fs);
    let d = now(fs.open(&r, OpenFlags::RDONLY)).unwrap();
    let mut all = Vec::new();
    let mut cookie = 0;
    loop {
        let batch = now(fs.readdir(&d, cookie, 7)).unwrap();
        if batch.is_empty() {
            break;
        }
        assert!(batch.len() <= 7);
        cookie = batch.last().unwrap().next;
        all.extend(batch);
    }
    let names: BTreeSet<_> = all.iter().map(|e| e.name.clone()).collect();
    assert_eq!(names.len(), all.len(), "no entry twice");
    assert_eq!(all.len(), 63);
    assert!(names.contains(b".".as_slice()) && names.contains(b"..".as_slice()));
    let dotdot = all.iter().find(|e| e.name == b"..").unwrap();
    assert_eq!(dotdot.qid.path, rq.path, "the root's .. is the root");
    let sub = all.iter().find(|e| e.name == b"sub").unwrap();
    assert_eq!((sub.ty, sub.qid.ty), (4, QidType::DIR));
    let (_, subq) = walk(&fs, "sub");
    assert_eq!(sub.qid.path, subq.path, "readdir and lookup agree");

    // Resume from a middle cookie after removing an entry already passed and one ahead:
    // the rest is what was after the cookie, less the removed one.
    let mid = &all[20];
    let expect: BTreeSet<_> = all[21..].iter().map(|e| e.name.clone()).collect();
    let gone_ahead = all[30].name.clone();
    std::fs::remove_file(sb.path(std::str::from_utf8(&all[10].name).unwrap()))
        .or_else(|_| std::fs::remove_dir(sb.path("sub")))
        .ok();
    std::fs::remove_file(sb.path(std::str::from_utf8(&gone_ahead).unwrap()))
        .or_else(|_| std::fs::remove_dir(sb.path("sub")))
        .unwrap();
    let d2 = now(fs.open(&r, OpenFlags::RDONLY)).unwrap();
    let mut rest = BTreeSet::new();
    let mut cookie = mid.next;
    loop {
        let batch = now(fs.readdir(&d2, cookie, 5)).unwrap();
        let Some(last) = batch.last() else { break };
        cookie = last.next;
        rest.extend(batch.into_iter().map(|e| e.name));
    }
    let mut expect = expect;
    expect.remove(&gone_ahead);
    assert_eq!(rest, expect);
    // A reply that held only part of a batch: the next readdir on the same handle resumes
    // from the last entry sent, not from where the batch ended.
    let first = now(fs.readdir(&d, 0, 7)).unwrap();
    let again = now(fs.readdir(&d, first[2].next, 7)).unwrap();
    assert_eq!(again[0].name, first[3].name);
    assert_eq!(again[..4], first[3..]);
    // readdir of a regular file is refused
    let (f, _) = walk(&fs, "file59");
    let f = now(fs.open(&f, OpenFlags::RDONLY)).unwrap();
    assert_eq!(now(fs.readdir(&f, 0, 10)), Err(Errno::ENOTDIR));
}

#[test]
fn mkdir_rename_link_unlink_parent() {
    let sb = Sandbox::new("names");
    let fs = sb.fs(SecurityModel::None);
    let (r, rq) = root(&fs);
    let dq = now(fs.mkdir(&r, &name("d"), 0o755, ROOT)).unwrap();
    assert_eq!(dq.ty, QidType::DIR);
    let (d, _) = walk(&fs, "d");
    let (f, _, fq) = now(fs.create(&d, &name("a"), RW, 0o600, ROOT)).unwrap();
    now(fs.link(&f, &r, &name("hard"))).unwrap();
    let (_, hq) = walk(&fs, "hard");
    assert_eq!(hq.path, fq.path, "a hard link has the file's qid");
    assert_eq!(std::fs::metadata(sb.path("hard")).unwrap().nlink(), 2);
    now(fs.rename(&d, &name("a"), &r, &name("b"))).unwrap();
    assert!(sb.path("b").exists() && !sb.path("d/a").exists());
    // the node follows the inode, not the name
    assert_eq!(now(fs.getattr(&f)).unwrap().qid.path, fq.path);
    let (p, pq) = now(fs.parent(&d)).unwrap();
    assert_eq!(pq.path, rq.path);
    let (_, pq2) = now(fs.parent(&p)).unwrap();
    assert_eq!(pq2.path, rq.path, "the root's parent is the root");
    assert_eq!(now(fs.unlink(&r, &name("d"), false)), Err(Errno::EISDIR));
    now(fs.unlink(&r, &name("d"), true)).unwrap();
    now(fs.unlink(&r, &name("b"), false)).unwrap();
    assert_eq!(now(fs.unlink(&r, &name("b"), false)), Err(Errno::ENOENT));
    assert_eq!(
        now(fs.link(&r, &r, &name("x"))),
        Err(Errno::EPERM),
        "no dir links"
    );
    assert_eq!(now(fs.parent(&f)).err(), Some(Errno::ENOTDIR));
}

#[test]
fn symlink_and_readlink() {
    let sb = Sandbox::new("symlink");
    let fs = sb.fs(SecurityModel::None);
    let (r, _) = root(&fs);
    let q = now(fs.symlink(&r, &name("l"), b"some/where", ROOT)).unwrap();
    assert_eq!(q.ty, QidType::SYMLINK);
    assert_eq!(
        std::fs::read_link(sb.path("l")).unwrap().to_str(),
        Some("some/where")
    );
    let (l, lq) = walk(&fs, "l");
    assert_eq!(lq.ty, QidType::SYMLINK);
    assert_eq!(now(fs.readlink(&l)).unwrap(), b"some/where");
    assert_eq!(now(fs.readlink(&r)), Err(Errno::EINVAL));
    assert_eq!(
        now(fs.symlink(&r, &name("e"), b"", ROOT)),
        Err(Errno::ENOENT)
    );
    assert_eq!(
        now(fs.symlink(&r, &name("e"), b"a\0b", ROOT)),
        Err(Errno::EINVAL)
    );
    let a = now(fs.getattr(&l)).unwrap();
    assert_eq!(a.mode & libc::S_IFMT, libc::S_IFLNK);
}

#[test]
fn setattr_mode_size_times_owner() {
    let sb = Sandbox::new("setattr");
    std::fs::write(sb.path("f"), b"0123456789").unwrap();
    let fs = sb.fs(SecurityModel::Passthrough);
    let (n, _) = walk(&fs, "f");
    let set = |valid, f: &dyn Fn(&mut SetAttr)| {
        let mut a = SetAttr {
            valid,
            ..SetAttr::default()
        };
        f(&mut a);
        now(fs.setattr(&n, &a))
    };
    set(SetattrMask::MODE, &|a| a.mode = 0o640).unwrap();
    assert_eq!(
        std::fs::metadata(sb.path("f"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o640
    );
    set(SetattrMask::SIZE, &|a| a.size = 4).unwrap();
    assert_eq!(std::fs::read(sb.path("f")).unwrap(), b"0123");
    set(SetattrMask::SIZE, &|a| a.size = 6).unwrap();
    assert_eq!(std::fs::read(sb.path("f")).unwrap(), b"0123\0\0");
    let t = Timespec {
        sec: 1_000_000_000,
        nsec: 123,
    };
    set(
        SetattrMask::ATIME | SetattrMask::ATIME_SET | SetattrMask::MTIME | SetattrMask::MTIME_SET,
        &|a| {
            a.atime = t;
            a.mtime = Timespec {
                sec: 2_000_000_000,
                nsec: 7,
            };
        },
    )
    .unwrap();
    let a = now(fs.getattr(&n)).unwrap();
    assert_eq!((a.atime, a.mtime.sec, a.mtime.nsec), (t, 2_000_000_000, 7));
    // MTIME without MTIME_SET is "now"; atime untouched
    set(SetattrMask::MTIME, &|_| {}).unwrap();
    let b = now(fs.getattr(&n)).unwrap();
    assert_eq!(b.atime, t);
    assert!(
        b.mtime.sec > 2_000_000_000 || b.mtime.sec > 1_600_000_000 && b.mtime.sec < 2_000_000_000
    );
    assert_ne!(b.mtime.sec, 2_000_000_000);
    if is_root_user() {
        set(SetattrMask::UID | SetattrMask::GID, &|a| {
            a.uid = 4321;
            a.gid = 8765;
        })
        .unwrap();
        let m = std::fs::metadata(sb.path("f")).unwrap();
        assert_eq!((m.uid(), m.gid()), (4321, 8765));
        let g = now(fs.getattr(&n)).unwrap();
        assert_eq!((g.uid, g.gid), (4321, 8765));
    }
    let (r, _) = root(&fs);
    assert_eq!(
        now(fs.setattr(
            &r,
            &SetAttr {
                valid: SetattrMask::SIZE,
                ..SetAttr::default()
            }
        )),
        Err(Errno::EISDIR)
    );
}

#[test]
fn xattrs_user_roundtrip_and_private_names_hidden() {
    let sb = Sandbox::new("xattr");
    std::fs::write(sb.path("f"), b"").unwrap();
    for model in [
        SecurityModel::None,
        SecurityModel::MappedXattr,
        SecurityModel::Passthrough,
    ] {
        let fs = sb.fs(model);
        let (n, _) = walk(&fs, "f");
        now(fs.setxattr(&n, b"user.co9p", b"value", 0)).unwrap();
        assert_eq!(now(fs.getxattr(&n, b"user.co9p")).unwrap(), b"value");
        assert_eq!(
            now(fs.setxattr(&n, b"user.co9p", b"v", 1)),
            Err(Errno::EEXIST)
        );
        assert_eq!(
            now(fs.setxattr(&n, b"user.new", b"v", 2)),
            Err(Errno::ENODATA)
        );
        let list = now(fs.listxattr(&n)).unwrap();
        assert!(list.split(|&b| b == 0).any(|n| n == b"user.co9p"));
        assert!(
            !list.windows(12).any(|w| w == b"user.virtfs."),
            "{model}: {list:?}"
        );
        assert_eq!(
            now(fs.getxattr(&n, b"user.virtfs.uid")),
            Err(Errno::ENODATA)
        );
        assert_eq!(
            now(fs.setxattr(&n, b"user.virtfs.uid", &[0; 4], 0)),
            Err(Errno::EACCES)
        );
        assert_eq!(
            now(fs.removexattr(&n, b"user.virtfs.mode")),
            Err(Errno::ENODATA)
        );
        assert_eq!(now(fs.getxattr(&n, b"bogus.ns")), Err(Errno::EOPNOTSUPP));
        if model != SecurityModel::Passthrough {
            assert_eq!(
                now(fs.getxattr(&n, b"security.capability")),
                Err(Errno::EOPNOTSUPP)
            );
            assert_eq!(
                now(fs.setxattr(&n, b"system.posix_acl_access", b"", 0)),
                Err(Errno::EOPNOTSUPP)
            );
        }
        now(fs.removexattr(&n, b"user.co9p")).unwrap();
        assert_eq!(now(fs.getxattr(&n, b"user.co9p")), Err(Errno::ENODATA));
    }
}

#[test]
fn ofd_locks_conflict_between_files_and_close_releases() {
    let sb = Sandbox::new("locks");
    std::fs::write(sb.path("f"), b"data").unwrap();
    let fs = sb.fs(SecurityModel::None);
    let (n, _) = walk(&fs, "f");
    let a = now(fs.open(&n, RW)).unwrap();
    let b = now(fs.open(&n, RW)).unwrap();
    let req = |t, start, length| LockRequest {
        lock_type: t,
        start,
        length,
        proc_id: 1,
        client_id: b"c".to_vec(),
    };
    assert_eq!(
        now(fs.lock(&a, &req(LockType::Write, 0, 10))),
        Ok(LockOutcome::Granted)
    );
    assert_eq!(
        now(fs.lock(&b, &req(LockType::Write, 5, 1))),
        Ok(LockOutcome::Conflict)
    );
    assert_eq!(
        now(fs.lock(&b, &req(LockType::Read, 0, 0))),
        Ok(LockOutcome::Conflict)
    );
    assert_eq!(
        now(fs.lock(&b, &req(LockType::Write, 10, 5))),
        Ok(LockOutcome::Granted)
    );
    let probe = now(fs.getlock(&b, &req(LockType::Write, 0, 0))).unwrap();
    assert_eq!(
        (probe.lock_type, probe.start, probe.length),
        (LockType::Write, 0, 10)
    );
    let free = now(fs.getlock(&a, &req(LockType::Write, 0, 10))).unwrap();
    assert_eq!(free.lock_type, LockType::Unlock, "own locks never conflict");
    // unlock, then closing the other file releases its locks
    assert_eq!(
        now(fs.lock(&a, &req(LockType::Unlock, 0, 0))),
        Ok(LockOutcome::Granted)
    );
    assert_eq!(
        now(fs.lock(&a, &req(LockType::Write, 10, 1))),
        Ok(LockOutcome::Conflict)
    );
    drop(b);
    assert_eq!(
        now(fs.lock(&a, &req(LockType::Write, 0, 0))),
        Ok(LockOutcome::Granted)
    );
    // read lock needs a readable file
    let w = now(fs.open(&n, OpenFlags::WRONLY)).unwrap();
    assert_eq!(
        now(fs.lock(&w, &req(LockType::Read, 100, 1))),
        Err(Errno::EBADF)
    );
    // huge ranges are "to the end", not an error
    drop(a);
    let c = now(fs.open(&n, RW)).unwrap();
    assert_eq!(
        now(fs.lock(&c, &req(LockType::Write, 1, u64::MAX))),
        Ok(LockOutcome::Granted)
    );
    assert_eq!(
        now(fs.lock(&c, &req(LockType::Write, u64::MAX, 1))),
        Err(Errno::EINVAL)
    );
}

#[test]
fn statfs_reports_the_export_fs() {
    let sb = Sandbox::new("statfs");
    let fs = sb.fs(SecurityModel::None);
    let (r, _) = root(&fs);
    let s = now(fs.statfs(&r)).unwrap();
    let v = rustix::fs::statvfs(&sb.export).unwrap();
    assert_eq!(s.blocks, v.f_blocks);
    assert_eq!(s.namelen, 255);
    assert!(s.bsize > 0 && s.files > 0);
}

#[test]
fn unlinked_open_file_keeps_working() {
    let sb = Sandbox::new("unlinked");
    let fs = sb.fs(SecurityModel::None);
    let (r, _) = root(&fs);
    let (n, f, q) = now(fs.create(&r, &name("gone"), RW, 0o600, ROOT)).unwrap();
    now(fs.unlink(&r, &name("gone"), false)).unwrap();
    assert!(!sb.path("gone").exists());
    assert_eq!(now(fs.write(&f, 0, b"still here")), Ok(10));
    let mut buf = [0u8; 10];
    assert_eq!(now(fs.read(&f, 0, &mut buf)), Ok(10));
    assert_eq!(&buf, b"still here");
    let a = now(fs.getattr(&n)).unwrap();
    assert_eq!((a.nlink, a.size, a.qid.path), (0, 10, q.path));
    let g = now(fs.open(&n, OpenFlags::RDONLY)).unwrap();
    assert_eq!(now(fs.read(&g, 6, &mut buf)), Ok(4));
    let trunc = SetAttr {
        valid: SetattrMask::SIZE,
        size: 2,
        ..SetAttr::default()
    };
    now(fs.setattr(&n, &trunc)).unwrap();
    assert_eq!(now(fs.getattr(&n)).unwrap().size, 2);
    // it cannot be linked back (the kernel refuses to relink an unlinked inode)
    assert!(now(fs.link(&n, &r, &name("back"))).is_err());
}

#[test]
fn qids_unique_and_versions_change() {
    let sb = Sandbox::new("qids");
    let fs = sb.fs(SecurityModel::None);
    let (r, rq) = root(&fs);
    let mut seen = BTreeSet::from([rq.path]);
    for i in 0..50 {
        let (_, _, q) = now(fs.create(&r, &name(&format!("f{i}")), RW, 0o600, ROOT)).unwrap();
        assert!(seen.insert(q.path), "qid path reused");
    }
    let (n, f, q0) = now(fs.create(&r, &name("v"), RW, 0o600, ROOT)).unwrap();
    now(fs.write(&f, 0, b"x")).unwrap();
    let q1 = now(fs.getattr(&n)).unwrap().qid;
    assert_eq!(q1.path, q0.path);
    assert_ne!(q1.version, q0.version, "a write changes the version");
    // the export's device: qid path is the inode number
    assert_eq!(q0.path, std::fs::metadata(sb.path("v")).unwrap().ino());
    // another device (/dev/shm, a tmpfs) gets another prefix
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        let other = HostFs::new(shm, HostOptions::default()).unwrap();
        let (_, oq) = root(&other);
        assert_eq!(
            oq.path,
            std::fs::metadata(shm).unwrap().ino(),
            "own device, prefix 0"
        );
    }
}

#[test]
fn mapped_xattr_keeps_guest_metadata_in_xattrs() {
    let sb = Sandbox::new("mapped");
    let fs = sb.fs(SecurityModel::MappedXattr);
    let (r, _) = root(&fs);
    let guest = Creds {
        uid: 1000,
        gid: 100,
    };
    let (n, _f, _) = now(fs.create(&r, &name("f"), RW, 0o4755, guest)).unwrap();
    let a = now(fs.getattr(&n)).unwrap();
    assert_eq!((a.uid, a.gid, a.mode), (1000, 100, libc::S_IFREG | 0o4755));
    let host = std::fs::metadata(sb.path("f")).unwrap();
    assert_eq!(
        host.permissions().mode() & 0o7777,
        0o600,
        "no set-id bit on the host"
    );
    assert_eq!(host.uid(), rustix::process::geteuid().as_raw());
    // chown/chmod change the xattrs only
    let sa = SetAttr {
        valid: SetattrMask::UID | SetattrMask::MODE,
        uid: 0,
        mode: 0o640,
        ..SetAttr::default()
    };
    now(fs.setattr(&n, &sa)).unwrap();
    let a = now(fs.getattr(&n)).unwrap();
    assert_eq!((a.uid, a.gid, a.mode), (0, 100, libc::S_IFREG | 0o640));
    assert_eq!(
        std::fs::metadata(sb.path("f"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o600
    );
    // directories
    now(fs.mkdir(&r, &name("d"), 0o1777, guest)).unwrap();
    let (d, _) = walk(&fs, "d");
    let a = now(fs.getattr(&d)).unwrap();
    assert_eq!((a.uid, a.mode), (1000, libc::S_IFDIR | 0o1777));
    assert_eq!(
        std::fs::metadata(sb.path("d"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o700
    );
    // symlinks are regular files holding the target
    let q = now(fs.symlink(&r, &name("l"), b"/etc/passwd", guest)).unwrap();
    assert_eq!(q.ty, QidType::SYMLINK);
    let m = std::fs::symlink_metadata(sb.path("l")).unwrap();
    assert!(m.file_type().is_file(), "no host symlink");
    let (l, lq) = walk(&fs, "l");
    assert_eq!(lq.ty, QidType::SYMLINK);
    assert_eq!(now(fs.readlink(&l)).unwrap(), b"/etc/passwd");
    assert_eq!(now(fs.getattr(&l)).unwrap().mode, libc::S_IFLNK | 0o777);
    assert_eq!(
        now(fs.open(&l, OpenFlags::RDONLY)).err(),
        Some(Errno::ENXIO)
    );
    // special files are regular files with the type in the xattr
    now(fs.mknod(&r, &name("p"), libc::S_IFIFO | 0o644, (0, 0), guest)).unwrap();
    let (p, _) = walk(&fs, "p");
    assert_eq!(now(fs.getattr(&p)).unwrap().mode, libc::S_IFIFO | 0o644);
    assert!(
        std::fs::symlink_metadata(sb.path("p"))
            .unwrap()
            .file_type()
            .is_file()
    );
    assert_eq!(
        now(fs.open(&p, OpenFlags::RDONLY)).err(),
        Some(Errno::ENXIO)
    );
    // readdir does not give away host types of regular entries
    let dir = now(fs.open(&r, OpenFlags::RDONLY)).unwrap();
    let ents = now(fs.readdir(&dir, 0, 100)).unwrap();
    assert!(
        ents.iter()
            .filter(|e| e.name == b"l" || e.name == b"f")
            .all(|e| e.ty == 0)
    );
}

#[test]
fn passthrough_applies_guest_owner_and_exact_mode() {
    let sb = Sandbox::new("passthrough");
    let fs = sb.fs(SecurityModel::Passthrough);
    let (r, _) = root(&fs);
    let guest = Creds {
        uid: 1234,
        gid: 5678,
    };
    let made = now(fs.create(&r, &name("f"), RW, 0o666, guest));
    if !is_root_user() {
        assert_eq!(made.err(), Some(Errno::EPERM));
        assert!(
            !sb.path("f").exists(),
            "a file that could not be owned is removed"
        );
        return;
    }
    made.unwrap();
    let m = std::fs::metadata(sb.path("f")).unwrap();
    assert_eq!((m.uid(), m.gid()), (1234, 5678));
    assert_eq!(
        m.permissions().mode() & 0o7777,
        0o666,
        "not reduced by the server's umask"
    );
    now(fs.mkdir(&r, &name("d"), 0o777, guest)).unwrap();
    let m = std::fs::metadata(sb.path("d")).unwrap();
    assert_eq!((m.uid(), m.permissions().mode() & 0o7777), (1234, 0o777));
    now(fs.symlink(&r, &name("l"), b"t", guest)).unwrap();
    assert_eq!(std::fs::symlink_metadata(sb.path("l")).unwrap().uid(), 1234);
}

#[test]
fn readonly_option_refuses_changes() {
    let sb = Sandbox::new("ro");
    std::fs::write(sb.path("f"), b"x").unwrap();
    let fs = HostFs::new(
        &sb.export,
        HostOptions {
            readonly: true,
            ..HostOptions::default()
        },
    )
    .unwrap();
    let (r, _) = root(&fs);
    let (n, _) = walk(&fs, "f");
    assert_eq!(now(fs.open(&n, RW)).err(), Some(Errno::EROFS));
    assert_eq!(
        now(fs.create(&r, &name("g"), RW, 0o600, ROOT)).err(),
        Some(Errno::EROFS)
    );
    assert_eq!(
        now(fs.mkdir(&r, &name("g"), 0o700, ROOT)),
        Err(Errno::EROFS)
    );
    assert_eq!(now(fs.unlink(&r, &name("f"), false)), Err(Errno::EROFS));
    assert_eq!(now(fs.setxattr(&n, b"user.a", b"", 0)), Err(Errno::EROFS));
    let f = now(fs.open(&n, OpenFlags::RDONLY)).unwrap();
    assert_eq!(now(fs.read(&f, 0, &mut [0u8; 1])), Ok(1));
}
