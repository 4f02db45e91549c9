//! POSIX byte-range locks on one inode, owned by open files (open-file-description
//! semantics, like Linux OFD locks): read locks share, write locks exclude, and an owner
//! never conflicts with itself — its new lock replaces, splits and merges its own ranges
//! the way `fcntl(F_SETLK)` does.

use crate::fs::{FsResult, LockProbe};
use crate::protocol::{Errno, LockType};

/// One held lock. `end` is inclusive; `u64::MAX` means "to the end of the file, forever".
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Held {
    pub owner: u64,
    pub ty: LockType,
    pub start: u64,
    pub end: u64,
    pub proc_id: u32,
    pub client_id: Vec<u8>,
}

impl Held {
    fn overlaps(&self, start: u64, end: u64) -> bool {
        self.start <= end && start <= self.end
    }

    /// As a `Tgetlock` answer (length 0 = to end of file).
    pub(super) fn probe(&self) -> LockProbe {
        LockProbe {
            lock_type: self.ty,
            start: self.start,
            length: if self.end == u64::MAX {
                0
            } else {
                self.end - self.start + 1
            },
            proc_id: self.proc_id,
            client_id: self.client_id.clone(),
        }
    }
}

/// `start`/`length` as an inclusive range: `EINVAL` if it runs past `u64::MAX`.
pub(crate) fn range(start: u64, length: u64) -> FsResult<(u64, u64)> {
    if length == 0 {
        return Ok((start, u64::MAX));
    }
    let end = start.checked_add(length - 1).ok_or(Errno::EINVAL)?;
    Ok((start, end))
}

/// The locks held on one inode, sorted by `(start, owner)`.
#[derive(Debug, Default)]
pub(crate) struct Locks(Vec<Held>);

impl Locks {
    /// The first lock (lowest start) of another owner that a `ty` lock on `[start, end]`
    /// by `owner` conflicts with.
    pub(super) fn conflict(&self, owner: u64, ty: LockType, start: u64, end: u64) -> Option<&Held> {
        self.0.iter().find(|h| {
            h.owner != owner
                && h.overlaps(start, end)
                && (ty == LockType::Write || h.ty == LockType::Write)
        })
    }

    /// Sets `owner`'s lock on `[start, end]` to `ty` (`Unlock` removes), as `F_SETLK` does
    /// once no conflict stands in the way.
    pub(super) fn set(&mut self, new: Held) {
        let (owner, start, end) = (new.owner, new.start, new.end);
        let mut mine = Vec::new();
        let mut others = Vec::new();
        for h in self.0.drain(..) {
            if h.owner != owner {
                others.push(h);
            } else if !h.overlaps(start, end) {
                mine.push(h);
            } else {
                // Keep what lies outside the new range.
                if h.start < start {
                    mine.push(Held {
                        end: start - 1,
                        ..h.clone()
                    });
                }
                if h.end > end {
                    mine.push(Held {
                        start: end + 1,
                        ..h
                    });
                }
            }
        }
        if new.ty != LockType::Unlock {
            mine.push(new);
        }
        // The owner's ranges are now disjoint; merge touching ones of the same type.
        mine.sort_by_key(|h| h.start);
        let mut merged: Vec<Held> = Vec::with_capacity(mine.len());
        for h in mine {
            match merged.last_mut() {
                Some(last)
                    if last.ty == h.ty && last.end != u64::MAX && last.end + 1 == h.start =>
                {
                    last.end = h.end;
                    last.proc_id = h.proc_id;
                    last.client_id = h.client_id;
                }
                _ => merged.push(h),
            }
        }
        others.extend(merged);
        others.sort_by_key(|h| (h.start, h.owner));
        self.0 = others;
    }

    /// Drops every lock `owner` holds (its file was closed).
    pub(super) fn release(&mut self, owner: u64) {
        self.0.retain(|h| h.owner != owner);
    }

    /// `owner`'s locks, in order.
    #[cfg(test)]
    pub(crate) fn of(&self, owner: u64) -> impl Iterator<Item = &Held> + '_ {
        self.0.iter().filter(move |h| h.owner == owner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(owner: u64, ty: LockType, start: u64, end: u64) -> Held {
        Held {
            owner,
            ty,
            start,
            end,
            proc_id: 0,
            client_id: Vec::new(),
        }
    }

    fn ranges(l: &Locks, owner: u64) -> Vec<(LockType, u64, u64)> {
        l.of(owner).map(|h| (h.ty, h.start, h.end)).collect()
    }

    #[test]
    fn own_locks_split_merge_and_change_type() {
        use LockType::*;
        let mut l = Locks::default();
        l.set(held(1, Write, 0, 99));
        l.set(held(1, Unlock, 40, 59));
        assert_eq!(ranges(&l, 1), vec![(Write, 0, 39), (Write, 60, 99)]);
        l.set(held(1, Write, 40, 59));
        assert_eq!(ranges(&l, 1), vec![(Write, 0, 99)]);
        l.set(held(1, Read, 10, 19));
        assert_eq!(
            ranges(&l, 1),
            vec![(Write, 0, 9), (Read, 10, 19), (Write, 20, 99)]
        );
        l.set(held(1, Unlock, 0, u64::MAX));
        assert!(ranges(&l, 1).is_empty());
    }

    #[test]
    fn conflicts_only_between_owners_and_with_writes() {
        use LockType::*;
        let mut l = Locks::default();
        l.set(held(1, Read, 0, 9));
        assert!(l.conflict(2, Read, 5, 20).is_none());
        assert!(l.conflict(2, Write, 9, 9).is_some());
        assert!(l.conflict(2, Write, 10, 20).is_none());
        assert!(l.conflict(1, Write, 0, 9).is_none());
        assert_eq!(range(5, 0), Ok((5, u64::MAX)));
        assert_eq!(range(u64::MAX, 2), Err(Errno::EINVAL));
    }
}
