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

mod aim;
mod attrs;
mod lock;
mod namespace;
mod plan;
pub mod workload;
pub use plan::Step;

/// What a fid refers to, in the model.
#[derive(Debug, Clone)]
pub enum FidOpen {
    Closed,
    File {
        flags: OpenFlags,
        owner: u64,
    },
    /// An xattr's value, or a list of names, read at Txattrwalk. A list's order is the
    /// host's (`listxattr` keeps none): `unordered` until a whole read showed it.
    XattrRead {
        value: Vec<u8>,
        unordered: bool,
    },
    XattrWrite {
        name: Vec<u8>,
        flags: u32,
        value: Vec<u8>,
        written: usize,
    },
}

/// A directory entry: the directory (by identity) and the name in it.
pub type DirEntry = (NodeId, Vec<u8>);

#[derive(Debug, Clone)]
pub struct MFid {
    pub node: NodeId,
    pub open: FidOpen,
    /// The directory entry the fid was reached by, moved along by every rename its
    /// session reported done, at the moment that rename took effect (what Tremove and
    /// Trename act through, if it still names the fid's file). `None` for the export root,
    /// and for a fid reached by `..`: co9p does not learn a directory's own entry from
    /// `..` and answers Tremove/Trename through such a fid `EBUSY` (QEMU would act on it).
    pub entry: Option<DirEntry>,
    /// The uid the fid's session attached as: it owns what the fid creates, and its
    /// writes drop set-id bits unless it is 0.
    pub uid: u32,
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
    Attach,
    Create,
    Open,
    Read,
    Write,
    Readdir,
    Fsync,
    Statfs,
    Mkdir,
    Mknod,
    Symlink,
    Readlink,
    Link,
    /// Trenameat.
    Rename,
    /// Trename (through a fid).
    Move,
    Unlink,
    Getattr,
    Setattr,
    XattrGet,
    XattrSet,
    Lock,
    Getlock,
    Clunk,
}

pub const ALL_OPS: [OpKind; 24] = [
    OpKind::Walk,
    OpKind::Attach,
    OpKind::Create,
    OpKind::Open,
    OpKind::Read,
    OpKind::Write,
    OpKind::Readdir,
    OpKind::Fsync,
    OpKind::Statfs,
    OpKind::Mkdir,
    OpKind::Mknod,
    OpKind::Symlink,
    OpKind::Readlink,
    OpKind::Link,
    OpKind::Rename,
    OpKind::Move,
    OpKind::Unlink,
    OpKind::Getattr,
    OpKind::Setattr,
    OpKind::XattrGet,
    OpKind::XattrSet,
    OpKind::Lock,
    OpKind::Getlock,
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
    /// The uid this client attaches as (`n_uname`), and the gid its requests name.
    pub uid: u32,
    pub gid: u32,
    /// Fids this client clunked while requests sent after the clunk may still use them
    /// (hostile clients): the fid as it was, to judge those requests by.
    pub tombstones: BTreeMap<u32, MFid>,
    /// Requests the workload wants next (sequences: shrink, grow, read the gap).
    pub plan: std::collections::VecDeque<Step>,
    /// Times in a row the first planned step could not be sent yet.
    pub plan_tries: u8,
    /// Nodes renamed lately: the workload aims at the fids that name them.
    pub renamed: Vec<NodeId>,
    /// Directory listings in progress, per fid (judged by POSIX's rules).
    pub passes: crate::oracle::Passes,
    /// Workload knobs: few fids and names; shrink-grow-read sequences; directory moves.
    pub contention: bool,
    pub gaps: bool,
    pub dirs: bool,
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
            uid: 0,
            gid: 0,
            tombstones: BTreeMap::new(),
            plan: Default::default(),
            plan_tries: 0,
            renamed: Vec::new(),
            passes: Default::default(),
            contention: false,
            gaps: false,
            dirs: false,
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
        self.tombstones.clear();
        self.plan.clear();
        self.passes.clear();
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
                    n_uname: self.uid,
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
