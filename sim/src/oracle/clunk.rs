//! Tclunk's and Tremove's checks: the fid goes whatever the outcome (9P's rule), with its
//! open file's locks; a Tclunk of a Txattrcreate buffer first sets (or, empty, removes)
//! the attribute, and a Tremove unlinks the entry its fid records.

use co9p::fs::hooked::OpKind as FsOp;
use co9p::protocol::{Errno, Fid, Rmessage};

use super::{Answer, Call, FsCall, Res, Violation, fid};
use crate::guest::{DirEntry, FidOpen, Guest};
use crate::model::Model;

pub(super) fn clunk_pre(g: &Guest, f: Fid) -> Result<(), Errno> {
    match &fid(g, f)?.open {
        // An xattr not written in full is not set.
        FidOpen::XattrWrite { value, written, .. } if *written != value.len() => Err(Errno::EINVAL),
        _ => Ok(()),
    }
}

/// The one call a Tclunk makes: setting a Txattrcreate buffer's attribute.
pub(super) fn clunk_call(c: &mut FsCall, m: &mut Model, f: Fid) -> Result<Res, Violation> {
    let e = c.fid(f);
    let FidOpen::XattrWrite {
        name, flags, value, ..
    } = &e.open
    else {
        return Err(c.stray("from a plain Tclunk"));
    };
    let (node, flags) = (e.node, *flags);
    if value.is_empty() {
        c.expect(FsOp::Removexattr)?;
        Ok(Res::Unit(c.effect((), || m.removexattr(node, name))))
    } else {
        c.expect(FsOp::Setxattr)?;
        Ok(Res::Unit(
            c.effect((), || m.setxattr(node, name, value, flags)),
        ))
    }
}

/// Takes fid `f` out of the client's table (and its open file's locks out of the model).
fn forget(m: &mut Model, g: &mut Guest, f: Fid) -> Option<DirEntry> {
    let e = g.fids.remove(&f.0).expect("prechecked");
    if let FidOpen::File { owner, .. } = e.open {
        m.release(owner);
    }
    g.cursor.remove(&f.0);
    g.passes.forget(f.0);
    e.entry
}

pub(super) fn clunk_reply(
    a: &Answer,
    m: &mut Model,
    g: &mut Guest,
    fid: Fid,
) -> Result<(), Violation> {
    forget(m, g, fid);
    match a.last.and_then(Call::error) {
        Some(err) => a.error(err),
        None if !matches!(a.got, Rmessage::Clunk {}) => {
            Err(a.fail(format_args!("expected Rclunk, got {}", super::Show(a.got))))
        }
        None => Ok(()),
    }
}

pub(super) fn remove_call(c: &mut FsCall, m: &mut Model, f: Fid) -> Result<Res, Violation> {
    c.expect(FsOp::Unlink)?;
    let e = c.fid(f);
    let Some((dir, name)) = e.entry.clone() else {
        return Err(c.stray("for a Tremove of no name"));
    };
    let node = e.node;
    let rmdir = m.node(node).is_dir();
    let r = c.effect((), || m.unlink_node(dir, &name, node, rmdir));
    c.touched(&r, (dir, name));
    Ok(Res::Unit(r))
}

/// An Rremove if the unlink was done; a fid reached by `..` records no entry (`EBUSY`).
pub(super) fn remove_reply(
    a: &Answer,
    m: &mut Model,
    g: &mut Guest,
    fid: Fid,
) -> Result<(), Violation> {
    let entry = forget(m, g, fid);
    match (entry, a.last.and_then(Call::error)) {
        (None, _) => a.error(Errno::EBUSY),
        (_, Some(err)) => a.error(err),
        _ if !matches!(a.got, Rmessage::Remove {}) => {
            Err(a.fail(format_args!("expected Rremove, got {}", super::Show(a.got))))
        }
        _ => Ok(()),
    }
}
