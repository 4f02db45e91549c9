//! co9p-sim: the deterministic simulator.
//!
//! One seed drives a whole run ([`world::World`]): the scheduler
//! ([`executor::SimExecutor`]), the faulty filesystem ([`faulty`], around MemFs or HostFs:
//! [`backend`]), the guest workload
//! ([`guest`]) and the faults each draw from their own ChaCha8 stream, so a new draw in one
//! place does not shift the others. Clients reach the device directly or as virtual
//! guests driving virtio-9p devices over virtqueues in guest RAM ([`link`]). The device under test is the production
//! `co9p::server::Session` code; the checks ([`oracle`], [`world`]) judge every reply
//! against a sequential reference model ([`model`]) stepped in the order the filesystem
//! applied effects ([`journal`]). [`locks`] runs the coroutine locks next to the clients;
//! [`campaign`] runs many seeds, checks determinism, and shrinks failures.

pub mod backend;
pub mod campaign;
pub mod executor;
pub mod faulty;
pub mod guest;
pub mod journal;
pub mod knobs;
pub mod link;
pub mod locks;
pub mod model;
pub mod oracle;
pub mod script;
pub mod timeline;
pub mod trace;
pub mod world;
