//! Making and removing names: create, mkdir, symlink, mknod, link, rename, unlink.
//!
//! Everything is made by one `*at` call on the parent's descriptor with a single-component
//! name (`O_CREAT|O_EXCL|O_NOFOLLOW` for files, so an existing name, fifo or symlink is
//! never opened). The new file then gets the guest's owner and mode as the security model
//! says; under passthrough a failure to do so removes it again and reports the error (as
//! QEMU). Files are owned through their open descriptor where there is one (create, and
//! everything mapped-xattr stores as a regular file); directories, symlinks and nodes are
//! reopened by name right after they are made (`O_PATH|O_NOFOLLOW`, type checked), a
//! window in which a concurrent rename in the same directory could substitute another
//! entry of the same type, as in QEMU.

use std::ffi::CStr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use rustix::fs::{
    AtFlags, FileType, Gid, Mode, OFlags, Uid, chmodat, chownat, fchmod, fchown, fstat, linkat,
    makedev, mkdirat, mknodat, openat, renameat, statat, symlinkat, unlinkat,
};

use crate::fs::{Creds, FsResult, Name};
use crate::protocol::{Errno, OpenFlags, Qid};

use super::cache::Probe;
use super::node::{GiveBack, HostFile, HostNode, Kind};
use super::resolve::{ProcPath, reopen_flags};
use super::security::{
    MAPPED_DIR_MODE, MAPPED_FILE_MODE, Mapped, SecurityModel, write_mapped_fd, write_mapped_path,
};
use super::{HostFs, errno};

/// Longest symlink target (Linux `PATH_MAX` less the NUL).
const SYMLINK_MAX: usize = 4095;

impl HostFs {
    fn host_perm(&self, perm: u32, dir: bool) -> Mode {
        Mode::from_raw_mode(match (self.model, dir) {
            (SecurityModel::MappedXattr, false) => MAPPED_FILE_MODE,
            (SecurityModel::MappedXattr, true) => MAPPED_DIR_MODE,
            _ => perm & 0o7777,
        })
    }

    /// Owner and exact mode for a new file reached by an open (not `O_PATH`) descriptor.
    fn own_new_fd(
        &self,
        fd: BorrowedFd<'_>,
        mode: u32,
        rdev: Option<u64>,
        c: Creds,
    ) -> FsResult<()> {
        self.own_new_fd_as(fd, mode, rdev, c, None)
    }

    /// [`Self::own_new_fd`], knowing the owner the file was made with (`made`: skip the
    /// `fchown` when it is already the guest's).
    fn own_new_fd_as(
        &self,
        fd: BorrowedFd<'_>,
        mode: u32,
        rdev: Option<u64>,
        c: Creds,
        made: Option<(u32, u32)>,
    ) -> FsResult<()> {
        if self.model == SecurityModel::MappedXattr {
            return write_mapped_fd(fd, &Mapped::new(c.uid, c.gid, mode, rdev));
        }
        let chowned = made != Some((c.uid, c.gid));
        if chowned {
            let r = fchown(fd, Some(Uid::from_raw(c.uid)), Some(Gid::from_raw(c.gid)));
            if let (Err(e), SecurityModel::Passthrough) = (r, self.model) {
                return Err(errno(e));
            }
        }
        // A chown drops a regular file's set-id bits (even root's): give them back.
        if mode & 0o7777 & self.umask != 0 || (chowned && mode & 0o6000 != 0) {
            fchmod(fd, Mode::from_raw_mode(mode & 0o7777)).map_err(errno)?;
        }
        Ok(())
    }

    /// Owner and exact mode for a new directory, symlink or node, by its `O_PATH` fd.
    fn own_new_path(&self, fd: BorrowedFd<'_>, kind: Kind, mode: u32, c: Creds) -> FsResult<()> {
        let p = ProcPath::new(fd.as_raw_fd());
        if self.model == SecurityModel::MappedXattr {
            return write_mapped_path(p.abs(), &Mapped::new(c.uid, c.gid, mode, None));
        }
        let r = chownat(
            fd,
            c"",
            Some(Uid::from_raw(c.uid)),
            Some(Gid::from_raw(c.gid)),
            AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
        );
        if let (Err(e), SecurityModel::Passthrough) = (r, self.model) {
            return Err(errno(e));
        }
        // The umask took bits, the chown dropped set-id bits, or a directory inherited
        // its parent's set-group-ID bit: set the mode given, exactly (as QEMU does; a
        // Linux client asks for that bit itself when it wants it).
        let exact = kind == Kind::Dir || mode & 0o7777 & self.umask != 0 || mode & 0o6000 != 0;
        if kind != Kind::Symlink && exact {
            let perm = Mode::from_raw_mode(mode & 0o7777);
            chmodat(&self.proc_fd, p.rel(), perm, AtFlags::empty()).map_err(errno)?;
        }
        Ok(())
    }

    /// Reopens a just-made `name` as `O_PATH` and checks it is still of `kind`.
    fn made(&self, dir: &HostNode, name: &Name, kind: Kind) -> FsResult<OwnedFd> {
        let fd = self.lookup_fd(dir, name)?;
        let st = fstat(&fd).map_err(errno)?;
        if Kind::of(&st) != kind {
            return Err(Errno::ENOENT);
        }
        Ok(fd)
    }

    /// Runs `finish` on a name just made; if it fails, removes the name again.
    fn or_remove<T>(
        &self,
        dir: &HostNode,
        name: &Name,
        is_dir: bool,
        finish: impl FnOnce() -> FsResult<T>,
    ) -> FsResult<T> {
        let r = finish();
        if r.is_err() {
            let flags = if is_dir {
                AtFlags::REMOVEDIR
            } else {
                AtFlags::empty()
            };
            if let Ok(d) = self.node_fd(dir) {
                let _ = unlinkat(d.fd(), name.as_bytes(), flags);
            }
        }
        r
    }

    /// Makes a regular file by `O_CREAT|O_EXCL` with host mode `perm` (for create, and for
    /// what mapped-xattr stores as regular files).
    fn new_regular(
        &self,
        dir: &HostNode,
        name: &Name,
        access: OFlags,
        perm: Mode,
    ) -> FsResult<OwnedFd> {
        let flags = access | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let d = self.node_fd(dir)?;
        openat(d.fd(), name.as_bytes(), flags, perm).map_err(errno)
    }

    pub(super) fn do_create(
        &self,
        dir: &HostNode,
        name: &Name,
        flags: OpenFlags,
        mode: u32,
        creds: Creds,
    ) -> FsResult<(HostNode, HostFile, Qid)> {
        self.writable()?;
        dir.require_dir()?;
        let file_slot = self.slot()?;
        let access = reopen_flags(flags)? & !(OFlags::TRUNC | OFlags::DIRECTORY);
        let perm = mode & 0o7777;
        let fd = self.new_regular(dir, name, access, self.host_perm(perm, false))?;
        self.or_remove(dir, name, false, || {
            // One statx gives the owner it was made with, the identity and the qid (an
            // owner change moves neither).
            let p = Probe::of_fd(fd.as_fd())?;
            let made = Some((p.uid, p.gid));
            self.own_new_fd_as(fd.as_fd(), libc::S_IFREG | perm, None, creds, made)?;
            let qid = self.qid_probed(fd.as_fd(), &p)?;
            if self.registry.get((p.id.dev, p.id.ino)).is_some() {
                // A live node of an inode number the kernel just reused (its file gone):
                // the general path replaces it.
                let pfd = self.path_fd_of(fd.as_fd())?;
                let node = self.intern_as(pfd, p.id, Some((dir, name)))?;
                let file = HostFile::new(node.clone(), fd, file_slot, creds.uid)?;
                return Ok((node, file, qid));
            }
            // The node borrows the file's descriptor (see `NodeState::lender`).
            let fd = Arc::new(fd);
            let node = HostNode::new_lent(&fd, p.id, (dir.clone(), name.clone()), &self.registry);
            let back = GiveBack {
                proc_fd: self.proc_fd.clone(),
                budget: self.budget.clone(),
            };
            let file = HostFile::lending(node.clone(), fd, file_slot, creds.uid, back);
            Ok((node, file, qid))
        })
    }

    pub(super) fn do_mkdir(
        &self,
        dir: &HostNode,
        name: &Name,
        mode: u32,
        creds: Creds,
    ) -> FsResult<Qid> {
        self.writable()?;
        dir.require_dir()?;
        let perm = mode & 0o7777;
        let d = self.node_fd(dir)?;
        mkdirat(d.fd(), name.as_bytes(), self.host_perm(perm, true)).map_err(errno)?;
        self.or_remove(dir, name, true, || {
            let fd = self.made(dir, name, Kind::Dir)?;
            self.own_new_path(fd.as_fd(), Kind::Dir, libc::S_IFDIR | perm, creds)?;
            self.qid_fd(fd.as_fd())
        })
    }

    pub(super) fn do_symlink(
        &self,
        dir: &HostNode,
        name: &Name,
        target: &[u8],
        creds: Creds,
    ) -> FsResult<Qid> {
        self.writable()?;
        dir.require_dir()?;
        if target.is_empty() {
            return Err(Errno::ENOENT);
        }
        if target.contains(&0) {
            return Err(Errno::EINVAL);
        }
        if target.len() > SYMLINK_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        let mode = libc::S_IFLNK | 0o777;
        if self.model == SecurityModel::MappedXattr {
            // A regular file holding the target: the host never gets a symlink to follow.
            let fd = self.new_regular(dir, name, OFlags::WRONLY, self.host_perm(0, false))?;
            return self.or_remove(dir, name, false, || {
                write_all(fd.as_fd(), target)?;
                self.own_new_fd(fd.as_fd(), mode, None, creds)?;
                self.qid_fd(fd.as_fd())
            });
        }
        let target = CStr::from_bytes_with_nul(&[target, b"\0"].concat())
            .map_err(|_| Errno::EINVAL)?
            .to_owned();
        let d = self.node_fd(dir)?;
        symlinkat(target.as_c_str(), d.fd(), name.as_bytes()).map_err(errno)?;
        self.or_remove(dir, name, false, || {
            let fd = self.made(dir, name, Kind::Symlink)?;
            self.own_new_path(fd.as_fd(), Kind::Symlink, mode, creds)?;
            self.qid_fd(fd.as_fd())
        })
    }

    pub(super) fn do_mknod(
        &self,
        dir: &HostNode,
        name: &Name,
        mode: u32,
        rdev: (u32, u32),
        creds: Creds,
    ) -> FsResult<Qid> {
        self.writable()?;
        dir.require_dir()?;
        let ty = match mode & libc::S_IFMT {
            0 => libc::S_IFREG,
            t
            @ (libc::S_IFREG | libc::S_IFCHR | libc::S_IFBLK | libc::S_IFIFO | libc::S_IFSOCK) => t,
            _ => return Err(Errno::EINVAL),
        };
        let perm = mode & 0o7777;
        let dev = makedev(rdev.0, rdev.1);
        if self.model == SecurityModel::MappedXattr {
            // An empty regular file with the type, mode and rdev in xattrs.
            let fd = self.new_regular(dir, name, OFlags::RDONLY, self.host_perm(0, false))?;
            return self.or_remove(dir, name, false, || {
                self.own_new_fd(fd.as_fd(), ty | perm, Some(dev), creds)?;
                self.qid_fd(fd.as_fd())
            });
        }
        let ftype = FileType::from_raw_mode(ty);
        let d = self.node_fd(dir)?;
        mknodat(
            d.fd(),
            name.as_bytes(),
            ftype,
            self.host_perm(perm, false),
            dev,
        )
        .map_err(errno)?;
        let kind = if ty == libc::S_IFREG {
            Kind::Reg
        } else {
            Kind::Special
        };
        self.or_remove(dir, name, false, || {
            let fd = self.made(dir, name, kind)?;
            self.own_new_path(fd.as_fd(), kind, ty | perm, creds)?;
            self.qid_fd(fd.as_fd())
        })
    }

    /// Hard link through `/proc/self/fd/N` with `AT_SYMLINK_FOLLOW` (as virtiofsd): the
    /// magic link names the target's inode; for a symlink node, the symlink itself, never
    /// what it points to. (`AT_EMPTY_PATH` would need `CAP_DAC_READ_SEARCH`.)
    pub(super) fn do_link(&self, target: &HostNode, dir: &HostNode, name: &Name) -> FsResult<()> {
        self.writable()?;
        dir.require_dir()?;
        if target.kind() == Kind::Dir {
            return Err(Errno::EPERM);
        }
        let t = self.node_fd(target)?;
        let d = self.node_fd(dir)?;
        let p = ProcPath::new(t.raw());
        linkat(
            &self.proc_fd,
            p.rel(),
            d.fd(),
            name.as_bytes(),
            AtFlags::SYMLINK_FOLLOW,
        )
        .map_err(errno)
    }

    /// Renames `old_dir/old_name`; with `expect`, only if that name is still the node's
    /// inode (Trename through a fid).
    pub(super) fn do_rename(
        &self,
        old_dir: &HostNode,
        old_name: &Name,
        new_dir: &HostNode,
        new_name: &Name,
        expect: Option<&HostNode>,
    ) -> FsResult<()> {
        self.writable()?;
        old_dir.require_dir()?;
        new_dir.require_dir()?;
        let od = self.node_fd(old_dir)?;
        let nd = self.node_fd(new_dir)?;
        // Which inode moves, and which loses its name (see `reclaim.rs`).
        let src = statat(od.fd(), old_name.as_bytes(), AtFlags::SYMLINK_NOFOLLOW)
            .map(|st| (st.st_dev, st.st_ino));
        if let Some(n) = expect {
            same_inode(src, n)?;
        }
        let src = src.ok();
        let lost = self
            .losing_name(nd.fd(), new_name)
            .filter(|l| Some(l.id()) != src);
        renameat(od.fd(), old_name.as_bytes(), nd.fd(), new_name.as_bytes()).map_err(errno)?;
        if let Some(src) = src {
            self.moved(src, new_dir, nd.fd(), new_name);
        }
        self.lost_name(lost, new_dir, new_name);
        Ok(())
    }

    /// Unlinks `dir/name`; with `expect`, only if that name is still the node's inode
    /// (Tremove through a fid).
    ///
    /// The check and the unlink are two syscalls: the server orders them against its own
    /// renames (a session's name lock), but a host process that renames into this very
    /// name between them is not stopped. No syscall unlinks a name only if it is a given
    /// inode; QEMU makes no check at all.
    pub(super) fn do_unlink(
        &self,
        dir: &HostNode,
        name: &Name,
        rmdir: bool,
        expect: Option<&HostNode>,
    ) -> FsResult<()> {
        self.writable()?;
        dir.require_dir()?;
        let flags = if rmdir {
            AtFlags::REMOVEDIR
        } else {
            AtFlags::empty()
        };
        let d = self.node_fd(dir)?;
        let lost = match expect {
            Some(n) => {
                let found = statat(d.fd(), name.as_bytes(), AtFlags::SYMLINK_NOFOLLOW)
                    .map(|st| (st.st_dev, st.st_ino));
                same_inode(found, n)?;
                // The name holds `n`'s inode: that stat already found the node losing it
                // (a second one, as `losing_name` makes, would cost a syscall per Tremove).
                self.registry.get(n.id()).and_then(|r| self.losing(r))
            }
            None => self.losing_name(d.fd(), name),
        };
        unlinkat(d.fd(), name.as_bytes(), flags).map_err(errno)?;
        self.lost_name(lost, dir, name);
        Ok(())
    }
}

/// `Ok` if a name's stat found `node`'s inode: `ESTALE` if it found another, the stat's
/// error (`ENOENT`) if none.
fn same_inode(found: rustix::io::Result<(u64, u64)>, node: &HostNode) -> FsResult<()> {
    match found {
        Ok(id) if id == node.id() => Ok(()),
        Ok(_) => Err(Errno::ESTALE),
        Err(e) => Err(errno(e)),
    }
}

fn write_all(fd: BorrowedFd<'_>, mut data: &[u8]) -> FsResult<()> {
    while !data.is_empty() {
        match rustix::io::write(fd, data) {
            Ok(0) => return Err(Errno::EIO),
            Ok(n) => data = &data[n..],
            Err(e) if e == rustix::io::Errno::INTR => {}
            Err(e) => return Err(errno(e)),
        }
    }
    Ok(())
}
