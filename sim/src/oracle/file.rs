//! Open files' checks: Tlopen, Tlcreate, Tread, Twrite, Treaddir and Tfsync. A read or
//! write through an xattr fid (made by Txattrwalk or Txattrcreate) touches only its
//! buffer, never the filesystem.

use co9p::fs::hooked::OpKind as FsOp;
use co9p::protocol::{Dirent, Errno, Fid, OpenFlags, PAYLOAD_HEADER_LEN, Rmessage};

use super::{Answer, FsCall, Res, Violation, dir};
use crate::guest::{FidOpen, Guest, MFid};
use crate::model::{Backend, Model, NodeId};

/// The payload a reply to a request for `count` bytes may carry on this session.
fn room(g: &Guest, count: u32) -> usize {
    (count as usize).min(g.msize as usize - PAYLOAD_HEADER_LEN)
}

pub(super) fn lopen_pre(g: &Guest, f: Fid) -> Result<(), Errno> {
    match super::fid(g, f)?.open {
        FidOpen::Closed => Ok(()),
        _ => Err(Errno::EINVAL),
    }
}

pub(super) fn lopen_call(
    c: &mut FsCall,
    m: &mut Model,
    f: Fid,
    flags: OpenFlags,
) -> Result<Res, Violation> {
    c.expect(FsOp::Open)?;
    let node = c.fid(f).node;
    Ok(Res::Open(
        c.effect(0, || m.open(node, flags).map(|()| m.new_owner())),
    ))
}

/// An Rlopen names the fid's file, which is open from now on.
pub(super) fn lopen_reply(
    a: &Answer,
    m: &mut Model,
    g: &mut Guest,
    fid: Fid,
    flags: OpenFlags,
) -> Result<(), Violation> {
    let Rmessage::Lopen { qid, .. } = a.got else {
        return Err(a.unexpected());
    };
    let Res::Open(Ok(owner)) = a.res() else {
        unreachable!()
    };
    let node = g.fids[&fid.0].node;
    a.qid(m, node, qid)?;
    g.fids.get_mut(&fid.0).expect("prechecked").open = FidOpen::File {
        flags,
        owner: *owner,
    };
    g.cursor.remove(&fid.0);
    g.passes.forget(fid.0);
    Ok(())
}

pub(super) fn lcreate_pre(g: &Guest, m: &Model, f: Fid, name: &[u8]) -> Result<(), Errno> {
    let e = super::fid(g, f)?;
    dir::new_name(name)?;
    match e.open {
        FidOpen::Closed if m.node(e.node).is_dir() => Ok(()),
        FidOpen::Closed => Err(Errno::ENOTDIR),
        _ => Err(Errno::EINVAL),
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn lcreate_call(
    c: &mut FsCall,
    m: &mut Model,
    f: Fid,
    name: &[u8],
    flags: OpenFlags,
    mode: u32,
    gid: u32,
) -> Result<Res, Violation> {
    c.expect(FsOp::Create)?;
    let dir = c.fid(f).node;
    *c.entry = Some(Some((dir, name.to_vec())));
    let by = c.by(f, gid);
    let r = c.effect(0, || m.create(dir, name, flags, mode, by));
    c.touched(&r, (dir, name.to_vec()));
    Ok(Res::Node(r))
}

/// An Rlcreate names the new file, which the fid now names, open.
pub(super) fn lcreate_reply(
    a: &Answer,
    m: &mut Model,
    g: &mut Guest,
    fid: Fid,
    flags: OpenFlags,
) -> Result<(), Violation> {
    let Rmessage::Lcreate { qid, .. } = a.got else {
        return Err(a.unexpected());
    };
    let node = a.node();
    a.qid(m, node, qid)?;
    let owner = m.new_owner();
    let uid = g.fids[&fid.0].uid;
    g.fids.insert(
        fid.0,
        MFid {
            node,
            open: FidOpen::File { flags, owner },
            entry: a.entry.clone(),
            uid,
        },
    );
    Ok(())
}

pub(super) fn read_pre(g: &Guest, f: Fid) -> Result<(), Errno> {
    match &super::fid(g, f)?.open {
        FidOpen::File { flags, .. } if flags.readable() => Ok(()),
        FidOpen::XattrRead { .. } => Ok(()),
        _ => Err(Errno::EBADF),
    }
}

pub(super) fn read_call(
    c: &mut FsCall,
    m: &mut Model,
    f: Fid,
    offset: u64,
    count: u32,
) -> Result<Res, Violation> {
    c.expect(FsOp::Read)?;
    let (node, flags, _) = c.open(f);
    let count = room(c.g, count);
    let len = c.ev.len.unwrap_or(count).min(count);
    Ok(Res::Data(m.read(node, flags, offset, len)))
}

/// An Rread carries what the model read (or the xattr buffer's bytes), byte for byte.
pub(super) fn read_reply(
    a: &Answer,
    g: &mut Guest,
    fid: Fid,
    offset: u64,
    count: u32,
) -> Result<(), Violation> {
    let Rmessage::Read { data } = a.got else {
        return Err(a.unexpected());
    };
    let count = room(g, count);
    let want = match &mut g.fids.get_mut(&fid.0).expect("prechecked").open {
        FidOpen::XattrRead { value, unordered } => {
            let s = (offset as usize).min(value.len());
            let want = value[s..value.len().min(s + count)].to_vec();
            if !*unordered || data.0.len() != want.len() {
                want
            } else if s == 0 && want.len() == value.len() {
                // The whole list: the same names, in the host's order, which is then
                // judged byte for byte.
                if names(&data.0) != names(value) {
                    want
                } else {
                    *value = data.0.clone();
                    *unordered = false;
                    data.0.clone()
                }
            } else {
                // A part of a list whose order is not known yet: its length is all.
                data.0.clone()
            }
        }
        _ => a.data().clone(),
    };
    if data.0 != want {
        return Err(a.fail(format_args!("read {}", data_diff(&data.0, &want, offset))));
    }
    Ok(())
}

/// The names of an xattr list (each NUL-terminated), in order; `None` if it is not one.
fn names(list: &[u8]) -> Option<std::collections::BTreeSet<&[u8]>> {
    let body = list.strip_suffix(&[0])?;
    Some(body.split(|&b| b == 0).collect())
}

pub(super) fn write_pre(g: &Guest, f: Fid, offset: u64, data: &[u8]) -> Result<(), Errno> {
    match &super::fid(g, f)?.open {
        FidOpen::File { flags, .. } if flags.writable() => Ok(()),
        FidOpen::XattrWrite { value, .. } => {
            if offset as usize + data.len() > value.len() {
                Err(Errno::EINVAL)
            } else {
                Ok(())
            }
        }
        _ => Err(Errno::EBADF),
    }
}

pub(super) fn write_call(
    c: &mut FsCall,
    m: &mut Model,
    f: Fid,
    offset: u64,
    data: &[u8],
) -> Result<Res, Violation> {
    c.expect(FsOp::Write)?;
    let (node, flags, _) = c.open(f);
    let len = c.ev.len.unwrap_or(data.len()).min(data.len());
    let uid = c.fid(f).uid;
    Ok(Res::Count(c.effect(0, || {
        m.write(node, flags, offset, &data[..len], uid)
    })))
}

/// An Rwrite counts what the model wrote (all of it, into an xattr buffer).
pub(super) fn write_reply(
    a: &Answer,
    g: &mut Guest,
    fid: Fid,
    offset: u64,
    data: &[u8],
) -> Result<(), Violation> {
    let Rmessage::Write { count } = a.got else {
        return Err(a.unexpected());
    };
    let want = match g.fids.get_mut(&fid.0).map(|m| &mut m.open) {
        Some(FidOpen::XattrWrite { value, written, .. }) => {
            let s = offset as usize;
            value[s..s + data.len()].copy_from_slice(data);
            *written = (*written).max(s + data.len());
            data.len()
        }
        _ => match a.res() {
            Res::Count(Ok(n)) => *n,
            _ => unreachable!(),
        },
    };
    if *count as usize != want {
        return Err(a.fail(format_args!("Rwrite count={count}, the model wrote {want}")));
    }
    Ok(())
}

pub(super) fn readdir_call(
    c: &mut FsCall,
    m: &mut Model,
    f: Fid,
    offset: u64,
    count: u32,
) -> Result<Res, Violation> {
    c.expect(FsOp::Readdir)?;
    let (node, _, _) = c.open(f);
    let count = room(c.g, count);
    let listing = m.listing(node).unwrap_or_default();
    Ok(Res::Entries(
        m.readdir(node, offset, count / 25 + 1),
        listing,
        m.touches.len(),
    ))
}

/// An Rreaddir fits the count; on MemFs it is exactly the model's listing from the
/// cookie, on any backend it keeps its pass's rules ([`super::Passes`]).
pub(super) fn readdir_reply(
    a: &Answer,
    m: &mut Model,
    g: &mut Guest,
    fid: Fid,
    offset: u64,
    count: u32,
) -> Result<(), Violation> {
    let Rmessage::Readdir { entries } = a.got else {
        return Err(a.unexpected());
    };
    let Res::Entries(exact, listing, mark) = a.res() else {
        unreachable!()
    };
    let count = room(g, count);
    let size: usize = entries.0.iter().map(|d| 24 + d.name.0.len()).sum();
    if size > count {
        return Err(a.fail(format_args!("{size} bytes of entries, asked for {count}")));
    }
    if m.backend == Backend::Mem {
        // MemFs's documented cookies: the reply is exactly the model's listing
        // from the cookie, as much of it as fits.
        let all = exact.as_ref().expect("checked: no error");
        let mut want = Vec::new();
        let mut used = 0;
        for e in all {
            let len = 24 + e.name.len();
            if used + len > count {
                break;
            }
            used += len;
            want.push(e);
        }
        let got_names: Vec<(&[u8], u64)> = entries
            .0
            .iter()
            .map(|d: &Dirent| (d.name.as_bytes(), d.offset))
            .collect();
        let want_names: Vec<(&[u8], u64)> = want.iter().map(|e| (&e.name[..], e.next)).collect();
        if got_names != want_names {
            return Err(a.fail(format_args!(
                "entries {:?}, the model lists {:?}",
                show(&got_names),
                show(&want_names)
            )));
        }
    }
    let node = g.fids[&fid.0].node;
    let unknown = m.backend.mapped();
    let relists = m.backend != Backend::Mem;
    // Entries touched since the call: the pass may or may not see them.
    let since: Vec<(NodeId, Vec<u8>)> = m.touches[*mark..].to_vec();
    for (d, n) in &since {
        g.passes.touched(*d, n);
    }
    g.passes.judge(
        m, fid.0, node, offset, listing, &entries.0, unknown, relists, &since, &a.what,
    )?;
    if let Some(last) = entries.0.last() {
        g.cursor.insert(fid.0, last.offset);
    }
    Ok(())
}

pub(super) fn fsync_call(c: &mut FsCall) -> Result<Res, Violation> {
    c.expect(FsOp::Fsync)?;
    Ok(Res::Unit(Ok(())))
}

/// Where two byte strings first differ, with the bytes around it on both sides.
fn data_diff(got: &[u8], want: &[u8], base: u64) -> String {
    let at = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let lo = at.saturating_sub(8);
    let window = |d: &[u8]| -> String {
        let hi = d.len().min(at + 8);
        if lo >= hi {
            return "(end)".into();
        }
        let bytes: Vec<String> = d[lo..hi]
            .iter()
            .enumerate()
            .map(|(i, b)| {
                if lo + i == at {
                    format!("[{b:02x}]")
                } else {
                    format!("{b:02x}")
                }
            })
            .collect();
        bytes.join(" ")
    };
    format!(
        "{} bytes, the model has {}; first difference at file offset {} (byte {at} of the \
         reply): server {} / model {} (from offset {})",
        got.len(),
        want.len(),
        base + at as u64,
        window(got),
        window(want),
        base + lo as u64
    )
}

fn show(v: &[(&[u8], u64)]) -> Vec<String> {
    v.iter()
        .map(|(n, o)| format!("{}@{o}", n.escape_ascii()))
        .collect()
}
