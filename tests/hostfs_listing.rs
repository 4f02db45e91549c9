//! HostFs keeps whole directory listings between opens (`src/fs/host/listing.rs`): a kept
//! listing is exactly what the kernel would give, and any change to the directory, by the
//! server or by a program on the host, drops it before the next readdir looks.
//!
//! The sandboxes live under the temp directory; each test first checks that it is on a
//! filesystem where listings are kept (else it says so and skips).

mod hostfs_common;

use std::collections::BTreeSet;

use co9p::fs::host::{HostFs, HostNode, HostOptions, SecurityModel};
use co9p::fs::{DirEntry, Filesystem};
use co9p::protocol::OpenFlags;
use hostfs_common::*;

/// Every entry of `dir`, read through one open in batches of `batch`.
fn list(fs: &HostFs, dir: &HostNode, batch: usize) -> Vec<DirEntry> {
    let d = now(fs.open(dir, OpenFlags::RDONLY | OpenFlags::DIRECTORY)).unwrap();
    let mut all = Vec::new();
    let mut cookie = 0;
    loop {
        let got = now(fs.readdir(&d, cookie, batch)).unwrap();
        let Some(last) = got.last() else { break };
        cookie = last.next;
        all.extend(got);
    }
    all
}

fn names(l: &[DirEntry]) -> BTreeSet<String> {
    l.iter()
        .map(|e| String::from_utf8(e.name.clone()).unwrap())
        .collect()
}

fn uncached(sb: &Sandbox, model: SecurityModel) -> HostFs {
    HostFs::new(
        &sb.export,
        HostOptions {
            security_model: model,
            no_listing_cache: true,
            ..HostOptions::default()
        },
    )
    .unwrap()
}

/// A sandbox whose export keeps listings, or `None` (with the reason printed).
fn sandbox(tag: &str) -> Option<Sandbox> {
    let sb = Sandbox::new(tag);
    let fs = sb.fs(SecurityModel::None);
    let (r, _) = root(&fs);
    list(&fs, &r, 100);
    if fs.kept_listings() == 1 {
        Some(sb)
    } else {
        eprintln!(
            "SKIP: {} keeps no listings (not a local filesystem, or no inotify)",
            sb.base.display()
        );
        None
    }
}

#[test]
fn a_kept_listing_is_what_the_kernel_gives() {
    let Some(sb) = sandbox("same") else { return };
    for i in 0..200 {
        std::fs::write(sb.path(&format!("f{i:03}")), b"x").unwrap();
    }
    std::fs::create_dir_all(sb.path("sub/deeper")).unwrap();
    std::os::unix::fs::symlink("f001", sb.path("link")).unwrap();
    for model in [SecurityModel::None, SecurityModel::MappedXattr] {
        let fs = sb.fs(model);
        let plain = uncached(&sb, model);
        for dir in ["", "sub"] {
            let (d, _) = if dir.is_empty() {
                root(&fs)
            } else {
                walk(&fs, dir)
            };
            let (pd, _) = if dir.is_empty() {
                root(&plain)
            } else {
                walk(&plain, dir)
            };
            let first = list(&fs, &d, 7);
            let kept = fs.kept_listings();
            assert!(kept >= 1, "{model:?} {dir:?}: the listing is kept");
            let again = list(&fs, &d, 13);
            assert_eq!(fs.kept_listings(), kept, "served from the kept copy");
            let kernel = list(&plain, &pd, 5);
            assert_eq!(plain.kept_listings(), 0, "no_listing_cache keeps nothing");
            assert_eq!(first, kernel, "{model:?} {dir:?}: the first reading");
            assert_eq!(again, kernel, "{model:?} {dir:?}: served from the copy");
        }
    }
}

#[test]
fn host_changes_drop_the_listing() {
    let Some(sb) = sandbox("host") else { return };
    std::fs::create_dir(sb.path("d")).unwrap();
    std::fs::create_dir(sb.path("other")).unwrap();
    for i in 0..20 {
        std::fs::write(sb.path(&format!("d/f{i}")), b"").unwrap();
    }
    std::fs::write(sb.path("other/incoming"), b"").unwrap();
    let fs = sb.fs(SecurityModel::None);
    let (d, _) = walk(&fs, "d");
    let mut expect = names(&list(&fs, &d, 1000));
    assert_eq!(expect.len(), 22);
    // Each change, made by the host between two listings, is seen by the second.
    type Change = (
        &'static str,
        fn(&Sandbox),
        &'static [&'static str],
        &'static [&'static str],
    );
    let changes: [Change; 6] = [
        (
            "create",
            |s| std::fs::write(s.path("d/new"), b"").unwrap(),
            &["new"],
            &[],
        ),
        (
            "unlink",
            |s| std::fs::remove_file(s.path("d/f3")).unwrap(),
            &[],
            &["f3"],
        ),
        (
            "mkdir",
            |s| std::fs::create_dir(s.path("d/sub")).unwrap(),
            &["sub"],
            &[],
        ),
        (
            "rename within",
            |s| std::fs::rename(s.path("d/f4"), s.path("d/g4")).unwrap(),
            &["g4"],
            &["f4"],
        ),
        (
            "moved in",
            |s| std::fs::rename(s.path("other/incoming"), s.path("d/incoming")).unwrap(),
            &["incoming"],
            &[],
        ),
        (
            "moved out",
            |s| std::fs::rename(s.path("d/f5"), s.path("other/f5")).unwrap(),
            &[],
            &["f5"],
        ),
    ];
    for (what, change, added, removed) in changes {
        assert_eq!(names(&list(&fs, &d, 1000)), expect, "before {what}");
        assert_eq!(fs.kept_listings(), 1, "before {what}: kept");
        change(&sb);
        expect.extend(added.iter().map(|s| s.to_string()));
        for r in removed {
            expect.remove(*r);
        }
        assert_eq!(names(&list(&fs, &d, 1000)), expect, "after {what}");
    }
    // A hard link made on the host is a new name too.
    list(&fs, &d, 1000);
    std::fs::hard_link(sb.path("d/f6"), sb.path("d/f6-link")).unwrap();
    expect.insert("f6-link".into());
    assert_eq!(names(&list(&fs, &d, 1000)), expect, "after link");
}

#[test]
fn server_changes_drop_the_listing() {
    let Some(sb) = sandbox("server") else { return };
    std::fs::create_dir(sb.path("d")).unwrap();
    std::fs::write(sb.path("d/a"), b"").unwrap();
    let fs = sb.fs(SecurityModel::None);
    let (d, _) = walk(&fs, "d");
    let (r, _) = root(&fs);
    assert_eq!(names(&list(&fs, &d, 100)), names_of(&[".", "..", "a"]));
    now(fs.create(&d, &name("b"), OpenFlags::WRONLY, 0o644, ROOT)).unwrap();
    assert_eq!(names(&list(&fs, &d, 100)), names_of(&[".", "..", "a", "b"]));
    now(fs.mkdir(&d, &name("c"), 0o755, ROOT)).unwrap();
    assert_eq!(
        names(&list(&fs, &d, 100)),
        names_of(&[".", "..", "a", "b", "c"])
    );
    now(fs.rename(&d, &name("a"), &r, &name("a"))).unwrap();
    assert_eq!(names(&list(&fs, &d, 100)), names_of(&[".", "..", "b", "c"]));
    now(fs.unlink(&d, &name("b"), false)).unwrap();
    assert_eq!(names(&list(&fs, &d, 100)), names_of(&[".", "..", "c"]));
    now(fs.symlink(&d, &name("l"), b"c", ROOT)).unwrap();
    assert_eq!(names(&list(&fs, &d, 100)), names_of(&[".", "..", "c", "l"]));
}

fn names_of(n: &[&str]) -> BTreeSet<String> {
    n.iter().map(|s| s.to_string()).collect()
}

/// A directory moved elsewhere has another `..`: its kept listing goes.
#[test]
fn a_moved_directory_lists_its_new_parent() {
    let Some(sb) = sandbox("moved") else { return };
    std::fs::create_dir_all(sb.path("p1/d")).unwrap();
    std::fs::create_dir(sb.path("p2")).unwrap();
    let fs = sb.fs(SecurityModel::None);
    let (d, _) = walk(&fs, "p1/d");
    let (_, p1) = walk(&fs, "p1");
    let (_, p2) = walk(&fs, "p2");
    let dotdot = |l: Vec<DirEntry>| l.into_iter().find(|e| e.name == b"..").unwrap().qid.path;
    assert_eq!(dotdot(list(&fs, &d, 100)), p1.path);
    assert_eq!(dotdot(list(&fs, &d, 100)), p1.path, "from the kept copy");
    std::fs::rename(sb.path("p1/d"), sb.path("p2/d")).unwrap();
    assert_eq!(dotdot(list(&fs, &d, 100)), p2.path);
}

/// A listing begun from the kept copy goes on from the kernel once the copy is dropped:
/// the cookies are the kernel's either way, so nothing is listed twice and every entry
/// that stayed is listed.
#[test]
fn a_listing_goes_on_across_a_change() {
    let Some(sb) = sandbox("across") else { return };
    for i in 0..100 {
        std::fs::write(sb.path(&format!("f{i:03}")), b"").unwrap();
    }
    let fs = sb.fs(SecurityModel::None);
    let (r, _) = root(&fs);
    let all = list(&fs, &r, 1000);
    assert_eq!(all.len(), 102);
    let d = now(fs.open(&r, OpenFlags::RDONLY | OpenFlags::DIRECTORY)).unwrap();
    let head = now(fs.readdir(&d, 0, 30)).unwrap();
    assert_eq!(head, all[..30], "the first batch, from the kept copy");
    // Remove one entry already listed and one ahead; add one.
    let behind = String::from_utf8(all[10].name.clone()).unwrap();
    let ahead = String::from_utf8(all[60].name.clone()).unwrap();
    for n in [&behind, &ahead] {
        std::fs::remove_file(sb.path(n)).unwrap();
    }
    std::fs::write(sb.path("late"), b"").unwrap();
    let mut seen: Vec<String> = head
        .iter()
        .map(|e| String::from_utf8(e.name.clone()).unwrap())
        .collect();
    let mut cookie = head.last().unwrap().next;
    loop {
        let got = now(fs.readdir(&d, cookie, 30)).unwrap();
        let Some(last) = got.last() else { break };
        cookie = last.next;
        seen.extend(
            got.iter()
                .map(|e| String::from_utf8(e.name.clone()).unwrap()),
        );
    }
    let unique: BTreeSet<_> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "nothing listed twice");
    let mut stayed = names(&all);
    stayed.remove(&ahead);
    stayed.remove(&behind);
    assert!(
        unique.is_superset(&stayed),
        "every entry that stayed is listed"
    );
    assert!(!unique.contains(&ahead), "the one removed ahead is not");
}

/// Changes between two batches of one open are seen by a readdir from 0 on that open
/// (rewinddir), and a readdir from a cookie the copy does not hold goes to the kernel.
#[test]
fn a_rewind_sees_changes_and_unknown_cookies_go_to_the_kernel() {
    let Some(sb) = sandbox("rewind") else { return };
    for i in 0..10 {
        std::fs::write(sb.path(&format!("f{i}")), b"").unwrap();
    }
    let fs = sb.fs(SecurityModel::None);
    let (r, _) = root(&fs);
    let d = now(fs.open(&r, OpenFlags::RDONLY | OpenFlags::DIRECTORY)).unwrap();
    let first = now(fs.readdir(&d, 0, 100)).unwrap();
    assert_eq!(first.len(), 12);
    std::fs::write(sb.path("g"), b"").unwrap();
    let second = now(fs.readdir(&d, 0, 100)).unwrap();
    assert_eq!(
        second.len(),
        13,
        "rewound after a change: the new name is there"
    );
    // A cookie no entry ends at (past the end) gives what the kernel gives: nothing.
    let far = second.iter().map(|e| e.next).max().unwrap();
    assert_eq!(now(fs.readdir(&d, far, 100)).unwrap(), Vec::new());
}

/// A removed directory's own inotify event waits for its last descriptor (the open one
/// being read): its readdir is still the kernel's answer, `ENOENT`, not the kept copy.
#[test]
fn a_removed_directory_is_not_listed_from_the_copy() {
    let Some(sb) = sandbox("removed") else { return };
    std::fs::create_dir(sb.path("d")).unwrap();
    let fs = sb.fs(SecurityModel::None);
    let (d, _) = walk(&fs, "d");
    let open = now(fs.open(&d, OpenFlags::RDONLY | OpenFlags::DIRECTORY)).unwrap();
    assert_eq!(now(fs.readdir(&open, 0, 100)).unwrap().len(), 2);
    assert_eq!(now(fs.readdir(&open, 0, 100)).unwrap().len(), 2, "kept");
    std::fs::remove_dir(sb.path("d")).unwrap();
    assert_eq!(
        now(fs.readdir(&open, 0, 100)),
        Err(co9p::protocol::Errno::ENOENT)
    );
}
