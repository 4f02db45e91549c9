//! The workload: which request a guest sends next, aimed with the model's view of the
//! tree (mostly names that exist, open files of the right kind) so most requests get past
//! the error paths, while the rest probe them.
//!
//! Besides single requests it plays short sequences ([`Step`]): shrink a file, grow it
//! past its old end and read the gap back (stale data); after a directory moves across
//! directories, walk `..` from fids inside it and list it (stale parents). Renamed files
//! draw the requests that act through fids naming them (Tremove, Tgetattr, Tlopen, Twalk).
//! With `contention`, most requests go to few fids and few names.
//!
//! Aiming is in `aim.rs`, sequences in `plan.rs`, requests that change directories in
//! `namespace.rs`, those about attributes in `attrs.rs` and byte-range locks in `lock.rs`.

use co9p::protocol::{Data, Fid, GetattrMask, OpenFlags, P9String, Tmessage};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;

use super::aim::u;
use super::plan::Step;
use super::{FidOpen, Guest, OpKind, PERSISTENT, Uses};
use crate::model::{Content, Model, NodeId};

impl Guest {
    /// The next request of the workload, or `None` if the chosen kind does not fit now.
    pub fn next_op(
        &mut self,
        rng: &mut ChaCha8Rng,
        ops: &[OpKind],
        model: &Model,
    ) -> Option<(Tmessage, Uses)> {
        if self.urgent() || (!self.plan.is_empty() && rng.random_bool(0.7)) {
            self.plan.truncate(8);
            return self.planned(rng, model);
        }
        let is_file = |n: NodeId| matches!(model.node(n).content, Content::File(_));
        let is_dir = |n: NodeId| model.node(n).is_dir();
        let mut kind = ops[rng.random_range(0..ops.len())];
        if self.dirs && rng.random_bool(0.25) {
            kind =
                [OpKind::Mkdir, OpKind::Rename, OpKind::Walk, OpKind::Walk][rng.random_range(0..4)];
        }
        // Keep the fid table small: past 12 fids, clunk.
        if self.fids.len() > 12 && ops.contains(&OpKind::Clunk) {
            kind = OpKind::Clunk;
        }
        let msize = self.msize;
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
                let mut wnames: Vec<P9String> = (0..n).map(|_| self.name(rng)).collect();
                if n >= 1 {
                    wnames[0] = self.name_in(rng, model, from);
                }
                // Now and then `.` or `..` (the root's `..` is the root), or a name that
                // cannot exist: empty, with a '/', or too long.
                let dots = if self.dirs { 0.25 } else { 0.12 };
                for w in wnames.iter_mut() {
                    if rng.random_bool(dots) {
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
            OpKind::Attach => {
                let fid = self.free_fid(rng)?;
                let aname = [
                    "",
                    "/",
                    "shared",
                    "/shared/",
                    "nonexistent",
                    "shared/a",
                    "/srv/sim",
                ][rng.random_range(0..7)];
                let n_uname = [0, self.uid, 4242, co9p::protocol::NONUNAME][rng.random_range(0..4)];
                (
                    Tmessage::Attach {
                        fid: Fid(fid),
                        afid: Fid::NOFID,
                        uname: "sim".into(),
                        aname: aname.into(),
                        n_uname,
                    },
                    u(&[], &[], &[fid], &[]),
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
                let (gid, _) = self.make_in(model, f);
                (
                    Tmessage::Lcreate {
                        fid: Fid(f),
                        name: self.name(rng),
                        flags,
                        mode: [0o644, 0o600, 0o755, 0o4755, 0o2775][rng.random_range(0..5)],
                        gid,
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
                // As Linux opens a directory to list it; on a file, ENOTDIR.
                if rng.random_bool(0.15) {
                    flags = flags | OpenFlags::DIRECTORY;
                }
                (
                    Tmessage::Lopen { fid: Fid(f), flags },
                    u(&[], &[], &[f], &[]),
                )
            }
            OpKind::Read => {
                let f = self.pick(rng, |_, m| match m.open {
                    FidOpen::File { flags, .. } => flags.readable() && is_file(m.node),
                    FidOpen::XattrRead { .. } => true,
                    _ => false,
                })?;
                let count = match rng.random_range(0..4) {
                    0 => msize,
                    1 => msize.saturating_sub(11),
                    _ => rng.random_range(1..200),
                };
                let offset = match rng.random_range(0..4) {
                    0 | 1 => 0,
                    2 if self.gaps => rng.random_range(4000..4200),
                    _ => rng.random_range(0..80),
                };
                (
                    Tmessage::Read {
                        fid: Fid(f),
                        offset,
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
                    _ if self.gaps && rng.random_bool(0.3) => rng.random_range(4080..4110),
                    _ => rng.random_range(0..64),
                };
                // With cache=none Linux asks for the attributes after a write (its size):
                // a Tgetattr right behind it, racing it.
                if matches!(self.fids[&f].open, FidOpen::File { .. }) && rng.random_bool(0.3) {
                    let stat = Tmessage::Getattr {
                        fid: Fid(f),
                        request_mask: GetattrMask::ALL,
                    };
                    self.plan
                        .push_front(Step::Then(Box::new((stat, u(&[f], &[], &[], &[])))));
                }
                // Writes into an xattr's buffer go one at a time: which of two at once
                // lands last is the server's choice, and no reply shows it.
                let uses = if matches!(self.fids[&f].open, FidOpen::XattrWrite { .. }) {
                    u(&[], &[], &[f], &[])
                } else {
                    u(&[f], &[], &[], &[])
                };
                (
                    Tmessage::Write {
                        fid: Fid(f),
                        offset,
                        data: Data(data),
                    },
                    uses,
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
            OpKind::Statfs => {
                let f = self.pick(rng, |_, _| true)?;
                (Tmessage::Statfs { fid: Fid(f) }, u(&[f], &[], &[], &[]))
            }
            OpKind::Mkdir
            | OpKind::Mknod
            | OpKind::Symlink
            | OpKind::Link
            | OpKind::Rename
            | OpKind::Move
            | OpKind::Unlink => return self.namespace_op(kind, rng, model),
            OpKind::Readlink
            | OpKind::Getattr
            | OpKind::Setattr
            | OpKind::XattrGet
            | OpKind::XattrSet => return self.attr_op(kind, rng, model),
            OpKind::Lock | OpKind::Getlock => return self.lock_op(kind, rng),
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
                    .entry
                    .as_ref()
                    .is_none_or(|(dir, _)| *dir != crate::model::ROOT);
                let p = if self.renamed.contains(&self.fids[&f].node) {
                    0.4
                } else {
                    0.15
                };
                let msg = if removable && rng.random_bool(p) {
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
