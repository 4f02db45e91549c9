//! One inode: its attributes, its contents and the byte-range locks held on it.

use std::collections::BTreeMap;

use super::data::Data;
use super::dir::Dir;
use super::locks::Locks;
use crate::protocol::{Attr, GetattrMask, Qid, QidType, Timespec};

pub(crate) const S_IFMT: u32 = 0o170_000;
pub(crate) const S_IFSOCK: u32 = 0o140_000;
pub(crate) const S_IFLNK: u32 = 0o120_000;
pub(crate) const S_IFREG: u32 = 0o100_000;
pub(crate) const S_IFBLK: u32 = 0o060_000;
pub(crate) const S_IFDIR: u32 = 0o040_000;
pub(crate) const S_IFCHR: u32 = 0o020_000;
pub(crate) const S_IFIFO: u32 = 0o010_000;
pub(crate) const S_ISGID: u32 = 0o2000;
/// Permission bits a guest may set (including setuid, setgid, sticky).
pub(crate) const PERM_MASK: u32 = 0o7777;

/// Bytes charged per inode on top of its contents: roughly its own size in memory, so that
/// capacity bounds the host memory a guest can claim even with empty files.
pub const INODE_COST: u64 = 256;

/// Size a directory reports (it has no byte contents; ext4 says 4096 for small ones).
const DIR_SIZE: u64 = 4096;

/// Linux `makedev`: the 64-bit `dev_t` encoding of glibc.
pub fn makedev(major: u32, minor: u32) -> u64 {
    let (major, minor) = (u64::from(major), u64::from(minor));
    ((major & 0xffff_f000) << 32)
        | ((major & 0xfff) << 8)
        | ((minor & 0xffff_ff00) << 12)
        | (minor & 0xff)
}

/// What an inode holds, by file type.
#[derive(Debug)]
pub(crate) enum Content {
    File(Data),
    Dir(Dir),
    Symlink(Vec<u8>),
    /// Fifos, sockets and device nodes: only attributes.
    Special,
}

#[derive(Debug)]
pub(crate) struct Inode {
    pub ino: u64,
    /// Type bits and permission bits, as `st_mode`.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Directory entries naming this inode (for directories: 2 + subdirectories; 0 once
    /// removed).
    pub nlink: u64,
    pub rdev: u64,
    pub atime: Timespec,
    pub mtime: Timespec,
    pub ctime: Timespec,
    pub btime: Timespec,
    /// Bumped whenever contents, size or mtime change: the qid version and
    /// `data_version`.
    pub version: u64,
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    pub content: Content,
    /// Live `MemNode` handles (each `MemFile` holds one). The inode is freed when this and
    /// `nlink` are both 0.
    pub handles: u64,
    pub locks: Locks,
}

impl Inode {
    pub(super) fn new(
        ino: u64,
        mode: u32,
        uid: u32,
        gid: u32,
        content: Content,
        now: Timespec,
    ) -> Self {
        Inode {
            ino,
            mode,
            uid,
            gid,
            nlink: 0,
            rdev: 0,
            atime: now,
            mtime: now,
            ctime: now,
            btime: now,
            version: 0,
            xattrs: BTreeMap::new(),
            content,
            handles: 0,
            locks: Locks::default(),
        }
    }

    pub(super) fn file_type(&self) -> u32 {
        self.mode & S_IFMT
    }

    pub(super) fn is_dir(&self) -> bool {
        matches!(self.content, Content::Dir(_))
    }

    pub(super) fn dir(&self) -> Option<&Dir> {
        match &self.content {
            Content::Dir(d) => Some(d),
            _ => None,
        }
    }

    pub(super) fn dir_mut(&mut self) -> Option<&mut Dir> {
        match &mut self.content {
            Content::Dir(d) => Some(d),
            _ => None,
        }
    }

    pub(super) fn size(&self) -> u64 {
        match &self.content {
            Content::File(d) => d.size(),
            Content::Dir(_) => DIR_SIZE,
            Content::Symlink(t) => t.len() as u64,
            Content::Special => 0,
        }
    }

    /// Bytes this inode charges against capacity: [`INODE_COST`], contents and xattrs
    /// (the entries naming it are charged to the directories holding them).
    pub(super) fn charged(&self) -> u64 {
        let content = match &self.content {
            Content::File(d) => d.pages() * super::data::PAGE,
            Content::Dir(d) => d.cost(),
            Content::Symlink(t) => t.len() as u64,
            Content::Special => 0,
        };
        INODE_COST + content + self.xattr_bytes()
    }

    pub(super) fn xattr_bytes(&self) -> u64 {
        self.xattrs
            .iter()
            .map(|(k, v)| (k.len() + v.len()) as u64)
            .sum()
    }

    pub(super) fn qid(&self) -> Qid {
        let ty = match self.file_type() {
            S_IFDIR => QidType::DIR,
            S_IFLNK => QidType::SYMLINK,
            _ => QidType::FILE,
        };
        Qid {
            ty,
            version: self.version as u32,
            path: self.ino,
        }
    }

    /// The `DT_*` type of a directory entry naming this inode.
    pub(super) fn dtype(&self) -> u8 {
        match self.file_type() {
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

    pub(super) fn attr(&self) -> Attr {
        let size = self.size();
        Attr {
            valid: GetattrMask::ALL,
            qid: self.qid(),
            mode: self.mode,
            uid: self.uid,
            gid: self.gid,
            nlink: self.nlink,
            rdev: self.rdev,
            size,
            blksize: 4096,
            blocks: size.div_ceil(512),
            atime: self.atime,
            mtime: self.mtime,
            ctime: self.ctime,
            btime: self.btime,
            generation: 0,
            data_version: self.version,
        }
    }

    /// Contents changed: mtime and ctime are `now`, the version moves on.
    pub(super) fn modified(&mut self, now: Timespec) {
        self.mtime = now;
        self.ctime = now;
        self.version += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::makedev;

    #[test]
    fn makedev_matches_glibc() {
        assert_eq!(makedev(8, 1), 0x801);
        assert_eq!(makedev(1, 3), 0x103);
        assert_eq!(makedev(0x1234, 0x56789), 0x0000_1000_5672_3489);
    }
}
