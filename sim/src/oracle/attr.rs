//! Attributes' checks: Tgetattr (the model's attributes at the moment of the call),
//! Tsetattr (the model's step; its Rsetattr carries nothing) and Tstatfs (the shape of a
//! statfs; the numbers are the backend's).

use co9p::fs::hooked::OpKind as FsOp;
use co9p::protocol::{Fid, Rmessage, SetAttr};

use super::{Answer, FsCall, Res, Violation};
use crate::model::{Backend, Content, Model, NodeId};

pub(super) fn getattr_call(c: &mut FsCall, m: &mut Model, f: Fid) -> Result<Res, Violation> {
    c.expect(FsOp::Getattr)?;
    let node = c.fid(f).node;
    // The attributes alone: a file's bytes and a directory's entries are not compared.
    let mut snap = m.node(node).clone();
    snap.content = match snap.content {
        Content::File(d) => Content::File(vec![0; d.len()]),
        Content::Dir(_) => Content::Dir(Default::default()),
        c => c,
    };
    Ok(Res::Attr(node, Box::new(snap)))
}

/// An Rgetattr has the model's mode, owner, links, size and device, and names its file.
pub(super) fn getattr_reply(a: &Answer, m: &mut Model) -> Result<(), Violation> {
    let Rmessage::Getattr { attr } = a.got else {
        return Err(a.unexpected());
    };
    let Res::Attr(node, n) = a.res() else {
        unreachable!()
    };
    let size_ok = n.size().is_none_or(|s| s == attr.size);
    let rdev_ok = attr.rdev == n.rdev;
    if attr.mode != n.mode
        || attr.uid != n.uid
        || attr.gid != n.gid
        || attr.nlink != n.nlink
        || !size_ok
        || !rdev_ok
    {
        return Err(a.fail(format_args!(
            "mode={:o} uid={} gid={} nlink={} size={} rdev={:#x}, the model has \
             mode={:o} uid={} gid={} nlink={} size={:?} rdev={:#x}",
            attr.mode,
            attr.uid,
            attr.gid,
            attr.nlink,
            attr.size,
            attr.rdev,
            n.mode,
            n.uid,
            n.gid,
            n.nlink,
            n.size(),
            n.rdev
        )));
    }
    a.qid(m, *node, &attr.qid)?;
    version_moves(a, m, *node, n.writes, attr.qid.version)
}

/// A file written since an earlier Rgetattr showed its qid version has another version
/// now (9P's version: it changes when the contents do). Judged on MemFs, whose versions
/// count changes; replies judged out of order compare by the writes at their calls.
fn version_moves(
    a: &Answer,
    m: &mut Model,
    node: NodeId,
    writes: u64,
    version: u32,
) -> Result<(), Violation> {
    if m.backend != Backend::Mem || !matches!(m.node(node).content, Content::File(_)) {
        return Ok(());
    }
    let seen = &mut m.nodes[node].seen_version;
    match *seen {
        Some((w0, v0)) if writes > w0 && version == v0 => Err(a.fail(format_args!(
            "qid version {version} after {} writes to the file since it was {v0}",
            writes - w0
        ))),
        Some((w0, _)) if writes < w0 => Ok(()),
        _ => {
            *seen = Some((writes, version));
            Ok(())
        }
    }
}

pub(super) fn setattr_call(
    c: &mut FsCall,
    m: &mut Model,
    f: Fid,
    attr: &SetAttr,
) -> Result<Res, Violation> {
    c.expect(FsOp::Setattr)?;
    let node = c.fid(f).node;
    Ok(Res::Unit(c.effect((), || m.setattr(node, attr))))
}

pub(super) fn statfs_call(c: &mut FsCall) -> Result<Res, Violation> {
    c.expect(FsOp::Statfs)?;
    Ok(Res::Unit(Ok(())))
}

/// An Rstatfs is a filesystem's: names up to 255 bytes, no more free than total.
pub(super) fn statfs_reply(a: &Answer) -> Result<(), Violation> {
    let Rmessage::Statfs { stat } = a.got else {
        return Err(a.unexpected());
    };
    if stat.namelen != 255
        || stat.bfree > stat.blocks
        || stat.bavail > stat.blocks
        || stat.ffree > stat.files
        || stat.bsize == 0
    {
        return Err(a.fail(format_args!("{stat:?} is not a filesystem's statfs")));
    }
    Ok(())
}
