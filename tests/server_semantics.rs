//! The server's own rules beyond QEMU's cases: Tflush ordering, Tversion as a barrier,
//! the clunk barrier, limits, read-only exports, msize bounds, hostile frames.

mod client;

use client::fixture::{Stall, in_process};
use client::{Client, InProcess, Link};
use std::sync::{Arc, Mutex};

use co9p::fs::FsResult;
use co9p::fs::MemFs;
use co9p::fs::hooked::{Hook, HookedFs, OpKind};
use co9p::protocol::*;
use co9p::server::Config;

type C = Client<InProcess<client::fixture::TestFs>>;

fn attached(config: Config) -> (C, Stall) {
    let (mut c, stall) = in_process(config);
    c.version(8192);
    c.attach(Fid(0), "").unwrap();
    (c, stall)
}

fn open_new_file(c: &mut C, name: &str) -> Fid {
    let f = c.walk_path(Fid(0), "").unwrap();
    c.lcreate(f, name, OpenFlags::RDWR, 0o644).unwrap();
    f
}

/// Frames in the order the server sent them.
fn sent_order(c: &mut C) -> Vec<Reply> {
    c.drain()
}

#[test]
fn several_flushes_of_one_tag_are_answered_in_order_after_nothing() {
    let (mut c, stall) = attached(Config::default());
    let f = open_new_file(&mut c, "f");
    stall.set(true);
    let w = c.send(Tmessage::Write {
        fid: f,
        offset: 0,
        data: Data(b"x".to_vec()),
    });
    let f1 = c.send(Tmessage::Flush { oldtag: w });
    let f2 = c.send(Tmessage::Flush { oldtag: w });
    let f3 = c.send(Tmessage::Flush { oldtag: w });
    let order: Vec<Tag> = sent_order(&mut c).into_iter().map(|r| r.tag).collect();
    assert_eq!(
        order,
        vec![f1, f2, f3],
        "no Rwrite (flushed before effect), Rflushes in order"
    );
}

#[test]
fn flush_of_unknown_or_own_tag_is_answered_at_once() {
    let (mut c, _) = attached(Config::default());
    assert_eq!(
        c.rpc(Tmessage::Flush { oldtag: Tag(4000) }),
        Rmessage::Flush {}
    );
    let t = c.fresh_tag();
    c.send_tagged(t, Tmessage::Flush { oldtag: t });
    assert_eq!(c.reply(t), Some(Rmessage::Flush {}));
}

#[test]
fn flush_of_a_flush_waits_for_it() {
    let (mut c, stall) = attached(Config::default());
    let f = open_new_file(&mut c, "f");
    stall.set(true);
    let w = c.send(Tmessage::Write {
        fid: f,
        offset: 0,
        data: Data(b"x".to_vec()),
    });
    let f1 = c.send(Tmessage::Flush { oldtag: w });
    let f2 = c.send(Tmessage::Flush { oldtag: f1 });
    let order: Vec<Tag> = sent_order(&mut c).into_iter().map(|r| r.tag).collect();
    assert_eq!(order, vec![f1, f2]);
}

#[test]
fn a_flushed_request_that_completed_replies_before_the_rflush() {
    let (mut c, _) = attached(Config::default());
    let f = open_new_file(&mut c, "f");
    let w = c.send(Tmessage::Write {
        fid: f,
        offset: 0,
        data: Data(b"abc".to_vec()),
    });
    let fl = c.send(Tmessage::Flush { oldtag: w });
    let replies = sent_order(&mut c);
    let tags: Vec<Tag> = replies.iter().map(|r| r.tag).collect();
    assert_eq!(tags, vec![w, fl]);
    assert_eq!(replies[0].msg, Rmessage::Write { count: 3 });
}

#[test]
fn tversion_cancels_everything_and_frees_every_fid() {
    let (mut c, stall) = attached(Config::default());
    let f = open_new_file(&mut c, "f");
    stall.set(true);
    let w = c.send(Tmessage::Write {
        fid: f,
        offset: 0,
        data: Data(b"x".to_vec()),
    });
    let (msize, _) = c.version(8192);
    assert_eq!(msize, 8192);
    assert!(
        !c.has_reply(w),
        "the stalled write was cancelled without effect"
    );
    stall.set(false);
    assert_eq!(
        c.getattr(Fid(0)),
        Err(Errno::ENOENT),
        "fids are gone after Tversion"
    );
    c.attach(Fid(0), "").unwrap();
    assert_eq!(c.stat("f").unwrap().size, 0);
}

/// A Tversion is never refused for lack of a request slot: the requests it cancels may
/// hold every one, and it has a slot of slack for that (as a Tflush has).
#[test]
fn tversion_is_answered_when_every_request_slot_is_taken() {
    let (mut c, stall) = attached(Config {
        max_inflight: 2,
        ..Config::default()
    });
    let f = open_new_file(&mut c, "f");
    stall.set(true);
    let writes: Vec<Tag> = (0..2)
        .map(|i| {
            c.send(Tmessage::Write {
                fid: f,
                offset: i,
                data: Data(b"x".to_vec()),
            })
        })
        .collect();
    let third = c.send(Tmessage::Getattr {
        fid: Fid(0),
        request_mask: GetattrMask::ALL,
    });
    assert_eq!(
        c.reply(third),
        Some(Rmessage::Lerror {
            ecode: Errno::EAGAIN
        }),
        "both slots are taken"
    );
    c.send_tagged(
        Tag::NOTAG,
        Tmessage::Version {
            msize: 8192,
            version: VERSION_9P2000_L.into(),
        },
    );
    assert!(
        matches!(
            c.reply(Tag::NOTAG),
            Some(Rmessage::Version { msize: 8192, .. })
        ),
        "the Tversion is answered"
    );
    for w in writes {
        assert!(!c.has_reply(w), "the stalled writes were cancelled");
    }
    stall.set(false);
}

#[test]
fn clunk_waits_for_requests_on_its_fid() {
    let (mut c, stall) = attached(Config::default());
    let f = open_new_file(&mut c, "f");
    stall.set(true);
    let w = c.send(Tmessage::Write {
        fid: f,
        offset: 0,
        data: Data(b"x".to_vec()),
    });
    let cl = c.send(Tmessage::Clunk { fid: f });
    // Nothing can finish: the clunk is behind the write.
    assert!(c.drain().is_empty());
    stall.set(false);
    // Release the write by flushing it; then the clunk goes through.
    let fl = c.send(Tmessage::Flush { oldtag: w });
    let tags: Vec<Tag> = c.drain().into_iter().map(|r| r.tag).collect();
    assert_eq!(tags, vec![fl, cl]);
}

#[test]
fn versions_and_msize() {
    let (mut c, _) = in_process(Config {
        max_msize: 16384,
        ..Config::default()
    });
    assert_eq!(
        c.version(1 << 20).0,
        16384,
        "capped by the configured maximum"
    );
    assert_eq!(c.version(8192).0, 8192, "never above the client's");
    let t = Tag::NOTAG;
    c.send_tagged(
        t,
        Tmessage::Version {
            msize: 8192,
            version: "9P2000".into(),
        },
    );
    match c.reply(t).unwrap() {
        Rmessage::Version { version, .. } => assert_eq!(version.as_bytes(), b"unknown"),
        r => panic!("{r:?}"),
    }
    c.send_tagged(
        t,
        Tmessage::Version {
            msize: 100,
            version: "9P2000.L".into(),
        },
    );
    assert_eq!(
        c.reply(t).unwrap(),
        Rmessage::Lerror {
            ecode: Errno::EMSGSIZE
        }
    );
}

#[test]
fn requests_before_tversion_are_refused() {
    let (mut c, _) = in_process(Config::default());
    let r = c.call(Tmessage::Attach {
        fid: Fid(0),
        afid: Fid::NOFID,
        uname: "".into(),
        aname: "".into(),
        n_uname: 0,
    });
    assert_eq!(r, Err(Errno::EPROTO));
}

#[test]
fn reads_never_exceed_msize() {
    let (mut c, _) = attached(Config::default());
    let f = open_new_file(&mut c, "big");
    let data = vec![7u8; 20000];
    let mut off = 0;
    while off < data.len() {
        let n = (data.len() - off).min(8000);
        c.write(f, off as u64, &data[off..off + n]).unwrap();
        off += n;
    }
    // Asks for far more than msize allows: the reply is clamped (the client asserts every
    // frame fits msize).
    let got = c.read(f, 0, 1 << 20).unwrap();
    assert_eq!(got.len(), 8192 - PAYLOAD_HEADER_LEN);
}

/// An Rreadlink is the one reply its request does not bound: the target may have been made
/// through a session of larger msize. A reply of exactly msize bytes goes out; one byte
/// more is `EMSGSIZE` (the client asserts every frame fits msize).
#[test]
fn a_reply_of_exactly_msize_goes_out_and_one_byte_more_is_emsgsize() {
    let (mut c, _) = attached(Config::default());
    // Rreadlink: a 7-byte header, the target's 2-byte length, the target.
    let fits = "x".repeat(4096 - 7 - 2);
    let over = "x".repeat(4096 - 7 - 2 + 1);
    c.symlink(Fid(0), "fits", &fits).unwrap();
    c.symlink(Fid(0), "over", &over).unwrap();
    assert_eq!(c.version(4096).0, 4096);
    c.attach(Fid(0), "").unwrap();
    let f = c.walk_path(Fid(0), "fits").unwrap();
    assert_eq!(c.readlink(f), Ok(fits.into_bytes()));
    let f = c.walk_path(Fid(0), "over").unwrap();
    assert_eq!(c.readlink(f), Err(Errno::EMSGSIZE));
}

#[test]
fn readonly_export_refuses_changes() {
    let (mut c, _) = attached(Config {
        readonly: true,
        ..Config::default()
    });
    assert_eq!(c.mkdir(Fid(0), "d", 0o755), Err(Errno::EROFS));
    let f = c.walk_path(Fid(0), "").unwrap();
    assert_eq!(
        c.lcreate(f, "x", OpenFlags::WRONLY, 0o644),
        Err(Errno::EROFS)
    );
    assert_eq!(c.lopen(f, OpenFlags::RDWR), Err(Errno::EROFS));
    c.lopen(f, OpenFlags::RDONLY).unwrap();
    // Attributes: read, never changed.
    c.getattr(Fid(0)).unwrap();
    let attr = SetAttr {
        valid: SetattrMask::MODE,
        mode: 0o700,
        ..SetAttr::default()
    };
    assert_eq!(
        c.call(Tmessage::Setattr { fid: Fid(0), attr }),
        Err(Errno::EROFS)
    );
}

#[test]
fn fid_limit_is_enforced() {
    let (mut c, _) = attached(Config {
        max_fids: 5,
        ..Config::default()
    });
    for i in 1..5 {
        c.walk(Fid(0), Fid(i), &[]).unwrap();
    }
    assert_eq!(c.walk(Fid(0), Fid(9), &[]), Err(Errno::EMFILE));
    c.clunk(Fid(1)).unwrap();
    c.walk(Fid(0), Fid(9), &[]).unwrap();
}

/// At most `max_xattr_writes` fids at once hold a pending xattr value: one more is
/// `ENOSPC`, and a clunk (which sets the value) gives its place back.
#[test]
fn pending_xattr_values_are_limited_and_a_clunk_frees_a_place() {
    let (mut c, _) = attached(Config {
        max_xattr_writes: 2,
        ..Config::default()
    });
    let f = open_new_file(&mut c, "f");
    c.clunk(f).unwrap();
    let create = |c: &mut C, fid: Fid| {
        c.call(Tmessage::Xattrcreate {
            fid,
            name: "user.a".into(),
            attr_size: 0,
            flags: 0,
        })
    };
    let fids: Vec<Fid> = (0..3).map(|_| c.walk_path(Fid(0), "f").unwrap()).collect();
    assert!(matches!(
        create(&mut c, fids[0]),
        Ok(Rmessage::Xattrcreate {})
    ));
    assert!(matches!(
        create(&mut c, fids[1]),
        Ok(Rmessage::Xattrcreate {})
    ));
    assert_eq!(create(&mut c, fids[2]), Err(Errno::ENOSPC));
    // An empty value removes the xattr, which is not there: the clunk says so, and the fid
    // is gone all the same.
    assert_eq!(c.clunk(fids[0]), Err(Errno::ENODATA));
    assert!(matches!(
        create(&mut c, fids[2]),
        Ok(Rmessage::Xattrcreate {})
    ));
}

/// A value of exactly Linux's XATTR_SIZE_MAX (64 KiB) is made, written in pieces and read
/// back whole; Txattrcreate refuses flags other than XATTR_CREATE and XATTR_REPLACE.
#[test]
fn an_xattr_value_of_exactly_the_size_limit_round_trips() {
    const MAX: usize = 64 * 1024;
    let (mut c, _) = attached(Config::default());
    let f = open_new_file(&mut c, "f");
    c.clunk(f).unwrap();
    let x = c.walk_path(Fid(0), "f").unwrap();
    let bad = c.call(Tmessage::Xattrcreate {
        fid: x,
        name: "user.big".into(),
        attr_size: 1,
        flags: 4,
    });
    assert_eq!(bad, Err(Errno::EINVAL));
    let created = c.call(Tmessage::Xattrcreate {
        fid: x,
        name: "user.big".into(),
        attr_size: MAX as u64,
        flags: 0,
    });
    assert!(matches!(created, Ok(Rmessage::Xattrcreate {})));
    let value: Vec<u8> = (0..MAX).map(|i| (i % 251) as u8).collect();
    for (i, piece) in value.chunks(4096).enumerate() {
        assert_eq!(c.write(x, (i * 4096) as u64, piece), Ok(piece.len() as u32));
    }
    c.clunk(x).unwrap();
    let r = c.walk_path(Fid(0), "f").unwrap();
    let back = c.fresh_fid();
    let walked = c.call(Tmessage::Xattrwalk {
        fid: r,
        newfid: back,
        name: "user.big".into(),
    });
    assert_eq!(walked, Ok(Rmessage::Xattrwalk { size: MAX as u64 }));
    let mut got = Vec::new();
    while got.len() < MAX {
        let piece = c.read(back, got.len() as u64, 4096).unwrap();
        assert!(!piece.is_empty(), "the value ended at {}", got.len());
        got.extend_from_slice(&piece);
    }
    assert!(got == value, "the value read back differs");
}

/// NOFID is never a fid: a Txattrwalk asking for it as its new fid is refused.
#[test]
fn xattrwalk_to_nofid_is_refused() {
    let (mut c, _) = attached(Config::default());
    let r = c.call(Tmessage::Xattrwalk {
        fid: Fid(0),
        newfid: Fid::NOFID,
        name: "".into(),
    });
    assert_eq!(r, Err(Errno::EINVAL));
}

#[test]
fn walk_names_that_cannot_exist() {
    let (mut c, _) = attached(Config::default());
    c.mkdir(Fid(0), "d", 0o755).unwrap();
    assert_eq!(c.walk(Fid(0), Fid(1), &["d/.."]), Err(Errno::ENOENT));
    assert_eq!(c.walk(Fid(0), Fid(1), &[""]), Err(Errno::ENOENT));
    assert_eq!(c.walk(Fid(0), Fid(1), &["a\0b"]), Err(Errno::ENOENT));
    // `..` chains stop at the root.
    let root = c.getattr(Fid(0)).unwrap().qid;
    let q = c.walk(Fid(0), Fid(2), &["d", "..", "..", ".."]).unwrap();
    assert_eq!(q.last().unwrap().path, root.path);
    // Creating "." or ".." is EEXIST; a slash is ENOENT.
    assert_eq!(c.mkdir(Fid(0), "..", 0o755), Err(Errno::EEXIST));
    assert_eq!(c.mkdir(Fid(0), "a/b", 0o755), Err(Errno::ENOENT));
}

#[test]
fn hostile_frames_get_errors_not_silence() {
    let (mut c, _) = attached(Config::default());
    // Unknown type: EOPNOTSUPP with its tag, and the session goes on.
    let mut f = vec![7, 0, 0, 0, 250, 9, 0];
    c.link.send(f.clone());
    assert_eq!(
        c.reply(Tag(9)),
        Some(Rmessage::Lerror {
            ecode: Errno::EOPNOTSUPP
        })
    );
    // Truncated body.
    f = vec![9, 0, 0, 0, 120, 10, 0, 1, 0];
    c.link.send(f);
    assert_eq!(
        c.reply(Tag(10)),
        Some(Rmessage::Lerror {
            ecode: Errno::EPROTO
        })
    );
    // Tauth: "no authentication required", in the form diod's clients understand.
    assert_eq!(
        c.call(Tmessage::Auth {
            afid: Fid(5),
            uname: "".into(),
            aname: "".into(),
            n_uname: 0
        }),
        Err(Errno::ENOENT)
    );
    assert_eq!(c.call(Tmessage::Lerror {}), Err(Errno::EOPNOTSUPP));
    // Still alive.
    c.getattr(Fid(0)).unwrap();
}

#[test]
fn random_garbage_never_breaks_the_session() {
    use rand::{RngExt, SeedableRng};
    let (mut c, _) = attached(Config::default());
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut replies = 0;
    for i in 0..2000u32 {
        let ty = Tmessage::TYPES[rng.random_range(0..Tmessage::TYPES.len())];
        if ty == 100 {
            continue; // a Tversion would reset the session under us
        }
        let mut pdu = Request::sample(ty, &mut rng).unwrap();
        pdu.tag = Tag((i % 1000) as u16 + 1);
        let mut bytes = pdu.to_bytes().unwrap();
        if rng.random_bool(0.3) && bytes.len() > 7 {
            let at = rng.random_range(7..bytes.len());
            bytes[at] ^= rng.random::<u8>() | 1;
        }
        c.link.send(bytes);
        // Every frame with a readable header gets one reply (flush targets aside).
        replies += c.drain().len();
    }
    assert!(replies >= 1900, "only {replies} replies to 2000 frames");
    // The garbage may have clunked or removed anything; the session itself still works.
    let _ = c.clunk(Fid(4242));
    c.attach(Fid(4242), "").unwrap();
    c.getattr(Fid(4242)).unwrap();
}

#[test]
fn a_request_flushed_before_it_ran_gets_no_reply_and_has_no_effect() {
    let (mut c, _) = attached(Config::default());
    let f = open_new_file(&mut c, "f");
    c.link.batching = true;
    let w = c.send(Tmessage::Write {
        fid: f,
        offset: 0,
        data: Data(b"abc".to_vec()),
    });
    let fl = c.send(Tmessage::Flush { oldtag: w });
    c.link.batching = false;
    let tags: Vec<Tag> = c.drain().into_iter().map(|r| r.tag).collect();
    assert_eq!(tags, vec![fl]);
    assert_eq!(c.getattr(f).unwrap().size, 0);
}

/// Tremove unlinks what the fid names — a file as a file, a directory as a directory —
/// and clunks the fid whether or not that worked (9P's rule); the attach root cannot go.
#[test]
fn tremove_unlinks_files_and_directories_and_always_clunks() {
    let (mut c, _stall) = attached(Config::default());
    let remove = |c: &mut C, fid: Fid| c.call(Tmessage::Remove { fid });
    c.mkdir(Fid(0), "d", 0o755).unwrap();
    c.mkdir(Fid(0), "full", 0o755).unwrap();
    let f = open_new_file(&mut c, "f");
    c.clunk(f).unwrap();
    let inner = c.walk_path(Fid(0), "full").unwrap();
    c.lcreate(inner, "x", OpenFlags::RDWR, 0o644).unwrap();
    c.clunk(inner).unwrap();
    for (name, want) in [
        ("f", Ok(Rmessage::Remove {})),
        ("d", Ok(Rmessage::Remove {})),
        ("full", Err(Errno::ENOTEMPTY)),
    ] {
        let fid = c.walk_path(Fid(0), name).unwrap();
        assert_eq!(remove(&mut c, fid), want, "Tremove of {name}");
        assert_eq!(
            c.getattr(fid).err(),
            Some(Errno::ENOENT),
            "{name}'s fid is gone"
        );
        let there = c.walk_path(Fid(0), name).is_ok();
        assert_eq!(there, want.is_err(), "{name} on the export");
    }
    let root = c.walk_path(Fid(0), "").unwrap();
    assert_eq!(remove(&mut c, root), Err(Errno::EBUSY));
    assert_eq!(c.getattr(root).err(), Some(Errno::ENOENT));
}

/// Every operation the server asks of its backend, in order.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<OpKind>>>);

impl Hook for Recorder {
    fn before(&self, op: OpKind) -> impl Future<Output = FsResult<()>> + Send {
        self.0.lock().unwrap().push(op);
        std::future::ready(Ok(()))
    }
}

impl Recorder {
    fn take(&self) -> Vec<OpKind> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// The server itself refuses a Tread on a fid not open for reading, a Twrite on one not
/// open for writing and a Tlcreate in a file: the backend is never asked (a backend need
/// not repeat the checks; MemFs's and the host's would answer the same errors, which would
/// hide a server that left them out).
#[test]
fn open_modes_and_directories_are_checked_before_the_backend_is_asked() {
    let calls = Recorder::default();
    let fs = Arc::new(HookedFs::new(MemFs::new(), calls.clone()));
    let mut c = Client::new(InProcess::new(fs, Config::default()));
    c.version(8192);
    c.attach(Fid(0), "").unwrap();
    let w = c.walk_path(Fid(0), "").unwrap();
    c.lcreate(w, "f", OpenFlags::RDWR, 0o644).unwrap();
    assert_eq!(c.write(w, 0, b"data"), Ok(4));
    c.clunk(w).unwrap();
    let ro = c.walk_path(Fid(0), "f").unwrap();
    c.lopen(ro, OpenFlags::RDONLY).unwrap();
    let wo = c.walk_path(Fid(0), "f").unwrap();
    c.lopen(wo, OpenFlags::WRONLY).unwrap();
    let file = c.walk_path(Fid(0), "f").unwrap();
    calls.take();

    assert_eq!(c.write(ro, 0, b"x"), Err(Errno::EBADF));
    assert_eq!(c.read(wo, 0, 16), Err(Errno::EBADF));
    assert_eq!(
        c.lcreate(file, "g", OpenFlags::RDWR, 0o644),
        Err(Errno::ENOTDIR)
    );
    assert_eq!(
        calls.take(),
        vec![],
        "no refused request reached the backend"
    );

    // The recorder does see what reaches the backend.
    assert_eq!(c.read(ro, 0, 16), Ok(b"data".to_vec()));
    assert_eq!(c.write(wo, 4, b"!"), Ok(1));
    assert_eq!(calls.take(), vec![OpKind::Read, OpKind::Write]);
}
