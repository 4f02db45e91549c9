//! The sequential reference model of the exported tree: what every filesystem call the
//! server makes should answer, and what the tree should look like afterwards.
//!
//! It is a specification, not a copy of a backend: files are tracked by identity (a
//! [`NodeId`] per file ever made, never reused), and each operation states the POSIX rule
//! it follows — errno precedence included, where the rule fixes it. It is stepped in the
//! order the filesystem applied effects (the fault hook's journal), so concurrent requests
//! are judged against the one serial order that really happened.
//!
//! The rules, and where a backend is allowed its own documented choice ([`Backend`]):
//!
//! - **Ownership.** A new file belongs to the uid its fid was attached as and to the gid
//!   its request names, except, on MemFs, in a set-group-ID directory, where it takes the
//!   directory's group and a new subdirectory inherits the bit (Linux, BSD). HostFs leaves
//!   that rule to the client (as QEMU; Linux's client sends the directory's group and the
//!   bit itself), so under concurrent chmods the two backends may differ.
//! - **Set-id bits on write.** A write of at least one byte through a file opened by any
//!   uid but 0 (a user without `CAP_FSETID`) drops `S_ISUID`, and `S_ISGID` when
//!   group-execute is set (Linux's `file_remove_privs`). Nothing else drops them here: a
//!   Linux client sends the mode change of a chown or truncate itself.
//! - **No permission checks by uid.** co9p, as QEMU's security models, lets any attached
//!   uid chmod, chown, unlink in sticky directories and open any file: POSIX's checks are
//!   the client kernel's (see `sim/README` of the issue report). The model says so
//!   explicitly rather than pretending they exist.
//! - **Renames** follow POSIX (`rename(2)`): a file may replace a file, a directory an
//!   empty directory, the same file on both sides is a no-op, a directory cannot move
//!   into its own subtree.
//! - **Readdir cookies**: MemFs documents stable per-directory sequence numbers (`.` 1,
//!   `..` 2, children from 3, never reused) and the model predicts them exactly; other
//!   backends are judged by POSIX's rules only (see the oracle's directory passes).
//!
//! [`Model::render`] writes the tree in [`co9p::fs::MemFs::dump`]'s format for the final
//! comparison (the backend's tree is dumped through the `Filesystem` API in that format).

use std::collections::BTreeMap;

use co9p::fs::host::SecurityModel;
use co9p::protocol::{Errno, LockType};

pub type NodeId = usize;
pub const ROOT: NodeId = 0;

pub const S_IFMT: u32 = 0o170000;
pub const S_IFSOCK: u32 = 0o140000;
pub const S_IFLNK: u32 = 0o120000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFBLK: u32 = 0o060000;
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFCHR: u32 = 0o020000;
pub const S_IFIFO: u32 = 0o010000;
pub const S_ISUID: u32 = 0o4000;
pub const S_ISGID: u32 = 0o2000;
const S_IXGRP: u32 = 0o010;

/// Which backend serves the tree: the few places where POSIX leaves a choice, or where a
/// backend documents its own rule, depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// MemFs: stable readdir cookies; chmod of a symlink changes its mode.
    Mem,
    /// HostFs in a security model: Linux's rules (chmod of a symlink is `EOPNOTSUPP`
    /// unless mapped-xattr keeps the mode; `O_TRUNC` truncates even a read-only open).
    Host(SecurityModel),
}

impl Backend {
    pub fn mapped(self) -> bool {
        self == Backend::Host(SecurityModel::MappedXattr)
    }
}

#[derive(Debug, Clone)]
pub enum Content {
    File(Vec<u8>),
    Dir(Dir),
    Symlink(Vec<u8>),
    /// A fifo, socket or device node (its type is in the mode): attributes only.
    Special,
}

#[derive(Debug, Clone, Default)]
pub struct Dir {
    pub parent: NodeId,
    pub by_name: BTreeMap<Vec<u8>, (NodeId, u64)>,
    pub by_seq: BTreeMap<u64, Vec<u8>>,
    pub next_seq: u64,
}

impl Dir {
    fn new(parent: NodeId) -> Dir {
        Dir {
            parent,
            next_seq: 3,
            ..Dir::default()
        }
    }
    fn insert(&mut self, name: &[u8], id: NodeId) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_name.insert(name.to_vec(), (id, seq));
        self.by_seq.insert(seq, name.to_vec());
    }
    fn remove(&mut self, name: &[u8]) {
        if let Some((_, seq)) = self.by_name.remove(name) {
            self.by_seq.remove(&seq);
        }
    }
    pub fn get(&self, name: &[u8]) -> Option<NodeId> {
        self.by_name.get(name).map(|e| e.0)
    }
}

/// A byte-range lock: `end` inclusive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub owner: u64,
    pub ty: LockType,
    pub start: u64,
    pub end: u64,
}

#[derive(Debug, Clone)]
pub struct Node {
    pub content: Content,
    /// Type and permission bits, as `st_mode`.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u64,
    pub nlink: u64,
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    pub locks: Vec<Held>,
    /// The qid path the server showed for it (learnt from the first qid seen).
    pub ino: Option<u64>,
    /// Writes that changed its bytes so far.
    pub writes: u64,
    /// The latest qid version an Rgetattr showed, with `writes` as they stood at that
    /// Tgetattr's call: a version must move when the contents do (MemFs, whose versions
    /// count changes; HostFs's follow the host's coarse mtime).
    pub seen_version: Option<(u64, u32)>,
}

impl Node {
    pub fn is_dir(&self) -> bool {
        matches!(self.content, Content::Dir(_))
    }
    pub fn is_file(&self) -> bool {
        matches!(self.content, Content::File(_))
    }
    pub fn is_symlink(&self) -> bool {
        matches!(self.content, Content::Symlink(_))
    }
    pub fn dir(&self) -> Option<&Dir> {
        match &self.content {
            Content::Dir(d) => Some(d),
            _ => None,
        }
    }
    /// The size `stat` reports, where POSIX fixes it (a directory's is the backend's).
    pub fn size(&self) -> Option<u64> {
        match &self.content {
            Content::File(d) => Some(d.len() as u64),
            Content::Symlink(t) => Some(t.len() as u64),
            Content::Dir(_) => None,
            Content::Special => Some(0),
        }
    }
    /// The dirent type byte (DT_*).
    pub fn dtype(&self) -> u8 {
        match self.mode & S_IFMT {
            S_IFIFO => 1,
            S_IFCHR => 2,
            S_IFDIR => 4,
            S_IFBLK => 6,
            S_IFREG => 8,
            S_IFLNK => 10,
            S_IFSOCK => 12,
            _ => 0,
        }
    }
    pub fn qid_type(&self) -> u8 {
        match self.content {
            Content::Dir(_) => 0x80,
            Content::Symlink(_) => 0x02,
            _ => 0,
        }
    }
}

/// One readdir entry as the model predicts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: Vec<u8>,
    pub next: u64,
    pub node: NodeId,
}

/// What a `statfs` must look like (the numbers themselves are the backend's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatfsRule {
    pub namelen: u32,
}

/// The tree. Nodes are never freed (an unlinked file may still be open); `nlink` and
/// reachability say what is alive.
#[derive(Debug, Clone)]
pub struct Model {
    pub nodes: Vec<Node>,
    pub backend: Backend,
    next_owner: u64,
    /// Lock owners whose file is being closed at a moment the checks cannot pin down
    /// (a Tversion or a connection close with requests in flight).
    pub zombies: std::collections::BTreeSet<u64>,
    /// Every directory entry added, removed or replaced, in order (for directory passes:
    /// what changed between a readdir's call and its judgement).
    pub touches: Vec<(NodeId, Vec<u8>)>,
    /// MemFs's documented limits (`co9p::fs::mem::Limits`): a write starting at or past
    /// `max_file_size` is `EFBIG`, one crossing it is cut short there, a truncate beyond
    /// it is `EFBIG`; an inode at `max_links` links takes no more (`EMLINK`: a hard link,
    /// a subdirectory made in or moved into a directory). HostFs's limits are the host's
    /// and never reached.
    pub max_file_size: u64,
    pub max_links: u64,
}

pub type R<T> = Result<T, Errno>;

mod dir;
mod file;
mod lock;
mod render;
mod xattr;
pub use render::{fnv, kind_name, page_hash};

/// Who makes a file: the fid's attach uid and the request's gid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Maker {
    pub uid: u32,
    pub gid: u32,
}

impl Model {
    pub fn new(backend: Backend) -> Model {
        Model {
            nodes: vec![Node {
                content: Content::Dir(Dir::new(ROOT)),
                mode: S_IFDIR | 0o755,
                uid: 0,
                gid: 0,
                rdev: 0,
                nlink: 2,
                xattrs: BTreeMap::new(),
                locks: Vec::new(),
                ino: None,
                writes: 0,
                seen_version: None,
            }],
            backend,
            next_owner: 1,
            zombies: Default::default(),
            touches: Vec::new(),
            max_file_size: 1 << 30,
            max_links: 65_000,
        }
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id]
    }

    /// A fresh lock owner (an open file description).
    pub fn new_owner(&mut self) -> u64 {
        self.next_owner += 1;
        self.next_owner
    }

    fn dir_of(&self, id: NodeId) -> R<&Dir> {
        self.nodes[id].dir().ok_or(Errno::ENOTDIR)
    }

    fn live_dir(&self, id: NodeId) -> R<&Dir> {
        let d = self.dir_of(id)?;
        if self.nodes[id].nlink == 0 {
            return Err(Errno::ENOENT);
        }
        Ok(d)
    }

    fn dir_mut(&mut self, id: NodeId) -> &mut Dir {
        match &mut self.nodes[id].content {
            Content::Dir(d) => d,
            _ => unreachable!("checked to be a directory"),
        }
    }

    /// A directory's parent, as `..` finds it (the root's is the root). A removed
    /// directory has none by POSIX's word (its `..` entry goes with it: MemFs); Linux
    /// still walks `..` from it to its last parent (a deleted working directory can
    /// `cd ..`), and HostFs does what Linux does.
    pub fn parent(&self, dir: NodeId) -> R<NodeId> {
        let d = match &self.nodes[dir].content {
            Content::Dir(d) => d,
            _ => return Err(Errno::ENOTDIR),
        };
        if self.nodes[dir].nlink == 0 && self.backend == Backend::Mem {
            return Err(Errno::ENOENT);
        }
        Ok(d.parent)
    }

    pub fn lookup(&self, dir: NodeId, name: &[u8]) -> R<NodeId> {
        self.dir_of(dir)?.get(name).ok_or(Errno::ENOENT)
    }

    /// Learns or checks the qid path of `id`; `false` on a contradiction (two files with
    /// one path, or one file with two).
    pub fn learn_ino(&mut self, id: NodeId, ino: u64) -> bool {
        match self.nodes[id].ino {
            None => {
                if self.nodes.iter().any(|n| n.ino == Some(ino)) {
                    return false;
                }
                self.nodes[id].ino = Some(ino);
                true
            }
            Some(known) => known == ino,
        }
    }

    /// Nodes reachable from the root (what a backend keeps once nothing is open).
    pub fn live_nodes(&self) -> usize {
        let mut seen = std::collections::BTreeSet::new();
        let mut stack = vec![ROOT];
        while let Some(id) = stack.pop() {
            if !seen.insert(id) {
                continue;
            }
            if let Some(d) = self.nodes[id].dir() {
                stack.extend(d.by_name.values().map(|e| e.0));
            }
        }
        seen.len()
    }
}
