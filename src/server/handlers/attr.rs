//! Attributes: Tgetattr, Tsetattr, Tstatfs.

use crate::co::Executor;
use crate::fs::Filesystem;
use crate::protocol::{Fid, Rmessage, SetAttr};
use crate::server::{HandlerResult, Responder, SessionCore};

use super::{Access, node, ok};

impl<F: Filesystem, E: Executor, R: Responder> SessionCore<F, E, R> {
    /// Tgetattr: the whole attribute set, whatever the mask asked (clients read `valid`).
    pub(super) async fn getattr(&self, fid: Fid) -> HandlerResult {
        let get = async |n: F::Node| self.fs.getattr(&n).await;
        let attr = self.on_fid(fid, Access::Read, node, get).await?;
        ok(Rmessage::Getattr { attr })
    }

    pub(super) async fn setattr(&self, fid: Fid, attr: SetAttr) -> HandlerResult {
        let set = async |n: F::Node| self.fs.setattr(&n, &attr).await;
        self.on_fid(fid, Access::Write, node, set).await?;
        ok(Rmessage::Setattr {})
    }

    pub(super) async fn statfs(&self, fid: Fid) -> HandlerResult {
        let get = async |n: F::Node| self.fs.statfs(&n).await;
        let stat = self.on_fid(fid, Access::Read, node, get).await?;
        ok(Rmessage::Statfs { stat })
    }
}
