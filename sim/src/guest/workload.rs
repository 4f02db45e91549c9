//! The workload: which request a guest sends next, aimed with the model's view of the
//! tree (mostly names that exist, open files of the right kind) so most requests get past
//! the error paths, while the rest probe them.
//!
//! Besides single requests it plays short sequences ([`Step`]): shrink a file, grow it
//! past its old end and read the gap back (stale data); after a directory moves across
//! directories, walk `..` from fids inside it and list it (stale parents). Renamed files
//! draw the requests that act through fids naming them (Tremove, Tgetattr, Tlopen, Twalk).
//! With `contention`, most requests go to few fids and few names.

use co9p::protocol::{
    AT_REMOVEDIR, Data, Fid, GetattrMask, LockFlags, LockType, OpenFlags, P9String, SetAttr,
    SetattrMask, Timespec, Tmessage,
};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;

use super::{FidOpen, Guest, MFid, NAMES, OpKind, PERSISTENT, Uses};
use crate::model::{Content, Model, NodeId, S_IFCHR, S_IFDIR, S_IFIFO, S_IFREG, S_IFSOCK, S_ISGID};

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
    /// Send this request (the second half of a race).
    Then(Box<(Tmessage, Uses)>),
}

fn u(p: &[u32], s: &[u32], x: &[u32], c: &[u32]) -> Uses {
    Uses {
        primary: p.to_vec(),
        secondary: s.to_vec(),
        exclusive: x.to_vec(),
        closing: c.to_vec(),
    }
}

impl Guest {
    fn names(&self) -> &'static [&'static str] {
        if self.contention { &NAMES[..2] } else { &NAMES }
    }

    fn name(&self, rng: &mut ChaCha8Rng) -> P9String {
        let n = self.names();
        P9String::from(n[rng.random_range(0..n.len())])
    }

    fn free_fid(&self, rng: &mut ChaCha8Rng) -> Option<u32> {
        let hi = if self.contention { 13 } else { 30 };
        let f = rng.random_range(PERSISTENT + 10..PERSISTENT + hi);
        (!self.fids.contains_key(&f) && !self.claims.contains_key(&f)).then_some(f)
    }

    fn pick(&self, rng: &mut ChaCha8Rng, keep: impl Fn(u32, &MFid) -> bool) -> Option<u32> {
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
    fn dir_fid(&self, rng: &mut ChaCha8Rng, model: &Model) -> Option<u32> {
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
    fn name_in(&self, rng: &mut ChaCha8Rng, model: &Model, fid: u32) -> P9String {
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
    fn make_in(&self, model: &Model, dir: u32) -> (u32, u32) {
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
    fn clone_dir(&self, rng: &mut ChaCha8Rng) -> Option<(Tmessage, Uses)> {
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
    fn fid_on(&self, node: NodeId, keep: impl Fn(&MFid) -> bool) -> Option<u32> {
        self.fids
            .iter()
            .find(|(f, m)| {
                m.node == node
                    && keep(m)
                    && !self.claims.get(f).is_some_and(|c| c.exclusive || c.closing)
            })
            .map(|(f, _)| *f)
    }

    /// Whether the next planned request is the second half of a race: it goes out right
    /// after the first, before anything else happens.
    pub fn urgent(&self) -> bool {
        matches!(self.plan.front(), Some(Step::Then(_)))
    }

    /// The next planned step as a request, if it fits now. A step waiting for an earlier
    /// one (a file being opened) is tried again a few times before it is dropped.
    fn planned(&mut self, rng: &mut ChaCha8Rng, model: &Model) -> Option<(Tmessage, Uses)> {
        let step = self.plan.pop_front()?;
        let retry = matches!(
            step,
            Step::Grow { .. } | Step::Read { .. } | Step::RemoveFid { .. }
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

    fn realize(
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
            Step::Then(m) => Some(*m),
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
                let aname = ["", "/", "shared", "/shared/", "nonexistent", "shared/a"]
                    [rng.random_range(0..6)];
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
            OpKind::Statfs => {
                let f = self.pick(rng, |_, _| true)?;
                (Tmessage::Statfs { fid: Fid(f) }, u(&[f], &[], &[], &[]))
            }
            OpKind::Mkdir => {
                let d = self.dir_fid(rng, model)?;
                let (gid, setgid) = self.make_in(model, d);
                let mode = [0o755, 0o700, 0o2775][rng.random_range(0..3)] | setgid;
                (
                    Tmessage::Mkdir {
                        dfid: Fid(d),
                        name: self.name(rng),
                        mode,
                        gid,
                    },
                    u(&[d], &[], &[], &[]),
                )
            }
            OpKind::Mknod => {
                let d = self.dir_fid(rng, model)?;
                let (gid, _) = self.make_in(model, d);
                let ty = [0, S_IFREG, S_IFIFO, S_IFSOCK, S_IFCHR, S_IFDIR, 0o170000]
                    [rng.random_range(0..7)];
                (
                    Tmessage::Mknod {
                        dfid: Fid(d),
                        name: self.name(rng),
                        mode: ty | 0o644,
                        major: 1,
                        minor: 3,
                        gid,
                    },
                    u(&[d], &[], &[], &[]),
                )
            }
            OpKind::Symlink => {
                let d = self.dir_fid(rng, model)?;
                let (gid, _) = self.make_in(model, d);
                (
                    Tmessage::Symlink {
                        fid: Fid(d),
                        name: self.name(rng),
                        symtgt: self.name(rng),
                        gid,
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
                        name: self.name(rng),
                    },
                    u(&[d], &[t], &[], &[]),
                )
            }
            OpKind::Rename => {
                let a = self.dir_fid(rng, model)?;
                let mut b = self.dir_fid(rng, model)?;
                if self.dirs && a == b {
                    b = self.dir_fid(rng, model)?;
                }
                let sec: Vec<u32> = if a == b { vec![] } else { vec![b] };
                let oldname = self.name_in(rng, model, a);
                let entry = (self.fids[&a].node, oldname.0.clone());
                // Race the rename: a fid reached by the very entry it renames makes a new
                // fid (Txattrwalk) just before it, and Tremove goes through the new fid
                // after: that fid must follow the rename too.
                let racer = self
                    .fids
                    .iter()
                    .find(|(f, m)| {
                        m.entry.as_ref() == Some(&entry)
                            && !self.claims.get(f).is_some_and(|c| c.exclusive || c.closing)
                    })
                    .map(|(f, _)| *f);
                let race = racer
                    .filter(|_| rng.random_bool(0.5))
                    .zip(self.free_fid(rng));
                if self.dirs
                    && let Some(node) = model
                        .node(self.fids[&a].node)
                        .dir()
                        .and_then(|d| d.get(oldname.as_bytes()))
                    && is_dir(node)
                {
                    self.plan.push_back(Step::Up { node });
                    self.plan.push_back(Step::List { node });
                }
                let rename = (
                    Tmessage::Renameat {
                        olddirfid: Fid(a),
                        oldname,
                        newdirfid: Fid(b),
                        newname: self.name(rng),
                    },
                    u(&[a], &sec, &[], &[]),
                );
                match race {
                    Some((src, newfid)) => {
                        self.plan.push_front(Step::Then(Box::new(rename)));
                        self.plan.push_back(Step::RemoveFid { fid: newfid });
                        (
                            Tmessage::Xattrwalk {
                                fid: Fid(src),
                                newfid: Fid(newfid),
                                name: "".into(),
                            },
                            u(&[src], &[], &[newfid], &[]),
                        )
                    }
                    None => rename,
                }
            }
            OpKind::Move => {
                // Trename: moves the file a fid names (through its recorded entry).
                let f = self.pick(rng, |f, m| {
                    nonpersistent(f)
                        && m.entry
                            .as_ref()
                            .is_some_and(|(d, _)| *d != crate::model::ROOT)
                })?;
                let d = self.dir_fid(rng, model)?;
                if f == d {
                    return None;
                }
                let node = self.fids[&f].node;
                if is_dir(node) {
                    self.plan.push_back(Step::Up { node });
                    self.plan.push_back(Step::List { node });
                }
                (
                    Tmessage::Rename {
                        fid: Fid(f),
                        dfid: Fid(d),
                        name: self.name(rng),
                    },
                    u(&[f], &[d], &[], &[]),
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
                        a.mode = [0o600, 0o644, 0o700, 0o4755, 0o2755, 0o6711, 0o2644, 0o1777]
                            [rng.random_range(0..8)];
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
            OpKind::Lock | OpKind::Getlock => {
                let f = self.pick(rng, |_, m| matches!(m.open, FidOpen::File { .. }))?;
                let lock_type =
                    [LockType::Write, LockType::Read, LockType::Unlock][rng.random_range(0..3)];
                let (start, length) = [(0, 0), (0, 10), (5, 10), (20, 0)][rng.random_range(0..4)];
                let msg = if kind == OpKind::Lock {
                    Tmessage::Lock {
                        fid: Fid(f),
                        lock_type,
                        flags: LockFlags(0),
                        start,
                        length,
                        proc_id: self.id as u32,
                        client_id: "sim".into(),
                    }
                } else {
                    Tmessage::Getlock {
                        fid: Fid(f),
                        lock_type,
                        start,
                        length,
                        proc_id: self.id as u32,
                        client_id: "sim".into(),
                    }
                };
                (msg, u(&[f], &[], &[], &[]))
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
