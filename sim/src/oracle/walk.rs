//! Twalk's checks, and the walk itself (which a Tattach's aname takes too): where a walk
//! stands given the filesystem calls it has made, what it may make next, and what its
//! Rwalk must show.

use co9p::fs::hooked::OpKind as FsOp;
use co9p::protocol::{Errno, Fid, P9String, Rmessage, Tmessage};

use super::{Answer, Call, FsCall, Req, Res, Violation};
use crate::guest::{FidOpen, Guest, MFid};
use crate::model::{Model, NodeId};

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
pub(super) fn attach_names(aname: &[u8]) -> Vec<Vec<u8>> {
    if aname.is_empty() || aname == b"/" || aname == super::EXPORT_NAME {
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
    state(g, &req.msg, &req.calls)
}

/// [`walk_state`] of a Twalk or Tattach `msg` that made `calls`.
pub(super) fn state(g: &Guest, msg: &Tmessage, calls: &[Call]) -> Option<WalkState> {
    match msg {
        Tmessage::Walk { fid: f, wnames, .. } => {
            let start = g.fids.get(&f.0)?.node;
            let names: Vec<&[u8]> = wnames.iter().map(|w| w.as_bytes()).collect();
            Some(steps(start, &names, calls, false))
        }
        Tmessage::Attach { aname, .. } => {
            let names = attach_names(aname.as_bytes());
            let names: Vec<&[u8]> = names.iter().map(|n| &n[..]).collect();
            // The first call is the root's.
            let calls = calls.get(1..).unwrap_or(&[]);
            Some(steps(crate::model::ROOT, &names, calls, true))
        }
        _ => unreachable!("a Twalk or Tattach"),
    }
}

pub(super) fn walk_pre(g: &Guest, f: Fid, newfid: Fid) -> Result<(), Errno> {
    super::fid(g, f)?;
    if newfid != f && g.fids.contains_key(&newfid.0) {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

/// Whether the walk has made its last call.
pub(super) fn walk_done(g: &Guest, msg: &Tmessage, calls: &[Call], names: usize) -> bool {
    match state(g, msg, calls) {
        Some(s) => !matches!(s.next, WalkNext::Call { .. }),
        // The fid is gone from this guest's table: judged by the calls alone.
        None => calls.last().is_some_and(|c| c.error().is_some()) || calls.len() >= names,
    }
}

/// A step's call: `..` of the node it stands on, or a lookup of the next name.
pub(super) fn walk_call(
    c: &mut FsCall,
    m: &mut Model,
    wnames: &[P9String],
) -> Result<Res, Violation> {
    match state(c.g, c.msg, c.calls).map(|s| s.next) {
        Some(WalkNext::Call {
            from, dotdot: true, ..
        }) => {
            c.expect(FsOp::Parent)?;
            *c.entry = Some(None);
            Ok(Res::Node(m.parent(from)))
        }
        Some(WalkNext::Call { from, name, .. }) => {
            c.expect(FsOp::Lookup)?;
            let n = wnames[name].as_bytes();
            *c.entry = Some(Some((from, n.to_vec())));
            Ok(Res::Node(m.lookup(from, n)))
        }
        _ => unreachable!("checked by calls_done"),
    }
}

/// An Rwalk: a qid per step the model walked, and `newfid` made if every name was.
pub(super) fn walk_reply(
    a: &Answer,
    m: &mut Model,
    g: &mut Guest,
    fid: Fid,
    newfid: Fid,
    names: usize,
) -> Result<(), Violation> {
    let state = walk_state(g, a.req).expect("prechecked: the fid is there");
    let nodes = state.nodes;
    if nodes.is_empty() && names != 0 {
        let err = match state.next {
            WalkNext::Failed(e) => e,
            _ => Errno::EIO,
        };
        return a.error(err);
    }
    let Rmessage::Walk { wqids } = a.got else {
        return Err(a.fail(format_args!("expected Rwalk, got {}", super::Show(a.got))));
    };
    if wqids.len() != nodes.len() {
        return Err(a.fail(format_args!(
            "{} qids, the model walked {}",
            wqids.len(),
            nodes.len()
        )));
    }
    for (n, q) in nodes.iter().zip(wqids) {
        a.qid(m, *n, q)?;
    }
    if nodes.len() == names {
        let src = &g.fids[&fid.0];
        let node = nodes.last().copied().unwrap_or(src.node);
        // A walk that made no call (a clone, `.`, the root's `..`) records what
        // its source records; else what its last call decided.
        let entry = match &a.req.entry {
            Some(e) => e.clone(),
            None => src.entry.clone(),
        };
        let uid = src.uid;
        if newfid == fid
            && let Some(FidOpen::File { owner, .. }) = g.fids.get(&fid.0).map(|m| &m.open)
        {
            m.release(*owner);
        }
        g.fids.insert(
            newfid.0,
            MFid {
                node,
                open: FidOpen::Closed,
                entry,
                uid,
            },
        );
        g.cursor.remove(&newfid.0);
        g.passes.forget(newfid.0);
    }
    Ok(())
}
