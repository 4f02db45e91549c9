//! Twalk.

use crate::co::Executor;
use crate::fs::{Filesystem, Name};
use crate::protocol::{Errno, Fid, P9String, Rmessage};
use crate::server::fids::{FidState, Parent};
use crate::server::{HandlerResult, Responder, SessionCore};

use super::ok;

impl<F: Filesystem, E: Executor, R: Responder> SessionCore<F, E, R> {
    /// Twalk: zero names clone the fid; `..` never climbs above the export root; a failure
    /// on the first name is an error, a later failure answers the qids walked so far and
    /// leaves `newfid` unmade.
    pub(super) async fn walk(&self, fid: Fid, newfid: Fid, wnames: Vec<P9String>) -> HandlerResult {
        let e = self.fids.get(fid)?;
        let _g = e.enter().await?;
        // From reading fid's record (a clone copies it) or the first lookup until newfid
        // records the entry it reached, no rename may run: one that moved that entry in
        // between would fix every record but this one, and newfid would name its file by
        // a name it no longer has.
        let _names = self.names.read().await;
        let start = e.with(|s| s.walked());
        if newfid != fid && self.fids.get(newfid).is_ok() {
            return Err(Errno::EINVAL);
        }
        let mut cur = start;
        let mut wqids = Vec::with_capacity(wnames.len());
        for (i, w) in wnames.iter().enumerate() {
            match self.step(&cur, w).await {
                Ok(next) => {
                    wqids.push(next.qid);
                    cur = next;
                }
                Err(err) if i == 0 => return Err(err),
                Err(_) => return ok(Rmessage::Walk { wqids }),
            }
        }
        if newfid == fid {
            // The fid's own entry takes the new state, so it stays the one fid: a Tclunk
            // or Tremove sent behind this walk waits on that entry's barrier, then ends
            // what the fid names now. (A new entry in the table would leave the clunk
            // holding the old one: it answered and the fid lived on.) The old state
            // (its open file, if any) is let go outside the state lock.
            drop(e.with(|s| std::mem::replace(s, cur)));
        } else {
            self.fids.insert(newfid, cur)?;
        }
        ok(Rmessage::Walk { wqids })
    }

    /// One walk step from `cur` by `w`.
    async fn step(&self, cur: &FidState<F>, w: &P9String) -> Result<FidState<F>, Errno> {
        match w.as_bytes() {
            b"." => Ok(cur.walked()),
            b".." => {
                if Some(&cur.qid.path) == self.root_path.get() {
                    return Ok(cur.walked());
                }
                let (node, qid) = self.fs.parent(&cur.node).await?;
                // The parent's own parent link is unknown here; Trename/Tremove on a fid
                // reached by `..` then fail with EBUSY, as on the root.
                Ok(FidState {
                    node,
                    qid,
                    parent: None,
                    uid: cur.uid,
                    open: crate::server::fids::Open::Closed,
                })
            }
            b => {
                // A name with '/', NUL, or empty does not exist (QEMU answers ENOENT too).
                let name = Name::new(b).map_err(|e| {
                    if e == Errno::ENAMETOOLONG {
                        e
                    } else {
                        Errno::ENOENT
                    }
                })?;
                let (node, qid) = self.fs.lookup(&cur.node, &name).await?;
                Ok(FidState {
                    node,
                    qid,
                    parent: Some(Parent {
                        dir: cur.node.clone(),
                        dir_qid: cur.qid,
                        name,
                    }),
                    uid: cur.uid,
                    open: crate::server::fids::Open::Closed,
                })
            }
        }
    }
}
