//! Tclunk and Tremove: the barriers that end a fid.

use std::sync::Arc;

use crate::co::Executor;
use crate::fs::Filesystem;
use crate::protocol::{Errno, Fid, QidType, Rmessage};
use crate::server::fids::{FidEntry, Open};
use crate::server::{HandlerResult, Responder, SessionCore};

use super::ok;

impl<F: Filesystem, E: Executor, R: Responder> SessionCore<F, E, R> {
    /// Tclunk: waits for the requests already using the fid, then drops it. A fid made by
    /// Txattrcreate sets its xattr now (an empty value removes the xattr, as QEMU does).
    pub(super) async fn clunk(&self, fid: Fid, arrival: Option<u64>) -> HandlerResult {
        let e = self.fids.get(fid)?;
        #[cfg(feature = "planted-bugs")]
        let arrival = arrival.filter(|_| !crate::planted::clunk_skips_barrier());
        self.after_earlier(&e, arrival).await;
        let _g = e.enter_exclusive().await?;
        // Set a pending xattr first: the fid is dropped only after the last await, so a
        // flush that lands while the xattr is being set leaves everything as it was.
        let pending = e.with(|s| match &s.open {
            Open::XattrWrite {
                name,
                flags,
                value,
                written,
                ..
            } => Some((
                s.node.clone(),
                name.clone(),
                *flags,
                value.clone(),
                *written,
            )),
            _ => None,
        });
        let result = match pending {
            None => Ok(()),
            Some((_, _, _, value, written)) if written != value.len() => Err(Errno::EINVAL),
            Some((node, name, _, value, _)) if value.is_empty() => {
                self.fs.removexattr(&node, &name).await
            }
            Some((node, name, flags, value, _)) => {
                self.fs.setxattr(&node, &name, &value, flags).await
            }
        };
        self.end_fid(fid, &e);
        result?;
        ok(Rmessage::Clunk {})
    }

    /// Tremove: unlinks the file the fid names, and clunks the fid whether or not that
    /// worked (9p's rule).
    pub(super) async fn remove(&self, fid: Fid, arrival: Option<u64>) -> HandlerResult {
        let e = self.fids.get(fid)?;
        self.after_earlier(&e, arrival).await;
        let _g = e.enter_exclusive().await?;
        // The record is read under the names lock, so a rename in flight has either fixed
        // it already or waits until this unlink is done.
        let _names = self.names.read().await;
        let (node, parent, is_dir) =
            e.with(|s| (s.node.clone(), s.parent.clone(), s.qid.ty == QidType::DIR));
        let result = match (self.writable(), parent) {
            (Err(err), _) => Err(err),
            (Ok(()), None) => Err(Errno::EBUSY),
            (Ok(()), Some(p)) => {
                // The unlink is the effect; the fid is dropped only once it is done, so a
                // flush while it waits leaves the fid as it was. The filesystem unlinks the
                // entry only if it is still this fid's file.
                let r = self.fs.unlink_node(&p.dir, &p.name, &node, is_dir).await;
                self.end_fid(fid, &e);
                return r.map(|()| crate::server::Out::Msg(Rmessage::Remove {}));
            }
        };
        self.end_fid(fid, &e);
        result.map(|()| crate::server::Out::Msg(Rmessage::Remove {}))
    }

    /// Waits until every request that arrived on this fid before the clunk (number
    /// `arrival`, taken at submission) has ended; the exclusive barrier is then taken
    /// after them. Without this, a clunk whose coroutine happened to run first would
    /// overtake a write sent before it (found by the simulator, seed 184).
    async fn after_earlier(&self, e: &FidEntry<F>, arrival: Option<u64>) {
        if let Some(n) = arrival {
            e.earlier_done(n).await;
        }
    }

    /// Marks the fid clunked and takes it out of the table. What it had open stays in
    /// the entry and closes when the last request holding the entry lets go (each holds
    /// it until just before its reply), after the entry's own hold on the node: so a
    /// filesystem whose node borrows the file's descriptor (HostFs, for a file it
    /// created) sees the node go with the file, and never makes it a descriptor of its
    /// own for nothing.
    fn end_fid(&self, fid: Fid, e: &Arc<FidEntry<F>>) {
        e.mark_clunked();
        self.fids.remove_entry(fid, e);
    }
}
