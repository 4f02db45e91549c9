//! A 9P2000.L test client that can talk to the server over any link: in process (the
//! session driven on the caller's thread, deterministic), or over a real socket. The
//! ported QEMU cases are written once against [`Client`] and run over every link.
#![allow(dead_code)]

pub mod vhost;
pub mod vhost_front;
pub mod virtio;

use std::collections::{BTreeMap, VecDeque};
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use co9p::co::{PoolHandle, ThreadPool};
use co9p::fs::Filesystem;
use co9p::protocol::*;
use co9p::server::{Config, Responder, Session};

pub mod fixture;

/// Moves frames between the test and a server.
pub trait Link {
    fn send(&mut self, frame: Vec<u8>);
    /// The next reply frame, or `None` if none is coming (in process: the server is idle;
    /// over a socket: nothing within a timeout, or the connection closed).
    fn recv(&mut self) -> Option<Vec<u8>>;
    /// Gives the server time to finish what it can before the next frame (in process: run
    /// it until idle; over a socket: a short pause).
    fn settle(&mut self) {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A link chosen at run time (a test that runs one case over several backends).
impl Link for Box<dyn Link> {
    fn send(&mut self, frame: Vec<u8>) {
        (**self).send(frame)
    }
    fn recv(&mut self) -> Option<Vec<u8>> {
        (**self).recv()
    }
    fn settle(&mut self) {
        (**self).settle()
    }
}

/// Replies of an in-process session, in the order they were sent.
#[derive(Clone, Default)]
pub struct Outbox(pub Arc<Mutex<VecDeque<Vec<u8>>>>);

pub struct OutboxResponder {
    out: Outbox,
    buf: Vec<u8>,
}

impl Responder for OutboxResponder {
    fn payload(&mut self, max: usize) -> Vec<std::io::IoSliceMut<'_>> {
        self.buf.resize(PAYLOAD_HEADER_LEN + max, 0);
        vec![std::io::IoSliceMut::new(
            &mut self.buf[PAYLOAD_HEADER_LEN..],
        )]
    }
    fn send_payload(mut self, kind: PayloadReply, tag: Tag, count: u32) {
        self.buf.truncate(PAYLOAD_HEADER_LEN + count as usize);
        encode_payload_header(kind, tag, count, &mut self.buf).unwrap();
        self.out
            .0
            .lock()
            .unwrap()
            .push_back(std::mem::take(&mut self.buf));
    }
    fn send(self, reply: &Reply) {
        self.out
            .0
            .lock()
            .unwrap()
            .push_back(reply.to_bytes().unwrap());
    }
}

/// A session on a zero-thread pool: everything runs inside `recv`, on the test's thread.
pub struct InProcess<F: Filesystem> {
    pub pool: ThreadPool,
    pub session: Session<F, PoolHandle, OutboxResponder>,
    pub out: Outbox,
    /// While set, sent frames are only queued: the server runs at the next `recv`, so
    /// requests can be made to arrive "at once".
    pub batching: bool,
}

impl<F: Filesystem> InProcess<F> {
    pub fn new(fs: Arc<F>, config: Config) -> Self {
        let pool = ThreadPool::new(0);
        let session = Session::new(fs, pool.handle(), Arc::new(config));
        InProcess {
            pool,
            session,
            out: Outbox::default(),
            batching: false,
        }
    }
}

impl<F: Filesystem> Link for InProcess<F> {
    /// Submits the frame and, unless batching, lets the server run until it is idle: the
    /// device handles a request when it arrives, as QEMU's does on each kick.
    fn send(&mut self, frame: Vec<u8>) {
        let r = OutboxResponder {
            out: self.out.clone(),
            buf: Vec::new(),
        };
        self.session.submit(&frame, r).expect("frame with a header");
        if !self.batching {
            self.pool.run_until_idle();
        }
    }
    fn recv(&mut self) -> Option<Vec<u8>> {
        if self.out.0.lock().unwrap().is_empty() {
            self.pool.run_until_idle();
        }
        self.out.0.lock().unwrap().pop_front()
    }
    fn settle(&mut self) {
        self.pool.run_until_idle();
    }
}

/// A socket (tcp or unix) to a running server.
pub struct Socket<S: Read + Write>(pub S);

impl<S: Read + Write> Link for Socket<S> {
    fn send(&mut self, frame: Vec<u8>) {
        self.0.write_all(&frame).expect("send");
    }
    fn recv(&mut self) -> Option<Vec<u8>> {
        let mut size = [0u8; 4];
        self.0.read_exact(&mut size).ok()?;
        let mut frame = vec![0u8; frame_size(size) as usize];
        frame[..4].copy_from_slice(&size);
        self.0.read_exact(&mut frame[4..]).ok()?;
        Some(frame)
    }
}

/// Connects to a tcp server with a read timeout, so a missing reply fails a test instead
/// of hanging it.
pub fn tcp(addr: &str) -> Socket<std::net::TcpStream> {
    let s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_nodelay(true).unwrap();
    Socket(s)
}

/// The client: tags, out-of-order replies, and one method per message.
pub struct Client<L: Link> {
    pub link: L,
    next_tag: u16,
    stash: BTreeMap<u16, Reply>,
    pub msize: u32,
    next_fid: u32,
}

impl<L: Link> Client<L> {
    pub fn new(link: L) -> Self {
        Client {
            link,
            next_tag: 1,
            stash: BTreeMap::new(),
            msize: 8192,
            next_fid: 1000,
        }
    }

    pub fn fresh_tag(&mut self) -> Tag {
        let t = self.next_tag;
        self.next_tag = if t >= 0xfff0 { 1 } else { t + 1 };
        Tag(t)
    }

    /// Sends without waiting; returns the tag.
    pub fn send(&mut self, msg: Tmessage) -> Tag {
        let tag = self.fresh_tag();
        self.send_tagged(tag, msg);
        tag
    }

    pub fn send_tagged(&mut self, tag: Tag, msg: Tmessage) {
        self.link.send(Request::new(tag, msg).to_bytes().unwrap());
    }

    /// The reply to `tag`, receiving (and keeping) others that come first; `None` if the
    /// server has nothing more to say.
    pub fn reply(&mut self, tag: Tag) -> Option<Rmessage> {
        self.wait_for(tag)
            .then(|| self.stash.remove(&tag.0).expect("received").msg)
    }

    /// Receives until the reply to `tag` is here, keeping it (and others that come first)
    /// for [`Self::reply`]: then the request is known to have ended. `false` if the server
    /// has nothing more to say.
    pub fn wait_for(&mut self, tag: Tag) -> bool {
        while !self.stash.contains_key(&tag.0) {
            let Some(frame) = self.link.recv() else {
                return false;
            };
            assert!(
                frame.len() <= self.msize as usize,
                "reply of {} bytes exceeds msize {}",
                frame.len(),
                self.msize
            );
            let reply = Reply::decode(&frame, u32::MAX).expect("server sent a malformed reply");
            assert!(
                self.stash.insert(reply.tag.0, reply).is_none(),
                "two replies for one tag"
            );
        }
        true
    }

    /// Every reply received so far or now, in order of arrival among the fresh ones.
    pub fn drain(&mut self) -> Vec<Reply> {
        let mut v: Vec<Reply> = std::mem::take(&mut self.stash).into_values().collect();
        while let Some(frame) = self.link.recv() {
            v.push(Reply::decode(&frame, u32::MAX).unwrap());
        }
        v
    }

    pub fn rpc(&mut self, msg: Tmessage) -> Rmessage {
        let tag = self.send(msg);
        self.reply(tag).expect("no reply")
    }

    /// Like `rpc`, but an `Rlerror` becomes `Err`.
    pub fn call(&mut self, msg: Tmessage) -> Result<Rmessage, Errno> {
        match self.rpc(msg) {
            Rmessage::Lerror { ecode } => Err(ecode),
            r => Ok(r),
        }
    }

    pub fn version(&mut self, msize: u32) -> (u32, String) {
        let tag = Tag::NOTAG;
        self.send_tagged(
            tag,
            Tmessage::Version {
                msize,
                version: VERSION_9P2000_L.into(),
            },
        );
        match self.reply(tag).expect("Rversion") {
            Rmessage::Version { msize, version } => {
                self.msize = msize;
                (msize, version.to_str().unwrap_or("?").to_string())
            }
            r => panic!("expected Rversion, got {r:?}"),
        }
    }

    /// Tversion then Tattach of `fid` 0 to the root, as QEMU's tests do.
    pub fn attach_root(&mut self) -> Qid {
        self.version(8192);
        self.attach(Fid(0), "").expect("attach")
    }

    pub fn attach(&mut self, fid: Fid, aname: &str) -> Result<Qid, Errno> {
        match self.call(Tmessage::Attach {
            fid,
            afid: Fid::NOFID,
            uname: "root".into(),
            aname: aname.into(),
            n_uname: 0,
        })? {
            Rmessage::Attach { qid } => Ok(qid),
            r => panic!("expected Rattach, got {r:?}"),
        }
    }

    pub fn walk(&mut self, fid: Fid, newfid: Fid, names: &[&str]) -> Result<Vec<Qid>, Errno> {
        let wnames = names.iter().map(|n| P9String::from(*n)).collect();
        match self.call(Tmessage::Walk {
            fid,
            newfid,
            wnames,
        })? {
            Rmessage::Walk { wqids } => Ok(wqids),
            r => panic!("expected Rwalk, got {r:?}"),
        }
    }

    pub fn lopen(&mut self, fid: Fid, flags: OpenFlags) -> Result<Qid, Errno> {
        match self.call(Tmessage::Lopen { fid, flags })? {
            Rmessage::Lopen { qid, .. } => Ok(qid),
            r => panic!("expected Rlopen, got {r:?}"),
        }
    }

    pub fn lcreate(
        &mut self,
        fid: Fid,
        name: &str,
        flags: OpenFlags,
        mode: u32,
    ) -> Result<Qid, Errno> {
        match self.call(Tmessage::Lcreate {
            fid,
            name: name.into(),
            flags,
            mode,
            gid: 0,
        })? {
            Rmessage::Lcreate { qid, .. } => Ok(qid),
            r => panic!("expected Rlcreate, got {r:?}"),
        }
    }

    pub fn write(&mut self, fid: Fid, offset: u64, data: &[u8]) -> Result<u32, Errno> {
        match self.call(Tmessage::Write {
            fid,
            offset,
            data: Data(data.to_vec()),
        })? {
            Rmessage::Write { count } => Ok(count),
            r => panic!("expected Rwrite, got {r:?}"),
        }
    }

    pub fn read(&mut self, fid: Fid, offset: u64, count: u32) -> Result<Vec<u8>, Errno> {
        match self.call(Tmessage::Read { fid, offset, count })? {
            Rmessage::Read { data } => Ok(data.0),
            r => panic!("expected Rread, got {r:?}"),
        }
    }

    pub fn readdir(&mut self, fid: Fid, offset: u64, count: u32) -> Result<Vec<Dirent>, Errno> {
        match self.call(Tmessage::Readdir { fid, offset, count })? {
            Rmessage::Readdir { entries } => Ok(entries.0),
            r => panic!("expected Rreaddir, got {r:?}"),
        }
    }

    /// Reads a whole directory in requests of `count` bytes.
    pub fn readdir_all(&mut self, fid: Fid, count: u32) -> Vec<Dirent> {
        let mut all = Vec::new();
        let mut offset = 0;
        loop {
            let page = self.readdir(fid, offset, count).expect("readdir");
            match page.last() {
                None => return all,
                Some(last) => offset = last.offset,
            }
            all.extend(page);
        }
    }

    pub fn clunk(&mut self, fid: Fid) -> Result<(), Errno> {
        self.call(Tmessage::Clunk { fid }).map(|_| ())
    }

    pub fn mkdir(&mut self, dfid: Fid, name: &str, mode: u32) -> Result<Qid, Errno> {
        match self.call(Tmessage::Mkdir {
            dfid,
            name: name.into(),
            mode,
            gid: 0,
        })? {
            Rmessage::Mkdir { qid } => Ok(qid),
            r => panic!("expected Rmkdir, got {r:?}"),
        }
    }

    pub fn symlink(&mut self, fid: Fid, name: &str, target: &str) -> Result<Qid, Errno> {
        match self.call(Tmessage::Symlink {
            fid,
            name: name.into(),
            symtgt: target.into(),
            gid: 0,
        })? {
            Rmessage::Symlink { qid } => Ok(qid),
            r => panic!("expected Rsymlink, got {r:?}"),
        }
    }

    pub fn link(&mut self, dfid: Fid, fid: Fid, name: &str) -> Result<(), Errno> {
        self.call(Tmessage::Link {
            dfid,
            fid,
            name: name.into(),
        })
        .map(|_| ())
    }

    pub fn unlinkat(&mut self, dirfid: Fid, name: &str, flags: u32) -> Result<(), Errno> {
        self.call(Tmessage::Unlinkat {
            dirfid,
            name: name.into(),
            flags,
        })
        .map(|_| ())
    }

    pub fn getattr(&mut self, fid: Fid) -> Result<Attr, Errno> {
        match self.call(Tmessage::Getattr {
            fid,
            request_mask: GetattrMask::ALL,
        })? {
            Rmessage::Getattr { attr } => Ok(attr),
            r => panic!("expected Rgetattr, got {r:?}"),
        }
    }

    pub fn readlink(&mut self, fid: Fid) -> Result<Vec<u8>, Errno> {
        match self.call(Tmessage::Readlink { fid })? {
            Rmessage::Readlink { target } => Ok(target.0),
            r => panic!("expected Rreadlink, got {r:?}"),
        }
    }
}

impl<L: Link> Client<L> {
    /// Whether a reply to `tag` has already arrived (without waiting for one).
    pub fn has_reply(&self, tag: Tag) -> bool {
        self.stash.contains_key(&tag.0)
    }

    /// Walks from `fid` along a slash-separated path to a fresh fid.
    pub fn walk_path(&mut self, fid: Fid, path: &str) -> Result<Fid, Errno> {
        let newfid = self.fresh_fid();
        let names: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let qids = self.walk(fid, newfid, &names)?;
        if qids.len() != names.len() {
            return Err(Errno::ENOENT);
        }
        Ok(newfid)
    }

    /// `stat` through the protocol: walk from the root fid 0, getattr, clunk.
    pub fn stat(&mut self, path: &str) -> Result<Attr, Errno> {
        let fid = self.walk_path(Fid(0), path)?;
        let attr = self.getattr(fid);
        self.clunk(fid).unwrap();
        attr
    }

    /// A fid number not used by the tests' fixed fids.
    pub fn fresh_fid(&mut self) -> Fid {
        self.next_fid += 1;
        Fid(self.next_fid)
    }
}
