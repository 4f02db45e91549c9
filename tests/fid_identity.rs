//! An operation through a fid acts on the file that fid refers to, never on whatever now
//! has its old name: Tremove and Trename after renames through the server (which move the
//! fids' records, as QEMU's `v9fs_fix_path` does), through another session, and on the host
//! (which the filesystem refuses with `ESTALE`). Each case runs on MemFs and on HostFs in
//! every security model.

mod client;

use std::path::PathBuf;
use std::sync::Arc;

use client::{Client, InProcess};
use co9p::fs::hooked::{Hook, HookedFs, OpKind};
use co9p::fs::host::{HostOptions, SecurityModel};
use co9p::fs::{Filesystem, HostFs, MemFs};
use co9p::protocol::*;
use co9p::server::Config;

/// A backend for one case: the filesystem, and the host directory behind it (HostFs).
struct Backend<F> {
    fs: Arc<F>,
    host: Option<PathBuf>,
}

impl<F> Drop for Backend<F> {
    fn drop(&mut self) {
        if let Some(dir) = &self.host {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn host(model: SecurityModel, case: &str) -> Backend<HostFs> {
    let dir = std::env::temp_dir().join(format!(
        "co9p-fid-identity-{}-{case}-{model:?}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let opts = HostOptions {
        security_model: model,
        ..HostOptions::default()
    };
    Backend {
        fs: Arc::new(HostFs::new(&dir, opts).unwrap()),
        host: Some(dir),
    }
}

fn mem() -> Backend<MemFs> {
    Backend {
        fs: Arc::new(MemFs::new()),
        host: None,
    }
}

const MODELS: [SecurityModel; 3] = [
    SecurityModel::None,
    SecurityModel::Passthrough,
    SecurityModel::MappedXattr,
];

/// Runs `case` on MemFs and on HostFs in each security model.
fn on_every_backend(name: &str, case: impl Fn(&dyn Fn() -> Session, Option<&PathBuf>)) {
    let b = mem();
    case(&|| session(&b.fs), None);
    for model in MODELS {
        let b = host(model, name);
        case(&|| session(&b.fs), b.host.as_ref());
    }
}

type Session = Client<Box<dyn client::Link>>;

/// A new session on `fs`, attached at fid 0.
fn session<F: Filesystem>(fs: &Arc<F>) -> Session {
    let mut c: Session = Client::new(Box::new(InProcess::new(fs.clone(), Config::default())));
    c.version(65536);
    c.attach(Fid(0), "").unwrap();
    c
}

fn create(c: &mut Session, dir: Fid, name: &str, content: &[u8]) {
    let f = c.fresh_fid();
    c.walk(dir, f, &[]).unwrap();
    c.lcreate(f, name, OpenFlags::RDWR, 0o644).unwrap();
    c.write(f, 0, content).unwrap();
    c.clunk(f).unwrap();
}

fn content(c: &mut Session, path: &str) -> Result<Vec<u8>, Errno> {
    let f = c.walk_path(Fid(0), path)?;
    c.lopen(f, OpenFlags::RDONLY).unwrap();
    let data = c.read(f, 0, 4096).unwrap();
    c.clunk(f).unwrap();
    Ok(data)
}

fn renameat(c: &mut Session, from: &str, to: &str) -> Result<(), Errno> {
    c.call(Tmessage::Renameat {
        olddirfid: Fid(0),
        oldname: from.into(),
        newdirfid: Fid(0),
        newname: to.into(),
    })
    .map(drop)
}

fn rename(c: &mut Session, fid: Fid, dfid: Fid, name: &str) -> Result<(), Errno> {
    c.call(Tmessage::Rename {
        fid,
        dfid,
        name: name.into(),
    })
    .map(drop)
}

fn remove(c: &mut Session, fid: Fid) -> Result<(), Errno> {
    c.call(Tmessage::Remove { fid }).map(drop)
}

#[test]
fn tremove_after_a_renameat_removes_the_fids_file_not_the_new_one_with_its_old_name() {
    on_every_backend("renameat", |open, _| {
        let mut c = open();
        create(&mut c, Fid(0), "a", b"old");
        let fid1 = c.walk_path(Fid(0), "a").unwrap();
        renameat(&mut c, "a", "b").unwrap();
        create(&mut c, Fid(0), "a", b"new");
        remove(&mut c, fid1).unwrap();
        assert_eq!(
            content(&mut c, "b"),
            Err(Errno::ENOENT),
            "the fid's file is gone"
        );
        assert_eq!(content(&mut c, "a").unwrap(), b"new", "the new a stays");
        // The fid was clunked by Tremove.
        assert_eq!(c.getattr(fid1), Err(Errno::ENOENT));
    });
}

#[test]
fn tremove_after_a_trename_of_another_fid_removes_the_fids_file() {
    on_every_backend("trename", |open, _| {
        let mut c = open();
        create(&mut c, Fid(0), "a", b"old");
        let fid1 = c.walk_path(Fid(0), "a").unwrap();
        let fid2 = c.walk_path(Fid(0), "a").unwrap();
        rename(&mut c, fid2, Fid(0), "b").unwrap();
        create(&mut c, Fid(0), "a", b"new");
        remove(&mut c, fid1).unwrap();
        assert_eq!(content(&mut c, "b"), Err(Errno::ENOENT));
        assert_eq!(content(&mut c, "a").unwrap(), b"new");
        // fid2 named the same file, now removed: its own Tremove finds no entry.
        assert_eq!(remove(&mut c, fid2), Err(Errno::ENOENT));
        assert_eq!(content(&mut c, "a").unwrap(), b"new");
    });
}

#[test]
fn trename_through_a_fid_moves_the_fids_file_after_its_name_was_taken() {
    on_every_backend("trename-stale", |open, _| {
        let mut c = open();
        create(&mut c, Fid(0), "a", b"old");
        let fid1 = c.walk_path(Fid(0), "a").unwrap();
        renameat(&mut c, "a", "b").unwrap();
        create(&mut c, Fid(0), "a", b"new");
        rename(&mut c, fid1, Fid(0), "c").unwrap();
        assert_eq!(content(&mut c, "c").unwrap(), b"old");
        assert_eq!(content(&mut c, "a").unwrap(), b"new");
        assert_eq!(content(&mut c, "b"), Err(Errno::ENOENT));
        // And the fid followed its file to `c`.
        remove(&mut c, fid1).unwrap();
        assert_eq!(content(&mut c, "c"), Err(Errno::ENOENT));
        assert_eq!(content(&mut c, "a").unwrap(), b"new");
    });
}

#[test]
fn fids_inside_a_renamed_directory_and_the_directory_itself_follow_it() {
    on_every_backend("dir", |open, _| {
        let mut c = open();
        c.mkdir(Fid(0), "d", 0o755).unwrap();
        let d = c.walk_path(Fid(0), "d").unwrap();
        create(&mut c, d, "x", b"x");
        let x = c.walk_path(Fid(0), "d/x").unwrap();
        renameat(&mut c, "d", "e").unwrap();
        c.mkdir(Fid(0), "d", 0o755).unwrap();
        create(&mut c, d, "y", b"y");
        remove(&mut c, x).unwrap();
        assert_eq!(content(&mut c, "e/x"), Err(Errno::ENOENT));
        assert_eq!(content(&mut c, "e/y").unwrap(), b"y");
        // The directory fid names `e` now, not the new empty `d`: `e` is not empty.
        let d2 = c.walk_path(Fid(0), "e").unwrap();
        assert_eq!(remove(&mut c, d), Err(Errno::ENOTEMPTY));
        assert!(c.stat("d").is_ok(), "the new d stays");
        c.unlinkat(d2, "y", 0).unwrap();
        remove(&mut c, d2).unwrap();
        assert_eq!(c.stat("e").err(), Some(Errno::ENOENT));
        assert!(c.stat("d").is_ok(), "the new d stays");
    });
}

#[test]
fn a_rename_by_another_session_makes_tremove_fail_not_remove_another_file() {
    on_every_backend("other-session", |open, _| {
        let mut c1 = open();
        let mut c2 = open();
        create(&mut c1, Fid(0), "a", b"old");
        let fid1 = c1.walk_path(Fid(0), "a").unwrap();
        renameat(&mut c2, "a", "b").unwrap();
        create(&mut c2, Fid(0), "a", b"new");
        assert_eq!(remove(&mut c1, fid1), Err(Errno::ESTALE));
        assert_eq!(content(&mut c1, "a").unwrap(), b"new");
        assert_eq!(content(&mut c1, "b").unwrap(), b"old");
        // Renamed away with nothing in its place: no entry.
        let fid3 = c1.walk_path(Fid(0), "b").unwrap();
        renameat(&mut c2, "b", "c").unwrap();
        assert_eq!(remove(&mut c1, fid3), Err(Errno::ENOENT));
        assert_eq!(content(&mut c1, "c").unwrap(), b"old");
        assert_eq!(content(&mut c1, "a").unwrap(), b"new");
    });
}

#[test]
fn a_fid_whose_file_was_replaced_by_a_rename_cannot_remove_the_replacement() {
    on_every_backend("replaced", |open, _| {
        let mut c = open();
        create(&mut c, Fid(0), "a", b"a");
        create(&mut c, Fid(0), "b", b"b");
        let fb = c.walk_path(Fid(0), "b").unwrap();
        renameat(&mut c, "a", "b").unwrap();
        assert_eq!(remove(&mut c, fb), Err(Errno::ESTALE));
        assert_eq!(content(&mut c, "b").unwrap(), b"a");
    });
}

#[test]
fn a_name_changed_on_the_host_is_refused_not_followed() {
    for model in MODELS {
        let b = host(model, "host-change");
        let dir = b.host.clone().unwrap();
        let mut c = session(&b.fs);
        create(&mut c, Fid(0), "a", b"old");
        let fid1 = c.walk_path(Fid(0), "a").unwrap();
        let fid2 = c.walk_path(Fid(0), "a").unwrap();
        std::fs::rename(dir.join("a"), dir.join("b")).unwrap();
        std::fs::write(dir.join("a"), b"host").unwrap();
        assert_eq!(remove(&mut c, fid1), Err(Errno::ESTALE), "{model:?}");
        assert_eq!(rename(&mut c, fid2, Fid(0), "c"), Err(Errno::ESTALE));
        assert_eq!(std::fs::read(dir.join("a")).unwrap(), b"host");
        assert_eq!(std::fs::read(dir.join("b")).unwrap(), b"old");
        assert!(!dir.join("c").exists());
    }
}

/// Holds back the result of every lookup while closed: the lookup has happened, its answer
/// has not reached the server yet.
#[derive(Clone, Default)]
struct Gate(Arc<std::sync::Mutex<(bool, Vec<std::task::Waker>)>>);

impl Gate {
    fn close(&self) {
        self.0.lock().unwrap().0 = true;
    }
    fn open(&self) {
        let mut g = self.0.lock().unwrap();
        g.0 = false;
        g.1.drain(..).for_each(|w| w.wake());
    }
}

impl Hook for Gate {
    async fn before(&self, _: OpKind) -> co9p::fs::FsResult<()> {
        Ok(())
    }
    async fn deliver(&self, op: OpKind) {
        if op != OpKind::Lookup {
            return;
        }
        std::future::poll_fn(|cx| {
            let mut g = self.0.lock().unwrap();
            if g.0 {
                g.1.push(cx.waker().clone());
                std::task::Poll::Pending
            } else {
                std::task::Poll::Ready(())
            }
        })
        .await
    }
}

/// A Twalk has looked `a` up, and before it records newfid's entry a Trenameat moves `a`
/// to `b`: newfid must still name the file (now `b`), as if the rename came after the walk.
fn walk_raced_by_a_rename<F: Filesystem>(inner: F) {
    let gate = Gate::default();
    let fs = Arc::new(HookedFs::new(inner, gate.clone()));
    let mut c = Client::new(InProcess::new(fs, Config::default()));
    c.version(65536);
    c.attach(Fid(0), "").unwrap();
    let f = c.fresh_fid();
    c.walk(Fid(0), f, &[]).unwrap();
    c.lcreate(f, "a", OpenFlags::RDWR, 0o644).unwrap();
    c.write(f, 0, b"old").unwrap();
    c.clunk(f).unwrap();

    gate.close();
    let fid1 = c.fresh_fid();
    let walk = c.send(Tmessage::Walk {
        fid: Fid(0),
        newfid: fid1,
        wnames: vec!["a".into()],
    });
    assert!(
        c.link.out.0.lock().unwrap().is_empty(),
        "the walk waits for its lookup's answer"
    );
    let ren = c.send(Tmessage::Renameat {
        olddirfid: Fid(0),
        oldname: "a".into(),
        newdirfid: Fid(0),
        newname: "b".into(),
    });
    gate.open();
    assert!(
        matches!(c.reply(walk), Some(Rmessage::Walk { wqids }) if wqids.len() == 1),
        "the walk reached a"
    );
    assert_eq!(c.reply(ren), Some(Rmessage::Renameat {}));

    let f = c.fresh_fid();
    c.walk(Fid(0), f, &[]).unwrap();
    c.lcreate(f, "a", OpenFlags::RDWR, 0o644).unwrap();
    c.write(f, 0, b"new").unwrap();
    c.clunk(f).unwrap();
    assert_eq!(
        c.call(Tmessage::Remove { fid: fid1 }).map(drop),
        Ok(()),
        "Tremove acts on the walked file, now named b"
    );
    assert_eq!(c.walk_path(Fid(0), "b"), Err(Errno::ENOENT), "b is gone");
    let a = c.walk_path(Fid(0), "a").unwrap();
    c.lopen(a, OpenFlags::RDONLY).unwrap();
    assert_eq!(c.read(a, 0, 16).unwrap(), b"new", "the new a stays");
}

/// Runs a gated case (which wraps the filesystem itself) on MemFs, then on a HostFs in each
/// security model: the two instances of one generic case.
fn on_mem_and_each_host_model(case: &str, mem: fn(MemFs), hostfs: fn(HostFs)) {
    mem(MemFs::new());
    for model in MODELS {
        // The Backend only lends its directory here: the gate needs the HostFs itself.
        let b = host(model, case);
        let opts = HostOptions {
            security_model: model,
            ..HostOptions::default()
        };
        hostfs(HostFs::new(b.host.as_ref().unwrap(), opts).unwrap());
    }
}

#[test]
fn a_rename_between_a_walks_lookup_and_its_new_fid_is_followed_by_the_fid() {
    on_mem_and_each_host_model("walk-race", walk_raced_by_a_rename, walk_raced_by_a_rename);
}

/// A Tclunk and a Tremove sent right behind a Twalk of their fid onto itself, while the
/// walk waits for its lookup: each waits for the walk, then ends the fid as the walk left
/// it (the clunk frees the number; the remove unlinks the walked-to file).
fn barrier_behind_a_walk_onto_its_own_fid<F: Filesystem>(inner: F) {
    let gate = Gate::default();
    let fs = Arc::new(HookedFs::new(inner, gate.clone()));
    let mut c = Client::new(InProcess::new(fs, Config::default()));
    c.version(65536);
    c.attach(Fid(0), "").unwrap();
    for name in ["a", "b"] {
        let f = c.fresh_fid();
        c.walk(Fid(0), f, &[]).unwrap();
        c.lcreate(f, name, OpenFlags::RDWR, 0o644).unwrap();
        c.clunk(f).unwrap();
    }

    for (last, name) in [("clunk", "a"), ("remove", "b")] {
        let f = c.fresh_fid();
        c.walk(Fid(0), f, &[]).unwrap();
        gate.close();
        let walk = c.send(Tmessage::Walk {
            fid: f,
            newfid: f,
            wnames: vec![name.into()],
        });
        let end = c.send(match last {
            "clunk" => Tmessage::Clunk { fid: f },
            _ => Tmessage::Remove { fid: f },
        });
        assert!(
            c.link.out.0.lock().unwrap().is_empty(),
            "the walk waits for its lookup, the {last} for the walk"
        );
        gate.open();
        assert!(
            matches!(c.reply(walk), Some(Rmessage::Walk { wqids }) if wqids.len() == 1),
            "the walk reached {name}"
        );
        match last {
            "clunk" => assert_eq!(c.reply(end), Some(Rmessage::Clunk {})),
            _ => assert_eq!(c.reply(end), Some(Rmessage::Remove {}), "removes {name}"),
        }
        assert_eq!(
            c.call(Tmessage::Getattr {
                fid: f,
                request_mask: GetattrMask::ALL,
            })
            .map(drop),
            Err(Errno::ENOENT),
            "after the {last}, the fid is gone"
        );
        c.walk(Fid(0), f, &[]).expect("its number is free again");
        c.clunk(f).unwrap();
    }
    assert!(c.walk_path(Fid(0), "a").is_ok(), "a clunk removes nothing");
    assert_eq!(
        c.walk_path(Fid(0), "b"),
        Err(Errno::ENOENT),
        "the remove unlinked the file the walk reached"
    );
}

#[test]
fn a_clunk_or_remove_behind_a_walk_onto_its_own_fid_ends_the_walked_fid() {
    on_mem_and_each_host_model(
        "walk-self",
        barrier_behind_a_walk_onto_its_own_fid,
        barrier_behind_a_walk_onto_its_own_fid,
    );
}
