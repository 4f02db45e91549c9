//! Resolution strictly beneath the export: one component at a time from a directory
//! descriptor, never a path; the parent of a directory; reopening a node through
//! `/proc/self/fd`.
//!
//! - **Lookup** is one `openat2(dirfd, name, O_PATH|O_NOFOLLOW, RESOLVE_BENEATH |
//!   RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)` (plain `openat` with `O_NOFOLLOW` on
//!   kernels without `openat2`). A [`Name`] has no `/` and is not `.` or `..`, so the step
//!   cannot leave `dirfd`; a final symlink yields the symlink itself (never its target).
//!   Reopening a reclaimed node (`reclaim.rs`) is this same step, [`HostFs::lookup_at`].
//! - **Parent** is `openat(dirfd, "..")`, and is then checked to lead back to the export
//!   root by walking up (so a directory moved out of the export on the host is refused
//!   with `EACCES` instead of handing out a node outside it). The root's parent is the
//!   root.
//! - **Reopen** with real flags goes through `/proc/self/fd/N` (as virtiofsd does): the
//!   magic link names the pinned inode, not a path, so a rename cannot swap the file in
//!   between. Only regular files and directories are ever reopened, checked on the node's
//!   type first, so no fifo or device is opened and nothing blocks.

use std::ffi::CStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};

use rustix::fs::{Mode, OFlags, ResolveFlags, fstat, openat, openat2};

use crate::fs::{FsResult, Name};
use crate::protocol::{Errno, OpenFlags};

use super::node::{HostNode, Kind};
use super::{HostFs, errno};

/// The longest `..` chain checked by [`HostFs::parent_fd`] (deeper than `PATH_MAX`
/// allows with one-byte names).
const MAX_DEPTH: usize = 4096;

/// `"/proc/self/fd/N"` without allocating; [`ProcPath::rel`] is the `"N"` tail, relative
/// to an open `/proc/self/fd` directory.
pub(super) struct ProcPath {
    buf: [u8; 32],
}

const PROC_PREFIX: &[u8] = b"/proc/self/fd/";

impl ProcPath {
    pub(super) fn new(fd: RawFd) -> ProcPath {
        let mut buf = [0u8; 32];
        buf[..PROC_PREFIX.len()].copy_from_slice(PROC_PREFIX);
        let mut digits = [0u8; 12];
        let mut n = fd.max(0) as u32;
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        let d = &digits[i..];
        buf[PROC_PREFIX.len()..PROC_PREFIX.len() + d.len()].copy_from_slice(d);
        ProcPath { buf }
    }

    /// The absolute path, for calls with no directory argument (xattrs).
    pub(super) fn abs(&self) -> &CStr {
        CStr::from_bytes_until_nul(&self.buf).expect("NUL-terminated")
    }

    /// The descriptor number, relative to `/proc/self/fd`.
    pub(super) fn rel(&self) -> &CStr {
        CStr::from_bytes_until_nul(&self.buf[PROC_PREFIX.len()..]).expect("NUL-terminated")
    }
}

/// Open flags for reopening a node: only what makes sense on a regular file or directory
/// is kept from the client's (access mode, `O_APPEND`, `O_TRUNC`, `O_NONBLOCK`, `O_DSYNC`,
/// `O_SYNC`, `O_NOATIME`, `O_DIRECTORY`, `O_LARGEFILE`); `O_CREAT`, `O_EXCL`, `O_NOCTTY`,
/// `FASYNC`, `O_CLOEXEC`, `O_PATH`, `O_TMPFILE` and unknown bits are dropped, and so is
/// `O_DIRECT` (the guest's alignment is not the host's; the page cache is used instead).
/// `O_CLOEXEC` is always added. (`O_NOFOLLOW` cannot be: the reopen goes through a magic
/// link, which `O_NOFOLLOW` refuses; the link names the inode itself, not a path.)
pub(super) fn reopen_flags(flags: OpenFlags) -> FsResult<OFlags> {
    if flags.access() == OpenFlags::ACCMODE.0 {
        return Err(Errno::EINVAL);
    }
    let keep = OpenFlags::ACCMODE.0
        | OpenFlags::TRUNC.0
        | OpenFlags::APPEND.0
        | OpenFlags::NONBLOCK.0
        | OpenFlags::DSYNC.0
        | OpenFlags::SYNC.0
        | OpenFlags::NOATIME.0
        | OpenFlags::DIRECTORY.0
        | OpenFlags::LARGEFILE.0;
    Ok(OFlags::from_bits_retain(flags.0 & keep) | OFlags::CLOEXEC)
}

impl HostFs {
    /// Opens `name` in `dir` as an `O_PATH` descriptor without following anything.
    pub(super) fn lookup_fd(&self, dir: &HostNode, name: &Name) -> FsResult<OwnedFd> {
        dir.require_dir()?;
        let d = self.node_fd(dir)?;
        self.lookup_at(d.fd(), name)
    }

    /// [`Self::lookup_fd`] in a directory descriptor: the one way a name is resolved
    /// (lookups, and reopening a reclaimed node).
    pub(super) fn lookup_at(&self, dir: BorrowedFd<'_>, name: &Name) -> FsResult<OwnedFd> {
        let bytes = name.as_bytes();
        // `Name` guarantees this; checked again because everything rests on it.
        if bytes.contains(&b'/') || bytes == b"." || bytes == b".." {
            return Err(Errno::EINVAL);
        }
        let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        if self.has_openat2 {
            let resolve =
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
            for _ in 0..8 {
                match openat2(dir, bytes, flags, Mode::empty(), resolve) {
                    Err(e) if e == rustix::io::Errno::AGAIN => continue,
                    r => return r.map_err(errno),
                }
            }
            return Err(Errno::EAGAIN);
        }
        openat(dir, bytes, flags, Mode::empty()).map_err(errno)
    }

    /// Whether `node` is the export root.
    pub(super) fn is_root(&self, node: &HostNode) -> bool {
        node.id() == self.root.id()
    }

    /// The parent directory of `dir` as an `O_PATH` descriptor, or `None` for the root
    /// (whose parent, for the guest, is itself).
    pub(super) fn parent_fd(&self, dir: &HostNode) -> FsResult<Option<OwnedFd>> {
        dir.require_dir()?;
        if self.is_root(dir) {
            return Ok(None);
        }
        let up = dotdot(self.node_fd(dir)?.fd())?;
        self.check_beneath(up.as_fd())?;
        Ok(Some(up))
    }

    /// `Ok` if walking `..` from `fd` reaches the export root.
    fn check_beneath(&self, fd: BorrowedFd<'_>) -> FsResult<()> {
        let root = self.root.id();
        let st = fstat(fd).map_err(errno)?;
        let mut id = (st.st_dev, st.st_ino);
        let mut cur: Option<OwnedFd> = None;
        for _ in 0..MAX_DEPTH {
            if id == root {
                return Ok(());
            }
            let up = dotdot(cur.as_ref().map_or(fd, |c| c.as_fd()))?;
            let st = fstat(&up).map_err(errno)?;
            let up_id = (st.st_dev, st.st_ino);
            if up_id == id {
                // The host's `/`: the directory is no longer beneath the export.
                return Err(Errno::EACCES);
            }
            id = up_id;
            cur = Some(up);
        }
        Err(Errno::ELOOP)
    }

    /// Reopens a node with real open flags (see the module doc). `ENXIO` for anything but
    /// a regular file or directory, as QEMU answers for special files.
    pub(super) fn reopen(&self, node: &HostNode, flags: OFlags) -> FsResult<OwnedFd> {
        match node.kind() {
            Kind::Reg | Kind::Dir => {}
            Kind::Symlink | Kind::Special => return Err(Errno::ENXIO),
        }
        let fd = self.node_fd(node)?;
        let p = ProcPath::new(fd.raw());
        let flags = flags & !(OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::PATH)
            | OFlags::CLOEXEC;
        openat(&self.proc_fd, p.rel(), flags, Mode::empty()).map_err(errno)
    }

    /// A second `O_PATH` descriptor for the inode an open descriptor refers to (no path
    /// involved, so nothing can be swapped in).
    pub(super) fn path_fd_of(&self, fd: BorrowedFd<'_>) -> FsResult<OwnedFd> {
        use std::os::fd::AsRawFd;
        let p = ProcPath::new(fd.as_raw_fd());
        openat(
            &self.proc_fd,
            p.rel(),
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno)
    }
}

fn dotdot(fd: BorrowedFd<'_>) -> FsResult<OwnedFd> {
    openat(
        fd,
        c"..",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(errno)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_paths() {
        let p = ProcPath::new(0);
        assert_eq!(p.abs(), c"/proc/self/fd/0");
        assert_eq!(p.rel(), c"0");
        let p = ProcPath::new(1234567);
        assert_eq!(p.abs(), c"/proc/self/fd/1234567");
        assert_eq!(p.rel(), c"1234567");
    }

    #[test]
    fn open_flags_are_whitelisted() {
        let f = OpenFlags::RDWR
            | OpenFlags::CREAT
            | OpenFlags::EXCL
            | OpenFlags::DIRECT
            | OpenFlags::APPEND
            | OpenFlags::NOFOLLOW
            | OpenFlags(0o10000000); // O_PATH
        let o = reopen_flags(f).unwrap();
        assert_eq!(o, OFlags::RDWR | OFlags::APPEND | OFlags::CLOEXEC);
        assert_eq!(reopen_flags(OpenFlags(3)), Err(Errno::EINVAL));
    }
}
