//! Bugs planted on purpose, for the simulator's own tests (feature `planted-bugs`, which
//! production builds lack): each is off unless a test switches it on, per thread (a
//! simulated run is one thread).

use std::cell::Cell;

thread_local! {
    static CLUNK_SKIPS_BARRIER: Cell<bool> = const { Cell::new(false) };
}

/// Tclunk and Tremove stop waiting for the requests that arrived before them on their fid
/// (the clunk-overtakes-write bug the simulator once found).
pub fn set_clunk_skips_barrier(on: bool) {
    CLUNK_SKIPS_BARRIER.with(|c| c.set(on));
}

pub(crate) fn clunk_skips_barrier() -> bool {
    CLUNK_SKIPS_BARRIER.with(Cell::get)
}
