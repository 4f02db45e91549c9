//! The model rendered in MemFs's `dump()` format, for the final-state comparison.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{Content, Model, NodeId, ROOT};

impl Model {
    /// The tree in MemFs's dump format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut seen = BTreeMap::new();
        self.render_dir(ROOT, "", &mut seen, &mut out);
        out
    }

    fn render_dir(
        &self,
        id: NodeId,
        path: &str,
        seen: &mut BTreeMap<NodeId, String>,
        out: &mut String,
    ) {
        self.render_node(id, if path.is_empty() { "/" } else { path }, seen, out);
        let Some(d) = self.nodes[id].dir() else {
            return;
        };
        for (name, &(child, _)) in &d.by_name {
            let p = format!("{path}/{}", name.escape_ascii());
            if self.nodes[child].is_dir() {
                self.render_dir(child, &p, seen, out);
            } else {
                self.render_node(child, &p, seen, out);
            }
        }
    }

    fn render_node(
        &self,
        id: NodeId,
        path: &str,
        seen: &mut BTreeMap<NodeId, String>,
        out: &mut String,
    ) {
        if let Some(first) = seen.get(&id) {
            let _ = writeln!(out, "{path} link={first}");
            return;
        }
        seen.insert(id, path.to_string());
        let n = &self.nodes[id];
        let kind = kind_name(n.dtype());
        let _ = write!(
            out,
            "{path} {kind} mode={:04o} uid={} gid={} nlink={}",
            n.mode & 0o7777,
            n.uid,
            n.gid,
            n.nlink
        );
        match &n.content {
            Content::File(d) => {
                let _ = write!(out, " size={} hash={:016x}", d.len(), page_hash(d));
            }
            Content::Symlink(t) => {
                let _ = write!(out, " target=\"{}\"", t.escape_ascii());
            }
            Content::Special if n.rdev != 0 => {
                let _ = write!(out, " rdev={:#x}", n.rdev);
            }
            _ => {}
        }
        if !n.xattrs.is_empty() {
            let list: Vec<String> = n
                .xattrs
                .iter()
                .map(|(k, v)| format!("{}:{}:{:016x}", k.escape_ascii(), v.len(), fnv(v)))
                .collect();
            let _ = write!(out, " xattrs={{{}}}", list.join(","));
        }
        out.push('\n');
    }
}

/// The kind word of a dump line for a `DT_*` type.
pub fn kind_name(dtype: u8) -> &'static str {
    match dtype {
        8 => "file",
        4 => "dir",
        10 => "symlink",
        1 => "fifo",
        12 => "socket",
        2 => "chardev",
        6 => "blockdev",
        _ => "special",
    }
}

fn fnv_eat(h: &mut u64, bytes: &[u8]) {
    for &b in bytes {
        *h ^= u64::from(b);
        *h = h.wrapping_mul(0x0100_0000_01b3);
    }
}

pub fn fnv(bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325;
    fnv_eat(&mut h, bytes);
    h
}

/// MemFs's content hash: the size, then each 4 KiB page holding a non-zero byte.
pub fn page_hash(d: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325;
    fnv_eat(&mut h, &(d.len() as u64).to_le_bytes());
    for (idx, chunk) in d.chunks(4096).enumerate() {
        if chunk.iter().any(|&b| b != 0) {
            let mut page = [0u8; 4096];
            page[..chunk.len()].copy_from_slice(chunk);
            fnv_eat(&mut h, &(idx as u64).to_le_bytes());
            fnv_eat(&mut h, &page);
        }
    }
    h
}
