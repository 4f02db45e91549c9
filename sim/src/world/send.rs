//! Sending: a request on its connection's link (direct or virtio), Tflush, Tversion with
//! its barrier, a client reset, and whether the session must refuse a request for lack of
//! a slot.

use std::sync::Arc;

use co9p::protocol::{Request, Tag, Tmessage, VERSION_9P2000_L};
use co9p::server::Latch;
use rand::RngExt;

use super::World;
use crate::guest::Uses;
use crate::journal::SimResponder;
use crate::link::Link;
use crate::oracle::Req;

impl World {
    /// Whether the session of `conn` must refuse `msg` for lack of a request slot: the
    /// server's rule (a Tflush of a request in flight and a Tversion get one slot of
    /// slack), from the requests the world knows to be registered there.
    ///
    /// `None` when either answer is right: requests a Tversion in flight cancelled leave the
    /// registry when their coroutines next run, which no reply tells the world, so while
    /// counting them or not gives different answers the reply says which it was.
    pub(super) fn refuses(&self, conn: usize, tag: u16, msg: &Tmessage) -> Option<bool> {
        let limit = self.conns[conn].link.max_inflight(&self.config);
        let registered = |r: usize, surely: bool| !surely || self.reqs[r].before_version.is_none();
        // With `surely`, only the requests certainly still registered count.
        let over = |surely: bool| {
            let taken = self
                .outstanding
                .range((conn, 0)..=(conn, u16::MAX))
                .filter(|(_, r)| registered(**r, surely))
                .count();
            match msg {
                Tmessage::Flush { oldtag } => {
                    let target = self.outstanding.get(&(conn, oldtag.0));
                    oldtag.0 != tag
                        && target.is_some_and(|&r| registered(r, surely))
                        && taken > limit
                }
                Tmessage::Version { .. } => taken > limit,
                _ => taken >= limit,
            }
        };
        match (over(true), over(false)) {
            (true, _) => Some(true),
            (false, false) => Some(false),
            (false, true) => None,
        }
    }

    pub(super) fn submit(&mut self, g: usize, tag: u16, msg: Tmessage, uses: Uses) -> usize {
        self.submit_as(g, tag, msg, uses, false, None)
    }

    /// Sends a request; `dup`: its tag is in flight (a hostile client reusing it);
    /// `after_clunk`: sent behind that Tclunk/Tremove of its own fid.
    pub(super) fn submit_as(
        &mut self,
        g: usize,
        tag: u16,
        msg: Tmessage,
        uses: Uses,
        dup: bool,
        after_clunk: Option<usize>,
    ) -> usize {
        let conn = self.guests[g].conn;
        let refused = if dup {
            Some(false)
        } else {
            self.refuses(conn, tag, &msg)
        };
        let req = Request::new(Tag(tag), msg.clone());
        let frame = req.to_bytes().expect("encodable");
        self.ex
            .record_line(b'Q', &frame, || format!("c{g} conn={conn} -> {req}"));
        let idx = self.reqs.len();
        self.ex.timeline(|| crate::timeline::Kind::Send {
            req: idx,
            client: g,
            text: req.to_string(),
        });
        if self.cfg.log {
            self.pdus.push(format!("c{g} -> {req}"));
        }
        self.guests[g].claim(&uses, true);
        if !dup && !matches!(msg, Tmessage::Flush { .. } | Tmessage::Version { .. }) {
            self.guests[g].inflight += 1;
        }
        let mut req = Req::new(g, conn, tag, msg, uses);
        req.sent_at = self.actions;
        req.refused = refused;
        req.dup = dup;
        req.after_clunk = after_clunk;
        self.reqs.push(req);
        self.unjudged.insert(idx);
        // The first request a move sends is the one a recorded flush can aim at.
        if let Some(m) = self.cur_move
            && !self.move_req.contains_key(&m)
        {
            self.move_req.insert(m, idx);
            self.req_move.insert(idx, m);
        }
        if !dup {
            self.outstanding.insert((conn, tag), idx);
        }
        let before = self.ex.last_spawned();
        match &self.conns[conn].link {
            Link::Direct(session) => {
                let responder = SimResponder::new(self.journal.clone(), conn, idx);
                if let Err(e) = session.submit(&frame, responder) {
                    self.fail("submit", format!("a valid frame was refused: {e}"));
                }
            }
            &Link::Virtio { dev, .. } => {
                let msize = self.conns[conn].msize;
                let indirect = self.lrng.random_bool(0.25);
                let msg = &self.reqs[idx].msg;
                if let Err(e) = self.devices[dev].send(idx, &frame, msg, msize, indirect) {
                    self.fail("virtio ring", e);
                }
                // A Tflush or Tversion goes at once (the world applies what they do when
                // they are sent: the device must have them then).
                // So does a reused tag (it is one only while its request is in flight).
                let now = dup
                    || matches!(
                        self.reqs[idx].msg,
                        Tmessage::Flush { .. } | Tmessage::Version { .. }
                    );
                if now || self.devices[dev].batch_full() {
                    self.kick(dev);
                }
                self.after_step();
                return idx;
            }
        }
        let after = self.ex.last_spawned();
        if after != before
            && let Some(t) = after
        {
            self.reqs[idx].task = Some(t);
            self.by_task.insert(t, idx);
        }
        self.after_step();
        idx
    }

    /// Guest `d`'s driver kicks its device: the requests whose chains the device reads
    /// now get their coroutines, spawned in the order the chains were published — one
    /// each, but for Tflush (answered in place) and a tag in use (refused in place).
    pub(super) fn kick(&mut self, d: usize) {
        self.ex.timeline(|| crate::timeline::Kind::Kick { dev: d });
        let first = self.ex.next_task();
        let read = self.devices[d].kick();
        let last = self.ex.next_task();
        let spawners: Vec<usize> = read
            .into_iter()
            .filter(|&r| {
                let q = &self.reqs[r];
                !q.dup && q.refused != Some(true) && !matches!(q.msg, Tmessage::Flush { .. })
            })
            .collect();
        if spawners.len() as u64 != last - first {
            let detail = format!(
                "device {d} read {} requests that start coroutines and started {}",
                spawners.len(),
                last - first
            );
            return self.fail("virtio chain", detail);
        }
        for (r, t) in spawners.into_iter().zip(first..last) {
            self.reqs[r].task = Some(t);
            self.by_task.insert(t, r);
        }
    }

    pub(super) fn flush(&mut self, g: usize, oldtag: Option<u16>) {
        let conn = self.guests[g].conn;
        let tag = self.guests[g].tag();
        let oldtag = oldtag.unwrap_or(tag);
        let flush = Tmessage::Flush {
            oldtag: Tag(oldtag),
        };
        if let Some(&old) = self.outstanding.get(&(conn, oldtag))
            && oldtag != tag
            // A flush that may be refused is counted as one that is not: if it is, its
            // EAGAIN marks it refused, and refused flushes order nothing.
            && self.refuses(conn, tag, &flush) != Some(true)
        {
            let idx = self.reqs.len();
            let o = &mut self.reqs[old];
            if !matches!(o.msg, Tmessage::Flush { .. }) {
                o.cancelled = true;
                self.ex.timeline(|| crate::timeline::Kind::Cancel {
                    req: old,
                    why: "Tflush",
                });
            }
            o.flushes.push(idx);
        }
        self.submit(
            g,
            tag,
            Tmessage::Flush {
                oldtag: Tag(oldtag),
            },
            Uses::default(),
        );
    }

    pub(super) fn version(&mut self, g: usize) {
        let msize = self.guests[g].want_msize;
        self.version_with(
            g,
            Tmessage::Version {
                msize,
                version: VERSION_9P2000_L.into(),
            },
        );
    }

    /// Tversion: the barrier applies at once (fids gone, requests cancelled).
    pub(super) fn version_with(&mut self, g: usize, msg: Tmessage) -> usize {
        let conn = self.guests[g].conn;
        // (Sure: no requests of an earlier Tversion linger once it is answered, and a
        // client sends no Tversion while one is in flight.)
        if self.refuses(conn, Tag::NOTAG.0, &msg) == Some(true) {
            // Refused before its barrier: nothing about the session changes.
            return self.submit(g, Tag::NOTAG.0, msg, Uses::default());
        }
        let idx = self.reqs.len();
        let zombies = self.orphan_locks(g);
        for (_, &r) in self.outstanding.range((conn, 0)..=(conn, u16::MAX)) {
            self.ex.timeline(|| crate::timeline::Kind::Cancel {
                req: r,
                why: "Tversion",
            });
            let r = &mut self.reqs[r];
            r.cancelled = true;
            r.before_version = Some(idx);
        }
        self.drop_pending(conn);
        let guest = &mut self.guests[g];
        guest.reset(conn);
        guest.versioning = true;
        if let Tmessage::Version { msize, .. } = &msg {
            self.conns[conn].msize = (*msize).min(self.config.max_msize);
        }
        self.versions.insert(conn, (idx, zombies));
        self.submit(g, Tag::NOTAG.0, msg, Uses::default())
    }

    /// The lock owners of guest `g`'s open files, whose session is going away: the model
    /// keeps their locks until the server has let them go.
    fn orphan_locks(&mut self, g: usize) -> Vec<u64> {
        let mut zombies = Vec::new();
        for m in self.guests[g].fids.values() {
            if let crate::guest::FidOpen::File { owner, .. } = m.open {
                zombies.push(owner);
                self.model.zombies.insert(owner);
            }
        }
        zombies
    }

    /// Client reset: the connection closes with requests in flight; a new one opens.
    pub(super) fn reset(&mut self, g: usize) {
        let old = self.guests[g].conn;
        let latch = match self.close_link(old) {
            Ok(l) => l,
            Err(e) => return self.fail("virtio reset", e),
        };
        self.ex.record_line(b'C', &(old as u64).to_le_bytes(), || {
            format!("c{g} close conn={old}")
        });
        let zombies = self.orphan_locks(g);
        self.ex
            .timeline(|| crate::timeline::Kind::Reset { client: g });
        for (_, &r) in self.outstanding.range((old, 0)..=(old, u16::MAX)) {
            self.ex.timeline(|| crate::timeline::Kind::Cancel {
                req: r,
                why: "a connection reset",
            });
            self.reqs[r].cancelled = true;
        }
        let c = &mut self.conns[old];
        c.open = false;
        c.closing = Some(latch);
        c.zombies = zombies;
        self.drop_pending(old);
        let conn = self.connect(g);
        let guest = &mut self.guests[g];
        guest.reset(conn);
        guest.tags.clear();
        guest.versioning = false;
        self.after_step();
    }

    /// Closes connection `c`'s side of the link: the session closes, or the virtio
    /// device is reset through its registers (and booted again for a next connection).
    /// The latch opens when the cancelled requests have finished.
    pub(super) fn close_link(&mut self, c: usize) -> Result<Arc<Latch>, String> {
        match &self.conns[c].link {
            Link::Direct(session) => Ok(session.close()),
            &Link::Virtio { dev, .. } => self.devices[dev].reset(),
        }
    }
}
