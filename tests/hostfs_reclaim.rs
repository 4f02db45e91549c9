//! Reclaim of idle node descriptors (issue 5): with a tiny budget, a thousand files and
//! directories stay usable, reclaimed nodes reopen as the same inode or fail with
//! `ESTALE` (never another file, never outside the export: CVE-2021-20181), guest renames
//! keep the records true, and nodes that cannot be reopened by name are never reclaimed.
//! (Its own test binary; the tests take a lock so `/proc/self/fd` counts are their own.)

mod hostfs_common;

use std::os::unix::fs::symlink;
use std::sync::Mutex;

use co9p::fs::Filesystem;
use co9p::fs::host::{HostFile, HostFs, HostNode, HostOptions, SecurityModel};
use co9p::protocol::{Attr, Errno, OpenFlags, QidType};
use hostfs_common::*;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn tiny(sb: &Sandbox, max: usize) -> HostFs {
    HostFs::new(
        &sb.export,
        HostOptions {
            max_fds: Some(max),
            security_model: SecurityModel::None,
            ..HostOptions::default()
        },
    )
    .unwrap()
}

fn read_all(fs: &HostFs, n: &HostNode) -> Result<Vec<u8>, Errno> {
    let f: HostFile = now(fs.open(n, OpenFlags::RDONLY))?;
    let mut buf = vec![0u8; 4096];
    let len = now(fs.read(&f, 0, &mut buf))?;
    buf.truncate(len);
    Ok(buf)
}

/// What must not change when a node is reclaimed and reopened (times of access may).
fn stable(a: &Attr) -> (u64, u32, u32, u64, u64, u64, u64) {
    (
        a.qid.path,
        a.qid.version,
        a.mode,
        a.nlink,
        a.size,
        a.mtime.sec,
        a.mtime.nsec,
    )
}

/// `d{0..10}/e{0..10}/f{0..9}`: 10 + 100 + 900 = 1010 distinct files and directories.
fn tree(sb: &Sandbox) -> Vec<(String, bool)> {
    let mut all = Vec::new();
    for i in 0..10 {
        let d = format!("d{i}");
        std::fs::create_dir(sb.path(&d)).unwrap();
        all.push((d.clone(), true));
        for j in 0..10 {
            let e = format!("{d}/e{j}");
            std::fs::create_dir(sb.path(&e)).unwrap();
            all.push((e.clone(), true));
            for k in 0..9 {
                let f = format!("{e}/f{k}");
                std::fs::write(sb.path(&f), f.as_bytes()).unwrap();
                all.push((f, false));
            }
        }
    }
    all
}

#[test]
fn a_thousand_nodes_with_a_budget_of_16() {
    let _s = serial();
    let sb = Sandbox::new("reclaim-1000");
    let paths = tree(&sb);
    assert_eq!(paths.len(), 1010);
    let start = open_fds();
    let fs = tiny(&sb, 16);
    let mut kept = Vec::new();
    let mut peak = 0;
    for (p, is_dir) in &paths {
        let (n, q) = walk(&fs, p);
        assert_eq!(q.ty == QidType::DIR, *is_dir, "{p}");
        let a = now(fs.getattr(&n)).unwrap();
        if *is_dir {
            let d = now(fs.open(&n, OpenFlags::RDONLY)).unwrap();
            assert!(now(fs.readdir(&d, 0, 64)).unwrap().len() >= 2);
        } else {
            assert_eq!(read_all(&fs, &n).unwrap(), p.as_bytes(), "{p}");
        }
        assert!(fs.fds_in_use() <= 16);
        peak = peak.max(open_fds());
        kept.push((n, a, p.clone(), *is_dir));
    }
    assert!(
        peak <= start + 16 + 1,
        "process fds bounded: {peak} from {start}"
    );
    assert!(fs.fds_reclaimed() > 900, "{} reclaimed", fs.fds_reclaimed());
    let held = kept.iter().filter(|(n, ..)| n.holds_fd()).count();
    assert!(held < 16, "{held} nodes hold descriptors");
    // Every node again, reclaimed or not, in another order: the same inode, same content.
    for (n, a, p, is_dir) in kept.iter().rev() {
        let again = now(fs.getattr(n)).unwrap();
        assert_eq!(stable(&again), stable(a), "{p}");
        if !*is_dir {
            assert_eq!(read_all(&fs, n).unwrap(), p.as_bytes(), "{p}");
        }
        assert!(open_fds() <= start + 16 + 1);
    }
    // Looking a path up again gives the very node kept (one node per inode).
    let (n, _) = walk(&fs, "d3/e4/f5");
    let same = kept.iter().find(|(_, _, p, _)| p == "d3/e4/f5").unwrap();
    assert_eq!(format!("{n:?}"), format!("{:?}", same.0));
    drop((kept, n));
    drop(fs);
    assert_eq!(open_fds(), start, "every descriptor closed");
}

#[test]
fn a_file_replaced_on_the_host_while_reclaimed_is_stale() {
    let _s = serial();
    let sb = Sandbox::new("reclaim-replaced");
    std::fs::create_dir(sb.path("a")).unwrap();
    std::fs::write(sb.path("a/f"), b"mine").unwrap();
    std::fs::write(sb.path("a/g"), b"another file").unwrap();
    let fs = tiny(&sb, 16);
    let (f, _) = walk(&fs, "a/f");
    let before = now(fs.getattr(&f)).unwrap();
    assert!(fs.reclaim_idle() >= 2);
    assert!(!f.holds_fd());
    // While it is reclaimed, the host renames another file over it.
    std::fs::rename(sb.path("a/g"), sb.path("a/f")).unwrap();
    assert_eq!(now(fs.getattr(&f)).err(), Some(Errno::ESTALE));
    assert_eq!(read_all(&fs, &f).err(), Some(Errno::ESTALE));
    assert_eq!(
        now(fs.open(&f, OpenFlags::RDONLY)).err(),
        Some(Errno::ESTALE)
    );
    assert!(!f.holds_fd(), "the other file's descriptor was not kept");
    // A fresh lookup finds the file that is there now, as a different node.
    let (g, _) = walk(&fs, "a/f");
    assert_ne!(now(fs.getattr(&g)).unwrap().qid.path, before.qid.path);
    assert_eq!(read_all(&fs, &g).unwrap(), b"another file");

    // Deleted and made again under the same name: a new inode, so stale too.
    let (h, _) = walk(&fs, "a/f");
    fs.reclaim_idle();
    std::fs::remove_file(sb.path("a/f")).unwrap();
    std::fs::write(sb.path("a/f"), b"new").unwrap();
    assert_eq!(now(fs.getattr(&h)).err(), Some(Errno::ESTALE));
    // Moved away on the host: the recorded name is gone, stale (never followed).
    std::fs::write(sb.path("a/m"), b"moved").unwrap();
    let (m, _) = walk(&fs, "a/m");
    fs.reclaim_idle();
    std::fs::rename(sb.path("a/m"), sb.path("m2")).unwrap();
    assert_eq!(now(fs.getattr(&m)).err(), Some(Errno::ESTALE));
    // Put back: the same inode under the recorded name reopens.
    std::fs::rename(sb.path("m2"), sb.path("a/m")).unwrap();
    assert_eq!(read_all(&fs, &m).unwrap(), b"moved");
    sb.assert_untouched();
}

#[test]
fn a_directory_swapped_for_a_symlink_to_root_while_reclaimed() {
    let _s = serial();
    let sb = Sandbox::new("reclaim-swap");
    let secret_rel = secret_mirror(&sb);
    let fs = tiny(&sb, 16);
    let (a, _) = walk(&fs, "a");
    let (s, _) = walk(&fs, &format!("a/{}", secret_rel.to_str().unwrap()));
    assert_eq!(read_all(&fs, &s).unwrap(), b"inside");
    fs.reclaim_idle();
    assert!(!a.holds_fd() && !s.holds_fd());
    std::fs::rename(sb.path("a"), sb.path("a.real")).unwrap();
    symlink("/", sb.path("a")).unwrap();
    // Reopening `a` by its name finds a symlink, not the directory: stale, and so is
    // everything recorded beneath it.
    assert_eq!(now(fs.getattr(&a)).err(), Some(Errno::ESTALE));
    assert_eq!(read_all(&fs, &s).err(), Some(Errno::ESTALE));
    assert_eq!(
        now(fs.lookup(
            &a,
            &name(secret_rel.iter().next().unwrap().to_str().unwrap())
        ))
        .err(),
        Some(Errno::ESTALE)
    );
    // Swapped back, the same inodes reopen.
    std::fs::remove_file(sb.path("a")).unwrap();
    std::fs::rename(sb.path("a.real"), sb.path("a")).unwrap();
    assert_eq!(read_all(&fs, &s).unwrap(), b"inside");
    sb.assert_untouched();
}

/// A host thread swaps a directory with a symlink to `/` (`RENAME_EXCHANGE`) while nodes
/// beneath it are reclaimed and reopened over and over: every read is the file inside or
/// `ESTALE`, never the secret.
#[test]
fn reclaim_and_reopen_race_with_symlink_swap() {
    let _s = serial();
    let iters: usize = std::env::var("CO9P_RACE_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(20_000, |n: usize| n / 5);
    let sb = Sandbox::new("reclaim-race");
    let secret_rel = secret_mirror(&sb);
    symlink("/", sb.path("b")).unwrap();
    let fs = tiny(&sb, 16);
    // Nodes taken while `a` is the directory.
    let (a, _) = walk(&fs, "a");
    let (s, _) = walk(&fs, &format!("a/{}", secret_rel.to_str().unwrap()));

    let swapper = Swapper::start(sb.path("a"), sb.path("b"));
    let (mut inside, mut stale) = (0, 0);
    for _ in 0..iters {
        fs.reclaim_idle();
        match read_all(&fs, &s) {
            Ok(data) => {
                assert_eq!(data, b"inside", "read the host's secret");
                inside += 1;
            }
            Err(e) => {
                assert_eq!(e, Errno::ESTALE);
                stale += 1;
            }
        }
        match now(fs.getattr(&a)) {
            Ok(at) => assert_eq!(at.qid.ty, QidType::DIR),
            Err(e) => assert_eq!(e, Errno::ESTALE),
        }
    }
    let swaps = swapper.stop();
    eprintln!("reclaim race: {iters} rounds, {swaps} swaps, {inside} reads inside, {stale} stale");
    assert!(inside > 0 && stale > 0, "the race did not interleave");
    sb.assert_untouched();
}

#[test]
fn guest_renames_keep_reclaimed_nodes_reachable() {
    let _s = serial();
    let sb = Sandbox::new("reclaim-rename");
    std::fs::create_dir_all(sb.path("p/q")).unwrap();
    std::fs::write(sb.path("p/q/f"), b"f's content").unwrap();
    std::fs::write(sb.path("t"), b"target").unwrap();
    std::fs::write(sb.path("over"), b"over").unwrap();
    let fs = tiny(&sb, 16);
    let (r, _) = root(&fs);
    let (p, _) = walk(&fs, "p");
    let (q, _) = walk(&fs, "p/q");
    let (f, _) = walk(&fs, "p/q/f");
    let before = now(fs.getattr(&f)).unwrap();
    fs.reclaim_idle();
    assert!(!p.holds_fd() && !q.holds_fd() && !f.holds_fd());
    // The reclaimed node's parent is renamed through HostFs.
    now(fs.rename(&r, &name("p"), &r, &name("p2"))).unwrap();
    assert_eq!(stable(&now(fs.getattr(&f)).unwrap()), stable(&before));
    assert_eq!(read_all(&fs, &f).unwrap(), b"f's content");
    // Its directory moves to another parent, and then the file itself, all reclaimed.
    fs.reclaim_idle();
    now(fs.rename(&p, &name("q"), &r, &name("q2"))).unwrap();
    assert_eq!(read_all(&fs, &f).unwrap(), b"f's content");
    fs.reclaim_idle();
    now(fs.rename(&q, &name("f"), &p, &name("f2"))).unwrap();
    fs.reclaim_idle();
    assert_eq!(read_all(&fs, &f).unwrap(), b"f's content");
    assert!(sb.path("p2/f2").exists());
    // A reclaimed node renamed over loses its only name: it still works (pinned).
    let (t, _) = walk(&fs, "t");
    fs.reclaim_idle();
    assert!(!t.holds_fd());
    now(fs.rename(&r, &name("over"), &r, &name("t"))).unwrap();
    assert!(t.holds_fd());
    fs.reclaim_idle();
    assert!(t.holds_fd(), "an unlinked node is never reclaimed");
    assert_eq!(now(fs.getattr(&t)).unwrap().nlink, 0);
    assert_eq!(read_all(&fs, &t).unwrap(), b"target");
    sb.assert_untouched();
}

#[test]
fn unlinked_and_open_nodes_are_never_reclaimed() {
    let _s = serial();
    let sb = Sandbox::new("reclaim-unlinked");
    for f in ["u", "h", "l", "o"] {
        std::fs::write(sb.path(f), f.as_bytes()).unwrap();
    }
    std::fs::create_dir(sb.path("dd")).unwrap();
    std::fs::hard_link(sb.path("l"), sb.path("l2")).unwrap();
    let fs = tiny(&sb, 16);
    let (r, _) = root(&fs);
    // Unlinked by the guest while reclaimed: made to hold its descriptor first.
    let (u, _) = walk(&fs, "u");
    fs.reclaim_idle();
    assert!(!u.holds_fd());
    now(fs.unlink(&r, &name("u"), false)).unwrap();
    // Unlinked on the host while held: reclaim sees no link and keeps it.
    let (h, _) = walk(&fs, "h");
    std::fs::remove_file(sb.path("h")).unwrap();
    // A removed directory, likewise.
    let (dd, _) = walk(&fs, "dd");
    now(fs.unlink(&r, &name("dd"), true)).unwrap();
    // One of two hard links removed: the name it was reached by is gone, so it is kept.
    let (l, _) = walk(&fs, "l");
    now(fs.unlink(&r, &name("l"), false)).unwrap();
    // An open file keeps its node's descriptor.
    let (o, _) = walk(&fs, "o");
    let of = now(fs.open(&o, OpenFlags::RDONLY)).unwrap();
    for _ in 0..3 {
        fs.reclaim_idle();
        for (n, what) in [(&u, "u"), (&h, "h"), (&l, "l"), (&o, "o")] {
            assert!(n.holds_fd(), "{what} was reclaimed");
            assert_eq!(read_all(&fs, n).unwrap(), what.as_bytes());
        }
        assert!(dd.holds_fd());
        assert_eq!(now(fs.getattr(&dd)).unwrap().nlink, 0);
        assert_eq!(now(fs.getattr(&u)).unwrap().nlink, 0);
        assert_eq!(now(fs.getattr(&l)).unwrap().nlink, 1);
    }
    let mut buf = [0u8; 8];
    assert_eq!(now(fs.read(&of, 0, &mut buf)).unwrap(), 1);
    // Closed, the file's node is idle again.
    drop(of);
    fs.reclaim_idle();
    assert!(!o.holds_fd());
    assert_eq!(read_all(&fs, &o).unwrap(), b"o");
    sb.assert_untouched();
}

#[test]
fn open_files_are_never_reclaimed_and_fill_the_budget() {
    let _s = serial();
    let sb = Sandbox::new("reclaim-open");
    for i in 0..40 {
        std::fs::write(sb.path(&format!("f{i}")), b"x").unwrap();
    }
    let fs = tiny(&sb, 16);
    let mut nodes = Vec::new();
    for i in 0..40 {
        nodes.push(walk(&fs, &format!("f{i}")).0);
    }
    // Open files are never reclaimed: root + 7 files + their 7 nodes = 15 of 16.
    let files: Vec<_> = nodes[..7]
        .iter()
        .map(|n| now(fs.open(n, OpenFlags::RDONLY)).unwrap())
        .collect();
    assert_eq!(fs.fds_in_use(), 15);
    // Every other node still works, one descriptor at a time.
    for n in &nodes[7..] {
        now(fs.getattr(n)).unwrap();
        assert!(fs.fds_in_use() <= 16);
    }
    // An 8th open file needs its (reclaimed) node's descriptor and its own: 17 > 16.
    assert!(!nodes[7].holds_fd());
    assert_eq!(
        now(fs.open(&nodes[7], OpenFlags::RDONLY)).err(),
        Some(Errno::EMFILE)
    );
    assert!(fs.fds_in_use() <= 16);
    for (n, f) in nodes.iter().zip(&files) {
        assert!(n.holds_fd(), "the node of an open file is not reclaimed");
        let mut buf = [0u8; 4];
        assert_eq!(now(fs.read(f, 0, &mut buf)).unwrap(), 1);
    }
    // Closing files makes room again.
    drop(files);
    let f8 = now(fs.open(&nodes[7], OpenFlags::RDONLY)).unwrap();
    let mut buf = [0u8; 4];
    assert_eq!(now(fs.read(&f8, 0, &mut buf)).unwrap(), 1);
}

#[test]
fn threads_share_a_tiny_budget() {
    let _s = serial();
    let sb = Sandbox::new("reclaim-threads");
    let paths = tree(&sb);
    let fs = tiny(&sb, 32);
    std::thread::scope(|t| {
        for k in 0..2 {
            let (fs, paths) = (&fs, &paths);
            t.spawn(move || {
                let mut kept = Vec::new();
                for (p, is_dir) in paths.iter().skip(k).step_by(2) {
                    let (n, _) = walk(fs, p);
                    now(fs.getattr(&n)).unwrap();
                    if !is_dir {
                        assert_eq!(read_all(fs, &n).unwrap(), p.as_bytes());
                    }
                    kept.push(n);
                }
                for n in &kept {
                    now(fs.getattr(n)).unwrap();
                }
            });
        }
    });
    assert!(fs.fds_in_use() <= 32);
    assert!(fs.fds_reclaimed() > 0);
}

/// A node made by create borrows its open file's descriptor: through the node, the file
/// stays reachable while it is open whatever happens to its name (renamed or removed on
/// the host or through the server), and when the file closes while the node lives on,
/// the node makes its own descriptor of that same file.
#[test]
fn a_created_node_borrows_its_files_descriptor_and_outlives_it() {
    let _s = serial();
    let sb = Sandbox::new("lent");
    for model in [SecurityModel::None, SecurityModel::MappedXattr] {
        let fs = sb.fs(model);
        let (r, _) = root(&fs);
        let tag = format!("{model:?}");

        // Renamed on the host while open: the node is still the file.
        let (n, f, _) =
            now(fs.create(&r, &name(&format!("a{tag}")), OpenFlags::RDWR, 0o644, ROOT)).unwrap();
        now(fs.write(&f, 0, b"abc")).unwrap();
        std::fs::rename(sb.path(&format!("a{tag}")), sb.path(&format!("b{tag}"))).unwrap();
        assert_eq!(
            now(fs.getattr(&n)).unwrap().size,
            3,
            "{tag}: reached by the open file"
        );
        drop(f);
        assert_eq!(
            now(fs.getattr(&n)).unwrap().size,
            3,
            "{tag}: its own descriptor now"
        );
        drop(n);

        // Closed while the node lives on: the node keeps the file itself, even once its
        // name holds another file.
        let (n, f, _) =
            now(fs.create(&r, &name(&format!("c{tag}")), OpenFlags::RDWR, 0o644, ROOT)).unwrap();
        now(fs.write(&f, 0, b"c")).unwrap();
        drop(f);
        assert_eq!(
            now(fs.getattr(&n)).unwrap().size,
            1,
            "{tag}: its own descriptor"
        );
        let (m, g, _) =
            now(fs.create(&r, &name(&format!("d{tag}")), OpenFlags::RDWR, 0o644, ROOT)).unwrap();
        drop(g);
        std::fs::remove_file(sb.path(&format!("d{tag}"))).unwrap();
        std::fs::write(sb.path(&format!("d{tag}")), b"another").unwrap();
        assert_eq!(
            now(fs.getattr(&m)).unwrap().size,
            0,
            "{tag}: the created file, not the one now named d"
        );

        // Removed through the server while open, then closed: still the file through the
        // node (which made its own descriptor as the file closed).
        let (n2, f2, _) =
            now(fs.create(&r, &name(&format!("e{tag}")), OpenFlags::RDWR, 0o644, ROOT)).unwrap();
        now(fs.write(&f2, 0, b"ee")).unwrap();
        now(fs.unlink_node(&r, &name(&format!("e{tag}")), &n2, false)).unwrap();
        assert_eq!(
            now(fs.getattr(&n2)).unwrap().size,
            2,
            "{tag}: unlinked, still open"
        );
        drop(f2);
        assert_eq!(
            now(fs.getattr(&n2)).unwrap().size,
            2,
            "{tag}: unlinked and closed, still reachable through its node"
        );
        drop((n, n2));
    }
}
