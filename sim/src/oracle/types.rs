//! The records the judge keeps: a request as the checks follow it ([`Req`]), the model's
//! answer to each filesystem call it made ([`Call`], [`Res`]), what a call changed beyond the
//! tree ([`Effect`]), and a failed check ([`Violation`]).

use co9p::fs::hooked::OpKind as FsOp;
use co9p::protocol::{Errno, Tmessage};

use crate::guest::DirEntry;
use crate::journal::Outcome;
use crate::model::{Entry, Held, NodeId, R};

/// A check that failed: which one (`check`, the name a shrunk run must fail again) and
/// what it saw. Shown as `check: detail`, the form a failing run prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub check: &'static str,
    pub detail: String,
}

impl Violation {
    /// The server disagrees with the model: a call or reply it should not have made.
    pub fn model(detail: String) -> Violation {
        Violation {
            check: "model",
            detail,
        }
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.check, self.detail)
    }
}

/// The model's answer to one filesystem call.
#[derive(Debug, Clone)]
pub enum Res {
    Node(R<NodeId>),
    Open(R<u64>),
    Data(R<Vec<u8>>),
    Count(R<usize>),
    /// A readdir: MemFs's exact entries, every name the directory holds now, and how
    /// many entries had been touched before (the model's `touches`).
    Entries(
        R<Vec<Entry>>,
        std::collections::BTreeMap<Vec<u8>, NodeId>,
        usize,
    ),
    Unit(R<()>),
    /// Getattr: the file, and its attributes at the moment of the call.
    Attr(NodeId, Box<crate::model::Node>),
    /// Granted (`Some(true)`), conflict (`Some(false)`) or either (`None`).
    Lock(R<Option<bool>>),
    /// Getlock: the locks that may be reported, and whether an `Unlock` answer is right
    /// too (only closing sessions' locks conflict).
    Getlock(R<(Vec<Held>, bool)>),
}

impl Res {
    pub(super) fn ok(&self) -> bool {
        self.err().is_none()
    }
    pub(super) fn err(&self) -> Option<Errno> {
        match self {
            Res::Node(Err(e))
            | Res::Open(Err(e))
            | Res::Data(Err(e))
            | Res::Count(Err(e))
            | Res::Entries(Err(e), _, _)
            | Res::Unit(Err(e))
            | Res::Lock(Err(e))
            | Res::Getlock(Err(e)) => Some(*e),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Call {
    pub op: FsOp,
    pub outcome: Outcome,
    pub res: Res,
}

impl Call {
    /// The errno the handler returns after this call, if it fails.
    pub(super) fn error(&self) -> Option<Errno> {
        match self.outcome {
            Outcome::FaultBefore(e) | Outcome::FaultAfter(e) => Some(e),
            Outcome::Done { .. } => self.res.err(),
        }
    }
}

/// One request as the checks follow it.
#[derive(Debug, Clone)]
pub struct Req {
    pub client: usize,
    pub conn: usize,
    pub tag: u16,
    pub msg: Tmessage,
    pub task: Option<u64>,
    pub uses: crate::guest::Uses,
    /// Flushed, or cancelled by a Tversion or a connection close.
    pub cancelled: bool,
    /// Flushes of this tag, in the order they were sent (request indices).
    pub flushes: Vec<usize>,
    pub calls: Vec<Call>,
    /// Its reply came back (judged or not yet).
    pub replied: bool,
    /// Ended (replied, or known to have ended without a reply).
    pub done: bool,
    /// Judged: what its reply showed is in the client's fid table.
    pub judged: bool,
    /// Sent before a Tversion that is still in flight or answered (its barrier).
    pub before_version: Option<usize>,
    /// World action counter when it was sent.
    pub sent_at: u64,
    /// The session's request slots were all taken when it arrived: it must be refused
    /// (`Rlerror(EAGAIN)`) and have no effect. `None`: it may or may not be (see
    /// `World::refuses`), and its reply says which.
    pub refused: Option<bool>,
    /// Its tag was in flight when it was sent (a hostile client): `Rlerror(EPROTO)`, no
    /// effect, and the request in flight goes on.
    pub dup: bool,
    /// Sent behind this Tclunk/Tremove of its own fid (a hostile client): it runs before
    /// the clunk takes the fid, or fails with `ENOENT`/`EBADF` having done nothing.
    pub after_clunk: Option<usize>,
    /// The entry the fid it makes will record, once its call that decides it has run
    /// (walk, create, xattrwalk, attach); moved by renames like a fid's own.
    pub entry: Option<Option<DirEntry>>,
}

impl Req {
    pub fn new(
        client: usize,
        conn: usize,
        tag: u16,
        msg: Tmessage,
        uses: crate::guest::Uses,
    ) -> Req {
        Req {
            client,
            conn,
            tag,
            msg,
            task: None,
            uses,
            cancelled: false,
            flushes: Vec::new(),
            calls: Vec::new(),
            replied: false,
            done: false,
            judged: false,
            before_version: None,
            sent_at: 0,
            refused: None,
            dup: false,
            after_clunk: None,
            entry: None,
        }
    }

    /// The fid whose barrier it takes (what a Tclunk of that fid waits for).
    pub fn primary_fid(&self) -> Option<u32> {
        self.msg.primary_fid().map(|f| f.0)
    }
}

/// What a filesystem call changed beyond the model's tree, for the world to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// A rename through session `conn` took effect and was reported done: every record
    /// of that session naming `from` now names `to`.
    Renamed {
        conn: usize,
        from: DirEntry,
        to: DirEntry,
    },
    /// An entry of a directory was added, removed or replaced (directory passes treat
    /// that name as one that may be listed once, twice or not at all).
    Touched(DirEntry),
}

/// A message in its one-line trace form (`Twalk fid=0 newfid=1 wnames=["a"]`).
pub struct Show<'a, M>(pub &'a M);

impl<M: co9p::protocol::Message> std::fmt::Display for Show<'_, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", M::PREFIX, self.0.name().to_ascii_lowercase())?;
        self.0.trace_fields(f)
    }
}
