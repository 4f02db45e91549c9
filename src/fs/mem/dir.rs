//! A directory's entries, with the sequence numbers that make `readdir` cookies stable.
//!
//! Each entry gets a per-directory sequence number when it is inserted, never reused:
//! `.` is 1, `..` is 2, children start at 3. A readdir cookie is the sequence number of
//! the last entry returned, and reading resumes with the next larger one. So an entry
//! that exists for the whole listing is returned exactly once, one removed before it is
//! reached is not returned, and one inserted (or renamed in) during the listing comes
//! after everything that was there before.

use std::collections::BTreeMap;

/// Bytes charged per directory entry on top of its name: a rough share of the two map
/// nodes an entry lives in, so that a guest making millions of short hard links still
/// runs into capacity.
pub const ENTRY_COST: u64 = 64;

/// What one entry named `name` is charged.
pub(crate) fn entry_cost(name: &[u8]) -> u64 {
    name.len() as u64 + ENTRY_COST
}

/// Sequence number (and cookie) of `.`.
pub(crate) const SEQ_DOT: u64 = 1;
/// Sequence number (and cookie) of `..`.
pub(crate) const SEQ_DOTDOT: u64 = 2;

#[derive(Debug)]
pub(crate) struct Dir {
    /// The directory holding this one (the root's parent is the root).
    pub parent: u64,
    by_name: BTreeMap<Box<[u8]>, (u64, u64)>,
    by_seq: BTreeMap<u64, Box<[u8]>>,
    next_seq: u64,
    cost: u64,
}

impl Dir {
    pub(super) fn new(parent: u64) -> Self {
        Dir {
            parent,
            by_name: BTreeMap::new(),
            by_seq: BTreeMap::new(),
            next_seq: SEQ_DOTDOT + 1,
            cost: 0,
        }
    }

    /// The inode `name` refers to.
    pub(super) fn get(&self, name: &[u8]) -> Option<u64> {
        self.by_name.get(name).map(|&(ino, _)| ino)
    }

    /// Adds `name` (which must be absent) with the next sequence number.
    pub(super) fn insert(&mut self, name: &[u8], ino: u64) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let prev = self.by_name.insert(name.into(), (ino, seq));
        debug_assert!(prev.is_none(), "insert over an existing entry");
        self.by_seq.insert(seq, name.into());
        self.cost += entry_cost(name);
    }

    /// Removes `name`, returning the inode it named.
    pub(super) fn remove(&mut self, name: &[u8]) -> Option<u64> {
        let (ino, seq) = self.by_name.remove(name)?;
        self.by_seq.remove(&seq);
        self.cost -= entry_cost(name);
        Some(ino)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// What the entries are charged against capacity ([`entry_cost`] each).
    pub(super) fn cost(&self) -> u64 {
        self.cost
    }

    /// Entries with a sequence number above `cookie`, in sequence order: `(seq, name, ino)`.
    pub(super) fn after(&self, cookie: u64) -> impl Iterator<Item = (u64, &[u8], u64)> + '_ {
        self.by_seq
            .range(cookie.saturating_add(1)..)
            .map(|(&seq, name)| (seq, &name[..], self.by_name[name].0))
    }

    /// Entries in name order: `(name, ino)`.
    pub(super) fn by_name(&self) -> impl Iterator<Item = (&[u8], u64)> + '_ {
        self.by_name
            .iter()
            .map(|(name, &(ino, _))| (&name[..], ino))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_are_never_reused() {
        let mut d = Dir::new(1);
        d.insert(b"a", 10);
        d.insert(b"b", 11);
        assert_eq!(d.remove(b"a"), Some(10));
        d.insert(b"a", 12);
        let seen: Vec<_> = d.after(0).map(|(s, n, i)| (s, n.to_vec(), i)).collect();
        assert_eq!(seen, vec![(4, b"b".to_vec(), 11), (5, b"a".to_vec(), 12)]);
        assert_eq!(d.after(4).count(), 1);
        assert_eq!(d.cost(), 2 * ENTRY_COST + 2);
    }
}
