//! Typed fields of 9P2000.L messages.
//!
//! Numbers that mean something get a type, so a `Fid` cannot be passed where a `Tag` is
//! wanted and flag words print with their names in traces.

use std::fmt;

/// A file identifier chosen by the client, naming a server-side file reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fid(pub u32);

impl Fid {
    /// The "no fid" value (`~0`), used for `afid` when there is no authentication.
    pub const NOFID: Fid = Fid(u32::MAX);
}

/// A request identifier chosen by the client; unique among its requests in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tag(pub u16);

impl Tag {
    /// The tag of `Tversion`, which is outside the normal tag space.
    pub const NOTAG: Tag = Tag(u16::MAX);
}

/// The `n_uname` "no uid" value.
pub const NONUNAME: u32 = u32::MAX;

/// The type byte of a [`Qid`]: the kind of file it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct QidType(pub u8);

impl QidType {
    /// A directory.
    pub const DIR: QidType = QidType(0x80);
    /// An append-only file.
    pub const APPEND: QidType = QidType(0x40);
    /// A file opened exclusively.
    pub const EXCL: QidType = QidType(0x20);
    /// A mount point.
    pub const MOUNT: QidType = QidType(0x10);
    /// An authentication file.
    pub const AUTH: QidType = QidType(0x08);
    /// A file not backed up (temporary).
    pub const TMP: QidType = QidType(0x04);
    /// A symbolic link.
    pub const SYMLINK: QidType = QidType(0x02);
    /// A hard link (unused by Linux).
    pub const LINK: QidType = QidType(0x01);
    /// A plain file (no bit set).
    pub const FILE: QidType = QidType(0x00);
}

/// The server's unique identity of a file: `path` is unique per file for the life of the
/// export, `version` changes when the file's contents change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Qid {
    /// What kind of file this is.
    pub ty: QidType,
    /// Changes when the file's contents change.
    pub version: u32,
    /// Unique per file for the life of the export.
    pub path: u64,
}

/// Wire size of a qid.
pub const QID_LEN: usize = 13;

/// A point in time as 9P2000.L carries it: seconds and nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timespec {
    /// Seconds since the epoch.
    pub sec: u64,
    /// Nanoseconds within the second.
    pub nsec: u64,
}

macro_rules! flag_word {
    ($(#[$doc:meta])* $name:ident($int:ty) { $($flag:ident = $val:expr),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
        pub struct $name(pub $int);

        impl $name {
            $(
                #[doc = concat!("The `", stringify!($flag), "` bits.")]
                pub const $flag: $name = $name($val);
            )*

            /// Whether every bit of `other` is set here.
            pub fn contains(self, other: $name) -> bool {
                self.0 & other.0 == other.0
            }

            /// Whether any bit of `other` is set here.
            pub fn intersects(self, other: $name) -> bool {
                self.0 & other.0 != 0
            }
        }

        impl std::ops::BitOr for $name {
            type Output = $name;
            fn bitor(self, rhs: $name) -> $name {
                $name(self.0 | rhs.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:#x})", stringify!($name), self.0)
            }
        }
    };
}

flag_word! {
    /// Which fields of [`Attr`] a `Tgetattr` asks for and an `Rgetattr` fills.
    GetattrMask(u64) {
        MODE = 0x1, NLINK = 0x2, UID = 0x4, GID = 0x8, RDEV = 0x10, ATIME = 0x20,
        MTIME = 0x40, CTIME = 0x80, INO = 0x100, SIZE = 0x200, BLOCKS = 0x400,
        BTIME = 0x800, GEN = 0x1000, DATA_VERSION = 0x2000,
        BASIC = 0x7ff, ALL = 0x3fff,
    }
}

flag_word! {
    /// Which fields of a [`SetAttr`] are to be applied.
    SetattrMask(u32) {
        MODE = 0x1, UID = 0x2, GID = 0x4, SIZE = 0x8, ATIME = 0x10, MTIME = 0x20,
        CTIME = 0x40, ATIME_SET = 0x80, MTIME_SET = 0x100,
    }
}

flag_word! {
    /// `Tlopen`/`Tlcreate` flags: the Linux x86 `O_*` values, which 9P2000.L adopts as its
    /// own (`P9_DOTL_*`).
    OpenFlags(u32) {
        RDONLY = 0, WRONLY = 0o1, RDWR = 0o2, ACCMODE = 0o3, CREAT = 0o100, EXCL = 0o200,
        NOCTTY = 0o400, TRUNC = 0o1000, APPEND = 0o2000, NONBLOCK = 0o4000,
        DSYNC = 0o10000, FASYNC = 0o20000, DIRECT = 0o40000, LARGEFILE = 0o100000,
        DIRECTORY = 0o200000, NOFOLLOW = 0o400000, NOATIME = 0o1000000,
        CLOEXEC = 0o2000000, SYNC = 0o4010000,
    }
}

impl OpenFlags {
    /// The access mode (`RDONLY`, `WRONLY` or `RDWR`; 3 is invalid).
    pub fn access(self) -> u32 {
        self.0 & Self::ACCMODE.0
    }

    /// Whether the open allows reading.
    pub fn readable(self) -> bool {
        matches!(self.access(), 0 | 2)
    }

    /// Whether the open allows writing.
    pub fn writable(self) -> bool {
        matches!(self.access(), 1 | 2)
    }
}

flag_word! {
    /// `Tlock` flags.
    LockFlags(u32) { BLOCK = 1, RECLAIM = 2 }
}

/// `Tunlinkat` flag: remove a directory (`AT_REMOVEDIR`).
pub const AT_REMOVEDIR: u32 = 0x200;

/// File attributes as `Rgetattr` returns them. `valid` says which fields mean something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Attr {
    /// Which of the fields below mean something.
    pub valid: GetattrMask,
    /// The file's qid.
    pub qid: Qid,
    /// Type and permission bits (`st_mode`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Hard links.
    pub nlink: u64,
    /// Device number of a device file.
    pub rdev: u64,
    /// Bytes.
    pub size: u64,
    /// Preferred I/O block size.
    pub blksize: u64,
    /// 512-byte blocks allocated.
    pub blocks: u64,
    /// Last access.
    pub atime: Timespec,
    /// Last modification.
    pub mtime: Timespec,
    /// Last status change.
    pub ctime: Timespec,
    /// Creation (birth).
    pub btime: Timespec,
    /// Inode generation.
    pub generation: u64,
    /// Data version.
    pub data_version: u64,
}

/// What a `Tsetattr` changes; only the fields named in `valid` count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SetAttr {
    /// Which of the fields below to apply.
    pub valid: SetattrMask,
    /// New permission bits.
    pub mode: u32,
    /// New owner.
    pub uid: u32,
    /// New group.
    pub gid: u32,
    /// New size (truncate or extend).
    pub size: u64,
    /// New access time (with `ATIME_SET`; else now).
    pub atime: Timespec,
    /// New modification time (with `MTIME_SET`; else now).
    pub mtime: Timespec,
}

/// Filesystem statistics, as `Rstatfs` returns them (Linux `struct statfs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatFs {
    /// Filesystem type magic (`f_type`).
    pub fs_type: u32,
    /// Block size.
    pub bsize: u32,
    /// Blocks in all.
    pub blocks: u64,
    /// Free blocks.
    pub bfree: u64,
    /// Free blocks an unprivileged user may use.
    pub bavail: u64,
    /// Inodes in all.
    pub files: u64,
    /// Free inodes.
    pub ffree: u64,
    /// Filesystem id.
    pub fsid: u64,
    /// Longest name.
    pub namelen: u32,
}

/// A fieldless enum that travels as one byte: the enum, its wire numbers, and `from_u8`
/// back from them (the one place a variant's number is written).
macro_rules! byte_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $v:ident = $n:literal,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $v = $n,)*
        }

        impl $name {
            /// The value of its wire number, if it is one.
            pub fn from_u8(v: u8) -> Option<$name> {
                match v {
                    $($n => Some($name::$v),)*
                    _ => None,
                }
            }
        }
    };
}

byte_enum! {
    /// A byte-range lock's kind.
    LockType {
        /// A shared (read) lock, `F_RDLCK`.
        Read = 0,
        /// An exclusive (write) lock, `F_WRLCK`.
        Write = 1,
        /// No lock: release the range, `F_UNLCK`.
        Unlock = 2,
    }
}

byte_enum! {
    /// The outcome of a `Tlock`.
    LockStatus {
        /// The lock is held.
        Success = 0,
        /// A conflicting lock is held; the client may retry.
        Blocked = 1,
        /// The request failed.
        Error = 2,
        /// The server is in its grace period.
        Grace = 3,
    }
}

/// A 9P string: a `u16` length and that many bytes. Not necessarily UTF-8: Linux file names
/// are bytes, and the server must carry them faithfully.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct P9String(pub Vec<u8>);

impl P9String {
    /// The string's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The string as UTF-8, if it is.
    pub fn to_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }
}

impl From<&str> for P9String {
    fn from(s: &str) -> Self {
        P9String(s.as_bytes().to_vec())
    }
}

impl From<&[u8]> for P9String {
    fn from(s: &[u8]) -> Self {
        P9String(s.to_vec())
    }
}

impl fmt::Debug for P9String {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0.escape_ascii())
    }
}

/// One directory entry of `Rreaddir`. `offset` is the cookie to pass to the next `Treaddir`
/// to continue after this entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dirent {
    /// The entry's qid.
    pub qid: Qid,
    /// The cookie to pass to the next `Treaddir` to continue after this entry.
    pub offset: u64,
    /// `DT_*` file type.
    pub ty: u8,
    /// The entry's name.
    pub name: P9String,
}

/// Bytes of a [`Dirent`] but its name's: `qid[13] offset[8] type[1]` and the name's
/// length `[2]`.
pub const DIRENT_FIXED_LEN: usize = QID_LEN + 8 + 1 + 2;

impl Dirent {
    /// Bytes this entry takes in an `Rreaddir` payload.
    pub fn wire_len(&self) -> usize {
        DIRENT_FIXED_LEN + self.name.0.len()
    }
}

/// Every newtype that travels as its inner integer, listed once: `$m!` is applied to the
/// list, to derive its wire form and its sampling.
macro_rules! wire_newtypes {
    ($m:ident) => {
        $m!(
            Fid(u32),
            Tag(u16),
            QidType(u8),
            Errno(u32),
            GetattrMask(u64),
            SetattrMask(u32),
            OpenFlags(u32),
            LockFlags(u32)
        );
    };
}

/// Every struct that travels as its fields in wire order, each field list written once:
/// `$m!` is applied to each, to derive its wire form and its sampling, so they cannot drift
/// apart from each other or from the trace form.
macro_rules! wire_structs {
    ($m:ident) => {
        $m!(Qid { ty, version, path });
        $m!(Timespec { sec, nsec });
        $m!(Dirent {
            qid,
            offset,
            ty,
            name
        });
        $crate::protocol::types::traced_wire_structs!($m);
    };
}

/// The wire structs whose trace form is their fields (`{name=value ...}`); qids, times and
/// directory entries have compact forms of their own.
macro_rules! traced_wire_structs {
    ($m:ident) => {
        $m!(Attr {
            valid,
            qid,
            mode,
            uid,
            gid,
            nlink,
            rdev,
            size,
            blksize,
            blocks,
            atime,
            mtime,
            ctime,
            btime,
            generation,
            data_version
        });
        $m!(SetAttr {
            valid,
            mode,
            uid,
            gid,
            size,
            atime,
            mtime
        });
        $m!(StatFs {
            fs_type,
            bsize,
            blocks,
            bfree,
            bavail,
            files,
            ffree,
            fsid,
            namelen
        });
    };
}

pub(crate) use {traced_wire_structs, wire_newtypes, wire_structs};
