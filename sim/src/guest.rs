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

use co9p::protocol::{Fid, OpenFlags, P9String, Tmessage, VERSION_9P2000_L};

use crate::model::NodeId;

mod workload;

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
    /// The directory entry the fid was reached by, following the renames this client made
    /// (what a Tremove unlinks, if it still names the fid's file): none from an attach or
    /// a `..`.
    pub parent: Option<(NodeId, Vec<u8>)>,
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
}
