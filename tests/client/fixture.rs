//! Servers to test against: the same MemFs-backed server in process or over tcp, with a
//! hook that can stall writes until they are flushed (QEMU's synth "flush" file).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use co9p::co::ThreadPool;
use co9p::fs::hooked::{Hook, HookedFs, OpKind};
use co9p::fs::{FsResult, MemFs};
use co9p::server::Config;
use co9p::transport::stream::{ListenAddr, Listener, StreamServer};

use super::{Client, InProcess, Socket};

/// While set, every write waits until its request is flushed.
#[derive(Clone, Default)]
pub struct Stall(pub Arc<AtomicBool>);

impl Stall {
    pub fn set(&self, on: bool) {
        self.0.store(on, Ordering::SeqCst);
    }
}

impl Hook for Stall {
    async fn before(&self, op: OpKind) -> FsResult<()> {
        if op == OpKind::Write && self.0.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        Ok(())
    }
}

pub type TestFs = HookedFs<MemFs, Stall>;

pub fn test_fs() -> (Arc<TestFs>, Stall) {
    let stall = Stall::default();
    (Arc::new(HookedFs::new(MemFs::new(), stall.clone())), stall)
}

/// A client of an in-process session.
pub fn in_process(config: Config) -> (Client<InProcess<TestFs>>, Stall) {
    let (fs, stall) = test_fs();
    (Client::new(InProcess::new(fs, config)), stall)
}

/// A client of co9p's vhost-user daemon, in this process, through a vhost-user frontend.
pub fn over_vhost_user(config: Config) -> (Client<super::vhost::VhostUser<TestFs>>, Stall) {
    let (fs, stall) = test_fs();
    (Client::new(super::vhost::VhostUser::new(fs, config)), stall)
}

/// A tcp server on 127.0.0.1 with its own pool, stopped when dropped.
pub struct TcpServer {
    pub addr: String,
    pub stats: Arc<co9p::transport::stream::Stats>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TcpServer {
    pub fn start<F: co9p::fs::Filesystem>(fs: Arc<F>, config: Config) -> TcpServer {
        Self::start_with_readers(fs, config, None)
    }

    /// As [`start`](Self::start), with `(readers, dedicated)`: the first `dedicated`
    /// connections read by a thread each, the others by a pool of `readers` threads (else
    /// the server's defaults).
    pub fn start_with_readers<F: co9p::fs::Filesystem>(
        fs: Arc<F>,
        config: Config,
        readers: Option<(usize, usize)>,
    ) -> TcpServer {
        let listener = Listener::bind(&ListenAddr::Tcp("127.0.0.1:0".into())).expect("bind");
        let addr = listener.local_addr().trim_start_matches("tcp:").to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let pool = ThreadPool::new(2);
        let mut server = StreamServer::new(fs, pool.handle(), config);
        if let Some((n, dedicated)) = readers {
            server = server.with_readers(n).with_dedicated(dedicated);
        }
        let stats = server.stats.clone();
        let thread = std::thread::spawn(move || {
            server.serve(&listener, &stop2).expect("serve");
            pool.shutdown();
        });
        TcpServer {
            addr,
            stats,
            stop,
            thread: Some(thread),
        }
    }

    pub fn connect(&self) -> Client<Socket<std::net::TcpStream>> {
        Client::new(super::tcp(&self.addr))
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A client over tcp to a fresh server (the server lives as long as the returned guard).
pub fn over_tcp(config: Config) -> (Client<Socket<std::net::TcpStream>>, Stall, TcpServer) {
    let (fs, stall) = test_fs();
    let server = TcpServer::start(fs, config);
    (server.connect(), stall, server)
}
