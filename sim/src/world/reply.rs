//! Replies, as the world receives and judges them.
//!
//! A reply is *received* when it comes back (exactly once, within msize, its own tag,
//! Rflush order) and *judged* when what it shows can be applied to the client's fid table:
//! a Tclunk's reply may overtake the replies of the requests it waited for (they ended
//! before it, but delivering a reply is a scheduling point), so it is judged once they
//! are; a request a hostile client sent behind a Tclunk of its fid is judged once that
//! clunk is. Judging is the oracle's ([`crate::oracle::on_reply`]); Rflush and Rversion
//! are judged here, against the session's other requests.

use co9p::protocol::{Errno, Reply, Rmessage, Tag, Tmessage, VERSION_9P2000_L};

use super::World;
use crate::oracle::{self, Req, Show, Violation};

impl World {
    pub(super) fn on_reply(&mut self, conn: usize, r: usize, frame: Vec<u8>) {
        self.answered += 1;
        let limit = self.conns[conn].msize as usize;
        if frame.len() > limit {
            self.fail(
                "msize",
                format!(
                    "a reply of {} bytes on a session of msize {limit}",
                    frame.len()
                ),
            );
            return;
        }
        let reply = match Reply::decode(&frame, u32::MAX) {
            Ok(r) => r,
            Err(e) => {
                self.fail("malformed reply", format!("{e}"));
                return;
            }
        };
        let client = self.conns[conn].client;
        self.ex
            .record_line(b'R', &frame, || format!("c{client} conn={conn} <- {reply}"));
        if self.cfg.log {
            self.pdus.push(format!("c{client} <- {reply}"));
        }
        self.ex.timeline(|| crate::timeline::Kind::Reply {
            req: r,
            client,
            text: reply.to_string(),
        });
        let req = &self.reqs[r];
        if req.replied || (req.done && !req.dup) {
            let detail = format!("{reply} answers {} a second time", Show(&req.msg));
            return self.fail("exactly once", detail);
        }
        if reply.tag.0 != req.tag || req.conn != conn {
            let detail = format!("{reply} answers {} (tag {})", Show(&req.msg), req.tag);
            return self.fail("reply tag", detail);
        }
        if req.dup {
            // Its tag was in flight: refused, and the request in flight goes on.
            self.reqs[r].replied = true;
            self.reqs[r].done = true;
            self.set_judged(r);
            if reply.msg
                != (Rmessage::Lerror {
                    ecode: Errno::EPROTO,
                })
            {
                let detail = format!(
                    "{} reused a tag in flight: {reply}",
                    Show(&self.reqs[r].msg)
                );
                self.fail("tag in use", detail);
            }
            return;
        }
        if self.outstanding.get(&(conn, reply.tag.0)) != Some(&r) {
            let detail = format!("{reply} answers {}, which is not in flight", Show(&req.msg));
            return self.fail("exactly once", detail);
        }
        self.outstanding.remove(&(conn, reply.tag.0));
        self.reqs[r].replied = true;
        self.reqs[r].done = true;
        let req = self.reqs[r].clone();
        let current = self.guests[client].conn == conn;
        // The server is done with the tag.
        if current && req.before_version.is_none() {
            let g = &mut self.guests[client];
            g.tags.remove(&req.tag);
            if !matches!(req.msg, Tmessage::Flush { .. } | Tmessage::Version { .. }) {
                g.inflight -= 1;
            }
        }
        let eagain = reply.msg
            == (Rmessage::Lerror {
                ecode: Errno::EAGAIN,
            });
        let refused = req.refused.unwrap_or(eagain);
        self.reqs[r].refused = Some(refused);
        if refused {
            self.settle_claims(r);
            if !eagain {
                let detail = format!("{} with every slot taken: {reply}", Show(&req.msg));
                self.fail("request slots", detail);
            }
            return self.judge_pending();
        }
        if eagain {
            let detail = format!("{} refused with a slot free", Show(&req.msg));
            return self.fail("request slots", detail);
        }
        match &req.msg {
            Tmessage::Flush { oldtag } => {
                self.settle_claims(r);
                self.on_rflush(r, &req, *oldtag, &reply.msg);
            }
            Tmessage::Version { msize, .. } => {
                self.set_judged(r);
                self.on_rversion(conn, r, *msize, &reply.msg);
            }
            _ => {
                let answered = |f: usize| self.reqs[f].done && self.reqs[f].refused != Some(true);
                if let Some(&f) = req.flushes.iter().find(|&&f| answered(f)) {
                    let detail =
                        format!("{} answered after its Rflush (tag {})", Show(&req.msg), f);
                    self.fail("Rflush order", detail);
                    return;
                }
                if req.before_version.is_some() || !current {
                    self.set_judged(r);
                    if !self.must_reply(r) {
                        let detail =
                            format!("{} cancelled before its effect: {reply}", Show(&req.msg));
                        self.fail("reply after cancel", detail);
                    }
                    return;
                }
                self.pending.push((r, reply.msg));
            }
        }
        self.judge_pending();
    }

    /// Releases the fids request `r` held in its client's claims, and marks it judged.
    pub(super) fn settle_claims(&mut self, r: usize) {
        let req = &self.reqs[r];
        let g = &mut self.guests[req.client];
        if g.conn == req.conn && req.before_version.is_none() && !req.judged {
            g.claim(&req.uses, false);
        }
        self.set_judged(r);
    }

    /// Whether request `r` must wait to be judged, and for which.
    pub(super) fn blocked_by(&self, r: usize) -> Option<usize> {
        let req = &self.reqs[r];
        if let Some(c) = req.after_clunk
            && !self.reqs[c].judged
        {
            return Some(c);
        }
        if matches!(req.msg, Tmessage::Clunk { .. } | Tmessage::Remove { .. }) {
            let f = req.primary_fid();
            return self.unjudged.range(..r).rev().copied().find(|&e| {
                let q = &self.reqs[e];
                q.conn == req.conn
                    && !q.judged
                    && !q.dup
                    && q.after_clunk.is_none()
                    && q.primary_fid() == f
                    && !matches!(q.msg, Tmessage::Flush { .. } | Tmessage::Version { .. })
            });
        }
        None
    }

    /// Judges every received reply that waits for nothing.
    pub(super) fn judge_pending(&mut self) {
        loop {
            if self.failure.is_some() {
                return;
            }
            let Some(i) = self
                .pending
                .iter()
                .position(|&(r, _)| self.blocked_by(r).is_none())
            else {
                return;
            };
            let (r, msg) = self.pending.remove(i);
            self.judge(r, &msg);
        }
    }

    /// Judges request `r`'s reply against the model and the client's fid table.
    pub(super) fn judge(&mut self, r: usize, got: &Rmessage) {
        let req = self.reqs[r].clone();
        let client = req.client;
        self.settle_claims(r);
        // A Tclunk/Tremove that requests were sent behind: keep the fid to judge them.
        if matches!(req.msg, Tmessage::Clunk { .. } | Tmessage::Remove { .. })
            && self
                .unjudged
                .iter()
                .any(|&q| self.reqs[q].after_clunk == Some(r))
            && let Some(f) = req.primary_fid()
            && let Some(m) = self.guests[client].fids.get(&f)
        {
            self.tombstones.insert(r, m.clone());
        }
        let mut restore = None;
        if let Some(c) = req.after_clunk {
            let f = req.primary_fid().expect("a fid request");
            let g = &self.guests[client];
            let ran = !req.calls.is_empty() || !matches!(got, Rmessage::Lerror { .. });
            match self.tombstones.get(&c) {
                // The clunk took the fid first: nothing was done.
                Some(_) if !ran => {
                    let e = match got {
                        Rmessage::Lerror { ecode } => *ecode,
                        _ => Errno::EIO,
                    };
                    if e != Errno::ENOENT && e != Errno::EBADF {
                        let detail = format!(
                            "{} sent behind a clunk of its fid: {}",
                            Show(&req.msg),
                            Show(got)
                        );
                        self.violated(Violation::model(detail));
                    }
                    return self.forget_tombstone(c);
                }
                // It ran before the clunk took the fid: judged with the fid as it was.
                Some(t) if !g.fids.contains_key(&f) => {
                    restore = Some(f);
                    let t = t.clone();
                    self.guests[client].fids.insert(f, t);
                }
                _ => {}
            }
        }
        // The open file of a fid clunked with requests behind it lives until they end (one
        // may hold the fid already): its locks stay, a zombie's, until the tombstone goes.
        let lingering = self.tombstones.get(&r).and_then(|m| match m.open {
            crate::guest::FidOpen::File { owner, .. } => Some(owner),
            _ => None,
        });
        let held = lingering.map(|o| self.model.locks_of(o));
        let res = oracle::on_reply(&mut self.model, &mut self.guests[client], &req, got);
        if let (Some(owner), Some(held)) = (lingering, held) {
            self.model.linger(owner, held);
            self.lingering.insert(r, owner);
        }
        if let Some(f) = restore {
            self.guests[client].fids.remove(&f);
            self.guests[client].passes.forget(f);
        }
        if let Some(c) = req.after_clunk {
            self.forget_tombstone(c);
        }
        if let Err(v) = res {
            self.violated(v);
        }
    }

    pub(super) fn forget_tombstone(&mut self, c: usize) {
        if !self
            .unjudged
            .iter()
            .any(|&q| self.reqs[q].after_clunk == Some(c))
        {
            self.tombstones.remove(&c);
            if let Some(owner) = self.lingering.remove(&c) {
                self.model.release(owner);
            }
        }
    }

    /// A connection's session starts over (Tversion, reset): replies not yet judged are
    /// judged no more (the fid table they would change is gone).
    pub(super) fn drop_pending(&mut self, conn: usize) {
        let reqs = &mut self.reqs;
        let unjudged = &mut self.unjudged;
        self.pending.retain(|&(r, _)| {
            if reqs[r].conn == conn {
                reqs[r].judged = true;
                unjudged.remove(&r);
                false
            } else {
                true
            }
        });
        self.tombstones.retain(|&c, _| reqs[c].conn != conn);
        let (gone, kept) = std::mem::take(&mut self.lingering)
            .into_iter()
            .partition(|&(c, _)| reqs[c].conn == conn);
        self.lingering = kept;
        let gone: std::collections::BTreeMap<usize, u64> = gone;
        for owner in gone.into_values() {
            self.model.release(owner);
        }
    }

    pub(super) fn on_rflush(&mut self, r: usize, req: &Req, oldtag: Tag, got: &Rmessage) {
        if !matches!(got, Rmessage::Flush {}) {
            self.fail(
                "Rflush",
                format!("{} answered {}", Show(&req.msg), Show(got)),
            );
            return;
        }
        let Some(old) = (0..r)
            .rev()
            .find(|&o| self.reqs[o].flushes.contains(&r) && self.reqs[o].tag == oldtag.0)
        else {
            return; // a flush of nothing in flight: answered at once, nothing to order
        };
        let o = self.reqs[old].clone();
        if let Some(&earlier) = o
            .flushes
            .iter()
            .take_while(|&&f| f != r)
            .find(|&&f| !self.reqs[f].done)
        {
            let detail = format!("flushes of tag {} answered out of order ({earlier})", o.tag);
            self.fail("Rflush order", detail);
            return;
        }
        if !o.done {
            // Ended without a reply: only right if it never had its effect.
            if self.must_reply(old) {
                let detail = format!(
                    "{} had its effect but got no reply before Rflush",
                    Show(&o.msg)
                );
                self.fail("lost reply", detail);
                return;
            }
            self.outstanding.remove(&(o.conn, o.tag));
            self.reqs[old].done = true;
            // A Tclunk/Tremove flushed before its effect left the fid alive: the requests
            // sent behind it ran on a live fid, and are judged (and ordered against later
            // clunks of the fid) as any request on it.
            if matches!(o.msg, Tmessage::Clunk { .. } | Tmessage::Remove { .. }) {
                for q in self.unjudged.clone() {
                    if self.reqs[q].after_clunk == Some(old) {
                        self.reqs[q].after_clunk = None;
                    }
                }
            }
            let g = &mut self.guests[o.client];
            if g.conn == o.conn && o.before_version.is_none() {
                g.tags.remove(&o.tag);
                if !matches!(o.msg, Tmessage::Flush { .. }) {
                    g.inflight -= 1;
                }
            }
            self.settle_claims(old);
        }
    }

    pub(super) fn on_rversion(&mut self, conn: usize, r: usize, asked: u32, got: &Rmessage) {
        let Some((v, zombies)) = self.versions.remove(&conn) else {
            self.fail("Tversion", "an Rversion nobody asked for".into());
            return;
        };
        debug_assert_eq!(v, r);
        let want = asked.min(self.config.max_msize);
        match got {
            Rmessage::Version { msize, version }
                if *msize == want && version.as_bytes() == VERSION_9P2000_L.as_bytes() => {}
            _ => {
                self.fail(
                    "Tversion",
                    format!("Rversion {}, expected msize {want}", Show(got)),
                );
                return;
            }
        }
        // What the session tells its embedder must be what it told the client.
        let said = self.conns[conn].link.msize();
        if said != want {
            self.fail(
                "Tversion",
                format!("the session says msize {said} after an Rversion of {want}"),
            );
            return;
        }
        self.end_limbo(conn, Some(r));
        for z in zombies {
            self.model.release(z);
        }
        let client = self.conns[conn].client;
        let g = &mut self.guests[client];
        g.msize = want;
        g.versioning = false;
        g.tags.clear();
        for (c, t) in self.outstanding.keys() {
            if *c == conn {
                g.tags.insert(*t);
            }
        }
    }
}
