//! QEMU's virtio-9p qtest cases (tests/qtest/virtio-9p-test.c), run over the virtio
//! transport: every request is a descriptor chain in guest RAM, laid out as Linux lays it
//! out, through the MMIO registers of a device the harness guest booted. Each case runs
//! over direct chains and over indirect tables.

mod client;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use client::Client;
use client::virtio::{Gate, Virtio};
use co9p::fs::MemFs;
use co9p::fs::hooked::HookedFs;
use co9p::protocol::*;
use co9p::server::Config;

type Fs = client::virtio::GatedFs;

fn client(indirect: bool) -> (Client<Virtio<Fs>>, Arc<Fs>) {
    let fs = Arc::new(HookedFs::new(MemFs::new(), Gate::default()));
    let mut link = Virtio::new(fs.clone(), Config::default());
    link.indirect = indirect;
    (Client::new(link), fs)
}

/// Defines `name::direct` and `name::indirect` from one body.
macro_rules! case {
    ($name:ident, |$c:ident, $fs:ident| $body:block) => {
        mod $name {
            use super::*;
            #[allow(unused_variables, unused_mut)]
            fn body(mut $c: Client<Virtio<Fs>>, $fs: Arc<Fs>) $body
            #[test]
            fn direct() {
                let (c, fs) = client(false);
                body(c, fs);
            }
            #[test]
            fn indirect() {
                let (c, fs) = client(true);
                body(c, fs);
            }
        }
    };
}

const RW: OpenFlags = OpenFlags::RDWR;

/// Every chain the guest sent came back exactly once, and nothing is left in flight.
fn assert_all_completed(c: &mut Client<Virtio<Fs>>) {
    c.link.collect();
    assert_eq!(c.link.guest.in_flight(), 0, "chains still in flight");
    assert_eq!(c.link.guest.unexpected_used(), 0, "stray used entries");
    let s = c.link.device().stats();
    assert_eq!(s.popped, s.completed);
}

// QEMU: "config" — the mount tag in configuration space.
case!(config, |c, fs| {
    assert_eq!(c.link.guest.mount_tag(), b"co9p");
    let len = c.link.guest.read_config(0, 2);
    assert_eq!(u16::from_le_bytes([len[0], len[1]]), 4);
});

case!(version_basic, |c, fs| {
    let (msize, version) = c.version(8192);
    assert_eq!(msize, 8192);
    assert_eq!(version, VERSION_9P2000_L);
    assert_all_completed(&mut c);
});

case!(attach_basic, |c, fs| {
    let qid = c.attach_root();
    assert!(qid.ty.0 & QidType::DIR.0 != 0);
    assert_all_completed(&mut c);
});

case!(walk_basic, |c, fs| {
    c.attach_root();
    // 16 nested directories, then one Twalk through all of them.
    let names: Vec<String> = (0..16).map(|i| format!("walk{i}")).collect();
    let mut dir = Fid(0);
    for (i, n) in names.iter().enumerate() {
        c.mkdir(dir, n, 0o755).unwrap();
        let next = Fid(100 + i as u32);
        c.walk(dir, next, &[n]).unwrap();
        dir = next;
    }
    let refs: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
    let wqids = c.walk(Fid(0), Fid(1), &refs).unwrap();
    assert_eq!(wqids.len(), 16);
    assert!(wqids.iter().all(|q| q.ty.0 & QidType::DIR.0 != 0));
    assert_all_completed(&mut c);
});

case!(walk_no_slash, |c, fs| {
    c.attach_root();
    assert!(c.walk(Fid(0), Fid(1), &[" /"]).is_err());
});

case!(walk_none, |c, fs| {
    let root = c.attach_root();
    assert_eq!(c.walk(Fid(0), Fid(1), &[]).unwrap(), vec![]);
    assert_eq!(c.getattr(Fid(1)).unwrap().qid, root);
});

case!(walk_dotdot_from_root, |c, fs| {
    let root = c.attach_root();
    assert_eq!(c.walk(Fid(0), Fid(1), &[".."]).unwrap(), vec![root]);
});

case!(walk_non_existent, |c, fs| {
    c.attach_root();
    assert_eq!(
        c.walk(Fid(0), Fid(1), &["non-existent"]),
        Err(Errno::ENOENT)
    );
});

case!(walk_2nd_non_existent, |c, fs| {
    c.attach_root();
    c.mkdir(Fid(0), "01", 0o755).unwrap();
    // A partial walk: Rwalk with the qids found, newfid not created.
    let wqids = c.walk(Fid(0), Fid(1), &["01", "non-existent"]).unwrap();
    assert_eq!(wqids.len(), 1);
    assert_eq!(c.getattr(Fid(1)), Err(Errno::ENOENT));
});

case!(lopen_basic, |c, fs| {
    c.attach_root();
    c.walk(Fid(0), Fid(1), &[]).unwrap();
    c.lcreate(Fid(1), "LOpenFile", RW, 0o644).unwrap();
    c.walk(Fid(0), Fid(2), &["LOpenFile"]).unwrap();
    let qid = c.lopen(Fid(2), OpenFlags::RDONLY).unwrap();
    assert_eq!(qid.ty.0 & QidType::DIR.0, 0);
});

case!(write_basic, |c, fs| {
    c.attach_root();
    c.walk(Fid(0), Fid(1), &[]).unwrap();
    c.lcreate(Fid(1), "WriteFile", RW, 0o644).unwrap();
    assert_eq!(c.write(Fid(1), 0, b"\x01").unwrap(), 1);
    // Large enough for Linux's zero-copy write layout: header then payload pages.
    let big: Vec<u8> = (0..6000u32).map(|i| i as u8).collect();
    assert_eq!(c.write(Fid(1), 1, &big).unwrap(), 6000);
    assert_eq!(c.getattr(Fid(1)).unwrap().size, 6001);
    assert_all_completed(&mut c);
});

case!(read_basic, |c, fs| {
    c.version(65536);
    c.attach(Fid(0), "").unwrap();
    c.walk(Fid(0), Fid(1), &[]).unwrap();
    c.lcreate(Fid(1), "ReadFile", RW, 0o644).unwrap();
    let data: Vec<u8> = (0..40_000u32).map(|i| (i * 7) as u8).collect();
    assert_eq!(c.write(Fid(1), 0, &data).unwrap(), 40_000);
    // Small read: plain layout; large: an 11-byte header descriptor, then data pages.
    assert_eq!(c.read(Fid(1), 10, 100).unwrap(), &data[10..110]);
    assert_eq!(c.read(Fid(1), 5, 30_000).unwrap(), &data[5..30_005]);
    assert_eq!(c.read(Fid(1), 39_000, 30_000).unwrap(), &data[39_000..]);
    assert_eq!(c.read(Fid(1), 50_000, 4096).unwrap(), b"");
    assert_all_completed(&mut c);
});

fn readdir_case(c: &mut Client<Virtio<Fs>>, count: u32) {
    c.attach_root();
    c.mkdir(Fid(0), "ReadDirDir", 0o755).unwrap();
    c.walk(Fid(0), Fid(1), &["ReadDirDir"]).unwrap();
    for i in 0..100 {
        c.walk(Fid(1), Fid(2), &[]).unwrap();
        c.lcreate(Fid(2), &format!("ReadDirFile{i}"), RW, 0o644)
            .unwrap();
        c.clunk(Fid(2)).unwrap();
    }
    c.walk(Fid(0), Fid(3), &["ReadDirDir"]).unwrap();
    c.lopen(Fid(3), OpenFlags::DIRECTORY).unwrap();
    let all = c.readdir_all(Fid(3), count);
    let mut names: Vec<String> = all
        .iter()
        .map(|d| String::from_utf8_lossy(&d.name.0).into_owned())
        .collect();
    names.sort();
    let mut want: Vec<String> = (0..100).map(|i| format!("ReadDirFile{i}")).collect();
    want.push(".".into());
    want.push("..".into());
    want.sort();
    assert_eq!(names, want);
    assert_all_completed(c);
}

case!(readdir_basic, |c, fs| { readdir_case(&mut c, 8000) });
case!(readdir_split_512, |c, fs| { readdir_case(&mut c, 512) });
case!(readdir_split_256, |c, fs| { readdir_case(&mut c, 256) });
case!(readdir_split_128, |c, fs| { readdir_case(&mut c, 128) });

case!(flush_success, |c, fs| {
    c.attach_root();
    c.walk(Fid(0), Fid(1), &[]).unwrap();
    c.lcreate(Fid(1), "FlushFile", RW, 0o644).unwrap();
    fs.hook.block_writes.store(true, Ordering::SeqCst);
    let wtag = c.send(Tmessage::Write {
        fid: Fid(1),
        offset: 0,
        data: Data(vec![1]),
    });
    let ftag = c.send(Tmessage::Flush { oldtag: wtag });
    assert_eq!(c.reply(ftag), Some(Rmessage::Flush {}));
    // The flushed write has no reply; its chain came back with a used length of 0.
    assert_eq!(c.reply(wtag), None);
    let zero = c.link.completions.iter().filter(|x| x.len == 0).count();
    assert_eq!(zero, 1);
    fs.hook.block_writes.store(false, Ordering::SeqCst);
    assert_eq!(c.write(Fid(1), 0, b"x").unwrap(), 1);
    assert_all_completed(&mut c);
});

case!(flush_ignored, |c, fs| {
    c.attach_root();
    c.walk(Fid(0), Fid(1), &[]).unwrap();
    c.lcreate(Fid(1), "FlushFile", RW, 0o644).unwrap();
    let wtag = c.send(Tmessage::Write {
        fid: Fid(1),
        offset: 0,
        data: Data(vec![1]),
    });
    // The device runs the write before it sees the flush.
    c.link.pool.run_until_idle();
    let ftag = c.send(Tmessage::Flush { oldtag: wtag });
    // The write completes anyway: its Rwrite comes before the Rflush.
    let replies = c.drain();
    let tags: Vec<u16> = replies.iter().map(|r| r.tag.0).collect();
    assert_eq!(tags, vec![wtag.0, ftag.0]);
    assert_eq!(replies[0].msg, Rmessage::Write { count: 1 });
    assert_all_completed(&mut c);
});

case!(create_dir_and_unlinkat, |c, fs| {
    c.attach_root();
    c.mkdir(Fid(0), "01", 0o755).unwrap();
    c.walk(Fid(0), Fid(1), &["01"]).unwrap();
    c.unlinkat(Fid(0), "01", AT_REMOVEDIR).unwrap();
    assert_eq!(c.walk(Fid(0), Fid(2), &["01"]), Err(Errno::ENOENT));
});

case!(create_file_and_unlinkat, |c, fs| {
    c.attach_root();
    c.walk(Fid(0), Fid(1), &[]).unwrap();
    c.lcreate(Fid(1), "1234", RW, 0o644).unwrap();
    c.unlinkat(Fid(0), "1234", 0).unwrap();
    assert_eq!(c.walk(Fid(0), Fid(2), &["1234"]), Err(Errno::ENOENT));
});

case!(symlink_and_hardlink, |c, fs| {
    c.attach_root();
    c.walk(Fid(0), Fid(1), &[]).unwrap();
    c.lcreate(Fid(1), "real_file", RW, 0o644).unwrap();
    c.symlink(Fid(0), "symlink_file", "real_file").unwrap();
    c.walk(Fid(0), Fid(2), &["symlink_file"]).unwrap();
    assert_eq!(c.readlink(Fid(2)).unwrap(), b"real_file");
    c.walk(Fid(0), Fid(3), &["real_file"]).unwrap();
    c.link(Fid(0), Fid(3), "hardlink_file").unwrap();
    assert_eq!(c.getattr(Fid(3)).unwrap().nlink, 2);
    c.unlinkat(Fid(0), "hardlink_file", 0).unwrap();
    assert_eq!(c.getattr(Fid(3)).unwrap().nlink, 1);
    assert_all_completed(&mut c);
});
