//! POSIX byte-range locks as Linux open-file-description locks (`F_OFD_SETLK`,
//! `F_OFD_GETLK`): owned by the open file, so two fids conflict as two processes would,
//! and closing the file releases them. Never `F_OFD_SETLKW`: a conflict is reported at
//! once. The only `libc` calls of the backend (rustix has no OFD byte-range locks).

use std::os::fd::{AsRawFd, BorrowedFd};

use crate::fs::{FsResult, LockOutcome, LockProbe, LockRequest};
use crate::protocol::{Errno, LockType};

fn to_flock(req: &LockRequest) -> FsResult<libc::flock> {
    let l_type = match req.lock_type {
        LockType::Read => libc::F_RDLCK,
        LockType::Write => libc::F_WRLCK,
        LockType::Unlock => libc::F_UNLCK,
    };
    let start = i64::try_from(req.start).map_err(|_| Errno::EINVAL)?;
    // A range reaching past the largest offset is "to the end of the file" (0).
    let len = match i64::try_from(req.length) {
        Ok(len) if start.checked_add(len).is_some() => len,
        _ => 0,
    };
    // SAFETY: `flock` is a plain C struct; all-zero is a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = l_type as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = start;
    fl.l_len = len;
    fl.l_pid = 0; // required by OFD locks
    Ok(fl)
}

fn last_errno() -> Errno {
    Errno(
        std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO) as u32,
    )
}

/// Takes or releases a lock without waiting.
pub(super) fn set(fd: BorrowedFd<'_>, req: &LockRequest) -> FsResult<LockOutcome> {
    let fl = to_flock(req)?;
    loop {
        // SAFETY: `fd` is a live descriptor borrowed for the call; `fl` is a valid
        // `struct flock` that outlives it; F_OFD_SETLK only reads it.
        let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
        if r == 0 {
            return Ok(LockOutcome::Granted);
        }
        match last_errno() {
            Errno::EINTR => continue,
            Errno::EAGAIN | Errno::EACCES => return Ok(LockOutcome::Conflict),
            e => return Err(e),
        }
    }
}

/// The first lock that would conflict with `req`, or `req` with type `Unlock`.
pub(super) fn get(fd: BorrowedFd<'_>, req: &LockRequest) -> FsResult<LockProbe> {
    if req.lock_type == LockType::Unlock {
        return Err(Errno::EINVAL);
    }
    let mut fl = to_flock(req)?;
    loop {
        // SAFETY: `fd` is a live descriptor borrowed for the call; `fl` is a valid,
        // exclusively borrowed `struct flock` that F_OFD_GETLK fills in.
        let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) };
        if r == 0 {
            break;
        }
        match last_errno() {
            Errno::EINTR => continue,
            e => return Err(e),
        }
    }
    if fl.l_type == libc::F_UNLCK as libc::c_short {
        return Ok(LockProbe {
            lock_type: LockType::Unlock,
            ..req.clone()
        });
    }
    Ok(LockProbe {
        lock_type: if fl.l_type == libc::F_RDLCK as libc::c_short {
            LockType::Read
        } else {
            LockType::Write
        },
        start: fl.l_start as u64,
        length: fl.l_len as u64,
        // OFD locks report -1: the owner is an open file, not a process.
        proc_id: u32::try_from(fl.l_pid).unwrap_or(0),
        client_id: Vec::new(),
    })
}
