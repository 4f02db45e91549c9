//! The namespace: lookup, creation, hard links, unlink and rename with POSIX rules, and
//! directory listing.

use super::dir::{SEQ_DOT, SEQ_DOTDOT, entry_cost};
use super::inode::INODE_COST;
use super::inode::{Content, Inode, S_ISGID};
use super::state::{ROOT_INO, State};
use crate::fs::{Creds, DirEntry, FsResult, Name};
use crate::protocol::{Errno, Timespec};

/// What a new inode is to be.
pub(crate) struct NewInode {
    /// Full `st_mode`: type and permission bits.
    pub mode: u32,
    pub rdev: u64,
    pub content: Content,
}

impl State {
    pub(super) fn lookup(&self, dir: u64, name: &Name) -> FsResult<u64> {
        self.dir(dir)?.get(name.as_bytes()).ok_or(Errno::ENOENT)
    }

    /// A directory's parent (`ENOENT` once it was removed).
    pub(super) fn parent(&self, dir: u64) -> FsResult<u64> {
        let inode = self.get(dir)?;
        let d = inode.dir().ok_or(Errno::ENOTDIR)?;
        if inode.nlink == 0 {
            return Err(Errno::ENOENT);
        }
        Ok(d.parent)
    }

    /// Creates `name` in `dir`. In a setgid directory the new inode takes the directory's
    /// group, and a new subdirectory inherits the setgid bit (as Linux does).
    pub(super) fn make(
        &mut self,
        dir: u64,
        name: &Name,
        new: NewInode,
        creds: Creds,
        now: Timespec,
    ) -> FsResult<u64> {
        let name = name.as_bytes();
        if self.live_dir(dir)?.get(name).is_some() {
            return Err(Errno::EEXIST);
        }
        let is_dir = matches!(new.content, Content::Dir(_));
        let parent = self.get(dir)?;
        if is_dir && parent.nlink >= self.limits.max_links {
            return Err(Errno::EMLINK);
        }
        let setgid = parent.mode & S_ISGID != 0;
        let gid = if setgid { parent.gid } else { creds.gid };
        let mode = if is_dir && setgid {
            new.mode | S_ISGID
        } else {
            new.mode
        };
        self.check_inode_room()?;
        let content_bytes = match &new.content {
            Content::Symlink(t) => t.len() as u64,
            _ => 0,
        };
        self.charge(INODE_COST + entry_cost(name) + content_bytes)?;
        let ino = self.alloc(|ino| {
            let mut inode = Inode::new(ino, mode, creds.uid, gid, new.content, now);
            inode.rdev = new.rdev;
            inode.nlink = if is_dir { 2 } else { 1 };
            inode
        });
        let parent = self.get_mut(dir)?;
        if let Some(d) = parent.dir_mut() {
            d.insert(name, ino);
        }
        parent.modified(now);
        if is_dir {
            parent.nlink += 1;
        }
        Ok(ino)
    }

    /// Adds the name `dir/name` for `target` (not a directory: `EPERM`).
    pub(super) fn link(
        &mut self,
        target: u64,
        dir: u64,
        name: &Name,
        now: Timespec,
    ) -> FsResult<()> {
        let name = name.as_bytes();
        let t = self.get(target)?;
        if t.is_dir() {
            return Err(Errno::EPERM);
        }
        if t.nlink == 0 {
            return Err(Errno::ENOENT);
        }
        if t.nlink >= self.limits.max_links {
            return Err(Errno::EMLINK);
        }
        if self.live_dir(dir)?.get(name).is_some() {
            return Err(Errno::EEXIST);
        }
        self.charge(entry_cost(name))?;
        let parent = self.get_mut(dir)?;
        if let Some(d) = parent.dir_mut() {
            d.insert(name, target);
        }
        parent.modified(now);
        let t = self.get_mut(target)?;
        t.nlink += 1;
        t.ctime = now;
        Ok(())
    }

    /// `Ok` if `dir/name` is `ino`; `ESTALE` if it is another inode, `ENOENT` if absent.
    pub(super) fn expect_entry(&self, dir: u64, name: &Name, ino: u64) -> FsResult<()> {
        match self.dir(dir)?.get(name.as_bytes()) {
            Some(found) if found == ino => Ok(()),
            Some(_) => Err(Errno::ESTALE),
            None => Err(Errno::ENOENT),
        }
    }

    /// Removes `dir/name`: `rmdir` removes only empty directories, and only directories.
    pub(super) fn unlink(
        &mut self,
        dir: u64,
        name: &Name,
        rmdir: bool,
        now: Timespec,
    ) -> FsResult<()> {
        let name = name.as_bytes();
        let ino = self.dir(dir)?.get(name).ok_or(Errno::ENOENT)?;
        let victim = self.get(ino)?;
        match (victim.dir(), rmdir) {
            (Some(_), false) => return Err(Errno::EISDIR),
            (None, true) => return Err(Errno::ENOTDIR),
            (Some(d), true) if !d.is_empty() => return Err(Errno::ENOTEMPTY),
            _ => {}
        }
        self.dir_mut(dir)?.remove(name);
        self.uncharge(entry_cost(name));
        self.get_mut(dir)?.modified(now);
        self.drop_link(dir, ino, now)?;
        Ok(())
    }

    /// `ino` lost its name in `dir`: fix link counts and free it if nothing holds it.
    fn drop_link(&mut self, dir: u64, ino: u64, now: Timespec) -> FsResult<()> {
        let victim = self.get_mut(ino)?;
        victim.ctime = now;
        if victim.is_dir() {
            victim.nlink = 0;
            self.get_mut(dir)?.nlink -= 1;
        } else {
            victim.nlink -= 1;
        }
        self.maybe_free(ino);
        Ok(())
    }

    /// Renames `old_dir/old_name` to `new_dir/new_name` with POSIX rules: a file may
    /// replace a file, a directory an empty directory; the same inode on both sides is a
    /// no-op; a directory cannot move into its own subtree.
    pub(super) fn rename(
        &mut self,
        old_dir: u64,
        old_name: &Name,
        new_dir: u64,
        new_name: &Name,
        now: Timespec,
    ) -> FsResult<()> {
        let (old_name, new_name) = (old_name.as_bytes(), new_name.as_bytes());
        let src = self.dir(old_dir)?.get(old_name).ok_or(Errno::ENOENT)?;
        let target = self.live_dir(new_dir)?.get(new_name);
        if target == Some(src) {
            return Ok(());
        }
        let src_is_dir = self.get(src)?.is_dir();
        if src_is_dir && old_dir != new_dir {
            let mut cur = new_dir;
            while cur != ROOT_INO {
                if cur == src {
                    return Err(Errno::EINVAL);
                }
                cur = self.dir(cur)?.parent;
            }
        }
        match target {
            Some(t) => match (src_is_dir, self.get(t)?.dir()) {
                (true, None) => return Err(Errno::ENOTDIR),
                (false, Some(_)) => return Err(Errno::EISDIR),
                (true, Some(d)) if !d.is_empty() => return Err(Errno::ENOTEMPTY),
                _ => {}
            },
            None if src_is_dir
                && old_dir != new_dir
                && self.get(new_dir)?.nlink >= self.limits.max_links =>
            {
                return Err(Errno::EMLINK);
            }
            None => {}
        }
        let freed = entry_cost(old_name) + target.map_or(0, |_| entry_cost(new_name));
        if entry_cost(new_name) > freed {
            self.check_room(entry_cost(new_name) - freed)?;
        }

        // Checked; now apply.
        self.dir_mut(old_dir)?.remove(old_name);
        self.uncharge(entry_cost(old_name));
        if let Some(t) = target {
            self.dir_mut(new_dir)?.remove(new_name);
            self.uncharge(entry_cost(new_name));
            self.drop_link(new_dir, t, now)?;
        }
        self.dir_mut(new_dir)?.insert(new_name, src);
        self.used += entry_cost(new_name);
        if src_is_dir && old_dir != new_dir {
            self.get_mut(old_dir)?.nlink -= 1;
            self.get_mut(new_dir)?.nlink += 1;
            self.dir_mut(src)?.parent = new_dir;
        }
        self.get_mut(old_dir)?.modified(now);
        self.get_mut(new_dir)?.modified(now);
        self.get_mut(src)?.ctime = now;
        Ok(())
    }

    /// Up to `max` entries of `dir` after `cookie` (see [`super::dir`]). A removed
    /// directory lists nothing, as on Linux.
    pub(super) fn readdir(&self, dir: u64, cookie: u64, max: usize) -> FsResult<Vec<DirEntry>> {
        let inode = self.get(dir)?;
        let d = inode.dir().ok_or(Errno::ENOTDIR)?;
        let mut out = Vec::new();
        if inode.nlink == 0 {
            return Ok(out);
        }
        let dots = [
            (SEQ_DOT, &b"."[..], dir),
            (SEQ_DOTDOT, &b".."[..], d.parent),
        ];
        let dots = dots.into_iter().filter(|&(seq, _, _)| seq > cookie);
        for (seq, name, ino) in dots.chain(d.after(cookie.max(SEQ_DOTDOT))).take(max) {
            let entry = self.get(ino)?;
            out.push(DirEntry {
                qid: entry.qid(),
                next: seq,
                ty: entry.dtype(),
                name: name.to_vec(),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::mem::Limits;
    use crate::fs::mem::dir::Dir;
    use crate::fs::mem::inode::S_IFDIR;

    fn dir() -> NewInode {
        NewInode {
            mode: S_IFDIR | 0o755,
            rdev: 0,
            content: Content::Dir(Dir::new(ROOT_INO)),
        }
    }

    #[test]
    fn directory_link_counts_follow_subdirectories() {
        let mut st = State::new(Limits::default(), None);
        let now = st.now();
        let a = Name::new(b"a").unwrap();
        let ino = st.make(ROOT_INO, &a, dir(), Creds::default(), now).unwrap();
        assert_eq!(st.get(ROOT_INO).unwrap().nlink, 3);
        assert_eq!(st.get(ino).unwrap().nlink, 2);
        st.unlink(ROOT_INO, &a, true, now).unwrap();
        assert_eq!(st.get(ROOT_INO).unwrap().nlink, 2);
        assert!(st.get(ino).is_err(), "freed: no name, no handle");
        assert_eq!(st.used, INODE_COST, "the root only");
    }
}
