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
use co9p::protocol::{Errno, LockType, OpenFlags, SetAttr, SetattrMask};

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
}

pub type R<T> = Result<T, Errno>;

mod render;
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
            }],
            backend,
            next_owner: 1,
            zombies: Default::default(),
            touches: Vec::new(),
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

    /// Makes `name` in `dir`, owned by `by`. In a set-group-ID directory MemFs gives the
    /// new file the directory's group, and a new directory the bit (Linux's rule, applied
    /// by the server); HostFs gives exactly the group and mode the request names (as
    /// QEMU: the Linux client applies that rule itself when it makes the request).
    fn make(
        &mut self,
        dir: NodeId,
        name: &[u8],
        content: Content,
        mode: u32,
        by: Maker,
    ) -> R<NodeId> {
        if self.live_dir(dir)?.get(name).is_some() {
            return Err(Errno::EEXIST);
        }
        let is_dir = matches!(content, Content::Dir(_));
        let parent = &self.nodes[dir];
        let setgid = parent.mode & S_ISGID != 0 && self.backend == Backend::Mem;
        let gid = if setgid { parent.gid } else { by.gid };
        let mode = if is_dir && setgid {
            mode | S_ISGID
        } else {
            mode
        };
        let id = self.nodes.len();
        self.nodes.push(Node {
            content,
            mode,
            uid: by.uid,
            gid,
            rdev: 0,
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

    pub fn create(
        &mut self,
        dir: NodeId,
        name: &[u8],
        flags: OpenFlags,
        mode: u32,
        by: Maker,
    ) -> R<NodeId> {
        check_access(flags)?;
        let c = Content::File(Vec::new());
        self.make(dir, name, c, S_IFREG | (mode & 0o7777), by)
    }

    pub fn mkdir(&mut self, dir: NodeId, name: &[u8], mode: u32, by: Maker) -> R<NodeId> {
        let c = Content::Dir(Dir::new(dir));
        self.make(dir, name, c, S_IFDIR | (mode & 0o7777), by)
    }

    pub fn symlink(&mut self, dir: NodeId, name: &[u8], target: &[u8], by: Maker) -> R<NodeId> {
        if target.is_empty() {
            return Err(Errno::ENOENT);
        }
        let c = Content::Symlink(target.to_vec());
        self.make(dir, name, c, S_IFLNK | 0o777, by)
    }

    /// `mknod(2)`: type 0 or `S_IFREG` makes a regular file, fifos, sockets and devices
    /// are nodes; `S_IFDIR` is `EPERM` (MemFs; Linux says so too) — HostFs answers `EINVAL`
    /// without asking the kernel, a difference the model states rather than hides.
    pub fn mknod(
        &mut self,
        dir: NodeId,
        name: &[u8],
        mode: u32,
        rdev: u64,
        by: Maker,
    ) -> R<NodeId> {
        let perm = mode & 0o7777;
        let (ty, content) = match mode & S_IFMT {
            0 | S_IFREG => (S_IFREG, Content::File(Vec::new())),
            t @ (S_IFIFO | S_IFSOCK | S_IFCHR | S_IFBLK) => (t, Content::Special),
            S_IFDIR if self.backend == Backend::Mem => return Err(Errno::EPERM),
            _ => return Err(Errno::EINVAL),
        };
        let id = self.make(dir, name, content, ty | perm, by)?;
        // mapped-xattr keeps the rdev it is given whatever the type (as QEMU).
        if matches!(ty, S_IFCHR | S_IFBLK) || self.backend.mapped() {
            self.nodes[id].rdev = rdev;
        }
        Ok(id)
    }

    pub fn open(&mut self, id: NodeId, flags: OpenFlags) -> R<()> {
        check_access(flags)?;
        let backend = self.backend;
        let n = &mut self.nodes[id];
        let trunc = flags.contains(OpenFlags::TRUNC);
        match &mut n.content {
            Content::Dir(_) if flags.writable() => return Err(Errno::EISDIR),
            // Linux asks for write access to truncate, and a directory has none.
            Content::Dir(_) if trunc && backend != Backend::Mem => return Err(Errno::EISDIR),
            Content::Dir(_) => {}
            Content::File(_) if flags.contains(OpenFlags::DIRECTORY) => {
                return Err(Errno::ENOTDIR);
            }
            Content::File(d) => {
                // POSIX leaves O_TRUNC without write access unspecified: Linux truncates
                // (HostFs passes the flag on), MemFs does not.
                let trunc = flags.contains(OpenFlags::TRUNC)
                    && (flags.writable() || matches!(backend, Backend::Host(_)));
                if trunc {
                    d.clear();
                }
            }
            Content::Symlink(_) | Content::Special => return Err(Errno::ENXIO),
        }
        Ok(())
    }

    pub fn read(&self, id: NodeId, flags: OpenFlags, offset: u64, len: usize) -> R<Vec<u8>> {
        let data = match &self.nodes[id].content {
            Content::File(d) => d,
            Content::Dir(_) => return Err(Errno::EISDIR),
            _ => return Err(Errno::EBADF),
        };
        if !flags.readable() {
            return Err(Errno::EBADF);
        }
        let start = (offset.min(data.len() as u64)) as usize;
        let end = data.len().min(start + len);
        Ok(data[start..end].to_vec())
    }

    /// Writes through a file opened by `uid`: a write of at least one byte by any uid
    /// but 0 drops the set-id bits (see the module doc).
    pub fn write(
        &mut self,
        id: NodeId,
        flags: OpenFlags,
        offset: u64,
        data: &[u8],
        uid: u32,
    ) -> R<usize> {
        let n = &mut self.nodes[id];
        let d = match &mut n.content {
            Content::File(d) => d,
            Content::Dir(_) => return Err(Errno::EISDIR),
            _ => return Err(Errno::EBADF),
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
        if uid != 0 {
            n.mode &= !setid_to_kill(n.mode);
        }
        Ok(data.len())
    }

    /// `Tsetattr`. MemFs checks everything before it changes anything; HostFs applies
    /// owner, mode, size and times in turn, each of which may fail after the earlier ones
    /// took effect (as QEMU's `v9fs_setattr` does) — the model applies them in the same
    /// order.
    pub fn setattr(&mut self, id: NodeId, a: &SetAttr) -> R<()> {
        let v = a.valid;
        let size_err = |n: &Node| -> R<()> {
            match n.content {
                Content::File(_) => Ok(()),
                Content::Dir(_) => Err(Errno::EISDIR),
                _ => Err(Errno::EINVAL),
            }
        };
        let bad_time = (v.contains(SetattrMask::ATIME_SET) && a.atime.nsec >= 1_000_000_000)
            || (v.contains(SetattrMask::MTIME_SET) && a.mtime.nsec >= 1_000_000_000);
        match self.backend {
            Backend::Mem => {
                if v.contains(SetattrMask::SIZE) {
                    size_err(&self.nodes[id])?;
                }
                if bad_time {
                    return Err(Errno::EINVAL);
                }
                self.apply_owner(id, a);
                self.apply_mode(id, a);
                self.apply_size(id, a);
            }
            Backend::Host(sm) => {
                self.apply_owner(id, a);
                if v.contains(SetattrMask::MODE) {
                    if sm != SecurityModel::MappedXattr && self.nodes[id].is_symlink() {
                        return Err(Errno::EOPNOTSUPP);
                    }
                    self.apply_mode(id, a);
                }
                if v.contains(SetattrMask::SIZE) {
                    size_err(&self.nodes[id])?;
                    self.apply_size(id, a);
                }
                if bad_time && v.intersects(SetattrMask::ATIME | SetattrMask::MTIME) {
                    return Err(Errno::EINVAL);
                }
            }
        }
        Ok(())
    }

    /// A chown. POSIX leaves it to the implementation whether a privileged chown of a
    /// regular file drops its set-id bits: MemFs keeps them; Linux (so HostFs, but for
    /// mapped-xattr, which only stores the owner) drops them from anything but a
    /// directory — `S_ISUID`, and `S_ISGID` with group-execute — even for root. (A Linux
    /// client sends that mode change itself, in the same request.)
    fn apply_owner(&mut self, id: NodeId, a: &SetAttr) {
        let kills = matches!(self.backend, Backend::Host(m) if m != SecurityModel::MappedXattr);
        let n = &mut self.nodes[id];
        let chown = a.valid.intersects(SetattrMask::UID | SetattrMask::GID);
        if a.valid.contains(SetattrMask::UID) {
            n.uid = a.uid;
        }
        if a.valid.contains(SetattrMask::GID) {
            n.gid = a.gid;
        }
        if chown && kills && !n.is_dir() {
            n.mode &= !setid_to_kill(n.mode);
        }
    }

    fn apply_mode(&mut self, id: NodeId, a: &SetAttr) {
        if a.valid.contains(SetattrMask::MODE) {
            let n = &mut self.nodes[id];
            n.mode = (n.mode & S_IFMT) | (a.mode & 0o7777);
        }
    }

    fn apply_size(&mut self, id: NodeId, a: &SetAttr) {
        if a.valid.contains(SetattrMask::SIZE)
            && let Content::File(d) = &mut self.nodes[id].content
        {
            d.resize(a.size as usize, 0);
        }
    }

    /// `link(2)`. Which error comes first when several apply is the backend's: MemFs
    /// says a removed target is gone before it looks at the new name, Linux the reverse.
    pub fn link(&mut self, target: NodeId, dir: NodeId, name: &[u8]) -> R<()> {
        let t = &self.nodes[target];
        if t.is_dir() {
            return Err(Errno::EPERM);
        }
        let gone = t.nlink == 0;
        if gone && self.backend == Backend::Mem {
            return Err(Errno::ENOENT);
        }
        if self.live_dir(dir)?.get(name).is_some() {
            return Err(Errno::EEXIST);
        }
        if gone {
            return Err(Errno::ENOENT);
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

    /// `Ok` if `dir/name` still names `node`; `ESTALE` if it names another file,
    /// `ENOENT` if none: a fid acts on its own file, never on whatever took its name.
    pub fn expect_entry(&self, dir: NodeId, name: &[u8], node: NodeId) -> R<()> {
        match self.dir_of(dir)?.get(name) {
            Some(id) if id == node => Ok(()),
            Some(_) => Err(Errno::ESTALE),
            None => Err(Errno::ENOENT),
        }
    }

    /// Tremove's rule: `dir/name` is removed only if it still names `node`.
    pub fn unlink_node(&mut self, dir: NodeId, name: &[u8], node: NodeId, rmdir: bool) -> R<()> {
        self.expect_entry(dir, name, node)?;
        self.unlink(dir, name, rmdir)
    }

    /// Trename's rule: `od/on` moves only if it still names `node`.
    pub fn rename_node(
        &mut self,
        node: NodeId,
        od: NodeId,
        on: &[u8],
        nd: NodeId,
        nn: &[u8],
    ) -> R<()> {
        self.expect_entry(od, on, node)?;
        self.rename(od, on, nd, nn)
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
        // Linux answers a target that is an ancestor of the source (or its directory)
        // ENOTEMPTY before it compares types; MemFs compares types first.
        if let Some(t) = target
            && self.backend != Backend::Mem
            && self.nodes[t].is_dir()
        {
            let mut cur = od;
            loop {
                if cur == t {
                    return Err(Errno::ENOTEMPTY);
                }
                if cur == ROOT {
                    break;
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

    /// Entries after `cookie`, at most `max`, with MemFs's documented cookies. (For other
    /// backends the oracle uses [`Self::listing`] and POSIX's rules instead.)
    pub fn readdir(&self, id: NodeId, cookie: u64, max: usize) -> R<Vec<Entry>> {
        let n = &self.nodes[id];
        let d = n.dir().ok_or(Errno::ENOTDIR)?;
        if n.nlink == 0 {
            // A removed directory lists nothing (MemFs); Linux's getdents says ENOENT.
            return match self.backend {
                Backend::Mem => Ok(Vec::new()),
                Backend::Host(_) => Err(Errno::ENOENT),
            };
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

    /// Every name in directory `id` now, `.` and `..` included, with its node (empty for
    /// a removed directory, which lists nothing).
    pub fn listing(&self, id: NodeId) -> R<BTreeMap<Vec<u8>, NodeId>> {
        let n = &self.nodes[id];
        let d = n.dir().ok_or(Errno::ENOTDIR)?;
        let mut out = BTreeMap::new();
        if n.nlink == 0 {
            return Ok(out);
        }
        out.insert(b".".to_vec(), id);
        out.insert(b"..".to_vec(), d.parent);
        for (name, &(node, _)) in &d.by_name {
            out.insert(name.clone(), node);
        }
        Ok(out)
    }

    /// Whether user xattrs may live on this node: Linux refuses `user.*` on symlinks and
    /// special files (mapped-xattr stores both as regular files, so there they may).
    fn xattr_capable(&self, id: NodeId) -> R<()> {
        match (self.backend, &self.nodes[id].content) {
            (Backend::Mem, _) => Ok(()),
            (b, Content::Symlink(_) | Content::Special) if !b.mapped() => Err(Errno::EPERM),
            _ => Ok(()),
        }
    }

    pub fn getxattr(&self, id: NodeId, name: &[u8]) -> R<Vec<u8>> {
        if name.is_empty() {
            return Err(Errno::ERANGE);
        }
        if self.xattr_capable(id).is_err() {
            return Err(Errno::ENODATA);
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
        self.xattr_capable(id)?;
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
        self.xattr_capable(id)?;
        self.nodes[id]
            .xattrs
            .remove(name)
            .map(drop)
            .ok_or(Errno::ENODATA)
    }

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

    /// F_GETLK by `owner`: the locks any of which may be reported (none: `Unlock` must
    /// come back), and whether that list holds only zombies' locks (then either answer).
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
        let c = self.conflicts(id, owner, ty, start, end);
        let only_zombies = !c.is_empty() && c.iter().all(|h| self.zombies.contains(&h.owner));
        Ok((c, only_zombies))
    }

    /// An uncertain lock request that was answered `granted`: apply it.
    pub fn force_lock(&mut self, id: NodeId, owner: u64, ty: LockType, start: u64, end: u64) {
        self.set_lock(id, owner, ty, start, end);
    }

    /// Drops every lock of `owner` (its file was closed).
    pub fn release(&mut self, owner: u64) {
        self.zombies.remove(&owner);
        for n in &mut self.nodes {
            n.locks.retain(|h| h.owner != owner);
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

/// The set-id bits a write by an unprivileged user drops from `mode`.
pub fn setid_to_kill(mode: u32) -> u32 {
    let mut kill = mode & S_ISUID;
    if mode & S_ISGID != 0 && mode & S_IXGRP != 0 {
        kill |= S_ISGID;
    }
    kill
}

fn check_access(flags: OpenFlags) -> R<()> {
    if flags.access() == 3 {
        return Err(Errno::EINVAL);
    }
    Ok(())
}
