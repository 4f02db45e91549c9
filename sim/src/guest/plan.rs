//! Sequences the workload plays ([`Step`]): shrink a file, grow it past its old end and read
//! the gap back (stale data); after a directory moves, walk `..` from fids inside it and list
//! it (stale parents); a rename raced by a fid made from the entry it moves.

use co9p::protocol::{Data, Fid, LockType, OpenFlags, P9String, Tmessage};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;

use super::aim::u;
use super::{FidOpen, Guest, MFid, PERSISTENT, Uses};
use crate::model::{Model, NodeId};

/// A request the workload wants to send soon, about a file rather than a fid.
#[derive(Debug, Clone)]
pub enum Step {
    /// Open a fid on `node` with `flags` (for the steps after it).
    Open { node: NodeId, flags: OpenFlags },
    /// Write through an open fid on `node` at `at`, past its end.
    Grow { node: NodeId, at: u64 },
    /// Read `len` bytes at `from` through an open fid on `node`.
    Read { node: NodeId, from: u64, len: u32 },
    /// Walk `..` (and maybe on) from a fid on the directory `node`.
    Up { node: NodeId },
    /// List the directory `node` through an open fid on it.
    List { node: NodeId },
    /// Tremove through `fid` (made racing a rename of its entry).
    RemoveFid { fid: u32 },
    /// Twrite the rest of the value a Txattrcreate on `fid` announced, as Linux's
    /// setxattr does (the Tclunk that sets it comes later).
    FillXattr { fid: u32 },
    /// Tlock through `fid` (a merge sequence: the same owner each time).
    Lock {
        fid: u32,
        ty: co9p::protocol::LockType,
        start: u64,
        length: u64,
    },
    /// Tgetlock (write) on `node` through an open file other than `owner` (opened first if
    /// there is none; `tries`: times it found none).
    Probe {
        node: NodeId,
        owner: u64,
        start: u64,
        length: u64,
        tries: u8,
    },
    /// Send this request (the second half of a race).
    Then(Box<(Tmessage, Uses)>),
}

impl Guest {
    /// Whether the next planned request is the second half of a race: it goes out right
    /// after the first, before anything else happens.
    pub fn urgent(&self) -> bool {
        matches!(self.plan.front(), Some(Step::Then(_)))
    }

    /// The next planned step as a request, if it fits now. A step waiting for an earlier
    /// one (a file being opened) is tried again a few times before it is dropped.
    pub(super) fn planned(
        &mut self,
        rng: &mut ChaCha8Rng,
        model: &Model,
    ) -> Option<(Tmessage, Uses)> {
        let step = self.plan.pop_front()?;
        let retry = matches!(
            step,
            Step::Grow { .. }
                | Step::Read { .. }
                | Step::RemoveFid { .. }
                | Step::Lock { .. }
                | Step::FillXattr { .. }
        )
        .then(|| step.clone());
        let r = self.realize(step, rng, model);
        match (r.is_none(), retry) {
            (true, Some(step)) if self.plan_tries < 8 => {
                self.plan_tries += 1;
                self.plan.push_front(step);
            }
            _ => self.plan_tries = 0,
        }
        r
    }

    pub(super) fn realize(
        &mut self,
        step: Step,
        rng: &mut ChaCha8Rng,
        model: &Model,
    ) -> Option<(Tmessage, Uses)> {
        let open_with = |m: &MFid, w: bool| match m.open {
            FidOpen::File { flags, .. } => {
                if w {
                    flags.writable() && !flags.contains(OpenFlags::APPEND)
                } else {
                    flags.readable()
                }
            }
            _ => false,
        };
        match step {
            Step::Open { node, flags } => {
                if let Some(f) = self
                    .fid_on(node, |m| m.is_closed())
                    .filter(|f| *f >= PERSISTENT)
                {
                    return Some((
                        Tmessage::Lopen { fid: Fid(f), flags },
                        u(&[], &[], &[f], &[]),
                    ));
                }
                // Walk a fresh fid to it first (a clone of a fid on it), then open.
                let src = self.fid_on(node, |_| true)?;
                let newfid = self.free_fid(rng)?;
                self.plan.push_front(Step::Open { node, flags });
                Some((
                    Tmessage::Walk {
                        fid: Fid(src),
                        newfid: Fid(newfid),
                        wnames: Vec::new(),
                    },
                    u(&[src], &[], &[newfid], &[]),
                ))
            }
            Step::Grow { node, at } => {
                let f = self.fid_on(node, |m| open_with(m, true))?;
                let len = rng.random_range(1..32);
                let byte = rng.random_range(1..=255u8);
                let data: Vec<u8> = (0..len).map(|i| byte.wrapping_add(i as u8)).collect();
                Some((
                    Tmessage::Write {
                        fid: Fid(f),
                        offset: at,
                        data: Data(data),
                    },
                    u(&[f], &[], &[], &[]),
                ))
            }
            Step::Read { node, from, len } => {
                let f = self.fid_on(node, |m| open_with(m, false))?;
                Some((
                    Tmessage::Read {
                        fid: Fid(f),
                        offset: from,
                        count: len,
                    },
                    u(&[f], &[], &[], &[]),
                ))
            }
            Step::Up { node } => {
                let f = self.fid_on(node, |m| m.is_closed())?;
                let newfid = self.free_fid(rng)?;
                let wnames = match rng.random_range(0..3) {
                    0 => vec![P9String::from("..")],
                    1 => vec![P9String::from(".."), P9String::from("..")],
                    _ => vec![P9String::from(".."), self.name(rng)],
                };
                Some((
                    Tmessage::Walk {
                        fid: Fid(f),
                        newfid: Fid(newfid),
                        wnames,
                    },
                    u(&[f], &[], &[newfid], &[]),
                ))
            }
            Step::RemoveFid { fid } => {
                if !self.fids.contains_key(&fid) || self.claims.contains_key(&fid) {
                    return None;
                }
                Some((Tmessage::Remove { fid: Fid(fid) }, u(&[], &[], &[], &[fid])))
            }
            Step::FillXattr { fid } => {
                let m = self.fids.get(&fid)?;
                let FidOpen::XattrWrite { value, written, .. } = &m.open else {
                    return None;
                };
                // A value at the size limit is never filled: no Twrite within msize holds it.
                if self.claims.contains_key(&fid) || *written >= value.len() || value.len() > 64 {
                    return None;
                }
                let (at, len) = (*written, value.len() - *written);
                let byte = rng.random_range(1..=255u8);
                Some((
                    Tmessage::Write {
                        fid: Fid(fid),
                        offset: at as u64,
                        data: Data(vec![byte; len]),
                    },
                    u(&[], &[], &[fid], &[]),
                ))
            }
            Step::Then(m) => Some(*m),
            Step::Lock {
                fid,
                ty,
                start,
                length,
            } => {
                let m = self.fids.get(&fid)?;
                let busy = self
                    .claims
                    .get(&fid)
                    .is_some_and(|c| c.exclusive || c.closing);
                if busy || !matches!(m.open, FidOpen::File { .. }) {
                    return None;
                }
                Some(self.lock_msg(true, fid, ty, start, length))
            }
            Step::Probe {
                node,
                owner,
                start,
                length,
                tries,
            } => {
                let other =
                    |m: &MFid| matches!(m.open, FidOpen::File { owner: o, .. } if o != owner);
                if let Some(f) = self.fid_on(node, other) {
                    return Some(self.lock_msg(false, f, LockType::Write, start, length));
                }
                if tries < 8 && model.node(node).size().is_some() {
                    self.plan.push_front(Step::Probe {
                        node,
                        owner,
                        start,
                        length,
                        tries: tries + 1,
                    });
                    if tries == 0 {
                        // Open another file on it first (a new owner), then ask.
                        self.plan.push_front(Step::Open {
                            node,
                            flags: OpenFlags::RDONLY,
                        });
                    }
                }
                None
            }
            Step::List { node } => {
                let dir = |m: &MFid| matches!(m.open, FidOpen::File { .. });
                match self.fid_on(node, dir) {
                    Some(f) => Some((
                        Tmessage::Readdir {
                            fid: Fid(f),
                            offset: self.cursor.get(&f).copied().unwrap_or(0),
                            count: [64, 4096][rng.random_range(0..2)],
                        },
                        u(&[f], &[], &[], &[]),
                    )),
                    None if model.node(node).is_dir() => {
                        self.plan.push_front(Step::List { node });
                        self.plan.push_front(Step::Open {
                            node,
                            flags: OpenFlags::RDONLY,
                        });
                        None
                    }
                    None => None,
                }
            }
        }
    }
}
