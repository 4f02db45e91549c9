//! Security models (QEMU's `-virtfs security_model=`) and the mapped-xattr metadata.
//!
//! - [`SecurityModel::Passthrough`]: the guest's uid, gid and mode are applied to the host
//!   files (`fchownat`, `chmod`); device nodes are real. Needs root for most of it, and
//!   trusts the guest with host ownership.
//! - [`SecurityModel::MappedXattr`]: host files stay owned by the server, with modes
//!   `0600` (files) and `0700` (directories); what the guest set is kept in the xattrs
//!   `user.virtfs.uid`, `user.virtfs.gid`, `user.virtfs.mode` and `user.virtfs.rdev`
//!   (QEMU's names and encodings: little-endian 32-bit, rdev 64-bit). Fifos, sockets and
//!   device nodes are stored as empty regular files with the type in `user.virtfs.mode`;
//!   **symlinks are stored as regular files holding the target** (as QEMU does), so the
//!   host never has a guest-made symlink to follow. These xattrs are invisible to the
//!   guest (see `xattr.rs`).
//! - [`SecurityModel::None`]: like passthrough, but failures to change ownership are
//!   ignored. Device nodes need `CAP_MKNOD` (EPERM otherwise); fifos and sockets are fine.

use std::ffi::CStr;
use std::fmt;
use std::os::fd::BorrowedFd;
use std::str::FromStr;

use rustix::fs::{XattrFlags, fsetxattr, getxattr, setxattr};

use crate::fs::FsResult;
use crate::protocol::Errno;

use super::errno;

/// How guest ownership and modes map onto host files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SecurityModel {
    /// The guest's uid, gid and mode are applied to the host files.
    Passthrough,
    /// What the guest sets is kept in `user.virtfs.*` xattrs (QEMU's mapped-xattr).
    MappedXattr,
    #[default]
    /// Like passthrough, but failures to change ownership are ignored.
    None,
}

impl FromStr for SecurityModel {
    type Err = String;
    /// `passthrough`, `mapped-xattr` (or QEMU's alias `mapped`), `none`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "passthrough" => Ok(SecurityModel::Passthrough),
            "mapped-xattr" | "mapped" => Ok(SecurityModel::MappedXattr),
            "none" => Ok(SecurityModel::None),
            _ => Err(format!(
                "unknown security model {s:?} (expected passthrough, mapped-xattr or none)"
            )),
        }
    }
}

impl fmt::Display for SecurityModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SecurityModel::Passthrough => "passthrough",
            SecurityModel::MappedXattr => "mapped-xattr",
            SecurityModel::None => "none",
        })
    }
}

pub(super) const XATTR_PREFIX: &[u8] = b"user.virtfs.";
const UID: &CStr = c"user.virtfs.uid";
const GID: &CStr = c"user.virtfs.gid";
const MODE: &CStr = c"user.virtfs.mode";
const RDEV: &CStr = c"user.virtfs.rdev";

/// Host mode of files and directories made under mapped-xattr (QEMU's `SM_LOCAL_*`).
pub(super) const MAPPED_FILE_MODE: u32 = 0o600;
pub(super) const MAPPED_DIR_MODE: u32 = 0o700;

/// What mapped-xattr keeps for one file; `None` where the xattr is absent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Mapped {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub mode: Option<u32>,
    pub rdev: Option<u64>,
}

impl Mapped {
    /// Metadata of a file the guest makes.
    pub(super) fn new(uid: u32, gid: u32, mode: u32, rdev: Option<u64>) -> Mapped {
        Mapped {
            uid: Some(uid),
            gid: Some(gid),
            mode: Some(mode),
            rdev,
        }
    }

    /// `st_mode` as the guest sees it: the stored mode (its type bits too, when set).
    pub(super) fn mode_over(&self, host_mode: u32) -> u32 {
        match self.mode {
            Some(m) if m & libc::S_IFMT != 0 => m,
            Some(m) => host_mode & libc::S_IFMT | m & 0o7777,
            None => host_mode,
        }
    }

    fn pairs(&self) -> [(&'static CStr, Option<Vec<u8>>); 4] {
        [
            (UID, self.uid.map(|v| v.to_le_bytes().to_vec())),
            (GID, self.gid.map(|v| v.to_le_bytes().to_vec())),
            (MODE, self.mode.map(|v| v.to_le_bytes().to_vec())),
            (RDEV, self.rdev.map(|v| v.to_le_bytes().to_vec())),
        ]
    }
}

/// Reads the mapped metadata through a path that names the file itself (a
/// `/proc/self/fd/N` magic link).
pub(super) fn read_mapped(path: &CStr) -> FsResult<Mapped> {
    fn get<const N: usize>(path: &CStr, name: &CStr) -> FsResult<Option<[u8; N]>> {
        let mut buf = [0u8; N];
        match getxattr(path, name, &mut buf[..]) {
            Ok(n) if n == N => Ok(Some(buf)),
            Ok(_) => Ok(None),
            Err(e) if e == rustix::io::Errno::NODATA || e == rustix::io::Errno::RANGE => Ok(None),
            Err(e) if e == rustix::io::Errno::OPNOTSUPP => Ok(None),
            Err(e) => Err(errno(e)),
        }
    }
    Ok(Mapped {
        uid: get::<4>(path, UID)?.map(u32::from_le_bytes),
        gid: get::<4>(path, GID)?.map(u32::from_le_bytes),
        mode: get::<4>(path, MODE)?.map(u32::from_le_bytes),
        rdev: get::<8>(path, RDEV)?.map(u64::from_le_bytes),
    })
}

/// Only the stored mode (one `getxattr`), for qid types and opening checks.
pub(super) fn read_mapped_mode(path: &CStr) -> FsResult<Option<u32>> {
    let mut buf = [0u8; 4];
    match getxattr(path, MODE, &mut buf[..]) {
        Ok(4) => Ok(Some(u32::from_le_bytes(buf))),
        Ok(_) => Ok(None),
        Err(e)
            if e == rustix::io::Errno::NODATA
                || e == rustix::io::Errno::RANGE
                || e == rustix::io::Errno::OPNOTSUPP =>
        {
            Ok(None)
        }
        Err(e) => Err(errno(e)),
    }
}

/// Stores the fields that are `Some` on an open descriptor.
pub(super) fn write_mapped_fd(fd: BorrowedFd<'_>, m: &Mapped) -> FsResult<()> {
    for (name, value) in m.pairs() {
        if let Some(v) = value {
            fsetxattr(fd, name, &v, XattrFlags::empty()).map_err(errno)?;
        }
    }
    Ok(())
}

/// Stores the fields that are `Some` through a `/proc/self/fd/N` path.
pub(super) fn write_mapped_path(path: &CStr, m: &Mapped) -> FsResult<()> {
    for (name, value) in m.pairs() {
        if let Some(v) = value {
            setxattr(path, name, &v, XattrFlags::empty()).map_err(errno)?;
        }
    }
    Ok(())
}

/// Whether the guest may never see or touch this xattr name (our metadata).
pub(super) fn is_private_xattr(name: &[u8]) -> bool {
    name.starts_with(XATTR_PREFIX)
}

/// `EOPNOTSUPP` unless this model can store guest metadata on a file of this host type.
pub(super) fn mapped_capable(kind: super::node::Kind) -> FsResult<()> {
    match kind {
        super::node::Kind::Reg | super::node::Kind::Dir => Ok(()),
        // user.* xattrs are refused by Linux on symlinks and special files.
        _ => Err(Errno::EOPNOTSUPP),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_qemu_names() {
        assert_eq!("passthrough".parse(), Ok(SecurityModel::Passthrough));
        assert_eq!("mapped-xattr".parse(), Ok(SecurityModel::MappedXattr));
        assert_eq!("mapped".parse(), Ok(SecurityModel::MappedXattr));
        assert_eq!("none".parse(), Ok(SecurityModel::None));
        assert!("mapped-file".parse::<SecurityModel>().is_err());
        for m in [
            SecurityModel::Passthrough,
            SecurityModel::MappedXattr,
            SecurityModel::None,
        ] {
            assert_eq!(m.to_string().parse(), Ok(m));
        }
    }

    #[test]
    fn mapped_mode_keeps_host_type_when_stored_has_none() {
        let m = Mapped {
            mode: Some(0o640),
            ..Mapped::default()
        };
        assert_eq!(m.mode_over(libc::S_IFREG | 0o600), libc::S_IFREG | 0o640);
        let m = Mapped {
            mode: Some(libc::S_IFIFO | 0o644),
            ..Mapped::default()
        };
        assert_eq!(m.mode_over(libc::S_IFREG | 0o600), libc::S_IFIFO | 0o644);
    }
}
