//! Requests that change directories: Tmkdir, Tmknod, Tsymlink, Tlink, Trenameat (raced by a
//! Txattrwalk through the entry it moves, now and then), Trename, Tunlinkat.

use co9p::protocol::{AT_REMOVEDIR, Fid, Tmessage};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;

use super::aim::u;
use super::plan::Step;
use super::{Guest, OpKind, PERSISTENT, Uses};
use crate::model::{Model, NodeId, S_IFCHR, S_IFDIR, S_IFIFO, S_IFREG, S_IFSOCK};

impl Guest {
    /// A request of a `kind` that changes a directory (`None`: it does not fit now).
    pub(super) fn namespace_op(
        &mut self,
        kind: OpKind,
        rng: &mut ChaCha8Rng,
        model: &Model,
    ) -> Option<(Tmessage, Uses)> {
        let is_dir = |n: NodeId| model.node(n).is_dir();
        let nonpersistent = |f: u32| f >= PERSISTENT;
        let op = match kind {
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
                // Device numbers that set every part of a dev_t (Linux's 12-bit major and
                // 20-bit minor, both split in two fields), and now and then one a bit past
                // either (EINVAL: a dev_t cannot hold it).
                let (major, minor) = [
                    (1, 3),
                    (0xabc, 0x1_2345),
                    (0xfff, 0xf_ffff),
                    (8, 0x100),
                    (0x1000, 0),
                    (0x12_3456, 7),
                    (1, 0x10_0000),
                ][if rng.random_bool(0.9) {
                    rng.random_range(0..4)
                } else {
                    rng.random_range(4..7)
                }];
                (
                    Tmessage::Mknod {
                        dfid: Fid(d),
                        name: self.name(rng),
                        mode: ty | 0o644,
                        major,
                        minor,
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
                        symtgt: self.good_name(rng),
                        gid,
                    },
                    u(&[d], &[], &[], &[]),
                )
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
            _ => unreachable!("not a namespace kind: {kind:?}"),
        };
        Some(op)
    }
}
