//! POSIX byte-range locks: Tlock and Tgetlock.
//!
//! Locks belong to the fid's open file (open-file-description semantics), so two fids
//! conflict like two processes would. A conflicting `Tlock` is answered `Blocked` at once
//! even when the client asked to block: the Linux client then waits and retries by itself,
//! and the device never parks a coroutine on a lock that may never be released.

use crate::co::Executor;
use crate::fs::{Filesystem, LockOutcome, LockRequest};
use crate::protocol::{Fid, LockStatus, LockType, P9String, Rmessage};
use crate::server::{HandlerResult, Responder, SessionCore};

use super::file::open_file;
use super::ok;

impl<F: Filesystem, E: Executor, R: Responder> SessionCore<F, E, R> {
    /// Tlock (its flags unused: a conflict is answered at once, blocking or not).
    pub(in crate::server) async fn lock(&self, fid: Fid, req: LockRequest) -> HandlerResult {
        let e = self.fids.get(fid)?;
        let _g = e.enter().await?;
        let file = open_file(&e)?;
        let status = match self.fs.lock(&file, &req).await? {
            LockOutcome::Granted => LockStatus::Success,
            LockOutcome::Conflict => LockStatus::Blocked,
        };
        ok(Rmessage::Lock { status })
    }

    pub(in crate::server) async fn getlock(&self, fid: Fid, req: LockRequest) -> HandlerResult {
        let e = self.fids.get(fid)?;
        let _g = e.enter().await?;
        let file = open_file(&e)?;
        let found = self.fs.getlock(&file, &req).await?;
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
