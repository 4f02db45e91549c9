//! QEMU's tests/qtest/virtio-9p-test.c, ported: the same cases with the same assertions,
//! written once against the test client and run in process, over tcp, and through co9p's
//! vhost-user daemon (a vhost-user frontend in this process, shared guest RAM). QEMU's synth
//! fixtures (the 16 nested walk directories, the 100-file readdir directory, the lopen,
//! write and flush files) are made through the protocol first, so any backend can serve.

mod client;

use client::fixture::{self, Stall};
use client::{Client, Link};
use co9p::protocol::*;
use co9p::server::Config;

/// QEMU's `P9_MAX_SIZE`, the msize its tests negotiate.
const P9_MAX_SIZE: u32 = 4096;
const READDIR_NFILES: usize = 100;

fn walk_name(i: usize) -> String {
    format!("WALK{i}")
}

fn readdir_file(i: usize) -> String {
    format!("ReadDirFile{i}")
}

/// Tversion, Tattach of fid 0, and the synth fixtures.
fn setup<L: Link>(c: &mut Client<L>) -> Qid {
    let (msize, version) = c.version(P9_MAX_SIZE);
    assert_eq!((msize, version.as_str()), (P9_MAX_SIZE, "9P2000.L"));
    let root = c.attach(Fid(0), "").expect("attach");
    // 16 nested directories for walk/basic.
    let mut dir = c.walk_path(Fid(0), "").unwrap();
    for i in 0..MAXWELEM {
        c.mkdir(dir, &walk_name(i), 0o755).unwrap();
        let next = c.walk_path(dir, &walk_name(i)).unwrap();
        c.clunk(dir).unwrap();
        dir = next;
    }
    c.clunk(dir).unwrap();
    // The readdir directory.
    c.mkdir(Fid(0), "ReadDirDir", 0o755).unwrap();
    for i in 0..READDIR_NFILES {
        let d = c.walk_path(Fid(0), "ReadDirDir").unwrap();
        c.lcreate(d, &readdir_file(i), OpenFlags::WRONLY, 0o644)
            .unwrap();
        c.clunk(d).unwrap();
    }
    for name in ["LOPEN_FILE", "WRITE_FILE", "FLUSH_FILE"] {
        let d = c.walk_path(Fid(0), "").unwrap();
        c.lcreate(d, name, OpenFlags::WRONLY, 0o644).unwrap();
        c.clunk(d).unwrap();
    }
    root
}

fn same_file(a: Qid, b: Qid) -> bool {
    a.ty == b.ty && a.path == b.path
}

fn fs_version<L: Link>(c: &mut Client<L>, _: &Stall) {
    let (msize, version) = c.version(P9_MAX_SIZE);
    assert_eq!(msize, P9_MAX_SIZE);
    assert_eq!(version, "9P2000.L");
}

fn fs_attach<L: Link>(c: &mut Client<L>, _: &Stall) {
    c.version(P9_MAX_SIZE);
    let qid = c.attach(Fid(0), "").unwrap();
    assert_eq!(qid.ty, QidType::DIR);
}

fn fs_walk<L: Link>(c: &mut Client<L>, _: &Stall) {
    setup(c);
    let names: Vec<String> = (0..MAXWELEM).map(walk_name).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let wqids = c.walk(Fid(0), Fid(1), &names).unwrap();
    assert_eq!(wqids.len(), MAXWELEM);
}

fn fs_walk_no_slash<L: Link>(c: &mut Client<L>, _: &Stall) {
    setup(c);
    assert_eq!(c.walk(Fid(0), Fid(1), &[" /"]), Err(Errno::ENOENT));
}

fn fs_walk_nonexistent<L: Link>(c: &mut Client<L>, _: &Stall) {
    setup(c);
    // "If the first element cannot be walked for any reason, Rerror is returned."
    assert_eq!(
        c.walk(Fid(0), Fid(1), &["non-existent"]),
        Err(Errno::ENOENT)
    );
}

fn fs_walk_2nd_nonexistent<L: Link>(c: &mut Client<L>, _: &Stall) {
    let root = setup(c);
    let first = walk_name(0);
    let wqids = c
        .walk(Fid(0), Fid(1), &[first.as_str(), "non-existent"])
        .unwrap();
    // "nwqid is therefore either nwname or the index of the first elementwise walk that
    // failed."
    assert_eq!(wqids.len(), 1);
    assert!(!same_file(root, wqids[0]));
    // The fid was not made by the partial walk.
    assert_eq!(c.getattr(Fid(1)), Err(Errno::ENOENT));
}

fn fs_walk_none<L: Link>(c: &mut Client<L>, _: &Stall) {
    c.version(P9_MAX_SIZE);
    let root = c.attach(Fid(0), "").unwrap();
    let wqids = c.walk(Fid(0), Fid(1), &[]).unwrap();
    assert!(wqids.is_empty(), "no qid for nwname=0");
    let attr = c.getattr(Fid(1)).unwrap();
    assert!(same_file(root, attr.qid));
}

fn fs_walk_dotdot<L: Link>(c: &mut Client<L>, _: &Stall) {
    c.version(P9_MAX_SIZE);
    let root = c.attach(Fid(0), "").unwrap();
    let wqids = c.walk(Fid(0), Fid(1), &[".."]).unwrap();
    assert_eq!(
        wqids,
        vec![root],
        "'..' of the root is the root, qid and all"
    );
}

fn fs_lopen<L: Link>(c: &mut Client<L>, _: &Stall) {
    setup(c);
    c.walk(Fid(0), Fid(1), &["LOPEN_FILE"]).unwrap();
    c.lopen(Fid(1), OpenFlags::WRONLY).unwrap();
}

fn fs_write<L: Link>(c: &mut Client<L>, _: &Stall) {
    setup(c);
    let write_count = P9_MAX_SIZE / 2;
    c.walk(Fid(0), Fid(1), &["WRITE_FILE"]).unwrap();
    c.lopen(Fid(1), OpenFlags::WRONLY).unwrap();
    let count = c
        .write(Fid(1), 0, &vec![0u8; write_count as usize])
        .unwrap();
    assert_eq!(count, write_count);
}

fn fs_flush_success<L: Link>(c: &mut Client<L>, stall: &Stall) {
    setup(c);
    c.walk(Fid(0), Fid(1), &["FLUSH_FILE"]).unwrap();
    c.lopen(Fid(1), OpenFlags::WRONLY).unwrap();
    // The write blocks in the backend until it is cancelled.
    stall.set(true);
    let req = c.send(Tmessage::Write {
        fid: Fid(1),
        offset: 0,
        data: Data(vec![1]),
    });
    let flush = c.send(Tmessage::Flush { oldtag: req });
    // The write is flushed: no reply to it, only the Rflush.
    assert_eq!(c.reply(flush), Some(Rmessage::Flush {}));
    assert!(
        !c.has_reply(req),
        "a flushed request that had no effect gets no reply"
    );
    stall.set(false);
    // Nothing was written.
    assert_eq!(c.getattr(Fid(1)).unwrap().size, 0);
}

fn fs_flush_ignored<L: Link>(c: &mut Client<L>, stall: &Stall) {
    setup(c);
    c.walk(Fid(0), Fid(1), &["FLUSH_FILE"]).unwrap();
    c.lopen(Fid(1), OpenFlags::WRONLY).unwrap();
    // The write completes before it can be cancelled: the flush is sent once its reply is
    // here (not after a pause, which a loaded machine can outlast).
    stall.set(false);
    let req = c.send(Tmessage::Write {
        fid: Fid(1),
        offset: 0,
        data: Data(vec![0]),
    });
    assert!(c.wait_for(req), "the write is answered");
    let flush = c.send(Tmessage::Flush { oldtag: req });
    // A flush of a request that has ended is answered at once, and changes nothing.
    assert_eq!(c.reply(flush), Some(Rmessage::Flush {}));
    assert_eq!(c.reply(req), Some(Rmessage::Write { count: 1 }));
    assert_eq!(c.getattr(Fid(1)).unwrap().size, 1);
}

fn check_readdir_entries(entries: &[Dirent]) {
    assert_eq!(
        entries.len(),
        READDIR_NFILES + 2,
        "the files and '.' and '..'"
    );
    let names: Vec<&[u8]> = entries.iter().map(|e| e.name.as_bytes()).collect();
    assert!(names.contains(&&b"."[..]));
    assert!(names.contains(&&b".."[..]));
    for i in 0..READDIR_NFILES {
        assert!(
            names.contains(&readdir_file(i).as_bytes()),
            "missing {}",
            readdir_file(i)
        );
    }
}

fn fs_readdir<L: Link>(c: &mut Client<L>, _: &Stall) {
    setup(c);
    let wqids = c.walk(Fid(0), Fid(1), &["ReadDirDir"]).unwrap();
    assert_eq!(wqids.len(), 1);
    c.lopen(Fid(1), OpenFlags::DIRECTORY).unwrap();
    // count = msize - 11: the whole directory fits one reply.
    let entries = c.readdir(Fid(1), 0, P9_MAX_SIZE - 11).unwrap();
    check_readdir_entries(&entries);
}

fn do_readdir_split<L: Link>(c: &mut Client<L>, count: u32) {
    setup(c);
    c.walk(Fid(0), Fid(1), &["ReadDirDir"]).unwrap();
    c.lopen(Fid(1), OpenFlags::DIRECTORY).unwrap();
    let entries = c.readdir_all(Fid(1), count);
    check_readdir_entries(&entries);
}

fn fs_readdir_split_512<L: Link>(c: &mut Client<L>, _: &Stall) {
    do_readdir_split(c, 512);
}

fn fs_readdir_split_256<L: Link>(c: &mut Client<L>, _: &Stall) {
    do_readdir_split(c, 256);
}

fn fs_readdir_split_128<L: Link>(c: &mut Client<L>, _: &Stall) {
    do_readdir_split(c, 128);
}

fn fs_create_dir<L: Link>(c: &mut Client<L>, _: &Stall) {
    setup(c);
    c.mkdir(Fid(0), "01", 0o750).unwrap();
    let st = c.stat("01").expect("the directory exists");
    assert_eq!(st.mode & 0o170000, 0o040000, "and is a directory");
}

fn fs_unlinkat_dir<L: Link>(c: &mut Client<L>, _: &Stall) {
    setup(c);
    c.mkdir(Fid(0), "02", 0o750).unwrap();
    assert_eq!(c.stat("02").unwrap().mode & 0o170000, 0o040000);
    c.unlinkat(Fid(0), "02", AT_REMOVEDIR).unwrap();
    assert_eq!(c.stat("02"), Err(Errno::ENOENT));
}

fn create_file<L: Link>(c: &mut Client<L>, dir: &str, name: &str) {
    let d = c.walk_path(Fid(0), dir).unwrap();
    c.lcreate(d, name, OpenFlags::WRONLY, 0o640).unwrap();
    c.clunk(d).unwrap();
}

fn fs_create_file<L: Link>(c: &mut Client<L>, _: &Stall) {
    setup(c);
    c.mkdir(Fid(0), "03", 0o750).unwrap();
    create_file(c, "03", "1st_file");
    assert_eq!(c.stat("03/1st_file").unwrap().mode & 0o170000, 0o100000);
}

fn fs_unlinkat_file<L: Link>(c: &mut Client<L>, _: &Stall) {
    setup(c);
    c.mkdir(Fid(0), "04", 0o750).unwrap();
    create_file(c, "04", "doa_file");
    assert_eq!(c.stat("04/doa_file").unwrap().mode & 0o170000, 0o100000);
    let d = c.walk_path(Fid(0), "04").unwrap();
    c.unlinkat(d, "doa_file", 0).unwrap();
    assert_eq!(c.stat("04/doa_file"), Err(Errno::ENOENT));
}

fn fs_symlink_file<L: Link>(c: &mut Client<L>, _: &Stall) {
    setup(c);
    c.mkdir(Fid(0), "05", 0o750).unwrap();
    create_file(c, "05", "real_file");
    assert_eq!(c.stat("05/real_file").unwrap().mode & 0o170000, 0o100000);
    let d = c.walk_path(Fid(0), "05").unwrap();
    c.symlink(d, "symlink_file", "real_file").unwrap();
    let st = c.stat("05/symlink_file").expect("the link exists");
    assert_eq!(st.mode & 0o170000, 0o120000);
    let l = c.walk_path(Fid(0), "05/symlink_file").unwrap();
    assert_eq!(c.readlink(l).unwrap(), b"real_file");
}

fn fs_unlinkat_symlink<L: Link>(c: &mut Client<L>, _: &Stall) {
    setup(c);
    c.mkdir(Fid(0), "06", 0o750).unwrap();
    create_file(c, "06", "real_file");
    let d = c.walk_path(Fid(0), "06").unwrap();
    c.symlink(d, "symlink_file", "real_file").unwrap();
    assert!(c.stat("06/symlink_file").is_ok());
    c.unlinkat(d, "symlink_file", 0).unwrap();
    assert_eq!(c.stat("06/symlink_file"), Err(Errno::ENOENT));
}

fn fs_hardlink_file<L: Link>(c: &mut Client<L>, _: &Stall) {
    setup(c);
    c.mkdir(Fid(0), "07", 0o750).unwrap();
    create_file(c, "07", "real_file");
    let real = c.stat("07/real_file").unwrap();
    let d = c.walk_path(Fid(0), "07").unwrap();
    let f = c.walk_path(Fid(0), "07/real_file").unwrap();
    c.link(d, f, "hardlink_file").unwrap();
    let link = c.stat("07/hardlink_file").unwrap();
    assert_eq!(link.mode & 0o170000, 0o100000);
    // Same file: same qid path (the server's inode identity).
    assert_eq!(link.qid.path, real.qid.path);
    assert_eq!(link.nlink, 2);
}

fn fs_unlinkat_hardlink<L: Link>(c: &mut Client<L>, _: &Stall) {
    setup(c);
    c.mkdir(Fid(0), "08", 0o750).unwrap();
    create_file(c, "08", "real_file");
    let d = c.walk_path(Fid(0), "08").unwrap();
    let f = c.walk_path(Fid(0), "08/real_file").unwrap();
    c.link(d, f, "hardlink_file").unwrap();
    assert!(c.stat("08/hardlink_file").is_ok());
    c.unlinkat(d, "hardlink_file", 0).unwrap();
    assert_eq!(c.stat("08/hardlink_file"), Err(Errno::ENOENT));
    assert_eq!(
        c.stat("08/real_file").unwrap().nlink,
        1,
        "the old file is still there"
    );
}

fn fs_use_after_unlink<L: Link>(c: &mut Client<L>, _: &Stall) {
    setup(c);
    let write_count = P9_MAX_SIZE / 2;
    c.mkdir(Fid(0), "09", 0o750).unwrap();
    create_file(c, "09", "doa_file");
    assert_eq!(c.stat("09/doa_file").unwrap().mode & 0o170000, 0o100000);
    let f = c.walk_path(Fid(0), "09/doa_file").unwrap();
    c.lopen(f, OpenFlags::WRONLY).unwrap();
    let d = c.walk_path(Fid(0), "09").unwrap();
    c.unlinkat(d, "doa_file", 0).unwrap();
    // Removed but still open: these succeed.
    c.getattr(f).unwrap();
    assert_eq!(
        c.write(f, 0, &vec![0u8; write_count as usize]).unwrap(),
        write_count
    );
    let attr = SetAttr {
        valid: SetattrMask::SIZE,
        size: 2001,
        ..SetAttr::default()
    };
    c.call(Tmessage::Setattr { fid: f, attr }).unwrap();
    assert_eq!(c.getattr(f).unwrap().size, 2001);
}

fn fs_deep_absolute_path<L: Link>(c: &mut Client<L>, _: &Stall) {
    c.version(P9_MAX_SIZE);
    c.attach(Fid(0), "").unwrap();
    // Deeper than 65536 bytes of absolute path, with NAME_MAX names.
    let name = "A".repeat(255);
    let mut path_len = 1;
    let mut cur = Fid(0);
    while path_len <= 65536 {
        c.mkdir(cur, &name, 0o755).unwrap();
        path_len += 256;
        let next = c.fresh_fid();
        c.walk(cur, next, &[name.as_str()]).unwrap();
        cur = next;
    }
    c.getattr(cur).expect("the deepest directory is reachable");
}

/// QEMU's xattr fid limit test with a limit of 100 (its "custom" variant).
fn fs_xattr_limit<L: Link>(c: &mut Client<L>, _: &Stall) {
    const LIMIT: usize = 100;
    const SIZE: usize = 8 * 1024;
    setup(c);
    let data = vec![b'X'; SIZE];
    let mut fids = Vec::new();
    for _ in 0..LIMIT {
        let f = c.walk_path(Fid(0), "WRITE_FILE").unwrap();
        c.call(Tmessage::Xattrcreate {
            fid: f,
            name: "user.test".into(),
            attr_size: SIZE as u64,
            flags: 0,
        })
        .unwrap();
        let mut off = 0;
        while off < SIZE {
            let n = (SIZE - off).min(2048);
            assert_eq!(
                c.write(f, off as u64, &data[off..off + n]).unwrap(),
                n as u32
            );
            off += n;
        }
        fids.push(f);
    }
    let err_fid = c.walk_path(Fid(0), "WRITE_FILE").unwrap();
    let r = c.call(Tmessage::Xattrcreate {
        fid: err_fid,
        name: "user.test_exceed".into(),
        attr_size: SIZE as u64,
        flags: 0,
    });
    assert_eq!(r, Err(Errno::ENOSPC));
    for f in fids {
        c.clunk(f).unwrap();
    }
    c.clunk(err_fid).unwrap();
    // Slots come back on clunk: one more now succeeds, and the value was set.
    let f = c.walk_path(Fid(0), "WRITE_FILE").unwrap();
    c.call(Tmessage::Xattrcreate {
        fid: f,
        name: "user.again".into(),
        attr_size: 1,
        flags: 0,
    })
    .unwrap();
    c.write(f, 0, b"Y").unwrap();
    c.clunk(f).unwrap();
    let f = c.walk_path(Fid(0), "WRITE_FILE").unwrap();
    let nf = c.fresh_fid();
    match c
        .call(Tmessage::Xattrwalk {
            fid: f,
            newfid: nf,
            name: "user.test".into(),
        })
        .unwrap()
    {
        Rmessage::Xattrwalk { size } => assert_eq!(size, SIZE as u64),
        r => panic!("{r:?}"),
    }
    assert_eq!(c.read(nf, 0, 16).unwrap(), b"XXXXXXXXXXXXXXXX");
}

fn config() -> Config {
    Config {
        max_xattr_writes: 100,
        ..Config::default()
    }
}

macro_rules! qtests {
    ($($name:ident),* $(,)?) => {
        mod in_process {
            $(
                #[test]
                fn $name() {
                    let (mut c, stall) = super::fixture::in_process(super::config());
                    super::$name(&mut c, &stall);
                }
            )*
        }
        mod tcp {
            $(
                #[test]
                fn $name() {
                    let (mut c, stall, _server) = super::fixture::over_tcp(super::config());
                    super::$name(&mut c, &stall);
                }
            )*
        }
        mod vhost_user {
            $(
                #[test]
                fn $name() {
                    let (mut c, stall) = super::fixture::over_vhost_user(super::config());
                    super::$name(&mut c, &stall);
                }
            )*
        }
    };
}

qtests!(
    fs_version,
    fs_attach,
    fs_walk,
    fs_walk_no_slash,
    fs_walk_nonexistent,
    fs_walk_2nd_nonexistent,
    fs_walk_none,
    fs_walk_dotdot,
    fs_lopen,
    fs_write,
    fs_flush_success,
    fs_flush_ignored,
    fs_readdir,
    fs_readdir_split_512,
    fs_readdir_split_256,
    fs_readdir_split_128,
    fs_create_dir,
    fs_unlinkat_dir,
    fs_create_file,
    fs_unlinkat_file,
    fs_symlink_file,
    fs_unlinkat_symlink,
    fs_hardlink_file,
    fs_unlinkat_hardlink,
    fs_use_after_unlink,
    fs_deep_absolute_path,
    fs_xattr_limit,
);
