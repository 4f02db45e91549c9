//! POSIX byte-range locks: Tlock and Tgetlock.
//!
//! Locks belong to the fid's open file (open-file-description semantics), so two fids
//! conflict like two processes would. A conflicting `Tlock` is answered `Blocked` at once
//! even when the client asked to block: the Linux client then waits and retries by itself,
//! and the device never parks a coroutine on a lock that may never be released.

use std::sync::Arc;

use crate::co::Executor;
use crate::fs::{Filesystem, LockOutcome, LockRequest};
use crate::protocol::{Fid, LockStatus, LockType, P9String, Rmessage};
use crate::server::{HandlerResult, Responder, SessionCore};

use super::file::open_file;
use super::{Access, ok};

impl<F: Filesystem, E: Executor, R: Responder> SessionCore<F, E, R> {
    /// Tlock (its flags unused: a conflict is answered at once, blocking or not).
    pub(super) async fn lock(&self, fid: Fid, req: LockRequest) -> HandlerResult {
        let lock = async |file: Arc<F::File>| self.fs.lock(&file, &req).await;
        let status = match self.on_fid(fid, Access::Read, open_file, lock).await? {
            LockOutcome::Granted => LockStatus::Success,
            LockOutcome::Conflict => LockStatus::Blocked,
        };
        ok(Rmessage::Lock { status })
    }

    pub(super) async fn getlock(&self, fid: Fid, req: LockRequest) -> HandlerResult {
        let get = async |file: Arc<F::File>| self.fs.getlock(&file, &req).await;
        let found = self.on_fid(fid, Access::Read, open_file, get).await?;
        ok(Rmessage::Getlock {
            lock_type: found.lock_type,
            start: found.start,
            length: found.length,
            proc_id: found.proc_id,
            client_id: P9String(found.client_id),
        })
    }
}

/// The filesystem's form of a Tlock's or Tgetlock's range.
pub(super) fn lock_request(
    lock_type: LockType,
    start: u64,
    length: u64,
    proc_id: u32,
    client_id: P9String,
) -> LockRequest {
    LockRequest {
        lock_type,
        start,
        length,
        proc_id,
        client_id: client_id.0,
    }
}
