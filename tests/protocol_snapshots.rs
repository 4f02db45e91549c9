//! One hand-written example of every 9P2000.L message, with its bytes (hex) and trace line,
//! kept as an insta snapshot in `snapshots/`. A change to the wire format or the trace form
//! shows up here as a reviewable diff.

use co9p::protocol::*;

fn qid(ty: QidType, path: u64) -> Qid {
    Qid {
        ty,
        version: 3,
        path,
    }
}

fn s(x: &str) -> P9String {
    x.into()
}

fn requests() -> Vec<Tmessage> {
    use Tmessage::*;
    let attr = SetAttr {
        valid: SetattrMask::MODE | SetattrMask::SIZE,
        mode: 0o644,
        uid: 0,
        gid: 0,
        size: 4096,
        atime: Timespec::default(),
        mtime: Timespec {
            sec: 1_700_000_000,
            nsec: 5,
        },
    };
    vec![
        Lerror {},
        Statfs { fid: Fid(1) },
        Lopen {
            fid: Fid(2),
            flags: OpenFlags::RDWR | OpenFlags::TRUNC,
        },
        Lcreate {
            fid: Fid(1),
            name: s("new.txt"),
            flags: OpenFlags::WRONLY | OpenFlags::CREAT,
            mode: 0o644,
            gid: 100,
        },
        Symlink {
            fid: Fid(1),
            name: s("link"),
            symtgt: s("../target"),
            gid: 100,
        },
        Mknod {
            dfid: Fid(1),
            name: s("fifo"),
            mode: 0o10644,
            major: 0,
            minor: 0,
            gid: 100,
        },
        Rename {
            fid: Fid(2),
            dfid: Fid(1),
            name: s("renamed"),
        },
        Readlink { fid: Fid(3) },
        Getattr {
            fid: Fid(2),
            request_mask: GetattrMask::BASIC,
        },
        Setattr { fid: Fid(2), attr },
        Xattrwalk {
            fid: Fid(2),
            newfid: Fid(9),
            name: s("user.comment"),
        },
        Xattrcreate {
            fid: Fid(9),
            name: s("user.comment"),
            attr_size: 5,
            flags: 0,
        },
        Readdir {
            fid: Fid(1),
            offset: 0,
            count: 8168,
        },
        Fsync {
            fid: Fid(2),
            datasync: 1,
        },
        Lock {
            fid: Fid(2),
            lock_type: LockType::Write,
            flags: LockFlags::BLOCK,
            start: 0,
            length: 100,
            proc_id: 42,
            client_id: s("guest"),
        },
        Getlock {
            fid: Fid(2),
            lock_type: LockType::Read,
            start: 10,
            length: 0,
            proc_id: 42,
            client_id: s("guest"),
        },
        Link {
            dfid: Fid(1),
            fid: Fid(2),
            name: s("hardlink"),
        },
        Mkdir {
            dfid: Fid(1),
            name: s("dir"),
            mode: 0o755,
            gid: 100,
        },
        Renameat {
            olddirfid: Fid(1),
            oldname: s("a"),
            newdirfid: Fid(4),
            newname: s("b"),
        },
        Unlinkat {
            dirfid: Fid(1),
            name: s("dir"),
            flags: AT_REMOVEDIR,
        },
        Version {
            msize: 524288,
            version: s("9P2000.L"),
        },
        Auth {
            afid: Fid(5),
            uname: s("root"),
            aname: s(""),
            n_uname: 0,
        },
        Attach {
            fid: Fid(0),
            afid: Fid::NOFID,
            uname: s("root"),
            aname: s(""),
            n_uname: 0,
        },
        Flush { oldtag: Tag(7) },
        Walk {
            fid: Fid(0),
            newfid: Fid(1),
            wnames: vec![s("a"), s("b")],
        },
        Read {
            fid: Fid(2),
            offset: 4096,
            count: 4096,
        },
        Write {
            fid: Fid(2),
            offset: 0,
            data: Data(b"hello, world\n".to_vec()),
        },
        Clunk { fid: Fid(2) },
        Remove { fid: Fid(3) },
    ]
}

fn replies() -> Vec<Rmessage> {
    use Rmessage::*;
    let file = qid(QidType::FILE, 0x2a);
    let t = Timespec {
        sec: 1_700_000_000,
        nsec: 123,
    };
    let attr = Attr {
        valid: GetattrMask::BASIC,
        qid: file,
        mode: 0o100644,
        uid: 1000,
        gid: 1000,
        nlink: 1,
        rdev: 0,
        size: 13,
        blksize: 4096,
        blocks: 1,
        atime: t,
        mtime: t,
        ctime: t,
        btime: Timespec::default(),
        generation: 0,
        data_version: 0,
    };
    let stat = StatFs {
        fs_type: 0x01021997,
        bsize: 4096,
        blocks: 1000,
        bfree: 500,
        bavail: 500,
        files: 100,
        ffree: 50,
        fsid: 7,
        namelen: 255,
    };
    vec![
        Lerror {
            ecode: Errno::ENOENT,
        },
        Statfs { stat },
        Lopen {
            qid: file,
            iounit: 0,
        },
        Lcreate {
            qid: file,
            iounit: 0,
        },
        Symlink {
            qid: qid(QidType::SYMLINK, 0x2b),
        },
        Mknod {
            qid: qid(QidType::FILE, 0x2c),
        },
        Rename {},
        Readlink {
            target: s("../target"),
        },
        Getattr { attr },
        Setattr {},
        Xattrwalk { size: 5 },
        Xattrcreate {},
        Readdir {
            entries: DirentList(vec![
                Dirent {
                    qid: qid(QidType::DIR, 1),
                    offset: 1,
                    ty: 4,
                    name: s("."),
                },
                Dirent {
                    qid: file,
                    offset: 2,
                    ty: 8,
                    name: s("hello.txt"),
                },
            ]),
        },
        Fsync {},
        Lock {
            status: LockStatus::Success,
        },
        Getlock {
            lock_type: LockType::Unlock,
            start: 10,
            length: 0,
            proc_id: 42,
            client_id: s("guest"),
        },
        Link {},
        Mkdir {
            qid: qid(QidType::DIR, 0x2d),
        },
        Renameat {},
        Unlinkat {},
        Version {
            msize: 524288,
            version: s("9P2000.L"),
        },
        Auth {
            aqid: qid(QidType::AUTH, 0),
        },
        Attach {
            qid: qid(QidType::DIR, 1),
        },
        Flush {},
        Walk {
            wqids: vec![qid(QidType::DIR, 2), file],
        },
        Read {
            data: Data(b"hello, world\n".to_vec()),
        },
        Write { count: 13 },
        Clunk {},
        Remove {},
    ]
}

fn render<M: Message>(msgs: Vec<M>, out: &mut String) {
    for (i, msg) in msgs.into_iter().enumerate() {
        let pdu = Pdu::new(Tag(i as u16 + 1), msg);
        let bytes = pdu.to_bytes().unwrap();
        // Every example must decode back to itself before it is worth a snapshot.
        assert_eq!(Pdu::<M>::decode(&bytes, 1 << 20).unwrap(), pdu);
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        out.push_str(&format!("{pdu}\n  {hex}\n"));
    }
}

#[test]
fn every_message_snapshot() {
    let (t, r) = (requests(), replies());
    let covered: Vec<u8> = t.iter().map(Message::msg_type).collect();
    assert_eq!(
        covered,
        Tmessage::TYPES,
        "one example of every T-message, in order"
    );
    let covered: Vec<u8> = r.iter().map(Message::msg_type).collect();
    assert_eq!(
        covered,
        Rmessage::TYPES,
        "one example of every R-message, in order"
    );
    let mut out = String::new();
    render(t, &mut out);
    render(r, &mut out);
    insta::with_settings!({
        snapshot_path => concat!(env!("CARGO_MANIFEST_DIR"), "/snapshots"),
        prepend_module_to_snapshot => false,
    }, {
        insta::assert_snapshot!("protocol_every_message", out);
    });
}
