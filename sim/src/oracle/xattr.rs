//! Extended attributes' checks: Txattrwalk (one attribute read, or the list, into the
//! new fid's buffer) and Txattrcreate (the fid becomes a buffer its Twrites fill; the
//! Tclunk that sets it is judged in `clunk.rs`).

use co9p::fs::hooked::OpKind as FsOp;
use co9p::protocol::{Errno, Fid, Rmessage};

use super::{Answer, FsCall, Res, Violation, fid};
use crate::guest::{FidOpen, Guest, MFid};
use crate::model::Model;

pub(super) fn xattrwalk_pre(g: &Guest, f: Fid, newfid: Fid) -> Result<(), Errno> {
    fid(g, f)?;
    if g.fids.contains_key(&newfid.0) {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

pub(super) fn xattrwalk_call(
    c: &mut FsCall,
    m: &mut Model,
    f: Fid,
    name: &[u8],
) -> Result<Res, Violation> {
    let e = c.fid(f);
    let (node, entry) = (e.node, e.entry.clone());
    // The new fid is made now: it records the entry its source records now.
    *c.entry = Some(entry);
    if name.is_empty() {
        c.expect(FsOp::Listxattr)?;
        Ok(Res::Data(Ok(m.listxattr(node))))
    } else {
        c.expect(FsOp::Getxattr)?;
        Ok(Res::Data(m.getxattr(node, name)))
    }
}

/// An Rxattrwalk gives the value's size; `newfid` holds the value to read.
pub(super) fn xattrwalk_reply(
    a: &Answer,
    g: &mut Guest,
    fid: Fid,
    newfid: Fid,
    list: bool,
) -> Result<(), Violation> {
    let Rmessage::Xattrwalk { size } = a.got else {
        return Err(a.unexpected());
    };
    let v = a.data();
    if *size != v.len() as u64 {
        return Err(a.fail(format_args!("size {size}, the model has {}", v.len())));
    }
    let src = &g.fids[&fid.0];
    let (node, uid) = (src.node, src.uid);
    g.fids.insert(
        newfid.0,
        MFid {
            node,
            open: FidOpen::XattrRead {
                value: v.clone(),
                unordered: list,
            },
            entry: a.entry.clone(),
            uid,
        },
    );
    Ok(())
}

pub(super) fn xattrcreate_pre(
    g: &Guest,
    f: Fid,
    name: &[u8],
    attr_size: u64,
    flags: u32,
) -> Result<(), Errno> {
    fid(g, f)?;
    if flags & !3 != 0 || name.is_empty() {
        return Err(Errno::EINVAL);
    }
    if attr_size > super::XATTR_SIZE_MAX {
        return Err(Errno::E2BIG);
    }
    match fid(g, f)?.open {
        FidOpen::Closed => Ok(()),
        _ => Err(Errno::EINVAL),
    }
}

/// An Rxattrcreate: the fid is now a zeroed buffer of the size asked.
pub(super) fn xattrcreate_reply(
    a: &Answer,
    g: &mut Guest,
    fid: Fid,
    name: &[u8],
    attr_size: u64,
    flags: u32,
) -> Result<(), Violation> {
    if !matches!(a.got, Rmessage::Xattrcreate {}) {
        return Err(a.unexpected());
    }
    g.fids.get_mut(&fid.0).expect("prechecked").open = FidOpen::XattrWrite {
        name: name.to_vec(),
        flags,
        value: vec![0; attr_size as usize],
        written: 0,
    };
    Ok(())
}
