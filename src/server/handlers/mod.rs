//! Request handlers, one file per family of messages. Where to find a message:
//!
//! | message | file |
//! |---|---|
//! | Tversion, Tauth, Tattach | `session.rs` |
//! | Twalk | `walk.rs` |
//! | Tlopen, Tlcreate, Tread, Twrite, Treaddir, Tfsync | `file.rs` |
//! | Tclunk, Tremove | `clunk.rs` |
//! | Tmkdir, Tsymlink, Tmknod, Tlink, Trename, Trenameat, Tunlinkat, Treadlink | `dir.rs` |
//! | Tgetattr, Tsetattr, Tstatfs | `attr.rs` |
//! | Txattrwalk, Txattrcreate | `xattr.rs` |
//! | Tlock, Tgetlock | `lock.rs` |
//! | Tflush | `../inflight.rs` (the registry answers it) |
//!
//! A handler's shape: take the primary fid's barrier shared, read what it needs, make at
//! most one call with an effect, and never await after that effect (see the cancellation
//! contract in `fs`).

mod attr;
mod clunk;
mod dir;
mod file;
mod lock;
mod session;
mod walk;
mod xattr;

use std::future::Future;

use crate::co::Executor;
use crate::fs::{Filesystem, Name};
use crate::protocol::{Errno, Fid, P9String, Rmessage, Tmessage};

use super::fids::FidEntry;
use super::{HandlerResult, Job, Out, Responder, SessionCore};
use dir::NewEntry;
pub(super) use file::WriteData;
use lock::lock_request;

impl<F: Filesystem, E: Executor, R: Responder> SessionCore<F, E, R> {
    /// Runs the handler of one request (every T-message but Tversion and Tflush).
    pub(super) async fn dispatch(
        &self,
        job: Job,
        arrival: Option<u64>,
        responder: &mut R,
    ) -> HandlerResult {
        if self.msize() == 0 {
            // Nothing is meaningful before a Tversion has fixed the msize.
            return Err(Errno::EPROTO);
        }
        let msg = match job {
            Job::Msg(msg) => msg,
            Job::WriteInPlace { fid, offset, count } => {
                let data = WriteData::InTransport(count);
                return self.write(fid, offset, data, responder).await;
            }
        };
        use Tmessage as T;
        match msg {
            // No authentication is required. diod's client library reads ENOENT from Tauth
            // as exactly that (any other error aborts its mount); the Linux kernel never
            // sends Tauth unless asked to.
            T::Auth { .. } => Err(Errno::ENOENT),
            T::Lerror {} => Err(Errno::EOPNOTSUPP),
            T::Attach {
                fid,
                afid,
                uname,
                aname,
                n_uname,
            } => {
                let shown = aname.0.escape_ascii().to_string();
                let result = self.attach(fid, afid, aname, n_uname).await;
                tracing::info!(
                    conn = self.id(),
                    uname = %uname.0.escape_ascii(),
                    n_uname,
                    aname = %shown,
                    result = %match &result {
                        Ok(_) => "ok".to_string(),
                        Err(e) => e.to_string(),
                    },
                    "attach"
                );
                result
            }
            T::Walk {
                fid,
                newfid,
                wnames,
            } => self.walk(fid, newfid, wnames).await,
            T::Lopen { fid, flags } => self.lopen(fid, flags).await,
            T::Lcreate {
                fid,
                name,
                flags,
                mode,
                gid,
            } => self.lcreate(fid, name, flags, mode, gid).await,
            T::Read { fid, offset, count } => self.read(fid, offset, count, responder).await,
            T::Write { fid, offset, data } => {
                self.write(fid, offset, WriteData::Inline(data.0), responder)
                    .await
            }
            T::Readdir { fid, offset, count } => self.readdir(fid, offset, count, responder).await,
            T::Fsync { fid, datasync } => self.fsync(fid, datasync != 0).await,
            T::Clunk { fid } => self.clunk(fid, arrival).await,
            T::Remove { fid } => self.remove(fid, arrival).await,
            T::Mkdir {
                dfid,
                name,
                mode,
                gid,
            } => {
                self.new_entry(dfid, name, NewEntry::Dir { mode, gid })
                    .await
            }
            T::Symlink {
                fid,
                name,
                symtgt,
                gid,
            } => {
                let kind = NewEntry::Symlink {
                    target: symtgt,
                    gid,
                };
                self.new_entry(fid, name, kind).await
            }
            T::Mknod {
                dfid,
                name,
                mode,
                major,
                minor,
                gid,
            } => {
                let rdev = (major, minor);
                self.new_entry(dfid, name, NewEntry::Node { mode, rdev, gid })
                    .await
            }
            T::Link { dfid, fid, name } => self.new_entry(dfid, name, NewEntry::Link { fid }).await,
            T::Rename { fid, dfid, name } => self.rename(fid, dfid, name).await,
            T::Renameat {
                olddirfid,
                oldname,
                newdirfid,
                newname,
            } => self.renameat(olddirfid, oldname, newdirfid, newname).await,
            T::Unlinkat {
                dirfid,
                name,
                flags,
            } => self.unlinkat(dirfid, name, flags).await,
            T::Readlink { fid } => self.readlink(fid).await,
            T::Getattr {
                fid,
                request_mask: _,
            } => self.getattr(fid).await,
            T::Setattr { fid, attr } => self.setattr(fid, attr).await,
            T::Statfs { fid } => self.statfs(fid).await,
            T::Xattrwalk { fid, newfid, name } => self.xattrwalk(fid, newfid, name).await,
            T::Xattrcreate {
                fid,
                name,
                attr_size,
                flags,
            } => self.xattrcreate(fid, name, attr_size, flags).await,
            T::Lock {
                fid,
                lock_type,
                flags: _,
                start,
                length,
                proc_id,
                client_id,
            } => {
                let req = lock_request(lock_type, start, length, proc_id, client_id);
                self.lock(fid, req).await
            }
            T::Getlock {
                fid,
                lock_type,
                start,
                length,
                proc_id,
                client_id,
            } => {
                let req = lock_request(lock_type, start, length, proc_id, client_id);
                self.getlock(fid, req).await
            }
            T::Version { .. } | T::Flush { .. } => unreachable!("handled by the session itself"),
        }
    }

    /// `EROFS` on a read-only export.
    fn writable(&self) -> Result<(), Errno> {
        if self.config.readonly {
            Err(Errno::EROFS)
        } else {
            Ok(())
        }
    }

    /// The whole of a handler that makes one filesystem call on what its fid holds: takes
    /// the fid's barrier shared (the fid rule), checks the export is writable if the
    /// request writes, takes from the fid what the call needs (`pick`: `node`,
    /// `file::open_file`; for a handler with no call, `pick` is its whole work) and makes
    /// the call with the barrier held.
    async fn on_fid<X, T, Fut>(
        &self,
        fid: Fid,
        access: Access,
        pick: impl FnOnce(&FidEntry<F>) -> Result<X, Errno>,
        call: impl FnOnce(X) -> Fut,
    ) -> Result<T, Errno>
    where
        Fut: Future<Output = Result<T, Errno>>,
    {
        let e = self.fids.get(fid)?;
        let _g = e.enter().await?;
        if access == Access::Write {
            self.writable()?;
        }
        call(pick(&e)?).await
    }

    /// The node of a secondary fid (a directory argument), without taking its barrier: only
    /// the primary fid of a request is a barrier, so two-fid requests cannot deadlock with
    /// clunks.
    fn node_of(&self, fid: Fid) -> Result<F::Node, Errno> {
        let e = self.fids.get(fid)?;
        e.check()?;
        Ok(e.with(|s| s.node.clone()))
    }
}

/// Whether a request changes the export, which a read-only one answers `EROFS`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Write,
}

/// The node a fid names: what most handlers act on.
fn node<F: Filesystem>(e: &FidEntry<F>) -> Result<F::Node, Errno> {
    Ok(e.with(|s| s.node.clone()))
}

/// A name for a new directory entry, with QEMU's answers for the names that cannot be one:
/// `.`/`..` already exist (`EEXIST`), empty or slashed names do not (`ENOENT`).
fn new_entry_name(s: &P9String) -> Result<Name, Errno> {
    match s.as_bytes() {
        b"." | b".." => Err(Errno::EEXIST),
        b => component(b),
    }
}

/// A name of an existing entry (rename source, unlink target).
fn existing_name(s: &P9String) -> Result<Name, Errno> {
    match s.as_bytes() {
        b"." | b".." => Err(Errno::EINVAL),
        b => component(b),
    }
}

/// Any other name: one that cannot be a name (empty, a `/` or NUL in it) does not exist
/// (`ENOENT`, as QEMU answers); one too long is `ENAMETOOLONG`.
fn component(b: &[u8]) -> Result<Name, Errno> {
    Name::new(b).map_err(|e| if e == Errno::EINVAL { Errno::ENOENT } else { e })
}

fn ok(msg: Rmessage) -> HandlerResult {
    Ok(Out::Msg(msg))
}
