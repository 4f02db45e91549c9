//! Byte-range lock requests: single Tlock/Tgetlock on a few fixed ranges, and merge
//! sequences: one open file (a lock owner) takes two or three ranges with gaps between them,
//! then a range that fills, bridges or overlaps the gaps (with the same type, or the other
//! one), maybe an unlock cut out of the middle; then another open file of the same file
//! asks Tgetlock, whose answer must be the owner's coalesced run exactly.

use co9p::protocol::{Fid, LockFlags, LockType, Tmessage};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;

use super::aim::u;
use super::plan::Step;
use super::{FidOpen, Guest, OpKind, Uses};

impl Guest {
    /// A Tlock or Tgetlock (`None`: no open file to send it on).
    pub(super) fn lock_op(
        &mut self,
        kind: OpKind,
        rng: &mut ChaCha8Rng,
    ) -> Option<(Tmessage, Uses)> {
        let f = self.pick(rng, |_, m| matches!(m.open, FidOpen::File { .. }))?;
        if kind == OpKind::Lock && rng.random_bool(0.5) {
            return self.merge_sequence(f, rng);
        }
        let lock_type = [LockType::Write, LockType::Read, LockType::Unlock][rng.random_range(0..3)];
        let (start, length) = [(0, 0), (0, 10), (5, 10), (20, 0)][rng.random_range(0..4)];
        Some(self.lock_msg(kind == OpKind::Lock, f, lock_type, start, length))
    }

    /// Tlock (`set`) or Tgetlock of `start`+`length` on fid `f`.
    pub(super) fn lock_msg(
        &self,
        set: bool,
        f: u32,
        lock_type: LockType,
        start: u64,
        length: u64,
    ) -> (Tmessage, Uses) {
        let msg = if set {
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

    /// Plans a merge sequence on the open file of fid `f` and returns its first Tlock:
    /// ranges of 4 bytes 4 apart from a base (`b..=b+3`, `b+8..=b+11`, maybe `b+16..=b+19`),
    /// then one that bridges them, maybe an unlock in the middle, then one or two Tgetlock
    /// (write: conflicts with either type) from another owner.
    fn merge_sequence(&mut self, f: u32, rng: &mut ChaCha8Rng) -> Option<(Tmessage, Uses)> {
        let FidOpen::File { flags, owner } = self.fids[&f].open else {
            return None;
        };
        let node = self.fids[&f].node;
        let types: Vec<LockType> = [
            (flags.writable(), LockType::Write),
            (flags.readable(), LockType::Read),
        ]
        .into_iter()
        .filter_map(|(ok, t)| ok.then_some(t))
        .collect();
        let ty = *types.first()?;
        let ty = if types.len() > 1 && rng.random_bool(0.5) {
            types[1]
        } else {
            ty
        };
        let b = 4 * rng.random_range(0..8u64);
        let cells = rng.random_range(2..=3u64);
        let mut steps: Vec<(LockType, u64, u64)> = (0..cells).map(|i| (ty, b + 8 * i, 4)).collect();
        // The bridge: fills the first gap exactly, overlaps both ends of it, covers every
        // cell, or runs from inside the last cell to the end of the file.
        let last = b + 8 * (cells - 1);
        let (bs, bl) =
            [(b + 4, 4), (b + 2, 8), (b, 8 * cells - 4), (last + 2, 0)][rng.random_range(0..4)];
        let bty = if types.len() > 1 && rng.random_bool(0.25) {
            types[rng.random_range(0..types.len())]
        } else {
            ty
        };
        steps.push((bty, bs, bl));
        if rng.random_bool(0.3) {
            steps.push((LockType::Unlock, b + 1 + rng.random_range(0..8), 2));
        }
        // Sent in a shuffled order now and then: the merge must not depend on it.
        if rng.random_bool(0.2) {
            let i = rng.random_range(0..steps.len());
            let j = rng.random_range(0..steps.len());
            steps.swap(i, j);
        }
        let (t0, s0, l0) = steps[0];
        for &(ty, start, length) in &steps[1..] {
            self.plan.push_back(Step::Lock {
                fid: f,
                ty,
                start,
                length,
            });
        }
        for _ in 0..rng.random_range(1..=2) {
            let (start, length) =
                [(0, 0), (b, 0), (b + 5, 1), (last + 1, 2), (b + 9, 0)][rng.random_range(0..5)];
            self.plan.push_back(Step::Probe {
                node,
                owner,
                start,
                length,
                tries: 0,
            });
        }
        Some(self.lock_msg(true, f, t0, s0, l0))
    }
}
