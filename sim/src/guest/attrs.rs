//! Requests about a file's attributes: Tgetattr, Treadlink, Tsetattr (a shrink planning the
//! `gaps` sequence), Txattrwalk, Txattrcreate.

use co9p::protocol::{Fid, GetattrMask, OpenFlags, SetAttr, SetattrMask, Timespec, Tmessage};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;

use super::aim::u;
use super::plan::Step;
use super::{FidOpen, Guest, OpKind, PERSISTENT, Uses};
use crate::model::{Content, Model, NodeId};

impl Guest {
    /// A request of a `kind` about attributes (`None`: it does not fit now).
    pub(super) fn attr_op(
        &mut self,
        kind: OpKind,
        rng: &mut ChaCha8Rng,
        model: &Model,
    ) -> Option<(Tmessage, Uses)> {
        let is_file = |n: NodeId| matches!(model.node(n).content, Content::File(_));
        let nonpersistent = |f: u32| f >= PERSISTENT;
        let op = match kind {
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
            OpKind::Setattr => {
                let f = self.pick(rng, |_, _| true)?;
                let node = self.fids[&f].node;
                let mut a = SetAttr::default();
                match rng.random_range(0..10) {
                    0..=3 if is_file(node) => {
                        a.valid = SetattrMask::SIZE;
                        let size = model.node(node).size().unwrap_or(0);
                        a.size = if self.gaps && size > 0 {
                            // Shrink, then grow past the old end and read the gap back.
                            let to = rng.random_range(0..size);
                            let at = to + rng.random_range(1..5000);
                            if self.fid_on(node, |m| matches!(m.open, FidOpen::File { flags, .. } if flags.writable() && flags.readable())).is_none() {
                                self.plan.push_back(Step::Open {
                                    node,
                                    flags: OpenFlags::RDWR,
                                });
                            }
                            self.plan.push_back(Step::Grow { node, at });
                            self.plan.push_back(Step::Read {
                                node,
                                from: to,
                                len: (at - to + 40) as u32,
                            });
                            to
                        } else {
                            rng.random_range(0..100)
                        };
                    }
                    4..=6 => {
                        a.valid = SetattrMask::MODE;
                        // Set-id modes others may write too: a write by another user
                        // must drop S_ISUID, and S_ISGID only with group execute.
                        a.mode = [
                            0o600, 0o644, 0o700, 0o4755, 0o2755, 0o6711, 0o2644, 0o1777, 0o2666,
                            0o6767,
                        ][rng.random_range(0..10)];
                    }
                    7 => {
                        // A chown as the Linux client sends it (with the set-id bits it
                        // drops itself, in the same request, some of the time).
                        a.valid = SetattrMask::UID | SetattrMask::GID;
                        a.uid = [0, 1000, 4242][rng.random_range(0..3)];
                        a.gid = [0, 100, 4242][rng.random_range(0..3)];
                        if rng.random_bool(0.3) {
                            a.valid = a.valid | SetattrMask::MODE;
                            a.mode = model.node(node).mode & 0o1777;
                        }
                    }
                    8 => {
                        a.valid = SetattrMask::ATIME
                            | SetattrMask::MTIME
                            | SetattrMask::ATIME_SET
                            | SetattrMask::MTIME_SET;
                        a.atime = Timespec { sec: 1000, nsec: 5 };
                        a.mtime = Timespec {
                            sec: 2000,
                            nsec: [7, 1_000_000_000][rng.random_range(0..2)],
                        };
                    }
                    _ => {
                        a.valid = SetattrMask::MODE | SetattrMask::SIZE;
                        a.mode = 0o640;
                        a.size = rng.random_range(0..40);
                    }
                }
                (
                    Tmessage::Setattr {
                        fid: Fid(f),
                        attr: a,
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
                // Now and then a value at the limit, or a byte past it (E2BIG), left unfilled
                // (the Tclunk then answers EINVAL). A small one is filled most of the time,
                // so the Tclunk sets it.
                let attr_size = match rng.random_range(0..12) {
                    0 => crate::oracle::XATTR_SIZE_MAX + rng.random_range(0..2),
                    k => [0, 3, 8][k % 3],
                };
                if attr_size <= 8 && rng.random_bool(0.8) {
                    self.plan.push_back(Step::FillXattr { fid: f });
                }
                (
                    Tmessage::Xattrcreate {
                        fid: Fid(f),
                        name: name.into(),
                        attr_size,
                        flags: [0, 0, 1, 2][rng.random_range(0..4)],
                    },
                    u(&[], &[], &[f], &[]),
                )
            }
            _ => unreachable!("not a attribute kind: {kind:?}"),
        };
        Some(op)
    }
}
