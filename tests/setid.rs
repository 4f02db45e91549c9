//! A write by a user without `CAP_FSETID` (any uid but 0) drops the file's set-id bits, as
//! Linux's `file_remove_privs` does: `S_ISUID` always, `S_ISGID` only with group-execute
//! (without it, set-group-ID marks mandatory locking and stays). A guest mounted with
//! `cache=none` leaves this to the server. Checked on MemFs and on HostFs in every security
//! model, through the protocol, and on the host file where the model puts the mode there.

mod client;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use client::{Client, InProcess, Link};
use co9p::fs::host::{HostOptions, SecurityModel};
use co9p::fs::{Filesystem, HostFs, MemFs};
use co9p::protocol::*;
use co9p::server::Config;

const USER: u32 = 1000;

/// A session attached at fid 0 as root and at fid 1 as [`USER`].
fn session<F: Filesystem>(fs: &Arc<F>) -> Client<InProcess<F>> {
    let mut c = Client::new(InProcess::new(fs.clone(), Config::default()));
    c.version(65536);
    c.attach(Fid(0), "").unwrap();
    c.call(Tmessage::Attach {
        fid: Fid(1),
        afid: Fid::NOFID,
        uname: "user".into(),
        aname: "".into(),
        n_uname: USER,
    })
    .unwrap();
    c
}

fn chmod<L: Link>(c: &mut Client<L>, path: &str, mode: u32) {
    let f = c.walk_path(Fid(0), path).unwrap();
    c.call(Tmessage::Setattr {
        fid: f,
        attr: SetAttr {
            valid: SetattrMask::MODE,
            mode,
            ..SetAttr::default()
        },
    })
    .unwrap();
    c.clunk(f).unwrap();
}

fn mode<L: Link>(c: &mut Client<L>, path: &str) -> u32 {
    c.stat(path).unwrap().mode & 0o7777
}

/// Writes one byte to `path` through a fid walked from `root` (whose attach uid writes).
fn write_as<L: Link>(c: &mut Client<L>, root: Fid, path: &str) {
    let f = c.walk_path(root, path).unwrap();
    c.lopen(f, OpenFlags::WRONLY).unwrap();
    assert_eq!(c.write(f, 0, b"x").unwrap(), 1);
    c.clunk(f).unwrap();
}

/// Creates `name` as root.
fn create<L: Link>(c: &mut Client<L>, name: &str) {
    let f = c.fresh_fid();
    c.walk(Fid(0), f, &[]).unwrap();
    c.lcreate(f, name, OpenFlags::RDWR, 0o644).unwrap();
    c.clunk(f).unwrap();
}

/// (mode before, mode after a write by USER)
const CASES: [(u32, u32); 5] = [
    (0o4755, 0o0755),
    (0o2755, 0o0755),
    (0o6755, 0o0755),
    // set-group-ID without group-execute: mandatory locking, kept.
    (0o2745, 0o2745),
    (0o0755, 0o0755),
];

/// Runs the cases on `fs`; `host` is where the guest mode lands on the host, if it does.
fn check<F: Filesystem>(fs: Arc<F>, host: Option<PathBuf>) {
    let mut c = session(&fs);
    for (i, (before, after)) in CASES.into_iter().enumerate() {
        let name = format!("f{i}");
        create(&mut c, &name);
        chmod(&mut c, &name, before);
        assert_eq!(mode(&mut c, &name), before);
        // Root writes: the bits stay.
        write_as(&mut c, Fid(0), &name);
        assert_eq!(mode(&mut c, &name), before, "{before:o}: a write by root");
        // Another user writes: they go.
        write_as(&mut c, Fid(1), &name);
        assert_eq!(
            mode(&mut c, &name),
            after,
            "{before:o}: a write by uid {USER}"
        );
        if let Some(dir) = &host {
            let m = std::fs::metadata(dir.join(&name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(m & 0o7777, after, "{before:o}: the host file's mode");
        }
    }
    // A file the user made set-id itself, written through the fid that created it.
    let f = c.fresh_fid();
    c.walk(Fid(1), f, &[]).unwrap();
    c.lcreate(f, "mine", OpenFlags::RDWR, 0o644).unwrap();
    chmod(&mut c, "mine", 0o4755);
    assert_eq!(c.write(f, 0, b"x").unwrap(), 1);
    c.clunk(f).unwrap();
    assert_eq!(
        mode(&mut c, "mine"),
        0o755,
        "a write through Tlcreate's fid"
    );
}

#[test]
fn a_write_by_another_user_drops_set_id_bits_on_memfs() {
    check(Arc::new(MemFs::new()), None);
}

#[test]
fn a_write_by_another_user_drops_set_id_bits_on_hostfs_in_every_model() {
    for model in [
        SecurityModel::None,
        SecurityModel::Passthrough,
        SecurityModel::MappedXattr,
    ] {
        let dir = std::env::temp_dir().join(format!("co9p-setid-{}-{model:?}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let opts = HostOptions {
            security_model: model,
            ..HostOptions::default()
        };
        let fs = match HostFs::new(&dir, opts) {
            Ok(fs) => Arc::new(fs),
            Err(e) if model == SecurityModel::MappedXattr => {
                println!("SKIPPED: mapped-xattr on {}: {e}", dir.display());
                continue;
            }
            Err(e) => panic!("{e}"),
        };
        // Under mapped-xattr the guest's mode is stored in an xattr, not on the host file.
        let host = (model != SecurityModel::MappedXattr).then(|| dir.clone());
        check(fs, host);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// A file made by a user with set-id bits keeps them: HostFs gives a new file its owner
/// with a chown, which on Linux drops set-id bits even when root does it, so the mode is
/// set again after it. A directory made in a set-group-ID directory gets exactly the mode
/// asked for (as QEMU; a Linux client asks for the bit itself), not one that depends on
/// the server's umask. Both found by the simulator over HostFs (`co9p-sim run --fs host`).
#[test]
fn files_made_by_another_user_keep_the_mode_asked_for_on_hostfs() {
    for model in [
        SecurityModel::None,
        SecurityModel::Passthrough,
        SecurityModel::MappedXattr,
    ] {
        let dir =
            std::env::temp_dir().join(format!("co9p-mkmode-{}-{model:?}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let opts = HostOptions {
            security_model: model,
            ..HostOptions::default()
        };
        let fs = match HostFs::new(&dir, opts) {
            Ok(fs) => Arc::new(fs),
            Err(e) if model == SecurityModel::MappedXattr => {
                println!("SKIPPED: mapped-xattr on {}: {e}", dir.display());
                continue;
            }
            Err(e) => panic!("{e}"),
        };
        let mut c = session(&fs);
        for (i, m) in [0o4755, 0o2755, 0o6711].into_iter().enumerate() {
            let f = c.fresh_fid();
            c.walk(Fid(1), f, &[]).unwrap();
            let name = format!("made{i}");
            c.lcreate(f, &name, OpenFlags::RDWR, m).unwrap();
            c.clunk(f).unwrap();
            assert_eq!(
                mode(&mut c, &name),
                m,
                "{model:?}: a file made {m:o} by uid {USER}"
            );
        }
        c.mkdir(Fid(0), "sg", 0o2775).unwrap();
        let sg = c.walk_path(Fid(0), "sg").unwrap();
        for (name, m) in [("plain", 0o755), ("asked", 0o2755)] {
            c.mkdir(sg, name, m).unwrap();
            let path = format!("sg/{name}");
            assert_eq!(mode(&mut c, &path), m, "{model:?}: {path} made {m:o}");
        }
        c.clunk(sg).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
