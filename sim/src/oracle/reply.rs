//! Judging one reply: the handler's early answer (fid checks), or what its filesystem
//! calls said, against what came back — and the fid-table change the reply shows.

use co9p::protocol::{
    Dirent, Errno, LockStatus, LockType, NONUNAME, PAYLOAD_HEADER_LEN, Qid, Rmessage, Tmessage,
};

use super::{Call, Check, Req, Res, Show, calls_done, lock_end, open_file, precheck};
use crate::guest::{FidOpen, Guest, MFid};
use crate::model::{Backend, Model, NodeId};

fn expect_err(got: &Rmessage, e: Errno, what: &str) -> Check {
    let gs = Show(got);
    match got {
        Rmessage::Lerror { ecode } if *ecode == e => Ok(()),
        _ => Err(format!("{what}: expected Rlerror({e:?}), got {gs}")),
    }
}

/// Where two byte strings first differ, with the bytes around it on both sides.
pub fn data_diff(got: &[u8], want: &[u8], base: u64) -> String {
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

/// Judges a reply and applies what it shows to the client's fid table.
pub fn on_reply(m: &mut Model, g: &mut Guest, req: &Req, got: &Rmessage) -> Check {
    use Tmessage as T;
    let what = format!("reply to {}", Show(&req.msg));
    let gs = Show(got);
    if let Err(e) = precheck(g, m, &req.msg) {
        if !req.calls.is_empty() {
            return Err(format!("{what}: filesystem calls made despite {e:?}"));
        }
        if let T::Clunk { fid } = &req.msg
            && e == Errno::EINVAL
        {
            // The xattr was never set, but the fid is gone all the same.
            g.fids.remove(&fid.0);
            g.passes.forget(fid.0);
        }
        return expect_err(got, e, &what);
    }
    if !calls_done(g, req) {
        return Err(format!(
            "{what}: answered {gs} before its filesystem calls were made ({} so far)",
            req.calls.len()
        ));
    }
    let last = req.calls.last();
    // Walks answer partial progress; every other failed call is the reply.
    if !matches!(
        req.msg,
        T::Walk { .. } | T::Clunk { .. } | T::Remove { .. } | T::Attach { .. }
    ) && let Some(e) = last.and_then(Call::error)
    {
        return expect_err(got, e, &what);
    }
    let qid_ok = |m: &mut Model, node: NodeId, q: &Qid| -> Check {
        if q.ty.0 != m.node(node).qid_type() || !m.learn_ino(node, q.path) {
            return Err(format!("{what}: qid {q:?} does not name model node {node}"));
        }
        Ok(())
    };
    // The entry a new fid records: decided by its call, moved by renames since.
    let entry = req.entry.clone().flatten();
    match (&req.msg, got) {
        (
            T::Attach {
                fid,
                n_uname,
                aname,
                ..
            },
            _,
        ) => {
            let state = super::walk_state(g, req).expect("an attach");
            if let Some(e) = last.and_then(Call::error) {
                return expect_err(got, e, &what);
            }
            if let super::WalkNext::Failed(e) = state.next {
                return expect_err(got, e, &what);
            }
            let node = state.nodes.last().copied().unwrap_or(crate::model::ROOT);
            if !super::attach_names(aname.as_bytes()).is_empty() && !m.node(node).is_dir() {
                return expect_err(got, Errno::ENOTDIR, &what);
            }
            if g.fids.contains_key(&fid.0) {
                return expect_err(got, Errno::EINVAL, &what);
            }
            let Rmessage::Attach { qid } = got else {
                return Err(format!("{what}: expected Rattach, got {gs}"));
            };
            qid_ok(m, node, qid)?;
            let uid = if *n_uname == NONUNAME { 0 } else { *n_uname };
            g.fids.insert(
                fid.0,
                MFid {
                    node,
                    open: FidOpen::Closed,
                    entry: if node == crate::model::ROOT {
                        None
                    } else {
                        entry
                    },
                    uid,
                },
            );
        }
        (
            T::Walk {
                fid,
                newfid,
                wnames,
            },
            _,
        ) => {
            let state = super::walk_state(g, req).expect("prechecked: the fid is there");
            let nodes = state.nodes;
            if nodes.is_empty() && !wnames.is_empty() {
                let err = match state.next {
                    super::WalkNext::Failed(e) => e,
                    _ => Errno::EIO,
                };
                return expect_err(got, err, &what);
            }
            let Rmessage::Walk { wqids } = got else {
                return Err(format!("{what}: expected Rwalk, got {gs}"));
            };
            if wqids.len() != nodes.len() {
                return Err(format!(
                    "{what}: {} qids, the model walked {}",
                    wqids.len(),
                    nodes.len()
                ));
            }
            for (n, q) in nodes.iter().zip(wqids) {
                qid_ok(m, *n, q)?;
            }
            if nodes.len() == wnames.len() {
                let src = &g.fids[&fid.0];
                let node = nodes.last().copied().unwrap_or(src.node);
                // A walk that made no call (a clone, `.`, the root's `..`) records what
                // its source records; else what its last call decided.
                let entry = match &req.entry {
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
        }
        (T::Lopen { fid, flags }, Rmessage::Lopen { qid, .. }) => {
            let Some(Call {
                res: Res::Open(Ok(owner)),
                ..
            }) = last
            else {
                unreachable!()
            };
            let node = g.fids[&fid.0].node;
            qid_ok(m, node, qid)?;
            g.fids.get_mut(&fid.0).expect("prechecked").open = FidOpen::File {
                flags: *flags,
                owner: *owner,
            };
            g.cursor.remove(&fid.0);
            g.passes.forget(fid.0);
        }
        (T::Lcreate { fid, flags, .. }, Rmessage::Lcreate { qid, .. }) => {
            let Some(Call {
                res: Res::Node(Ok(node)),
                ..
            }) = last
            else {
                unreachable!()
            };
            qid_ok(m, *node, qid)?;
            let owner = m.new_owner();
            let uid = g.fids[&fid.0].uid;
            g.fids.insert(
                fid.0,
                MFid {
                    node: *node,
                    open: FidOpen::File {
                        flags: *flags,
                        owner,
                    },
                    entry,
                    uid,
                },
            );
        }
        (T::Read { fid, offset, count }, Rmessage::Read { data }) => {
            let want = match (&g.fids[&fid.0].open, last) {
                (FidOpen::XattrRead(v), _) => {
                    let count = (*count as usize).min(g.msize as usize - PAYLOAD_HEADER_LEN);
                    let s = (*offset as usize).min(v.len());
                    v[s..v.len().min(s + count)].to_vec()
                }
                (
                    _,
                    Some(Call {
                        res: Res::Data(Ok(d)),
                        ..
                    }),
                ) => d.clone(),
                _ => unreachable!(),
            };
            if data.0 != want {
                return Err(format!(
                    "{what}: read {}",
                    data_diff(&data.0, &want, *offset)
                ));
            }
        }
        (T::Write { fid, offset, data }, Rmessage::Write { count }) => {
            let want = match g.fids.get_mut(&fid.0).map(|m| &mut m.open) {
                Some(FidOpen::XattrWrite { value, written, .. }) => {
                    let s = *offset as usize;
                    value[s..s + data.0.len()].copy_from_slice(&data.0);
                    *written = (*written).max(s + data.0.len());
                    data.0.len()
                }
                _ => match last {
                    Some(Call {
                        res: Res::Count(Ok(n)),
                        ..
                    }) => *n,
                    _ => unreachable!(),
                },
            };
            if *count as usize != want {
                return Err(format!(
                    "{what}: Rwrite count={count}, the model wrote {want}"
                ));
            }
        }
        (T::Readdir { fid, count, offset }, Rmessage::Readdir { entries }) => {
            let Some(Call {
                res: Res::Entries(exact, listing, mark),
                ..
            }) = last
            else {
                unreachable!()
            };
            let count = (*count as usize).min(g.msize as usize - PAYLOAD_HEADER_LEN);
            let size: usize = entries.0.iter().map(|d| 24 + d.name.0.len()).sum();
            if size > count {
                return Err(format!(
                    "{what}: {size} bytes of entries, asked for {count}"
                ));
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
                let want_names: Vec<(&[u8], u64)> =
                    want.iter().map(|e| (&e.name[..], e.next)).collect();
                if got_names != want_names {
                    return Err(format!(
                        "{what}: entries {:?}, the model lists {:?}",
                        show(&got_names),
                        show(&want_names)
                    ));
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
                m, fid.0, node, *offset, listing, &entries.0, unknown, relists, &since, &what,
            )?;
            if let Some(last) = entries.0.last() {
                g.cursor.insert(fid.0, last.offset);
            }
        }
        (T::Fsync { .. }, Rmessage::Fsync {}) => {}
        (T::Statfs { .. }, Rmessage::Statfs { stat }) => {
            if stat.namelen != 255
                || stat.bfree > stat.blocks
                || stat.bavail > stat.blocks
                || stat.ffree > stat.files
                || stat.bsize == 0
            {
                return Err(format!("{what}: {stat:?} is not a filesystem's statfs"));
            }
        }
        (T::Mkdir { .. }, Rmessage::Mkdir { qid })
        | (T::Mknod { .. }, Rmessage::Mknod { qid })
        | (T::Symlink { .. }, Rmessage::Symlink { qid }) => {
            let Some(Call {
                res: Res::Node(Ok(node)),
                ..
            }) = last
            else {
                unreachable!()
            };
            qid_ok(m, *node, qid)?;
        }
        (T::Renameat { .. }, Rmessage::Renameat {})
        | (T::Rename { .. }, Rmessage::Rename {})
        | (T::Link { .. }, Rmessage::Link {})
        | (T::Unlinkat { .. }, Rmessage::Unlinkat {})
        | (T::Setattr { .. }, Rmessage::Setattr {}) => {}
        (T::Readlink { .. }, Rmessage::Readlink { target }) => {
            let Some(Call {
                res: Res::Data(Ok(t)),
                ..
            }) = last
            else {
                unreachable!()
            };
            if target.as_bytes() != &t[..] {
                return Err(format!("{what}: target {target:?}"));
            }
        }
        (T::Getattr { .. }, Rmessage::Getattr { attr }) => {
            let Some(Call {
                res: Res::Attr(node, n),
                ..
            }) = last
            else {
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
                return Err(format!(
                    "{what}: mode={:o} uid={} gid={} nlink={} size={} rdev={:#x}, the model has \
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
                ));
            }
            qid_ok(m, *node, &attr.qid)?;
        }
        (T::Xattrwalk { fid, newfid, .. }, Rmessage::Xattrwalk { size }) => {
            let Some(Call {
                res: Res::Data(Ok(v)),
                ..
            }) = last
            else {
                unreachable!()
            };
            if *size != v.len() as u64 {
                return Err(format!("{what}: size {size}, the model has {}", v.len()));
            }
            let src = &g.fids[&fid.0];
            let (node, uid) = (src.node, src.uid);
            g.fids.insert(
                newfid.0,
                MFid {
                    node,
                    open: FidOpen::XattrRead(v.clone()),
                    entry,
                    uid,
                },
            );
        }
        (
            T::Xattrcreate {
                fid,
                name,
                attr_size,
                flags,
            },
            Rmessage::Xattrcreate {},
        ) => {
            g.fids.get_mut(&fid.0).expect("prechecked").open = FidOpen::XattrWrite {
                name: name.0.clone(),
                flags: *flags,
                value: vec![0; *attr_size as usize],
                written: 0,
            };
        }
        (T::Remove { fid }, _) => {
            // The fid goes whatever the outcome (9P's rule).
            let e = g.fids.remove(&fid.0).expect("prechecked");
            if let FidOpen::File { owner, .. } = e.open {
                m.release(owner);
            }
            g.cursor.remove(&fid.0);
            g.passes.forget(fid.0);
            match (e.entry, last.and_then(Call::error)) {
                (None, _) => return expect_err(got, Errno::EBUSY, &what),
                (_, Some(err)) => return expect_err(got, err, &what),
                _ if !matches!(got, Rmessage::Remove {}) => {
                    return Err(format!("{what}: expected Rremove, got {gs}"));
                }
                _ => {}
            }
        }
        (T::Clunk { fid }, _) => {
            let e = g.fids.remove(&fid.0).expect("prechecked");
            if let FidOpen::File { owner, .. } = e.open {
                m.release(owner);
            }
            g.cursor.remove(&fid.0);
            g.passes.forget(fid.0);
            match last.and_then(Call::error) {
                Some(err) => return expect_err(got, err, &what),
                None if !matches!(got, Rmessage::Clunk {}) => {
                    return Err(format!("{what}: expected Rclunk, got {gs}"));
                }
                None => {}
            }
        }
        (
            T::Lock {
                fid,
                lock_type,
                start,
                length,
                ..
            },
            Rmessage::Lock { status },
        ) => {
            let Some(Call {
                res: Res::Lock(Ok(want)),
                ..
            }) = last
            else {
                unreachable!()
            };
            let granted = *status == LockStatus::Success;
            match want {
                Some(w) if *w != granted => {
                    return Err(format!("{what}: {status:?}, the model says granted={w}"));
                }
                None if granted => {
                    let (node, _, owner) = open_file(g, *fid).expect("prechecked");
                    m.force_lock(node, owner, *lock_type, *start, lock_end(*start, *length));
                }
                _ => {}
            }
        }
        (
            T::Getlock { start, length, .. },
            Rmessage::Getlock {
                lock_type,
                start: s,
                length: l,
                ..
            },
        ) => {
            let Some(Call {
                res: Res::Getlock(Ok((held, either))),
                ..
            }) = last
            else {
                unreachable!()
            };
            let (rs, re) = (*start, lock_end(*start, *length));
            let (gs_, ge) = (*s, lock_end(*s, *l));
            let none = *lock_type == LockType::Unlock;
            let fits = held.iter().any(|h| {
                h.ty == *lock_type && h.start <= ge && gs_ <= h.end && gs_ <= re && rs <= ge
            });
            let ok = match (held.is_empty(), none) {
                (true, true) => true,
                (true, false) => false,
                (false, true) => *either,
                (false, false) => fits,
            };
            if !ok {
                return Err(format!(
                    "{what}: {lock_type:?} {s}+{l}; the model's conflicting locks are {held:?}"
                ));
            }
        }
        _ => return Err(format!("{what}: unexpected {gs}")),
    }
    Ok(())
}

fn show(v: &[(&[u8], u64)]) -> Vec<String> {
    v.iter()
        .map(|(n, o)| format!("{}@{o}", n.escape_ascii()))
        .collect()
}
