//! Large reads over a socket from HostFs go out from a shared mapping of the file (one copy
//! fewer): the bytes must be the file's, wherever the read falls, however the file changed
//! since an earlier read mapped it, and the same as a server that copies sends.

mod client;

use std::os::unix::fs::FileExt;
use std::sync::Arc;

use client::fixture::TcpServer;
use co9p::fs::HostFs;
use co9p::fs::host::HostOptions;
use co9p::protocol::*;
use co9p::server::Config;

const MIB: u64 = 1 << 20;
/// Large enough to be mapped (HostFs maps reads of 64 KiB and more).
const COUNT: u32 = 256 * 1024;

/// Byte `i` of the files here, shifted by `seed`.
fn byte(i: u64, seed: u8) -> u8 {
    (i % 251) as u8 ^ seed
}

fn pattern(range: std::ops::Range<u64>, seed: u8) -> Vec<u8> {
    range.map(|i| byte(i, seed)).collect()
}

fn export(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("co9p-mapped-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn server(dir: &std::path::Path, mapped: bool) -> TcpServer {
    let opts = HostOptions {
        no_mapped_reads: !mapped,
        ..HostOptions::default()
    };
    TcpServer::start(Arc::new(HostFs::new(dir, opts).unwrap()), Config::default())
}

/// A session with `data` open for reading and writing as fid 1.
fn open_data(server: &TcpServer) -> client::Client<impl client::Link> {
    let mut c = server.connect();
    assert!(c.version(512 * 1024 + 4096).0 >= COUNT + 11);
    c.attach(Fid(0), "").unwrap();
    c.walk(Fid(0), Fid(1), &["data"]).unwrap();
    c.lopen(Fid(1), OpenFlags::RDWR).unwrap();
    c
}

#[test]
fn mapped_reads_give_the_files_bytes_at_any_offset_and_stop_at_its_end() {
    let dir = export("offsets");
    let len = 3 * MIB + 123;
    std::fs::write(dir.join("data"), pattern(0..len, 0)).unwrap();
    let s = server(&dir, true);
    let mut c = open_data(&s);
    for off in [0, 1, 4095, 100_000, MIB, len - u64::from(COUNT), len - 5000] {
        let got = c.read(Fid(1), off, COUNT).unwrap();
        let end = len.min(off + u64::from(COUNT));
        assert_eq!(got, pattern(off..end, 0), "read at {off}");
    }
    for off in [len, len + 1, 10 * MIB] {
        assert_eq!(c.read(Fid(1), off, COUNT).unwrap(), Vec::<u8>::new());
    }
    // Pipelined: big and small reads interleaved, each reply whole and in its place.
    let offs: Vec<u64> = (0..12).map(|i| i * 250_000 + 7).collect();
    let tags: Vec<(Tag, u64, u32)> = offs
        .iter()
        .enumerate()
        .map(|(i, &off)| {
            let count = if i % 3 == 0 { 100 } else { COUNT };
            let fid = Fid(1);
            (
                c.send(Tmessage::Read {
                    fid,
                    offset: off,
                    count,
                }),
                off,
                count,
            )
        })
        .collect();
    for (tag, off, count) in tags {
        let Some(Rmessage::Read { data }) = c.reply(tag) else {
            panic!("no Rread for the read at {off}")
        };
        let end = len.min(off + u64::from(count));
        assert_eq!(data.0, pattern(off..end, 0), "pipelined read at {off}");
    }
}

#[test]
fn a_file_changed_since_it_was_mapped_reads_as_it_is_now() {
    let dir = export("changed");
    let path = dir.join("data");
    std::fs::write(&path, pattern(0..2 * MIB, 0)).unwrap();
    let s = server(&dir, true);
    let mut c = open_data(&s);
    assert_eq!(c.read(Fid(1), 0, COUNT).unwrap(), pattern(0..256 * 1024, 0));
    // Written through 9P: the mapping shares the page cache, so the next read sees it.
    let new = pattern(1000..1000 + 5000, 0x5a);
    assert_eq!(c.write(Fid(1), 1000, &new).unwrap(), 5000);
    let got = c.read(Fid(1), 0, COUNT).unwrap();
    assert_eq!(&got[1000..6000], &new[..]);
    assert_eq!(&got[..1000], &pattern(0..1000, 0)[..]);
    // Shrunk on the host: a read is cut at the new end.
    let host = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    host.set_len(300_000).unwrap();
    let got = c.read(Fid(1), 200_000, COUNT).unwrap();
    assert_eq!(got, pattern(200_000..300_000, 0));
    assert_eq!(c.read(Fid(1), 300_000, COUNT).unwrap(), Vec::<u8>::new());
    // Grown on the host past what was mapped (a mapping is a window of 128 MiB from a
    // multiple of 64 MiB): mapped again.
    let far = 70 * MIB;
    host.write_all_at(&pattern(far..far + MIB, 3), far).unwrap();
    assert_eq!(
        c.read(Fid(1), far + 10, COUNT).unwrap(),
        pattern(far + 10..far + 10 + u64::from(COUNT), 3)
    );
    // The hole between reads as zeros, as the file says.
    assert_eq!(
        c.read(Fid(1), 40 * MIB, COUNT).unwrap(),
        vec![0u8; COUNT as usize]
    );
    // Far out in a sparse file, and across a window's edge (64 MiB multiples).
    let tera = 1 << 40;
    host.write_all_at(&pattern(tera - MIB..tera, 4), tera - MIB)
        .unwrap();
    for off in [
        tera - MIB,
        tera - u64::from(COUNT) / 2 - 64 * MIB,
        tera - 100,
    ] {
        let end = tera.min(off + u64::from(COUNT));
        let want: Vec<u8> = (off..end)
            .map(|i| if i >= tera - MIB { byte(i, 4) } else { 0 })
            .collect();
        assert_eq!(c.read(Fid(1), off, COUNT).unwrap(), want, "read at {off}");
    }
}

#[test]
fn mapped_and_copied_reads_agree() {
    let dir = export("agree");
    let len = 5 * MIB / 2 + 17;
    std::fs::write(dir.join("data"), pattern(0..len, 9)).unwrap();
    let (a, b) = (server(&dir, true), server(&dir, false));
    let (mut ca, mut cb) = (open_data(&a), open_data(&b));
    let mut off = 0;
    while off <= len {
        let (x, y) = (
            ca.read(Fid(1), off, COUNT).unwrap(),
            cb.read(Fid(1), off, COUNT).unwrap(),
        );
        assert_eq!(x, y, "read at {off}");
        assert_eq!(x, pattern(off..len.min(off + u64::from(COUNT)), 9));
        off += 300_001;
    }
}
