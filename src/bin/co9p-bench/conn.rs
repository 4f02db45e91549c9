//! One 9P connection: framing, a reusable buffer, request helpers.

use super::*;

/// One 9P connection: buffered halves of a socket and a reusable frame buffer.
pub(super) struct Conn {
    pub(super) r: BufReader<Box<dyn Read + Send>>,
    pub(super) w: BufWriter<Box<dyn Write + Send>>,
    pub(super) msize: u32,
    pub(super) frame: Vec<u8>,
    pub(super) scratch: Vec<u8>,
}

impl Conn {
    pub(super) fn connect(addr: &str) -> Res<Conn> {
        let (r, w): (Box<dyn Read + Send>, Box<dyn Write + Send>) =
            if let Some(a) = addr.strip_prefix("tcp:") {
                let s = TcpStream::connect(a).map_err(|e| format!("connect {addr}: {e}"))?;
                s.set_nodelay(true).map_err(|e| e.to_string())?;
                s.set_read_timeout(Some(IO_TIMEOUT))
                    .map_err(|e| e.to_string())?;
                (
                    Box::new(s.try_clone().map_err(|e| e.to_string())?),
                    Box::new(s),
                )
            } else if let Some(p) = addr.strip_prefix("unix:") {
                let s = UnixStream::connect(p).map_err(|e| format!("connect {addr}: {e}"))?;
                s.set_read_timeout(Some(IO_TIMEOUT))
                    .map_err(|e| e.to_string())?;
                (
                    Box::new(s.try_clone().map_err(|e| e.to_string())?),
                    Box::new(s),
                )
            } else {
                return Err(format!("address {addr}: want tcp:HOST:PORT or unix:PATH"));
            };
        Ok(Conn {
            // Small, so a large reply is read mostly straight into `frame`: what the buffer
            // holds when the frame's size is read is copied a second time, and with 256 KiB
            // that was up to a quarter of every 1 MiB Rread (client CPU the server shares
            // this machine with). 16 KiB still takes a whole batch of small replies at once.
            r: BufReader::with_capacity(16 * 1024, r),
            w: BufWriter::with_capacity(64 * 1024, w),
            msize: 8192,
            frame: Vec::new(),
            scratch: Vec::new(),
        })
    }

    /// Version and attach (fid 0 = the root).
    pub(super) fn handshake(addr: &str, aname: &str, msize: u32) -> Res<Conn> {
        let mut c = Conn::connect(addr)?;
        c.msize = msize;
        let v = Tmessage::Version {
            msize,
            version: VERSION_9P2000_L.into(),
        };
        match c.rpc_tagged(Tag::NOTAG, v)? {
            Rmessage::Version { msize, version } if version.as_bytes() == b"9P2000.L" => {
                c.msize = msize
            }
            r => return Err(format!("Tversion: {r:?}")),
        }
        c.rpc(Tmessage::Attach {
            fid: ROOT,
            afid: Fid::NOFID,
            uname: "root".into(),
            aname: aname.into(),
            n_uname: 0,
        })?;
        Ok(c)
    }

    pub(super) fn send(&mut self, tag: Tag, msg: Tmessage) -> Res<()> {
        let req = Request::new(tag, msg);
        self.scratch.resize(req.encoded_len(), 0);
        req.encode(&mut self.scratch).map_err(|e| e.to_string())?;
        self.w.write_all(&self.scratch).map_err(|e| e.to_string())
    }

    pub(super) fn flush(&mut self) -> Res<()> {
        self.w.flush().map_err(|e| format!("send: {e}"))
    }

    /// Reads one reply frame into `self.frame`; returns its tag.
    pub(super) fn recv(&mut self) -> Res<Tag> {
        if self.r.buffer().is_empty() {
            self.flush()?;
        }
        let mut size = [0u8; 4];
        self.r
            .read_exact(&mut size)
            .map_err(|e| format!("recv: {e}"))?;
        let n = frame_size(size) as usize;
        if n < HEADER_LEN || n > self.msize as usize {
            return Err(format!("reply of {n} bytes (msize {})", self.msize));
        }
        self.frame.resize(n, 0);
        self.frame[..4].copy_from_slice(&size);
        self.r
            .read_exact(&mut self.frame[4..])
            .map_err(|e| format!("recv: {e}"))?;
        Ok(Tag(u16::from_le_bytes([self.frame[5], self.frame[6]])))
    }

    /// Decodes the frame in hand; an Rlerror becomes an error.
    pub(super) fn decoded(&self) -> Res<Rmessage> {
        match Reply::decode(&self.frame, self.msize) {
            Ok(Pdu {
                msg: Rmessage::Lerror { ecode },
                ..
            }) => Err(format!("Rlerror {:?}", ecode)),
            Ok(r) => Ok(r.msg),
            Err(e) => Err(format!("bad reply: {e}")),
        }
    }

    /// The byte count of the Rread in hand, without copying its data out.
    pub(super) fn read_count(&self) -> Res<u32> {
        if self.frame[4] != 117 {
            return self
                .decoded()
                .and_then(|r| Err(format!("want Rread, got {r:?}")));
        }
        let mut r = Reader::new(&self.frame[HEADER_LEN..]);
        let count = u32::decode(&mut r).map_err(|e| e.to_string())?;
        if count as usize != self.frame.len() - PAYLOAD_HEADER_LEN {
            return Err("Rread count does not match its frame".into());
        }
        Ok(count)
    }

    pub(super) fn rpc_tagged(&mut self, tag: Tag, msg: Tmessage) -> Res<Rmessage> {
        let what = msg.name();
        self.send(tag, msg)?;
        let got = self.recv()?;
        if got != tag {
            return Err(format!("reply tag {got:?}, want {tag:?}"));
        }
        self.decoded().map_err(|e| format!("{what}: {e}"))
    }

    pub(super) fn rpc(&mut self, msg: Tmessage) -> Res<Rmessage> {
        self.rpc_tagged(Tag(1), msg)
    }

    /// Sends every message with up to 64 in flight; fails on the first error reply.
    pub(super) fn batch(&mut self, msgs: impl IntoIterator<Item = Tmessage>) -> Res<()> {
        let mut inflight = 0;
        for (i, m) in msgs.into_iter().enumerate() {
            if inflight == 64 {
                self.recv()?;
                self.decoded()?;
                inflight -= 1;
            }
            self.send(Tag((i % 4096) as u16), m)?;
            inflight += 1;
        }
        for _ in 0..inflight {
            self.recv()?;
            self.decoded()?;
        }
        Ok(())
    }

    pub(super) fn walk(&mut self, fid: Fid, newfid: Fid, path: &[&str]) -> Res<()> {
        let wnames = path.iter().map(|&n| n.into()).collect();
        match self.rpc(Tmessage::Walk {
            fid,
            newfid,
            wnames,
        })? {
            Rmessage::Walk { wqids } if wqids.len() == path.len() => Ok(()),
            r => Err(format!("walk {path:?}: {r:?}")),
        }
    }

    pub(super) fn clunk(&mut self, fid: Fid) -> Res<()> {
        self.rpc(Tmessage::Clunk { fid }).map(drop)
    }

    /// Creates (empty) or removes the files `name(i)` for `i` in `range` in the directory
    /// `dir`, 64 at a time: their walks, then their creates and clunks, or their removes,
    /// each a pipelined batch.
    pub(super) fn files(
        &mut self,
        op: FilesOp,
        dir: Fid,
        range: std::ops::Range<u64>,
        name: impl Fn(u64) -> String,
    ) -> Res<()> {
        let fid = |i: u64| Fid(1000 + (i % 64) as u32);
        let all: Vec<u64> = range.collect();
        for group in all.chunks(64) {
            self.batch(group.iter().map(|&i| Tmessage::Walk {
                fid: dir,
                newfid: fid(i),
                wnames: match op {
                    FilesOp::Create => vec![],
                    FilesOp::Remove => vec![name(i).as_str().into()],
                },
            }))?;
            match op {
                FilesOp::Create => {
                    self.batch(group.iter().map(|&i| Tmessage::Lcreate {
                        fid: fid(i),
                        name: name(i).as_str().into(),
                        flags: OpenFlags::WRONLY,
                        mode: 0o644,
                        gid: 0,
                    }))?;
                    self.batch(group.iter().map(|&i| Tmessage::Clunk { fid: fid(i) }))?;
                }
                FilesOp::Remove => {
                    self.batch(group.iter().map(|&i| Tmessage::Remove { fid: fid(i) }))?
                }
            }
        }
        Ok(())
    }
}

pub(super) fn getattr_basic(fid: Fid) -> Tmessage {
    Tmessage::Getattr {
        fid,
        request_mask: GetattrMask::BASIC,
    }
}

/// What [`Conn::files`] does to each file.
#[derive(Clone, Copy)]
pub(super) enum FilesOp {
    Create,
    Remove,
}
