//! The workload: which request a guest sends next, aimed with the model's view of the
//! tree (mostly names that exist, open files of the right kind) so most requests get past
//! the error paths, while the rest probe them.

use co9p::protocol::{
    AT_REMOVEDIR, Data, Fid, GetattrMask, LockFlags, LockType, OpenFlags, P9String, SetAttr,
    SetattrMask, Tmessage,
};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;

use super::{FidOpen, Guest, MFid, NAMES, OpKind, PERSISTENT, Uses};
use crate::model::{Content, Model, NodeId};

impl Guest {
    fn free_fid(&self, rng: &mut ChaCha8Rng) -> Option<u32> {
        let f = rng.random_range(PERSISTENT + 10..PERSISTENT + 30);
        (!self.fids.contains_key(&f) && !self.claims.contains_key(&f)).then_some(f)
    }

    fn pick(&self, rng: &mut ChaCha8Rng, keep: impl Fn(u32, &MFid) -> bool) -> Option<u32> {
        let v: Vec<u32> = self
            .fids
            .iter()
            .filter(|(f, m)| keep(**f, m))
            .map(|(f, _)| *f)
            .collect();
        (!v.is_empty()).then(|| v[rng.random_range(0..v.len())])
    }

    /// A directory fid (a known directory node): the private, shared or root one, or any
    /// walked fid the model knows is a directory.
    fn dir_fid(&self, rng: &mut ChaCha8Rng, model: &Model) -> Option<u32> {
        if rng.random_bool(0.7) {
            return Some(rng.random_range(1..PERSISTENT));
        }
        // Never the export root: its entries (`shared`, `cN`) stay put.
        self.pick(rng, |_, m| {
            m.is_closed() && m.node != crate::model::ROOT && model.node(m.node).is_dir()
        })
    }

    /// Mostly a name that exists in the directory of `fid`, else any name.
    fn name_in(&self, rng: &mut ChaCha8Rng, model: &Model, fid: u32) -> P9String {
        if let Some(d) = self.fids.get(&fid).and_then(|m| model.node(m.node).dir())
            && !d.by_name.is_empty()
            && rng.random_bool(0.75)
        {
            let names: Vec<&Vec<u8>> = d.by_name.keys().collect();
            return P9String(names[rng.random_range(0..names.len())].clone());
        }
        P9String::from(NAMES[rng.random_range(0..NAMES.len())])
    }

    /// A clone of the private or shared directory into a fresh fid.
    fn clone_dir(&self, rng: &mut ChaCha8Rng) -> Option<(Tmessage, Uses)> {
        let from = rng.random_range(1..PERSISTENT);
        let newfid = self.free_fid(rng)?;
        Some((
            Tmessage::Walk {
                fid: Fid(from),
                newfid: Fid(newfid),
                wnames: Vec::new(),
            },
            Uses {
                primary: vec![from],
                exclusive: vec![newfid],
                ..Uses::default()
            },
        ))
    }

    /// The next request of the workload, or `None` if the chosen kind does not fit now.
    pub fn next_op(
        &mut self,
        rng: &mut ChaCha8Rng,
        ops: &[OpKind],
        model: &Model,
    ) -> Option<(Tmessage, Uses)> {
        let is_file = |n: NodeId| matches!(model.node(n).content, Content::File(_));
        let is_dir = |n: NodeId| model.node(n).is_dir();
        let name = |rng: &mut ChaCha8Rng| P9String::from(NAMES[rng.random_range(0..NAMES.len())]);
        let mut kind = ops[rng.random_range(0..ops.len())];
        // Keep the fid table small: past 12 fids, clunk.
        if self.fids.len() > 12 && ops.contains(&OpKind::Clunk) {
            kind = OpKind::Clunk;
        }
        let msize = self.msize;
        let u = |p: &[u32], s: &[u32], x: &[u32], c: &[u32]| Uses {
            primary: p.to_vec(),
            secondary: s.to_vec(),
            exclusive: x.to_vec(),
            closing: c.to_vec(),
        };
        let nonpersistent = |f: u32| f >= PERSISTENT;
        let op = match kind {
            OpKind::Walk => {
                let from = if rng.random_bool(0.8) {
                    self.pick(rng, |_, m| m.is_closed() && is_dir(m.node))?
                } else {
                    self.pick(rng, |_, m| m.is_closed())?
                };
                let newfid = if rng.random_bool(0.1) && nonpersistent(from) {
                    from
                } else {
                    self.free_fid(rng)?
                };
                let n = [0, 1, 1, 1, 2][rng.random_range(0..5)];
                let mut wnames: Vec<P9String> = (0..n).map(|_| name(rng)).collect();
                if n >= 1 {
                    wnames[0] = self.name_in(rng, model, from);
                }
                // Now and then `.` or `..` (the root's `..` is the root), or a name that
                // cannot exist: empty, with a '/', or too long.
                for w in wnames.iter_mut() {
                    if rng.random_bool(0.12) {
                        *w = P9String::from([".", ".."][rng.random_range(0..2)]);
                    } else if rng.random_bool(0.02) {
                        let bad = ["".to_string(), "a/b".to_string(), "x".repeat(256)];
                        *w = P9String::from(bad[rng.random_range(0..3)].as_str());
                    }
                }
                let uses = if newfid == from {
                    u(&[], &[], &[from], &[])
                } else {
                    u(&[from], &[], &[newfid], &[])
                };
                (
                    Tmessage::Walk {
                        fid: Fid(from),
                        newfid: Fid(newfid),
                        wnames,
                    },
                    uses,
                )
            }
            OpKind::Create => {
                // Creating turns the fid into the new file: use a walked clone.
                let Some(f) = self.pick(rng, |f, m| {
                    nonpersistent(f)
                        && m.is_closed()
                        && is_dir(m.node)
                        && m.node != crate::model::ROOT
                }) else {
                    return self.clone_dir(rng);
                };
                let flags =
                    [OpenFlags::RDWR, OpenFlags::WRONLY, OpenFlags::RDONLY][rng.random_range(0..3)];
                (
                    Tmessage::Lcreate {
                        fid: Fid(f),
                        name: name(rng),
                        flags,
                        mode: [0o644, 0o600, 0o755][rng.random_range(0..3)],
                        gid: 0,
                    },
                    u(&[], &[], &[f], &[]),
                )
            }
            OpKind::Open => {
                let f = self.pick(rng, |f, m| nonpersistent(f) && m.is_closed())?;
                let mut flags =
                    [OpenFlags::RDONLY, OpenFlags::WRONLY, OpenFlags::RDWR][rng.random_range(0..3)];
                if is_dir(self.fids[&f].node) && rng.random_bool(0.9) {
                    flags = OpenFlags::RDONLY;
                }
                if rng.random_bool(0.15) {
                    flags = flags | OpenFlags::TRUNC;
                }
                if rng.random_bool(0.1) {
                    flags = flags | OpenFlags::APPEND;
                }
                (
                    Tmessage::Lopen { fid: Fid(f), flags },
                    u(&[], &[], &[f], &[]),
                )
            }
            OpKind::Read => {
                let f = self.pick(rng, |_, m| match m.open {
                    FidOpen::File { flags, .. } => flags.readable() && is_file(m.node),
                    FidOpen::XattrRead(_) => true,
                    _ => false,
                })?;
                let count = match rng.random_range(0..4) {
                    0 => msize,
                    1 => msize.saturating_sub(11),
                    _ => rng.random_range(1..200),
                };
                (
                    Tmessage::Read {
                        fid: Fid(f),
                        offset: if rng.random_bool(0.5) {
                            0
                        } else {
                            rng.random_range(0..80)
                        },
                        count,
                    },
                    u(&[f], &[], &[], &[]),
                )
            }
            OpKind::Write => {
                let f = self.pick(rng, |_, m| match m.open {
                    FidOpen::File { flags, .. } => flags.writable(),
                    FidOpen::XattrWrite { .. } => true,
                    _ => false,
                })?;
                let len = if rng.random_bool(0.15) {
                    msize as usize - 23
                } else {
                    rng.random_range(0..48)
                };
                let byte = rng.random_range(1..=255u8);
                let data: Vec<u8> = (0..len).map(|i| byte.wrapping_add(i as u8)).collect();
                let offset = match &self.fids[&f].open {
                    FidOpen::XattrWrite { .. } => 0,
                    // Large writes go past msize-sized reads' reach.
                    _ if len > 64 => [0, u64::from(msize / 2)][rng.random_range(0..2)],
                    _ => rng.random_range(0..64),
                };
                (
                    Tmessage::Write {
                        fid: Fid(f),
                        offset,
                        data: Data(data),
                    },
                    u(&[f], &[], &[], &[]),
                )
            }
            OpKind::Readdir => {
                let f = self.pick(rng, |_, m| {
                    matches!(m.open, FidOpen::File { .. }) && is_dir(m.node)
                })?;
                let offset = if rng.random_bool(0.8) {
                    self.cursor.get(&f).copied().unwrap_or(0)
                } else {
                    0
                };
                let count = [30, 64, 120, 4096, msize][rng.random_range(0..5)];
                (
                    Tmessage::Readdir {
                        fid: Fid(f),
                        offset,
                        count,
                    },
                    u(&[f], &[], &[], &[]),
                )
            }
            OpKind::Fsync => {
                let f = self.pick(rng, |_, m| matches!(m.open, FidOpen::File { .. }))?;
                (
                    Tmessage::Fsync {
                        fid: Fid(f),
                        datasync: rng.random_range(0..2),
                    },
                    u(&[f], &[], &[], &[]),
                )
            }
            OpKind::Mkdir => {
                let d = self.dir_fid(rng, model)?;
                (
                    Tmessage::Mkdir {
                        dfid: Fid(d),
                        name: name(rng),
                        mode: 0o755,
                        gid: 0,
                    },
                    u(&[d], &[], &[], &[]),
                )
            }
            OpKind::Symlink => {
                let d = self.dir_fid(rng, model)?;
                (
                    Tmessage::Symlink {
                        fid: Fid(d),
                        name: name(rng),
                        symtgt: name(rng),
                        gid: 0,
                    },
                    u(&[d], &[], &[], &[]),
                )
            }
            OpKind::Readlink | OpKind::Getattr => {
                let f = self.pick(rng, |_, m| {
                    kind == OpKind::Getattr
                        || matches!(model.node(m.node).content, Content::Symlink(_))
                })?;
                let msg = if kind == OpKind::Readlink {
                    Tmessage::Readlink { fid: Fid(f) }
                } else {
                    Tmessage::Getattr {
                        fid: Fid(f),
                        request_mask: GetattrMask::ALL,
                    }
                };
                (msg, u(&[f], &[], &[], &[]))
            }
            OpKind::Link => {
                let d = self.dir_fid(rng, model)?;
                let t = self.pick(rng, |f, m| f != d && !is_dir(m.node))?;
                (
                    Tmessage::Link {
                        dfid: Fid(d),
                        fid: Fid(t),
                        name: name(rng),
                    },
                    u(&[d], &[t], &[], &[]),
                )
            }
            OpKind::Rename => {
                let a = self.dir_fid(rng, model)?;
                let b = self.dir_fid(rng, model)?;
                let sec: Vec<u32> = if a == b { vec![] } else { vec![b] };
                (
                    Tmessage::Renameat {
                        olddirfid: Fid(a),
                        oldname: self.name_in(rng, model, a),
                        newdirfid: Fid(b),
                        newname: name(rng),
                    },
                    u(&[a], &sec, &[], &[]),
                )
            }
            OpKind::Unlink => {
                let d = self.dir_fid(rng, model)?;
                let name = self.name_in(rng, model, d);
                let dir = self.fids.get(&d).and_then(|m| model.node(m.node).dir());
                let victim_is_dir = dir
                    .and_then(|dir| dir.by_name.get(name.as_bytes()))
                    .is_some_and(|&(n, _)| is_dir(n));
                let flags = if victim_is_dir != rng.random_bool(0.1) {
                    AT_REMOVEDIR
                } else {
                    0
                };
                (
                    Tmessage::Unlinkat {
                        dirfid: Fid(d),
                        name,
                        flags,
                    },
                    u(&[d], &[], &[], &[]),
                )
            }
            OpKind::Setattr => {
                let f = self.pick(rng, |_, _| true)?;
                let (valid, mode, size) = if is_file(self.fids[&f].node) && rng.random_bool(0.7) {
                    (SetattrMask::SIZE, 0, rng.random_range(0..100))
                } else {
                    (
                        SetattrMask::MODE,
                        [0o600, 0o644, 0o700][rng.random_range(0..3)],
                        0,
                    )
                };
                (
                    Tmessage::Setattr {
                        fid: Fid(f),
                        attr: SetAttr {
                            valid,
                            mode,
                            size,
                            ..SetAttr::default()
                        },
                    },
                    u(&[f], &[], &[], &[]),
                )
            }
            OpKind::XattrGet => {
                let f = self.pick(rng, |_, _| true)?;
                let newfid = self.free_fid(rng)?;
                let name = ["user.x", "user.y", ""][rng.random_range(0..3)];
                (
                    Tmessage::Xattrwalk {
                        fid: Fid(f),
                        newfid: Fid(newfid),
                        name: name.into(),
                    },
                    u(&[f], &[], &[newfid], &[]),
                )
            }
            OpKind::XattrSet => {
                let f = self.pick(rng, |f, m| nonpersistent(f) && m.is_closed())?;
                let name = ["user.x", "user.y"][rng.random_range(0..2)];
                (
                    Tmessage::Xattrcreate {
                        fid: Fid(f),
                        name: name.into(),
                        attr_size: [0, 3, 8][rng.random_range(0..3)],
                        flags: [0, 0, 1, 2][rng.random_range(0..4)],
                    },
                    u(&[], &[], &[f], &[]),
                )
            }
            OpKind::Lock => {
                let f = self.pick(rng, |_, m| matches!(m.open, FidOpen::File { .. }))?;
                let lock_type =
                    [LockType::Write, LockType::Read, LockType::Unlock][rng.random_range(0..3)];
                let (start, length) = [(0, 0), (0, 10), (5, 10), (20, 0)][rng.random_range(0..4)];
                (
                    Tmessage::Lock {
                        fid: Fid(f),
                        lock_type,
                        flags: LockFlags(0),
                        start,
                        length,
                        proc_id: self.id as u32,
                        client_id: "sim".into(),
                    },
                    u(&[f], &[], &[], &[]),
                )
            }
            OpKind::Clunk => {
                // A clunk pipelined behind other requests on its fid is only sent when
                // asked for: the server orders the barrier by first poll, not arrival.
                let pipelined = self.pipelined_clunk;
                let f = self.pick(rng, |f, _| {
                    nonpersistent(f)
                        && (pipelined || self.claims.get(&f).is_none_or(|c| c.primary == 0))
                })?;
                // Now and then a Tremove instead: unlinks the fid's name, and the fid goes.
                // Never the setup directories (`/shared`, `/cN`): the clients need them.
                let removable = self.fids[&f]
                    .parent
                    .as_ref()
                    .is_none_or(|(dir, _)| *dir != crate::model::ROOT);
                let msg = if removable && rng.random_bool(0.15) {
                    Tmessage::Remove { fid: Fid(f) }
                } else {
                    Tmessage::Clunk { fid: Fid(f) }
                };
                (msg, u(&[], &[], &[], &[f]))
            }
        };
        Some(op)
    }
}
