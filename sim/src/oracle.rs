//! The judge of single requests: what each filesystem call of a request should answer (the
//! model stepped at the moment the call ran), and whether the reply agrees with the
//! handler's documented steps (fid checks, then its calls, then the reply).

use co9p::fs::hooked::OpKind as FsOp;
use co9p::protocol::{Errno, OpenFlags, PAYLOAD_HEADER_LEN, SetattrMask, Tmessage};

use crate::guest::{FidOpen, Guest, MFid};
use crate::journal::{FsEvent, Outcome};
use crate::model::{Entry, Model, NodeId, R};

/// The model's answer to one filesystem call.
#[derive(Debug, Clone)]
pub enum Res {
    Node(R<NodeId>),
    Open(R<u64>),
    Data(R<Vec<u8>>),
    Count(R<usize>),
    Entries(R<Vec<Entry>>),
    Unit(R<()>),
    Attr(NodeId),
    /// Granted (`Some(true)`), conflict (`Some(false)`) or either (`None`).
    Lock(R<Option<bool>>),
}

impl Res {
    fn ok(&self) -> bool {
        match self {
            Res::Node(r) => r.is_ok(),
            Res::Open(r) => r.is_ok(),
            Res::Data(r) => r.is_ok(),
            Res::Count(r) => r.is_ok(),
            Res::Entries(r) => r.is_ok(),
            Res::Unit(r) => r.is_ok(),
            Res::Attr(_) => true,
            Res::Lock(r) => r.is_ok(),
        }
    }
    fn err(&self) -> Option<Errno> {
        match self {
            Res::Node(Err(e))
            | Res::Open(Err(e))
            | Res::Data(Err(e))
            | Res::Count(Err(e))
            | Res::Entries(Err(e))
            | Res::Unit(Err(e))
            | Res::Lock(Err(e)) => Some(*e),
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
    pub replied: bool,
    /// Ended (replied, or known to have ended without a reply).
    pub done: bool,
    /// Sent before a Tversion that is still in flight or answered (its barrier).
    pub before_version: Option<usize>,
    /// World action counter when it was sent.
    pub sent_at: u64,
    /// The session's request slots were all taken when it arrived: it must be refused
    /// (`Rlerror(EAGAIN)`) and have no effect. `None`: it may or may not be (see
    /// `World::refuses`), and its reply says which.
    pub refused: Option<bool>,
}

pub type Check = Result<(), String>;

mod reply;
pub use reply::on_reply;

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
        b"" => Err(Errno::ENOENT),
        n if n.contains(&b'/') => Err(Errno::ENOENT),
        n => Ok(n),
    }
}

fn old_name(n: &[u8]) -> Result<&[u8], Errno> {
    match n {
        b"." | b".." => Err(Errno::EINVAL),
        b"" => Err(Errno::ENOENT),
        n => Ok(n),
    }
}

fn open_file(g: &Guest, f: co9p::protocol::Fid) -> Result<(NodeId, OpenFlags, u64), Errno> {
    let e = fid(g, f)?;
    match e.open {
        FidOpen::File { flags, owner } => Ok((e.node, flags, owner)),
        _ => Err(Errno::EBADF),
    }
}

/// What the handler decides before any filesystem call: `Err` is its early reply.
fn precheck(g: &Guest, m: &Model, msg: &Tmessage) -> Result<(), Errno> {
    use Tmessage as T;
    match msg {
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
        T::Readdir { fid: f, .. } | T::Fsync { fid: f, .. } | T::Lock { fid: f, .. } => {
            open_file(g, *f).map(drop)
        }
        T::Mkdir { dfid, name, .. }
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
            dir_of(g, m, *newdirfid).map(drop)
        }
        T::Unlinkat { dirfid, name, .. } => {
            fid(g, *dirfid)?;
            if name.as_bytes() == b".." {
                return Err(Errno::ENOTEMPTY);
            }
            old_name(name.as_bytes())?;
            dir_of(g, m, *dirfid).map(drop)
        }
        T::Readlink { fid: f } | T::Getattr { fid: f, .. } | T::Setattr { fid: f, .. } => {
            fid(g, *f).map(drop)
        }
        T::Xattrwalk { fid: f, newfid, .. } => {
            fid(g, *f)?;
            if g.fids.contains_key(&newfid.0) {
                return Err(Errno::EINVAL);
            }
            Ok(())
        }
        T::Xattrcreate { fid: f, .. } => match fid(g, *f)?.open {
            FidOpen::Closed => Ok(()),
            _ => Err(Errno::EINVAL),
        },
        T::Remove { fid: f } => fid(g, *f).map(drop),
        T::Clunk { fid: f } => match &fid(g, *f)?.open {
            FidOpen::XattrWrite { value, written, .. } if *written != value.len() => {
                Err(Errno::EINVAL)
            }
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}

/// Where a Twalk stands, given the filesystem calls it has made: the nodes of the steps
/// done (a `.`, or a `..` at the root, needs no call), and what comes next.
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

/// `None` if the walk's fid is no longer in the guest's table (a reset or Tversion).
pub fn walk_state(g: &Guest, req: &Req) -> Option<WalkState> {
    let Tmessage::Walk { fid: f, wnames, .. } = &req.msg else {
        unreachable!("a Twalk")
    };
    let mut cur = g.fids.get(&f.0)?.node;
    let mut nodes = Vec::new();
    let mut calls = req.calls.iter();
    for (i, w) in wnames.iter().enumerate() {
        let b = w.as_bytes();
        let dotdot = b == b"..";
        if b == b"." || (dotdot && cur == crate::model::ROOT) {
            nodes.push(cur);
            continue;
        }
        // A name that cannot exist fails without a call: ENAMETOOLONG if too long, else
        // ENOENT (empty, or with a '/' or NUL), as the server answers.
        if !dotdot && let Err(e) = co9p::fs::Name::new(b) {
            let e = if e == Errno::ENAMETOOLONG {
                e
            } else {
                Errno::ENOENT
            };
            return Some(WalkState {
                nodes,
                next: WalkNext::Failed(e),
            });
        }
        match calls.next() {
            None => {
                let next = WalkNext::Call {
                    from: cur,
                    dotdot,
                    name: i,
                };
                return Some(WalkState { nodes, next });
            }
            Some(c) => match (&c.res, c.error()) {
                (Res::Node(Ok(n)), None) => {
                    cur = *n;
                    nodes.push(cur);
                }
                (_, e) => {
                    let next = WalkNext::Failed(e.unwrap_or(Errno::EIO));
                    return Some(WalkState { nodes, next });
                }
            },
        }
    }
    Some(WalkState {
        nodes,
        next: WalkNext::Done,
    })
}

/// The filesystem calls a request makes after its pre-checks, given the calls so far:
/// `true` once the handler has made its last one.
fn calls_done(g: &Guest, req: &Req) -> bool {
    use Tmessage as T;
    let n = req.calls.len();
    match &req.msg {
        T::Walk { wnames, .. } => match walk_state(g, req) {
            Some(s) => !matches!(s.next, WalkNext::Call { .. }),
            // The fid is gone from this guest's table: judged by the calls alone.
            None => req.calls.last().is_some_and(|c| c.error().is_some()) || n >= wnames.len(),
        },
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
        T::Remove { fid: f } => n >= 1 || g.fids.get(&f.0).is_some_and(|e| e.parent.is_none()),
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

/// Steps the model for one filesystem call of `req`.
pub fn on_fs(m: &mut Model, g: &Guest, req: &mut Req, ev: &FsEvent) -> Check {
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
    let res = match &req.msg {
        T::Attach { .. } => {
            expect_op(&[FsOp::Root])?;
            Res::Node(Ok(crate::model::ROOT))
        }
        T::Walk { wnames, .. } => match walk_state(g, req).map(|s| s.next) {
            Some(WalkNext::Call {
                from, dotdot: true, ..
            }) => {
                expect_op(&[FsOp::Parent])?;
                Res::Node(m.parent(from))
            }
            Some(WalkNext::Call { from, name, .. }) => {
                expect_op(&[FsOp::Lookup])?;
                Res::Node(m.lookup(from, wnames[name].as_bytes()))
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
            ..
        } => {
            expect_op(&[FsOp::Create])?;
            let dir = g.fids[&f.0].node;
            Res::Node(if ran {
                m.create(dir, name.as_bytes(), *flags, *mode)
            } else {
                Ok(0)
            })
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
            Res::Count(if ran {
                m.write(node, flags, *offset, &data.0[..len])
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
            Res::Entries(m.readdir(node, *offset, count / 25 + 1))
        }
        T::Fsync { .. } => {
            expect_op(&[FsOp::Fsync])?;
            Res::Unit(Ok(()))
        }
        T::Mkdir {
            dfid, name, mode, ..
        } => {
            expect_op(&[FsOp::Mkdir])?;
            let d = g.fids[&dfid.0].node;
            Res::Node(if ran {
                m.mkdir(d, name.as_bytes(), *mode)
            } else {
                Ok(0)
            })
        }
        T::Symlink {
            fid: dfid,
            name,
            symtgt,
            ..
        } => {
            expect_op(&[FsOp::Symlink])?;
            let d = g.fids[&dfid.0].node;
            Res::Node(if ran {
                m.symlink(d, name.as_bytes(), symtgt.as_bytes())
            } else {
                Ok(0)
            })
        }
        T::Link { dfid, fid: f, name } => {
            expect_op(&[FsOp::Link])?;
            let (d, t) = (g.fids[&dfid.0].node, g.fids[&f.0].node);
            Res::Unit(if ran {
                m.link(t, d, name.as_bytes())
            } else {
                Ok(())
            })
        }
        T::Renameat {
            olddirfid,
            oldname,
            newdirfid,
            newname,
        } => {
            expect_op(&[FsOp::Rename])?;
            let (a, b) = (g.fids[&olddirfid.0].node, g.fids[&newdirfid.0].node);
            Res::Unit(if ran {
                m.rename(a, oldname.as_bytes(), b, newname.as_bytes())
            } else {
                Ok(())
            })
        }
        T::Unlinkat {
            dirfid,
            name,
            flags,
        } => {
            expect_op(&[FsOp::Unlink])?;
            let d = g.fids[&dirfid.0].node;
            Res::Unit(if ran {
                m.unlink(
                    d,
                    name.as_bytes(),
                    flags & co9p::protocol::AT_REMOVEDIR != 0,
                )
            } else {
                Ok(())
            })
        }
        T::Remove { fid: f } => {
            expect_op(&[FsOp::Unlink])?;
            let e = &g.fids[&f.0];
            let Some((dir, name)) = &e.parent else {
                return Err(format!(
                    "filesystem call {:?} for a Tremove of no name",
                    ev.op
                ));
            };
            let rmdir = m.node(e.node).is_dir();
            Res::Unit(if ran {
                m.unlink_node(*dir, name, e.node, rmdir)
            } else {
                Ok(())
            })
        }
        T::Readlink { fid: f } => {
            expect_op(&[FsOp::Readlink])?;
            Res::Data(m.readlink(g.fids[&f.0].node))
        }
        T::Getattr { fid: f, .. } => {
            expect_op(&[FsOp::Getattr])?;
            Res::Attr(g.fids[&f.0].node)
        }
        T::Setattr { fid: f, attr } => {
            expect_op(&[FsOp::Setattr])?;
            let node = g.fids[&f.0].node;
            Res::Unit(if !ran {
                Ok(())
            } else if attr.valid.contains(SetattrMask::SIZE) {
                m.truncate(node, attr.size)
            } else {
                m.chmod(node, attr.mode);
                Ok(())
            })
        }
        T::Xattrwalk { fid: f, name, .. } => {
            let node = g.fids[&f.0].node;
            if name.as_bytes().is_empty() {
                expect_op(&[FsOp::Listxattr])?;
                Res::Data(Ok(m.listxattr(node)))
            } else {
                expect_op(&[FsOp::Getxattr])?;
                Res::Data(m.getxattr(node, name.as_bytes()))
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
            let end = if *length == 0 {
                u64::MAX
            } else {
                start + length - 1
            };
            let zombies = m.zombies.clone();
            let zombie = |o: u64| zombies.contains(&o);
            Res::Lock(if ran {
                m.lock(node, owner, flags, *lock_type, *start, end, &zombie)
            } else {
                Ok(Some(true))
            })
        }
        other => return Err(format!("filesystem call {:?} from {}", ev.op, Show(other))),
    };
    if let Outcome::Done { ok } = ev.outcome
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
    Ok(())
}
