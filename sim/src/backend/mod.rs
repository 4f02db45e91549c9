//! The filesystem under the fault hook: MemFs, or HostFs — the backend production serves —
//! on a scratch directory (tmpfs where there is one), in one of its security models.
//!
//! HostFs answers with numbers the host assigns: inode numbers (qid paths), times (qid
//! versions, attributes) and free space. The wrapper maps them to stable ones before the
//! server sees them — qid paths to a counter in order of first appearance, versions and
//! times to 0, statfs counts to fixed values — so the trace, its hash and the replies of a
//! seed are the same on every run on one machine. (Readdir cookies are the kernel's `d_off`,
//! which tmpfs assigns per directory in a fixed order.)
//!
//! [`dump`] renders any backend's tree through the `Filesystem` API in MemFs's `dump()`
//! format, so the final state of a HostFs run is compared with the model exactly as a
//! MemFs run's is.

use std::collections::BTreeMap;
use std::io::{IoSlice, IoSliceMut};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use co9p::fs::host::{HostFile, HostNode, HostOptions, SecurityModel};
use co9p::fs::mem::{MemFile, MemNode};
use co9p::fs::{
    Creds, DirEntry, Filesystem, FsResult, HostFs, LockOutcome, LockProbe, LockRequest, MemFs, Name,
};
use co9p::protocol::{Attr, OpenFlags, Qid, SetAttr, StatFs, Timespec};

use crate::model::Backend;

mod tree;
pub use tree::dump;
use tree::empty;

/// A backend of the simulation.
pub enum SimFs {
    Mem(MemFs),
    Host(Box<HostBackend>),
}

/// HostFs on its scratch directory, which goes when this does.
pub struct HostBackend {
    fs: HostFs,
    stable: Mutex<BTreeMap<u64, u64>>,
    dir: Scratch,
}

/// A directory removed (with everything in it) when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[derive(Clone, Debug)]
pub enum SimNode {
    Mem(MemNode),
    Host(HostNode),
}

pub enum SimFile {
    Mem(MemFile),
    Host(HostFile),
}

/// Where HostFs runs get their scratch directories, and which security models work
/// there (mapped-xattr needs user xattrs; passthrough and none need root to give files
/// the guests' owners). Worked out once per process.
pub struct HostSupport {
    pub base: PathBuf,
    pub models: Vec<SecurityModel>,
    /// Why HostFs (or some model) is not offered, to print.
    pub note: Option<String>,
}

pub fn host_support() -> &'static HostSupport {
    static S: std::sync::OnceLock<HostSupport> = std::sync::OnceLock::new();
    S.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let mut notes = Vec::new();
        if base != shm {
            notes.push(format!("no /dev/shm: HostFs runs on {}", base.display()));
        }
        let probe = base.join(format!("co9p-sim-probe-{}", std::process::id()));
        let xattrs = std::fs::create_dir_all(&probe).is_ok() && {
            let r = HostFs::new(
                &probe,
                HostOptions {
                    security_model: SecurityModel::MappedXattr,
                    ..HostOptions::default()
                },
            );
            r.is_ok()
        };
        let _ = std::fs::remove_dir_all(&probe);
        let root = {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
        };
        let mut models = Vec::new();
        if root {
            models.push(SecurityModel::Passthrough);
            models.push(SecurityModel::None);
        } else {
            notes.push(
                "not root: passthrough and none cannot give files the guests' owners; skipped"
                    .into(),
            );
        }
        if xattrs {
            models.push(SecurityModel::MappedXattr);
        } else {
            notes.push(format!(
                "{} has no user xattrs: mapped-xattr skipped",
                base.display()
            ));
        }
        HostSupport {
            base,
            models,
            note: (!notes.is_empty()).then(|| notes.join("; ")),
        }
    })
}

impl SimFs {
    pub fn mem() -> SimFs {
        SimFs::Mem(MemFs::new())
    }

    /// MemFs with `limits` (the `limits` knob's small ones).
    pub fn mem_with(limits: co9p::fs::mem::Limits) -> SimFs {
        SimFs::Mem(MemFs::with_limits(limits))
    }

    /// HostFs on a fresh scratch directory, in `model`.
    pub fn host(model: SecurityModel, tag: &str) -> std::io::Result<SimFs> {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let s = host_support();
        let dir = s
            .base
            .join(format!("co9p-sim-{}-{tag}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let dir = Scratch(dir);
        let fs = HostFs::new(
            &dir.0,
            HostOptions {
                security_model: model,
                ..HostOptions::default()
            },
        )?;
        Ok(SimFs::Host(Box::new(HostBackend {
            fs,
            stable: Mutex::new(BTreeMap::new()),
            dir,
        })))
    }

    pub fn backend(&self) -> Backend {
        match self {
            SimFs::Mem(_) => Backend::Mem,
            SimFs::Host(h) => Backend::Host(h.fs.security_model()),
        }
    }

    /// Inodes (MemFs) or descriptors (HostFs, the root's and the lookup cache's left
    /// out) still held: what must come down to the final tree's once nothing is open.
    pub fn held(&self) -> u64 {
        match self {
            SimFs::Mem(m) => m.inode_count(),
            SimFs::Host(h) => {
                h.fs.drop_cached_nodes();
                h.fs.fds_in_use() as u64
            }
        }
    }

    /// The tree in MemFs's `dump()` format, read through the `Filesystem` API (MemFs's
    /// own dump must say the same: checked at the end of every MemFs run).
    pub fn dump(&self) -> String {
        co9p::co::block_on(dump(self))
    }

    /// MemFs's own dump, for MemFs runs.
    pub fn mem_dump(&self) -> Option<String> {
        match self {
            SimFs::Mem(m) => Some(m.dump()),
            SimFs::Host(_) => None,
        }
    }

    /// MemFs's capacity accounting is conserved: with the whole tree removed through the
    /// API (and the root's xattrs), what it charges comes back to a fresh MemFs's, the root
    /// alone. A charge never uncharged, uncharged twice or by another amount than was
    /// charged shows here, whatever the tree held. Call it last: it empties the tree.
    /// `None` when the law holds, and always on HostFs (which has no accounting).
    pub fn unaccounted(&self) -> Option<String> {
        let SimFs::Mem(m) = self else { return None };
        if let Err(e) = co9p::co::block_on(empty(m)) {
            return Some(format!("emptying the tree: {e}"));
        }
        let (used, inodes) = (m.bytes_used(), m.inode_count());
        let want = MemFs::with_limits(m.limits()).bytes_used();
        (used != want || inodes != 1).then(|| {
            format!(
                "with the tree removed MemFs charges {used} bytes for {inodes} inodes; \
                 a fresh one charges {want} for 1"
            )
        })
    }

    /// Closes every idle HostFs descriptor now (a fault: they are reopened by name,
    /// one component beneath the recorded parent, on next use).
    pub fn reclaim(&self) -> usize {
        match self {
            SimFs::Host(h) => h.fs.reclaim_idle(),
            SimFs::Mem(_) => 0,
        }
    }

    pub fn scratch(&self) -> Option<&Path> {
        match self {
            SimFs::Host(h) => Some(&h.dir.0),
            SimFs::Mem(_) => None,
        }
    }

    fn stable_path(&self, path: u64) -> u64 {
        match self {
            SimFs::Mem(_) => path,
            SimFs::Host(h) => {
                let mut t = h.stable.lock().unwrap_or_else(|e| e.into_inner());
                let next = t.len() as u64 + 1;
                *t.entry(path).or_insert(next)
            }
        }
    }

    fn qid(&self, q: Qid) -> Qid {
        match self {
            SimFs::Mem(_) => q,
            SimFs::Host(_) => Qid {
                ty: q.ty,
                version: 0,
                path: self.stable_path(q.path),
            },
        }
    }

    fn node_qid(&self, r: FsResult<(SimNode, Qid)>) -> FsResult<(SimNode, Qid)> {
        r.map(|(n, q)| (n, self.qid(q)))
    }
}

const ZERO: Timespec = Timespec { sec: 0, nsec: 0 };

macro_rules! both {
    ($self:ident, $fs:ident => $mem:expr, $host:expr) => {
        match $self {
            SimFs::Mem($fs) => $mem,
            SimFs::Host(h) => {
                let $fs = &h.fs;
                $host
            }
        }
    };
}

fn mem_node(n: &SimNode) -> &MemNode {
    match n {
        SimNode::Mem(n) => n,
        SimNode::Host(_) => unreachable!("a HostFs node given to MemFs"),
    }
}
fn host_node(n: &SimNode) -> &HostNode {
    match n {
        SimNode::Host(n) => n,
        SimNode::Mem(_) => unreachable!("a MemFs node given to HostFs"),
    }
}
fn mem_file(f: &SimFile) -> &MemFile {
    match f {
        SimFile::Mem(f) => f,
        SimFile::Host(_) => unreachable!("a HostFs file given to MemFs"),
    }
}
fn host_file(f: &SimFile) -> &HostFile {
    match f {
        SimFile::Host(f) => f,
        SimFile::Mem(_) => unreachable!("a MemFs file given to HostFs"),
    }
}

impl Filesystem for SimFs {
    type Node = SimNode;
    type File = SimFile;

    async fn root(&self) -> FsResult<(SimNode, Qid)> {
        let r = both!(self, fs =>
            fs.root().await.map(|(n, q)| (SimNode::Mem(n), q)),
            fs.root().await.map(|(n, q)| (SimNode::Host(n), q)));
        self.node_qid(r)
    }
    async fn lookup(&self, dir: &SimNode, name: &Name) -> FsResult<(SimNode, Qid)> {
        let r = both!(self, fs =>
            fs.lookup(mem_node(dir), name).await.map(|(n, q)| (SimNode::Mem(n), q)),
            fs.lookup(host_node(dir), name).await.map(|(n, q)| (SimNode::Host(n), q)));
        self.node_qid(r)
    }
    async fn parent(&self, dir: &SimNode) -> FsResult<(SimNode, Qid)> {
        let r = both!(self, fs =>
            fs.parent(mem_node(dir)).await.map(|(n, q)| (SimNode::Mem(n), q)),
            fs.parent(host_node(dir)).await.map(|(n, q)| (SimNode::Host(n), q)));
        self.node_qid(r)
    }
    async fn getattr(&self, node: &SimNode) -> FsResult<Attr> {
        both!(self, fs => fs.getattr(mem_node(node)).await, {
            let mut a = fs.getattr(host_node(node)).await?;
            a.qid = self.qid(a.qid);
            a.atime = ZERO;
            a.mtime = ZERO;
            a.ctime = ZERO;
            a.btime = ZERO;
            a.generation = 0;
            a.data_version = 0;
            Ok(a)
        })
    }
    async fn setattr(&self, node: &SimNode, attr: &SetAttr) -> FsResult<()> {
        both!(self, fs => fs.setattr(mem_node(node), attr).await,
            fs.setattr(host_node(node), attr).await)
    }
    async fn open(&self, node: &SimNode, flags: OpenFlags) -> FsResult<SimFile> {
        both!(self, fs => fs.open(mem_node(node), flags).await.map(SimFile::Mem),
            fs.open(host_node(node), flags).await.map(SimFile::Host))
    }
    async fn open_by(&self, node: &SimNode, flags: OpenFlags, creds: Creds) -> FsResult<SimFile> {
        both!(self, fs => fs.open_by(mem_node(node), flags, creds).await.map(SimFile::Mem),
            fs.open_by(host_node(node), flags, creds).await.map(SimFile::Host))
    }
    async fn create(
        &self,
        dir: &SimNode,
        name: &Name,
        flags: OpenFlags,
        mode: u32,
        creds: Creds,
    ) -> FsResult<(SimNode, SimFile, Qid)> {
        let r = both!(self, fs =>
            fs.create(mem_node(dir), name, flags, mode, creds).await
                .map(|(n, f, q)| (SimNode::Mem(n), SimFile::Mem(f), q)),
            fs.create(host_node(dir), name, flags, mode, creds).await
                .map(|(n, f, q)| (SimNode::Host(n), SimFile::Host(f), q)));
        r.map(|(n, f, q)| (n, f, self.qid(q)))
    }
    async fn read(&self, file: &SimFile, offset: u64, buf: &mut [u8]) -> FsResult<usize> {
        both!(self, fs => fs.read(mem_file(file), offset, buf).await,
            fs.read(host_file(file), offset, buf).await)
    }
    async fn write(&self, file: &SimFile, offset: u64, data: &[u8]) -> FsResult<usize> {
        both!(self, fs => fs.write(mem_file(file), offset, data).await,
            fs.write(host_file(file), offset, data).await)
    }
    async fn read_vectored(
        &self,
        file: &SimFile,
        offset: u64,
        bufs: &mut [IoSliceMut<'_>],
    ) -> FsResult<usize> {
        both!(self, fs => fs.read_vectored(mem_file(file), offset, bufs).await,
            fs.read_vectored(host_file(file), offset, bufs).await)
    }
    async fn write_vectored(
        &self,
        file: &SimFile,
        offset: u64,
        bufs: &[IoSlice<'_>],
    ) -> FsResult<usize> {
        both!(self, fs => fs.write_vectored(mem_file(file), offset, bufs).await,
            fs.write_vectored(host_file(file), offset, bufs).await)
    }
    async fn readdir(&self, dir: &SimFile, cookie: u64, max: usize) -> FsResult<Vec<DirEntry>> {
        both!(self, fs => fs.readdir(mem_file(dir), cookie, max).await, {
            let mut v = fs.readdir(host_file(dir), cookie, max).await?;
            for e in &mut v {
                e.qid = self.qid(e.qid);
            }
            Ok(v)
        })
    }
    async fn fsync(&self, file: &SimFile, datasync: bool) -> FsResult<()> {
        both!(self, fs => fs.fsync(mem_file(file), datasync).await,
            fs.fsync(host_file(file), datasync).await)
    }
    async fn mkdir(&self, dir: &SimNode, name: &Name, mode: u32, creds: Creds) -> FsResult<Qid> {
        let q = both!(self, fs => fs.mkdir(mem_node(dir), name, mode, creds).await,
            fs.mkdir(host_node(dir), name, mode, creds).await)?;
        Ok(self.qid(q))
    }
    async fn symlink(
        &self,
        dir: &SimNode,
        name: &Name,
        target: &[u8],
        creds: Creds,
    ) -> FsResult<Qid> {
        let q = both!(self, fs => fs.symlink(mem_node(dir), name, target, creds).await,
            fs.symlink(host_node(dir), name, target, creds).await)?;
        Ok(self.qid(q))
    }
    async fn mknod(
        &self,
        dir: &SimNode,
        name: &Name,
        mode: u32,
        rdev: (u32, u32),
        creds: Creds,
    ) -> FsResult<Qid> {
        let q = both!(self, fs => fs.mknod(mem_node(dir), name, mode, rdev, creds).await,
            fs.mknod(host_node(dir), name, mode, rdev, creds).await)?;
        Ok(self.qid(q))
    }
    async fn link(&self, target: &SimNode, dir: &SimNode, name: &Name) -> FsResult<()> {
        both!(self, fs => fs.link(mem_node(target), mem_node(dir), name).await,
            fs.link(host_node(target), host_node(dir), name).await)
    }
    async fn readlink(&self, node: &SimNode) -> FsResult<Vec<u8>> {
        both!(self, fs => fs.readlink(mem_node(node)).await,
            fs.readlink(host_node(node)).await)
    }
    async fn rename(
        &self,
        old_dir: &SimNode,
        old_name: &Name,
        new_dir: &SimNode,
        new_name: &Name,
    ) -> FsResult<()> {
        both!(self, fs =>
            fs.rename(mem_node(old_dir), old_name, mem_node(new_dir), new_name).await,
            fs.rename(host_node(old_dir), old_name, host_node(new_dir), new_name).await)
    }
    async fn unlink(&self, dir: &SimNode, name: &Name, rmdir: bool) -> FsResult<()> {
        both!(self, fs => fs.unlink(mem_node(dir), name, rmdir).await,
            fs.unlink(host_node(dir), name, rmdir).await)
    }
    async fn unlink_node(
        &self,
        dir: &SimNode,
        name: &Name,
        node: &SimNode,
        rmdir: bool,
    ) -> FsResult<()> {
        both!(self, fs =>
            fs.unlink_node(mem_node(dir), name, mem_node(node), rmdir).await,
            fs.unlink_node(host_node(dir), name, host_node(node), rmdir).await)
    }
    async fn rename_node(
        &self,
        node: &SimNode,
        old_dir: &SimNode,
        old_name: &Name,
        new_dir: &SimNode,
        new_name: &Name,
    ) -> FsResult<()> {
        both!(self, fs =>
            fs.rename_node(mem_node(node), mem_node(old_dir), old_name, mem_node(new_dir), new_name).await,
            fs.rename_node(host_node(node), host_node(old_dir), old_name, host_node(new_dir), new_name).await)
    }
    async fn statfs(&self, node: &SimNode) -> FsResult<StatFs> {
        both!(self, fs => fs.statfs(mem_node(node)).await, {
            let s = fs.statfs(host_node(node)).await?;
            Ok(StatFs {
                blocks: 1 << 20,
                bfree: 1 << 19,
                bavail: 1 << 19,
                files: 1 << 20,
                ffree: 1 << 19,
                fsid: 0,
                ..s
            })
        })
    }
    async fn getxattr(&self, node: &SimNode, name: &[u8]) -> FsResult<Vec<u8>> {
        both!(self, fs => fs.getxattr(mem_node(node), name).await,
            fs.getxattr(host_node(node), name).await)
    }
    async fn listxattr(&self, node: &SimNode) -> FsResult<Vec<u8>> {
        both!(self, fs => fs.listxattr(mem_node(node)).await,
            fs.listxattr(host_node(node)).await)
    }
    async fn setxattr(
        &self,
        node: &SimNode,
        name: &[u8],
        value: &[u8],
        flags: u32,
    ) -> FsResult<()> {
        both!(self, fs => fs.setxattr(mem_node(node), name, value, flags).await,
            fs.setxattr(host_node(node), name, value, flags).await)
    }
    async fn removexattr(&self, node: &SimNode, name: &[u8]) -> FsResult<()> {
        both!(self, fs => fs.removexattr(mem_node(node), name).await,
            fs.removexattr(host_node(node), name).await)
    }
    async fn lock(&self, file: &SimFile, req: &LockRequest) -> FsResult<LockOutcome> {
        both!(self, fs => fs.lock(mem_file(file), req).await,
            fs.lock(host_file(file), req).await)
    }
    async fn getlock(&self, file: &SimFile, req: &LockRequest) -> FsResult<LockProbe> {
        both!(self, fs => fs.getlock(mem_file(file), req).await,
            fs.getlock(host_file(file), req).await)
    }
}

/// A security model's name as the CLI and trace spell it.
pub fn model_name(b: Backend) -> String {
    match b {
        Backend::Mem => "mem".into(),
        Backend::Host(m) => format!("host:{m}"),
    }
}
