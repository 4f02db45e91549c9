//! Tattach's checks: the root's call, then a walk of its aname from the root, and the fid
//! its Rattach makes. (Tauth is answered `ENOENT` in the pre-checks; Tversion and Tflush
//! are judged by the world, which orders them against the session's other requests.)

use co9p::fs::hooked::OpKind as FsOp;
use co9p::protocol::{Errno, Fid, NONUNAME, Rmessage, Tmessage};

use super::walk::{self, WalkNext};
use super::{Answer, Call, FsCall, Res, Violation};
use crate::guest::{FidOpen, Guest, MFid};
use crate::model::{Model, ROOT};

pub(super) fn attach_pre(afid: Fid) -> Result<(), Errno> {
    if afid != Fid::NOFID {
        return Err(Errno::EBADF);
    }
    Ok(())
}

/// Whether the attach has made its last call: the root's, then one per aname component
/// until one fails.
pub(super) fn attach_done(g: &Guest, msg: &Tmessage, calls: &[Call]) -> bool {
    let failed = calls.last().is_some_and(|c| c.error().is_some());
    !calls.is_empty()
        && (failed
            || !matches!(
                walk::state(g, msg, calls).map(|s| s.next),
                Some(WalkNext::Call { .. })
            ))
}

pub(super) fn attach_call(c: &mut FsCall, m: &mut Model, aname: &[u8]) -> Result<Res, Violation> {
    if c.calls.is_empty() {
        c.expect(FsOp::Root)?;
        *c.entry = Some(None);
        return Ok(Res::Node(Ok(ROOT)));
    }
    match walk::state(c.g, c.msg, c.calls).map(|s| s.next) {
        Some(WalkNext::Call { from, name, .. }) => {
            c.expect(FsOp::Lookup)?;
            let n = &walk::attach_names(aname)[name];
            *c.entry = Some(Some((from, n.clone())));
            Ok(Res::Node(m.lookup(from, n)))
        }
        _ => unreachable!("checked by calls_done"),
    }
}

/// An Rattach names the node the aname leads to (a directory), and makes `fid`.
pub(super) fn attach_reply(
    a: &Answer,
    m: &mut Model,
    g: &mut Guest,
    fid: Fid,
    n_uname: u32,
    aname: &[u8],
) -> Result<(), Violation> {
    let state = walk::walk_state(g, a.req).expect("an attach");
    if let Some(e) = a.last.and_then(Call::error) {
        return a.error(e);
    }
    if let WalkNext::Failed(e) = state.next {
        return a.error(e);
    }
    let node = state.nodes.last().copied().unwrap_or(ROOT);
    if !walk::attach_names(aname).is_empty() && !m.node(node).is_dir() {
        return a.error(Errno::ENOTDIR);
    }
    if g.fids.contains_key(&fid.0) {
        return a.error(Errno::EINVAL);
    }
    let Rmessage::Attach { qid } = a.got else {
        return Err(a.fail(format_args!("expected Rattach, got {}", super::Show(a.got))));
    };
    a.qid(m, node, qid)?;
    let uid = if n_uname == NONUNAME { 0 } else { n_uname };
    let entry = if node == ROOT { None } else { a.entry.clone() };
    g.fids.insert(
        fid.0,
        MFid {
            node,
            open: FidOpen::Closed,
            entry,
            uid,
        },
    );
    Ok(())
}
