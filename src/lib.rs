//! co9p: a 9P2000.L file-server device a VMM can embed.
//!
//! Request handlers are coroutines (Rust futures) that read as straight-line code yet never
//! block the device, in the line of QEMU's VirtFS after its move to coroutines; the same
//! handlers run in production and in `co9p-sim`, a seeded deterministic simulator.
//!
//! The layers, each knowing nothing of those above it:
//!
//! - [`protocol`]: the 9P2000.L codec, sans I/O (`Tmessage`/`Rmessage`, typed fields).
//! - [`co`]: the coroutine runtime: the [`co::Executor`] trait, `CoMutex`, `CoQueue`,
//!   `CoRwLock`, the production [`co::ThreadPool`].
//! - [`fs`]: the handle-based [`fs::Filesystem`] trait and its backends, [`fs::HostFs`]
//!   (real files, confined beneath the export) and [`fs::MemFs`] (in memory,
//!   deterministic).
//! - [`server`]: sessions, fids, one coroutine per request, Tflush.
//! - [`transport`]: byte streams (tcp, unix sockets), the virtio-9p device over real
//!   virtqueues in guest memory, and the vhost-user daemon.
//!
//! **Embedding it in a VMM** (in process behind virtio-mmio, behind your own transport, or
//! out of process over vhost-user): see the [`embedding`] guide.
// Every public item says what it is, and `pub` means public: an item only the crate uses is
// `pub(crate)`. Here rather than in Cargo.toml's [lints], which would hold the test crates
// too, whose shared helpers (tests/client) are `pub` for the test files of one crate.
#![warn(missing_docs, unreachable_pub)]
pub mod co;
pub mod embedding;
pub mod fs;
#[cfg(feature = "planted-bugs")]
#[doc(hidden)]
pub mod planted;
pub mod protocol;
pub mod sandbox;
pub mod server;
pub mod transport;
