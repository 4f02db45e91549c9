//! How PDUs reach a session: `stream` (size-prefixed frames over unix and tcp sockets) and
//! `virtio` (descriptor chains in guest memory, with a virtio-mmio register front and, with
//! feature `testing`, a virtual-guest harness).

pub mod stream;
#[cfg(not(loom))]
pub mod vhost_user;
pub mod virtio;
