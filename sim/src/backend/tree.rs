//! Any backend's tree read or emptied through the `Filesystem` API: its dump in MemFs's
//! `dump()` format (compared with the model's at the end of a run), and its removal (for the
//! capacity-conservation check).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use co9p::fs::{Filesystem, Name};
use co9p::protocol::{OpenFlags, Qid};

use crate::model::{fnv, kind_name, page_hash};

/// Any backend's tree, through its API, in MemFs's `dump()` format (see
/// [`co9p::fs::MemFs::dump`]): one line per path, depth-first in byte order of names,
/// `link=` for a second name of a file, sizes and page hashes of contents, xattrs as
/// `name:len:hash`.
pub async fn dump<F: Filesystem>(fs: &F) -> String {
    let mut out = String::new();
    let mut seen = BTreeMap::new();
    match fs.root().await {
        Ok((root, qid)) => dump_dir(fs, root, qid, "", &mut seen, &mut out).await,
        Err(e) => {
            let _ = writeln!(out, "/ unreadable: {e:?}");
        }
    }
    out
}

async fn dump_dir<F: Filesystem>(
    fs: &F,
    dir: F::Node,
    qid: Qid,
    path: &str,
    seen: &mut BTreeMap<u64, String>,
    out: &mut String,
) {
    let shown = if path.is_empty() { "/" } else { path };
    dump_node(fs, &dir, qid, shown, seen, out).await;
    let mut names = Vec::new();
    if let Ok(f) = fs.open(&dir, OpenFlags::RDONLY).await {
        let mut cookie = 0;
        loop {
            match fs.readdir(&f, cookie, 64).await {
                Ok(v) if !v.is_empty() => {
                    cookie = v.last().map_or(cookie, |e| e.next);
                    names.extend(
                        v.into_iter()
                            .map(|e| e.name)
                            .filter(|n| n != b"." && n != b".."),
                    );
                }
                Ok(_) => break,
                Err(e) => {
                    let _ = writeln!(out, "{path}/ unreadable: {e:?}");
                    break;
                }
            }
        }
    }
    names.sort();
    for name in names {
        let child_path = format!("{path}/{}", name.escape_ascii());
        let Ok(n) = Name::new(&name) else { continue };
        let Ok((child, q)) = fs.lookup(&dir, &n).await else {
            let _ = writeln!(out, "{child_path} missing");
            continue;
        };
        if q.ty == co9p::protocol::QidType::DIR {
            Box::pin(dump_dir(fs, child, q, &child_path, seen, out)).await;
        } else {
            dump_node(fs, &child, q, &child_path, seen, out).await;
        }
    }
}

async fn dump_node<F: Filesystem>(
    fs: &F,
    node: &F::Node,
    qid: Qid,
    path: &str,
    seen: &mut BTreeMap<u64, String>,
    out: &mut String,
) {
    if let Some(first) = seen.get(&qid.path) {
        let _ = writeln!(out, "{path} link={first}");
        return;
    }
    seen.insert(qid.path, path.to_string());
    let a = match fs.getattr(node).await {
        Ok(a) => a,
        Err(e) => {
            let _ = writeln!(out, "{path} unreadable: {e:?}");
            return;
        }
    };
    let dtype = match a.mode & crate::model::S_IFMT {
        crate::model::S_IFIFO => 1,
        crate::model::S_IFCHR => 2,
        crate::model::S_IFDIR => 4,
        crate::model::S_IFBLK => 6,
        crate::model::S_IFREG => 8,
        crate::model::S_IFLNK => 10,
        crate::model::S_IFSOCK => 12,
        _ => 0,
    };
    let _ = write!(
        out,
        "{path} {} mode={:04o} uid={} gid={} nlink={}",
        kind_name(dtype),
        a.mode & 0o7777,
        a.uid,
        a.gid,
        a.nlink
    );
    match dtype {
        8 => {
            let data = read_all(fs, node).await;
            let _ = write!(out, " size={} hash={:016x}", a.size, page_hash(&data));
        }
        10 => {
            let t = fs.readlink(node).await.unwrap_or_default();
            let _ = write!(out, " target=\"{}\"", t.escape_ascii());
        }
        1 | 2 | 6 | 12 if a.rdev != 0 => {
            let _ = write!(out, " rdev={:#x}", a.rdev);
        }
        _ => {}
    }
    let list = fs.listxattr(node).await.unwrap_or_default();
    let mut xattrs = Vec::new();
    for name in list.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let v = fs.getxattr(node, name).await.unwrap_or_default();
        xattrs.push(format!(
            "{}:{}:{:016x}",
            name.escape_ascii(),
            v.len(),
            fnv(&v)
        ));
    }
    xattrs.sort();
    if !xattrs.is_empty() {
        let _ = write!(out, " xattrs={{{}}}", xattrs.join(","));
    }
    out.push('\n');
}

/// Removes everything beneath the root, depth first, and the root's xattrs.
pub(super) async fn empty<F: Filesystem>(fs: &F) -> Result<(), String> {
    let (root, _) = fs.root().await.map_err(|e| format!("root: {e:?}"))?;
    empty_dir(fs, &root, "").await?;
    let list = fs.listxattr(&root).await.unwrap_or_default();
    for name in list.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        fs.removexattr(&root, name)
            .await
            .map_err(|e| format!("removexattr /{}: {e:?}", name.escape_ascii()))?;
    }
    Ok(())
}

async fn empty_dir<F: Filesystem>(fs: &F, dir: &F::Node, path: &str) -> Result<(), String> {
    let mut names = Vec::new();
    {
        let f = fs
            .open(dir, OpenFlags::RDONLY)
            .await
            .map_err(|e| format!("open {path}/: {e:?}"))?;
        let mut cookie = 0;
        loop {
            let v = fs
                .readdir(&f, cookie, 64)
                .await
                .map_err(|e| format!("readdir {path}/: {e:?}"))?;
            let Some(last) = v.last() else { break };
            cookie = last.next;
            names.extend(
                v.into_iter()
                    .map(|e| e.name)
                    .filter(|n| n != b"." && n != b".."),
            );
        }
    }
    for name in names {
        let child_path = format!("{path}/{}", name.escape_ascii());
        let n = Name::new(&name).map_err(|e| format!("{child_path}: {e:?}"))?;
        let (child, q) = fs
            .lookup(dir, &n)
            .await
            .map_err(|e| format!("lookup {child_path}: {e:?}"))?;
        let is_dir = q.ty == co9p::protocol::QidType::DIR;
        if is_dir {
            Box::pin(empty_dir(fs, &child, &child_path)).await?;
        }
        drop(child);
        fs.unlink(dir, &n, is_dir)
            .await
            .map_err(|e| format!("unlink {child_path}: {e:?}"))?;
    }
    Ok(())
}

async fn read_all<F: Filesystem>(fs: &F, node: &F::Node) -> Vec<u8> {
    let mut data = Vec::new();
    let Ok(f) = fs.open(node, OpenFlags::RDONLY).await else {
        return data;
    };
    let mut buf = vec![0u8; 65536];
    loop {
        match fs.read(&f, data.len() as u64, &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
    }
    data
}
