//! Extended attributes, by namespace and security model.
//!
//! | namespace | passthrough | mapped-xattr | none |
//! |---|---|---|---|
//! | `user.virtfs.*` (mapped metadata) | hidden | hidden | hidden |
//! | `user.*` | yes | yes | yes |
//! | `system.posix_acl_access`, `system.posix_acl_default` | yes | `EOPNOTSUPP` | `EOPNOTSUPP` |
//! | `security.*`, `trusted.*` | yes (the kernel checks privilege) | `EOPNOTSUPP` | `EOPNOTSUPP` |
//! | anything else | `EOPNOTSUPP` | `EOPNOTSUPP` | `EOPNOTSUPP` |
//!
//! Hidden means: absent from `listxattr`, `ENODATA` on get and remove, `EACCES` on set (as
//! QEMU), in every model, so a guest can never forge mapped ownership. ACLs and
//! `security.*` are passed through only where host ownership is the guest's own
//! (passthrough): under the other models they would grant host users rights by guest ids,
//! or let a guest set host file capabilities.
//!
//! The calls go through `/proc/self/fd/N`, which names the node's inode itself (for a
//! symlink node, the symlink, not its target: the magic link is not followed further).

use rustix::fs::{
    XattrFlags, getxattr, getxattr_query, listxattr, listxattr_query, removexattr, setxattr,
};

use crate::fs::FsResult;
use crate::protocol::Errno;

use super::node::HostNode;
use super::resolve::ProcPath;
use super::security::{SecurityModel, is_private_xattr};
use super::{HostFs, errno};

/// Largest value or list accepted from the host (Linux `XATTR_SIZE_MAX`).
const XATTR_SIZE_MAX: usize = 65536;

enum Access {
    Allowed,
    Hidden,
    Unsupported,
}

fn access(model: SecurityModel, name: &[u8]) -> Access {
    if is_private_xattr(name) {
        return Access::Hidden;
    }
    let passthrough = model == SecurityModel::Passthrough;
    let privileged = name == b"system.posix_acl_access"
        || name == b"system.posix_acl_default"
        || name.starts_with(b"security.")
        || name.starts_with(b"trusted.");
    if name.starts_with(b"user.") || privileged && passthrough {
        Access::Allowed
    } else {
        Access::Unsupported
    }
}

fn check_name(name: &[u8]) -> FsResult<()> {
    if name.is_empty() || name.contains(&0) {
        return Err(Errno::EINVAL);
    }
    if name.len() > 255 {
        return Err(Errno::ERANGE);
    }
    Ok(())
}

/// `Ok` if the guest may use xattr `name`; `hidden` is the answer for our private names.
fn permit(model: SecurityModel, name: &[u8], hidden: Errno) -> FsResult<()> {
    check_name(name)?;
    match access(model, name) {
        Access::Allowed => Ok(()),
        Access::Hidden => Err(hidden),
        Access::Unsupported => Err(Errno::EOPNOTSUPP),
    }
}

impl HostFs {
    pub(super) fn do_getxattr(&self, node: &HostNode, name: &[u8]) -> FsResult<Vec<u8>> {
        permit(self.model, name, Errno::ENODATA)?;
        let fd = self.node_fd(node)?;
        let p = ProcPath::new(fd.raw());
        sized(
            || getxattr_query(p.abs(), name),
            |buf| getxattr(p.abs(), name, buf),
        )
    }

    pub(super) fn do_listxattr(&self, node: &HostNode) -> FsResult<Vec<u8>> {
        let fd = self.node_fd(node)?;
        let p = ProcPath::new(fd.raw());
        let all = sized(|| listxattr_query(p.abs()), |buf| listxattr(p.abs(), buf))?;
        let mut out = Vec::with_capacity(all.len());
        for name in all.split(|&b| b == 0).filter(|n| !n.is_empty()) {
            if let Access::Allowed = access(self.model, name) {
                out.extend_from_slice(name);
                out.push(0);
            }
        }
        Ok(out)
    }

    pub(super) fn do_setxattr(
        &self,
        node: &HostNode,
        name: &[u8],
        value: &[u8],
        flags: u32,
    ) -> FsResult<()> {
        self.writable()?;
        let flags = XattrFlags::from_bits(flags).ok_or(Errno::EINVAL)?;
        permit(self.model, name, Errno::EACCES)?;
        let fd = self.node_fd(node)?;
        let p = ProcPath::new(fd.raw());
        setxattr(p.abs(), name, value, flags).map_err(errno)
    }

    pub(super) fn do_removexattr(&self, node: &HostNode, name: &[u8]) -> FsResult<()> {
        self.writable()?;
        permit(self.model, name, Errno::ENODATA)?;
        let fd = self.node_fd(node)?;
        let p = ProcPath::new(fd.raw());
        removexattr(p.abs(), name).map_err(errno)
    }
}

/// Runs a size-query-then-fetch xattr call, retrying if the value grows in between.
fn sized(
    query: impl Fn() -> rustix::io::Result<usize>,
    call: impl Fn(&mut [u8]) -> rustix::io::Result<usize>,
) -> FsResult<Vec<u8>> {
    for _ in 0..4 {
        let len = query().map_err(errno)?;
        if len > XATTR_SIZE_MAX {
            return Err(Errno::E2BIG);
        }
        let mut buf = vec![0u8; len];
        match call(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(e) if e == rustix::io::Errno::RANGE => continue,
            Err(e) => return Err(errno(e)),
        }
    }
    Err(Errno::ERANGE)
}
