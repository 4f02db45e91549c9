//! Judging after every scheduling step: the journal (filesystem calls, replies) against
//! the oracle and the model, the per-connection counts (fids, request slots), Rflush and
//! Tversion ordering, and what "nothing can run" means (stalls to flush, or a deadlock).

use co9p::protocol::{Errno, Reply, Rmessage, Tag, Tmessage, VERSION_9P2000_L};

use super::{RunEnd, STEP_BUDGET, World};
use crate::journal::Event;
use crate::oracle::{self, Req, Show};

impl World {
    /// Runs up to `n` scheduling steps, judging after each.
    pub(super) fn steps(&mut self, n: u64) -> RunEnd {
        let ex = self.ex.clone();
        let end = ex.run(n, || {
            self.after_step();
            self.failure.is_some()
        });
        if self.ex.steps() > STEP_BUDGET {
            self.fail(
                "livelock",
                format!("more than {STEP_BUDGET} scheduling steps"),
            );
        }
        end
    }

    /// Drains the journal and checks the per-step invariants.
    pub(super) fn after_step(&mut self) {
        for e in self.journal.drain() {
            match e {
                Event::Fs(ev) => self.on_fs(ev),
                Event::Stall(Some(t)) => {
                    self.stalled.insert(t);
                }
                Event::Stall(None) => {}
                Event::Reply { conn, frame } => self.on_reply(conn, frame),
                Event::Irq(d) => match self.devices[d].on_interrupt() {
                    Ok(done) => done.into_iter().for_each(|x| self.on_used(d, x)),
                    Err(e) => self.fail("virtio used ring", e),
                },
            }
        }
        // The guest reads the used ring only when interrupted: a completion the device
        // did not signal would sit there forever in a real guest.
        for d in 0..self.devices.len() {
            match self.devices[d].collect() {
                Ok(frames) if frames.is_empty() => {}
                Ok(frames) => {
                    let detail = format!(
                        "device {d}: {} used entries without an interrupt",
                        frames.len()
                    );
                    self.fail("lost interrupt", detail);
                }
                Err(e) => self.fail("virtio used ring", e),
            }
        }
        if let Some(l) = &self.locks
            && let Some(err) = l.violation()
        {
            self.fail("coroutine locks", err);
        }
        for c in 0..self.conns.len() {
            self.check_conn(c);
        }
    }

    /// A chain device `d` completed. An empty one is a request answered with nothing,
    /// which only a cancelled request may be; a reply must sit in its own request's chain.
    fn on_used(&mut self, d: usize, done: crate::link::Done) {
        let conn = self.devices[d].conn;
        let req = &self.reqs[done.req];
        if done.frame.is_empty() {
            if !req.cancelled {
                let detail = format!("{} came back with no reply", Show(&req.msg));
                self.fail("lost reply", detail);
            }
            return;
        }
        let tag = done
            .frame
            .get(5..7)
            .map(|t| u16::from_le_bytes([t[0], t[1]]));
        if req.conn != conn || tag != Some(req.tag) {
            let detail = format!(
                "the chain of {} (tag {}) holds a reply with tag {tag:?}",
                Show(&req.msg),
                req.tag
            );
            return self.fail("virtio chain", detail);
        }
        self.on_reply(conn, done.frame);
    }

    pub(super) fn check_conn(&mut self, c: usize) {
        let conn = &self.conns[c];
        if let Some(latch) = &conn.closing {
            if latch.is_open() && !conn.zombies.is_empty() {
                let zs = std::mem::take(&mut self.conns[c].zombies);
                self.end_limbo(c, None);
                for z in zs {
                    self.model.release(z);
                }
            } else if latch.is_open() {
                self.end_limbo(c, None);
            }
            return;
        }
        let g = &self.guests[conn.client];
        if g.conn != c {
            return;
        }
        let fids = conn.link.fid_count();
        if fids != g.fids.len() {
            let detail = format!(
                "client {} has {} fids in the server, {} in the model {:?}",
                conn.client,
                fids,
                g.fids.len(),
                g.fids.keys().collect::<Vec<_>>()
            );
            self.fail("fid table", detail);
            return;
        }
        if !self.versions.contains_key(&c) {
            let model = self.outstanding.range((c, 0)..=(c, u16::MAX)).count();
            let server = conn.link.inflight();
            let full = server >= conn.link.max_inflight(&self.config);
            if conn.link.is_full() != full {
                let detail = format!("connection {c}: is_full says {}, {server} in flight", !full);
                return self.fail("request slots", detail);
            }
            if server != model {
                self.fail(
                    "request slots",
                    format!("connection {c}: {server} in the registry, {model} outstanding"),
                );
            }
        }
    }

    /// Requests of connection `c` that ended without a reply because a Tversion (`Some`)
    /// or the connection close (`None`) cancelled them.
    pub(super) fn end_limbo(&mut self, c: usize, version: Option<usize>) {
        let keys: Vec<(usize, u16)> = self
            .outstanding
            .range((c, 0)..=(c, u16::MAX))
            .filter(|(_, r)| version.is_none() || self.reqs[**r].before_version == version)
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            let r = self.outstanding.remove(&k).expect("listed");
            let req = &self.reqs[r];
            if oracle::must_reply(&self.guests[req.client], req) {
                let detail = format!("{} had its effect, then no reply", Show(&req.msg));
                self.fail("lost reply", detail);
            }
            self.reqs[r].done = true;
        }
    }

    pub(super) fn on_fs(&mut self, ev: crate::journal::FsEvent) {
        let Some(&r) = ev.task.as_ref().and_then(|t| self.by_task.get(t)) else {
            self.fail(
                "filesystem call",
                format!("{:?} from task {:?}, which runs no request", ev.op, ev.task),
            );
            return;
        };
        if self.reqs[r].cancelled {
            let detail = format!(
                "{:?} {:?} by {} after it was cancelled",
                ev.op,
                ev.outcome,
                Show(&self.reqs[r].msg)
            );
            self.fail("effect after cancel", detail);
            return;
        }
        let g = self.reqs[r].client;
        let mut req = self.reqs[r].clone();
        let res = oracle::on_fs(&mut self.model, &self.guests[g], &mut req, &ev);
        self.reqs[r] = req;
        if let Err(e) = res {
            self.fail("model", e);
        }
    }

    pub(super) fn on_reply(&mut self, conn: usize, frame: Vec<u8>) {
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
            .record_line(b'R', &frame, || format!("c{client} <- {reply}"));
        if self.cfg.log {
            self.pdus.push(format!("c{client} <- {reply}"));
        }
        let Some(r) = self.outstanding.remove(&(conn, reply.tag.0)) else {
            self.fail(
                "exactly once",
                format!("{reply} answers no request in flight (a second reply?)"),
            );
            return;
        };
        self.reqs[r].replied = true;
        self.reqs[r].done = true;
        let req = self.reqs[r].clone();
        let current = self.guests[client].conn == conn;
        // Free the tag and the fids it held.
        if current && req.before_version.is_none() {
            let g = &mut self.guests[client];
            g.claim(&req.uses, false);
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
            if !eagain {
                let detail = format!("{} with every slot taken: {reply}", Show(&req.msg));
                self.fail("request slots", detail);
            }
            return;
        }
        if eagain {
            let detail = format!("{} refused with a slot free", Show(&req.msg));
            return self.fail("request slots", detail);
        }
        match &req.msg {
            Tmessage::Flush { oldtag } => self.on_rflush(r, &req, *oldtag, &reply.msg),
            Tmessage::Version { msize, .. } => self.on_rversion(conn, r, *msize, &reply.msg),
            _ => {
                let answered = |f: usize| self.reqs[f].done && self.reqs[f].refused != Some(true);
                if let Some(&f) = req.flushes.iter().find(|&&f| answered(f)) {
                    let detail =
                        format!("{} answered after its Rflush (tag {})", Show(&req.msg), f);
                    self.fail("Rflush order", detail);
                    return;
                }
                if req.before_version.is_some() || !current {
                    if !oracle::must_reply(&self.guests[client], &req) {
                        let detail =
                            format!("{} cancelled before its effect: {reply}", Show(&req.msg));
                        self.fail("reply after cancel", detail);
                    }
                    return;
                }
                let res =
                    oracle::on_reply(&mut self.model, &mut self.guests[client], &req, &reply.msg);
                if let Err(e) = res {
                    self.fail("model", e);
                }
            }
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
            if oracle::must_reply(&self.guests[o.client], &o) {
                let detail = format!(
                    "{} had its effect but got no reply before Rflush",
                    Show(&o.msg)
                );
                self.fail("lost reply", detail);
                return;
            }
            self.outstanding.remove(&(o.conn, o.tag));
            self.reqs[old].done = true;
            let g = &mut self.guests[o.client];
            if g.conn == o.conn && o.before_version.is_none() {
                g.claim(&o.uses, false);
                g.tags.remove(&o.tag);
                if !matches!(o.msg, Tmessage::Flush { .. }) {
                    g.inflight -= 1;
                }
            }
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

    /// Nothing can run and no timer is set: either stalled requests wait for a flush
    /// (the guest times out and flushes them) or it is a deadlock.
    pub(super) fn on_idle(&mut self, heal: bool) {
        let ex = self.ex.clone();
        self.stalled.retain(|t| ex.has_task(*t));
        let stalled: Vec<usize> = self
            .stalled
            .iter()
            .filter_map(|t| self.by_task.get(t).copied())
            .filter(|&r| !self.reqs[r].done && !self.reqs[r].cancelled)
            .collect();
        if !stalled.is_empty() {
            for r in stalled {
                let (g, tag, conn) = (self.reqs[r].client, self.reqs[r].tag, self.reqs[r].conn);
                if self.guests[g].conn == conn && !self.guests[g].versioning {
                    self.flush(g, Some(tag));
                }
            }
            return;
        }
        let waiting = self
            .outstanding
            .values()
            .filter(|&&r| self.conns[self.reqs[r].conn].open)
            .count();
        let closing = self
            .conns
            .iter()
            .filter(|c| c.closing.as_ref().is_some_and(|l| !l.is_open()))
            .count();
        let cancelled_stalls = self.stalled.iter().any(|t| ex.has_task(*t));
        if (waiting > 0 || closing > 0) && !cancelled_stalls {
            let list: Vec<String> = self
                .outstanding
                .values()
                .take(5)
                .map(|&r| format!("c{} {}", self.reqs[r].client, Show(&self.reqs[r].msg)))
                .collect();
            self.fail(
                if heal { "liveness" } else { "deadlock" },
                format!(
                    "nothing runnable, no timer; {waiting} requests outstanding, {closing} \
                     connections closing: {list:?}"
                ),
            );
        }
        if let Some(l) = &self.locks
            && let Some(err) = l.stuck()
        {
            self.fail("coroutine locks", err);
        }
    }
}
