//! co9p: a 9P2000.L file-server device.
pub mod co;
pub mod fs;
pub mod protocol;
pub mod server;
pub mod transport;
