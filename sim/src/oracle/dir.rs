//! Directory entries' checks: Tmkdir, Tsymlink, Tmknod, Tlink, Trename, Trenameat,
//! Tunlinkat and Treadlink — the names they accept, the model's step for each call, and
//! the entries each touches (what directory passes and the session's renamed records
//! learn).

use co9p::fs::hooked::OpKind as FsOp;
use co9p::protocol::{Errno, Fid, Rmessage, Tmessage};

use super::{Answer, FsCall, Res, Violation, dir_of, fid};
use crate::guest::Guest;
use crate::model::Model;

/// A name an entry is made under: never `.` or `..` (`EEXIST`); a name that cannot be
/// one (empty, with a `/` or NUL) is `ENOENT`, as the server answers.
pub(super) fn new_name(n: &[u8]) -> Result<&[u8], Errno> {
    match n {
        b"." | b".." => Err(Errno::EEXIST),
        n => name(n),
    }
}

/// A name an entry is taken away from: never `.` or `..` (`EINVAL`).
fn old_name(n: &[u8]) -> Result<&[u8], Errno> {
    match n {
        b"." | b".." => Err(Errno::EINVAL),
        n => name(n),
    }
}

fn name(n: &[u8]) -> Result<&[u8], Errno> {
    // Written out here, not the server's `Name::new`: a path component is non-empty, at
    // most NAME_MAX (255) bytes, without `/` or NUL; what is not one does not exist
    // (`ENOENT`, as QEMU answers), unless it is too long to be one (`ENAMETOOLONG`).
    if n.is_empty() {
        Err(Errno::ENOENT)
    } else if n.len() > 255 {
        Err(Errno::ENAMETOOLONG)
    } else if n.iter().any(|&b| b == b'/' || b == 0) {
        Err(Errno::ENOENT)
    } else {
        Ok(n)
    }
}

/// Tmkdir, Tmknod, Tsymlink: a new name in the directory `dfid`.
pub(super) fn make_pre(g: &Guest, m: &Model, dfid: Fid, name: &[u8]) -> Result<(), Errno> {
    fid(g, dfid)?;
    new_name(name)?;
    dir_of(g, m, dfid).map(drop)
}

/// A device number Linux's `dev_t` can hold (a 12-bit major, a 20-bit minor), or
/// `EINVAL` whatever the type, as glibc's `mknod` answers before the kernel would drop the
/// bits it cannot hold.
pub(super) fn mknod_pre(major: u32, minor: u32) -> Result<(), Errno> {
    if major < 1 << 12 && minor < 1 << 20 {
        Ok(())
    } else {
        Err(Errno::EINVAL)
    }
}

pub(super) fn link_pre(g: &Guest, m: &Model, dfid: Fid, f: Fid, name: &[u8]) -> Result<(), Errno> {
    make_pre(g, m, dfid, name)?;
    fid(g, f).map(drop)
}

pub(super) fn rename_pre(
    g: &Guest,
    m: &Model,
    f: Fid,
    dfid: Fid,
    name: &[u8],
) -> Result<(), Errno> {
    let e = fid(g, f)?;
    new_name(name)?;
    fid(g, dfid)?;
    dir_of(g, m, dfid)?;
    e.entry.as_ref().map(drop).ok_or(Errno::EBUSY)
}

pub(super) fn renameat_pre(
    g: &Guest,
    m: &Model,
    olddirfid: Fid,
    oldname: &[u8],
    newdirfid: Fid,
    newname: &[u8],
) -> Result<(), Errno> {
    fid(g, olddirfid)?;
    old_name(oldname)?;
    new_name(newname)?;
    dir_of(g, m, olddirfid)?;
    fid(g, newdirfid)?;
    dir_of(g, m, newdirfid).map(drop)
}

pub(super) fn unlinkat_pre(
    g: &Guest,
    m: &Model,
    dirfid: Fid,
    name: &[u8],
    flags: u32,
) -> Result<(), Errno> {
    fid(g, dirfid)?;
    if name == b".." {
        return Err(Errno::ENOTEMPTY);
    }
    old_name(name)?;
    if flags & !co9p::protocol::AT_REMOVEDIR != 0 {
        return Err(Errno::EINVAL);
    }
    dir_of(g, m, dirfid).map(drop)
}

pub(super) fn mkdir_call(
    c: &mut FsCall,
    m: &mut Model,
    dfid: Fid,
    name: &[u8],
    mode: u32,
    gid: u32,
) -> Result<Res, Violation> {
    c.expect(FsOp::Mkdir)?;
    let (d, by) = (c.fid(dfid).node, c.by(dfid, gid));
    let r = c.effect(0, || m.mkdir(d, name, mode, by));
    c.touched(&r, (d, name.to_vec()));
    Ok(Res::Node(r))
}

pub(super) fn mknod_call(
    c: &mut FsCall,
    m: &mut Model,
    dfid: Fid,
    name: &[u8],
    mode: u32,
    (major, minor): (u32, u32),
    gid: u32,
) -> Result<Res, Violation> {
    c.expect(FsOp::Mknod)?;
    let (d, by) = (c.fid(dfid).node, c.by(dfid, gid));
    // glibc's `makedev` (through the libc crate), not the server's own encoding: a wrong
    // bit in MemFs's shows as a wrong rdev.
    let rdev = libc::makedev(major, minor);
    let r = c.effect(0, || m.mknod(d, name, mode, rdev, by));
    c.touched(&r, (d, name.to_vec()));
    Ok(Res::Node(r))
}

pub(super) fn symlink_call(
    c: &mut FsCall,
    m: &mut Model,
    dfid: Fid,
    name: &[u8],
    target: &[u8],
    gid: u32,
) -> Result<Res, Violation> {
    c.expect(FsOp::Symlink)?;
    let (d, by) = (c.fid(dfid).node, c.by(dfid, gid));
    let r = c.effect(0, || m.symlink(d, name, target, by));
    c.touched(&r, (d, name.to_vec()));
    Ok(Res::Node(r))
}

/// An Rmkdir, Rmknod or Rsymlink names the file the model made.
pub(super) fn made_reply(a: &Answer, m: &mut Model) -> Result<(), Violation> {
    use Rmessage as R;
    use Tmessage as T;
    let qid = match (&a.req.msg, a.got) {
        (T::Mkdir { .. }, R::Mkdir { qid })
        | (T::Mknod { .. }, R::Mknod { qid })
        | (T::Symlink { .. }, R::Symlink { qid }) => qid,
        _ => return Err(a.unexpected()),
    };
    a.qid(m, a.node(), qid)
}

pub(super) fn link_call(
    c: &mut FsCall,
    m: &mut Model,
    dfid: Fid,
    f: Fid,
    name: &[u8],
) -> Result<Res, Violation> {
    c.expect(FsOp::Link)?;
    let (d, t) = (c.fid(dfid).node, c.fid(f).node);
    let r = c.effect((), || m.link(t, d, name));
    c.touched(&r, (d, name.to_vec()));
    Ok(Res::Unit(r))
}

pub(super) fn renameat_call(
    c: &mut FsCall,
    m: &mut Model,
    (olddirfid, oldname): (Fid, &[u8]),
    (newdirfid, newname): (Fid, &[u8]),
) -> Result<Res, Violation> {
    c.expect(FsOp::Rename)?;
    let (a, b) = (c.fid(olddirfid).node, c.fid(newdirfid).node);
    let r = c.effect((), || m.rename(a, oldname, b, newname));
    c.renamed(&r, (a, oldname.to_vec()), (b, newname.to_vec()));
    Ok(Res::Unit(r))
}

/// Trename moves the entry its fid records (not whatever its name holds now).
pub(super) fn rename_call(
    c: &mut FsCall,
    m: &mut Model,
    f: Fid,
    dfid: Fid,
    name: &[u8],
) -> Result<Res, Violation> {
    c.expect(FsOp::Rename)?;
    let e = c.fid(f);
    let (node, (od, on)) = (e.node, e.entry.clone().expect("prechecked"));
    let nd = c.fid(dfid).node;
    let r = c.effect((), || m.rename_node(node, od, &on, nd, name));
    c.renamed(&r, (od, on), (nd, name.to_vec()));
    Ok(Res::Unit(r))
}

pub(super) fn unlinkat_call(
    c: &mut FsCall,
    m: &mut Model,
    dirfid: Fid,
    name: &[u8],
    flags: u32,
) -> Result<Res, Violation> {
    c.expect(FsOp::Unlink)?;
    let d = c.fid(dirfid).node;
    let rmdir = flags & co9p::protocol::AT_REMOVEDIR != 0;
    let r = c.effect((), || m.unlink(d, name, rmdir));
    c.touched(&r, (d, name.to_vec()));
    Ok(Res::Unit(r))
}

pub(super) fn readlink_call(c: &mut FsCall, m: &mut Model, f: Fid) -> Result<Res, Violation> {
    c.expect(FsOp::Readlink)?;
    Ok(Res::Data(m.readlink(c.fid(f).node)))
}

/// An Rreadlink carries the target the model has.
pub(super) fn readlink_reply(a: &Answer) -> Result<(), Violation> {
    let Rmessage::Readlink { target } = a.got else {
        return Err(a.unexpected());
    };
    if target.as_bytes() != &a.data()[..] {
        return Err(a.fail(format_args!("target {target:?}")));
    }
    Ok(())
}
