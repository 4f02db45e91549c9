//! The model's POSIX byte-range locks, owned by open files: conflicts, set, test,
//! release (and, where the checks cannot say, a grant taken as answered).

use co9p::protocol::{Errno, LockType, OpenFlags};

use super::{Held, Model, NodeId, R};

impl Model {
    /// The locks that conflict with a lock of `ty` over `start..=end` by `owner`.
    fn conflicts(&self, id: NodeId, owner: u64, ty: LockType, start: u64, end: u64) -> Vec<Held> {
        self.nodes[id]
            .locks
            .iter()
            .filter(|h| {
                h.owner != owner
                    && h.start <= end
                    && start <= h.end
                    && (ty == LockType::Write || h.ty == LockType::Write)
            })
            .cloned()
            .collect()
    }

    /// F_SETLK by `owner`: `Ok(Some(true))` granted, `Ok(Some(false))` conflict. Locks
    /// held by `zombies` (files being closed at an uncertain moment) make the answer
    /// uncertain: `Ok(None)` means either answer is right.
    #[allow(clippy::too_many_arguments)]
    pub fn lock(
        &mut self,
        id: NodeId,
        owner: u64,
        flags: OpenFlags,
        ty: LockType,
        start: u64,
        end: u64,
        zombie: &dyn Fn(u64) -> bool,
    ) -> R<Option<bool>> {
        match ty {
            LockType::Read if !flags.readable() => return Err(Errno::EBADF),
            LockType::Write if !flags.writable() => return Err(Errno::EBADF),
            _ => {}
        }
        if ty != LockType::Unlock {
            let c = self.conflicts(id, owner, ty, start, end);
            if c.iter().any(|h| !zombie(h.owner)) {
                return Ok(Some(false));
            }
            if !c.is_empty() {
                return Ok(None);
            }
        }
        self.set_lock(id, owner, ty, start, end);
        Ok(Some(true))
    }

    fn set_lock(&mut self, id: NodeId, owner: u64, ty: LockType, start: u64, end: u64) {
        let n = &mut self.nodes[id];
        let mut kept = Vec::new();
        for h in n.locks.drain(..) {
            if h.owner != owner || h.end < start || end < h.start {
                kept.push(h);
                continue;
            }
            if h.start < start {
                kept.push(Held {
                    end: start - 1,
                    ..h.clone()
                });
            }
            if h.end > end {
                kept.push(Held {
                    start: end + 1,
                    ..h
                });
            }
        }
        if ty != LockType::Unlock {
            kept.push(Held {
                owner,
                ty,
                start,
                end,
            });
        }
        n.locks = kept;
    }

    /// The locks `owner` holds on `id` as F_GETLK shows them: each a maximal run of bytes
    /// the owner holds with one type. An owner holds at most one lock at each byte (a new
    /// lock replaces its own under it), and Linux keeps a lock owner's ranges of one type
    /// coalesced (fs/locks.c merges a new lock with the owner's adjacent and overlapping
    /// ones of its type), so after locking 0..=3 and 8..=11 and then 4..=7, a conflicting
    /// F_GETLK reports 0..=11, not any of the three requests.
    fn runs(&self, id: NodeId, owner: u64) -> Vec<Held> {
        let mut mine: Vec<Held> = self.nodes[id]
            .locks
            .iter()
            .filter(|h| h.owner == owner)
            .cloned()
            .collect();
        mine.sort_by_key(|h| h.start);
        let mut runs: Vec<Held> = Vec::new();
        for h in mine {
            match runs.last_mut() {
                Some(r) if r.ty == h.ty && r.end != u64::MAX && r.end + 1 >= h.start => {
                    r.end = r.end.max(h.end);
                }
                _ => runs.push(h),
            }
        }
        runs
    }

    /// F_GETLK by `owner`: the locks any of which may be reported, each exactly as
    /// `Model::runs` says the lock appears (none: `Unlock` must come back), and whether
    /// that list holds only zombies' locks (then either answer).
    pub fn getlock(
        &self,
        id: NodeId,
        owner: u64,
        ty: LockType,
        start: u64,
        end: u64,
    ) -> R<(Vec<Held>, bool)> {
        if ty == LockType::Unlock {
            return Err(Errno::EINVAL);
        }
        let mut owners: Vec<u64> = self
            .conflicts(id, owner, ty, start, end)
            .iter()
            .map(|h| h.owner)
            .collect();
        owners.sort_unstable();
        owners.dedup();
        let c: Vec<Held> = owners
            .into_iter()
            .flat_map(|o| self.runs(id, o))
            .filter(|h| {
                h.start <= end
                    && start <= h.end
                    && (ty == LockType::Write || h.ty == LockType::Write)
            })
            .collect();
        let only_zombies = !c.is_empty() && c.iter().all(|h| self.zombies.contains(&h.owner));
        Ok((c, only_zombies))
    }

    /// An uncertain lock request that was answered `granted`: apply it.
    pub fn force_lock(&mut self, id: NodeId, owner: u64, ty: LockType, start: u64, end: u64) {
        self.set_lock(id, owner, ty, start, end);
    }

    /// The locks `owner` holds, with their nodes.
    pub fn locks_of(&self, owner: u64) -> Vec<(NodeId, Held)> {
        let mut v = Vec::new();
        for (id, n) in self.nodes.iter().enumerate() {
            v.extend(
                n.locks
                    .iter()
                    .filter(|h| h.owner == owner)
                    .map(|h| (id, h.clone())),
            );
        }
        v
    }

    /// Puts back locks [`Self::release`] dropped, held by a zombie now: a file whose fid
    /// was clunked while requests behind the clunk may still hold it open.
    pub fn linger(&mut self, owner: u64, locks: Vec<(NodeId, Held)>) {
        for (id, h) in locks {
            self.nodes[id].locks.push(h);
        }
        self.zombies.insert(owner);
    }

    /// Drops every lock of `owner` (its file was closed).
    pub fn release(&mut self, owner: u64) {
        self.zombies.remove(&owner);
        for n in &mut self.nodes {
            n.locks.retain(|h| h.owner != owner);
        }
    }
}
