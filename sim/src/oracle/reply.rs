//! Judging one reply: the handler's early answer (fid checks), or what its filesystem
//! calls said, against what came back — and the fid-table change the reply shows.

use co9p::protocol::{Dirent, Errno, LockStatus, PAYLOAD_HEADER_LEN, Qid, Rmessage, Tmessage};

use super::{Call, Check, Req, Res, Show, calls_done, open_file, precheck};
use crate::guest::{FidOpen, Guest, MFid};
use crate::model::{Model, NodeId};

fn expect_err(got: &Rmessage, e: Errno, what: &str) -> Check {
    let gs = Show(got);
    match got {
        Rmessage::Lerror { ecode } if *ecode == e => Ok(()),
        _ => Err(format!("{what}: expected Rlerror({e:?}), got {gs}")),
    }
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
    if !matches!(req.msg, T::Walk { .. } | T::Clunk { .. } | T::Remove { .. })
        && let Some(e) = last.and_then(Call::error)
    {
        return expect_err(got, e, &what);
    }
    let qid_ok = |m: &mut Model, node: NodeId, q: &Qid| -> Check {
        if q.ty.0 != m.node(node).qid_type() || !m.learn_ino(node, q.path) {
            return Err(format!("{what}: qid {q:?} does not name model node {node}"));
        }
        Ok(())
    };
    match (&req.msg, got) {
        (T::Attach { fid, .. }, Rmessage::Attach { qid }) => {
            if g.fids.contains_key(&fid.0) {
                return expect_err(got, Errno::EINVAL, &what);
            }
            qid_ok(m, crate::model::ROOT, qid)?;
            g.fids.insert(
                fid.0,
                MFid {
                    node: crate::model::ROOT,
                    open: FidOpen::Closed,
                    parent: None,
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
                let node = nodes.last().copied().unwrap_or(g.fids[&fid.0].node);
                // The name each step came by, as the server keeps it: `.` and the root's
                // `..` keep it, another `..` forgets it.
                let mut parent = g.fids[&fid.0].parent.clone();
                let mut cur = g.fids[&fid.0].node;
                for (w, n) in wnames.iter().zip(&nodes) {
                    match w.as_bytes() {
                        b"." => {}
                        b".." if cur == crate::model::ROOT => {}
                        b".." => parent = None,
                        b => parent = Some((cur, b.to_vec())),
                    }
                    cur = *n;
                }
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
                        parent,
                    },
                );
                g.cursor.remove(&newfid.0);
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
        }
        (
            T::Lcreate {
                fid, flags, name, ..
            },
            Rmessage::Lcreate { qid, .. },
        ) => {
            let dir = g.fids[&fid.0].node;
            let Some(Call {
                res: Res::Node(Ok(node)),
                ..
            }) = last
            else {
                unreachable!()
            };
            qid_ok(m, *node, qid)?;
            let owner = m.new_owner();
            g.fids.insert(
                fid.0,
                MFid {
                    node: *node,
                    open: FidOpen::File {
                        flags: *flags,
                        owner,
                    },
                    parent: Some((dir, name.as_bytes().to_vec())),
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
                    "{what}: read {} bytes {:02x?}, the model has {} bytes {:02x?}",
                    data.0.len(),
                    &data.0[..data.0.len().min(16)],
                    want.len(),
                    &want[..want.len().min(16)]
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
        (T::Readdir { fid, count, .. }, Rmessage::Readdir { entries }) => {
            let Some(Call {
                res: Res::Entries(Ok(all)),
                ..
            }) = last
            else {
                unreachable!()
            };
            let count = (*count as usize).min(g.msize as usize - PAYLOAD_HEADER_LEN);
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
            for (d, e) in entries.0.iter().zip(&want) {
                if d.ty != m.node(e.node).dtype() {
                    return Err(format!("{what}: {:?} has type {}", d.name, d.ty));
                }
            }
            if let Some(last) = entries.0.last() {
                g.cursor.insert(fid.0, last.offset);
            }
        }
        (T::Fsync { .. }, Rmessage::Fsync {}) => {}
        (T::Mkdir { .. }, Rmessage::Mkdir { qid })
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
        (
            T::Renameat {
                olddirfid,
                oldname,
                newdirfid,
                newname,
            },
            Rmessage::Renameat {},
        ) => {
            // Every fid of this client reached by the old entry now names the new one: a
            // fid keeps naming its own file across renames made through its session.
            let from = (g.fids[&olddirfid.0].node, oldname.0.clone());
            let to = (g.fids[&newdirfid.0].node, newname.0.clone());
            for f in g.fids.values_mut() {
                if f.parent.as_ref() == Some(&from) {
                    f.parent = Some(to.clone());
                }
            }
        }
        (T::Link { .. }, Rmessage::Link {})
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
                res: Res::Attr(node),
                ..
            }) = last
            else {
                unreachable!()
            };
            let n = m.node(*node).clone();
            if attr.mode != n.mode || attr.nlink != n.nlink || attr.size != n.size() {
                return Err(format!(
                    "{what}: mode={:o} nlink={} size={}, the model has mode={:o} nlink={} size={}",
                    attr.mode,
                    attr.nlink,
                    attr.size,
                    n.mode,
                    n.nlink,
                    n.size()
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
            let node = g.fids[&fid.0].node;
            let parent = g.fids[&fid.0].parent.clone();
            g.fids.insert(
                newfid.0,
                MFid {
                    node,
                    open: FidOpen::XattrRead(v.clone()),
                    parent,
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
            match (e.parent, last.and_then(Call::error)) {
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
                    let end = if *length == 0 {
                        u64::MAX
                    } else {
                        start + length - 1
                    };
                    m.force_lock(node, owner, *lock_type, *start, end);
                }
                _ => {}
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
