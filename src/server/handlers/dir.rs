//! Directory entries: Tmkdir, Tsymlink, Tmknod, Tlink, Trename, Trenameat, Tunlinkat,
//! and Treadlink.

use crate::co::Executor;
use crate::fs::{Creds, Filesystem, Name};
use crate::protocol::{AT_REMOVEDIR, Errno, Fid, P9String, QidType, Rmessage};
use crate::server::fids::Parent;
use crate::server::{HandlerResult, Responder, SessionCore};

use super::{Access, existing_name, new_entry_name, node, ok};

/// Linux's `dev_t` holds a 12-bit major and a 20-bit minor. A Tmknod naming a device
/// beyond them gets `EINVAL`, whatever the type, as glibc's `mknod` answers: the kernel
/// takes 32 bits and would drop the rest, so a passthrough node would get another
/// device's number.
const MAJOR_MAX: u32 = 0xfff;
const MINOR_MAX: u32 = 0xf_ffff;

impl<F: Filesystem, E: Executor, R: Responder> SessionCore<F, E, R> {
    /// What a handler that makes an entry `name` in `dfid` checks, in this order: the
    /// export is writable, the name can be a new entry, `dfid` is a live directory. Gives
    /// the name, the directory and the attach uid.
    fn new_entry_in(&self, dfid: Fid, name: &P9String) -> Result<(Name, F::Node, u32), Errno> {
        self.writable()?;
        let name = new_entry_name(name)?;
        let (dir, uid) = self.dir_of(dfid)?;
        Ok((name, dir, uid))
    }

    /// The directory node and the attach uid of a fid that must name a directory.
    fn dir_of(&self, fid: Fid) -> Result<(F::Node, u32), Errno> {
        let e = self.fids.get(fid)?;
        e.check()?;
        e.with(|s| {
            if s.qid.ty == QidType::DIR {
                Ok((s.node.clone(), s.uid))
            } else {
                Err(Errno::ENOTDIR)
            }
        })
    }

    /// Tmkdir, Tsymlink, Tmknod and Tlink: a new entry `name` in the directory `dfid`.
    pub(super) async fn new_entry(
        &self,
        dfid: Fid,
        name: P9String,
        kind: NewEntry,
    ) -> HandlerResult {
        let e = self.fids.get(dfid)?;
        let _g = e.hold().await;
        let (name, dir, uid) = self.new_entry_in(dfid, &name)?;
        let fs = &self.fs;
        let reply = match kind {
            NewEntry::Dir { mode, gid } => Rmessage::Mkdir {
                qid: fs.mkdir(&dir, &name, mode, Creds { uid, gid }).await?,
            },
            NewEntry::Symlink { target, gid } => Rmessage::Symlink {
                qid: fs
                    .symlink(&dir, &name, target.as_bytes(), Creds { uid, gid })
                    .await?,
            },
            NewEntry::Node { mode, rdev, gid } => {
                if rdev.0 > MAJOR_MAX || rdev.1 > MINOR_MAX {
                    return Err(Errno::EINVAL);
                }
                Rmessage::Mknod {
                    qid: fs
                        .mknod(&dir, &name, mode, rdev, Creds { uid, gid })
                        .await?,
                }
            }
            NewEntry::Link { fid } => {
                let target = self.node_of(fid)?;
                fs.link(&target, &dir, &name).await?;
                Rmessage::Link {}
            }
        };
        ok(reply)
    }

    /// Trename: moves the file `fid` names to `dfid/name` (only if its recorded entry
    /// still names it); every fid reached by that entry follows it.
    pub(super) async fn rename(&self, fid: Fid, dfid: Fid, name: P9String) -> HandlerResult {
        let e = self.fids.get(fid)?;
        let _g = e.enter().await?;
        self.writable()?;
        let new_name = new_entry_name(&name)?;
        let to = self.dir_entry(dfid, new_name)?;
        let _names = self.names.write().await;
        let (node, from) =
            e.with(|s| Ok((s.node.clone(), s.parent.clone().ok_or(Errno::EBUSY)?)))?;
        self.fs
            .rename_node(&node, &from.dir, &from.name, &to.dir, &to.name)
            .await?;
        self.fids.renamed(from.dir_qid.path, &from.name, &to);
        ok(Rmessage::Rename {})
    }

    pub(super) async fn renameat(
        &self,
        olddirfid: Fid,
        oldname: P9String,
        newdirfid: Fid,
        newname: P9String,
    ) -> HandlerResult {
        let e = self.fids.get(olddirfid)?;
        let _g = e.hold().await;
        self.writable()?;
        let old_name = existing_name(&oldname)?;
        let new_name = new_entry_name(&newname)?;
        let from = self.dir_entry(olddirfid, old_name)?;
        let to = self.dir_entry(newdirfid, new_name)?;
        let _names = self.names.write().await;
        self.fs
            .rename(&from.dir, &from.name, &to.dir, &to.name)
            .await?;
        self.fids.renamed(from.dir_qid.path, &from.name, &to);
        ok(Rmessage::Renameat {})
    }

    /// The entry `name` in the directory `dfid` names.
    fn dir_entry(&self, dfid: Fid, name: Name) -> Result<Parent<F>, Errno> {
        let e = self.fids.get(dfid)?;
        e.check()?;
        e.with(|s| {
            if s.qid.ty == QidType::DIR {
                Ok(Parent {
                    dir: s.node.clone(),
                    dir_qid: s.qid,
                    name,
                })
            } else {
                Err(Errno::ENOTDIR)
            }
        })
    }

    /// Tunlinkat: `AT_REMOVEDIR` removes an empty directory. `.` is `EINVAL` and `..` is
    /// `ENOTEMPTY`, as rmdir(2) says.
    pub(super) async fn unlinkat(&self, dirfid: Fid, name: P9String, flags: u32) -> HandlerResult {
        let e = self.fids.get(dirfid)?;
        let _g = e.hold().await;
        self.writable()?;
        if name.as_bytes() == b".." {
            return Err(Errno::ENOTEMPTY);
        }
        let name = existing_name(&name)?;
        if flags & !AT_REMOVEDIR != 0 {
            return Err(Errno::EINVAL);
        }
        let (dir, _) = self.dir_of(dirfid)?;
        self.fs
            .unlink(&dir, &name, flags & AT_REMOVEDIR != 0)
            .await?;
        ok(Rmessage::Unlinkat {})
    }

    pub(super) async fn readlink(&self, fid: Fid) -> HandlerResult {
        let read = async |n: F::Node| self.fs.readlink(&n).await;
        let target = P9String(self.on_fid(fid, Access::Read, node, read).await?);
        ok(Rmessage::Readlink { target })
    }
}

/// What Tmkdir, Tsymlink, Tmknod and Tlink make, with the group a new file gets.
pub(super) enum NewEntry {
    Dir {
        mode: u32,
        gid: u32,
    },
    Symlink {
        target: P9String,
        gid: u32,
    },
    /// A device, fifo or socket: `rdev` is (major, minor).
    Node {
        mode: u32,
        rdev: (u32, u32),
        gid: u32,
    },
    /// Another link to the file `fid` names.
    Link {
        fid: Fid,
    },
}
