//! Tversion and Tattach (Tauth is answered `EOPNOTSUPP` by the dispatcher).

use crate::co::Executor;
use crate::fs::{Filesystem, Name};
use std::sync::atomic::Ordering;

use crate::protocol::{Errno, Fid, NONUNAME, P9String, Rmessage, VERSION_9P2000_L};
use crate::server::fids::{FidState, Open, Parent};
use crate::server::{HandlerResult, Responder, SessionCore, clamp_msize};

use super::ok;

impl<F: Filesystem, E: Executor, R: Responder> SessionCore<F, E, R> {
    /// Tversion's negotiation: the msize is the client's, capped by ours (and at least
    /// [`crate::protocol::MIN_MSIZE`]); a version other than 9P2000.L gets "unknown" and
    /// leaves the session unusable until a good Tversion. The caller has already cancelled
    /// every request and dropped every fid (the barrier).
    pub(in crate::server) fn negotiate(&self, msize: u32, version: &P9String) -> HandlerResult {
        let msize = match clamp_msize(msize, self.config.msize_limit()) {
            Ok(m) => m,
            Err(e) => {
                self.msize.store(0, Ordering::Release);
                return Err(e);
            }
        };
        if !version.as_bytes().starts_with(VERSION_9P2000_L.as_bytes()) {
            self.msize.store(0, Ordering::Release);
            return ok(Rmessage::Version {
                msize,
                version: "unknown".into(),
            });
        }
        self.msize.store(msize, Ordering::Release);
        ok(Rmessage::Version {
            msize,
            version: VERSION_9P2000_L.into(),
        })
    }

    /// Tattach: `""`, `"/"` or the export's own path name the root; any other aname is a
    /// path below the root, or `ENOENT`.
    pub(super) async fn attach(
        &self,
        fid: Fid,
        afid: Fid,
        aname: P9String,
        n_uname: u32,
    ) -> HandlerResult {
        if afid != Fid::NOFID {
            // No authentication is offered, so no auth fid can exist.
            return Err(Errno::EBADF);
        }
        // No rename between looking the path up and recording its last entry (see Twalk).
        let _names = self.names.read().await;
        let (root, root_qid) = self.fs.root().await?;
        let _ = self.root_path.set(root_qid.path);
        let mut node = root;
        let mut qid = root_qid;
        let mut parent = None;
        let a = aname.as_bytes();
        if !(a.is_empty() || a == b"/" || a == self.config.export_name.as_slice()) {
            for comp in a
                .split(|&b| b == b'/')
                .filter(|c| !c.is_empty() && *c != b".")
            {
                let name = Name::new(comp).map_err(|_| Errno::ENOENT)?;
                let (next, next_qid) = self.fs.lookup(&node, &name).await?;
                parent = Some(Parent {
                    dir: node,
                    dir_qid: qid,
                    name,
                });
                node = next;
                qid = next_qid;
            }
            if qid.ty != crate::protocol::QidType::DIR {
                return Err(Errno::ENOTDIR);
            }
        }
        let uid = if n_uname == NONUNAME { 0 } else { n_uname };
        self.fids.insert(
            fid,
            FidState {
                node,
                qid,
                parent,
                uid,
                open: Open::Closed,
            },
        )?;
        ok(Rmessage::Attach { qid })
    }
}
