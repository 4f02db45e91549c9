//! How PDUs reach a session: `stream` (size-prefixed frames over unix and tcp sockets).
//! The virtio transport comes next to it.

pub mod stream;
