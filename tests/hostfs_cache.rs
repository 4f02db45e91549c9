//! HostFs's lookup cache (`src/fs/host/cache.rs`): a name looked up again is answered from
//! the live node of its inode with one `statx`, never with a stale file, and a name
//! removed through the server takes its node out of the cache.

mod hostfs_common;

use co9p::fs::Filesystem;
use co9p::fs::host::{HostFs, HostOptions, SecurityModel};
use co9p::protocol::{Errno, OpenFlags};
use hostfs_common::*;

fn fs_with_cache(sb: &Sandbox, cache: usize) -> HostFs {
    HostFs::new(
        &sb.export,
        HostOptions {
            node_cache: Some(cache),
            ..HostOptions::default()
        },
    )
    .unwrap()
}

#[test]
fn a_name_looked_up_again_is_the_same_node_until_the_host_replaces_it() {
    let sb = Sandbox::new("cache-same");
    std::fs::write(sb.path("f"), b"one").unwrap();
    let fs = fs_with_cache(&sb, 8);
    let (r, _) = root(&fs);
    let (_, q1) = now(fs.lookup(&r, &name("f"))).unwrap();
    assert_eq!(fs.cached_nodes(), 1, "the node outlives its lookup");
    let (n2, q2) = now(fs.lookup(&r, &name("f"))).unwrap();
    assert_eq!(q1, q2);
    assert_eq!(fs.cached_nodes(), 1, "one entry per node");
    // The host replaces the file under the same name: the new inode is served, not the
    // cached one.
    std::fs::remove_file(sb.path("f")).unwrap();
    std::fs::write(sb.path("f"), b"two!").unwrap();
    let (n3, q3) = now(fs.lookup(&r, &name("f"))).unwrap();
    assert_ne!(q3.path, q1.path);
    let f = now(fs.open(&n3, OpenFlags::RDONLY)).unwrap();
    let mut buf = [0u8; 8];
    let k = now(fs.read(&f, 0, &mut buf)).unwrap();
    assert_eq!(&buf[..k], b"two!");
    // The old node still reads its own (unlinked) file.
    let f2 = now(fs.open(&n2, OpenFlags::RDONLY)).unwrap();
    let k = now(fs.read(&f2, 0, &mut buf)).unwrap();
    assert_eq!(&buf[..k], b"one");
    // A host rename: the old name is gone, the new one is the cached inode's.
    std::fs::rename(sb.path("f"), sb.path("g")).unwrap();
    assert_eq!(now(fs.lookup(&r, &name("f"))).err(), Some(Errno::ENOENT));
    let (_, qg) = now(fs.lookup(&r, &name("g"))).unwrap();
    assert_eq!(qg.path, q3.path);
    // A qid seen through the cache carries the current version.
    std::fs::write(sb.path("g"), b"longer contents").unwrap();
    let (_, qv) = now(fs.lookup(&r, &name("g"))).unwrap();
    assert_ne!(
        qv.version, qg.version,
        "a changed file changes its qid version"
    );
}

#[test]
fn removing_a_name_through_the_server_drops_its_node_and_descriptor() {
    let sb = Sandbox::new("cache-unlink");
    let fs = fs_with_cache(&sb, 8);
    let (r, _) = root(&fs);
    let (_, file, _) = now(fs.create(&r, &name("f"), OpenFlags::RDWR, 0o644, ROOT)).unwrap();
    drop(file);
    let base = fs.fds_in_use();
    now(fs.lookup(&r, &name("f"))).unwrap();
    assert_eq!((fs.cached_nodes(), fs.fds_in_use()), (1, base + 1));
    now(fs.unlink(&r, &name("f"), false)).unwrap();
    assert_eq!(
        fs.cached_nodes(),
        0,
        "an unlinked file's node leaves the cache"
    );
    assert_eq!(fs.fds_in_use(), base, "and its descriptor is closed");
}

#[test]
fn the_cache_is_bounded_and_its_descriptors_are_reclaimable() {
    let sb = Sandbox::new("cache-bound");
    for i in 0..20 {
        std::fs::write(sb.path(&format!("f{i}")), b"x").unwrap();
    }
    let fs = fs_with_cache(&sb, 5);
    let (r, _) = root(&fs);
    for i in 0..20 {
        now(fs.lookup(&r, &name(&format!("f{i}")))).unwrap();
    }
    assert_eq!(fs.cached_nodes(), 5);
    assert_eq!(fs.fds_in_use(), 1 + 5);
    assert_eq!(
        fs.reclaim_idle(),
        5,
        "cached nodes are idle: reclaim closes them"
    );
    assert_eq!(fs.fds_in_use(), 1);
    // A reclaimed node is found again by the ordinary lookup, which reopens it.
    let (n, _) = now(fs.lookup(&r, &name("f19"))).unwrap();
    assert!(n.holds_fd());
    let off = fs_with_cache(&sb, 0);
    let (r0, _) = root(&off);
    now(off.lookup(&r0, &name("f0"))).unwrap();
    assert_eq!(off.cached_nodes(), 0, "Some(0) turns the cache off");
    assert_eq!(off.fds_in_use(), 1);
}

#[test]
fn mapped_xattr_modes_are_seen_through_the_cache() {
    let sb = Sandbox::new("cache-mapped");
    let fs = sb.fs(SecurityModel::MappedXattr);
    let (r, _) = root(&fs);
    let (_, _, q) = now(fs.create(&r, &name("f"), OpenFlags::RDWR, 0o600, ROOT)).unwrap();
    let (_, a) = now(fs.lookup(&r, &name("f"))).unwrap();
    let (_, b) = now(fs.lookup(&r, &name("f"))).unwrap();
    assert_eq!((a, b), (q, q));
}
