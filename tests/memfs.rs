//! MemFs, the in-memory backend: every POSIX rule it promises, through the `Filesystem`
//! trait. Each call is polled exactly once and must be ready then (`run`), which is what
//! makes MemFs cancellation-safe: a dropped future never ran.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};

use co9p::fs::mem::{ENTRY_COST, INODE_COST, Limits, MemFile, MemNode, V9FS_MAGIC, makedev};
use co9p::fs::{Creds, DirEntry, Filesystem, LockOutcome, LockRequest, MemFs, Name};
use co9p::protocol::{
    Errno, GetattrMask, LockType, OpenFlags, QidType, SetAttr, SetattrMask, Timespec,
};

/// Polls `fut` once: MemFs futures complete in their first poll.
fn run<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("a MemFs future was not ready at its first poll"),
    }
}

fn n(s: &str) -> Name {
    Name::new(s.as_bytes()).unwrap()
}

const ME: Creds = Creds {
    uid: 1000,
    gid: 100,
};
const RW: OpenFlags = OpenFlags::RDWR;
const RO: OpenFlags = OpenFlags::RDONLY;
const WO: OpenFlags = OpenFlags::WRONLY;

fn root(fs: &MemFs) -> MemNode {
    run(fs.root()).unwrap().0
}

fn create(fs: &MemFs, dir: &MemNode, name: &str) -> (MemNode, MemFile) {
    let (node, file, _) = run(fs.create(dir, &n(name), RW, 0o644, ME)).unwrap();
    (node, file)
}

fn touch(fs: &MemFs, dir: &MemNode, name: &str) {
    create(fs, dir, name);
}

fn mkdir(fs: &MemFs, dir: &MemNode, name: &str) -> MemNode {
    run(fs.mkdir(dir, &n(name), 0o755, ME)).unwrap();
    lookup(fs, dir, name)
}

fn lookup(fs: &MemFs, dir: &MemNode, name: &str) -> MemNode {
    run(fs.lookup(dir, &n(name))).unwrap().0
}

fn write(fs: &MemFs, f: &MemFile, off: u64, data: &[u8]) -> usize {
    run(fs.write(f, off, data)).unwrap()
}

fn read_all(fs: &MemFs, f: &MemFile) -> Vec<u8> {
    let mut buf = vec![0; 1 << 16];
    let k = run(fs.read(f, 0, &mut buf)).unwrap();
    buf.truncate(k);
    buf
}

fn names(entries: &[DirEntry]) -> Vec<String> {
    entries
        .iter()
        .map(|e| String::from_utf8_lossy(&e.name).into_owned())
        .collect()
}

fn list(fs: &MemFs, dir: &MemNode) -> Vec<String> {
    let f = run(fs.open(dir, RO)).unwrap();
    names(&run(fs.readdir(&f, 0, 10_000)).unwrap())
}

fn nlink(fs: &MemFs, node: &MemNode) -> u64 {
    run(fs.getattr(node)).unwrap().nlink
}

fn lock_req(ty: LockType, start: u64, length: u64, proc_id: u32) -> LockRequest {
    LockRequest {
        lock_type: ty,
        start,
        length,
        proc_id,
        client_id: b"guest".to_vec(),
    }
}

// ---------------------------------------------------------------------------------------
// Files: contents, sizes, access modes

#[test]
fn create_write_read_round_trip() {
    let fs = MemFs::new();
    let r = root(&fs);
    let (node, f) = create(&fs, &r, "hello");
    assert_eq!(write(&fs, &f, 0, b"hello, world"), 12);
    assert_eq!(read_all(&fs, &f), b"hello, world");
    let mut buf = [0; 5];
    assert_eq!(run(fs.read(&f, 7, &mut buf)).unwrap(), 5);
    assert_eq!(&buf, b"world");
    assert_eq!(run(fs.read(&f, 12, &mut buf)).unwrap(), 0, "EOF");
    assert_eq!(run(fs.read(&f, 1 << 40, &mut buf)).unwrap(), 0);

    let a = run(fs.getattr(&node)).unwrap();
    assert_eq!(a.size, 12);
    assert_eq!(a.mode, 0o100_644);
    assert_eq!((a.uid, a.gid, a.nlink), (1000, 100, 1));
    assert_eq!((a.blksize, a.blocks), (4096, 1));
    assert!(a.valid.contains(GetattrMask::BASIC));
    assert_eq!(a.qid.ty, QidType::FILE);
    assert_eq!(a.qid.path, node.ino());

    // Another open of the same node sees the data; lookup finds the same inode.
    let again = lookup(&fs, &r, "hello");
    assert_eq!(again.ino(), node.ino());
    let f2 = run(fs.open(&again, RO)).unwrap();
    assert_eq!(read_all(&fs, &f2), b"hello, world");
    assert_eq!(run(fs.lookup(&r, &n("nope"))).unwrap_err(), Errno::ENOENT);
}

#[test]
fn vectored_io_spans_buffers() {
    use std::io::{IoSlice, IoSliceMut};
    let fs = MemFs::new();
    let (_, f) = create(&fs, &root(&fs), "v");
    let bufs = [
        IoSlice::new(b"abc"),
        IoSlice::new(b""),
        IoSlice::new(b"defg"),
    ];
    assert_eq!(run(fs.write_vectored(&f, 2, &bufs)).unwrap(), 7);
    let (mut a, mut b) = ([0u8; 4], [0u8; 10]);
    let mut out = [IoSliceMut::new(&mut a), IoSliceMut::new(&mut b)];
    assert_eq!(run(fs.read_vectored(&f, 0, &mut out)).unwrap(), 9);
    assert_eq!(&a, b"\0\0ab");
    assert_eq!(&b[..5], b"cdefg");
}

#[test]
fn writes_past_the_end_leave_holes_of_zeros() {
    let fs = MemFs::new();
    let (node, f) = create(&fs, &root(&fs), "sparse");
    write(&fs, &f, 10_000, b"tail");
    let data = read_all(&fs, &f);
    assert_eq!(data.len(), 10_004);
    assert!(data[..10_000].iter().all(|&b| b == 0));
    assert_eq!(&data[10_000..], b"tail");
    let a = run(fs.getattr(&node)).unwrap();
    assert_eq!((a.size, a.blocks), (10_004, 20));
    // Only the written page is stored: holes cost nothing.
    let base = MemFs::new().bytes_used();
    let entry = ENTRY_COST + "sparse".len() as u64;
    assert_eq!(fs.bytes_used() - base, INODE_COST + entry + 4096);
}

#[test]
fn truncate_shrinks_and_extends_with_zeros() {
    let fs = MemFs::new();
    let r = root(&fs);
    let (node, f) = create(&fs, &r, "t");
    write(&fs, &f, 0, &[b'x'; 100]);
    let size = |s| SetAttr {
        valid: SetattrMask::SIZE,
        size: s,
        ..SetAttr::default()
    };
    let v0 = run(fs.getattr(&node)).unwrap().qid.version;
    run(fs.setattr(&node, &size(10))).unwrap();
    assert_eq!(read_all(&fs, &f), vec![b'x'; 10]);
    run(fs.setattr(&node, &size(20))).unwrap();
    let mut want = vec![b'x'; 10];
    want.extend([0; 10]);
    assert_eq!(read_all(&fs, &f), want, "bytes cut off do not come back");
    let a = run(fs.getattr(&node)).unwrap();
    assert_eq!(a.size, 20);
    assert!(a.qid.version > v0, "size changes move the qid version");

    assert_eq!(run(fs.setattr(&r, &size(0))).unwrap_err(), Errno::EISDIR);
    let big = fs.limits().max_file_size + 1;
    assert_eq!(
        run(fs.setattr(&node, &size(big))).unwrap_err(),
        Errno::EFBIG
    );
    // A 1 GiB hole stores nothing.
    let used = fs.bytes_used();
    run(fs.setattr(&node, &size(1 << 30))).unwrap();
    assert_eq!(fs.bytes_used(), used);
}

/// A shrink that cuts a run of several pages short keeps only the pages below the new size
/// (the bytes past it never come back, even in the page just past the last one) and gives
/// back what it cut: the bytes used fall by the pages freed.
#[test]
fn truncate_inside_a_run_of_pages_frees_the_rest_and_keeps_no_stale_byte() {
    let fs = MemFs::new();
    let r = root(&fs);
    let (node, f) = create(&fs, &r, "run");
    let size = |s| SetAttr {
        valid: SetattrMask::SIZE,
        size: s,
        ..SetAttr::default()
    };
    let before = fs.bytes_used();
    // One write of three pages: one run.
    write(&fs, &f, 0, &[0xaa; 3 * 4096]);
    assert_eq!(fs.bytes_used() - before, 3 * 4096);
    run(fs.setattr(&node, &size(100))).unwrap();
    assert_eq!(fs.bytes_used() - before, 4096, "two pages freed");
    run(fs.setattr(&node, &size(3 * 4096))).unwrap();
    let data = read_all(&fs, &f);
    assert_eq!(&data[..100], &[0xaa; 100][..]);
    let stale = data[100..].iter().position(|&b| b != 0);
    assert_eq!(stale.map(|i| i + 100), None, "a byte cut off came back");
    run(fs.setattr(&node, &size(0))).unwrap();
    assert_eq!(fs.bytes_used(), before, "every page freed");
}

/// A read that starts inside one run of pages (not at its start) and goes on through a hole into another
/// gets each run's bytes and zeros between.
#[test]
fn a_vectored_read_past_the_end_fills_only_what_the_file_has() {
    use std::io::IoSliceMut;
    let fs = MemFs::new();
    let (_, f) = create(&fs, &root(&fs), "v");
    write(&fs, &f, 0, b"abcdefghi");
    // From offset 2, into three buffers that hold more than the 7 bytes left: the third
    // gets one byte and the rest of it is not touched (no zeros written past the end).
    let (mut a, mut b, mut c) = ([0xffu8; 3], [0xffu8; 3], [0xffu8; 10]);
    let mut out = [
        IoSliceMut::new(&mut a),
        IoSliceMut::new(&mut b),
        IoSliceMut::new(&mut c),
    ];
    assert_eq!(run(fs.read_vectored(&f, 2, &mut out)).unwrap(), 7);
    assert_eq!((&a, &b), (b"cde", b"fgh"));
    assert_eq!(c[0], b'i');
    assert_eq!(c[1..], [0xff; 9]);
}

#[test]
fn a_read_across_runs_and_a_hole_gets_both_runs_and_zeros_between() {
    let fs = MemFs::new();
    let (_, f) = create(&fs, &root(&fs), "runs");
    write(&fs, &f, 10, b"first");
    write(&fs, &f, 3 * 4096 + 7, b"second");
    // From inside the first run (not its start), in one buffer.
    let mut data = vec![0xff; 1 << 16];
    let k = run(fs.read(&f, 12, &mut data)).unwrap();
    data.truncate(k);
    let mut want = vec![0u8; 3 * 4096 + 7 + 6];
    want[10..15].copy_from_slice(b"first");
    want[3 * 4096 + 7..].copy_from_slice(b"second");
    let want = want.split_off(12);
    assert_eq!(data.len(), want.len());
    let first_bad = data.iter().zip(&want).position(|(a, b)| a != b);
    assert_eq!(first_bad, None, "the bytes differ from this offset");
}

#[test]
fn o_trunc_empties_only_when_writable() {
    let fs = MemFs::new();
    let r = root(&fs);
    let (node, f) = create(&fs, &r, "t");
    write(&fs, &f, 0, b"data");
    let ro = run(fs.open(&node, RO | OpenFlags::TRUNC)).unwrap();
    assert_eq!(
        read_all(&fs, &ro),
        b"data",
        "read-only O_TRUNC does not truncate"
    );
    run(fs.open(&node, WO | OpenFlags::TRUNC)).unwrap();
    assert_eq!(run(fs.getattr(&node)).unwrap().size, 0);
    assert_eq!(read_all(&fs, &ro), b"");
}

#[test]
fn o_append_writes_go_to_the_end() {
    let fs = MemFs::new();
    let r = root(&fs);
    let (node, f) = create(&fs, &r, "log");
    write(&fs, &f, 0, b"one,");
    let app = run(fs.open(&node, WO | OpenFlags::APPEND)).unwrap();
    assert_eq!(write(&fs, &app, 0, b"two,"), 4);
    write(&fs, &f, 0, b"ONE,");
    assert_eq!(write(&fs, &app, 1, b"three"), 5);
    assert_eq!(read_all(&fs, &f), b"ONE,two,three");
}

#[test]
fn access_modes_are_enforced() {
    let fs = MemFs::new();
    let r = root(&fs);
    let (node, _) = create(&fs, &r, "f");
    let mut buf = [0; 4];
    let wo = run(fs.open(&node, WO)).unwrap();
    assert_eq!(run(fs.read(&wo, 0, &mut buf)).unwrap_err(), Errno::EBADF);
    let ro = run(fs.open(&node, RO)).unwrap();
    assert_eq!(run(fs.write(&ro, 0, b"x")).unwrap_err(), Errno::EBADF);
    assert_eq!(
        run(fs.open(&node, OpenFlags(3))).unwrap_err(),
        Errno::EINVAL
    );
    assert_eq!(
        run(fs.open(&node, RO | OpenFlags::DIRECTORY)).unwrap_err(),
        Errno::ENOTDIR
    );

    assert_eq!(run(fs.open(&r, WO)).unwrap_err(), Errno::EISDIR);
    assert_eq!(run(fs.open(&r, RW)).unwrap_err(), Errno::EISDIR);
    let d = run(fs.open(&r, RO)).unwrap();
    assert_eq!(run(fs.read(&d, 0, &mut buf)).unwrap_err(), Errno::EISDIR);
    assert_eq!(run(fs.write(&d, 0, b"x")).unwrap_err(), Errno::EISDIR);
    assert_eq!(run(fs.readdir(&ro, 0, 10)).unwrap_err(), Errno::ENOTDIR);
    run(fs.fsync(&ro, false)).unwrap();
    run(fs.fsync(&d, true)).unwrap();
}

// ---------------------------------------------------------------------------------------
// Names: unlink, links, rename

#[test]
fn unlinked_open_file_stays_usable_until_closed() {
    let fs = MemFs::new();
    let r = root(&fs);
    let (inodes, used) = (fs.inode_count(), fs.bytes_used());
    let (node, f) = create(&fs, &r, "doomed");
    write(&fs, &f, 0, b"still here");
    assert_eq!(fs.inode_count(), inodes + 1);

    run(fs.unlink(&r, &n("doomed"), false)).unwrap();
    assert_eq!(run(fs.lookup(&r, &n("doomed"))).unwrap_err(), Errno::ENOENT);
    assert!(!list(&fs, &r).contains(&"doomed".to_string()));
    assert_eq!(read_all(&fs, &f), b"still here");
    write(&fs, &f, 10, b", and writable");
    assert_eq!(read_all(&fs, &f), b"still here, and writable");
    let a = run(fs.getattr(&node)).unwrap();
    assert_eq!((a.nlink, a.size), (0, 24));
    // Cannot be linked back (no O_TMPFILE-style resurrection).
    assert_eq!(
        run(fs.link(&node, &r, &n("back"))).unwrap_err(),
        Errno::ENOENT
    );
    assert_eq!(fs.inode_count(), inodes + 1, "held open: not freed");

    drop(f);
    assert_eq!(fs.inode_count(), inodes + 1, "the node still holds it");
    let clone = node.clone();
    drop(node);
    assert_eq!(fs.inode_count(), inodes + 1);
    drop(clone);
    assert_eq!(fs.inode_count(), inodes, "freed with its last handle");
    assert_eq!(fs.bytes_used(), used, "and its bytes with it");
}

#[test]
fn hard_links_share_content_and_count_links() {
    let fs = MemFs::new();
    let r = root(&fs);
    let d = mkdir(&fs, &r, "d");
    let (a, fa) = create(&fs, &r, "a");
    write(&fs, &fa, 0, b"shared");
    run(fs.link(&a, &d, &n("b"))).unwrap();
    let b = lookup(&fs, &d, "b");
    assert_eq!(b.ino(), a.ino());
    assert_eq!(nlink(&fs, &a), 2);
    let fb = run(fs.open(&b, RW)).unwrap();
    write(&fs, &fb, 6, b"!");
    assert_eq!(read_all(&fs, &fa), b"shared!");

    assert_eq!(run(fs.link(&a, &d, &n("b"))).unwrap_err(), Errno::EEXIST);
    assert_eq!(
        run(fs.link(&d, &r, &n("dirlink"))).unwrap_err(),
        Errno::EPERM
    );
    assert_eq!(run(fs.link(&a, &a, &n("x"))).unwrap_err(), Errno::ENOTDIR);

    run(fs.unlink(&r, &n("a"), false)).unwrap();
    assert_eq!(nlink(&fs, &b), 1);
    assert_eq!(read_all(&fs, &fb), b"shared!");
}

#[test]
fn unlink_and_rmdir_errors() {
    let fs = MemFs::new();
    let r = root(&fs);
    let d = mkdir(&fs, &r, "d");
    touch(&fs, &d, "f");
    assert_eq!(nlink(&fs, &r), 3, "root: 2 + one subdirectory");
    assert_eq!(
        run(fs.unlink(&r, &n("d"), false)).unwrap_err(),
        Errno::EISDIR
    );
    assert_eq!(
        run(fs.unlink(&r, &n("d"), true)).unwrap_err(),
        Errno::ENOTEMPTY
    );
    assert_eq!(
        run(fs.unlink(&d, &n("f"), true)).unwrap_err(),
        Errno::ENOTDIR
    );
    assert_eq!(
        run(fs.unlink(&d, &n("zz"), false)).unwrap_err(),
        Errno::ENOENT
    );
    run(fs.unlink(&d, &n("f"), false)).unwrap();
    run(fs.unlink(&r, &n("d"), true)).unwrap();
    assert_eq!(nlink(&fs, &r), 2);
    assert_eq!(nlink(&fs, &d), 0);

    // The removed directory (still held) takes no new entries and lists nothing.
    assert_eq!(
        run(fs.create(&d, &n("x"), RW, 0o644, ME)).unwrap_err(),
        Errno::ENOENT
    );
    assert_eq!(
        run(fs.mkdir(&d, &n("x"), 0o755, ME)).unwrap_err(),
        Errno::ENOENT
    );
    let df = run(fs.open(&d, RO)).unwrap();
    assert!(run(fs.readdir(&df, 0, 10)).unwrap().is_empty());
    assert_eq!(run(fs.parent(&d)).unwrap_err(), Errno::ENOENT);
}

#[test]
fn creating_names_that_exist_or_under_non_directories_fails() {
    let fs = MemFs::new();
    let r = root(&fs);
    let (f, _) = create(&fs, &r, "x");
    fn e<T>(res: Result<T, Errno>) -> Errno {
        res.map(drop).unwrap_err()
    }
    assert_eq!(e(run(fs.create(&r, &n("x"), RW, 0o644, ME))), Errno::EEXIST);
    assert_eq!(e(run(fs.mkdir(&r, &n("x"), 0o755, ME))), Errno::EEXIST);
    assert_eq!(e(run(fs.symlink(&r, &n("x"), b"t", ME))), Errno::EEXIST);
    assert_eq!(
        e(run(fs.mknod(&r, &n("x"), 0o010_644, (0, 0), ME))),
        Errno::EEXIST
    );
    assert_eq!(
        e(run(fs.create(&f, &n("y"), RW, 0o644, ME))),
        Errno::ENOTDIR
    );
    assert_eq!(e(run(fs.mkdir(&f, &n("y"), 0o755, ME))), Errno::ENOTDIR);
    assert_eq!(e(run(fs.symlink(&f, &n("y"), b"t", ME))), Errno::ENOTDIR);
    assert_eq!(e(run(fs.lookup(&f, &n("y")))), Errno::ENOTDIR);
    assert_eq!(e(run(fs.parent(&f))), Errno::ENOTDIR);
    assert_eq!(e(run(fs.symlink(&r, &n("y"), b"", ME))), Errno::ENOENT);
    assert_eq!(
        e(run(fs.symlink(&r, &n("y"), &[b'a'; 4096], ME))),
        Errno::ENAMETOOLONG
    );
    // 4095 bytes (Linux's PATH_MAX less its NUL) is the longest target, and it is kept whole.
    run(fs.symlink(&r, &n("y"), &[b'a'; 4095], ME)).unwrap();
    let link = lookup(&fs, &r, "y");
    assert_eq!(run(fs.readlink(&link)).unwrap(), vec![b'a'; 4095]);
}

#[test]
fn rename_follows_posix_rules() {
    let fs = MemFs::new();
    let r = root(&fs);
    let rn = |a: &MemNode, x: &str, b: &MemNode, y: &str| run(fs.rename(a, &n(x), b, &n(y)));

    // File over file: the target is replaced (and freed).
    let (f1, h1) = create(&fs, &r, "f1");
    write(&fs, &h1, 0, b"one");
    touch(&fs, &r, "f2");
    let before = fs.inode_count();
    rn(&r, "f1", &r, "f2").unwrap();
    assert_eq!(fs.inode_count(), before - 1);
    assert_eq!(lookup(&fs, &r, "f2").ino(), f1.ino());
    assert_eq!(run(fs.lookup(&r, &n("f1"))).unwrap_err(), Errno::ENOENT);

    // Directory over an empty directory; over a non-empty one ENOTEMPTY.
    let d1 = mkdir(&fs, &r, "d1");
    touch(&fs, &d1, "inside");
    mkdir(&fs, &r, "empty");
    let full = mkdir(&fs, &r, "full");
    touch(&fs, &full, "x");
    assert_eq!(nlink(&fs, &r), 5);
    assert_eq!(rn(&r, "d1", &r, "full").unwrap_err(), Errno::ENOTEMPTY);
    rn(&r, "d1", &r, "empty").unwrap();
    assert_eq!(lookup(&fs, &r, "empty").ino(), d1.ino());
    assert_eq!(nlink(&fs, &r), 4, "one subdirectory fewer");
    assert_eq!(list(&fs, &d1), [".", "..", "inside"]);

    // Type mismatches.
    assert_eq!(rn(&r, "f2", &r, "full").unwrap_err(), Errno::EISDIR);
    assert_eq!(rn(&r, "full", &r, "f2").unwrap_err(), Errno::ENOTDIR);

    // A directory cannot move into its own subtree (or onto itself as a parent).
    let sub = mkdir(&fs, &d1, "sub");
    let subsub = mkdir(&fs, &sub, "subsub");
    assert_eq!(rn(&r, "empty", &subsub, "loop").unwrap_err(), Errno::EINVAL);
    assert_eq!(rn(&r, "empty", &d1, "self").unwrap_err(), Errno::EINVAL);

    // Moving a directory elsewhere fixes link counts and its parent.
    rn(&d1, "sub", &full, "moved").unwrap();
    assert_eq!(nlink(&fs, &d1), 2);
    assert_eq!(nlink(&fs, &full), 3);
    assert_eq!(run(fs.parent(&sub)).unwrap().0.ino(), full.ino());
    assert_eq!(run(fs.parent(&subsub)).unwrap().0.ino(), sub.ino());

    // Same inode under both names: nothing happens.
    let (a, _) = create(&fs, &r, "a");
    run(fs.link(&a, &r, &n("b"))).unwrap();
    rn(&r, "a", &r, "b").unwrap();
    assert_eq!(lookup(&fs, &r, "a").ino(), a.ino());
    assert_eq!(lookup(&fs, &r, "b").ino(), a.ino());
    assert_eq!(nlink(&fs, &a), 2);
    rn(&r, "a", &r, "a").unwrap();

    // Missing source; target in a non-directory.
    assert_eq!(rn(&r, "ghost", &r, "g").unwrap_err(), Errno::ENOENT);
    assert_eq!(rn(&r, "a", &a, "g").unwrap_err(), Errno::ENOTDIR);

    // Plain move to a new name in another directory.
    rn(&r, "f2", &full, "f3").unwrap();
    assert_eq!(list(&fs, &full), [".", "..", "x", "moved", "f3"]);
}

#[test]
fn rename_leaves_no_trace_on_failure() {
    let fs = MemFs::new();
    let r = root(&fs);
    let d = mkdir(&fs, &r, "d");
    touch(&fs, &d, "x");
    mkdir(&fs, &r, "e");
    let dump = fs.dump();
    let attr = run(fs.getattr(&r)).unwrap();
    assert_eq!(
        run(fs.rename(&r, &n("e"), &r, &n("d"))).unwrap_err(),
        Errno::ENOTEMPTY
    );
    assert_eq!(fs.dump(), dump);
    assert_eq!(run(fs.getattr(&r)).unwrap(), attr, "not even a timestamp");
}

// ---------------------------------------------------------------------------------------
// Directories

#[test]
fn readdir_lists_dots_first_with_types() {
    let fs = MemFs::new();
    let r = root(&fs);
    let d = mkdir(&fs, &r, "d");
    touch(&fs, &d, "file");
    run(fs.mkdir(&d, &n("dir"), 0o755, ME)).unwrap();
    run(fs.symlink(&d, &n("link"), b"file", ME)).unwrap();
    run(fs.mknod(&d, &n("fifo"), 0o010_644, (0, 0), ME)).unwrap();
    run(fs.mknod(&d, &n("sock"), 0o140_644, (0, 0), ME)).unwrap();
    run(fs.mknod(&d, &n("chr"), 0o020_644, (1, 3), ME)).unwrap();
    run(fs.mknod(&d, &n("blk"), 0o060_644, (8, 1), ME)).unwrap();
    let f = run(fs.open(&d, RO)).unwrap();
    let all = run(fs.readdir(&f, 0, 100)).unwrap();
    let got: Vec<(String, u8, u64)> = all
        .iter()
        .map(|e| (String::from_utf8_lossy(&e.name).into_owned(), e.ty, e.next))
        .collect();
    let want = [
        (".", 4, 1),
        ("..", 4, 2),
        ("file", 8, 3),
        ("dir", 4, 4),
        ("link", 10, 5),
        ("fifo", 1, 6),
        ("sock", 12, 7),
        ("chr", 2, 8),
        ("blk", 6, 9),
    ];
    let want: Vec<(String, u8, u64)> = want
        .iter()
        .map(|&(s, t, c)| (s.to_string(), t, c))
        .collect();
    assert_eq!(got, want);
    assert_eq!(all[0].qid.path, d.ino());
    assert_eq!(all[1].qid.path, r.ino());
    assert_eq!(all[3].qid.ty, QidType::DIR);
    assert_eq!(all[4].qid.ty, QidType::SYMLINK);

    // Resuming from any cookie continues right after it; max bounds the page.
    assert_eq!(names(&run(fs.readdir(&f, 1, 1)).unwrap()), [".."]);
    assert_eq!(names(&run(fs.readdir(&f, 2, 2)).unwrap()), ["file", "dir"]);
    assert!(run(fs.readdir(&f, 9, 100)).unwrap().is_empty());
    assert!(run(fs.readdir(&f, 0, 0)).unwrap().is_empty());

    // ".." of the root is the root, and so is its parent.
    let rf = run(fs.open(&r, RO)).unwrap();
    let top = run(fs.readdir(&rf, 0, 2)).unwrap();
    assert_eq!(top[1].qid.path, r.ino());
    assert_eq!(run(fs.parent(&r)).unwrap().0.ino(), r.ino());
    assert_eq!(run(fs.parent(&d)).unwrap().0.ino(), r.ino());
}

#[test]
fn readdir_cookies_stay_stable_under_churn() {
    let fs = MemFs::new();
    let r = root(&fs);
    let d = mkdir(&fs, &r, "big");
    for i in 0..100 {
        touch(&fs, &d, &format!("keep{i:03}"));
    }
    for i in 0..20 {
        touch(&fs, &d, &format!("doomed{i:02}"));
    }
    let f = run(fs.open(&d, RO)).unwrap();
    let mut seen = Vec::new();
    let mut cookie = 0;
    let mut page = 0;
    loop {
        let entries = run(fs.readdir(&f, cookie, 7)).unwrap();
        if entries.is_empty() {
            break;
        }
        assert!(entries.len() <= 7);
        cookie = entries.last().unwrap().next;
        seen.extend(names(&entries));
        // Churn between pages: new names appear, doomed ones (maybe not yet listed) go.
        if page < 30 {
            touch(&fs, &d, &format!("new{page:03}"));
        }
        if page < 20 {
            run(fs.unlink(&d, &n(&format!("doomed{:02}", 19 - page)), false)).unwrap();
        }
        page += 1;
        assert!(page < 1000, "listing never ends");
    }
    assert_eq!(&seen[..2], [".", ".."]);
    for i in 0..100 {
        let name = format!("keep{i:03}");
        assert_eq!(
            seen.iter().filter(|s| **s == name).count(),
            1,
            "{name} present throughout: listed exactly once"
        );
    }
    let mut dedup = seen.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(dedup.len(), seen.len(), "no entry twice");
    // Entries created during the listing come after it began, so all of them show up.
    assert_eq!(seen.iter().filter(|s| s.starts_with("new")).count(), 30);
    // A doomed entry removed before the listing reached it is never shown.
    assert!(!seen.contains(&"doomed19".to_string()));
}

#[test]
fn special_files_are_nodes_that_do_not_open() {
    let fs = MemFs::new();
    let r = root(&fs);
    let qid = run(fs.mknod(&r, &n("fifo"), 0o010_600, (0, 0), ME)).unwrap();
    assert_eq!(qid.ty, QidType::FILE);
    run(fs.mknod(&r, &n("sock"), 0o140_600, (0, 0), ME)).unwrap();
    run(fs.mknod(&r, &n("null"), 0o020_666, (1, 3), ME)).unwrap();
    run(fs.mknod(&r, &n("sda1"), 0o060_660, (8, 1), ME)).unwrap();
    run(fs.mknod(&r, &n("reg"), 0o644, (0, 0), ME)).unwrap();
    run(fs.symlink(&r, &n("sym"), b"reg", ME)).unwrap();
    for name in ["fifo", "sock", "null", "sda1", "sym"] {
        let node = lookup(&fs, &r, name);
        assert_eq!(
            run(fs.open(&node, RO)).map(drop).unwrap_err(),
            Errno::ENXIO,
            "{name}"
        );
    }
    let attr = |name| run(fs.getattr(&lookup(&fs, &r, name))).unwrap();
    assert_eq!(attr("fifo").mode, 0o010_600);
    assert_eq!(attr("sock").mode, 0o140_600);
    assert_eq!(
        (attr("null").mode, attr("null").rdev),
        (0o020_666, makedev(1, 3))
    );
    assert_eq!((attr("sda1").mode, attr("sda1").rdev), (0o060_660, 0x801));
    assert_eq!(attr("reg").mode, 0o100_644);
    run(fs.open(&lookup(&fs, &r, "reg"), RW)).unwrap();
    assert_eq!(attr("sym").size, 3);
    assert_eq!(attr("sym").mode, 0o120_777);
    assert_eq!(run(fs.readlink(&lookup(&fs, &r, "sym"))).unwrap(), b"reg");
    assert_eq!(
        run(fs.readlink(&lookup(&fs, &r, "reg"))).unwrap_err(),
        Errno::EINVAL
    );
    assert_eq!(
        run(fs.mknod(&r, &n("d"), 0o040_755, (0, 0), ME)).unwrap_err(),
        Errno::EPERM
    );
    assert_eq!(
        run(fs.mknod(&r, &n("l"), 0o120_777, (0, 0), ME)).unwrap_err(),
        Errno::EINVAL
    );
}

// ---------------------------------------------------------------------------------------
// Attributes and time

#[test]
fn setattr_applies_each_field() {
    let fs = MemFs::new();
    let r = root(&fs);
    let (node, _) = create(&fs, &r, "f");
    let t = |sec| Timespec { sec, nsec: 5 };
    let before = run(fs.getattr(&node)).unwrap();
    run(fs.setattr(
        &node,
        &SetAttr {
            valid: SetattrMask::MODE
                | SetattrMask::UID
                | SetattrMask::GID
                | SetattrMask::ATIME
                | SetattrMask::ATIME_SET
                | SetattrMask::MTIME
                | SetattrMask::MTIME_SET,
            mode: 0o170_4755, // type bits are ignored
            uid: 7,
            gid: 8,
            atime: t(1000),
            mtime: t(2000),
            ..SetAttr::default()
        },
    ))
    .unwrap();
    let a = run(fs.getattr(&node)).unwrap();
    assert_eq!(a.mode, 0o100_000 | 0o4755);
    assert_eq!((a.uid, a.gid), (7, 8));
    assert_eq!((a.atime, a.mtime), (t(1000), t(2000)));
    assert!(a.ctime > before.ctime, "ctime moves with every change");
    assert!(
        a.qid.version > before.qid.version,
        "mtime change moves the version"
    );

    // ATIME/MTIME without *_SET mean "now".
    run(fs.setattr(
        &node,
        &SetAttr {
            valid: SetattrMask::ATIME | SetattrMask::MTIME,
            ..SetAttr::default()
        },
    ))
    .unwrap();
    let b = run(fs.getattr(&node)).unwrap();
    assert_eq!(b.atime, b.ctime);
    assert_eq!(b.mtime, b.ctime);
    assert!(b.ctime > a.ctime);
    assert_eq!(
        run(fs.setattr(
            &node,
            &SetAttr {
                valid: SetattrMask::MTIME | SetattrMask::MTIME_SET,
                mtime: Timespec {
                    sec: 1,
                    nsec: 1_000_000_000
                },
                ..SetAttr::default()
            }
        ))
        .unwrap_err(),
        Errno::EINVAL
    );
}

#[test]
fn writes_move_mtime_ctime_and_version_not_reads() {
    let fs = MemFs::new();
    let (node, f) = create(&fs, &root(&fs), "f");
    let a = run(fs.getattr(&node)).unwrap();
    write(&fs, &f, 0, b"x");
    let b = run(fs.getattr(&node)).unwrap();
    assert!(b.mtime > a.mtime && b.ctime > a.ctime);
    assert_ne!(b.qid.version, a.qid.version);
    assert_eq!(b.data_version, u64::from(b.qid.version));
    read_all(&fs, &f);
    assert_eq!(run(fs.getattr(&node)).unwrap(), b, "reads change nothing");
}

/// The same script on two filesystems, including failures along the way.
fn script(fs: &MemFs) -> Vec<String> {
    let r = root(fs);
    let d = mkdir(fs, &r, "d");
    let (a, f) = create(fs, &d, "a");
    write(fs, &f, 3, b"abc");
    let _ = run(fs.mkdir(&d, &n("a"), 0o700, ME)); // EEXIST
    run(fs.link(&a, &r, &n("a2"))).unwrap();
    run(fs.setxattr(&a, b"user.k", b"v", 0)).unwrap();
    run(fs.rename(&d, &n("a"), &r, &n("a3"))).unwrap();
    run(fs.symlink(&r, &n("s"), b"a3", ME)).unwrap();
    let mut out = vec![fs.dump()];
    for name in ["d", "a2", "a3", "s"] {
        out.push(format!(
            "{:?}",
            run(fs.getattr(&lookup(fs, &r, name))).unwrap()
        ));
    }
    out.push(format!("{:?}", run(fs.getattr(&r)).unwrap()));
    out
}

#[test]
fn same_script_same_results_timestamps_included() {
    let (x, y) = (MemFs::new(), MemFs::new());
    assert_eq!(script(&x), script(&y));
    // The logical clock reads n during the n-th successful mutation (1 is the root's).
    let fs = MemFs::new();
    let r = root(&fs);
    assert_eq!(
        run(fs.getattr(&r)).unwrap().btime,
        Timespec { sec: 1, nsec: 0 }
    );
    let _ = run(fs.unlink(&r, &n("missing"), false));
    let (node, _) = create(&fs, &r, "f");
    let a = run(fs.getattr(&node)).unwrap();
    assert_eq!(
        a.btime,
        Timespec { sec: 2, nsec: 0 },
        "failures do not tick"
    );
    assert_eq!(run(fs.getattr(&r)).unwrap().mtime, a.btime);
}

#[test]
fn an_injected_clock_supplies_timestamps() {
    let ticks = Arc::new(AtomicU64::new(500));
    let t = ticks.clone();
    let fs = MemFs::with_clock(Arc::new(move || Timespec {
        sec: t.load(Ordering::SeqCst),
        nsec: 42,
    }));
    let r = root(&fs);
    ticks.store(777, Ordering::SeqCst);
    let (node, _) = create(&fs, &r, "f");
    let a = run(fs.getattr(&node)).unwrap();
    assert_eq!(a.mtime, Timespec { sec: 777, nsec: 42 });
    assert_eq!(run(fs.getattr(&r)).unwrap().btime.sec, 500);
    let real = MemFs::with_clock(co9p::fs::mem::system_clock());
    assert!(run(real.getattr(&root(&real))).unwrap().mtime.sec > 1_600_000_000);
}

#[test]
fn setgid_directories_pass_on_their_group() {
    let fs = MemFs::new();
    let r = root(&fs);
    let d = mkdir(&fs, &r, "shared");
    run(fs.setattr(
        &d,
        &SetAttr {
            valid: SetattrMask::MODE | SetattrMask::GID,
            mode: 0o2775,
            gid: 50,
            ..SetAttr::default()
        },
    ))
    .unwrap();
    let (f, _) = create(&fs, &d, "f");
    assert_eq!(run(fs.getattr(&f)).unwrap().gid, 50);
    let sub = mkdir(&fs, &d, "sub");
    let a = run(fs.getattr(&sub)).unwrap();
    assert_eq!((a.gid, a.mode & 0o2000), (50, 0o2000));
}

// ---------------------------------------------------------------------------------------
// Extended attributes

#[test]
fn xattrs_honour_create_and_replace_flags() {
    let fs = MemFs::new();
    let (node, _) = create(&fs, &root(&fs), "f");
    assert_eq!(
        run(fs.getxattr(&node, b"user.a")).unwrap_err(),
        Errno::ENODATA
    );
    assert_eq!(
        run(fs.setxattr(&node, b"user.a", b"1", 2)).unwrap_err(),
        Errno::ENODATA,
        "XATTR_REPLACE needs an existing one"
    );
    run(fs.setxattr(&node, b"user.b", b"2", 1)).unwrap();
    assert_eq!(
        run(fs.setxattr(&node, b"user.b", b"x", 1)).unwrap_err(),
        Errno::EEXIST,
        "XATTR_CREATE needs a new one"
    );
    run(fs.setxattr(&node, b"user.b", b"22", 2)).unwrap();
    run(fs.setxattr(&node, b"user.a", b"", 0)).unwrap();
    run(fs.setxattr(&node, b"trusted.z", b"zz", 0)).unwrap();
    assert_eq!(run(fs.getxattr(&node, b"user.b")).unwrap(), b"22");
    assert_eq!(run(fs.getxattr(&node, b"user.a")).unwrap(), b"");
    assert_eq!(
        run(fs.listxattr(&node)).unwrap(),
        b"trusted.z\0user.a\0user.b\0"
    );
    run(fs.removexattr(&node, b"user.a")).unwrap();
    assert_eq!(
        run(fs.removexattr(&node, b"user.a")).unwrap_err(),
        Errno::ENODATA
    );
    assert_eq!(run(fs.listxattr(&node)).unwrap(), b"trusted.z\0user.b\0");
    assert_eq!(
        run(fs.setxattr(&node, b"user.q", b"", 4)).unwrap_err(),
        Errno::EINVAL
    );
}

#[test]
fn xattr_limits() {
    let fs = MemFs::new();
    let r = root(&fs);
    let used = fs.bytes_used();
    assert_eq!(
        run(fs.setxattr(&r, &[b'n'; 256], b"", 0)).unwrap_err(),
        Errno::ERANGE
    );
    assert_eq!(
        run(fs.setxattr(&r, b"", b"", 0)).unwrap_err(),
        Errno::ERANGE
    );
    run(fs.setxattr(&r, &[b'n'; 255], b"", 0)).unwrap();
    assert_eq!(
        run(fs.setxattr(&r, b"user.big", &vec![0; 65_537], 0)).unwrap_err(),
        Errno::E2BIG
    );
    run(fs.setxattr(&r, b"user.big", &vec![0; 65_536], 0)).unwrap();
    for i in 2..128 {
        run(fs.setxattr(&r, format!("user.{i}").as_bytes(), b"v", 0)).unwrap();
    }
    assert_eq!(
        run(fs.setxattr(&r, b"user.one-too-many", b"v", 0)).unwrap_err(),
        Errno::ENOSPC
    );
    run(fs.setxattr(&r, b"user.2", b"replacing is fine", 0)).unwrap();
    assert!(fs.bytes_used() > used + 65_536);
    for i in 2..128 {
        run(fs.removexattr(&r, format!("user.{i}").as_bytes())).unwrap();
    }
    run(fs.removexattr(&r, b"user.big")).unwrap();
    run(fs.removexattr(&r, &[b'n'; 255])).unwrap();
    assert_eq!(fs.bytes_used(), used, "xattr bytes are returned");
}

// ---------------------------------------------------------------------------------------
// Locks

#[test]
fn write_locks_exclude_and_read_locks_share() {
    use LockType::*;
    let fs = MemFs::new();
    let (node, a) = create(&fs, &root(&fs), "f");
    let b = run(fs.open(&node, RW)).unwrap();
    let lock = |f: &MemFile, ty, s, l| run(fs.lock(f, &lock_req(ty, s, l, 1))).unwrap();

    assert_eq!(lock(&a, Write, 0, 10), LockOutcome::Granted);
    assert_eq!(lock(&b, Read, 5, 1), LockOutcome::Conflict);
    assert_eq!(lock(&b, Write, 9, 100), LockOutcome::Conflict);
    assert_eq!(
        lock(&b, Write, 10, 0),
        LockOutcome::Granted,
        "[10, EOF) is free"
    );
    assert_eq!(
        lock(&a, Read, 100, 1),
        LockOutcome::Conflict,
        "b owns to EOF"
    );

    assert_eq!(lock(&a, Unlock, 0, 0), LockOutcome::Granted);
    assert_eq!(lock(&b, Unlock, 0, 0), LockOutcome::Granted);
    assert_eq!(lock(&a, Read, 0, 0), LockOutcome::Granted);
    assert_eq!(
        lock(&b, Read, 0, 0),
        LockOutcome::Granted,
        "read locks share"
    );
    assert_eq!(lock(&b, Write, 0, 1), LockOutcome::Conflict);
}

#[test]
fn a_file_upgrades_and_splits_its_own_locks() {
    use LockType::*;
    let fs = MemFs::new();
    let (node, a) = create(&fs, &root(&fs), "f");
    let b = run(fs.open(&node, RW)).unwrap();
    let lock = |f: &MemFile, ty, s, l| run(fs.lock(f, &lock_req(ty, s, l, 1))).unwrap();

    assert_eq!(lock(&a, Read, 0, 100), LockOutcome::Granted);
    assert_eq!(
        lock(&a, Write, 0, 100),
        LockOutcome::Granted,
        "own lock: upgrade"
    );
    assert_eq!(lock(&b, Read, 50, 1), LockOutcome::Conflict);
    // Unlocking the middle splits the range: the ends stay locked.
    assert_eq!(lock(&a, Unlock, 40, 20), LockOutcome::Granted);
    assert_eq!(lock(&b, Write, 40, 20), LockOutcome::Granted);
    assert_eq!(lock(&b, Write, 39, 1), LockOutcome::Conflict);
    assert_eq!(lock(&b, Write, 60, 1), LockOutcome::Conflict);
    // Downgrade part of it: b can now read-lock there.
    assert_eq!(lock(&a, Read, 0, 10), LockOutcome::Granted);
    assert_eq!(lock(&b, Read, 0, 10), LockOutcome::Granted);
    assert_eq!(lock(&b, Read, 10, 1), LockOutcome::Conflict);
}

#[test]
fn getlock_reports_the_first_conflict() {
    use LockType::*;
    let fs = MemFs::new();
    let (node, a) = create(&fs, &root(&fs), "f");
    let b = run(fs.open(&node, RW)).unwrap();
    run(fs.lock(&a, &lock_req(Read, 100, 0, 77))).unwrap();
    run(fs.lock(&a, &lock_req(Write, 10, 5, 77))).unwrap();

    let probe = run(fs.getlock(&b, &lock_req(Write, 0, 0, 9))).unwrap();
    assert_eq!(probe, lock_req(Write, 10, 5, 77), "lowest start first");
    let probe = run(fs.getlock(&b, &lock_req(Write, 50, 0, 9))).unwrap();
    assert_eq!(probe, lock_req(Read, 100, 0, 77), "length 0 = to EOF");
    let probe = run(fs.getlock(&b, &lock_req(Read, 200, 10, 9))).unwrap();
    assert_eq!(
        probe,
        lock_req(Unlock, 200, 10, 9),
        "reads share: no conflict"
    );
    let probe = run(fs.getlock(&a, &lock_req(Write, 0, 0, 77))).unwrap();
    assert_eq!(
        probe.lock_type, Unlock,
        "a file never conflicts with itself"
    );
    assert_eq!(
        run(fs.getlock(&a, &lock_req(Unlock, 0, 0, 1))).unwrap_err(),
        Errno::EINVAL
    );
}

#[test]
fn closing_a_file_releases_its_locks() {
    use LockType::*;
    let fs = MemFs::new();
    let (node, a) = create(&fs, &root(&fs), "f");
    let b = run(fs.open(&node, RW)).unwrap();
    run(fs.lock(&a, &lock_req(Write, 0, 0, 1))).unwrap();
    assert_eq!(
        run(fs.lock(&b, &lock_req(Write, 0, 0, 2))).unwrap(),
        LockOutcome::Conflict
    );
    drop(a);
    assert_eq!(
        run(fs.lock(&b, &lock_req(Write, 0, 0, 2))).unwrap(),
        LockOutcome::Granted
    );
}

#[test]
fn locks_need_the_matching_access_mode() {
    use LockType::*;
    let fs = MemFs::new();
    let (node, _) = create(&fs, &root(&fs), "f");
    let ro = run(fs.open(&node, RO)).unwrap();
    let wo = run(fs.open(&node, WO)).unwrap();
    assert_eq!(
        run(fs.lock(&ro, &lock_req(Write, 0, 1, 1))).unwrap_err(),
        Errno::EBADF
    );
    assert_eq!(
        run(fs.lock(&wo, &lock_req(Read, 0, 1, 1))).unwrap_err(),
        Errno::EBADF
    );
    assert_eq!(
        run(fs.lock(&ro, &lock_req(Read, 0, 1, 1))).unwrap(),
        LockOutcome::Granted
    );
    assert_eq!(
        run(fs.lock(&ro, &lock_req(Read, u64::MAX, 2, 1))).unwrap_err(),
        Errno::EINVAL,
        "range past the largest offset"
    );
}

// ---------------------------------------------------------------------------------------
// Limits and statfs

#[test]
fn file_size_limit_is_efbig() {
    let fs = MemFs::with_limits(Limits {
        max_file_size: 10_000,
        ..Limits::default()
    });
    let (_, f) = create(&fs, &root(&fs), "f");
    assert_eq!(run(fs.write(&f, 10_000, b"x")).unwrap_err(), Errno::EFBIG);
    assert_eq!(run(fs.write(&f, u64::MAX, b"x")).unwrap_err(), Errno::EFBIG);
    assert_eq!(write(&fs, &f, 9_998, b"abcd"), 2, "cut short at the limit");
    assert_eq!(read_all(&fs, &f).len(), 10_000);
}

#[test]
fn link_limit_is_emlink_for_links_subdirectories_and_moves() {
    let fs = MemFs::with_limits(Limits {
        max_links: 4,
        ..Limits::default()
    });
    let r = root(&fs);
    // The root holds two subdirectories: its link count (2 + 2) is at the limit.
    let (a, b) = (mkdir(&fs, &r, "a"), mkdir(&fs, &r, "b"));
    assert_eq!(
        run(fs.mkdir(&r, &n("c"), 0o755, ME)).unwrap_err(),
        Errno::EMLINK
    );
    // A directory moved into a full one is refused; within it, or over an empty
    // directory there (which frees a link as it takes one), it is not.
    mkdir(&fs, &a, "d");
    assert_eq!(
        run(fs.rename(&a, &n("d"), &r, &n("d"))).unwrap_err(),
        Errno::EMLINK
    );
    run(fs.rename(&a, &n("d"), &r, &n("b"))).unwrap();
    run(fs.rename(&r, &n("b"), &r, &n("e"))).unwrap();
    assert_eq!(run(fs.getattr(&r)).unwrap().nlink, 4);
    // A file's links stop at the limit.
    let (f, _) = create(&fs, &a, "f");
    for i in 1..4 {
        run(fs.link(&f, &a, &n(&format!("l{i}")))).unwrap();
    }
    assert_eq!(run(fs.link(&f, &a, &n("l4"))).unwrap_err(), Errno::EMLINK);
    assert_eq!(run(fs.getattr(&f)).unwrap().nlink, 4);
    assert_eq!(run(fs.getattr(&b)).unwrap().nlink, 0, "b was replaced by d");
}

#[test]
fn capacity_limit_is_enospc_and_statfs_reports_it() {
    let fs = MemFs::with_limits(Limits {
        capacity: 64 * 1024,
        max_inodes: 10,
        ..Limits::default()
    });
    let r = root(&fs);
    let (node, f) = create(&fs, &r, "f");
    assert_eq!(write(&fs, &f, 0, &[1; 40_000]), 40_000);
    let before = read_all(&fs, &f);
    assert_eq!(
        run(fs.write(&f, 40_000, &[2; 30_000])).unwrap_err(),
        Errno::ENOSPC
    );
    assert_eq!(read_all(&fs, &f), before, "a failed write writes nothing");
    let s = run(fs.statfs(&r)).unwrap();
    assert_eq!(s.fs_type, V9FS_MAGIC);
    assert_eq!((s.bsize, s.namelen), (4096, 255));
    assert_eq!(s.blocks, 16);
    assert_eq!(s.bfree, (64 * 1024 - fs.bytes_used()) / 4096);
    assert_eq!(s.bavail, s.bfree);
    assert_eq!((s.files, s.ffree), (10, 8));

    // Freeing space makes room again.
    run(fs.setattr(
        &node,
        &SetAttr {
            valid: SetattrMask::SIZE,
            size: 0,
            ..SetAttr::default()
        },
    ))
    .unwrap();
    assert_eq!(write(&fs, &f, 0, &[3; 60_000]), 60_000);

    // The inode limit.
    for i in 0..8 {
        run(fs.mknod(&r, &n(&format!("n{i}")), 0o010_644, (0, 0), ME)).unwrap();
    }
    assert_eq!(fs.inode_count(), 10);
    assert_eq!(
        run(fs.mkdir(&r, &n("more"), 0o755, ME)).unwrap_err(),
        Errno::ENOSPC
    );
}

#[test]
fn names_and_links_count_against_capacity() {
    let fs = MemFs::with_limits(Limits {
        capacity: 16 * 1024,
        ..Limits::default()
    });
    let r = root(&fs);
    let (node, _) = create(&fs, &r, "f");
    let used = fs.bytes_used();
    let mut made = 0;
    let err = loop {
        match run(fs.link(&node, &r, &n(&format!("link{made:05}")))) {
            Ok(()) => made += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(err, Errno::ENOSPC);
    assert_eq!(made, (16 * 1024 - used) / (ENTRY_COST + 9));
    // A rename to a longer name needs room too; to a shorter one it does not.
    assert_eq!(
        run(fs.rename(&r, &n("link00000"), &r, &n(&"x".repeat(200)))).unwrap_err(),
        Errno::ENOSPC
    );
    // One that takes exactly the room left fits, and fills the filesystem.
    let room = 16 * 1024 - fs.bytes_used();
    let exact = "y".repeat(9 + room as usize);
    run(fs.rename(&r, &n("link00000"), &r, &n(&exact))).unwrap();
    assert_eq!(fs.bytes_used(), 16 * 1024);
    run(fs.rename(&r, &n(&exact), &r, &n("s"))).unwrap();
    for i in 1..made {
        run(fs.unlink(&r, &n(&format!("link{i:05}")), false)).unwrap();
    }
    run(fs.unlink(&r, &n("s"), false)).unwrap();
    assert_eq!(fs.bytes_used(), used);
}

// ---------------------------------------------------------------------------------------
// Handles, threads, dumps

#[test]
fn nodes_of_another_memfs_are_refused() {
    let (x, y) = (MemFs::new(), MemFs::new());
    let rx = root(&x);
    assert_eq!(run(y.getattr(&rx)).unwrap_err(), Errno::EXDEV);
    assert_eq!(
        run(y.link(&rx, &root(&y), &n("l"))).unwrap_err(),
        Errno::EXDEV
    );
}

#[test]
fn many_threads_one_tree() {
    let fs = MemFs::new();
    let base = fs.inode_count();
    std::thread::scope(|s| {
        for t in 0..4 {
            let fs = fs.clone();
            s.spawn(move || {
                let r = root(&fs);
                for i in 0..200 {
                    let name = format!("t{t}-{i}");
                    let (_, f) = create(&fs, &r, &name);
                    write(&fs, &f, 0, name.as_bytes());
                    if i % 2 == 0 {
                        run(fs.unlink(&r, &n(&name), false)).unwrap();
                    }
                }
            });
        }
    });
    assert_eq!(fs.inode_count(), base + 400);
    assert_eq!(list(&fs, &root(&fs)).len(), 2 + 400);
}

#[test]
fn dump_lists_the_tree_in_order() {
    let fs = MemFs::new();
    let r = root(&fs);
    let d = mkdir(&fs, &r, "d");
    let (a, f) = create(&fs, &d, "a");
    write(&fs, &f, 0, b"hi");
    run(fs.link(&a, &r, &n("b"))).unwrap();
    run(fs.symlink(&r, &n("s"), b"d/a", ME)).unwrap();
    run(fs.mknod(&r, &n("c"), 0o020_600, (1, 3), ME)).unwrap();
    run(fs.setxattr(&d, b"user.x", b"1", 0)).unwrap();
    let dump = fs.dump();
    let lines: Vec<&str> = dump.lines().collect();
    assert_eq!(lines.len(), 6, "{dump}");
    assert_eq!(lines[0], "/ dir mode=0755 uid=0 gid=0 nlink=3");
    assert!(lines[1].starts_with("/b file mode=0644 uid=1000 gid=100 nlink=2 size=2 hash="));
    assert_eq!(
        lines[2],
        "/c chardev mode=0600 uid=1000 gid=100 nlink=1 rdev=0x103"
    );
    assert!(lines[3].starts_with("/d dir mode=0755 uid=1000 gid=100 nlink=2 xattrs={user.x:1:"));
    assert_eq!(lines[4], "/d/a link=/b");
    assert_eq!(
        lines[5],
        "/s symlink mode=0777 uid=1000 gid=100 nlink=1 target=\"d/a\""
    );

    // Equal contents, equal hashes, however they were written.
    let other = MemFs::new();
    let (_, g) = create(&other, &root(&other), "b");
    write(&other, &g, 1, b"i");
    write(&other, &g, 0, b"h");
    let hash = |l: &str| {
        l.split(' ')
            .find(|w| w.starts_with("hash="))
            .unwrap()
            .to_string()
    };
    assert_eq!(hash(other.dump().lines().nth(1).unwrap()), hash(lines[1]));
}

// ---------------------------------------------------------------------------------------
// Through the server

mod client;

#[test]
fn served_over_9p_and_nothing_leaks_after_clunk() {
    use client::{Client, InProcess};
    use co9p::protocol::Fid;
    let fs = MemFs::new();
    let (inodes, used) = (fs.inode_count(), fs.bytes_used());
    let server = InProcess::new(Arc::new(fs.clone()), co9p::server::Config::default());
    let mut c = Client::new(server);
    c.attach_root();
    c.mkdir(Fid(0), "d", 0o755).unwrap();
    c.walk(Fid(0), Fid(1), &["d"]).unwrap();
    c.lcreate(Fid(1), "f", RW, 0o644).unwrap();
    assert_eq!(c.write(Fid(1), 0, b"over the wire").unwrap(), 13);
    assert_eq!(c.read(Fid(1), 5, 100).unwrap(), b"the wire");

    c.walk(Fid(0), Fid(2), &["d"]).unwrap();
    c.lopen(Fid(2), RO).unwrap();
    let listed: Vec<_> = c
        .readdir_all(Fid(2), 64)
        .into_iter()
        .map(|d| d.name.0)
        .collect();
    assert_eq!(listed, [&b"."[..], b"..", b"f"]);

    c.walk(Fid(0), Fid(3), &["d"]).unwrap();
    c.unlinkat(Fid(3), "f", 0).unwrap();
    assert_eq!(c.read(Fid(1), 0, 4).unwrap(), b"over", "open after unlink");
    assert_eq!(fs.inode_count(), inodes + 2);
    for fid in 1..=3 {
        c.clunk(Fid(fid)).unwrap();
    }
    assert_eq!(
        fs.inode_count(),
        inodes + 1,
        "the file went with its last fid"
    );
    c.unlinkat(Fid(0), "d", co9p::protocol::AT_REMOVEDIR)
        .unwrap();
    assert_eq!((fs.inode_count(), fs.bytes_used()), (inodes, used));
}

#[test]
fn a_write_by_another_user_drops_set_id_bits_only_when_it_writes_bytes() {
    let fs = MemFs::new();
    let r = root(&fs);
    let other = Creds {
        uid: 2000,
        gid: 200,
    };
    // (mode, mode after another user's write): S_ISUID always goes; S_ISGID only with
    // group execute (without it, it marks mandatory locking and stays), as Linux.
    for (mode, after) in [
        (0o4755, 0o755),
        (0o2755, 0o755),
        (0o2745, 0o2745),
        (0o6775, 0o775),
        (0o0777, 0o777),
    ] {
        let (node, _) = create(&fs, &r, &format!("s{mode:o}"));
        let chmod = SetAttr {
            valid: SetattrMask::MODE,
            mode,
            ..SetAttr::default()
        };
        run(fs.setattr(&node, &chmod)).unwrap();
        let perm = |fs: &MemFs| run(fs.getattr(&node)).unwrap().mode & 0o7777;
        let f = run(fs.open_by(&node, WO, other)).unwrap();
        assert_eq!(run(fs.write(&f, 0, b"")).unwrap(), 0);
        assert_eq!(perm(&fs), mode, "a write of no bytes changes no mode");
        write(&fs, &f, 0, b"x");
        assert_eq!(
            perm(&fs),
            after,
            "mode {mode:o} after a write by another user"
        );
        // The owner's own writes (root's here, uid 0 holds CAP_FSETID) drop nothing.
        run(fs.setattr(&node, &chmod)).unwrap();
        let mine = run(fs.open_by(&node, WO, Creds { uid: 0, gid: 0 })).unwrap();
        write(&fs, &mine, 0, b"y");
        assert_eq!(perm(&fs), mode, "mode {mode:o} after a write by root");
    }
}

#[test]
fn a_filesystem_reports_the_limits_it_was_given_and_a_file_its_open_flags() {
    let limits = Limits {
        max_file_size: 12_345,
        capacity: 1 << 20,
        max_inodes: 77,
        max_xattrs: 3,
        max_xattr_value: 99,
        max_links: 5,
    };
    let fs = MemFs::with_config(limits, None);
    assert_eq!(fs.limits(), limits);
    let (node, _) = create(&fs, &root(&fs), "f");
    for flags in [RO, WO, RW | OpenFlags::APPEND] {
        let f = run(fs.open(&node, flags)).unwrap();
        assert_eq!(f.flags(), flags);
    }
}

#[test]
fn makedev_is_glibcs_encoding_over_all_32_bits_of_each_part() {
    for (major, minor) in [
        (0, 0),
        (1, 3),
        (0xfff, 0xf_ffff),
        (0x1000, 0x10_0000),
        (0x1234_5678, 0x9abc_def0),
        (u32::MAX, u32::MAX),
    ] {
        assert_eq!(
            makedev(major, minor),
            libc::makedev(major, minor),
            "makedev({major:#x}, {minor:#x})"
        );
    }
}
