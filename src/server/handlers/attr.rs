//! Attributes: Tgetattr, Tsetattr, Tstatfs.

use crate::co::Executor;
use crate::fs::Filesystem;
use crate::protocol::{Fid, Rmessage, SetAttr};
use crate::server::{HandlerResult, Responder, SessionCore};

use super::ok;

impl<F: Filesystem, E: Executor, R: Responder> SessionCore<F, E, R> {
    /// Tgetattr: the whole attribute set, whatever the mask asked (clients read `valid`).
    pub(in crate::server) async fn getattr(&self, fid: Fid) -> HandlerResult {
        let e = self.fids.get(fid)?;
        let _g = e.enter().await?;
        let node = e.with(|s| s.node.clone());
        let attr = self.fs.getattr(&node).await?;
        ok(Rmessage::Getattr { attr })
    }

    pub(in crate::server) async fn setattr(&self, fid: Fid, attr: SetAttr) -> HandlerResult {
        let e = self.fids.get(fid)?;
        let _g = e.enter().await?;
        self.writable()?;
        let node = e.with(|s| s.node.clone());
        self.fs.setattr(&node, &attr).await?;
        ok(Rmessage::Setattr {})
    }

    pub(in crate::server) async fn statfs(&self, fid: Fid) -> HandlerResult {
        let e = self.fids.get(fid)?;
        let _g = e.enter().await?;
        let node = e.with(|s| s.node.clone());
        let stat = self.fs.statfs(&node).await?;
        ok(Rmessage::Statfs { stat })
    }
}
