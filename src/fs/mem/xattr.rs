//! Extended attributes: a sorted map of byte names to byte values per inode, bounded in
//! name length, value size and count.

use super::state::State;
use crate::fs::FsResult;
use crate::protocol::{Errno, Timespec};

pub(crate) const XATTR_CREATE: u32 = 1;
pub(crate) const XATTR_REPLACE: u32 = 2;
/// Longest xattr name (Linux `XATTR_NAME_MAX`).
pub(crate) const XATTR_NAME_MAX: usize = 255;

/// `ERANGE` for an empty or too long name (as Linux), `EINVAL` for one with a NUL.
fn check_name(name: &[u8]) -> FsResult<()> {
    if name.is_empty() || name.len() > XATTR_NAME_MAX {
        return Err(Errno::ERANGE);
    }
    if name.contains(&0) {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

impl State {
    pub(super) fn getxattr(&self, ino: u64, name: &[u8]) -> FsResult<Vec<u8>> {
        check_name(name)?;
        self.get(ino)?
            .xattrs
            .get(name)
            .cloned()
            .ok_or(Errno::ENODATA)
    }

    /// Every name, NUL-terminated, in sorted order.
    pub(super) fn listxattr(&self, ino: u64) -> FsResult<Vec<u8>> {
        let mut out = Vec::new();
        for name in self.get(ino)?.xattrs.keys() {
            out.extend_from_slice(name);
            out.push(0);
        }
        Ok(out)
    }

    pub(super) fn setxattr(
        &mut self,
        ino: u64,
        name: &[u8],
        value: &[u8],
        flags: u32,
        now: Timespec,
    ) -> FsResult<()> {
        check_name(name)?;
        if flags & !(XATTR_CREATE | XATTR_REPLACE) != 0 {
            return Err(Errno::EINVAL);
        }
        if value.len() > self.limits.max_xattr_value {
            return Err(Errno::E2BIG);
        }
        let inode = self.get(ino)?;
        let old = inode
            .xattrs
            .get(name)
            .map(|v| (name.len() + v.len()) as u64);
        match old {
            Some(_) if flags & XATTR_CREATE != 0 => return Err(Errno::EEXIST),
            None if flags & XATTR_REPLACE != 0 => return Err(Errno::ENODATA),
            None if inode.xattrs.len() >= self.limits.max_xattrs => return Err(Errno::ENOSPC),
            _ => {}
        }
        let new = (name.len() + value.len()) as u64;
        let old = old.unwrap_or(0);
        if new > old {
            self.charge(new - old)?;
        } else {
            self.uncharge(old - new);
        }
        let inode = self.get_mut(ino)?;
        inode.xattrs.insert(name.to_vec(), value.to_vec());
        inode.ctime = now;
        Ok(())
    }

    pub(super) fn removexattr(&mut self, ino: u64, name: &[u8], now: Timespec) -> FsResult<()> {
        check_name(name)?;
        let inode = self.get_mut(ino)?;
        let value = inode.xattrs.remove(name).ok_or(Errno::ENODATA)?;
        inode.ctime = now;
        self.uncharge((name.len() + value.len()) as u64);
        Ok(())
    }
}
