//! The last phases of a run: heal (faults off, everything answered within a bound),
//! drain (every fid clunked, nothing left in the sessions) and end (sessions closed, no
//! coroutine, inode or byte left over, and the tree equal to the model's).

use std::sync::atomic::Ordering;

use co9p::protocol::{Fid, Tmessage};

use super::World;
use crate::executor::RunEnd;
use crate::guest::Uses;
use crate::link::Link;

impl World {
    /// Faults off: every request must now be answered within a bound.
    pub(super) fn heal(&mut self) {
        self.faults_on.store(false, Ordering::Relaxed);
        for _ in 0..50 {
            if self.failure.is_some() {
                return;
            }
            let end = self.steps(20_000);
            if end == RunEnd::Idle {
                if self.outstanding.is_empty() {
                    break;
                }
                self.on_idle(true);
            }
        }
        if self.failure.is_none() && !self.outstanding.is_empty() {
            let n = self.outstanding.len();
            self.fail("liveness", format!("{n} requests unanswered after healing"));
        }
        if let Some(l) = &self.locks {
            if let Some(err) = l.stuck() {
                self.fail("coroutine locks", err);
                return;
            }
            l.shutdown();
        }
    }

    /// Every guest finishes setting up (a reset or Tversion may have left it without
    /// fids), then clunks every fid.
    pub(super) fn drain(&mut self) {
        for g in 0..self.guests.len() {
            for _ in 0..8 {
                let Some((msg, uses)) = self.guests[g].setup() else {
                    break;
                };
                self.send(g, msg, uses);
                self.settle();
            }
            // Clunks refused for lack of a request slot are sent again.
            for _ in 0..64 {
                let fids: Vec<u32> = self.guests[g].fids.keys().copied().collect();
                if fids.is_empty() || self.failure.is_some() {
                    break;
                }
                for f in fids {
                    let uses = Uses {
                        closing: vec![f],
                        ..Uses::default()
                    };
                    self.send(g, Tmessage::Clunk { fid: Fid(f) }, uses);
                }
                self.settle();
            }
        }
        for c in 0..self.conns.len() {
            let conn = &self.conns[c];
            if conn.open && (conn.link.fid_count() != 0 || conn.link.inflight() != 0) {
                let detail = format!(
                    "connection {c} after clunking everything: {} fids, {} requests",
                    conn.link.fid_count(),
                    conn.link.inflight()
                );
                self.fail("leak", detail);
            }
        }
    }

    pub(super) fn settle(&mut self) {
        for _ in 0..20 {
            if self.failure.is_some() {
                break;
            }
            if self.steps(100_000) == RunEnd::Idle && !self.flush_virtio() {
                break;
            }
        }
        if self.failure.is_none() && !self.outstanding.is_empty() {
            self.on_idle(true);
        }
    }

    /// Sessions closed: nothing may be left but the tree itself, equal to the model's.
    pub(super) fn end(&mut self) {
        for c in 0..self.conns.len() {
            if self.conns[c].open {
                let latch = match &self.conns[c].link {
                    Link::Direct(session) => session.close(),
                    &Link::Virtio { dev, .. } => match self.devices[dev].shut_down() {
                        Ok(l) => l,
                        Err(e) => return self.fail("virtio reset", e),
                    },
                };
                self.conns[c].open = false;
                self.conns[c].closing = Some(latch);
            }
        }
        self.settle();
        if self.failure.is_some() {
            return;
        }
        if let Some(l) = &self.locks
            && let Some(err) = l.finished()
        {
            self.fail("coroutine locks", err);
            return;
        }
        let live = self.ex.live_tasks();
        if live != 0 {
            self.fail("leak", format!("{live} coroutines still alive at the end"));
            return;
        }
        let backend = &self.fs.inner;
        let held = backend.held();
        let want = match self.model.backend {
            crate::model::Backend::Mem => self.model.live_nodes() as u64,
            // The root's descriptor: no node, file or cached lookup may outlive the run.
            crate::model::Backend::Host(_) => 1,
        };
        let dump = backend.dump();
        let model = self.model.render();
        if let Some(own) = backend.mem_dump()
            && own != dump
        {
            let diff = first_diff(&own, &dump);
            self.fail(
                "final state",
                format!("MemFs's dump and its API's differ: {diff}"),
            );
        } else if dump != model {
            let diff = first_diff(&dump, &model);
            self.fail("final state", diff);
        } else if held != want {
            let what = match self.model.backend {
                crate::model::Backend::Mem => "inodes alive",
                crate::model::Backend::Host(_) => "host descriptors held",
            };
            self.fail(
                "leak",
                format!("{held} {what}, the final tree needs {want}"),
            );
        } else if let Some(err) = backend.unaccounted() {
            self.fail("capacity accounting", err);
        }
    }
}

fn first_diff(server: &str, model: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (server.lines().collect(), model.lines().collect());
    for i in 0..a.len().max(b.len()) {
        let (x, y) = (a.get(i), b.get(i));
        if x != y {
            return format!("line {i}: server {x:?}, model {y:?}");
        }
    }
    String::from("(equal)")
}
