//! Directory entries: Tmkdir, Tsymlink, Tmknod, Tlink, Trename, Trenameat, Tunlinkat,
//! and Treadlink.

use crate::co::Executor;
use crate::fs::{Creds, Filesystem, Name};
use crate::protocol::{AT_REMOVEDIR, Errno, Fid, P9String, QidType, Rmessage};
use crate::server::fids::Parent;
use crate::server::{HandlerResult, Responder, SessionCore};

use super::{existing_name, new_entry_name, ok};

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

    pub(in crate::server) async fn mkdir(
        &self,
        dfid: Fid,
        name: P9String,
        mode: u32,
        gid: u32,
    ) -> HandlerResult {
        let e = self.fids.get(dfid)?;
        let _g = e.hold().await;
        let (name, dir, uid) = self.new_entry_in(dfid, &name)?;
        let qid = self.fs.mkdir(&dir, &name, mode, Creds { uid, gid }).await?;
        ok(Rmessage::Mkdir { qid })
    }

    pub(in crate::server) async fn symlink(
        &self,
        dfid: Fid,
        name: P9String,
        target: P9String,
        gid: u32,
    ) -> HandlerResult {
        let e = self.fids.get(dfid)?;
        let _g = e.hold().await;
        let (name, dir, uid) = self.new_entry_in(dfid, &name)?;
        let qid = self
            .fs
            .symlink(&dir, &name, target.as_bytes(), Creds { uid, gid })
            .await?;
        ok(Rmessage::Symlink { qid })
    }

    pub(in crate::server) async fn mknod(
        &self,
        dfid: Fid,
        name: P9String,
        mode: u32,
        rdev: (u32, u32),
        gid: u32,
    ) -> HandlerResult {
        let e = self.fids.get(dfid)?;
        let _g = e.hold().await;
        let (name, dir, uid) = self.new_entry_in(dfid, &name)?;
        let qid = self
            .fs
            .mknod(&dir, &name, mode, rdev, Creds { uid, gid })
            .await?;
        ok(Rmessage::Mknod { qid })
    }

    /// Tlink: `dfid/name` becomes a new link to the file `fid` names.
    pub(in crate::server) async fn link(
        &self,
        dfid: Fid,
        fid: Fid,
        name: P9String,
    ) -> HandlerResult {
        let e = self.fids.get(dfid)?;
        let _g = e.hold().await;
        let (name, dir, _) = self.new_entry_in(dfid, &name)?;
        let target = self.node_of(fid)?;
        self.fs.link(&target, &dir, &name).await?;
        ok(Rmessage::Link {})
    }

    /// Trename: moves the file `fid` names to `dfid/name` (only if its recorded entry
    /// still names it); every fid reached by that entry follows it.
    pub(in crate::server) async fn rename(
        &self,
        fid: Fid,
        dfid: Fid,
        name: P9String,
    ) -> HandlerResult {
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

    pub(in crate::server) async fn renameat(
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
    pub(in crate::server) async fn unlinkat(
        &self,
        dirfid: Fid,
        name: P9String,
        flags: u32,
    ) -> HandlerResult {
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

    pub(in crate::server) async fn readlink(&self, fid: Fid) -> HandlerResult {
        let e = self.fids.get(fid)?;
        let _g = e.enter().await?;
        let node = e.with(|s| s.node.clone());
        let target = self.fs.readlink(&node).await?;
        ok(Rmessage::Readlink {
            target: P9String(target),
        })
    }
}
