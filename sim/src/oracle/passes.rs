//! Directory listings judged by POSIX's rules alone, whatever cookies a backend uses
//! (HostFs hands out the kernel's `d_off`; only MemFs documents its own).
//!
//! A *pass* is a listing from cookie 0 followed through the cookies each reply ends with.
//! Within a pass: every entry a reply lists exists in the directory at that moment (one
//! readdir call is atomic here), with its file's identity and type; no name comes twice;
//! and when a reply comes back empty, every name the directory held when the pass began
//! has been listed — except names added, removed or replaced during the pass, which
//! `readdir(3)` allows to appear or not.
//!
//! One allowance, for HostFs: Linux 6.18's tmpfs (libfs "offset" directories, iterated in
//! `d_children` order) breaks this rule when a listing resumes, by `lseek`, at a cookie
//! whose entry was removed meanwhile: it lists the directory again from its newest entry
//! (when that entry was the last one), or skips entries that were there all along (after
//! renames within the directory, the cookies no longer follow the listing's order).
//! Both reproduced with plain getdents64/lseek/rename on /dev/shm, no co9p involved (the
//! simulator found them). HostFs hands the kernel's cookies through and seeks whenever a
//! reply held fewer entries than it read, so on HostFs, once an entry of the directory
//! changed during a pass, names may come twice or not at all; MemFs is held to the rule.

use std::collections::{BTreeMap, BTreeSet};

use co9p::protocol::Dirent;

use super::Violation;
use crate::model::{Model, NodeId};

#[derive(Debug, Clone)]
struct Pass {
    dir: NodeId,
    /// The cookie the last reply ended with (where the pass goes on).
    cursor: u64,
    seen: BTreeSet<Vec<u8>>,
    start: BTreeSet<Vec<u8>>,
    volatile: BTreeSet<Vec<u8>>,
}

/// The passes of one client's open directory fids.
#[derive(Debug, Clone, Default)]
pub struct Passes(BTreeMap<u32, Pass>);

impl Passes {
    /// An entry of `dir` changed: passes over it may list `name` once, twice or never.
    pub fn touched(&mut self, dir: NodeId, name: &[u8]) {
        for p in self.0.values_mut().filter(|p| p.dir == dir) {
            p.volatile.insert(name.to_vec());
        }
    }

    pub fn forget(&mut self, fid: u32) {
        self.0.remove(&fid);
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }

    /// Judges one Rreaddir of `dir` through `fid` from `offset`, given every name the
    /// directory held when the call ran. `unknown_type`: a non-directory entry may come
    /// with `DT_UNKNOWN` (HostFs under mapped-xattr, as QEMU).
    #[allow(clippy::too_many_arguments)]
    pub fn judge(
        &mut self,
        m: &mut Model,
        fid: u32,
        dir: NodeId,
        offset: u64,
        listing: &BTreeMap<Vec<u8>, NodeId>,
        entries: &[Dirent],
        unknown_type: bool,
        relists: bool,
        since: &[(NodeId, Vec<u8>)],
        what: &str,
    ) -> Result<(), Violation> {
        let pass = match self.0.remove(&fid) {
            _ if offset == 0 => Some(Pass {
                dir,
                cursor: 0,
                seen: BTreeSet::new(),
                start: listing.keys().cloned().collect(),
                volatile: since
                    .iter()
                    .filter(|(d, _)| *d == dir)
                    .map(|(_, n)| n.clone())
                    .collect(),
            }),
            Some(p) if p.dir == dir && p.cursor == offset => Some(p),
            // A cookie of no pass this client follows: only the entries are judged.
            _ => None,
        };
        for d in entries {
            let name = d.name.as_bytes();
            let Some(&node) = listing.get(name) else {
                return Err(Violation::model(format!(
                    "{what}: lists {:?}, which the directory does not hold (it holds {:?})",
                    d.name,
                    names(listing)
                )));
            };
            let n = m.node(node);
            // Under mapped-xattr a non-directory entry may come as the host sees it: a
            // regular file (`DT_UNKNOWN`, qid type 0), as QEMU lists them.
            let host_view = unknown_type && d.ty == 0 && d.qid.ty.0 == 0 && !n.is_dir();
            let ty_ok = host_view || (d.ty == n.dtype() && d.qid.ty.0 == n.qid_type());
            if !ty_ok {
                return Err(Violation::model(format!(
                    "{what}: {:?} has type {} and qid type {:#x}; the model's file is {} ({:#x})",
                    d.name,
                    d.ty,
                    d.qid.ty.0,
                    n.dtype(),
                    n.qid_type()
                )));
            }
            if !m.learn_ino(node, d.qid.path) {
                return Err(Violation::model(format!(
                    "{what}: {:?} has qid path {:#x}, not model node {node}'s",
                    d.name, d.qid.path
                )));
            }
        }
        let Some(mut pass) = pass else {
            return Ok(());
        };
        for d in entries {
            let name = d.name.as_bytes();
            let excused = pass.volatile.contains(name) || (relists && !pass.volatile.is_empty());
            if !pass.seen.insert(name.to_vec()) && !excused {
                return Err(Violation::model(format!(
                    "{what}: lists {:?} twice in one pass",
                    d.name
                )));
            }
        }
        let excused = relists && !pass.volatile.is_empty();
        if entries.is_empty() && !listing.is_empty() && !excused {
            let missing: Vec<String> = pass
                .start
                .iter()
                .filter(|n| !pass.seen.contains(*n) && !pass.volatile.contains(*n))
                .map(|n| n.escape_ascii().to_string())
                .collect();
            if !missing.is_empty() {
                let show = |v: &BTreeSet<Vec<u8>>| -> Vec<String> {
                    v.iter().map(|n| n.escape_ascii().to_string()).collect()
                };
                return Err(Violation::model(format!(
                    "{what}: the pass ended without listing {missing:?}, there all along \
                     (the pass began with {:?}, listed {:?}; changed meanwhile {:?})",
                    show(&pass.start),
                    show(&pass.seen),
                    show(&pass.volatile)
                )));
            }
            return Ok(());
        }
        pass.cursor = entries.last().map_or(offset, |d| d.offset);
        self.0.insert(fid, pass);
        Ok(())
    }
}

fn names(listing: &BTreeMap<Vec<u8>, NodeId>) -> Vec<String> {
    listing
        .keys()
        .map(|n| n.escape_ascii().to_string())
        .collect()
}
