//! HostFs behind the server: directory listings split over many small replies (where the
//! server drops the entries of a batch that do not fit, and HostFs resumes without a seek)
//! list every entry exactly once.

mod client;

use std::sync::Arc;

use client::{Client, InProcess};
use co9p::fs::HostFs;
use co9p::fs::host::HostOptions;
use co9p::protocol::*;
use co9p::server::Config;

#[test]
fn split_readdir_over_host_files_lists_each_entry_once() {
    let dir = std::env::temp_dir().join(format!("co9p-hostfs-server-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("d")).unwrap();
    let mut expected: Vec<String> = (0..300)
        .map(|i| format!("entry-with-a-longer-name-{i:03}"))
        .collect();
    for name in &expected {
        std::fs::write(dir.join("d").join(name), b"x").unwrap();
    }
    expected.push(".".into());
    expected.push("..".into());
    expected.sort();
    let fs = HostFs::new(&dir, HostOptions::default()).unwrap();
    let mut c = Client::new(InProcess::new(Arc::new(fs), Config::default()));
    c.version(65536);
    c.attach(Fid(0), "").unwrap();
    for count in [100, 128, 256, 512, 4096, 65000] {
        let d = c.walk_path(Fid(0), "d").unwrap();
        c.lopen(d, OpenFlags::DIRECTORY).unwrap();
        let mut names: Vec<String> = c
            .readdir_all(d, count)
            .into_iter()
            .map(|e| String::from_utf8(e.name.0).unwrap())
            .collect();
        names.sort();
        assert_eq!(names, expected, "count {count}");
        c.clunk(d).unwrap();
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Whether an open file description holds a lock on `path` that a write lock would hit.
fn write_locked(path: &std::path::Path) -> bool {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    // SAFETY: `flock` is a plain C struct; all-zero is valid, and F_OFD_GETLK fills it.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    // SAFETY: a valid descriptor and a valid `flock`.
    let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) };
    assert_eq!(r, 0, "F_OFD_GETLK");
    fl.l_type != libc::F_UNLCK as libc::c_short
}

/// Answers nothing but, when dropped (sent or not), notes whether `path` is locked then:
/// that is the moment the request is over for whoever waits on it.
struct LockProbe {
    path: std::path::PathBuf,
    seen: Arc<std::sync::Mutex<Vec<bool>>>,
    buf: Vec<u8>,
}

impl co9p::server::Responder for LockProbe {
    fn payload(&mut self, max: usize) -> Vec<std::io::IoSliceMut<'_>> {
        self.buf.resize(PAYLOAD_HEADER_LEN + max, 0);
        vec![std::io::IoSliceMut::new(
            &mut self.buf[PAYLOAD_HEADER_LEN..],
        )]
    }
    fn send_payload(self, _: PayloadReply, _: Tag, _: u32) {}
    fn send(self, _: &Reply) {}
}

impl Drop for LockProbe {
    fn drop(&mut self) {
        self.seen.lock().unwrap().push(write_locked(&self.path));
    }
}

#[test]
fn a_request_cancelled_by_a_closing_connection_lets_go_of_its_files_lock_before_it_ends() {
    let dir = std::env::temp_dir().join(format!("co9p-hostfs-probe-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("data");
    std::fs::write(&data, vec![1u8; 8192]).unwrap();
    let fs = HostFs::new(&dir, HostOptions::default()).unwrap();
    let pool = co9p::co::ThreadPool::new(0);
    let session =
        co9p::server::Session::new(Arc::new(fs), pool.handle(), Arc::new(Config::default()));
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let probe = || LockProbe {
        path: data.clone(),
        seen: seen.clone(),
        buf: Vec::new(),
    };
    let setup = [
        Tmessage::Version {
            msize: 65536,
            version: "9P2000.L".into(),
        },
        Tmessage::Attach {
            fid: Fid(0),
            afid: Fid(u32::MAX),
            uname: "".into(),
            aname: "".into(),
            n_uname: 0,
        },
        Tmessage::Walk {
            fid: Fid(0),
            newfid: Fid(1),
            wnames: vec!["data".into()],
        },
        Tmessage::Lopen {
            fid: Fid(1),
            flags: OpenFlags::RDWR,
        },
        Tmessage::Lock {
            fid: Fid(1),
            lock_type: LockType::Write,
            flags: LockFlags(0),
            start: 0,
            length: 0,
            proc_id: 1,
            client_id: "x".into(),
        },
    ];
    for (i, msg) in setup.into_iter().enumerate() {
        let frame = Pdu::new(Tag(i as u16), msg).to_bytes().unwrap();
        session.submit(&frame, probe()).unwrap();
        pool.run_until_idle();
    }
    // The lock is held (the last probe, dropped with the Rlock, saw it).
    assert_eq!(seen.lock().unwrap().last(), Some(&true));
    seen.lock().unwrap().clear();
    // A read in flight on the locked file when the connection closes.
    let read = Tmessage::Read {
        fid: Fid(1),
        offset: 0,
        count: 4096,
    };
    session
        .submit(&Pdu::new(Tag(9), read).to_bytes().unwrap(), probe())
        .unwrap();
    let ended = session.close();
    pool.run_until_idle();
    assert!(ended.is_open());
    // When the cancelled read let go of its responder, on its way to ending, its hold on
    // the fid was already gone: the file was closed and its lock released.
    assert_eq!(*seen.lock().unwrap(), vec![false]);
    assert!(!write_locked(&data));
    std::fs::remove_dir_all(&dir).unwrap();
}
