//! The workload phase: the moves a run is made of (requests, flushes, Tversions, resets,
//! hostile requests, scheduling steps, the virtio drivers' own pace), drawn from the
//! seed's streams or replayed from a script, and performed.

use co9p::protocol::{Tag, Tmessage};
use rand::RngExt;

use super::World;
use crate::executor::RunEnd;
use crate::guest::Uses;
use crate::oracle::Show;
use crate::script::{Move, Target};

impl World {
    pub(super) fn workload(&mut self) {
        if let Some(script) = self.cfg.script.clone() {
            for (i, m) in script.iter().enumerate() {
                if self.failure.is_some() {
                    break;
                }
                self.actions += 1;
                self.perform(i, m);
            }
            return;
        }
        while self.failure.is_none() && self.sent < self.cfg.ops {
            self.actions += 1;
            if self.actions > 200 * self.cfg.ops + 10_000 {
                let detail = format!(
                    "{} of {} requests sent after {} moves; outstanding {:?}",
                    self.sent,
                    self.cfg.ops,
                    self.actions,
                    self.outstanding
                        .values()
                        .take(6)
                        .map(|&r| Show(&self.reqs[r].msg).to_string())
                        .collect::<Vec<_>>()
                );
                self.fail("progress", detail);
                break;
            }
            if self.knobs.reclaim > 0.0 && self.hrng.random_bool(self.knobs.reclaim) {
                self.perform(self.nmoves, &Move::Reclaim);
                self.nmoves += 1;
                if self.cfg.record {
                    self.moves.push(Move::Reclaim);
                }
            }
            if !self.devices.is_empty() {
                self.perform(self.nmoves, &Move::Virtio);
                self.nmoves += 1;
                if self.cfg.record {
                    self.moves.push(Move::Virtio);
                }
            }
            // The second half of a race goes right after the first.
            let urgent = (0..self.guests.len()).find(|&g| self.guests[g].urgent());
            let m = if let Some(g) = urgent {
                let m = self.choose(g);
                if m.is_none() {
                    self.guests[g].plan.pop_front();
                }
                m
            } else if self.wrng.random_bool(0.45) {
                let g = self.wrng.random_range(0..self.guests.len());
                self.choose(g)
            } else {
                Some(Move::Steps(self.wrng.random_range(1..=8)))
            };
            if let Some(m) = m {
                self.perform(self.nmoves, &m);
                self.nmoves += 1;
                if self.cfg.record {
                    self.moves.push(m);
                }
            }
        }
    }

    /// What flushing `oldtag` (`None`: its own tag) of guest `g` aims at, as a move.
    pub(super) fn target_of(&self, g: usize, oldtag: Option<u16>) -> Target {
        let Some(t) = oldtag else {
            return Target::Own;
        };
        self.outstanding
            .get(&(self.guests[g].conn, t))
            .and_then(|r| self.req_move.get(r))
            .map_or(Target::Tag(t), |&m| Target::Move(m))
    }

    /// The next move of guest `g`, drawn: maybe a flush, a Tversion, a reset, or its next
    /// request; `None` if nothing fits now.
    pub(super) fn choose(&mut self, g: usize) -> Option<Move> {
        if self.guests[g].versioning {
            // A client may flush its Tversion too: Rversion must still come first.
            if self.wrng.random_bool(self.knobs.flush) {
                let target = self.target_of(g, Some(Tag::NOTAG.0));
                return Some(Move::Flush { client: g, target });
            }
            return None;
        }
        let conn = self.guests[g].conn;
        let mine: Vec<u16> = self
            .outstanding
            .iter()
            .filter(|((c, _), _)| *c == conn)
            .map(|((_, t), _)| *t)
            .collect();
        let r: f64 = self.wrng.random();
        if r < self.knobs.flush && self.guests[g].msize != 0 {
            let oldtag = match self.wrng.random_range(0..10) {
                0 => None, // itself
                1 => Some(self.wrng.random_range(1..=200)),
                _ if !mine.is_empty() => Some(mine[self.wrng.random_range(0..mine.len())]),
                _ => Some(self.wrng.random_range(1..=200)),
            };
            let target = self.target_of(g, oldtag);
            return Some(Move::Flush { client: g, target });
        }
        let r = r - self.knobs.flush;
        if r < self.knobs.version && self.guests[g].msize != 0 {
            return Some(Move::Version(g));
        }
        let r = r - self.knobs.version;
        if r < self.knobs.reset {
            return Some(Move::Reset(g));
        }
        let guest = &self.guests[g];
        if guest.inflight >= guest.depth {
            return None;
        }
        if guest.setup().is_some() {
            return (guest.inflight == 0).then_some(Move::Setup(g));
        }
        if self.knobs.hostile > 0.0 && self.hrng.random_bool(self.knobs.hostile) {
            // What the hostile request is comes from the hostile stream, from here on.
            let at = self.hrng.get_word_pos();
            return Some(Move::Hostile { client: g, at });
        }
        let ops = self.knobs.ops.clone();
        let (msg, uses) = self.guests[g].next_op(&mut self.wrng, &ops, &self.model)?;
        self.guests[g].can_use(&uses).then_some(Move::Send {
            client: g,
            msg,
            uses,
        })
    }

    /// Performs move `i` (of the script, or the `i`-th drawn). A move that does not fit
    /// the run as it is now (a replayed subset of a run's moves) does nothing.
    pub(super) fn perform(&mut self, i: usize, m: &Move) {
        if m.client().is_some_and(|g| g >= self.guests.len()) {
            return;
        }
        self.cur_move = Some(i);
        match m {
            Move::Steps(n) => {
                if *n > 0 && self.steps(*n) == RunEnd::Idle {
                    self.on_idle(false);
                }
            }
            &Move::Setup(g) => {
                let guest = &self.guests[g];
                if !guest.versioning
                    && guest.inflight == 0
                    && guest.depth > 0
                    && let Some((msg, uses)) = guest.setup()
                {
                    self.send(g, msg, uses);
                }
            }
            Move::Send { client, msg, uses } => {
                let guest = &self.guests[*client];
                if !guest.versioning
                    && guest.inflight < guest.depth
                    && guest.setup().is_none()
                    && guest.can_use(uses)
                {
                    self.sent += 1;
                    self.send(*client, msg.clone(), uses.clone());
                }
            }
            Move::Flush { client, target } => {
                let g = *client;
                let conn = self.guests[g].conn;
                let oldtag = match *target {
                    Target::Own => Some(None),
                    Target::Tag(t) => Some(Some(t)),
                    // Only while the request that move sent is in flight on this connection.
                    Target::Move(k) => self.move_req.get(&k).and_then(|&r| {
                        let tag = self.reqs[r].tag;
                        (self.outstanding.get(&(conn, tag)) == Some(&r)).then_some(Some(tag))
                    }),
                };
                if let Some(oldtag) = oldtag {
                    let guest = &self.guests[g];
                    if guest.versioning {
                        if oldtag == Some(Tag::NOTAG.0) {
                            self.flush(g, oldtag);
                        }
                    } else if guest.msize != 0 {
                        self.flush(g, oldtag);
                    }
                }
            }
            &Move::Version(g) => {
                if !self.guests[g].versioning && self.guests[g].msize != 0 {
                    self.version(g);
                }
            }
            &Move::Reset(g) => {
                if !self.guests[g].versioning {
                    self.reset(g);
                }
            }
            &Move::Hostile { client: g, at } => {
                let guest = &self.guests[g];
                if !guest.versioning && guest.inflight < guest.depth && guest.setup().is_none() {
                    self.hrng.set_word_pos(at);
                    if self.hostile(g) {
                        self.sent += 1;
                    }
                }
            }
            Move::Virtio => self.virtio_moves(),
            Move::Reclaim => {
                let n = self.fs.inner.reclaim();
                self.ex
                    .record_line(b'K', &(n as u64).to_le_bytes(), || format!("reclaim {n}"));
            }
        }
        self.cur_move = None;
    }

    /// The virtual guests' drivers at their own pace: a late kick for chains published
    /// earlier, an interrupt handled some time after it came.
    pub(super) fn virtio_moves(&mut self) {
        for d in 0..self.devices.len() {
            if !self.devices[d].unkicked.is_empty() && self.lrng.random_bool(0.5) {
                self.kick(d);
            }
            if self.devices[d].irq_pending && self.lrng.random_bool(0.6) {
                self.handle_irq(d);
            }
            if let Err(e) = self.devices[d].misbehave() {
                return self.fail("virtio driver", e);
            }
        }
        self.after_step();
    }

    /// Kicks every device with chains waiting and handles every pending interrupt (a
    /// driver gets to both eventually); whether there was anything to do.
    pub(super) fn flush_virtio(&mut self) -> bool {
        let mut any = false;
        for d in 0..self.devices.len() {
            if !self.devices[d].unkicked.is_empty() {
                self.kick(d);
                any = true;
            }
            if self.devices[d].irq_pending {
                self.handle_irq(d);
                any = true;
            }
        }
        if any {
            self.after_step();
        }
        any
    }

    pub(super) fn handle_irq(&mut self, d: usize) {
        match self.devices[d].on_interrupt() {
            Ok(done) => done.into_iter().for_each(|x| self.on_used(d, x)),
            Err(e) => self.fail("virtio used ring", e),
        }
    }

    /// Sends one request of guest `g` on its connection.
    pub(super) fn send(&mut self, g: usize, msg: Tmessage, uses: Uses) -> usize {
        if matches!(msg, Tmessage::Version { .. }) {
            return self.version_with(g, msg);
        }
        let tag = self.guests[g].tag();
        self.submit(g, tag, msg, uses)
    }
}
