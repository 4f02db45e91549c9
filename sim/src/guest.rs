//! A guest client: its view of its fids (the model's per-client fid table, updated when a
//! reply shows an effect), which fids its requests in flight hold, and the workload that
//! picks its next request.
//!
//! Pipelining is free except where two requests in flight would make the fid table depend
//! on an order the client cannot know: a request that changes a fid (walk onto it, open,
//! create, xattrcreate) holds it alone; a clunk waits for no one on the fid itself (Tclunk
//! is a barrier the server must honour) but only for requests using it as a second fid,
//! which the server does not order against the clunk.

use std::collections::{BTreeMap, BTreeSet};

use co9p::protocol::{
    AT_REMOVEDIR, Data, Fid, GetattrMask, LockFlags, LockType, OpenFlags, P9String, SetAttr,
    SetattrMask, Tmessage, VERSION_9P2000_L,
};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;

use crate::model::{Content, Model, NodeId};

/// What a fid refers to, in the model.
#[derive(Debug, Clone)]
pub enum FidOpen {
    Closed,
    File {
        flags: OpenFlags,
        owner: u64,
    },
    XattrRead(Vec<u8>),
    XattrWrite {
        name: Vec<u8>,
        flags: u32,
        value: Vec<u8>,
        written: usize,
    },
}

#[derive(Debug, Clone)]
pub struct MFid {
    pub node: NodeId,
    pub open: FidOpen,
}

impl MFid {
    pub fn is_closed(&self) -> bool {
        matches!(self.open, FidOpen::Closed)
    }
}

/// How requests in flight use a fid.
#[derive(Debug, Clone, Copy, Default)]
pub struct Claim {
    /// Requests using it as their primary fid (ordered by its barrier).
    pub primary: u32,
    /// Requests using it as a second fid (not ordered against a clunk).
    pub secondary: u32,
    /// A request that changes it is in flight.
    pub exclusive: bool,
    /// A Tclunk of it is in flight: nothing more may use it.
    pub closing: bool,
}

/// Which fids a request uses and how.
#[derive(Debug, Clone, Default)]
pub struct Uses {
    pub primary: Vec<u32>,
    pub secondary: Vec<u32>,
    pub exclusive: Vec<u32>,
    pub closing: Vec<u32>,
}

/// Operation kinds a seed may switch on (swarm testing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum OpKind {
    Walk,
    Create,
    Open,
    Read,
    Write,
    Readdir,
    Fsync,
    Mkdir,
    Symlink,
    Readlink,
    Link,
    Rename,
    Unlink,
    Getattr,
    Setattr,
    XattrGet,
    XattrSet,
    Lock,
    Clunk,
}

pub const ALL_OPS: [OpKind; 19] = [
    OpKind::Walk,
    OpKind::Create,
    OpKind::Open,
    OpKind::Read,
    OpKind::Write,
    OpKind::Readdir,
    OpKind::Fsync,
    OpKind::Mkdir,
    OpKind::Symlink,
    OpKind::Readlink,
    OpKind::Link,
    OpKind::Rename,
    OpKind::Unlink,
    OpKind::Getattr,
    OpKind::Setattr,
    OpKind::XattrGet,
    OpKind::XattrSet,
    OpKind::Lock,
    OpKind::Clunk,
];

const NAMES: [&str; 5] = ["a", "b", "c", "d", "e"];
/// Fids 0 (root), 1 (private dir), 2 (shared dir) stay for the whole session.
pub const PERSISTENT: u32 = 3;

pub struct Guest {
    pub id: usize,
    /// Index of its current connection.
    pub conn: usize,
    /// The model's fid table for this client.
    pub fids: BTreeMap<u32, MFid>,
    pub claims: BTreeMap<u32, Claim>,
    /// Tags in use (in flight, or flushed and not yet answered).
    pub tags: BTreeSet<u16>,
    next_tag: u16,
    /// Negotiated msize (0 until Rversion).
    pub msize: u32,
    /// msize this client asks for.
    pub want_msize: u32,
    /// Most requests in flight.
    pub depth: usize,
    /// A Tversion is in flight.
    pub versioning: bool,
    /// Next readdir offset per fid.
    pub cursor: BTreeMap<u32, u64>,
    /// Requests in flight (not Tflush).
    pub inflight: usize,
    /// Send Tclunk while other requests on the fid are in flight.
    pub pipelined_clunk: bool,
}

impl Guest {
    pub fn new(id: usize, conn: usize, want_msize: u32, depth: usize) -> Guest {
        Guest {
            id,
            conn,
            fids: BTreeMap::new(),
            claims: BTreeMap::new(),
            tags: BTreeSet::new(),
            next_tag: 1,
            msize: 0,
            want_msize,
            depth,
            versioning: false,
            cursor: BTreeMap::new(),
            inflight: 0,
            pipelined_clunk: false,
        }
    }

    /// A free tag (never NOTAG).
    pub fn tag(&mut self) -> u16 {
        loop {
            let t = self.next_tag;
            self.next_tag = if t >= 200 { 1 } else { t + 1 };
            if !self.tags.contains(&t) {
                self.tags.insert(t);
                return t;
            }
        }
    }

    /// A new session (Tversion or reconnect): no fids, no claims.
    pub fn reset(&mut self, conn: usize) {
        self.conn = conn;
        self.fids.clear();
        self.claims.clear();
        self.cursor.clear();
        self.msize = 0;
        self.inflight = 0;
    }

    pub fn can_use(&self, u: &Uses) -> bool {
        let c = |f: &u32| self.claims.get(f).copied().unwrap_or_default();
        u.primary.iter().all(|f| !c(f).exclusive && !c(f).closing)
            && u.secondary.iter().all(|f| !c(f).exclusive && !c(f).closing)
            && u.exclusive.iter().all(|f| {
                let c = c(f);
                !c.exclusive && !c.closing && c.primary == 0 && c.secondary == 0
            })
            && u.closing
                .iter()
                .all(|f| !c(f).exclusive && !c(f).closing && c(f).secondary == 0)
    }

    pub fn claim(&mut self, u: &Uses, on: bool) {
        let d: i64 = if on { 1 } else { -1 };
        for f in &u.primary {
            let c = self.claims.entry(*f).or_default();
            c.primary = (c.primary as i64 + d) as u32;
        }
        for f in &u.secondary {
            let c = self.claims.entry(*f).or_default();
            c.secondary = (c.secondary as i64 + d) as u32;
        }
        for f in &u.exclusive {
            self.claims.entry(*f).or_default().exclusive = on;
        }
        for f in &u.closing {
            self.claims.entry(*f).or_default().closing = on;
        }
        self.claims
            .retain(|_, c| c.primary > 0 || c.secondary > 0 || c.exclusive || c.closing);
    }

    /// The setup request still missing, if any: Tversion, attach, the two directories.
    pub fn setup(&self) -> Option<(Tmessage, Uses)> {
        let walk = |newfid: u32, name: &str| Tmessage::Walk {
            fid: Fid(0),
            newfid: Fid(newfid),
            wnames: vec![P9String::from(name)],
        };
        if self.msize == 0 {
            return Some((
                Tmessage::Version {
                    msize: self.want_msize,
                    version: VERSION_9P2000_L.into(),
                },
                Uses::default(),
            ));
        }
        let excl = |f: u32| Uses {
            exclusive: vec![f],
            ..Uses::default()
        };
        if !self.fids.contains_key(&0) {
            return Some((
                Tmessage::Attach {
                    fid: Fid(0),
                    afid: Fid::NOFID,
                    uname: "sim".into(),
                    aname: "".into(),
                    n_uname: 0,
                },
                excl(0),
            ));
        }
        if !self.fids.contains_key(&1) {
            let mut u = excl(1);
            u.primary.push(0);
            return Some((walk(1, &format!("c{}", self.id)), u));
        }
        if !self.fids.contains_key(&2) {
            let mut u = excl(2);
            u.primary.push(0);
            return Some((walk(2, "shared"), u));
        }
        None
    }

    fn free_fid(&self, rng: &mut ChaCha8Rng) -> Option<u32> {
        let f = rng.random_range(PERSISTENT + 10..PERSISTENT + 30);
        (!self.fids.contains_key(&f) && !self.claims.contains_key(&f)).then_some(f)
    }

    fn pick(&self, rng: &mut ChaCha8Rng, keep: impl Fn(u32, &MFid) -> bool) -> Option<u32> {
        let v: Vec<u32> = self
            .fids
            .iter()
            .filter(|(f, m)| keep(**f, m))
            .map(|(f, _)| *f)
            .collect();
        (!v.is_empty()).then(|| v[rng.random_range(0..v.len())])
    }

    /// A directory fid (a known directory node): the private, shared or root one, or any
    /// walked fid the model knows is a directory.
    fn dir_fid(&self, rng: &mut ChaCha8Rng, model: &Model) -> Option<u32> {
        if rng.random_bool(0.7) {
            return Some(rng.random_range(1..PERSISTENT));
        }
        // Never the export root: its entries (`shared`, `cN`) stay put.
        self.pick(rng, |_, m| {
            m.is_closed() && m.node != crate::model::ROOT && model.node(m.node).is_dir()
        })
    }

    /// Mostly a name that exists in the directory of `fid`, else any name.
    fn name_in(&self, rng: &mut ChaCha8Rng, model: &Model, fid: u32) -> P9String {
        if let Some(d) = self.fids.get(&fid).and_then(|m| model.node(m.node).dir())
            && !d.by_name.is_empty()
            && rng.random_bool(0.75)
        {
            let names: Vec<&Vec<u8>> = d.by_name.keys().collect();
            return P9String(names[rng.random_range(0..names.len())].clone());
        }
        P9String::from(NAMES[rng.random_range(0..NAMES.len())])
    }

    /// A clone of the private or shared directory into a fresh fid.
    fn clone_dir(&self, rng: &mut ChaCha8Rng) -> Option<(Tmessage, Uses)> {
        let from = rng.random_range(1..PERSISTENT);
        let newfid = self.free_fid(rng)?;
        Some((
            Tmessage::Walk {
                fid: Fid(from),
                newfid: Fid(newfid),
                wnames: Vec::new(),
            },
            Uses {
                primary: vec![from],
                exclusive: vec![newfid],
                ..Uses::default()
            },
        ))
    }

    /// The next request of the workload, or `None` if the chosen kind does not fit now.
    pub fn next_op(
        &mut self,
        rng: &mut ChaCha8Rng,
        ops: &[OpKind],
        model: &Model,
    ) -> Option<(Tmessage, Uses)> {
        let is_file = |n: NodeId| matches!(model.node(n).content, Content::File(_));
        let is_dir = |n: NodeId| model.node(n).is_dir();
        let name = |rng: &mut ChaCha8Rng| P9String::from(NAMES[rng.random_range(0..NAMES.len())]);
        let mut kind = ops[rng.random_range(0..ops.len())];
        // Keep the fid table small: past 12 fids, clunk.
        if self.fids.len() > 12 && ops.contains(&OpKind::Clunk) {
            kind = OpKind::Clunk;
        }
        let msize = self.msize;
        let u = |p: &[u32], s: &[u32], x: &[u32], c: &[u32]| Uses {
            primary: p.to_vec(),
            secondary: s.to_vec(),
            exclusive: x.to_vec(),
            closing: c.to_vec(),
        };
        let nonpersistent = |f: u32| f >= PERSISTENT;
        let op = match kind {
            OpKind::Walk => {
                let from = if rng.random_bool(0.8) {
                    self.pick(rng, |_, m| m.is_closed() && is_dir(m.node))?
                } else {
                    self.pick(rng, |_, m| m.is_closed())?
                };
                let newfid = if rng.random_bool(0.1) && nonpersistent(from) {
                    from
                } else {
                    self.free_fid(rng)?
                };
                let n = [0, 1, 1, 1, 2][rng.random_range(0..5)];
                let mut wnames: Vec<P9String> = (0..n).map(|_| name(rng)).collect();
                if n >= 1 {
                    wnames[0] = self.name_in(rng, model, from);
                }
                let uses = if newfid == from {
                    u(&[], &[], &[from], &[])
                } else {
                    u(&[from], &[], &[newfid], &[])
                };
                (
                    Tmessage::Walk {
                        fid: Fid(from),
                        newfid: Fid(newfid),
                        wnames,
                    },
                    uses,
                )
            }
            OpKind::Create => {
                // Creating turns the fid into the new file: use a walked clone.
                let Some(f) = self.pick(rng, |f, m| {
                    nonpersistent(f)
                        && m.is_closed()
                        && is_dir(m.node)
                        && m.node != crate::model::ROOT
                }) else {
                    return self.clone_dir(rng);
                };
                let flags =
                    [OpenFlags::RDWR, OpenFlags::WRONLY, OpenFlags::RDONLY][rng.random_range(0..3)];
                (
                    Tmessage::Lcreate {
                        fid: Fid(f),
                        name: name(rng),
                        flags,
                        mode: [0o644, 0o600, 0o755][rng.random_range(0..3)],
                        gid: 0,
                    },
                    u(&[], &[], &[f], &[]),
                )
            }
            OpKind::Open => {
                let f = self.pick(rng, |f, m| nonpersistent(f) && m.is_closed())?;
                let mut flags =
                    [OpenFlags::RDONLY, OpenFlags::WRONLY, OpenFlags::RDWR][rng.random_range(0..3)];
                if is_dir(self.fids[&f].node) && rng.random_bool(0.9) {
                    flags = OpenFlags::RDONLY;
                }
                if rng.random_bool(0.15) {
                    flags = flags | OpenFlags::TRUNC;
                }
                if rng.random_bool(0.1) {
                    flags = flags | OpenFlags::APPEND;
                }
                (
                    Tmessage::Lopen { fid: Fid(f), flags },
                    u(&[], &[], &[f], &[]),
                )
            }
            OpKind::Read => {
                let f = self.pick(rng, |_, m| match m.open {
                    FidOpen::File { flags, .. } => flags.readable() && is_file(m.node),
                    FidOpen::XattrRead(_) => true,
                    _ => false,
                })?;
                let count = match rng.random_range(0..4) {
                    0 => msize,
                    1 => msize.saturating_sub(11),
                    _ => rng.random_range(1..200),
                };
                (
                    Tmessage::Read {
                        fid: Fid(f),
                        offset: if rng.random_bool(0.5) {
                            0
                        } else {
                            rng.random_range(0..80)
                        },
                        count,
                    },
                    u(&[f], &[], &[], &[]),
                )
            }
            OpKind::Write => {
                let f = self.pick(rng, |_, m| match m.open {
                    FidOpen::File { flags, .. } => flags.writable(),
                    FidOpen::XattrWrite { .. } => true,
                    _ => false,
                })?;
                let len = if rng.random_bool(0.15) {
                    msize as usize - 23
                } else {
                    rng.random_range(0..48)
                };
                let byte = rng.random_range(1..=255u8);
                let data: Vec<u8> = (0..len).map(|i| byte.wrapping_add(i as u8)).collect();
                let offset = match &self.fids[&f].open {
                    FidOpen::XattrWrite { .. } => 0,
                    // Large writes go past msize-sized reads' reach.
                    _ if len > 64 => [0, u64::from(msize / 2)][rng.random_range(0..2)],
                    _ => rng.random_range(0..64),
                };
                (
                    Tmessage::Write {
                        fid: Fid(f),
                        offset,
                        data: Data(data),
                    },
                    u(&[f], &[], &[], &[]),
                )
            }
            OpKind::Readdir => {
                let f = self.pick(rng, |_, m| {
                    matches!(m.open, FidOpen::File { .. }) && is_dir(m.node)
                })?;
                let offset = if rng.random_bool(0.8) {
                    self.cursor.get(&f).copied().unwrap_or(0)
                } else {
                    0
                };
                let count = [30, 64, 120, 4096, msize][rng.random_range(0..5)];
                (
                    Tmessage::Readdir {
                        fid: Fid(f),
                        offset,
                        count,
                    },
                    u(&[f], &[], &[], &[]),
                )
            }
            OpKind::Fsync => {
                let f = self.pick(rng, |_, m| matches!(m.open, FidOpen::File { .. }))?;
                (
                    Tmessage::Fsync {
                        fid: Fid(f),
                        datasync: rng.random_range(0..2),
                    },
                    u(&[f], &[], &[], &[]),
                )
            }
            OpKind::Mkdir => {
                let d = self.dir_fid(rng, model)?;
                (
                    Tmessage::Mkdir {
                        dfid: Fid(d),
                        name: name(rng),
                        mode: 0o755,
                        gid: 0,
                    },
                    u(&[d], &[], &[], &[]),
                )
            }
            OpKind::Symlink => {
                let d = self.dir_fid(rng, model)?;
                (
                    Tmessage::Symlink {
                        fid: Fid(d),
                        name: name(rng),
                        symtgt: name(rng),
                        gid: 0,
                    },
                    u(&[d], &[], &[], &[]),
                )
            }
            OpKind::Readlink | OpKind::Getattr => {
                let f = self.pick(rng, |_, m| {
                    kind == OpKind::Getattr
                        || matches!(model.node(m.node).content, Content::Symlink(_))
                })?;
                let msg = if kind == OpKind::Readlink {
                    Tmessage::Readlink { fid: Fid(f) }
                } else {
                    Tmessage::Getattr {
                        fid: Fid(f),
                        request_mask: GetattrMask::ALL,
                    }
                };
                (msg, u(&[f], &[], &[], &[]))
            }
            OpKind::Link => {
                let d = self.dir_fid(rng, model)?;
                let t = self.pick(rng, |f, m| f != d && !is_dir(m.node))?;
                (
                    Tmessage::Link {
                        dfid: Fid(d),
                        fid: Fid(t),
                        name: name(rng),
                    },
                    u(&[d], &[t], &[], &[]),
                )
            }
            OpKind::Rename => {
                let a = self.dir_fid(rng, model)?;
                let b = self.dir_fid(rng, model)?;
                let sec: Vec<u32> = if a == b { vec![] } else { vec![b] };
                (
                    Tmessage::Renameat {
                        olddirfid: Fid(a),
                        oldname: self.name_in(rng, model, a),
                        newdirfid: Fid(b),
                        newname: name(rng),
                    },
                    u(&[a], &sec, &[], &[]),
                )
            }
            OpKind::Unlink => {
                let d = self.dir_fid(rng, model)?;
                let name = self.name_in(rng, model, d);
                let dir = self.fids.get(&d).and_then(|m| model.node(m.node).dir());
                let victim_is_dir = dir
                    .and_then(|dir| dir.by_name.get(name.as_bytes()))
                    .is_some_and(|&(n, _)| is_dir(n));
                let flags = if victim_is_dir != rng.random_bool(0.1) {
                    AT_REMOVEDIR
                } else {
                    0
                };
                (
                    Tmessage::Unlinkat {
                        dirfid: Fid(d),
                        name,
                        flags,
                    },
                    u(&[d], &[], &[], &[]),
                )
            }
            OpKind::Setattr => {
                let f = self.pick(rng, |_, _| true)?;
                let (valid, mode, size) = if is_file(self.fids[&f].node) && rng.random_bool(0.7) {
                    (SetattrMask::SIZE, 0, rng.random_range(0..100))
                } else {
                    (
                        SetattrMask::MODE,
                        [0o600, 0o644, 0o700][rng.random_range(0..3)],
                        0,
                    )
                };
                (
                    Tmessage::Setattr {
                        fid: Fid(f),
                        attr: SetAttr {
                            valid,
                            mode,
                            size,
                            ..SetAttr::default()
                        },
                    },
                    u(&[f], &[], &[], &[]),
                )
            }
            OpKind::XattrGet => {
                let f = self.pick(rng, |_, _| true)?;
                let newfid = self.free_fid(rng)?;
                let name = ["user.x", "user.y", ""][rng.random_range(0..3)];
                (
                    Tmessage::Xattrwalk {
                        fid: Fid(f),
                        newfid: Fid(newfid),
                        name: name.into(),
                    },
                    u(&[f], &[], &[newfid], &[]),
                )
            }
            OpKind::XattrSet => {
                let f = self.pick(rng, |f, m| nonpersistent(f) && m.is_closed())?;
                let name = ["user.x", "user.y"][rng.random_range(0..2)];
                (
                    Tmessage::Xattrcreate {
                        fid: Fid(f),
                        name: name.into(),
                        attr_size: [0, 3, 8][rng.random_range(0..3)],
                        flags: [0, 0, 1, 2][rng.random_range(0..4)],
                    },
                    u(&[], &[], &[f], &[]),
                )
            }
            OpKind::Lock => {
                let f = self.pick(rng, |_, m| matches!(m.open, FidOpen::File { .. }))?;
                let lock_type =
                    [LockType::Write, LockType::Read, LockType::Unlock][rng.random_range(0..3)];
                let (start, length) = [(0, 0), (0, 10), (5, 10), (20, 0)][rng.random_range(0..4)];
                (
                    Tmessage::Lock {
                        fid: Fid(f),
                        lock_type,
                        flags: LockFlags(0),
                        start,
                        length,
                        proc_id: self.id as u32,
                        client_id: "sim".into(),
                    },
                    u(&[f], &[], &[], &[]),
                )
            }
            OpKind::Clunk => {
                // A clunk pipelined behind other requests on its fid is only sent when
                // asked for: the server orders the barrier by first poll, not arrival.
                let pipelined = self.pipelined_clunk;
                let f = self.pick(rng, |f, _| {
                    nonpersistent(f)
                        && (pipelined || self.claims.get(&f).is_none_or(|c| c.primary == 0))
                })?;
                (Tmessage::Clunk { fid: Fid(f) }, u(&[], &[], &[], &[f]))
            }
        };
        Some(op)
    }
}
