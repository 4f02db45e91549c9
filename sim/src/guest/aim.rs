//! Aiming: which fid, name or directory a request goes to, drawn with the model's view of the
//! tree (mostly names that exist, fids of the right kind; with `contention`, few of them).

use co9p::protocol::{Fid, P9String, Tmessage};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;

use super::{Guest, MFid, NAMES, PERSISTENT, Uses};
use crate::model::{Model, NodeId, S_ISGID};

/// What a request does to its fids: used (`p`), used as a second fid (`s`), changed (`x`),
/// closed (`c`).
pub(super) fn u(p: &[u32], s: &[u32], x: &[u32], c: &[u32]) -> Uses {
    Uses {
        primary: p.to_vec(),
        secondary: s.to_vec(),
        exclusive: x.to_vec(),
        closing: c.to_vec(),
    }
}

impl Guest {
    pub(super) fn names(&self) -> &'static [&'static str] {
        if self.contention { &NAMES[..2] } else { &NAMES }
    }

    /// A name for an entry: one of the guest's few, or now and then one that cannot be a
    /// name (empty, a slash, a NUL, one byte too long).
    pub(super) fn name(&self, rng: &mut ChaCha8Rng) -> P9String {
        if rng.random_bool(0.02) {
            const LONG: &str = concat!(
                "nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn",
                "nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn",
                "nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn",
                "nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn",
            );
            return P9String::from(["", "a/b", "a\0b", LONG][rng.random_range(0..4)]);
        }
        self.good_name(rng)
    }

    /// One of the guest's few names.
    pub(super) fn good_name(&self, rng: &mut ChaCha8Rng) -> P9String {
        let n = self.names();
        P9String::from(n[rng.random_range(0..n.len())])
    }

    pub(super) fn free_fid(&self, rng: &mut ChaCha8Rng) -> Option<u32> {
        let hi = if self.contention { 13 } else { 30 };
        let f = rng.random_range(PERSISTENT + 10..PERSISTENT + hi);
        (!self.fids.contains_key(&f) && !self.claims.contains_key(&f)).then_some(f)
    }

    pub(super) fn pick(
        &self,
        rng: &mut ChaCha8Rng,
        keep: impl Fn(u32, &MFid) -> bool,
    ) -> Option<u32> {
        let v: Vec<u32> = self
            .fids
            .iter()
            .filter(|(f, m)| keep(**f, m))
            .map(|(f, _)| *f)
            .collect();
        if v.is_empty() {
            return None;
        }
        // Renamed files draw requests through the fids that name them.
        let hot: Vec<u32> = v
            .iter()
            .copied()
            .filter(|f| self.renamed.contains(&self.fids[f].node))
            .collect();
        if !hot.is_empty() && rng.random_bool(0.3) {
            return Some(hot[rng.random_range(0..hot.len())]);
        }
        if self.contention && rng.random_bool(0.7) {
            return v.first().copied();
        }
        Some(v[rng.random_range(0..v.len())])
    }

    /// A directory fid (a known directory node): the private, shared or root one, or any
    /// walked fid the model knows is a directory.
    pub(super) fn dir_fid(&self, rng: &mut ChaCha8Rng, model: &Model) -> Option<u32> {
        let p = if self.dirs { 0.4 } else { 0.7 };
        if rng.random_bool(p) {
            return Some(rng.random_range(1..PERSISTENT));
        }
        // Never the export root: its entries (`shared`, `cN`) stay put.
        self.pick(rng, |_, m| {
            m.is_closed() && m.node != crate::model::ROOT && model.node(m.node).is_dir()
        })
    }

    /// Mostly a name that exists in the directory of `fid`, else any name.
    pub(super) fn name_in(&self, rng: &mut ChaCha8Rng, model: &Model, fid: u32) -> P9String {
        if let Some(d) = self.fids.get(&fid).and_then(|m| model.node(m.node).dir())
            && !d.by_name.is_empty()
            && rng.random_bool(0.75)
        {
            let mut names: Vec<&Vec<u8>> = d.by_name.keys().collect();
            if self.dirs && rng.random_bool(0.6) {
                let dirs: Vec<&Vec<u8>> = names
                    .iter()
                    .copied()
                    .filter(|n| model.node(d.by_name[*n].0).is_dir())
                    .collect();
                if !dirs.is_empty() {
                    names = dirs;
                }
            }
            return P9String(names[rng.random_range(0..names.len())].clone());
        }
        self.name(rng)
    }

    /// The gid and extra mode bits a Linux client sends to make a file in `dir`: the
    /// directory's group and, for a directory, `S_ISGID`, if `dir` is set-group-ID.
    pub(super) fn make_in(&self, model: &Model, dir: u32) -> (u32, u32) {
        let Some(d) = self.fids.get(&dir).map(|m| model.node(m.node)) else {
            return (self.gid, 0);
        };
        if d.mode & S_ISGID != 0 {
            (d.gid, S_ISGID)
        } else {
            (self.gid, 0)
        }
    }

    /// A clone of the private or shared directory into a fresh fid.
    pub(super) fn clone_dir(&self, rng: &mut ChaCha8Rng) -> Option<(Tmessage, Uses)> {
        let from = rng.random_range(1..PERSISTENT);
        let newfid = self.free_fid(rng)?;
        Some((
            Tmessage::Walk {
                fid: Fid(from),
                newfid: Fid(newfid),
                wnames: Vec::new(),
            },
            u(&[from], &[], &[newfid], &[]),
        ))
    }

    /// A fid on `node` that `keep` likes.
    pub(super) fn fid_on(&self, node: NodeId, keep: impl Fn(&MFid) -> bool) -> Option<u32> {
        self.fids
            .iter()
            .find(|(f, m)| {
                m.node == node
                    && keep(m)
                    && !self.claims.get(f).is_some_and(|c| c.exclusive || c.closing)
            })
            .map(|(f, _)| *f)
    }
}
