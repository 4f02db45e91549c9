//! Judging after every scheduling step: the journal (filesystem calls, stalls, replies,
//! interrupts) drained and each filesystem call stepped through the oracle and the model,
//! the per-connection counts (fids, request slots), the virtio rings, and what "nothing
//! can run" means (stalls to flush, or a deadlock). Replies are received and judged in
//! `reply.rs`.

use co9p::protocol::Tmessage;
use rand::RngExt;

use super::{RunEnd, STEP_BUDGET, World};
use crate::journal::Event;
use crate::oracle::{self, Effect, Show};

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
        self.journal_events();
        // Handlers that finished: what they did without a filesystem call takes effect
        // now, not when their reply is judged (a Twrite into a Txattrcreate buffer, which a
        // Tclunk pipelined behind it then sets).
        for t in self.ex.take_handled() {
            if let Some(&r) = self.by_task.get(&t) {
                self.on_handled(r);
            }
        }
        self.check_links();
    }

    fn on_handled(&mut self, r: usize) {
        let req = &self.reqs[r];
        // A fid's open file goes (and its locks with it) when a Tclunk/Tremove of it, or a
        // Twalk onto it, has finished: from then until the reply is judged, whether its
        // locks still hold is not the model's to say (another request may yet hold the
        // file a moment longer).
        let closing = match &req.msg {
            Tmessage::Clunk { fid } | Tmessage::Remove { fid } => Some(fid.0),
            Tmessage::Walk { fid, newfid, .. } if fid == newfid => {
                let g = &self.guests[req.client];
                oracle::walk_state(g, req)
                    .filter(|s| matches!(s.next, oracle::WalkNext::Done))
                    .map(|_| fid.0)
            }
            _ => None,
        };
        if let Some(f) = closing {
            let g = &self.guests[req.client];
            if g.conn == req.conn
                && req.before_version.is_none()
                && let Some(crate::guest::FidOpen::File { owner, .. }) =
                    g.fids.get(&f).map(|m| &m.open)
            {
                self.model.zombies.insert(*owner);
            }
            return;
        }
        let Tmessage::Write { fid, offset, data } = &req.msg else {
            return;
        };
        let g = &mut self.guests[req.client];
        if g.conn != req.conn || req.before_version.is_some() {
            return;
        }
        if let Some(crate::guest::FidOpen::XattrWrite { value, written, .. }) =
            g.fids.get_mut(&fid.0).map(|m| &mut m.open)
        {
            let s = *offset as usize;
            if s + data.0.len() <= value.len() {
                value[s..s + data.0.len()].copy_from_slice(&data.0);
                *written = (*written).max(s + data.0.len());
            }
        }
    }

    fn journal_events(&mut self) {
        for e in self.journal.drain() {
            match e {
                Event::Fs(ev) => self.on_fs(ev),
                Event::Stall(Some(t)) => {
                    self.stalled.insert(t);
                }
                Event::Stall(None) => {}
                Event::Reply { conn, req, frame } => self.on_reply(conn, req, frame),
                Event::Irq(d) => {
                    self.ex.timeline(|| crate::timeline::Kind::Irq { dev: d });
                    self.devices[d].raise();
                    if self.lrng.random_bool(0.6) {
                        self.handle_irq(d);
                    }
                }
            }
        }
    }

    fn check_links(&mut self) {
        // The guest reads the used ring only when interrupted: a completion the device
        // did not signal would sit there forever in a real guest. (While an interrupt
        // waits to be handled, the device rightly raises no other: the guest's
        // `used_event` asked for one at the first new entry, which it had.)
        for d in 0..self.devices.len() {
            if self.devices[d].irq_pending {
                continue;
            }
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
    pub(super) fn on_used(&mut self, d: usize, done: crate::link::Done) {
        let conn = self.devices[d].conn;
        let req = &self.reqs[done.req];
        if done.frame.is_empty() {
            if !req.cancelled {
                let detail = format!("{} came back with no reply", Show(&req.msg));
                self.fail("lost reply", detail);
            }
            return;
        }
        if req.conn != conn {
            let detail = format!(
                "the chain of {} (connection {}) came back on connection {conn}",
                Show(&req.msg),
                req.conn
            );
            return self.fail("virtio chain", detail);
        }
        self.on_reply(conn, done.req, done.frame);
    }

    /// Whether fid `f` of connection `c` may be added (`+1`) or taken away (`-1`) by a
    /// request not yet judged: the server's count may be off the model's by those.
    fn fid_slack(&self, c: usize) -> (usize, usize) {
        let g = &self.guests[self.conns[c].client];
        let (mut down, mut up) = (0, 0);
        let unjudged = self
            .unjudged
            .iter()
            .map(|&r| &self.reqs[r])
            .filter(|r| r.conn == c && !r.dup && r.refused != Some(true));
        for r in unjudged {
            if r.done && !r.replied {
                continue; // ended without effect
            }
            match &r.msg {
                Tmessage::Clunk { fid } | Tmessage::Remove { fid }
                    if g.fids.contains_key(&fid.0) =>
                {
                    down += 1
                }
                Tmessage::Walk { fid, newfid, .. } if newfid != fid => up += 1,
                Tmessage::Xattrwalk { .. } | Tmessage::Attach { .. } => up += 1,
                _ => {}
            }
        }
        (down, up)
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
        let model = g.fids.len();
        let (down, up) = self.fid_slack(c);
        if fids + down < model || fids > model + up {
            let detail = format!(
                "client {} has {} fids in the server, {} in the model {:?} (up to {down} \
                 going, {up} coming)",
                conn.client,
                fids,
                model,
                g.fids.keys().collect::<Vec<_>>()
            );
            self.fail("fid table", detail);
            return;
        }
        let conn = &self.conns[c];
        // While the guest has not handled its interrupt, the server has ended requests
        // whose replies the guest has not read yet: counted once it has.
        let irq = matches!(conn.link, crate::link::Link::Virtio { dev, .. }
            if self.devices[dev].irq_pending);
        if !self.versions.contains_key(&c) && !irq {
            // Chains the guest has not kicked yet have not reached the session.
            let unkicked: &[usize] = match conn.link {
                crate::link::Link::Virtio { dev, .. } if self.devices[dev].conn == c => {
                    &self.devices[dev].unkicked
                }
                _ => &[],
            };
            let model = self
                .outstanding
                .range((c, 0)..=(c, u16::MAX))
                .filter(|(_, r)| !unkicked.contains(r))
                .count();
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
            // A closed connection owes no reply (its effect may have happened just before
            // the close); a Tversion's session still does, before the Rversion.
            if version.is_some() && self.must_reply(r) {
                let detail = format!("{} had its effect, then no reply", Show(&req.msg));
                self.fail("lost reply", detail);
            }
            self.reqs[r].done = true;
            self.set_judged(r);
        }
    }

    /// Whether request `r` must be answered: its handler made its last filesystem call,
    /// or finished (it passed the reply point, which every handler that finishes does).
    pub(super) fn must_reply(&self, r: usize) -> bool {
        let req = &self.reqs[r];
        oracle::must_reply(&self.guests[req.client], req)
            || req.task.is_some_and(|t| self.ex.handler_done(t))
    }

    /// Request `r` is judged (or will never be): what it showed is applied.
    pub(super) fn set_judged(&mut self, r: usize) {
        self.reqs[r].judged = true;
        self.unjudged.remove(&r);
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
        match res {
            Err(v) => self.violated(v),
            Ok(effects) => effects.into_iter().for_each(|e| self.apply(e)),
        }
    }

    /// Applies what a filesystem call changed beyond the tree.
    fn apply(&mut self, e: Effect) {
        match e {
            Effect::Touched((dir, name)) => {
                for g in &mut self.guests {
                    g.passes.touched(dir, &name);
                }
                self.model.touches.push((dir, name));
            }
            Effect::Renamed { conn, from, to } => {
                let moved = |e: &mut Option<crate::guest::DirEntry>| {
                    if e.as_ref() == Some(&from) {
                        *e = Some(to.clone());
                    }
                };
                let client = self.conns[conn].client;
                let g = &mut self.guests[client];
                if g.conn == conn {
                    g.fids.values_mut().for_each(|f| moved(&mut f.entry));
                    if let Some(&node) = self
                        .model
                        .node(to.0)
                        .dir()
                        .and_then(|d| d.by_name.get(&to.1))
                    {
                        g.renamed.push(node.0);
                        if g.renamed.len() > 8 {
                            g.renamed.remove(0);
                        }
                    }
                }
                for (&c, t) in self.tombstones.iter_mut() {
                    if self.reqs[c].conn == conn {
                        moved(&mut t.entry);
                    }
                }
                // Fids being made by requests in flight on that session.
                for &r in &self.unjudged {
                    let r = &mut self.reqs[r];
                    if r.conn == conn
                        && let Some(e) = &mut r.entry
                    {
                        moved(e);
                    }
                }
            }
        }
    }

    /// Nothing can run and no timer is set: either stalled requests wait for a flush
    /// (the guest times out and flushes them) or it is a deadlock.
    pub(super) fn on_idle(&mut self, heal: bool) {
        // Chains a guest has not kicked yet, interrupts it has not handled: not a
        // deadlock, the guest's turn.
        if self.flush_virtio() {
            return;
        }
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
        if !self.pending.is_empty() && waiting == 0 && heal {
            let list: Vec<String> = self
                .pending
                .iter()
                .take(5)
                .map(|(r, m)| format!("{} -> {}", Show(&self.reqs[*r].msg), Show(m)))
                .collect();
            self.fail("judgement", format!("replies never judged: {list:?}"));
        }
        if let Some(l) = &self.locks
            && let Some(err) = l.stuck()
        {
            self.fail("coroutine locks", err);
        }
    }
}
