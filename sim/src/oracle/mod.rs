//! The judge of single requests: what each filesystem call of a request should answer (the
//! model stepped at the moment the call ran), and whether the reply agrees with what 9P
//! and POSIX say it must be (fid checks, then the calls, then the reply).
//!
//! The judge never reads the server's bookkeeping. What a fid names is the model's own
//! record ([`crate::guest::MFid`]): the file (by identity) and the entry it was reached by,
//! which moves when a rename through its session takes effect ([`Effect::Renamed`]), at
//! that moment — not when the rename's reply comes back.
//!
//! A request is judged in three phases, each a dispatch below with one line per message:
//! `precheck` (the handler's early answer, before any filesystem call), [`on_fs`] (each
//! filesystem call it makes, which steps the model) and [`on_reply`] (the reply, and the
//! fid-table change it shows). Each message's checks of all three live in one file, one
//! per family as the server's `handlers/` has them:
//!
//! | message | file |
//! |---|---|
//! | Tversion, Tauth, Tattach | `session.rs` |
//! | Twalk | `walk.rs` |
//! | Tlopen, Tlcreate, Tread, Twrite, Treaddir, Tfsync | `file.rs` (passes: `passes.rs`) |
//! | Tclunk, Tremove | `clunk.rs` |
//! | Tmkdir, Tsymlink, Tmknod, Tlink, Trename, Trenameat, Tunlinkat, Treadlink | `dir.rs` |
//! | Tgetattr, Tsetattr, Tstatfs | `attr.rs` |
//! | Txattrwalk, Txattrcreate | `xattr.rs` |
//! | Tlock, Tgetlock | `lock.rs` |
//!
//! The records it keeps (requests, calls, answers, effects, violations) are in `types.rs`.

use co9p::fs::hooked::OpKind as FsOp;
use co9p::protocol::{Errno, Fid, OpenFlags, Qid, Rmessage, Tmessage};

use crate::guest::{DirEntry, FidOpen, Guest, MFid};
use crate::journal::{FsEvent, Outcome};
use crate::model::{Maker, Model, NodeId, R};

mod attr;
mod clunk;
mod dir;
mod file;
mod lock;
mod passes;
mod session;
mod types;
mod walk;
mod xattr;
pub use passes::Passes;
pub use types::{Call, Effect, Req, Res, Show, Violation};
pub use walk::{WalkNext, WalkState, walk_state};

/// The largest xattr value a client may create or read: Linux's `XATTR_SIZE_MAX`, which
/// the server promises (E2BIG beyond). Stated here, not read from the server, so a server
/// whose own limit drifts disagrees with the model.
pub const XATTR_SIZE_MAX: u64 = 64 * 1024;

/// The exported path the world gives the server: an aname naming it attaches to the
/// export's root, as "" and "/" do (a client may mount by the host path it was told).
pub const EXPORT_NAME: &[u8] = b"/srv/sim";

// ---- the fid rules every handler starts with ----

/// The node of `fid` and its state (for pre-checks), or the handler's `ENOENT`.
fn fid(g: &Guest, f: Fid) -> Result<&MFid, Errno> {
    g.fids.get(&f.0).ok_or(Errno::ENOENT)
}

/// `fid` names a directory, or the handler's `ENOTDIR`.
fn dir_of(g: &Guest, m: &Model, f: Fid) -> Result<NodeId, Errno> {
    let e = fid(g, f)?;
    if m.node(e.node).is_dir() {
        Ok(e.node)
    } else {
        Err(Errno::ENOTDIR)
    }
}

/// `fid` is a file opened by Tlopen/Tlcreate, or the handler's `EBADF`.
fn open_file(g: &Guest, f: Fid) -> Result<(NodeId, OpenFlags, u64), Errno> {
    let e = fid(g, f)?;
    match e.open {
        FidOpen::File { flags, owner } => Ok((e.node, flags, owner)),
        _ => Err(Errno::EBADF),
    }
}

// ---- phase 1: before any filesystem call ----

/// What the handler decides before any filesystem call: `Err` is its early reply.
fn precheck(g: &Guest, m: &Model, msg: &Tmessage) -> Result<(), Errno> {
    use Tmessage as T;
    match msg {
        T::Lerror {} => Err(Errno::EOPNOTSUPP),
        T::Version { .. } | T::Flush { .. } => Ok(()),
        T::Auth { .. } => Err(Errno::ENOENT),
        T::Attach { afid, .. } => session::attach_pre(*afid),
        T::Walk { fid, newfid, .. } => walk::walk_pre(g, *fid, *newfid),
        T::Lopen { fid, .. } => file::lopen_pre(g, *fid),
        T::Lcreate { fid, name, .. } => file::lcreate_pre(g, m, *fid, name.as_bytes()),
        T::Read { fid, .. } => file::read_pre(g, *fid),
        T::Write { fid, offset, data } => file::write_pre(g, *fid, *offset, &data.0),
        T::Readdir { fid, .. } | T::Fsync { fid, .. } => open_file(g, *fid).map(drop),
        T::Mkdir { dfid, name, .. } => dir::make_pre(g, m, *dfid, name.as_bytes()),
        T::Mknod {
            dfid,
            name,
            major,
            minor,
            ..
        } => {
            dir::make_pre(g, m, *dfid, name.as_bytes())?;
            dir::mknod_pre(*major, *minor)
        }
        T::Symlink { fid, name, .. } => dir::make_pre(g, m, *fid, name.as_bytes()),
        T::Link { dfid, fid, name } => dir::link_pre(g, m, *dfid, *fid, name.as_bytes()),
        T::Rename { fid, dfid, name } => dir::rename_pre(g, m, *fid, *dfid, name.as_bytes()),
        T::Renameat {
            olddirfid,
            oldname,
            newdirfid,
            newname,
        } => dir::renameat_pre(
            g,
            m,
            *olddirfid,
            oldname.as_bytes(),
            *newdirfid,
            newname.as_bytes(),
        ),
        T::Unlinkat {
            dirfid,
            name,
            flags,
        } => dir::unlinkat_pre(g, m, *dirfid, name.as_bytes(), *flags),
        T::Readlink { fid } => self::fid(g, *fid).map(drop),
        T::Getattr { fid, .. } | T::Setattr { fid, .. } | T::Statfs { fid } => {
            self::fid(g, *fid).map(drop)
        }
        T::Xattrwalk { fid, newfid, .. } => xattr::xattrwalk_pre(g, *fid, *newfid),
        T::Xattrcreate {
            fid,
            name,
            attr_size,
            flags,
        } => xattr::xattrcreate_pre(g, *fid, name.as_bytes(), *attr_size, *flags),
        T::Lock { fid, .. } | T::Getlock { fid, .. } => open_file(g, *fid).map(drop),
        T::Remove { fid } => self::fid(g, *fid).map(drop),
        T::Clunk { fid } => clunk::clunk_pre(g, *fid),
    }
}

/// The filesystem calls a request makes after its pre-checks, given the calls so far:
/// `true` once the handler has made its last one.
fn calls_done(g: &Guest, msg: &Tmessage, calls: &[Call]) -> bool {
    use Tmessage as T;
    let made = !calls.is_empty();
    let open = |f: &Fid| g.fids.get(&f.0).map(|e| &e.open);
    match msg {
        T::Attach { .. } => session::attach_done(g, msg, calls),
        T::Walk { wnames, .. } => walk::walk_done(g, msg, calls, wnames.len()),
        // Reading or writing an xattr's buffer makes no call; Txattrcreate never does; a
        // Tremove of no name fails EBUSY without one; a Tclunk calls only to set an xattr.
        T::Read { fid, .. } => made || matches!(open(fid), Some(FidOpen::XattrRead { .. })),
        T::Write { fid, .. } => made || matches!(open(fid), Some(FidOpen::XattrWrite { .. })),
        T::Xattrcreate { .. } => true,
        T::Remove { fid } => made || g.fids.get(&fid.0).is_some_and(|e| e.entry.is_none()),
        T::Clunk { fid } => made || !matches!(open(fid), Some(FidOpen::XattrWrite { .. })),
        _ => made,
    }
}

/// Whether the request must be answered: its handler made its last call (nothing can
/// cancel it after that) — judged with the fid table of its own session.
pub fn must_reply(g: &Guest, req: &Req) -> bool {
    !req.calls.is_empty() && calls_done(g, &req.msg, &req.calls)
}

// ---- phase 2: each filesystem call ----

/// One filesystem call of a request, as its message's checker steps the model for it.
struct FsCall<'a> {
    g: &'a Guest,
    ev: &'a FsEvent,
    msg: &'a Tmessage,
    /// The request's calls before this one.
    calls: &'a [Call],
    conn: usize,
    /// The call ran (no fault before it): the model takes its effect.
    ran: bool,
    /// The entry the fid being made will record ([`Req::entry`]).
    entry: &'a mut Option<Option<DirEntry>>,
    effects: Vec<Effect>,
}

impl FsCall<'_> {
    /// The handler makes call `op` here; any other is the server's mistake.
    fn expect(&self, op: FsOp) -> Result<(), Violation> {
        if self.ev.op == op {
            Ok(())
        } else {
            Err(Violation::model(format!(
                "unexpected filesystem call {:?} for {}",
                self.ev.op,
                Show(self.msg)
            )))
        }
    }

    /// A call this message makes at no point.
    fn stray(&self, why: &str) -> Violation {
        Violation::model(format!("filesystem call {:?} {why}", self.ev.op))
    }

    /// The model's answer to a call that changes the tree: `step`'s if the call ran,
    /// else `skipped` (a fault before it: nothing happened, and the fault is the answer).
    fn effect<T>(&self, skipped: T, step: impl FnOnce() -> R<T>) -> R<T> {
        if self.ran { step() } else { Ok(skipped) }
    }

    /// The call added, removed or replaced `entry`, if it ran and succeeded.
    fn touched<T>(&mut self, r: &R<T>, entry: DirEntry) {
        if r.is_ok() && self.ran {
            self.effects.push(Effect::Touched(entry));
        }
    }

    /// A rename's effects: names touched if it happened; the session's records move only
    /// if it was also reported done (a fault after the effect leaves them where they were).
    fn renamed(&mut self, r: &R<()>, from: DirEntry, to: DirEntry) {
        if !(self.ran && r.is_ok()) {
            return;
        }
        self.effects.push(Effect::Touched(from.clone()));
        self.effects.push(Effect::Touched(to.clone()));
        if matches!(self.ev.outcome, Outcome::Done { ok: true }) {
            let conn = self.conn;
            self.effects.push(Effect::Renamed { conn, from, to });
        }
    }

    /// The fid `f` (prechecked: it is there).
    fn fid(&self, f: Fid) -> &MFid {
        &self.g.fids[&f.0]
    }

    /// The open file of fid `f` (prechecked: it is one), its open flags and lock owner.
    fn open(&self, f: Fid) -> (NodeId, OpenFlags, u64) {
        open_file(self.g, f).expect("prechecked")
    }

    /// Who makes a file through fid `f`: its attach uid, and the request's `gid`.
    fn by(&self, f: Fid, gid: u32) -> Maker {
        Maker {
            uid: self.fid(f).uid,
            gid,
        }
    }
}

/// Steps the model for one filesystem call of `req`; returns what else it changed.
pub fn on_fs(
    m: &mut Model,
    g: &Guest,
    req: &mut Req,
    ev: &FsEvent,
) -> Result<Vec<Effect>, Violation> {
    use Tmessage as T;
    if precheck(g, m, &req.msg).is_err() || calls_done(g, &req.msg, &req.calls) {
        return Err(Violation::model(format!(
            "filesystem call {:?} after the handler should have returned: {}",
            ev.op,
            Show(&req.msg)
        )));
    }
    let mut c = FsCall {
        g,
        ev,
        msg: &req.msg,
        calls: &req.calls,
        conn: req.conn,
        ran: ev.outcome.ran(),
        entry: &mut req.entry,
        effects: Vec::new(),
    };
    let c = &mut c;
    let res = match &req.msg {
        T::Attach { aname, .. } => session::attach_call(c, m, aname.as_bytes())?,
        T::Walk { wnames, .. } => walk::walk_call(c, m, wnames)?,
        T::Lopen { fid, flags } => file::lopen_call(c, m, *fid, *flags)?,
        T::Lcreate {
            fid,
            name,
            flags,
            mode,
            gid,
        } => file::lcreate_call(c, m, *fid, name.as_bytes(), *flags, *mode, *gid)?,
        T::Read { fid, offset, count } => file::read_call(c, m, *fid, *offset, *count)?,
        T::Write { fid, offset, data } => file::write_call(c, m, *fid, *offset, &data.0)?,
        T::Readdir { fid, offset, count } => file::readdir_call(c, m, *fid, *offset, *count)?,
        T::Fsync { .. } => file::fsync_call(c)?,
        T::Statfs { .. } => attr::statfs_call(c)?,
        T::Mkdir {
            dfid,
            name,
            mode,
            gid,
        } => dir::mkdir_call(c, m, *dfid, name.as_bytes(), *mode, *gid)?,
        T::Mknod {
            dfid,
            name,
            mode,
            major,
            minor,
            gid,
        } => dir::mknod_call(c, m, *dfid, name.as_bytes(), *mode, (*major, *minor), *gid)?,
        T::Symlink {
            fid,
            name,
            symtgt,
            gid,
        } => dir::symlink_call(c, m, *fid, name.as_bytes(), symtgt.as_bytes(), *gid)?,
        T::Link { dfid, fid, name } => dir::link_call(c, m, *dfid, *fid, name.as_bytes())?,
        T::Renameat {
            olddirfid,
            oldname,
            newdirfid,
            newname,
        } => dir::renameat_call(
            c,
            m,
            (*olddirfid, oldname.as_bytes()),
            (*newdirfid, newname.as_bytes()),
        )?,
        T::Rename { fid, dfid, name } => dir::rename_call(c, m, *fid, *dfid, name.as_bytes())?,
        T::Unlinkat {
            dirfid,
            name,
            flags,
        } => dir::unlinkat_call(c, m, *dirfid, name.as_bytes(), *flags)?,
        T::Remove { fid } => clunk::remove_call(c, m, *fid)?,
        T::Readlink { fid } => dir::readlink_call(c, m, *fid)?,
        T::Getattr { fid, .. } => attr::getattr_call(c, m, *fid)?,
        T::Setattr { fid, attr } => attr::setattr_call(c, m, *fid, attr)?,
        T::Xattrwalk { fid, name, .. } => xattr::xattrwalk_call(c, m, *fid, name.as_bytes())?,
        T::Clunk { fid } => clunk::clunk_call(c, m, *fid)?,
        T::Lock {
            fid,
            lock_type,
            start,
            length,
            ..
        } => lock::lock_call(c, m, *fid, *lock_type, *start, *length)?,
        T::Getlock {
            fid,
            lock_type,
            start,
            length,
            ..
        } => lock::getlock_call(c, m, *fid, *lock_type, *start, *length)?,
        other => {
            return Err(Violation::model(format!(
                "filesystem call {:?} from {}",
                ev.op,
                Show(other)
            )));
        }
    };
    let effects = std::mem::take(&mut c.effects);
    // A fault after the effect is injected only after the backend succeeded.
    let backend_ok = match ev.outcome {
        Outcome::Done { ok } => Some(ok),
        Outcome::FaultAfter(_) => Some(true),
        Outcome::FaultBefore(_) => None,
    };
    if let Some(ok) = backend_ok
        && ok != res.ok()
    {
        return Err(Violation::model(format!(
            "the backend {} {:?} for {} but the model says {:?}",
            if ok { "did" } else { "refused" },
            ev.op,
            Show(&req.msg),
            res
        )));
    }
    req.calls.push(Call {
        op: ev.op,
        outcome: ev.outcome,
        res,
    });
    Ok(effects)
}

// ---- phase 3: the reply ----

/// A reply being judged, for its message's checker.
struct Answer<'a> {
    req: &'a Req,
    got: &'a Rmessage,
    /// `reply to T...`: what every complaint starts with.
    what: String,
    /// The request's last filesystem call.
    last: Option<&'a Call>,
    /// The entry a new fid records: decided by its call, moved by renames since.
    entry: Option<DirEntry>,
}

impl Answer<'_> {
    /// The complaint `detail` about this reply.
    fn fail(&self, detail: impl std::fmt::Display) -> Violation {
        Violation::model(format!("{}: {detail}", self.what))
    }

    /// The reply must be `Rlerror(e)`.
    fn error(&self, e: Errno) -> Result<(), Violation> {
        match self.got {
            Rmessage::Lerror { ecode } if *ecode == e => Ok(()),
            got => Err(self.fail(format_args!("expected Rlerror({e:?}), got {}", Show(got)))),
        }
    }

    /// A reply of a kind this request is never answered with.
    fn unexpected(&self) -> Violation {
        self.fail(format_args!("unexpected {}", Show(self.got)))
    }

    /// A reply with nothing to judge but its kind (`is`: whether it is the right one).
    fn bare(&self, is: bool) -> Result<(), Violation> {
        if is { Ok(()) } else { Err(self.unexpected()) }
    }

    /// The reply's qid names model node `node` (whose inode number it learns, once).
    fn qid(&self, m: &mut Model, node: NodeId, q: &Qid) -> Result<(), Violation> {
        if q.ty.0 != m.node(node).qid_type() || !m.learn_ino(node, q.path) {
            return Err(self.fail(format_args!("qid {q:?} does not name model node {node}")));
        }
        Ok(())
    }

    /// The model's answer to the last call (which succeeded: the reply is not an error).
    fn res(&self) -> &Res {
        &self.last.expect("a call made").res
    }

    /// The node the last call made or found.
    fn node(&self) -> NodeId {
        match self.res() {
            Res::Node(Ok(node)) => *node,
            _ => unreachable!(),
        }
    }

    /// The bytes the last call read.
    fn data(&self) -> &Vec<u8> {
        match self.res() {
            Res::Data(Ok(d)) => d,
            _ => unreachable!(),
        }
    }
}

/// Judges a reply and applies what it shows to the client's fid table.
pub fn on_reply(m: &mut Model, g: &mut Guest, req: &Req, got: &Rmessage) -> Result<(), Violation> {
    use Rmessage as R;
    use Tmessage as T;
    let a = Answer {
        req,
        got,
        what: format!("reply to {}", Show(&req.msg)),
        last: req.calls.last(),
        entry: req.entry.clone().flatten(),
    };
    if let Err(e) = precheck(g, m, &req.msg) {
        if !req.calls.is_empty() {
            return Err(a.fail(format_args!("filesystem calls made despite {e:?}")));
        }
        if let T::Clunk { fid } = &req.msg
            && e == Errno::EINVAL
        {
            // The xattr was never set, but the fid is gone all the same.
            g.fids.remove(&fid.0);
            g.passes.forget(fid.0);
        }
        return a.error(e);
    }
    if !calls_done(g, &req.msg, &req.calls) {
        return Err(a.fail(format_args!(
            "answered {} before its filesystem calls were made ({} so far)",
            Show(got),
            req.calls.len()
        )));
    }
    // Walks answer partial progress; every other failed call is the reply.
    if !matches!(
        req.msg,
        T::Walk { .. } | T::Clunk { .. } | T::Remove { .. } | T::Attach { .. }
    ) && let Some(e) = a.last.and_then(Call::error)
    {
        return a.error(e);
    }
    match &req.msg {
        T::Attach {
            fid,
            n_uname,
            aname,
            ..
        } => session::attach_reply(&a, m, g, *fid, *n_uname, aname.as_bytes()),
        T::Walk {
            fid,
            newfid,
            wnames,
        } => walk::walk_reply(&a, m, g, *fid, *newfid, wnames.len()),
        T::Lopen { fid, flags } => file::lopen_reply(&a, m, g, *fid, *flags),
        T::Lcreate { fid, flags, .. } => file::lcreate_reply(&a, m, g, *fid, *flags),
        T::Read { fid, offset, count } => file::read_reply(&a, g, *fid, *offset, *count),
        T::Write { fid, offset, data } => file::write_reply(&a, g, *fid, *offset, &data.0),
        T::Readdir { fid, offset, count } => file::readdir_reply(&a, m, g, *fid, *offset, *count),
        T::Fsync { .. } => a.bare(matches!(got, R::Fsync {})),
        T::Statfs { .. } => attr::statfs_reply(&a),
        T::Mkdir { .. } | T::Mknod { .. } | T::Symlink { .. } => dir::made_reply(&a, m),
        T::Renameat { .. } => a.bare(matches!(got, R::Renameat {})),
        T::Rename { .. } => a.bare(matches!(got, R::Rename {})),
        T::Link { .. } => a.bare(matches!(got, R::Link {})),
        T::Unlinkat { .. } => a.bare(matches!(got, R::Unlinkat {})),
        T::Readlink { .. } => dir::readlink_reply(&a),
        T::Getattr { .. } => attr::getattr_reply(&a, m),
        T::Setattr { .. } => a.bare(matches!(got, R::Setattr {})),
        T::Xattrwalk { fid, newfid, name } => {
            xattr::xattrwalk_reply(&a, g, *fid, *newfid, name.as_bytes().is_empty())
        }
        T::Xattrcreate {
            fid,
            name,
            attr_size,
            flags,
        } => xattr::xattrcreate_reply(&a, g, *fid, name.as_bytes(), *attr_size, *flags),
        T::Remove { fid } => clunk::remove_reply(&a, m, g, *fid),
        T::Clunk { fid } => clunk::clunk_reply(&a, m, g, *fid),
        T::Lock {
            fid,
            lock_type,
            start,
            length,
            ..
        } => lock::lock_reply(&a, m, g, *fid, *lock_type, *start, *length),
        T::Getlock { start, length, .. } => lock::getlock_reply(&a, *start, *length),
        T::Version { .. } | T::Flush { .. } | T::Auth { .. } | T::Lerror {} => Err(a.unexpected()),
    }
}
