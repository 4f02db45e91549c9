//! The judge of single requests: what each filesystem call of a request should answer (the
//! model stepped at the moment the call ran), and whether the reply agrees with what 9P
//! and POSIX say it must be (fid checks, then the calls, then the reply).
//!
//! The judge never reads the server's bookkeeping. What a fid names is the model's own
//! record ([`crate::guest::MFid`]): the file (by identity) and the entry it was reached by,
//! which moves when a rename through its session takes effect ([`Effect::Renamed`]), at
//! that moment — not when the rename's reply comes back.

use co9p::fs::hooked::OpKind as FsOp;
use co9p::protocol::{Errno, LockType, OpenFlags, PAYLOAD_HEADER_LEN, Tmessage};

use crate::guest::{DirEntry, FidOpen, Guest, MFid};
use crate::journal::{FsEvent, Outcome};
use crate::model::{Entry, Held, Maker, Model, NodeId, R};

mod dirs;
mod reply;
pub use dirs::Passes;
pub use reply::on_reply;

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
    fn ok(&self) -> bool {
        self.err().is_none()
    }
    fn err(&self) -> Option<Errno> {
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
    fn error(&self) -> Option<Errno> {
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
        use Tmessage as T;
        Some(match &self.msg {
            T::Statfs { fid }
            | T::Lopen { fid, .. }
            | T::Lcreate { fid, .. }
            | T::Symlink { fid, .. }
            | T::Rename { fid, .. }
            | T::Readlink { fid }
            | T::Getattr { fid, .. }
            | T::Setattr { fid, .. }
            | T::Xattrwalk { fid, .. }
            | T::Xattrcreate { fid, .. }
            | T::Readdir { fid, .. }
            | T::Fsync { fid, .. }
            | T::Lock { fid, .. }
            | T::Getlock { fid, .. }
            | T::Walk { fid, .. }
            | T::Read { fid, .. }
            | T::Write { fid, .. }
            | T::Clunk { fid }
            | T::Remove { fid } => fid.0,
            T::Mknod { dfid, .. } | T::Link { dfid, .. } | T::Mkdir { dfid, .. } => dfid.0,
            T::Renameat { olddirfid, .. } => olddirfid.0,
            T::Unlinkat { dirfid, .. } => dirfid.0,
            _ => return None,
        })
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

pub type Check = Result<(), String>;

/// A message in its one-line trace form (`Twalk fid=0 newfid=1 wnames=["a"]`).
pub struct Show<'a, M>(pub &'a M);

impl<M: co9p::protocol::Message> std::fmt::Display for Show<'_, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", M::PREFIX, self.0.name().to_ascii_lowercase())?;
        self.0.trace_fields(f)
    }
}

/// The node of `fid` and its state (for pre-checks), or the handler's `ENOENT`.
fn fid(g: &Guest, f: co9p::protocol::Fid) -> Result<&MFid, Errno> {
    g.fids.get(&f.0).ok_or(Errno::ENOENT)
}

fn dir_of(g: &Guest, m: &Model, f: co9p::protocol::Fid) -> Result<NodeId, Errno> {
    let e = fid(g, f)?;
    if m.node(e.node).is_dir() {
        Ok(e.node)
    } else {
        Err(Errno::ENOTDIR)
    }
}

fn new_name(n: &[u8]) -> Result<&[u8], Errno> {
    match n {
        b"." | b".." => Err(Errno::EEXIST),
        n => co9p::fs::Name::new(n)
            .map(|_| n)
            .map_err(|e| if e == Errno::EINVAL { Errno::ENOENT } else { e }),
    }
}

fn old_name(n: &[u8]) -> Result<&[u8], Errno> {
    match n {
        b"." | b".." => Err(Errno::EINVAL),
        n => co9p::fs::Name::new(n)
            .map(|_| n)
            .map_err(|e| if e == Errno::EINVAL { Errno::ENOENT } else { e }),
    }
}

fn open_file(g: &Guest, f: co9p::protocol::Fid) -> Result<(NodeId, OpenFlags, u64), Errno> {
    let e = fid(g, f)?;
    match e.open {
        FidOpen::File { flags, owner } => Ok((e.node, flags, owner)),
        _ => Err(Errno::EBADF),
    }
}

/// The lock range of a request: `end` inclusive, 0 length to the end of the file.
pub fn lock_end(start: u64, length: u64) -> u64 {
    if length == 0 {
        u64::MAX
    } else {
        start.saturating_add(length - 1)
    }
}

/// What the handler decides before any filesystem call: `Err` is its early reply.
fn precheck(g: &Guest, m: &Model, msg: &Tmessage) -> Result<(), Errno> {
    use Tmessage as T;
    match msg {
        T::Lerror {} => Err(Errno::EOPNOTSUPP),
        T::Auth { .. } => Err(Errno::ENOENT),
        T::Attach { afid, .. } if *afid != co9p::protocol::Fid::NOFID => Err(Errno::EBADF),
        T::Attach { .. } => Ok(()),
        T::Walk { fid: f, newfid, .. } => {
            fid(g, *f)?;
            if newfid != f && g.fids.contains_key(&newfid.0) {
                return Err(Errno::EINVAL);
            }
            Ok(())
        }
        T::Lopen { fid: f, .. } => match fid(g, *f)?.open {
            FidOpen::Closed => Ok(()),
            _ => Err(Errno::EINVAL),
        },
        T::Lcreate { fid: f, name, .. } => {
            let e = fid(g, *f)?;
            new_name(name.as_bytes())?;
            match e.open {
                FidOpen::Closed if m.node(e.node).is_dir() => Ok(()),
                FidOpen::Closed => Err(Errno::ENOTDIR),
                _ => Err(Errno::EINVAL),
            }
        }
        T::Read { fid: f, .. } => match &fid(g, *f)?.open {
            FidOpen::File { flags, .. } if flags.readable() => Ok(()),
            FidOpen::XattrRead(_) => Ok(()),
            _ => Err(Errno::EBADF),
        },
        T::Write {
            fid: f,
            offset,
            data,
        } => match &fid(g, *f)?.open {
            FidOpen::File { flags, .. } if flags.writable() => Ok(()),
            FidOpen::XattrWrite { value, .. } => {
                if *offset as usize + data.0.len() > value.len() {
                    Err(Errno::EINVAL)
                } else {
                    Ok(())
                }
            }
            _ => Err(Errno::EBADF),
        },
        T::Readdir { fid: f, .. }
        | T::Fsync { fid: f, .. }
        | T::Lock { fid: f, .. }
        | T::Getlock { fid: f, .. } => open_file(g, *f).map(drop),
        T::Mkdir { dfid, name, .. }
        | T::Mknod { dfid, name, .. }
        | T::Symlink {
            fid: dfid, name, ..
        } => {
            fid(g, *dfid)?;
            new_name(name.as_bytes())?;
            dir_of(g, m, *dfid).map(drop)
        }
        T::Link { dfid, fid: f, name } => {
            fid(g, *dfid)?;
            new_name(name.as_bytes())?;
            dir_of(g, m, *dfid)?;
            fid(g, *f).map(drop)
        }
        T::Rename { fid: f, dfid, name } => {
            let e = fid(g, *f)?;
            new_name(name.as_bytes())?;
            fid(g, *dfid)?;
            dir_of(g, m, *dfid)?;
            e.entry.as_ref().map(drop).ok_or(Errno::EBUSY)
        }
        T::Renameat {
            olddirfid,
            oldname,
            newdirfid,
            newname,
        } => {
            fid(g, *olddirfid)?;
            old_name(oldname.as_bytes())?;
            new_name(newname.as_bytes())?;
            dir_of(g, m, *olddirfid)?;
            fid(g, *newdirfid)?;
            dir_of(g, m, *newdirfid).map(drop)
        }
        T::Unlinkat {
            dirfid,
            name,
            flags,
        } => {
            fid(g, *dirfid)?;
            if name.as_bytes() == b".." {
                return Err(Errno::ENOTEMPTY);
            }
            old_name(name.as_bytes())?;
            if flags & !co9p::protocol::AT_REMOVEDIR != 0 {
                return Err(Errno::EINVAL);
            }
            dir_of(g, m, *dirfid).map(drop)
        }
        T::Readlink { fid: f }
        | T::Getattr { fid: f, .. }
        | T::Setattr { fid: f, .. }
        | T::Statfs { fid: f } => fid(g, *f).map(drop),
        T::Xattrwalk { fid: f, newfid, .. } => {
            fid(g, *f)?;
            if g.fids.contains_key(&newfid.0) {
                return Err(Errno::EINVAL);
            }
            Ok(())
        }
        T::Xattrcreate {
            fid: f,
            name,
            attr_size,
            flags,
        } => {
            fid(g, *f)?;
            if flags & !3 != 0 || name.as_bytes().is_empty() {
                return Err(Errno::EINVAL);
            }
            if *attr_size > co9p::server::XATTR_SIZE_MAX as u64 {
                return Err(Errno::E2BIG);
            }
            match fid(g, *f)?.open {
                FidOpen::Closed => Ok(()),
                _ => Err(Errno::EINVAL),
            }
        }
        T::Remove { fid: f } => fid(g, *f).map(drop),
        T::Clunk { fid: f } => match &fid(g, *f)?.open {
            FidOpen::XattrWrite { value, written, .. } if *written != value.len() => {
                Err(Errno::EINVAL)
            }
            _ => Ok(()),
        },
        T::Version { .. } | T::Flush { .. } => Ok(()),
    }
}

/// Where a Twalk (or a Tattach's aname) stands, given the filesystem calls it has made:
/// the nodes of the steps done (a `.`, or a `..` at the root, needs no call), and what
/// comes next.
pub struct WalkState {
    pub nodes: Vec<NodeId>,
    pub next: WalkNext,
}

pub enum WalkNext {
    /// Every name walked.
    Done,
    /// Stopped: a call failed, or a name that cannot exist (no call).
    Failed(Errno),
    /// The next step's call: `..` of the node (`true`) or a lookup of the name in it.
    Call {
        from: NodeId,
        dotdot: bool,
        name: usize,
    },
}

/// The names an attach walks from the root: its aname's components, unless the aname
/// names the root itself.
pub fn attach_names(aname: &[u8]) -> Vec<Vec<u8>> {
    if aname.is_empty() || aname == b"/" {
        return Vec::new();
    }
    aname
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(|c| c.to_vec())
        .collect()
}

/// Walks `names` from `start` through the calls made so far.
fn steps(start: NodeId, names: &[&[u8]], calls: &[Call], attach: bool) -> WalkState {
    let mut cur = start;
    let mut nodes = Vec::new();
    let mut calls = calls.iter();
    for (i, &b) in names.iter().enumerate() {
        let dotdot = b == b".." && !attach;
        if !attach && (b == b"." || (dotdot && cur == crate::model::ROOT)) {
            nodes.push(cur);
            continue;
        }
        // A name that cannot exist fails without a call: ENAMETOOLONG if too long, else
        // ENOENT (empty, or with a '/' or NUL), as the server answers. (An attach's
        // components all fail ENOENT.)
        if !dotdot && let Err(e) = co9p::fs::Name::new(b) {
            let e = if e == Errno::ENAMETOOLONG && !attach {
                e
            } else {
                Errno::ENOENT
            };
            return WalkState {
                nodes,
                next: WalkNext::Failed(e),
            };
        }
        match calls.next() {
            None => {
                let next = WalkNext::Call {
                    from: cur,
                    dotdot,
                    name: i,
                };
                return WalkState { nodes, next };
            }
            Some(c) => match (&c.res, c.error()) {
                (Res::Node(Ok(n)), None) => {
                    cur = *n;
                    nodes.push(cur);
                }
                (_, e) => {
                    let next = WalkNext::Failed(e.unwrap_or(Errno::EIO));
                    return WalkState { nodes, next };
                }
            },
        }
    }
    WalkState {
        nodes,
        next: WalkNext::Done,
    }
}

/// `None` if the walk's fid is no longer in the guest's table (a reset or Tversion).
pub fn walk_state(g: &Guest, req: &Req) -> Option<WalkState> {
    match &req.msg {
        Tmessage::Walk { fid: f, wnames, .. } => {
            let start = g.fids.get(&f.0)?.node;
            let names: Vec<&[u8]> = wnames.iter().map(|w| w.as_bytes()).collect();
            Some(steps(start, &names, &req.calls, false))
        }
        Tmessage::Attach { aname, .. } => {
            let names = attach_names(aname.as_bytes());
            let names: Vec<&[u8]> = names.iter().map(|n| &n[..]).collect();
            // The first call is the root's.
            let calls = req.calls.get(1..).unwrap_or(&[]);
            Some(steps(crate::model::ROOT, &names, calls, true))
        }
        _ => unreachable!("a Twalk or Tattach"),
    }
}

/// The filesystem calls a request makes after its pre-checks, given the calls so far:
/// `true` once the handler has made its last one.
fn calls_done(g: &Guest, req: &Req) -> bool {
    use Tmessage as T;
    let n = req.calls.len();
    let failed = req.calls.last().is_some_and(|c| c.error().is_some());
    match &req.msg {
        T::Walk { wnames, .. } => match walk_state(g, req) {
            Some(s) => !matches!(s.next, WalkNext::Call { .. }),
            // The fid is gone from this guest's table: judged by the calls alone.
            None => failed || n >= wnames.len(),
        },
        T::Attach { .. } => {
            n >= 1
                && (failed
                    || !matches!(
                        walk_state(g, req).map(|s| s.next),
                        Some(WalkNext::Call { .. })
                    ))
        }
        T::Read { fid: f, .. } => {
            n >= 1
                || matches!(
                    g.fids.get(&f.0).map(|m| &m.open),
                    Some(FidOpen::XattrRead(_))
                )
        }
        T::Write { fid: f, .. } => {
            n >= 1
                || matches!(
                    g.fids.get(&f.0).map(|m| &m.open),
                    Some(FidOpen::XattrWrite { .. })
                )
        }
        T::Xattrcreate { .. } => true,
        T::Remove { fid: f } => n >= 1 || g.fids.get(&f.0).is_some_and(|e| e.entry.is_none()),
        T::Clunk { fid: f } => {
            n >= 1
                || !matches!(
                    g.fids.get(&f.0).map(|m| &m.open),
                    Some(FidOpen::XattrWrite { .. })
                )
        }
        _ => n >= 1,
    }
}

/// Whether the request must be answered: its handler made its last call (nothing can
/// cancel it after that) — judged with the fid table of its own session.
pub fn must_reply(g: &Guest, req: &Req) -> bool {
    !req.calls.is_empty() && calls_done(g, req)
}

/// Steps the model for one filesystem call of `req`; returns what else it changed.
pub fn on_fs(m: &mut Model, g: &Guest, req: &mut Req, ev: &FsEvent) -> Result<Vec<Effect>, String> {
    use Tmessage as T;
    let expect_op = |ops: &[FsOp]| -> Check {
        if ops.contains(&ev.op) {
            Ok(())
        } else {
            Err(format!(
                "unexpected filesystem call {:?} for {}",
                ev.op,
                Show(&req.msg)
            ))
        }
    };
    if precheck(g, m, &req.msg).is_err() || calls_done(g, req) {
        return Err(format!(
            "filesystem call {:?} after the handler should have returned: {}",
            ev.op,
            Show(&req.msg)
        ));
    }
    let ran = ev.outcome.ran();
    let done_ok = matches!(ev.outcome, Outcome::Done { ok: true });
    let mut effects = Vec::new();
    let by = |f: &co9p::protocol::Fid, gid: u32| Maker {
        uid: g.fids[&f.0].uid,
        gid,
    };
    let res = match &req.msg {
        T::Attach { .. } if req.calls.is_empty() => {
            expect_op(&[FsOp::Root])?;
            req.entry = Some(None);
            Res::Node(Ok(crate::model::ROOT))
        }
        T::Attach { aname, .. } => match walk_state(g, req).map(|s| s.next) {
            Some(WalkNext::Call { from, name, .. }) => {
                expect_op(&[FsOp::Lookup])?;
                let n = &attach_names(aname.as_bytes())[name];
                req.entry = Some(Some((from, n.clone())));
                Res::Node(m.lookup(from, n))
            }
            _ => unreachable!("checked by calls_done"),
        },
        T::Walk { wnames, .. } => match walk_state(g, req).map(|s| s.next) {
            Some(WalkNext::Call {
                from, dotdot: true, ..
            }) => {
                expect_op(&[FsOp::Parent])?;
                req.entry = Some(None);
                Res::Node(m.parent(from))
            }
            Some(WalkNext::Call { from, name, .. }) => {
                expect_op(&[FsOp::Lookup])?;
                let n = wnames[name].as_bytes();
                req.entry = Some(Some((from, n.to_vec())));
                Res::Node(m.lookup(from, n))
            }
            _ => unreachable!("checked by calls_done"),
        },
        T::Lopen { fid: f, flags } => {
            expect_op(&[FsOp::Open])?;
            let node = g.fids[&f.0].node;
            Res::Open(if ran {
                m.open(node, *flags).map(|()| m.new_owner())
            } else {
                Ok(0)
            })
        }
        T::Lcreate {
            fid: f,
            name,
            flags,
            mode,
            gid,
        } => {
            expect_op(&[FsOp::Create])?;
            let dir = g.fids[&f.0].node;
            req.entry = Some(Some((dir, name.0.clone())));
            let r = if ran {
                m.create(dir, name.as_bytes(), *flags, *mode, by(f, *gid))
            } else {
                Ok(0)
            };
            if r.is_ok() && ran {
                effects.push(Effect::Touched((dir, name.0.clone())));
            }
            Res::Node(r)
        }
        T::Read {
            fid: f,
            offset,
            count,
        } => {
            expect_op(&[FsOp::Read])?;
            let (node, flags, _) = open_file(g, *f).expect("prechecked");
            let count = (*count as usize).min(g.msize as usize - PAYLOAD_HEADER_LEN);
            let len = ev.len.unwrap_or(count).min(count);
            Res::Data(m.read(node, flags, *offset, len))
        }
        T::Write {
            fid: f,
            offset,
            data,
        } => {
            expect_op(&[FsOp::Write])?;
            let (node, flags, _) = open_file(g, *f).expect("prechecked");
            let len = ev.len.unwrap_or(data.0.len()).min(data.0.len());
            let uid = g.fids[&f.0].uid;
            Res::Count(if ran {
                m.write(node, flags, *offset, &data.0[..len], uid)
            } else {
                Ok(0)
            })
        }
        T::Readdir {
            fid: f,
            offset,
            count,
        } => {
            expect_op(&[FsOp::Readdir])?;
            let (node, _, _) = open_file(g, *f).expect("prechecked");
            let count = (*count as usize).min(g.msize as usize - PAYLOAD_HEADER_LEN);
            let listing = m.listing(node).unwrap_or_default();
            Res::Entries(
                m.readdir(node, *offset, count / 25 + 1),
                listing,
                m.touches.len(),
            )
        }
        T::Fsync { .. } => {
            expect_op(&[FsOp::Fsync])?;
            Res::Unit(Ok(()))
        }
        T::Statfs { .. } => {
            expect_op(&[FsOp::Statfs])?;
            Res::Unit(Ok(()))
        }
        T::Mkdir {
            dfid,
            name,
            mode,
            gid,
        } => {
            expect_op(&[FsOp::Mkdir])?;
            let d = g.fids[&dfid.0].node;
            let r = if ran {
                m.mkdir(d, name.as_bytes(), *mode, by(dfid, *gid))
            } else {
                Ok(0)
            };
            if r.is_ok() && ran {
                effects.push(Effect::Touched((d, name.0.clone())));
            }
            Res::Node(r)
        }
        T::Mknod {
            dfid,
            name,
            mode,
            major,
            minor,
            gid,
        } => {
            expect_op(&[FsOp::Mknod])?;
            let d = g.fids[&dfid.0].node;
            let rdev = co9p::fs::mem::makedev(*major, *minor);
            let r = if ran {
                m.mknod(d, name.as_bytes(), *mode, rdev, by(dfid, *gid))
            } else {
                Ok(0)
            };
            if r.is_ok() && ran {
                effects.push(Effect::Touched((d, name.0.clone())));
            }
            Res::Node(r)
        }
        T::Symlink {
            fid: dfid,
            name,
            symtgt,
            gid,
        } => {
            expect_op(&[FsOp::Symlink])?;
            let d = g.fids[&dfid.0].node;
            let r = if ran {
                m.symlink(d, name.as_bytes(), symtgt.as_bytes(), by(dfid, *gid))
            } else {
                Ok(0)
            };
            if r.is_ok() && ran {
                effects.push(Effect::Touched((d, name.0.clone())));
            }
            Res::Node(r)
        }
        T::Link { dfid, fid: f, name } => {
            expect_op(&[FsOp::Link])?;
            let (d, t) = (g.fids[&dfid.0].node, g.fids[&f.0].node);
            let r = if ran {
                m.link(t, d, name.as_bytes())
            } else {
                Ok(())
            };
            if r.is_ok() && ran {
                effects.push(Effect::Touched((d, name.0.clone())));
            }
            Res::Unit(r)
        }
        T::Renameat {
            olddirfid,
            oldname,
            newdirfid,
            newname,
        } => {
            expect_op(&[FsOp::Rename])?;
            let (a, b) = (g.fids[&olddirfid.0].node, g.fids[&newdirfid.0].node);
            let r = if ran {
                m.rename(a, oldname.as_bytes(), b, newname.as_bytes())
            } else {
                Ok(())
            };
            let (from, to) = ((a, oldname.0.clone()), (b, newname.0.clone()));
            renamed(&mut effects, req.conn, from, to, ran && r.is_ok(), done_ok);
            Res::Unit(r)
        }
        T::Rename { fid: f, dfid, name } => {
            expect_op(&[FsOp::Rename])?;
            let e = &g.fids[&f.0];
            let (od, on) = e.entry.clone().expect("prechecked");
            let nd = g.fids[&dfid.0].node;
            let r = if ran {
                m.rename_node(e.node, od, &on, nd, name.as_bytes())
            } else {
                Ok(())
            };
            let (from, to) = ((od, on), (nd, name.0.clone()));
            renamed(&mut effects, req.conn, from, to, ran && r.is_ok(), done_ok);
            Res::Unit(r)
        }
        T::Unlinkat {
            dirfid,
            name,
            flags,
        } => {
            expect_op(&[FsOp::Unlink])?;
            let d = g.fids[&dirfid.0].node;
            let rmdir = flags & co9p::protocol::AT_REMOVEDIR != 0;
            let r = if ran {
                m.unlink(d, name.as_bytes(), rmdir)
            } else {
                Ok(())
            };
            if r.is_ok() && ran {
                effects.push(Effect::Touched((d, name.0.clone())));
            }
            Res::Unit(r)
        }
        T::Remove { fid: f } => {
            expect_op(&[FsOp::Unlink])?;
            let e = &g.fids[&f.0];
            let Some((dir, name)) = &e.entry else {
                return Err(format!(
                    "filesystem call {:?} for a Tremove of no name",
                    ev.op
                ));
            };
            let rmdir = m.node(e.node).is_dir();
            let r = if ran {
                m.unlink_node(*dir, name, e.node, rmdir)
            } else {
                Ok(())
            };
            if r.is_ok() && ran {
                effects.push(Effect::Touched((*dir, name.clone())));
            }
            Res::Unit(r)
        }
        T::Readlink { fid: f } => {
            expect_op(&[FsOp::Readlink])?;
            Res::Data(m.readlink(g.fids[&f.0].node))
        }
        T::Getattr { fid: f, .. } => {
            expect_op(&[FsOp::Getattr])?;
            let node = g.fids[&f.0].node;
            let mut snap = m.node(node).clone();
            snap.content = match snap.content {
                crate::model::Content::File(d) => crate::model::Content::File(vec![0; d.len()]),
                crate::model::Content::Dir(_) => crate::model::Content::Dir(Default::default()),
                c => c,
            };
            Res::Attr(node, Box::new(snap))
        }
        T::Setattr { fid: f, attr } => {
            expect_op(&[FsOp::Setattr])?;
            let node = g.fids[&f.0].node;
            Res::Unit(if ran { m.setattr(node, attr) } else { Ok(()) })
        }
        T::Xattrwalk { fid: f, name, .. } => {
            let e = &g.fids[&f.0];
            // The new fid is made now: it records the entry its source records now.
            req.entry = Some(e.entry.clone());
            if name.as_bytes().is_empty() {
                expect_op(&[FsOp::Listxattr])?;
                Res::Data(Ok(m.listxattr(e.node)))
            } else {
                expect_op(&[FsOp::Getxattr])?;
                Res::Data(m.getxattr(e.node, name.as_bytes()))
            }
        }
        T::Clunk { fid: f } => {
            let e = &g.fids[&f.0];
            let FidOpen::XattrWrite {
                name, flags, value, ..
            } = &e.open
            else {
                return Err(format!("filesystem call {:?} from a plain Tclunk", ev.op));
            };
            if value.is_empty() {
                expect_op(&[FsOp::Removexattr])?;
                Res::Unit(if ran {
                    m.removexattr(e.node, name)
                } else {
                    Ok(())
                })
            } else {
                expect_op(&[FsOp::Setxattr])?;
                Res::Unit(if ran {
                    m.setxattr(e.node, name, value, *flags)
                } else {
                    Ok(())
                })
            }
        }
        T::Lock {
            fid: f,
            lock_type,
            start,
            length,
            ..
        } => {
            expect_op(&[FsOp::Lock])?;
            let (node, flags, owner) = open_file(g, *f).expect("prechecked");
            let end = lock_end(*start, *length);
            let zombies = m.zombies.clone();
            let zombie = |o: u64| zombies.contains(&o);
            Res::Lock(if ran {
                m.lock(node, owner, flags, *lock_type, *start, end, &zombie)
            } else {
                Ok(Some(true))
            })
        }
        T::Getlock {
            fid: f,
            lock_type,
            start,
            length,
            ..
        } => {
            expect_op(&[FsOp::Getlock])?;
            let (node, _, owner) = open_file(g, *f).expect("prechecked");
            let end = lock_end(*start, *length);
            Res::Getlock(m.getlock(node, owner, *lock_type, *start, end))
        }
        other => return Err(format!("filesystem call {:?} from {}", ev.op, Show(other))),
    };
    // A fault after the effect is injected only after the backend succeeded.
    let backend_ok = match ev.outcome {
        Outcome::Done { ok } => Some(ok),
        Outcome::FaultAfter(_) => Some(true),
        Outcome::FaultBefore(_) => None,
    };
    if let Some(ok) = backend_ok
        && ok != res.ok()
    {
        return Err(format!(
            "the backend {} {:?} for {} but the model says {:?}",
            if ok { "did" } else { "refused" },
            ev.op,
            Show(&req.msg),
            res
        ));
    }
    req.calls.push(Call {
        op: ev.op,
        outcome: ev.outcome,
        res,
    });
    Ok(effects)
}

/// A rename's effects: names touched if it happened; the session's records move only if
/// it was also reported done (a fault after the effect leaves them where they were).
fn renamed(
    effects: &mut Vec<Effect>,
    conn: usize,
    from: DirEntry,
    to: DirEntry,
    happened: bool,
    reported: bool,
) {
    if !happened {
        return;
    }
    effects.push(Effect::Touched(from.clone()));
    effects.push(Effect::Touched(to.clone()));
    if reported {
        effects.push(Effect::Renamed { conn, from, to });
    }
}

/// Whether a lock type is one a Getlock may report.
pub fn reportable(ty: LockType) -> bool {
    ty != LockType::Unlock
}
