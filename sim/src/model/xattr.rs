//! The model's extended attributes: which files may hold them, and get, list, set and
//! remove with `setxattr(2)`'s flags.

use co9p::protocol::Errno;

use super::{Backend, Content, Model, NodeId, R};

impl Model {
    /// Whether user xattrs may live on this node: Linux refuses `user.*` on symlinks and
    /// special files (mapped-xattr stores both as regular files, so there they may).
    fn xattr_capable(&self, id: NodeId) -> R<()> {
        match (self.backend, &self.nodes[id].content) {
            (Backend::Mem, _) => Ok(()),
            (b, Content::Symlink(_) | Content::Special) if !b.mapped() => Err(Errno::EPERM),
            _ => Ok(()),
        }
    }

    pub fn getxattr(&self, id: NodeId, name: &[u8]) -> R<Vec<u8>> {
        if name.is_empty() {
            return Err(Errno::ERANGE);
        }
        if self.xattr_capable(id).is_err() {
            return Err(Errno::ENODATA);
        }
        self.nodes[id]
            .xattrs
            .get(name)
            .cloned()
            .ok_or(Errno::ENODATA)
    }

    pub fn listxattr(&self, id: NodeId) -> Vec<u8> {
        let mut out = Vec::new();
        for k in self.nodes[id].xattrs.keys() {
            out.extend_from_slice(k);
            out.push(0);
        }
        out
    }

    pub fn setxattr(&mut self, id: NodeId, name: &[u8], value: &[u8], flags: u32) -> R<()> {
        self.xattr_capable(id)?;
        let n = &mut self.nodes[id];
        let exists = n.xattrs.contains_key(name);
        if exists && flags & 1 != 0 {
            return Err(Errno::EEXIST);
        }
        if !exists && flags & 2 != 0 {
            return Err(Errno::ENODATA);
        }
        n.xattrs.insert(name.to_vec(), value.to_vec());
        Ok(())
    }

    pub fn removexattr(&mut self, id: NodeId, name: &[u8]) -> R<()> {
        self.xattr_capable(id)?;
        self.nodes[id]
            .xattrs
            .remove(name)
            .map(drop)
            .ok_or(Errno::ENODATA)
    }
}
