//! POSIX byte-range locks' checks: Tlock (granted or not as the model says; where the
//! model allows either, a grant is taken into it) and Tgetlock (a lock the model holds
//! against the range, or none).

use co9p::fs::hooked::OpKind as FsOp;
use co9p::protocol::{Fid, LockStatus, LockType, Rmessage};

use super::{Answer, FsCall, Res, Violation, open_file};
use crate::guest::Guest;
use crate::model::Model;

/// The lock range of a request: `end` inclusive, 0 length to the end of the file.
fn lock_end(start: u64, length: u64) -> u64 {
    if length == 0 {
        u64::MAX
    } else {
        start.saturating_add(length - 1)
    }
}

pub(super) fn lock_call(
    c: &mut FsCall,
    m: &mut Model,
    f: Fid,
    ty: LockType,
    start: u64,
    length: u64,
) -> Result<Res, Violation> {
    c.expect(FsOp::Lock)?;
    let (node, flags, owner) = c.open(f);
    let end = lock_end(start, length);
    let zombies = m.zombies.clone();
    let zombie = |o: u64| zombies.contains(&o);
    Ok(Res::Lock(c.effect(Some(true), || {
        m.lock(node, owner, flags, ty, start, end, &zombie)
    })))
}

/// An Rlock's status is the model's (or either, when only closing sessions conflict).
#[allow(clippy::too_many_arguments)]
pub(super) fn lock_reply(
    a: &Answer,
    m: &mut Model,
    g: &Guest,
    fid: Fid,
    ty: LockType,
    start: u64,
    length: u64,
) -> Result<(), Violation> {
    let Rmessage::Lock { status } = a.got else {
        return Err(a.unexpected());
    };
    let Res::Lock(Ok(want)) = a.res() else {
        unreachable!()
    };
    let granted = *status == LockStatus::Success;
    match want {
        Some(w) if *w != granted => {
            return Err(a.fail(format_args!("{status:?}, the model says granted={w}")));
        }
        None if granted => {
            let (node, _, owner) = open_file(g, fid).expect("prechecked");
            m.force_lock(node, owner, ty, start, lock_end(start, length));
        }
        _ => {}
    }
    Ok(())
}

pub(super) fn getlock_call(
    c: &mut FsCall,
    m: &mut Model,
    f: Fid,
    ty: LockType,
    start: u64,
    length: u64,
) -> Result<Res, Violation> {
    c.expect(FsOp::Getlock)?;
    let (node, _, owner) = c.open(f);
    let end = lock_end(start, length);
    Ok(Res::Getlock(m.getlock(node, owner, ty, start, end)))
}

/// An Rgetlock reports one of the model's conflicting locks exactly as it stands (a whole
/// run of its owner's bytes of one type, see `Model::runs`), overlapping the range asked,
/// or `Unlock` when there is none (or when only closing sessions' locks conflict).
pub(super) fn getlock_reply(a: &Answer, start: u64, length: u64) -> Result<(), Violation> {
    let Rmessage::Getlock {
        lock_type,
        start: s,
        length: l,
        ..
    } = a.got
    else {
        return Err(a.unexpected());
    };
    let Res::Getlock(Ok((held, either))) = a.res() else {
        unreachable!()
    };
    let (rs, re) = (start, lock_end(start, length));
    let (gs, ge) = (*s, lock_end(*s, *l));
    let none = *lock_type == LockType::Unlock;
    // The lock reported is one of them exactly (type and range), and meets the range asked.
    let fits = held
        .iter()
        .any(|h| h.ty == *lock_type && h.start == gs && h.end == ge && gs <= re && rs <= ge);
    let ok = match (held.is_empty(), none) {
        (true, true) => true,
        (true, false) => false,
        (false, true) => *either,
        (false, false) => fits,
    };
    if !ok {
        return Err(a.fail(format_args!(
            "{lock_type:?} {s}+{l}; the model's conflicting locks are {held:?}"
        )));
    }
    Ok(())
}
