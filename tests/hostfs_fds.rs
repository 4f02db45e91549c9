//! HostFs gives back every descriptor: after many nodes and files are made and dropped,
//! the process's descriptor count is where it started; one inode is one node (one
//! descriptor) however often it is looked up; and when open files (which are never
//! reclaimed) fill the budget, the answer is `EMFILE` instead of running the process out.
//! (Its own test binary, so no other test opens descriptors meanwhile.)

mod hostfs_common;

use co9p::fs::Filesystem;
use co9p::fs::host::{HostFs, HostOptions, SecurityModel};
use co9p::protocol::{Errno, OpenFlags};
use hostfs_common::*;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn descriptors_return_to_start_and_are_bounded() {
    let sb = Sandbox::new("fds");
    std::fs::create_dir(sb.path("d")).unwrap();
    let start = open_fds();
    {
        let fs = sb.fs(SecurityModel::MappedXattr);
        let (r, _) = root(&fs);
        let mut keep = Vec::new();
        for i in 0..1000 {
            let nm = name(&format!("f{i}"));
            let (n, f, _) = now(fs.create(&r, &nm, OpenFlags::RDWR, 0o600, ROOT)).unwrap();
            now(fs.write(&f, 0, b"x")).unwrap();
            let (d, _) = now(fs.lookup(&r, &name("d"))).unwrap();
            let df = now(fs.open(&d, OpenFlags::RDONLY)).unwrap();
            now(fs.readdir(&df, 0, 4)).unwrap();
            let (p, _) = now(fs.parent(&d)).unwrap();
            now(fs.mkdir(&d, &nm, 0o700, ROOT)).unwrap();
            now(fs.symlink(&d, &name(&format!("l{i}")), b"t", ROOT)).unwrap();
            if i % 10 == 0 {
                keep.push((n, f, d, df, p));
            }
        }
        // `d` is one node however often looked up, and `p` is the root itself. A created
        // node borrows its open file's descriptor until something needs its own.
        assert_eq!(fs.fds_in_use(), 2 + keep.len() * 2);
        now(fs.getattr(&keep[0].0)).unwrap();
        assert_eq!(
            fs.fds_in_use(),
            3 + keep.len() * 2,
            "a created node used through itself made its own descriptor"
        );
        now(fs.getattr(&keep[0].0)).unwrap();
        assert_eq!(fs.fds_in_use(), 3 + keep.len() * 2, "once");
        assert_eq!(
            fs.fds_reclaimed(),
            0,
            "far from the budget: nothing reclaimed"
        );
        drop(keep);
        // The lookup cache keeps `d` (the one name looked up), its descriptor counted.
        assert_eq!(fs.cached_nodes(), 1);
        assert_eq!(fs.fds_in_use(), 2);
        fs.drop_cached_nodes();
        assert_eq!(fs.fds_in_use(), 1, "only the root's");
    }
    assert_eq!(open_fds(), start, "every descriptor closed");

    // A budget of 10 filled by open files (never reclaimed): the 10th descriptor is
    // refused, nothing is leaked, and dropping a file makes room again.
    let fs = HostFs::new(
        &sb.export,
        HostOptions {
            max_fds: Some(10),
            ..HostOptions::default()
        },
    )
    .unwrap();
    let (r, _) = root(&fs);
    let mut held = Vec::new();
    while let Ok(f) = now(fs.open(&r, OpenFlags::RDONLY)) {
        held.push(f);
    }
    assert_eq!(held.len(), 9);
    assert_eq!(now(fs.lookup(&r, &name("d"))).err(), Some(Errno::EMFILE));
    let f = held.pop().unwrap();
    assert_eq!(
        now(fs.open(&r, OpenFlags::RDONLY)).err(),
        Some(Errno::EMFILE)
    );
    drop(f);
    let _ = now(fs.lookup(&r, &name("d"))).unwrap();
    drop(held);
    drop((fs, r));
    assert_eq!(open_fds(), start);
}
