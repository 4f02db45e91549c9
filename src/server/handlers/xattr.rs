//! Extended attributes: Txattrwalk (read one, or the list) and Txattrcreate (write one,
//! set at clunk).

use std::future::ready;
use std::sync::Arc;

use crate::co::Executor;
use crate::fs::Filesystem;
use crate::protocol::{Errno, Fid, P9String, Rmessage};
use crate::server::fids::{FidEntry, Open, XattrSlot};
use crate::server::{HandlerResult, Responder, SessionCore, XATTR_SIZE_MAX};

use super::{Access, ok};

/// `setxattr(2)` flags.
const XATTR_CREATE: u32 = 1;
const XATTR_REPLACE: u32 = 2;

impl<F: Filesystem, E: Executor, R: Responder> SessionCore<F, E, R> {
    /// Txattrwalk: `newfid` holds the value of xattr `name` (or, for an empty name, the
    /// NUL-separated list of names) to be read with Tread.
    pub(super) async fn xattrwalk(&self, fid: Fid, newfid: Fid, name: P9String) -> HandlerResult {
        let e = self.fids.get(fid)?;
        let _g = e.enter().await?;
        if self.fids.get(newfid).is_ok() {
            return Err(Errno::EINVAL);
        }
        let node = e.with(|s| s.node.clone());
        let value = if name.as_bytes().is_empty() {
            self.fs.listxattr(&node).await?
        } else {
            self.fs.getxattr(&node, name.as_bytes()).await?
        };
        if value.len() > XATTR_SIZE_MAX {
            return Err(Errno::E2BIG);
        }
        let size = value.len() as u64;
        // The new fid copies the fid's state now, not before the read: a rename through
        // the session meanwhile moved the fid's record, and the copy must have it (found
        // by the simulator: a Tremove through the new fid answered ESTALE).
        let value = Open::XattrRead(Arc::new(value));
        self.fids.insert_copy(newfid, &e, |s| s.open = value)?;
        ok(Rmessage::Xattrwalk { size })
    }

    /// Txattrcreate: `fid` becomes the buffer for a value of exactly `attr_size` bytes. No
    /// filesystem call: the value is set when the fid is clunked.
    pub(super) async fn xattrcreate(
        &self,
        fid: Fid,
        name: P9String,
        attr_size: u64,
        flags: u32,
    ) -> HandlerResult {
        let make_buffer = |e: &FidEntry<F>| {
            if flags & !(XATTR_CREATE | XATTR_REPLACE) != 0 || name.as_bytes().is_empty() {
                return Err(Errno::EINVAL);
            }
            let size = usize::try_from(attr_size)
                .ok()
                .filter(|&s| s <= XATTR_SIZE_MAX)
                .ok_or(Errno::E2BIG)?;
            e.with(|s| match s.open {
                Open::Closed => {
                    // Each pending value holds up to 64 KiB: how many may exist is bounded.
                    let slot = XattrSlot::take(&self.xattr_writes, self.config.max_xattr_writes)
                        .ok_or(Errno::ENOSPC)?;
                    s.open = Open::XattrWrite {
                        name: name.0,
                        flags,
                        value: vec![0; size],
                        written: 0,
                        _slot: slot,
                    };
                    Ok(())
                }
                _ => Err(Errno::EINVAL),
            })
        };
        self.on_fid(fid, Access::Write, make_buffer, |()| ready(Ok(())))
            .await?;
        ok(Rmessage::Xattrcreate {})
    }
}
