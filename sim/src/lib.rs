//! co9p-sim: the deterministic simulator.
//!
//! One seed drives a whole run: the scheduler ([`executor::SimExecutor`]), the faulty
//! filesystem, the guest workload and the faults each draw from their own ChaCha8 stream,
//! so a new draw in one place does not shift the others.

pub mod executor;
pub mod faulty;
pub mod trace;
