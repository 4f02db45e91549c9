//! The sequential reference model of the exported tree: what every filesystem call the
//! server makes should answer, and what the tree should look like afterwards.
//!
//! It is stepped in the order the filesystem applied effects (the fault hook's journal), so
//! concurrent requests are judged against the one serial order that really happened. It
//! mirrors MemFs's documented POSIX rules (errno order included) and its readdir cookies
//! (per-directory sequence numbers: `.` 1, `..` 2, children from 3, never reused), and
//! renders itself in [`co9p::fs::MemFs::dump`]'s format for the final comparison.

use std::collections::BTreeMap;

use co9p::protocol::{Errno, LockType, OpenFlags};

pub type NodeId = usize;
pub const ROOT: NodeId = 0;

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;

#[derive(Debug, Clone)]
pub enum Content {
    File(Vec<u8>),
    Dir(Dir),
    Symlink(Vec<u8>),
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
    fn get(&self, name: &[u8]) -> Option<NodeId> {
        self.by_name.get(name).map(|e| e.0)
    }
}

/// A byte-range lock: `end` inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub owner: u64,
    pub ty: LockType,
    pub start: u64,
    pub end: u64,
}

#[derive(Debug, Clone)]
pub struct Node {
    pub content: Content,
    pub mode: u32,
    pub nlink: u64,
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    pub locks: Vec<Held>,
    /// The inode number the server showed for it (learnt from the first qid seen).
    pub ino: Option<u64>,
}

impl Node {
    pub fn is_dir(&self) -> bool {
        matches!(self.content, Content::Dir(_))
    }
    pub fn dir(&self) -> Option<&Dir> {
        match &self.content {
            Content::Dir(d) => Some(d),
            _ => None,
        }
    }
    pub fn size(&self) -> u64 {
        match &self.content {
            Content::File(d) => d.len() as u64,
            Content::Symlink(t) => t.len() as u64,
            Content::Dir(_) => 4096,
        }
    }
    /// The dirent type byte (DT_*).
    pub fn dtype(&self) -> u8 {
        match self.content {
            Content::File(_) => 8,
            Content::Dir(_) => 4,
            Content::Symlink(_) => 10,
        }
    }
    pub fn qid_type(&self) -> u8 {
        match self.content {
            Content::File(_) => 0,
            Content::Dir(_) => 0x80,
            Content::Symlink(_) => 0x02,
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

/// The tree. Nodes are never freed (an unlinked file may still be open); `nlink` and
/// reachability say what is alive.
#[derive(Debug, Clone)]
pub struct Model {
    pub nodes: Vec<Node>,
    next_owner: u64,
    /// Lock owners whose file is being closed at a moment the checks cannot pin down
    /// (a Tversion or a connection close with requests in flight).
    pub zombies: std::collections::BTreeSet<u64>,
}

pub type R<T> = Result<T, Errno>;

mod render;
pub use render::fnv;

impl Default for Model {
    fn default() -> Self {
        Self::new()
    }
}

impl Model {
    pub fn new() -> Model {
        Model {
            nodes: vec![Node {
                content: Content::Dir(Dir::new(ROOT)),
                mode: S_IFDIR | 0o755,
                nlink: 2,
                xattrs: BTreeMap::new(),
                locks: Vec::new(),
                ino: Some(1),
            }],
            next_owner: 1,
            zombies: Default::default(),
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

    /// A directory's parent, as `..` finds it (the root's is the root); a removed
    /// directory has none.
    pub fn parent(&self, dir: NodeId) -> R<NodeId> {
        let d = match &self.nodes[dir].content {
            Content::Dir(d) => d,
            _ => return Err(Errno::ENOTDIR),
        };
        if self.nodes[dir].nlink == 0 {
            return Err(Errno::ENOENT);
        }
        Ok(d.parent)
    }

    pub fn lookup(&self, dir: NodeId, name: &[u8]) -> R<NodeId> {
        self.dir_of(dir)?.get(name).ok_or(Errno::ENOENT)
    }

    /// Learns or checks the inode number of `id`; `false` on a contradiction.
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

    fn make(&mut self, dir: NodeId, name: &[u8], content: Content, mode: u32) -> R<NodeId> {
        if self.live_dir(dir)?.get(name).is_some() {
            return Err(Errno::EEXIST);
        }
        let is_dir = matches!(content, Content::Dir(_));
        let id = self.nodes.len();
        self.nodes.push(Node {
            content,
            mode,
            nlink: if is_dir { 2 } else { 1 },
            xattrs: BTreeMap::new(),
            locks: Vec::new(),
            ino: None,
        });
        self.dir_mut(dir).insert(name, id);
        if is_dir {
            self.nodes[dir].nlink += 1;
        }
        Ok(id)
    }

    pub fn create(&mut self, dir: NodeId, name: &[u8], flags: OpenFlags, mode: u32) -> R<NodeId> {
        check_access(flags)?;
        self.make(
            dir,
            name,
            Content::File(Vec::new()),
            S_IFREG | (mode & 0o7777),
        )
    }

    pub fn mkdir(&mut self, dir: NodeId, name: &[u8], mode: u32) -> R<NodeId> {
        self.make(
            dir,
            name,
            Content::Dir(Dir::new(dir)),
            S_IFDIR | (mode & 0o7777),
        )
    }

    pub fn symlink(&mut self, dir: NodeId, name: &[u8], target: &[u8]) -> R<NodeId> {
        if target.is_empty() {
            return Err(Errno::ENOENT);
        }
        self.make(
            dir,
            name,
            Content::Symlink(target.to_vec()),
            S_IFLNK | 0o777,
        )
    }

    pub fn open(&mut self, id: NodeId, flags: OpenFlags) -> R<()> {
        check_access(flags)?;
        let n = &mut self.nodes[id];
        match &mut n.content {
            Content::Dir(_) if flags.writable() => return Err(Errno::EISDIR),
            Content::Dir(_) => {}
            Content::File(_) if flags.contains(OpenFlags::DIRECTORY) => {
                return Err(Errno::ENOTDIR);
            }
            Content::File(d) => {
                if flags.writable() && flags.contains(OpenFlags::TRUNC) {
                    d.clear();
                }
            }
            Content::Symlink(_) => return Err(Errno::ENXIO),
        }
        Ok(())
    }

    pub fn read(&self, id: NodeId, flags: OpenFlags, offset: u64, len: usize) -> R<Vec<u8>> {
        let data = match &self.nodes[id].content {
            Content::File(d) => d,
            Content::Dir(_) => return Err(Errno::EISDIR),
            Content::Symlink(_) => return Err(Errno::EBADF),
        };
        if !flags.readable() {
            return Err(Errno::EBADF);
        }
        let start = (offset.min(data.len() as u64)) as usize;
        let end = data.len().min(start + len);
        Ok(data[start..end].to_vec())
    }

    pub fn write(&mut self, id: NodeId, flags: OpenFlags, offset: u64, data: &[u8]) -> R<usize> {
        let d = match &mut self.nodes[id].content {
            Content::File(d) => d,
            Content::Dir(_) => return Err(Errno::EISDIR),
            Content::Symlink(_) => return Err(Errno::EBADF),
        };
        if !flags.writable() {
            return Err(Errno::EBADF);
        }
        if data.is_empty() {
            return Ok(0);
        }
        let off = if flags.contains(OpenFlags::APPEND) {
            d.len()
        } else {
            offset as usize
        };
        if d.len() < off + data.len() {
            d.resize(off + data.len(), 0);
        }
        d[off..off + data.len()].copy_from_slice(data);
        Ok(data.len())
    }

    pub fn truncate(&mut self, id: NodeId, size: u64) -> R<()> {
        match &mut self.nodes[id].content {
            Content::File(d) => {
                d.resize(size as usize, 0);
                Ok(())
            }
            Content::Dir(_) => Err(Errno::EISDIR),
            Content::Symlink(_) => Err(Errno::EINVAL),
        }
    }

    pub fn chmod(&mut self, id: NodeId, mode: u32) {
        let n = &mut self.nodes[id];
        n.mode = (n.mode & 0o170000) | (mode & 0o7777);
    }

    pub fn link(&mut self, target: NodeId, dir: NodeId, name: &[u8]) -> R<()> {
        let t = &self.nodes[target];
        if t.is_dir() {
            return Err(Errno::EPERM);
        }
        if t.nlink == 0 {
            return Err(Errno::ENOENT);
        }
        if self.live_dir(dir)?.get(name).is_some() {
            return Err(Errno::EEXIST);
        }
        self.dir_mut(dir).insert(name, target);
        self.nodes[target].nlink += 1;
        Ok(())
    }

    pub fn unlink(&mut self, dir: NodeId, name: &[u8], rmdir: bool) -> R<()> {
        let id = self.dir_of(dir)?.get(name).ok_or(Errno::ENOENT)?;
        match (self.nodes[id].dir(), rmdir) {
            (Some(_), false) => return Err(Errno::EISDIR),
            (None, true) => return Err(Errno::ENOTDIR),
            (Some(d), true) if !d.by_name.is_empty() => return Err(Errno::ENOTEMPTY),
            _ => {}
        }
        self.dir_mut(dir).remove(name);
        self.drop_link(dir, id);
        Ok(())
    }

    /// Tremove's rule: `dir/name` is removed only if it still names `node`; `ESTALE` if
    /// it names another file, `ENOENT` if none.
    pub fn unlink_node(&mut self, dir: NodeId, name: &[u8], node: NodeId, rmdir: bool) -> R<()> {
        match self.dir_of(dir)?.get(name) {
            Some(id) if id == node => self.unlink(dir, name, rmdir),
            Some(_) => Err(Errno::ESTALE),
            None => Err(Errno::ENOENT),
        }
    }

    fn drop_link(&mut self, dir: NodeId, id: NodeId) {
        if self.nodes[id].is_dir() {
            self.nodes[id].nlink = 0;
            self.nodes[dir].nlink -= 1;
        } else {
            self.nodes[id].nlink -= 1;
        }
    }

    pub fn rename(&mut self, od: NodeId, on: &[u8], nd: NodeId, nn: &[u8]) -> R<()> {
        let src = self.dir_of(od)?.get(on).ok_or(Errno::ENOENT)?;
        let target = self.live_dir(nd)?.get(nn);
        if target == Some(src) {
            return Ok(());
        }
        let src_is_dir = self.nodes[src].is_dir();
        if src_is_dir && od != nd {
            let mut cur = nd;
            while cur != ROOT {
                if cur == src {
                    return Err(Errno::EINVAL);
                }
                cur = self.dir_of(cur)?.parent;
            }
        }
        if let Some(t) = target {
            match (src_is_dir, self.nodes[t].dir()) {
                (true, None) => return Err(Errno::ENOTDIR),
                (false, Some(_)) => return Err(Errno::EISDIR),
                (true, Some(d)) if !d.by_name.is_empty() => return Err(Errno::ENOTEMPTY),
                _ => {}
            }
        }
        self.dir_mut(od).remove(on);
        if let Some(t) = target {
            self.dir_mut(nd).remove(nn);
            self.drop_link(nd, t);
        }
        self.dir_mut(nd).insert(nn, src);
        if src_is_dir && od != nd {
            self.nodes[od].nlink -= 1;
            self.nodes[nd].nlink += 1;
            self.dir_mut(src).parent = nd;
        }
        Ok(())
    }

    pub fn readlink(&self, id: NodeId) -> R<Vec<u8>> {
        match &self.nodes[id].content {
            Content::Symlink(t) => Ok(t.clone()),
            _ => Err(Errno::EINVAL),
        }
    }

    /// Entries after `cookie`, at most `max`, as MemFs lists them.
    pub fn readdir(&self, id: NodeId, cookie: u64, max: usize) -> R<Vec<Entry>> {
        let n = &self.nodes[id];
        let d = n.dir().ok_or(Errno::ENOTDIR)?;
        if n.nlink == 0 {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for (seq, name, node) in [(1u64, &b"."[..], id), (2, &b".."[..], d.parent)] {
            if seq > cookie {
                out.push(Entry {
                    name: name.to_vec(),
                    next: seq,
                    node,
                });
            }
        }
        for (&seq, name) in d.by_seq.range(cookie.max(2) + 1..) {
            out.push(Entry {
                name: name.clone(),
                next: seq,
                node: d.by_name[name].0,
            });
        }
        out.truncate(max);
        Ok(out)
    }

    pub fn getxattr(&self, id: NodeId, name: &[u8]) -> R<Vec<u8>> {
        if name.is_empty() {
            return Err(Errno::ERANGE);
        }
        self.nodes[id]
            .xattrs
            .get(name)
            .cloned()
            .ok_or(Errno::ENODATA)
    }

    pub fn listxattr(&self, id: NodeId) -> Vec<u8> {
        let mut out = Vec::new();
        for k in self.nodes[id].xattrs.keys() {
            out.extend_from_slice(k);
            out.push(0);
        }
        out
    }

    pub fn setxattr(&mut self, id: NodeId, name: &[u8], value: &[u8], flags: u32) -> R<()> {
        let n = &mut self.nodes[id];
        let exists = n.xattrs.contains_key(name);
        if exists && flags & 1 != 0 {
            return Err(Errno::EEXIST);
        }
        if !exists && flags & 2 != 0 {
            return Err(Errno::ENODATA);
        }
        n.xattrs.insert(name.to_vec(), value.to_vec());
        Ok(())
    }

    pub fn removexattr(&mut self, id: NodeId, name: &[u8]) -> R<()> {
        self.nodes[id]
            .xattrs
            .remove(name)
            .map(drop)
            .ok_or(Errno::ENODATA)
    }

    /// F_SETLK by `owner`: `Ok(true)` granted, `Ok(false)` conflict. Locks held by
    /// `zombies` (files being closed at an uncertain moment) make the answer uncertain:
    /// `Err(())` means either answer is right.
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
        let n = &mut self.nodes[id];
        let conflicting = |h: &&Held| {
            h.owner != owner
                && h.start <= end
                && start <= h.end
                && (ty == LockType::Write || h.ty == LockType::Write)
        };
        if ty != LockType::Unlock {
            let hard = n.locks.iter().filter(conflicting).any(|h| !zombie(h.owner));
            let soft = n.locks.iter().filter(conflicting).any(|h| zombie(h.owner));
            if hard {
                return Ok(Some(false));
            }
            if soft {
                return Ok(None);
            }
        }
        let mut kept = Vec::new();
        for h in n.locks.drain(..) {
            if h.owner != owner || h.end < start || end < h.start {
                kept.push(h);
                continue;
            }
            if h.start < start {
                kept.push(Held {
                    end: start - 1,
                    ..h
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
        Ok(Some(true))
    }

    /// An uncertain lock request that was answered `granted`: apply it.
    pub fn force_lock(&mut self, id: NodeId, owner: u64, ty: LockType, start: u64, end: u64) {
        let _ = self.lock(id, owner, OpenFlags::RDWR, ty, start, end, &|_| false);
    }

    /// Drops every lock of `owner` (its file was closed).
    pub fn release(&mut self, owner: u64) {
        self.zombies.remove(&owner);
        for n in &mut self.nodes {
            n.locks.retain(|h| h.owner != owner);
        }
    }

    /// Nodes reachable from the root (what MemFs keeps once nothing is open).
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

fn check_access(flags: OpenFlags) -> R<()> {
    if flags.access() == 3 {
        return Err(Errno::EINVAL);
    }
    Ok(())
}
