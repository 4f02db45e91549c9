//! [`MemFs::dump`]: the whole tree as a deterministic text, for comparing final states
//! with a reference model.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::MemFs;
use super::data::Fnv;
use super::inode::Content;
use super::state::{ROOT_INO, State};

impl MemFs {
    /// One line per path, depth-first in byte order of names:
    ///
    /// ```text
    /// / dir mode=0755 uid=0 gid=0 nlink=3
    /// /a file mode=0644 uid=0 gid=0 nlink=2 size=5 hash=8c5e2f4d0b1a3c7e xattrs={user.k:3:...}
    /// /b link=/a
    /// /d dir mode=0755 uid=0 gid=0 nlink=2
    /// /l symlink mode=0777 uid=0 gid=0 nlink=1 target="a"
    /// ```
    ///
    /// A second name of a hard-linked inode says `link=` and the first path it was seen
    /// at. Inode numbers and timestamps are left out (a model need not predict them);
    /// contents appear as a size and an FNV-1a hash, xattrs as `name:len:hash`. Unlinked
    /// inodes still held open are not listed.
    pub fn dump(&self) -> String {
        let st = self.state();
        let mut out = String::new();
        let mut seen = BTreeMap::new();
        dump_dir(&st, ROOT_INO, "", &mut seen, &mut out);
        out
    }
}

fn dump_dir(
    st: &State,
    ino: u64,
    path: &str,
    seen: &mut BTreeMap<u64, String>,
    out: &mut String,
) {
    let shown = if path.is_empty() { "/" } else { path };
    dump_inode(st, ino, shown, seen, out);
    let Some(dir) = st.inodes.get(&ino).and_then(|i| i.dir()) else {
        return;
    };
    for (name, child) in dir.by_name() {
        let child_path = format!("{path}/{}", name.escape_ascii());
        if st.inodes.get(&child).is_some_and(|i| i.is_dir()) {
            dump_dir(st, child, &child_path, seen, out);
        } else {
            dump_inode(st, child, &child_path, seen, out);
        }
    }
}

fn dump_inode(
    st: &State,
    ino: u64,
    path: &str,
    seen: &mut BTreeMap<u64, String>,
    out: &mut String,
) {
    if let Some(first) = seen.get(&ino) {
        let _ = writeln!(out, "{path} link={first}");
        return;
    }
    seen.insert(ino, path.to_string());
    let Some(i) = st.inodes.get(&ino) else {
        let _ = writeln!(out, "{path} missing");
        return;
    };
    let kind = match (&i.content, i.dtype()) {
        (Content::File(_), _) => "file",
        (Content::Dir(_), _) => "dir",
        (Content::Symlink(_), _) => "symlink",
        (Content::Special, 1) => "fifo",
        (Content::Special, 12) => "socket",
        (Content::Special, 2) => "chardev",
        (Content::Special, 6) => "blockdev",
        (Content::Special, _) => "special",
    };
    let _ = write!(
        out,
        "{path} {kind} mode={:04o} uid={} gid={} nlink={}",
        i.mode & 0o7777,
        i.uid,
        i.gid,
        i.nlink
    );
    match &i.content {
        Content::File(d) => {
            let _ = write!(out, " size={} hash={:016x}", d.size(), d.hash());
        }
        Content::Symlink(t) => {
            let _ = write!(out, " target=\"{}\"", t.escape_ascii());
        }
        Content::Special if i.rdev != 0 => {
            let _ = write!(out, " rdev={:#x}", i.rdev);
        }
        _ => {}
    }
    if !i.xattrs.is_empty() {
        let list: Vec<String> = i
            .xattrs
            .iter()
            .map(|(k, v)| format!("{}:{}:{:016x}", k.escape_ascii(), v.len(), Fnv::of(v)))
            .collect();
        let _ = write!(out, " xattrs={{{}}}", list.join(","));
    }
    out.push('\n');
}
