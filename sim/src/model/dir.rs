//! The model's entries: making files of every kind (ownership and the set-group-ID
//! directory rule), links, unlinks, renames (`rename(2)`'s rules), symlink targets and
//! directory listings (MemFs's cookies).

use std::collections::BTreeMap;

use co9p::protocol::{Errno, OpenFlags};

use super::file::check_access;
use super::{
    Backend, Content, Dir, Entry, Maker, Model, Node, NodeId, R, ROOT, S_IFBLK, S_IFCHR, S_IFDIR,
    S_IFIFO, S_IFLNK, S_IFMT, S_IFREG, S_IFSOCK, S_ISGID,
};

impl Model {
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
        if is_dir && self.backend == Backend::Mem && parent.nlink >= self.max_links {
            return Err(Errno::EMLINK);
        }
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
            writes: 0,
            seen_version: None,
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
        if self.backend == Backend::Mem && t.nlink >= self.max_links {
            return Err(Errno::EMLINK);
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
        // A directory moved into another one adds a link to it, unless it replaces one.
        if target.is_none()
            && src_is_dir
            && od != nd
            && self.backend == Backend::Mem
            && self.nodes[nd].nlink >= self.max_links
        {
            return Err(Errno::EMLINK);
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
}
