//! Attributes: qids and getattr (with mapped-xattr's view), setattr, statfs.

use rustix::fs::{
    AtFlags, Gid, Mode, OFlags, Timestamps, UTIME_NOW, UTIME_OMIT, Uid, chmodat, chownat, fstat,
    fstatfs, ftruncate, utimensat,
};

use std::os::fd::{AsRawFd, BorrowedFd};

use crate::fs::FsResult;
use crate::protocol::{Attr, Errno, Qid, SetAttr, SetattrMask, StatFs, Timespec};

use super::cache::Probe;
use super::node::{HostNode, Kind};
use super::qid::{attr_from_stat, qid_type, qid_version};
use super::resolve::ProcPath;
use super::security::{Mapped, SecurityModel, mapped_capable, read_mapped, read_mapped_mode};
use super::{HostFs, errno};

impl HostFs {
    /// The mode the guest sees for a file whose host mode is `host_mode` (mapped-xattr
    /// keeps it on regular files, where types other than regular live).
    pub(super) fn guest_mode(&self, fd: BorrowedFd<'_>, host_mode: u32) -> FsResult<u32> {
        if self.model != SecurityModel::MappedXattr || host_mode & libc::S_IFMT != libc::S_IFREG {
            return Ok(host_mode);
        }
        let mode = read_mapped_mode(ProcPath::new(fd.as_raw_fd()).abs())?;
        Ok(Mapped {
            mode,
            ..Mapped::default()
        }
        .mode_over(host_mode))
    }

    /// A node's qid, from a fresh stat.
    pub(super) fn qid_of(&self, node: &HostNode) -> FsResult<Qid> {
        self.qid_fd(self.node_fd(node)?.fd())
    }

    /// The qid of the file `fd` refers to, from a stat of it just taken.
    pub(super) fn qid_probed(&self, fd: BorrowedFd<'_>, p: &Probe) -> FsResult<Qid> {
        let mode = self.guest_mode(fd, p.mode)?;
        Ok(Qid {
            ty: qid_type(mode),
            version: p.version,
            path: self.qids.path(p.id.dev, p.id.ino),
        })
    }

    /// The qid of the file a descriptor (`O_PATH` or open) refers to.
    pub(super) fn qid_fd(&self, fd: BorrowedFd<'_>) -> FsResult<Qid> {
        let st = fstat(fd).map_err(errno)?;
        let mode = self.guest_mode(fd, st.st_mode)?;
        Ok(Qid {
            ty: qid_type(mode),
            version: qid_version(&st),
            path: self.qids.path(st.st_dev, st.st_ino),
        })
    }

    pub(super) fn do_getattr(&self, node: &HostNode) -> FsResult<Attr> {
        let fd = self.node_fd(node)?;
        let st = fstat(fd.fd()).map_err(errno)?;
        let mut mapped = Mapped::default();
        if self.model == SecurityModel::MappedXattr && mapped_capable(node.kind()).is_ok() {
            mapped = read_mapped(ProcPath::new(fd.raw()).abs())?;
        }
        let mode = mapped.mode_over(st.st_mode);
        let qid = Qid {
            ty: qid_type(mode),
            version: qid_version(&st),
            path: self.qids.path(st.st_dev, st.st_ino),
        };
        let mut attr = attr_from_stat(&st, qid);
        attr.mode = mode;
        attr.uid = mapped.uid.unwrap_or(attr.uid);
        attr.gid = mapped.gid.unwrap_or(attr.gid);
        attr.rdev = mapped.rdev.unwrap_or(attr.rdev);
        Ok(attr)
    }

    /// Applies a `Tsetattr`: owner, then mode (so a chown cannot clear a set-id bit just
    /// set), then size, then times (so a truncate does not overwrite given times). `CTIME`
    /// alone is ignored (any change sets it anyway).
    pub(super) fn do_setattr(&self, node: &HostNode, a: &SetAttr) -> FsResult<()> {
        self.writable()?;
        let v = a.valid;
        let fd = self.node_fd(node)?;
        let p = ProcPath::new(fd.raw());
        if v.intersects(SetattrMask::UID | SetattrMask::GID) {
            let uid = v.contains(SetattrMask::UID).then_some(a.uid);
            let gid = v.contains(SetattrMask::GID).then_some(a.gid);
            self.set_owner(node, uid, gid)?;
        }
        if v.contains(SetattrMask::MODE) {
            let perm = a.mode & 0o7777;
            match self.model {
                SecurityModel::MappedXattr => {
                    mapped_capable(node.kind())?;
                    let st = fstat(fd.fd()).map_err(errno)?;
                    let cur = self.guest_mode(fd.fd(), st.st_mode)?;
                    let m = Mapped {
                        mode: Some(cur & libc::S_IFMT | perm),
                        ..Mapped::default()
                    };
                    super::security::write_mapped_path(p.abs(), &m)?;
                }
                _ => {
                    if node.kind() == Kind::Symlink {
                        return Err(Errno::EOPNOTSUPP);
                    }
                    // Through the magic link: chmod does not open, so this is safe for
                    // every type; a symlink node was refused above.
                    chmodat(
                        &self.proc_fd,
                        p.rel(),
                        Mode::from_raw_mode(perm),
                        AtFlags::empty(),
                    )
                    .map_err(errno)?;
                }
            }
        }
        if v.contains(SetattrMask::SIZE) {
            match node.kind() {
                Kind::Reg => {}
                Kind::Dir => return Err(Errno::EISDIR),
                _ => return Err(Errno::EINVAL),
            }
            let st = fstat(fd.fd()).map_err(errno)?;
            if self.guest_mode(fd.fd(), st.st_mode)? & libc::S_IFMT != libc::S_IFREG {
                return Err(Errno::EINVAL);
            }
            let data = self.reopen(node, OFlags::WRONLY | OFlags::NONBLOCK)?;
            ftruncate(&data, a.size).map_err(errno)?;
        }
        if v.intersects(SetattrMask::ATIME | SetattrMask::MTIME) {
            let time = |set: bool, explicit: bool, t: Timespec| -> FsResult<rustix::fs::Timespec> {
                Ok(match (set, explicit) {
                    (false, _) => rustix::fs::Timespec {
                        tv_sec: 0,
                        tv_nsec: UTIME_OMIT,
                    },
                    (true, false) => rustix::fs::Timespec {
                        tv_sec: 0,
                        tv_nsec: UTIME_NOW,
                    },
                    (true, true) => {
                        if t.nsec >= 1_000_000_000 {
                            return Err(Errno::EINVAL);
                        }
                        rustix::fs::Timespec {
                            tv_sec: i64::try_from(t.sec).map_err(|_| Errno::EINVAL)?,
                            tv_nsec: t.nsec as _,
                        }
                    }
                })
            };
            let times = Timestamps {
                last_access: time(
                    v.contains(SetattrMask::ATIME),
                    v.contains(SetattrMask::ATIME_SET),
                    a.atime,
                )?,
                last_modification: time(
                    v.contains(SetattrMask::MTIME),
                    v.contains(SetattrMask::MTIME_SET),
                    a.mtime,
                )?,
            };
            // The magic link is not followed past the node: for a symlink node this sets
            // the link's own times (lutimes).
            utimensat(&self.proc_fd, p.rel(), &times, AtFlags::empty()).map_err(errno)?;
        }
        Ok(())
    }

    /// Gives a node the guest's owner as the model says (see `security.rs`).
    pub(super) fn set_owner(
        &self,
        node: &HostNode,
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> FsResult<()> {
        let fd = self.node_fd(node)?;
        match self.model {
            SecurityModel::MappedXattr => {
                mapped_capable(node.kind())?;
                let m = Mapped {
                    uid,
                    gid,
                    ..Mapped::default()
                };
                super::security::write_mapped_path(ProcPath::new(fd.raw()).abs(), &m)
            }
            model => {
                let r = chownat(
                    fd.fd(),
                    c"",
                    uid.map(Uid::from_raw),
                    gid.map(Gid::from_raw),
                    AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(errno);
                match (model, r) {
                    (SecurityModel::None, Err(_)) => Ok(()),
                    (_, r) => r,
                }
            }
        }
    }

    pub(super) fn do_statfs(&self, node: &HostNode) -> FsResult<StatFs> {
        let fd = self.node_fd(node)?;
        let s = fstatfs(fd.fd()).map_err(errno)?;
        // rustix keeps `f_fsid` opaque; statvfs has it as a number.
        let fsid = rustix::fs::fstatvfs(fd.fd()).map_err(errno)?.f_fsid;
        Ok(StatFs {
            fs_type: s.f_type as u32,
            bsize: s.f_bsize as u32,
            blocks: s.f_blocks,
            bfree: s.f_bfree,
            bavail: s.f_bavail,
            files: s.f_files,
            ffree: s.f_ffree,
            fsid,
            namelen: s.f_namelen as u32,
        })
    }
}
