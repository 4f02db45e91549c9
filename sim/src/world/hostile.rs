//! A hostile client: requests a polite client (and the Linux kernel) never sends, each
//! with the answer the model says it must get.
//!
//! - A request on a fid pipelined right behind a Tclunk/Tremove of that fid: it runs
//!   before the clunk takes the fid (judged as usual), or fails `ENOENT`/`EBADF` having
//!   done nothing.
//! - A request on a fid never made, or already clunked: `ENOENT`, nothing done.
//! - A tag reused while it is in flight: `Rlerror(EPROTO)` for the newcomer, and the
//!   request in flight goes on as if nothing happened.
//! - A Tflush of a Tflush: answered right after the flush it flushed.
//! - A Twalk onto its own fid that fails midway: the qids walked, the fid unchanged.
//! - Tauth (`ENOENT`: no authentication), Tlerror (`EOPNOTSUPP`), Tattach with an auth
//!   fid (`EBADF`) or onto a fid in use (`EINVAL`).

use co9p::protocol::{Fid, GetattrMask, OpenFlags, P9String, Tag, Tmessage};
use rand::RngExt;

use super::World;
use crate::guest::{FidOpen, PERSISTENT, Uses};

impl World {
    /// Sends one hostile request of guest `g`; whether it sent one.
    pub(super) fn hostile(&mut self, g: usize) -> bool {
        match self.hrng.random_range(0..7) {
            0 | 1 => self.after_clunk(g),
            2 => self.unknown_fid(g),
            3 => self.dup_tag(g),
            4 => self.flush_a_flush(g),
            5 => self.walk_over_itself(g),
            _ => self.odd_message(g),
        }
    }

    /// A fid of `g` with no request in flight on it, not one of the setup ones.
    fn quiet_fid(
        &mut self,
        g: usize,
        keep: impl Fn(&crate::model::Model, &crate::guest::MFid) -> bool,
    ) -> Option<u32> {
        let guest = &self.guests[g];
        let v: Vec<u32> = guest
            .fids
            .iter()
            .filter(|(f, m)| {
                **f >= PERSISTENT && !guest.claims.contains_key(f) && keep(&self.model, m)
            })
            .map(|(f, _)| *f)
            .collect();
        (!v.is_empty()).then(|| v[self.hrng.random_range(0..v.len())])
    }

    /// A fid number neither in use nor claimed.
    fn fresh_fid(&mut self, g: usize) -> Option<u32> {
        let f = self.hrng.random_range(PERSISTENT + 10..PERSISTENT + 30);
        let guest = &self.guests[g];
        (!guest.fids.contains_key(&f) && !guest.claims.contains_key(&f)).then_some(f)
    }

    fn after_clunk(&mut self, g: usize) -> bool {
        let Some(f) = self.quiet_fid(g, |_, _| true) else {
            return false;
        };
        let m = self.guests[g].fids[&f].clone();
        let removable = m
            .entry
            .as_ref()
            .is_some_and(|(dir, _)| *dir != crate::model::ROOT);
        let clunk = if removable && self.hrng.random_bool(0.25) {
            Tmessage::Remove { fid: Fid(f) }
        } else {
            Tmessage::Clunk { fid: Fid(f) }
        };
        let c = self.send(
            g,
            clunk,
            Uses {
                closing: vec![f],
                ..Uses::default()
            },
        );
        let fid = Fid(f);
        let newfid = self.fresh_fid(g);
        // It holds the fid like any request on it, so nothing that changes the fid is
        // sent meanwhile (the clunk may yet be flushed and the fid stay).
        let mut uses = Uses {
            primary: vec![f],
            ..Uses::default()
        };
        let msg = match (self.hrng.random_range(0..5), &m.open, newfid) {
            (0, _, Some(n)) => {
                uses.exclusive.push(n);
                Tmessage::Walk {
                    fid,
                    newfid: Fid(n),
                    wnames: Vec::new(),
                }
            }
            (1, FidOpen::File { flags, .. }, _)
                if flags.readable() && self.model.node(m.node).is_file() =>
            {
                Tmessage::Read {
                    fid,
                    offset: 0,
                    count: 16,
                }
            }
            (2, FidOpen::Closed, _) if !self.model.node(m.node).is_symlink() => {
                uses = Uses {
                    exclusive: vec![f],
                    ..Uses::default()
                };
                Tmessage::Lopen {
                    fid,
                    flags: OpenFlags::RDONLY,
                }
            }
            (3, _, _) => Tmessage::Statfs { fid },
            _ => Tmessage::Getattr {
                fid,
                request_mask: GetattrMask::ALL,
            },
        };
        let tag = self.guests[g].tag();
        self.submit_as(g, tag, msg, uses, false, Some(c));
        true
    }

    fn unknown_fid(&mut self, g: usize) -> bool {
        let f = self.hrng.random_range(PERSISTENT + 30..PERSISTENT + 40);
        if self.guests[g].fids.contains_key(&f) || self.guests[g].claims.contains_key(&f) {
            return false;
        }
        let fid = Fid(f);
        let mut uses = Uses::default();
        let msg = match self.hrng.random_range(0..8) {
            0 => match self.fresh_fid(g) {
                Some(n) => {
                    uses.exclusive.push(n);
                    Tmessage::Walk {
                        fid,
                        newfid: Fid(n),
                        wnames: vec![P9String::from("a")],
                    }
                }
                None => return false,
            },
            1 => Tmessage::Read {
                fid,
                offset: 0,
                count: 10,
            },
            2 => Tmessage::Write {
                fid,
                offset: 0,
                data: co9p::protocol::Data(b"xx".to_vec()),
            },
            3 => Tmessage::Clunk { fid },
            4 => Tmessage::Remove { fid },
            5 => Tmessage::Lopen {
                fid,
                flags: OpenFlags::RDWR,
            },
            6 => Tmessage::Mkdir {
                dfid: fid,
                name: "h".into(),
                mode: 0o755,
                gid: 0,
            },
            _ => Tmessage::Getattr {
                fid,
                request_mask: GetattrMask::ALL,
            },
        };
        let tag = self.guests[g].tag();
        self.submit(g, tag, msg, uses);
        true
    }

    fn dup_tag(&mut self, g: usize) -> bool {
        let conn = self.guests[g].conn;
        // A request whose reply waits in a used ring the guest has not read may have
        // left the session already: its tag is not surely in flight.
        if let crate::link::Link::Virtio { dev, .. } = self.conns[conn].link
            && self.devices[dev].irq_pending
        {
            return false;
        }
        let inflight: Vec<u16> = self
            .outstanding
            .iter()
            .filter(|((c, t), r)| {
                *c == conn && *t != Tag::NOTAG.0 && self.reqs[**r].before_version.is_none()
            })
            .map(|((_, t), _)| *t)
            .collect();
        if inflight.is_empty() {
            return false;
        }
        let tag = inflight[self.hrng.random_range(0..inflight.len())];
        let msg = if self.hrng.random_bool(0.3) {
            Tmessage::Flush {
                oldtag: Tag(inflight[self.hrng.random_range(0..inflight.len())]),
            }
        } else {
            Tmessage::Getattr {
                fid: Fid(0),
                request_mask: GetattrMask::ALL,
            }
        };
        self.submit_as(g, tag, msg, Uses::default(), true, None);
        true
    }

    fn flush_a_flush(&mut self, g: usize) -> bool {
        let conn = self.guests[g].conn;
        let flushes: Vec<u16> = self
            .outstanding
            .iter()
            .filter(|((c, _), r)| {
                *c == conn && matches!(self.reqs[**r].msg, Tmessage::Flush { .. })
            })
            .map(|((_, t), _)| *t)
            .collect();
        if let Some(&t) = flushes.first() {
            self.flush(g, Some(t));
            return true;
        }
        let any: Vec<u16> = self
            .outstanding
            .iter()
            .filter(|((c, t), _)| *c == conn && *t != Tag::NOTAG.0)
            .map(|((_, t), _)| *t)
            .collect();
        let Some(&t) = any.first() else {
            return false;
        };
        self.flush(g, Some(t));
        let conn = self.guests[g].conn;
        let f = self
            .outstanding
            .iter()
            .filter(|((c, _), r)| {
                *c == conn
                    && matches!(self.reqs[**r].msg, Tmessage::Flush { oldtag } if oldtag.0 == t)
            })
            .map(|((_, t), _)| *t)
            .next_back();
        if let Some(f) = f {
            self.flush(g, Some(f));
        }
        true
    }

    fn walk_over_itself(&mut self, g: usize) -> bool {
        let Some(f) = self.quiet_fid(g, |model, m| m.is_closed() && model.node(m.node).is_dir())
        else {
            return false;
        };
        let node = self.guests[g].fids[&f].node;
        let first = self
            .model
            .node(node)
            .dir()
            .and_then(|d| d.by_name.keys().next().cloned())
            .unwrap_or_else(|| b".".to_vec());
        let msg = Tmessage::Walk {
            fid: Fid(f),
            newfid: Fid(f),
            wnames: vec![
                P9String(first),
                P9String::from("zz-none"),
                P9String::from("a"),
            ],
        };
        let uses = Uses {
            exclusive: vec![f],
            ..Uses::default()
        };
        self.send(g, msg, uses);
        true
    }

    fn odd_message(&mut self, g: usize) -> bool {
        let msg = match self.hrng.random_range(0..4) {
            0 => Tmessage::Auth {
                afid: Fid(PERSISTENT + 45),
                uname: "sim".into(),
                aname: "".into(),
                n_uname: 0,
            },
            1 => Tmessage::Lerror {},
            2 => Tmessage::Attach {
                fid: Fid(PERSISTENT + 46),
                afid: Fid(7),
                uname: "sim".into(),
                aname: "".into(),
                n_uname: 0,
            },
            _ => Tmessage::Attach {
                fid: Fid(0),
                afid: Fid::NOFID,
                uname: "sim".into(),
                aname: "".into(),
                n_uname: self.guests[g].uid,
            },
        };
        let tag = self.guests[g].tag();
        self.submit(g, tag, msg, Uses::default());
        true
    }
}
